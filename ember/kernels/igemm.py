"""Integer GEMM in the kernel language: C = A @ B exactly, int16 operands, int32 results.

The quantized ops (MatMulInteger, QLinearMatMul) reach this kernel with both zero points
already subtracted: a uint8 or int8 value minus its zero point lies in [-255, 255], so the
products are exact in int16 x int16 -> int32, and the pairwise multiply-add of x86
(`vpmaddwd`: two int16 products summed into one int32 lane, exact for these operands) does
16 (AVX2) or 32 (AVX-512) multiply-adds per instruction against 8 or 16 for a float32 FMA.
The kernel spells that operation out — widen, multiply, add the even and odd lanes — and
LLVM selects `vpmaddwd` for it (with AVX512-VNNI, `vpdpwssd`, the add included); other
targets get the same exact arithmetic from their own instructions.

B is a constant packed at compile time (`ir.ops.pack_int_pairs`) into blocks of 16 columns and pairs
of k: b[k, n] at bp[n // 16, k // 2, n % 16, k % 2], so one vector load reads `width`
columns for two k, and a block of one k pair is one cache line. An odd K gets a zero row.
Each pool task owns an MR x (NB blocks of 16) tile of C in accumulators: per k pair it
broadcasts each row's two A values as one int32 and multiply-adds them against the tile's
B vectors. Tasks walk the row blocks of one panel of B before the next (the panel stays in
cache while A streams past). Column tails use masked stores; row tails clamp the A row and
skip the store. The tile comes from `kernels.int_gemm_tile`.

The convolutions (ConvInteger, QLinearConv) use the same arithmetic with the constant weights
on the left (`weights_matmul_i16`), after `pack_columns_i16` has packed their columns.
"""
from __future__ import annotations

from ..lang import SIMD, Param, Tensor, bitcast, int16, int32, int64, kernel, parallelize, select, shuffle, unroll

BLOCK = 16      # columns per packed block of B


