"""Malformed models raise an EmberError naming the node, the input or attribute, and what was
expected: never a bare Python exception, never silent acceptance. Models whose tensors would be
huge are compiled in a child process, so an allocation failure or a crash fails the test
instead of taking pytest down."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from onnx import TensorProto as T, helper, numpy_helper

import ember
from ember.frontends.onnx import loader
from tests.util import make_model

F = T.FLOAT
ROOT = Path(__file__).resolve().parent.parent


def _weights(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _load(nodes, inputs, outputs=(("y", F, None),), inits=(), opset=18):
    return ember.InferenceSession(make_model(nodes, inputs, list(outputs), inits, opset=opset))


# ------------------------------------------------------------------------------- arity
def test_add_with_three_inputs():
    with pytest.raises(ember.ModelLoadError, match=r"'add3' \(Add\) has 3 inputs, expected 2 \(A, B\)"):
        _load([helper.make_node("Add", ["a", "b", "c"], ["y"], name="add3")],
              [("a", F, [3]), ("b", F, [3]), ("c", F, [3])])


def test_conv_without_weights():
    with pytest.raises(ember.ModelLoadError, match=r"'c1' \(Conv\) has 1 input, expected 2 to 3 \(X, W, B\)"):
        _load([helper.make_node("Conv", ["x"], ["y"], name="c1")], [("x", F, [1, 3, 8, 8])])


def test_required_input_left_empty():
    with pytest.raises(ember.ModelLoadError, match=r"'c1' \(Conv\): input 1 \(W\) is required but left empty"):
        _load([helper.make_node("Conv", ["x", ""], ["y"], name="c1")], [("x", F, [1, 3, 8, 8])])


def test_too_many_outputs():
    with pytest.raises(ember.ModelLoadError, match=r"'r' \(Relu\) has 2 outputs, expected 1"):
        _load([helper.make_node("Relu", ["x"], ["y", "z"], name="r")], [("x", F, [3])])


# -------------------------------------------------------------------------- attributes
@pytest.mark.parametrize("perm", [[0, 0], [0, 2], [1, 0, 2]])
def test_transpose_perm_not_a_permutation(perm):
    with pytest.raises(ember.ShapeError, match=r"'tr' \(Transpose\): perm = .*expected a permutation of \[0, 1\]"):
        _load([helper.make_node("Transpose", ["x"], ["y"], name="tr", perm=perm)], [("x", F, [2, 3])])


def test_attribute_of_wrong_type():
    n = helper.make_node("Transpose", ["x"], ["y"], name="tr")
    n.attribute.append(helper.make_attribute("perm", 1))
    with pytest.raises(ember.ModelLoadError, match=r"'tr' \(Transpose\): attribute 'perm' is INT, expected INTS"):
        _load([n], [("x", F, [2, 3])])


def test_missing_required_attribute():
    with pytest.raises(ember.ModelLoadError, match=r"'cat' \(Concat\): required attribute 'axis' is missing"):
        _load([helper.make_node("Concat", ["x", "x"], ["y"], name="cat")], [("x", F, [2, 3])])


def test_attribute_of_another_opset():
    """ReduceSum takes its axes as an input from opset 13: an `axes` attribute is not read."""
    with pytest.raises(ember.ModelLoadError, match=r"'rs' \(ReduceSum\): attribute 'axes' is not defined for "
                                                   r"ReduceSum at opset 18; expected one of \['keepdims'"):
        _load([helper.make_node("ReduceSum", ["x"], ["y"], name="rs", axes=[1])], [("x", F, [2, 3])])


@pytest.mark.parametrize("sizes, n_out, match", [
    ([2, 2], 2, r"split sizes \[2, 2\], expected 2 sizes >= 0 \(one per output\) adding up to 6"),
    ([2, 4], 3, r"split sizes \[2, 4\], expected 3 sizes"),
    ([7, -1], 2, r"split sizes \[7, -1\]"),
])
def test_split_sizes(sizes, n_out, match):
    outs = [f"y{k}" for k in range(n_out)]
    with pytest.raises(ember.ShapeError, match=r"'sp' \(Split\): " + match):
        _load([helper.make_node("Split", ["x", "s"], outs, name="sp", axis=1)], [("x", F, [2, 6])],
              [(o, F, None) for o in outs], inits={"s": np.array(sizes, np.int64)})


@pytest.mark.parametrize("delta, limit, match", [
    (np.array(0, np.int64), np.array(5, np.int64), r"delta is 0, expected a non-zero step"),
    (np.array(1, np.int64), np.array([5, 6], np.int64), r"input 1 has shape \[2\], expected a scalar"),
])
def test_range_bad_inputs(delta, limit, match):
    with pytest.raises(ember.ShapeError, match=r"'rg' \(Range\): " + match):
        _load([helper.make_node("Range", ["a", "b", "c"], ["y"], name="rg")], [], [("y", T.INT64, None)],
              inits={"a": np.array(0, np.int64), "b": limit, "c": delta})


def test_flatten_axis_out_of_range():
    with pytest.raises(ember.ShapeError, match=r"'fl' \(Flatten\): axis 3 is out of range for rank 2"):
        _load([helper.make_node("Flatten", ["x"], ["y"], name="fl", axis=3)], [("x", F, [2, 3])])


def test_softmax_axis_out_of_range():
    with pytest.raises(ember.ShapeError, match=r"node 'sm' \(Softmax\): axis 2 is out of range for rank 2; expected -2 to 1"):
        _load([helper.make_node("Softmax", ["x"], ["y"], name="sm", axis=2)], [("x", F, [2, 3])])


# ------------------------------------------------------------------------------- types
def test_homogeneous_inputs_must_match():
    with pytest.raises(ember.ShapeError, match=r"'add' \(Add\): input 1 \(B\) has type tensor\(int64\) but "
                                               r"input 0 has tensor\(float\)"):
        _load([helper.make_node("Add", ["a", "b"], ["y"], name="add")], [("a", F, [3]), ("b", T.INT64, [3])])


def test_input_type_outside_constraint():
    with pytest.raises(ember.ShapeError, match=r"'c1' \(Conv\): input 0 \(X\) has type tensor\(int64\), "
                                               r"expected one of .*tensor\(float\)"):
        _load([helper.make_node("Conv", ["x", "w"], ["y"], name="c1")], [("x", T.INT64, [1, 1, 4, 4])],
              [("y", T.INT64, None)], {"w": np.ones((1, 1, 3, 3), np.int64)})


def test_gather_float_indices():
    with pytest.raises(ember.ShapeError, match=r"'g' \(Gather\): input 1 \(indices\) has type tensor\(float\)"):
        _load([helper.make_node("Gather", ["x", "i"], ["y"], name="g")], [("x", F, [4, 3]), ("i", F, [2])])


def test_gather_constant_indices_out_of_range():
    with pytest.raises(ember.ShapeError, match=r"'g' \(Gather\): indices range over \[0, 7\], expected \[-4, 3\]"):
        _load([helper.make_node("Gather", ["x", "i"], ["y"], name="g")], [("x", F, [4, 3])],
              inits={"i": np.array([0, 7], np.int64)})


# --------------------------------------------------------------------- conv and pools
def _conv(x_shape, w_shape, bias=None, **attrs):
    inits = {"w": _weights(*w_shape)}
    ins = ["x", "w"]
    if bias is not None:
        inits["b"] = _weights(bias, seed=1)
        ins.append("b")
    return _load([helper.make_node("Conv", ins, ["y"], name="cv", **attrs)], [("x", F, x_shape)], inits=inits)


@pytest.mark.parametrize("x_shape, w_shape, bias, attrs, match", [
    ([1, 3, 8, 8], [4, 2, 3, 3], None, {}, r"W \[4,2,3,3\] has 2 channels per group x group 1 = 2, expected the 3 input channels"),
    ([1, 4, 8, 8], [4, 1, 3, 3], None, {"group": 2}, r"1 channels per group x group 2 = 2, expected the 4 input"),
    ([1, 6, 8, 8], [6, 1, 3, 3], None, {"group": 4}, r"group = 4 does not divide the 6 input channels"),
    ([1, 4, 8, 8], [6, 1, 3, 3], None, {"group": 4}, r"group = 4 does not divide the 6 output channels"),
    ([1, 3, 8, 8], [4, 3, 3, 3], None, {"group": 0}, r"group = 0, expected >= 1"),
    ([1, 3, 8, 8], [4, 3, 3], None, {}, r"weight W has shape \[4,3,3\], expected rank 4"),
    ([3, 8], [4, 3], None, {}, r"input 0 has shape \[3,8\], expected rank >= 3"),
    ([1, 3, 8, 8], [4, 3, 3, 3], None, {"kernel_shape": [3]}, r"'kernel_shape' has 1 values \[3\], expected 2"),
    ([1, 3, 8, 8], [4, 3, 3, 3], None, {"kernel_shape": [5, 5]}, r"kernel_shape = \[5, 5\], expected W's spatial dims \[3, 3\]"),
    ([1, 3, 8, 8], [4, 3, 3, 3], None, {"strides": [1, 0]}, r"'strides' = \[1, 0\], expected every value >= 1"),
    ([1, 3, 8, 8], [4, 3, 3, 3], None, {"dilations": [1, 1, 1]}, r"'dilations' has 3 values"),
    ([1, 3, 8, 8], [4, 3, 3, 3], None, {"pads": [1, 1]}, r"'pads' has 2 values \[1, 1\], expected 4"),
    ([1, 3, 8, 8], [4, 3, 3, 3], None, {"pads": [0, -1, 0, 0]}, r"'pads' = \[0, -1, 0, 0\], expected every value >= 0"),
    ([1, 3, 8, 8], [4, 3, 3, 3], None, {"auto_pad": "SAME"}, r"auto_pad = 'SAME', expected NOTSET"),
    ([1, 3, 8, 8], [4, 3, 3, 3], 3, {}, r"bias B has shape \[3\], expected \[4\]"),
    ([1, 3, 2, 2], [4, 3, 3, 3], None, {}, r"the 3-wide window \(kernel 3, dilation 1\) does not fit spatial dim 0 of size 2 \+ pads 0\+0"),
])
def test_conv_inconsistent(x_shape, w_shape, bias, attrs, match):
    with pytest.raises(ember.ShapeError, match=r"'cv' \(Conv\).*" + match):
        _conv(x_shape, w_shape, bias, **attrs)


def test_pool_strides_length():
    with pytest.raises(ember.ShapeError, match=r"'mp' \(MaxPool\): attribute 'strides' has 1 values"):
        _load([helper.make_node("MaxPool", ["x"], ["y"], name="mp", kernel_shape=[2, 2], strides=[2])],
              [("x", F, [1, 3, 8, 8])])


def test_gemm_inner_dimensions():
    with pytest.raises(ember.ShapeError, match=r"'gm' \(Gemm\): inner dimensions differ: A \[2,3\] \(transA=0\) "
                                               r"and B \[4,5\]"):
        _load([helper.make_node("Gemm", ["a", "b"], ["y"], name="gm")], [("a", F, [2, 3])],
              inits={"b": _weights(4, 5)})


# ---------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("target, match", [
    ([-1, -1], r"expected sizes >= 0 and at most one -1"),
    ([3, -2], r"expected sizes >= 0 and at most one -1"),
    ([6, 0], r"has 0 \(copy the input's dim\) at position 1, but the input \[6\] has rank 1"),
    ([4, 2], r"changes the element count"),
])
def test_reshape_bad_target(target, match):
    with pytest.raises(ember.ShapeError, match=r"'rs'.*" + match):
        _load([helper.make_node("Reshape", ["x", "s"], ["y"], name="rs")], [("x", F, [6])],
              inits={"s": np.array(target, np.int64)})


def test_expand_negative_shape():
    with pytest.raises(ember.ShapeError, match=r"'ex' \(Expand\): shape \[2, -3\] has a negative size"):
        _load([helper.make_node("Expand", ["x", "s"], ["y"], name="ex")], [("x", F, [1])],
              inits={"s": np.array([2, -3], np.int64)})


def test_negative_input_dim():
    with pytest.raises(ember.ShapeError, match=r"graph input 'x' has dimension 1 = -3 .*expected a size >= 0"):
        _load([helper.make_node("Relu", ["x"], ["y"], name="r")], [("x", F, [2, -3])])


# ----------------------------------------------------------------------- graph level
def test_duplicate_output_name():
    with pytest.raises(ember.ModelLoadError, match=r"'r2' \(Neg\) writes 'y', which node 'r1' already writes"):
        _load([helper.make_node("Relu", ["x"], ["y"], name="r1"), helper.make_node("Neg", ["x"], ["y"], name="r2")],
              [("x", F, [3])])


def test_output_overwrites_graph_input():
    with pytest.raises(ember.ModelLoadError, match=r"'r' \(Relu\) writes 'x', which is already a graph input"):
        _load([helper.make_node("Relu", ["x"], ["x"], name="r")], [("x", F, [3])], [("x", F, [3])])


def test_graph_output_not_produced():
    with pytest.raises(ember.ModelLoadError, match=r"graph output 'z' is not produced by any node"):
        _load([helper.make_node("Relu", ["x"], ["y"], name="r")], [("x", F, [3])], [("z", F, [3])])


def test_undefined_node_input():
    with pytest.raises(ember.ModelLoadError, match=r"'r' \(Relu\) reads 'q', which no earlier node"):
        _load([helper.make_node("Relu", ["q"], ["y"], name="r")], [("x", F, [3])])


def test_duplicate_graph_input():
    with pytest.raises(ember.ModelLoadError, match=r"graph input 'x' is declared twice"):
        _load([helper.make_node("Relu", ["x"], ["y"], name="r")], [("x", F, [3]), ("x", F, [3])])


@pytest.mark.parametrize("exc", [IndexError, ValueError, AttributeError, TypeError, KeyError,
                                 OverflowError, MemoryError, ZeroDivisionError])
def test_converter_crash_names_node(monkeypatch, exc):
    """The safety net: a Python error inside a converter still comes out as an EmberError."""
    def broken(b, n, ins, opset):
        raise exc("boom")
    monkeypatch.setitem(loader.CONVERTERS, "Relu", broken)
    with pytest.raises(ember.ModelLoadError, match=rf"node 'r' \(Relu\) cannot be imported .*{exc.__name__}.*boom"):
        _load([helper.make_node("Relu", ["x"], ["y"], name="r")], [("x", F, [3])])


# ------------------------------------------------------------- huge tensors, in a child
_CHILD = """
import sys, ember
try:
    ember.InferenceSession(sys.argv[1])
