"""GEMM plans as pure functions of sizes and a Target: checked for machines not at hand
(no compiling here), and against what the lowering emits on this one."""
import math

import pytest

from ember.errors import CacheWarning
from ember.ir.target import DEFAULT, Target
from ember.schedule.gemm import ColTiles, GemmPlan, RowTiles, choose_mr, plan_gemm

ZEN5, ZEN4, AVX2, NEON = (Target.preset(n) for n in ("zen5", "zen4", "avx2", "neon"))


def test_tile_shape_comes_from_the_register_file():
    for t, w, mr in ((ZEN5, 16, 12), (AVX2, 8, 6), (NEON, 4, 12), (Target.preset("sse4.2"), 4, 6)):
        p = plan_gemm(600, 512, 256, t, pack_b=True)
        assert (p.W, p.NR) == (w, 2)
        rt = p.tiles[0]
        assert isinstance(rt, RowTiles) and rt.MR <= mr
        # MR x NR accumulators + NR B vectors + a broadcast fit the registers
        assert rt.MR * p.NR + p.NR + 1 <= t.vector_registers


def test_gemv_gets_one_row_tiles_without_extra_streams():
    p = plan_gemm(1, 4096, 4096, ZEN5, pack_b=True)
    rt, = p.tiles
    assert rt.MR == 1 and not rt.stream_prefetch and rt.panel_prefetch is None
    big = plan_gemm(64, 4096, 4096, ZEN5, pack_b=True).tiles[0]
    assert big.MR == 8 and not big.guard_rows            # 64 rows: 8 tiles of 8, no padding
    assert big.stream_prefetch and big.panel_prefetch == "b"


def test_rows_known_at_run_time_get_a_small_and_a_tail_plan():
    import ember.ir.symbolic as S
    m = S.sym("batch")
    p = plan_gemm(m, 512, 512, ZEN5, pack_b=True)
    assert p.small_m == 4 and [t.MR for t in p.tiles] == [1, 12] and p.tiles[1].tail_mr == 4


def test_few_columns_use_column_tiles_and_k_slices_from_the_caches():
    # ResNet-50's 3x3 layers on 7x7 images: 512 x 49 x 4608, constant weights
    p = plan_gemm(512, 49, 4608, ZEN5, pack_a=True)
    ct, = p.tiles
    assert isinstance(ct, ColTiles) and math.ceil(49 / ct.NC) * ct.NC / 49 <= 1.0625   # 5 tiles of 10
    assert ct.nk > 1 and p.NB * ct.kc * 4 <= ZEN5.l1_bytes // 2      # a slice of A's panel in half of L1
    assert ct.nk * ct.kc >= 4608
    # a long K over many pixels (a 1x1 convolution of 512 channels on 32x32): row tiles over
    # the image's panels, in slices too (rows of B 4 KB apart share a handful of L1 sets, so
    # an unsliced panel was re-read from L2 or L3 by every row tile: 76 -> 152 GFLOP/s)
    rt, = plan_gemm(256, 1024, 512, ZEN5, pack_a=True).tiles
    assert isinstance(rt, RowTiles) and rt.nk > 1 and 32 * rt.kc * 4 <= ZEN5.l1_bytes // 2
    huge_l1 = plan_gemm(512, 49, 4608, Target.preset("zen5", l1_bytes=8 << 20), pack_a=True).tiles[0]
    assert huge_l1.nk == 1


def test_column_tiles_cover_the_columns_exactly_with_two_widths():
    # 49 columns in tiles of 6 pad to 54: as 4 tiles of 6 and 5 of 5 they cover 49
    ct, = plan_gemm(160, 49, 960, Target.preset("avx2"), pack_a=True).tiles
    assert isinstance(ct, ColTiles) and (ct.NC, ct.short) == (6, 5)
    tiles = math.ceil(49 / ct.NC)
    assert (tiles - ct.short) * ct.NC + ct.short * (ct.NC - 1) == 49
    ct, = plan_gemm(512, 49, 4608, ZEN5, pack_a=True).tiles
    assert 49 % ct.NC == 0 or ct.short == 0 or ct.NC > 4     # 5 tiles of 10: one width


