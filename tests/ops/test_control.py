"""Control flow compiled, never interpreted: Scan (unrolled, one body copy per step), each
case checked against onnx.reference on random shapes, axes and directions."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper

import ember

from .harness import build_model, check
from .strategies import Domain, examples, gen, rng_from


def _scan_body(feat):
    """state' = state + x * y * w (w from the outer scope); out = tanh(state') and x - y."""
    vi = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, [feat])
    nodes = [helper.make_node("Mul", ["x", "y"], ["xy"]),
             helper.make_node("Mul", ["xy", "w"], ["xyw"]),
             helper.make_node("Add", ["s", "xyw"], ["s2"]),
             helper.make_node("Tanh", ["s2"], ["o1"]),
             helper.make_node("Sub", ["x", "y"], ["o2"])]
    return helper.make_graph(nodes, "body", [vi("s"), vi("x"), vi("y")], [vi("s2"), vi("o1"), vi("o2")])


@examples(15)
@given(data=st.data())
def test_scan(data):
    rng = rng_from(data)
    steps = data.draw(st.integers(1, 7), label="steps")
    feat = data.draw(st.integers(1, 19), label="feat")
    in_axes = data.draw(st.lists(st.sampled_from([0, 1, -1]), min_size=2, max_size=2), label="in_axes")
    in_dirs = data.draw(st.lists(st.integers(0, 1), min_size=2, max_size=2), label="in_dirs")
    out_axes = data.draw(st.lists(st.sampled_from([0, 1, -2]), min_size=2, max_size=2), label="out_axes")
    out_dirs = data.draw(st.lists(st.integers(0, 1), min_size=2, max_size=2), label="out_dirs")
    shape_of = lambda a: [steps, feat] if a == 0 else [feat, steps]
    s0 = gen(rng, "float32", [feat], Domain(low=-1.0, high=1.0))
    x = gen(rng, "float32", shape_of(in_axes[0]), Domain(low=-2.0, high=2.0))
    y = gen(rng, "float32", shape_of(in_axes[1]), Domain(low=-2.0, high=2.0))
    w = gen(rng, "float32", [feat], Domain(low=-1.0, high=1.0))
    node = helper.make_node("Scan", ["s0", "x", "y"], ["s", "o1", "o2"], body=_scan_body(feat), num_scan_inputs=2,
                            scan_input_axes=in_axes, scan_input_directions=in_dirs,
                            scan_output_axes=out_axes, scan_output_directions=out_dirs)
    model = build_model([node], [("s0", s0), ("x", x), ("y", y)], ["s", "o1", "o2"], [("w", w)], opset=16)
    feeds = {"s0": s0, "x": x, "y": y}
    if in_axes == [0, 0] and not any(out_axes) and not any(out_dirs):
        check(model, feeds, kind="transcendental", scale=float(steps))
        return
    # onnx.reference implements only axis 0 and forward outputs: the spec's loop in numpy
    xs = [np.moveaxis(a, ax, 0)[::-1 if d else 1] for a, ax, d in zip((x, y), in_axes, in_dirs)]
    s, o1, o2 = s0.astype(np.float64), [], []
    for xt, yt in zip(*xs):
        s = s + xt * yt * w
        o1.append(np.tanh(s))
        o2.append(xt - yt)
    want = [s] + [np.moveaxis(np.stack(o[::-1 if d else 1]), 0, ax) for o, ax, d in zip((o1, o2), out_axes, out_dirs)]
    got = ember.InferenceSession(model.SerializeToString()).run(None, feeds)
    for g, e in zip(got, want):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5 * steps)


def test_scan8_batched():
    rng = np.random.default_rng(3)
    body = _scan_body(5)
    body.node.pop(1)   # no outer w in Scan-8's test: s2 = s + x*y
    body.node[1].input[1] = "xy"
    s0 = rng.standard_normal((2, 5)).astype(np.float32)
    x, y = (rng.standard_normal((2, 4, 5)).astype(np.float32) for _ in range(2))
    node = helper.make_node("Scan", ["", "s0", "x", "y"], ["s", "o1", "o2"], body=body, num_scan_inputs=2,
                            directions=[1, 0])
    model = build_model([node], [("s0", s0), ("x", x), ("y", y)], ["s", "o1", "o2"], opset=8)
    got = ember.InferenceSession(model.SerializeToString()).run(None, {"s0": s0, "x": x, "y": y})
    for b in range(2):    # onnx.reference has no Scan-8: the spec's loop per batch row
        s, o1, o2 = s0[b].astype(np.float64), [], []
        for xt, yt in zip(x[b, ::-1], y[b]):
            s = s + xt * yt
            o1.append(np.tanh(s))
            o2.append(xt - yt)
        for g, e in zip(got, [s, np.stack(o1), np.stack(o2)]):
            np.testing.assert_allclose(g[b], e, rtol=1e-5, atol=1e-5)


def test_scan_of_symbolic_length_compiles_per_length():
    """Unrolled, a scan needs its length when compiling: a symbolic one gets a build per
    length it meets (the session's dim variants), each checked against onnx.reference."""
    from onnx.reference import ReferenceEvaluator
    body = _scan_body(3)
    node = helper.make_node("Scan", ["s0", "x", "y"], ["s", "o1", "o2"], body=body, num_scan_inputs=2)
    vi = lambda n, s: helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
    g = helper.make_graph([node], "g", [vi("s0", [3]), vi("x", ["t", 3]), vi("y", ["t", 3])],
                          [vi("s", [3]), vi("o1", None), vi("o2", None)],
                          initializer=[helper.make_tensor("w", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 16)])
    sess, ref = ember.InferenceSession(m.SerializeToString()), ReferenceEvaluator(m)
    rng = np.random.default_rng(0)
    for t in (1, 4, 1):
        feeds = {"s0": rng.standard_normal(3).astype(np.float32), "x": rng.standard_normal((t, 3)).astype(np.float32),
                 "y": rng.standard_normal((t, 3)).astype(np.float32)}
        for a, e in zip(sess.run(None, feeds), ref.run(None, feeds)):
            np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)
    assert sess.compile_stats["value_variants"] == 2


