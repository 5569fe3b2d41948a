"""Elementwise operators: unary table, binary (broadcasting) table, Clip, Where, Cast,
Dropout, and IEEE special-value propagation."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from .harness import ALL, FLOATS, NUMERIC, check, node_model, onnx_type, ort_skip
from .strategies import (REAL, Domain, broadcast_shapes, examples, gen, pick_consts,
                         rng_from, shapes)


# --------------------------------------------------------------------------- unary table
@dataclass(frozen=True)
class Unary:
    op: str
    dtypes: tuple
    domain: Domain = REAL
    kind: str = "exact"  # tolerance kind, see harness.TOLERANCES
    attrs: dict = field(default_factory=dict)  # attr name -> tuple of choices (None = omit)
    opset: int = 18
    f16_domain: Domain | None = None  # narrower domain for float16 (overflow)
    min_rank: int = 0   # onnx.reference's Softsign fails on 0-d arrays


# Large magnitudes mixed in so saturation/overflow handling is exercised (tanh(50) == 1,
# sigmoid(-100) == 0, not NaN).
SATURATING = Domain(low=-6.0, high=6.0, wide=0.15, wide_max=100.0)

UNARY = [
    Unary("Relu", NUMERIC, Domain(int_low=-50, int_high=50)),
    Unary("LeakyRelu", FLOATS, attrs={"alpha": (None, 0.01, 0.2, 1.5)}),
    Unary("Sigmoid", FLOATS, SATURATING, "transcendental"),
    Unary("Tanh", FLOATS, SATURATING, "transcendental"),
    Unary("Erf", FLOATS, Domain(low=-4.5, high=4.5), "transcendental"),
    Unary("Gelu", FLOATS, Domain(low=-6.0, high=6.0), "transcendental",
          attrs={"approximate": (None, "none", "tanh")}, opset=20),
    Unary("Sqrt", FLOATS, Domain(low=0.0, high=100.0, wide=0.05, wide_max=1e4), "exact",
          f16_domain=Domain(low=0.0, high=100.0)),
    Unary("Exp", FLOATS, Domain(low=-20.0, high=20.0), "transcendental",
          f16_domain=Domain(low=-9.0, high=9.0)),
    Unary("Log", FLOATS, Domain(low=1e-3, high=1e3, min_mag=1e-3), "transcendental"),
    Unary("Neg", NUMERIC, Domain(int_low=-1000, int_high=1000)),
    Unary("Reciprocal", FLOATS, Domain(low=-10.0, high=10.0, min_mag=0.1)),
    Unary("Not", ("bool",)),
    Unary("Identity", ALL),
    Unary("HardSwish", FLOATS, Domain(low=-5.0, high=5.0)),
    Unary("Softplus", FLOATS, SATURATING, "transcendental"),
    Unary("Sin", FLOATS, Domain(low=-10.0, high=10.0), "transcendental"),
    Unary("Cos", FLOATS, Domain(low=-10.0, high=10.0), "transcendental"),
    Unary("Tan", FLOATS, Domain(low=-1.4, high=1.4), "transcendental"),
    Unary("Asin", FLOATS, Domain(low=-1.0, high=1.0), "transcendental"),
    Unary("Acos", FLOATS, Domain(low=-1.0, high=1.0), "transcendental"),
    Unary("Atan", FLOATS, Domain(low=-10.0, high=10.0), "transcendental"),
    Unary("Sinh", FLOATS, Domain(low=-5.0, high=5.0), "transcendental"),
    Unary("Cosh", FLOATS, Domain(low=-5.0, high=5.0), "transcendental"),
    Unary("Asinh", FLOATS, Domain(low=-10.0, high=10.0), "transcendental"),
    Unary("Acosh", FLOATS, Domain(low=1.0, high=10.0), "transcendental"),
    Unary("Atanh", FLOATS, Domain(low=-0.9, high=0.9), "transcendental"),
    Unary("Elu", FLOATS, SATURATING, "transcendental", attrs={"alpha": (None, 0.5, 2.0)}),
    Unary("Selu", FLOATS, SATURATING, "transcendental", attrs={"alpha": (None, 1.5), "gamma": (None, 0.8)}),
    Unary("Celu", ("float32",), SATURATING, "transcendental", attrs={"alpha": (None, 0.5, 2.0)}, opset=12),
    Unary("ThresholdedRelu", FLOATS, Domain(low=-3.0, high=3.0, grid=0.5), attrs={"alpha": (None, 0.5, 1.0)}),
    Unary("Shrink", FLOATS, Domain(low=-3.0, high=3.0, grid=0.25),
          attrs={"bias": (None, 0.0, 1.5), "lambd": (None, 0.5, 1.0)}),
    Unary("Softsign", FLOATS, SATURATING, min_rank=1),
    Unary("Mish", ("float32",), SATURATING, "transcendental"),
    Unary("Sign", NUMERIC + ("uint8", "int8", "float64"), Domain(low=-3.0, high=3.0, grid=1.0, int_low=-5, int_high=5)),
    Unary("IsNaN", FLOATS, Domain(low=-3.0, high=3.0), opset=20),
    Unary("IsInf", FLOATS, Domain(low=-3.0, high=3.0),
          attrs={"detect_negative": (None, 0, 1), "detect_positive": (None, 0, 1)}, opset=20),
    Unary("Round", FLOATS + ("float64",), Domain(low=-6.0, high=6.0, grid=0.5)),   # halves: ties to even
    Unary("BitwiseNot", ("int32", "int64", "uint8", "int8", "uint16"), Domain(int_low=-100, int_high=100)),
]


def _unary_cases():
    for rec in UNARY:
        for dt in rec.dtypes:
            yield pytest.param(rec, dt, id=f"{rec.op}-{dt}")


@pytest.mark.parametrize("rec,dtype", list(_unary_cases()))
@examples(12)
@given(data=st.data())
def test_unary(rec: Unary, dtype, data):
    rng = rng_from(data)
    shape = data.draw(shapes(rec.min_rank, 4, max_size=4096, zero=True), label="shape")
    dom = rec.f16_domain if (dtype == "float16" and rec.f16_domain) else rec.domain
    x = gen(rng, dtype, shape, dom)
    attrs = {k: data.draw(st.sampled_from(v), label=k) for k, v in rec.attrs.items()}
    const = pick_consts(data, ["x"])
    check(*node_model(rec.op, [("x", x)], attrs, opset=rec.opset, const=const), kind=rec.kind)


# --------------------------------------------------------------------------- binary table
@dataclass(frozen=True)
class Binary:
    op: str
    dtypes: tuple
    a: Domain = REAL
    b: Domain = REAL
    kind: str = "exact"


SMALL_GRID = Domain(low=-3.0, high=3.0, grid=1.0, int_low=-3, int_high=3)  # many equal pairs
ARITH = Domain(low=-10.0, high=10.0, int_low=-1000, int_high=1000)
DIVISOR = Domain(low=-10.0, high=10.0, min_mag=0.25, int_low=-13, int_high=13)

BINARY = [
    Binary("Add", NUMERIC, ARITH, ARITH),
    Binary("Sub", NUMERIC, ARITH, ARITH),
    Binary("Mul", NUMERIC, ARITH, ARITH),
    # integer Div truncates toward zero (C semantics): -7 / 2 == -3, 7 / -2 == -3
    Binary("Div", NUMERIC, Domain(low=-10.0, high=10.0, int_low=-100, int_high=100), DIVISOR),
    Binary("Equal", ALL, SMALL_GRID, SMALL_GRID),
    Binary("Less", NUMERIC, SMALL_GRID, SMALL_GRID),
    Binary("Greater", NUMERIC, SMALL_GRID, SMALL_GRID),
    Binary("And", ("bool",)),
    Binary("PRelu", FLOATS, ARITH, Domain(low=-2.0, high=2.0)),
    Binary("BitwiseAnd", ("int32", "int64", "uint8", "int8", "uint16"), ARITH, ARITH),
    Binary("BitwiseOr", ("int32", "int64", "uint8", "int8"), ARITH, ARITH),
    Binary("BitwiseXor", ("int32", "int64", "uint8", "int16"), ARITH, ARITH),
]


def _binary_cases():
    for rec in BINARY:
        for dt in rec.dtypes:
            yield pytest.param(rec, dt, id=f"{rec.op}-{dt}")


@pytest.mark.parametrize("rec,dtype", list(_binary_cases()))
@examples(12)
@given(data=st.data())
def test_binary(rec: Binary, dtype, data):
    rng = rng_from(data)
    sa, sb = data.draw(broadcast_shapes(2, 0, 4, max_size=4096, zero=True), label="shapes")
    a, b = gen(rng, dtype, sa, rec.a), gen(rng, dtype, sb, rec.b)
    if rec.op in ("Equal", "Less", "Greater") and dtype != "bool" and data.draw(st.booleans(), label="self"):
        b = a.copy()  # exercise the equal-operands case on every element
        sb = sa
    const = pick_consts(data, ["a", "b"])
    check(*node_model(rec.op, [("a", a), ("b", b)], const=const), kind=rec.kind)


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_div_int_truncates_toward_zero(dtype):
    a = np.array([7, -7, 7, -7, 6, -6, 1, -1, 0, 100, -100], dtype=dtype)
    b = np.array([2, 2, -2, -2, 4, 4, 3, 3, 5, -7, 7], dtype=dtype)
    out = check(*node_model("Div", [("a", a), ("b", b)]))[0]
    np.testing.assert_array_equal(out, np.array([3, -3, -3, 3, 1, -1, 0, 0, 0, -14, -14], dtype=dtype))


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "uint64", "int8", "int32", "int64"])
@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
@examples(8)
@given(data=st.data())
def test_bitshift(dtype, direction, data):
    """Shift amounts up to and past the width, and (signed types, onnx 1.23's BitShift)
    negative ones: ONNX gives 0 there, or the sign's fill; C leaves them undefined."""
    rng = rng_from(data)
    sa, sb = data.draw(broadcast_shapes(2, 0, 3, max_size=1024, zero=True), label="shapes")
    bits = np.dtype(dtype).itemsize * 8
    signed = np.dtype(dtype).kind == "i"
    a = gen(rng, dtype, sa, Domain(int_low=-100 if signed else 0, int_high=100 if signed else 255))
    b = gen(rng, dtype, sb, Domain(int_low=-3 if signed else 0, int_high=bits + 2))
    check(*node_model("BitShift", [("a", a), ("b", b)], {"direction": direction}, opset=28 if signed else 18,
                      const=pick_consts(data, ["a", "b"])))


MOD_DTYPES = NUMERIC + ("int8", "uint8", "float64")


@pytest.mark.parametrize("dtype", MOD_DTYPES)
@pytest.mark.parametrize("fmod", [0, 1])
@examples(10)
@given(data=st.data())
def test_mod(dtype, fmod, data):
    """fmod=1 is C's remainder (sign of A), fmod=0 the floor remainder (sign of B); with
    operands of both signs, exact multiples (zero remainders) and broadcasting."""
    rng = rng_from(data)
    sa, sb = data.draw(broadcast_shapes(2, 0, 4, max_size=4096, zero=True), label="shapes")
    lo = 0 if dtype.startswith("uint") else -100
    a = gen(rng, dtype, sa, Domain(low=-20.0, high=20.0, grid=0.5, int_low=lo, int_high=100))
    b = gen(rng, dtype, sb, Domain(low=-6.0, high=6.0, grid=0.5, min_mag=0.5, int_low=max(lo, -9), int_high=9,))
    if np.dtype(dtype).kind == "u":
        b = np.maximum(b, 1).astype(dtype)
    const = pick_consts(data, ["a", "b"])
    check(*node_model("Mod", [("a", a), ("b", b)], {"fmod": fmod}, const=const))


def test_mod_floor_signs_and_signed_zero():
    a = np.array([7, -7, 7, -7, 6, -6, 0, 5], dtype=np.int32)
    b = np.array([3, 3, -3, -3, 3, -3, -4, 7], dtype=np.int32)
    out = check(*node_model("Mod", [("a", a), ("b", b)]))[0]
    np.testing.assert_array_equal(out, np.mod(a, b))
    fa = np.array([-6.0, 6.0, 5.5, -5.5, 0.0], dtype=np.float32)
    fb = np.array([3.0, -3.0, 2.0, 2.0, -2.0], dtype=np.float32)
    fout = check(*node_model("Mod", [("a", fa), ("b", fb)], {"fmod": 0}))[0]
    np.testing.assert_array_equal(np.signbit(fout), np.signbit(np.mod(fa, fb)))


POW_CASES = [
    pytest.param("float32", "float32", id="float32"),
    pytest.param("float16", "float16", id="float16"),
    pytest.param("float32", "int64", id="float32^int64"),
    pytest.param("int64", "int64", id="int64"),
    pytest.param("int32", "int32", id="int32"),
]


@pytest.mark.parametrize("base_dt,exp_dt", POW_CASES)
@examples(12)
@given(data=st.data())
def test_pow(base_dt, exp_dt, data):
    rng = rng_from(data)
    sa, sb = data.draw(broadcast_shapes(2, 0, 4, max_size=2048, zero=True), label="shapes")
    if np.dtype(base_dt).kind == "i":
        base = gen(rng, base_dt, sa, Domain(int_low=-6, int_high=6))
        expo = gen(rng, exp_dt, sb, Domain(int_low=0, int_high=4))
    elif np.dtype(exp_dt).kind == "i":
        base = gen(rng, base_dt, sa, Domain(low=-4.0, high=4.0))
        expo = gen(rng, exp_dt, sb, Domain(int_low=-3, int_high=3))
    elif data.draw(st.booleans(), label="negative_base"):
        # negative bases are only real-valued for integral exponents
        base = gen(rng, base_dt, sa, Domain(low=-4.0, high=4.0, min_mag=0.25))
        expo = gen(rng, exp_dt, sb, Domain(low=-3.0, high=3.0, grid=1.0))
    else:
        base = gen(rng, base_dt, sa, Domain(low=0.05, high=5.0, min_mag=0.05))
        expo = gen(rng, exp_dt, sb, Domain(low=-3.0, high=3.0))
    const = pick_consts(data, ["base", "exponent"])
    check(*node_model("Pow", [("base", base), ("exponent", expo)], const=const), kind="transcendental")


# --------------------------------------------------------------------------- Clip
@pytest.mark.parametrize("dtype", NUMERIC)
@examples(15)
@given(data=st.data())
def test_clip(dtype, data):
    rng = rng_from(data)
    shape = data.draw(shapes(0, 4, zero=True), label="shape")
    dom = Domain(low=-5.0, high=5.0, int_low=-50, int_high=50)
    x = gen(rng, dtype, shape, dom)
    lo, hi = np.sort(gen(rng, dtype, (2,), dom))
    which = data.draw(st.sampled_from(["both", "min", "max", "none", "max_only_empty_min"]), label="bounds")
    inputs = [("x", x)]
    if which == "both":
        inputs += [("min", np.array(lo)), ("max", np.array(hi))]
    elif which == "min":
        inputs += [("min", np.array(lo))]
    elif which == "max_only_empty_min":
        inputs += [None, ("max", np.array(hi))]
    elif which == "max":
        inputs += [("min", None), ("max", np.array(hi))]
    # min/max are usually constants in real models; sometimes feed them at runtime
    bounds_const = data.draw(st.booleans(), label="bounds_const")
    const = ({"min", "max"} if bounds_const else set()) | pick_consts(data, ["x"])
    check(*node_model("Clip", inputs, const=const))


# --------------------------------------------------------------------------- Where
WHERE_DTYPES = [pytest.param(d, marks=ort_skip("Where has no bool X/Y kernel on the CPU provider"))
                if d == "bool" else d for d in ALL]


@pytest.mark.parametrize("dtype", WHERE_DTYPES)
@examples(12)
@given(data=st.data())
def test_where(dtype, data):
    rng = rng_from(data)
    sc, sx, sy = data.draw(broadcast_shapes(3, 0, 4, zero=True), label="shapes")
    cond = gen(rng, "bool", sc)
    x, y = gen(rng, dtype, sx), gen(rng, dtype, sy)
    const = pick_consts(data, ["cond", "x", "y"])
    check(*node_model("Where", [("cond", cond), ("x", x), ("y", y)], const=const))


# --------------------------------------------------------------------------- Cast
CAST_DTYPES = ("float32", "float16", "int64", "int32", "bool")


def _cast_source(rng, src, dst, shape):
    src_d, dst_d = np.dtype(src), np.dtype(dst)
    if src_d == np.bool_:
        return gen(rng, src, shape)
    if src_d.kind == "f":
        if dst_d.kind in "iu":
            # non-integral values, in range of the target, no NaN: truncation toward zero
            x = gen(rng, src, shape, Domain(low=-1000.0, high=1000.0, wide=0.3, wide_max=3.0))
        elif dst_d == np.bool_:
            x = gen(rng, src, shape, Domain(low=-2.0, high=2.0, grid=0.5))  # many exact zeros
            x[rng.random(shape) < 0.1] = -0.0
        else:
            # f32 -> f16 rounding incl. fp16 subnormal range; f16 -> f32 exact
            x = gen(rng, src, shape, Domain(low=-60000.0, high=60000.0, wide=0.4, wide_max=1e-3))
        return x
    # integers: in range of every target; int -> float16 rounds above 2048
    return gen(rng, src, shape, Domain(int_low=-3000, int_high=3000))


def _cast_cases():
    for s in CAST_DTYPES:
        for d in CAST_DTYPES:
            if s != d:
                yield pytest.param(s, d, id=f"{s}->{d}")


@pytest.mark.parametrize("src,dst", list(_cast_cases()))
@examples(10)
@given(data=st.data())
def test_cast(src, dst, data):
    rng = rng_from(data)
    shape = data.draw(shapes(0, 4, zero=True), label="shape")
    x = _cast_source(rng, src, dst, shape)
    const = pick_consts(data, ["x"])
    check(*node_model("Cast", [("x", x)], {"to": onnx_type(dst)}, const=const))


# --------------------------------------------------------------------------- Dropout
@pytest.mark.parametrize("dtype", FLOATS)
@examples(10)
@given(data=st.data())
def test_dropout_inference(dtype, data):
    rng = rng_from(data)
    shape = data.draw(shapes(0, 4, zero=True), label="shape")
    x = gen(rng, dtype, shape)
    ratio = data.draw(st.sampled_from([None, 0.1, 0.5]), label="ratio")
    training = data.draw(st.sampled_from([None, False]), label="training_mode")
    n_out = data.draw(st.sampled_from([1, 2]), label="outputs")
    inputs = [("x", x),
              ("ratio", None if ratio is None else np.array(ratio, dtype=dtype)),
              ("training_mode", None if training is None else np.array(False))]
    model, feeds = node_model("Dropout", inputs, n_outputs=n_out, opset=13,
                              const={"ratio", "training_mode"})
    outs = check(model, feeds)
    if n_out == 2:
        assert outs[1].dtype == np.bool_ and outs[1].all(), "inference-mode Dropout mask must be all True"


# --------------------------------------------------------------------------- NaN / inf
SPECIALS = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -2.5, 3e38], dtype=np.float32)


