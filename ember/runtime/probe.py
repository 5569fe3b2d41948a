"""The host target with its measured figures: one core's float32 FMA peak and its read
bandwidth from memory, measured once per machine (CPU, features, cores) with two small
kernels in Ember's kernel language, and kept in the cache folder.

Plans read these through `Target.balance` (FLOPs per byte), so a chip whose FMA pipes are half
as wide (Zen 4 against Zen 5) or whose memory is slower gets its own choices rather than
constants fitted on another machine. EMBER_MEASURE=0 skips the measurement (figures None).
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import warnings
from functools import lru_cache

import numpy as np

from ..codegen import native
from ..errors import CacheWarning
from ..ir.target import Target
from ..lang import SIMD, Param, Tensor, float32, fma, int64, kernel, parallelize, set_num_threads, unroll

_lock = threading.Lock()


@lru_cache(maxsize=None)
def measured_target() -> Target:
    t = native.host_target()
    if os.environ.get("EMBER_MEASURE", "1") == "0":
        return t
    ident = f"{t.triple}|{t.cpu}|{t.features}|{t.cores}|{t.l2_bytes}|{t.l3_bytes}|probe1"
    path = native.cache_dir() / f"target-{hashlib.sha256(ident.encode()).hexdigest()[:24]}.json"
    with _lock:
        try:
            d = json.loads(path.read_text())
            return t.with_measured(float(d["fma_gflops"]), float(d["read_gbs"]))
        except OSError:
            pass
        except (ValueError, KeyError, TypeError):
            # a damaged entry like any other: measured again, which may choose other plans
            warnings.warn(f"Ember's cache entry {path.name} (this machine's measured figures) is "
                          "damaged; measuring again", CacheWarning, stacklevel=2)
        try:
            fma, bw = fma_peak(t), read_bandwidth(t)
        except Exception:           # a probe must never stop a compile: plan without figures
            return t
        native.write_atomic(path, json.dumps({"fma_gflops": fma, "read_gbs": bw, "cpu": t.cpu,
                                              "measured": time.time()}).encode())
        return t.with_measured(fma, bw)


def _best(fn, reps):
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


# 12 chains of one register each (of the width code is generated for): enough independent
# FMAs in flight to cover 2 pipes x 4-5 cycles of latency, and within AVX2's 16 registers
@kernel
def _fma_chains(out: Tensor[float32, 1], n: int64, W: Param = 16):
    def worker(w):
        acc = [SIMD[float32, W](float32(k)) for k in range(12)]
        x = SIMD[float32, W](0.999999)
        y = SIMD[float32, W](1e-7)
        for i in range(n):
            for k in unroll(12):
                acc[k] = fma(acc[k], x, y)
        s = acc[0]
        for k in unroll(1, 12):
            s = s + acc[k]
        out[w] = s.reduce_add()
    parallelize(worker, out.shape[0])


@kernel
def _sum_all(x: Tensor[float32, 1], out: Tensor[float32, 1]):
    acc = [SIMD[float32, 16](0.0) for k in range(4)]
    for i in range(0, x.shape[0], 64):
        for k in unroll(4):
            acc[k] = acc[k] + x.load[16](i + 16 * k)
    out[0] = (acc[0] + acc[1] + acc[2] + acc[3]).reduce_add()


def fma_peak(target: Target, threads: int = 1, n: int = 400_000, reps: int = 5) -> float:
    """float32 GFLOP/s of `threads` threads, each running independent FMA chains (the peak
    plans read, and the one bench/micro.py measures the GEMM against)."""
    set_num_threads(threads)
    try:
        out = np.zeros(threads, np.float32)
        lanes = target.f32_lanes
        t = _best(lambda: _fma_chains(out, n, W=lanes), reps=reps)
    finally:
        set_num_threads(None)
    return threads * n * 12 * lanes * 2 / t / 1e9


def read_bandwidth(target: Target) -> float:
    """GB/s one thread reads with a SIMD sum over a buffer four times the last-level cache
    (64 to 256 MiB), so the figure is memory's, not the cache's."""
    nbytes = min(max(4 * target.l3_bytes, 64 << 20), 256 << 20)
    x = np.empty(nbytes // 4 // 64 * 64, np.float32)
    x.fill(1.0)
    out = np.zeros(1, np.float32)
    set_num_threads(1)
    try:
        t = _best(lambda: _sum_all(x, out), reps=3)
    finally:
        set_num_threads(None)
    return x.nbytes / t / 1e9
