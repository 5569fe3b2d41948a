"""ONNX -> Ember graph IR.

Reads a model from a path or bytes (external data next to a path included), checks every node
is supported before converting anything (so the error lists *all* unsupported nodes), turns
initializers into constants and graph dims into ints or symbols, and maps each ONNX node to
Ember ops with normalised attributes (opset differences are absorbed here)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...errors import (DataDependentError, DimDependentError, EmberError, ModelLoadError, ShapeError,
                       StructuredIOError, UnsupportedOpError, ValueDependentError)
from ...ir import symbolic as S
from ...ir.builder import Builder
from ...ir.dtypes import NARROW, compute_dtype, from_onnx
from ...ir.graph import Graph, TensorType
from . import functions, qdq
from .converters import CONVERTERS as _BASE_CONVERTERS
from .converters import (ConvertError, DataDependentShape, NeedsDims, NeedsValues, attrs_of, known,
                         stack, static_or_fixed, take)
from .ml import ML_CONVERTERS, StringLabels, ZipMapped
from .recurrent import RECURRENT
from .sequences import SEQUENCES, Opt, Seq
from .validate import check_dims, check_graph, check_node

CONVERTERS = {**_BASE_CONVERTERS, **RECURRENT, **SEQUENCES}

ML_DOMAIN = "ai.onnx.ml"

# metadata key a flattened model carries (runtime/structured.py): its sequence and optional
# graph outputs become tensors named name[i] (a sequence's items) and name (an optional's value)
FLATTEN_KEY = "ember.flatten_structured_outputs"

# Ember's converters implement opsets 7 to 23; older models are upgraded to 7 on load, and
# opsets up to MAX_OPSET load where a node's newer schema adds nothing it sets (`_check_newer`)
MIN_OPSET, IMPLEMENTED_OPSET, MAX_OPSET = 7, 23, 28


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


def _upgrade(m, opset):
    """An opset 1-6 model converted to opset MIN_OPSET by onnx's version converter (the
    legacy semantics, such as BatchNormalization's `spatial` or the `consumed_inputs`
    attributes, are its adapters' business)."""
    from onnx import version_converter
    m = _channel_slopes(m)
    try:
        return version_converter.convert_version(m, MIN_OPSET)
    except Exception as e:  # noqa: BLE001 - the converter raises bare RuntimeErrors
        raise ModelLoadError(f"model uses ONNX opset {opset}, which Ember reads by converting it to "
                             f"opset {MIN_OPSET}; onnx.version_converter failed: {str(e).splitlines()[0][:300]}"
                             ) from None


def _channel_slopes(m):
    """Before opset 7, PRelu's slope of C values applies per channel (axis 1); from 7 on it
    broadcasts from the right, and the converter has no adapter: reshape such a slope
    initializer to [C, 1, ...] for the input's rank."""
    from onnx import numpy_helper, shape_inference
    inits = {i.name: i for i in m.graph.initializer}
    todo = [n for n in m.graph.node if n.op_type == "PRelu" and len(n.input) > 1 and n.input[1] in inits
            and len(inits[n.input[1]].dims) == 1 and inits[n.input[1]].dims[0] > 1]
    if not todo:
        return m
    try:
        typed = shape_inference.infer_shapes(m)
    except Exception:   # noqa: BLE001 - untyped: left as it is
        return m
    ranks = {vi.name: len(vi.type.tensor_type.shape.dim) for vi in
             list(typed.graph.input) + list(typed.graph.value_info) if vi.type.tensor_type.HasField("shape")}
    out = type(m)()
    out.CopyFrom(m)
    inits = {i.name: i for i in out.graph.initializer}
    for n in todo:
        r = ranks.get(n.input[0])
        if r is not None and r > 2:
            init = inits[n.input[1]]
            arr = numpy_helper.to_array(init)
            shape = [arr.size] + [1] * (r - 2)
            init.CopyFrom(numpy_helper.from_array(arr.reshape(shape), init.name))
            for vi in out.graph.input:      # old models list initializers as inputs too
                if vi.name == init.name and vi.type.tensor_type.HasField("shape"):
                    vi.type.tensor_type.shape.ClearField("dim")
                    for d in shape:
                        vi.type.tensor_type.shape.dim.add().dim_value = d
    return out


