"""The 3x3 window kernels (depthwise, max pool, im2col, Winograd transforms) split each row
into vectors with lane masks (the borders) and vectors without (`windows.interior_end`). A
vector wrongly taken as interior reads or writes past its row, so every row width from 1 to
41 (and a few of the basket's) runs at 4, 8 and 16 lanes, whatever this chip's width is,
against numpy; outputs start as NaN, so a lane left unwritten fails too."""
from __future__ import annotations

import numpy as np
import pytest

from ember.ir import ops
from ember.kernels import depthwise, im2col, pool, winograd

ROW_WIDTHS = list(range(1, 42)) + [56, 57, 112]
LANES = [4, 8, 16]


def _windows(x, stride, fill):
    """The 3x3 windows (padding 1, filled with `fill`) at `stride`: [n, c, 3, 3, oh, ow]."""
    _, _, h, w = x.shape
    oh, ow = (h - 1) // stride + 1, (w - 1) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=fill)
    return np.stack([np.stack([xp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
                               for j in range(3)], 2) for i in range(3)], 2)


@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_every_row_width(lanes, stride):
    rng = np.random.default_rng(lanes + stride)
    kern = depthwise.depthwise_3x3_s2 if stride == 2 else depthwise.depthwise_3x3_s1
    for w_n in ROW_WIDTHS:
        if stride == 1 and w_n <= lanes // 2:
            continue        # the flat-pixel lowering's rows (test_linalg), not this kernel's
        for bands in (1, 2):
            x = rng.standard_normal((1, 2, 5, w_n)).astype(np.float32)
            w = rng.standard_normal((2, 1, 3, 3)).astype(np.float32)
            want = np.einsum("ncijhw,cij->nchw", _windows(x, stride, 0.0), w[:, 0])
            # the output between two canary regions: the stores that run past a row's end
            # (windows.store_row) must stay inside it
            pad = 2 * lanes
            room = np.full(want.size + 2 * pad, 12345.0, np.float32)
            got = room[pad:pad + want.size].reshape(want.shape)
            got[...] = np.nan
            kern(x, w, got, width=lanes, bands=bands)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=f"row of {w_n}, {bands} bands")
            assert (room[:pad] == 12345.0).all() and (room[pad + want.size:] == 12345.0).all(), f"row of {w_n}"


@pytest.mark.parametrize("lanes", LANES)
def test_pool_and_im2col_every_row_width(lanes):
    rng = np.random.default_rng(lanes)
    for w_n in ROW_WIDTHS:
        for h_n in (1, 4, 5):
            x = rng.standard_normal((1, 2, h_n, w_n)).astype(np.float32)
            want = _windows(x, 2, -np.inf).max(axis=(2, 3))
            got = np.full(want.shape, np.nan, np.float32)
            pool.max_pool_3x3_s2(x, got, width=lanes)
            np.testing.assert_array_equal(got, want, err_msg=f"pool, {h_n}x{w_n}")
            cols = _windows(x, 2, 0.0)[0]
            got = np.full(cols.shape, np.nan, np.float32)
            im2col.im2col_3x3_s2(x, got, width=lanes)
            np.testing.assert_array_equal(got, cols, err_msg=f"im2col, {h_n}x{w_n}")


@pytest.mark.parametrize("lanes", LANES)
def test_winograd_transforms_every_row_width(lanes):
    rng = np.random.default_rng(lanes)
    for w_n in ROW_WIDTHS:
        for h_n in (1, 4):
            th, tw = (h_n + 1) // 2, (w_n + 1) // 2
            t = th * tw
            x = rng.standard_normal((1, 2, h_n, w_n)).astype(np.float32)
            want = ops.OPS["winograd_input"].ref([x], {"tiles": t + 3})[0]
            got = np.full(want.shape, np.nan, np.float32)
            winograd.winograd_input(x, got, width=lanes)
            np.testing.assert_allclose(got[..., :t], want[..., :t], rtol=1e-5, atol=1e-5,
                                       err_msg=f"input, {h_n}x{w_n}")
            m = rng.standard_normal((16, 2, 1, t + 3)).astype(np.float32)
            want = ops.OPS["winograd_output"].ref([m], {"out": (h_n, w_n)})[0]
            got = np.full(want.shape, np.nan, np.float32)
            g = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)    # read where not finite
            winograd.winograd_output(m, x, g, got, width=lanes)
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=f"output, {h_n}x{w_n}")
