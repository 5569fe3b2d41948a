"""Shapes computed from data (NonZero, Compress fed from data): the model runs in native stages
split at that node (runtime/staged.py), each checked against onnx.reference on random shapes,
symbolic ones included, and on results of every length, none included."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import ember

from .strategies import examples, rng_from, shapes

NP = {"float32": TensorProto.FLOAT, "int64": TensorProto.INT64, "bool": TensorProto.BOOL}


def _run_both(model, feeds):
    want = ReferenceEvaluator(model).run(None, feeds)
    sess = ember.InferenceSession(model.SerializeToString())
    got = sess.run(None, feeds)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape, (g.dtype, g.shape, w.dtype, w.shape)
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)
    return sess


@pytest.mark.parametrize("dtype", ["float32", "int64", "bool"])
@examples(10)
@given(data=st.data())
def test_nonzero_of_computed_data(dtype, data):
    rng = rng_from(data)
    shape = list(data.draw(shapes(1, 3, max_size=512), label="shape"))
    symbolic = data.draw(st.booleans(), label="symbolic")
    density = data.draw(st.sampled_from([0.0, 0.3, 1.0]), label="density")
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    keep = rng.random(shape) < density
    x = np.where(keep, np.where(x == 0, 1.0, x), 0.0).astype(np.float32)
    # the tensor NonZero reads is computed (x * x): only a staged run can know its count
    nodes = [helper.make_node("Mul", ["x", "x"], ["sq"]),
             helper.make_node("Cast", ["sq"], ["t"], to=NP[dtype]),
             helper.make_node("NonZero", ["t"], ["nz"]),
             helper.make_node("Transpose", ["nz"], ["nzt"]),
             helper.make_node("GatherND", ["x", "nzt"], ["picked"]),
             helper.make_node("ReduceSum", ["picked"], ["total"], keepdims=0),
             helper.make_node("Neg", ["sq"], ["carried"])]
    dims = [f"d{i}" for i in range(len(shape))] if symbolic else shape
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                          [helper.make_tensor_value_info(n, t, None) for n, t in
                           (("nz", TensorProto.INT64), ("picked", TensorProto.FLOAT), ("total", TensorProto.FLOAT),
                            ("carried", TensorProto.FLOAT))])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    sess = _run_both(m, {"x": x})
    if symbolic:     # the same session, a new shape: stage B is compiled once, for any count
        y = rng.standard_normal([d + 1 for d in shape]).astype(np.float32)
        (nz,) = sess.run(["nz"], {"x": y})
        np.testing.assert_array_equal(nz, np.array(np.nonzero((y * y).astype(dtype))))


@examples(10)
@given(data=st.data())
def test_compress_by_computed_condition(data):
    rng = rng_from(data)
    shape = list(data.draw(shapes(1, 3, max_size=256), label="shape"))
    r = len(shape)
    axis = data.draw(st.one_of(st.none(), st.integers(-r, r - 1)), label="axis")
    x = rng.standard_normal(shape).astype(np.float32)
    width = int(np.prod(shape)) if axis is None else shape[axis]
    c = rng.standard_normal([width]).astype(np.float32)
    attrs = {} if axis is None else {"axis": axis}
    nodes = [helper.make_node("Greater", ["c", "zero"], ["cond"]),
             helper.make_node("Compress", ["x", "cond"], ["y"], **attrs),
             helper.make_node("Mul", ["y", "two"], ["out"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape),
                                       helper.make_tensor_value_info("c", TensorProto.FLOAT, [width])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
                          initializer=[helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
                                       helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])])
    _run_both(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), {"x": x, "c": c})


def test_two_data_dependent_nodes_give_three_stages():
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("NonZero", ["r"], ["nz"]),
             helper.make_node("Cast", ["nz"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Sub", ["f", "one"], ["g"]), helper.make_node("NonZero", ["g"], ["nz2"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 5])],
                          [helper.make_tensor_value_info("nz2", TensorProto.INT64, None)],
                          initializer=[helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    for _ in range(3):
        _run_both(m, {"x": rng.standard_normal((4, 5)).astype(np.float32)})


@pytest.mark.parametrize("center", [0, 1])
@examples(15)
@given(data=st.data())
def test_non_max_suppression(center, data):
    rng = rng_from(data)
    nb, nc, n = (data.draw(st.integers(1, 3), label="batches"), data.draw(st.integers(1, 3), label="classes"),
                 data.draw(st.integers(1, 20), label="boxes"))
    boxes = rng.uniform(0, 1, (nb, n, 4)).astype(np.float32)
    # scores on a coarse grid: equal scores, where the lower box index goes first
    scores = np.round(rng.uniform(0, 1, (nb, nc, n)), 1).astype(np.float32)
    # (onnx.reference needs max_output_boxes_per_class and iou_threshold given)
    ins = ["b", "s", "m", "i", "t"][:data.draw(st.integers(4, 5), label="inputs")]
    feeds = {"b": boxes, "s": scores, "m": np.array([data.draw(st.integers(0, 6), label="max")], np.int64),
             "i": np.array([rng.uniform(0, 0.8)], np.float32), "t": np.array([rng.uniform(0, 0.6)], np.float32)}
    feeds = {k: v for k, v in feeds.items() if k in ins}
    computed = data.draw(st.booleans(), label="boxes_computed")   # from data, or straight from the inputs
    nodes = ([helper.make_node("Abs", ["b"], ["ab"])] if computed else []) + \
        [helper.make_node("NonMaxSuppression", ["ab" if computed else "b"] + ins[1:], ["sel"], center_point_box=center),
         helper.make_node("Cast", ["sel"], ["self"], to=TensorProto.FLOAT),
         helper.make_node("ReduceSum", ["self"], ["total"], keepdims=0)]
    t = {"b": TensorProto.FLOAT, "s": TensorProto.FLOAT, "m": TensorProto.INT64, "i": TensorProto.FLOAT,
         "t": TensorProto.FLOAT}
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(k, t[k], list(v.shape)) for k, v in feeds.items()],
                          [helper.make_tensor_value_info("sel", TensorProto.INT64, None),
                           helper.make_tensor_value_info("total", TensorProto.FLOAT, None)])
    _run_both(helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)]), feeds)


def test_non_max_suppression_without_a_box_limit_selects_none():
    """max_output_boxes_per_class absent means 0: an empty [0, 3] result, per the spec."""
    g = helper.make_graph([helper.make_node("NonMaxSuppression", ["b", "s"], ["sel"])], "g",
                          [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 3, 4]),
                           helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 1, 3])],
                          [helper.make_tensor_value_info("sel", TensorProto.INT64, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)])
    rng = np.random.default_rng(0)
    (sel,) = ember.InferenceSession(m.SerializeToString()).run(
        None, {"b": rng.random((1, 3, 4), np.float32), "s": rng.random((1, 1, 3), np.float32)})
    assert sel.shape == (0, 3) and sel.dtype == np.int64


@pytest.mark.parametrize("dtype", ["float32", "int64", "bool"])
@examples(12)
@given(data=st.data())
def test_unique(dtype, data):
    rng = rng_from(data)
    shape = list(data.draw(shapes(1, 3, max_size=256), label="shape"))
    r = len(shape)
    axis = data.draw(st.one_of(st.none(), st.integers(-r, r - 1)), label="axis")
    x = rng.integers(0, 3, shape).astype(dtype)      # few values: many repeats
    attrs = {"sorted": data.draw(st.sampled_from([None, 0, 1]), label="sorted")}
    if axis is not None:
        attrs["axis"] = axis
    computed = data.draw(st.booleans(), label="computed")
    nodes = ([helper.make_node("Identity", ["x"], ["xi"])] if computed else []) + \
        [helper.make_node("Unique", ["xi" if computed else "x"], ["y", "idx", "inv", "cnt"],
                          **{k: v for k, v in attrs.items() if v is not None})]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", NP[dtype], shape)],
                          [helper.make_tensor_value_info("y", NP[dtype], None)] +
                          [helper.make_tensor_value_info(o, TensorProto.INT64, None) for o in ("idx", "inv", "cnt")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)])
    if attrs["sorted"] != 0:
        _run_both(m, {"x": x})
        return
    # unsorted (by first occurrence): onnx.reference takes the rows along axis 0 of the
    # unflattened input then, so the spec's order is spelled out with numpy here
    flat = x.reshape(-1) if axis is None else x
    u, first, inv, cnt = np.unique(flat, return_index=True, return_inverse=True, return_counts=True, axis=axis)
    order = np.argsort(first, kind="stable")
    pos = np.empty_like(order)
    pos[order] = np.arange(len(order))
    want = [np.take(u, order, axis=0 if axis is None else axis), first[order], pos[inv.reshape(-1)], cnt[order]]
    got = ember.InferenceSession(m.SerializeToString()).run(None, {"x": x})
    for a, e in zip(got, want):
        assert a.dtype == e.dtype and a.shape == e.shape, (a.dtype, a.shape, e.dtype, e.shape)
        np.testing.assert_array_equal(a, e)
