"""The HTTP endpoint: KServe v2 (JSON and binary tensors), OpenAI-style /v1/embeddings and
/v1/models, and Prometheus /metrics, as a FastAPI app over an `InferenceServer`.

Errors are JSON: `{"error": "..."}` on the v2 routes, OpenAI's `{"error": {"message", "type",
...}}` on /v1. A client's mistake is a 4xx that names the problem."""
from __future__ import annotations

import asyncio
import base64
import hmac
import json
import zlib
from contextlib import asynccontextmanager
from typing import Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .core import InferenceServer
from .protocol import HEADER_LENGTH, RequestError, decode_inputs, encode_response, requested_outputs, split_body

_OPEN = ("/v2/health/live", "/v2/health/ready")     # probes need no token
MAX_EMBEDDING_INPUTS = 2048                          # OpenAI's own limit per request


class _BodyTooLarge(Exception):
    pass


class _Limits:
    """ASGI middleware: bearer-token check, and the body size limit (by Content-Length at once,
    and while a body without one streams in)."""

    def __init__(self, app, server: InferenceServer):
        self.app, self.server = app, server

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        opts = self.server.options
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        v1 = scope["path"].startswith("/v1")
        if opts.auth_token and scope["path"] not in _OPEN:
            got = headers.get("authorization", "")
            if not hmac.compare_digest(got.encode(), f"Bearer {opts.auth_token}".encode()):
                resp = _error("a valid 'Authorization: Bearer <token>' header is required", 401, v1)
                resp.headers["WWW-Authenticate"] = "Bearer"
                return await resp(scope, receive, send)
        limit = opts.max_body_bytes
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await _error(f"the request body ({length} bytes) is over the limit of {limit} bytes",
                                413, v1)(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge
            return msg

        await self.app(scope, counted, send)


def _error(message: str, status: int, openai: bool = False) -> JSONResponse:
    if openai:
        kind = {401: "authentication_error", 404: "not_found_error", 413: "invalid_request_error",
                429: "rate_limit_error"}.get(status, "invalid_request_error" if status < 500 else "server_error")
        return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": None}}, status)
    return JSONResponse({"error": message}, status)


def _inflate(body: bytes, encoding: str | None, limit: int) -> bytes:
    if not encoding or encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise RequestError(f"Content-Encoding {encoding!r} is not supported (use gzip or deflate)", 415)
    d = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as e:
        raise RequestError(f"the {encoding} body does not decompress: {e}") from None
    if len(out) > limit:
        raise RequestError(f"the decompressed body is over the limit of {limit} bytes", 413)
    return out


# --- documented shapes of the JSON bodies (the infer route also takes binary tensors, so it
# reads its body itself; these models give the OpenAPI document its schemas) ---------------------
class _Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict | None = None
    data: list | None = None


class _Output(BaseModel):
    name: str
    parameters: dict | None = None


class InferRequest(BaseModel):
    id: str | None = None
    parameters: dict | None = None
    inputs: list[_Tensor]
    outputs: list[_Output] | None = None


class EmbeddingRequest(BaseModel):
    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None


_INFER_SCHEMA = InferRequest.model_json_schema(ref_template="#/components/schemas/{model}")
_INFER_SCHEMAS = {**_INFER_SCHEMA.pop("$defs", {}), "InferRequest": _INFER_SCHEMA}
_INFER_DOC = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/InferRequest"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


def create_app(server: InferenceServer, own_lifecycle: bool = True) -> FastAPI:
    """The app; with `own_lifecycle` its lifespan starts the batchers and drains them at exit
    (`Server` does that itself, around both endpoints)."""
    @asynccontextmanager
    async def lifespan(app):
        if own_lifecycle:
            await server.start()
        try:
            yield
        finally:
            if own_lifecycle:
                await server.stop()

    app = FastAPI(title="Ember", version=server.metadata()["version"], lifespan=lifespan,
                  description="KServe v2 inference, OpenAI-style embeddings and Prometheus metrics for models "
                              "compiled by Ember.")
    app.add_middleware(_Limits, server=server)

    def openapi():
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi
            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            doc.setdefault("components", {}).setdefault("schemas", {}).update(_INFER_SCHEMAS)   # the raw-body route's
            for path in doc["paths"].values():       # the served models, by name
                for op in path.values():
                    for prm in op.get("parameters", []):
                        if prm["in"] == "path" and prm["name"] == "name":
                            prm["schema"] = {"type": "string", "enum": sorted(server.models)}
            app.openapi_schema = doc
        return app.openapi_schema
    app.openapi = openapi

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, e: RequestError):
        return _error(str(e), e.status, request.url.path.startswith("/v1"))

    @app.exception_handler(_BodyTooLarge)
    async def _too_large(request: Request, e):
        return _error(f"the request body is over the limit of {server.options.max_body_bytes} bytes", 413,
                      request.url.path.startswith("/v1"))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        parts = []
        for err in e.errors()[:5]:
            loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
            parts.append(f"{loc or 'body'}: {err.get('msg')}")
        return _error("invalid request: " + "; ".join(parts), 400, request.url.path.startswith("/v1"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        msg = f"no route {request.method} {request.url.path}" if e.status_code in (404, 405) else str(e.detail)
        return _error(msg, e.status_code, request.url.path.startswith("/v1"))

    @app.exception_handler(Exception)
    async def _internal(request: Request, e: Exception):
        return _error(f"internal error: {type(e).__name__}: {e}", 500, request.url.path.startswith("/v1"))

    # --- KServe v2 ------------------------------------------------------------------------
    @app.get("/v2", summary="Server metadata")
    async def server_metadata():
        return server.metadata()

    @app.get("/v2/health/live", summary="Liveness")
    async def live():
        return {"live": True}

    @app.get("/v2/health/ready", summary="Readiness")
    async def ready():
        return JSONResponse({"ready": server.ready}, 200 if server.ready else 503)

    @app.get("/v2/models/{name}", summary="Model metadata")
    @app.get("/v2/models/{name}/versions/{version}", summary="Model metadata (one version)")
    async def model_metadata(name: str, version: str | None = None):
        return server.model(name, version).metadata()

    @app.get("/v2/models/{name}/ready", summary="Model readiness")
    @app.get("/v2/models/{name}/versions/{version}/ready", summary="Model readiness (one version)")
    async def model_ready(name: str, version: str | None = None):
        m = server.model(name, version)
        return JSONResponse({"name": m.name, "ready": server.ready}, 200 if server.ready else 503)

    @app.post("/v2/models/{name}/infer", summary="Inference", openapi_extra=_INFER_DOC)
    @app.post("/v2/models/{name}/versions/{version}/infer", summary="Inference (one version)",
              openapi_extra=_INFER_DOC)
    async def infer(name: str, request: Request, version: str | None = None):
        try:
            m = server.model(name, version)
        except RequestError as e:
            server.count_refusal("", "http", e.status)
            raise
        try:
            body = _inflate(await request.body(), request.headers.get("content-encoding"),
                            server.options.max_body_bytes)
            head, binary = split_body(body, request.headers.get(HEADER_LENGTH))
            feeds = decode_inputs(head, binary)
            picked = requested_outputs(head, m.output_names)
            request_id = head.get("id")
            if request_id is not None and not isinstance(request_id, str):
                raise RequestError("'id' must be a string")
        except RequestError as e:
            server.count_refusal(m.name, "http", e.status)
            raise
        outs = await server.infer(m, feeds, "http")
        content, header = encode_response(m.name, m.version, request_id,
                                          [(n, outs[n], binary) for n, binary in picked])
        if header is None:
            return Response(content, media_type="application/json")
        return Response(content, media_type="application/octet-stream",
                        headers={"Inference-Header-Content-Length": str(header)})

    # --- OpenAI-style embeddings ------------------------------------------------------------
    @app.get("/v1/models", summary="Models (OpenAI style)")
    async def openai_models():
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "ember"}
                for name in sorted(server.models)]
        return {"object": "list", "data": data}

    @app.post("/v1/embeddings", summary="Sentence embeddings (OpenAI style)")
    async def embeddings(req: EmbeddingRequest):
        m = server.model(req.model)
        if m.embedder is None:
            raise RequestError(f"model '{req.model}' does not serve embeddings (it has no tokenizer.json "
                               f"beside its model.onnx, or its inputs are not token ids)")
        e = m.embedder
        ids = e.token_ids(req.input)
        if req.dimensions is not None and req.dimensions != e.dims:
            raise RequestError(f"model '{req.model}' gives {e.dims}-dimensional embeddings; "
                               f"'dimensions' {req.dimensions} is not supported")
        if len(ids) > MAX_EMBEDDING_INPUTS:
            raise RequestError(f"'input' has {len(ids)} items; at most {MAX_EMBEDDING_INPUTS} per request")
        # chunks of at most a batch each: they queue like separate requests and batch with others
        step = m.config.max_batch_size if m.batching else len(ids)
        chunks = [e.feeds(ids[k:k + step]) for k in range(0, len(ids), step)]
        if len(chunks) == 1:
            outs = [await server.infer(m, chunks[0], "openai")]
        else:
            outs = await asyncio.gather(*(server.infer(m, f, "openai") for f in chunks))
        vectors = np.concatenate([e.pool(o, f) for o, f in zip(outs, chunks)])
        if req.encoding_format == "base64":
            items = [base64.b64encode(v.astype("<f4").tobytes()).decode() for v in vectors]
        else:
            items = [v.tolist() for v in vectors]
        tokens = int(sum(len(x) for x in ids))
        doc = {"object": "list", "model": req.model,
               "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(items)],
               "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        # json.dumps directly: FastAPI's jsonable_encoder walks every float of every vector
        return Response(json.dumps(doc), media_type="application/json")

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics():
        return Response(server.metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app
