"""Softmax and layer normalisation over the last axis, in the kernel language.

Each row is one task of the thread pool; within a row, SIMD passes with masked tails:
softmax reads the row for its maximum, writes exp(x - max) while summing, then scales by
1/sum (exp evaluated once per element, with the vector exp of `ember.kernels.math`);
layer norm makes the two-pass mean/variance (numerically the same as the decomposed form)
and writes (x - mean) * rsqrt(var + eps) * scale + bias.
"""
from __future__ import annotations

import math

from ..lang import SIMD, Param, Tensor, exp, float32, int64, kernel, parallelize, select, sqrt

W = 16      # lanes; 16 float32 fill an AVX-512 register, two AVX2 registers


@kernel
def softmax_rows(x: Tensor[float32, 2], y: Tensor[float32, 2], width: Param = W):
    n = x.shape[1]
    lane = SIMD[int64, width].iota()

    def row(i):
        m = SIMD[float32, width](-math.inf)
        for j in range(0, n, width):
            mask = lane + j < n
            m = max(m, select(mask, x.load[width](i, j, mask=mask), -math.inf))
        top = m.reduce_max()
        s = SIMD[float32, width](0.0)
        for j in range(0, n, width):
            mask = lane + j < n
            e = exp(x.load[width](i, j, mask=mask) - top)
            y.store(i, j, e, mask=mask)
            s += select(mask, e, 0.0)
        inv = 1.0 / s.reduce_add()
        for j in range(0, n, width):
            mask = lane + j < n
            y.store(i, j, y.load[width](i, j, mask=mask) * inv, mask=mask)

    parallelize(row, x.shape[0])


@kernel
def layer_norm_rows(x: Tensor[float32, 2], scale: Tensor[float32, 1], bias: Tensor[float32, 1],
                    y: Tensor[float32, 2], epsilon: Param = 1e-5, width: Param = W):
    n = x.shape[1]
    lane = SIMD[int64, width].iota()
    inv_n = 1.0 / float32(n)

    def row(i):
        s = SIMD[float32, width](0.0)
        for j in range(0, n, width):
            s += x.load[width](i, j, mask=lane + j < n)       # masked-off lanes load 0
        mean = s.reduce_add() * inv_n
        q = SIMD[float32, width](0.0)
        for j in range(0, n, width):
            mask = lane + j < n
            d = select(mask, x.load[width](i, j, mask=mask) - mean, 0.0)
            q += d * d
        inv = 1.0 / sqrt(q.reduce_add() * inv_n + epsilon)
        for j in range(0, n, width):
            mask = lane + j < n
            d = x.load[width](i, j, mask=mask) - mean
            out = d * inv * scale.load[width](j, mask=mask) + bias.load[width](j, mask=mask)
            y.store(i, j, out, mask=mask)

    parallelize(row, x.shape[0])


