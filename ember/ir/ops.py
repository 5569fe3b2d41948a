"""The op table: one entry per op, with everything about the op beside it.

Each `OpDef` has
  * `infer(types, attrs) -> [TensorType]`  the type/shape rule (symbolic dims allowed);
  * `ref(arrays, attrs) -> [ndarray]`      numpy semantics, used by constant folding (also on
                                            object arrays of symbolic dims, for shape math);
  * one lowering:
      - `emit(o, *vals, **attrs)`        kind "pointwise": scalar semantics written against the
                                          scalar-op protocol `o` (codegen supplies `o`);
      - `index_emit(o, node, ins, idx)`  kind "index": computes the value at output index `idx`
                                          from accessor functions `ins[k](index) -> value`
                                          (data movement, reductions, windows);
      - `decompose(b, inputs, attrs)`    kind "composite": rewritten into primitives by the
                                          `decompose` pass;
      - kind "matmul"                    the one op lowered by a dedicated micro-kernel.
A pointwise op is one `_unary`/`_binary` line here plus a record in the op tests.
"""
from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, field
from typing import Callable

import ml_dtypes
import numpy as np

from . import symbolic as S
from .dtypes import FLOATS, INTS, SIGNED, to_numpy
from .graph import TensorType, const_value
from ..errors import ShapeError

OPS: dict = {}


@dataclass
class OpDef:
    name: str
    kind: str
    infer: Callable
    ref: Callable | None = None
    emit: Callable | None = None
    index_emit: Callable | None = None
    decompose: Callable | None = None
    cost: int = 1              # rough per-element cost, for fusion scoring
    reduction: bool = False    # index ops that loop (reductions, windows)
    rereads: bool = False      # reads its input's elements several times (overlapping windows,
                               # upsampling): fusion stores a computed input rather than recompute it
    attrs: dict = field(default_factory=dict)
    # a kernel-language implementation used instead of `decompose` where it applies
    # (registered by ember.kernels / ember.custom_op; see `LibraryImpl`)
    library: "LibraryImpl | None" = None
    # a kernel-language function of ember.kernels.math that computes the op on float32
    # vectors (branch-free polynomials), used in place of `emit`'s libm call there
    vector_f32: str = ""
    fingerprint: str = ""      # for ops registered at run time: a digest of their source
    # (node, add) -> None: the shape assumptions the op's lowering makes, as ir.guards
    # `add(kind, args, what)` calls, checked once per input-shape signature
    guards: Callable | None = None


@dataclass
class LibraryImpl:
    """A node computed by one kernel-language kernel over whole tensors.
    `applies(node)` says when (a pure function of the node: passes and fusion ask it);
    `lower(node, target)` returns (kernel, compile-time params) for the `ember.ir.target.Target`
    code is generated for — or names such a function of
    `ember.kernels` ("lower_softmax"), imported only when a model lowers the node, since the
    kernels are written in the kernel language, a layer above this one. The kernel's tensor
    parameters are the node's inputs followed by its outputs.
    `epilogue`: the kernel writes each output element once, with vector stores along the last
    axis, and never reads its output back, so a pointwise consumer may fuse into its stores."""
    applies: Callable
    lower: Callable | str
    epilogue: bool = False

    def kernel_for(self, node, target=None):
        """(kernel, compile-time params) for `node` on `target`: `lower(node, target)`."""
        fn = self.lower
        if isinstance(fn, str):
            import importlib
            fn = getattr(importlib.import_module("ember.kernels"), fn)
        from .target import DEFAULT
        return fn(node, target if target is not None else DEFAULT)


def library_impl(node):
    """The library implementation that computes `node`, or None."""
    lib = OPS[node.op].library
    return lib if lib is not None and lib.applies(node) else None


def custom_fingerprint() -> str:
    """Digest of the ops registered at run time: part of compiled-model cache keys."""
    import hashlib
    h = hashlib.sha256()
    for name in sorted(OPS):
        if OPS[name].fingerprint:
            h.update(f"{name}:{OPS[name].fingerprint};".encode())
    return h.hexdigest()[:16]


def register(op: OpDef) -> OpDef:
    OPS[op.name] = op
    return op


def get(name: str) -> OpDef:
    return OPS[name]


# --------------------------------------------------------------------------- shape helpers
def broadcast_shapes(*shapes, who="") -> tuple:
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(rank):
        dims = [s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0]
        d = 1
        for x in dims:
            if x == 1:
                continue
            if d == 1:
                d = x
            elif d != x:
                if isinstance(d, int) and isinstance(x, int):
                    raise ShapeError(f"{who}: shapes {' and '.join(str(tuple(s)) for s in shapes)}"
                                     f" cannot be broadcast (dimension {i}: {d} vs {x})")
                # symbolic vs something else: they must be equal at run time; keep the static one
                if isinstance(d, S.Sym) and isinstance(x, int):
                    d = x
        out.append(d)
    return tuple(out)


def norm_axis(axis: int, rank: int) -> int:
    """Axis in [0, rank); callers name the node (the ONNX loader prefixes it)."""
    if not -rank <= axis < max(rank, 1):
        raise ShapeError(f"axis {axis} is out of range for rank {rank}; expected {-rank} to {max(rank, 1) - 1}")
    return axis % rank if rank else 0


def norm_axes(axes, rank: int) -> tuple:
    """Axes in [0, rank), sorted; an axis named twice (as -1 and rank-1, say) is an error, as
    in onnx.reference, not silently reduced or inserted once."""
    out = [norm_axis(a, rank) for a in axes]
    if len(set(out)) != len(out):
        dup = next(a for a in out if out.count(a) > 1)
        raise ShapeError(f"axes {[int(a) for a in axes]} name axis {dup} twice; each axis may appear once")
    return tuple(sorted(out))


def _same(types, attrs):
    return [types[0]]


def _bcast(out_dtype=None):
    def infer(types, attrs):
        shape = broadcast_shapes(*[t.shape for t in types], who=attrs.get("_who", ""))
        return [TensorType(out_dtype or types[0].dtype, shape)]
    return infer


# ------------------------------------------------------------------------ pointwise family
def _unary(name, ref, emit, cost=1, out_dtype=None, vector_f32=""):
    def infer(types, attrs):
        return [TensorType(out_dtype or types[0].dtype, types[0].shape)]
    if vector_f32:
        scalar = emit

        def emit(o, x):
            return o.kernel_math(vector_f32, x) if x.dtype == "float32" else scalar(o, x)
    register(OpDef(name, "pointwise", infer, lambda a, at: [np.asarray(ref(a[0], at))], emit, cost=cost,
                   vector_f32=vector_f32))


def _binary(name, ref, emit, cost=1, out_dtype=None):
    register(OpDef(name, "pointwise", _bcast(out_dtype),
                   lambda a, at: [np.asarray(ref(a[0], a[1]))], emit, cost=cost))


def _keep(x, like):
    """x in like's dtype, unless either holds symbolic sizes (object arrays), as when a
    constant comes first in `1 + s`."""
    x = np.asarray(x)
    return x.astype(like.dtype, copy=False) if like.dtype != object and x.dtype != object else x


def _erf(x):
    v = np.vectorize(math.erf, otypes=[np.float64])(x.astype(np.float64))
    return v.astype(x.dtype)


_unary("neg", lambda x, at: -x, lambda o, x: o.neg(x))
_unary("abs", lambda x, at: np.abs(x), lambda o, x: o.abs(x))
_unary("exp", lambda x, at: np.exp(x), lambda o, x: o.exp(x), cost=8, vector_f32="exp_f32")
_unary("log", lambda x, at: np.log(x), lambda o, x: o.log(x), cost=8)
_unary("sqrt", lambda x, at: np.sqrt(x), lambda o, x: o.sqrt(x), cost=4)
_unary("tanh", lambda x, at: np.tanh(x), lambda o, x: o.tanh(x), cost=10, vector_f32="tanh_f32")
_unary("erf", lambda x, at: _erf(x), lambda o, x: o.erf(x), cost=10, vector_f32="erf_f32")
_unary("sigmoid", lambda x, at: _keep(1 / (1 + np.exp(-x)), x),
       lambda o, x: o.div(o.const(1, x), o.add(o.const(1, x), o.exp(o.neg(x)))), cost=10)
_unary("reciprocal", lambda x, at: _keep(1 / x, x), lambda o, x: o.div(o.const(1, x), x), cost=2)
_unary("relu", lambda x, at: np.maximum(x, 0).astype(x.dtype), lambda o, x: o.max(x, o.const(0, x)))
_unary("floor", lambda x, at: np.floor(x), lambda o, x: o.floor(x))
_unary("ceil", lambda x, at: np.ceil(x), lambda o, x: o.ceil(x))
_unary("not", lambda x, at: np.invert(x), lambda o, x: o.not_(x))     # bitwise on integers
_unary("round", lambda x, at: np.round(x), lambda o, x: o.math("roundeven", x))  # half to even
_unary("hard_swish", lambda x, at: _keep(x * np.clip(x / 6 + 0.5, 0, 1), x),
       lambda o, x: o.mul(x, o.min(o.max(o.add(o.mul(x, o.const(1 / 6, x)), o.const(0.5, x)), o.const(0, x)),
                                   o.const(1, x))), cost=3)
# log(1 + e^x) as max(x, 0) + log(1 + e^-|x|): no overflow for large x
_unary("softplus", lambda x, at: _keep(np.logaddexp(0, x.astype(np.float32)), x),
       lambda o, x: o.add(o.max(x, o.const(0, x)), o.log(o.add(o.const(1, x), o.exp(o.neg(o.abs(x)))))),
       cost=16)
for _name, _fn in (("sin", np.sin), ("cos", np.cos), ("tan", np.tan), ("asin", np.arcsin), ("acos", np.arccos),
                   ("atan", np.arctan), ("sinh", np.sinh), ("cosh", np.cosh), ("asinh", np.arcsinh),
                   ("acosh", np.arccosh), ("atanh", np.arctanh)):
    _unary(_name, lambda x, at, _fn=_fn: _fn(x), lambda o, x, _name=_name: o.math(_name, x), cost=20)