@pytest.mark.parametrize("op", ["Neg", "Identity", "Exp", "Sqrt", "Tanh", "Sigmoid", "Relu"])
def test_unary_special_values(op):
    x = SPECIALS.copy()
    if op == "Relu":
        x = x[~np.isnan(x)]  # max(NaN, 0) is implementation-defined in practice
    check(*node_model(op, [("x", x)]), kind="transcendental")


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
def test_binary_special_values(op):
    a = np.repeat(SPECIALS, len(SPECIALS))
    b = np.tile(SPECIALS, len(SPECIALS))
    check(*node_model(op, [("a", a), ("b", b)]))


@pytest.mark.parametrize("op", ["Max", "Min"])
def test_max_min_propagate_nan(op):
    """Max/Min lower to compare + select (one vmaxps/vminps) with a NaN check for the
    operand x86 drops: NaN on either side gives NaN, as np.maximum/np.minimum do."""
    a = np.repeat(SPECIALS, len(SPECIALS))
    b = np.tile(SPECIALS, len(SPECIALS))
    check(*node_model(op, [("a", a), ("b", b)]))


@pytest.mark.parametrize("op", ["Equal", "Less", "Greater"])
def test_compare_special_values(op):
    a = np.repeat(SPECIALS, len(SPECIALS))
    b = np.tile(SPECIALS, len(SPECIALS))
    check(*node_model(op, [("a", a), ("b", b)]))


