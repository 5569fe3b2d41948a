"""Integer and QLinear ops (MatMulInteger, ConvInteger, QLinearMatMul, QLinearConv) and
BitCast, against onnx.reference on random shapes (symbolic too) and random zero points.
The accumulations run exactly (float64 holds every int32 sum these ops can form)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from .harness import check, make_session, node_model
from .strategies import conv_params, examples, geometry_attrs, rng_from, shapes

INT8 = {"uint8": (0, 256), "int8": (-128, 128)}


def _q(rng, dtype, shape):
    lo, hi = INT8[dtype]
    return rng.integers(lo, hi, shape).astype(dtype)


@pytest.mark.parametrize("a_t,b_t", [("uint8", "uint8"), ("uint8", "int8"), ("int8", "int8")])
@examples(8)
@given(data=st.data())
def test_matmul_integer(a_t, b_t, data):
    """A constant w runs the int16 GEMM kernel (odd K, column tails, tiles of several
    blocks); a run-time one the float64 matmul."""
    rng = rng_from(data)
    m, k, n = (data.draw(st.sampled_from(s), label=d)
               for d, s in zip("mkn", ([1, 3, 7, 17, 33], [1, 3, 7, 17, 33, 64, 129], [1, 3, 7, 17, 33, 40, 70])))
    lead = list(data.draw(shapes(0, 2, max_size=8), label="batch"))
    a, w = _q(rng, a_t, lead + [m, k]), _q(rng, b_t, [k, n])
    per_col = data.draw(st.booleans(), label="per_column_zero_point")
    azp = _q(rng, a_t, [])
    wzp = _q(rng, b_t, [n] if per_col else [])
    ins = [("a", a), ("w", w)] + ([("azp", azp), ("wzp", wzp)] if data.draw(st.booleans(), label="zero_points") else [])
    const = {"w", "wzp"} if data.draw(st.booleans(), label="constant_w") else {"wzp"}
    check(*node_model("MatMulInteger", ins, opset=10, const=const))


@examples(6)
@given(data=st.data())
def test_dynamic_quantized_linear(data):
    """What onnxruntime's quantize_dynamic writes for a Linear layer: DynamicQuantizeLinear,
    MatMulInteger, Cast, the two scales and the bias (fused into the GEMM's stores)."""
    from onnx import TensorProto as T, helper as h, numpy_helper as nh
    rng = rng_from(data)
    m, k, n = (data.draw(st.sampled_from(s), label=d) for d, s in zip("mkn", ([1, 5, 17], [8, 33, 64], [7, 16, 40])))
    w = _q(rng, "int8", [k, n])
    nodes = [h.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
             h.make_node("MatMulInteger", ["xq", "w", "xz"], ["acc"]),
             h.make_node("Cast", ["acc"], ["accf"], to=T.FLOAT),
             h.make_node("Mul", ["xs", "ws"], ["s"]),
             h.make_node("Mul", ["accf", "s"], ["y0"]),
             h.make_node("Add", ["y0", "bias"], ["y"])]
    inits = [nh.from_array(w, "w"), nh.from_array(np.float32(rng.uniform(0.001, 0.01)), "ws"),
             nh.from_array(rng.standard_normal(n).astype(np.float32), "bias")]
    graph = h.make_graph(nodes, "dq", [h.make_tensor_value_info("x", T.FLOAT, ["m", k])],
                         [h.make_tensor_value_info("y", T.FLOAT, None)], inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
    check(model, {"x": (rng.standard_normal((m, k)) * 3).astype(np.float32)})


@pytest.mark.parametrize("x_t,y_t", [("uint8", "uint8"), ("int8", "int8")])
@examples(8)
@given(data=st.data())
def test_qlinear_matmul(x_t, y_t, data):
    rng = rng_from(data)
    m, k, n = (data.draw(st.sampled_from([1, 3, 7, 17, 33]), label=d) for d in "mkn")
    a, w = _q(rng, x_t, [m, k]), _q(rng, x_t, [k, n])
    f = lambda lo, hi: np.float32(rng.uniform(lo, hi))
    ins = [("a", a), ("a_s", f(0.01, 0.1)), ("a_zp", _q(rng, x_t, [])), ("w", w), ("w_s", f(0.01, 0.1)),
           ("w_zp", _q(rng, x_t, [])), ("y_s", f(0.05, 0.5) * math.sqrt(k)), ("y_zp", _q(rng, y_t, []))]
    check(*node_model("QLinearMatMul", ins, opset=10, const={"a_s", "a_zp", "w", "w_s", "w_zp", "y_s", "y_zp"}))


@pytest.mark.parametrize("op", ["ConvInteger", "QLinearConv"])
@examples(10)
@given(data=st.data())
def test_integer_conv(op, data):
    rng = rng_from(data)
    p = data.draw(conv_params(max_spatial_rank=2), label="geometry")
    c, oc = data.draw(st.sampled_from([1, 3, 4]), label="c"), data.draw(st.sampled_from([1, 2, 5]), label="oc")
    x = _q(rng, "uint8", [1, c] + p["spatial"])
    w = _q(rng, "uint8" if op == "ConvInteger" else "int8", [oc, c] + p["kernel"])
    attrs = geometry_attrs(p, data)
    if op == "ConvInteger":
        ins = [("x", x), ("w", w), ("xzp", _q(rng, "uint8", [])), ("wzp", _q(rng, "uint8", []))]
        const = {"w", "wzp"}
    else:
        # (onnx.reference reshapes a per-channel scale for 2-d convolutions only)
        per_ch = p["nd"] == 2 and data.draw(st.booleans(), label="per_channel")
        f = lambda lo, hi, *s: rng.uniform(lo, hi, s).astype(np.float32)
        ins = [("x", x), ("xs", np.float32(f(0.01, 0.1))), ("xzp", _q(rng, "uint8", [])), ("w", w),
               ("ws", f(0.01, 0.1, oc) if per_ch else np.float32(f(0.01, 0.1))),
               ("wzp", np.zeros([oc] if per_ch else [], np.int8)), ("ys", np.float32(f(0.2, 2.0))),
               ("yzp", _q(rng, "uint8", [])), ("bias", rng.integers(-500, 500, oc).astype(np.int32))]
        const = {"xs", "xzp", "w", "ws", "wzp", "ys", "yzp", "bias"}
    check(*node_model(op, ins, attrs, opset=10, const=const))


@pytest.mark.parametrize("src,to", [("float32", "int32"), ("int32", "float32"), ("float64", "int64"),
                                    ("int64", "float64"), ("int8", "uint8"), ("uint16", "int16"),
                                    ("float16", "int16"), ("int16", "float16"), ("bool", "uint8")])
@examples(4)
@given(data=st.data())
def test_bitcast(src, to, data):
    rng = rng_from(data)
    shape = data.draw(shapes(0, 3), label="shape")
    if src == "bool":
        x = rng.random(shape) < 0.5
    elif src.startswith("float"):
        x = (rng.standard_normal(shape) * 100).astype(src)
    else:
        info = np.iinfo(src)
        x = rng.integers(info.min, int(info.max) + 1, shape, dtype=np.int64).astype(src)
    if to.startswith("float"):     # keep NaN bit patterns out: their payloads need not survive
        x = np.where(np.isnan(x.view(to)), np.zeros_like(x), x) if x.ndim else x
    from .harness import onnx_type
    check(*node_model("BitCast", [("x", np.asarray(x))], {"to": onnx_type(to)}, opset=26))


@pytest.mark.parametrize("op", ["MatMul", "Gemm"])
@examples(8)
@given(data=st.data())
def test_qdq_matmul_runs_on_integers(op, data):
    """MatMul / Gemm over DequantizeLinear of 8-bit values (the QDQ format): rewritten to the
    integer GEMM (frontends/onnx/qdq.py), equal to the float computation up to its rounding;
    weights per tensor or per output channel, Gemm with transB, alpha and a bias."""
    from onnx import TensorProto as T, helper as h, numpy_helper as nh
    rng = rng_from(data)
    m, k, n = (data.draw(st.sampled_from(s), label=d) for d, s in zip("mkn", ([1, 5, 17], [3, 33, 64], [7, 16, 40])))
    x_t, w_t = data.draw(st.sampled_from([("uint8", "int8"), ("int8", "int8"), ("uint8", "uint8")]), label="types")
    per_channel = data.draw(st.booleans(), label="per_channel")
    trans_b = op == "Gemm" and data.draw(st.booleans(), label="transB")
    w = _q(rng, w_t, [n, k] if trans_b else [k, n])
    ws = rng.uniform(0.001, 0.01, [n] if per_channel else []).astype(np.float32)
    wz = _q(rng, w_t, [n] if per_channel else []) if w_t == "uint8" else np.zeros([n] if per_channel else [], np.int8)
    attrs = {"transB": 1, "alpha": 0.5} if trans_b else {}
    nodes = [h.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["x"]),
             h.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wf"], axis=0 if trans_b else 1),
             h.make_node(op, ["x", "wf"] + (["bias"] if op == "Gemm" else []), ["y"], **attrs)]
    inits = [nh.from_array(w, "w"), nh.from_array(ws, "ws"), nh.from_array(wz, "wz"),
             nh.from_array(np.float32(rng.uniform(0.01, 0.1)), "xs"), nh.from_array(_q(rng, x_t, []), "xz"),
             nh.from_array(rng.standard_normal(n).astype(np.float32), "bias")]
    xq_type = T.UINT8 if x_t == "uint8" else T.INT8
    graph = h.make_graph(nodes, "qdq", [h.make_tensor_value_info("xq", xq_type, ["m", k])],
                         [h.make_tensor_value_info("y", T.FLOAT, None)], inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 19)])
    sess = make_session(model)
    assert any("matmul_int" in name for name, _, _ in sess._c.kernel_info), "the QDQ matmul was not rewritten"
    # the float reference rounds at each of its k steps: near-zero sums carry that absolute error
    check(model, {"xq": _q(rng, x_t, [m, k])}, session=sess, scale=k)


