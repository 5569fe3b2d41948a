"""Prometheus metrics for one server (its own registry, so that several servers in a process,
as in tests, never share counters)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# latency buckets from 0.5 ms to 30 s: small models answer in a millisecond
_SECONDS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("ember_requests", "Requests by model, protocol and status code",
                                ["model", "protocol", "status"], registry=r)
        self.latency = Histogram("ember_request_latency_seconds", "Request latency, queue and run included",
                                 ["model", "protocol"], buckets=_SECONDS, registry=r)
        self.queue = Histogram("ember_queue_time_seconds", "Time a request waited for its batch to start",
                               ["model"], buckets=_SECONDS, registry=r)
        self.run_time = Histogram("ember_batch_run_seconds", "Native run time of one batch",
                                  ["model"], buckets=_SECONDS, registry=r)
        self.batch_size = Histogram("ember_batch_size", "Rows in each batch run", ["model"], buckets=_ROWS,
                                    registry=r)
        self.inflight = Gauge("ember_inflight_requests", "Requests being handled", ["model"], registry=r)
        self.compile_seconds = Gauge("ember_model_compile_seconds", "Time to load and compile the model",
                                     ["model", "version"], registry=r)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
