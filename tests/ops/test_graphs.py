"""Multi-node graphs: chains an optimizing engine will fuse, shape-computation subgraphs,
and symbolic (dynamic) dims run at several sizes from one session."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import helper

from .harness import build_model, check, make_session
from .strategies import UNIT, Domain, examples, gen, rng_from

H = helper.make_node
SMALL = (1, 3, 7, 17, 33)


def _k(name, data, choices=SMALL):
    return data.draw(st.sampled_from(choices), label=name)


# --------------------------------------------------------------------------- MatMul -> Add -> Gelu
@pytest.mark.parametrize("gelu", ["op20_none", "op20_tanh", "erf_decomposed", "tanh_decomposed"])
@examples(10)
@given(data=st.data())
def test_matmul_bias_gelu(gelu, data):
    """Transformer MLP: MatMul + bias + Gelu, either the opset-20 Gelu op or the erf/tanh
    formula as exporters emit it at older opsets (an engine pattern-matches those)."""
    rng = rng_from(data)
    b, s, k, n = _k("B", data, (1, 2, 3)), _k("S", data), _k("K", data), _k("N", data)
    x = gen(rng, "float32", (b, s, k), UNIT)
    w = gen(rng, "float32", (k, n), UNIT)
    bias = gen(rng, "float32", (n,), UNIT)
    nodes = [H("MatMul", ["x", "w"], ["mm"]), H("Add", ["mm", "bias"], ["h"])]
    inits = [("w", w), ("bias", bias)]
    opset = 18
    if gelu.startswith("op20"):
        opset = 20
        nodes.append(H("Gelu", ["h"], ["y"], approximate=gelu.split("_")[1]))
    elif gelu == "erf_decomposed":
        # y = h * 0.5 * (1 + erf(h / sqrt(2)))
        nodes += [H("Div", ["h", "sqrt2"], ["t0"]), H("Erf", ["t0"], ["t1"]), H("Add", ["t1", "one"], ["t2"]),
                  H("Mul", ["h", "t2"], ["t3"]), H("Mul", ["t3", "half"], ["y"])]
        inits += [("sqrt2", np.array(math.sqrt(2), np.float32)), ("one", np.array(1, np.float32)),
                  ("half", np.array(0.5, np.float32))]
    else:
        # y = 0.5 * h * (1 + tanh(sqrt(2/pi) * (h + 0.044715 * h^3)))
        nodes += [H("Pow", ["h", "three"], ["c0"]), H("Mul", ["c0", "coef"], ["c1"]), H("Add", ["h", "c1"], ["c2"]),
                  H("Mul", ["c2", "s2pi"], ["c3"]), H("Tanh", ["c3"], ["c4"]), H("Add", ["c4", "one"], ["c5"]),
                  H("Mul", ["h", "c5"], ["c6"]), H("Mul", ["c6", "half"], ["y"])]
        inits += [("three", np.array(3, np.float32)), ("coef", np.array(0.044715, np.float32)),
                  ("s2pi", np.array(math.sqrt(2 / math.pi), np.float32)), ("one", np.array(1, np.float32)),
                  ("half", np.array(0.5, np.float32))]
    model = build_model(nodes, [("x", x)], ["y"], inits, opset=opset)
    check(model, {"x": x}, kind="transcendental", scale=k + 1)


# --------------------------------------------------------------------------- attention softmax
@examples(12)
@given(data=st.data())
def test_attention_scores_softmax(data):
    """(Q @ K^T) * scale + mask -> Softmax(-1) -> @ V : scaled dot-product attention."""
    rng = rng_from(data)
    b, h = _k("B", data, (1, 2)), _k("heads", data, (1, 2, 3))
    s, d = _k("S", data, (1, 3, 7, 17)), _k("D", data, (1, 4, 7, 16))
    q, kk, v = (gen(rng, "float32", (b, h, s, d), UNIT) for _ in range(3))
    mask_kind = data.draw(st.sampled_from(["none", "causal", "padding"]), label="mask")
    if mask_kind == "causal":
        mask = np.triu(np.full((s, s), -1e9, np.float32), 1)
    elif mask_kind == "padding":
        keep = rng.random((b, 1, 1, s)) < 0.8
        keep[..., 0] = True
        mask = np.where(keep, 0, -10000).astype(np.float32)
    else:
        mask = np.zeros((1,), np.float32)
    nodes = [H("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]), H("MatMul", ["q", "kt"], ["qk"]),
             H("Mul", ["qk", "scale"], ["qks"]), H("Add", ["qks", "mask"], ["logits"]),
             H("Softmax", ["logits"], ["p"], axis=-1), H("MatMul", ["p", "v"], ["out"])]
    inits = [("scale", np.array(1 / math.sqrt(d), np.float32)), ("mask", mask)]
    model = build_model(nodes, [("q", q), ("k", kk), ("v", v)], ["out", "p"], inits)
    check(model, {"q": q, "k": kk, "v": v}, kind="transcendental", scale=d + s)


# --------------------------------------------------------------------------- residual + LayerNorm
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@examples(10)
@given(data=st.data())
def test_residual_add_layernorm(dtype, data):
    rng = rng_from(data)
    b, s, c = _k("B", data, (1, 2, 3)), _k("S", data), _k("C", data, (7, 16, 17, 33, 64))
    x, r = gen(rng, dtype, (b, s, c)), gen(rng, dtype, (b, s, c))
    gamma, beta = gen(rng, dtype, (c,), Domain(0.5, 1.5)), gen(rng, dtype, (c,), UNIT)
    nodes = [H("Add", ["x", "res"], ["sum"]),
             H("LayerNormalization", ["sum", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-5)]
    # the residual sum is also an output: the fused kernel must still materialize it
    outs = ["y", "sum"] if data.draw(st.booleans(), label="sum_is_output") else ["y"]
    model = build_model(nodes, [("x", x), ("res", r)], outs, [("gamma", gamma), ("beta", beta)])
    check(model, {"x": x, "res": r}, kind="transcendental", scale=4)


# --------------------------------------------------------------------------- Conv -> BN -> Relu -> Add
@examples(12)
@given(data=st.data())
def test_conv_bn_relu_residual(data):
    """ResNet basic block tail: Conv(same padding) -> BatchNorm -> Relu -> + input (the
    engine may fold BN into the Conv weights and fuse Relu/Add)."""
    rng = rng_from(data)
    n, c = _k("N", data, (1, 2)), _k("C", data, (1, 3, 4, 8))
    hgt, wid = _k("H", data, (1, 3, 5, 7, 8)), _k("W", data, (1, 3, 5, 7, 17))
    k = data.draw(st.sampled_from([1, 3]), label="kernel")
    x = gen(rng, "float32", (n, c, hgt, wid), UNIT)
    w = gen(rng, "float32", (c, c, k, k), UNIT)
    bn = [gen(rng, "float32", (c,), Domain(0.5, 1.5)), gen(rng, "float32", (c,), UNIT),
          gen(rng, "float32", (c,), UNIT), gen(rng, "float32", (c,), Domain(0.2, 2.0))]
    conv_bias = data.draw(st.booleans(), label="conv_bias")
    conv_in = ["x", "w"] + (["cb"] if conv_bias else [])
    nodes = [H("Conv", conv_in, ["conv"], pads=[k // 2] * 4, kernel_shape=[k, k]),
             H("BatchNormalization", ["conv", "g", "b", "m", "v"], ["bn"], epsilon=1e-5),
             H("Relu", ["bn"], ["act"]),
             H("Add", ["act", "x"], ["y"])]
    inits = [("w", w), ("g", bn[0]), ("b", bn[1]), ("m", bn[2]), ("v", bn[3])]
    if conv_bias:
        inits.append(("cb", gen(rng, "float32", (c,), UNIT)))
    model = build_model(nodes, [("x", x)], ["y"], inits)
    check(model, {"x": x}, scale=4 * (c * k * k + 1))


# --------------------------------------------------------------------------- shape subgraph
@examples(10)
@given(data=st.data())
def test_shape_computation_reshape(data):
    """PyTorch-export idiom: Shape -> Gather -> Unsqueeze -> Concat -> Reshape, i.e. the
    target shape is computed in-graph from the input's shape (the engine folds it)."""
    rng = rng_from(data)
    b, s = _k("B", data, (1, 2, 3)), _k("S", data, (1, 3, 7))
    hd = data.draw(st.sampled_from([(2, 4), (3, 5), (1, 16)]), label="heads x head_dim")
    x = gen(rng, "float32", (b, s, hd[0] * hd[1]))
    nodes = [H("Shape", ["x"], ["shp"]),
             H("Gather", ["shp", "i0"], ["d0"], axis=0), H("Gather", ["shp", "i1"], ["d1"], axis=0),
             H("Unsqueeze", ["d0", "ax0"], ["u0"]), H("Unsqueeze", ["d1", "ax0"], ["u1"]),
             H("Concat", ["u0", "u1", "heads", "hdim"], ["target"], axis=0),
             H("Reshape", ["x", "target"], ["r"]),
             H("Transpose", ["r"], ["y"], perm=[0, 2, 1, 3])]
    inits = [("i0", np.array(0, np.int64)), ("i1", np.array(1, np.int64)), ("ax0", np.array([0], np.int64)),
             ("heads", np.array([hd[0]], np.int64)), ("hdim", np.array([-1], np.int64))]
    model = build_model(nodes, [("x", x)], ["y"], inits)
    check(model, {"x": x})


