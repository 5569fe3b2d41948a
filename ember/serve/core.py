"""What the HTTP and gRPC endpoints share: the loaded models, their batchers, metrics, limits,
and one `infer` path (lookup, check, batch, time out, count)."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

from .. import __version__
from .batching import DynamicBatcher
from .metrics import Metrics
from .protocol import RequestError

EXTENSIONS = ["binary_tensor_data", "model_repository", "openai_embeddings", "metrics"]


@dataclass
class ServeOptions:
    max_body_bytes: int = 64 << 20
    request_timeout_s: float = 60.0
    auth_token: str | None = None


class InferenceServer:
    def __init__(self, models, options: ServeOptions | None = None):
        self.options = options or ServeOptions()
        self.metrics = Metrics()
        self.models: dict[str, dict[str, object]] = {}
        for m in models:
            if m.version in self.models.setdefault(m.name, {}):
                raise ValueError(f"model {m.name} version {m.version} is given twice")
            self.models[m.name][m.version] = m
            self.metrics.compile_seconds.labels(m.name, m.version).set(m.compile_seconds)
        self.batchers = {(m.name, m.version): DynamicBatcher(m, self.metrics) for m in models}
        self.ready = False
        self._started = False

    async def start(self):
        if self._started:
            return
        self._started = True
        for b in self.batchers.values():
            b.start()
        self.ready = True

    async def stop(self):
        """Stop taking requests and finish the ones queued or running."""
        self.ready = False
        await asyncio.gather(*(b.close() for b in self.batchers.values()))

    def metadata(self) -> dict:
        return {"name": "ember", "version": __version__, "extensions": EXTENSIONS}

    def model(self, name: str, version: str | None = None):
        versions = self.models.get(name)
        if not versions:
            known = ", ".join(sorted(self.models)) or "none"
            raise RequestError(f"unknown model '{name}'; this server has: {known}", 404)
        if version in (None, ""):
            return versions[max(versions, key=int)]
        if version not in versions:
            raise RequestError(f"model '{name}' has no version '{version}'; it has {sorted(versions, key=int)}", 404)
        return versions[version]

    async def infer(self, model, feeds: dict[str, np.ndarray], protocol: str) -> dict[str, np.ndarray]:
        """Run one request through the model's batcher, with the server's timeout and metrics."""
        m = self.metrics
        t0 = time.perf_counter()
        m.inflight.labels(model.name).inc()
        status = "200"
        try:
            return await asyncio.wait_for(self.batchers[(model.name, model.version)].submit(feeds),
                                          self.options.request_timeout_s)
        except asyncio.TimeoutError:
            status = "504"
            raise RequestError(f"the request to '{model.name}' did not finish within "
                               f"{self.options.request_timeout_s:g} s", 504) from None
        except RequestError as e:
            status = str(e.status)
            raise
        except Exception:
            status = "500"
            raise
        finally:
            m.inflight.labels(model.name).dec()
            m.requests.labels(model.name, protocol, status).inc()
            m.latency.labels(model.name, protocol).observe(time.perf_counter() - t0)

    def count_refusal(self, name: str, protocol: str, status: int):
        """A request refused before it reached a model (malformed, unknown model)."""
        self.metrics.requests.labels(name or "", protocol, str(status)).inc()
