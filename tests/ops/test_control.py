"""Control flow compiled, never interpreted: Scan (unrolled, one body copy per step), each
case checked against onnx.reference on random shapes, axes and directions."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper

import ember

from .harness import build_model, check
from .strategies import Domain, examples, gen, rng_from


def _scan_body(feat):
    """state' = state + x * y * w (w from the outer scope); out = tanh(state') and x - y."""
    vi = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, [feat])
    nodes = [helper.make_node("Mul", ["x", "y"], ["xy"]),
             helper.make_node("Mul", ["xy", "w"], ["xyw"]),
             helper.make_node("Add", ["s", "xyw"], ["s2"]),
             helper.make_node("Tanh", ["s2"], ["o1"]),
             helper.make_node("Sub", ["x", "y"], ["o2"])]
    return helper.make_graph(nodes, "body", [vi("s"), vi("x"), vi("y")], [vi("s2"), vi("o1"), vi("o2")])


@examples(15)
@given(data=st.data())
def test_scan(data):
    rng = rng_from(data)
    steps = data.draw(st.integers(1, 7), label="steps")
    feat = data.draw(st.integers(1, 19), label="feat")
    in_axes = data.draw(st.lists(st.sampled_from([0, 1, -1]), min_size=2, max_size=2), label="in_axes")
    in_dirs = data.draw(st.lists(st.integers(0, 1), min_size=2, max_size=2), label="in_dirs")
    out_axes = data.draw(st.lists(st.sampled_from([0, 1, -2]), min_size=2, max_size=2), label="out_axes")
    out_dirs = data.draw(st.lists(st.integers(0, 1), min_size=2, max_size=2), label="out_dirs")
    shape_of = lambda a: [steps, feat] if a == 0 else [feat, steps]
    s0 = gen(rng, "float32", [feat], Domain(low=-1.0, high=1.0))
    x = gen(rng, "float32", shape_of(in_axes[0]), Domain(low=-2.0, high=2.0))
    y = gen(rng, "float32", shape_of(in_axes[1]), Domain(low=-2.0, high=2.0))
    w = gen(rng, "float32", [feat], Domain(low=-1.0, high=1.0))
    node = helper.make_node("Scan", ["s0", "x", "y"], ["s", "o1", "o2"], body=_scan_body(feat), num_scan_inputs=2,
                            scan_input_axes=in_axes, scan_input_directions=in_dirs,
                            scan_output_axes=out_axes, scan_output_directions=out_dirs)
    model = build_model([node], [("s0", s0), ("x", x), ("y", y)], ["s", "o1", "o2"], [("w", w)], opset=16)
    feeds = {"s0": s0, "x": x, "y": y}
    if in_axes == [0, 0] and not any(out_axes) and not any(out_dirs):
        check(model, feeds, kind="transcendental", scale=float(steps))
        return
    # onnx.reference implements only axis 0 and forward outputs: the spec's loop in numpy
    xs = [np.moveaxis(a, ax, 0)[::-1 if d else 1] for a, ax, d in zip((x, y), in_axes, in_dirs)]
    s, o1, o2 = s0.astype(np.float64), [], []
    for xt, yt in zip(*xs):
        s = s + xt * yt * w
        o1.append(np.tanh(s))
        o2.append(xt - yt)
    want = [s] + [np.moveaxis(np.stack(o[::-1 if d else 1]), 0, ax) for o, ax, d in zip((o1, o2), out_axes, out_dirs)]
    got = ember.InferenceSession(model.SerializeToString()).run(None, feeds)
    for g, e in zip(got, want):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5 * steps)


def test_scan8_batched():
    rng = np.random.default_rng(3)
    body = _scan_body(5)
    body.node.pop(1)   # no outer w in Scan-8's test: s2 = s + x*y
    body.node[1].input[1] = "xy"
    s0 = rng.standard_normal((2, 5)).astype(np.float32)
    x, y = (rng.standard_normal((2, 4, 5)).astype(np.float32) for _ in range(2))
    node = helper.make_node("Scan", ["", "s0", "x", "y"], ["s", "o1", "o2"], body=body, num_scan_inputs=2,
                            directions=[1, 0])
    model = build_model([node], [("s0", s0), ("x", x), ("y", y)], ["s", "o1", "o2"], opset=8)
    got = ember.InferenceSession(model.SerializeToString()).run(None, {"s0": s0, "x": x, "y": y})
    for b in range(2):    # onnx.reference has no Scan-8: the spec's loop per batch row
        s, o1, o2 = s0[b].astype(np.float64), [], []
        for xt, yt in zip(x[b, ::-1], y[b]):
            s = s + xt * yt
            o1.append(np.tanh(s))
            o2.append(xt - yt)
        for g, e in zip(got, [s, np.stack(o1), np.stack(o2)]):
            np.testing.assert_allclose(g[b], e, rtol=1e-5, atol=1e-5)


def test_scan_of_symbolic_length_is_refused_clearly():
    body = _scan_body(3)
    node = helper.make_node("Scan", ["s0", "x", "y"], ["s", "o1", "o2"], body=body, num_scan_inputs=2)
    vi = lambda n, s: helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
    g = helper.make_graph([node], "g", [vi("s0", [3]), vi("x", ["t", 3]), vi("y", ["t", 3])],
                          [vi("s", [3]), vi("o1", None), vi("o2", None)],
                          initializer=[helper.make_tensor("w", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 16)])
    with pytest.raises(ember.errors.UnsupportedOpError, match="scan length"):
        ember.InferenceSession(m.SerializeToString())
