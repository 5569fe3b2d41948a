"""Micro-benchmarks for bench/run.py (each call runs in a fresh process there).

  fma      FMA throughput: 12 independent SIMD[float32, 16] FMA chains in the kernel language,
           one copy per thread — the peak the GEMM is measured against
  gemm N   an Ember session of one MatMul (N x N input, N x N constant weight): GFLOP/s, % peak
  gemv N   1 x N input times an N x N constant weight: weight bytes streamed per second,
           beside a numpy copy of the same bytes
  eltwise  relu(x * 1.5 + 0.5) over N floats, fused into one kernel: bytes read+written per s,
           into an output bound once (IOBinding; also: with a fresh output every run)
  copy     numpy copy of N floats: bytes read+written per second
  read     read bandwidth: a parallel SIMD sum over N floats in the kernel language (bytes
           read per second) — the reference for memory-bound GEMV and MLP batch 1 (not a hard
           ceiling: both stream their packed weights faster than this sum reads)
  mlp_read MLP batch 1 against that read over as many bytes, alternated in one process
           (medians of both)
"""
from __future__ import annotations

import time

import numpy as np


def _best(fn, reps=10, min_time=0.2):
    fn()
    best = float("inf")
    t_end = time.perf_counter() + min_time
    k = 0
    while k < reps or time.perf_counter() < t_end:
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
        k += 1
    return best


def fma_peak(threads: int) -> float:
    """Ember's own probe (ember.runtime.probe.fma_peak), run longer: the peak plans read."""
    from ember.codegen import native
    from ember.runtime.probe import fma_peak as probe_peak
    return max(probe_peak(native.host_target(), threads, n=2_000_000) for _ in range(2))


def _session(nodes, inputs, outputs, inits, threads):
    import onnx
    from onnx import helper
    import ember
    g = helper.make_graph(nodes, "micro", inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    so = ember.SessionOptions()
    so.intra_op_num_threads = threads
    return ember.InferenceSession(m.SerializeToString(), so), onnx


def _matmul_session(m, k, n, threads):
    from onnx import TensorProto, helper, numpy_helper
    w = np.random.default_rng(0).standard_normal((k, n)).astype(np.float32)
    sess, _ = _session([helper.make_node("MatMul", ["a", "w"], ["c"])],
                       [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])],
                       [helper.make_tensor_value_info("c", TensorProto.FLOAT, [m, n])],
                       [numpy_helper.from_array(w, "w")], threads)
    return sess


def read_gbps(nbytes: int, threads: int) -> float:
    fn = _read_fn(nbytes, threads)
    return fn.nbytes / _best(fn, reps=10) / 1e9


def _read_fn(nbytes: int, threads: int):
    """A call that reads about `nbytes` (exactly `.nbytes`) with a parallel SIMD sum."""
    from ember.lang import SIMD, Tensor, float32, kernel, parallelize, set_num_threads, unroll

    @kernel
    def sum_chunks(x: Tensor[float32, 1], out: Tensor[float32, 1]):
        per = x.shape[0] // out.shape[0]

        def worker(c):
            acc = [SIMD[float32, 16](0.0) for k in range(4)]
            base = c * per
            for i in range(0, per, 64):
                for k in unroll(4):
                    acc[k] = acc[k] + x.load[16](base + i + 16 * k)
            out[c] = (acc[0] + acc[1] + acc[2] + acc[3]).reduce_add()
        parallelize(worker, out.shape[0])
    set_num_threads(threads)
    chunks = 64 * threads
    n = nbytes // 4 // (chunks * 64) * (chunks * 64)
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    out = np.zeros(chunks, np.float32)

    def fn():
        sum_chunks(x, out)
    fn.nbytes = 4 * n
    return fn


