"""Pointwise kernels fused into the stores of library kernels (a BatchNorm and ReLU after a
depthwise convolution, a residual after a layer norm ...): one kernel instead of two, and
the same numbers as onnx.reference, with dynamic batches, odd sizes and a dtype change."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T, helper, numpy_helper

from ember.runtime.compiler import compile_model

from .harness import check


def _model(nodes, inputs, outputs, inits):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                          [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def _kernels(model: onnx.ModelProto):
    return [(kind, ops) for _, kind, ops in compile_model(model.SerializeToString(), use_cache=False).kernel_info]


def _bn(rng, c):
    return {"s": rng.uniform(0.5, 1.5, c).astype(np.float32), "b": rng.standard_normal(c).astype(np.float32),
            "m": (rng.standard_normal(c) * 0.1).astype(np.float32), "v": rng.uniform(0.5, 2, c).astype(np.float32)}


@pytest.mark.parametrize("shape,stride", [((1, 24, 14, 14), 2), ((2, 5, 9, 37), 2), ((3, 3, 1, 1), 2),
                                          ((2, 5, 9, 37), 1), ((1, 24, 14, 14), 1)])
def test_depthwise_bn_clip_is_one_kernel(shape, stride):
    """MobileNet's depthwise + BN + ReLU6, with a dynamic batch: the depthwise kernel stores
    BN and clip."""
    rng = np.random.default_rng(sum(shape))
    n, c, h, w = shape
    inits = {"w": rng.standard_normal((c, 1, 3, 3)).astype(np.float32), **_bn(rng, c),
             "lo": np.float32(0), "hi": np.float32(6)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], group=c, kernel_shape=[3, 3], strides=[stride] * 2,
                              pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["n"]),
             helper.make_node("Clip", ["n", "lo", "hi"], ["y"])]
    model = _model(nodes, [("x", T.FLOAT, ["batch", c, h, w])], [("y", T.FLOAT, None)], inits)
    kinds = _kernels(model)
    assert [k for k, _ in kinds] == ["library"]
    check(model, {"x": (rng.standard_normal(shape) * 3).astype(np.float32)})


def test_max_pool_relu_cast_to_float16():
    """The epilogue converts to its own dtype when it stores."""
    rng = np.random.default_rng(7)
    nodes = [helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Sub", ["p", "t"], ["d"]),
             helper.make_node("Relu", ["d"], ["r"]),
             helper.make_node("Cast", ["r"], ["y"], to=T.FLOAT16)]
    model = _model(nodes, [("x", T.FLOAT, ["n", 4, 13, 20])], [("y", T.FLOAT16, None)], {"t": np.float32(0.3)})
    assert [k for k, _ in _kernels(model)] == ["library"]
    check(model, {"x": rng.standard_normal((2, 4, 13, 20)).astype(np.float32)})


@pytest.mark.parametrize("d", [7, 64, 100])
def test_layer_norm_scale_residual(d):
    """LayerNorm, then a scale and a residual add: stored by the layer-norm kernel."""
    rng = np.random.default_rng(d)
    inits = {"g": rng.standard_normal(d).astype(np.float32), "b": rng.standard_normal(d).astype(np.float32),
             "k": np.float32(0.5)}
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "b"], ["ln"], axis=-1, epsilon=1e-5),
             helper.make_node("Mul", ["ln", "k"], ["s"]),
             helper.make_node("Add", ["s", "r"], ["y"])]
    model = _model(nodes, [("x", T.FLOAT, ["n", "t", d]), ("r", T.FLOAT, ["n", "t", d])], [("y", T.FLOAT, None)],
                   inits)
    assert [k for k, _ in _kernels(model)] == ["library"]
    feeds = {"x": (rng.standard_normal((2, 5, d)) * 2).astype(np.float32),
             "r": rng.standard_normal((2, 5, d)).astype(np.float32)}
    check(model, feeds)


def test_no_epilogue_after_softmax_or_into_a_value_used_twice():
    """Softmax reads its output back (normalises in place): its consumer stays a kernel of its
    own. A pooled value that is also a graph output is stored as it is: the ReLU after it is
    a kernel of its own too."""
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("Softmax", ["x"], ["p"], axis=-1),
             helper.make_node("Mul", ["p", "k"], ["y"]),
             helper.make_node("MaxPool", ["z"], ["q"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["q"], ["rq"])]
    model = _model(nodes, [("x", T.FLOAT, [3, 20]), ("z", T.FLOAT, [1, 2, 9, 9])],
                   [("y", T.FLOAT, None), ("q", T.FLOAT, None), ("rq", T.FLOAT, None)], {"k": np.float32(3)})
    assert sorted(k for k, _ in _kernels(model)) == ["library", "library", "pointwise", "pointwise"]
    check(model, {"x": rng.standard_normal((3, 20)).astype(np.float32),
                  "z": rng.standard_normal((1, 2, 9, 9)).astype(np.float32)})
