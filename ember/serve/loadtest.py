"""`ember loadtest URL`: drive a running `ember serve` with concurrent clients, bounded in requests
and time, to loopback addresses only, and report throughput, p50/p90/p99 and errors.

Two request kinds: `--model NAME` posts KServe v2 infer requests with random inputs built from
the model's metadata (`--shape INPUT=2x128` fixes an input's shape; otherwise a -1 dim is 1 when
it is the first and 8 elsewhere); `--embeddings NAME` posts /v1/embeddings with texts. `--rate R` sends open-loop at R
requests per second (latency then includes waiting for a busy server); otherwise each of
`--concurrency` clients sends its next request when the previous one is answered."""
from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import time
from dataclasses import dataclass, field
from urllib.parse import urlparse

import numpy as np

from .eventloop import loop_factory

_TEXTS = ["A man is playing a guitar.", "Someone is playing an instrument.", "The new movie is awesome.",
          "Stock markets fell sharply today after the central bank raised its rates again.",
          "A cat sleeps on the sofa.", "How do I compile an ONNX model for my CPU?"]


class LoadTestError(Exception):
    pass


def check_loopback(url: str) -> str:
    """The URL without a trailing slash, if its host resolves only to loopback addresses."""
    u = urlparse(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise LoadTestError(f"{url!r} is not an http:// URL")
    try:
        addrs = {ai[4][0] for ai in socket.getaddrinfo(u.hostname, u.port or 80)}
    except socket.gaierror as e:
        raise LoadTestError(f"cannot resolve {u.hostname}: {e}") from None
    if not addrs or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs):
        raise LoadTestError(f"{u.hostname} resolves to {sorted(addrs)}: the load tool sends to loopback only")
    return url.rstrip("/")


@dataclass
class Result:
    latencies_ms: list = field(default_factory=list)
    errors: dict = field(default_factory=dict)
    first_error: str = ""
    seconds: float = 0.0

    def summary(self) -> dict:
        lat = np.array(self.latencies_ms) if self.latencies_ms else np.array([np.nan])
        n_err = sum(self.errors.values())
        return {"requests": len(self.latencies_ms) + n_err, "ok": len(self.latencies_ms), "errors": n_err,
                "error_kinds": dict(self.errors), "first_error": self.first_error, "seconds": self.seconds,
                "throughput_rps": len(self.latencies_ms) / self.seconds if self.seconds else 0.0,
                "p50_ms": float(np.percentile(lat, 50)), "p90_ms": float(np.percentile(lat, 90)),
                "p99_ms": float(np.percentile(lat, 99))}


def _infer_body(meta: dict, shapes: dict, rng) -> tuple[bytes, dict]:
    from .protocol import DATATYPES
    inputs, blobs = [], []
    for t in meta["inputs"]:
        shape = shapes.get(t["name"]) or [d if d >= 0 else 1 if k == 0 else 8 for k, d in enumerate(t["shape"])]
        dt = DATATYPES[t["datatype"]]
        if dt.kind == "f":
            a = rng.standard_normal(shape).astype(dt)
        elif dt.kind == "b":
            a = rng.random(shape) < 0.5
        else:
            # token ids below 100 fit any vocabulary; masks are all ones, token types all zeros
            a = rng.integers(0, 100, size=shape).astype(dt)
            if "mask" in t["name"] or "type" in t["name"]:
                a[...] = "mask" in t["name"]
        inputs.append({"name": t["name"], "shape": shape, "datatype": t["datatype"],
                       "parameters": {"binary_data_size": a.nbytes}})
        blobs.append(a.tobytes())
    head = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}}).encode()
    return head + b"".join(blobs), {"Inference-Header-Content-Length": str(len(head)),
                                    "Content-Type": "application/octet-stream"}


