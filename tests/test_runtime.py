"""Runtime behaviour: one native call per run, shape signatures, threads, the disk cache."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from onnx import TensorProto as T, helper

import ember
from tests.util import make_model, mlp_model


def _python_calls(fn):
    return run_calls(None, fn)[0]


def run_calls(sess, fn):
    """(Python calls, C-function calls, native entry calls) made by `fn()`. The native entry
    of each planned shape signature of `sess` is wrapped to count it; Python and C calls come
    from the profiler hook, so work dispatched node by node (in Python or through numpy's
    C functions) would show in the counts."""
    count = {"call": 0, "c_call": 0, "native": 0}
    wrapped = []
    if sess is not None:
        for plan in sess._plans.values():
            def native(*a, _fn=plan.fn):
                count["native"] += 1
                return _fn(*a)
            wrapped.append((plan, plan.fn))
            plan.fn = native

    def prof(frame, event, arg):
        if event in count:
            count[event] += 1
    sys.setprofile(prof)
    try:
        fn()
    finally:
        sys.setprofile(None)
        for plan, f in wrapped:
            plan.fn = f
    return count["call"], count["c_call"], count["native"]


def test_run_is_one_native_call_and_constant_python_work():
    calls = []
    for layers in (2, 16):
        s = ember.InferenceSession(mlp_model(layers=layers))
        feeds = {"x": np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)}
        s.run(None, feeds)                     # plans the shape signature
        calls.append(run_calls(s, lambda: s.run(None, feeds)))
    assert calls[0] == calls[1], calls        # nothing grows with the node count
    py, c, native = calls[0]
    assert native == 1 and py < 40 and c < 40, calls


def test_one_session_many_shapes_no_recompile():
    s = ember.InferenceSession(mlp_model())
    rng = np.random.default_rng(1)
    ref = ember.InferenceSession(mlp_model())
    for b in (1, 5, 17, 1):
        x = rng.standard_normal((b, 64)).astype(np.float32)
        y = s.run(None, {"x": x})[0]
        assert y.shape == (b, 64)
        np.testing.assert_allclose(y, ref.run(None, {"x": x})[0], rtol=1e-6)
    assert len(s._plans) == 3


def test_working_memory_is_one_arena_per_run_in_flight_whatever_the_shapes():
    # a server's batcher sees ~100 shape signatures: arenas kept per signature grew its RSS
    s = ember.InferenceSession(mlp_model(layers=3))
    ref = ember.InferenceSession(mlp_model(layers=3))
    rng = np.random.default_rng(5)
    for b in (3, 40, 1, 7, 40, 2, 64, 5):
        x = rng.standard_normal((b, 64)).astype(np.float32)
        np.testing.assert_array_equal(s.run(None, {"x": x})[0], ref.run(None, {"x": x})[0])
    assert len(s._plans) == 7
    assert len(s._arenas._free) == 1
    assert s._arenas._free[0].nbytes >= max(p.arena_bytes for p in s._plans.values())


def test_concurrent_runs_from_threads():
    s = ember.InferenceSession(mlp_model(layers=4))
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((b, 64)).astype(np.float32) for b in (1, 3, 7, 9)]
    expected = [s.run(None, {"x": x})[0] for x in xs]
    errors = []

    def work(k):
        for i in range(50):
            j = (k + i) % len(xs)
            y = s.run(None, {"x": xs[j]})[0]
            if not np.array_equal(y, expected[j]):
                errors.append((k, i))
    ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors


def test_io_metadata_like_onnxruntime():
    m = make_model([helper.make_node("Cast", ["ids"], ["y"], to=T.FLOAT)],
                   [("ids", T.INT64, ["batch", "seq"])], [("y", T.FLOAT, ["batch", "seq"])])
    s = ember.InferenceSession(m)
    (i,), (o,) = s.get_inputs(), s.get_outputs()
    assert (i.name, i.shape, i.type) == ("ids", ["batch", "seq"], "tensor(int64)")
    assert (o.name, o.shape, o.type) == ("y", ["batch", "seq"], "tensor(float)")


def test_second_process_uses_disk_cache(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(mlp_model(layers=3))
    code = ("import sys, time, numpy as np; t=time.perf_counter(); import ember; "
            "s=ember.InferenceSession(sys.argv[1]); "
            "print(s.compile_stats['cache'], s.run(None, {'x': np.ones((2,64), np.float32)})[0].sum())")
    env = dict(os.environ, EMBER_CACHE_DIR=str(tmp_path / "cache"))
    first = subprocess.run([sys.executable, "-c", code, str(path)], env=env, capture_output=True, text=True, check=True)
    second = subprocess.run([sys.executable, "-c", code, str(path)], env=env, capture_output=True, text=True, check=True)
    assert first.stdout.split()[0] == "miss"
    assert second.stdout.split()[0] == "hit"
    assert first.stdout.split()[1] == second.stdout.split()[1]


def test_disk_cache_is_capped_least_recently_used_first(tmp_path, monkeypatch):
    from ember.codegen import native
    monkeypatch.setenv("EMBER_CACHE_DIR", str(tmp_path))
    for i, name in enumerate(["old.o", "mid.npy", "new.json", "in-flight.weights.tmp7.npy", "model.onnx"]):
        (tmp_path / name).write_bytes(b"x" * 1000)
        os.utime(tmp_path / name, ns=(10**18 + i * 10**9,) * 2)
    native.touch_cached(tmp_path / "old.o")       # used just now: the newest
    assert native.trim_cache(limit=2000) == 1000
    left = sorted(p.name for p in tmp_path.iterdir())
    # mid.npy went first; temp writes and files that are not Ember's artifacts are never touched
    assert left == ["in-flight.weights.tmp7.npy", "model.onnx", "new.json", "old.o"]
    assert native.trim_cache(limit=0) == 0        # 0: unlimited


@pytest.mark.parametrize("text,want", [("", 4 << 30), ("500M", 500 << 20), ("2GiB", 2 << 30),
                                       ("1.5g", 3 << 29), ("123", 123), ("0", 0)])
def test_cache_limit_from_environment(monkeypatch, text, want):
    from ember.codegen import native
    monkeypatch.setenv("EMBER_CACHE_MAX_BYTES", text)
    assert native.cache_limit() == want


def test_cache_limit_rejects_nonsense_with_a_warning(monkeypatch):
    from ember.codegen import native
    monkeypatch.setenv("EMBER_CACHE_MAX_BYTES", "lots")
    with pytest.warns(UserWarning, match="EMBER_CACHE_MAX_BYTES='lots'"):
        assert native.cache_limit() == native.DEFAULT_CACHE_LIMIT


def test_evicted_model_recompiles(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBER_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "m.onnx"
    path.write_bytes(mlp_model(layers=2))
    x = np.random.default_rng(5).standard_normal((2, 64)).astype(np.float32)
    first = ember.InferenceSession(str(path))
    want = first.run(None, {"x": x})[0]
    for p in (tmp_path / "cache").glob("*.npy"):
        p.unlink()                                  # what trim_cache does under a small cap
    second = ember.InferenceSession(str(path))
    assert second.compile_stats["cache"] == "miss"
    np.testing.assert_array_equal(second.run(None, {"x": x})[0], want)
    assert ember.InferenceSession(str(path)).compile_stats["cache"] == "hit"


def test_outputs_that_are_inputs_or_constants():
    m = make_model([helper.make_node("Identity", ["x"], ["a"]),
                    helper.make_node("Reshape", ["x", "s"], ["b"]),
                    helper.make_node("Identity", ["c"], ["cc"])],
                   [("x", T.FLOAT, ["n", 2])],
                   [("a", T.FLOAT, None), ("b", T.FLOAT, None), ("cc", T.FLOAT, None)],
                   {"s": np.array([-1], np.int64), "c": np.arange(3, dtype=np.float32)})
    s = ember.InferenceSession(m)
    x = np.random.default_rng(0).standard_normal((3, 2)).astype(np.float32)
    a, b, cc = s.run(None, {"x": x})
    np.testing.assert_array_equal(a, x)
    np.testing.assert_array_equal(b, x.reshape(-1))
    np.testing.assert_array_equal(cc, np.arange(3, dtype=np.float32))
    a[0, 0] = 99.0
    assert x[0, 0] != 99.0          # outputs never alias inputs


def test_external_data_model(tmp_path):
    import onnx
    m = onnx.load_model_from_string(mlp_model(layers=2))
    path = tmp_path / "ext.onnx"
    onnx.save_model(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.data", size_threshold=0)
    assert (tmp_path / "ext.data").exists()
    x = np.random.default_rng(3).standard_normal((2, 64)).astype(np.float32)
    want = ember.InferenceSession(mlp_model(layers=2)).run(None, {"x": x})[0]
    got = ember.InferenceSession(str(path)).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_profiling_times_every_kernel_and_writes_a_trace(tmp_path):
    import json
    so = ember.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = str(tmp_path / "prof")
    s = ember.InferenceSession(mlp_model(layers=3), so)
    plain = ember.InferenceSession(mlp_model(layers=3))
    x = {"x": np.random.default_rng(2).standard_normal((8, 64)).astype(np.float32)}
    for _ in range(3):
        np.testing.assert_array_equal(s.run(None, x)[0], plain.run(None, x)[0])
    rows = s.kernel_profile()
    assert len(rows) == s.compile_stats["kernels"] and all(r["calls"] == 3 for r in rows)
    assert all(r["median_ms"] >= 0 for r in rows) and abs(sum(r["share"] for r in rows) - 1) < 1e-6
    assert any(r["kind"] == "matmul" and r["nodes"] for r in rows)
    path = s.end_profiling()
    events = json.load(open(path))["traceEvents"]
    assert len(events) == 3 * len(rows) and all(e["ph"] == "X" and e["dur"] >= 0 for e in events)
    assert s.kernel_profile() == []            # end_profiling hands the runs over


def test_cli_bench_profile(capsys):
    from ember.cli.main import main
    import onnx, tempfile
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "m.onnx")
        onnx.save(mlp_model(layers=2), p)
        assert main(["bench", p, "--runs", "4", "--warmup", "1", "--dim", "batch=3", "--profile", "5"]) == 0
    out = capsys.readouterr().out
    assert "by kind:" in out and "matmul" in out


def test_identical_layers_compile_once():
    # sixteen same-shaped layers differ only in their weights and buffers: one function each
    # for the distinct kernel shapes, called with different buffer tables; results unchanged
    from ember.runtime.compiler import compile_model
    c = compile_model(mlp_model(layers=16), use_cache=False)
    assert c.stats["kernels"] >= 16 and c.stats["unique_kernels"] <= 3, c.stats
    s = ember.InferenceSession(mlp_model(layers=16))
    x = np.random.default_rng(3).standard_normal((5, 64)).astype(np.float32)
    ref = x.astype(np.float64)
    import onnx
    import onnx.numpy_helper as nh
    m = onnx.load_from_string(mlp_model(layers=16))
    inits = {i.name: nh.to_array(i) for i in m.graph.initializer}
    vals = {"x": ref}
    for n in m.graph.node:
        a = [vals[i] if i in vals else inits[i].astype(np.float64) for i in n.input]
        vals[n.output[0]] = {"MatMul": lambda: a[0] @ a[1], "Add": lambda: a[0] + a[1],
                             "Relu": lambda: np.maximum(a[0], 0)}[n.op_type]()
    np.testing.assert_allclose(s.run(None, {"x": x})[0], vals[m.graph.output[0].name], rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------ io binding
def _two_output_model():
    return make_model([helper.make_node("Mul", ["x", "x"], ["sq"]), helper.make_node("Relu", ["sq"], ["r"]),
                       helper.make_node("Sub", ["x", "r"], ["d"])],
                      [("x", T.FLOAT, ["n", 5])], [("r", T.FLOAT, ["n", 5]), ("d", T.FLOAT, ["n", 5])])


@pytest.mark.parametrize("engine", ["ember", "onnxruntime"])
def test_io_binding_writes_bound_outputs_in_place(engine):
    """The onnxruntime IOBinding calls, run unchanged on both engines: inputs bound as arrays or
    by pointer; a bound output buffer (buffer_ptr) is written in place; an output bound to the device only is allocated by the
    engine; copy_outputs_to_cpu returns copies."""
    if engine == "onnxruntime":
        rt = pytest.importorskip("onnxruntime")
        s = rt.InferenceSession(_two_output_model(), providers=["CPUExecutionProvider"])
    else:
        s = ember.InferenceSession(_two_output_model())
    rng = np.random.default_rng(11)
    for n in (3, 8):
        x = rng.standard_normal((n, 5)).astype(np.float32)
        want = s.run(None, {"x": x})
        out = np.full((n, 5), np.nan, np.float32)
        b = s.io_binding()
        if n == 3:
            b.bind_cpu_input("x", x)
        else:                                   # the input by pointer, as ORT binds device memory
            b.bind_input("x", "cpu", 0, np.float32, list(x.shape), x.ctypes.data)
        b.bind_output("d", "cpu", 0, np.float32, list(out.shape), out.ctypes.data)
        b.bind_output("r", "cpu")
        s.run_with_iobinding(b)
        np.testing.assert_array_equal(out, want[1])
        got = b.copy_outputs_to_cpu()
        np.testing.assert_array_equal(got[0], want[1])
        np.testing.assert_array_equal(got[1], want[0])


def test_io_binding_reuses_its_outputs_between_runs():
    """Ember's own shorthand binds a NumPy array; outputs it allocates are kept while the shape
    holds, so repeated runs allocate nothing (a fresh 64 MB output costs more in page faults
    than the kernel that fills it)."""
    s = ember.InferenceSession(_two_output_model())
    rng = np.random.default_rng(12)
    b = s.io_binding()
    out = np.empty((4, 5), np.float32)
    b.bind_output_array("d", out)
    b.bind_output("r")
    firsts = []
    for k in range(3):
        x = rng.standard_normal((4, 5)).astype(np.float32)
        b.bind_cpu_input("x", x)
        s.run_with_iobinding(b)
        d, r = b.get_outputs()
        assert d is out
        firsts.append(r)
        np.testing.assert_array_equal(r, np.maximum(x * x, 0))
        np.testing.assert_array_equal(out, x - np.maximum(x * x, 0))
    assert firsts[0] is firsts[1] is firsts[2]
    b.bind_cpu_input("x", rng.standard_normal((2, 5)).astype(np.float32))
    with pytest.raises(ember.InvalidInputError, match=r"output 'd' is bound to float32\[4, 5\].*float32\[2, 5\]"):
        s.run_with_iobinding(b)                 # a new shape: 'd' is the caller's, of the old one
    b.bind_output_array("d", np.empty((2, 5), np.float32))
    s.run_with_iobinding(b)                     # 'r' gets a new buffer of its own
    assert b.get_outputs()[1].shape == (2, 5) and b.get_outputs()[1] is not firsts[0]


@pytest.mark.parametrize("case,match", [
    ("dtype", r"output 'd' is bound to float64\[4, 5\], but this run gives float32\[4, 5\]"),
    ("strided", r"output 'd' is bound to an array that is not C-contiguous"),
    ("alias", r"output 'd' is bound to memory that overlaps input 'x'"),
    ("same", r"output 'd' is bound to memory that overlaps output 'r'"),
    ("device", r"'d': Ember runs on the CPU; bind with device_type='cpu', not 'cuda'"),
    ("name", r"unknown output name 'y'; the model's outputs are \['r', 'd'\]"),
    ("input", r"unknown input name 'z'"),
    ("missing", r"missing input\(s\) \['x'\]"),
    ("ptr", r"output 'd': binding a buffer_ptr needs element_type and shape"),
    ("early", r"no results yet"),
    ("list", r"output 'd': expected a numpy.ndarray, got list"),
])
def test_io_binding_errors_name_the_output_and_the_fix(case, match):
    s = ember.InferenceSession(_two_output_model())
    x = np.random.default_rng(13).standard_normal((4, 5)).astype(np.float32)
    b = s.io_binding()
    b.bind_cpu_input("x", x)
    with pytest.raises(ember.InvalidInputError, match=match):
        if case == "dtype":
            b.bind_output_array("d", np.empty((4, 5)))
        elif case == "strided":
            b.bind_output_array("d", np.empty((4, 10), np.float32)[:, ::2])
        elif case == "alias":
            b.bind_output_array("d", x)
        elif case == "same":
            out = np.empty((4, 5), np.float32)
            b.bind_output_array("d", out)
            b.bind_output_array("r", out)
        elif case == "device":
            b.bind_output("d", "cuda")
        elif case == "name":
            b.bind_output("y")
        elif case == "input":
            b.bind_cpu_input("z", x)
        elif case == "missing":
            b.clear_binding_inputs()
        elif case == "ptr":
            b.bind_output("d", "cpu", 0, None, None, x.ctypes.data)
        elif case == "early":
            b.get_outputs()
        elif case == "list":
            b.bind_output_array("d", [[0.0] * 5] * 4)
        s.run_with_iobinding(b)
