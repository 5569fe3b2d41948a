"""Sequence and optional graph inputs and outputs, flattened to tensors at the session boundary.

A run's structure (each sequence input's length and its items' types and ranks, whether each
optional input is present) picks a variant: a copy of the model whose sequence input of
length L is L tensor inputs joined by a SequenceConstruct (an optional: an Optional node, of
its value or empty), and whose sequence and optional outputs are flattened to tensors
(frontends/onnx/loader.py, FLATTEN_KEY). Each variant is a whole-model native build; a run
regroups its tensors into the lists and Nones the caller expects."""
from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from ..errors import InvalidInputError


def _kind(t) -> str:
    return t.WhichOneof("value") or "tensor_type"


class StructuredModel:
    """The flattened variants of a model with sequence or optional graph inputs or outputs."""

    LIMIT = 32

    def __init__(self, proto, options, session_type):
        self.proto, self.options, self.session_type = proto, options, session_type
        inits = {i.name for i in proto.graph.initializer}
        self.inputs = [vi for vi in proto.graph.input if vi.name not in inits]
        self.outputs = list(proto.graph.output)
        self.sessions: OrderedDict = OrderedDict()
        self.labels: dict = {}      # output name -> the labels its strings / ZipMap dicts use
        self.lock = threading.Lock()

    # -------------------------------------------------------------------- description
    def input_types(self):
        return [(vi.name, _type_name(vi.type)) for vi in self.inputs]

    def output_types(self):
        return [(vo.name, _type_name(vo.type)) for vo in self.outputs]

    # ------------------------------------------------------------------------------ run
    def run(self, output_names, feed):
        if not isinstance(feed, dict):
            raise InvalidInputError(f"feeds must be a dict of input name -> value, got {type(feed).__name__}")
        known = {vi.name for vi in self.inputs}
        unknown = [k for k in feed if k not in known]
        if unknown:
            raise InvalidInputError(f"unknown input name(s) {unknown}; the model's inputs are {sorted(known)}")
        flat, key = {}, []
        for vi in self.inputs:
            k = _kind(vi.type)
            if k == "tensor_type":
                if vi.name not in feed:
                    raise InvalidInputError(f"missing input '{vi.name}'")
                flat[vi.name] = feed[vi.name]
                key.append(("tensor",))
                continue
            v = feed.get(vi.name)
            if k == "sequence_type" and v is None:
                raise InvalidInputError(f"missing input '{vi.name}' (a sequence: pass a list of arrays)")
            key.append(self._flatten(vi.name, vi.type, v, flat))
        sess = self._session(tuple(key))
        values = sess.run(None, flat)       # (first: a by-value variant names its outputs once run)
        got = dict(zip([o.name for o in sess.get_outputs()], values))
        result = {vo.name: self._regroup(vo, got) for vo in self.outputs}
        names = output_names if output_names is not None else [vo.name for vo in self.outputs]
        missing = [n for n in names if n not in result]
        if missing:
            raise InvalidInputError(f"unknown output name(s) {missing}; the model's outputs are "
                                    f"{[vo.name for vo in self.outputs]}")
        return [result[n] for n in names]

    def _flatten(self, name, t, v, flat):
        """Add value v of input `name` (type t) to `flat` as tensors; its structure key."""
        k = _kind(t)
        if k == "optional_type":
            if v is None:
                return ("none",)
            inner = t.optional_type.elem_type
            return ("some",) + self._flatten(name + "[value]", inner, v, flat)
        if k == "sequence_type":
            if not isinstance(v, (list, tuple)):
                raise InvalidInputError(f"input '{name}' is a sequence: pass a list of arrays, got "
                                        f"{type(v).__name__}")
            items = [np.asarray(a) for a in v]
            for i, a in enumerate(items):
                flat[f"{name}[{i}]"] = a
            return ("seq", tuple((a.dtype.str, a.ndim) for a in items))
        flat[name] = v
        return ("tensor",)

    def _session(self, key):
        with self.lock:
            sess = self.sessions.get(key)
            if sess is not None:
                self.sessions.move_to_end(key)
                return sess
        model = self._variant(key)
        sess = self.session_type(model.SerializeToString(), self.options)
        with self.lock:
            self.sessions[key] = sess
            while len(self.sessions) > self.LIMIT:
                self.sessions.popitem(last=False)
        return sess

    def _variant(self, key):
        from ..frontends.onnx.loader import FLATTEN_KEY
        m = type(self.proto)()
        m.CopyFrom(self.proto)
        g = m.graph
        keep, nodes, new_inputs = [], [], []
        structured = {vi.name: (vi, kk) for vi, kk in zip(self.inputs, key) if kk != ("tensor",)}
        for vi in g.input:
            if vi.name in structured:
                new_nodes, ins = _inputs_for(vi.name, vi.type, structured[vi.name][1])
                nodes += new_nodes
                new_inputs += ins
            else:
                keep.append(vi)
        del g.input[:]
        g.input.extend(keep + new_inputs)
        body = list(g.node)
        del g.node[:]
        g.node.extend(nodes + body)
        m.metadata_props.append(_prop(FLATTEN_KEY))
        return m

    def _labels(self, name, find):
        hit = self.labels.get(name)
        if hit is None:
            hit = self.labels[name] = find(self.proto, name)
        return hit

    def _regroup(self, vo, got):
        k = _kind(vo.type)
        if k == "sequence_type" and _kind(vo.type.sequence_type.elem_type) == "map_type":
            labels = self._labels(vo.name, _zip_map_labels)
            return [dict(zip(labels, row)) for row in got[vo.name].tolist()]
        if k == "sequence_type":
            return _items(vo.name, got)
        if k == "tensor_type" and vo.type.tensor_type.elem_type == _STRING:
            return np.array(self._labels(vo.name, _string_labels), dtype=object)[got[vo.name]]
        if k == "optional_type":
            if vo.name in got:
                return got[vo.name]
            items = _items(vo.name, got)
            return items if items else None
        return got[vo.name]


