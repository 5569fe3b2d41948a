"""Fused attention: the pattern BERT and GPT-2 export, matched by `fuse_attention` and run by
the kernel-language attention kernel, against onnx.reference on random shapes and masks."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from .harness import run_engine, run_reference

F32_MIN = float(np.finfo(np.float32).min)


def _attention_model(b, s, t, h, d, mask, scale, guard=False):
    """q [b,s,h,d], k/v [b,t,h,d] -> out [b,s,h,d], through [b,h,.,.] transposes."""
    nodes = [helper.make_node("Transpose", ["q"], ["qh"], perm=[0, 2, 1, 3]),
             helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 3, 1]),
             helper.make_node("Transpose", ["v"], ["vh"], perm=[0, 2, 1, 3])]
    inits = []
    if scale == "operands":         # the dynamo exporter's SDPA: Q and K^T each times d^-1/4
        inits.append(numpy_helper.from_array(np.array(d ** -0.25, np.float32), "c"))
        nodes += [helper.make_node("Mul", ["qh", "c"], ["qs"]), helper.make_node("Mul", ["kt", "c"], ["ks"]),
                  helper.make_node("MatMul", ["qs", "ks"], ["s0"])]
    else:
        nodes.append(helper.make_node("MatMul", ["qh", "kt"], ["s0"]))
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [b, s if n == "q" else t, h, d]) for n in "qkv"]
    last = "s0"
    if scale == "mul":
        inits.append(numpy_helper.from_array(np.array(d ** -0.5, np.float32), "c"))
        nodes.append(helper.make_node("Mul", [last, "c"], ["s1"]))
        last = "s1"
    elif scale == "div":
        inits.append(numpy_helper.from_array(np.array(d ** 0.5, np.float32), "c"))
        nodes.append(helper.make_node("Div", [last, "c"], ["s1"]))
        last = "s1"
    if mask == "padding":           # BERT: (1 - mask) * min added, [b, 1, 1, t]
        ins.append(helper.make_tensor_value_info("m", TensorProto.FLOAT, [b, 1, 1, t]))
        nodes.append(helper.make_node("Add", [last, "m"], ["s2"]))
        last = "s2"
    elif mask == "inf":             # a boolean mask made additive, 0 / -inf, per query row
        ins.append(helper.make_tensor_value_info("m", TensorProto.FLOAT, [b, 1, s, t]))
        nodes.append(helper.make_node("Add", [last, "m"], ["s2"]))
        last = "s2"
    elif mask == "causal":          # GPT-2 style: where(tril, scores, min), [1, 1, s, t]
        tril = np.tril(np.ones((s, t), bool), k=t - s).reshape(1, 1, s, t)
        inits += [numpy_helper.from_array(tril, "tril"), numpy_helper.from_array(np.array(F32_MIN, np.float32), "fill")]
        nodes.append(helper.make_node("Where", ["tril", last, "fill"], ["s2"]))
        last = "s2"
    if scale == "after_mask":       # scale applied after the mask: the bias is scaled too
        inits.append(numpy_helper.from_array(np.array(0.3, np.float32), "c"))
        nodes.append(helper.make_node("Mul", ["c", last], ["s3"]))
        last = "s3"
    nodes.append(helper.make_node("Softmax", [last], ["p"], axis=-1))
    if guard:                       # rows the mask hides entirely: softmax's NaN made 0
        inits.append(numpy_helper.from_array(np.array(0.0, np.float32), "zero"))
        nodes += [helper.make_node("IsNaN", ["p"], ["nan"]), helper.make_node("Where", ["nan", "zero", "p"], ["pz"])]
    nodes += [helper.make_node("MatMul", ["pz" if guard else "p", "vh"], ["o"]),
              helper.make_node("Transpose", ["o"], ["y"], perm=[0, 2, 1, 3])]
    g = helper.make_graph(nodes, "attention", ins, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("b,s,t,h,d,mask,scale", [
    (1, 7, 7, 2, 64, "padding", "mul"),
    (2, 5, 9, 3, 32, "causal", "div"),
    (1, 20, 20, 1, 16, None, "mul"),
    (2, 33, 17, 2, 128, "padding", None),
    (1, 40, 40, 4, 64, "causal", "mul"),
    (3, 6, 11, 2, 48, "padding", "after_mask"),
    (1, 70, 150, 2, 64, "causal", "mul"),               # several 64-key blocks, the last partial
    (2, 9, 100, 2, 128, "padding", "div"),
])
def test_attention_fuses_and_matches_reference(b, s, t, h, d, mask, scale):
    _fused_matches_reference(b, s, t, h, d, mask, scale)


@pytest.mark.parametrize("b,s,t,h,d,scale", [
    (2, 7, 9, 2, 64, "operands"),
    (1, 5, 70, 3, 32, "mul"),
    (1, 16, 16, 2, 16, "operands"),
])
def test_nan_guarded_attention_with_masked_rows_fuses(b, s, t, h, d, scale):
    """What torch's dynamo exporter writes for SDPA with a boolean mask: Q and K^T scaled
    separately, a 0 / -inf bias, Where(IsNaN(p), 0, p) after the softmax; rows the mask hides
    entirely give 0 (the reference's softmax gives NaN there, then the guard 0)."""
    _fused_matches_reference(b, s, t, h, d, "inf", scale, guard=True)


def _fused_matches_reference(b, s, t, h, d, mask, scale, guard=False):
    from ember.runtime.compiler import compile_model

    model = _attention_model(b, s, t, h, d, mask, scale, guard)
    rng = np.random.default_rng(s * t + d)
    feeds = {n: rng.standard_normal((b, s if n == "q" else t, h, d)).astype(np.float32) for n in "qkv"}
    if mask == "padding":
        keep = rng.random((b, 1, 1, t)) < 0.7
        keep[..., 0] = True                            # no row is masked entirely
        feeds["m"] = np.where(keep, 0.0, F32_MIN).astype(np.float32)
    if mask == "inf":
        keep = rng.random((b, 1, s, t)) < 0.6
        keep[:, :, ::3] = False                        # every third query row sees no key
        feeds["m"] = np.where(keep, 0.0, -np.inf).astype(np.float32)
    c = compile_model(model.SerializeToString(), use_cache=False)
    assert [n.op for n in c.graph.nodes if n.op == "attention"] == ["attention"]
    np.testing.assert_allclose(run_engine(model, feeds)[0], run_reference(model, feeds)[0], rtol=1e-4, atol=1e-5)


def test_attention_kernel_on_its_own():
    """The library kernel called directly (key blocks with a masked tail, a broadcast bias)."""
    from ember.ir.ops import OPS
    from ember.kernels.attention import attention_bshd

    rng = np.random.default_rng(3)
    q = rng.standard_normal((2, 9, 3, 32)).astype(np.float32)
    kt = rng.standard_normal((2, 3, 32, 21)).astype(np.float32)
    v = rng.standard_normal((2, 21, 3, 32)).astype(np.float32)
    bias = rng.standard_normal((1, 1, 9, 21)).astype(np.float32)
    out = np.empty_like(q)
    attention_bshd(q, kt, v, bias, out, scale=0.2, D=32, R=4)
    want = OPS["attention"].ref([q, kt, v, bias], {"scale": 0.2})[0]
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    # 3 rows and blocks of 64 keys (the library's choice at head_dim 64) over 150 keys
    q, kt, v = (rng.standard_normal(s).astype(np.float32) for s in ((1, 10, 2, 64), (1, 2, 64, 150), (1, 150, 2, 64)))
    bias = rng.standard_normal((1, 1, 1, 150)).astype(np.float32)
    out = np.empty_like(q)
    attention_bshd(q, kt, v, bias, out, scale=0.125, D=64, R=3, KB=4)
    want = OPS["attention"].ref([q, kt, v, bias], {"scale": 0.125})[0]
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tile", [dict(R=3, KB=2, width=8), dict(R=3, KB=4, width=16), dict(R=1, KB=1, width=16)])
def test_attention_skips_only_blocks_that_add_nothing(tile):
    """Key blocks masked (-inf or the float32 minimum) for every row of a task are skipped;
    a row masked entirely keeps softmax's uniform answer, a row masked only at the start
    (left padding) is not cut short, and a NaN in a masked block still reaches the output."""
    from ember.ir.ops import OPS
    from ember.kernels.attention import attention_bshd

    rng = np.random.default_rng(11)
    s, t, d = 13, 150, 64
    q, kt, v = (rng.standard_normal(x).astype(np.float32) for x in ((2, s, 2, d), (2, 2, d, t), (2, t, 2, d)))
    causal = np.where(np.tril(np.ones((s, t), bool), k=2), 0.0, F32_MIN)
    bias = np.stack([causal, np.where(np.tril(np.ones((s, t), bool), k=40), 0.0, -np.inf)])[:, None]
    bias = np.ascontiguousarray(bias, np.float32)          # [2, 1, s, t]: one mask per batch
    bias[0, 0, 4] = F32_MIN                                 # masked entirely: uniform weights
    bias[1, 0, 5, :100] = -np.inf                           # left-padded: live keys only late
    bias[1, 0, 7, 140] = np.nan                             # far past the causal edge
    out = np.empty_like(q)
    attention_bshd(q, kt, v, bias, out, scale=0.125, D=d, **tile)
    with np.errstate(invalid="ignore"):
        want = OPS["attention"].ref([q, kt, v, bias], {"scale": 0.125})[0]
    assert np.isnan(out[1, 7]).all() and np.isnan(want[1, 7]).all()
    out[1, 7] = want[1, 7] = 0.0
    np.testing.assert_allclose(out[0, 4], v[0].mean(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)


def test_attention_tile_follows_the_register_file():
    from ember.ir.target import Target
    from ember.kernels import attention_tile

    for name in ("avx2", "zen5", "zen4", "neon"):
        target = Target.preset(name)
        for d in (16, 64, 128):
            tile = attention_tile(d, target)
            assert tile["width"] == target.f32_lanes and d % tile["width"] == 0
            # the score tile (R x KB scores, KB keys, the broadcast query) fits the registers
            assert tile["R"] * tile["KB"] + tile["KB"] + 1 <= target.vector_registers
    assert attention_tile(64, Target.preset("avx2")) == {"R": 3, "KB": 2, "width": 8}
    assert attention_tile(64, Target.preset("zen5")) == {"R": 3, "KB": 4, "width": 16}