# ------------------------------------------------------------------ Loop, sequences, optionals
def _run_both(model, feeds):
    from onnx.reference import ReferenceEvaluator
    want = ReferenceEvaluator(model).run(None, feeds)
    got = ember.InferenceSession(model.SerializeToString()).run(None, feeds)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if isinstance(w, list):
            assert isinstance(g, list) and len(g) == len(w)
            for a, e in zip(g, w):
                np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)
        elif w is None:
            assert g is None
        else:
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def _vi(n, t, s):
    return helper.make_tensor_value_info(n, t, s)


@examples(12)
@given(data=st.data())
def test_sequence_ops(data):
    rng = rng_from(data)
    n = data.draw(st.integers(1, 6), label="n")
    feat = data.draw(st.integers(1, 9), label="feat")
    x = gen(rng, "float32", [n, feat], Domain(low=-3.0, high=3.0))
    y = gen(rng, "float32", [1, feat], Domain(low=-3.0, high=3.0))
    # (onnx.reference inserts at position n, the end by the spec, at the front: it is left out)
    ins_pos = data.draw(st.integers(-n, n - 1), label="insert_at")
    erase_pos = data.draw(st.integers(-n, n), label="erase_at")
    at_pos = data.draw(st.integers(-n, n - 1), label="at")
    c = lambda name, v: helper.make_node("Constant", [], [name], value=helper.make_tensor(name, TensorProto.INT64, [],
                                                                                            [v]))
    nodes = [helper.make_node("SplitToSequence", ["x"], ["s"], axis=0),
             c("pi", ins_pos), c("pe", erase_pos), c("pa", at_pos),
             helper.make_node("SequenceInsert", ["s", "y", "pi"], ["s2"]),
             helper.make_node("SequenceErase", ["s2", "pe"], ["s3"]),
             helper.make_node("SequenceAt", ["s3", "pa"], ["item"]),
             helper.make_node("SequenceLength", ["s3"], ["len"]),
             helper.make_node("ConcatFromSequence", ["s3"], ["cat"], axis=0),
             helper.make_node("ConcatFromSequence", ["s3"], ["stk"], axis=-1, new_axis=1)]
    g = helper.make_graph(nodes, "g", [_vi("x", TensorProto.FLOAT, ["n", feat]), _vi("y", TensorProto.FLOAT, [1, feat])],
                          [_vi(o, TensorProto.FLOAT, None) for o in ("item", "cat", "stk")]
                          + [_vi("len", TensorProto.INT64, None)])
    g.input[0].type.tensor_type.shape.dim[0].dim_value = n
    _run_both(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), {"x": x, "y": y})


