"""Fuzzing harness for Ember: mutates small seed models and their feeds, runs every case in
one long-lived child process (restarted after a crash, killed after `timeout` seconds: a
hang), runs onnxruntime on the same case, classifies the results, and saves a minimized
reproducer for each distinct finding.

Ember's contract checked here: it raises only `ember.errors.EmberError`, never crashes or
hangs, and whenever Ember and onnxruntime both accept a case their outputs agree (floats
within a tolerance relative to the output's largest magnitude, NaN positions equal; ints
and bools exactly).

Classes of results:
    ok                    both ran, outputs agree
    ember_error           Ember raised an EmberError, onnxruntime ran (fine)
    both_reject           Ember raised an EmberError, onnxruntime failed too (fine)
    ember_only            Ember ran, onnxruntime refused to load the model (fine: ORT is stricter)
    lenient               Ember ran, onnxruntime loaded the model but rejected the feeds at run
                          time (a finding: Ember returned results for an invalid input)
    crash, hang, non_ember_exception, mismatch      findings

Public API: SEEDS, make_case(seed, index), Runner, classify, run_fuzz(...).
Replay a saved finding in this process (with a traceback):

    python tests/fuzz/fuzzer.py --repro FINDING_DIR

This file is also the child's entry point (``--worker``), so it imports nothing of Ember at
module level: the parent never loads Ember's native code.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import tempfile
import time
import warnings
import traceback
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
FINDING_KINDS = ("crash", "hang", "non_ember_exception", "mismatch", "lenient")
RTOL = {"float16": 1e-2, "float32": 1e-4, "float64": 1e-6}
MAX_FEED_BYTES = 128 << 20          # one huge feed; the child's address space is capped below
CHILD_AS_LIMIT = 6 << 30
UNFED_EXIT = 75                     # the worker could not take a request in (`_worker`)
OPSET = 18


# ------------------------------------------------------------------------------ seed models
def _vi(name, t, shape):
    return helper.make_tensor_value_info(name, t, shape)


def _model(nodes, inputs, outputs, inits):
    g = helper.make_graph(nodes, "seed", [_vi(*i) for i in inputs], [_vi(*o) for o in outputs],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])
    m.ir_version = 8        # onnxruntime 1.x reads IR 8 with opset 18
    return m.SerializeToString()


def _f32(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _mlp(rng):
    inits = {"w0": _f32(rng, 16, 32, scale=0.25), "b0": _f32(rng, 32), "w1": _f32(rng, 32, 8, scale=0.2),
             "b1": _f32(rng, 8)}
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["m0"]), helper.make_node("Add", ["m0", "b0"], ["a0"]),
             helper.make_node("Relu", ["a0"], ["h0"]), helper.make_node("MatMul", ["h0", "w1"], ["m1"]),
             helper.make_node("Add", ["m1", "b1"], ["y"])]
    return _model(nodes, [("x", TensorProto.FLOAT, ["batch", 16])], [("y", TensorProto.FLOAT, ["batch", 8])], inits)


def _cnn(rng):
    inits = {"w": _f32(rng, 4, 3, 3, 3, scale=0.3), "cb": _f32(rng, 4), "scale": _f32(rng, 4),
             "bias": _f32(rng, 4), "mean": _f32(rng, 4, scale=0.1),
             "var": (rng.random(4) + 0.5).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "cb"], ["c"], pads=[1, 1, 1, 1], strides=[1, 1]),
             helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["bn"], epsilon=1e-5),
             helper.make_node("Relu", ["bn"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]
    return _model(nodes, [("x", TensorProto.FLOAT, ["N", 3, 8, 8])], [("y", TensorProto.FLOAT, ["N", 4, 4, 4])],
                  inits)


def _gather(rng):
    inits = {"emb": _f32(rng, 10, 6), "shape": np.array([0, -1, 3], np.int64)}
    nodes = [helper.make_node("Gather", ["emb", "ids"], ["g"], axis=0),
             helper.make_node("Reshape", ["g", "shape"], ["r"]),
             helper.make_node("Transpose", ["r"], ["y"], perm=[0, 2, 1])]
    return _model(nodes, [("ids", TensorProto.INT64, ["b", "s"])], [("y", TensorProto.FLOAT, ["b", 3, None])], inits)


def _norm(rng):
    inits = {"gamma": _f32(rng, 8), "beta": _f32(rng, 8)}
    nodes = [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["ln"], axis=-1, epsilon=1e-5),
             helper.make_node("Softmax", ["ln"], ["y"], axis=-1)]
    return _model(nodes, [("x", TensorProto.FLOAT, ["batch", "seq", 8])],
                  [("y", TensorProto.FLOAT, ["batch", "seq", 8])], inits)


def _concat(rng):
    inits = {"st": np.array([1, 0], np.int64), "en": np.array([-1, 9], np.int64),
             "ax": np.array([0, 1], np.int64), "sp": np.array([1, 2], np.int64)}
    nodes = [helper.make_node("Concat", ["a", "b"], ["c"], axis=0),
             helper.make_node("Slice", ["c", "st", "en", "ax", "sp"], ["y"])]
    return _model(nodes, [("a", TensorProto.FLOAT, ["n", 4]), ("b", TensorProto.FLOAT, ["m", 4])],
                  [("y", TensorProto.FLOAT, [None, 2])], inits)


def _where(rng):
    nodes = [helper.make_node("Greater", ["x", "z"], ["gt"]),
             helper.make_node("Where", ["gt", "x", "z"], ["y"]),
             helper.make_node("Cast", ["gt"], ["gi"], to=TensorProto.INT32),
             helper.make_node("Less", ["x", "z"], ["lt"]),
             helper.make_node("Cast", ["lt"], ["lf"], to=TensorProto.FLOAT)]
    return _model(nodes, [("x", TensorProto.FLOAT, ["n", 5]), ("z", TensorProto.FLOAT, ["n", 5])],
                  [("y", TensorProto.FLOAT, ["n", 5]), ("gi", TensorProto.INT32, ["n", 5]),
                   ("lf", TensorProto.FLOAT, ["n", 5])], {})


def _reduce(rng):
    inits = {"ax1": np.array([1], np.int64), "axl": np.array([-1], np.int64)}
    nodes = [helper.make_node("ReduceMean", ["x", "ax1"], ["m"], keepdims=1),
             helper.make_node("ReduceSum", ["m", "axl"], ["y"], keepdims=0)]
    return _model(nodes, [("x", TensorProto.FLOAT, ["b", 6, "k"])], [("y", TensorProto.FLOAT, ["b", 1])], inits)


def _bcast(rng):
    nodes = [helper.make_node("Add", ["p", "q"], ["s"]), helper.make_node("Mul", ["s", "p"], ["y"])]
    return _model(nodes, [("p", TensorProto.FLOAT, ["n"]), ("q", TensorProto.FLOAT, ["m"])],
                  [("y", TensorProto.FLOAT, [None])], {})


def _matmul2(rng):
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    return _model(nodes, [("x", TensorProto.FLOAT, ["m", "k"]), ("w", TensorProto.FLOAT, ["k", "n"])],
                  [("y", TensorProto.FLOAT, ["m", "n"])], {})


def _attention(rng):
    """A BERT-style self-attention block (the bench basket's transformer pattern, small)."""
    inits = {"wq": _f32(rng, 32, 32, scale=0.2), "wk": _f32(rng, 32, 32, scale=0.2),
             "wv": _f32(rng, 32, 32, scale=0.2), "heads": np.array([0, 0, 2, 16], np.int64),
             "merge": np.array([0, 0, 32], np.int64), "scale": np.array(4.0, np.float32)}
    nodes = []
    for p in "qkv":
        nodes += [helper.make_node("MatMul", ["x", f"w{p}"], [f"{p}0"]),
                  helper.make_node("Reshape", [f"{p}0", "heads"], [f"{p}1"])]
    nodes += [helper.make_node("Transpose", ["q1"], ["q"], perm=[0, 2, 1, 3]),
              helper.make_node("Transpose", ["k1"], ["kt"], perm=[0, 2, 3, 1]),
              helper.make_node("Transpose", ["v1"], ["v"], perm=[0, 2, 1, 3]),
              helper.make_node("MatMul", ["q", "kt"], ["s0"]),
              helper.make_node("Div", ["s0", "scale"], ["s1"]),
              helper.make_node("Add", ["s1", "mask"], ["s2"]),
              helper.make_node("Softmax", ["s2"], ["p"], axis=-1),
              helper.make_node("MatMul", ["p", "v"], ["o0"]),
              helper.make_node("Transpose", ["o0"], ["o1"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["o1", "merge"], ["o2"]),
              helper.make_node("Erf", ["o2"], ["y"])]
    return _model(nodes, [("x", TensorProto.FLOAT, ["batch", "seq", 32]),
                          ("mask", TensorProto.FLOAT, ["batch", 1, 1, "seq"])],
                  [("y", TensorProto.FLOAT, ["batch", "seq", 32])], inits)


# name -> (builder, {input name: (low, high) for integer feeds})
SEEDS = {"mlp": (_mlp, {}), "cnn": (_cnn, {}), "gather": (_gather, {"ids": (-10, 10)}), "norm": (_norm, {}),
         "concat": (_concat, {}), "where": (_where, {}), "reduce": (_reduce, {}), "bcast": (_bcast, {}),
         "matmul2": (_matmul2, {}), "attention": (_attention, {})}
_SEED_BYTES: dict = {}


def seed_model(name) -> bytes:
    if name not in _SEED_BYTES:
        # the seed is a fixed function of the name, so every run builds the same weights
        rng = np.random.default_rng(int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little"))
        _SEED_BYTES[name] = SEEDS[name][0](rng)
    return _SEED_BYTES[name]


# ------------------------------------------------------------------------------------ feeds
_NP = {TensorProto.FLOAT: np.float32, TensorProto.DOUBLE: np.float64, TensorProto.FLOAT16: np.float16,
       TensorProto.INT64: np.int64, TensorProto.INT32: np.int32, TensorProto.INT16: np.int16,
       TensorProto.INT8: np.int8, TensorProto.UINT8: np.uint8, TensorProto.UINT16: np.uint16,
       TensorProto.UINT32: np.uint32, TensorProto.UINT64: np.uint64, TensorProto.BOOL: np.bool_}
FEED_DTYPES = (np.float32, np.float64, np.float16, np.int64, np.int32, np.int8, np.uint8, np.bool_)


def input_specs(m: onnx.ModelProto):
    """[(name, numpy dtype or None, [int | str | None])] of the graph inputs that are not initializers."""
    inits = {i.name for i in m.graph.initializer}
    out = []
    for vi in m.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]
        out.append((vi.name, _NP.get(tt.elem_type), dims))
    return out


def _values(rng, dtype, shape, int_range):
    n = int(np.prod(shape, dtype=np.int64))
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal(n).astype(dtype).reshape(shape)
    if dtype == np.bool_:
        return (rng.random(n) < 0.5).reshape(shape)
    lo, hi = int_range or (0, 4)
    info = np.iinfo(dtype)
    return rng.integers(max(lo, info.min), min(hi, int(info.max) + 1), n).astype(dtype).reshape(shape)


def make_feeds(rng, specs, int_ranges, symvals=None):
    """Valid feeds for the declared inputs: one value per symbol, shared by all inputs."""
    symvals = dict(symvals or {})
    feeds = {}
    for name, dtype, dims in specs:
        shape = []
        for d in dims:
            if isinstance(d, int):
                shape.append(d)
            else:
                if d not in symvals:
                    symvals[d] = int(rng.integers(1, 5))
                shape.append(symvals[d])
        feeds[name] = _values(rng, dtype or np.float32, shape, int_ranges.get(name))
    return feeds


def _bounded_large(rng, shape, axis, budget_elems):
    rest = int(np.prod([s for i, s in enumerate(shape) if i != axis], dtype=np.int64)) or 1
    return max(1, min(int(rng.integers(1000, 200000)), budget_elems // rest))


def mutate_feeds(rng, feeds, specs, int_ranges):
    """One feed mutation; returns (feeds, description, mutated input name)."""
    if not feeds:
        return feeds, "no inputs", None
    feeds = dict(feeds)
    name = list(feeds)[int(rng.integers(len(feeds)))]
    a = feeds[name]
    spec = {s[0]: s for s in specs}.get(name)
    kind = rng.choice(["symvals", "dim", "rank", "dtype", "nonfinite", "empty", "huge", "layout",
                       "extremes", "missing", "extra"])
    if kind == "symvals":
        # every symbol at once, so that the shapes stay consistent
        syms = {d for _, _, dims in specs for d in dims if isinstance(d, str) or d is None}
        choice = [0, 1, 1, 2, 3, 7, 16, 33, 100]
        vals = {s: int(rng.choice(choice)) for s in syms}
        return make_feeds(rng, specs, int_ranges, vals), f"symbols {vals}", name
    if kind == "dim" and a.ndim:
        shape = list(a.shape)
        ax = int(rng.integers(a.ndim))
        shape[ax] = int(rng.choice([1, 2, 3, 5, 8, shape[ax] + 1]))
        feeds[name] = _values(rng, a.dtype, shape, int_ranges.get(name))
        return feeds, f"{name}: dim {ax} -> {shape[ax]} (shape {shape})", name
    if kind == "rank":
        shape = list(a.shape)
        if shape and rng.random() < 0.5:
            del shape[int(rng.integers(len(shape)))]
        else:
            shape.insert(int(rng.integers(len(shape) + 1)), int(rng.integers(1, 3)))
        feeds[name] = _values(rng, a.dtype, shape, int_ranges.get(name))
        return feeds, f"{name}: rank {a.ndim} -> {len(shape)} (shape {shape})", name
    if kind == "dtype":
        dt = FEED_DTYPES[int(rng.integers(len(FEED_DTYPES)))]
        with np.errstate(invalid="ignore", over="ignore"):     # NaN/inf to int is part of the test
            feeds[name] = a.astype(dt)
        return feeds, f"{name}: dtype {a.dtype} -> {np.dtype(dt)}", name
    if kind == "nonfinite" and a.dtype.kind == "f" and a.size:
        b = a.copy().reshape(-1)
        k = int(rng.integers(1, min(b.size, 4) + 1))
        b[rng.integers(b.size, size=k)] = rng.choice([np.nan, np.inf, -np.inf], size=k)
        feeds[name] = b.reshape(a.shape)
        return feeds, f"{name}: {k} NaN/inf values", name
    if kind == "empty" and a.ndim:
        shape = list(a.shape)
        ax = int(rng.integers(a.ndim))
        shape[ax] = 0
        feeds[name] = np.zeros(shape, a.dtype)
        return feeds, f"{name}: empty, dim {ax} = 0 (shape {shape})", name
    if kind == "huge" and a.ndim:
        shape = list(a.shape)
        ax = int(rng.integers(a.ndim))
        shape[ax] = _bounded_large(rng, shape, ax, MAX_FEED_BYTES // a.dtype.itemsize)
        feeds[name] = _values(rng, a.dtype, shape, int_ranges.get(name))
        return feeds, f"{name}: huge dim {ax} = {shape[ax]} (shape {shape})", name
    if kind == "layout" and a.ndim >= 1:
        # same values in a non-contiguous view: results must not change
        big = np.repeat(a, 2, axis=a.ndim - 1)
        feeds[name] = big[..., ::2] if rng.random() < 0.5 else np.asfortranarray(a)
        return feeds, f"{name}: non-C-contiguous layout", name
    if kind == "extremes":
        if a.dtype.kind in "iu":
            info = np.iinfo(a.dtype)
            b = a.copy().reshape(-1)
            if b.size:
                b[int(rng.integers(b.size))] = rng.choice([info.min, info.max, -1, 10, 11, -11])
            feeds[name] = b.reshape(a.shape)
            return feeds, f"{name}: extreme integer", name
        if a.dtype.kind == "f":
            with np.errstate(invalid="ignore", over="ignore"):
                feeds[name] = (a * rng.choice([1e30, 1e-30, 1e4, 0.0])).astype(a.dtype)
            return feeds, f"{name}: scaled to extreme magnitude", name
    if kind == "missing":
        del feeds[name]
        return feeds, f"{name}: missing", name
    if kind == "extra":
        feeds["not_an_input"] = np.zeros(2, np.float32)
        return feeds, "extra input 'not_an_input'", name
    if spec is not None:
        return make_feeds(rng, specs, int_ranges), "regenerated", name
    return feeds, "unchanged", name


# ----------------------------------------------------------------------------- model mutations
_INTERESTING_INTS = (0, 1, -1, 2, 3, -2, 7, 1 << 20, -(1 << 40), 1 << 62)


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def _mut_attr_value(rng, m):
    nodes = [n for n in m.graph.node if n.attribute]
    if not nodes:
        return None
    n = _pick(rng, nodes)
    a = _pick(rng, n.attribute)
    if a.type == onnx.AttributeProto.INT:
        a.i = int(_pick(rng, _INTERESTING_INTS))
    elif a.type == onnx.AttributeProto.FLOAT:
        a.f = float(rng.choice([0.0, -1.0, 1e30, np.nan, np.inf]))
    elif a.type == onnx.AttributeProto.INTS:
        vals = list(a.ints)
        r = rng.random()
        if r < 0.3 and vals:
            vals.pop(int(rng.integers(len(vals))))
        elif r < 0.6:
            vals.append(int(_pick(rng, _INTERESTING_INTS)))
        elif vals:
            vals[int(rng.integers(len(vals)))] = int(_pick(rng, _INTERESTING_INTS))
        del a.ints[:]
        a.ints.extend(vals)
    else:
        return None
    return n, f"attribute {n.op_type}.{a.name} value changed"


def _mut_attr_type(rng, m):
    nodes = [n for n in m.graph.node if n.attribute]
    if not nodes:
        return None
    n = _pick(rng, nodes)
    k = int(rng.integers(len(n.attribute)))
    a = n.attribute[k]
    value = _pick(rng, [1.5, 2, [1, 2], "abc", [0.5], onnx.helper.make_tensor("t", TensorProto.INT64, [1], [1])])
    n.attribute[k].CopyFrom(helper.make_attribute(a.name, value))
    return n, f"attribute {n.op_type}.{a.name} type -> {type(value).__name__}"


def _mut_attr_add_remove(rng, m):
    n = _pick(rng, m.graph.node)
    if n.attribute and rng.random() < 0.5:
        name = n.attribute[int(rng.integers(len(n.attribute)))].name
        kept = [a for a in n.attribute if a.name != name]
        del n.attribute[:]
        n.attribute.extend(kept)
        return n, f"attribute {n.op_type}.{name} removed"
    name = _pick(rng, ["axis", "perm", "keepdims", "to", "kernel_shape", "pads", "bogus"])
    if any(a.name == name for a in n.attribute):
        return None
    value = {"perm": [1, 0], "kernel_shape": [3, 3], "pads": [0, 1, 0, 1], "to": TensorProto.INT8}.get(
        name, int(rng.integers(-3, 4)))
    n.attribute.append(helper.make_attribute(name, value))
    return n, f"attribute {n.op_type}.{name} = {value} added"


def _consumer(m, name):
    return next((n for n in m.graph.node if name in n.input), None)


def _mut_init_shape(rng, m):
    if not m.graph.initializer:
        return None
    init = _pick(rng, m.graph.initializer)
    arr = numpy_helper.to_array(init)
    if rng.random() < 0.3:
        # dims that disagree with the stored data
        dims = list(init.dims) + [2] if rng.random() < 0.5 or not init.dims else list(init.dims)[:-1]
        del init.dims[:]
        init.dims.extend(dims)
        return _consumer(m, init.name), f"initializer {init.name} dims -> {dims} (data unchanged)"
    shape = list(arr.shape)
    if shape and rng.random() < 0.6:
        ax = int(rng.integers(len(shape)))
        shape[ax] = int(rng.choice([0, 1, 2, shape[ax] + 1, max(shape[ax] - 1, 0)]))
    elif rng.random() < 0.5:
        shape.append(int(rng.integers(1, 3)))
    else:
        shape = shape[1:]
    new = _values(rng, arr.dtype.type, shape, (-3, 4)) if arr.dtype.kind != "f" else _f32(rng, *shape).astype(arr.dtype)
    init.CopyFrom(numpy_helper.from_array(new, init.name))
    return _consumer(m, init.name), f"initializer {init.name} shape {list(arr.shape)} -> {shape}"


def _mut_input_shape(rng, m):
    inits = {i.name for i in m.graph.initializer}
    vis = [vi for vi in m.graph.input if vi.name not in inits]
    if not vis:
        return None
    vi = _pick(rng, vis)
    shape = vi.type.tensor_type.shape
    r = rng.random()
    if r < 0.2:
        shape.dim.add().dim_value = int(rng.integers(1, 4))
        what = "dim appended"
    elif r < 0.35 and len(shape.dim):
        del shape.dim[int(rng.integers(len(shape.dim)))]
        what = "dim removed"
    elif r < 0.45:
        vi.type.tensor_type.ClearField("shape")
        what = "shape removed"
    elif len(shape.dim):
        d = shape.dim[int(rng.integers(len(shape.dim)))]
        choice = rng.random()
        if choice < 0.4:
            d.dim_value = int(rng.choice([0, 1, 2, 3, 5]))
        elif choice < 0.8:
            d.dim_param = _pick(rng, ["n", "m", "k", "q", "batch", "seq", "s", "N", "b"])
        else:
            d.Clear()
        what = f"dim -> {d.dim_value if d.HasField('dim_value') else d.dim_param or '?'}"
    else:
        return None
    return _consumer(m, vi.name), f"declared input {vi.name}: {what}"


def _mut_dtype(rng, m):
    r = rng.random()
    types = [TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.INT64, TensorProto.INT32,
             TensorProto.INT8, TensorProto.UINT8, TensorProto.BOOL, TensorProto.STRING, TensorProto.BFLOAT16]
    t = _pick(rng, types)
    if r < 0.4 and m.graph.initializer:
        init = _pick(rng, m.graph.initializer)
        arr = numpy_helper.to_array(init)
        if t in (TensorProto.STRING, TensorProto.BFLOAT16):
            init.data_type = t       # the stored bytes are now read as another type
        else:
            init.CopyFrom(numpy_helper.from_array(arr.astype(_NP[t]), init.name))
        return _consumer(m, init.name), f"initializer {init.name} dtype -> {TensorProto.DataType.Name(t)}"
    inits = {i.name for i in m.graph.initializer}
    vis = [vi for vi in m.graph.input if vi.name not in inits] if r < 0.8 else list(m.graph.output)
    if not vis:
        return None
    vi = _pick(rng, vis)
    vi.type.tensor_type.elem_type = t
    return _consumer(m, vi.name), f"declared {vi.name} dtype -> {TensorProto.DataType.Name(t)}"


def _mut_delete_node(rng, m):
    k = int(rng.integers(len(m.graph.node)))
    n = onnx.NodeProto()
    n.CopyFrom(m.graph.node[k])
    del m.graph.node[k]
    return n, f"node {k} ({n.op_type}) deleted"


def _mut_duplicate_node(rng, m):
    k = int(rng.integers(len(m.graph.node)))
    n = m.graph.node[k]
    m.graph.node.insert(int(rng.integers(len(m.graph.node) + 1)), n)
    return n, f"node {k} ({n.op_type}) duplicated"


def _mut_swap_inputs(rng, m):
    n = _pick(rng, m.graph.node)
    if len(n.input) >= 2 and rng.random() < 0.6:
        i, j = rng.choice(len(n.input), 2, replace=False)
        n.input[int(i)], n.input[int(j)] = n.input[int(j)], n.input[int(i)]
        return n, f"{n.op_type} inputs {i} and {j} swapped"
    names = [vi.name for vi in m.graph.input] + [i.name for i in m.graph.initializer] + \
            [o for x in m.graph.node for o in x.output] + ["", "undefined_value"]
    k = int(rng.integers(len(n.input))) if n.input else 0
    if n.input:
        n.input[k] = _pick(rng, names)
    else:
        n.input.append(_pick(rng, names))
    return n, f"{n.op_type} input {k} -> '{n.input[k]}'"


def _mut_node_arity(rng, m):
    n = _pick(rng, m.graph.node)
    if n.input and rng.random() < 0.5:
        del n.input[-1]
        return n, f"{n.op_type}: last input dropped"
    n.input.append(_pick(rng, [n.input[0] if n.input else "", ""] + [i.name for i in m.graph.initializer]))
    return n, f"{n.op_type}: input appended"


def _mut_op_type(rng, m):
    n = _pick(rng, m.graph.node)
    old = n.op_type
    n.op_type = _pick(rng, ["Relu", "Add", "MatMul", "Softmax", "Transpose", "Reshape", "Gather", "Concat",
                            "Cast", "ReduceSum", "Where", "Slice", "Identity", "Expand", "Squeeze", "Conv"])
    return n, f"op {old} -> {n.op_type}"


def _mut_opset(rng, m):
    v = int(rng.choice([1, 7, 11, 12, 13, 17, 19, 21, 23, 24, 99]))
    m.opset_import[0].version = v
    return None, f"opset -> {v}"


def _mut_outputs(rng, m):
    if rng.random() < 0.5 and len(m.graph.output) > 1:
        del m.graph.output[int(rng.integers(len(m.graph.output)))]
        return None, "a graph output removed"
    n = _pick(rng, m.graph.node)
    if not n.output:
        return None
    vi = m.graph.output.add()
    vi.CopyFrom(helper.make_tensor_value_info(n.output[0], TensorProto.FLOAT, None))
    return n, f"{n.op_type} output '{n.output[0]}' made a graph output"


MODEL_MUTATIONS = (_mut_attr_value, _mut_attr_type, _mut_attr_add_remove, _mut_init_shape, _mut_input_shape,
                   _mut_dtype, _mut_delete_node, _mut_duplicate_node, _mut_swap_inputs, _mut_node_arity,
                   _mut_op_type, _mut_opset, _mut_outputs)


def bit_flip(rng, raw: bytes):
    b = bytearray(raw)
    k = int(rng.integers(1, 9))
    for pos in rng.integers(len(b), size=k):
        b[pos] ^= 1 << int(rng.integers(8))
    return bytes(b), f"{k} bit(s) flipped"


# ------------------------------------------------------------------------------------ cases
@dataclass
class Case:
    index: int
    seed_name: str
    model: bytes
    feeds: dict
    mutations: list = field(default_factory=list)
    op: str = "graph"           # the ONNX op the mutations touched (for deduplication)
    threads: int = 1


def make_case(seed: int, index: int) -> Case:
    """Case `index` of run `seed`: a pure function of both, so any case can be regenerated."""
    rng = np.random.default_rng([seed, index])
    name = _pick(rng, list(SEEDS))
    int_ranges = SEEDS[name][1]
    raw = seed_model(name)
    m = onnx.load_from_string(raw)
    first_op = m.graph.node[0].op_type
    muts, op = [], None
    r = rng.random()
    mutate_model, mutate_feed = r < 0.45, 0.3 <= r < 0.9
    if mutate_model:
        if rng.random() < 0.15:
            raw, what = bit_flip(rng, raw)
            muts.append(what)
        else:
            for _ in range(int(rng.integers(1, 3))):
                mut = _pick(rng, MODEL_MUTATIONS)
                try:
                    res = mut(rng, m)
                except Exception as e:      # a mutation that does not apply to this model
                    res = None
                    muts.append(f"{mut.__name__} skipped ({type(e).__name__})")
                if res is not None:
                    node, what = res
                    muts.append(what)
                    op = op or (node.op_type if node is not None else None)
            raw = m.SerializeToString()
    try:
        specs = input_specs(onnx.load_from_string(raw))
    except Exception:       # a flipped bit made the model unreadable: feed what the seed wants
        specs = input_specs(onnx.load_from_string(seed_model(name)))
    feeds = make_feeds(rng, specs, int_ranges)
    if mutate_feed:
        for _ in range(int(rng.integers(1, 3))):
            feeds, what, inp = mutate_feeds(rng, feeds, specs, int_ranges)
            muts.append(what)
            if op is None and inp is not None:
                c = _consumer(onnx.load_from_string(seed_model(name)), inp)
                op = c.op_type if c is not None else None
    return Case(index, name, raw, feeds, muts, op or first_op, int(rng.integers(1, 3)))


# ------------------------------------------------------------------------------- the child
def _innermost_ember_frame(tb):
    where = None
    for fr in traceback.extract_tb(tb):
        p = Path(fr.filename)
        if "ember" in p.parts and "fuzz" not in p.parts:
            i = p.parts.index("ember")
            where = f"{'/'.join(p.parts[i:])}:{fr.lineno} {fr.name}"
    return where


def _err(e, phase, is_ember):
    return {"status": "error", "type": f"{type(e).__module__}.{type(e).__qualname__}", "message": str(e)[:2000],
            "ember": is_ember, "phase": phase, "where": _innermost_ember_frame(e.__traceback__),
            "traceback": "".join(traceback.format_exception(e))[-4000:]}


class _Cache(OrderedDict):
    def put(self, k, v, limit=48):
        self[k] = v
        self.move_to_end(k)
        while len(self) > limit:
            self.popitem(last=False)


def run_ember(model, feeds, threads, cache=None, use_disk_cache=False):
    import ember
    from ember.errors import EmberError
    key = (hashlib.sha1(model).hexdigest(), threads)
    hit = cache.get(key) if cache is not None else None
    if hit is None:
        try:
            opts = ember.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.enable_cache = use_disk_cache
            hit = ("session", ember.InferenceSession(model, opts))
        except Exception as e:
            hit = ("error", _err(e, "compile", isinstance(e, EmberError)))
        if cache is not None:
            cache.put(key, hit)
    if hit[0] == "error":
        return hit[1]
    try:
        s = hit[1]
        outs = s.run(None, feeds)
        return {"status": "ok", "outputs": [np.asarray(o) for o in outs], "names": [o.name for o in s.get_outputs()]}
    except Exception as e:
        return _err(e, "run", isinstance(e, EmberError))


def run_ort(model, feeds, cache=None):
    import onnxruntime as ort
    key = hashlib.sha1(model).hexdigest()
    hit = cache.get(key) if cache is not None else None
    if hit is None:
        try:
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            so.log_severity_level = 4
            hit = ("session", ort.InferenceSession(model, so, providers=["CPUExecutionProvider"]))
        except Exception as e:
            hit = ("error", _err(e, "load", False))
        if cache is not None:
            cache.put(key, hit)
    if hit[0] == "error":
        return hit[1]
    try:
        # (onnxruntime's binding takes arrays only; a 0-d feed may arrive as a numpy scalar)
        return {"status": "ok", "outputs": [np.asarray(o) for o in hit[1].run(None, {k: np.asarray(v) for k, v in feeds.items()})]}
    except Exception as e:
        return _err(e, "run", False)


def _worker(rfd, wfd):
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_AS_LIMIT, CHILD_AS_LIMIT))
    rx, tx = Connection(rfd), Connection(wfd)
    ember_cache, ort_cache = _Cache(), _Cache()
    while True:
        try:
            req = pickle.loads(rx.recv_bytes())
        except EOFError:
            return
        except (MemoryError, SystemError):
            # a request of ~100 MB (a huge feed) can find no room left under the address-space
            # cap in a worker that has run thousands of cases (CPython then raises SystemError
            # for the half-received buffer): nothing of the case has run; the parent retries it
            # in a fresh worker
            os._exit(UNFED_EXIT)
        res = run_ember(req["model"], req["feeds"], req["threads"], ember_cache, req["disk_cache"])
        _send(tx, res, {"status": "unfed", "why": "Ember's outputs too large for the worker to send"})
        del res
        _send(tx, run_ort(req["model"], req["feeds"], ort_cache),
              {"status": "error", "type": "MemoryError", "phase": "run",
               "message": "Failed to allocate memory: onnxruntime's outputs too large for the worker to send"})


def _send(tx, res, too_large):
    """Sends a result; one whose pickle finds no room under the address-space cap (a MatMul
    of [6562, 1] x [1, 182230]: 4.8 GB, computed fine) goes as `too_large` instead."""
    try:
        data = pickle.dumps(res, protocol=pickle.HIGHEST_PROTOCOL)
    except MemoryError:
        data = pickle.dumps(too_large, protocol=pickle.HIGHEST_PROTOCOL)
    tx.send_bytes(data)


class Runner:
    """The parent's handle on the one worker process; `run` never raises for what the case does."""

    def __init__(self, timeout=10.0, log_dir=None):
        self.timeout = timeout
        self.proc = None
        self.restarts = 0
        self.log_path = Path(log_dir or tempfile.mkdtemp(prefix="ember-fuzz-")) / "worker.stderr"

    def _start(self):
        p2c_r, p2c_w = os.pipe()
        c2p_r, c2p_w = os.pipe()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", str(p2c_r), str(c2p_w)],
                                     pass_fds=(p2c_r, c2p_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=log, cwd=str(ROOT), env=env)
        log.close()
        os.close(p2c_r)
        os.close(c2p_w)
        self.tx, self.rx = Connection(p2c_w), Connection(c2p_r)

    def _stop(self):
        if self.proc is None:
            return
        for c in (self.tx, self.rx):
            c.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc = None

    def close(self):
        self._stop()

    def _receive(self, timeout):
        if not self.rx.poll(timeout):
            self._stop()
            self.restarts += 1
            return {"status": "hang", "seconds": timeout}
        try:
            return pickle.loads(self.rx.recv_bytes())
        except (EOFError, OSError):
            code = self.proc.wait()
            tail = self.log_path.read_bytes()[-3000:].decode(errors="replace")
            self.proc = None
            self.restarts += 1
            sig = signal.Signals(-code).name if code < 0 and -code in signal.valid_signals() else f"exit {code}"
            return {"status": "crash", "signal": sig, "stderr": tail}

    def run(self, model, feeds, threads=1, disk_cache=False, retry=True):
        """(ember result, ort result): dicts with status ok / error / crash / hang, or unfed
        (a fresh worker could not take the case in either)."""
        if self.proc is None:
            self._start()
        try:
            self.tx.send_bytes(pickle.dumps({"model": model, "feeds": feeds, "threads": threads,
                                             "disk_cache": disk_cache}, protocol=pickle.HIGHEST_PROTOCOL))
        except (BrokenPipeError, OSError):
            self._stop()
            self._start()
            return self.run(model, feeds, threads, disk_cache, retry)
        e = self._receive(self.timeout)
        if e["status"] == "crash" and e["signal"] == f"exit {UNFED_EXIT}":
            if retry:
                return self.run(model, feeds, threads, disk_cache, retry=False)
            return {"status": "unfed"}, {"status": "skipped"}
        if e["status"] in ("hang", "crash"):
            return e, {"status": "skipped"}
        o = self._receive(self.timeout)
        if o["status"] in ("hang", "crash"):   # onnxruntime's own trouble: not Ember's finding
            o = {"status": "error", "type": f"onnxruntime {o['status']}", "phase": "crashed", "message": ""}
        return e, o


# --------------------------------------------------------------------------- classification
def compare(ours, theirs) -> str | None:
    """None if the outputs agree, else what differs."""
    if len(ours) != len(theirs):
        return f"{len(ours)} outputs vs {len(theirs)}"
    for k, (a, b) in enumerate(zip(ours, theirs)):
        if a.shape != b.shape:
            return f"output {k}: shape {list(a.shape)} vs onnxruntime {list(b.shape)}"
        if a.dtype != b.dtype:
            return f"output {k}: dtype {a.dtype} vs onnxruntime {b.dtype}"
        if a.dtype.kind != "f":
            if not np.array_equal(a, b):
                bad = np.argwhere(a != b)
                return f"output {k}: {len(bad)} elements differ, first at {bad[0].tolist()}: {a[tuple(bad[0])]} vs {b[tuple(bad[0])]}"
            continue
        an, bn = np.isnan(a), np.isnan(b)
        if (an != bn).any():
            i = tuple(np.argwhere(an != bn)[0])
            return f"output {k}: NaN positions differ, first at {list(i)}: {a[i]} vs {b[i]}"
        inf = (np.isinf(a) | np.isinf(b)) & ~an
        if (a[inf] != b[inf]).any():
            i = tuple(np.argwhere(inf & (a != b))[0])
            return f"output {k}: infinities differ, first at {list(i)}: {a[i]} vs {b[i]}"
        fin = np.isfinite(a) & np.isfinite(b)
        if not fin.any():
            continue
        a64, b64 = a[fin].astype(np.float64), b[fin].astype(np.float64)
        scale = float(np.abs(b64).max())
        tol = RTOL.get(a.dtype.name, 1e-4) * max(scale, np.finfo(a.dtype).tiny)
        err = float(np.abs(a64 - b64).max())
        if err > tol:
            return f"output {k}: max abs error {err:.3g} > {tol:.3g} (largest magnitude {scale:.3g})"
    return None


def _reference(model: onnx.ModelProto, new_ops=()):
    """onnx.reference's evaluator for the model, with one fix of its own: a BatchNormalization
    node with the one output Y runs in inference mode, as the spec of every version says
    (onnx.reference's for opsets 7 and 8 runs training mode and then fails; its opset-9 one
    uses batch statistics whenever momentum is set)."""
    from onnx.reference import ReferenceEvaluator
    from onnx.reference.op_run import OpRun
    from onnx.reference.ops import op_batch_normalization as bn

    class BatchNormalization(OpRun):
        def _run(self, x, scale, bias, mean, var, epsilon=None, momentum=None, training_mode=None,
                 is_test=None, spatial=None):
            eps = 1e-5 if epsilon is None else epsilon
            if len(self.onnx_node.output) == 1 and not training_mode:
                return (bn._batchnorm_test_mode(x, scale, bias, mean, var, epsilon=eps),)
            res, _, _, out_mean, out_var = bn._batchnorm_training_mode(
                x, scale, bias, mean, var, 0.9 if momentum is None else momentum, eps)
            return (res, out_mean, out_var)[:len(self.onnx_node.output)]

    return ReferenceEvaluator(model, new_ops=[BatchNormalization, *new_ops])


def _matches(ours, ref) -> bool:
    """Whether Ember's outputs equal a reference's (compared like onnxruntime's, in Ember's dtypes)."""
    return len(ref) == len(ours) and compare(
        ours, [r.astype(a.dtype) if r.shape == a.shape else r for r, a in zip(ref, ours)]) is None


def _reference_agrees(model, feeds, ours, detail) -> bool:
    """Where Ember and onnxruntime disagree over non-finite values, whether Ember's outputs
    match the ONNX reference implementation. Then Ember follows the spec and it is not a
    finding. Two cases: NaN or inf in different places (onnxruntime's Relu and MaxPool drop a
    NaN that the reference propagates), and finite outputs computed through an intermediate
    that overflows float32 in the reference itself (a variance of extreme inputs: the result
    depends on the order of evaluation, onnxruntime's differs)."""
    nonfinite = "NaN positions differ" in detail or "infinities differ" in detail
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ref = _reference(onnx.load_from_string(model)).run(None, feeds)
        ref = [np.asarray(r) for r in ref]
    except Exception:
        return False
    overflowed = any(issubclass(w.category, RuntimeWarning) and "overflow" in str(w.message) for w in caught)
    if not (nonfinite or overflowed):
        return False
    return _matches(ours, ref)


_STAND_IN_DOMAIN = "ember.fuzz"


def _stand_ins(x: np.ndarray, sign: float) -> np.ndarray:
    """x with each NaN replaced by sign * F and each +-inf by +-G, finite values of x's dtype
    with F >> G (max ** 0.9 and max ** 0.8: 1e34 and 1e30 in float32): in the runs of
    `_nan_propagated` an inf stays as large as a value can be without hiding the NaN's stand-in
    from a max (max(inf, anything) is inf whatever the NaN was)."""
    if x.dtype.kind != "f":
        return x
    top = float(np.finfo(x.dtype).max)
    f, g = top ** 0.9, top ** 0.8
    with np.errstate(invalid="ignore"):
        y = np.where(np.isnan(x), sign * f, np.where(np.isinf(x), np.sign(x) * g, x))
    return y.astype(x.dtype)


def _stand_in_evaluator(model: onnx.ModelProto, sign: float):
    """onnx.reference over the model with every node output passed through `_stand_ins`:
    each NaN and inf replaced where it first appears (the caller replaces the feeds'). A node
    of its own domain, so it runs at any opset."""
    from onnx.reference.op_run import OpRun

    class StandIns(OpRun):
        op_domain = _STAND_IN_DOMAIN

        def _run(self, x):
            return (_stand_ins(np.asarray(x), sign),)

    m = onnx.ModelProto()
    m.CopyFrom(model)
    nodes = []
    for node in m.graph.node:
        nodes.append(node)
        for k, o in enumerate(node.output):
            if o:
                node.output[k] = o + "__raw"
                nodes.append(onnx.helper.make_node("StandIns", [o + "__raw"], [o], domain=_STAND_IN_DOMAIN))
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    m.opset_import.append(onnx.helper.make_opsetid(_STAND_IN_DOMAIN, 1))
    return _reference(m, new_ops=[StandIns])


def _ieee_reference(model: bytes, feeds):
    """onnx.reference's outputs with MaxPool propagating NaN (a window holding a NaN gives
    NaN, as numpy's max and IEEE 754's maximum do): the reference's own MaxPool drops a NaN
    or keeps it by where in the window it lies. The window test is the reference MaxPool
    itself over the NaN indicator, so pads, dilations and ceil_mode are its own."""
    from onnx.reference.ops.op_max_pool import MaxPool as _RefMaxPool

    class MaxPool(_RefMaxPool):
        def _run(self, x, **at):
            x = np.asarray(x)
            res = super()._run(x, **at)
            if x.dtype.kind != "f" or not np.isnan(x).any():
                return res
            hit = super()._run(np.isnan(x).astype(x.dtype), **at)[0]
            return (np.where(hit > 0, np.asarray(np.nan, x.dtype), res[0]),) + tuple(res[1:])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = _reference(onnx.load_from_string(model), new_ops=[MaxPool]).run(None, feeds)
    return [np.asarray(r) for r in ref]


def _nan_propagated(model, feeds, ours, theirs, detail) -> bool:
    """Where NaN positions differ and a NaN arises (a feed's, or one an op makes itself:
    inf - inf in a convolution's sum): whether Ember's NaNs are exactly NaN propagated (IEEE
    and numpy semantics: an output that depends on a NaN is NaN). onnxruntime and
    onnx.reference both let a window's max drop a NaN depending on where in the window it
    lies, each in its own order (MaxPool over [nan, 1, 2, 3]: 3 in one, NaN in the other),
    so neither can be the arbiter. An output depends on the NaNs where the reference gives
    other values once every NaN, in the feeds and wherever a node's output holds one, is
    replaced as it appears by +F and by -F, and every inf by a finite G << F
    (`_stand_ins`). Accepted when every NaN of Ember's lies on such a position, or where a
    peer has NaN too, and every other output equals onnxruntime's. A NaN on an output that
    depends on no NaN (an inf that Ember's arithmetic alone turned into NaN) is never
    accepted."""
    if "NaN positions differ" not in detail:
        return False
    try:
        if _matches(ours, _ieee_reference(model, feeds)):
            return True     # every NaN, inf and value as the NaN-propagating reference has it
    except Exception:
        pass
    try:
        proto = onnx.load_from_string(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = [np.asarray(r) for r in _reference(proto).run(None, feeds)]
            runs = [[np.asarray(r) for r in _stand_in_evaluator(proto, sign).run(
                        None, {k: _stand_ins(v, sign) for k, v in feeds.items()})]
                    for sign in (1.0, -1.0)]
    except Exception:
        return False
    if len(ours) != len(theirs) or any(len(r) != len(ours) for r in (ref, *runs)):
        return False
    for a, b, r, hi, lo in zip(ours, theirs, ref, *runs):
        if a.dtype.kind != "f" or a.shape != b.shape or hi.shape != a.shape or r.shape != a.shape:
            if compare([a], [b]) is not None:
                return False
            continue
        with np.errstate(invalid="ignore"):
            depends = ~((hi == lo) | (np.isnan(hi) & np.isnan(lo)))
        nan = np.isnan(a)
        if (nan & ~(depends | np.isnan(b) | np.isnan(r))).any():
            return False
        if compare([a[~nan]], [b[~nan]]) is not None:
            return False
    return True


def classify(e, o):
    """(class, exception type, detail message)."""
    if e["status"] == "hang":
        return "hang", "", f"no answer within {e['seconds']} s"
    if e["status"] == "unfed":       # the harness's own memory, no verdict on Ember
        return "worker_out_of_memory", "", e.get("why", "a fresh worker could not take the case in")
    if e["status"] == "crash":
        return "crash", e["signal"], e["stderr"][-500:]
    if e["status"] == "error":
        if not e["ember"]:
            return "non_ember_exception", e["type"], f"{e['message'][:300]} (at {e['where']})"
        return ("both_reject" if o["status"] != "ok" else "ember_error"), e["type"], e["message"][:300]
    if o["status"] != "ok":
        if o.get("phase") != "run":      # refused the model, or onnxruntime itself crashed
            return "ember_only", o["type"], o["message"][:300]
        if "Failed to allocate memory" in (o.get("message") or ""):
            # onnxruntime ran out of memory (its NCHWc Conv of a mutated pad asked for 1.6 GB
            # under the worker's address-space limit), which is no verdict on the input
            return "peer_out_of_memory", o["type"], o["message"][:300]
        return "lenient", o["type"], "Ember ran; onnxruntime rejected the feeds: " + o["message"][:300]
    diff = compare(e["outputs"], o["outputs"])
    return ("ok", "", "") if diff is None else ("mismatch", "", diff)


_NODE_IN_MSG = re.compile(r"node '[^']*' \((\w+)\)")


def finding_key(kind, exc_type, case_op, e):
    """(kind, exception type, op): the op Ember's message names, else the one the mutations touched."""
    m = _NODE_IN_MSG.search(e.get("message", "")) if e.get("status") == "error" else None
    return kind, exc_type, m.group(1) if m else case_op


# ------------------------------------------------------------------------------ minimization
def _prune(m: onnx.ModelProto, outputs: list):
    """Keep only the nodes, initializers and inputs that the given output names need."""
    needed, keep = set(outputs), []
    for n in reversed(m.graph.node):
        if any(o in needed for o in n.output):
            keep.append(n)
            needed.update(i for i in n.input if i)
    keep.reverse()
    del m.graph.node[:]
    m.graph.node.extend(keep)
    for field_name in ("initializer", "input"):
        items = [x for x in getattr(m.graph, field_name) if x.name in needed]
        del getattr(m.graph, field_name)[:]
        getattr(m.graph, field_name).extend(items)


def _cut_after(m: onnx.ModelProto, k: int):
    """The model that ends at node k (its outputs become the graph outputs), or None."""
    c = onnx.ModelProto()
    c.CopyFrom(m)
    del c.graph.node[k + 1:]
    outs = [o for o in c.graph.node[k].output if o]
    if not outs:
        return None
    try:
        types = {vi.name: vi for vi in onnx.shape_inference.infer_shapes(c).graph.value_info}
    except Exception:
        types = {}
    types.update({vi.name: vi for vi in c.graph.output})
    del c.graph.output[:]
    for o in outs:
        c.graph.output.add().CopyFrom(types.get(o, helper.make_tensor_value_info(o, TensorProto.FLOAT, None)))
    _prune(c, outs)
    return c


def minimize(runner, model, feeds, threads, key, budget=12):
    """A smaller (model, feeds) with the same finding key: the shortest prefix of the graph,
    then single graph outputs, then feeds without unused inputs. Crashes and hangs cost a
    worker restart per try, so the budget is small."""
    kind, exc_type = key[0], key[1]

    def same(mb, fd):
        e, o = runner.run(mb, fd, threads)
        k2, t2, _ = classify(e, o)
        return k2 == kind and t2 == exc_type

    try:
        m = onnx.load_from_string(model)
        _ = m.graph.node[0]
    except Exception:
        return model, feeds, None
    tries = 0
    for k in range(len(m.graph.node) - 1):
        if tries >= budget:
            break
        c = _cut_after(m, k)
        if c is None:
            continue
        tries += 1
        names = {i.name for i in c.graph.input}
        fd = {n: v for n, v in feeds.items() if n in names or n not in {i.name for i in m.graph.input}}
        cb = c.SerializeToString()
        if same(cb, fd):
            return cb, fd, c.graph.node[-1].op_type
    if len(m.graph.output) > 1:
        for vo in list(m.graph.output):
            if tries >= budget:
                break
            c = onnx.ModelProto()
            c.CopyFrom(m)
            del c.graph.output[:]
            c.graph.output.add().CopyFrom(vo)
            _prune(c, [vo.name])
            names = {i.name for i in c.graph.input}
            fd = {n: v for n, v in feeds.items() if n in names or n not in {i.name for i in m.graph.input}}
            tries += 1
            cb = c.SerializeToString()
            if same(cb, fd):
                return cb, fd, c.graph.node[-1].op_type if c.graph.node else None
    return model, feeds, m.graph.node[-1].op_type if m.graph.node else None


def save_finding(out_dir: Path, n: int, key, case: Case, detail, e, o, model, feeds, op_after):
    kind, exc_type, op = key
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{n:03d}-{kind}-{op}-{exc_type.rsplit('.', 1)[-1] or 'none'}")
    d = out_dir / slug
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.onnx").write_bytes(model)
    np.savez(d / "feeds.npz", **feeds)
    (d / "original.onnx").write_bytes(case.model)
    np.savez(d / "original_feeds.npz", **case.feeds)
    info = {"kind": kind, "exception": exc_type, "op": op, "op_after_minimizing": op_after, "detail": detail,
            "seed_model": case.seed_name, "case": case.index, "mutations": case.mutations,
            "threads": case.threads, "where": e.get("where"), "traceback": e.get("traceback"),
            "onnxruntime": {k: o.get(k) for k in ("status", "type", "message")},
            "repro": f"python tests/fuzz/fuzzer.py --repro {d}"}
    (d / "info.json").write_text(json.dumps(info, indent=1, default=str))
    return d


# --------------------------------------------------------------------------------- the loop
def run_fuzz(cases=200, seed=0, findings_dir=None, timeout=10.0, start=0, time_limit=None, progress=None,
             minimize_budget=12):
    """Run cases start..start+cases-1 of run `seed`; returns a JSON-able summary."""
    findings_dir = Path(findings_dir or tempfile.mkdtemp(prefix="ember-fuzz-findings-"))
    findings_dir.mkdir(parents=True, exist_ok=True)
    runner = Runner(timeout, log_dir=findings_dir)
    counts, findings, per_key = Counter(), [], Counter()
    t0 = time.perf_counter()
    run_s = 0.0
    done = 0
    try:
        for i in range(start, start + cases):
            if time_limit is not None and time.perf_counter() - t0 > time_limit:
                break
            case = make_case(seed, i)
            tc = time.perf_counter()
            unmutated = not case.mutations
            e, o = runner.run(case.model, case.feeds, case.threads, disk_cache=unmutated)
            run_s += time.perf_counter() - tc
            kind, exc_type, detail = classify(e, o)
            if kind == "mismatch" and _reference_agrees(case.model, case.feeds, e["outputs"], detail):
                kind = "nonfinite_as_reference"
            elif kind == "mismatch" and _nan_propagated(case.model, case.feeds, e["outputs"], o["outputs"], detail):
                kind = "nan_propagated"
            counts[kind] += 1
            done += 1
            if kind in FINDING_KINDS:
                key = finding_key(kind, exc_type, case.op, e)
                per_key[key] += 1
                if per_key[key] == 1:
                    model, feeds, op_after = minimize(runner, case.model, case.feeds, case.threads, key,
                                                      budget=2 if kind == "hang" else minimize_budget)
                    d = save_finding(findings_dir, len(findings), key, case, detail, e, o, model, feeds, op_after)
                    findings.append({"kind": kind, "exception": exc_type, "op": key[2], "detail": detail,
                                     "where": e.get("where"), "case": i, "seed_model": case.seed_name,
                                     "mutations": case.mutations, "reproducer": str(d)})
            if progress is not None:
                progress(i, kind, counts)
    finally:
        runner.close()
    wall = time.perf_counter() - t0
    for f in findings:
        f["count"] = per_key[(f["kind"], f["exception"], f["op"])]
    return {"seed": seed, "cases": done, "wall_s": wall, "cases_per_s": done / wall if wall else 0.0,
            "worker_restarts": runner.restarts, "counts": dict(counts), "findings": findings,
            "findings_dir": str(findings_dir)}


def summary_table(summary) -> str:
    lines = [f"{summary['cases']} cases in {summary['wall_s']:.1f} s ({summary['cases_per_s']:.2f} cases/s), "
             f"{summary['worker_restarts']} worker restarts", "", f"{'class':<22}{'cases':>8}"]
    for kind in ("ok", "nonfinite_as_reference", "nan_propagated", "peer_out_of_memory", "worker_out_of_memory", "ember_error", "both_reject", "ember_only", *FINDING_KINDS):
        lines.append(f"{kind:<22}{summary['counts'].get(kind, 0):>8}")
    lines += ["", f"{len(summary['findings'])} distinct findings (under {summary['findings_dir']}):"]
    for f in summary["findings"]:
        lines.append(f"  {f['kind']:<20} {f['op']:<18} {f['exception'] or '-':<28} x{f['count']:<5} "
                     f"{f['detail'][:110]!r}")
    return "\n".join(lines)


def repro(d):
    """Re-run a saved finding in this process (Ember's traceback is printed) and against onnxruntime."""
    d = Path(d)
    model = (d / "model.onnx").read_bytes()
    with np.load(d / "feeds.npz") as z:
        feeds = {k: z[k] for k in z.files}
    info = json.loads((d / "info.json").read_text())
    print(f"{info['kind']}: {info['detail']}\nmutations: {info['mutations']}")
    print({k: (v.dtype, v.shape) for k, v in feeds.items()})
    o = run_ort(model, feeds)
    print("onnxruntime:", o["status"], o.get("message", "")[:300])
    e = run_ember(model, feeds, info.get("threads", 1))
    if e["status"] == "error":
        print(e["traceback"])
    else:
        print("ember: ok;", "outputs agree" if o["status"] == "ok" and compare(e["outputs"], o["outputs"]) is None
              else compare(e["outputs"], o["outputs"]) if o["status"] == "ok" else "")
    kind, _, detail = classify(e, o)
    if kind == "mismatch" and _reference_agrees(model, feeds, e["outputs"], detail):
        kind = "nonfinite_as_reference"
    elif kind == "mismatch" and _nan_propagated(model, feeds, e["outputs"], o["outputs"], detail):
        kind = "nan_propagated"
    print("class now:", kind)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))       # this checkout's Ember, not an installed one
    if sys.argv[1:2] == ["--worker"]:
        _worker(int(sys.argv[2]), int(sys.argv[3]))
    elif sys.argv[1:2] == ["--repro"]:
        repro(sys.argv[2])
    else:
        sys.exit(__doc__)
