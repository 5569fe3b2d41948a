"""Feeds fuzzed against small models with symbolic dims: random shapes (dims of 0, 1, odd
and large), ranks and dtypes, NaN and inf. Ember may refuse a feed only with an EmberError,
and where it and onnxruntime both accept one, their results agree. (Model mutations:
tests/test_malformed.py.)"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import ember
from ember.errors import EmberError

ort = pytest.importorskip("onnxruntime")


def _model(nodes, ins, inits=()):
    g = h.make_graph(nodes, "g", ins, [h.make_tensor_value_info("y", T.FLOAT, None)], list(inits))
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


R = np.random.default_rng(0)
MODELS = {
    "mlp": _model([h.make_node("MatMul", ["x", "w"], ["t"]), h.make_node("Add", ["t", "b"], ["u"]),
                   h.make_node("Relu", ["u"], ["y"])], [h.make_tensor_value_info("x", T.FLOAT, ["n", 24])],
                  [nh.from_array(R.standard_normal((24, 20)).astype(np.float32), "w"),
                   nh.from_array(R.standard_normal(20).astype(np.float32), "b")]),
    "broadcast": _model([h.make_node("Mul", ["x", "z"], ["t"]), h.make_node("Sub", ["t", "x"], ["y"])],
                        [h.make_tensor_value_info("x", T.FLOAT, ["a", "b"]),
                         h.make_tensor_value_info("z", T.FLOAT, ["c", "b2"])]),
    "softmax_gather": _model([h.make_node("Gather", ["x", "i"], ["t"], axis=1),
                              h.make_node("Softmax", ["t"], ["y"], axis=-1)],
                             [h.make_tensor_value_info("x", T.FLOAT, ["n", "m"]),
                              h.make_tensor_value_info("i", T.INT64, ["k"])]),
    "conv_pool": _model([h.make_node("Conv", ["x", "w"], ["t"], pads=[1, 1, 1, 1]),
                         h.make_node("MaxPool", ["t"], ["y"], kernel_shape=[2, 2], strides=[2, 2])],
                        [h.make_tensor_value_info("x", T.FLOAT, ["n", 3, "h", "w"])],
                        [nh.from_array(R.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")]),
    "reduce_reshape": _model([h.make_node("ReduceMean", ["x"], ["t"], axes=[1], keepdims=1),
                              h.make_node("Reshape", ["t", "s"], ["y"])],
                             [h.make_tensor_value_info("x", T.FLOAT, ["n", "m", 4])],
                             [nh.from_array(np.array([-1, 2], np.int64), "s")]),
}
_SESSIONS: dict = {}


def _sessions(name):
    if name not in _SESSIONS:
        so = ort.SessionOptions()
        so.log_severity_level = 4
        _SESSIONS[name] = (ember.InferenceSession(MODELS[name]),
                           ort.InferenceSession(MODELS[name], so, providers=["CPUExecutionProvider"]))
    return _SESSIONS[name]


@st.composite
def _feed(draw, rank, dtype):
    shape = draw(st.lists(st.sampled_from([0, 1, 1, 2, 3, 5, 17, 40]), min_size=rank, max_size=rank))
    if np.dtype(dtype).kind == "i":
        return np.array(draw(st.lists(st.integers(-45, 45), min_size=int(np.prod(shape)),
                                      max_size=int(np.prod(shape)))), dtype).reshape(shape)
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 31)))
    a = rng.standard_normal(shape).astype(dtype)
    if a.size and draw(st.booleans()):
        a.reshape(-1)[rng.integers(0, a.size, 3)] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return a


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_feeds(data):
    name = data.draw(st.sampled_from(sorted(MODELS)))
    es, os_ = _sessions(name)
    feeds = {}
    for i in os_.get_inputs():
        rank = len(i.shape) + data.draw(st.sampled_from([0, 0, 0, 0, 1, -1]))
        want = np.int64 if i.type == "tensor(int64)" else np.float32
        dtype = data.draw(st.sampled_from([want, want, want, np.float64 if want is np.float32 else np.int32]))
        feeds[i.name] = data.draw(_feed(max(rank, 0), dtype))
    try:
        got = es.run(None, feeds)
    except EmberError:
        return
    try:
        want = os_.run(None, feeds)
    except Exception:      # noqa: BLE001 - onnxruntime refused what Ember accepted
        return
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        if not w.size:
            continue
        # where inf meets -inf (a sum) or NaN meets a max, engines may give NaN or an inf:
        # IEEE and ONNX leave the order open, so only finiteness must agree there
        fin = np.isfinite(w)
        np.testing.assert_array_equal(np.isfinite(g), fin)
        scale = max(float(np.abs(w[fin]).max(initial=0.0)), 1.0)
        np.testing.assert_allclose(g[fin], w[fin], rtol=1e-4, atol=1e-4 * scale)
