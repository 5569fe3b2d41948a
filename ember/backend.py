"""`onnx.backend` adapter, in the shape of `onnxruntime.backend`: the ONNX backend test suite
(and any tool written against that interface) runs models through Ember's compiled path.

    import ember.backend as backend
    rep = backend.prepare(model_proto)          # compiles once
    outputs = rep.run([x, y])                   # a tuple-like of numpy arrays, named by output
"""
from __future__ import annotations

import numpy as np
from onnx.backend.base import Backend, BackendRep, Device, DeviceType, namedtupledict

from .errors import InvalidInputError
from .runtime.session import InferenceSession, SessionOptions


class EmberBackendRep(BackendRep):
    """A prepared (compiled) model: `run(inputs)` takes a list in graph-input order, a dict by
    name, or one array when the model has one input."""

    def __init__(self, session: InferenceSession):
        self._session = session
        self._in_names = [i.name for i in session.get_inputs()]
        self._out_names = [o.name for o in session.get_outputs()]

    @property
    def session(self) -> InferenceSession:
        return self._session

    def run(self, inputs, **kwargs):
        if isinstance(inputs, dict):
            feed = dict(inputs)
        elif isinstance(inputs, (list, tuple)):
            if len(inputs) != len(self._in_names):
                raise InvalidInputError(f"the model takes {len(self._in_names)} input(s) "
                                        f"{self._in_names}, {len(inputs)} were given")
            feed = dict(zip(self._in_names, inputs))
        else:
            if len(self._in_names) != 1:
                raise InvalidInputError(f"one array was given, the model takes {len(self._in_names)} "
                                        f"inputs {self._in_names}: pass a list or a dict")
            feed = {self._in_names[0]: inputs}
        outs = self._session.run(None, feed)
        return namedtupledict("Outputs", self._out_names)(*outs)


def _options(kwargs) -> SessionOptions:
    opts = SessionOptions()
    for k, v in kwargs.items():
        if hasattr(opts, k):
            setattr(opts, k, v)
    return opts


class EmberBackend(Backend):
    @classmethod
    def is_compatible(cls, model, device: str = "CPU", **kwargs) -> bool:
        return cls.supports_device(device)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return Device(device).type == DeviceType.CPU

    @classmethod
    def prepare(cls, model, device: str = "CPU", **kwargs) -> EmberBackendRep:
        """Compile `model` (ModelProto, bytes or path); SessionOptions fields may be given as
        keywords (`intra_op_num_threads=1`)."""
        if not cls.supports_device(device):
            raise InvalidInputError(f"device '{device}' is not supported: Ember's backend runs on CPU")
        if hasattr(model, "SerializeToString"):
            model = model.SerializeToString()
        return EmberBackendRep(InferenceSession(model, _options(kwargs)))

    @classmethod
    def run_model(cls, model, inputs, device: str = "CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node, inputs, device: str = "CPU", outputs_info=None, **kwargs):
        """Run one NodeProto on `inputs` (arrays in the node's input order) by wrapping it in a
        one-node model whose inputs take the arrays' types and shapes."""
        from onnx import helper

        arrays = [np.asarray(x) for x in inputs]
        names = [n for n in node.input if n]
        g_inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
                    for n, a in zip(names, arrays)]
        if outputs_info:
            g_outputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.dtype(t)), s)
                         for n, (t, s) in zip(node.output, outputs_info)]
        else:
            g_outputs = [helper.make_empty_tensor_value_info(n) for n in node.output if n]
        opset = kwargs.pop("opset_version", None)
        graph = helper.make_graph([node], "run_node", g_inputs, g_outputs)
        opsets = [helper.make_opsetid(node.domain or "", opset)] if opset else None
        model = helper.make_model(graph, opset_imports=opsets) if opsets else helper.make_model(graph)
        return cls.prepare(model, device, **kwargs).run(dict(zip(names, arrays)))


is_compatible = EmberBackend.is_compatible
prepare = EmberBackend.prepare
run = EmberBackend.run_model
run_model = EmberBackend.run_model
run_node = EmberBackend.run_node
supports_device = EmberBackend.supports_device