except ember.EmberError as e:
    print(type(e).__name__, "|", e)
else:
    print("ACCEPTED")
"""


def _huge_init(name, dims):
    t = onnx.TensorProto()     # declared dims, no data: nothing to read must allocate nothing
    t.name, t.data_type = name, F
    t.dims.extend(dims)
    return t


def _huge_cases():
    big = np.array([2 ** 40, 2 ** 30], np.int64)
    cos = make_model([helper.make_node("ConstantOfShape", ["s"], ["y"], name="cos")], [], [("y", F, None)],
                     {"s": np.array([2 ** 31, 2 ** 31], np.int64)})
    rng = make_model([helper.make_node("Range", ["a", "b", "c"], ["y"], name="rg")], [], [("y", T.INT64, None)],
                     {"a": np.array(0, np.int64), "b": np.array(2 ** 62, np.int64), "c": np.array(1, np.int64)})
    g = helper.make_graph([helper.make_node("Relu", ["w"], ["y"], name="r")], "g", [],
                          [helper.make_tensor_value_info("y", F, None)], [_huge_init("w", [2 ** 40, 2 ** 30])])
    init = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()
    return {
        "input": (make_model([helper.make_node("Relu", ["x"], ["y"], name="r")], [("x", F, [2 ** 62, 4])],
                             [("y", F, None)]), "graph input 'x'"),
        "constant_of_shape": (cos, "'cos' (ConstantOfShape)"),
        "reshape": (make_model([helper.make_node("Reshape", ["x", "s"], ["y"], name="rs")], [("x", F, ["n"])],
                               [("y", F, None)], {"s": big}), "'rs' (Reshape)"),
        "expand": (make_model([helper.make_node("Expand", ["x", "s"], ["y"], name="ex")], [("x", F, [1])],
                              [("y", F, None)], {"s": big}), "'ex' (Expand)"),
        "expand_folded": (make_model([helper.make_node("Expand", ["v", "s"], ["y"], name="exc")], [],
                                     [("y", F, None)], {"v": _weights(1), "s": np.array([2 ** 33] * 3, np.int64)}),
                          "'exc' (Expand)"),
        "range": (rng, "'rg' (Range)"),
        "initializer": (init, "initializer 'w'"),
    }


@pytest.mark.parametrize("case", sorted(_huge_cases()))
def test_huge_tensor_is_a_shape_error(case, tmp_path):
    model, who = _huge_cases()[case]
    p = tmp_path / "m.onnx"
    p.write_bytes(model)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", _CHILD, str(p)], capture_output=True, text=True, timeout=120,
                       cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("ShapeError |"), r.stdout + r.stderr[-2000:]
    # (the node's ONNX name, with the ONNX op type or, past import, the Ember op it became)
    assert who.split(" (")[0] in r.stdout and "2**40" in r.stdout, r.stdout


# ---------------------------------------------------------------- random mutations
def _bases():
    def m(nodes, inputs, inits=(), out_type=F):
        return onnx.load_model_from_string(make_model(nodes, inputs, [("y", out_type, None)], inits))
    H = helper.make_node
    return {
        "add": m([H("Add", ["x", "b"], ["y"], name="n")], [("x", F, [2, 3])], {"b": _weights(3)}),
        "matmul": m([H("MatMul", ["x", "w"], ["y"], name="n")], [("x", F, [2, 4])], {"w": _weights(4, 3)}),
        "conv": m([H("Conv", ["x", "w", "b"], ["y"], name="n", pads=[1, 1, 1, 1], strides=[1, 1])],
                  [("x", F, [1, 2, 5, 5])], {"w": _weights(4, 2, 3, 3), "b": _weights(4)}),
        "transpose": m([H("Transpose", ["x"], ["y"], name="n", perm=[2, 0, 1])], [("x", F, [2, 3, 4])]),
        "reshape": m([H("Reshape", ["x", "s"], ["y"], name="n")], [("x", F, [2, 6])],
                     {"s": np.array([3, 4], np.int64)}),
        "gather": m([H("Gather", ["x", "i"], ["y"], name="n", axis=0)], [("x", F, [5, 3])],
                    {"i": np.array([0, 4], np.int64)}),
        "softmax": m([H("Softmax", ["x"], ["y"], name="n", axis=1)], [("x", F, [2, 5])]),
    }


BASES = _bases()
_ATTR_NAMES = ["perm", "axis", "group", "strides", "pads", "kernel_shape", "dilations", "allowzero",
               "auto_pad", "transB"]
_small = st.integers(-3, 6)
_attr_value = st.one_of(_small, st.lists(_small, max_size=5), st.floats(-2, 2, allow_nan=False),
                        st.sampled_from(["NOTSET", "VALID", "SAME_UPPER", "bogus"]))


def _mutate_attr(m, data):
    node = m.graph.node[0]
    name = data.draw(st.sampled_from(_ATTR_NAMES + [a.name for a in node.attribute]))
    keep = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(keep)
    if data.draw(st.booleans()):
        value = data.draw(_attr_value)
        node.attribute.append(helper.make_attribute(name, value, attr_type=onnx.AttributeProto.INTS if value == [] else None))


def _mutate_inputs(m, data):
    node = m.graph.node[0]
    ins = list(node.input)
    choice = data.draw(st.sampled_from(["drop", "dup", "empty", "undefined", "swap"]))
    if choice == "drop" and ins:
        ins.pop(data.draw(st.integers(0, len(ins) - 1)))
    elif choice == "dup" and ins:
        ins.append(data.draw(st.sampled_from(ins)))
    elif choice == "empty":
        ins.insert(data.draw(st.integers(0, len(ins))), "")
    elif choice == "undefined":
        ins.append("nowhere")
    elif len(ins) > 1:
        ins.reverse()
    del node.input[:]
    node.input.extend(ins)


def _mutate_initializer(m, data):
    if not m.graph.initializer:
        return
    k = data.draw(st.integers(0, len(m.graph.initializer) - 1))
    old = m.graph.initializer[k]
    shape = data.draw(st.lists(st.integers(0, 5), max_size=4))
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1)))
    if data.draw(st.booleans()):
        arr = rng.standard_normal(shape).astype(np.float32)
    else:
        arr = rng.integers(-6, 7, shape).astype(data.draw(st.sampled_from([np.int64, np.int32])))
    m.graph.initializer[k].CopyFrom(numpy_helper.from_array(arr, old.name))


def _mutate_input_shape(m, data):
    if not m.graph.input:
        return
    dims = data.draw(st.lists(st.one_of(st.integers(0, 6), st.just("n")), max_size=5))
    vi = m.graph.input[0]
    vi.CopyFrom(helper.make_tensor_value_info(vi.name, vi.type.tensor_type.elem_type, dims))


_MUTATIONS = [_mutate_attr, _mutate_inputs, _mutate_initializer, _mutate_input_shape]


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_models_load_or_raise_ember_error(data):
    m = onnx.ModelProto()
    m.CopyFrom(BASES[data.draw(st.sampled_from(sorted(BASES)))])
    for _ in range(data.draw(st.integers(1, 3))):
        data.draw(st.sampled_from(_MUTATIONS))(m, data)
    try:
        ember.InferenceSession(m.SerializeToString())
    except ember.EmberError:
        pass
