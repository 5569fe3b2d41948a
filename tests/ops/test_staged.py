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