def test_loop_order_follows_the_l2():
    # a 1x1 convolution (2048 x 784 x 256) whose B fits half of a 2 MB L2 but not of a 512 KB
    # one, and whose weights do not: on the larger L2 the weights stream once, B stays
    kw = dict(pack_a=True)
    small, large = Target.preset("zen5", l2_bytes=512 << 10), Target.preset("zen5", l2_bytes=2 << 20)
    a = plan_gemm(2048, 784, 256, small, **kw).tiles[0]
    b = plan_gemm(2048, 784, 256, large, **kw).tiles[0]
    assert isinstance(a, RowTiles) and isinstance(b, RowTiles)
    assert (a.rows_fastest, b.rows_fastest) == (True, False)
    assert b.panel_prefetch == "a"


def test_without_mask_registers_whole_column_tiles_run_unmasked():
    assert plan_gemm(64, 100, 64, AVX2).tiles[0].unmasked_full_tiles
    assert not plan_gemm(64, 100, 64, ZEN5).tiles[0].unmasked_full_tiles
    assert not plan_gemm(64, 96, 64, AVX2).tiles[0].unmasked_full_tiles    # N whole panels: no masks at all


def test_plans_are_pure_and_ignore_noise_in_measured_figures():
    a = plan_gemm(384, 768, 768, ZEN5, pack_b=True)
    assert a == plan_gemm(384, 768, 768, ZEN5, pack_b=True) and isinstance(a, GemmPlan)
    noisy = ZEN5.with_measured(ZEN5.fma_gflops * 1.1, ZEN5.read_gbs * 0.95)
    assert noisy.plan_key() == ZEN5.plan_key()
    # Zen 4 runs the same AVX-512 code at half the FMA rate: the same tiles, another balance
    assert ZEN4.balance < ZEN5.balance and ZEN4.plan_key() != ZEN5.plan_key()


def test_choose_mr_wastes_little():
    for m in range(1, 200):
        r = choose_mr(m, 12)
        assert 1 <= r <= 12
        if m > 12:
            assert math.ceil(m / r) * r / m <= 1.34


def test_target_thresholds_scale_with_the_vector():
    assert DEFAULT.f32_lanes == 16 and AVX2.f32_lanes == 8 and NEON.f32_lanes == 4
    assert ZEN5.row_is_short(16) and not ZEN5.row_is_short(17) and AVX2.row_is_short(8) and not AVX2.row_is_short(14)
    assert ZEN5.row_is_narrow(8) and not AVX2.row_is_narrow(7)
    assert ZEN5.whole_vectors(112) and AVX2.whole_vectors(56) and not ZEN5.whole_vectors(56)


