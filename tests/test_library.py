"""Ember's library kernels (written in the kernel language) and custom ops inside models."""
import math

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.kernels import math as M
from ember.lang import Param, float32, kernel


def _grid():
    rng = np.random.default_rng(0)
    return np.concatenate([np.linspace(-100, 100, 20001), np.geomspace(1e-6, 90, 3000),
                           -np.geomspace(1e-6, 90, 3000), rng.standard_normal(5000) * 3]).astype(np.float32)


@pytest.mark.parametrize("kern, ref", [(M.exp_f32, np.exp), (M.erf_f32, np.vectorize(math.erf)),
                                       (M.tanh_f32, np.tanh)])
def test_vector_math_is_accurate(kern, ref):
    x = _grid()
    got = kern(x)
    want = ref(x.astype(np.float64))
    ok = np.isfinite(want) & (np.abs(want) > 1e-37) & (np.abs(want) < 3.4e38)
    rel = np.abs(got[ok] - want[ok]) / np.abs(want[ok])
    assert rel.max() < 4e-7          # about 3 ulp


def test_vector_math_special_values():
    x = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 200.0, -200.0], np.float32)
    np.testing.assert_array_equal(M.exp_f32(x), [np.inf, 0, np.nan, 1, 1, np.inf, 0])
    np.testing.assert_array_equal(M.erf_f32(x), [1, -1, np.nan, 0, 0, 1, -1])
    np.testing.assert_array_equal(M.tanh_f32(x), [1, -1, np.nan, 0, 0, 1, -1])


def _model(nodes, inputs, outputs, inits=(), domains=()):
    g = helper.make_graph(nodes, "m", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)] +
                             [helper.make_opsetid(d, 1) for d in domains]).SerializeToString()


@pytest.mark.parametrize("n", [1, 7, 16, 33, 100])
def test_softmax_and_layer_norm_library_kernels(n, capsys):
    rng = np.random.default_rng(n)
    scale = numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), "s")
    bias = numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), "b")
    model = _model([helper.make_node("Softmax", ["x"], ["p"], axis=-1, name="sm"),
                    helper.make_node("LayerNormalization", ["x", "s", "b"], ["y"], axis=-1, epsilon=1e-3,
                                     name="ln")],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["a", 3, n])],
                   [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["a", 3, n]),
                    helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", 3, n])], [scale, bias])
    x = (rng.standard_normal((2, 3, n)) * 4).astype(np.float32)
    p, y = ember.InferenceSession(model).run(None, {"x": x})
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(-1, keepdims=True))
    np.testing.assert_allclose(p, e / e.sum(-1, keepdims=True), rtol=2e-6, atol=1e-7)
    mu = x64.mean(-1, keepdims=True)
    var = ((x64 - mu) ** 2).mean(-1, keepdims=True)
    ref = (x64 - mu) / np.sqrt(var + 1e-3) * numpy_helper.to_array(scale) + numpy_helper.to_array(bias)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_library_kernels_are_used(tmp_path, capsys):
    from ember.cli.main import main
    model = _model([helper.make_node("Softmax", ["x"], ["p"], axis=-1, name="sm")],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["a", 10])],
                   [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["a", 10])])
    (tmp_path / "m.onnx").write_bytes(model)
    assert main(["inspect", str(tmp_path / "m.onnx")]) == 0
    assert "library   out float32[a,10]  ops [softmax]" in capsys.readouterr().out


# ------------------------------------------------------------------------- custom ops
@kernel
def squareplus(x: float32, b: Param = 4.0) -> float32:
    # a smooth ReLU: (x + sqrt(x^2 + b)) / 2
    return 0.5 * (x + (x * x + b) ** 0.5)


ember.custom_op("SquarePlus", squareplus, domain="test.ops")


def _squareplus_model():
    w = numpy_helper.from_array(np.random.default_rng(3).standard_normal((6, 5)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("Neg", ["h"], ["nh"], name="neg"),
             helper.make_node("SquarePlus", ["nh"], ["sp"], name="sq", domain="test.ops", b=2.0),
             helper.make_node("Exp", ["sp"], ["y"], name="exp")]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])], [w], ["test.ops"]), \
        numpy_helper.to_array(w)


def test_custom_elementwise_op_matches_reference_and_fuses(tmp_path, capsys):
    model, w = _squareplus_model()
    x = np.random.default_rng(4).standard_normal((9, 6)).astype(np.float32)
    y = ember.InferenceSession(model).run(None, {"x": x})[0]
    h = -(x.astype(np.float64) @ w)
    np.testing.assert_allclose(y, np.exp(0.5 * (h + np.sqrt(h * h + 2.0))), rtol=1e-5)
    from ember.cli.main import main
    (tmp_path / "m.onnx").write_bytes(model)
    assert main(["inspect", str(tmp_path / "m.onnx")]) == 0
    out = capsys.readouterr().out
    assert "-> 1 kernels" in out.splitlines()[0]
    assert "ops [matmul, neg, test.ops.SquarePlus, exp]" in out