def _int_div(a, b):
    if a.dtype == object or b.dtype == object:
        def one(x, y):
            if isinstance(x, int) and isinstance(y, int):
                q = abs(x) // abs(y)
                return q if (x >= 0) == (y >= 0) else -q
            return S.floordiv(x, y)   # symbolic sizes are non-negative
        return np.frompyfunc(one, 2, 1)(a, b)
    if a.dtype.kind in "iu":
        with np.errstate(divide="ignore"):
            return (np.trunc(a.astype(np.float64) / b)).astype(a.dtype) if a.dtype.itemsize < 8 \
                else np.where((a < 0) != (b < 0), -(np.abs(a) // np.abs(b)), np.abs(a) // np.abs(b)).astype(a.dtype)
    return a / b


def _sym_eq(a, b):
    def one(x, y):
        if isinstance(x, S.Sym) or isinstance(y, S.Sym):
            d = x - y
            if isinstance(d, int):
                return d == 0
            lb = d.lower_bound() if isinstance(d, S.Sym) else None
            nlb = (-d).lower_bound() if isinstance(-d, S.Sym) else None
            if (lb is not None and lb > 0) or (nlb is not None and nlb > 0):
                return False
            raise TypeError("undecidable")
        return bool(x == y)
    if a.dtype == object or b.dtype == object:
        return np.frompyfunc(one, 2, 1)(a, b).astype(bool)
    return np.equal(a, b)


_binary("add", lambda a, b: _keep(a + b, a), lambda o, a, b: o.add(a, b))
_binary("sub", lambda a, b: _keep(a - b, a), lambda o, a, b: o.sub(a, b))
_binary("mul", lambda a, b: _keep(a * b, a), lambda o, a, b: o.mul(a, b))
_binary("div", lambda a, b: _keep(_int_div(a, b), a), lambda o, a, b: o.div(a, b), cost=2)
_binary("pow", lambda a, b: _keep(np.power(a.astype(np.float64), b).astype(a.dtype) if a.dtype.kind in "iu"
                                  else np.power(a, b.astype(a.dtype)), a),
        lambda o, a, b: o.pow(a, b), cost=20)
_binary("max", lambda a, b: np.maximum(a, b), lambda o, a, b: o.max(a, b))
_binary("min", lambda a, b: np.minimum(a, b), lambda o, a, b: o.min(a, b))
_binary("mod", lambda a, b: np.fmod(a, b), lambda o, a, b: o.mod(a, b), cost=2)
_binary("eq", _sym_eq, lambda o, a, b: o.eq(a, b), out_dtype="bool")
_binary("lt", lambda a, b: np.less(a, b), lambda o, a, b: o.lt(a, b), out_dtype="bool")
_binary("gt", lambda a, b: np.greater(a, b), lambda o, a, b: o.lt(b, a), out_dtype="bool")
_binary("le", lambda a, b: np.less_equal(a, b), lambda o, a, b: o.le(a, b), out_dtype="bool")
_binary("ge", lambda a, b: np.greater_equal(a, b), lambda o, a, b: o.le(b, a), out_dtype="bool")
# logical on bool, bitwise on integers (ONNX's And/Or/Xor and BitwiseAnd/Or/Xor)
_binary("and", lambda a, b: np.bitwise_and(a, b), lambda o, a, b: o.and_(a, b))
_binary("or", lambda a, b: np.bitwise_or(a, b), lambda o, a, b: o.or_(a, b))
_binary("xor", lambda a, b: np.bitwise_xor(a, b), lambda o, a, b: o.xor(a, b))


def _shift_ref(left):
    def ref(a, b):
        bits = a.dtype.itemsize * 8
        # C leaves these undefined; ONNX defines them: a shift by a negative amount or by the
        # width or more gives 0, or (an arithmetic right shift) the sign's fill
        out = (b >= bits) | (b < 0)
        if not left and a.dtype.kind == "i":
            return np.right_shift(a, np.where(out, bits - 1, b).astype(a.dtype))
        safe = np.where(out, 0, b).astype(a.dtype)
        r = np.left_shift(a, safe) if left else np.right_shift(a, safe)
        return np.where(out, 0, r).astype(a.dtype)
    return ref


def _shift_emit(op):
    def emit(o, a, b):
        bits = to_numpy(a.dtype).itemsize * 8
        ok = o.lt(b, o.const(bits, b))
        if b.dtype in SIGNED:
            ok = o.and_(ok, o.le(o.const(0, b), b))
        if op == "shr" and a.dtype in SIGNED:
            return o._bin(op, a, o.where(ok, b, o.const(bits - 1, b)))
        return o.where(ok, o._bin(op, a, b), o.const(0, a))
    return emit


_binary("shl", _shift_ref(True), _shift_emit("shl"))
_binary("shr", _shift_ref(False), _shift_emit("shr"))


def _where_infer(types, attrs):
    shape = broadcast_shapes(*[t.shape for t in types], who=attrs.get("_who", ""))
    return [TensorType(types[1].dtype, shape)]


register(OpDef("where", "pointwise", _where_infer,
               lambda a, at: [np.where(a[0], a[1], a[2]) if a[1].dtype == object or a[2].dtype == object
                              else np.where(a[0], a[1], a[2]).astype(a[1].dtype)],
               lambda o, c, a, b: o.where(c, a, b)))


def _cast_ref(a, at):
    to = at["to"]
    if a[0].dtype == object:
        if to in INTS:
            return [a[0]]
        raise TypeError("symbolic value cast to non-integer")
    x = a[0]
    if to == "bool":
        return [x != 0]
    if x.dtype.kind == "f" and to in INTS:
        with np.errstate(invalid="ignore"):
            return [np.trunc(x).astype(to_numpy(to))]
    if to.startswith("float8") and at.get("saturate", 1):   # out of range -> the largest finite
        info = ml_dtypes.finfo(to_numpy(to))
        x = np.clip(x.astype(np.float32), np.float32(info.min), np.float32(info.max))
    with np.errstate(invalid="ignore", over="ignore"):
        return [x.astype(to_numpy(to))]


register(OpDef("cast", "pointwise", lambda t, at: [TensorType(at["to"], t[0].shape)], _cast_ref,
               lambda o, x, to, saturate=1: o.cast(x, to, saturate)))


def _bitcast_ref(a, at):
    return [np.ascontiguousarray(a[0]).view(to_numpy(at["to"])).reshape(a[0].shape)]


# the bits of a value read as another type of the same size
register(OpDef("bitcast", "pointwise", lambda t, at: [TensorType(at["to"], t[0].shape)], _bitcast_ref,
               lambda o, x, to: o.bitcast(x, to)))


# ------------------------------------------------------------------------------ reductions
def _reduce_shape(shape, axes, keepdims):
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _reduce_infer(types, attrs):
    return [TensorType(types[0].dtype, _reduce_shape(types[0].shape, attrs["axes"], attrs["keepdims"]))]


def _reduce_emit(kind):
    def emit(o, node, ins, idx):
        axes, keep = node.attrs["axes"], node.attrs["keepdims"]
        shape = node.inputs[0].shape
        out_pos, full_rule = 0, []
        for i in range(len(shape)):
            if i in axes:
                full_rule.append(("r", len([a for a in axes if a < i])))
                if keep:
                    out_pos += 1
            else:
                full_rule.append(("o", out_pos))
                out_pos += 1

        def body(r):
            return ins[0]([idx[p] if k == "o" else r[p] for k, p in full_rule])
        adjacent = sorted(axes) == list(range(min(axes), max(axes) + 1)) if axes else False
        return o.reduce(kind, [shape[a] for a in sorted(axes)], body, node.inputs[0].dtype, merge=adjacent)
    return emit


def _reduce_ref(fn):
    def ref(a, at):
        x = a[0]
        if x.size == 0 and fn in (np.max, np.min):
            ident = -np.inf if fn is np.max else np.inf
            if x.dtype.kind in "iu":
                info = np.iinfo(x.dtype)
                ident = info.min if fn is np.max else info.max
            shape = _reduce_shape(x.shape, at["axes"], at["keepdims"])
            return [np.full(shape, ident, dtype=x.dtype)]
        return [np.asarray(fn(x, axis=tuple(at["axes"]), keepdims=bool(at["keepdims"]))).astype(x.dtype)]
    return ref


for _k, _fn in (("sum", np.sum), ("prod", np.prod), ("max", np.max), ("min", np.min)):
    register(OpDef(f"reduce_{_k}", "index", _reduce_infer, _reduce_ref(_fn),
                   index_emit=_reduce_emit(_k), reduction=True, cost=2))


# ---------------------------------------------------------------------------------- matmul
def _matmul_infer(types, attrs):
    a, b = types[0].shape, types[1].shape
    who = attrs.get("_who", "matmul")
    if len(a) == 0 or len(b) == 0:
        raise ShapeError(f"{who}: MatMul inputs must have rank >= 1, got {a} and {b}")
    a2 = a if len(a) > 1 else (1,) + tuple(a)
    b2 = b if len(b) > 1 else tuple(b) + (1,)
    if isinstance(a2[-1], int) and isinstance(b2[-2], int) and a2[-1] != b2[-2]:
        raise ShapeError(f"{who}: MatMul inner dimensions differ: {a} @ {b}")
    batch = broadcast_shapes(a2[:-2], b2[:-2], who=who)
    out = tuple(batch) + (a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return [TensorType(types[0].dtype, out)]


register(OpDef("matmul", "matmul", _matmul_infer, lambda a, at: [np.matmul(a[0], a[1])], cost=100))


# Integer matmul, exact: a [..., M, K] int16 @ B -> int32 [..., M, n], B a constant packed by
# blocks of 16 columns and pairs of k (b[k, j] at bp[j // 16, k // 2, j % 16, k % 2], zero
# beyond K and n). The quantized matmuls form it with their zero points subtracted (each
# operand then lies in [-255, 255]); computed by ember/kernels/igemm.py. attrs: n.
def _matmul_int_infer(types, at):
    a, bp = types[0], types[1]
    if a.rank < 1 or bp.rank != 4:
        raise ShapeError(f"matmul_int: a of rank >= 1 and packed B of rank 4, got {a.shape} and {bp.shape}")
    return [TensorType("int32", tuple(a.shape[:-1]) + (at["n"],))]


def pack_int_pairs(b) -> np.ndarray:
    """[K, n] -> `matmul_int`'s packed B, int16 [ceil(n/16), ceil(K/2), 16, 2], zero-padded."""
    k, n = b.shape
    k2, nb = -(-k // 2), -(-n // 16)
    pad = np.zeros((k2 * 2, nb * 16), np.int16)
    pad[:k, :n] = b
    return np.ascontiguousarray(pad.reshape(k2, 2, nb, 16).transpose(2, 0, 3, 1))


def unpack_int_pairs(bp, k: int, n: int):
    """The [K, n] matrix that `matmul_int`'s packed operand holds."""
    nb, k2 = bp.shape[:2]
    return bp.transpose(1, 3, 0, 2).reshape(k2 * 2, nb * 16)[:k, :n]


def _matmul_int_ref(a, at):
    b = unpack_int_pairs(a[1], a[0].shape[-1], at["n"]).astype(np.int64)
    return [(a[0].astype(np.int64) @ b).astype(np.int32)]


def _matmul_int_guards(node, add):
    a, bp = node.inputs
    k = a.shape[-1]
    add("eq", (bp.shape[1], S.floordiv(k + 1, 2)), "the packed B's pairs of k against A's last dim")
    add("eq", (bp.shape[2], 16), "the packed B's block width")
    add("eq", (bp.shape[3], 2), "the packed B's pairs")
    add("le", (node.attrs["n"], bp.shape[0] * 16), "the output columns against the packed B's blocks")


register(OpDef("matmul_int", "composite", _matmul_int_infer, ref=_matmul_int_ref, guards=_matmul_int_guards,
               cost=100, library=LibraryImpl(lambda node: node.inputs[0].dtype == "int16", "lower_matmul_int",
                                             epilogue=True)))


# The integer convolutions' GEMM, exact: w @ x per image, the constant weights on the left,
# in two library kernels (ember/kernels/igemm.py), formed by the ConvInteger / QLinearConv
# converters. `pack_columns_int`: the columns x int16 [images, K, P] by blocks of 16 pixels
# and pairs of k, x[i, k, p] at [i * ceil(P/16) + p // 16, k // 2, 2 * (p % 16) + k % 2],
# zero beyond K and P. `weights_matmul_int`: wp int32 [M, ceil(K/2)] (w [M, K] of int16
# values by pairs of k, low half the even k) @ the packed columns -> int32 [images, M, p];
# attrs images, p.
def pack_int_rows(w) -> np.ndarray:
    """[M, K] -> `weights_matmul_int`'s packed weights: int32 [M, ceil(K/2)]."""
    m, k = w.shape
    pad = np.zeros((m, -(-k // 2) * 2), np.int16)
    pad[:, :k] = w
    return np.ascontiguousarray(pad).view(np.int32)


def _pack_columns_infer(types, at):
    x = types[0]
    if x.rank != 3:
        raise ShapeError(f"pack_columns_int: columns of rank 3, got {x.shape}")
    return [TensorType("int16", (x.shape[0] * S.floordiv(x.shape[2] + 15, 16), S.floordiv(x.shape[1] + 1, 2), 32))]


def _pack_columns_ref(a, at):
    x = a[0]
    n, k, p = x.shape
    k2, pb = -(-k // 2), -(-p // 16)
    pad = np.zeros((n, k2 * 2, pb * 16), np.int16)
    pad[:, :k, :p] = x
    return [pad.reshape(n, k2, 2, pb, 16).transpose(0, 3, 1, 4, 2).reshape(n * pb, k2, 32)]


register(OpDef("pack_columns_int", "composite", _pack_columns_infer, ref=_pack_columns_ref,
               library=LibraryImpl(lambda node: node.inputs[0].dtype == "int16", "lower_pack_columns_int")))


def _weights_matmul_int_infer(types, at):
    wp, x = types[0], types[1]
    if wp.rank != 2 or x.rank != 3:
        raise ShapeError(f"weights_matmul_int: packed weights of rank 2 and columns of rank 3, got "
                         f"{wp.shape} and {x.shape}")
    return [TensorType("int32", (at["images"], wp.shape[0], at["p"]))]


def _weights_matmul_int_ref(a, at):
    w = np.ascontiguousarray(a[0]).view(np.int16).astype(np.int64)          # [M, 2 * K2]
    n, p, k2 = at["images"], at["p"], a[1].shape[1]
    pb = -(-p // 16)
    x = a[1].reshape(n, pb, k2, 16, 2).transpose(0, 2, 4, 1, 3).reshape(n, 2 * k2, pb * 16)[:, :, :p]
    return [np.einsum("mk,ikp->imp", w, x.astype(np.int64)).astype(np.int32)]


def _weights_matmul_int_guards(node, add):
    wp, x = node.inputs
    at = node.attrs
    add("eq", (x.shape[0], at["images"] * S.floordiv(at["p"] + 15, 16)), "the packed columns' pixel blocks")
    add("eq", (x.shape[1], wp.shape[1]), "the packed columns' pairs of k against the packed weights'")
    add("eq", (x.shape[2], 32), "the packed columns' block of 16 pixel pairs")


register(OpDef("weights_matmul_int", "composite", _weights_matmul_int_infer, ref=_weights_matmul_int_ref,
               guards=_weights_matmul_int_guards, cost=100,
               library=LibraryImpl(lambda node: node.inputs[1].dtype == "int16", "lower_weights_matmul_int",
                                   epilogue=True)))


# ----------------------------------------------------------------------- data movement ops
def _transpose_infer(types, attrs):
    perm = attrs["perm"]
    return [TensorType(types[0].dtype, tuple(types[0].shape[p] for p in perm))]


def _transpose_emit(o, node, ins, idx):
    perm = node.attrs["perm"]
    src = [None] * len(perm)
    for i, p in enumerate(perm):
        src[p] = idx[i]
    return ins[0](src)


register(OpDef("transpose", "index", _transpose_infer,
               lambda a, at: [np.transpose(a[0], at["perm"])], index_emit=_transpose_emit))


def _reshape_emit(o, node, ins, idx):
    return ins[0](o.reshape_index(idx, node.outputs[0].shape, node.inputs[0].shape))


register(OpDef("reshape", "index", lambda t, at: [TensorType(t[0].dtype, tuple(at["shape"]))],
               lambda a, at: [a[0].reshape([int(d) for d in at["shape"]])], index_emit=_reshape_emit))


def _expand_emit(o, node, ins, idx):
    return ins[0](o.broadcast_index(idx, node.inputs[0].shape, node.outputs[0].shape))


register(OpDef("expand", "index",
               lambda t, at: [TensorType(t[0].dtype, broadcast_shapes(t[0].shape, tuple(at["shape"]),
                                                                      who=at.get("_who", "expand")))],
               lambda a, at: [np.broadcast_to(a[0], broadcast_shapes(a[0].shape, tuple(int(d) for d in at["shape"]))).copy()],
               index_emit=_expand_emit))


def _slice_infer(types, attrs):
    return [TensorType(types[0].dtype, tuple(attrs["sizes"]))]


def _slice_ref(a, at):
    sl = []
    for st, step, n in zip(at["starts"], at["steps"], at["sizes"]):
        st, n = int(st), int(n)
        stop = st + step * n
        if n == 0:
            sl.append(slice(0, 0))
        else:
            sl.append(slice(st, stop if stop >= 0 else None, step))
    return [a[0][tuple(sl)]]


def _slice_emit(o, node, ins, idx):
    src = [o.add(o.size(st), o.mul(i, o.size(step))) for i, st, step in
           zip(idx, node.attrs["starts"], node.attrs["steps"])]
    return ins[0](src)


register(OpDef("slice", "index", _slice_infer, _slice_ref, index_emit=_slice_emit))


def _concat_infer(types, attrs):
    axis = attrs["axis"]
    base = list(types[0].shape)
    total = 0
    for t in types:
        if t.rank != len(base):
            raise ShapeError(f"{attrs.get('_who', 'concat')}: inputs have different ranks")
        total = total + t.shape[axis]
    base[axis] = total
    return [TensorType(types[0].dtype, tuple(base))]


def _concat_ref(a, at):
    if any(x.dtype == object for x in a):
        return [np.concatenate([x.astype(object) for x in a], axis=at["axis"])]
    return [np.concatenate(a, axis=at["axis"])]


def _concat_emit(o, node, ins, idx):
    axis = node.attrs["axis"]
    offsets, off = [], 0
    for v in node.inputs:
        offsets.append(off)
        off = off + v.shape[axis]
    # value = select chain over the pieces; each piece reads a clamped (always valid) index
    result = None
    for k in reversed(range(len(node.inputs))):
        n_k = node.inputs[k].shape[axis]
        if n_k == 0:
            continue
        local = o.sub(idx[axis], o.size(offsets[k]))
        local = o.min(o.max(local, o.iconst(0)), o.size(n_k - 1))
        val = ins[k](idx[:axis] + [local] + idx[axis + 1:])
        if result is None:
            result = val
        else:
            result = o.where(o.lt(idx[axis], o.size(offsets[k] + n_k)), val, result)
    return result


register(OpDef("concat", "index", _concat_infer, _concat_ref, index_emit=_concat_emit))


def _gather_infer(types, attrs):
    d, i = types[0].shape, types[1].shape
    ax = attrs["axis"]
    return [TensorType(types[0].dtype, tuple(d[:ax]) + tuple(i) + tuple(d[ax + 1:]))]


def _gather_ref(a, at):
    idx = a[1]
    if idx.dtype != object:
        idx = np.where(idx < 0, idx + a[0].shape[at["axis"]], idx)
    return [np.take(a[0], idx, axis=at["axis"])]


# ops whose output elements are input 0's, moved: they keep its value range
_MOVES_VALUES = frozenset({"expand", "reshape", "transpose", "slice"})


def value_range(v, memo=None):
    """(lo, hi) bounding every element of integer value `v` where the graph proves it
    (constants, gathers from them, selects between such values, the ops that move values),
    else None. An index op whose indices are proven inside its data skips the negative-index
    wrap, the bounds check and the clamp: a tree walk's node ids all come from its tables."""
    memo = {} if memo is None else memo
    if v.id in memo:
        return memo[v.id]
    r = None
    if v.dtype.startswith(("int", "uint")):
        p = v.producer
        if v.is_const:
            if not v.is_symbolic_const and v.const.size:
                r = (int(v.const.min()), int(v.const.max()))
        elif p is None:
            r = None
        elif p.op in ("gather", "gather_elements") or p.op in _MOVES_VALUES:
            r = value_range(p.inputs[0], memo)
        elif p.op in ("where", "concat"):
            parts = [value_range(x, memo) for x in (p.inputs[1:] if p.op == "where" else p.inputs)]
            if parts and all(x is not None for x in parts):
                r = (min(x[0] for x in parts), max(x[1] for x in parts))
        elif p.op == "cast" and p.inputs[0].dtype.startswith(("int", "uint")) and v.dtype == "int64":
            r = value_range(p.inputs[0], memo)
    memo[v.id] = r
    return r


def _inside(indices, n) -> bool:
    r = value_range(indices)
    return r is not None and isinstance(n, int) and 0 <= r[0] and r[1] < n


def _gather_emit(o, node, ins, idx):
    ax = node.attrs["axis"]
    qr = node.inputs[1].type.rank
    n = node.inputs[0].shape[ax]
    j = o.cast(ins[1](idx[ax:ax + qr]), "int64")
    if _inside(node.inputs[1], n):
        return ins[0](idx[:ax] + [j] + idx[ax + qr:])
    j = o.where(o.lt(j, o.iconst(0)), o.add(j, o.size(n)), j)      # negative indices count from the end
    # ONNX makes an index outside [-n, n) an error: report it after the run, and clamp so the
    # kernel never reads out of bounds meanwhile
    o.check(o.or_(o.lt(j, o.iconst(0)), o.le(o.size(n), j)),
            f"node '{', '.join(node.origin) or node.name}' (Gather): an index along axis {ax} is outside "
            f"[-{n}, {n}), the size of the data there")
    j = o.min(o.max(j, o.iconst(0)), o.size(n - 1))
    return ins[0](idx[:ax] + [j] + idx[ax + qr:])


register(OpDef("gather", "index", _gather_infer, _gather_ref, index_emit=_gather_emit))


# Pad: out[i] = x[i - pre] inside x; outside it the constant (input 1), the reflection about
# the edge without repeating it, the edge value, or the wrapped-around value, by `mode`.
# Negative pads crop. attrs: pre, post (per dim, ints or symbolic), mode.
def _pad_infer(types, attrs):
    x = types[0]
    shape = tuple(d + a + b for d, a, b in zip(x.shape, attrs["pre"], attrs["post"]))
    return [TensorType(x.dtype, shape)]


def _pad_ref(a, at):
    x = a[0]
    mode = at["mode"]
    crop = tuple(slice(max(-int(p), 0), int(d) - max(-int(q), 0)) for p, q, d in zip(at["pre"], at["post"], x.shape))
    x = x[crop]
    widths = [(max(int(p), 0), max(int(q), 0)) for p, q in zip(at["pre"], at["post"])]
    if mode == "constant":
        return [np.pad(x, widths, mode="constant", constant_values=a[1].reshape(-1)[0] if a[1].size else 0)]
    return [np.pad(x, widths, mode={"reflect": "reflect", "edge": "edge", "wrap": "wrap"}[mode])]


def _nonneg_mod(o, a, m):
    return o.mod(o.add(o.mod(a, m), m), m)


def _pad_emit(o, node, ins, idx):
    x = node.inputs[0]
    mode = node.attrs["mode"]
    src, inside = [], None
    for i, (j, d, p, q) in enumerate(zip(idx, x.shape, node.attrs["pre"], node.attrs["post"])):
        if isinstance(p, int) and isinstance(q, int) and p == 0 and q == 0:
            src.append(j)            # an unpadded dim: the index is in range as it is
            continue
        s = o.sub(j, o.size(p))
        if mode == "constant":
            ok = o.and_(o.le(o.iconst(0), s), o.lt(s, o.size(d)))
            inside = ok if inside is None else o.and_(inside, ok)
            s = o.min(o.max(s, o.iconst(0)), o.max(o.sub(o.size(d), o.iconst(1)), o.iconst(0)))
        elif mode == "edge":
            s = o.min(o.max(s, o.iconst(0)), o.sub(o.size(d), o.iconst(1)))
        elif mode == "wrap":
            s = _nonneg_mod(o, s, o.size(d))
        else:   # reflect: period 2(d-1); a dim of 1 reflects onto itself
            period = o.max(o.mul(o.iconst(2), o.sub(o.size(d), o.iconst(1))), o.iconst(1))
            m = _nonneg_mod(o, s, period)
            s = o.min(o.where(o.lt(m, o.size(d)), m, o.sub(period, m)), o.sub(o.size(d), o.iconst(1)))
        src.append(s)
    v = ins[0](src)
    if mode != "constant" or inside is None:
        return v
    return o.where(inside, v, ins[1]([]))


def _pad_guards(node, add):
    x, mode = node.inputs[0], node.attrs["mode"]
    for i, (d, p, q) in enumerate(zip(x.shape, node.attrs["pre"], node.attrs["post"])):
        if mode != "constant" and (not isinstance(p, int) or p > 0 or not isinstance(q, int) or q > 0):
            add("le", (1, d), f"input dimension {i}, which {mode} padding needs to be non-empty")
        add("le", (0, d + p + q), f"the padded size of dimension {i} (the pads crop more than it holds)")


register(OpDef("pad", "index", _pad_infer, _pad_ref, index_emit=_pad_emit, guards=_pad_guards))


# Resize: each output index maps to a source coordinate per axis (`coord`), read by the
# nearest rule or interpolated from 2 (linear) or 4 (cubic) taps per resized axis.
# attrs: out (output shape), scales (per axis, float), mode, coord, nearest, cubic_a,
# exclude_outside, extrapolation, roi (per axis (start, end), tf_crop_and_resize only).
def _resize_source(o, x, at, i, j, ct):
    """The source coordinate (compute type `ct`) of output index `j` along axis `i`."""
    d_in, d_out, s = x.shape[i], at["out"][i], at["scales"][i]
    f = o.cast(j, ct)
    one, half = o.const(1.0, ct), o.const(0.5, ct)
    mode = at["coord"]
    if mode == "asymmetric":
        return o.div(f, o.const(s, ct))
    if mode == "align_corners":     # by the unrounded output length where scales are given
        span = at["lens"][i] - 1 if at.get("lens") else d_out - 1
        if not isinstance(span, (int, float)):      # a symbolic length, by an integer scale
            return o.div(o.mul(f, o.cast(o.size(d_in - 1), ct)), o.cast(o.size(span), ct))
        if span == 0:
            return o.const(0.0, ct)
        return o.div(o.mul(f, o.cast(o.size(d_in - 1), ct)), o.const(float(span), ct))
    if mode == "tf_crop_and_resize":
        st, en = at["roi"][i]
        span = o.cast(o.size(d_in - 1), ct)
        if d_out == 1:
            return o.mul(o.const(0.5 * (st + en), ct), span)
        step = o.div(o.mul(o.const(en - st, ct), span), o.cast(o.size(d_out - 1), ct))
        return o.add(o.mul(o.const(st, ct), span), o.mul(f, step))
    base = o.sub(o.div(o.add(f, half), o.const(s, ct)), half)
    if mode == "pytorch_half_pixel":
        return base if d_out != 1 else o.const(0.0, ct)
    if mode == "half_pixel_symmetric":
        adj = o.div(o.cast(o.size(d_out), ct), o.mul(o.const(s, ct), o.cast(o.size(d_in), ct)))
        center = o.div(o.cast(o.size(d_in), ct), o.const(2.0, ct))
        return o.add(o.mul(center, o.sub(one, adj)), base)
    return base      # half_pixel


def _resize_taps(o, x, at, i, c, ct):
    """[(source index, weight or None)] along axis `i` for source coordinate `c`."""
    d = x.shape[i]
    last = o.sub(o.size(d), o.iconst(1))

    def clamp(k):
        return o.min(o.max(k, o.iconst(0)), last)
    mode = at["mode"]
    if mode == "nearest":
        rule = at["nearest"]
        r = {"round_prefer_floor": lambda: o.ceil(o.sub(c, o.const(0.5, ct))),
             "round_prefer_ceil": lambda: o.floor(o.add(c, o.const(0.5, ct))),
             "floor": lambda: o.floor(c), "ceil": lambda: o.ceil(c)}[rule]()
        return [(clamp(o.cast(r, "int64")), None)]
    fl = o.floor(c)
    t = o.sub(c, fl)
    k0 = o.cast(fl, "int64")
    if mode == "linear":
        one = o.const(1.0, ct)
        taps = [(k0, o.sub(one, t)), (o.add(k0, o.iconst(1)), t)]
    else:   # cubic, Keys' kernel with coefficient a
        a = at["cubic_a"]
        u = [o.add(t, o.const(1.0, ct)), t, o.sub(o.const(1.0, ct), t), o.sub(o.const(2.0, ct), t)]

        def far(z):     # |z| in [1, 2): ((a z - 5a) z + 8a) z - 4a
            return o.sub(o.mul(o.add(o.mul(o.sub(o.mul(o.const(a, ct), z), o.const(5 * a, ct)), z),
                                     o.const(8 * a, ct)), z), o.const(4 * a, ct))

        def near(z):    # |z| < 1: ((a + 2) z - (a + 3)) z z + 1
            return o.add(o.mul(o.mul(o.sub(o.mul(o.const(a + 2, ct), z), o.const(a + 3, ct)), z), z),
                         o.const(1.0, ct))
        ws = [far(u[0]), near(u[1]), near(u[2]), far(u[3])]
        taps = [(o.add(k0, o.iconst(k - 1)), w) for k, w in enumerate(ws)]
    if at["exclude_outside"]:     # weights of taps outside the input dropped, the rest renormalised
        zero = o.const(0.0, ct)
        ws = [o.where(o.and_(o.le(o.iconst(0), k), o.le(k, last)), w, zero) for k, w in taps]
        total = ws[0]
        for w in ws[1:]:
            total = o.add(total, w)
        taps = [(k, o.div(w, total)) for (k, _), w in zip(taps, ws)]
    return [(clamp(k), w) for k, w in taps]


def _resize_emit(o, node, ins, idx):
    x, at = node.inputs[0], node.attrs
    ct = "float64" if x.dtype == "float64" else "float32"
    per_axis, outside = [], None
    for i, j in enumerate(idx):
        if at["out"][i] == x.shape[i] and at["scales"][i] == 1.0 and at["coord"] != "tf_crop_and_resize":
            per_axis.append([(j, None)])         # this axis is not resized
            continue
        c = _resize_source(o, x, at, i, j, ct)
        if at["coord"] == "tf_crop_and_resize":
            bad = o.or_(o.lt(c, o.const(0.0, ct)), o.lt(o.cast(o.size(x.shape[i] - 1), ct), c))
            outside = bad if outside is None else o.or_(outside, bad)
        per_axis.append(_resize_taps(o, x, at, i, c, ct))
    total = None
    for combo in itertools.product(*per_axis):
        v = ins[0]([k for k, _ in combo])
        if x.dtype != ct and at["mode"] != "nearest":
            v = o.cast(v, ct)
        for _, w in combo:
            if w is not None:
                v = o.mul(v, w)
        total = v if total is None else o.add(total, v)
    if outside is not None:
        total = o.where(outside, o.const(at["extrapolation"], total.dtype), total)
    return total


def _resize_guards(node, add):
    for i, d in enumerate(node.inputs[0].shape):
        add("le", (1, d), f"input dimension {i}, which Resize reads from (it must not be empty)")


register(OpDef("resize", "index", lambda t, at: [TensorType(t[0].dtype, tuple(at["out"]))], None,
               index_emit=_resize_emit, guards=_resize_guards, cost=8, rereads=True))


# GridSample: out[n, c, p...] = x[n, c] interpolated at the point grid[n, p..., :] (x, y, z
# normalised to [-1, 1], innermost spatial axis first), with zeros/border/reflection padding.
# attrs: mode (nearest, linear, cubic), padding, align
def _reflect(o, c, lo, hi, ct):
    """c reflected by the borders [lo, hi] until inside (as the spec's reference does it)."""
    span = o.sub(hi, lo)
    below, above = o.lt(c, lo), o.lt(hi, c)
    dx = o.where(below, o.sub(lo, c), o.sub(c, hi))
    safe = o.where(o.lt(o.const(0.0, ct), span), span, o.const(1.0, ct))
    times = o.floor(o.div(dx, safe))
    r = o.sub(dx, o.mul(times, safe))
    even = o.eq(o.sub(times, o.mul(o.const(2.0, ct), o.floor(o.div(times, o.const(2.0, ct))))), o.const(0.0, ct))
    from_lo, from_hi = o.add(lo, r), o.sub(hi, r)
    out = o.where(below, o.where(even, from_lo, from_hi), o.where(above, o.where(even, from_hi, from_lo), c))
    return o.where(o.lt(o.const(0.0, ct), span), out, lo)


def _keys_cubic(o, t, ct, a=-0.75):
    """Keys' cubic weights of the 4 taps around a point at fraction t past the second."""
    def far(z):
        return o.sub(o.mul(o.add(o.mul(o.sub(o.mul(o.const(a, ct), z), o.const(5 * a, ct)), z),
                                 o.const(8 * a, ct)), z), o.const(4 * a, ct))

    def near(z):
        return o.add(o.mul(o.mul(o.sub(o.mul(o.const(a + 2, ct), z), o.const(a + 3, ct)), z), z), o.const(1.0, ct))
    one = o.const(1.0, ct)
    return [far(o.add(t, one)), near(t), near(o.sub(one, t)), far(o.sub(o.const(2.0, ct), t))]


def _grid_sample_emit(o, node, ins, idx):
    x, at = node.inputs[0], node.attrs
    ct = "float64" if x.dtype == "float64" else "float32"
    nsp = x.type.rank - 2
    mode, pad, align = at["mode"], at["padding"], at["align"]
    per_axis = []
    for i in range(nsp):
        d = o.cast(o.size(x.shape[2 + i]), ct)
        g = o.cast(ins[1]([idx[0]] + list(idx[2:]) + [o.iconst(nsp - 1 - i)]), ct)
        one, half = o.const(1.0, ct), o.const(0.5, ct)
        if align:
            c = o.mul(o.mul(o.add(g, one), half), o.sub(d, one))
            lo, hi = o.const(0.0, ct), o.sub(d, one)
        else:
            c = o.mul(o.sub(o.mul(o.add(g, one), d), one), half)
            lo, hi = o.const(-0.5, ct), o.sub(d, half)
        if mode == "nearest":
            c = o.math("roundeven", c)
        outside = o.or_(o.lt(c, lo), o.lt(hi, c))
        if pad == "border":
            c = o.where(outside, o.min(o.max(c, o.const(0.0, ct)), o.sub(d, one)), c)
        elif pad == "reflection":
            c = o.where(outside, _reflect(o, c, lo, hi, ct), c)
        if mode == "nearest":
            taps = [(o.cast(c, "int64"), None)]
        else:
            fl = o.floor(c)
            t = o.sub(c, fl)
            k0 = o.cast(fl, "int64")
            ws = [o.sub(one, t), t] if mode == "linear" else _keys_cubic(o, t, ct)
            first = 0 if mode == "linear" else -1
            taps = [(o.add(k0, o.iconst(first + k)), w) for k, w in enumerate(ws)]
        n = x.shape[2 + i]
        last = o.sub(o.size(n), o.iconst(1))
        resolved = []
        for k, w in taps:
            valid = None
            if pad == "zeros":
                valid = o.and_(o.le(o.iconst(0), k), o.le(k, last))
            elif pad == "reflection":
                k = o.cast(_reflect(o, o.cast(k, ct), lo, hi, ct), "int64")
            resolved.append((o.min(o.max(k, o.iconst(0)), last), w, valid))
        per_axis.append(resolved)
    total = None
    for combo in itertools.product(*per_axis):
        v = ins[0](list(idx[:2]) + [k for k, _, _ in combo])
        if x.dtype != ct:
            v = o.cast(v, ct)
        for _, w, valid in combo:
            if w is not None:
                v = o.mul(v, w)
            if valid is not None:
                v = o.where(valid, v, o.const(0.0, ct))
        total = v if total is None else o.add(total, v)
    return total


def _grid_sample_infer(types, at):
    x, g = types
    nsp = x.rank - 2
    if nsp < 1 or g.rank != x.rank or not (isinstance(g.shape[-1], S.Sym) or g.shape[-1] == nsp):
        raise ShapeError(f"{at.get('_who', 'GridSample')}: input of shape {list(x.shape)} needs a grid of rank "
                         f"{x.rank} whose last dim is {nsp}, got {list(g.shape)}")
    return [TensorType(x.dtype, (x.shape[0], x.shape[1]) + tuple(g.shape[1:-1]))]


def _grid_sample_guards(node, add):
    x, g = node.inputs
    add("eq", (x.shape[0], g.shape[0]), "the grid's batch dim against the input's")
    add("eq", (g.shape[-1], x.type.rank - 2), "the grid's last dim against the input's spatial rank")
    for i, d in enumerate(x.shape[2:]):
        add("le", (1, d), f"input spatial dimension {i}, which GridSample reads from (it must not be empty)")


register(OpDef("grid_sample", "index", _grid_sample_infer, None, index_emit=_grid_sample_emit,
               guards=_grid_sample_guards, cost=16))


# Col2Im: the inverse of im2col, summing overlaps. x [N, C*prod(block), L] -> [N, C, image...];
# attrs: image, block, strides, pads (begin..., end...), dilations, blocks (column counts per axis)
def _col2im_emit(o, node, ins, idx):
    at = node.attrs
    kk = math.prod(at["block"])
    total = None
    for ks in itertools.product(*[range(k) for k in at["block"]]):
        k_lin = 0
        for k, size in zip(ks, at["block"]):
            k_lin = k_lin * size + k
        ok, l_lin = None, None
        for i, k in enumerate(ks):
            t = o.add(idx[2 + i], o.iconst(at["pads"][i] - k * at["dilations"][i]))
            st, n_l = at["strides"][i], at["blocks"][i]
            safe = o.max(t, o.iconst(0))
            pos = o.div(safe, o.iconst(st))
            good = o.and_(o.le(o.iconst(0), t), o.lt(pos, o.iconst(n_l)))
            if st != 1:
                good = o.and_(good, o.eq(o.mod(safe, o.iconst(st)), o.iconst(0)))
            pos = o.min(pos, o.iconst(n_l - 1))
            ok = good if ok is None else o.and_(ok, good)
            l_lin = pos if l_lin is None else o.add(o.mul(l_lin, o.iconst(n_l)), pos)
        ch = o.add(o.mul(idx[1], o.iconst(kk)), o.iconst(k_lin))
        v = o.where(ok, ins[0]([idx[0], ch, l_lin]), o.const(0, node.inputs[0]))
        total = v if total is None else o.add(total, v)
    return total


def _col2im_infer(types, at):
    x = types[0]
    kk = math.prod(at["block"])
    if x.rank != 3 or (isinstance(x.shape[1], int) and x.shape[1] % kk):
        raise ShapeError(f"{at.get('_who', 'Col2Im')}: input of shape {list(x.shape)} must be [N, C * {kk}, L]")
    return [TensorType(x.dtype, (x.shape[0], x.shape[1] // kk) + tuple(at["image"]))]


def _col2im_guards(node, add):
    add("eq", (node.inputs[0].shape[2], math.prod(node.attrs["blocks"])),
        "the column count against the blocks the image, block, strides and pads give")


register(OpDef("col2im", "index", _col2im_infer, None, index_emit=_col2im_emit, guards=_col2im_guards))


# RoiAlign: out[r, c, ph, pw] = the average (or max) of grid_h x grid_w bilinear samples of
# x[batch[r], c] over bin (ph, pw) of region rois[r] = (x1, y1, x2, y2) * spatial_scale.
# attrs: out (oh, ow), grid (samples per bin, h and w), scale, half_pixel, mode
def _roi_align_emit(o, node, ins, idx):
    x, at = node.inputs[0], node.attrs
    ct = "float64" if x.dtype == "float64" else "float32"
    r, ch, ph, pw = idx
    c = lambda v: o.const(float(v), ct)
    h_n, w_n = x.shape[2], x.shape[3]
    hf, wf = o.cast(o.size(h_n), ct), o.cast(o.size(w_n), ct)
    box = [o.cast(ins[1]([r, o.iconst(k)]), ct) for k in range(4)]
    off = c(0.5 if at["half_pixel"] else 0.0)
    x0, y0 = o.sub(o.mul(box[0], c(at["scale"])), off), o.sub(o.mul(box[1], c(at["scale"])), off)
    x1, y1 = o.sub(o.mul(box[2], c(at["scale"])), off), o.sub(o.mul(box[3], c(at["scale"])), off)
    rw, rh = o.sub(x1, x0), o.sub(y1, y0)
    if not at["half_pixel"]:
        rw, rh = o.max(rw, c(1.0)), o.max(rh, c(1.0))
    (oh, ow), (gh, gw) = at["out"], at["grid"]
    bh, bw = o.div(rh, c(oh)), o.div(rw, c(ow))
    n_img = x.shape[0]
    b = o.cast(ins[2]([r]), "int64")
    o.check(o.or_(o.lt(b, o.iconst(0)), o.le(o.size(n_img), b)),
            f"node '{', '.join(node.origin) or node.name}' (RoiAlign): a batch index is outside [0, {n_img})")
    b = o.min(o.max(b, o.iconst(0)), o.sub(o.size(n_img), o.iconst(1)))
    total = None
    for iy in range(gh):
        for ix in range(gw):
            y = o.add(o.add(y0, o.mul(o.cast(ph, ct), bh)), o.mul(c((iy + 0.5) / gh), bh))
            xx = o.add(o.add(x0, o.mul(o.cast(pw, ct), bw)), o.mul(c((ix + 0.5) / gw), bw))
            inside = o.and_(o.and_(o.le(c(-1.0), y), o.le(y, hf)), o.and_(o.le(c(-1.0), xx), o.le(xx, wf)))
            taps = []
            for v, d in ((y, h_n), (xx, w_n)):
                v = o.max(v, c(0.0))
                last = o.sub(o.size(d), o.iconst(1))
                lo = o.cast(o.floor(v), "int64")
                edge = o.le(last, lo)
                lo = o.min(lo, last)
                v = o.where(edge, o.cast(lo, ct), v)
                hi = o.where(edge, lo, o.add(lo, o.iconst(1)))
                frac = o.sub(v, o.cast(lo, ct))
                taps.append(((lo, o.sub(c(1.0), frac)), (hi, frac)))
            vals = []
            for (ky, wy) in taps[0]:
                for (kx, wx) in taps[1]:
                    v = ins[0]([b, ch, ky, kx])
                    if x.dtype != ct:
                        v = o.cast(v, ct)
                    vals.append(o.where(inside, o.mul(o.mul(wy, wx), v), c(0.0)))
            if at["mode"] == "max":
                s = vals[0]
                for v in vals[1:]:
                    s = o.max(s, v)
                total = s if total is None else o.max(total, s)
            else:
                for v in vals:
                    total = v if total is None else o.add(total, v)
    return total if at["mode"] == "max" else o.div(total, c(max(gh * gw, 1)))


def _roi_align_infer(types, at):
    x, rois, bi = types
    if x.rank != 4 or rois.rank != 2 or bi.rank != 1:
        raise ShapeError(f"{at.get('_who', 'RoiAlign')}: expected X [N, C, H, W], rois [R, 4] and batch_indices "
                         f"[R], got {list(x.shape)}, {list(rois.shape)}, {list(bi.shape)}")
    return [TensorType(x.dtype, (rois.shape[0], x.shape[1]) + tuple(at["out"]))]


def _roi_align_guards(node, add):
    x, rois, bi = node.inputs
    add("eq", (rois.shape[1], 4), "the rois' last dim against 4 (x1, y1, x2, y2)")
    add("eq", (rois.shape[0], bi.shape[0]), "the rois against the batch indices")
    for i in (2, 3):
        add("le", (1, x.shape[i]), f"input dimension {i}, which RoiAlign reads from (it must not be empty)")


register(OpDef("roi_align", "index", _roi_align_infer, None, index_emit=_roi_align_emit, guards=_roi_align_guards,
               cost=16))


# GatherElements: out[i] = data[i with i[axis] replaced by indices[i]]; indices may be
# smaller than data along the other axes
def _gather_elements_ref(a, at):
    x, idx = a
    ax = at["axis"]
    idx = np.where(idx < 0, idx + x.shape[ax], idx)
    grid = list(np.indices(idx.shape, sparse=True))
    grid[ax] = idx
    return [x[tuple(grid)]]


def _gather_elements_emit(o, node, ins, idx):
    ax = node.attrs["axis"]
    n = node.inputs[0].shape[ax]
    j = o.cast(ins[1](idx), "int64")
    if _inside(node.inputs[1], n):
        return ins[0](idx[:ax] + [j] + idx[ax + 1:])
    j = o.where(o.lt(j, o.iconst(0)), o.add(j, o.size(n)), j)
    o.check(o.or_(o.lt(j, o.iconst(0)), o.le(o.size(n), j)),
            f"node '{', '.join(node.origin) or node.name}' (GatherElements): an index along axis {ax} is "
            f"outside [-{n}, {n}), the size of the data there")
    j = o.min(o.max(j, o.iconst(0)), o.size(n - 1))
    return ins[0](idx[:ax] + [j] + idx[ax + 1:])


def _gather_elements_guards(node, add):
    ax = node.attrs["axis"]
    for i, (d, k) in enumerate(zip(node.inputs[0].shape, node.inputs[1].shape)):
        if i != ax:
            add("le", (k, d), f"indices dimension {i} against data dimension {i} (indices may not be larger)")


def _gather_elements_infer(types, attrs):
    if types[0].rank != types[1].rank:
        raise ShapeError(f"{attrs.get('_who', 'GatherElements')}: data has rank {types[0].rank} and indices rank "
                         f"{types[1].rank}; they must be equal")
    return [TensorType(types[0].dtype, types[1].shape)]


register(OpDef("gather_elements", "index", _gather_elements_infer, _gather_elements_ref,
               index_emit=_gather_elements_emit, guards=_gather_elements_guards))


def _range_emit(o, node, ins, idx):
    dt = node.outputs[0].dtype
    start, delta = node.attrs["start"], node.attrs["delta"]
    if dt in FLOATS:
        i = o.cast(idx[0], dt)
        return o.add(o.const(start, dt), o.mul(i, o.const(delta, dt)))
    return o.cast(o.add(o.size(start), o.mul(idx[0], o.size(delta))), dt)


register(OpDef("range", "index", lambda t, at: [TensorType(at["dtype"], (at["length"],))],
               lambda a, at: [(at["start"] + np.arange(int(at["length"])) * at["delta"]).astype(to_numpy(at["dtype"]))],
               index_emit=_range_emit))


def _im2col_infer(types, attrs):
    n, c = types[0].shape[:2]
    g = attrs["group"]
    out = (S.prod(attrs["out"]),) if attrs.get("flat") else tuple(attrs["out"])
    return [TensorType(types[0].dtype, (n, g, c // g) + tuple(attrs["kernel"]) + out)]


def _im2col_flat_emit(o, node, ins, idx):
    """The 2-d, stride-1, width-preserving case over flattened pixels p = oh*W + ow, with x
    viewed as [n, C, H*W]: col[.., kh, kw, p] = x[.., p + (kh-ph)*W + (kw-pw)] inside the
    image. The source is contiguous in p, so a vector of 16 pixels is one masked load even
    when rows are short (7 or 14 wide), where a row-wise loop would fill half a vector."""
    at = node.attrs
    (oh_n, ow_n), (ph, pw) = at["out"], at["pads"][:2]
    h_n, w_n = at["in"]
    cg = node.inputs[0].shape[1] // at["group"]
    n, g, c, kh, kw, p = idx
    oh, ow = o.div(p, o.iconst(ow_n)), o.mod(p, o.iconst(ow_n))
    h = o.add(oh, o.sub(kh, o.iconst(ph)))
    w = o.add(ow, o.sub(kw, o.iconst(pw)))
    inside = o.and_(o.and_(o.le(o.iconst(0), h), o.lt(h, o.iconst(h_n))),
                    o.and_(o.le(o.iconst(0), w), o.lt(w, o.iconst(w_n))))
    src = o.add(p, o.add(o.mul(o.sub(kh, o.iconst(ph)), o.iconst(w_n)), o.sub(kw, o.iconst(pw))))
    ch = o.add(o.mul(g, o.size(cg)), c)
    safe = o.min(o.max(src, o.iconst(0)), o.iconst(h_n * w_n - 1))
    return ins[0]([n, ch, src], guard=(inside, 0, [n, ch, safe]))


def _im2col_emit(o, node, ins, idx):
    """col[n, g, c, k..., p...] = x[n, g*C/g + c, p*stride - pad + k*dilation] (0 outside)."""
    if node.attrs.get("flat"):
        return _im2col_flat_emit(o, node, ins, idx)
    nd = len(node.attrs["kernel"])
    x_shape = node.inputs[0].shape
    cg = x_shape[1] // node.attrs["group"]
    n, g, c = idx[0], idx[1], idx[2]
    ks, ps = idx[3:3 + nd], idx[3 + nd:]
    ch = [n, o.add(o.mul(g, o.size(cg)), c)]
    src, safe, inside = _window(o, node.attrs, x_shape, ch, ps, ks)
    return ins[0](src, guard=(inside, 0, safe))


def _window(o, at, x_shape, lead, ps, ks):
    """Input index of window element `ks` for output position `ps` (strides, begin pads,
    dilations of `at`): (index, the index clamped into bounds, whether it is inside)."""
    src, safe, inside = list(lead), list(lead), None
    for d in range(len(ps)):
        pos = o.add(o.sub(o.mul(ps[d], o.iconst(at["strides"][d])), o.iconst(at["pads"][d])),
                    o.mul(ks[d], o.iconst(at["dilations"][d])))
        ok = o.and_(o.le(o.iconst(0), pos), o.lt(pos, o.size(x_shape[2 + d])))
        inside = ok if inside is None else o.and_(inside, ok)
        src.append(pos)
        safe.append(o.min(o.max(pos, o.iconst(0)), o.size(x_shape[2 + d] - 1)))
    return src, safe, inside


def window_3x3_s2(node):
    """A float32 2-d window op of 3x3, stride 2, begin pads 1, whose output (oh, ow) has its
    window centre at (2oh, 2ow), inside the image (what the stride-2 library kernels assume)."""
    at = node.attrs
    x = node.inputs[0]
    if not (x.dtype == "float32" and x.type.rank == 4 and tuple(at["kernel"]) == (3, 3)
            and tuple(at["strides"]) == (2, 2) and tuple(at["dilations"]) == (1, 1)
            and tuple(at["pads"][:2]) == (1, 1)):
        return False
    h, w = x.shape[2:]          # sizes known at run time too: the kernels read them then
    return tuple(at["out"]) == tuple(S.floordiv(d - 1, 2) + 1 for d in (h, w))


def window_3x3_s1(node):
    """A float32 2-d 3x3 window op of stride 1 and pads 1 whose output is the image's size,
    on rows (`_conv_decompose` chose flat pixels for rows of at most half a vector)."""
    at = node.attrs
    x = node.inputs[0]
    if not (x.dtype == "float32" and x.type.rank == 4 and tuple(at["kernel"]) == (3, 3)
            and tuple(at["strides"]) == (1, 1) and tuple(at["dilations"]) == (1, 1)
            and tuple(at["pads"]) == (1, 1, 1, 1) and not at.get("flat")):
        return False
    return tuple(at["out"]) == tuple(x.shape[2:])


# 3x3 stride-2 columns: a kernel that loads each input row once (ember/kernels/im2col.py)
register(OpDef("im2col", "index", _im2col_infer, None, index_emit=_im2col_emit, rereads=True,
               library=LibraryImpl(lambda node: not node.attrs.get("flat") and len(node.attrs["kernel"]) == 2
                                   and window_3x3_s2(node), "lower_im2col")))


def _dwconv_infer(types, attrs):
    return [TensorType(types[0].dtype, tuple(types[0].shape[:2]) + tuple(attrs["out"]))]


def _dwconv_flat_emit(o, node, ins, idx):
    """The 2-d stride-1 same-size case over flattened pixels p = oh*W + ow (x viewed as
    [n, C, H*W]): window element (kh, kw) is x[.., p + (kh-ph)*W + (kw-pw)] inside the image,
    contiguous in p, so a 7x7 image fills 49 of 64 lanes instead of 7 of 16 per row."""
    at = node.attrs
    (ph, pw) = at["pads"][:2]
    h_n, w_n = at["in"]
    n, c, p = idx
    oh, ow = o.div(p, o.iconst(w_n)), o.mod(p, o.iconst(w_n))
    acc = None
    for kh, kw in itertools.product(*[range(k) for k in at["kernel"]]):
        h, w = o.add(oh, o.iconst(kh - ph)), o.add(ow, o.iconst(kw - pw))
        inside = o.and_(o.and_(o.le(o.iconst(0), h), o.lt(h, o.iconst(h_n))),
                        o.and_(o.le(o.iconst(0), w), o.lt(w, o.iconst(w_n))))
        src = o.add(p, o.iconst((kh - ph) * w_n + (kw - pw)))
        safe = o.min(o.max(src, o.iconst(0)), o.iconst(h_n * w_n - 1))
        x = ins[0]([n, c, src], guard=(inside, 0, [n, c, safe]))
        wv = ins[1]([c, o.iconst(0), o.iconst(kh), o.iconst(kw)])
        acc = o.mul(x, wv) if acc is None else o.fma(x, wv, acc)
    return acc


def _dwconv_emit(o, node, ins, idx):
    """Depthwise convolution (one filter per channel): y[n, c, p...] = sum over the window of
    x[n, c, p*stride - pad + k*dilation] * w[c, 0, k...]. Computed in place, element by
    element, so it vectorises along the output row and its BatchNorm/activation fuse after it."""
    at = node.attrs
    if at.get("flat"):
        return _dwconv_flat_emit(o, node, ins, idx)
    nd = len(at["kernel"])
    acc = None
    for ks in itertools.product(*[range(k) for k in at["kernel"]]):
        kv = [o.iconst(k) for k in ks]
        src, safe, inside = _window(o, at, node.inputs[0].shape, idx[:2], idx[2:2 + nd], kv)
        x = ins[0](src, guard=(inside, 0, safe))
        w = ins[1]([idx[1], o.iconst(0)] + kv)
        acc = o.mul(x, w) if acc is None else o.fma(x, w, acc)
    return acc


def _dwconv_ref(a, at):
    x, w = a[0], a[1]
    if at.get("flat"):
        y = _dwconv_ref([x.reshape(x.shape[:2] + tuple(at["in"])), w], {**at, "flat": 0, "out": at["in"]})[0]
        return [y.reshape(x.shape)]
    nd = len(at["kernel"])
    pads = [(0, 0), (0, 0)] + [(at["pads"][d], at["pads"][d + nd]) for d in range(nd)]
    xp = np.pad(x, pads)
    out = np.zeros(x.shape[:2] + tuple(at["out"]), dtype=np.float64)
    for ks in itertools.product(*[range(k) for k in at["kernel"]]):
        sl = tuple(slice(ks[d] * at["dilations"][d],
                         ks[d] * at["dilations"][d] + (at["out"][d] - 1) * at["strides"][d] + 1,
                         at["strides"][d]) for d in range(nd))
        out += xp[(slice(None), slice(None)) + sl] * w[(slice(None), 0) + ks].reshape((1, -1) + (1,) * nd)
    return [out.astype(x.dtype)]


# 3x3 depthwise, stride 1 or 2: kernels that load each input row once (ember/kernels/depthwise.py)
register(OpDef("dwconv", "index", _dwconv_infer, _dwconv_ref, index_emit=_dwconv_emit, cost=4, rereads=True,
               library=LibraryImpl(lambda node: node.inputs[1].dtype == "float32"
                                   and (window_3x3_s2(node) or window_3x3_s1(node)),
                                   "lower_depthwise", epilogue=True)))


def _pool_infer(types, attrs):
    return [TensorType(types[0].dtype, tuple(types[0].shape[:2]) + tuple(attrs["out"]))]


def _pool_emit(o, node, ins, idx):
    at = node.attrs
    nd = len(at["kernel"])
    x_shape = node.inputs[0].shape
    dt = node.inputs[0].dtype
    is_max = at["mode"] == "max"

    def body(r):
        src, safe, inside = _window(o, at, x_shape, idx[:2], idx[2:2 + nd], r)
        fill = (-math.inf if dt in FLOATS else np.iinfo(to_numpy(dt)).min) if is_max else 0
        return ins[0](src, guard=(inside, fill, safe))
    acc = o.reduce("max" if is_max else "sum", list(at["kernel"]), body, dt, unroll=True)
    if is_max:
        return acc
    if at["count_include_pad"]:
        # divisor counts padding but not the part of the window beyond the (ceil-mode) edge
        cnt = None
        for d in range(nd):
            start = o.sub(o.mul(idx[2 + d], o.iconst(at["strides"][d])), o.iconst(at["pads"][d]))
            end = o.min(o.add(start, o.iconst((at["kernel"][d] - 1) * at["dilations"][d] + 1)),
                        o.add(o.size(x_shape[2 + d]), o.iconst(at["pads"][d + nd])))
            span = o.sub(end, start)
            c = o.add(o.div(o.sub(span, o.iconst(1)), o.iconst(at["dilations"][d])), o.iconst(1))
            cnt = c if cnt is None else o.mul(cnt, c)
    else:
        cnt = None
        for d in range(nd):
            c = o.iconst(0)
            for k in range(at["kernel"][d]):
                pos = o.add(o.sub(o.mul(idx[2 + d], o.iconst(at["strides"][d])), o.iconst(at["pads"][d])),
                            o.iconst(k * at["dilations"][d]))
                ok = o.and_(o.le(o.iconst(0), pos), o.lt(pos, o.size(x_shape[2 + d])))
                c = o.add(c, o.cast(ok, "int64"))
            cnt = c if cnt is None else o.mul(cnt, c)
    return o.div(acc, o.cast(o.max(cnt, o.iconst(1)), dt))


# 3x3 stride-2 max pooling, separable (ember/kernels/pool.py); other pools lower generically
register(OpDef("pool", "index", _pool_infer, None, index_emit=_pool_emit, reduction=True, cost=4, rereads=True,
               library=LibraryImpl(lambda node: node.attrs["mode"] == "max" and window_3x3_s2(node),
                                   "lower_max_pool", epilogue=True)))


# ------------------------------------------------------------------------------ composites
def _gemm_decompose(b, ins, at):
    a, w = ins[0], ins[1]
    if at.get("transA"):
        a = b.op("transpose", [a], perm=(1, 0))
    if at.get("transB"):
        w = b.op("transpose", [w], perm=(1, 0))
    y = b.op("matmul", [a, w])
    if at.get("alpha", 1.0) != 1.0:
        y = b.op("mul", [y, b.scalar(at["alpha"], y.dtype)])
    if len(ins) > 2 and ins[2] is not None:
        c = ins[2]
        if at.get("beta", 1.0) != 1.0:
            c = b.op("mul", [c, b.scalar(at["beta"], c.dtype)])
        y = b.op("add", [y, c])
    return [y]


def _gemm_infer(types, at):
    a, w = types[0].shape, types[1].shape
    m = a[1] if at.get("transA") else a[0]
    n = w[0] if at.get("transB") else w[1]
    return [TensorType(types[0].dtype, (m, n))]


register(OpDef("gemm", "composite", _gemm_infer, decompose=_gemm_decompose))


def _softmax_decompose(b, ins, at):
    x = ins[0]
    ax = (at["axis"],)
    m = b.op("reduce_max", [x], axes=ax, keepdims=1)
    e = b.op("exp", [b.op("sub", [x, m])])
    s = b.op("reduce_sum", [e], axes=ax, keepdims=1)
    if at.get("log"):
        return [b.op("sub", [b.op("sub", [x, m]), b.op("log", [s])])]
    return [b.op("div", [e, s])]


def _last_axis(node):
    x = node.inputs[0]
    return x.dtype == "float32" and x.type.rank >= 1 and node.attrs.get("axis", -1) % x.type.rank == x.type.rank - 1


# over the last axis: a row kernel, exp once per element (ember/kernels/nn.py)
register(OpDef("softmax", "composite", _same, decompose=_softmax_decompose,
               library=LibraryImpl(lambda node: _last_axis(node) and not node.attrs.get("log"), "lower_softmax")))


def _attention_infer(types, at):
    q, kt, v = (t.shape for t in types[:3])
    return [TensorType(types[0].dtype, (q[0], q[1], q[2], v[3]))]


def _attention_decompose(b, ins, at):
    """q [B,S,H,D], kt [B,H,D,T], v [B,T,H,D], bias (broadcast to [B,H,S,T]) -> [B,S,H,D]."""
    q, kt, v, bias = ins
    bhsd = (0, 2, 1, 3)
    s = b.op("matmul", [b.op("transpose", [q], perm=bhsd), kt])
    s = b.op("add", [b.op("mul", [s, b.scalar(at["scale"], q.dtype)]), bias])
    p = b.op("softmax", [s], axis=3, log=0)
    if at.get("nan_zero"):
        p = b.op("where", [b.op("not", [b.op("eq", [p, p])]), b.scalar(0.0, p.dtype), p])
    return [b.op("transpose", [b.op("matmul", [p, b.op("transpose", [v], perm=bhsd)])], perm=bhsd)]


def _attention_ref(a, at):
    q, kt, v, bias = (x.astype(np.float64) for x in a)
    s = q.transpose(0, 2, 1, 3) @ kt * at["scale"] + bias
    with np.errstate(invalid="ignore"):
        e = np.exp(s - s.max(axis=-1, keepdims=True))
        p = e / e.sum(axis=-1, keepdims=True)
    if at.get("nan_zero"):      # softmax's NaN rows (a mask hiding every key) become 0
        p = np.where(np.isnan(p), 0.0, p)
    o = p @ v.transpose(0, 2, 1, 3)
    return [o.transpose(0, 2, 1, 3).astype(a[0].dtype)]


# scaled-dot-product attention, formed by passes.fuse_attention from the pattern BERT/GPT-2
# export; computed by the fused library kernel (ember/kernels/attention.py)
def _attention_applies(node):
    q, kt, v, bias = node.inputs
    d = v.shape[-1]
    return (all(x.dtype == "float32" and x.type.rank == 4 for x in node.inputs)
            and isinstance(d, int) and d % 16 == 0 and d <= 128 and q.shape[-1] == d
            and (bias.shape[-1] == kt.shape[-1] or not isinstance(bias.shape[-1], int)))


def _attention_guards(node, add):
    """The kernel reads a bias row per key (its last dim the keys') and clamps its other
    indices to broadcast size-1 dims."""
    q, kt, v, bias = node.inputs
    if bias.shape[3] != kt.shape[3]:
        add("eq", (bias.shape[3], kt.shape[3]), "the attention bias's last dim against the number of keys")
    for i, d in enumerate((q.shape[0], q.shape[2], q.shape[1])):
        x = bias.shape[i]
        if x != 1 and x != d:       # 1 or the scores' dim: the fused op neither broadcasts up nor reads past
            what = f"the attention bias's dim {i} against the scores' (batch, heads, queries)"
            add("bcast", (x, d), what)
            add("le", (x, d), what)
            add("le", (1, x), what)


register(OpDef("attention", "composite", _attention_infer, ref=_attention_ref, decompose=_attention_decompose,
               guards=_attention_guards,
               library=LibraryImpl(_attention_applies, "lower_attention", epilogue=True)))


# LSTM / GRU / RNN over time, the input projections already applied (frontends/onnx/recurrent.py);
# computed as native loops over time by ember/kernels/recurrent.py. Inputs by `cell`:
#   lstm: xp [T, B, 4H], rt [ceil(H/16), H, 4, 16], h0 [B, H], c0 [B, H], peep [3H] (i, o, f), lens [L]
#   gru:  xp [T, B, 3H], rt [ceil(H/16), H, 3, 16], h0, rbh [H] (the candidate's recurrent bias), lens
#   rnn:  xp [T, B, H], rt [ceil(H/16), H, 1, 16], h0, lens
# rt is R^T packed by blocks of 16 hidden units: R^T[k, g*H + j] at [j // 16, k, g, j % 16]
# lens: each row's length (L = B, or 1 for all rows); out [T + 2, B, H]: Y (0 past a row's
# length), the final h, and the LSTM's final c. attrs: cell, reverse, clip, linear_before_reset
_GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def _recurrence_infer(types, at):
    xp, rt = types[0].shape, types[1].shape
    return [TensorType(types[0].dtype, (xp[0] + 2, xp[1], rt[1]))]


def unpack_recurrent_weights(rt):
    """R^T [H, gates * H] from its packed form [ceil(H / 16), H, gates, 16]."""
    blocks, hid, gates, _ = rt.shape
    return rt.transpose(1, 2, 0, 3).reshape(hid, gates, blocks * 16)[:, :, :hid].reshape(hid, gates * hid)


def _sigmoid64(x):
    return 1.0 / (1.0 + np.exp(-x))


def _recurrence_ref(a, at):
    cell, reverse, clip = at["cell"], at.get("reverse", 0), at.get("clip", 0.0)
    xp, h0 = a[0].astype(np.float64), a[2].astype(np.float64)
    rt = unpack_recurrent_weights(a[1].astype(np.float64))
    lens = a[-1]
    steps, batch, hid = xp.shape[0], xp.shape[1], rt.shape[0]
    cl = (lambda v: np.clip(v, -clip, clip)) if clip > 0 else (lambda v: v)
    out = np.zeros((steps + 2, batch, hid))
    for b in range(batch):
        n = min(max(int(lens[min(b, len(lens) - 1)]), 0), steps)
        h = h0[b]
        c = a[3][b].astype(np.float64) if cell == "lstm" else None
        for s in range(n):
            t = n - 1 - s if reverse else s
            g = xp[t, b]
            if cell == "lstm":
                p = a[4].astype(np.float64)
                g = g + h @ rt
                gi, go, gf, gc = (g[k * hid:(k + 1) * hid] for k in range(4))
                c = _sigmoid64(cl(gf + p[2 * hid:] * c)) * c + _sigmoid64(cl(gi + p[:hid] * c)) * np.tanh(cl(gc))
                h = _sigmoid64(cl(go + p[hid:2 * hid] * c)) * np.tanh(c)
            elif cell == "gru":
                rbh = a[3].astype(np.float64)
                z = _sigmoid64(cl(g[:hid] + h @ rt[:, :hid]))
                r = _sigmoid64(cl(g[hid:2 * hid] + h @ rt[:, hid:2 * hid]))
                rec = r * (h @ rt[:, 2 * hid:] + rbh) if at.get("linear_before_reset") else \
                    (r * h) @ rt[:, 2 * hid:] + rbh
                h = (1 - z) * np.tanh(cl(g[2 * hid:] + rec)) + z * h
            else:
                h = np.tanh(cl(g + h @ rt))
            out[t, b] = h
        out[steps, b] = h
        if c is not None:
            out[steps + 1, b] = c
    return [out.astype(a[0].dtype)]


def _recurrence_guards(node, add):
    xp, rt, h0 = node.inputs[:3]
    hid, gates = rt.shape[1], _GATES[node.attrs["cell"]]
    add("eq", (xp.shape[2], gates * hid), "the projected inputs' last dim against gates x hidden size")
    add("eq", (rt.shape[0] * 16, S.floordiv(hid + 15, 16) * 16), "R's packed blocks against the hidden size")
    add("eq", (rt.shape[2], gates), "R's packed gates")
    add("eq", (rt.shape[3], 16), "R's packed block width")
    for v in node.inputs[2:4] if node.attrs["cell"] == "lstm" else node.inputs[2:3]:
        add("eq", (v.shape[0], xp.shape[1]), "the initial state's batch dim against the input's")
        add("eq", (v.shape[1], hid), "the initial state's last dim against the hidden size")
    add("le", (1, node.inputs[-1].shape[0]), "the number of sequence lengths (one per batch row, or one for all)")


register(OpDef("recurrence", "composite", _recurrence_infer, ref=_recurrence_ref, guards=_recurrence_guards,
               library=LibraryImpl(lambda node: True, "lower_recurrence")))


def _mean(b, x, axes):
    s = b.op("reduce_sum", [x], axes=axes, keepdims=1)
    n = S.prod(x.shape[a] for a in axes)
    if isinstance(n, int) and x.dtype in FLOATS:
        return b.op("mul", [s, b.scalar(1.0 / max(n, 1), x.dtype)])
    if isinstance(n, int):      # integer mean truncates, like numpy's mean cast back
        return b.op("div", [s, b.scalar(max(n, 1), x.dtype)])
    return b.op("div", [s, b.op("cast", [b.sym_scalar(n)], to=x.dtype)])


def _layer_norm_decompose(b, ins, at):
    x, scale = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 else None
    axes = tuple(range(at["axis"], x.type.rank))
    mean = _mean(b, x, axes)
    d = b.op("sub", [x, mean])
    var = _mean(b, b.op("mul", [d, d]), axes)
    inv = b.op("div", [b.scalar(1.0, x.dtype),
                       b.op("sqrt", [b.op("add", [var, b.scalar(at["epsilon"], x.dtype)])])])
    y = b.op("mul", [b.op("mul", [d, inv]), scale])
    if bias is not None:
        y = b.op("add", [y, bias])
    return [y]


def _layer_norm_applies(node):
    if not _last_axis(node) or len(node.inputs) < 3 or node.inputs[2] is None:
        return False
    n = node.inputs[0].shape[-1]
    return all(v.dtype == "float32" and tuple(v.shape) == (n,) for v in node.inputs[1:3])


# over the last axis with a scale and bias: a row kernel (ember/kernels/nn.py)
register(OpDef("layer_norm", "composite", _same, decompose=_layer_norm_decompose,
               library=LibraryImpl(_layer_norm_applies, "lower_layer_norm", epilogue=True)))


def _batch_norm_decompose(b, ins, at):
    x, scale, bias, mean, var = ins
    def chan(v):
        return b.op("reshape", [v], shape=(v.shape[0],) + (1,) * (x.type.rank - 2)) if x.type.rank > 2 else v
    inv = b.op("div", [scale, b.op("sqrt", [b.op("add", [var, b.scalar(at["epsilon"], var.dtype)])])])
    shift = b.op("sub", [bias, b.op("mul", [mean, inv])])
    return [b.op("add", [b.op("mul", [x, chan(inv)]), chan(shift)])]


register(OpDef("batch_norm", "composite", _same, decompose=_batch_norm_decompose))


def _gelu_decompose(b, ins, at):
    x = ins[0]
    half = b.op("mul", [x, b.scalar(0.5, x.dtype)])
    if at.get("approximate", "none") == "tanh":
        x3 = b.op("mul", [b.op("mul", [x, x]), x])
        inner = b.op("mul", [b.op("add", [x, b.op("mul", [x3, b.scalar(0.044715, x.dtype)])]),
                             b.scalar(math.sqrt(2 / math.pi), x.dtype)])
        t = b.op("tanh", [inner])
    else:
        t = b.op("erf", [b.op("mul", [x, b.scalar(1 / math.sqrt(2), x.dtype)])])
    return [b.op("mul", [half, b.op("add", [t, b.scalar(1.0, x.dtype)])])]


register(OpDef("gelu", "composite", _same, decompose=_gelu_decompose))


def _leaky_relu_decompose(b, ins, at):
    x = ins[0]
    neg = b.op("lt", [x, b.scalar(0, x.dtype)])
    return [b.op("where", [neg, b.op("mul", [x, b.scalar(at["alpha"], x.dtype)]), x])]


register(OpDef("leaky_relu", "composite", _same, decompose=_leaky_relu_decompose))


def _clip_decompose(b, ins, at):
    x = ins[0]
    if len(ins) > 1 and ins[1] is not None:
        x = b.op("max", [x, ins[1]])
    if len(ins) > 2 and ins[2] is not None:
        x = b.op("min", [x, ins[2]])
    return [x]


register(OpDef("clip", "composite", _same, decompose=_clip_decompose))


def _reduce_mean_decompose(b, ins, at):
    x = ins[0]
    if not at["axes"]:
        return [x]
    m = _mean(b, x, at["axes"])
    if not at["keepdims"]:
        m = b.op("reshape", [m], shape=_reduce_shape(x.shape, at["axes"], 0))
    return [m]


register(OpDef("reduce_mean", "composite", _reduce_infer, decompose=_reduce_mean_decompose))


# Winograd F(2x2, 3x3) (Lavin & Gray 2015): a 3x3 stride-1 convolution as 16 GEMMs over
# transformed 4x4 input tiles, 2.25x fewer multiplies. The transforms are library kernels
# (ember/kernels/winograd.py); these are their semantics and the weight transform.
WINO_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64)
WINO_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64)
WINO_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)


def _tiles(h, w):
    return (h + 1) // 2, (w + 1) // 2


def _winograd_input_infer(types, at):
    n, c, h, w = types[0].shape
    return [TensorType(types[0].dtype, (16, c, n, at["tiles"]))]


def _plane_tiles(tiles, chans):
    """The tile count to allocate per image (>= tiles): the 16 planes of V and M are
    chans*count floats apart, and when that is a multiple of 4 KiB all 16 rows a transform
    touches at once fall in one L1 set (64x56x56: 2x slower). A few unused columns (the GEMM
    computes them, nothing reads them) spread the planes over >= 4 sets."""
    for t in range(tiles, tiles + 16):
        if all(len({(i * ch * t * 4 >> 6) & 63 for i in range(16)}) >= 4 for ch in chans):
            return t
    return tiles


def _winograd_input_ref(a, at):
    """x [N, C, H, W] -> v [16, C, N, tiles]: Bt d B of every 4x4 tile d at stride 2 of the
    image padded by 1 (and by 1 more at the bottom/right when H or W is odd), in columns
    ti*TW + tj; columns from TH*TW to `tiles` are padding."""
    x = a[0].astype(np.float64)
    n, c, h, w = x.shape
    th, tw = _tiles(h, w)
    xp = np.zeros((n, c, 2 * th + 2, 2 * tw + 2))
    xp[:, :, 1:h + 1, 1:w + 1] = x
    rows = 2 * np.arange(th)[:, None] + np.arange(4)
    cols = 2 * np.arange(tw)[:, None] + np.arange(4)
    d = xp[:, :, rows[:, None, :, None], cols[None, :, None, :]]      # [n, c, th, tw, 4, 4]
    v = np.einsum("ia,nctuab,jb->ijcntu", WINO_BT, d, WINO_BT).reshape(16, c, n, th * tw)
    out = np.zeros((16, c, n, at["tiles"]), a[0].dtype)      # the kernel leaves the padding
    out[..., :th * tw] = v                                      # columns unwritten
    return [out]


def _winograd_output_infer(types, at):
    _, k, n, _ = types[0].shape
    return [TensorType(types[0].dtype, (n, k) + tuple(at["out"]))]


def _winograd_output_ref(a, at):
    """m [16, K, N, tiles] -> y [N, K, H, W]: At m A of every tile, the 2x2 outputs at stride
    2 (columns past TH*TW are padding). The kernel recomputes tiles whose outputs are not
    finite from the convolution's input and weights (a[1], a[2]); with finite ones it is this."""
    m = a[0].astype(np.float64)
    _, k, n, _ = m.shape
    h, w = at["out"]
    th, tw = _tiles(h, w)
    m = m[..., :th * tw].reshape(4, 4, k, n, th, tw)
    y = np.einsum("ri,ijknab,sj->nkarbs", WINO_AT, m, WINO_AT)
    return [np.ascontiguousarray(y.reshape(n, k, 2 * th, 2 * tw)[:, :, :h, :w]).astype(a[0].dtype)]


def _f32(node):
    return node.inputs[0].dtype == "float32"


register(OpDef("winograd_input", "composite", _winograd_input_infer, _winograd_input_ref,
               library=LibraryImpl(_f32, "lower_winograd_input")))
register(OpDef("winograd_output", "composite", _winograd_output_infer, _winograd_output_ref,
               library=LibraryImpl(_f32, "lower_winograd_output", epilogue=True)))

# EMBER_WINOGRAD=0 (or ember.ir.ops.WINOGRAD = False) compiles 3x3 convolutions as im2col
# GEMMs: results closer to the direct sum, 16/9 less weight memory for those layers
WINOGRAD = os.environ.get("EMBER_WINOGRAD", "1") != "0"


def options_fingerprint() -> str:
    """The compile options graph building depends on: part of compiled-model cache keys."""
    return f"winograd={int(WINOGRAD)}"


def _use_winograd(x, w, at) -> bool:
    """3x3, stride 1, pad 1, float32, constant weights, static image, >= 32 channels on
    both sides, and >= 49 tiles (a 14x14 image). With fewer tiles the 16 GEMMs have too few
    columns for the 16/9 larger transformed weights: ResNet-50's 7x7 layers ran 1.5x faster
    alone but 20% slower in the model, where their weights stream from DRAM."""
    if not (WINOGRAD and len(at["kernel"]) == 2 and tuple(at["kernel"]) == (3, 3)
            and tuple(at["strides"]) == (1, 1) and tuple(at["dilations"]) == (1, 1)
            and tuple(at["pads"]) == (1, 1, 1, 1) and at["group"] == 1 and x.dtype == "float32"
            and w.is_const and not w.is_symbolic_const and all(isinstance(d, int) for d in x.shape[1:])
            and tuple(at["out"]) == tuple(x.shape[2:]) and min(x.shape[1], w.shape[0]) >= 32):
        return False
    th, tw = _tiles(*x.shape[2:])
    return th * tw >= 49


def _strided_row_windows(x, w, at, target) -> bool:
    """A float32 2-d convolution with stride 2..4, whole vectors of output columns per row,
    static image and constant weights: its GEMM reads B from the (padded) image directly
    (schedule.fusion._implicit_im2col_user)."""
    return (len(at["kernel"]) == 2 and at["strides"][0] == at["strides"][1] and 2 <= at["strides"][0] <= 4
            and tuple(at["dilations"]) == (1, 1) and isinstance(at["out"][1], int)
            and target.whole_vectors(at["out"][1]) and x.dtype == "float32"
            and w.is_const and not w.is_symbolic_const and all(isinstance(d, int) for d in x.shape[1:]))


def _conv_winograd(b, x, w):
    n, c, h, wd = x.shape
    m = w.shape[0]
    th, tw = _tiles(h, wd)
    u = np.einsum("ia,kcab,jb->ijkc", WINO_G, np.asarray(w.const, np.float64), WINO_G)
    u = const_value(np.ascontiguousarray(u.reshape(16, m, c), dtype=np.float32))
    tiles = _plane_tiles(th * tw, (c, m))
    v = b.op("winograd_input", [x], tiles=tiles)                           # [16, c, n, tiles]
    v = b.op("reshape", [v], shape=(16, c, S.prod([n, tiles])))
    y = b.op("matmul", [u, v])                                             # [16, m, n*tiles]
    y = b.op("reshape", [y], shape=(16, m, n, tiles))
    return b.op("winograd_output", [y, x, w], out=(h, wd))     # x, w: where y is not finite


def _conv_infer(types, at):
    x, w = types[0].shape, types[1].shape
    return [TensorType(types[0].dtype, (x[0], w[0]) + tuple(at["out"]))]


def _conv_decompose(b, ins, at):
    x, w = ins[0], ins[1]
    target = b.target
    bias = ins[2] if len(ins) > 2 else None
    g, nd = at["group"], len(at["kernel"])
    n, c = x.shape[:2]
    m = w.shape[0]
    kk = S.prod([c // g] + list(at["kernel"]))
    npix = S.prod(at["out"])
    pointwise = (all(k == 1 for k in at["kernel"]) and all(s == 1 for s in at["strides"])
                 and not any(at["pads"]))
    if _use_winograd(x, w, at):
        y = _conv_winograd(b, x, w)
        if bias is not None:
            y = b.op("add", [y, b.op("reshape", [bias], shape=(m,) + (1,) * nd)])
        return [y]
    if g > 1 and g == c and m == g and not pointwise:
        # depthwise: no GEMM at all; a windowed multiply-add per output element
        if (nd == 2 and all(isinstance(d, int) for d in x.shape[2:]) and tuple(at["strides"]) == (1, 1)
                and tuple(at["dilations"]) == (1, 1) and tuple(at["out"]) == tuple(x.shape[2:])
                and target.row_is_narrow(x.shape[3])):
            # rows of at most half a vector (MobileNet's 7x7 layers): over flat pixels
            hw = x.shape[2] * x.shape[3]
            y = b.op("dwconv", [b.op("reshape", [x], shape=(n, c, hw)), w], kernel=at["kernel"],
                     strides=at["strides"], pads=at["pads"], dilations=at["dilations"], out=(hw,),
                     flat=1, **{"in": tuple(x.shape[2:])})
            y = b.op("reshape", [y], shape=(n, m) + tuple(at["out"]))
        else:
            y = b.op("dwconv", [x, w], kernel=at["kernel"], strides=at["strides"], pads=at["pads"],
                     dilations=at["dilations"], out=at["out"])
        if bias is not None:
            y = b.op("add", [y, b.op("reshape", [bias], shape=(m,) + (1,) * nd)])
        return [y]
    if pointwise:  # 1x1 convolution: the input already is the column matrix
        col = b.op("reshape", [x], shape=(n, g, kk, npix))
    elif (nd == 2 and all(isinstance(d, int) for d in tuple(x.shape[2:]) + tuple(at["out"]))
          and tuple(at["strides"]) == (1, 1) and tuple(at["dilations"]) == (1, 1)
          and at["out"][1] == x.shape[3] and target.row_is_short(x.shape[3])):
        # a same-width stride-1 convolution on rows shorter than a vector (ResNet's 14x14
        # and 7x7 3x3 layers): im2col over flat pixels, full vectors instead of half-empty rows
        xf = b.op("reshape", [x], shape=(n, c, x.shape[2] * x.shape[3]))
        col = b.op("im2col", [xf], group=g, kernel=at["kernel"], strides=at["strides"], pads=at["pads"],
                   dilations=at["dilations"], out=at["out"], flat=1, **{"in": tuple(x.shape[2:])})
        col = b.op("reshape", [col], shape=(n, g, kk, npix))
    elif _strided_row_windows(x, w, at, target):
        # a strided stem: pad once (a cheap copy of a 3-channel image), then the GEMM reads
        # its columns from the padded image with de-interleaving loads and no border masks
        xp = x
        if any(at["pads"]):
            hp = x.shape[2] + at["pads"][0] + at["pads"][2]
            wp = x.shape[3] + at["pads"][1] + at["pads"][3]
            xp = b.op("im2col", [x], group=1, kernel=(1, 1), strides=(1, 1), pads=at["pads"],
                      dilations=(1, 1), out=(hp, wp))
            xp = b.op("reshape", [xp], shape=(n, c, hp, wp))
        col = b.op("im2col", [xp], group=g, kernel=at["kernel"], strides=at["strides"], pads=(0, 0, 0, 0),
                   dilations=at["dilations"], out=at["out"])
        col = b.op("reshape", [col], shape=(n, g, kk, npix))
    else:
        col = b.op("im2col", [x], group=g, kernel=at["kernel"], strides=at["strides"],
                   pads=at["pads"], dilations=at["dilations"], out=at["out"])
        col = b.op("reshape", [col], shape=(n, g, kk, npix))
    wm = b.op("reshape", [w], shape=(g, m // g, kk))
    y = b.op("matmul", [wm, col])                      # [n, g, m/g, npix]
    y = b.op("reshape", [y], shape=(n, m) + tuple(at["out"]))
    if bias is not None:
        y = b.op("add", [y, b.op("reshape", [bias], shape=(m,) + (1,) * nd)])
    return [y]


register(OpDef("conv", "composite", _conv_infer, decompose=_conv_decompose))


# Ops every kind of node can be asked about
POINTWISE = frozenset(n for n, d in OPS.items() if d.kind == "pointwise")
