"""ONNX -> Ember graph IR.

Reads a model from a path or bytes (external data next to a path included), checks every node
is supported before converting anything (so the error lists *all* unsupported nodes), turns
initializers into constants and graph dims into ints or symbols, and maps each ONNX node to
Ember ops with normalised attributes (opset differences are absorbed here)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...errors import EmberError, ModelLoadError, UnsupportedOpError
from ...ir import symbolic as S
from ...ir.builder import Builder
from ...ir.dtypes import from_onnx
from ...ir.graph import Graph, TensorType
from .converters import CONVERTERS, ConvertError, attrs_of
from .validate import check_dims, check_graph, check_node

MIN_OPSET, MAX_OPSET = 7, 23


def read_model(model):
    """Parse a path / bytes / ModelProto into an onnx.ModelProto, with friendly errors."""
    import onnx
    from google.protobuf.message import DecodeError

    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (str, os.PathLike)):
        p = Path(model)
        if not p.exists():
            raise ModelLoadError(f"model file '{p}' does not exist")
        try:
            return onnx.load_model(str(p), load_external_data=True)
        except (DecodeError, RuntimeError, ValueError, OSError) as e:
            raise ModelLoadError(f"'{p}' is not a valid ONNX model (corrupt or truncated file?): "
                                 f"{type(e).__name__}: {e}") from None
    if isinstance(model, (bytes, bytearray, memoryview)):
        try:
            m = onnx.load_model_from_string(bytes(model))
        except (DecodeError, RuntimeError, ValueError) as e:
            raise ModelLoadError(f"the bytes given are not a valid ONNX model (corrupt or truncated?): "
                                 f"{type(e).__name__}: {e}") from None
        return m
    raise ModelLoadError(f"expected a path, bytes or onnx.ModelProto, got {type(model).__name__}")


# (domain, op_type) -> converter `(builder, node, inputs, opset) -> outputs`, filled by
# `ember.custom_op` for nodes of custom domains
CUSTOM_OPS: dict = {}


def _opset(m) -> int:
    for imp in m.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return MAX_OPSET


def _check_supported(g, opset, custom_ops):
    bad = []
    for i, n in enumerate(g.node):
        name = n.name or f"{n.op_type}_{i}"
        if n.domain not in ("", "ai.onnx"):
            if (n.domain, n.op_type) in custom_ops or n.op_type in custom_ops:
                continue
            bad.append((name, f"{n.domain}.{n.op_type}", "custom-domain op with no registered kernel (register one with ember.custom_op, or pass --ops FILE.py to the ember command)"))
        elif n.op_type not in CONVERTERS:
            bad.append((name, n.op_type, "operator not implemented"))
    if bad:
        raise UnsupportedOpError(bad)


def _input_type(vi, used_names: set, fixed_dims: dict) -> TensorType:
    t = vi.type
    if not t.HasField("tensor_type"):
        raise UnsupportedOpError([(vi.name, "graph input", "only tensor inputs are supported")])
    tt = t.tensor_type
    dtype = from_onnx(tt.elem_type)
    dims = []
    for i, d in enumerate(tt.shape.dim):
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        else:
            name = d.dim_param or f"{vi.name}_dim{i}"
            name = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)
            dims.append(fixed_dims[name] if name in fixed_dims else S.sym(name))
            used_names.add(name)
    return TensorType(dtype, tuple(dims))


def load_onnx(model, custom_ops=None, fixed_dims=None) -> Graph:
    """Import an ONNX model into Ember's graph IR (constants folded while building);
    `fixed_dims` {symbol: size} makes those symbolic input dims static."""
    from onnx import numpy_helper

    m = read_model(model)
    opset = _opset(m)
    if opset < MIN_OPSET or opset > MAX_OPSET:
        raise ModelLoadError(f"model uses ONNX opset {opset}; Ember supports opsets {MIN_OPSET} to "
                             f"{MAX_OPSET} (convert it with onnx.version_converter)")
    g = m.graph
    custom_ops = {**CUSTOM_OPS, **(custom_ops or {})}
    _check_supported(g, opset, custom_ops)

    check_graph(g)
    b = Builder(fold=True)
    env: dict = {}
    for init in g.initializer:
        check_dims([int(d) for d in init.dims], from_onnx(init.data_type), f"initializer '{init.name}'")
        try:
            arr = numpy_helper.to_array(init)
        except Exception as e:
            raise ModelLoadError(f"initializer '{init.name}' cannot be read (missing external data "
                                 f"file?): {e}") from None
        env[init.name] = _const(arr)
    syms: set = set()
    for vi in g.input:
        if vi.name in env:  # an initializer that is also listed as an input: a constant
            continue
        t = _input_type(vi, syms, fixed_dims or {})
        check_dims(t.shape, t.dtype, f"graph input '{vi.name}'")
        env[vi.name] = b.input(vi.name, t)
    if not b.inputs and not g.input:
        pass

    for i, n in enumerate(g.node):
        name = n.name or f"{n.op_type}_{i}"
        ins = []
        for x in n.input:
            if x == "":
                ins.append(None)
            elif x not in env:
                raise ModelLoadError(f"node '{name}' ({n.op_type}) reads '{x}', which no earlier node, "
                                     f"input or initializer defines (graph not topologically sorted?)")
            else:
                ins.append(env[x])
        b.origin = (name,)
        conv = custom_ops.get((n.domain, n.op_type)) or custom_ops.get(n.op_type) \
            if n.domain not in ("", "ai.onnx") else CONVERTERS[n.op_type]
        try:
            if n.domain in ("", "ai.onnx"):
                check_node(name, n, ins, opset, attrs_of(n))
            while ins and ins[-1] is None:      # trailing empty names are absent optional inputs
                ins.pop()
            outs = conv(b, n, ins, opset)
        except ConvertError as e:
            raise UnsupportedOpError([(name, n.op_type, str(e))]) from None
        except EmberError as e:
            msg = str(e)
            if f"'{name}'" not in msg:
                msg = f"node '{name}' ({n.op_type}): {msg}"
            raise type(e)(msg) if type(e) is not UnsupportedOpError else e from None
        except Exception as e:    # a malformed node the checks missed: still name it
            kinds = [str(v.type) if v is not None else "-" for v in ins]
            raise ModelLoadError(f"node '{name}' ({n.op_type}) cannot be imported (malformed node?) with inputs "
                                 f"{kinds}: {type(e).__name__}: {e}") from None
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for k, x in enumerate(n.output):
            if x == "":
                continue
            if k >= len(outs) or outs[k] is None:
                raise UnsupportedOpError([(name, n.op_type, f"output {k} ('{x}') is not supported")])
            env[x] = outs[k]
    outputs = []
    for vo in g.output:
        if vo.name not in env:
            raise ModelLoadError(f"graph output '{vo.name}' is not produced by any node")
        outputs.append(env[vo.name])
    return b.graph(outputs, name=g.name or "graph", output_names=[vo.name for vo in g.output])


def _const(arr: np.ndarray):
    from ...ir.graph import const_value
    return const_value(np.asarray(arr, order="C"))