@pytest.mark.parametrize("preset", ["avx2", "zen5"])
def test_conv_strategy_follows_the_target(preset):
    """The decomposition picks flat-pixel windows for rows up to one vector of the target:
    14-wide rows are short for AVX-512 (16 lanes), not for AVX2 (8)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
    from ember.frontends.onnx.loader import load_onnx
    from ember.passes import optimize
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 8, 3, 3)).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], strides=[1, 1])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 14, 14])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    graph = optimize(load_onnx(m), target=Target.preset(preset))
    flat = [n.attrs.get("flat") for n in graph.nodes if n.op == "im2col"]
    assert flat == ([1] if preset == "zen5" else [None])


def test_measured_figures_are_measured_once_per_machine(tmp_path, monkeypatch):
    """The probe writes its figures beside the compiled models and later processes read them
    back; EMBER_MEASURE=0 and a failing probe give a target without figures (plans still work)."""
    from ember.runtime import probe
    monkeypatch.setenv("EMBER_CACHE_DIR", str(tmp_path))
    calls = []
    monkeypatch.setattr(probe, "fma_peak", lambda t: calls.append("fma") or 123.0)
    monkeypatch.setattr(probe, "read_bandwidth", lambda t: calls.append("bw") or 9.5)
    t = probe.measured_target.__wrapped__()
    assert (t.fma_gflops, t.read_gbs) == (123.0, 9.5) and calls == ["fma", "bw"]
    assert len(list(tmp_path.glob("target-*.json"))) == 1
    again = probe.measured_target.__wrapped__()
    assert (again.fma_gflops, again.read_gbs) == (123.0, 9.5) and calls == ["fma", "bw"]   # read back

    for f in tmp_path.glob("target-*.json"):           # damaged: warns, measures again
        f.write_bytes(b"\x00{not json")
    with pytest.warns(CacheWarning, match="measured figures.*damaged"):
        assert probe.measured_target.__wrapped__().read_gbs == 9.5
    assert calls == ["fma", "bw", "fma", "bw"]

    monkeypatch.setenv("EMBER_MEASURE", "0")
    assert probe.measured_target.__wrapped__().balance is None
    monkeypatch.delenv("EMBER_MEASURE")
    for f in tmp_path.glob("target-*.json"):
        f.unlink()
    monkeypatch.setattr(probe, "fma_peak", lambda t: 1 / 0)
    t = probe.measured_target.__wrapped__()
    assert t.fma_gflops is None and "/b?" in t.plan_key()
    assert plan_gemm(64, 64, 64, t).tiles[0].MR == choose_mr(64, t.gemm_mr(2))   # 8 on AVX-512, 6 on AVX2


def test_long_k_runs_in_slices_of_half_of_l1():
    import ember.ir.symbolic as S
    for t in (ZEN5, Target.preset("zen4", fma_gflops=None), Target.preset("avx2", fma_gflops=None)):
        p = plan_gemm(64, 4096, 4096, t, pack_b=True)
        rt, = p.tiles
        assert rt.nk > 1 and rt.kc % 16 == 0 and p.NB * rt.kc * 4 <= t.l1_bytes // 2
        assert (rt.nk - 1) * rt.kc < 4096 <= rt.nk * rt.kc
        assert plan_gemm(64, 4096, 128, t, pack_b=True).tiles[0].nk == 1     # the panel fits already
    small, tiles = plan_gemm(S.sym("batch"), 4096, 4096, ZEN5, pack_b=True).tiles
    assert small.nk == 1 and tiles.nk > 1             # a GEMV streams B once: nothing to reuse
    assert plan_gemm(64, 4096, 4096, ZEN5).tiles[0].nk == 1     # B not packed: no contiguous slices


def test_dense_gemms_prefetch_and_slice_only_where_the_core_outruns_memory():
    """Packed-B GEMMs prefetch C's lines and slice K by the measured balance (FLOPs per byte):
    a Zen 3 (81 GFLOP/s, 15.9 GB/s) streams its 6-row tiles faster without either; a convolution
    (packed weights as A) slices and prefetches on both."""
    zen3 = Target.preset("avx2", fma_gflops=81.0, read_gbs=15.9)
    spr = Target.preset("sapphirerapids", fma_gflops=246.0, read_gbs=28.8)
    assert not zen3.dense_prefetch_pays and spr.dense_prefetch_pays
    assert Target.preset("avx2", fma_gflops=None).dense_prefetch_pays       # unmeasured: as before
    rt, = plan_gemm(64, 4096, 4096, zen3, pack_b=True).tiles
    assert rt.nk == 1 and not rt.stream_prefetch
    rt, = plan_gemm(64, 4096, 4096, spr, pack_b=True).tiles
    assert rt.nk > 1 and rt.stream_prefetch
    rt, = plan_gemm(256, 1024, 1024, zen3, pack_a=True).tiles                # a 1x1 conv: A packed
    assert rt.nk > 1 and rt.stream_prefetch
    # one plan key never names two plans: the threshold is on plan_key's rounding
    for bw in (13.0, 14.0, 14.5, 15.0, 16.0):
        same = Target.preset("avx2", fma_gflops=81.0, read_gbs=bw)
        assert (same.plan_key() == zen3.plan_key()) <= (same.dense_prefetch_pays == zen3.dense_prefetch_pays)


def test_sliced_panels_run_in_groups_that_share_a_slice_of_a_in_l2():
    import ember.ir.symbolic as S
    spr = Target.preset("sapphirerapids")
    for t in (ZEN5, ZEN4, spr):
        for M, K, N in ((1024, 768, 3072), (128, 3072, 768), (64, 4096, 4096), (4096, 768, 3072)):
            rt, = plan_gemm(M, N, K, t, pack_b=True).tiles
            nblk_n = -(-N // 32)
            ngroups = -(-nblk_n // rt.group)
            assert 1 <= rt.group <= nblk_n
            if rt.group > 1:        # A's slice and the group's partial sums fit 3/4 of L2
                assert M * rt.kc * 4 + rt.group * (M + rt.MR) * 32 * 4 <= t.l2_bytes * 3 // 4
                assert ngroups >= t.cores and ngroups % t.cores == 0    # every core has a group
    assert plan_gemm(1024, 3072, 768, spr, pack_b=True).tiles[0].group > 1     # 2 MB of L2
    assert plan_gemm(1024, 3072, 768, ZEN4, pack_b=True).tiles[0].group == 1   # 1 MB: no room
    assert plan_gemm(4096, 3072, 768, spr, pack_b=True).tiles[0].group == 1
    # rows known at run time: the group is a Dim of them, evaluated once per shape signature
    rt = plan_gemm(S.sym("m"), 3072, 768, spr, pack_b=True).tiles[-1]
    assert S.evaluate(rt.group, {"m": 1024}) == plan_gemm(1024, 3072, 768, spr, pack_b=True).tiles[0].group
    assert S.evaluate(rt.group, {"m": 100000}) == 1
    # ResNet-50's 1024->512 1x1 on 14x14 (7 panels, the last of 4 columns): A's slice fits
    # with 3 panels' partial sums, so one group per core, 3 and 4 panels once spread evenly
    rt, = plan_gemm(512, 196, 1024, ZEN5, pack_a=True).tiles
    assert rt.nk > 1 and -(-7 // rt.group) == ZEN5.cores


def test_sliced_k_with_rows_known_at_run_time_matches_numpy():
    """K = 1000 in slices (the last one short), rows 1..67 at run time (whole tiles, tail
    tiles, GEMV tiles), 70 columns (a masked panel), a fused bias, residual and Relu."""
    import numpy as np

    rng = np.random.default_rng(7)
    K, N = 1000, 70
    _check_sliced_matmul(rng, K, N, (1, 3, 5, 13, 29, 67), threads=0)


def test_sliced_k_in_panel_groups_matches_numpy():
    """11 column panels (the last masked) in groups whose bounds are spread evenly (5 and 6 on
    two cores) at two threads, rows known at run time, K = 1000 in slices: each group runs
    slice by slice over its panels."""
    import numpy as np
    from ember.ir import symbolic as S
    from ember.schedule.gemm import plan_gemm
    from ember.codegen.native import host_target
    t = host_target()
    rt = plan_gemm(S.sym("m"), 330, 1000, t, pack_b=True).tiles[-1]
    if rt.nk > 1 and t.l2_bytes >= 1 << 20 and t.vector_bits == 512:
        g = S.evaluate(rt.group, {"m": 67})
        assert 1 < g < 11 and 11 % g       # a short last group
    _check_sliced_matmul(np.random.default_rng(8), 1000, 330, (1, 13, 67, 700), threads=2)


def _check_sliced_matmul(rng, K, N, ms, threads):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
    import ember

    w = rng.standard_normal((K, N)).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["a", "w"], ["c"]), helper.make_node("Add", ["c", "bias"], ["d"]),
         helper.make_node("Add", ["d", "r"], ["e"]), helper.make_node("Relu", ["e"], ["y"])], "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["m", K]),
         helper.make_tensor_value_info("r", TensorProto.FLOAT, ["m", N])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", N])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "bias")])
    so = ember.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ember.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(), so)
    for m in ms:
        a = rng.standard_normal((m, K)).astype(np.float32)
        r = rng.standard_normal((m, N)).astype(np.float32)
        y, = sess.run(None, {"a": a, "r": r})
        ref = np.maximum(a.astype(np.float64) @ w + bias + r, 0)
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-3 * np.abs(ref).max())


def test_column_tiles_run_slice_by_slice_where_b_outgrows_l2():
    # 256 x 2304 weights on a 14x14 image (ResNet-50's strided 3x3 after im2col): B is 1.8 MB
    spr = Target.preset("sapphirerapids")
    for t in (ZEN5, ZEN4, spr):
        ct, = plan_gemm(256, 196, 2304, t, pack_a=True).tiles
        assert isinstance(ct, ColTiles) and ct.nk > 1 and ct.by_slice and ct.ngroups == t.cores
    # 512 x 4608 on 7x7: B (0.9 MB) fits half of a 2 MB L2; A streams once, panel by panel
    ct, = plan_gemm(512, 49, 4608, spr, pack_a=True).tiles
    assert ct.nk > 1 and not ct.by_slice


def test_unsliced_column_tiles_split_by_pixels_where_the_columns_divide_evenly():
    # ResNet-50's 1024 -> 256 1x1 on 14x14 (196 columns in 17 tiles of 12 and 11): each core
    # takes half of the pixels, as the kernels around it do, not half of the output channels
    import dataclasses
    spr = Target.preset("sapphirerapids")
    for t in (ZEN5, ZEN4, spr, AVX2):
        ct, = plan_gemm(256, 196, 1024, t, pack_a=True).tiles
        assert isinstance(ct, ColTiles) and ct.by_slice and ct.ngroups == t.cores, t.isa
    ct, = plan_gemm(256, 196, 1024, spr, pack_a=True).tiles
    assert ct.nk == 1                       # unsliced: the split alone makes it by-slice
    # one core: nothing to split
    ct, = plan_gemm(256, 196, 1024, dataclasses.replace(spr, cores=1), pack_a=True).tiles
    assert not ct.by_slice
    # 7x7 (49 columns in 5 tiles: 30 against 19) or 6x6 (3 tiles) split worse than 8 panels
    for n in (49, 36):
        ct, = plan_gemm(256, n, 256, spr, pack_a=True).tiles
        assert isinstance(ct, ColTiles) and ct.nk == 1 and not ct.by_slice, n


def test_split_efficiency_follows_the_lowering_bounds():
    from ember.schedule.gemm import _split_eff, _tile_widths
    assert _tile_widths(9, 6, 5) == [6] * 4 + [5] * 5          # 49 columns, none padded
    assert _split_eff([6] * 4 + [5] * 5, 2) == pytest.approx(49 / 2 / 25)   # 4 tiles, then 5
    assert _split_eff([3] * 8, 2) == 1.0 and _split_eff([1] * 3, 2) == pytest.approx(0.75)
    assert _split_eff([], 2) == 1.0


def test_column_tiles_copy_short_rows_of_b_where_enough_rows_of_a_use_them():
    # MobileNetV2's 160 -> 960 on 7x7: columns (rows pad 49 to 64 lanes, and without mask
    # registers the last panel runs masked), B copied into tiles (rows of 49 < 4 lines)
    ct, = plan_gemm(960, 49, 160, AVX2, pack_a=True).tiles
    assert isinstance(ct, ColTiles) and ct.pack_b
    # too few rows of A to pay for the copy (16 W), or rows of B of 12 lines (14x14)
    for t in (AVX2, ZEN5):
        for m, n in ((8 * t.f32_lanes, 49), (1024, 196)):
            p = plan_gemm(m, n, 4608 if n == 49 else 256, t, pack_a=True)
            assert not (isinstance(p.tiles[0], ColTiles) and p.tiles[0].pack_b), (t.isa, m, n)
    assert plan_gemm(512, 49, 4608, ZEN5, pack_a=True).tiles[0].pack_b


def _check_conv1x1_residual_relu(cin, cout, hw, seed):
    """A 1x1 convolution with a bias, a residual and Relu, at two threads, batch 1 and 2 (a
    dynamic batch), against numpy."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
    import ember
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((cout, cin, 1, 1)) / np.sqrt(cin)).astype(np.float32)
    bias = rng.standard_normal(cout).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"]), helper.make_node("Add", ["c", "r"], ["d"]),
         helper.make_node("Relu", ["d"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", cin, hw, hw]),
         helper.make_tensor_value_info("r", TensorProto.FLOAT, ["n", cout, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "b")])
    so = ember.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ember.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(), so)
    for n in (1, 2):
        x = rng.standard_normal((n, cin, hw, hw)).astype(np.float32)
        r = rng.standard_normal((n, cout, hw, hw)).astype(np.float32)
        y, = sess.run(None, {"x": x, "r": r})
        ref = np.maximum(np.einsum("oc,nchw->nohw", w[:, :, 0, 0].astype(np.float64), x) + bias[:, None, None] + r, 0)
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-3 * np.abs(ref).max())


