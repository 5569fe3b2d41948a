"""Kernel fusion: decide which values get a buffer and which are computed inline.

Walking the graph backwards, every node either becomes the root of a kernel (its value is
stored to a buffer) or is inlined into the one kernel that consumes it. `can_fuse` says when
inlining is legal, `score` whether it pays; they are kept apart so heuristics never change
correctness. A matmul is always a kernel root ("anchor"); afterwards the pointwise kernel that
consumes it at the same index becomes its epilogue (bias, activation, residual ...), applied to
the accumulators before they are stored; so does one after a library kernel that allows it.
Reshapes of stored values are free views. The walk is linear in the number of nodes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..ir import symbolic as S
from ..ir.graph import Graph, Value
from ..ir.ops import OPS, library_impl
from ..ir.target import DEFAULT


@dataclass
class KernelGroup:
    kind: str                       # "pointwise" | "matmul" | "library" | "copy"
    root: Value                     # the value this kernel stores
    nodes: list = field(default_factory=list)    # graph nodes computed here (root's node last)
    anchor: object = None           # the matmul (or library-kernel) node
    reread: set = field(default_factory=set)     # ids of values read several times per output (windows)
    source: Value | None = None     # for "copy": the value copied into an output

    @property
    def origin(self):
        seen = []
        for n in self.nodes:
            for o in n.origin:
                if o and o not in seen:
                    seen.append(o)
        return tuple(seen)


@dataclass
class Schedule:
    graph: Graph
    kernels: list                   # in execution order
    views: dict                     # value id -> base value id (reshape views of stored values)
    stored: dict                    # value id -> Value, every value that owns or shares a buffer
    out_alias: dict = field(default_factory=dict)  # value id -> graph output it is stored into
    implicit: dict = field(default_factory=dict)   # im2col value id -> node the GEMM reads through


def _numel(v: Value):
    return S.prod(v.shape)


def can_fuse(node, consumer_kernel: KernelGroup, users) -> bool:
    """Legal to compute `node` inside `consumer_kernel` instead of storing it?"""
    d = OPS[node.op]
    if consumer_kernel.kind != "pointwise":
        return False
    if d.kind not in ("pointwise", "index"):
        return False
    if len(node.outputs) != 1:
        return False
    return True


def score(node, consumer_kernel: KernelGroup, users) -> int:
    """How much inlining `node` saves (>0: inline). Recomputing an expensive value that is
    broadcast into a larger domain costs more than the memory traffic it saves."""
    d = OPS[node.op]
    out = node.outputs[0]
    dom = consumer_kernel.root
    same = _numel(out) == _numel(dom)
    if d.reduction:
        # hoisted to the loop level where it is invariant when its result broadcasts into the
        # domain (a mean per row); a window (a max pool) read by a larger domain (the im2col
        # of the next conv, each element k*k times) would be recomputed at every read
        return 1 if same or _broadcasts_into(out.shape, dom.shape) else 0
    if not same and d.cost >= 8:
        return 0
    if out.id in consumer_kernel.reread and (d.kind == "pointwise" or d.cost >= 2):
        # a window reads each element up to k*k times: computing the value once and storing
        # it beats recomputing it at every read; moves (a pad, a slice, a concat) stay inline
        return 0
    n_uses = len(users.get(out.id, ()))
    if n_uses > 2 and d.cost >= 8:
        return 0
    return 1


def _inline_reshape(node, users, kernel_of, out_ids) -> bool:
    """Compute a reshape inside its consumer's kernel rather than as a view of a stored
    value? Only where that lets its producer, an elementwise or index op used nowhere else,
    be inlined too (a zero-stuffing pad, a pixel shuffle's transpose), saving a buffer's
    round trip; and only where the index map divides by constants (each run of merged or
    split dims, `symbolic.reshape_groups`, has static inner input dims), which keeps it cheap."""
    src, out = node.inputs[0], node.outputs[0]
    p = src.producer
    if p is None or out.id in out_ids or src.id in out_ids or len(users.get(src.id, ())) != 1:
        return False
    if OPS[p.op].kind not in ("pointwise", "index") or p.op == "reshape" or len(p.outputs) != 1:
        return False
    ks = {id(kernel_of[u]): kernel_of[u] for u in users.get(out.id, [])}
    if len(ks) != 1 or None in ks.values() or next(iter(ks.values())).kind != "pointwise":
        return False
    groups = S.reshape_groups(out.shape, src.shape)
    return groups is not None and all(isinstance(src.shape[k], int) for _, ins in groups for k in ins[1:])


def _note_rereads(node, k: KernelGroup):
    """The values `node` reads several times per output of `k`: the inputs of a window op,
    and the inputs of whatever computes such a value inline."""
    if OPS[node.op].rereads or node.outputs[0].id in k.reread:
        k.reread.update(v.id for v in node.inputs)


def _broadcasts_into(shape, dom) -> bool:
    if len(shape) > len(dom):
        return False
    return all(d == 1 or d == e for d, e in zip(shape[::-1], dom[::-1]))


def schedule(graph: Graph, target=None) -> Schedule:
    users = graph.consumers()
    out_ids = {v.id for v in graph.outputs}
    kernel_of: dict = {}                  # node -> KernelGroup it is computed in
    groups: list = []
    views: dict = {}
    stored: dict = {}

    implicit: dict = {}
    for node in reversed(graph.nodes):
        d = OPS[node.op]
        out = node.outputs[0]
        mm = _implicit_im2col_user(node, users, out_ids, target or DEFAULT)
        if mm is not None:
            # the GEMM reads the image through the window itself: no im2col buffer
            implicit[out.id] = node
            kernel_of[node] = kernel_of[mm]
            kernel_of[mm].nodes.insert(0, node)
            continue
        if d.kind == "matmul" or library_impl(node) is not None:
            g = KernelGroup("matmul" if d.kind == "matmul" else "library", out, [node], anchor=node)
            groups.append(g)
            kernel_of[node] = g
            continue
        if node.op == "reshape" and (out.id not in out_ids or not node.inputs[0].is_const) and not _inline_reshape(
                node, users, kernel_of, out_ids):
            # a reshaped graph output is a view too: its base is stored straight into the
            # output buffer (below), so an epilogue still fuses into the kernel before it
            views[out.id] = node.inputs[0]
            kernel_of[node] = None
            continue
        consumer_kernels = {id(kernel_of[u]): kernel_of[u] for u in users.get(out.id, [])}
        if (out.id not in out_ids and len(consumer_kernels) == 1
                and None not in consumer_kernels.values()):
            k = next(iter(consumer_kernels.values()))
            if can_fuse(node, k, users) and score(node, k, users) > 0:
                k.nodes.insert(0, node)
                kernel_of[node] = k
                _note_rereads(node, k)
                continue
        g = KernelGroup("pointwise", out, [node])
        groups.append(g)
        kernel_of[node] = g
        _note_rereads(node, g)

    groups.reverse()
    _fuse_epilogues(groups, users, kernel_of, out_ids)

    written = set()
    for g in groups:
        written.add(g.root.id)
    out_alias = {}
    for v in graph.outputs:
        base = v
        while base.id in views:
            base = views[base.id]
        if base is not v and base.id in written and base.id not in out_ids and base.id not in out_alias:
            out_alias[base.id] = v
            written.add(v.id)
    # graph outputs that no kernel writes (inputs, constants, other views, repeats) get a copy
    seen_out = set()
    final_outputs = []
    for v in graph.outputs:
        if v.id in written and v.id not in seen_out:
            seen_out.add(v.id)
            final_outputs.append(v)
            continue
        copy = Value(v.type, v.name)
        groups.append(KernelGroup("copy", copy, [], source=v))
        final_outputs.append(copy)
    graph = Graph(graph.inputs, final_outputs, graph.nodes, graph.name, graph.output_names)

    for g in groups:
        stored[g.root.id] = g.root
    return Schedule(graph, groups, {k: v for k, v in views.items()}, stored, out_alias, implicit)


def _implicit_im2col_user(node, users, out_ids, target):
    """The matmul that may read this im2col's columns straight from the image, or None: a
    2-d window, used only, through one reshape view, as B of a GEMM whose A is the constant
    weights; either stride 1 keeping the width on rows of more than a vector (for shorter
    rows a stored im2col over flat pixels feeds the column tile), or stride 2..4 over an
    already padded image with whole vectors per output row (ResNet's and MobileNet's stems:
    112 columns), read with de-interleaving loads."""
    at = node.attrs
    if node.op != "im2col" or len(at["kernel"]) != 2 or node.outputs[0].id in out_ids:
        return None
    xs = node.inputs[0].shape
    st = tuple(at["strides"])
    if (at.get("flat") or node.inputs[0].dtype != "float32" or not isinstance(xs[1], int)
            or tuple(at["dilations"]) != (1, 1)):
        return None
    if not all(isinstance(d, int) for d in xs[2:]) and st != (1, 1):
        return None
    # stride 1 reads the image at run-time sizes (a width known only then is taken as long)
    if not ((st == (1, 1) and at["out"][1] == xs[3] and not (isinstance(xs[3], int) and target.row_is_short(xs[3])))
            or (st[0] == st[1] and 2 <= st[0] <= 4 and not any(at["pads"]) and target.whole_vectors(at["out"][1]))):
        return None
    us = users.get(node.outputs[0].id, [])
    if len(us) != 1 or us[0].op != "reshape" or us[0].outputs[0].id in out_ids:
        return None
    mms = users.get(us[0].outputs[0].id, [])
    if len(mms) != 1 or mms[0].op != "matmul" or mms[0].inputs[1] is not us[0].outputs[0]:
        return None
    a = mms[0].inputs[0]
    while a.producer is not None and a.producer.op == "reshape":
        a = a.producer.inputs[0]
    return mms[0] if a.is_const and not a.is_symbolic_const else None


def _takes_epilogue(g: KernelGroup) -> bool:
    if g.kind == "matmul":
        return True
    return g.kind == "library" and library_impl(g.anchor).epilogue


def _fuse_epilogues(groups, users, kernel_of, out_ids):
    """Merge a matmul (or a library kernel that allows it) with the pointwise kernel that
    consumes its result element for element."""
    for g in list(groups):
        if not _takes_epilogue(g) or g.root.id in out_ids:
            continue
        mm = g.anchor.outputs[0]
        consumers = users.get(mm.id, [])
        ks = {id(kernel_of.get(u)) for u in consumers}
        if len(ks) != 1 or not consumers:
            continue
        k = kernel_of.get(consumers[0])
        if k is None or k.kind != "pointwise" or tuple(k.root.shape) != tuple(mm.shape):
            continue
        if not _identity_path(mm, k, users):
            continue
        if any(OPS[n.op].reduction for n in k.nodes):
            continue        # an epilogue runs per accumulator element: it has no level to hoist a reduction to
        g.nodes = g.nodes + k.nodes
        g.root = k.root
        # the merged kernel runs where the epilogue did: its other inputs (a residual from
        # a later matmul, say) are ready only there, and nothing in between reads the matmul
        groups[:] = [x for x in groups if x is not g]
        groups[next(i for i, x in enumerate(groups) if x is k)] = g
        for n in k.nodes:
            kernel_of[n] = g


def _identity_path(mm: Value, k: KernelGroup, users) -> bool:
    """Every use of `mm` inside `k`, transitively up to the root, is pointwise on the same shape
    (so the epilogue reads the accumulator at exactly the element being stored)."""
    in_k = set(id(n) for n in k.nodes)
    frontier = [mm]
    seen = set()
    while frontier:
        v = frontier.pop()
        if v is k.root:             # its users read the stored result, outside the kernel
            continue
        for u in users.get(v.id, []):
            if id(u) not in in_k:
                return False
            if OPS[u.op].kind != "pointwise" or tuple(u.outputs[0].shape) != tuple(mm.shape):
                return False
            if id(u) not in seen:
                seen.add(id(u))
                frontier.append(u.outputs[0])
    return True
