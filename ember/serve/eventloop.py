"""The event loop the server and the load tool run on: uvloop where it is installed (its
selector, transports and callbacks are native code), else asyncio's own. On a 2-core host the
server's event loop and the load tool take CPU from the model runs. With MiniLM on
/v1/embeddings and 32 clients, uvloop took the load tool's CPU per request from 0.68-1.05 ms to
0.57-0.79 ms (three alternated pairs), and the server's from 4.29 to 4.09 ms (one pair)."""
from __future__ import annotations


def loop_factory():
    """A factory for `asyncio.Runner(loop_factory=...)`; None means asyncio's default loop."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