def test_unregistered_custom_domain_is_reported():
    model = _model([helper.make_node("Nope", ["x"], ["y"], domain="test.none", name="n1")],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])], domains=["test.none"])
    with pytest.raises(ember.UnsupportedOpError, match="n1.*custom-domain op with no registered kernel"):
        ember.InferenceSession(model)


def test_custom_op_unknown_attribute_is_an_error():
    model = _model([helper.make_node("SquarePlus", ["x"], ["y"], domain="test.ops", name="sq", c=1.0)],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])], domains=["test.ops"])
    with pytest.raises(ember.EmberError, match="sq.*no parameter"):
        ember.InferenceSession(model)


def test_custom_tensor_op_runs_as_its_own_kernel():
    from ember.ir.graph import TensorType
    from ember.lang import Tensor, parallelize

    @kernel
    def row_cumsum(x: Tensor[float32, 2], y: Tensor[float32, 2]):
        def row(i):
            acc = 0.0
            for j in range(x.shape[1]):
                acc += x[i, j]
                y[i, j] = acc
        parallelize(row, x.shape[0])

    ember.custom_op("RowCumsum", row_cumsum, domain="test.ops",
                    infer=lambda types, attrs: [TensorType("float32", types[0].shape)])
    model = _model([helper.make_node("Relu", ["x"], ["r"]),
                    helper.make_node("RowCumsum", ["r"], ["y"], domain="test.ops")],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["a", 4, 9])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", 4, 9])], domains=["test.ops"])
    x = np.random.default_rng(5).standard_normal((3, 4, 9)).astype(np.float32)
    y = ember.InferenceSession(model).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, np.cumsum(np.maximum(x, 0), axis=-1), rtol=1e-5, atol=1e-6)


def _row_scale_model(op, tail):
    nodes = [helper.make_node(op, ["x"], ["s"], domain="test.ops")] + tail
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["a", 37])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", 37])], domains=["test.ops"])


def test_custom_tensor_op_takes_a_fused_epilogue():
    """A tensor kernel registered with epilogue=True stores the ops after it (one kernel);
    one that stores scalars is told why it cannot."""
    from ember.ir.graph import TensorType
    from ember.lang import SIMD, Tensor, int32, parallelize
    from ember.runtime.compiler import compile_model

    @kernel
    def row_scale(x: Tensor[float32, 2], y: Tensor[float32, 2]):
        lane = SIMD[int32, 16].iota()

        def row(i):
            for j in range(0, x.shape[1], 16):
                m = lane + int32(j) < int32(x.shape[1])
                y.store(i, j, x.load[16](i, j, mask=m) * float32(i + 1), mask=m)
        parallelize(row, x.shape[0])

    @kernel
    def row_scale_scalar(x: Tensor[float32, 2], y: Tensor[float32, 2]):
        def row(i):
            for j in range(x.shape[1]):
                y[i, j] = x[i, j] * float32(i + 1)
        parallelize(row, x.shape[0])

    @kernel
    def row_scale_view(x: Tensor[float32, 2], y: Tensor[float32, 2]):
        lane = SIMD[int32, 16].iota()

        def row(i):
            out = y[i]                  # a view: the epilogue's index comes from its flat offset
            for j in range(0, x.shape[1], 16):
                m = lane + int32(j) < int32(x.shape[1])
                out.store(j, x.load[16](i, j, mask=m) * float32(i + 1), mask=m)
        parallelize(row, x.shape[0])

    infer = lambda types, attrs: [TensorType("float32", types[0].shape)]  # noqa: E731
    ember.custom_op("RowScale", row_scale, domain="test.ops", infer=infer, epilogue=True)
    ember.custom_op("RowScaleView", row_scale_view, domain="test.ops", infer=infer, epilogue=True)
    ember.custom_op("RowScaleScalar", row_scale_scalar, domain="test.ops", infer=infer, epilogue=True)
    # the epilogue also reads x at the stored element: its index must be the element's own
    tail = [helper.make_node("Neg", ["s"], ["n"]), helper.make_node("Mul", ["n", "x"], ["nx"]),
            helper.make_node("Relu", ["nx"], ["y"])]
    x = np.random.default_rng(6).standard_normal((5, 37)).astype(np.float32)
    for op in ("RowScale", "RowScaleView"):
        model = _row_scale_model(op, tail)
        assert [k for _, k, _ in compile_model(model, use_cache=False).kernel_info] == ["library"]
        y = ember.InferenceSession(model).run(None, {"x": x})[0]
        np.testing.assert_allclose(y, np.maximum(-x * np.arange(1, 6, dtype=np.float32)[:, None] * x, 0), rtol=1e-6)
    with pytest.raises(ember.EmberError, match="row_scale_scalar.*epilogue=True.*vectors along the last axis"):
        ember.InferenceSession(_row_scale_model("RowScaleScalar", tail))


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("m, k, n", [(1, 1, 1), (7, 5, 33), (13, 17, 130), (64, 96, 80)])
def test_gemm_in_the_language(m, k, n, packed):
    from ember.kernels.gemm import matmul_f32, matmul_packed_f32, pack_b
    rng = np.random.default_rng(m * 1000 + n)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    c = np.full((m, n), np.nan, np.float32)
    if packed:
        matmul_packed_f32(a, pack_b(b), c)
    else:
        matmul_f32(a, b, c)
    np.testing.assert_allclose(c, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4 * np.sqrt(k))