def mlp_vs_read(nbytes: int, threads: int, seconds: float = 4.0) -> dict:
    """MLP batch 1 (an Ember session of bench/models' MLP, `nbytes` of weights) against the
    read kernel over as many bytes, in blocks of 10 runs alternated in one process: both
    medians come from the same minutes of the shared machine, where a read measured in
    another process at another time (best of 10) once put a median 2-thread MLP at 73%."""
    import ember
    from bench.models import build, example_inputs
    so = ember.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ember.InferenceSession(str(build("mlp")), so)
    feeds = example_inputs("mlp", batch=1)
    read = _read_fn(nbytes, threads)
    times = {"mlp": [], "read": []}
    fns = {"mlp": lambda: sess.run(None, feeds), "read": read}
    for f in fns.values():
        for _ in range(3):
            f()
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end or len(times["mlp"]) < 50:
        for name, f in fns.items():
            for _ in range(10):
                t = time.perf_counter()
                f()
                times[name].append(time.perf_counter() - t)
    mlp = nbytes / float(np.median(times["mlp"])) / 1e9
    rd = read.nbytes / float(np.median(times["read"])) / 1e9
    return {"mlp_gbps": mlp, "read_gbps": rd, "pct_of_read": 100 * mlp / rd}


def _copy_gbps(nbytes):
    src = np.ones(nbytes // 4, np.float32)
    dst = np.empty_like(src)
    return 2 * nbytes / _best(lambda: np.copyto(dst, src)) / 1e9


def run_micro(kind: str, threads: int, arg: str) -> dict:
    if kind == "fma":
        return {"gflops": fma_peak(threads)}
    if kind == "gemm":
        n = int(arg)
        sess = _matmul_session(n, n, n, threads)
        a = np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)
        t = _best(lambda: sess.run(None, {"a": a}), reps=5)
        gf = 2 * n ** 3 / t / 1e9
        peak = fma_peak(threads)
        return {"gflops": gf, "pct_of_fma_peak": 100 * gf / peak}
    if kind == "gemv":
        n = int(arg)
        sess = _matmul_session(1, n, n, threads)
        a = np.random.default_rng(1).standard_normal((1, n)).astype(np.float32)
        t = _best(lambda: sess.run(None, {"a": a}), reps=20)
        gbps = 4 * n * n / t / 1e9
        read = read_gbps(4 * n * n, threads)
        return {"weight_gbps": gbps, "read_gbps": read, "pct_of_read": 100 * gbps / read}
    if kind == "eltwise":
        from onnx import TensorProto, helper, numpy_helper
        n = int(arg)
        sess, _ = _session([helper.make_node("Mul", ["x", "s"], ["t"]), helper.make_node("Add", ["t", "b"], ["u"]),
                            helper.make_node("Relu", ["u"], ["y"])],
                           [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
                           [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])],
                           [numpy_helper.from_array(np.array(1.5, np.float32), "s"),
                            numpy_helper.from_array(np.array(0.5, np.float32), "b")], threads)
        x = np.random.default_rng(1).standard_normal(n).astype(np.float32)
        # the output bound once (IOBinding), as the copy reuses its destination: a fresh
        # 64 MB output per run is page faults (about 3.5 ms here), not kernel time
        bind = sess.io_binding()
        bind.bind_cpu_input("x", x)
        bind.bind_output_array("y", np.empty(n, np.float32))
        t = _best(lambda: sess.run_with_iobinding(bind), reps=10)
        t_fresh = _best(lambda: sess.run(None, {"x": x}), reps=10)
        gbps = 8 * n / t / 1e9
        copy = _copy_gbps(4 * n)
        return {"gbps": gbps, "copy_gbps": copy, "pct_of_copy": 100 * gbps / copy,
                "gbps_fresh_output": 8 * n / t_fresh / 1e9}
    if kind == "copy":
        return {"gbps": _copy_gbps(4 * int(arg))}
    if kind == "read":
        return {"gbps": read_gbps(int(arg), threads)}
    if kind == "mlp_read":
        return mlp_vs_read(int(arg), threads)
    raise ValueError(kind)
