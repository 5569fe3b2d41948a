"""Checks that turn a malformed ONNX model into an EmberError naming the node, the input or
attribute, and what was expected, before a converter or a later pass trips over it.

Arity, attribute types and input types come from the ONNX schema of the node's opset, so they
hold for every op; the op-specific checks below cover what schemas cannot say (ranks, channel
counts, permutations, shape values)."""
from __future__ import annotations

import math

import numpy as np

from ...errors import ModelLoadError, ShapeError
from ...ir import symbolic as S
from ...ir.dtypes import itemsize, onnx_type_str

# no tensor of a sane model comes near this; past it sizes overflow or allocation fails
MAX_TENSOR_BYTES = 1 << 40


def check_graph(g):
    """Graph-level consistency: unique names, every read defined earlier, outputs produced."""
    defined = {init.name for init in g.initializer}
    seen_inputs = set()
    for vi in g.input:
        if vi.name in seen_inputs:
            raise ModelLoadError(f"graph input '{vi.name}' is declared twice")
        seen_inputs.add(vi.name)
    defined |= seen_inputs
    producer: dict = {}
    for i, n in enumerate(g.node):
        name = n.name or f"{n.op_type}_{i}"
        for x in n.input:
            if x and x not in defined:
                raise ModelLoadError(f"node '{name}' ({n.op_type}) reads '{x}', which no earlier node, "
                                     f"input or initializer defines (graph not topologically sorted?)")
        for x in n.output:
            if not x:
                continue
            if x in producer:
                raise ModelLoadError(f"node '{name}' ({n.op_type}) writes '{x}', which node "
                                     f"'{producer[x]}' already writes; every tensor needs one producer")
            if x in defined:
                raise ModelLoadError(f"node '{name}' ({n.op_type}) writes '{x}', which is already a "
                                     f"graph input or initializer")
            producer[x] = name
            defined.add(x)
    for vo in g.output:
        if vo.name not in defined:
            raise ModelLoadError(f"graph output '{vo.name}' is not produced by any node")


def check_dims(dims, dtype: str, what: str):
    """Dims are >= 0 and the tensor fits in MAX_TENSOR_BYTES (symbolic dims count as 1)."""
    for k, d in enumerate(dims):
        if isinstance(d, int) and d < 0:
            raise ShapeError(f"{what} has dimension {k} = {d} (shape {_fmt(dims)}); expected a size >= 0")
    size = math.prod(d for d in dims if isinstance(d, int)) * itemsize(dtype)
    if size > MAX_TENSOR_BYTES:
        raise ShapeError(f"{what} would take {size} bytes ({dtype}{_fmt(dims)}); expected at most "
                         f"{MAX_TENSOR_BYTES} (2**40) bytes per tensor")


def check_outputs(name, n, outs):
    for x, v in zip(n.output, outs):
        if x and v is not None:
            check_dims(v.shape, v.dtype, f"node '{name}' ({n.op_type}): output '{x}'")


def check_node(name, n, ins, opset, attrs):
    """Everything about one standard-domain node that can be checked from its inputs' types and
    constant values before converting it."""
    who = f"node '{name}' ({n.op_type})"
    schema = _schema(n.op_type, opset)
    if schema is None:  # op newer than the model's opset: the converter decides
        return
    _check_arity(who, n, schema)
    _check_attrs(who, n, schema, opset)
    _check_input_types(who, n, ins, schema)
    if "kernel_shape" in schema.attributes and n.op_type not in ("ConvTranspose", "MaxUnpool"):   # (they widen their input)
        _check_window(who, ins, attrs)
    check = _OP_CHECKS.get(n.op_type)
    if check is not None:
        check(who, n, ins, attrs)


def _schema(op_type, opset):
    from onnx import defs
    try:
        return defs.get_schema(op_type, opset, "")
    except defs.SchemaError:
        return None


def _fmt(dims):
    return "[" + ",".join(str(d) for d in dims) + "]"


def _span(lo, hi):
    return f"{lo}" if lo == hi else (f"at least {lo}" if hi >= 1 << 30 else f"{lo} to {hi}")


