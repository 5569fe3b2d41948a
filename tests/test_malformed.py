"""Malformed models raise an EmberError subclass naming the node, never a bare Python error,
and are never accepted with a silent misreading (a Conv whose channels disagree)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import ember
from ember.errors import EmberError, ModelLoadError, ShapeError

X = h.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])


def _model(nodes, ins=(X,), inits=()):
    g = h.make_graph(nodes, "g", list(ins), [h.make_tensor_value_info("y", T.FLOAT, None)], list(inits))
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)]).SerializeToString()


CASES = [
    ("add_three_inputs", _model([h.make_node("Add", ["x", "x", "x"], ["y"], name="add3")]), ModelLoadError,
     r"'add3' \(Add\) has 3 inputs, expected 2"),
    ("conv_without_weights", _model([h.make_node("Conv", ["x"], ["y"], name="c")]), ModelLoadError,
     r"'c' \(Conv\) has 1 input, expected 2 to 3"),
    ("relu_without_input", _model([h.make_node("Relu", [], ["y"], name="r")]), ModelLoadError, "'r' \\(Relu\\) has 0 inputs"),
    ("transpose_repeated_axis", _model([h.make_node("Transpose", ["x"], ["y"], perm=[0, 0, 1, 2], name="t")]),
     ShapeError, r"'t'.*expected a permutation"),
    ("reduce_axis_named_twice",
     _model([h.make_node("ReduceSum", ["x", "ax"], ["y"], name="rs")],
            inits=[nh.from_array(np.array([-4, 0], np.int64), "ax")]),
     ShapeError, r"'rs'.*name axis 0 twice"),
    ("unsqueeze_axis_named_twice",
     _model([h.make_node("Unsqueeze", ["x", "ax"], ["y"], name="u")],
            inits=[nh.from_array(np.array([1, -5], np.int64), "ax")]),
     ShapeError, r"'u'.*name axis 1 twice"),
    ("conv_channels_disagree",
     _model([h.make_node("Conv", ["x", "w"], ["y"], name="c")], inits=[nh.from_array(np.ones((4, 5, 3, 3), np.float32), "w")]),
     ShapeError, r"'c'.*5 channels per group.*expected the 3 input channels"),
    ("conv_group_does_not_divide",
     _model([h.make_node("Conv", ["x", "w"], ["y"], group=3, name="c")],
            inits=[nh.from_array(np.ones((4, 1, 3, 3), np.float32), "w")]),
     ShapeError, r"'c'.*group = 3 does not divide"),
    ("reduce_keepdims_not_a_flag", _model([h.make_node("ReduceSum", ["x"], ["y"], keepdims=-2, name="r")]),
     ShapeError, r"'r'.*keepdims = -2, expected 0 or 1"),
    ("softmax_axis_out_of_range", _model([h.make_node("Softmax", ["x"], ["y"], axis=7, name="s")]), ShapeError,
     r"'s'.*axis 7"),
]


@pytest.mark.parametrize("name,model,err,match", CASES, ids=[c[0] for c in CASES])
def test_malformed_model_names_the_node(name, model, err, match):
    with pytest.raises(err, match=match):
        ember.InferenceSession(model)


HUGE = {
    "declared_input": _model([h.make_node("Relu", ["x"], ["y"], name="r")],
                             ins=[h.make_tensor_value_info("x", T.FLOAT, [2 ** 40, 2 ** 40])]),
    "constant_of_shape": _model([h.make_node("ConstantOfShape", ["s"], ["y"], name="k")], ins=[],
                                inits=[nh.from_array(np.array([2 ** 40, 2 ** 40], np.int64), "s")]),
    "expand": _model([h.make_node("Expand", ["x", "s"], ["y"], name="e")],
                     inits=[nh.from_array(np.array([2 ** 31, 3, 8, 8], np.int64), "s")]),
}


@pytest.mark.parametrize("case", sorted(HUGE))
def test_huge_declared_sizes_in_child(case, tmp_path):
    """Sizes beyond any memory: a ShapeError at load, in a child process (a MemoryError or
    a crash there fails the test, not the test run)."""
    path = tmp_path / "m.onnx"
    path.write_bytes(HUGE[case])
    code = ("import ember, sys\ntry:\n    ember.InferenceSession(sys.argv[1])\n    print('accepted')\n"
            "except ember.EmberError as e:\n    print(type(e).__name__, e)\n")
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("ShapeError") and "2**40" in r.stdout, r.stdout


# random mutations of small valid models: each load either succeeds or raises an EmberError
_SEEDS = {
    "matmul_add": lambda: _model([h.make_node("MatMul", ["a", "w"], ["t"]), h.make_node("Add", ["t", "b"], ["y"])],
                                 ins=[h.make_tensor_value_info("a", T.FLOAT, ["n", 6])],
                                 inits=[nh.from_array(np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32), "w"),
                                        nh.from_array(np.random.default_rng(1).standard_normal(4).astype(np.float32), "b")]),
    "conv": lambda: _model([h.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2])],
                           inits=[nh.from_array(np.random.default_rng(2).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")]),
    "transpose_reshape": lambda: _model([h.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
                                         h.make_node("Reshape", ["t", "s"], ["y"])],
                                        inits=[nh.from_array(np.array([1, -1, 3], np.int64), "s")]),
    "gather_softmax": lambda: _model([h.make_node("Gather", ["x", "i"], ["t"], axis=2),
                                      h.make_node("Softmax", ["t"], ["y"], axis=-1)],
                                     inits=[nh.from_array(np.array([0, 3, -1], np.int64), "i")]),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_models_raise_only_ember_errors(data):
    m = onnx.load_model_from_string(_SEEDS[data.draw(st.sampled_from(sorted(_SEEDS)))]())
    node = m.graph.node[data.draw(st.integers(0, len(m.graph.node) - 1))]
    what = data.draw(st.sampled_from(["drop_input", "extra_input", "attr_int", "attr_ints", "init_shape",
                                      "dup_node", "del_node"]))
    if what == "drop_input" and node.input:
        del node.input[data.draw(st.integers(0, len(node.input) - 1))]
    elif what == "extra_input":
        node.input.append(data.draw(st.sampled_from(list(node.input) + ["", "nowhere"])))
    elif what in ("attr_int", "attr_ints") and node.attribute:
        a = node.attribute[data.draw(st.integers(0, len(node.attribute) - 1))]
        if a.type == onnx.AttributeProto.INT:
            a.i = data.draw(st.integers(-(2 ** 40), 2 ** 40))
        elif a.type == onnx.AttributeProto.INTS:
            del a.ints[:]
            a.ints.extend(data.draw(st.lists(st.integers(-5, 2 ** 33), max_size=6)))
    elif what == "init_shape" and m.graph.initializer:
        init = m.graph.initializer[data.draw(st.integers(0, len(m.graph.initializer) - 1))]
        arr = nh.to_array(init).reshape(-1)
        new = data.draw(st.lists(st.integers(0, 7), min_size=0, max_size=4))
        n = int(np.prod(new)) if new else 1
        init.CopyFrom(nh.from_array(np.resize(arr, n).reshape(new).astype(arr.dtype), init.name))
    elif what == "dup_node":
        m.graph.node.append(node)
    elif what == "del_node" and len(m.graph.node) > 1:
        m.graph.node.remove(node)
    try:
        ember.InferenceSession(m.SerializeToString())
    except EmberError:
        pass
