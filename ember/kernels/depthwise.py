"""3x3 depthwise convolutions (MobileNet's), in the kernel language: stride 2 (its
downsampling layers) and stride 1 on rows wider than half a vector.

The generic lowering computes each output vector as 9 window taps, each its own masked,
de-interleaving load. Here each input row is loaded once per vector of outputs
(`windows.row_taps`: the column taps 2j-1, 2j, 2j+1 as contiguous lanes), and the row
shared by consecutive output rows (2*oh + 1) is carried to the next. Taps outside the
image read 0 (the zero padding of the convolution). Only the vectors at the row's borders
carry lane masks (`windows.across_row`): on AVX2 a masked load or store is `vmaskmovps`, and
the masks took registers the taps need (a 32-channel 112x112 layer: 0.37 -> 0.22 ms).

The tasks are (band of output rows, image, channel), bands outermost: the pool hands each
thread a contiguous share of tasks, so on large images (`bands` = 2) a thread computes the
same rows of every channel, the pixels that its share of the 1x1 convolutions before and
after (split by pixel columns) also covers. The data then stays in that core's cache, where
a split by channel had half of the next layer's input cross between the cores (~100 ns a
line here, ~400 ns when the two vCPUs sit far apart). A band starts by loading the input
row above it.
"""
from __future__ import annotations

from ..lang import SIMD, Param, Tensor, float32, fma, int32, kernel, parallelize, unroll
from .windows import across_row, row_taps, store_row, window_masks


def band_task(t, c_n, b_n, oh_n, bands):
    """Task t's channel, image and band of output rows [oh0, oh1), bands outermost (inlined)."""
    rows = (oh_n + bands - 1) // bands
    oh0 = t // (c_n * b_n) * rows
    return [t % c_n, (t // c_n) % b_n, oh0, min(oh0 + rows, oh_n)]


def window_sum(tap, k):
    """sum(tap[i] * k[i]) over the 9 taps, as three chains of one window row each (inlined):
    one chain of 9 dependent FMAs is 9 FMA latencies per output vector, more than the
    out-of-order window overlaps across rows."""
    part = [tap[3 * r] * k[3 * r] for r in range(3)]
    for r in unroll(3):
        part[r] = fma(tap[3 * r + 1], k[3 * r + 1], part[r])
        part[r] = fma(tap[3 * r + 2], k[3 * r + 2], part[r])
    return part[0] + part[1] + part[2]


@kernel
def depthwise_3x3_s2(x: Tensor[float32, 4], w: Tensor[float32, 4], y: Tensor[float32, 4], width: Param = 16,
                     bands: Param = 1):
    c_n = x.shape[1]
    h_n = x.shape[2]
    w_n = int32(x.shape[3])
    oh_n = y.shape[2]
    ow_n = y.shape[3]
    lane = SIMD[int32, width].iota()

    def task(t):
        at = band_task(t, c_n, x.shape[0], oh_n, bands)
        c = at[0]
        b = at[1]
        oh0 = at[2]
        oh1 = at[3]
        k = [SIMD[float32, width](w[c, 0, i // 3, i % 3]) for i in range(9)]

        def columns(ow0, masked):
            """The output vector at column ow0 down the band; `masked` False: no lane masks."""
            col = int32(2 * ow0 - 1)           # input column of lane 0's left tap
            m = window_masks(lane, col, w_n, width)     # (unused, so dropped, when not masked)
            zero = SIMD[float32, width](0.0)
            # window rows (top, middle, bottom) x columns (2j-1, 2j, 2j+1)
            tap = [zero for i in range(9)]

            def load(r, s):
                """Columns 2j-1, 2j, 2j+1 of input row r into tap[s:s+3], 0 outside the image."""
                if r >= 0 and r < h_n:
                    d = row_taps(x, b, c, r, col, m, width, masked)
                    tap[s] = d[0]
                    tap[s + 1] = d[1]
                    tap[s + 2] = d[2]
                else:
                    tap[s] = zero
                    tap[s + 1] = zero
                    tap[s + 2] = zero

            keep = lane + int32(ow0) < int32(ow_n)
            load(2 * oh0 - 1, 0)
            for oh in range(oh0, oh1):
                load(2 * oh, 3)
                load(2 * oh + 1, 6)
                acc = window_sum(tap, k)
                store_row(y, b, c, oh, ow0, acc, keep, masked, oh + 1 == oh1, ow_n, width)
                tap[0] = tap[6]
                tap[1] = tap[7]
                tap[2] = tap[8]

        across_row(columns, ow_n, x.shape[3], width, 2)

    parallelize(task, bands * x.shape[0] * c_n)


@kernel
def depthwise_3x3_s1(x: Tensor[float32, 4], w: Tensor[float32, 4], y: Tensor[float32, 4], width: Param = 16,
                     bands: Param = 1):
    """3x3 stride-1 pad-1 depthwise convolution, same size out as in (MobileNet's layers on
    rows wider than half a vector). Per vector of outputs, the three column taps of each
    input row are three shifted loads; each input row is loaded once and kept for the two
    output rows below it, so a row of outputs costs 3 loads and 9 FMAs instead of 9 masked
    loads (the generic lowering)."""
    c_n = x.shape[1]
    h_n = x.shape[2]
    w_n = int32(x.shape[3])
    lane = SIMD[int32, width].iota()

    def task(t):
        at = band_task(t, c_n, x.shape[0], h_n, bands)
        c = at[0]
        b = at[1]
        oh0 = at[2]
        oh1 = at[3]
        k = [SIMD[float32, width](w[c, 0, i // 3, i % 3]) for i in range(9)]

        def columns(ow0, masked):
            """The output vector at column ow0 down the band; `masked` False: no lane masks."""
            col = int32(ow0 - 1)           # input column of lane 0's left tap
            left = (lane + col >= 0) & (lane + col < w_n)
            mid = lane + (col + 1) < w_n
            right = lane + (col + 2) < w_n
            zero = SIMD[float32, width](0.0)
            tap = [zero for i in range(9)]          # window rows (top, middle, bottom) x columns

            def load(r, s):
                """Columns ow-1, ow, ow+1 of input row r into tap[s:s+3], 0 outside the image."""
                if r >= 0 and r < h_n:
                    if masked:
                        tap[s] = x.load[width](b, c, r, col, mask=left)
                        tap[s + 1] = x.load[width](b, c, r, col + 1, mask=mid)
                        tap[s + 2] = x.load[width](b, c, r, col + 2, mask=right)
                    else:
                        tap[s] = x.load[width](b, c, r, col)
                        tap[s + 1] = x.load[width](b, c, r, col + 1)
                        tap[s + 2] = x.load[width](b, c, r, col + 2)
                else:
                    tap[s] = zero
                    tap[s + 1] = zero
                    tap[s + 2] = zero

            load(oh0 - 1, 0)
            load(oh0, 3)
            for oh in range(oh0, oh1):
                load(oh + 1, 6)
                acc = window_sum(tap, k)
                store_row(y, b, c, oh, ow0, acc, mid, masked, oh + 1 == oh1, y.shape[3], width)
                for i in unroll(6):
                    tap[i] = tap[i + 3]

        across_row(columns, y.shape[3], x.shape[3], width, 1)

    parallelize(task, bands * x.shape[0] * c_n)
