"""Reductions and normalizations: ReduceMean/Sum/Max/Min, Softmax, LayerNormalization."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import helper

from .harness import FLOATS, NUMERIC, build_model, check, node_model
from .strategies import UNIT, Domain, examples, gen, pick_consts, rng_from, shapes

REDUCE_OPS = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL1", "ReduceL2",
              "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp", "ReduceProd")
# ONNX opset 13: only ReduceSum takes axes as an input (others: attribute); opset 18: all inputs.
AXES_AS_INPUT = {13: {"ReduceSum"}, 18: set(REDUCE_OPS)}
# values each reduction stays finite and well-conditioned on
REDUCE_DOMAIN = {"ReduceLogSum": Domain(low=0.1, high=4.0, int_low=1, int_high=100),
                 "ReduceProd": Domain(low=0.8, high=1.25, int_low=-3, int_high=3),
                 "ReduceSumSquare": Domain(low=-2.0, high=2.0, int_low=-30, int_high=30),
                 "ReduceL2": Domain(low=-2.0, high=2.0, int_low=-30, int_high=30)}
SUMMING = ("ReduceSum", "ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp", "ReduceLogSum")


@pytest.mark.parametrize("dtype", NUMERIC)
@pytest.mark.parametrize("op", REDUCE_OPS)
@examples(15)
@given(data=st.data())
def test_reduce(op, dtype, data):
    rng = rng_from(data)
    opset = data.draw(st.sampled_from([18, 18, 13]), label="opset")
    shape = list(data.draw(shapes(1, 4, max_size=4096, zero=True), label="shape"))
    rank = len(shape)
    mode = data.draw(st.sampled_from(["axes", "axes", "omitted", "empty"]), label="axes_mode")
    axes = None
    if mode == "axes":
        ax = data.draw(st.lists(st.integers(0, rank - 1), min_size=1, max_size=rank, unique=True), label="axes")
        axes = [a - rank if data.draw(st.booleans(), label="negative") else a for a in ax]
    elif mode == "empty":
        axes = []
    keepdims = data.draw(st.sampled_from([None, 0, 1]), label="keepdims")
    as_input = op in AXES_AS_INPUT[opset]
    noop = data.draw(st.sampled_from([None, 0, 1]), label="noop_with_empty_axes") if as_input else None
    # Reducing over an empty set has no agreed value for Max/Min/Mean; keep reduced dims
    # non-zero (size-0 dims survive on kept axes).
    reduces_all = axes is None or (axes == [] and not noop)
    reduced = range(rank) if reduces_all else [a % rank for a in axes]
    for a in reduced:
        if shape[a] == 0:
            shape[a] = 3
    if op in ("ReduceLogSum", "ReduceLogSumExp", "ReduceL2") and dtype in ("int32", "int64"):
        dtype = "float32"     # ONNX defines these on integers too; onnx.reference does not
    dom = REDUCE_DOMAIN.get(op, Domain(low=-4.0, high=4.0, int_low=-100, int_high=100))
    x = gen(rng, dtype, shape, dom)
    if op == "ReduceProd" and dtype in ("float32", "float16") and data.draw(st.booleans(), label="signs"):
        x = np.where(rng.random(x.shape) < 0.3, -x, x).astype(dtype)
    attrs = {"keepdims": keepdims, "noop_with_empty_axes": noop}
    inputs = [("data", x)]
    if as_input:
        inputs.append(("axes", None if axes is None else np.array(axes, dtype=np.int64)))
    else:
        attrs["axes"] = axes or None  # opset-13 attribute form: omitted == all axes
    n = math.prod(shape[a] for a in reduced) if shape else 1
    tol_scale = (n if op in SUMMING or op == "ReduceProd" else 1) * 4.0
    # axes are usually constants; fed at run time the session compiles per value of them
    const = ({"axes"} if data.draw(st.booleans(), label="axes_const") else set()) | pick_consts(data, ["data"])
    check(*node_model(op, inputs, attrs, opset=opset, const=const), scale=tol_scale)


# --------------------------------------------------------------------------- Softmax
@pytest.mark.parametrize("dtype", FLOATS)
@examples(20)
@given(data=st.data())
def test_softmax(dtype, data):
    rng = rng_from(data)
    opset = data.draw(st.sampled_from([13, 18]), label="opset")
    shape = data.draw(shapes(1, 4, max_size=4096, zero=True), label="shape")
    rank = len(shape)
    ax = data.draw(st.one_of(st.none(), st.integers(-rank, rank - 1)), label="axis")
    # large logits check the max-subtraction (exp overflows past ~88 in float32)
    spread = data.draw(st.sampled_from([1.0, 5.0, 60.0] if dtype == "float32" else [1.0, 5.0, 12.0]), label="spread")
    x = gen(rng, dtype, shape, Domain(low=-spread, high=spread))
    if data.draw(st.booleans(), label="offset"):
        x = (x.astype(np.float32) + (100.0 if dtype == "float32" else 10.0)).astype(dtype)
    check(*node_model("Softmax", [("x", x)], {"axis": ax}, opset=opset, const=pick_consts(data, ["x"])),
          kind="transcendental")


@pytest.mark.parametrize("dtype", FLOATS)
@examples(12)
@given(data=st.data())
def test_softmax_opset11_coerces_to_2d(dtype, data):
    """Opset < 13 Softmax normalizes over ALL dims from `axis` on (input coerced to 2-D;
    default axis=1).  onnx.reference implements only the opset-13 single-axis form, so the
    reference runs the equivalent Flatten -> Softmax(axis=1) -> Reshape graph."""
    rng = rng_from(data)
    shape = data.draw(shapes(2, 4, max_size=4096), label="shape")
    rank = len(shape)
    ax = data.draw(st.one_of(st.none(), st.integers(-rank, rank - 1)), label="axis")
    x = gen(rng, dtype, shape, Domain(low=-5.0, high=5.0))
    model, feeds = node_model("Softmax", [("x", x)], {"axis": ax}, opset=11)
    nodes = [
        helper.make_node("Flatten", ["x"], ["flat"], axis=1 if ax is None else ax),
        helper.make_node("Softmax", ["flat"], ["sm"], axis=1),
        helper.make_node("Reshape", ["sm", "shape"], ["out0"]),
    ]
    ref = build_model(nodes, [("x", x)], ["out0"], [("shape", np.array(shape, dtype=np.int64))], opset=13)
    check(model, feeds, kind="transcendental", reference_model=ref)


# --------------------------------------------------------------------------- LayerNormalization
@pytest.mark.parametrize("dtype", FLOATS)
@examples(20)
@given(data=st.data())
def test_layer_normalization(dtype, data):
    rng = rng_from(data)
    shape = list(data.draw(shapes(1, 4, max_size=4096), label="shape"))
    rank = len(shape)
    ax = data.draw(st.one_of(st.none(), st.integers(-rank, rank - 1)), label="axis")
    a = -1 if ax is None else ax
    a = a % rank
    # size-0 dims only before the normalized axes (normalizing an empty set is undefined)
    if data.draw(st.booleans(), label="zero_batch") and a > 0:
        shape[0] = 0
    eps = data.draw(st.sampled_from([None, 1e-5, 1e-3, 0.1]), label="epsilon")
    # a mean offset makes a naive E[x^2]-E[x]^2 variance lose precision
    offset = data.draw(st.sampled_from([0.0, 0.0, 3.0]), label="offset")
    x = gen(rng, dtype, shape, Domain(low=-2.0 + offset, high=2.0 + offset))
    norm_shape = shape[a:]
    scale = gen(rng, dtype, norm_shape, Domain(low=-2.0, high=2.0))
    inputs = [("X", x), ("Scale", scale)]
    if data.draw(st.booleans(), label="bias"):
        inputs.append(("B", gen(rng, dtype, norm_shape, UNIT)))
    const = {"Scale", "B"} if data.draw(st.booleans(), label="params_const") else set()
    const |= pick_consts(data, ["X"])
    n = math.prod(norm_shape)
    # sometimes with the Mean and InvStdDev outputs too (float32: stash_type); not for float16
    # inputs, where onnx.reference rounds them to float16 first
    outs = data.draw(st.sampled_from([1, 1, 3]), label="outputs") if dtype == "float32" else 1
    check(*node_model("LayerNormalization", inputs, {"axis": ax, "epsilon": eps}, n_outputs=outs, opset=18,
                      const=const), kind="transcendental", scale=4.0 * (1 + math.log2(n)))


# --------------------------------------------------------------- contiguous reductions
def _reduce_program(nodes, shape, opset=18, consts=()):
    from onnx import TensorProto, numpy_helper

    from ember.runtime.compiler import compile_model
    g = helper.make_graph(nodes, "r", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in consts])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    return model, compile_model(model.SerializeToString(), use_cache=False).program


def _vector_loops(program):
    from ember.codegen import loop_ir as L
    found = []

    def walk(stmts):
        for st in stmts:
            if isinstance(st, L.For) and st.vector:
                found.append(st)
            for attr in ("body", "then", "orelse"):
                walk(getattr(st, attr, None) or [])
    for k in program.kernels:
        walk(k.body)
    return found


@pytest.mark.parametrize("batch", [1, 3, "n"])
def test_global_pool_vectorizes_the_pixels_not_the_channels(batch):
    """A global average pool reduces each channel's 7x7 pixels, which lie together: one
    vector loop over all 49 of them (the two reduced axes merged; a contiguous load), one
    channel at a time in parallel. Vectors across channels gathered a lane from every
    channel (a pool over 1280 channels on its own: 15.5 us -> 3.5 us on one thread)."""
    from ember.codegen import loop_ir as L

    from .harness import run_engine, run_reference
    model, prog = _reduce_program([helper.make_node("GlobalAveragePool", ["x"], ["y"])], [batch, 37, 7, 7])
    loops = _vector_loops(prog)
    assert len(loops) == 1 and isinstance(loops[0].stop, L.Const) and loops[0].stop.value == 49
    text = L.kernel_str(prog.kernels[0])
    assert " / " not in text and " % " not in text, text       # the split indices folded away
    n = 2 if batch == "n" else batch
    x = np.random.default_rng(7).standard_normal((n, 37, 7, 7)).astype(np.float32)
    np.testing.assert_allclose(run_engine(model, {"x": x})[0], run_reference(model, {"x": x})[0],
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("axes,merged", [([1], None), ([2, 3], 42), ([1, 2, 3], 1386), ([1, 3], None)])
def test_reductions_over_adjacent_axes_run_one_loop(axes, merged):
    """Adjacent reduced axes run as one loop (a vector over 6x7 = 42, not 7 masked lanes);
    a single axis, or axes that are not adjacent, keep their own loops. Reducing the middle
    axis, which is not contiguous, keeps the vector across outputs."""
    from ember.codegen import loop_ir as L

    from .harness import run_engine, run_reference
    model, prog = _reduce_program([helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)],
                                  [4, 33, 6, 7], consts=[("axes", axes)])
    stops = [lp.stop.value for lp in _vector_loops(prog) if isinstance(lp.stop, L.Const)]
    if merged is not None:
        assert stops == [merged]
    else:
        assert merged not in stops and stops
    x = np.random.default_rng(len(axes)).standard_normal((4, 33, 6, 7)).astype(np.float32)
    np.testing.assert_allclose(run_engine(model, {"x": x})[0], run_reference(model, {"x": x})[0],
                               rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ ArgMax, ArgMin, Hardmax
@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("dtype", ["float32", "int32", "float16"])
@examples(12)
@given(data=st.data())
def test_arg_extreme(op, dtype, data):
    rng = rng_from(data)
    shape = list(data.draw(shapes(1, 4, max_size=2048), label="shape"))
    r = len(shape)
    # a coarse grid makes ties, where select_last_index decides
    x = gen(rng, dtype, shape, Domain(low=-3.0, high=3.0, grid=1.0, int_low=-3, int_high=3))
    attrs = {"axis": data.draw(st.one_of(st.none(), st.integers(-r, r - 1)), label="axis"),
             "keepdims": data.draw(st.sampled_from([None, 0, 1]), label="keepdims"),
             "select_last_index": data.draw(st.sampled_from([None, 0, 1]), label="last")}
    check(*node_model(op, [("x", x)], attrs, opset=13, const=pick_consts(data, ["x"])))


@examples(12)
@given(data=st.data())
def test_hardmax(data):
    rng = rng_from(data)
    shape = list(data.draw(shapes(1, 4, max_size=2048), label="shape"))
    r = len(shape)
    opset = 13     # onnx.reference applies opset 13's axis semantics to opset 11's 2-D coercion too
    x = gen(rng, "float32", shape, Domain(low=-3.0, high=3.0, grid=1.0))
    ax = data.draw(st.one_of(st.none(), st.integers(-r, r - 1)), label="axis")
    check(*node_model("Hardmax", [("x", x)], {"axis": ax}, opset=opset, const=pick_consts(data, ["x"])))


@examples(10)
@given(data=st.data())
def test_lp_normalization(data):
    rng = rng_from(data)
    shape = list(data.draw(shapes(1, 4, max_size=2048), label="shape"))
    r = len(shape)
    x = gen(rng, "float32", shape, Domain(low=-3.0, high=3.0))
    if data.draw(st.booleans(), label="zero_row"):
        x[..., :1] = 0.0          # an all-zero slice along the last axis normalises to 0
    attrs = {"axis": data.draw(st.one_of(st.none(), st.integers(-r, r - 1)), label="axis"),
             "p": data.draw(st.sampled_from([None, 1, 2]), label="p")}
    if attrs["p"] == 1:
        x = np.abs(x)     # onnx.reference's L1 norm sums x, not |x|
    check(*node_model("LpNormalization", [("x", x)], attrs, opset=22, const=pick_consts(data, ["x"])),
          kind="transcendental", scale=8.0)


@examples(10)
@given(data=st.data())
def test_instance_normalization(data):
    rng = rng_from(data)
    shape = list(data.draw(shapes(3, 4, max_size=2048), label="shape"))
    c = shape[1]
    x = gen(rng, "float32", shape, Domain(low=-2.0, high=4.0))
    inputs = [("x", x), ("scale", gen(rng, "float32", [c])), ("B", gen(rng, "float32", [c]))]
    check(*node_model("InstanceNormalization", inputs, {"epsilon": data.draw(st.sampled_from([None, 1e-2]),
                                                                              label="eps")},
                      const={"scale", "B"} if data.draw(st.booleans(), label="const") else set()),
          kind="transcendental", scale=32.0)


@pytest.mark.parametrize("dtype", ["float32", "int64"])
@examples(12)
@given(data=st.data())
def test_topk(dtype, data):
    rng = rng_from(data)
    shape = list(data.draw(shapes(1, 3, max_size=512), label="shape"))
    r = len(shape)
    axis = data.draw(st.integers(-r, r - 1), label="axis")
    k = data.draw(st.integers(0, min(shape[axis], 6)), label="k")
    # a coarse grid makes ties: the smaller index comes first
    x = gen(rng, dtype, shape, Domain(low=-3.0, high=3.0, grid=1.0, int_low=-3, int_high=3))
    attrs = {"axis": axis, "largest": data.draw(st.sampled_from([None, 0, 1]), label="largest")}
    const = {"k"} if data.draw(st.booleans(), label="k_const") else set()
    check(*node_model("TopK", [("x", x), ("k", np.array([k], np.int64))], attrs, n_outputs=2, opset=11,
                      const=const | pick_consts(data, ["x"])))
