"""A custom activation written in Ember's kernel language, used inside an ONNX model.

    python examples/custom_activation.py

`mish(x) = x * tanh(softplus(x))` is registered as op `Mish` of the ONNX domain
`example.ops`. The model computes `Mish(x @ W + b) * 2`; Ember fuses the custom op into the
matmul's epilogue together with the bias and the scale — one kernel, as `ember inspect`
shows — and the output matches a numpy reference.
"""
from __future__ import annotations

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.lang import Param, exp, float32, log, tanh

DOMAIN = "example.ops"


@ember.kernel
def mish(x: float32, beta: Param = 1.0) -> float32:
    # softplus(x) = log(1 + exp(x)), written to stay finite for large x
    bx = x * beta
    softplus = bx if bx > 20.0 else log(1.0 + exp(bx))
    return x * tanh(softplus / beta)


ember.custom_op("Mish", mish, domain=DOMAIN)


def mish_reference(x, beta=1.0):
    x = x.astype(np.float64)
    return (x * np.tanh(np.logaddexp(0.0, beta * x) / beta)).astype(np.float32)


def build_model(k=64, n=48, seed=0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32) / 8, "W")
    b = numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), "b")
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["xw"], name="matmul"),
             helper.make_node("Add", ["xw", "b"], ["pre"], name="bias"),
             helper.make_node("Mish", ["pre"], ["act"], name="mish", domain=DOMAIN, beta=1.0),
             helper.make_node("Mul", ["act", "two"], ["y"], name="scale")]
    graph = helper.make_graph(nodes, "mish_mlp",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", n])],
                              [w, b, two])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid(DOMAIN, 1)])


def main():
    model = build_model()
    sess = ember.InferenceSession(model.SerializeToString())
    x = np.random.default_rng(1).standard_normal((5, 64)).astype(np.float32)
    y = sess.run(None, {"x": x})[0]
    w = numpy_helper.to_array(model.graph.initializer[0])
    b = numpy_helper.to_array(model.graph.initializer[1])
    ref = 2 * mish_reference(x @ w + b)
    err = float(np.max(np.abs(y - ref) / (np.abs(ref) + 1e-3)))
    print(f"max relative error vs numpy: {err:.2e}")
    # the same from the command line: ember inspect mish_mlp.onnx --ops examples/custom_activation.py
    import os
    import tempfile
    from ember.cli.main import main as cli
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "mish_mlp.onnx")
        onnx.save(model, path)
        cli(["inspect", path])
    return 0 if err < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
