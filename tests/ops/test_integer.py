"""Integer and QLinear ops (MatMulInteger, ConvInteger, QLinearMatMul, QLinearConv) and
BitCast, against onnx.reference on random shapes (symbolic too) and random zero points.
The accumulations run exactly (float64 holds every int32 sum these ops can form)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from .harness import check, node_model
from .strategies import conv_params, examples, geometry_attrs, rng_from, shapes

INT8 = {"uint8": (0, 256), "int8": (-128, 128)}


def _q(rng, dtype, shape):
    lo, hi = INT8[dtype]
    return rng.integers(lo, hi, shape).astype(dtype)


@pytest.mark.parametrize("a_t,b_t", [("uint8", "uint8"), ("uint8", "int8"), ("int8", "int8")])
@examples(8)
@given(data=st.data())
def test_matmul_integer(a_t, b_t, data):
    rng = rng_from(data)
    m, k, n = (data.draw(st.sampled_from([1, 3, 7, 17, 33]), label=d) for d in "mkn")
    lead = list(data.draw(shapes(0, 2, max_size=8), label="batch"))
    a, w = _q(rng, a_t, lead + [m, k]), _q(rng, b_t, [k, n])
    per_col = data.draw(st.booleans(), label="per_column_zero_point")
    azp = _q(rng, a_t, [])
    wzp = _q(rng, b_t, [n] if per_col else [])
    check(*node_model("MatMulInteger", [("a", a), ("w", w), ("azp", azp), ("wzp", wzp)], opset=10,
                      const={"w", "wzp"}))


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