class _Connection:
    """One keep-alive HTTP/1.1 connection on asyncio streams. The load tool must cost the machine
    far less than the server it measures (both share the CPU); a general client such as httpx
    spends several milliseconds of CPU per request, this one a small fraction of that."""

    def __init__(self, host, port, headers: dict):
        self.host, self.port = host, port
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.reader = self.writer = None

    async def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self.extra}"
                + "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
                + f"Content-Length: {len(body)}\r\n\r\n").encode()
        try:
            self.writer.write(head + body)
            status_line = await self.reader.readuntil(b"\r\n")
            raw = await self.reader.readuntil(b"\r\n\r\n")
            length, close = 0, False
            for line in raw.split(b"\r\n"):
                k, _, v = line.partition(b":")
                k = k.strip().lower()
                if k == b"content-length":
                    length = int(v)
                elif k == b"connection" and v.strip().lower() == b"close":
                    close = True
            data = await self.reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            self.close()
            raise
        if close:
            self.close()
        return int(status_line.split()[1]), data

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def run_load(url: str, *, model: str | None = None, embeddings: str | None = None, requests: int = 1000,
                   seconds: float = 30.0, concurrency: int = 8, rate: float | None = None, shapes: dict | None = None,
                   texts_per_request: int = 1, token: str | None = None, seed: int = 0) -> Result:
    base = check_loopback(url)
    if (model is None) == (embeddings is None):
        raise LoadTestError("give --model NAME (KServe infer) or --embeddings NAME (/v1/embeddings)")
    if requests < 1 or seconds <= 0 or concurrency < 1 or concurrency > 1024:
        raise LoadTestError("requests >= 1, seconds > 0 and 1 <= concurrency <= 1024")
    u = urlparse(base)
    prefix = u.path.rstrip("/")
    if u.scheme != "http":
        raise LoadTestError("the load tool speaks plain http:// (loopback needs no TLS)")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    rng = np.random.default_rng(seed)
    pool = [_Connection(u.hostname, u.port or 80, headers) for _ in range(concurrency)]
    free = asyncio.Queue()
    for c in pool:
        free.put_nowait(c)
    try:
        if model is not None:
            try:
                status, data = await pool[0].request("GET", f"{prefix}/v2/models/{model}")
            except OSError as e:
                raise LoadTestError(f"cannot reach {base}: {e}") from None
            if status != 200:
                raise LoadTestError(f"model metadata: {status} {data[:200]!r}")
            body, extra = _infer_body(json.loads(data), shapes or {}, rng)
            target = f"{prefix}/v2/models/{model}/infer"

            def make():
                return target, body, extra
        else:
            def make():
                texts = [_TEXTS[int(k)] for k in rng.integers(0, len(_TEXTS), size=texts_per_request)]
                # base64, as the openai client asks by default
                doc = {"model": embeddings, "input": texts, "encoding_format": "base64"}
                return f"{prefix}/v1/embeddings", json.dumps(doc).encode(), {"Content-Type": "application/json"}

        res = Result()
        sent = 0
        t_end = time.perf_counter() + seconds

        async def one(t_sched=None):
            path, payload, extra_headers = make()
            conn = await free.get()
            t0 = time.perf_counter() if t_sched is None else t_sched
            try:
                status, data = await conn.request("POST", path, payload, extra_headers)
                if status == 200:
                    res.latencies_ms.append((time.perf_counter() - t0) * 1e3)
                else:
                    res.errors[str(status)] = res.errors.get(str(status), 0) + 1
                    res.first_error = res.first_error or data[:300].decode(errors="replace")
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError) as e:
                res.errors[type(e).__name__] = res.errors.get(type(e).__name__, 0) + 1
            finally:
                free.put_nowait(conn)

        start = time.perf_counter()
        if rate is None:
            async def worker():
                nonlocal sent
                while sent < requests and time.perf_counter() < t_end:
                    sent += 1
                    await one()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        else:
            tasks = []
            while sent < requests:
                t_sched = start + sent / rate
                now = time.perf_counter()
                if t_sched > t_end:
                    break
                if t_sched > now:
                    await asyncio.sleep(t_sched - now)
                tasks.append(asyncio.create_task(one(t_sched)))
                sent += 1
            await asyncio.gather(*tasks)
        res.seconds = time.perf_counter() - start
    finally:
        for c in pool:
            c.close()
    return res


def main(args) -> int:
    shapes = {}
    for item in args.shape or []:
        name, _, v = item.partition("=")
        try:
            shapes[name] = [int(d) for d in v.lower().split("x")]
        except ValueError:
            print(f"ember loadtest: --shape {item!r}: expected NAME=2x128")
            return 2
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            res = runner.run(run_load(args.url, model=args.model, embeddings=args.embeddings, requests=args.requests,
                                      seconds=args.seconds, concurrency=args.concurrency, rate=args.rate, shapes=shapes,
                                      texts_per_request=args.texts, token=args.auth_token))
    except LoadTestError as e:
        print(f"ember loadtest: {e}")
        return 2
    s = res.summary()
    if args.json:
        print(json.dumps(s))
    else:
        print(f"{s['ok']} ok, {s['errors']} errors {s['error_kinds'] or ''} in {s['seconds']:.1f} s: "
              f"{s['throughput_rps']:.1f} requests/s; latency p50 {s['p50_ms']:.2f} ms, p90 {s['p90_ms']:.2f} ms, "
              f"p99 {s['p99_ms']:.2f} ms")
        if s["first_error"]:
            print(f"first error: {s['first_error']}")
    return 0 if s["errors"] == 0 else 1
