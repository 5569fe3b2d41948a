"""Text form of the graph IR, and a parser for it (golden pass tests write graphs as text).

    graph(%x: float32[batch,4], %w: float32[4,4]) {
      %0: float32[batch,4] = matmul(%x, %w)
      %1: float32[batch,4] = relu(%0)
      return %1
    }

Constants print inline as `const<dtype[shape]: [values]>` when small, else as a named
reference `const<dtype[shape]>#id`.
"""
from __future__ import annotations

import ast
import re

import numpy as np

from . import symbolic as S
from .graph import Graph, Node, TensorType, Value, attr_repr, const_value
from .dtypes import to_numpy

_SMALL = 16


def _const_str(v: Value) -> str:
    c = v.const
    if c.size <= _SMALL:
        vals = [str(x) if c.dtype == object else repr(x.item() if hasattr(x, "item") else x)
                for x in c.reshape(-1)]
        return f"const<{v.type}: [{', '.join(vals)}]>"
    return f"const<{v.type}>"


def print_graph(g: Graph) -> str:
    names: dict = {}

    def ref(v: Value | None) -> str:
        if v is None:
            return "none"
        if v.id in names:
            return names[v.id]
        if v.is_const:
            return _const_str(v)
        return f"%?{v.id}"

    for v in g.inputs:
        names[v.id] = "%" + v.name
    lines = []
    counter = 0
    for n in g.nodes:
        outs = []
        for o in n.outputs:
            names[o.id] = f"%{counter}"
            counter += 1
            outs.append(f"{names[o.id]}: {o.type}")
        args = ", ".join(ref(v) for v in n.inputs)
        attrs = ""
        if n.attrs:
            attrs = " {" + ", ".join(f"{k}={attr_repr(v)}" for k, v in sorted(n.attrs.items())) + "}"
        lines.append(f"  {', '.join(outs)} = {n.op}({args}){attrs}")
    ins = ", ".join(f"%{v.name}: {v.type}" for v in g.inputs)
    rets = ", ".join(ref(v) for v in g.outputs)
    return f"graph({ins}) {{\n" + "\n".join(lines) + f"\n  return {rets}\n}}"


# ---------------------------------------------------------------------------------------
_TYPE_RE = re.compile(r"(\w+)\[([^\]]*)\]")


def _parse_dim(s: str):
    s = s.strip()
    if re.fullmatch(r"-?\d+", s):
        return int(s)
    # symbolic expression in names, ints, + - *
    env = {name: S.sym(name) for name in re.findall(r"[A-Za-z_]\w*", s)}
    return eval(compile(ast.parse(s, mode="eval"), "<dim>", "eval"), {"__builtins__": {}}, env)


def _parse_type(s: str) -> TensorType:
    m = _TYPE_RE.fullmatch(s.strip())
    dtype, dims = m.group(1), m.group(2)
    shape = tuple(_parse_dim(d) for d in _split_top(dims)) if dims.strip() else ()
    return TensorType(dtype, shape)


def _split_top(s: str, sep=","):
    out, depth, cur = [], 0, ""
    for ch in s:
        if ch in "([{<":
            depth += 1
        elif ch in ")]}>":
            depth -= 1
        if ch == sep and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur)
    return out


def _parse_attr(s: str):
    s = s.strip()
    if s.startswith("array"):
        return np.array(ast.literal_eval(s[5:]))
    try:
        return _tuplify(ast.literal_eval(s))
    except (ValueError, SyntaxError):
        return s


def _tuplify(v):
    if isinstance(v, list):
        return tuple(_tuplify(x) for x in v)
    return v


def parse_graph(text: str) -> Graph:
    """Parse the printed form back (used by golden tests; shape inference is re-run)."""
    from .builder import Builder

    text = text.strip()
    header, _, body = text.partition("{\n")
    m = re.match(r"graph\((.*)\)\s*$", header.strip())
    b = Builder(fold=False)
    env: dict = {}
    for item in _split_top(m.group(1)):
        name, _, ty = item.partition(":")
        name = name.strip().lstrip("%")
        env[name] = b.input(name, _parse_type(ty))
    outputs = []
    for line in body.strip().rstrip("}").strip().splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("return"):
            outputs = [_parse_operand(x, env) for x in _split_top(line[len("return"):])]
            continue
        lhs, _, rhs = line.partition(" = ")
        mm = re.match(r"(\w+)\((.*)\)(\s*\{(.*)\})?\s*$", rhs)
        op, args, attrs_s = mm.group(1), mm.group(2), mm.group(4)
        ins = [_parse_operand(x, env) for x in _split_top(args)] if args.strip() else []
        attrs = {}
        if attrs_s:
            for kv in _split_top(attrs_s):
                k, _, v = kv.partition("=")
                attrs[k.strip()] = _parse_attr(v)
        outs = b.op(op, ins, **attrs)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for lhs_item, o in zip(_split_top(lhs), outs):
            env[lhs_item.partition(":")[0].strip().lstrip("%")] = o
    return b.graph(outputs)


def _parse_operand(s: str, env):
    s = s.strip()
    if s == "none":
        return None
    if s.startswith("const<"):
        inner = s[len("const<"):-1]
        ty_s, _, vals = inner.partition(":")
        ty = _parse_type(ty_s)
        shape = tuple(int(d) for d in ty.shape)
        if ty.dtype == "int64" and re.search(r"[A-Za-z_]", vals):
            items = [_parse_dim(x) for x in _split_top(vals.strip()[1:-1])]
            arr = np.empty(len(items), dtype=object)
            arr[:] = items
            return const_value(arr.reshape(shape))
        arr = np.array(ast.literal_eval(vals.strip()), dtype=to_numpy(ty.dtype)).reshape(shape)
        return const_value(arr)
    return env[s.lstrip("%")]
