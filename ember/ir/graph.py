"""The graph IR: typed values with (possibly symbolic) shapes, nodes naming an op of the
op table, and graphs. Nodes and values are never mutated by passes: a pass builds a new graph
(sharing untouched nodes), so every pass is a pure IR -> IR function."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import symbolic as S
from .dtypes import to_numpy


@dataclass(frozen=True)
class TensorType:
    dtype: str
    shape: tuple

    @property
    def rank(self) -> int:
        return len(self.shape)

    def __str__(self):
        return f"{self.dtype}[{','.join(str(d) for d in self.shape)}]"


_ids = itertools.count()


class Value:
    """An SSA value. `const` holds its compile-time contents when known: a numpy array, or an
    object array of ints / symbolic dims for shape tensors (e.g. the output of Shape)."""

    __slots__ = ("type", "name", "producer", "index", "const", "id")

    def __init__(self, type: TensorType, name: str = "", producer=None, index: int = 0, const=None):
        self.type = type
        self.name = name
        self.producer = producer
        self.index = index
        self.const = const
        self.id = next(_ids)

    @property
    def dtype(self):
        return self.type.dtype

    @property
    def shape(self):
        return self.type.shape

    @property
    def is_const(self) -> bool:
        return self.const is not None

    @property
    def is_symbolic_const(self) -> bool:
        return self.const is not None and self.const.dtype == object

    def __repr__(self):
        return f"Value({self.name or self.id}: {self.type})"


def const_value(array, name: str = "") -> Value:
    """A constant. Object arrays (symbolic shape values) keep their declared int64 dtype."""
    a = np.asarray(array)
    if a.dtype == object:
        dtype = "int64"
    else:
        from .dtypes import from_numpy
        dtype = from_numpy(a.dtype)
    return Value(TensorType(dtype, tuple(int(d) for d in a.shape)), name, const=a)


class Node:
    __slots__ = ("op", "inputs", "attrs", "outputs", "name", "origin")

    def __init__(self, op: str, inputs, attrs: dict, out_types, name: str = "", origin=(),
                 out_names=None):
        self.op = op
        self.inputs = tuple(inputs)
        self.attrs = dict(attrs)
        self.name = name
        self.origin = tuple(origin) if origin else ((name,) if name else ())
        names = out_names or [""] * len(out_types)
        self.outputs = tuple(Value(t, n, self, i) for i, (t, n) in enumerate(zip(out_types, names)))

    def __repr__(self):
        return f"Node({self.op}, {self.name})"


class Graph:
    def __init__(self, inputs, outputs, nodes, name: str = "graph", output_names=None):
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.nodes = list(nodes)
        self.name = name
        # user-visible output names (a value may be renamed/replaced by passes)
        self.output_names = list(output_names) if output_names else [v.name for v in outputs]

    def consumers(self) -> dict:
        users: dict = {}
        for n in self.nodes:
            for v in n.inputs:
                if v is not None:
                    users.setdefault(v.id, []).append(n)
        return users

    def constants(self):
        seen = {}
        for n in self.nodes:
            for v in n.inputs:
                if v is not None and v.is_const:
                    seen[v.id] = v
        for v in self.outputs:
            if v.is_const:
                seen[v.id] = v
        return list(seen.values())

    def __str__(self):
        from .printer import print_graph
        return print_graph(self)


def attr_repr(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(attr_repr(x) for x in v) + "]"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, np.ndarray):
        return "array" + attr_repr(v.tolist())
    return str(v)


def np_dtype(t: TensorType):
    return to_numpy(t.dtype)


def static_shape(shape) -> bool:
    return all(S.is_static(d) for d in shape)
