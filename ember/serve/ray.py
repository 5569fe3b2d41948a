"""Scale-out on Ray: the same HTTP endpoint as Ray Serve replicas, and Ray Data batch inference.

    ember serve --ray --replicas 2 --model-repository models/

Every replica loads and compiles the models itself (compiled sessions do not travel between
processes) and runs the whole FastAPI app of `ember.serve.http` in process: Ray Serve's proxy
forwards each HTTP request, unchanged, to one replica. Each replica batches its own requests.
Responses carry `x-ember-replica` (the replica's process id).

For batch inference over a Ray dataset::

    ds.map_batches(EmberPredictor, fn_constructor_kwargs={"model": "model.onnx"}, batch_size=64,
                   concurrency=2)

Needs `pip install 'ray[serve]'`."""
from __future__ import annotations

import os

import numpy as np


class EmberReplica:
    """A Ray Serve deployment body: one InferenceServer and its app behind `__call__`."""

    def __init__(self, sources, options=None):
        from .core import InferenceServer, ServeOptions
        from .http import create_app
        from .repository import load_models

        self.server = InferenceServer(load_models(sources), options or ServeOptions())
        self.app = create_app(self.server, own_lifecycle=False)
        self._client = None

    async def __call__(self, request):
        import httpx
        from starlette.responses import Response

        if self._client is None:                 # the replica's own event loop runs the batchers
            await self.server.start()
            self._client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://replica")
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in ("host", "content-length")]
        r = await self._client.request(request.method, request.url.path, params=request.url.query,
                                       content=await request.body(), headers=headers)
        out = Response(r.content, status_code=r.status_code,
                       headers={k: v for k, v in r.headers.items() if k.lower() != "content-length"})
        out.headers["x-ember-replica"] = str(os.getpid())
        return out


def deploy(sources, replicas: int = 2, host: str = "127.0.0.1", port: int = 8000, options=None,
           name: str = "ember"):
    """Start Ray Serve on this Ray cluster (`ray.init()` first) with `replicas` copies of the
    models behind one HTTP endpoint at host:port; returns the deployment's handle."""
    from ray import serve

    serve.start(http_options={"host": host, "port": port})
    app = serve.deployment(EmberReplica, name=name, num_replicas=replicas,
                           ray_actor_options={"num_cpus": 0}).bind(sources, options)
    return serve.run(app, name=name, route_prefix="/")


class EmberPredictor:
    """For Ray Data's `map_batches`: a batch (dict of numpy columns named like the model's inputs)
    in, the model's outputs as columns out."""

    def __init__(self, model: str, threads: int = 1):
        import ember
        so = ember.SessionOptions()
        so.intra_op_num_threads = threads
        self.session = ember.InferenceSession(model, so)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, batch: dict) -> dict:
        feeds = {n: np.ascontiguousarray(np.stack(batch[n]) if batch[n].dtype == object else batch[n])
                 for n in self.inputs}
        return dict(zip(self.outputs, self.session.run(None, feeds)))