def test_column_tiles_with_copied_b_match_numpy():
    """7x7 images (B copied into column tiles), 160 -> 272 channels: the last row panel
    masked, a short last column tile."""
    from ember.codegen.native import host_target
    t = host_target()
    ct = plan_gemm(272, 49, 160, t, pack_a=True).tiles[0]
    _check_conv1x1_residual_relu(160, 272, 7, 12)
    if t.isa == "avx2":
        assert isinstance(ct, ColTiles) and ct.pack_b and ct.short    # the path under test, on this CPU


def test_column_tiles_of_two_widths_in_k_slices_match_numpy():
    """960 -> 160 channels on 7x7 (MobileNetV2's): tiles of 6 and 5 columns, K in slices."""
    from ember.codegen.native import host_target
    ct = plan_gemm(160, 49, 960, host_target(), pack_a=True).tiles[0]
    _check_conv1x1_residual_relu(960, 160, 7, 13)
    if host_target().isa == "avx2":
        assert isinstance(ct, ColTiles) and ct.short and ct.nk > 1


def test_column_tiles_by_slice_match_numpy():
    """2304 (or 4608) channels on a 14x14 image to 250 (the last row panel masked, a short last column
    tile)."""
    from ember.codegen.native import host_target
    t = host_target()
    # the first of these K that this CPU's plan runs by column tiles sliced by K (whether a
    # row tiling wins at 2304 depends on the target's efficiency estimates; 4608 doubles B)
    ks = [k for k in (2304, 4608) if isinstance(ct := plan_gemm(250, 196, k, t, pack_a=True).tiles[0], ColTiles)
          and ct.by_slice]
    _check_conv1x1_residual_relu(ks[0] if ks else 2304, 250, 14, 11)
    if t.l2_bytes < 2 * 2304 * 196 * 4 and t.vector_bits == 512:
        assert ks, "no by-slice column tiling on this CPU: the path under test is not reached"


