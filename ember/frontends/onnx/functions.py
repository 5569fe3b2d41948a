"""ONNX function ops: ops the standard defines by a body of other ops (Attention, the loss
ops, RMSNormalization, GroupNormalization, the window functions...). Where Ember has no
converter of its own for such an op, the importer inlines the op's body from its schema, for
the model's opset and, for context-dependent bodies, the node's input types, so the op is
compiled from the primitives it is made of; nested function ops expand in turn."""
from __future__ import annotations

from ...errors import UnsupportedOpError

MAX_DEPTH = 8


def _schema(op_type, opset):
    from onnx import defs
    try:
        return defs.get_schema(op_type, opset, "")
    except defs.SchemaError:
        return None


def has_body(op_type, opset) -> bool:
    s = _schema(op_type, opset)
    return s is not None and (s.has_function or s.has_context_dependent_function)


def _body(node, opset, types):
    """The FunctionProto of `node` at `opset` (None when the schema gives none for these
    input types)."""
    from onnx import FunctionProto, TypeProto
    s = _schema(node.op_type, opset)
    if s.has_function:
        f = s.get_function_with_opset_version(opset) if s.function_opset_versions else s.function_body
        if isinstance(f, bytes):
            g = FunctionProto()
            g.ParseFromString(f)
            f = g
        return f if f is not None and len(f.node) else None
    tps = []
    for x in node.input:
        t = types.get(x) if x else None
        tps.append((t if t is not None else TypeProto()).SerializeToString())
    if any(x and types.get(x) is None for x in node.input):
        return None
    try:
        raw = s.get_context_dependent_function_with_opset_version(opset, node.SerializeToString(), tps)
    except Exception:   # noqa: BLE001 - the schema's builder rejects these types / attributes
        return None
    if not raw:
        return None
    f = FunctionProto()
    f.ParseFromString(raw if isinstance(raw, bytes) else raw.SerializeToString())
    return f


def _body_opset(f, default):
    for imp in f.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return default


def _types_of(nodes, inputs, opset):
    """{value name: TypeProto} for `nodes` fed `inputs` [(name, TypeProto)], by onnx's shape
    inference (whatever it cannot type is left out)."""
    from onnx import helper, shape_inference
    g = helper.make_graph(list(nodes), "body", [helper.make_value_info(n, t) for n, t in inputs], [])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    try:
        m = shape_inference.infer_shapes(m)
    except Exception:   # noqa: BLE001 - untyped values: context-dependent bodies below them are skipped
        return dict(inputs)
    out = dict(inputs)
    for vi in m.graph.value_info:
        out[vi.name] = vi.type
    return out


def _schema_defaults(node, opset) -> dict:
    s = _schema(node.op_type, opset)
    out = {}
    for name, a in (s.attributes.items() if s is not None else ()):
        if a.default_value is not None and a.default_value.type:
            out[name] = a.default_value
    return out


def _inline(node, f, prefix, opset):
    """`f`'s nodes with its formals renamed to `node`'s actual inputs/outputs, its internal
    values to `prefix` + name, and attribute references resolved against `node`."""
    from onnx import NodeProto
    names = {}
    for k, formal in enumerate(f.input):
        names[formal] = node.input[k] if k < len(node.input) else ""
    for k, formal in enumerate(f.output):
        if k < len(node.output) and node.output[k]:
            names[formal] = node.output[k]
    given = {a.name: a for a in node.attribute}
    defaults = {**_schema_defaults(node, opset), **{a.name: a for a in f.attribute_proto}}

    def rename(x):
        return "" if x == "" else names.get(x, prefix + x)

    out = []
    for i, bn in enumerate(f.node):
        nn = NodeProto()
        nn.CopyFrom(bn)
        nn.name = prefix + (bn.name or f"{bn.op_type}_{i}")
        nn.input[:] = [rename(x) for x in bn.input]
        nn.output[:] = [rename(x) for x in bn.output]
        del nn.attribute[:]
        for a in bn.attribute:
            if len(a.graphs):
                raise UnsupportedOpError([(node.name or node.op_type, node.op_type,
                                           "its function body has a list of subgraphs, which Ember does not inline")])
            if a.HasField("g"):
                b = nn.attribute.add()
                b.CopyFrom(a)
                _rename_graph(b.g, rename)
                continue
            if a.ref_attr_name:
                src = given.get(a.ref_attr_name) or defaults.get(a.ref_attr_name)
                if src is None:
                    continue
                b = nn.attribute.add()
                b.CopyFrom(src)
                b.name = a.name
            else:
                nn.attribute.add().CopyFrom(a)
        out.append(nn)
    return out


def _rename_graph(g, rename):
    """Rename every value of subgraph `g` (and of its own subgraphs) in place, consistently
    with the enclosing body: its reads of the body's values then find them."""
    for vi in list(g.input) + list(g.output):
        vi.name = rename(vi.name)
    for init in g.initializer:
        init.name = rename(init.name)
    for n in g.node:
        n.input[:] = [rename(x) for x in n.input]
        n.output[:] = [rename(x) for x in n.output]
        for a in n.attribute:
            if a.HasField("g"):
                _rename_graph(a.g, rename)
            for sub in a.graphs:
                _rename_graph(sub, rename)


def expand(nodes, opset, implemented, types, depth=0):
    """[(NodeProto, opset it is converted at)] for `nodes`: each standard-domain node whose op
    is not `implemented` but has a function body in its schema replaced by that body
    (recursively). `types` {name: TypeProto} types the inputs of context-dependent bodies."""
    out = []
    for i, n in enumerate(nodes):
        if n.domain not in ("", "ai.onnx") or n.op_type in implemented or not has_body(n.op_type, opset) \
                or depth >= MAX_DEPTH:
            out.append((n, opset))
            continue
        f = _body(n, opset, types)
        if f is None:
            out.append((n, opset))
            continue
        name = n.name or f"{n.op_type}_{i}"
        body = _inline(n, f, f"{name}/", opset)
        inner = _body_opset(f, opset)
        needs = any(b.op_type not in implemented and has_body(b.op_type, inner) for b in body)
        btypes = types
        if needs:
            feeds = [(x, types[x]) for x in n.input if x and x in types]
            btypes = {**types, **_types_of(body, feeds, inner)}
        out.extend(expand(body, inner, implemented, btypes, depth + 1))
    return out


def model_types(m) -> dict:
    """{value name: TypeProto} of ModelProto `m`'s inputs, initializers and what onnx's shape
    inference types."""
    from onnx import helper, shape_inference
    out = {vi.name: vi.type for vi in m.graph.input}
    for init in m.graph.initializer:
        out.setdefault(init.name, helper.make_tensor_type_proto(init.data_type, list(init.dims)))
    try:
        inferred = shape_inference.infer_shapes(m)
    except Exception:   # noqa: BLE001 - a model onnx cannot type: inputs and initializers only
        return out
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        out.setdefault(vi.name, vi.type)
    return out
