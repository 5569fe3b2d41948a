"""SGEMM in the kernel language: C = A @ B (float32).

`matmul_f32` is the plain register-blocked micro-kernel over row-major B. `matmul_packed_f32`
is the form the engine uses for weights: B packed once (`pack_b`) into [N/(NR*W)][K][NR*W]
column panels, so per k the tile reads NR vectors from one contiguous line; each task of the
thread pool owns an MR x (NR*W) tile of C held in MR*NR `SIMD[float32, W]` accumulators, and
tasks walk the row blocks of one panel before the next (the panel stays in cache while A
streams past). Column tails use masked stores, row tails clamp the A row and skip the store.
The engine's model GEMMs (`ember.codegen.lower.Lowering.lower_matmul`) generate this same tile
in loop IR directly, because their epilogue is whatever the fusion pass attached.
"""
from __future__ import annotations

import numpy as np

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


def pack_b(b: np.ndarray, panel: int = 32) -> np.ndarray:
    """[K, N] -> [ceil(N/panel), K, panel] column panels, zero-padded."""
    k, n = b.shape
    npan = -(-n // panel)
    pad = np.zeros((k, npan * panel), np.float32)
    pad[:, :n] = b
    return np.ascontiguousarray(pad.reshape(k, npan, panel).transpose(1, 0, 2))


@kernel
def matmul_packed_f32(a: Tensor[float32, 2], bp: Tensor[float32, 3], c: Tensor[float32, 2],
                      MR: Param = 12, NR: Param = 2, W: Param = 16):
    m = a.shape[0]
    k_dim = a.shape[1]
    n = c.shape[1]
    nblk_m = (m + MR - 1) // MR
    lane = SIMD[int64, W].iota()

    def tile(t):
        jb = t // nblk_m
        i0 = (t % nblk_m) * MR
        j0 = jb * (NR * W)
        acc = [SIMD[float32, W](0.0) for s in range(MR * NR)]
        for k in range(k_dim):
            bv = [bp.load[W](jb, k, q * W) for q in range(NR)]
            for r in unroll(MR):
                av = SIMD[float32, W](a[min(i0 + r, m - 1), k])
                for q in unroll(NR):
                    acc[r * NR + q] = fma(av, bv[q], acc[r * NR + q])
        mask = [lane + (j0 + q * W) < n for q in range(NR)]
        for r in unroll(MR):
            if i0 + r < m:
                for q in unroll(NR):
                    c.store(i0 + r, j0 + q * W, acc[r * NR + q], mask=mask[q])

    parallelize(tile, nblk_m * bp.shape[0])
