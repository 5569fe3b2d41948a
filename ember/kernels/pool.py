"""3x3 stride-2 max pooling (the ResNet stem's), in the kernel language.

The generic pool lowering evaluates all 9 window taps per output vector, each a masked,
de-interleaving load with its own border mask. Max is separable: this kernel takes the
max of 3 columns along each input row once (`windows.row_taps`) and the max of 3 such
row maxima per output row, carrying the shared row (2*oh + 1 is the top of output row
oh + 1) to the next. A border tap outside the image is replaced by the window's centre,
which is always inside, so no -inf fill is needed.
"""
from __future__ import annotations

from ..lang import SIMD, Param, Tensor, float32, int32, kernel, parallelize, select
from .windows import across_row, row_taps, store_row, window_masks


@kernel
def max_pool_3x3_s2(x: Tensor[float32, 4], y: Tensor[float32, 4], width: Param = 16):
    c_n = x.shape[1]
    h_n = x.shape[2]
    w_n = int32(x.shape[3])
    oh_n = y.shape[2]
    ow_n = y.shape[3]
    lane = SIMD[int32, width].iota()

    def task(t):
        c = t % c_n
        b = t // c_n
        def columns(ow0, masked):
            """The vector of output columns from ow0, every row; `masked` False: no lane masks."""
            col = int32(2 * ow0 - 1)           # input column of lane 0's left tap
            m = window_masks(lane, col, w_n, width)
            left_ok = (lane * 2 + col >= 0) & (lane * 2 + col < w_n)
            right_ok = lane * 2 + (col + 2) < w_n

            def row_max(r):
                d = row_taps(x, b, c, r, col, m, width, masked)     # columns 2j - 1, 2j, 2j + 1
                if masked:
                    v = max(d[1], max(select(left_ok, d[0], d[1]), select(right_ok, d[2], d[1])))
                else:
                    v = max(d[1], max(d[0], d[2]))
                return v

            keep = lane + int32(ow0) < int32(ow_n)
            top = row_max(0)                   # output row 0 has no row above the image
            for oh in range(oh_n):
                mid = row_max(2 * oh)
                bot = row_max(2 * oh + 1) if 2 * oh + 1 < h_n else mid
                store_row(y, b, c, oh, ow0, max(top, max(mid, bot)), keep, masked, oh + 1 == oh_n, ow_n, width)
                top = bot

        across_row(columns, ow_n, x.shape[3], width, 2)

    parallelize(task, x.shape[0] * c_n)

