"""The im2col of 3x3 stride-2 convolutions (ResNet's downsampling 3x3 layers), in the
kernel language: each input row is loaded once per vector of outputs for its three column
taps (`windows.row_taps`), where the generic im2col loads every tap separately."""
from __future__ import annotations

from ..lang import SIMD, Param, Tensor, float32, int32, kernel, parallelize, unroll
from .windows import across_row, row_taps, window_masks


@kernel
def im2col_3x3_s2(x: Tensor[float32, 4], col: Tensor[float32, 5], width: Param = 16):
    """col[b*C + c, kh, kw, oh, ow] = x[b, c, 2oh - 1 + kh, 2ow - 1 + kw], 0 outside the image
    (the im2col op's [n, group, C/group, kh, kw, oh, ow] with its leading dims merged)."""
    c_n = x.shape[1]
    h_n = x.shape[2]
    w_n = int32(x.shape[3])
    oh_n = col.shape[3]
    ow_n = col.shape[4]
    lane = SIMD[int32, width].iota()
    zero = SIMD[float32, width](0.0)

    def task(t):
        c = t % c_n
        b = t // c_n
        def columns(ow0, masked):
            """The vector of output columns from ow0, every row; `masked` False: no lane masks."""
            start = int32(2 * ow0 - 1)
            m = window_masks(lane, start, w_n, width)
            keep = lane + int32(ow0) < int32(ow_n)

            def put(kh, kw, oh, v):
                if masked:
                    col.store(t, kh, kw, oh, ow0, v, mask=keep)
                else:
                    col.store(t, kh, kw, oh, ow0, v)

            for oh in range(oh_n):
                for kh in unroll(3):
                    r = 2 * oh - 1 + kh
                    if r >= 0 and r < h_n:
                        d = row_taps(x, b, c, r, start, m, width, masked)
                        for kw in unroll(3):
                            put(kh, kw, oh, d[kw])
                    else:
                        for kw in unroll(3):
                            put(kh, kw, oh, zero)

        across_row(columns, ow_n, x.shape[3], width, 2)

    parallelize(task, x.shape[0] * c_n)
