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
