"""The narrow types (bfloat16, the float8s, float4e2m1, int4/uint4, int2/uint2): stored as
their bits, computed in float32/int8, converted by generated code. Each conversion is
checked bit for bit against onnx.reference (which converts with ml_dtypes) on random values
spanning every binade, the specials (NaN, inf, -0, overflow, ties) and symbolic shapes."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import ember

from .strategies import examples, rng_from, shapes

NARROW = {"bfloat16": TensorProto.BFLOAT16, "float8e4m3fn": TensorProto.FLOAT8E4M3FN,
          "float8e4m3fnuz": TensorProto.FLOAT8E4M3FNUZ, "float8e5m2": TensorProto.FLOAT8E5M2,
          "float8e5m2fnuz": TensorProto.FLOAT8E5M2FNUZ, "float4e2m1": TensorProto.FLOAT4E2M1,
          "int4": TensorProto.INT4, "uint4": TensorProto.UINT4, "int2": TensorProto.INT2, "uint2": TensorProto.UINT2}
SPECIALS = np.array([0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf, 1e6, -1e6, 1e-7, -1e-7, 0.25, 0.75, 2.5, 5.0,
                     448, 449, 464, 465, 57344, 61440, 240, 2.0 ** -9, 2.0 ** -10, 2.0 ** -11, 7.5, -8.5, 15.5],
                    np.float32)


def _values(rng, n):
    spread = rng.standard_normal(n) * np.exp2(rng.integers(-20, 20, n))
    return np.concatenate([SPECIALS, spread.astype(np.float32), np.arange(-20, 20, 0.25, dtype=np.float32)])


def _bits(a):
    a = np.asarray(a)
    return a.view(np.uint16 if a.dtype.itemsize == 2 else np.uint8) if a.dtype.kind == "V" or \
        a.dtype in (np.dtype(ml_dtypes.int4), np.dtype(ml_dtypes.uint4), np.dtype(ml_dtypes.int2),
                    np.dtype(ml_dtypes.uint2)) else a


def _model(nodes, inputs, outputs, symbolic):
    vi = lambda n, t, s: helper.make_tensor_value_info(n, t, [f"{n}_{i}" for i in range(len(s))] if symbolic else s)
    g = helper.make_graph(nodes, "g", [vi(*i) for i in inputs], [helper.make_tensor_value_info(n, t, None)
                                                                   for n, t in outputs])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 25)])


def _same(got, want):
    for g, w in zip(got, want):
        g, w = np.asarray(g), np.asarray(w)
        assert g.dtype == w.dtype and g.shape == w.shape
        if w.dtype.kind == "f":      # decoded values: NaN payloads may differ
            np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
            np.testing.assert_array_equal(g[~np.isnan(w)], w[~np.isnan(w)])
        else:
            np.testing.assert_array_equal(_bits(g), _bits(w))


@pytest.mark.parametrize("to", sorted(NARROW))
@pytest.mark.parametrize("src", [TensorProto.FLOAT, TensorProto.FLOAT16])
@examples(4)
@given(data=st.data())
def test_cast_to_narrow_and_back(to, src, data):
    rng = rng_from(data)
    shape = data.draw(shapes(1, 3, max_size=4096), label="shape")
    vals = _values(rng, 4096)
    with np.errstate(over="ignore"):
        x = rng.choice(vals, size=shape).astype(np.float32 if src == TensorProto.FLOAT else np.float16)
    sat = data.draw(st.sampled_from([None, 0, 1]), label="saturate") if to.startswith("float8") else None
    kw = {} if sat is None else {"saturate": sat}
    nodes = [helper.make_node("Cast", ["x"], ["y"], to=NARROW[to], **kw),
             helper.make_node("Cast", ["y"], ["z"], to=TensorProto.FLOAT),
             helper.make_node("Cast", ["y"], ["w"], to=TensorProto.INT32)]
    symbolic = data.draw(st.booleans(), label="symbolic")
    m = _model(nodes, [("x", src, list(shape))], [("y", NARROW[to]), ("z", TensorProto.FLOAT),
                                                  ("w", TensorProto.INT32)], symbolic)
    with np.errstate(invalid="ignore", over="ignore"):
        want = ReferenceEvaluator(m).run(None, {"x": x})
    got = ember.InferenceSession(m.SerializeToString()).run(None, {"x": x})
    finite = np.isfinite(np.asarray(want[1]))
    want[2], got[2] = want[2][finite], got[2][finite]    # (NaN/inf to int: undefined)
    _same(got, want)


@pytest.mark.parametrize("dtype", ["bfloat16", "float8e4m3fn", "float8e5m2fnuz", "int4", "uint2"])
def test_every_code_decodes(dtype):
    """All 256 (or 65536) bit patterns read back as ml_dtypes reads them."""
    n = 65536 if dtype == "bfloat16" else 256
    codes = np.arange(n, dtype=np.uint16 if n > 256 else np.uint8)
    if dtype in ("int4", "uint2"):
        codes = codes & (0x0F if dtype == "int4" else 0x03)
    x = codes.view(np.dtype(getattr(ml_dtypes, {"float8e4m3fn": "float8_e4m3fn", "float8e5m2fnuz": "float8_e5m2fnuz"}
                                        .get(dtype, dtype))))
    m = _model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)], [("x", NARROW[dtype], [n])],
               [("y", TensorProto.FLOAT)], False)
    _same(ember.InferenceSession(m.SerializeToString()).run(None, {"x": x}), [x.astype(np.float32)])


@pytest.mark.parametrize("dtype", ["bfloat16", "float8e4m3fn"])
@examples(6)
@given(data=st.data())
def test_ops_compute_narrow_floats_in_float32(dtype, data):
    """Any op on a narrow float computes in float32 and rounds its output, as the reference."""
    rng = rng_from(data)
    shape = data.draw(shapes(1, 3, max_size=1024), label="shape")
    t = NARROW[dtype]
    np_t = np.dtype(ml_dtypes.bfloat16 if dtype == "bfloat16" else ml_dtypes.float8_e4m3fn)
    a = rng.uniform(-4, 4, shape).astype(np.float32).astype(np_t)
    b_ = rng.uniform(0.5, 4, shape[-1:]).astype(np.float32).astype(np_t)
    sym = data.draw(st.booleans(), label="symbolic")
    if dtype == "bfloat16":
        nodes = [helper.make_node("Div", ["a", "b"], ["q"]), helper.make_node("Transpose", ["q"], ["y"])]
        m = _model(nodes, [("a", t, list(shape)), ("b", t, list(shape[-1:]))], [("y", t)], sym)
    else:   # the float8s are storage types in ONNX: only the data-movement ops take them
        nodes = [helper.make_node("Transpose", ["a"], ["q"]), helper.make_node("Flatten", ["q"], ["y"]),
                 helper.make_node("Identity", ["b"], ["c"])]
        m = _model(nodes, [("a", t, list(shape)), ("b", t, list(shape[-1:]))], [("y", t), ("c", t)], sym)
    want = ReferenceEvaluator(m).run(None, {"a": a, "b": b_})
    _same(ember.InferenceSession(m.SerializeToString()).run(None, {"a": a, "b": b_}), want)


@pytest.mark.parametrize("to", ["int4", "uint4", "int2", "uint2", "float8e4m3fn", "float8e5m2", "float4e2m1"])
@examples(4)
@given(data=st.data())
def test_quantize_dequantize_narrow(to, data):
    rng = rng_from(data)
    shape = data.draw(shapes(2, 3, max_size=1024), label="shape")
    x = rng.uniform(-12, 12, shape).astype(np.float32)
    scale = np.float32(rng.uniform(0.3, 2.0))
    zp_np = np.dtype(getattr(ml_dtypes, {"float8e4m3fn": "float8_e4m3fn", "float8e5m2": "float8_e5m2",
                                         "float4e2m1": "float4_e2m1fn"}.get(to, to)))
    zp = np.array(rng.integers(0, 2) if to.startswith("u") else 0).astype(zp_np)
    inits = [helper.make_tensor("s", TensorProto.FLOAT, [], [scale]),
             helper.make_tensor("zp", NARROW[to], [], zp.reshape(1))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"])]
    m = _model(nodes, [("x", TensorProto.FLOAT, list(shape))], [("q", NARROW[to]), ("y", TensorProto.FLOAT)],
               data.draw(st.booleans(), label="symbolic"))
    m.graph.initializer.extend(inits)
    want = ReferenceEvaluator(m).run(None, {"x": x})
    _same(ember.InferenceSession(m.SerializeToString()).run(None, {"x": x}), want)
