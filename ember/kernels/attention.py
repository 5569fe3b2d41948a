"""Fused scaled-dot-product attention, in the kernel language.

    out[b, i, h, :] = softmax_j(scale * q[b, i, h, :] . k[b, j, h, :] + bias[b, h, i, j]) @ v[b, j, h, :]

q, v and out are in the [batch, seq, heads, head_dim] layout the projections produce, so the
transposes around attention disappear; K arrives transposed, [batch, heads, head_dim, keys],
so scores are computed `width` keys per vector. Each task of the pool takes R query rows of
one head and walks the keys in blocks of KB vectors with the online softmax (running max and
sum, the accumulators rescaled when the max grows): the score matrix is never stored, only
R x KB score vectors live in registers, and exp runs once per score. The bias broadcasts over
its size-1 dims (an attention mask [batch, 1, 1, keys], a causal mask [1, 1, seq, keys]);
key blocks it masks out for every row of a task are skipped (half the work under a causal
mask). R, KB and width come from kernels.attention_tile. `nan_zero` gives 0 for the rows whose
softmax is NaN (every key masked by -inf, or NaN or +inf scores), as the exporters' guard
Where(IsNaN(p), 0, p) after the softmax does.
"""
from __future__ import annotations

import math

from ..lang import SIMD, Param, Tensor, exp, float32, fma, int64, kernel, parallelize, select, unroll

W = 16


@kernel
def attention_bshd(q: Tensor[float32, 4], kt: Tensor[float32, 4], v: Tensor[float32, 4],
                   bias: Tensor[float32, 4], out: Tensor[float32, 4],
                   scale: Param = 1.0, D: Param = 64, R: Param = 4, KB: Param = 2,
                   nan_zero: Param = 0, width: Param = W):
    s_len = q.shape[1]
    heads = q.shape[2]
    t_len = kt.shape[3]
    nblk = (s_len + R - 1) // R
    C = D // width
    lane = SIMD[int64, width].iota()

    def task(t):
        b = t // (heads * nblk)
        h = (t // nblk) % heads
        i0 = (t % nblk) * R
        bb = min(b, bias.shape[0] - 1)
        bh = min(h, bias.shape[1] - 1)
        rows = [min(i0 + r, s_len - 1) for r in range(R)]
        brow = [min(rows[r], bias.shape[2] - 1) for r in range(R)]
        m = [float32(-math.inf) for r in range(R)]
        lsum = [float32(0.0) for r in range(R)]
        acc = [SIMD[float32, width](0.0) for x in range(R * C)]
        for j0 in range(0, t_len, KB * width):
            mask = [lane + (j0 + u * width) < t_len for u in range(KB)]
            # A block whose bias is at most -1e30 for all R rows (the far side of a causal
            # mask: -inf, or the float32 minimum exporters use) adds exp(~-1e30 - m) = 0 to
            # every row that has already seen a live key: skip it. A row with no live key yet
            # keeps it (a fully masked row still gets softmax's uniform answer), and a NaN in
            # the bias compares false, so it stays live and shows.
            live = SIMD[float32, width](0.0)
            for r in unroll(R):
                live += SIMD[float32, width](select(m[r] > -1e29, 0.0, 1.0))
                for u in unroll(KB):
                    bv = bias.load[width](bb, bh, brow[r], j0 + u * width, mask=mask[u])
                    live += select(mask[u], select(bv <= -1e30, 0.0, 1.0), 0.0)
            if live.reduce_add() == 0.0:
                continue
            sc = [SIMD[float32, width](0.0) for x in range(R * KB)]
            for d in range(D):
                kv = [kt.load[width](b, h, d, j0 + u * width, mask=mask[u]) for u in range(KB)]
                for r in unroll(R):
                    qv = SIMD[float32, width](q[b, rows[r], h, d])
                    for u in unroll(KB):
                        sc[r * KB + u] = fma(qv, kv[u], sc[r * KB + u])
            for r in unroll(R):
                vmax = SIMD[float32, width](-math.inf)
                for u in unroll(KB):
                    x = sc[r * KB + u] * scale + bias.load[width](bb, bh, brow[r], j0 + u * width, mask=mask[u])
                    x = select(mask[u], x, -math.inf)
                    sc[r * KB + u] = x
                    vmax = select(x > vmax, x, vmax)        # vmaxps; no NaN bookkeeping
                blk = vmax.reduce_max()
                top = blk if blk > m[r] else m[r]
                shift = top if top > -math.inf else float32(0.0)     # a fully masked row
                alpha = exp(m[r] - shift)
                tot = SIMD[float32, width](0.0)
                for u in unroll(KB):
                    e = exp(sc[r * KB + u] - shift)
                    sc[r * KB + u] = e
                    tot += e
                lsum[r] = lsum[r] * alpha + tot.reduce_add()
                m[r] = top
                for c in unroll(C):
                    acc[r * C + c] = acc[r * C + c] * alpha
            for u in unroll(KB):
                for jj in unroll(width):
                    j = min(j0 + u * width + jj, t_len - 1)     # past the end: p is 0
                    vv = [v.load[width](b, j, h, c * width) for c in range(C)]
                    for r in unroll(R):
                        pj = SIMD[float32, width](sc[r * KB + u][jj])
                        for c in unroll(C):
                            acc[r * C + c] = fma(pj, vv[c], acc[r * C + c])
        for r in unroll(R):
            if i0 + r < s_len:
                inv = 1.0 / lsum[r]
                for c in unroll(C):
                    o = acc[r * C + c] * inv
                    if nan_zero:    # softmax's NaN rows (every key masked, or NaN scores) give 0
                        o = select(SIMD[float32, width](lsum[r]) > 0.0, o, 0.0)
                    out.store(b, i0 + r, h, c * width, o)

    parallelize(task, q.shape[0] * heads * nblk)
