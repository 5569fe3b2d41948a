"""A register-blocked SGEMM micro-kernel in the kernel language: C = A @ B (float32).

Each task of the thread pool owns MR rows of C; for every NR*W-column block it keeps an
MR x NR tile of `SIMD[float32, W]` accumulators in registers, and per k broadcasts one
element of A against NR vectors of B with FMAs (MR*NR FMAs per MR + NR loads). Column
tails use masked loads/stores, row tails clamp the A row and skip the store. No packing
or cache blocking yet: this is the shape the engine's generated micro-kernel has today
(`ember.codegen.lower.Lowering.lower_matmul`), expressed in the language.
"""
from __future__ import annotations

from ..lang import SIMD, Param, Tensor, float32, fma, int64, kernel, parallelize, unroll


@kernel
def matmul_f32(a: Tensor[float32, 2], b: Tensor[float32, 2], c: Tensor[float32, 2],
               MR: Param = 6, NR: Param = 2, W: Param = 16):
    m = a.shape[0]
    k_dim = a.shape[1]
    n = b.shape[1]
    lane = SIMD[int64, W].iota()

    def row_block(ib):
        i0 = ib * MR
        for j0 in range(0, n, NR * W):
            mask = [lane + (j0 + q * W) < n for q in range(NR)]
            acc = [SIMD[float32, W](0.0) for t in range(MR * NR)]
            for k in range(k_dim):
                bv = [b.load[W](k, j0 + q * W, mask=mask[q]) for q in range(NR)]
                for r in unroll(MR):
                    av = SIMD[float32, W](a[min(i0 + r, m - 1), k])
                    for q in unroll(NR):
                        acc[r * NR + q] = fma(av, bv[q], acc[r * NR + q])
            for r in unroll(MR):
                if i0 + r < m:
                    for q in unroll(NR):
                        c.store(i0 + r, j0 + q * W, acc[r * NR + q], mask=mask[q])

    parallelize(row_block, (m + MR - 1) // MR)
