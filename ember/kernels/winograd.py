"""Winograd F(2x2, 3x3) convolution transforms, in the kernel language.

A 3x3, stride-1, pad-1 convolution computes each 2x2 block of outputs from a 4x4 input tile
d as  Y = At [(G g Gt) * (Bt d B)] A  (Lavin & Gray, 2015): 16 products per tile and input
channel instead of 36, so the GEMM in the middle does 2.25x fewer FLOPs. `ops._conv_winograd`
builds the pipeline: these two kernels, and between them 16 GEMMs (one per tile element xi)
of the pre-transformed weights U[xi] = (G g Gt)[xi], [Cout, Cin], with V[xi], [Cin, tiles].

    winograd_input:  x [N, C, H, W]      -> v [16, C, N, TH*TW]   (v = Bt d B per tile)
    winograd_output: m [16, K, N, TH*TW] -> y [N, K, H, W]        (y = At m A per tile;
                     from x and the weights directly where that is not finite)

with TH, TW = ceil(H/2), ceil(W/2); tile (ti, tj) reads input rows 2ti-1 .. 2ti+2 and
columns 2tj-1 .. 2tj+2 (0 outside the image) and writes output rows 2ti, 2ti+1 and columns
2tj, 2tj+1. Both kernels work on `width` tiles of one tile row at a time: the stride-2 tile
columns become contiguous lanes through even/odd shuffles (`windows.row_taps`), so the GEMM
operands and every load and store are contiguous vectors. The matrices Bt, G, At are `ops.WINO_*`; these
kernels spell out their +-1 entries as adds and subtracts.
"""
from __future__ import annotations

from ..lang import SIMD, Param, Tensor, float32, fma, int32, kernel, parallelize, shuffle, unroll
from .windows import across_row, row_taps, window_masks


@kernel
def winograd_input(x: Tensor[float32, 4], v: Tensor[float32, 4], width: Param = 16):
    c_n = x.shape[1]
    h_n = x.shape[2]
    w_n = x.shape[3]
    th = (h_n + 1) // 2
    tw = (w_n + 1) // 2
    lane = SIMD[int32, width].iota()

    def tiles(b, c, ti, tj0, masked):
        col = int32(2 * tj0 - 1)               # first input column of tile tj0
        m = window_masks(lane, col, int32(w_n), width)
        e = [SIMD[float32, width](0.0) for k in range(16)]     # e[a*4 + j] = (d B)[a][j]
        for a in unroll(4):
            r = 2 * ti - 1 + a
            if r >= 0 and r < h_n:             # else the padding row: e stays 0
                d = row_taps(x, b, c, r, col, m, width, masked)     # columns 2tj - 1 + t
                e[a * 4 + 0] = d[0] - d[2]
                e[a * 4 + 1] = d[1] + d[2]
                e[a * 4 + 2] = d[2] - d[1]
                e[a * 4 + 3] = d[1] - d[3]
        keep = lane + int32(tj0) < int32(tw)
        out = ti * tw + tj0

        def put(i, val):
            if masked:
                v.store(i, c, b, out, val, mask=keep)
            else:
                v.store(i, c, b, out, val)

        for j in unroll(4):
            put(0 + j, e[0 + j] - e[8 + j])
            put(4 + j, e[4 + j] + e[8 + j])
            put(8 + j, e[8 + j] - e[4 + j])
            put(12 + j, e[4 + j] - e[12 + j])

    def task(t):        # one channel of one image: a task per tile row spent as long on its
        c = t % c_n     # setup (divisions by run-time sizes, 16 store pointers) as on tiles
        b = t // c_n
        for ti in range(th):
            def row(tj0, masked):
                tiles(b, c, ti, tj0, masked)
            across_row(row, tw, w_n, width, 2)

    parallelize(task, x.shape[0] * c_n)