def test_unsliced_column_tiles_split_by_pixels_match_numpy():
    """1024 -> 256 channels on 14x14 and 15x15 images (short column tiles), batch 1 and 2,
    at two threads."""
    from ember.codegen.native import host_target
    t = host_target()
    for hw, seed in ((14, 21), (15, 22)):
        ct = plan_gemm(256, hw * hw, 1024, t, pack_a=True).tiles[0]
        _check_conv1x1_residual_relu(1024, 256, hw, seed)
        if t.isa == "avx512" and t.cores > 1 and t.l2_bytes >= 2 << 20:
            assert isinstance(ct, ColTiles) and ct.by_slice, hw     # the path under test, on this CPU


def test_sliced_row_tiles_over_an_image_match_numpy():
    """Constant weights (packed A) and an image's pixels (B, read in place), K = 512 in slices,
    250 output channels (the last row tile guarded), a residual, at two threads."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
    import ember
    rng = np.random.default_rng(12)
    cin, cout, hw = 512, 250, 32
    w = (rng.standard_normal((cout, cin, 1, 1)) / 24).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Add", ["c", "r"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, hw, hw]),
         helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, cout, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [numpy_helper.from_array(w, "w")])
    so = ember.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ember.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(), so)
    x = rng.standard_normal((1, cin, hw, hw)).astype(np.float32)
    r = rng.standard_normal((1, cout, hw, hw)).astype(np.float32)
    y, = sess.run(None, {"x": x, "r": r})
    ref = np.einsum("oc,nchw->nohw", w[:, :, 0, 0].astype(np.float64), x) + r
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-3 * np.abs(ref).max())


def test_sliced_k_per_batch_item_matches_numpy():
    """K slices under batch loops (a constant 3-d B, and a batch of images): each batch item
    keeps its own partial sums, as batch items run on different threads."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
    import ember
    rng = np.random.default_rng(13)
    w = rng.standard_normal((3, 1000, 100)).astype(np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["a", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, [3, "m", 1000])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [numpy_helper.from_array(w, "w")])
    wc = (rng.standard_normal((250, 512, 1, 1)) / 24).astype(np.float32)
    gc = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "g",
                           [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 512, 32, 32])],
                           [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [numpy_helper.from_array(wc, "w")])
    so = ember.SessionOptions()
    so.intra_op_num_threads = 2
    mk = lambda g: ember.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(), so)
    mm, conv = mk(g), mk(gc)
    for _ in range(3):
        a = rng.standard_normal((3, 40, 1000)).astype(np.float32)
        ref = np.matmul(a.astype(np.float64), w)
        np.testing.assert_allclose(mm.run(None, {"a": a})[0], ref, rtol=1e-4, atol=1e-3 * np.abs(ref).max())
        x = rng.standard_normal((3, 512, 32, 32)).astype(np.float32)
        ref = np.einsum("oc,nchw->nohw", wc[:, :, 0, 0].astype(np.float64), x)
        np.testing.assert_allclose(conv.run(None, {"x": x})[0], ref, rtol=1e-4, atol=1e-3 * np.abs(ref).max())


