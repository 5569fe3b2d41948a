"""`ember.backend` (the onnx.backend interface), models whose shape arguments are graph inputs
(one compiled variant per value), and the opsets outside 7-23 (upgraded, or checked)."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import ember
import ember.backend as backend
from ember.errors import InvalidInputError, UnsupportedOpError


def _model(nodes, inputs, outputs, opset=18, inits=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _vi(name, dt, shape):
    return helper.make_tensor_value_info(name, dt, shape)


def test_prepare_runs_with_list_dict_and_single_array():
    m = _model([helper.make_node("Add", ["a", "b"], ["y"])],
               [_vi("a", TensorProto.FLOAT, [2, 3]), _vi("b", TensorProto.FLOAT, [3])],
               [_vi("y", TensorProto.FLOAT, [2, 3])])
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 3), np.float32), rng.standard_normal(3, np.float32)
    rep = backend.prepare(m)
    np.testing.assert_allclose(rep.run([a, b])[0], a + b)
    np.testing.assert_allclose(rep.run({"a": a, "b": b}).y, a + b)
    with pytest.raises(InvalidInputError, match="takes 2 input"):
        rep.run([a])
    with pytest.raises(InvalidInputError, match="pass a list or a dict"):
        rep.run(a)
    np.testing.assert_allclose(backend.run_model(m, [a, b])[0], a + b)
    assert backend.supports_device("CPU") and not backend.supports_device("CUDA")


def test_run_node():
    x = np.random.default_rng(1).standard_normal((3, 5)).astype(np.float32)
    (y,) = backend.run_node(helper.make_node("Softmax", ["x"], ["y"], axis=1), [x])
    e = np.exp(x - x.max(1, keepdims=True))
    np.testing.assert_allclose(y, e / e.sum(1, keepdims=True), rtol=1e-5)


def _reshape_model():
    return _model([helper.make_node("Reshape", ["x", "shape"], ["r"]),
                   helper.make_node("Relu", ["r"], ["y"])],
                  [_vi("x", TensorProto.FLOAT, ["n", 6]), _vi("shape", TensorProto.INT64, [2])],
                  [_vi("y", TensorProto.FLOAT, None)])


def test_shape_argument_from_a_graph_input_compiles_one_variant_per_value():
    sess = ember.InferenceSession(_reshape_model().SerializeToString())
    assert [i.name for i in sess.get_inputs()] == ["x", "shape"]
    x = np.random.default_rng(2).standard_normal((4, 6)).astype(np.float32)
    for shape in ([3, 8], [-1, 2], [3, 8], [24, 1]):
        (y,) = sess.run(None, {"x": x, "shape": np.array(shape, np.int64)})
        np.testing.assert_array_equal(y, np.maximum(x.reshape(shape), 0))
    assert sess.compile_stats["value_variants"] == 3
    with pytest.raises(InvalidInputError, match="'shape'"):
        sess.run(None, {"x": x, "shape": np.array([5, 5], np.int64)})
    with pytest.raises(InvalidInputError, match="dtype"):
        sess.run(None, {"x": x, "shape": np.array([3, 8], np.int32)})


def test_several_shape_inputs_are_found_one_after_another():
    m = _model([helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["y"])],
               [_vi("x", TensorProto.FLOAT, [5, 7]), _vi("starts", TensorProto.INT64, [1]),
                _vi("ends", TensorProto.INT64, [1]), _vi("axes", TensorProto.INT64, [1])],
               [_vi("y", TensorProto.FLOAT, None)])
    sess = ember.InferenceSession(m.SerializeToString())
    x = np.arange(35, dtype=np.float32).reshape(5, 7)
    for s, e, ax in ((1, 4, 1), (-3, 100, 0), (0, 2, 1)):
        feed = {"x": x, "starts": np.array([s]), "ends": np.array([e]), "axes": np.array([ax])}
        (y,) = sess.run(None, feed)
        want = x[s:e] if ax == 0 else x[:, s:e]
        np.testing.assert_array_equal(y, want)


def test_a_run_time_value_from_computed_data_stays_an_error():
    # the Reshape target comes from x's own (small, static) values: specialised on them
    m = _model([helper.make_node("Cast", ["x"], ["s"], to=TensorProto.INT64),
                helper.make_node("Reshape", ["x", "s"], ["y"])],
               [_vi("x", TensorProto.FLOAT, [2])], [_vi("y", TensorProto.FLOAT, None)])
    sess = ember.InferenceSession(m.SerializeToString())
    (y,) = sess.run(None, {"x": np.array([2.0, 1.0], np.float32)})   # x is small: specialised on
    assert y.shape == (2, 1)
    # a Range limit from a tensor of symbolic size: not a small graph input, so refused
    big = _model([helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
                  helper.make_node("Cast", ["m"], ["c"], to=TensorProto.INT64),
                  helper.make_node("Range", ["z", "c", "one"], ["y"])],
                 [_vi("x", TensorProto.FLOAT, ["n"])], [_vi("y", TensorProto.INT64, None)],
                 inits=[helper.make_tensor("z", TensorProto.INT64, [], [0]),
                        helper.make_tensor("one", TensorProto.INT64, [], [1])])
    with pytest.raises(UnsupportedOpError, match="computed at run time"):
        ember.InferenceSession(big.SerializeToString())


def test_dropout_training_mode_input_true_is_refused_false_runs():
    m = _model([helper.make_node("Dropout", ["x", "r", "t"], ["y"])],
               [_vi("x", TensorProto.FLOAT, [4]), _vi("r", TensorProto.FLOAT, []),
                _vi("t", TensorProto.BOOL, [])], [_vi("y", TensorProto.FLOAT, [4])])
    sess = ember.InferenceSession(m.SerializeToString())
    x = np.arange(4, dtype=np.float32)
    (y,) = sess.run(None, {"x": x, "r": np.array(0.5, np.float32), "t": np.array(False)})
    np.testing.assert_array_equal(y, x)
    with pytest.raises(UnsupportedOpError, match="training mode"):
        sess.run(None, {"x": x, "r": np.array(0.5, np.float32), "t": np.array(True)})


def test_opset_6_model_is_upgraded_on_load():
    # opset 6 Add broadcasts only with broadcast=1; the version converter rewrites it
    m = _model([helper.make_node("Add", ["a", "b"], ["y"], broadcast=1)],
               [_vi("a", TensorProto.FLOAT, [2, 3, 4]), _vi("b", TensorProto.FLOAT, [4])],
               [_vi("y", TensorProto.FLOAT, [2, 3, 4])], opset=6)
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((2, 3, 4), np.float32), rng.standard_normal(4, np.float32)
    (y,) = ember.InferenceSession(m.SerializeToString()).run(None, {"a": a, "b": b})
    np.testing.assert_allclose(y, a + b, rtol=1e-6)
    # broadcasting along a middle `axis` is a form the converter has no adapter for
    m2 = _model([helper.make_node("Add", ["a", "c"], ["y"], broadcast=1, axis=1)],
                [_vi("a", TensorProto.FLOAT, [2, 3, 4]), _vi("c", TensorProto.FLOAT, [3])],
                [_vi("y", TensorProto.FLOAT, [2, 3, 4])], opset=6)
    with pytest.raises(ember.ModelLoadError, match="opset 6.*version_converter"):
        ember.InferenceSession(m2.SerializeToString())


def test_newer_opset_loads_and_a_newer_attribute_is_refused():
    x = np.random.default_rng(4).standard_normal((2, 3)).astype(np.float32)
    m = _model([helper.make_node("Transpose", ["x"], ["y"], perm=[1, 0])],
               [_vi("x", TensorProto.FLOAT, [2, 3])], [_vi("y", TensorProto.FLOAT, [3, 2])], opset=28)
    (y,) = ember.InferenceSession(m.SerializeToString()).run(None, {"x": x})
    np.testing.assert_array_equal(y, x.T)
    c = _model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT16, round_mode="down")],
               [_vi("x", TensorProto.FLOAT, [2, 3])], [_vi("y", TensorProto.FLOAT16, [2, 3])], opset=28)
    with pytest.raises(UnsupportedOpError, match="round_mode"):
        ember.InferenceSession(c.SerializeToString())
    with pytest.raises(ember.ModelLoadError, match="opset 29"):
        ember.InferenceSession(_model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", 1, [2])],
                                      [_vi("y", 1, [2])], opset=29).SerializeToString())


def _if_model(cond_from_data):
    then_g = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["t"])], "then", [],
                               [_vi("t", TensorProto.FLOAT, None)],
                               initializer=[helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [_vi("e", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)]
    inputs = [_vi("x", TensorProto.FLOAT, ["n"])]
    if cond_from_data:     # c = sum(x) > 0: data, not a graph input
        nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
                 helper.make_node("Greater", ["s", "zero"], ["c"])] + nodes
        inits = [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])]
    else:
        inputs.append(_vi("c", TensorProto.BOOL, []))
        inits = []
    return _model(nodes, inputs, [_vi("y", TensorProto.FLOAT, None)], inits=inits)


@pytest.mark.parametrize("cond_from_data", [False, True])
def test_if_branches_read_the_outer_scope(cond_from_data):
    sess = ember.InferenceSession(_if_model(cond_from_data).SerializeToString())
    for x in (np.array([1.0, 2.0, -0.5], np.float32), np.array([-3.0, 1.0], np.float32)):
        feed = {"x": x}
        if not cond_from_data:
            for c in (True, False):
                feed["c"] = np.array(c)
                (y,) = sess.run(None, feed)
                np.testing.assert_array_equal(y, x * 2 if c else -x)
        else:
            (y,) = sess.run(None, feed)
            np.testing.assert_array_equal(y, x * 2 if x.sum() > 0 else -x)
