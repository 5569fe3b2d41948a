"""ONNX function ops Ember has no converter for (RMSNormalization, MeanVarianceNormalization,
the window functions, the loss ops...): the importer inlines the body their schema defines
(ember/frontends/onnx/functions.py), each checked against onnx.reference."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from .harness import check, node_model
from .strategies import Domain, examples, gen, pick_consts, rng_from, shapes


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@examples(12)
@given(data=st.data())
def test_rms_normalization(dtype, data):
    rng = rng_from(data)
    shape = list(data.draw(shapes(1, 4, max_size=2048), label="shape"))
    rank = len(shape)
    ax = data.draw(st.one_of(st.none(), st.integers(-rank, rank - 1)), label="axis")
    a = (-1 if ax is None else ax) % rank
    x = gen(rng, dtype, shape, Domain(low=-3.0, high=3.0))
    scale = gen(rng, dtype, shape[a:], Domain(low=-2.0, high=2.0))
    eps = data.draw(st.sampled_from([None, 1e-3]), label="epsilon")
    const = {"scale"} if data.draw(st.booleans(), label="scale_const") else set()
    check(*node_model("RMSNormalization", [("x", x), ("scale", scale)], {"axis": ax, "epsilon": eps},
                      opset=23, const=const | pick_consts(data, ["x"])),
          kind="transcendental", scale=4.0 * (1 + math.log2(max(2, math.prod(shape[a:])))))


@examples(12)
@given(data=st.data())
def test_mean_variance_normalization(data):
    rng = rng_from(data)
    shape = list(data.draw(shapes(4, 4, max_size=2048), label="shape"))
    axes = data.draw(st.sampled_from([None, [0, 2, 3], [1], [2, 3]]), label="axes")
    x = gen(rng, "float32", shape, Domain(low=-3.0, high=5.0))
    check(*node_model("MeanVarianceNormalization", [("x", x)], {"axes": axes}, opset=13,
                      const=pick_consts(data, ["x"])), kind="transcendental", scale=64.0)


@pytest.mark.parametrize("op", ["HannWindow", "HammingWindow", "BlackmanWindow"])
@pytest.mark.parametrize("periodic", [None, 0])
@pytest.mark.parametrize("size", [1, 7, 16, 33])
def test_window_functions(op, periodic, size):
    # the size is a graph input: the session compiles a variant per value of it
    check(*node_model(op, [("size", np.array(size, np.int64))], {"periodic": periodic}, opset=17),
          kind="transcendental")


@pytest.mark.parametrize("reduction", [None, "none", "sum", "mean"])
@pytest.mark.parametrize("weighted", [False, True])
@examples(6)
@given(data=st.data())
def test_negative_log_likelihood_loss(reduction, weighted, data):
    rng = rng_from(data)
    n, c = data.draw(st.integers(1, 6), label="n"), data.draw(st.integers(2, 9), label="c")
    extra = data.draw(st.lists(st.integers(1, 5), max_size=2), label="extra")
    x = gen(rng, "float32", [n, c, *extra], Domain(low=-3.0, high=0.0))
    t = rng.integers(0, c, size=[n, *extra]).astype(np.int64)
    ignore = data.draw(st.sampled_from([None, 0, 1]), label="ignore_index")
    inputs = [("input", x), ("target", t)]
    if weighted:
        inputs.append(("weight", gen(rng, "float32", [c], Domain(low=0.1, high=2.0))))
    check(*node_model("NegativeLogLikelihoodLoss", inputs, {"reduction": reduction, "ignore_index": ignore},
                      opset=22), kind="transcendental", scale=8.0)