def test_sliced_conv_panels_in_uneven_groups_match_numpy():
    """ResNet-50's 1024->512 1x1 convolution on 14x14 with a residual and Relu: 196 pixels in
    7 panels (the last of 4 columns), K in slices, the panels spread over the groups unevenly
    (3 and 4 on a Zen 5; the plan depends on the host's caches), at 1 and 2 threads."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
    import ember

    rng = np.random.default_rng(11)
    w = (rng.standard_normal((512, 1024, 1, 1)) * 0.05).astype(np.float32)
    b = rng.standard_normal(512).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"]), helper.make_node("Add", ["c", "r"], ["d"]),
         helper.make_node("Relu", ["d"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1024, 14, 14]),
         helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, 512, 14, 14])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 512, 14, 14])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    x = rng.standard_normal((1, 1024, 14, 14)).astype(np.float32)
    r = rng.standard_normal((1, 512, 14, 14)).astype(np.float32)
    ref = np.maximum(np.einsum("ok,kp->op", w[:, :, 0, 0].astype(np.float64), x[0].reshape(1024, -1))
                     .reshape(1, 512, 14, 14) + b[None, :, None, None] + r, 0)
    for threads in (1, 2):
        so = ember.SessionOptions()
        so.intra_op_num_threads = threads
        y, = ember.InferenceSession(model, so).run(None, {"x": x, "r": r})
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_integer_gemm_tiles_fit_the_register_file():
    """The int16 GEMM tiles (kernels.int_gemm_tile): accumulators, the tile's B vectors, the
    broadcast pair and one product fit the vector registers of every preset."""
    from ember.kernels import int_gemm_tile
    from ember.ir.target import _PRESETS, Target
    for name in _PRESETS:
        t = Target.preset(name)
        tile = int_gemm_tile(t)
        vecs = tile["NB"] * max(16 // tile["width"], 1)
        assert tile["MR"] * vecs + vecs + 2 <= t.vector_registers, (name, tile)
        assert tile["width"] == t.lanes(32)
    assert int_gemm_tile(Target.preset("avx2")) == {"MR": 5, "NB": 1, "width": 8}
    assert int_gemm_tile(Target.preset("zen4")) == {"MR": 12, "NB": 2, "width": 16}


def test_a_run_time_image_keeps_constant_weights_read_once_per_panel():
    """A convolution on an image whose size is known only at run time (N = H*W symbolic):
    its few rows of constant weights (24 x 864, 83 KB) are re-read per column panel, and the
    image's columns are read once, as they would be for a large static N."""
    import ember.ir.symbolic as S
    n = S.sym("h") * S.sym("w")
    rt, = plan_gemm(24, n, 864, AVX2, pack_a=True).tiles
    static, = plan_gemm(24, 120 * 160, 864, AVX2, pack_a=True).tiles
    assert rt.rows_fastest and static.rows_fastest