def _check_arity(who, n, schema):
    from onnx.defs import OpSchema
    for kind, given, lo, hi, formals in (("inputs", list(n.input), schema.min_input, schema.max_input, schema.inputs),
                                         ("outputs", list(n.output), schema.min_output, schema.max_output, schema.outputs)):
        if not lo <= len(given) <= hi:
            names = ", ".join(f.name for f in formals)
            raise ModelLoadError(f"{who} has {len(given)} {kind[:-1] if len(given) == 1 else kind}, "
                                 f"expected {_span(lo, hi)} ({names})")
        for k, x in enumerate(given):
            f = formals[min(k, len(formals) - 1)]
            if not x and f.option != OpSchema.FormalParameterOption.Optional and kind == "inputs":
                raise ModelLoadError(f"{who}: input {k} ({f.name}) is required but left empty")


def _check_attrs(who, n, schema, opset):
    from onnx import AttributeProto
    given = {a.name: a for a in n.attribute}
    for a in n.attribute:
        want = schema.attributes.get(a.name)
        if want is None:  # e.g. an attribute of another opset, which converters would misread
            raise ModelLoadError(f"{who}: attribute '{a.name}' is not defined for {n.op_type} at opset "
                                 f"{opset}; expected one of {sorted(schema.attributes) or 'none'}")
        if int(a.type) != int(want.type):
            raise ModelLoadError(f"{who}: attribute '{a.name}' is {AttributeProto.AttributeType.Name(a.type)}, "
                                 f"expected {AttributeProto.AttributeType.Name(int(want.type))}")
    for k, want in schema.attributes.items():
        if want.required and k not in given:
            raise ModelLoadError(f"{who}: required attribute '{k}' is missing")


def _check_input_types(who, n, ins, schema):
    allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
    bound: dict = {}
    for k, v in enumerate(ins):
        if v is None or not schema.inputs:
            continue
        f = schema.inputs[min(k, len(schema.inputs) - 1)]
        got = v.onnx_type if hasattr(v, "onnx_type") else onnx_type_str(v.dtype)   # (a Seq or Opt)
        ok = allowed.get(f.type_str, {f.type_str})
        if got not in ok and f"optional({got})" not in ok:     # (a value passes where its optional may)
            raise ShapeError(f"{who}: input {k} ({f.name}) has type {got}, expected one of "
                             f"{', '.join(sorted(ok))}")
        if f.type_str in allowed and f.is_homogeneous:
            first = bound.setdefault(f.type_str, (k, got))
            if first[1] != got:
                raise ShapeError(f"{who}: input {k} ({f.name}) has type {got} but input {first[0]} has "
                                 f"{first[1]}; both are '{f.type_str}' and must match")


def _ints_attr(attrs, key, nd, who, lo, length=None):
    v = attrs.get(key)
    if v is None:
        return None
    v = list(v)
    want = nd if length is None else length
    if len(v) != want:
        raise ShapeError(f"{who}: attribute '{key}' has {len(v)} values {v}, expected {want} "
                         f"(input has {nd} spatial dims)")
    if any(x < lo for x in v):
        raise ShapeError(f"{who}: attribute '{key}' = {v}, expected every value >= {lo}")
    return v