def test_sequence_inputs_and_outputs_cross_the_session_boundary():
    """A sequence input is a list of arrays (any length, items of different shapes), a
    sequence output a list; an optional input may be None."""
    body = helper.make_graph([helper.make_node("Mul", ["e", "e"], ["sq"])], "body",
                             [_vi("e", TensorProto.FLOAT, None)], [_vi("sq", TensorProto.FLOAT, None)])
    seq_t = helper.make_sequence_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, None))
    opt_t = helper.make_optional_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, [2]))
    nodes = [helper.make_node("SequenceMap", ["xs"], ["ys"], body=body),
             helper.make_node("OptionalHasElement", ["o"], ["has"])]
    g = helper.make_graph(nodes, "g", [helper.make_value_info("xs", seq_t), helper.make_value_info("o", opt_t)],
                          [helper.make_value_info("ys", seq_t), _vi("has", TensorProto.BOOL, [])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    rng = np.random.default_rng(1)
    sess = ember.InferenceSession(m.SerializeToString())
    for xs, o in (([rng.standard_normal(3).astype(np.float32), rng.standard_normal((2, 2)).astype(np.float32)], None),
                  ([rng.standard_normal(5).astype(np.float32)], np.ones(2, np.float32)), ([], None)):
        ys, has = sess.run(None, {"xs": xs, "o": o})
        assert len(ys) == len(xs) and bool(has) == (o is not None)
        for a, b in zip(ys, xs):
            np.testing.assert_array_equal(a, b * b)


@pytest.mark.parametrize("cond_from_data", [False, True])
@examples(8)
@given(data=st.data())
def test_loop(cond_from_data, data):
    """Loop unrolled: a known trip count with scan outputs, or a condition computed from data
    (the carried value then stops changing once it is false)."""
    rng = rng_from(data)
    trips = data.draw(st.integers(0 if not cond_from_data else 1, 6), label="trips")
    feat = data.draw(st.integers(1, 9), label="feat")
    x = gen(rng, "float32", [feat], Domain(low=-1.0, high=1.0))
    w = gen(rng, "float32", [feat], Domain(low=0.5, high=1.5))
    bnodes = [helper.make_node("Cast", ["i"], ["fi"], to=TensorProto.FLOAT),
              helper.make_node("Mul", ["s", "w"], ["sw"]),
              helper.make_node("Add", ["sw", "fi"], ["s2"])]
    outs = [_vi("c2", TensorProto.BOOL, []), _vi("s2", TensorProto.FLOAT, [feat])]
    if cond_from_data:   # continue while sum(s) < limit
        bnodes += [helper.make_node("ReduceSum", ["s2"], ["tot"], keepdims=0),
                   helper.make_node("Less", ["tot", "limit"], ["c2"])]
    else:
        bnodes += [helper.make_node("Identity", ["c"], ["c2"]), helper.make_node("Neg", ["s2"], ["ns"])]
        outs.append(_vi("ns", TensorProto.FLOAT, [feat]))
    body = helper.make_graph(bnodes, "body", [_vi("i", TensorProto.INT64, []), _vi("c", TensorProto.BOOL, []),
                                              _vi("s", TensorProto.FLOAT, [feat])], outs)
    loop_outs = ["final"] + ([] if cond_from_data else ["scan"])
    inits = [helper.make_tensor("M", TensorProto.INT64, [], [trips]), helper.make_tensor("T", TensorProto.BOOL, [], [1]),
             helper.make_tensor("w", TensorProto.FLOAT, [feat], w),
             helper.make_tensor("limit", TensorProto.FLOAT, [], [float(rng.uniform(0, 3 * feat))])]
    g = helper.make_graph([helper.make_node("Loop", ["M", "T", "x"], loop_outs, body=body)], "g",
                          [_vi("x", TensorProto.FLOAT, [feat])], [_vi(o, TensorProto.FLOAT, None) for o in loop_outs],
                          initializer=inits)
    if trips == 0 and not cond_from_data:
        return    # (no iteration: empty scan outputs of a shape the body alone knows)
    _run_both(helper.make_model(g, opset_imports=[helper.make_opsetid("", 16)]), {"x": x})


# ------------------------------------------------ values computed from input dims while compiling
def _dims_model(nodes, inputs, outputs, inits=(), opset=17):
    from onnx import numpy_helper
    g = helper.make_graph(nodes, "g", inputs, outputs,
                          initializer=[numpy_helper.from_array(np.asarray(v), n) for n, v in inits])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def test_if_on_a_shape_with_branches_of_different_rank():
    """silero-vad's If(Shape(x)[1] == 1): the condition depends on dims alone, so each value
    of those dims gets its build, and the branches may differ in rank."""
    f = TensorProto.FLOAT
    then_g = helper.make_graph([helper.make_node("Squeeze", ["x", "one"], ["y"])], "then", [],
                               [_vi("y", f, None)])
    else_g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "else", [], [_vi("y", f, None)])
    nodes = [helper.make_node("Shape", ["x"], ["s"], start=1, end=2),
             helper.make_node("Equal", ["s", "one"], ["c"]),
             helper.make_node("If", ["c"], ["out"], then_branch=then_g, else_branch=else_g)]
    m = _dims_model(nodes, [_vi("x", f, ["n", "k"])], [_vi("out", f, None)], [("one", np.array([1], np.int64))])
    rng = np.random.default_rng(0)
    for shape in ((3, 1), (3, 4), (1, 1)):
        _run_both(m, {"x": rng.standard_normal(shape).astype(np.float32)})


def test_range_and_loop_sized_by_input_dims():
    """YOLOv8's Range(0, Cast(Shape(x)[3]), 1) and a Loop whose trip count is a dim (tf2onnx's
    while_loop): built per value of those dims."""
    f, i64 = TensorProto.FLOAT, TensorProto.INT64
    body = helper.make_graph([helper.make_node("Add", ["acc", "xs"], ["acc2"]),
                              helper.make_node("Identity", ["cond"], ["cond2"])], "body",
                             [_vi("i", i64, []), _vi("cond", TensorProto.BOOL, []), _vi("acc", f, ["k"])],
                             [_vi("cond2", TensorProto.BOOL, []), _vi("acc2", f, ["k"])])
    body.node[0].input[1] = "xrow"
    body.node.insert(0, helper.make_node("Gather", ["x", "i"], ["xrow"], axis=0))
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "one"], ["k"], axis=0),
             helper.make_node("Cast", ["k"], ["kf"], to=f),
             helper.make_node("Range", ["zero", "kf", "step"], ["r"]),
             helper.make_node("Gather", ["s", "zero_i"], ["n"], axis=0),
             helper.make_node("Loop", ["n", "", "init"], ["acc"], body=body),
             helper.make_node("Add", ["acc", "r"], ["out"])]
    m = _dims_model(nodes, [_vi("x", f, ["n", "k"])], [_vi("out", f, None)],
                    [("one", np.array(1, np.int64)), ("zero_i", np.array(0, np.int64)),
                     ("zero", np.array(0.0, np.float32)), ("step", np.array(1.0, np.float32)),
                     ("init", np.zeros(1, np.float32))])
    # (against onnxruntime: onnx.reference's Loop leaves the accumulator at its initial value here)
    ort = pytest.importorskip("onnxruntime")
    ref = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    sess = ember.InferenceSession(m.SerializeToString())
    rng = np.random.default_rng(1)
    for shape in ((2, 5), (4, 5), (1, 3)):
        feeds = {"x": rng.standard_normal(shape).astype(np.float32)}
        np.testing.assert_allclose(sess.run(None, feeds)[0], ref.run(None, feeds)[0], rtol=1e-5, atol=1e-6)


