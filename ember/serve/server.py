"""Run the HTTP and gRPC endpoints together on one event loop (uvicorn + grpc.aio), until
SIGTERM or SIGINT; then stop taking requests and finish those in flight."""
from __future__ import annotations

import asyncio
import gc
import signal
import socket

import uvicorn

from .core import InferenceServer
from .eventloop import loop_factory
from .http import create_app


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class _Uvicorn(uvicorn.Server):
    """uvicorn re-raises a caught SIGTERM once its own shutdown is done, which would kill the
    process before the gRPC endpoint and the batchers drain: here the signal only asks to stop."""

    def handle_exit(self, sig, frame):
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True          # a second Ctrl-C: stop waiting
        else:
            self.should_exit = True


class Server:
    """`serve()` runs until stopped; `http_port`/`grpc_port` are the bound ports (0 asks for a free
    one). `should_exit = True` (or SIGTERM) begins a graceful shutdown."""

    def __init__(self, inference: InferenceServer, host: str = "127.0.0.1", port: int = 8000,
                 grpc_port: int | None = 8001, log_level: str = "warning", graceful_s: float = 30.0):
        self.inference = inference
        self.host = host
        self.http_port = port or _free_port(host)
        # ports are fixed here, so that they can be printed before serving starts
        self.grpc_port = None if grpc_port is None else grpc_port or _free_port(host)
        self.graceful_s = graceful_s
        config = uvicorn.Config(create_app(inference, own_lifecycle=False), host=host, port=self.http_port, log_level=log_level,
                                timeout_graceful_shutdown=graceful_s, access_log=False, lifespan="on")
        self._uvicorn = _Uvicorn(config)
        self._grpc = None

    @property
    def should_exit(self) -> bool:
        return self._uvicorn.should_exit

    @should_exit.setter
    def should_exit(self, value: bool):
        self._uvicorn.should_exit = value

    @property
    def is_started(self) -> bool:
        return self._uvicorn.started and (self.grpc_port is None or self._grpc is not None)

    async def serve(self):
        await self.inference.start()
        try:
            if self.grpc_port is not None:
                from .grpc_server import create_grpc_server
                g, self.grpc_port = create_grpc_server(self.inference, self.host, self.grpc_port)
                await g.start()
                self._grpc = g
            # The compiled models, the app and their libraries are long-lived objects that every
            # full collection would walk with the event loop stopped (11 ms for the demo
            # model's 43,000, measured; more with the app): they move to the permanent generation.
            gc.collect()
            gc.freeze()
            # uvicorn handles SIGTERM/SIGINT: it stops accepting and lets in-flight requests finish
            await self._uvicorn.serve()
        finally:
            if self._grpc is not None:
                await self._grpc.stop(self.graceful_s)
            await self.inference.stop()     # the batchers finish what is queued, then stop

    def run(self):
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(self.serve())