def _check_window(who, ins, attrs):
    """kernel_shape / strides / dilations / pads of windowed ops (Conv, pools) match the rank."""
    x = ins[0]
    if x.type.rank < 3:
        raise ShapeError(f"{who}: input 0 has shape {_fmt(x.shape)}, expected rank >= 3 "
                         f"(batch, channels, spatial...)")
    nd = x.type.rank - 2
    kernel = _ints_attr(attrs, "kernel_shape", nd, who, 1)
    _ints_attr(attrs, "strides", nd, who, 1)
    dil = _ints_attr(attrs, "dilations", nd, who, 1) or [1] * nd
    pads = _ints_attr(attrs, "pads", nd, who, 0, length=2 * nd) or [0] * (2 * nd)
    auto = attrs.get("auto_pad", "NOTSET")
    if auto not in ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"):
        raise ShapeError(f"{who}: auto_pad = '{auto}', expected NOTSET, SAME_UPPER, SAME_LOWER or VALID")
    w = ins[1] if len(ins) > 1 else None
    if kernel is None and w is not None and w.type.rank == x.type.rank:  # Conv: the kernel is W's
        kernel = list(w.shape[2:])
    if kernel is None or auto in ("SAME_UPPER", "SAME_LOWER"):
        return
    if auto == "VALID":
        pads = [0] * (2 * nd)
    for i, d in enumerate(x.shape[2:]):
        k = kernel[i]
        if isinstance(d, int) and isinstance(k, int) and d + pads[i] + pads[i + nd] < (k - 1) * dil[i] + 1:
            raise ShapeError(f"{who}: the {(k - 1) * dil[i] + 1}-wide window (kernel {k}, dilation {dil[i]}) "
                             f"does not fit spatial dim {i} of size {d} + pads {pads[i]}+{pads[i + nd]}")


def _check_conv(who, n, ins, attrs):
    x, w = ins[0], ins[1]
    if w.type.rank != x.type.rank:
        raise ShapeError(f"{who}: weight W has shape {_fmt(w.shape)}, expected rank {x.type.rank} "
                         f"like input X {_fmt(x.shape)}")
    group = attrs.get("group", 1)
    if group < 1:
        raise ShapeError(f"{who}: group = {group}, expected >= 1")
    c, m = x.shape[1], w.shape[0]
    if isinstance(c, int) and c % group:
        raise ShapeError(f"{who}: group = {group} does not divide the {c} input channels of X {_fmt(x.shape)}")
    if isinstance(m, int) and m % group:
        raise ShapeError(f"{who}: group = {group} does not divide the {m} output channels of W {_fmt(w.shape)}")
    if isinstance(c, int) and isinstance(w.shape[1], int) and w.shape[1] * group != c:
        raise ShapeError(f"{who}: W {_fmt(w.shape)} has {w.shape[1]} channels per group x group {group} "
                         f"= {w.shape[1] * group}, expected the {c} input channels of X {_fmt(x.shape)}")
    kernel = attrs.get("kernel_shape")
    if kernel is not None and any(isinstance(d, int) and d != k for k, d in zip(kernel, w.shape[2:])):
        raise ShapeError(f"{who}: kernel_shape = {list(kernel)}, expected W's spatial dims {list(w.shape[2:])}")
    b = ins[2] if len(ins) > 2 else None
    if b is not None and (b.type.rank != 1 or (isinstance(b.shape[0], int) and isinstance(m, int)
                                                  and b.shape[0] != m)):
        raise ShapeError(f"{who}: bias B has shape {_fmt(ins[2].shape)}, expected [{m}] (W's output channels)")


def _check_gemm(who, n, ins, attrs):
    a, b = ins[0], ins[1]
    for k, v in enumerate((a, b)):
        if v.type.rank != 2:
            raise ShapeError(f"{who}: input {k} has shape {_fmt(v.shape)}, expected rank 2")
    ka = a.shape[0] if attrs.get("transA", 0) else a.shape[1]
    kb = b.shape[1] if attrs.get("transB", 0) else b.shape[0]
    if isinstance(ka, int) and isinstance(kb, int) and ka != kb:
        raise ShapeError(f"{who}: inner dimensions differ: A {_fmt(a.shape)} (transA={attrs.get('transA', 0)}) "
                         f"and B {_fmt(b.shape)} (transB={attrs.get('transB', 0)})")


def _check_transpose(who, n, ins, attrs):
    perm = attrs.get("perm")
    r = ins[0].type.rank
    if perm is not None and sorted(perm) != list(range(r)):
        raise ShapeError(f"{who}: perm = {list(perm)}, expected a permutation of {list(range(r))} "
                         f"(input has rank {r})")


def _const_ints(v):
    """The values of a constant int input, or None when it is computed at run time."""
    if v is None or not v.is_const:
        return None
    return [d if isinstance(d, S.Sym) else int(d) for d in np.asarray(v.const).reshape(-1).tolist()]