def _check_newer(name, n, opset):
    """A node of opset > IMPLEMENTED_OPSET whose schema there gained attributes or inputs over
    opset IMPLEMENTED_OPSET's: refused if it uses any of them, since its converter would ignore them."""
    from onnx import defs
    try:
        new = defs.get_schema(n.op_type, opset, "")
        old = defs.get_schema(n.op_type, IMPLEMENTED_OPSET, "")
    except defs.SchemaError:
        return
    if new.since_version == old.since_version:
        return
    for a in n.attribute:
        if a.name in new.attributes and a.name not in old.attributes:
            raise UnsupportedOpError([(name, n.op_type, f"attribute '{a.name}' (opset {new.since_version}) "
                                                        f"is not supported; Ember implements this op up to "
                                                        f"opset {old.since_version}")])
    if len([x for x in n.input if x]) > len(old.inputs) and old.max_input < len(n.input):
        raise UnsupportedOpError([(name, n.op_type, f"input {len(old.inputs)} ('{new.inputs[len(old.inputs)].name}', "
                                                    f"opset {new.since_version}) is not supported")])


def _check_supported(nodes, custom_ops):
    bad = []
    for i, (n, opset) in enumerate(nodes):
        name = n.name or f"{n.op_type}_{i}"
        if n.domain not in ("", "ai.onnx"):
            if (n.domain, n.op_type) in custom_ops or n.op_type in custom_ops:
                continue
            if n.domain == ML_DOMAIN:
                if n.op_type not in ML_CONVERTERS:
                    bad.append((name, f"{n.domain}.{n.op_type}", "ai.onnx.ml operator not implemented"))
                continue
            bad.append((name, f"{n.domain}.{n.op_type}", "custom-domain op with no registered kernel (register one with ember.custom_op, or pass --ops FILE.py to the ember command)"))
        elif n.op_type not in CONVERTERS and n.op_type not in CONTROL:
            bad.append((name, n.op_type, "operator not implemented"))
        elif opset > IMPLEMENTED_OPSET:
            _check_newer(name, n, opset)
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
        if d.HasField("dim_value") and d.dim_value != -1:
            dims.append(int(d.dim_value))
        else:
            # no name, a size of -1, or a name without a letter ("?", "-1", as Paddle and
            # others write "unknown"): a dim of its own, not one shared with every other "?"
            name = d.dim_param if any(ch.isalpha() for ch in d.dim_param) else f"{vi.name}_dim{i}"
            name = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)
            dims.append(fixed_dims[name] if name in fixed_dims else S.sym(name))
            used_names.add(name)
    return TensorType(dtype, tuple(dims))


def declared_inputs(m) -> list:
    """[(name, dtype, shape)] of the graph inputs of ModelProto `m` (initializers excluded)."""
    inits = {i.name for i in m.graph.initializer}
    out = []
    for vi in m.graph.input:
        if vi.name not in inits:
            t = _input_type(vi, set(), {})
            out.append((vi.name, t.dtype, t.shape))
    return out


def with_values(m, values: dict):
    """A copy of ModelProto `m` whose graph inputs named in `values` are initializers of
    those values: the model a session compiles for one value of its shape arguments."""
    from onnx import numpy_helper
    out = type(m)()
    out.CopyFrom(m)
    keep = [vi for vi in out.graph.input if vi.name not in values]
    del out.graph.input[:]
    out.graph.input.extend(keep)
    for name, arr in values.items():
        out.graph.initializer.append(numpy_helper.from_array(np.asarray(arr), name))
    return out


