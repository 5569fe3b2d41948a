"""Shape guards: every assumption the compiled code makes about sizes, as data.

Type rules decide shapes symbolically. Where they cannot know a relation at compile time,
they assume it: `Add(a[n], b[m])` assumes m == n, a MatMul assumes its inner dims agree, a
Reshape to [-1, 3] assumes the element count divides by 3. Compiled code is correct only
where those assumptions hold, so `collect` reads them back off a typed graph, and the session
checks them once per new input-shape signature (`check`), before any kernel runs.

A failed `bcast` guard whose one side is 1 is a legal broadcast that the shape-generic code
does not compute: `check` then names the symbols to fix, and the session compiles a variant of
the model specialised on their values. Every other failure is an `InvalidInputError`.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import symbolic as S
from .graph import Graph
from .ops import OPS


@dataclass(frozen=True)
class Guard:
    """`kind` and its operands (symbolic dims):
      eq      a == b
      bcast   a == b, or a == 1 or b == 1 (a size-1 broadcast: needs a specialised variant)
      le      a <= b
      slice   a slice of `size` elements from `start` by `step` stays inside [0, d):
              operands (start, step, size, d)
    `node` names the ONNX node(s) it comes from, `what` says what the operands are."""
    kind: str
    args: tuple
    node: str
    what: str

    def encode(self):
        return [self.kind, [S.encode(a) for a in self.args], self.node, self.what]

    @staticmethod
    def decode(j) -> "Guard":
        kind, args, node, what = j
        return Guard(kind, tuple(S.decode(a) for a in args), node, what)


def _node_name(node) -> str:
    return ", ".join(node.origin) if node.origin else (node.name or node.op)


def _known(kind, args) -> bool:
    """True when the guard holds for every value of its symbols (nothing to check)."""
    if kind in ("eq", "bcast"):
        a, b = args
        return a == b or (kind == "bcast" and (a == 1 or b == 1))
    if kind == "le":
        try:
            return bool(args[0] <= args[1])
        except TypeError:
            return False
    start, step, size, d = args
    if isinstance(size, int) and size == 0:
        return True
    try:
        last = start + step * (size - 1)
        return bool(0 <= start <= d - 1 and 0 <= last <= d - 1)
    except TypeError:
        return False


def _broadcast_guards(node, add):
    out = node.outputs[0].shape
    for k, v in enumerate(node.inputs):
        if v is None:
            continue
        shape = v.shape
        for i, d in enumerate(shape):
            o = out[len(out) - len(shape) + i]
            add("bcast", (d, o), f"input {k} dimension {i} and broadcast dimension "
                                 f"{len(out) - len(shape) + i}")


def _node_guards(node, add):
    op, at = node.op, node.attrs
    ins = node.inputs
    d = OPS.get(op)
    if d is not None and d.guards is not None:
        d.guards(node, add)
    elif op == "expand" or (d is not None and d.kind == "pointwise" and len(ins) > 1):   # they broadcast
        _broadcast_guards(node, add)
    elif op == "matmul":
        a, b = ins[0].shape, ins[1].shape
        ka = a[-1]
        kb = b[-2] if len(b) > 1 else b[0]
        add("eq", (ka, kb), "the inner dimensions of the two operands (A's last, B's second-to-last)")
        ab, bb = a[:-2], b[:-2]
        out = node.outputs[0].shape
        nb = len(out) - (len(a) > 1) - (len(b) > 1)
        for k, batch in ((0, ab), (1, bb)):
            for i, d in enumerate(batch):
                add("bcast", (d, out[nb - len(batch) + i]), f"batch dimension {i} of operand {k}")
    elif op == "reshape":
        add("eq", (S.prod(ins[0].shape), S.prod(node.outputs[0].shape)),
            f"the element count of the input and of the target shape {tuple(str(d) for d in at['shape'])}")
        if "infer_from" in at:
            add("le", (1, S.prod(at["infer_from"])), "the product of the dims beside the target's -1 (nothing "
                                                     "to infer it from when they multiply to 0)")
    elif op == "concat":
        axis, out = at["axis"], node.outputs[0].shape
        for k, v in enumerate(ins):
            for i, d in enumerate(v.shape):
                if i != axis:
                    add("eq", (d, out[i]), f"input {k} dimension {i} and input 0's (all but axis {axis} "
                                           f"must match)")
    elif op == "slice":
        for i, (st, step, size, d) in enumerate(zip(at["starts"], at["steps"], at["sizes"], ins[0].shape)):
            add("slice", (st, step, size, d), f"the slice along dimension {i}")
    elif "kernel" in at and "pads" in at and not at.get("flat"):
        nd = len(at["kernel"])
        for i in range(nd):
            eff = (at["kernel"][i] - 1) * at["dilations"][i] + 1
            d = ins[0].shape[2 + i]
            add("le", (eff, d + at["pads"][i] + at["pads"][i + nd]),
                f"the window extent (kernel {at['kernel'][i]}, dilation {at['dilations'][i]}) against "
                f"the padded input along spatial dimension {i}")


def collect(*graphs: Graph) -> tuple:
    """The guards of every node of `graphs` that do not hold for all symbol values, plus
    `le 0, d` for every symbolic dim (a size that would come out negative), deduplicated."""
    guards, seen = [], set()

    for g in graphs:
        for node in g.nodes:
            def add(kind, args, what, node=node):
                if _known(kind, args):
                    return
                key = (kind, args if kind != "bcast" else frozenset(args))
                if key not in seen:
                    seen.add(key)
                    guards.append(Guard(kind, tuple(args), _node_name(node), what))
            _node_guards(node, add)
            for v in node.outputs:
                for i, d in enumerate(v.shape):
                    if isinstance(d, S.Sym):
                        add("le", (0, d), f"the size of output {v.index} dimension {i} (must not be negative)")
    return tuple(guards)


def check(guards, env: dict, describe) -> dict:
    """Evaluate `guards` at the symbol values `env`. Returns {symbol: value} to specialise on
    (empty when every guard holds); raises `InvalidInputError` for a guard that fails.
    `describe(symbol)` says where a symbol's value came from, for messages."""
    from ..errors import InvalidInputError
    fix: dict = {}
    for g in guards:
        try:
            vals = [S.evaluate(a, env) for a in g.args]
        except (ZeroDivisionError, KeyError):
            raise InvalidInputError(f"node '{g.node}': {g.what} cannot be computed for these input "
                                    f"sizes ({_names(g.args, env, describe)})") from None
        if g.kind in ("eq", "bcast"):
            a, b = vals
            if a == b:
                continue
            if g.kind == "bcast" and 1 in (a, b):
                one = g.args[0] if a == 1 else g.args[1]
                for s in sorted(_symbols(one)):
                    fix[s] = env[s]
                continue
            rel = "be equal" + (" (or one of them 1, to broadcast)" if g.kind == "bcast" else "")
            raise InvalidInputError(f"node '{g.node}': {g.what} are {a} ({g.args[0]}) and {b} ({g.args[1]}), "
                                    f"which must {rel}; {_names(g.args, env, describe)}")
        elif g.kind == "le":
            if vals[0] > vals[1]:
                raise InvalidInputError(f"node '{g.node}': {g.what}: {vals[0]} ({g.args[0]}) must be at most "
                                        f"{vals[1]} ({g.args[1]}); {_names(g.args, env, describe)}")
        else:
            start, step, size, d = vals
            last = start + step * (size - 1)
            if size < 0 or (size > 0 and not (0 <= start < d and 0 <= last < d)):
                raise InvalidInputError(f"node '{g.node}': {g.what} reads {size} elements from {start} by "
                                        f"{step} of a dimension of size {d}; {_names(g.args, env, describe)}")
    return fix


def _symbols(d) -> set:
    return d.free_symbols() if isinstance(d, S.Sym) else set()


def _names(args, env, describe) -> str:
    syms = sorted(set().union(*[_symbols(a) for a in args]))
    return ", ".join(f"{s} = {env[s]} ({describe(s)})" for s in syms if s in env) or "static sizes"
