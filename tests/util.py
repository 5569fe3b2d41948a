import numpy as np
from onnx import TensorProto, helper, numpy_helper


def make_model(nodes, inputs, outputs, inits=(), opset=18):
    """inputs/outputs: [(name, elem_type, shape)], inits: {name: array}."""
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(inits).items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()


def mlp_model(layers=2, width=64, seed=0):
    rng = np.random.default_rng(seed)
    nodes, inits, x = [], {}, "x"
    for i in range(layers):
        inits[f"w{i}"] = rng.standard_normal((width, width)).astype(np.float32) / 8
        inits[f"b{i}"] = rng.standard_normal(width).astype(np.float32)
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
                  helper.make_node("Relu", [f"a{i}"], [f"h{i}"])]
        x = f"h{i}"
    return make_model(nodes, [("x", TensorProto.FLOAT, ["batch", width])],
                      [(x, TensorProto.FLOAT, ["batch", width])], inits)
