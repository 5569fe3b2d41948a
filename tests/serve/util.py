"""Test models and a server run on a background thread, on loopback ports picked by the OS."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as TP
from onnx import helper, numpy_helper


def save(model, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def mlp_model(seed=0, din=5, dout=3):
    """z = relu(x @ W + b), x float32 [batch, din]."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((din, dout)).astype(np.float32)
    b = rng.standard_normal(dout).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"]), helper.make_node("Add", ["y", "b"], ["yb"]),
         helper.make_node("Relu", ["yb"], ["z"])], "mlp",
        [helper.make_tensor_value_info("x", TP.FLOAT, ["batch", din])],
        [helper.make_tensor_value_info("z", TP.FLOAT, ["batch", dout])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "b")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def ragged_model():
    """y = 2.5 x, x float32 [batch, seq]; s = the row sums of y [batch]."""
    g = helper.make_graph(
        [helper.make_node("Constant", [], ["two"], value=numpy_helper.from_array(np.array(2.5, np.float32))),
         helper.make_node("Mul", ["x", "two"], ["y"]),
         helper.make_node("ReduceSum", ["y", "ax"], ["s"], keepdims=0)], "ragged",
        [helper.make_tensor_value_info("x", TP.FLOAT, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", TP.FLOAT, ["batch", "seq"]),
         helper.make_tensor_value_info("s", TP.FLOAT, ["batch"])],
        [numpy_helper.from_array(np.array([1], np.int64), "ax")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def typed_model():
    """A model that does not batch: int64 a [2, n] and bool m [n] -> where(m, a, -a) and a's sum."""
    g = helper.make_graph(
        [helper.make_node("Neg", ["a"], ["na"]), helper.make_node("Where", ["m", "a", "na"], ["w"]),
         helper.make_node("ReduceSum", ["a"], ["total"], keepdims=0)], "typed",
        [helper.make_tensor_value_info("a", TP.INT64, [2, "n"]), helper.make_tensor_value_info("m", TP.BOOL, ["n"])],
        [helper.make_tensor_value_info("w", TP.INT64, [2, "n"]), helper.make_tensor_value_info("total", TP.INT64, [])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@contextmanager
def running(models, **options):
    """A started `Server` (HTTP and gRPC on free loopback ports) for these ServedModels."""
    from ember.serve.core import InferenceServer, ServeOptions
    from ember.serve.server import Server

    srv = Server(InferenceServer(models, ServeOptions(**options)), port=0, grpc_port=0)
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 60
    while not srv.is_started:
        if not t.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    try:
        yield srv
    finally:
        srv.should_exit = True
        t.join(30)
