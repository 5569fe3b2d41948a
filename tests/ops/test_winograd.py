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
    g = rng.standard_normal((c, c, 3, 3)).astype(np.float32)    # read only where y is not finite
    winograd_output(m, x, g, y)
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


def _direct_conv(x, g):
    """The 3x3 pad-1 convolution as a sum of products, in float64 (where a term is inf or
    NaN, which outputs are inf or NaN does not depend on the order of the sum)."""
    h, w = x.shape[2:]
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    with np.errstate(all="ignore"):
        return sum(np.einsum("nchw,kc->nkhw", xp[:, :, a:a + h, b:b + w], g[:, :, a, b].astype(np.float64))
                   for a in range(3) for b in range(3))


def _assert_same_non_finite(got, want, what):
    for name, f in [("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)]:
        assert np.array_equal(f(got), f(want)), f"{what}: {name} positions differ"
    fin = np.isfinite(want)
    np.testing.assert_allclose(got[fin], want[fin], rtol=1e-4, atol=1e-3, err_msg=what)


@pytest.mark.parametrize("lanes", [8, 16])
def test_output_transform_recomputes_non_finite_tiles_directly(lanes):
    """One inf in the input makes the transforms' sums inf - inf = NaN over its tiles, where
    the convolution gives inf (or -inf, by the weight's sign): the output kernel recomputes
    those tile vectors from x and the weights; the others keep the Winograd result."""
    rng = np.random.default_rng(5)
    n, c, k, h, w = 2, 3, 4, 9, 23
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    x[0, 1, 4, 7] = np.inf
    x[0, 2, 0, 22] = -np.inf              # a corner: a partial vector, the padding row
    x[1, 0, 8, 0] = np.nan
    x[1, 1, 3, 3], x[1, 2, 3, 4] = np.inf, -np.inf       # inf - inf in the direct sum too
    g = rng.standard_normal((k, c, 3, 3)).astype(np.float32)
    g[1, 0] = 0.0                         # 0 * NaN
    t = ((h + 1) // 2) * ((w + 1) // 2)
    v = ops.OPS["winograd_input"].ref([x], {"tiles": t})[0]
    u = np.einsum("ia,kcab,jb->ijkc", ops.WINO_G, g, ops.WINO_G).reshape(16, k, c)
    with np.errstate(all="ignore"):
        m = np.einsum("xkc,xcnt->xknt", u, v.astype(np.float64)).astype(np.float32)
    y = np.full((n, k, h, w), 7.0, np.float32)
    winograd_output(m, x, g, y, width=lanes)
    _assert_same_non_finite(y, _direct_conv(x, g), f"{lanes} lanes")


def test_winograd_conv_with_inf_and_nan_inputs_matches_the_direct_sum():
    """A whole compiled Winograd conv (with bias and ReLU fused after the output transform)
    on inputs holding inf and NaN: the same inf and NaN positions as the direct sum."""
    rng = np.random.default_rng(12)
    w = (rng.standard_normal((32, 32, 3, 3)) * 0.2).astype(np.float32)
    bias = rng.standard_normal(32).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    g = helper.make_graph(nodes, "c", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 14, 15])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "b")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    x = rng.standard_normal((1, 32, 14, 15)).astype(np.float32)
    flat = x.reshape(-1)
    idx = rng.choice(flat.size, 6, replace=False)
    flat[idx] = [np.inf, -np.inf, np.nan, np.inf, np.inf, -np.inf]
    got = run_engine(model, {"x": x})[0]
    with np.errstate(all="ignore"):
        want = np.maximum(_direct_conv(x, w) + bias[:, None, None], 0.0)
    want[np.isnan(_direct_conv(x, w))] = np.nan          # Relu(NaN) is NaN
    _assert_same_non_finite(got, want, "conv + bias + relu")


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
