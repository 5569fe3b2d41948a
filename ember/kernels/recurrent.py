"""The recurrences of LSTM, GRU and RNN as native loops over time, in the kernel language.

The input projections x @ W^T + biases of every step arrive precomputed as one GEMM over the
whole sequence (`xp`, [T, B, gates * H], ONNX's gate order); what is left is the part that
cannot be batched over time: per step, h_prev @ R^T and the gates. One task of the pool takes
`rows` batch rows through their whole sequences (rows are independent), so no step waits for
another thread. Within a step, `width` hidden units at a time get all their gates'
accumulators (4 for LSTM) for each of the task's rows, summed over h_prev's elements against
R^T loaded once for all of them; then the gate functions and the new state at once: the gates
never reach memory. R^T arrives packed (`rt`, [ceil(H / 16), H, gates, 16]: R^T[k, g*H + j]
at [j // 16, k, g, j % 16], zero past H) so that one block of hidden units streams through
contiguous memory; rows of plain R^T lie gates * H * 4 bytes apart, a page or more for
H >= 256, and read that way each load of a step missed the TLB. A task whose rows have different
lengths runs to the longest, each row's state frozen past its own.

Everything lands in one output `out`, [T + 2, B, H]: rows 0..T-1 are Y (0 past a row's
length), row T the final h (it holds the initial h while the first step reads it), row T + 1
the LSTM cell state (updated in place) or, for GRU with linear_before_reset=0, the scratch
r * h_prev that the candidate's product reads. A row of length n visits steps 0..n-1, or
n-1..0 when `reverse` (ONNX's reverse direction, per row). `clip` > 0 bounds every gate
input to [-clip, clip]. The gate functions are ONNX's defaults (sigmoid, tanh, tanh); other
activations are unrolled by the frontend instead.
"""
from __future__ import annotations

from ..lang import SIMD, Param, Tensor, exp, float32, fma, int64, kernel, parallelize, tanh, unroll

W = 16


def sigmoid(x):
    return 1.0 / (1.0 + exp(-x))


def clipped(x, clip):
    return min(max(x, -clip), clip) if clip > 0.0 else x


def start(out, src, b, row, hid, width):
    """out[row, b, :] = src[b, :] (the initial state where the steps read it)."""
    lane = SIMD[int64, width].iota()
    for j in range(0, hid, width):
        mask = lane + j < hid
        out.store(row, b, j, src.load[width](b, j, mask=mask), mask=mask)


def finish(out, b, n, steps, hid, reverse, width):
    """Row b's final h into row T (the initial h, already there, when n is 0) and its
    outputs past its length zeroed."""
    lane = SIMD[int64, width].iota()
    last = 0 if reverse else n - 1
    for j in range(0, hid, width):
        mask = lane + j < hid
        if n > 0:
            out.store(steps, b, j, out.load[width](last, b, j, mask=mask), mask=mask)
        for t in range(n, steps):
            out.store(t, b, j, SIMD[float32, width](0.0), mask=mask)


def length(lens, b, steps):
    return min(max(lens[min(b, lens.shape[0] - 1)], 0), steps)


def step_of(n, s, steps, reverse):
    """The time step a row of length n visits at its s-th step (clamped into the sequence
    for a row already past its length, whose results are not stored)."""
    return min(max(n - 1 - s if reverse else s, 0), steps - 1)


def previous(t, s, steps, reverse):
    """The row of `out` holding h before step t: the initial h (row T) at the first step."""
    return steps if s == 0 else (t + 1 if reverse else t - 1)


def over_tiles(tile, batch, rows):
    """tile(first row, R) over the batch on the pool: R = rows, then single rows for the rest."""
    full = batch // rows

    def task(t):
        if t < full:
            tile(t * rows, rows)
        else:
            tile(full * rows + t - full, 1)

    parallelize(task, full + batch - full * rows)


