"""DFT as matmuls with constant twiddle matrices: forward and inverse, real and complex input,
one-sided, padded or cut to dft_length, along any signal axis; against onnx.reference."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from .harness import check, node_model
from .strategies import Domain, examples, gen, rng_from


@pytest.mark.parametrize("opset", [17, 20])
@examples(20)
@given(data=st.data())
def test_dft(opset, data):
    rng = rng_from(data)
    lead = data.draw(st.lists(st.sampled_from([1, 2, 3]), min_size=1, max_size=2), label="lead")
    sig = data.draw(st.sampled_from([1, 2, 3, 5, 8, 16, 17]), label="signal")
    complex_in = data.draw(st.booleans(), label="complex")
    inverse = data.draw(st.booleans(), label="inverse")
    onesided = data.draw(st.booleans(), label="onesided") and (inverse or not complex_in)
    shape = lead + [sig] + [2 if complex_in or (inverse and onesided) else 1]
    axis = len(lead)
    x = gen(rng, "float32", shape, Domain(low=-2.0, high=2.0))
    length = data.draw(st.one_of(st.none(), st.sampled_from([2, 4, 7, 16])), label="dft_length")
    if inverse and onesided and length is None:
        length = 2 * (sig - 1) if sig > 1 else None
        if length is None:
            return
    ins = [("x", x), ("n", None if length is None else np.array(length, np.int64))]
    attrs = {"inverse": int(inverse), "onesided": int(onesided)}
    if opset >= 20:
        ins.append(("axis", np.array(axis if data.draw(st.booleans(), label="positive_axis") else axis - len(shape),
                                     np.int64)))
    else:
        attrs["axis"] = axis
    n = length or sig
    check(*node_model("DFT", ins, attrs, opset=opset, const={"n", "axis"}),
          kind="transcendental", scale=4.0 * n)


@examples(12)
@given(data=st.data())
def test_stft(data):
    rng = rng_from(data)
    length = data.draw(st.integers(4, 40), label="length")
    fl = data.draw(st.integers(2, min(16, length)), label="frame_length")
    step = data.draw(st.integers(1, 6), label="frame_step")
    complex_in = data.draw(st.booleans(), label="complex")
    x = gen(rng, "float32", [data.draw(st.integers(1, 2), label="batch"), length, 2 if complex_in else 1],
            Domain(low=-1.0, high=1.0))
    use_window = data.draw(st.booleans(), label="window")
    win = gen(rng, "float32", [fl], Domain(low=0.0, high=1.0)) if use_window else None
    give_length = not use_window or data.draw(st.booleans(), label="frame_length_input")
    onesided = 0 if complex_in else data.draw(st.sampled_from([None, 0, 1]), label="onesided")
    ins = [("x", x), ("step", np.array(step, np.int64)), ("window", win),
           ("fl", np.array(fl, np.int64) if give_length else None)]
    check(*node_model("STFT", ins, {"onesided": onesided}, opset=17, const={"step", "fl"}),
          kind="transcendental", scale=4.0 * fl)


@examples(10)
@given(data=st.data())
def test_mel_weight_matrix(data):
    length = data.draw(st.sampled_from([16, 64, 256, 512]), label="dft_length")
    mels = data.draw(st.integers(1, 12), label="mels")
    rate = data.draw(st.sampled_from([8000, 16000, 22050]), label="rate")
    lo = data.draw(st.sampled_from([0.0, 20.0, 300.0]), label="lower")
    hi = data.draw(st.sampled_from([rate / 2, rate / 3]), label="upper")
    ins = [("mels", np.array(mels, np.int64)), ("n", np.array(length, np.int64)), ("rate", np.array(rate, np.int64)),
           ("lo", np.array(lo, np.float32)), ("hi", np.array(hi, np.float32))]
    check(*node_model("MelWeightMatrix", ins, opset=17, const={"mels", "n", "rate", "lo", "hi"}))
