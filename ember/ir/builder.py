"""Builds graphs node by node: runs each op's type rule, and folds nodes whose inputs are all
known (constants, or shape values made of symbolic dims) with the op's numpy semantics."""
from __future__ import annotations

import numpy as np

from . import symbolic as S
from .graph import Graph, Node, TensorType, Value, const_value
from .dtypes import itemsize, to_numpy
from .ops import OPS
from .target import DEFAULT
from ..errors import EmberError, ShapeError

FOLD_LIMIT = 1 << 26          # elements; bigger results stay runtime ops
GROW_LIMIT = 1 << 12          # ops that only replicate data are folded only when small
MAX_TENSOR_BYTES = 1 << 40    # a static size beyond this comes from a malformed model


def _normalize_const(arr: np.ndarray, dtype: str) -> np.ndarray:
    if arr.dtype == object:
        if not any(isinstance(x, S.Sym) for x in arr.reshape(-1)):
            return np.array(arr.tolist(), dtype=to_numpy(dtype)).reshape(arr.shape)
        return arr
    return arr.astype(to_numpy(dtype), copy=False)


class Builder:
    def __init__(self, fold: bool = True, target=None):
        self.target = target if target is not None else DEFAULT   # what decompositions choose for
        self.nodes: list = []
        self.inputs: list = []
        self.fold = fold
        self.origin: tuple = ()

    def input(self, name: str, type: TensorType) -> Value:
        v = Value(type, name)
        self.inputs.append(v)
        return v

    def scalar(self, value, dtype: str) -> Value:
        return const_value(np.array(value, dtype=to_numpy(dtype)))

    def sym_scalar(self, dim) -> Value:
        if isinstance(dim, int):
            return const_value(np.array(dim, dtype=np.int64))
        a = np.empty((), dtype=object)
        a[()] = dim
        return const_value(a)

    def op(self, op: str, inputs, _name: str = "", _origin=None, **attrs):
        d = OPS.get(op)
        if d is None:
            raise EmberError(f"internal: unknown Ember op '{op}'")
        who = _name or op
        types = [v.type if v is not None else None for v in inputs]
        try:
            out_types = d.infer(types, {**attrs, "_who": f"node '{who}' ({op})"})
        except EmberError:
            raise
        except Exception as e:  # a type rule tripping on bad input is a shape error of that node
            raise ShapeError(f"node '{who}' ({op}): cannot infer output shape from inputs "
                             f"{[str(t) for t in types]}: {e}") from None
        for t in out_types:
            if any(isinstance(x, int) and x < 0 for x in t.shape):
                raise ShapeError(f"node '{who}' ({op}): output shape {t.shape} has a negative dimension")
            if all(isinstance(x, int) for x in t.shape) and \
                    int(np.prod(t.shape, dtype=object)) * itemsize(t.dtype) > MAX_TENSOR_BYTES:
                raise ShapeError(f"node '{who}' ({op}): output shape {t.shape} ({t.dtype}) would take more than "
                                 f"2**40 bytes ({MAX_TENSOR_BYTES >> 30} GiB)")
        if self.fold and d.ref is not None and all(v is None or v.is_const for v in inputs):
            folded = self._try_fold(d, inputs, attrs, out_types)
            if folded is not None:
                return folded[0] if len(folded) == 1 else tuple(folded)
        node = Node(op, inputs, attrs, out_types, name=_name,
                    origin=_origin if _origin is not None else (self.origin or ((_name,) if _name else ())))
        self.nodes.append(node)
        return node.outputs[0] if len(node.outputs) == 1 else node.outputs

    def _try_fold(self, d, inputs, attrs, out_types):
        n_out = 1
        for t in out_types:
            if not all(isinstance(x, int) for x in t.shape):
                return None
            n = int(np.prod(t.shape, dtype=np.int64))
            n_out = max(n_out, n)
        if n_out > FOLD_LIMIT:
            return None
        n_in = max([v.const.size for v in inputs if v is not None] + [1])
        if d.name in ("expand", "range") and n_out > max(GROW_LIMIT, n_in):
            return None
        try:
            with np.errstate(all="ignore"):
                res = d.ref([v.const if v is not None else None for v in inputs], attrs)
        except (TypeError, ValueError, ZeroDivisionError, OverflowError):
            return None
        outs = []
        for arr, t in zip(res, out_types):
            arr = np.asarray(arr)
            if tuple(arr.shape) != tuple(t.shape):
                raise ShapeError(f"internal: folding {d.name} gave shape {arr.shape}, expected {t.shape}")
            v = const_value(_normalize_const(arr, t.dtype))
            if v.dtype != t.dtype:      # symbolic values (object arrays) keep the type rule's dtype
                v = Value(t, const=v.const)
            outs.append(v)
        return outs

    def graph(self, outputs, name="graph", output_names=None) -> Graph:
        return Graph(self.inputs, outputs, self.nodes, name, output_names)
