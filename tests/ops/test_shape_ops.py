"""Data-movement and shape operators: Flatten, Reshape, Transpose, Squeeze, Unsqueeze,
Concat, Slice, Split, Gather, Expand, Shape, ConstantOfShape, Constant, Range."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import helper, numpy_helper

from .harness import ALL, build_model, check, node_model, ort_skip
from .strategies import (SMALL_DIMS, Domain, examples, gen, pick_consts, rng_from,
                         shapes)

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min


def i64(v):
    return np.array(v, dtype=np.int64)


# --------------------------------------------------------------------------- Flatten
@pytest.mark.parametrize("dtype", ALL)
@examples(10)
@given(data=st.data())
def test_flatten(dtype, data):
    rng = rng_from(data)
    shape = data.draw(shapes(1, 4, zero=True), label="shape")
    r = len(shape)
    ax = data.draw(st.one_of(st.none(), st.integers(-r, r)), label="axis")  # axis == r and 0 allowed
    x = gen(rng, dtype, shape)
    const = pick_consts(data, ["x"])
    model, feeds = node_model("Flatten", [("x", x)], {"axis": ax}, const=const)
    ref = None
    if x.size == 0:
        # onnx.reference's Flatten reshapes with -1, which numpy rejects for size-0 arrays:
        # the reference runs the equivalent Reshape (allowzero=1: the 0s are real dims)
        a = 1 if ax is None else (ax if ax >= 0 else ax + r)
        target = i64([math.prod(shape[:a]), math.prod(shape[a:])])
        node = helper.make_node("Reshape", ["x", "s"], ["out0"], allowzero=1)
        ins, inits = ([], [("x", x)]) if "x" in const else ([("x", x)], [])
        ref = build_model([node], ins, ["out0"], inits + [("s", target)])
    check(model, feeds, reference_model=ref)


# --------------------------------------------------------------------------- Reshape
@st.composite
def reshape_target(draw, shape):
    """A target shape for `shape` using 0 (copy the input dim) and -1 (infer) markers."""
    total = math.prod(shape)
    if total == 0:
        # size-0 input: with allowzero=0 a 0 in `shape` means "copy", so a zero dim can only
        # come from copying one; -1 would be ambiguous.  Keep the dims, maybe add 1s.
        out = [0 if (d == 0 or draw(st.booleans(), label="copy")) else d for d in shape]
        return out + [1] * draw(st.integers(0, 2), label="trailing_ones")
    # factor the total into a random number of dims
    factors = []
    rest = total
    for p in (2, 3, 5, 7, 11, 13, 17, 31):
        while rest % p == 0:
            factors.append(p)
            rest //= p
    if rest > 1:
        factors.append(rest)
    n_dims = draw(st.integers(0 if total == 1 else 1, min(5, max(1, len(factors)) + 1)), label="out_rank")
    out = [1] * n_dims
    for f in factors:
        if n_dims == 0:
            break
        out[draw(st.integers(0, n_dims - 1), label="slot")] *= f
    if n_dims == 0:
        return []
    # 0 = "same as input dim at this index" (allowzero=0)
    out = [0 if (i < len(shape) and d == shape[i] and draw(st.booleans(), label="copy")) else d
           for i, d in enumerate(out)]
    if draw(st.booleans(), label="use_minus_one"):
        out[draw(st.integers(0, n_dims - 1), label="minus_one_at")] = -1
    return out


@pytest.mark.parametrize("dtype", ALL)
@examples(12)
@given(data=st.data())
def test_reshape(dtype, data):
    rng = rng_from(data)
    shape = data.draw(shapes(0, 4, max_size=2048, zero=True), label="shape")
    target = data.draw(reshape_target(list(shape)), label="target")
    x = gen(rng, dtype, shape)
    attrs = {"allowzero": data.draw(st.sampled_from([None, 0]), label="allowzero")}
    const = {"shape"} | pick_consts(data, ["x"])
    check(*node_model("Reshape", [("x", x), ("shape", i64(target))], attrs, const=const))


# --------------------------------------------------------------------------- Transpose
@pytest.mark.parametrize("dtype", ALL)
@examples(10)
@given(data=st.data())
def test_transpose(dtype, data):
    rng = rng_from(data)
    shape = data.draw(shapes(0, 5, max_size=4096, zero=True), label="shape")
    perm = data.draw(st.one_of(st.none(), st.permutations(range(len(shape)))), label="perm")
    if not shape:
        perm = None  # an empty `perm` attribute cannot be typed by onnx.helper
    x = gen(rng, dtype, shape)
    check(*node_model("Transpose", [("x", x)], {"perm": None if perm is None else list(perm)},
                      const=pick_consts(data, ["x"])))


# --------------------------------------------------------------------------- Squeeze / Unsqueeze
@pytest.mark.parametrize("dtype", ALL)
@examples(10)
@given(data=st.data())
def test_squeeze(dtype, data):
    rng = rng_from(data)
    base = list(data.draw(shapes(0, 4, zero=True), label="shape"))
    # sprinkle extra size-1 dims
    for _ in range(data.draw(st.integers(0, 3), label="n_ones")):
        base.insert(data.draw(st.integers(0, len(base)), label="one_at"), 1)
    r = len(base)
    ones = [i for i, d in enumerate(base) if d == 1]
    axes = None
    if ones and data.draw(st.booleans(), label="explicit_axes"):
        sel = data.draw(st.lists(st.sampled_from(ones), min_size=1, unique=True), label="axes")
        axes = [a - r if data.draw(st.booleans(), label="neg") else a for a in sel]
    x = gen(rng, dtype, base)
    inputs = [("x", x), ("axes", None if axes is None else i64(axes))]
    check(*node_model("Squeeze", inputs, const={"axes"} | pick_consts(data, ["x"])))


@pytest.mark.parametrize("dtype", ALL)
@examples(10)
@given(data=st.data())
def test_unsqueeze(dtype, data):
    rng = rng_from(data)
    shape = data.draw(shapes(0, 4, zero=True), label="shape")
    n_new = data.draw(st.integers(1, 3), label="n_new")
    out_rank = len(shape) + n_new
    sel = data.draw(st.lists(st.integers(0, out_rank - 1), min_size=n_new, max_size=n_new, unique=True), label="axes")
    axes = [a - out_rank if data.draw(st.booleans(), label="neg") else a for a in sel]  # unsorted, mixed sign
    x = gen(rng, dtype, shape)
    check(*node_model("Unsqueeze", [("x", x), ("axes", i64(axes))], const={"axes"} | pick_consts(data, ["x"])))


# --------------------------------------------------------------------------- Concat
@pytest.mark.parametrize("dtype", ALL)
@examples(10)
@given(data=st.data())
def test_concat(dtype, data):
    rng = rng_from(data)
    shape = list(data.draw(shapes(1, 4, zero=True), label="shape"))
    r = len(shape)
    ax = data.draw(st.integers(-r, r - 1), label="axis")
    n = data.draw(st.integers(2, 4), label="n_inputs")
    arrays = []
    for i in range(n):
        s = list(shape)
        s[ax] = data.draw(st.sampled_from((0, 1, 2, 3, 7, 17)), label="len_along_axis")
        arrays.append((f"x{i}", gen(rng, dtype, s)))
    const = pick_consts(data, [n for n, _ in arrays])
    check(*node_model("Concat", arrays, {"axis": ax}, const=const))


# --------------------------------------------------------------------------- Slice
BIG = (INT64_MAX, INT64_MIN, 1000, -1000)


@st.composite
def slice_spec(draw, shape):
    r = len(shape)
    n_axes = draw(st.integers(1, r), label="n_axes")
    axes = draw(st.lists(st.integers(0, r - 1), min_size=n_axes, max_size=n_axes, unique=True), label="axes")
    starts, ends, steps = [], [], []
    for a in axes:
        d = shape[a]
        step = draw(st.sampled_from((1, 1, 2, 3, -1, -1, -2)), label="step")
        # in-range (possibly negative) indices, or out-of-range values that must clamp
        idx = st.one_of(st.integers(-d - 2, d + 2), st.sampled_from(BIG))
        start, end = draw(idx, label="start"), draw(idx, label="end")
        if step < 0 and end == INT64_MAX:
            end = 1000  # INT64_MAX end + negative step: see test_slice_int64_max_end_negative_step
        starts.append(start)
        ends.append(end)
        steps.append(step)
    axes = [a - r if draw(st.booleans(), label="neg_axis") else a for a in axes]
    return axes, starts, ends, steps


@pytest.mark.parametrize("dtype", ALL)
@examples(15)
@given(data=st.data())
def test_slice(dtype, data):
    rng = rng_from(data)
    shape = data.draw(shapes(1, 4, zero=True), label="shape")
    axes, starts, ends, steps = data.draw(slice_spec(list(shape)), label="spec")
    ind = data.draw(st.sampled_from(["int64", "int64", "int32"]), label="index_dtype")
    if ind == "int32":
        clamp = lambda v: [int(np.clip(x, np.iinfo(np.int32).min, np.iinfo(np.int32).max)) for x in v]  # noqa: E731
        starts, ends = clamp(starts), clamp(ends)
    form = data.draw(st.sampled_from(["full", "no_steps", "no_axes"]), label="form")
    x = gen(rng, dtype, shape)
    if form == "no_axes":
        # axes omitted == [0, 1, ..., len(starts)-1]
        k = min(len(starts), len(shape))
        starts, ends, steps = starts[:k], ends[:k], steps[:k]
        axes = list(range(k))
        with_steps = data.draw(st.booleans(), label="steps_without_axes")
        inputs = [("x", x), ("starts", np.array(starts, ind)), ("ends", np.array(ends, ind)), None,
                  ("steps", np.array(steps, ind) if with_steps else None)]
        if not with_steps:
            steps = [1] * k
    else:
        with_steps = form == "full"
        if not with_steps:
            steps = [1] * len(axes)
        inputs = [("x", x), ("starts", np.array(starts, ind)), ("ends", np.array(ends, ind)),
                  ("axes", np.array(axes, ind)), ("steps", np.array(steps, ind) if with_steps else None)]
    const = {"starts", "ends", "axes", "steps"} | pick_consts(data, ["x"])
    model, feeds = node_model("Slice", inputs, const=const)
    # onnx.reference slices with numpy semantics, which differ from ONNX clamping for
    # out-of-range starts with negative steps (ONNX clamps start to 0 -> element 0 is
    # included); the reference runs the same Slice with spec-canonicalized, in-range values.
    cs, ce = _canonical_slice(shape, axes, starts, ends, steps)
    ref, _ = node_model("Slice", [("x", x), ("starts", i64(cs)), ("ends", i64(ce)), ("axes", i64(axes)),
                                  ("steps", i64(steps))], const=const)
    check(model, feeds, reference_model=ref)


def _canonical_slice(shape, axes, starts, ends, steps):
    """starts/ends clamped exactly as the ONNX Slice spec says, re-encoded so numpy-style
    slicing gives the same result (an end of -1 'before the front' becomes INT64_MIN)."""
    cs, ce = [], []
    for a, b, e, st_ in zip(axes, starts, ends, steps):
        d = shape[a]
        b = b + d if b < 0 else b
        e = e + d if e < 0 else e
        if st_ > 0:
            b, e = min(max(b, 0), d), min(max(e, 0), d)
        else:
            b, e = min(max(b, 0), d - 1), min(max(e, -1), d - 1)
            if d == 0:
                b, e = 0, 0
            elif e == -1:
                e = int(INT64_MIN)
        cs.append(int(b))
        ce.append(int(e))
    return cs, ce


@ort_skip("Slice treats end=INT64_MAX with a negative step as 'run to the front' instead of "
          "clamping it to dim-1 as the ONNX spec says (returns e.g. [2,1,0] instead of [])")
@pytest.mark.parametrize("start", [0, 2, -1, INT64_MAX])
def test_slice_int64_max_end_negative_step(start):
    x = np.arange(5 * 3, dtype=np.float32).reshape(5, 3)
    inputs = [("x", x), ("starts", i64([start])), ("ends", i64([INT64_MAX])), ("axes", i64([0])), ("steps", i64([-1]))]
    out = check(*node_model("Slice", inputs, const={"starts", "ends", "axes", "steps"}))[0]
    assert out.shape[0] == 0


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul"])
@examples(8)
@given(data=st.data())
def test_slice_ends_from_shape_arithmetic_with_the_constant_first(op, data):
    """Slice ends computed as `k op size` from a Shape, the constant the first operand
    (as the dynamo exporter writes `1 + s`): a symbolic size that folds at compile time."""
    rng = rng_from(data)
    shape = list(data.draw(shapes(2, 2, max_size=64), label="shape"))
    k = data.draw(st.integers(-3, 2), label="k")
    x = gen(rng, "float32", shape)
    nodes = [helper.make_node("Shape", ["x"], ["s"], start=1, end=2),
             helper.make_node("Squeeze", ["s"], ["d"]),
             helper.make_node(op, ["k", "d"], ["e0"]),
             helper.make_node("Reshape", ["e0", "minus1"], ["ends"]),
             helper.make_node("Slice", ["x", "zero", "ends", "one"], ["out0"])]
    model = build_model(nodes, [("x", x)], ["out0"],
                        [("k", i64(k)), ("minus1", i64([-1])), ("zero", i64([0])), ("one", i64([1]))],
                        input_shapes={"x": ["n", "t"]})
    check(model, {"x": x})


# --------------------------------------------------------------------------- Split
@pytest.mark.parametrize("dtype", ALL)
@examples(12)
@given(data=st.data())
def test_split(dtype, data):
    rng = rng_from(data)
    shape = list(data.draw(shapes(1, 4), label="shape"))
    r = len(shape)
    ax = data.draw(st.integers(-r, r - 1), label="axis")
    d = shape[ax]
    mode = data.draw(st.sampled_from(["sizes", "num_outputs", "equal_opset13"]), label="mode")
    x = gen(rng, dtype, shape)
    if mode == "sizes":
        # random partition of d into 1..4 parts; parts of size 0 are legal
        n = data.draw(st.integers(1, 4), label="n_outputs")
        cuts = sorted(data.draw(st.lists(st.integers(0, d), min_size=n - 1, max_size=n - 1), label="cuts"))
        sizes = np.diff([0] + cuts + [d]).tolist()
        model, feeds = node_model("Split", [("x", x), ("split", i64(sizes))], {"axis": ax}, n_outputs=n,
                                  const={"split"} | pick_consts(data, ["x"]))
    elif mode == "num_outputs":
        # opset 18: uneven split allowed, the last chunk is smaller: chunk = ceil(d / n)
        ok = [n for n in range(1, 5) if n <= d and (n - 1) * -(-d // n) < d]
        n = data.draw(st.sampled_from(ok), label="num_outputs")
        model, feeds = node_model("Split", [("x", x)], {"axis": ax, "num_outputs": n}, n_outputs=n,
                                  const=pick_consts(data, ["x"]))
    else:
        # opset 13: no split input -> equal parts, count = number of outputs
        n = data.draw(st.sampled_from([k for k in range(1, 5) if d % k == 0]), label="n_outputs")
        model, feeds = node_model("Split", [("x", x)], {"axis": ax}, n_outputs=n, opset=13,
                                  const=pick_consts(data, ["x"]))
    check(model, feeds)


# --------------------------------------------------------------------------- Gather
@pytest.mark.parametrize("ind_dtype", ["int64", "int32"])
@pytest.mark.parametrize("dtype", ALL)
@examples(10)
@given(data=st.data())
def test_gather(dtype, ind_dtype, data):
    rng = rng_from(data)
    shape = list(data.draw(shapes(1, 4, max_size=2048), label="shape"))
    r = len(shape)
    ax = data.draw(st.one_of(st.none(), st.integers(-r, r - 1)), label="axis")
    d = shape[0 if ax is None else ax]
    ishape = data.draw(shapes(0, 2, max_size=64, dims=SMALL_DIMS, zero=True), label="indices_shape")  # () = scalar
    idx = rng.integers(-d, d, size=ishape).astype(ind_dtype)  # negative indices count from the end
    x = gen(rng, dtype, shape)
    const = pick_consts(data, ["data", "indices"])
    check(*node_model("Gather", [("data", x), ("indices", idx)], {"axis": ax}, const=const))


@pytest.mark.parametrize("dtype", ALL)
@examples(12)
@given(data=st.data())
def test_gather_elements(dtype, data):
    rng = rng_from(data)
    shape = list(data.draw(shapes(1, 4, max_size=2048), label="shape"))
    r = len(shape)
    ax = data.draw(st.one_of(st.none(), st.integers(-r, r - 1)), label="axis")
    a = 0 if ax is None else ax % r
    # indices: any size along the axis, the data's along the others (as onnx.reference needs)
    ishape = [data.draw(st.integers(0, 5), label="along") if i == a else d for i, d in enumerate(shape)]
    idx = rng.integers(-shape[a], shape[a], size=ishape).astype(data.draw(st.sampled_from(["int64", "int32"]),
                                                                        label="ind_dtype"))
    x = gen(rng, dtype, shape)
    if ax is not None and ax < 0 and ishape[a] != shape[a]:
        ax = a      # onnx.reference compares the other dims by the axis as given
    check(*node_model("GatherElements", [("data", x), ("indices", idx)], {"axis": ax},
                      const=pick_consts(data, ["data", "indices"])))


def test_gather_elements_index_out_of_range_is_an_error():
    import ember
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    model, feeds = node_model("GatherElements", [("data", x), ("indices", np.array([[0, 4]], np.int64))], {"axis": 1})
    with pytest.raises(ember.InvalidInputError, match="GatherElements.*outside"):
        ember.InferenceSession(model.SerializeToString()).run(None, feeds)


@pytest.mark.parametrize("dtype", ["float32", "int64", "bool"])
@examples(12)
@given(data=st.data())
def test_gather_nd(dtype, data):
    rng = rng_from(data)
    shape = list(data.draw(shapes(1, 4, max_size=2048), label="shape"))
    r = len(shape)
    bd = data.draw(st.integers(0, min(1, r - 1)), label="batch_dims")
    k = data.draw(st.integers(1, r - bd), label="k")
    rows = list(data.draw(shapes(0, 2, max_size=16, dims=SMALL_DIMS), label="index_rows"))
    ishape = shape[:bd] + rows + [k]
    idx = np.stack([rng.integers(-shape[bd + j], shape[bd + j], size=ishape[:-1]) for j in range(k)], axis=-1)
    x = gen(rng, dtype, shape)
    check(*node_model("GatherND", [("data", x), ("indices", idx.astype(np.int64))], {"batch_dims": bd or None},
                      opset=13, const=pick_consts(data, ["data", "indices"])))


def test_gather_nd_index_out_of_range_is_an_error():
    import ember
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    model, feeds = node_model("GatherND", [("data", x), ("indices", np.array([[0, 4]], np.int64))], opset=13)
    with pytest.raises(ember.InvalidInputError, match="GatherND.*outside"):
        ember.InferenceSession(model.SerializeToString()).run(None, feeds)


# --------------------------------------------------------------------------- Expand
@pytest.mark.parametrize("dtype", ALL)
@examples(10)
@given(data=st.data())
def test_expand(dtype, data):
    rng = rng_from(data)
    full = list(data.draw(shapes(0, 4, max_size=2048, zero=True), label="full"))
    # input: full shape with some dims 1 and leading dims dropped
    drop = data.draw(st.integers(0, len(full)), label="drop")
    in_shape = [1 if data.draw(st.booleans(), label="to_one") else d for d in full[drop:]]
    # shape input: may itself use 1 where the input is larger, and may be shorter than the input
    target = [1 if (i >= drop and full[i] == in_shape[i - drop] and data.draw(st.booleans(), label="one_in_shape"))
              else full[i] for i in range(len(full))]
    cut = data.draw(st.integers(0, len(target)), label="shape_prefix_cut")
    target = target[min(cut, drop):]
    x = gen(rng, dtype, in_shape)
    check(*node_model("Expand", [("x", x), ("shape", i64(target))], const={"shape"} | pick_consts(data, ["x"])))


# --------------------------------------------------------------------------- Shape
@pytest.mark.parametrize("dtype", ["float32", "bool", "int32"])
@examples(10)
@given(data=st.data())
def test_shape(dtype, data):
    rng = rng_from(data)
    shape = data.draw(shapes(0, 4, zero=True), label="shape")
    r = len(shape)
    edge = st.integers(-r - 2, r + 2)  # out-of-range start/end clamp
    start = data.draw(st.one_of(st.none(), edge), label="start")
    end = data.draw(st.one_of(st.none(), edge), label="end")
    x = gen(rng, dtype, shape)
    opset = data.draw(st.sampled_from([15, 18]), label="opset")  # start/end exist since 15
    check(*node_model("Shape", [("x", x)], {"start": start, "end": end}, opset=opset, const=pick_consts(data, ["x"])))


# --------------------------------------------------------------------------- ConstantOfShape
@pytest.mark.parametrize("dtype", [None] + list(ALL))
@examples(8)
@given(data=st.data())
def test_constant_of_shape(dtype, data):
    rng = rng_from(data)
    out_shape = data.draw(shapes(0, 4, zero=True), label="out_shape")  # () -> scalar output
    attrs = {}
    if dtype is not None:  # default: float32 zeros
        val = gen(rng, dtype, (1,), Domain(low=-100.0, high=100.0, int_low=-10**6, int_high=10**6))
        attrs["value"] = numpy_helper.from_array(val, "value")
    if data.draw(st.booleans(), label="from_shape_op") and len(out_shape) > 0:
        # the common exported pattern: Shape(x) -> ConstantOfShape
        x = gen(rng, "float32", out_shape)
        nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("ConstantOfShape", ["s"], ["out0"], **attrs)]
        check(build_model(nodes, [("x", x)], ["out0"]), {"x": x})
    else:
        check(*node_model("ConstantOfShape", [("shape", i64(list(out_shape)))], attrs, const={"shape"}))


# --------------------------------------------------------------------------- Constant
CONSTANT_FORMS = ["value", "value_float", "value_floats", "value_int", "value_ints"]


@pytest.mark.parametrize("form", CONSTANT_FORMS)
@examples(10)
@given(data=st.data())
def test_constant(form, data):
    rng = rng_from(data)
    if form == "value":
        dtype = data.draw(st.sampled_from(ALL), label="dtype")
        arr = gen(rng, dtype, data.draw(shapes(0, 3, max_size=256, zero=True), label="shape"))
        attr = numpy_helper.from_array(arr, "c")
    elif form == "value_float":
        arr = np.array(rng.uniform(-10, 10), dtype=np.float32)
        attr = float(arr)
    elif form == "value_floats":
        arr = rng.uniform(-10, 10, size=data.draw(st.integers(1, 17), label="n")).astype(np.float32)
        attr = [float(v) for v in arr]
    elif form == "value_int":
        arr = np.array(rng.integers(-10**9, 10**9), dtype=np.int64)
        attr = int(arr)
    else:
        arr = rng.integers(-10**9, 10**9, size=data.draw(st.integers(1, 17), label="n")).astype(np.int64)
        attr = [int(v) for v in arr]
    const_node = helper.make_node("Constant", [], ["c"], **{form: attr})
    if data.draw(st.booleans(), label="standalone"):
        # graph with no inputs at all: output is the constant itself
        model = build_model([const_node], [], ["c"])
        check(model, {})
    else:
        # constant feeding a runtime op
        x = gen(rng, arr.dtype, arr.shape)
        op = "And" if arr.dtype == np.bool_ else "Add"
        model = build_model([const_node, helper.make_node(op, ["x", "c"], ["out0"])], [("x", x)], ["out0"])
        check(model, {"x": x})


# --------------------------------------------------------------------------- Range
@pytest.mark.parametrize("dtype", ["float32", "int32", "int64"])
@examples(12)
@given(data=st.data())
def test_range(dtype, data):
    rng = rng_from(data)
    n = data.draw(st.sampled_from((0, 1, 2, 5, 7, 17, 33, 100)), label="n_elements")
    if dtype == "float32":
        start = float(np.float32(rng.uniform(-20, 20)))
        delta = float(np.float32(rng.choice([-1, 1]) * rng.choice([0.1, 0.25, 0.5, 1.0, 1.7, 3.0])))
        # put the limit mid-way between two grid points: the element count is unambiguous
        limit = start + (n - 1 + rng.uniform(0.3, 0.7)) * delta if n else start - delta * rng.uniform(0, 3)
    else:
        start = int(rng.integers(-20, 21))
        delta = int(rng.choice([-1, 1]) * rng.choice([1, 2, 3, 5]))
        limit = start + (n - 1) * delta + int(np.sign(delta)) * int(rng.integers(1, abs(delta) + 1)) if n else start
    scalars = [(k, np.array(v, dtype=dtype)) for k, v in (("start", start), ("limit", limit), ("delta", delta))]
    model, feeds = node_model("Range", scalars, const={"start", "limit", "delta"})
    out = check(model, feeds, scale=abs(start) + n * abs(delta) + 1)[0]
    assert out.shape == (n,)


@pytest.mark.parametrize("dtype", ALL)
def test_identity_on_constant(dtype):
    """Identity of an initializer: the output aliases a constant (no runtime input)."""
    arr = gen(np.random.default_rng(0), dtype, (3, 7))
    check(*node_model("Identity", [("x", arr)], const={"x"}))


# --------------------------------------------------------------------------- Pad, Trilu
@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@pytest.mark.parametrize("dtype", ["float32", "int64", "float16"])
@examples(10)
@given(data=st.data())
def test_pad(mode, dtype, data):
    rng = rng_from(data)
    shape = list(data.draw(shapes(1, 4, max_size=1024), label="shape"))
    r = len(shape)
    use_axes = data.draw(st.booleans(), label="axes")
    axes = sorted(data.draw(st.lists(st.integers(0, r - 1), min_size=1, max_size=r, unique=True), label="which")) \
        if use_axes else list(range(r))
    # pads within the size for reflect (onnx.reference is numpy's single reflection); it cannot
    # crop (negative pads): test_pad_negative_crops
    lo = 0

    def pad(d):
        hi = d - 1 if mode == "reflect" else d if mode == "wrap" else 3
        return data.draw(st.integers(max(lo, -(d // 2)), max(hi, 0)), label="pad")
    pads = [pad(shape[a]) for a in axes] + [pad(shape[a]) for a in axes]
    x = gen(rng, dtype, shape)
    inputs = [("x", x), ("pads", i64(pads))]
    if mode == "constant" and data.draw(st.booleans(), label="value"):
        inputs.append(("value", gen(rng, dtype, ())))
    if use_axes:
        inputs += [None] * (3 - len(inputs)) + [("axes", i64([a - r if data.draw(st.booleans(), label="neg") else a
                                                              for a in axes]))]
    const = {"pads", "axes"} if data.draw(st.booleans(), label="pads_const") else set()
    check(*node_model("Pad", inputs, {"mode": mode}, opset=19, const=const | pick_consts(data, ["x", "value"])))


@pytest.mark.parametrize("symbolic", [False, True])
def test_pad_negative_crops(symbolic):
    import ember
    x = np.arange(4 * 7, dtype=np.float32).reshape(4, 7)
    pads = [-1, 2, 1, -3]               # crop a row at the top, 3 columns at the right
    model, feeds = node_model("Pad", [("x", x), ("pads", i64(pads)), ("v", np.array(9.0, np.float32))],
                              {"mode": "constant"}, opset=19, const={"pads", "v"})
    if symbolic:
        for i, d in enumerate(model.graph.input[0].type.tensor_type.shape.dim):
            d.Clear()
            d.dim_param = f"d{i}"
    (y,) = ember.InferenceSession(model.SerializeToString()).run(None, feeds)
    want = np.pad(x[1:, :4], [(0, 1), (2, 0)], constant_values=9.0)
    np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("dtype", ["float32", "int32", "bool"])
@examples(10)
@given(data=st.data())
def test_trilu(dtype, data):
    rng = rng_from(data)
    shape = list(data.draw(shapes(2, 4, max_size=2048, zero=True), label="shape"))
    k = data.draw(st.one_of(st.none(), st.integers(-6, 6)), label="k")
    inputs = [("x", gen(rng, dtype, shape))] + ([("k", np.array(k, np.int64))] if k is not None else [])
    const = {"k"} if data.draw(st.booleans(), label="k_const") else set()
    check(*node_model("Trilu", inputs, {"upper": data.draw(st.sampled_from([None, 0, 1]), label="upper")}, opset=14,
                      const=const | pick_consts(data, ["x"])))


# ------------------------------------------------------------- Tile, EyeLike, OneHot, CumSum
@pytest.mark.parametrize("dtype", ["float32", "int64", "bool"])
@examples(10)
@given(data=st.data())
def test_tile(dtype, data):
    rng = rng_from(data)
    shape = list(data.draw(shapes(1, 4, max_size=256, zero=True), label="shape"))
    reps = [data.draw(st.integers(0 if data.draw(st.booleans(), label="z") else 1, 3), label="rep") for _ in shape]
    const = {"repeats"} if data.draw(st.booleans(), label="reps_const") else set()
    check(*node_model("Tile", [("x", gen(rng, dtype, shape)), ("repeats", i64(reps))],
                      const=const | pick_consts(data, ["x"])))


@pytest.mark.parametrize("dtype", ["float32", "int32"])
@examples(8)
@given(data=st.data())
def test_eyelike(dtype, data):
    rng = rng_from(data)
    shape = [data.draw(st.integers(1, 9), label="r"), data.draw(st.integers(1, 9), label="c")]
    attrs = {"k": data.draw(st.sampled_from([None, -2, 0, 1, 5]), label="k"),
             "dtype": data.draw(st.sampled_from([None, 1, 7]), label="dtype")}
    check(*node_model("EyeLike", [("x", gen(rng, dtype, shape))], attrs, opset=9))


@examples(12)
@given(data=st.data())
def test_onehot(data):
    rng = rng_from(data)
    shape = list(data.draw(shapes(0, 3, max_size=256), label="shape"))
    depth = data.draw(st.integers(1, 12), label="depth")
    idx = rng.integers(-depth, depth, size=shape).astype(data.draw(st.sampled_from(["int64", "int32", "float32"]),
                                                                    label="idx_dtype"))
    values = gen(rng, "float32", [2])
    ax = data.draw(st.one_of(st.none(), st.integers(-len(shape) - 1, len(shape))), label="axis")
    const = {"depth", "values"} if data.draw(st.booleans(), label="const") else set()
    check(*node_model("OneHot", [("indices", idx), ("depth", np.array(depth, np.int64)), ("values", values)],
                      {"axis": ax}, opset=11, const=const))


@pytest.mark.parametrize("op", ["CumSum", "CumProd"])
@pytest.mark.parametrize("dtype", ["float32", "int32", "int64"])
@examples(10)
@given(data=st.data())
def test_cumsum(op, dtype, data):
    rng = rng_from(data)
    shape = list(data.draw(shapes(1, 3, max_size=1024, zero=True), label="shape"))
    r = len(shape)
    axis = data.draw(st.integers(-r, r - 1), label="axis")
    attrs = {"exclusive": data.draw(st.sampled_from([None, 0, 1]), label="exclusive"),
             "reverse": data.draw(st.sampled_from([None, 0, 1]), label="reverse")}
    dom = Domain(low=-3.0, high=3.0, int_low=-50, int_high=50) if op == "CumSum" else \
        Domain(low=0.8, high=1.25, int_low=-2, int_high=2)
    x = gen(rng, dtype, shape, dom)
    const = {"axis"} if data.draw(st.booleans(), label="axis_const") else set()
    check(*node_model(op, [("x", x), ("axis", np.array(axis, np.int64))], attrs, opset=14 if op == "CumSum" else 26,
                      const=const | pick_consts(data, ["x"])), scale=float(max(shape)))


# --------------------------------------------------------------------------------- Resize
@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@examples(15)
@given(data=st.data())
def test_resize(mode, data):
    rng = rng_from(data)
    shape = [data.draw(st.integers(1, 2), label="n"), data.draw(st.integers(1, 3), label="c")] + \
        [data.draw(st.integers(1, 9), label="hw") for _ in range(data.draw(st.integers(1, 2), label="spatial"))]
    # (cubic half_pixel_symmetric: where a source coordinate is an integer up to rounding,
    # onnx.reference's float64 and Ember's float32 take different taps)
    coords = ["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"] + \
        ([] if mode == "cubic" else ["half_pixel_symmetric"])
    coord = data.draw(st.sampled_from(coords), label="coord")
    attrs = {"mode": mode, "coordinate_transformation_mode": coord}
    if mode == "nearest":
        attrs["nearest_mode"] = data.draw(st.sampled_from(["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]),
                                          label="nearest")
    if mode == "cubic":
        attrs["cubic_coeff_a"] = data.draw(st.sampled_from([None, -0.5]), label="a")
        attrs["exclude_outside"] = data.draw(st.sampled_from([None, 1]), label="exclude")
    x = gen(rng, "float32", shape, Domain(low=-3.0, high=3.0))
    if data.draw(st.booleans(), label="by_scales"):
        sc = [1.0, 1.0] + [data.draw(st.sampled_from([0.5, 0.75, 1.0, 1.5, 2.0, 3.0]), label="s") for _ in shape[2:]]
        inputs = [("x", x), ("roi", None), ("scales", np.array(sc, np.float32))]
    else:
        # (a cubic pytorch_half_pixel resize to size 1: onnx.reference reads from -0.5, the spec from 0)
        lo = 2 if mode == "cubic" and coord == "pytorch_half_pixel" else 1
        sz = shape[:2] + [data.draw(st.integers(lo, 12), label="size") for _ in shape[2:]]
        inputs = [("x", x), ("roi", None), ("scales", None), ("sizes", i64(sz))]
    check(*node_model("Resize", inputs, attrs, opset=19, const={"scales", "sizes"} | pick_consts(data, ["x"])),
          kind="transcendental", scale=4.0)


def test_resize_tf_crop_and_resize_extrapolates():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    roi = np.array([0, 0, -0.2, 0.1, 1, 1, 0.9, 1.3], np.float32)
    check(*node_model("Resize", [("x", x), ("roi", roi), ("scales", None), ("sizes", i64([1, 1, 3, 5]))],
                      {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize",
                       "extrapolation_value": 7.5}, opset=19, const={"roi", "sizes"}))


# ------------------------------------------------------------------ ScatterElements, ScatterND
@pytest.mark.parametrize("reduction", [None, "add", "mul", "max", "min"])
@examples(10)
@given(data=st.data())
def test_scatter_elements(reduction, data):
    rng = rng_from(data)
    shape = list(data.draw(shapes(1, 3, max_size=256), label="shape"))
    r = len(shape)
    axis = data.draw(st.integers(-r, r - 1), label="axis")
    a = axis % r
    k = data.draw(st.integers(1, shape[a]), label="k")
    ishape = [k if i == a else d for i, d in enumerate(shape)]
    # distinct targets along the axis for reduction none (repeats there have no defined order)
    if reduction is None:
        idx = np.argsort(rng.random([*ishape[:a], shape[a], *ishape[a + 1:]]), axis=a).take(range(k), axis=a)
    else:
        idx = rng.integers(0, shape[a], size=ishape)
    idx = np.where(rng.random(ishape) < 0.3, idx - shape[a], idx).astype(np.int64)    # negative ones too
    x, u = gen(rng, "float32", shape), gen(rng, "float32", ishape)
    check(*node_model("ScatterElements", [("data", x), ("indices", idx), ("updates", u)],
                      {"axis": axis, "reduction": reduction}, opset=18,
                      const=pick_consts(data, ["data", "indices", "updates"])))


@pytest.mark.parametrize("reduction", [None, "add"])
@examples(10)
@given(data=st.data())
def test_scatter_nd(reduction, data):
    rng = rng_from(data)
    shape = list(data.draw(shapes(1, 3, max_size=256), label="shape"))
    q = data.draw(st.integers(1, len(shape)), label="q")
    lead = shape[:q]
    n_all = int(np.prod(lead))
    j = data.draw(st.integers(1, min(n_all, 6)), label="j")
    flat = rng.choice(n_all, size=j, replace=reduction is not None)
    idx = np.stack(np.unravel_index(flat, lead), axis=-1).astype(np.int64)
    u = gen(rng, "float32", [j] + shape[q:])
    check(*node_model("ScatterND", [("data", gen(rng, "float32", shape)), ("indices", idx), ("updates", u)],
                      {"reduction": reduction}, opset=18, const=pick_consts(data, ["data", "indices", "updates"])))


# --------------------------------------------------------------------------- Col2Im
@examples(15)
@given(data=st.data())
def test_col2im(data):
    rng = rng_from(data)
    nd = data.draw(st.integers(1, 2), label="spatial_rank")
    block = [data.draw(st.integers(1, 3), label="block") for _ in range(nd)]
    strides = [data.draw(st.integers(1, 2), label="stride") for _ in range(nd)]
    dil = [data.draw(st.integers(1, 2), label="dilation") for _ in range(nd)]
    pads = [data.draw(st.integers(0, 1), label="pad") for _ in range(2 * nd)]
    image = [data.draw(st.integers((b - 1) * d + 1, 7), label="image") for b, d in zip(block, dil)]
    blocks = [(image[i] + pads[i] + pads[i + nd] - dil[i] * (block[i] - 1) - 1) // strides[i] + 1 for i in range(nd)]
    c = data.draw(st.integers(1, 3), label="channels")
    x = gen(rng, "float32", [data.draw(st.integers(1, 2), label="n"), c * math.prod(block), math.prod(blocks)])
    attrs = {"strides": strides, "dilations": dil, "pads": pads}
    check(*node_model("Col2Im", [("x", x), ("image", i64(image)), ("block", i64(block))], attrs, opset=18,
                      const={"image", "block"}))


# ------------------------------------------------------------------ NonZero, Compress
@examples(12)
@given(data=st.data())
def test_compress(data):
    rng = rng_from(data)
    shape = list(data.draw(shapes(1, 3, max_size=512), label="shape"))
    r = len(shape)
    ax = data.draw(st.one_of(st.none(), st.integers(-r, r - 1)), label="axis")
    d = math.prod(shape) if ax is None else shape[ax]
    cond = rng.random(data.draw(st.integers(1, min(d, 64)), label="cond_len")) < 0.5
    x = gen(rng, "float32", shape)
    # the condition as a constant or a small graph input (then compiled per value of it)
    check(*node_model("Compress", [("x", x), ("cond", cond)], {"axis": ax}, opset=11,
                      const=pick_consts(data, ["cond"])))


@examples(8)
@given(data=st.data())
def test_nonzero_of_known_values(data):
    rng = rng_from(data)
    shape = list(data.draw(shapes(1, 3, max_size=64), label="shape"))
    x = (rng.random(shape) < 0.4).astype(np.float32) * rng.standard_normal(shape).astype(np.float32)
    check(*node_model("NonZero", [("x", x)], opset=13, const=pick_consts(data, ["x"])))


def test_nonzero_of_computed_data_is_a_stage_boundary():
    """The importer alone refuses it, naming the node; a session runs it in stages
    (tests/ops/test_staged.py)."""
    import ember
    from onnx import TensorProto, helper

    from ember.frontends.onnx.loader import load_onnx
    vi = lambda n, s: helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("NonZero", ["r"], ["nz"])]
    g = helper.make_graph(nodes, "g", [vi("x", [1000])], [helper.make_tensor_value_info("nz", TensorProto.INT64, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(ember.errors.DataDependentError, match="NonZero.*stages"):
        load_onnx(m.SerializeToString())
    x = np.linspace(-1, 1, 1000).astype(np.float32)
    (nz,) = ember.InferenceSession(m.SerializeToString()).run(None, {"x": x})
    np.testing.assert_array_equal(nz, np.array(np.nonzero(np.maximum(x, 0))))


def test_value_range_proves_indices_from_tables():
    """value_range: what an index op may skip its bounds check for. Node ids gathered from a
    constant table and selected between stay inside the table's values; a graph input, or a
    table holding an id past the data, proves nothing (the check stays)."""
    from ember.ir.builder import Builder
    from ember.ir.graph import TensorType, const_value
    from ember.ir.ops import _inside, value_range
    b = Builder(fold=False)
    x = b.input("x", TensorType("int64", (4, 3)))
    kids = const_value(np.array([1, 2, 2, 0, 3], dtype=np.int64))
    node = b.op("expand", [const_value(np.array([0, 1, 4], dtype=np.int64))], shape=(4, 3))
    for _ in range(3):
        cond = b.op("lt", [node, b.scalar(2, "int64")])
        node = b.op("where", [cond, b.op("gather", [kids, node], axis=0), node])
    assert value_range(node) == (0, 4)
    assert _inside(node, 5) and not _inside(node, 4) and not _inside(node, "n")
    assert value_range(x) is None
    assert value_range(b.op("where", [cond, node, x])) is None
    assert value_range(b.op("add", [node, b.scalar(1, "int64")])) is None
