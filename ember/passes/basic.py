"""Graph passes, each a pure Graph -> Graph function built on the rewrite driver."""
from __future__ import annotations

import numpy as np

from ..ir.graph import Graph
from ..ir.ops import OPS, library_impl
from .attention import fuse_attention
from .driver import rewrite, uses_target


def fold_constants(graph: Graph) -> Graph:
    """Evaluate nodes whose inputs are all known (including symbolic shape values)."""
    return rewrite(graph, None, fold=True)


@uses_target
def decompose(graph: Graph, target=None) -> Graph:
    """Rewrite composite ops (gemm, softmax, layer_norm, conv, ...) into primitives, except
    where a library kernel computes the node whole (`library_impl`). Strategies (Winograd,
    flat-pixel windows) are chosen for `target`."""
    def pending(node):
        return OPS[node.op].kind == "composite" and library_impl(node) is None

    def rule(b, node, ins):
        if pending(node):
            return OPS[node.op].decompose(b, ins, node.attrs)
        return None
    # composites can decompose into composites (e.g. reduce_mean inside layer_norm): iterate
    while any(pending(n) for n in graph.nodes):
        graph = rewrite(graph, rule, target=target)
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


def _dim_groups(sx, sr):
    """Align two shapes of equal size into runs with equal products:
    [(dims of sx, dims of sr)] as index ranges, or None when they do not align (a symbolic
    dim must face the same symbolic dim)."""
    groups, i, j = [], 0, 0
    while i < len(sx) or j < len(sr):
        gi, gj, px, pr = [], [], 1, 1
        while True:
            if gi and gj and px == pr and isinstance(px, int):
                # swallow trailing 1s so every dim belongs to a group
                while i < len(sx) and _is_one(sx[i]) and j == len(sr):
                    gi.append(i)
                    i += 1
                while j < len(sr) and _is_one(sr[j]) and i == len(sx):
                    gj.append(j)
                    j += 1
                break
            if i < len(sx) and j < len(sr) and not isinstance(sx[i], int) and not gi and not gj:
                if sx[i] != sr[j]:
                    return None
                gi, gj, px, pr = [i], [j], 1, 1
                i, j = i + 1, j + 1
                break
            if i < len(sx) and (j == len(sr) or (isinstance(sx[i], int) and px <= pr)):
                if not isinstance(sx[i], int):
                    return None
                px *= sx[i]
                gi.append(i)
                i += 1
            elif j < len(sr) and isinstance(sr[j], int):
                pr *= sr[j]
                gj.append(j)
                j += 1
            else:
                return None
        groups.append((gi, gj))
    return groups


def _is_one(d):
    return isinstance(d, int) and d == 1


def sink_reshape(graph: Graph) -> Graph:
    """pointwise(reshape(x), c) -> reshape(pointwise(x, c')): move elementwise work to the
    shape its source was computed in, so it fuses there (a convolution's BatchNorm, ReLU and
    residual add become the epilogue of its GEMM, which produces [n, g, Cout/g, pixels]).
    Legal when every other input is either the same shape (a free view) or broadcasts along
    whole aligned dim groups (per-channel constants)."""
    def rule(b, node, ins):
        if OPS[node.op].kind != "pointwise" or len(node.outputs) != 1:
            return None
        out_shape = tuple(node.outputs[0].shape)
        src = next((v for v in ins if v is not None and v.producer is not None
                    and v.producer.op == "reshape" and tuple(v.shape) == out_shape
                    and not v.producer.inputs[0].is_const), None)
        if src is None:
            return None
        sx = tuple(src.producer.inputs[0].shape)
        groups = _dim_groups(sx, out_shape)
        if groups is None:
            return None
        new_ins = []
        for v in ins:
            if v is None:
                new_ins.append(v)
                continue
            vs = (1,) * (len(out_shape) - len(v.shape)) + tuple(v.shape)
            if vs == out_shape:
                new_ins.append(v.producer.inputs[0] if v is src else b.op("reshape", [v], shape=sx))
                continue
            shape = []
            for gi, gj in groups:
                if all(_is_one(vs[j]) for j in gj):
                    shape += [1] * len(gi)
                elif all(vs[j] == out_shape[j] for j in gj):
                    shape += [sx[i] for i in gi]
                else:
                    return None
            if v.is_const and v.const.size == 1:
                new_ins.append(v)
            else:
                new_ins.append(b.op("reshape", [v], shape=tuple(shape)))
        y = b.op(node.op, new_ins, _name=node.name, _origin=node.origin, **node.attrs)
        if tuple(y.shape) != sx:
            return None
        return [b.op("reshape", [y], shape=out_shape)]
    return rewrite(graph, rule)


PIPELINE = [
    ("fold_constants", fold_constants),
    ("decompose", decompose),
    ("simplify", simplify),
    ("fuse_attention", fuse_attention),
    ("sink_reshape", sink_reshape),
    ("simplify", simplify),
    ("fold_constants", fold_constants),
    ("cse", cse),
    ("dead_code", dead_code),
]


def optimize(graph: Graph, trace=None, target=None) -> Graph:
    from .driver import run_pipeline
    return run_pipeline(graph, PIPELINE, trace, target)