def test_float16_custom_op_takes_a_fused_epilogue():
    """A float16 tensor kernel's stored value enters its epilogue, which computes in float32
    like every float16 kernel, and is stored back as float16 (it failed inside codegen)."""
    from ember.ir.graph import TensorType
    from ember.lang import SIMD, Tensor, float16, int32, parallelize
    from ember.runtime.compiler import compile_model

    @kernel
    def half_scale(x: Tensor[float16, 2], y: Tensor[float16, 2]):
        lane = SIMD[int32, 16].iota()

        def row(i):
            for j in range(0, x.shape[1], 16):
                m = lane + int32(j) < int32(x.shape[1])
                y.store(i, j, x.load[16](i, j, mask=m) * float16(2.0), mask=m)
        parallelize(row, x.shape[0])

    ember.custom_op("HalfScale", half_scale, domain="test.ops", epilogue=True,
                    infer=lambda types, attrs: [TensorType("float16", types[0].shape)])
    model = _model([helper.make_node("HalfScale", ["x"], ["s"], domain="test.ops"),
                    helper.make_node("Sub", ["s", "x"], ["d"]), helper.make_node("Relu", ["d"], ["y"])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["a", 37])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["a", 37])], domains=["test.ops"])
    assert [k for _, k, _ in compile_model(model, use_cache=False).kernel_info] == ["library"]
    x = np.random.default_rng(8).standard_normal((3, 37)).astype(np.float16)
    y = ember.InferenceSession(model).run(None, {"x": x})[0]
    assert y.dtype == np.float16
    np.testing.assert_allclose(y.astype(np.float32), np.maximum(x.astype(np.float32), 0), rtol=1e-3, atol=1e-3)


def test_no_table_is_patched_on_import():
    """Op definitions name their library kernels and vector math; importing ember.kernels
    changes no table, so passes and fusion answer the same before and after it is imported
    (a fresh process: nothing else has imported the kernels yet)."""
    import subprocess
    import sys
    code = """
import sys
import ember
from ember.ir import ops
from ember.lang import frontend
before = {n: (d.emit, d.library, d.vector_f32) for n, d in ops.OPS.items()}
math_before = dict(vars(frontend))
assert "ember.kernels" not in sys.modules, "imported by ember itself"
assert ops.OPS["softmax"].library is not None and ops.OPS["exp"].vector_f32 == "exp_f32"
import ember.kernels
after = {n: (d.emit, d.library, d.vector_f32) for n, d in ops.OPS.items()}
assert before == after
assert all(vars(frontend).get(k) is v for k, v in math_before.items())
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "ok", r.stderr[-2000:]


def test_custom_op_can_be_unregistered():
    ember.custom_op("SquarePlusTmp", squareplus, domain="test.tmp")
    model = _model([helper.make_node("SquarePlusTmp", ["x"], ["y"], domain="test.tmp", name="sq")],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])], domains=["test.tmp"])
    x = np.array([-1.0, 0.5, 2.0], np.float32)
    np.testing.assert_allclose(ember.InferenceSession(model).run(None, {"x": x})[0],
                               0.5 * (x + np.sqrt(x * x + 4.0)), rtol=1e-6)
    ember.unregister_op("SquarePlusTmp", domain="test.tmp")
    from ember.ir.ops import OPS
    assert "test.tmp.SquarePlusTmp" not in OPS
    with pytest.raises(ember.UnsupportedOpError, match="sq.*no registered kernel"):
        ember.InferenceSession(model, ember.SessionOptions())
    with pytest.raises(ember.EmberError, match="no such custom op"):
        ember.unregister_op("SquarePlusTmp", domain="test.tmp")
