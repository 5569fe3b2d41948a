"""The narrower instruction sets Ember generates code for (AVX2, SSE4.2), tested on this host
by capping its features with EMBER_TARGET. Each case runs in a subprocess: the target is
fixed per process (the thread pool and every cached object are built for it)."""
import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ember.codegen import native
from ember.errors import CompileError

ROOT = Path(__file__).resolve().parent.parent
X86 = platform.machine().lower() in ("x86_64", "amd64")


def _levels():
    out = []
    if X86 and native.has_feature("avx2"):
        out.append("avx2")
    if X86:
        out.append("sse4.2")
    return out


def _run(level, args, timeout=900, env=None):
    env = dict(os.environ, EMBER_TARGET=level, **(env or {}))
    env.pop("EMBER_CACHE_DIR", None)         # the child's conftest makes (and removes) its own
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("level", _levels())
def test_target_level_caps_the_host_features(level):
    r = _run(level, ["-c", textwrap.dedent("""
        from ember.codegen import native
        from ember.lang import vector_width
        print(native.vector_bits(), native.has_feature("avx512f"), native.has_feature("avx2"),
              native.has_feature("f16c"), vector_width())""")])
    assert r.returncode == 0, r.stderr
    bits, avx512, avx2, f16c, lanes = r.stdout.split()
    assert avx512 == "False"
    if level == "avx2":
        assert (bits, avx2, lanes) == ("256", "True", "8")
    else:
        assert (bits, avx2, f16c, lanes) == ("128", "False", "False", "4")


def test_unknown_target_level_is_an_error(monkeypatch):
    monkeypatch.setenv("EMBER_TARGET", "avx9000")
    with pytest.raises(CompileError, match="EMBER_TARGET='avx9000'.*avx2"):
        native._target_level()


def test_target_levels_are_for_x86_hosts(monkeypatch):
    monkeypatch.setenv("EMBER_TARGET", "avx2")
    monkeypatch.setattr(native.llvm, "get_process_triple", lambda: "aarch64-unknown-linux-gnu")
    with pytest.raises(CompileError, match="EMBER_TARGET=avx2 applies to x86 hosts only"):
        native.target_info.__wrapped__()


@pytest.mark.skipif(not X86, reason="x86 target levels")
def test_half_conversions_without_f16c_match_numpy():
    """Without F16C, float <-> half are Ember's own integer code (LLVM would call runtime
    functions this process does not have): every half, and floats around every rounding
    boundary, the denormals, overflow, infinities and NaN, bit for bit against numpy."""
    r = _run("sse4.2", ["-c", textwrap.dedent("""
        import numpy as np, ember
        from onnx import TensorProto, helper
        def cast(src, dst, x):
            g = helper.make_graph([helper.make_node("Cast", ["x"], ["y"], to=dst)], "g",
                                  [helper.make_tensor_value_info("x", src, [None])],
                                  [helper.make_tensor_value_info("y", dst, [None])])
            m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
            return ember.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]
        halves = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
        up = cast(TensorProto.FLOAT16, TensorProto.FLOAT, halves)
        want = halves.astype(np.float32)
        ok = (up.view(np.uint32) == want.view(np.uint32)) | (np.isnan(up) & np.isnan(want))
        assert ok.all(), halves[~ok][:5]
        rng = np.random.default_rng(0)
        mids = (want[np.isfinite(want)].astype(np.float64)[:, None] + [0, 1e-12, -1e-12]).ravel()
        floats = np.concatenate([want, mids.astype(np.float32), rng.standard_normal(100000).astype(np.float32)
                                 * np.float32(2.0) ** rng.integers(-30, 20, 100000),
                                 np.float32([65504, 65519.99, 65520, 1e30, -1e30, np.inf, -np.inf, np.nan,
                                             2.0 ** -24, 2.0 ** -25, 2.0 ** -25 * 1.0001, 2.0 ** -26])]).astype(np.float32)
        down = cast(TensorProto.FLOAT, TensorProto.FLOAT16, floats)
        want = floats.astype(np.float16)
        ok = (down.view(np.uint16) == want.view(np.uint16)) | (np.isnan(down) & np.isnan(want))
        assert ok.all(), floats[~ok][:5]
        print("ok", len(floats))""")])
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith("ok")


# the op tests whose lowering depends on the vector width: GEMM tiles (6 rows on AVX2 and
# SSE, 12 on AVX-512), convolutions, the library kernels written for 16 lanes, attention, the
# recurrences (rows per task by the register count)
_RECURRENT = "tests/ops/test_recurrent.py::test_one_build_serves_every_sequence_length"
_INT_GEMM = "tests/ops/test_integer.py::test_matmul_integer"     # the integer GEMM's tile by register count
_OP_TESTS = {
    "avx2": ["tests/ops/test_linalg.py", "tests/ops/test_graphs.py", "tests/ops/test_pool.py",
             "tests/ops/test_library_epilogue.py", "tests/ops/test_attention.py", "tests/ops/test_winograd.py",
             _RECURRENT, _INT_GEMM],
    "sse4.2": ["tests/ops/test_linalg.py", "tests/ops/test_graphs.py", _RECURRENT, _INT_GEMM],
}
# the host run tries every example; these check the width-dependent lowerings on the first
# 40% of the same (derandomized) examples
_NARROW_SCALE = 0.4


@pytest.mark.parametrize("level", _levels())
def test_op_conformance_on_narrower_targets(level):
    scale = float(os.environ.get("EMBER_TEST_EXAMPLES_SCALE", "1")) * _NARROW_SCALE
    r = _run(level, ["-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-n", "0", *_OP_TESTS[level]], timeout=1200,
             env={"EMBER_TEST_EXAMPLES_SCALE": str(scale)})
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