def _check_reshape(who, n, ins, attrs):
    target = _const_ints(ins[1])
    if target is None:
        return
    r = ins[0].type.rank
    fixed = [d for d in target if isinstance(d, int)]
    if any(d < -1 for d in fixed) or fixed.count(-1) > 1:
        raise ShapeError(f"{who}: target shape {target}, expected sizes >= 0 and at most one -1")
    if not attrs.get("allowzero", 0):
        for k, d in enumerate(target):
            if isinstance(d, int) and d == 0 and k >= r:
                raise ShapeError(f"{who}: target shape {target} has 0 (copy the input's dim) at "
                                 f"position {k}, but the input {_fmt(ins[0].shape)} has rank {r}")


def _check_shape_input(k):
    def check(who, n, ins, attrs):
        shape = _const_ints(ins[k])
        if shape is not None and any(isinstance(d, int) and d < 0 for d in shape):
            raise ShapeError(f"{who}: shape {shape} has a negative size; expected sizes >= 0")
    return check


def _check_flatten(who, n, ins, attrs):
    r = ins[0].type.rank
    axis = attrs.get("axis", 1)
    if not -r <= axis <= r:
        raise ShapeError(f"{who}: axis {axis} is out of range for rank {r}; expected {-r} to {r}")


def _check_gather(who, n, ins, attrs):
    data = ins[0]
    if data.type.rank < 1:
        raise ShapeError(f"{who}: data is a scalar, expected rank >= 1")
    idx = ins[1]
    axis = attrs.get("axis", 0)
    d = data.shape[axis] if -data.type.rank <= axis < data.type.rank else None
    if isinstance(d, int) and idx.is_const and idx.const.dtype != object and idx.const.size:
        lo, hi = int(idx.const.min()), int(idx.const.max())
        if lo < -d or hi >= d:
            raise ShapeError(f"{who}: indices range over [{lo}, {hi}], expected [{-d}, {d - 1}] "
                             f"(axis {axis} of data {_fmt(data.shape)})")


def _check_split(who, n, ins, attrs):
    x, n_out = ins[0], len(n.output)
    if x.type.rank < 1:
        raise ShapeError(f"{who}: input is a scalar, expected rank >= 1")
    axis = attrs.get("axis", 0)
    if not -x.type.rank <= axis < x.type.rank:
        return  # the converter reports the axis
    sizes = _const_ints(ins[1]) if len(ins) > 1 else None
    sizes = sizes if sizes is not None else attrs.get("split")
    if "num_outputs" in attrs and attrs["num_outputs"] != n_out:
        raise ShapeError(f"{who}: num_outputs = {attrs['num_outputs']}, but the node has {n_out} outputs")
    if sizes is None:
        return
    d = x.shape[axis]
    fixed = [s for s in sizes if isinstance(s, int)]
    if len(sizes) != n_out or any(s < 0 for s in fixed) or \
            (isinstance(d, int) and len(fixed) == len(sizes) and sum(fixed) != d):
        raise ShapeError(f"{who}: split sizes {list(sizes)}, expected {n_out} sizes >= 0 (one per output) "
                         f"adding up to {d} (axis {axis} of {_fmt(x.shape)})")


def _check_range(who, n, ins, attrs):
    for k, v in enumerate(ins):
        if v.type.rank != 0 and S.prod(v.shape) != 1:
            raise ShapeError(f"{who}: input {k} has shape {_fmt(v.shape)}, expected a scalar")
    delta = ins[2]
    if delta.is_const and delta.const.dtype != object and not delta.const.reshape(-1)[0]:
        raise ShapeError(f"{who}: delta is 0, expected a non-zero step")


_OP_CHECKS = {
    "Conv": _check_conv, "Gemm": _check_gemm, "Transpose": _check_transpose,
    "Reshape": _check_reshape, "Expand": _check_shape_input(1), "ConstantOfShape": _check_shape_input(0),
    "Flatten": _check_flatten, "Gather": _check_gather, "Range": _check_range,
    "Split": _check_split,
}
