"""GEMM planning: tile shape, loop order, K slices and prefetches, as a pure function of the
problem's sizes and the `Target` (`plan_gemm`). `codegen.lower.Lowering.lower_matmul` emits
exactly what the plan says; the plan is tested on its own, for machines not at hand
(tests/test_gemm_plan.py).

Two register tilings (both MR x NR vectors of W lanes of accumulators):
  * row tiles: MR rows of C by NR*W columns; per k, MR broadcasts of A against NR vectors of
    B. The usual case (Linear/Gemm, attention, convolutions with many pixels).
  * column tiles: the transpose, for a constant A (convolution weights) and few columns (a
    7x7 or 14x14 image: N = 49 would pad to 64 lanes): vectors run down NR*W rows of A,
    NC columns of B are broadcast, each accumulator is stored as a column.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..ir import symbolic as S
from ..ir.target import Target


@dataclass(frozen=True)
class RowTiles:
    MR: int                     # rows per tile
    tail_mr: int = 0            # > 0: whole tiles of MR rows, then the rest (M mod MR, at run time) in tail_mr-row tiles
    rows_fastest: bool = True   # loop order: row tiles inside column panels (B read once) or the reverse
    guard_rows: bool = False    # the last tile hangs past M: its stores are guarded
    stream_prefetch: bool = False    # prefetch the epilogue's lines of C (and a residual) from the k loop
    next_b_rows: bool = False        # ... and row k of the next column panel of B, into L2
    panel_prefetch: str | None = None  # "b": next packed B panel; "a": next packed A panel; None
    unmasked_full_tiles: bool = False  # without mask registers: full column tiles run without masks
    kc: int = 0                 # > 0: K in slices of kc, each slice of a B panel reused from L1 by all row tiles
    nk: int = 1                 # slices (partial sums kept in kernel scratch between them)
    group: object = 1           # with slices: column panels per task (int or a Dim of M), which
                                # run slice by slice, so A's slice is reused from L2 by all of them
    copy_b: bool = False        # B (an image) copied once per run into [N/NB][K][NB] panels


@dataclass(frozen=True)
class ColTiles:
    NC: int                     # columns of B per tile (broadcast)
    cols_fastest: bool          # column tiles inside row panels (A's panel resident) or the reverse
    kc: int                     # K slice: each slice of A's panel is reused from L1 by the column tiles
    nk: int                     # slices (1: no slicing)
    ngroups: int                # column tiles in groups (with slices), so the pool has tasks to balance
    gsize: int
    by_slice: bool = False      # each group runs slice by slice over every row panel (B's slice stays in L2;
                                # unsliced, nk = 1: the groups split the pixels across the cores)
    pack_b: bool = False        # B's columns copied once per run as [tile][K][NC]: NC consecutive floats a k step
    short: int = 0              # the last `short` tiles take NC - 1 columns: the tiles cover N exactly


@dataclass(frozen=True)
class GemmPlan:
    W: int                      # lanes per vector
    NR: int                     # vectors per tile row (NB = NR * W columns per panel)
    tiles: tuple                # (RowTiles,) or (ColTiles,); with small_m: (below it, the rest)
    small_m: int = 0            # M known only at run time: tiles[0] for M < small_m, tiles[1] otherwise

    @property
    def NB(self) -> int:
        return self.NR * self.W


def pad_eff(n: int, t: int) -> float:
    """The share of useful lanes when n is covered by tiles of t."""
    return n / (-(-n // t) * t)


def choose_mr(m: int, max_mr: int, exact: bool = False) -> int:
    """Rows per register tile: all of them for small M (no wasted FMAs on a GEMV), else the
    largest of 12/8/6/4 rows (at most max_mr) whose padding wastes little; `exact` also tries
    every size from max_mr down to 6 (49 columns: 5 tiles of 10)."""
    if m <= max_mr:
        return max(m, 1)
    sizes = [r for r in ((range(max_mr, 5, -1)) if exact else (12, 8, 6, 4)) if r <= max_mr]
    for r in sizes:
        if ((m + r - 1) // r * r) / m <= 1.0625:
            return r
    return min(sizes, key=lambda r: ((m + r - 1) // r * r, -r))


def plan_gemm(M, N, K, target: Target, *, itemsize: int = 4, f32: bool = True, pack_a: bool = False,
              pack_b: bool = False, implicit: bool = False, nr: int = 2) -> GemmPlan:
    """The plan for C[M, N] = A[M, K] B[K, N] (per batch item), where M, N, K are ints or
    symbolic (anything else: known only at run time). `pack_a` / `pack_b`: that operand is a
    constant packed at compile time into panels; `implicit`: B is read from an image through
    the convolution's windows; `f32`: float32 compute (the packed and column-tile paths)."""
    W = target.lanes(8 * max(itemsize, 4))
    mr = target.gemm_mr(nr)
    NB = nr * W
    static_m, static_kn = isinstance(M, int), isinstance(N, int) and isinstance(K, int)
    if pack_a and not implicit and isinstance(N, int) and f32 and static_m and static_kn:
        # useful lanes times the share of time in FMAs: an accumulator costs K/2 cycles of
        # FMAs plus its epilogue, ~4 cycles stored as a row, ~2.5 a lane as a column (a
        # scatter, and gathers of a residual: ~40 on AVX-512); measured on ResNet/MobileNet
        # 1x1 layers, K=64..2048. Without mask registers, a row tiling's partial last panel
        # loads B and stores C masked (vmaskmovps), at about half speed (Zen 3, 160->960 on
        # 7x7: 0.41 ms by rows, 0.22 by columns)
        nc = choose_mr(N, mr, exact=True)
        panels = -(-N // NB)
        # a partial last panel computes only its vectors with columns (196 in 16s: 200),
        # and B copied into panels (rows outermost) loads it unmasked: its masked stores
        # cost about half a panel (Zen 3, 1x1 layers on 14x14, rows / columns in ms:
        # 256->1024 1.11 / 1.27, 384->64 0.126 / 0.135, 576->96 0.254 / 0.261, 576->160
        # 0.43 / 0.43, 1024->512 2.46 / 2.35)
        computed = N // NB * NB + -(-(N % NB) // W) * W
        masked_panel = 0 if (target.masked_vectors or N % NB == 0) else 0.5
        rows_eff = (N / computed * pad_eff(M, choose_mr(M, mr)) * K / (K + 8)
                    * panels / (panels + masked_panel))
        ct = _col_tiles(M, N, K, nc, NB, target)
        cols_eff = pad_eff(M, NB) * (1.0 if ct.short else pad_eff(N, nc)) * K / (K + 5 * W)
        if cols_eff > 1.02 * rows_eff:
            return GemmPlan(W, nr, (ct,))
    rows = dict(N=N, K=K, itemsize=itemsize, pack_a=pack_a, pack_b=pack_b, implicit=implicit,
                NB=NB, target=target)
    if static_m or pack_a:
        return GemmPlan(W, nr, (_row_tiles(M, choose_mr(M, mr) if static_m else mr, 0, **rows),))
    # rows known at run time (a dynamic batch): one-row tiles for GEMV-like calls, else full
    # tiles and 4-row tiles for the rest (a batch of 64 in 12-row tiles wasted 1/9 of the FMAs)
    return GemmPlan(W, nr, (_row_tiles(M, 1, 0, **rows), _row_tiles(M, mr, 4, **rows)), small_m=4)


def _row_tiles(M, MR, tail_mr, *, N, K, itemsize, pack_a, pack_b, implicit, NB, target) -> RowTiles:
    # loop order: the operand read once is the one whose blocks stay in cache while the
    # other streams past; pick the order that streams fewer bytes (row blocks fastest: B
    # read once, A once per column panel; columns fastest: the reverse)
    if isinstance(M, int) and isinstance(N, int) and isinstance(K, int):
        rows_fastest = M * K * -(-N // NB) <= K * N * -(-M // MR)
        # ... except that packed weights come from DRAM once a model outgrows the caches:
        # read them once, each panel prefetched, while B stays in (half of) L2 (ResNet-50's
        # 1024x256 1x1 convs at 14x14: 75% -> 85% of peak in the model). Weights that fit L2
        # keep the columns (pixels) outermost, so each thread takes its share of the pixels,
        # as the depthwise kernels around it do, and reads only its columns of B, where a
        # split by rows had it read all of B, half written by the other core (MobileNetV2 at
        # 2 threads: 5% faster when the cores sit far apart). Not where a channel's row of C
        # ends inside a cache line: two threads would write that line, once per channel.
        half_l2 = target.l2_bytes // 2
        if pack_a and K * N * 4 <= half_l2 and (M * K * 4 > half_l2 or N % target.line_floats):
            rows_fastest = False
    elif isinstance(M, int) and isinstance(K, int):
        # N known only at run time (an image of any size): the same comparison for large N,
        # A re-read once per panel of NB columns against B once per row tile
        rows_fastest = M * K * 4 <= target.l2_bytes // 2 and M / NB <= -(-M // MR)
    else:
        rows_fastest = pack_b
    guard = not tail_mr and not (isinstance(M, int) and M % MR == 0)
    # rows of C (and of B) a prefetcher's reach apart or more arrive in 64-byte pieces the
    # hardware prefetchers do not follow; a GEMV-like tile of 1-3 rows already streams its
    # panel at memory bandwidth, where a second, prefetching stream only competes (MLP
    # batch 1 2.26 -> 2.6 ms)
    stream = (not implicit and MR >= 4 and isinstance(N, int)
              and N * itemsize >= target.prefetch_reach_bytes
              and (target.dense_prefetch_pays or not pack_b))
    panel = None
    if not implicit:
        if pack_b and rows_fastest and MR >= 4:
            panel = "b"
        elif pack_a and not rows_fastest:
            panel = "a"
    # without mask registers a masked load is a slower instruction whose mask takes a vector
    # register (12 accumulators + 2 masks + B + A spill on AVX2's 16), and a masked store
    # slower still (packed B needs no masked loads, but its last panel's stores do)
    unmasked = (not implicit and not target.masked_vectors
                and not (isinstance(N, int) and N % NB == 0))
    # K slices of a packed B panel. A panel longer than half of L1 (K=768 at 32 columns: 96
    # KB) is re-read from L2 by every row tile; in slices of half of L1, each slice stays in
    # L1 while every row tile on the panel uses it, at the cost of loading and storing the
    # partial sums once per slice (MR*NR vectors against kc*MR*NR FMAs). On Sapphire Rapids
    # the slices alone measured level; what they buy there is that only the last slice
    # prefetches C's lines for the epilogue (64x4096x4096: 148 -> 191 GFLOP/s, lowering). A
    # convolution's panels of B (an image, read in place, packed weights as A) slice the
    # same way: rows of B a multiple of 1 KB apart (32x32 or 16x16 images) share a handful of
    # L1 sets, so a whole panel was re-read from L2 or L3 by every row tile (512 channels on
    # 32x32: 76 -> 152 GFLOP/s)
    kc, nk = 0, 1
    if (((pack_b and target.dense_prefetch_pays) or pack_a) and rows_fastest and MR >= 4 and not implicit
            and isinstance(K, int)
            and NB * K * itemsize > target.l1_bytes // 2):
        kc_max = max(target.l1_bytes // 2 // (NB * itemsize), 16)
        nk = -(-K // kc_max)
        kc = -(-K // nk // 16) * 16          # whole lines of A's rows per slice
        nk = -(-K // kc)
        if nk == 1:
            kc = 0
    group = _panel_group(M, N, MR, kc, NB, itemsize, target) if kc else 1
    # B read in place by row tiles that sweep all its panels (rows_fastest False) is re-read
    # from L2 by every row tile, 2 lines N floats apart per k step, split across lines where
    # N*4 is not a multiple of 64: copied once per run into panels, each k step reads one
    # aligned line in sequence, as from packed weights (Zen 3, 256->1024 1x1 on 14x14: 85%
    # of peak in place, a packed-B GEMM of the same size 100%). With panels outermost (and
    # no K slices) each task copies its panel just before its row tiles use it: rows of B
    # 12.5 KB apart share few L1 sets (Zen 3, 1x1 layers on 56x56: 256->128 2.70 -> 2.44 ms,
    # 256->64 1.35 -> 1.28; on 28x28 128->512 1.11 -> 1.14)
    copy_b = (pack_a and not implicit and (not rows_fastest or nk == 1) and itemsize == 4
              and isinstance(N, int) and isinstance(K, int))
    return RowTiles(MR, tail_mr, rows_fastest, guard, stream, stream and not pack_b and rows_fastest,
                    panel, unmasked, kc, nk, group, copy_b)


def _panel_group(M, N, MR, kc, NB, itemsize, target):
    """Column panels per task with K slices: the task runs slice 0 of each of its panels,
    then slice 1, ..., so A's slice (M x kc) is read from L3 once per group of panels rather
    than once per panel (1024x768 A: 3 MB per 32-column panel, 12 GB/s of L3 traffic at the
    FMA rate). The group's partial sums and A's slice share 3/4 of L2; groups come in
    multiples of the cores, one per core where they fit: each group re-reads all of A, and
    the lowering spreads the panels evenly over the groups, so two per core bought no balance
    (ResNet-50's 1024->512 1x1 on 14x14, 7 panels, 1 thread: 0.95 -> 0.93 ms; the model
    38.4 -> 37.7 ms at 1 thread, 20.3 -> 19.5 at 2 with the even spread; BERT and the MLP
    level). A Dim of M where M is symbolic."""
    budget = target.l2_bytes * 3 // 4
    fit = S.smax(S.floordiv(budget - M * kc * itemsize, (M + MR) * NB * itemsize), 1)
    nblk_n = -(-N // NB)
    cores = max(target.cores, 1)
    ngroups = S.floordiv(S.smax(S.floordiv(nblk_n + fit - 1, fit), cores) + cores - 1, cores) * cores
    return S.smax(S.smin(S.floordiv(nblk_n + ngroups - 1, ngroups), nblk_n), 1)


def _col_tiles(M: int, N: int, K: int, NC: int, NB: int, target: Target) -> ColTiles:
    nblk_m, nblk_n = -(-M // NB), -(-N // NC)
    # as for row tiles: keep resident whichever operand streams fewer bytes
    cols_fastest = K * N * nblk_m <= M * K * nblk_n
    # K slices, where A would fall out of L2 (ResNet-50's 7x7 layers: a 32-row panel of 4608
    # is 590 KB, evicted by the next panel and B) or streams from DRAM anyway: each slice of
    # half of L1 is reused by the column tiles from L1, which keep their partial sums in
    # kernel scratch between slices (a load and a store per accumulator)
    kc = K
    l1, l2 = target.l1_bytes, target.l2_bytes
    if (cols_fastest and nblk_n > 1 and NB * K * 4 > l1 // 2
            and (2 * NB * K * 4 + K * N * 4 > l2 * 3 // 4 or M * K * 4 > l2)):
        kc_max = max(l1 // 2 // (NB * 4), 16)
        kc = -(-K // -(-K // kc_max))
    nk = -(-K // kc)
    # the slices run in order on one thread. Where B outgrows half of L2, row panel after
    # row panel re-read all of B from L3 (a 256x2304 weight on a 14x14 image: B is 1.8 MB,
    # 139 -> 190 GFLOP/s): then a task takes a group of column tiles through slice 0 of every
    # row panel, then slice 1, so the group's slice of B stays in L2, one group per core
    # (each group reads all of A). Where B fits, A streams once, panel by panel in order (a
    # 512x4608 weight on a 7x7 image: 9.4 MB from DRAM, 5% slower by slices), and with few
    # panels the column tiles go in groups: enough tasks for the pool to balance (8 per core)
    by_slice = nk > 1 and cols_fastest and K * N * 4 > l2 // 2
    # unsliced, the pool splits the row panels (output channels): each core reads all of B,
    # the image, half of it written by the other core in the kernel before, one line at a
    # time from its cache. Split by columns (pixels) instead, each core reads only the pixels
    # it wrote itself, as the pixel-split kernels around it do (ResNet-50's 1024->256 1x1
    # convs on 14x14 at 2 threads: 0.79 -> 0.64 ms in the model), unless the columns divide
    # among the cores much worse than the panels do (49 columns in 5 tiles)
    cores = max(target.cores, 1)
    # tiles of NC and NC - 1 columns where NC alone would pad N (49 columns in 6s: 54, 10%
    # of the FMAs wasted; as 4 x 6 + 5 x 5, none); a tile of 5 costs 5/6 of one of 6
    short = nblk_n * NC - N
    if not (0 < short <= nblk_n and NC > 4):
        short = 0
    if (nk == 1 and cols_fastest and cores > 1 and nblk_n >= cores
            and _split_eff(_tile_widths(nblk_n, NC, short), cores) >= 0.95 * _split_eff([min(NB, M - i * NB) for i in range(nblk_m)], cores)):
        by_slice = True
    if by_slice:
        ngroups = min(nblk_n, cores)
    elif nk > 1:
        ngroups = min(nblk_n, -(-8 * max(target.cores, 2) // nblk_m))
    else:
        ngroups = 1
    gsize = -(-nblk_n // ngroups)
    ngroups = -(-nblk_n // gsize)
    # B's rows of fewer than 4 lines (a 7x7 image): a tile's NC columns are copied once per
    # run into [tile][K][NC], so a k step reads NC consecutive floats where it read a line or
    # two of B; with A's slice they had overflowed L1 (Zen 3, 7x7 layers with M >= 160: 5-21%
    # faster, e.g. 512->2048 1.61 -> 1.28 ms). The copy is spent against M / 2W
    # cycles of FMAs on each element, so only from M = 16W (M = 64: 16% slower). On 14x14
    # images (rows of 12 lines) it measured 1-40% slower, the most where M is small
    # (384->64); both were measured when the copy moved one float at a time (a few cycles
    # an element; now whole vectors), and are not re-measured since
    pack_b = N < 4 * target.line_floats and M >= 16 * target.f32_lanes
    return ColTiles(NC, cols_fastest, kc, nk, ngroups, gsize, by_slice, pack_b, short)


def _tile_widths(ntiles: int, nc: int, short: int) -> list[int]:
    """Columns per tile: the last `short` tiles take nc - 1."""
    return [nc - (j >= ntiles - short) for j in range(ntiles)]


def _split_eff(work: list, parts: int) -> float:
    """Mean over the largest share of `work` (a list of per-item costs) cut into `parts`
    contiguous groups whose bounds are spread evenly, as the lowering cuts them: 1.0 is a
    perfect balance."""
    n = len(work)
    shares = [sum(work[g * n // parts:(g + 1) * n // parts]) for g in range(parts)]
    return sum(work) / parts / max(shares) if max(shares) else 1.0
