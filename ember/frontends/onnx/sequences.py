"""ONNX sequences and optionals, resolved while importing.

A sequence is a Python list of Ember values (`Seq`) and an optional a value or nothing
(`Opt`): the ops that build, index and take them apart are converted to the list operations
they are, with positions known when compiling (from constants, or per value of small graph
inputs). What reaches the compiled graph is the tensors alone, so a model with sequences
still compiles to one native call. A sequence or optional graph input or output is
flattened to tensors at the session boundary (runtime/structured.py)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import ShapeError
from ...ir.dtypes import from_onnx, onnx_type_str
from .converters import ConvertError, attrs_of, known, stack, take


@dataclass
class Seq:
    """A sequence of tensors, each an Ember value, all of element type `elem`."""
    items: list
    elem: str
    dtype = None        # (not a tensor: no element type of its own)

    @property
    def onnx_type(self) -> str:
        return f"seq({onnx_type_str(self.elem)})"


@dataclass
class Opt:
    """An optional: a tensor value or a Seq, or None (empty) with its type string `of`."""
    value: object
    of: str
    dtype = None

    @property
    def onnx_type(self) -> str:
        return f"optional({self.of})"


def type_of(v) -> str:
    """The ONNX type string of a tensor value, Seq or Opt."""
    return v.onnx_type if isinstance(v, (Seq, Opt)) else onnx_type_str(v.dtype)


def _seq(v, who):
    if not isinstance(v, Seq):
        raise ShapeError(f"{who} expects a sequence, got {type_of(v)}")
    return v


def _position(v, n, who, insert=False):
    """A position in a sequence of n items (negative counts from the end)."""
    p = int(np.asarray(known(v, f"{who} position")).reshape(-1)[0])
    hi = n if insert else n - 1
    if not -n <= p <= hi:
        raise ShapeError(f"{who}: position {p} is outside [{-n}, {hi}] for a sequence of {n} tensors")
    return p + n if p < 0 else p


def _sequence_empty(b, n, ins, opset):
    return Seq([], from_onnx(attrs_of(n).get("dtype", 1)))


def _sequence_construct(b, n, ins, opset):
    elems = {v.dtype for v in ins}
    if len(elems) != 1:
        raise ShapeError(f"SequenceConstruct: the tensors have different element types {sorted(elems)}")
    return Seq(list(ins), ins[0].dtype)


def _sequence_insert(b, n, ins, opset):
    s = _seq(ins[0], "SequenceInsert")
    x = ins[1]
    if x.dtype != s.elem:
        raise ShapeError(f"SequenceInsert: a {x.dtype} tensor cannot join a sequence of {s.elem}")
    p = len(s.items) if len(ins) < 3 or ins[2] is None else _position(ins[2], len(s.items), "SequenceInsert", True)
    return Seq(s.items[:p] + [x] + s.items[p:], s.elem)


def _sequence_erase(b, n, ins, opset):
    s = _seq(ins[0], "SequenceErase")
    if not s.items:
        raise ShapeError("SequenceErase: the sequence is empty")
    p = len(s.items) - 1 if len(ins) < 2 or ins[1] is None else _position(ins[1], len(s.items), "SequenceErase")
    return Seq(s.items[:p] + s.items[p + 1:], s.elem)


def _sequence_at(b, n, ins, opset):
    s = _seq(ins[0], "SequenceAt")
    return s.items[_position(ins[1], len(s.items), "SequenceAt")]


def _sequence_length(b, n, ins, opset):
    return b.scalar(len(_seq(ins[0], "SequenceLength").items), "int64")


def _concat_from_sequence(b, n, ins, opset):
    s = _seq(ins[0], "ConcatFromSequence")
    at = attrs_of(n)
    if not s.items:
        raise ShapeError("ConcatFromSequence: the sequence is empty")
    rank = s.items[0].type.rank
    new_axis = int(at.get("new_axis", 0))
    axis = int(at["axis"]) if "axis" in at else 0
    top = rank + 1 if new_axis else rank
    if not -top <= axis < top:
        raise ShapeError(f"ConcatFromSequence: axis {axis} is outside [{-top}, {top - 1}]")
    axis = axis + top if axis < 0 else axis
    if new_axis:
        return stack(b, s.items, axis)
    return s.items[0] if len(s.items) == 1 else b.op("concat", s.items, axis=axis)


def _split_to_sequence(b, n, ins, opset):
    x = ins[0]
    at = attrs_of(n)
    rank = x.type.rank
    axis = int(at.get("axis", 0))
    if not -rank <= axis < rank:
        raise ShapeError(f"SplitToSequence: axis {axis} is outside [{-rank}, {rank - 1}]")
    axis = axis + rank if axis < 0 else axis
    d = x.shape[axis]
    if not isinstance(d, int):
        raise ConvertError(f"SplitToSequence: the split dim ({d}) must be known when compiling: it sets the "
                           f"sequence's length")
    split = ins[1] if len(ins) > 1 else None
    if split is None:
        if int(at.get("keepdims", 1)):
            sizes = [1] * d
        else:
            return Seq([take(b, x, axis, i) for i in range(d)], x.dtype)
    else:
        sv = np.asarray(known(split, "SplitToSequence split")).astype(np.int64)
        if sv.ndim == 0:
            k = int(sv)
            if k <= 0:
                raise ShapeError(f"SplitToSequence: split {k} must be positive")
            sizes = [k] * (d // k) + ([d % k] if d % k else [])
        else:
            sizes = [int(v) for v in sv.reshape(-1)]
            if any(v < 0 for v in sizes) or sum(sizes) != d:
                raise ShapeError(f"SplitToSequence: split {sizes} must be non-negative and sum to {d}")
    parts, off = [], 0
    for k in sizes:
        starts = [0] * rank
        starts[axis] = off
        shape = list(x.shape)
        shape[axis] = k
        parts.append(b.op("slice", [x], starts=tuple(starts), steps=(1,) * rank, sizes=tuple(shape)))
        off += k
    return Seq(parts, x.dtype)


def _optional(b, n, ins, opset):
    from onnx import helper
    if ins and ins[0] is not None:
        return Opt(ins[0], type_of(ins[0]))
    t = next((helper.get_attribute_value(a) for a in n.attribute if a.name == "type"), None)
    if t is None:
        raise ShapeError("Optional without an input needs its 'type' attribute")
    return Opt(None, _type_str(t))


def _type_str(t) -> str:
    """The type string of an ONNX TypeProto."""
    kind = t.WhichOneof("value")
    if kind == "tensor_type":
        return onnx_type_str(from_onnx(t.tensor_type.elem_type))
    if kind == "sequence_type":
        return f"seq({_type_str(t.sequence_type.elem_type)})"
    if kind == "optional_type":
        return f"optional({_type_str(t.optional_type.elem_type)})"
    raise ConvertError(f"type {kind} is not supported")


def _optional_has_element(b, n, ins, opset):
    v = ins[0] if ins else None
    has = v is not None and not (isinstance(v, Opt) and v.value is None)
    return b.scalar(has, "bool")


def _optional_get_element(b, n, ins, opset):
    v = ins[0]
    if isinstance(v, Opt):
        if v.value is None:
            raise ShapeError("OptionalGetElement: the optional is empty")
        return v.value
    return v


SEQUENCES = {
    "SequenceEmpty": _sequence_empty, "SequenceConstruct": _sequence_construct,
    "SequenceInsert": _sequence_insert, "SequenceErase": _sequence_erase, "SequenceAt": _sequence_at,
    "SequenceLength": _sequence_length, "ConcatFromSequence": _concat_from_sequence,
    "SplitToSequence": _split_to_sequence, "Optional": _optional,
    "OptionalHasElement": _optional_has_element, "OptionalGetElement": _optional_get_element,
}