@kernel
def winograd_output(m: Tensor[float32, 4], x: Tensor[float32, 4], g: Tensor[float32, 4],
                    y: Tensor[float32, 4], width: Param = 16):
    """x [N, C, H, W] and g [K, C, 3, 3] are the convolution's input and weights: a vector of
    tiles whose outputs are not all finite is recomputed from them directly (below)."""
    c_n = x.shape[1]
    k_n = y.shape[1]
    h_n = y.shape[2]
    w_n = y.shape[3]
    th = (h_n + 1) // 2
    tw = (w_n + 1) // 2
    lane = SIMD[int32, width].iota()

    def direct(b, k, ti, tj0):
        # The transforms add and subtract neighbouring inputs, so one inf in the input gives
        # inf - inf = NaN over its tiles, where the convolution's sum gives inf (or NaN only
        # where its own terms do). Such vectors are rare; they take the direct sum instead.
        col = int32(2 * tj0 - 1)
        mk = window_masks(lane, col, int32(w_n), width)
        acc = [SIMD[float32, width](0.0) for i in range(4)]     # acc[2r + j]: row 2ti + r, col 2tj + j
        for c in range(c_n):
            for a in unroll(4):
                r_in = 2 * ti - 1 + a
                if r_in >= 0 and r_in < h_n:
                    d = row_taps(x, b, c, r_in, col, mk, width, True)
                    for r in unroll(2):
                        if a - r >= 0 and a - r <= 2:
                            for kw in unroll(3):
                                gv = SIMD[float32, width](g[k, c, a - r, kw])
                                acc[2 * r] = fma(gv, d[kw], acc[2 * r])
                                acc[2 * r + 1] = fma(gv, d[kw + 1], acc[2 * r + 1])
        return acc

    def tiles(b, k, ti, tj0, masked):
        keep = lane + int32(tj0) < int32(tw)
        src = ti * tw + tj0
        mv = [m.load[width](i, k, b, src, mask=keep) if masked else m.load[width](i, k, b, src)
              for i in range(16)]
        out = [SIMD[float32, width](0.0) for i in range(4)]     # out[2r + j]: row 2ti + r, col 2tj + j
        for r in unroll(2):
            # rows of At m: r = 0 sums tile rows 0..2, r = 1 is row 1 - row 2 - row 3
            s = [mv[j] + mv[4 + j] + mv[8 + j] if r == 0 else mv[4 + j] - mv[8 + j] - mv[12 + j]
                 for j in range(4)]
            out[2 * r] = s[0] + s[1] + s[2]             # output column 2tj
            out[2 * r + 1] = s[1] - s[2] - s[3]         # 2tj + 1
        z = (out[0] - out[0]) + (out[1] - out[1]) + (out[2] - out[2]) + (out[3] - out[3])
        if any(z != z):                                 # NaN in a lane: an output is not finite
            dv = direct(b, k, ti, tj0)
            for i in unroll(4):
                out[i] = dv[i]
        for r in unroll(2):
            y0 = out[2 * r]
            y1 = out[2 * r + 1]
            row = 2 * ti + r
            if row < h_n:
                oc = int32(2 * tj0)
                lo = shuffle(y0, y1, ((i // 2) + (i % 2) * width for i in range(width)))
                hi = shuffle(y0, y1, ((i // 2) + width // 2 + (i % 2) * width for i in range(width)))
                if masked:
                    y.store(b, k, row, 2 * tj0, lo, mask=lane + oc < int32(w_n))
                    y.store(b, k, row, 2 * tj0 + width, hi, mask=lane + (oc + width) < int32(w_n))
                else:
                    y.store(b, k, row, 2 * tj0, lo)
                    y.store(b, k, row, 2 * tj0 + width, hi)

    def task(t):        # one output channel of one image
        k = t % k_n
        b = t // k_n
        end = w_n // 2 // width * width        # vectors of tiles whose 2 * width columns all exist
        for ti in range(th):
            for tj0 in range(0, end, width):
                tiles(b, k, ti, tj0, False)
            for tj0 in range(end, tw, width):
                tiles(b, k, ti, tj0, True)

    parallelize(task, y.shape[0] * k_n)