@pytest.mark.parametrize("shape,feed", [
    (["n"], [(3 * 16384 + 17,), (16384,), (16385,), (5,), (1,)]),
    (["b", "n"], [(1, 2 * 16384 + 3), (3, 1000), (2, 1)]),
    ([1, 40000], [(1, 40000)]),
])
def test_long_rows_split_into_parallel_chunks(shape, feed):
    """A pointwise kernel whose row is long or known only at run time runs it in chunks of
    POINTWISE_CHUNK that the pool can split: with no outer axis, or a batch of one, the row
    had been one serial loop. The chunk loop is the parallel one (or collapses into the outer
    loops'), and every length matches numpy: a partial last chunk, a tail that is not a
    whole vector, a row shorter than one chunk."""
    from onnx import TensorProto, helper

    from ember.codegen import loop_ir as L
    from ember.codegen.lower import POINTWISE_CHUNK
    from ember.runtime.compiler import compile_model

    from .harness import run_engine
    g = helper.make_graph([helper.make_node("Exp", ["x"], ["e"]), helper.make_node("Sin", ["e"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    prog = compile_model(model.SerializeToString(), use_cache=False).program
    (kernel,) = prog.kernels
    outer = kernel.body[-1]
    assert isinstance(outer, L.For) and outer.parallel
    vec = outer
    while not vec.vector:
        vec = vec.body[-1]
    assert POINTWISE_CHUNK < 40000 and not (isinstance(vec.start, L.Const) and vec.start.value == 0)
    rng = np.random.default_rng(3)
    for fshape in feed:
        x = rng.uniform(-2, 2, fshape).astype(np.float32)
        np.testing.assert_allclose(run_engine(model, {"x": x})[0], np.sin(np.exp(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op,attrs", [("IsNaN", {}), ("IsInf", {}), ("IsInf", {"detect_negative": 0}),
                                      ("IsInf", {"detect_positive": 0}), ("Sign", {}), ("Round", {})])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_special_values_classified(op, attrs, dtype):
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 2.5, -2.5, 3.5, 1e30, -7.0], dtype=dtype)
    x = np.tile(x, 3)        # past one vector of lanes
    check(*node_model(op, [("x", x)], attrs, opset=20))


# --------------------------------------------------------------- QuantizeLinear / Dequantize
@pytest.mark.parametrize("qtype", ["uint8", "int8", "int16", "uint16"])
@pytest.mark.parametrize("form", ["tensor", "axis", "block"])
@examples(8)
@given(data=st.data())
def test_quantize_dequantize(qtype, form, data):
    """Per tensor, per axis and blocked scales and zero points; round half to even; saturation."""
    rng = rng_from(data)
    shape = list(data.draw(shapes(2, 4, max_size=512), label="shape"))
    r = len(shape)
    axis = data.draw(st.integers(-r, r - 1), label="axis")
    a = axis % r
    block = data.draw(st.integers(1, 4), label="block") if form == "block" else 0
    pshape = [] if form == "tensor" else [shape[a]] if form == "axis" else \
        [-(-d // block) if i == a else d for i, d in enumerate(shape)]
    scale = gen(rng, "float32", pshape, Domain(low=0.05, high=0.5))
    lo, hi = {"uint8": (0, 255), "int8": (-128, 127), "int16": (-32768, 32767), "uint16": (0, 65535)}[qtype]
    zp = rng.integers(lo // 4, hi // 4 + 1, size=pshape).astype(qtype)
    # halves of the scale make ties; a wide range saturates
    x = (np.round(gen(rng, "float32", shape, Domain(low=-1.0, high=1.0)) * 8) / 2 * scale.max() * 40).astype(np.float32)
    attrs = {"axis": axis, "block_size": block or None}
    check(*node_model("QuantizeLinear", [("x", x), ("scale", scale), ("zp", zp)], attrs, opset=21,
                      const={"scale", "zp"} if data.draw(st.booleans(), label="const") else set()))
    q = rng.integers(lo, hi + 1, size=shape).astype(qtype)
    check(*node_model("DequantizeLinear", [("x", q), ("scale", scale), ("zp", zp)], attrs, opset=21,
                      const={"scale", "zp"} if data.draw(st.booleans(), label="const2") else set()))