# --------------------------------------------------------------------------- dynamic dims
def _dynamic_mlp(batch_sizes, rng):
    k, n = 17, 7
    w1 = gen(rng, "float32", (k, 33), UNIT)
    b1 = gen(rng, "float32", (33,), UNIT)
    w2 = gen(rng, "float32", (33, n), UNIT)
    nodes = [H("MatMul", ["x", "w1"], ["h0"]), H("Add", ["h0", "b1"], ["h1"]), H("Relu", ["h1"], ["h2"]),
             H("MatMul", ["h2", "w2"], ["logits"]), H("Softmax", ["logits"], ["probs"], axis=-1),
             H("ReduceMax", ["logits"], ["best"], keepdims=0, axes=[-1])]
    example = gen(rng, "float32", (batch_sizes[0], k), UNIT)
    model = build_model(nodes, [("x", example)], ["probs", "best"],
                        [("w1", w1), ("b1", b1), ("w2", w2)], opset=17, input_shapes={"x": ["batch", k]})
    return model, k


def test_dynamic_batch_one_session():
    """One session, symbolic batch dim, run at different batch sizes (and back again):
    every run must match the reference, including a repeated size (no stale state)."""
    rng = np.random.default_rng(1234)
    sizes = [3, 17, 1, 3, 64]
    model, k = _dynamic_mlp(sizes, rng)
    sess = make_session(model)
    ins, outs = sess.get_inputs(), sess.get_outputs()
    assert [i.name for i in ins] == ["x"]
    assert list(ins[0].shape) == ["batch", k]
    assert ins[0].type == "tensor(float)"
    assert [o.name for o in outs] == ["probs", "best"]
    assert all(o.type == "tensor(float)" for o in outs)
    for b in sizes:
        x = gen(rng, "float32", (b, k), UNIT)
        res = check(model, {"x": x}, session=sess, kind="transcendental", scale=k + 33)
        assert res[0].shape == (b, 7) and res[1].shape == (b,)


