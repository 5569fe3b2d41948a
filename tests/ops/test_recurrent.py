"""RNN, GRU and LSTM (and ReverseSequence): the input projection as one matmul, the recurrence
a native loop over time (float32, default gate functions) or unrolled (other activations).
onnx.reference implements only the forward default form, so the general forms (directions,
layouts, sequence lengths, initial states, peepholes, clip, activation functions with their
alphas) are checked against onnxruntime, the default ones against onnx.reference too; the
batch and the sequence length also run symbolic."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper

import ember

from .harness import check, node_model
from .strategies import examples, rng_from

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
DEFAULT_ACTS = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}
ACTS = ["Tanh", "Sigmoid", "Relu", "Affine", "LeakyRelu", "ThresholdedRelu", "ScaledTanh", "HardSigmoid", "Elu",
        "Softsign", "Softplus"]
TAKES = {"Affine": (True, True), "LeakyRelu": (True, False), "ThresholdedRelu": (True, False),
         "ScaledTanh": (True, True), "HardSigmoid": (True, True), "Elu": (True, False)}


def _model(op, data, rng, symbolic_batch, layout=0):
    g = GATES[op]
    steps = data.draw(st.integers(1, 6), label="steps")
    batch = data.draw(st.sampled_from([1, 2, 3]), label="batch")
    isz = data.draw(st.sampled_from([1, 3, 5, 17]), label="input")
    hid = data.draw(st.sampled_from([1, 2, 7, 16]), label="hidden")
    direction = data.draw(st.sampled_from(["forward", "reverse", "bidirectional"]), label="direction")
    nd = 2 if direction == "bidirectional" else 1
    f32 = lambda *s: rng.uniform(-1, 1, s).astype(np.float32)
    feeds = {"X": f32(steps, batch, isz), "W": f32(nd, g * hid, isz), "R": f32(nd, g * hid, hid)}
    names = ["X", "W", "R"]
    if data.draw(st.booleans(), label="bias"):
        feeds["B"] = f32(nd, 2 * g * hid)
    names.append("B" if "B" in feeds else "")
    if data.draw(st.booleans(), label="seq_lens"):
        feeds["L"] = rng.integers(1, steps + 1, batch).astype(np.int32)
    names.append("L" if "L" in feeds else "")
    states = ["H0", "C0"] if op == "LSTM" else ["H0"]
    for s in states:
        if data.draw(st.booleans(), label=s):
            feeds[s] = f32(nd, batch, hid)
        names.append(s if s in feeds else "")
    if op == "LSTM" and data.draw(st.booleans(), label="peephole"):
        feeds["P"] = f32(nd, 3 * hid)
        names.append("P")
    attrs = {"hidden_size": hid, "direction": direction}
    if data.draw(st.booleans(), label="custom_activations"):
        acts = [data.draw(st.sampled_from(ACTS), label="act") for _ in range(len(DEFAULT_ACTS[op]) * nd)]
        attrs["activations"] = acts
        alphas = [float(rng.uniform(0.2, 1.5)) for a in acts if TAKES.get(a, (0, 0))[0]]
        betas = [float(rng.uniform(-0.5, 0.5)) for a in acts if TAKES.get(a, (0, 0))[1]]
        if alphas:
            attrs["activation_alpha"] = alphas
        if betas:
            attrs["activation_beta"] = betas
    if data.draw(st.booleans(), label="clip"):
        attrs["clip"] = float(rng.uniform(0.5, 3))
    if op == "GRU":
        attrs["linear_before_reset"] = data.draw(st.integers(0, 1), label="linear_before_reset")
    while names[-1] == "":
        names.pop()
    outs = ["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"]
    return op, names, outs, attrs, feeds


def _build(op, names, outs, attrs, feeds, symbolic_batch, layout, symbolic_steps=False):
    """The model in `layout` (feeds are given in layout 0 and transposed to match)."""
    if layout:
        feeds = {n: (np.ascontiguousarray(a.transpose(1, 0, 2)) if n in ("X", "H0", "C0") else a)
                 for n, a in feeds.items()}
    node = helper.make_node(op, names, outs, **{**attrs, "layout": layout})
    vi = lambda n, a: helper.make_tensor_value_info(
        n, TensorProto.INT32 if a.dtype == np.int32 else TensorProto.FLOAT,
        ["batch" if symbolic_batch and (layout and i == 0 or not layout and i == 1) and n in ("X",) else
         "steps" if symbolic_steps and i == layout and n == "X" else d
         for i, d in enumerate(a.shape)])
    graph = helper.make_graph([node], "g", [vi(n, feeds[n]) for n in names if n],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), feeds


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
@examples(12)
@given(data=st.data())
def test_recurrent_against_onnxruntime(op, data):
    ort = pytest.importorskip("onnxruntime")
    rng = rng_from(data)
    spec = _model(op, data, rng, False)
    symbolic = data.draw(st.booleans(), label="symbolic")
    layout = data.draw(st.integers(0, 1), label="layout")
    # a symbolic length needs the native loop: the default gate functions
    steps = data.draw(st.booleans(), label="symbolic_steps") and "activations" not in spec[3]
    ref, feeds0 = _build(*spec, False, 0)     # (onnxruntime implements layout 0 only)
    want = ort.InferenceSession(ref.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds0)
    model, feeds = _build(*spec, symbolic, layout, steps)
    got = ember.InferenceSession(model.SerializeToString()).run(None, feeds)
    if layout:   # back to layout 0: Y [B, T, D, H] -> [T, D, B, H], states [B, D, H] -> [D, B, H]
        got = [got[0].transpose(1, 2, 0, 3)] + [s.transpose(1, 0, 2) for s in got[1:]]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
@examples(6)
@given(data=st.data())
def test_recurrent_forward_against_reference(op, data):
    rng = rng_from(data)
    g, steps, batch, isz, hid = GATES[op], data.draw(st.integers(1, 5)), data.draw(st.integers(1, 3)), 5, 3
    f32 = lambda *s: rng.uniform(-1, 1, s).astype(np.float32)
    ins = [("X", f32(steps, batch, isz)), ("W", f32(1, g * hid, isz)), ("R", f32(1, g * hid, hid)),
           ("B", f32(1, 2 * g * hid))]
    model, feeds = node_model(op, ins, {"hidden_size": hid}, n_outputs=3 if op == "LSTM" else 2, opset=14,
                              const=["W", "R", "B"])
    check(model, feeds, kind="transcendental", scale=4.0)


def test_reverse_sequence():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 5)).astype(np.float32)
    lens = np.array([4, 1, 3], np.int64)
    for t_axis, b_axis, xx in ((0, 1, x), (1, 0, x.transpose(1, 0, 2).copy())):
        check(*node_model("ReverseSequence", [("x", xx), ("lens", lens)], {"time_axis": t_axis, "batch_axis": b_axis},
                          opset=10))


def _symbolic_length_model(op, attrs, isz=3, hid=5):
    g = GATES[op]
    node = helper.make_node(op, ["X", "W", "R", "B"], ["Y", "Y_h"], hidden_size=hid, **attrs)
    vi = lambda n, s: helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
    rng = np.random.default_rng(3)
    inits = [helper.make_tensor(n, TensorProto.FLOAT, s, rng.uniform(-1, 1, s).astype(np.float32).ravel())
             for n, s in (("W", (1, g * hid, isz)), ("R", (1, g * hid, hid)), ("B", (1, 2 * g * hid)))]
    graph = helper.make_graph([node], "g", [vi("X", ["t", "batch", isz])], [vi("Y", None), vi("Y_h", None)],
                              initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_one_build_serves_every_sequence_length(op):
    """A symbolic sequence length compiles once, to a native loop over time, and serves
    lengths 1, odd and long (against onnxruntime)."""
    ort = pytest.importorskip("onnxruntime")
    m = _symbolic_length_model(op, {}).SerializeToString()
    sess, ref = ember.InferenceSession(m), ort.InferenceSession(m, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for steps, batch in ((1, 1), (7, 3), (300, 2)):
        x = rng.uniform(-1, 1, (steps, batch, 3)).astype(np.float32)
        for g, w in zip(sess.run(None, {"X": x}), ref.run(None, {"X": x})):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    assert set(sess._variants) <= {()}      # no variant with a length fixed


def test_unrolled_recurrence_of_symbolic_length_compiles_per_length():
    """Other gate functions are unrolled, which needs the length when compiling: a build per
    length the session meets."""
    ort = pytest.importorskip("onnxruntime")
    m = _symbolic_length_model("RNN", {"activations": ["Relu"]}).SerializeToString()
    sess, ref = ember.InferenceSession(m), ort.InferenceSession(m, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    for steps in (2, 5):
        x = rng.uniform(-1, 1, (steps, 2, 3)).astype(np.float32)
        for g, w in zip(sess.run(None, {"X": x}), ref.run(None, {"X": x})):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    assert sess.compile_stats["value_variants"] == 2