_STRING = 8     # TensorProto.STRING


def _producer_attrs(proto, name):
    """The attributes of the node that makes graph output `name`, through Identity nodes."""
    from onnx import helper
    makers = {o: n for n in proto.graph.node for o in n.output}
    node = makers[name]
    while node.op_type == "Identity":
        node = makers[node.input[0]]
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _string_labels(proto, name):
    """A classifier's string labels, for the label indices its compiled model returns."""
    return [x.decode() for x in _producer_attrs(proto, name)["classlabels_strings"]]


def _zip_map_labels(proto, name):
    """The keys of ZipMap's {label: probability} dicts (one per row, as onnxruntime returns them)."""
    at = _producer_attrs(proto, name)
    if at.get("classlabels_int64s"):
        return [int(x) for x in at["classlabels_int64s"]]
    return [x.decode() for x in at.get("classlabels_strings", [])]


def _items(name, got):
    out, i = [], 0
    while f"{name}[{i}]" in got:
        out.append(got[f"{name}[{i}]"])
        i += 1
    return out


def _prop(key):
    from onnx import StringStringEntryProto
    return StringStringEntryProto(key=key, value="1")


def _inputs_for(name, t, key):
    """(nodes, tensor ValueInfos) that rebuild input `name` of type t and structure `key`."""
    from onnx import TensorProto, helper
    from onnx.helper import np_dtype_to_tensor_dtype
    k = _kind(t)
    if k == "optional_type":
        if key[0] == "none":
            return [helper.make_node("Optional", [], [name], type=t.optional_type.elem_type)], []
        nodes, ins = _inputs_for(name + "[value]", t.optional_type.elem_type, key[1:])
        return nodes + [helper.make_node("Optional", [name + "[value]"], [name])], ins
    if k == "sequence_type":
        items = key[1]
        elem = t.sequence_type.elem_type.tensor_type.elem_type or TensorProto.FLOAT
        ins = [helper.make_tensor_value_info(f"{name}[{i}]", np_dtype_to_tensor_dtype(np.dtype(dt)),
                                             [f"{_sym(name)}_{i}_{j}" for j in range(rank)])
               for i, (dt, rank) in enumerate(items)]
        if not items:
            return [helper.make_node("SequenceEmpty", [], [name], dtype=elem)], []
        return [helper.make_node("SequenceConstruct", [v.name for v in ins], [name])], ins
    vi = helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
    vi.type.CopyFrom(t)
    return [], [vi]


def _sym(name):
    return "".join(ch if ch.isalnum() else "_" for ch in name)


def _type_name(t) -> str:
    k = _kind(t)
    if k == "sequence_type":
        return f"seq({_type_name(t.sequence_type.elem_type)})"
    if k == "optional_type":
        return f"optional({_type_name(t.optional_type.elem_type)})"
    if k == "map_type":
        from onnx import TensorProto
        key = TensorProto.DataType.Name(t.map_type.key_type).lower()
        return f"map({key},{_type_name(t.map_type.value_type)})"
    from onnx import TensorProto
    return f"tensor({TensorProto.DataType.Name(t.tensor_type.elem_type).lower()})"