@pytest.mark.parametrize("sizes", [(2, 5), (7, 1)])
def test_dynamic_batch_and_sequence_reshape(sizes):
    """Two symbolic dims (batch, seq) flowing through a Shape-computed Reshape, LayerNorm
    and Transpose; one session, two different (batch, seq) pairs."""
    rng = np.random.default_rng(sum(sizes))
    c = 12
    nodes = [H("Shape", ["x"], ["shp"]),
             H("Slice", ["shp", "s0", "s2", "ax0"], ["bs"]),                 # [batch, seq]
             H("Concat", ["bs", "split"], ["target"], axis=0),              # [batch, seq, 3, -1]
             H("LayerNormalization", ["x", "g", "b"], ["ln"], axis=-1),
             H("Reshape", ["ln", "target"], ["r"]),
             H("Transpose", ["r"], ["y"], perm=[0, 2, 1, 3])]
    inits = [("s0", np.array([0], np.int64)), ("s2", np.array([2], np.int64)), ("ax0", np.array([0], np.int64)),
             ("split", np.array([3, -1], np.int64)), ("g", gen(rng, "float32", (c,), Domain(0.5, 1.5))),
             ("b", gen(rng, "float32", (c,), UNIT))]
    example = gen(rng, "float32", (sizes[0], sizes[1], c))
    model = build_model(nodes, [("x", example)], ["y"], inits, input_shapes={"x": ["batch", "seq", c]})
    sess = make_session(model)
    assert list(sess.get_inputs()[0].shape) == ["batch", "seq", c]
    for b, s in [sizes, sizes[::-1]]:
        x = gen(rng, "float32", (b, s, c))
        out = check(model, {"x": x}, session=sess, kind="transcendental", scale=8)[0]
        assert out.shape == (b, 3, s, c // 3)
