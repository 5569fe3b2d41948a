"""Scale-out on Ray: the same HTTP and gRPC endpoints as Ray Serve replicas, and Ray Data batch
inference.

    ember serve --ray --replicas 2 --model-repository models/

Every replica loads and compiles the models itself (compiled sessions do not travel between
processes) and runs the whole FastAPI app of `ember.serve.http` in process: Ray Serve's HTTP
proxy forwards each HTTP request, unchanged, to one replica. Ray Serve's gRPC proxy routes each
KServe v2 call (by its rpc name) to the replica method of that name, which runs the same
`grpc_server.Service` as `ember serve`. Each replica batches its own requests. HTTP responses
carry `x-ember-replica` (the replica's process id).

For batch inference over a Ray dataset::

    ds.map_batches(EmberPredictor, fn_constructor_kwargs={"model": "model.onnx"}, batch_size=64,
                   concurrency=2)

Needs `pip install 'ray[serve]'`."""
from __future__ import annotations

import os

import grpc
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
        self._service = None

    async def _start(self):
        if self._client is None:                 # the replica's own event loop runs the batchers
            import httpx
            await self.server.start()
            self._client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://replica")

    async def __call__(self, request):
        from starlette.responses import Response

        await self._start()
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in ("host", "content-length")]
        r = await self._client.request(request.method, request.url.path, params=request.url.query,
                                       content=await request.body(), headers=headers)
        out = Response(r.content, status_code=r.status_code,
                       headers={k: v for k, v in r.headers.items() if k.lower() != "content-length"})
        out.headers["x-ember-replica"] = str(os.getpid())
        return out

    # KServe v2 over Ray Serve's gRPC proxy: the request arrives as bytes (see
    # grpc_server.add_GRPCInferenceServiceServicer_to_server), the response leaves as a message
    async def _rpc(self, call: str, request: bytes, grpc_context):
        from .grpc_server import CALLS, Service, messages

        await self._start()
        msg = messages()
        req, resp = CALLS[call]
        ctx = _RayContext(grpc_context)
        try:
            try:
                parsed = msg[req].FromString(request)
            except Exception:                    # noqa: BLE001 - protobuf's DecodeError and kin
                await ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid {req}")
            if self._service is None:
                self._service = Service(self.server)
            return await getattr(self._service, call)(parsed, ctx)
        except _Aborted:
            return msg[resp]()                   # the status set on the context is what the client gets

    async def ServerLive(self, request, grpc_context=None):
        return await self._rpc("ServerLive", request, grpc_context)

    async def ServerReady(self, request, grpc_context=None):
        return await self._rpc("ServerReady", request, grpc_context)

    async def ModelReady(self, request, grpc_context=None):
        return await self._rpc("ModelReady", request, grpc_context)

    async def ServerMetadata(self, request, grpc_context=None):
        return await self._rpc("ServerMetadata", request, grpc_context)

    async def ModelMetadata(self, request, grpc_context=None):
        return await self._rpc("ModelMetadata", request, grpc_context)

    async def ModelInfer(self, request, grpc_context=None):
        return await self._rpc("ModelInfer", request, grpc_context)


class _Aborted(Exception):
    pass


class _RayContext:
    """What grpc_server.Service needs of a grpc.aio context, over Ray Serve's RayServegRPCContext:
    abort sets the status, which the proxy then sends."""

    def __init__(self, ctx):
        self.ctx = ctx

    def invocation_metadata(self):
        return self.ctx.invocation_metadata() if self.ctx is not None else []

    async def abort(self, code, details):
        if self.ctx is not None:
            self.ctx.set_code(code)
            self.ctx.set_details(details)
        raise _Aborted


def deploy(sources, replicas: int = 2, host: str = "127.0.0.1", port: int = 8000, options=None,
           name: str = "ember", grpc_port: int | None = None):
    """Start Ray Serve on this Ray cluster (`ray.init()` first) with `replicas` copies of the
    models behind one HTTP endpoint at host:port, and KServe v2 over gRPC on grpc_port when
    given (Ray's gRPC proxy listens on every interface); returns the deployment's handle."""
    from ray import serve

    grpc_options = None
    if grpc_port is not None:
        from ray.serve.config import gRPCOptions
        grpc_options = gRPCOptions(port=grpc_port, grpc_servicer_functions=[
            "ember.serve.grpc_server.add_GRPCInferenceServiceServicer_to_server"])
    serve.start(http_options={"host": host, "port": port}, grpc_options=grpc_options)
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