def load_onnx(model, custom_ops=None, fixed_dims=None) -> Graph:
    """Import an ONNX model into Ember's graph IR (constants folded while building);
    `fixed_dims` {symbol: size} makes those symbolic input dims static."""
    from onnx import numpy_helper

    m = read_model(model)
    opset = _opset(m)
    if opset < 1 or opset > MAX_OPSET:
        raise ModelLoadError(f"model uses ONNX opset {opset}; Ember supports opsets 1 to {MAX_OPSET}")
    if opset < MIN_OPSET:
        m, opset = _upgrade(m, opset), MIN_OPSET
    g = m.graph
    custom_ops = {**CUSTOM_OPS, **(custom_ops or {})}
    nodes = [(n, opset) for n in g.node]
    if any(n.domain in ("", "ai.onnx") and n.op_type not in CONVERTERS and functions.has_body(n.op_type, opset)
           for n in g.node):
        nodes = functions.expand(list(g.node), opset, CONVERTERS, functions.model_types(m))
    if any(n.op_type == "DequantizeLinear" for n, _ in nodes):
        nodes = qdq.integer_matmuls(nodes, g.initializer)
    _check_supported(nodes, custom_ops)

    structured = [vi.name for vi in g.input if not vi.type.HasField("tensor_type")] + \
        [vo.name for vo in g.output if vo.type.WhichOneof("value") not in (None, "tensor_type")]
    flatten = any(p.key == FLATTEN_KEY for p in m.metadata_props)
    if structured and not flatten:
        raise StructuredIOError(structured)
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

    _convert_nodes(b, nodes, env, custom_ops)
    outputs, names = [], []
    for vo, v in zip(g.output, _graph_outputs(g, env, "graph")):
        if isinstance(v, (ZipMapped, StringLabels)):   # its dicts / strings are made at the session boundary
            if not flatten:
                raise StructuredIOError([vo.name])
            v = v.value if isinstance(v, ZipMapped) else v.index
        if isinstance(v, Opt):
            v = v.value
            if v is None:
                continue
            if not isinstance(v, Seq):
                outputs.append(v)
                names.append(vo.name)
                continue
        if isinstance(v, Seq):
            if not flatten:
                raise StructuredIOError([vo.name])
            outputs += v.items
            names += [f"{vo.name}[{i}]" for i in range(len(v.items))]
        else:
            outputs.append(v)
            names.append(vo.name)
    return b.graph(outputs, name=g.name or "graph", output_names=names)


def _convert_nodes(b, nodes, env, custom_ops):
    """Convert [(NodeProto, opset)] in order, reading and extending `env` {name: Value}."""
    for i, (n, opset) in enumerate(nodes):
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
        boundary = [v for v in ins if isinstance(v, (ZipMapped, StringLabels))]
        if boundary:
            if n.op_type != "Identity":
                raise UnsupportedOpError([(name, n.op_type, "reads string labels or ZipMap's maps, which only a graph "
                                                            "output (through Identity) may hold: Ember has no string "
                                                            "tensors or maps")])
            env[n.output[0]] = boundary[0]
            continue
        b.origin = (name,)
        conv = custom_ops.get((n.domain, n.op_type)) or custom_ops.get(n.op_type) \
            if n.domain not in ("", "ai.onnx") else CONVERTERS.get(n.op_type)
        if conv is None and n.domain == ML_DOMAIN:
            conv = ML_CONVERTERS[n.op_type]
        if n.op_type in CONTROL and n.domain in ("", "ai.onnx"):
            conv = _control(CONTROL[n.op_type], env, custom_ops)
        try:
            if n.domain in ("", "ai.onnx"):
                check_node(name, n, ins, opset, attrs_of(n))
            while ins and ins[-1] is None:      # trailing empty names are absent optional inputs
                ins.pop()
            if n.domain in ("", "ai.onnx") and n.op_type not in NARROW_NATIVE \
                    and any(v is not None and v.dtype in NARROW for v in ins):
                outs = _in_compute_type(b, n, ins, opset, conv)
            else:
                outs = conv(b, n, ins, opset)
        except NeedsValues as e:
            raise ValueDependentError([(name, n.op_type, str(e))], e.inputs) from None
        except NeedsDims as e:
            raise DimDependentError([(name, n.op_type, str(e))], e.symbols) from None
        except DataDependentShape as e:
            raise DataDependentError([(name, n.op_type, str(e))], n) from None
        except ConvertError as e:
            raise UnsupportedOpError([(name, n.op_type, str(e))]) from None
        except EmberError as e:
            msg = str(e)
            if f"'{name}'" not in msg:
                msg = f"node '{name}' ({n.op_type}): {msg}"
            raise e if isinstance(e, UnsupportedOpError) else type(e)(msg) from None
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