@kernel
def matmul_i16(a: Tensor[int16, 2], bp: Tensor[int16, 4], c: Tensor[int32, 2],
               MR: Param = 5, NB: Param = 1, width: Param = 8):
    m = a.shape[0]
    k_dim = a.shape[1]
    n = c.shape[1]
    V = BLOCK // width                  # vectors per block
    nblk_m = (m + MR - 1) // MR
    npan = (bp.shape[0] + NB - 1) // NB
    lane = SIMD[int64, width].iota()

    def madd(acc, ap, bv):
        """acc + the sums of adjacent pairs of ap * bv (vpmaddwd)."""
        p = ap * bv
        return acc + (shuffle(p, p, (2 * i for i in range(width))) + shuffle(p, p, (2 * i + 1 for i in range(width))))

    def tile(t):
        jp = t // nblk_m
        i0 = (t % nblk_m) * MR
        rows = [min(i0 + r, m - 1) for r in range(MR)]
        blocks = [min(jp * NB + q, bp.shape[0] - 1) for q in range(NB)]
        acc = [SIMD[int32, width](0) for s in range(MR * NB * V)]
        for kk in range(k_dim // 2):
            bv = [SIMD[int32, 2 * width](bp.load[2 * width](blocks[q // V], kk, (q % V) * width, 0))
                  for q in range(NB * V)]
            for r in unroll(MR):
                # a[row, 2kk] and a[row, 2kk + 1] as one int32, broadcast: the pairs of B's vector
                pair = bitcast(a.load[2](rows[r], 2 * kk), int32)
                ap = SIMD[int32, 2 * width](bitcast(SIMD[int32, width](pair), int16))
                for q in unroll(NB * V):
                    acc[r * NB * V + q] = madd(acc[r * NB * V + q], ap, bv[q])
        if k_dim % 2 == 1:
            # the last k alone: its pair's high half of B is the zero row, so A's is never read
            kk = k_dim // 2
            bv = [SIMD[int32, 2 * width](bp.load[2 * width](blocks[q // V], kk, (q % V) * width, 0))
                  for q in range(NB * V)]
            for r in unroll(MR):
                ap = SIMD[int32, 2 * width](bitcast(SIMD[int32, width](int32(a[rows[r], k_dim - 1])), int16))
                for q in unroll(NB * V):
                    acc[r * NB * V + q] = madd(acc[r * NB * V + q], ap, bv[q])
        for r in unroll(MR):
            if i0 + r < m:
                for q in unroll(NB * V):
                    j0 = (jp * NB + q // V) * BLOCK + (q % V) * width
                    if j0 < n:          # (a clamped block past the last is not stored twice)
                        c.store(i0 + r, j0, acc[r * NB * V + q], mask=lane + j0 < n)

    parallelize(tile, nblk_m * npan)


@kernel
def pack_columns_i16(x: Tensor[int16, 3], out: Tensor[int16, 3]):
    """The convolutions' columns x [images, K, P] by blocks of 16 pixels and pairs of k:
    x[i, k, p] at out[i * ceil(P/16) + p // 16, k // 2, 2 * (p % 16) + k % 2] (zero beyond K
    and P), so that the GEMM reads one contiguous line per pixel block and k pair. Each task
    packs one pixel block: two rows of 16 pixels loaded, interleaved by two shuffles."""
    k_dim = x.shape[1]
    pix = x.shape[2]
    pb = (pix + 15) // 16
    lane = SIMD[int64, 16].iota()
    zero = SIMD[int16, 16](0)

    def task(t):
        img = t // pb
        p0 = (t % pb) * 16
        live = lane + p0 < pix
        for kk in range(out.shape[1]):
            r0 = x.load[16](img, 2 * kk, p0, mask=live)
            r1 = select(2 * kk + 1 < k_dim, x.load[16](img, min(2 * kk + 1, k_dim - 1), p0, mask=live), zero)
            out.store(t, kk, 0, shuffle(r0, r1, (i // 2 + 16 * (i % 2) for i in range(16))))
            out.store(t, kk, 16, shuffle(r0, r1, (8 + i // 2 + 16 * (i % 2) for i in range(16))))

    parallelize(task, x.shape[0] * pb)


@kernel
def weights_matmul_i16(ap: Tensor[int32, 2], b: Tensor[int16, 3], c: Tensor[int32, 3],
                       MR: Param = 5, width: Param = 8):
    """c[i, m, p] = sum_k w[m, k] * x[i, k, p]: the convolutions' GEMM, the constant weights
    as the left operand. ap holds w by pairs of k, one int32 per pair ([M, ceil(K/2)]: its
    low half the even k); b the columns as `pack_columns_i16` wrote them, so a vector load
    reads `width` pixels for two k. A task owns MR output channels x one block of 16 pixels
    of one image; stores past the pixel count (c's last dim) are masked."""
    mo = ap.shape[0]
    k2 = ap.shape[1]
    pix = c.shape[2]
    V = 16 // width
    nblk_m = (mo + MR - 1) // MR
    pb = (pix + 15) // 16
    lane = SIMD[int64, width].iota()

    def madd(acc, av, bv):
        """acc + the sums of adjacent pairs of av * bv (vpmaddwd)."""
        p = av * bv
        return acc + (shuffle(p, p, (2 * i for i in range(width))) + shuffle(p, p, (2 * i + 1 for i in range(width))))

    def tile(t):
        blk = t // nblk_m                   # image * pb + pixel block
        img = blk // pb
        p0 = (blk % pb) * 16
        i0 = (t % nblk_m) * MR
        rows = [min(i0 + r, mo - 1) for r in range(MR)]
        acc = [SIMD[int32, width](0) for s in range(MR * V)]
        for kk in range(k2):
            bv = [SIMD[int32, 2 * width](b.load[2 * width](blk, kk, q * 2 * width)) for q in range(V)]
            for r in unroll(MR):
                av = SIMD[int32, 2 * width](bitcast(SIMD[int32, width](ap[rows[r], kk]), int16))
                for q in unroll(V):
                    acc[r * V + q] = madd(acc[r * V + q], av, bv[q])
        for r in unroll(MR):
            if i0 + r < mo:
                for q in unroll(V):
                    j0 = p0 + q * width
                    if j0 < pix:
                        c.store(img, i0 + r, j0, acc[r * V + q], mask=lane + j0 < pix)

    parallelize(tile, c.shape[0] * pb * nblk_m)