def test_qdq_rewrite_golden():
    """frontends/onnx/qdq.py before -> after: MatMul, Gemm (transB) and Conv over QDQ 8-bit
    values become the integer ops; an activation without a zero point, a per-channel
    activation scale, a grouped Conv and a Winograd-shaped one stay as they are."""
    from onnx import TensorProto as T, helper as h, numpy_helper as nh
    from ember.frontends.onnx.qdq import integer_matmuls
    f = lambda name, *shape: nh.from_array(np.full(shape, 0.05, np.float32), name)
    i8 = lambda name, *shape: nh.from_array(np.ones(shape, np.int8), name)
    u8 = lambda name, *shape: nh.from_array(np.full(shape, 3, np.uint8), name)
    inits = [f("s"), u8("z"), i8("w", 4, 6), f("ws6", 6), i8("wz6", 6), i8("wt", 6, 4), i8("wc", 6, 4, 3, 3),
             f("ws_bad", 4), i8("wg", 6, 2, 3, 3), i8("w32", 32, 32, 3, 3)]
    dq = lambda q, s, z, out, **a: h.make_node("DequantizeLinear", [q, s, z] if z else [q, s], [out], **a)
    nodes = [dq("xq", "s", "z", "x"), dq("w", "ws6", "wz6", "wf"), h.make_node("MatMul", ["x", "wf"], ["y1"], name="mm"),
             dq("wt", "s", "", "wtf"), h.make_node("Gemm", ["x", "wtf", "b"], ["y2"], transB=1, name="gemm"),
             dq("wc", "s", "", "wcf"), h.make_node("Conv", ["x", "wcf", "b"], ["y3"], name="conv"),
             dq("xq", "s", "", "xn"), h.make_node("MatMul", ["xn", "wf"], ["y4"], name="no_zero_point"),
             dq("xq", "ws_bad", "z", "xc", axis=1), h.make_node("MatMul", ["xc", "wf"], ["y5"], name="per_channel_x"),
             dq("wg", "s", "", "wgf"), h.make_node("Conv", ["x", "wgf"], ["y6"], group=2, name="grouped"),
             dq("w32", "s", "", "w32f"), h.make_node("Conv", ["x", "w32f"], ["y7"], pads=[1, 1, 1, 1], name="winograd")]
    out = [n for n, _ in integer_matmuls([(n, 19) for n in nodes], inits)]
    ops = [(n.op_type, n.name) for n in out if n.op_type != "DequantizeLinear"]
    assert ops == [
        ("MatMulInteger", "mm_int"), ("Cast", "mm_int_f"), ("Mul", "mm_int_s"), ("Mul", "mm_int_y"),
        ("Transpose", "gemm_int_wt"), ("MatMulInteger", "gemm_int"), ("Cast", "gemm_int_f"), ("Mul", "gemm_int_s"),
        ("Mul", "gemm_int_y"), ("Add", "gemm"),
        ("ConvInteger", "conv_int"), ("Cast", "conv_int_f"), ("Mul", "conv_int_s"), ("Constant", "conv_int_shape"),
        ("Reshape", "conv_int_sc"), ("Mul", "conv_int_y"), ("Reshape", "conv_int_b"), ("Add", "conv"),
        ("MatMul", "no_zero_point"), ("MatMul", "per_channel_x"), ("Conv", "grouped"), ("Conv", "winograd")]
    mm = next(n for n in out if n.name == "mm_int")
    assert list(mm.input) == ["xq", "w", "z", "wz6"] and out[-1].output[0] == "y7"


@pytest.mark.parametrize("a_shape,w_shape", [([5], [5, 3]), ([5], [5]), ([2, 5], [5]), ([3, 1], [1, 20]),
                                             ([0, 4], [4, 3]), ([1, 300], [300, 33])])
def test_matmul_integer_vector_and_empty_operands(a_shape, w_shape):
    """The integer GEMM kernel on a vector A or W (rank 1), one k, no rows, a long k."""
    rng = np.random.default_rng(len(a_shape) * 10 + w_shape[0])
    ins = [("a", _q(rng, "uint8", a_shape)), ("w", _q(rng, "int8", w_shape)), ("azp", _q(rng, "uint8", []))]
    check(*node_model("MatMulInteger", ins, opset=10, const={"w"}))
