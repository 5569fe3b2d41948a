"""Self-tests of the harness: check() must reject wrong engine outputs (so a passing suite
means something).  They use a fake session and never touch the engine under test."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from .harness import build_model, check, compare, node_model
from .strategies import gen


class FakeSession:
    """Returns the reference outputs passed through `mutate`."""

    def __init__(self, outputs, mutate=lambda outs: outs):
        self.outputs, self.mutate = outputs, mutate

    def run(self, names, feeds):
        return self.mutate([o.copy() for o in self.outputs])


def _tanh_model(dtype="float32", shape=(3, 7)):
    x = gen(np.random.default_rng(0), dtype, shape)
    model, feeds = node_model("Tanh", [("x", x)])
    return model, feeds, [np.tanh(x)]


def test_exact_outputs_pass():
    model, feeds, ref = _tanh_model()
    check(model, feeds, session=FakeSession(ref), kind="transcendental")


def test_small_float_error_within_tolerance_passes():
    model, feeds, ref = _tanh_model()
    check(model, feeds, session=FakeSession(ref, lambda o: [o[0] * np.float32(1 + 2e-6)]))


@pytest.mark.parametrize("mutate,msg", [
    (lambda o: [o[0] + np.float32(1e-3)], "out of tolerance"),
    (lambda o: [o[0].astype(np.float64)], "dtype"),
    (lambda o: [o[0].reshape(7, 3)], "shape"),
    (lambda o: [o[0][:, :6]], "shape"),
    (lambda o: [np.where(o[0] > 0.5, np.nan, o[0]).astype(np.float32)], "out of tolerance"),
    (lambda o: o + o, "outputs"),
    (lambda o: [], "outputs"),
])
def test_wrong_outputs_are_caught(mutate, msg):
    model, feeds, ref = _tanh_model()
    with pytest.raises(AssertionError, match=msg):
        check(model, feeds, session=FakeSession(ref, mutate), kind="transcendental")


def test_float16_tolerance_is_a_few_ulp():
    model, feeds, ref = _tanh_model("float16")
    one_ulp = [np.nextafter(ref[0], np.float16(np.inf))]
    check(model, feeds, session=FakeSession(one_ulp))
    with pytest.raises(AssertionError):
        check(model, feeds, session=FakeSession([ref[0] * np.float16(1.02)]))


def test_integer_and_bool_are_exact():
    a = np.arange(12, dtype=np.int64).reshape(3, 4)
    model, feeds = node_model("Neg", [("a", a)])
    with pytest.raises(AssertionError, match="differ"):
        check(model, feeds, session=FakeSession([-a], lambda o: [o[0] + (o[0] == -5)]))
    b = a % 3 == 0
    model, feeds = node_model("Not", [("b", b)])
    with pytest.raises(AssertionError, match="differ"):
        check(model, feeds, session=FakeSession([b]))  # identity instead of Not


def test_nan_and_inf_must_match():
    e = np.array([np.nan, np.inf, -np.inf, 1.0], dtype=np.float32)
    assert compare(e.copy(), e, rtol=1e-5, atol=1e-6) is None
    assert compare(np.array([0, np.inf, -np.inf, 1], np.float32), e, rtol=1e-5, atol=1e-6)
    assert compare(np.array([np.nan, -np.inf, -np.inf, 1], np.float32), e, rtol=1e-5, atol=1e-6)
    assert compare(np.array([np.nan, np.inf, -np.inf, np.nan], np.float32), e, rtol=1e-5, atol=1e-6)
    assert compare(np.array([np.nan, 3e38, -np.inf, 1], np.float32), e, rtol=1e-5, atol=1e-6)


def test_declared_output_dtype_is_enforced():
    """A reference that returns a wrong dtype is cast to the declared type, and the engine
    must produce exactly the declared type."""
    x = np.ones((2, 3), np.float32)
    model = build_model([helper.make_node("Identity", ["x"], ["y"])], [("x", x)], ["y"])
    with pytest.raises(AssertionError, match="declares"):
        check(model, {"x": x}, session=FakeSession([x.astype(np.float16)]))


def test_engine_exception_reports_model():
    class Boom:
        def run(self, names, feeds):
            raise RuntimeError("kaboom")

    model, feeds, _ = _tanh_model()
    with pytest.raises(AssertionError, match=r"(?s)kaboom.*Tanh"):
        check(model, feeds, session=Boom())