# ops that read or write the narrow types themselves; every other op computes them in their
# compute type (float32, int8 or uint8), rounding each output back as ONNX's ops do
NARROW_NATIVE = frozenset({"Cast", "CastLike", "QuantizeLinear", "DequantizeLinear", "Shape", "Size"})


def _in_compute_type(b, n, ins, opset, conv):
    """Node `n` converted with its narrow-typed inputs widened to their compute type; an
    output whose schema type variable is a narrow input's is cast back to that type."""
    from onnx import defs
    schema = defs.get_schema(n.op_type, opset, "")
    formal = lambda params, i: params[min(i, len(params) - 1)].type_str if params else None
    narrow_vars = {formal(schema.inputs, i): v.dtype for i, v in enumerate(ins) if v is not None and v.dtype in NARROW}
    wide = [b.op("cast", [v], to=compute_dtype(v.dtype)) if v is not None and v.dtype in NARROW else v for v in ins]
    outs = conv(b, n, wide, opset)
    outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
    for k, y in enumerate(outs):
        to = narrow_vars.get(formal(schema.outputs, k))
        if y is not None and to is not None and y.dtype != to:
            outs[k] = b.op("cast", [y], to=to)
    return outs


def _control(fn, env, custom_ops):
    """A converter for a control-flow node: `fn` also gets the enclosing scope and custom ops,
    to convert its subgraphs."""
    return lambda b, n, ins, opset: fn(b, n, ins, opset, env, custom_ops)


def _inline_graph(b, g, env, opset, custom_ops, inputs=()):
    """The outputs of subgraph `g` converted in place, with the enclosing scope's values visible
    and its graph inputs bound to `inputs`."""
    from onnx import numpy_helper
    scope = dict(env)
    if len(inputs) != len(g.input):
        raise ModelLoadError(f"subgraph '{g.name}' declares {len(g.input)} inputs; its node passes {len(inputs)}")
    for vi, v in zip(g.input, inputs):
        scope[vi.name] = v
    for init in g.initializer:
        scope[init.name] = _const(numpy_helper.to_array(init))
    nodes = functions.expand(list(g.node), opset, CONVERTERS, {})   # (bodies needing types stay)
    _check_supported(nodes, custom_ops)
    _convert_nodes(b, nodes, scope, custom_ops)
    return _graph_outputs(g, scope, f"subgraph '{g.name}'")


def _graph_outputs(g, env, what):
    missing = [vo.name for vo in g.output if vo.name not in env]
    if missing:
        raise ModelLoadError(f"{what} output '{missing[0]}' is not produced by any node")
    return [env[vo.name] for vo in g.output]