@kernel
def lstm_sequence(xp: Tensor[float32, 3], rt: Tensor[float32, 4], h0: Tensor[float32, 2], c0: Tensor[float32, 2],
                  peep: Tensor[float32, 1], lens: Tensor[int64, 1], out: Tensor[float32, 3],
                  reverse: Param = 0, clip: Param = 0.0, rows: Param = 4, width: Param = W):
    steps = xp.shape[0]
    batch = xp.shape[1]
    hid = rt.shape[1]
    lane = SIMD[int64, width].iota()

    def tile(b0, R):
        bs = [b0 + r for r in range(R)]
        ns = [length(lens, bs[r], steps) for r in range(R)]
        top = 0
        for r in unroll(R):
            start(out, h0, bs[r], steps, hid, width)
            start(out, c0, bs[r], steps + 1, hid, width)
            top = max(top, ns[r])
        for s in range(top):
            ts = [step_of(ns[r], s, steps, reverse) for r in range(R)]
            prev = [previous(ts[r], s, steps, reverse) for r in range(R)]
            for j in range(0, hid, width):
                mask = lane + j < hid
                acc = [xp.load[width](ts[x // 4], bs[x // 4], (x % 4) * hid + j, mask=mask) for x in range(R * 4)]
                for k in range(hid):
                    ws = [rt.load[width](j // 16, k, g, j % 16, mask=mask) for g in range(4)]
                    for r in unroll(R):
                        hk = SIMD[float32, width](out[prev[r], bs[r], k])
                        for g in unroll(4):
                            acc[r * 4 + g] = fma(hk, ws[g], acc[r * 4 + g])
                for r in unroll(R):
                    if s < ns[r]:
                        c = out.load[width](steps + 1, bs[r], j, mask=mask)
                        gi = fma(peep.load[width](j, mask=mask), c, acc[r * 4])
                        gf = fma(peep.load[width](2 * hid + j, mask=mask), c, acc[r * 4 + 2])
                        c = sigmoid(clipped(gf, clip)) * c + sigmoid(clipped(gi, clip)) * tanh(clipped(acc[r * 4 + 3],
                                                                                                     clip))
                        go = fma(peep.load[width](hid + j, mask=mask), c, acc[r * 4 + 1])
                        out.store(steps + 1, bs[r], j, c, mask=mask)
                        out.store(ts[r], bs[r], j, sigmoid(clipped(go, clip)) * tanh(c), mask=mask)
        for r in unroll(R):
            finish(out, bs[r], ns[r], steps, hid, reverse, width)

    over_tiles(tile, batch, rows)


@kernel
def gru_sequence(xp: Tensor[float32, 3], rt: Tensor[float32, 4], h0: Tensor[float32, 2], rbh: Tensor[float32, 1],
                 lens: Tensor[int64, 1], out: Tensor[float32, 3],
                 reverse: Param = 0, clip: Param = 0.0, linear_before_reset: Param = 0, rows: Param = 4,
                 width: Param = W):
    steps = xp.shape[0]
    batch = xp.shape[1]
    hid = rt.shape[1]
    lane = SIMD[int64, width].iota()
    G = 3 if linear_before_reset else 2       # the gates summed in the first pass

    def tile(b0, R):
        bs = [b0 + r for r in range(R)]
        ns = [length(lens, bs[r], steps) for r in range(R)]
        top = 0
        for r in unroll(R):
            start(out, h0, bs[r], steps, hid, width)
            top = max(top, ns[r])
        for s in range(top):
            ts = [step_of(ns[r], s, steps, reverse) for r in range(R)]
            prev = [previous(ts[r], s, steps, reverse) for r in range(R)]
            for j in range(0, hid, width):
                mask = lane + j < hid
                acc = [xp.load[width](ts[x // G], bs[x // G], (x % G) * hid + j, mask=mask) if x % G < 2 else
                       rbh.load[width](j, mask=mask) for x in range(R * G)]
                for k in range(hid):
                    ws = [rt.load[width](j // 16, k, g, j % 16, mask=mask) for g in range(G)]
                    for r in unroll(R):
                        hk = SIMD[float32, width](out[prev[r], bs[r], k])
                        for g in unroll(G):
                            acc[r * G + g] = fma(hk, ws[g], acc[r * G + g])
                for r in unroll(R):
                    if s < ns[r]:
                        z = sigmoid(clipped(acc[r * G], clip))
                        rg = sigmoid(clipped(acc[r * G + 1], clip))
                        hp = out.load[width](prev[r], bs[r], j, mask=mask)
                        if linear_before_reset:
                            cand = tanh(clipped(xp.load[width](ts[r], bs[r], 2 * hid + j, mask=mask) +
                                                rg * acc[r * G + 2], clip))
                            out.store(ts[r], bs[r], j, (1.0 - z) * cand + z * hp, mask=mask)
                        else:       # the candidate needs all of r * h_prev: z waits in Y's row
                            out.store(steps + 1, bs[r], j, rg * hp, mask=mask)
                            out.store(ts[r], bs[r], j, z, mask=mask)
            if not linear_before_reset:
                for j in range(0, hid, width):
                    mask = lane + j < hid
                    acc = [xp.load[width](ts[r], bs[r], 2 * hid + j, mask=mask) + rbh.load[width](j, mask=mask)
                           for r in range(R)]
                    for k in range(hid):
                        w = rt.load[width](j // 16, k, 2, j % 16, mask=mask)
                        for r in unroll(R):
                            acc[r] = fma(SIMD[float32, width](out[steps + 1, bs[r], k]), w, acc[r])
                    for r in unroll(R):
                        if s < ns[r]:
                            z = out.load[width](ts[r], bs[r], j, mask=mask)
                            hp = out.load[width](prev[r], bs[r], j, mask=mask)
                            out.store(ts[r], bs[r], j, (1.0 - z) * tanh(clipped(acc[r], clip)) + z * hp, mask=mask)
        for r in unroll(R):
            finish(out, bs[r], ns[r], steps, hid, reverse, width)

    over_tiles(tile, batch, rows)


@kernel
def rnn_sequence(xp: Tensor[float32, 3], rt: Tensor[float32, 4], h0: Tensor[float32, 2], lens: Tensor[int64, 1],
                 out: Tensor[float32, 3], reverse: Param = 0, clip: Param = 0.0, rows: Param = 4, width: Param = W):
    steps = xp.shape[0]
    batch = xp.shape[1]
    hid = rt.shape[1]
    lane = SIMD[int64, width].iota()

    def tile(b0, R):
        bs = [b0 + r for r in range(R)]
        ns = [length(lens, bs[r], steps) for r in range(R)]
        top = 0
        for r in unroll(R):
            start(out, h0, bs[r], steps, hid, width)
            top = max(top, ns[r])
        for s in range(top):
            ts = [step_of(ns[r], s, steps, reverse) for r in range(R)]
            prev = [previous(ts[r], s, steps, reverse) for r in range(R)]
            for j in range(0, hid, width):
                mask = lane + j < hid
                acc = [xp.load[width](ts[r], bs[r], j, mask=mask) for r in range(R)]
                for k in range(hid):
                    w = rt.load[width](j // 16, k, 0, j % 16, mask=mask)
                    for r in unroll(R):
                        acc[r] = fma(SIMD[float32, width](out[prev[r], bs[r], k]), w, acc[r])
                for r in unroll(R):
                    if s < ns[r]:
                        out.store(ts[r], bs[r], j, tanh(clipped(acc[r], clip)), mask=mask)
        for r in unroll(R):
            finish(out, bs[r], ns[r], steps, hid, reverse, width)

    over_tiles(tile, batch, rows)
