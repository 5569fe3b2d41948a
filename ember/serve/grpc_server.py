"""The gRPC endpoint: KServe v2's GRPCInferenceService (kserve_v2.proto) over grpc.aio, on the
same event loop, models and batchers as the HTTP endpoint.

The messages are built at start from the .proto into a private descriptor pool (protoc from
grpcio-tools), so they never clash with another library's `inference.*` classes (tritonclient
registers the same names in the default pool)."""
from __future__ import annotations

import functools
import hmac
import math
import os
import tempfile
from pathlib import Path

import grpc
import numpy as np

from .core import InferenceServer
from .protocol import RequestError, datatype_of, numpy_of

_PROTO = Path(__file__).with_name("kserve_v2.proto")
_SERVICE = "inference.GRPCInferenceService"
_CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
             "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
             "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
             "FP64": "fp64_contents"}
_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
          404: grpc.StatusCode.NOT_FOUND, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
          503: grpc.StatusCode.UNAVAILABLE, 504: grpc.StatusCode.DEADLINE_EXCEEDED}


@functools.lru_cache(maxsize=1)
def messages() -> dict:
    """Message classes of kserve_v2.proto by short name ('ModelInferRequest', ...)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "kserve_v2.pb")
        if protoc.main(["protoc", f"-I{_PROTO.parent}", f"--descriptor_set_out={out}", _PROTO.name]) != 0:
            raise RuntimeError(f"protoc could not compile {_PROTO}")
        files = descriptor_pb2.FileDescriptorSet.FromString(Path(out).read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for f in files.file:
        pool.Add(f)
    fd = pool.FindFileByName(_PROTO.name)
    return {name: message_factory.GetMessageClass(d) for name, d in fd.message_types_by_name.items()}


def _decode(req) -> dict[str, np.ndarray]:
    raw = list(req.raw_input_contents)
    if raw and len(raw) != len(req.inputs):
        raise RequestError(f"raw_input_contents has {len(raw)} entries for {len(req.inputs)} inputs")
    feeds = {}
    for k, t in enumerate(req.inputs):
        where = f"input '{t.name}'"
        if t.name in feeds:
            raise RequestError(f"{where} is given twice")
        dtype = numpy_of(t.datatype, where)
        if any(d < 0 for d in t.shape) or len(t.shape) > 32:
            raise RequestError(f"{where}: shape {list(t.shape)} must be at most 32 non-negative sizes")
        count = math.prod(t.shape)        # Python ints: huge dims must not wrap to a small count
        if raw:
            if len(raw[k]) != count * dtype.itemsize:
                raise RequestError(f"{where}: {len(raw[k])} raw bytes, shape {list(t.shape)} of {t.datatype} "
                                   f"needs {count * dtype.itemsize}")
            a = np.frombuffer(raw[k], dtype=dtype.newbyteorder("<")).astype(dtype)
            if dtype.kind == "b" and a.view(np.uint8).max(initial=0) > 1:
                raise RequestError(f"{where}: BOOL bytes must be 0 or 1")
        else:
            field = _CONTENTS.get(t.datatype)
            if field is None:
                raise RequestError(f"{where}: {t.datatype} tensors must be sent in raw_input_contents")
            values = getattr(t.contents, field)
            if len(values) != count:
                raise RequestError(f"{where}: {len(values)} values in contents, shape {list(t.shape)} needs {count}")
            a = np.array(values, dtype=np.int64 if dtype.kind in "iu" else dtype)
            if dtype.kind in "iu" and a.size and (a.min() < np.iinfo(dtype).min or a.max() > np.iinfo(dtype).max):
                raise RequestError(f"{where}: a value is out of range for {t.datatype}")
            a = a.astype(dtype)
        feeds[t.name] = a.reshape(tuple(t.shape))
    return feeds


# rpc name -> (request message, response message)
CALLS = {"ServerLive": ("ServerLiveRequest", "ServerLiveResponse"),
         "ServerReady": ("ServerReadyRequest", "ServerReadyResponse"),
         "ModelReady": ("ModelReadyRequest", "ModelReadyResponse"),
         "ServerMetadata": ("ServerMetadataRequest", "ServerMetadataResponse"),
         "ModelMetadata": ("ModelMetadataRequest", "ModelMetadataResponse"),
         "ModelInfer": ("ModelInferRequest", "ModelInferResponse")}


class Service:
    """KServe v2's rpcs over an InferenceServer. `context` is grpc.aio's, or anything with
    `invocation_metadata()` and an async `abort(code, details)` that raises."""

    def __init__(self, server: InferenceServer):
        self.server = server
        self.msg = messages()

    async def _guard(self, context, call):
        try:
            tok = self.server.options.auth_token
            if tok and call not in ("ServerLive", "ServerReady"):
                got = dict(context.invocation_metadata()).get("authorization", "")
                if not hmac.compare_digest(got.encode(), f"Bearer {tok}".encode()):
                    raise RequestError("a valid 'authorization: Bearer <token>' metadata entry is required", 401)
            return None
        except RequestError as e:
            await context.abort(_CODES.get(e.status, grpc.StatusCode.INVALID_ARGUMENT), str(e))

    async def ServerLive(self, req, context):
        return self.msg["ServerLiveResponse"](live=True)

    async def ServerReady(self, req, context):
        return self.msg["ServerReadyResponse"](ready=self.server.ready)

    async def ModelReady(self, req, context):
        await self._guard(context, "ModelReady")
        try:
            self.server.model(req.name, req.version or None)
        except RequestError:
            return self.msg["ModelReadyResponse"](ready=False)     # an unknown model is not ready
        return self.msg["ModelReadyResponse"](ready=self.server.ready)

    async def ServerMetadata(self, req, context):
        await self._guard(context, "ServerMetadata")
        return self.msg["ServerMetadataResponse"](**self.server.metadata())

    async def ModelMetadata(self, req, context):
        await self._guard(context, "ModelMetadata")
        try:
            md = self.server.model(req.name, req.version or None).metadata()
        except RequestError as e:
            await context.abort(_CODES[e.status], str(e))
        T = self.msg["ModelMetadataResponse"].TensorMetadata
        return self.msg["ModelMetadataResponse"](
            name=md["name"], versions=md["versions"], platform=md["platform"],
            inputs=[T(**t) for t in md["inputs"]], outputs=[T(**t) for t in md["outputs"]])

    async def ModelInfer(self, req, context):
        await self._guard(context, "ModelInfer")
        try:
            m = self.server.model(req.model_name, req.model_version or None)
            try:
                feeds = _decode(req)
                names = [o.name for o in req.outputs] or m.output_names
                bad = [n for n in names if n not in m.output_names]
                if bad:
                    raise RequestError(f"output(s) {bad} are not outputs of model '{m.name}'; its outputs are "
                                       f"{m.output_names}")
            except RequestError as e:
                self.server.count_refusal(m.name, "grpc", e.status)
                raise
            outs = await self.server.infer(m, feeds, "grpc")
        except RequestError as e:
            await context.abort(_CODES.get(e.status, grpc.StatusCode.INTERNAL), str(e))
        R = self.msg["ModelInferResponse"]
        resp = R(model_name=m.name, model_version=m.version, id=req.id)
        for n in names:
            a = outs[n]
            resp.outputs.add(name=n, datatype=datatype_of(a.dtype), shape=list(a.shape))
            resp.raw_output_contents.append(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<"),
                                                                           copy=False).tobytes())
        return resp


def _handler(service: Service):
    msg = service.msg
    handlers = {name: grpc.unary_unary_rpc_method_handler(
        getattr(service, name), request_deserializer=msg[req].FromString,
        response_serializer=msg[resp].SerializeToString) for name, (req, resp) in CALLS.items()}
    return grpc.method_handlers_generic_handler(_SERVICE, handlers)


def add_GRPCInferenceServiceServicer_to_server(servicer, server):
    """The service on `server`, in the form Ray Serve's gRPC proxy takes (its
    `grpc_servicer_functions`; the name is the one protoc would generate). The proxy replaces
    the method bodies and routes each call to the replica method of the same name
    (`ember.serve.ray.EmberReplica.ModelInfer` ...). Requests reach the replica as their raw
    bytes (no request deserializer): the message classes live in a private descriptor pool,
    and would not pickle on their way there."""
    handlers = {name: grpc.unary_unary_rpc_method_handler(getattr(servicer, name)) for name in CALLS}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(_SERVICE, handlers),))


def create_grpc_server(server: InferenceServer, host: str, port: int) -> tuple[grpc.aio.Server, int]:
    """A grpc.aio server bound to host:port (0: any free port); returns it and the bound port.
    Start it with `await s.start()` on the event loop that runs the models' batchers."""
    limit = server.options.max_body_bytes
    s = grpc.aio.server(options=[("grpc.max_receive_message_length", limit),
                                 ("grpc.max_send_message_length", max(limit, 256 << 20))])
    s.add_generic_rpc_handlers((_handler(Service(server)),))
    bound = s.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen for gRPC on {host}:{port}")
    return s, bound

