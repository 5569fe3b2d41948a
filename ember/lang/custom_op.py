"""`ember.custom_op`: a kernel-language kernel as a graph op, usable from ONNX models.

An **elementwise** kernel (scalar parameters, a return type) becomes a pointwise op: its body
is inlined into whatever fused kernel consumes it, exactly like a built-in op, so it costs no
extra pass over memory. ONNX attributes of the node set the kernel's `Param`s.

A **tensor** kernel (tensor parameters: the node's inputs, then its outputs) becomes a
library op: one kernel of its own, with a type/shape rule given by `infer`. With
`epilogue=True` (the kernel writes each output element once, with vector stores along the
last axis, and never reads its output back) the pointwise ops after it fuse into its stores.
"""
from __future__ import annotations

import hashlib
import inspect

import numpy as np

from ..errors import EmberError, ShapeError
from ..frontends.onnx.loader import CUSTOM_OPS
from ..ir.graph import TensorType
from ..ir.ops import OPS, LibraryImpl, OpDef, broadcast_shapes
from .elementwise import inline_elementwise
from .kernel import Kernel
from .types import Param


def _fingerprint(kern: Kernel) -> str:
    try:
        src = inspect.getsource(inspect.getmodule(kern.fn))
    except (OSError, TypeError):
        src = inspect.getsource(kern.fn)
    return hashlib.sha256(src.encode()).hexdigest()[:16]


def custom_op(name: str, kern: Kernel, *, domain: str = "ember.custom", infer=None, epilogue: bool = False):
    """Register `kern` as op `name` of ONNX domain `domain`; returns the graph op name.

    `infer(input_types, attrs) -> [TensorType]` is needed for tensor kernels; elementwise
    kernels broadcast their inputs and return the kernel's return type."""
    if not isinstance(kern, Kernel):
        raise EmberError(f"custom_op('{name}'): pass a function decorated with @ember.kernel")
    op_name = f"{domain}.{name}"
    params = [n for n, a in kern._annotations.items() if a is Param]
    runtime = [n for n, a in kern._annotations.items() if a is not Param]
    if kern.elementwise:
        _register_elementwise(op_name, kern, params, runtime)
    else:
        if infer is None:
            raise EmberError(f"custom_op('{name}'): a tensor kernel needs infer=(input_types, attrs) -> "
                             "[output TensorType]")
        _register_tensor(op_name, kern, params, infer, epilogue)

    def convert(b, node, ins, opset):
        from ..frontends.onnx.converters import attrs_of
        attrs = attrs_of(node)
        unknown = [k for k in attrs if k not in params]
        if unknown:
            raise ShapeError(f"custom op {domain}.{name} has no parameter(s) {unknown}; the kernel's "
                             f"compile-time parameters are {params}")
        return b.op(op_name, ins, **attrs)
    CUSTOM_OPS[(domain, name)] = convert
    return op_name


def unregister_op(name: str, *, domain: str = "ember.custom") -> None:
    """Remove custom op `name` of `domain` (registered by `custom_op`): models using it are
    refused again, and it no longer counts in compiled-model cache keys."""
    op_name = f"{domain}.{name}"
    if (domain, name) not in CUSTOM_OPS:
        raise EmberError(f"unregister_op('{name}', domain='{domain}'): no such custom op is registered")
    del CUSTOM_OPS[(domain, name)]
    OPS.pop(op_name, None)


def _register_elementwise(op_name, kern, params, runtime):
    out_dtype = kern._ret.name

    def infer(types, attrs):
        if len(types) != len(runtime):
            raise ShapeError(f"{attrs.get('_who', op_name)}: takes {len(runtime)} inputs "
                             f"({', '.join(runtime)}), got {len(types)}")
        return [TensorType(out_dtype, broadcast_shapes(*[t.shape for t in types], who=op_name))]

    def ref(arrays, attrs):
        arrays = np.broadcast_arrays(*arrays)
        return [np.asarray(kern(*arrays, **{k: v for k, v in attrs.items() if k in params}))]

    def emit(o, *vals, **attrs):
        return inline_elementwise(kern, list(vals), {k: v for k, v in attrs.items() if k in params})

    OPS[op_name] = OpDef(op_name, "pointwise", infer, ref, emit, cost=4, fingerprint=_fingerprint(kern))


def _register_tensor(op_name, kern, params, infer, epilogue):
    def applies(node):
        return True

    def lower(node, target):
        return kern, {k: v for k, v in node.attrs.items() if k in params}

    OPS[op_name] = OpDef(op_name, "composite", infer, library=LibraryImpl(applies, lower, epilogue),
                         fingerprint=_fingerprint(kern) + (":epilogue" if epilogue else ""))
