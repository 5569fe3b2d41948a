"""Graph passes, each a pure Graph -> Graph function built on the rewrite driver."""
from __future__ import annotations

import numpy as np

from ..ir.graph import Graph
from ..ir.ops import OPS, library_impl
from .driver import rewrite


def fold_constants(graph: Graph) -> Graph:
    """Evaluate nodes whose inputs are all known (including symbolic shape values)."""
    return rewrite(graph, None, fold=True)


def decompose(graph: Graph) -> Graph:
    """Rewrite composite ops (gemm, softmax, layer_norm, conv, ...) into primitives, except
    where a library kernel computes the node whole (`library_impl`)."""
    def pending(node):
        return OPS[node.op].kind == "composite" and library_impl(node) is None

    def rule(b, node, ins):
        if pending(node):
            return OPS[node.op].decompose(b, ins, node.attrs)
        return None
    # composites can decompose into composites (e.g. reduce_mean inside layer_norm): iterate
    while any(pending(n) for n in graph.nodes):
        graph = rewrite(graph, rule)
    return graph


def dead_code(graph: Graph) -> Graph:
    """Drop nodes none of whose outputs reach a graph output."""
    live = {v.id for v in graph.outputs if v is not None}
    keep = []
    for node in reversed(graph.nodes):
        if any(o.id in live for o in node.outputs):
            keep.append(node)
            live.update(v.id for v in node.inputs if v is not None)
    return Graph(graph.inputs, graph.outputs, list(reversed(keep)), graph.name, graph.output_names)


def _const_key(v):
    c = v.const
    if c.dtype == object or c.size > 4096:
        return ("obj", v.id) if c.dtype == object or c.size > 4096 else None
    return ("c", v.dtype, c.shape, c.tobytes())


def cse(graph: Graph) -> Graph:
    """Common-subexpression elimination: one node per (op, inputs, attributes)."""
    seen: dict = {}
    canon_const: dict = {}

    def key_of(v):
        if v is None:
            return None
        if v.is_const:
            k = _const_key(v)
            return canon_const.setdefault(k, v).id
        return v.id

    def rule(b, node, ins):
        key = (node.op, tuple(key_of(v) for v in ins), repr(sorted(node.attrs.items())))
        if key in seen:
            return seen[key]
        out = b.op(node.op, [canon_const.get(_const_key(v), v) if v is not None and v.is_const else v
                             for v in ins], _name=node.name, _origin=node.origin, **node.attrs)
        seen[key] = out
        return out
    return rewrite(graph, rule)


def _is_scalar_const(v, value):
    return v is not None and v.is_const and v.const.dtype != object and v.const.size >= 1 \
        and np.all(v.const == value)


def simplify(graph: Graph) -> Graph:
    """Algebraic identities: x+0, x*1, x/1, reshape(reshape(x)), transpose(transpose(x)),
    no-op reshapes/expands/casts."""
    def rule(b, node, ins):
        op, out = node.op, node.outputs[0]
        if op in ("add", "sub") and _is_scalar_const(ins[1], 0) and ins[0].shape == out.shape:
            return [ins[0]]
        if op in ("mul", "div") and _is_scalar_const(ins[1], 1) and ins[0].shape == out.shape:
            return [ins[0]]
        if op == "mul" and _is_scalar_const(ins[0], 1) and ins[1].shape == out.shape:
            return [ins[1]]
        if op in ("reshape", "expand") and tuple(ins[0].shape) == tuple(out.shape):
            return [ins[0]]
        if op == "reshape" and ins[0].producer is not None and ins[0].producer.op == "reshape":
            return [b.op("reshape", [ins[0].producer.inputs[0]], _name=node.name, **node.attrs)]
        if op == "transpose" and ins[0].producer is not None and ins[0].producer.op == "transpose":
            inner = ins[0].producer.attrs["perm"]
            perm = tuple(inner[p] for p in node.attrs["perm"])
            src = ins[0].producer.inputs[0]
            if perm == tuple(range(len(perm))):
                return [src]
            return [b.op("transpose", [src], perm=perm, _name=node.name)]
        if op == "cast" and ins[0].dtype == node.attrs["to"]:
            return [ins[0]]
        return None
    return rewrite(graph, rule)


PIPELINE = [
    ("fold_constants", fold_constants),
    ("decompose", decompose),
    ("simplify", simplify),
    ("fold_constants", fold_constants),
    ("cse", cse),
    ("dead_code", dead_code),
]


def optimize(graph: Graph, trace=None) -> Graph:
    from .driver import run_pipeline
    return run_pipeline(graph, PIPELINE, trace)