def _if(b, n, ins, opset, env, custom_ops):
    """If: with a condition known when compiling (a constant, or from small graph inputs, then
    per value of them: `known`), the branch taken is compiled inline; a condition computed
    from data selects between both branches, computed, where their outputs agree in type."""
    from onnx import helper
    at = {a.name: helper.get_attribute_value(a) for a in n.attribute}
    then_g, else_g = at.get("then_branch"), at.get("else_branch")
    if then_g is None or else_g is None:
        raise ModelLoadError(f"node '{n.name}' (If) needs both then_branch and else_branch")
    cond = ins[0]
    if any(isinstance(d, int) and d != 1 for d in cond.shape):      # [1, 1] holds one too
        raise ShapeError(f"If's condition must hold one element, got shape {list(cond.shape)}")
    try:
        c = known(cond, "If condition")
    except (NeedsValues, NeedsDims):
        raise
    except ConvertError:
        c = None
    if c is not None:
        return _inline_graph(b, then_g if bool(np.asarray(c).reshape(-1)[0]) else else_g, env, opset, custom_ops)
    t = _inline_graph(b, then_g, env, opset, custom_ops)
    e = _inline_graph(b, else_g, env, opset, custom_ops)
    c0 = cond if cond.type.rank == 0 else b.op("reshape", [cond], shape=())     # (guarded: one element)
    outs = []
    for k, (x, y) in enumerate(zip(t, e)):
        if isinstance(x, (Seq, Opt)) or isinstance(y, (Seq, Opt)):
            raise ConvertError(f"output {k} of the branches is a sequence or optional and the condition is "
                               f"computed from data: Ember compiles such an If only when the condition is known")
        if x.type != y.type:
            raise ConvertError(f"output {k} of the branches differs ({x.type} / {y.type}) and the condition is "
                               f"computed from data: Ember compiles such an If only when both give one type")
        outs.append(b.op("where", [c0, x, y]))
    return outs


# a Scan is compiled unrolled, one copy of its body per step: bounded, so that a long scan
# is refused clearly rather than compiled for minutes
SCAN_UNROLL_LIMIT = 20000   # body nodes x steps


def _steps(x, axis, what):
    return static_or_fixed(x.shape[axis], f"{what}: the scan length, since Ember unrolls the scan,")


def _scan(b, n, ins, opset, env, custom_ops):
    """Scan, unrolled: step t binds the states and slice t of every scan input to the body's
    inputs and converts the body; scan outputs are stacked (reversed where a direction says)."""
    from onnx import helper
    at = {a.name: helper.get_attribute_value(a) for a in n.attribute}
    body = at.get("body")
    m = at.get("num_scan_inputs")
    if body is None or m is None:
        raise ModelLoadError(f"node '{n.name}' (Scan) needs the body and num_scan_inputs attributes")
    batched = opset < 9     # Scan-8: a leading batch axis on every input, then sequence_lens first
    if batched:
        seq_lens, ins = (ins[0] if ins else None), list(ins[1:])
        if seq_lens is not None:
            lens = known(seq_lens, "Scan sequence_lens")
            full = {ins[len(ins) - m].shape[1]} if ins else set()
            if lens is None or set(np.asarray(lens).reshape(-1).tolist()) - full:
                raise ConvertError("Scan-8 with sequence_lens shorter than the scan is not supported")
    nstate = len(ins) - m
    if nstate < 0:
        raise ModelLoadError(f"node '{n.name}' (Scan) has {len(ins)} inputs but num_scan_inputs={m}")
    k_out = len(body.output) - nstate
    in_axes = list(at.get("scan_input_axes", [0] * m)) if not batched else [1] * m
    in_dirs = list(at.get("scan_input_directions", at.get("directions", [0] * m)))
    out_axes = list(at.get("scan_output_axes", [0] * k_out)) if not batched else [1] * k_out
    out_dirs = list(at.get("scan_output_directions", [0] * k_out)) if not batched else [0] * k_out
    if len(in_axes) != m or len(in_dirs) != m or len(out_axes) != k_out or len(out_dirs) != k_out:
        raise ModelLoadError(f"node '{n.name}' (Scan): the axes/directions attributes must list one entry per "
                             f"scan input ({m}) and scan output ({k_out})")
    states, scans = list(ins[:nstate]), list(ins[nstate:])
    if batched:   # each batch row scanned on its own, then the rows stacked back
        if not scans:
            raise ModelLoadError(f"node '{n.name}' (Scan) has no scan inputs")
        batch = scans[0].shape[0]
        if not isinstance(batch, int):
            raise ConvertError("Scan-8's batch size must be known when compiling, since Ember unrolls the scan")
        rows = range(batch)
        per = [_scan_steps(b, body, [take(b, s, 0, r) for s in states], [take(b, x, 0, r) for x in scans],
                           [0] * m, in_dirs, [0] * k_out, out_dirs, n, opset, env, custom_ops) for r in rows]
        return [stack(b, [p[j] for p in per], 0) for j in range(nstate + k_out)]
    in_axes = [a + scans[i].type.rank if a < 0 else a for i, a in enumerate(in_axes)]
    return _scan_steps(b, body, states, scans, in_axes, in_dirs, out_axes, out_dirs, n, opset, env, custom_ops)