def test_unnamed_dims_are_each_their_own():
    """Paddle writes "?" (and a size of -1) for every unknown dim: each is a dim of its own,
    so a non-square image is not refused for "? = 48 but ? = 192"."""
    f = TensorProto.FLOAT
    x = _vi("x", f, ["?", 3, "?", "?"])
    x.type.tensor_type.shape.dim[0].Clear()
    x.type.tensor_type.shape.dim[0].dim_value = -1
    m = _dims_model([helper.make_node("ReduceMean", ["x"], ["out"], axes=[2], keepdims=0)], [x],
                    [_vi("out", f, None)], opset=13)
    sess = ember.InferenceSession(m.SerializeToString())
    assert len({d for d in sess.get_inputs()[0].shape if isinstance(d, str)}) == 3
    _run_both(m, {"x": np.random.default_rng(2).standard_normal((2, 3, 48, 192)).astype(np.float32)})


def test_if_condition_of_shape_1x1_from_data():
    """openwakeword's If on a [1, 1] condition computed from data: one element, so accepted."""
    f = TensorProto.FLOAT
    then_g = helper.make_graph([helper.make_node("Neg", ["x"], ["y"])], "then", [], [_vi("y", f, ["n"])])
    else_g = helper.make_graph([helper.make_node("Abs", ["x"], ["y"])], "else", [], [_vi("y", f, ["n"])])
    nodes = [helper.make_node("ReduceSum", ["x", "ax"], ["t"], keepdims=1),
             helper.make_node("Reshape", ["t", "shape11"], ["t11"]),
             helper.make_node("Greater", ["t11", "zero"], ["c"]),
             helper.make_node("If", ["c"], ["out"], then_branch=then_g, else_branch=else_g)]
    m = _dims_model(nodes, [_vi("x", f, ["n"])], [_vi("out", f, None)],
                    [("ax", np.array([0], np.int64)), ("shape11", np.array([1, 1], np.int64)),
                     ("zero", np.array(0.0, np.float32))])
    for v in (np.array([1.0, -0.5, 2.0], np.float32), np.array([-1.0, 0.25], np.float32)):
        _run_both(m, {"x": v})
