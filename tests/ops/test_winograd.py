"""Winograd F(2x2, 3x3) convolutions: the transform kernels against their numpy semantics,
whole convolutions against onnx.reference, and when the conv decomposition picks them."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from ember.ir import ops
from ember.ir.builder import Builder
from ember.ir.graph import TensorType, const_value
from ember.kernels.winograd import winograd_input, winograd_output

from .harness import run_engine, run_reference
from .test_linalg import _check_conv_bn_residual_relu


@pytest.mark.parametrize("n,c,h,w", [(1, 3, 14, 14), (2, 5, 7, 9), (1, 2, 56, 56), (1, 1, 5, 40), (3, 2, 1, 1)])
def test_transform_kernels_match_their_semantics(n, c, h, w):
    """The input transform (stride-2 tiles through even/odd shuffles, padding rows and
    columns read as 0, a partial last vector of tiles) and the output transform (tiles
    interleaved back into rows, odd sizes cropped), with padding columns in V."""
    rng = np.random.default_rng(h * w + c)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    t = ((h + 1) // 2) * ((w + 1) // 2)
    at = {"tiles": t + 3}
    v = np.full((16, c, n, t + 3), np.nan, np.float32)
    winograd_input(x, v)
    want = ops.OPS["winograd_input"].ref([x], at)[0]
    np.testing.assert_allclose(v[..., :t], want[..., :t], rtol=1e-5, atol=1e-5)
    m = rng.standard_normal((16, c, n, t + 3)).astype(np.float32)
    m[..., t:] = np.nan                          # padding columns are never read
    y = np.full((n, c, h, w), np.nan, np.float32)
    winograd_output(m, y)
    np.testing.assert_allclose(y, ops.OPS["winograd_output"].ref([m], {"out": (h, w)})[0], rtol=1e-5, atol=1e-5)


def test_transforms_compose_to_a_convolution():
    """At [(G g Gt) * (Bt d B)] A over all tiles is the 3x3 pad-1 convolution (the op
    semantics and the weight transform, in float64)."""
    rng = np.random.default_rng(3)
    x, g = rng.standard_normal((2, 4, 9, 6)), rng.standard_normal((5, 4, 3, 3))
    t = 5 * 3
    v = ops.OPS["winograd_input"].ref([x], {"tiles": t})[0]
    u = np.einsum("ia,kcab,jb->ijkc", ops.WINO_G, g, ops.WINO_G).reshape(16, 5, 4)
    m = np.einsum("xkc,xcnt->xknt", u, v)
    y = ops.OPS["winograd_output"].ref([m], {"out": (9, 6)})[0]
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    want = sum(np.einsum("nchw,kc->nkhw", xp[:, :, a:a + 9, b:b + 6], g[:, :, a, b])
               for a in range(3) for b in range(3))
    np.testing.assert_allclose(y, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("batch,cin,cout,h,w", [
    (1, 32, 32, 14, 14),
    (2, 40, 33, 15, 13),       # odd sizes: the last tile row/column is cropped
    ("n", 32, 48, 7, 40),      # dynamic batch; more than one vector of tiles per row
    (1, 64, 64, 56, 56),       # planes padded off a 4 KiB multiple
])
def test_winograd_conv_bn_residual_relu(batch, cin, cout, h, w):
    """3x3 pad-1 convolutions with >= 32 channels run as input transform, 16 GEMMs, output
    transform with the BN + residual + ReLU fused into its stores, matching onnx.reference."""
    _check_conv_bn_residual_relu(np.random.default_rng(cin + h), batch, cin, cout, h, w, (3, 3), (1, 1, 1, 1),
                                 kernel_kinds=["library", "matmul", "library"])


def test_winograd_conv_with_bias_and_large_values():
    """Conv with a bias on inputs of magnitude ~100: the error stays relative to the output."""
    rng = np.random.default_rng(11)
    w = (rng.standard_normal((36, 32, 3, 3)) * 0.2).astype(np.float32)
    b = rng.standard_normal(36).astype(np.float32)
    g = helper.make_graph([helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])], "c",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 14, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    feeds = {"x": (rng.standard_normal((1, 32, 14, 16)) * 100).astype(np.float32)}
    got, want = run_engine(model, feeds)[0], run_reference(model, feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def _decomposed_ops(x_shape, w_shape, **at):
    at = {"kernel": list(w_shape[2:]), "strides": [1, 1], "dilations": [1, 1], "pads": [1, 1, 1, 1],
          "group": 1, "out": list(x_shape[2:]), **at}
    b = Builder()
    x = b.input("x", TensorType("float32", x_shape))
    w = const_value(np.ones(w_shape, np.float32))
    ops.OPS["conv"].decompose(b, [x, w], at)
    return [n.op for n in b.nodes]


def test_decomposition_picks_winograd_only_where_it_applies(monkeypatch):
    wino = ["winograd_input", "reshape", "matmul", "reshape", "winograd_output"]
    assert _decomposed_ops((1, 32, 14, 14), (32, 32, 3, 3)) == wino
    assert _decomposed_ops((1, 64, 13, 14), (512, 64, 3, 3)) == wino
    assert _decomposed_ops((1, 64, 4, 60), (64, 64, 3, 3)) == wino          # 2 x 30 tiles
    for x_shape, w_shape, at in [((1, 16, 14, 14), (64, 16, 3, 3), {}),          # few input channels
                                 ((1, 64, 14, 14), (16, 64, 3, 3), {}),          # few output channels
                                 ((1, 64, 7, 7), (64, 64, 3, 3), {}),            # 16 tiles
                                 ((1, 64, 14, 14), (64, 64, 3, 3), {"strides": [2, 2], "out": [7, 7]}),
                                 ((1, 64, 14, 14), (64, 64, 3, 3), {"pads": [0, 0, 0, 0], "out": [12, 12]}),
                                 ((1, 64, 14, 14), (64, 64, 3, 3), {"dilations": [2, 2], "pads": [2, 2, 2, 2]}),
                                 ((1, 64, 14, 14), (64, 64, 5, 5), {"pads": [2, 2, 2, 2]})]:
        assert "winograd_input" not in _decomposed_ops(x_shape, w_shape, **at), (x_shape, w_shape, at)
    monkeypatch.setattr(ops, "WINOGRAD", False)
    assert "winograd_input" not in _decomposed_ops((1, 32, 14, 14), (32, 32, 3, 3))
    assert ops.options_fingerprint() == "winograd=0"


def test_plane_padding_avoids_4k_aliasing():
    assert ops._plane_tiles(784, (64, 64)) > 784            # 64 * 784 floats = 49 * 4 KiB
    assert ops._plane_tiles(49, (256, 256)) == 49           # 49 KiB + 1 KiB: already spread
    for t, ch in [(784, 64), (196, 128), (49, 256), (100, 32)]:
        tp = ops._plane_tiles(t, (ch,))
        assert t <= tp < t + 16
        assert len({(i * ch * tp * 4 >> 6) & 63 for i in range(16)}) >= 4