def _scan_steps(b, body, states, scans, in_axes, in_dirs, out_axes, out_dirs, n, opset, env, custom_ops):
    if not scans:
        raise ModelLoadError(f"node '{n.name}' (Scan) has no scan inputs")
    lens = {_steps(x, a, f"node '{n.name}' (Scan)") for x, a in zip(scans, in_axes)}
    if len(lens) != 1:
        raise ShapeError(f"node '{n.name}' (Scan): the scan inputs have different lengths {sorted(lens)}")
    steps = lens.pop()
    if steps * max(1, len(body.node)) > SCAN_UNROLL_LIMIT:
        raise ConvertError(f"a scan of {steps} steps over a body of {len(body.node)} nodes is longer than Ember "
                           f"unrolls ({SCAN_UNROLL_LIMIT} body nodes in all)")
    nstate = len(states)
    outs = [[] for _ in range(len(body.output) - nstate)]
    for t in range(steps):
        xs = [take(b, x, a, steps - 1 - t if d else t) for x, a, d in zip(scans, in_axes, in_dirs)]
        res = _inline_graph(b, body, env, opset, custom_ops, inputs=states + xs)
        states = list(res[:nstate])
        for j, y in enumerate(res[nstate:]):
            outs[j].append(y)
    stacked = []
    for j, parts in enumerate(outs):
        if out_dirs[j]:
            parts = parts[::-1]
        rank = parts[0].type.rank + 1
        axis = out_axes[j] + rank if out_axes[j] < 0 else out_axes[j]
        stacked.append(stack(b, parts, axis))
    return states + stacked


def _known_bool(v, what):
    """The value of a one-element condition when it is known while compiling, else None."""
    try:
        c = known(v, what)
    except (NeedsValues, NeedsDims):
        raise
    except ConvertError:
        return None
    return None if c is None else bool(np.asarray(c).reshape(-1)[0])


def _loop(b, n, ins, opset, env, custom_ops):
    """Loop, unrolled: iteration i binds i, the condition and the loop-carried values to the
    body's inputs and converts the body, while i < M and the condition holds. Both must be
    known while compiling (a constant, or per value of small graph inputs), except that a
    condition computed from data, with no scan outputs, freezes the carried values once false."""
    from onnx import helper
    at = {a.name: helper.get_attribute_value(a) for a in n.attribute}
    body = at.get("body")
    if body is None:
        raise ModelLoadError(f"node '{n.name}' (Loop) needs its body attribute")
    ins = list(ins) + [None] * max(0, 2 - len(ins))
    m_in, cond = ins[0], ins[1]
    carried = list(ins[2:])
    trips = None if m_in is None else static_or_fixed(np.asarray(known(m_in, "Loop trip count M")).reshape(-1)[0],
                                                      "Loop trip count M")
    k_scan = len(body.output) - 1 - len(carried)
    if k_scan < 0 or len(body.input) != 2 + len(carried):
        raise ModelLoadError(f"node '{n.name}' (Loop): the body takes {len(body.input)} inputs and gives "
                             f"{len(body.output)} outputs for {len(carried)} loop-carried values")
    limit = SCAN_UNROLL_LIMIT // max(1, len(body.node))
    c = True if cond is None else _known_bool(cond, "Loop condition")
    active = None if c is not None else cond      # data-dependent: a bool value
    scans = [[] for _ in range(k_scan)]
    i = 0
    while (trips is None or i < trips) and c is not False:
        if i >= limit:
            what = f"{trips} iterations" if trips is not None else "a loop whose end is not known while compiling"
            raise ConvertError(f"{what} over a body of {len(body.node)} nodes is more than Ember unrolls "
                               f"({SCAN_UNROLL_LIMIT} body nodes in all)")
        cond_in = cond if cond is not None else b.scalar(True, "bool")
        res = _inline_graph(b, body, env, opset, custom_ops, inputs=[b.scalar(i, "int64"), cond_in] + carried)
        new_cond, new_carried = res[0], list(res[1:1 + len(carried)])
        if active is not None:
            if k_scan:
                raise ConvertError("a Loop whose condition is computed from data cannot have scan outputs "
                                   "(their length would depend on data)")
            keep = b.op("reshape", [active], shape=())
            new_carried = [_masked(b, keep, y, x) for y, x in zip(new_carried, carried)]
            active = b.op("and", [keep, b.op("reshape", [new_cond], shape=())])
            cond = active
        else:
            c = _known_bool(new_cond, "Loop condition")
            if c is None:
                if k_scan:
                    raise ConvertError("a Loop whose condition is computed from data cannot have scan outputs "
                                       "(their length would depend on data)")
                if trips is None:
                    raise ConvertError("a Loop with no trip count whose condition is computed from data is "
                                       "not supported (Ember unrolls loops while compiling)")
                active = cond = new_cond
            else:
                cond = new_cond
        carried = new_carried
        for j, y in enumerate(res[1 + len(carried):]):
            scans[j].append(y)
        i += 1
    outs = carried
    for j, parts in enumerate(scans):
        if not parts:
            raise ConvertError("a Loop that runs no iteration has empty scan outputs of unknown shape")
        outs.append(stack(b, parts, 0))
    return outs


def _masked(b, keep, new, old):
    if isinstance(new, (Seq, Opt)) or isinstance(old, (Seq, Opt)):
        raise ConvertError("a Loop whose condition is computed from data cannot carry sequences or optionals")
    return b.op("where", [keep, new, old])


def _sequence_map(b, n, ins, opset, env, custom_ops):
    """SequenceMap, unrolled: the body once per position of the input sequences (tensor inputs
    passed whole to each); each body output becomes a sequence."""
    from onnx import helper
    at = {a.name: helper.get_attribute_value(a) for a in n.attribute}
    body = at.get("body")
    if body is None:
        raise ModelLoadError(f"node '{n.name}' (SequenceMap) needs its body attribute")
    lengths = {len(v.items) for v in ins if isinstance(v, Seq)}
    if not isinstance(ins[0], Seq) or len(lengths) != 1:
        raise ShapeError(f"SequenceMap's input sequences must all have one length, got {sorted(lengths)}")
    count = lengths.pop()
    outs = [[] for _ in body.output]
    for i in range(count):
        args = [v.items[i] if isinstance(v, Seq) else v for v in ins]
        for j, y in enumerate(_inline_graph(b, body, env, opset, custom_ops, inputs=args)):
            outs[j].append(y)
    elems = [vo.type.tensor_type.elem_type for vo in body.output]
    return [Seq(o, o[0].dtype if o else from_onnx(e or 1)) for o, e in zip(outs, elems)]


# control-flow ops, converted here since their subgraphs are converted like the graph
CONTROL = {"If": _if, "Scan": _scan, "Loop": _loop, "SequenceMap": _sequence_map}


def _const(arr: np.ndarray):
    from ...ir.graph import const_value
    return const_value(np.asarray(arr, order="C"))
