"""One converter per ONNX op type: normalises attributes across opsets and emits Ember ops."""
from __future__ import annotations

import math

import numpy as np

from ...errors import ShapeError
from ...ir import symbolic as S
from ...ir.dtypes import NARROW, from_onnx, itemsize, to_numpy
from ...ir.graph import const_value
from ...ir.ops import norm_axes, norm_axis, pack_int_pairs, pack_int_rows

CONVERTERS: dict = {}


class ConvertError(Exception):
    """The node uses a form Ember does not support (message says which)."""


def converter(*names):
    def deco(fn):
        for n in names:
            CONVERTERS[n] = fn
        return fn
    return deco


def attrs_of(node) -> dict:
    from onnx import helper
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        out[a.name] = v
    return out


class DataDependentShape(ConvertError):
    """The node's output shape depends on values computed from data: a session runs the model
    in stages split at it."""


class NeedsValues(ConvertError):
    """A value that must be known when compiling is computed from graph inputs alone: a
    session can compile a variant per value of those inputs (`inputs`, their names)."""

    def __init__(self, message, inputs):
        super().__init__(message)
        self.inputs = tuple(inputs)


class NeedsDims(ConvertError):
    """A value that must be known when compiling is computed from input dims alone (a
    condition on a shape, a Range to a computed size, a trip count): a session can compile a
    variant per value of those dims (`symbols`, their names)."""

    def __init__(self, message, symbols):
        super().__init__(message)
        self.symbols = tuple(sorted(symbols))


def symbols_of(v) -> set | None:
    """The input dims (symbol names) `v` is computed from, when it is computed from them and
    constants alone (shape arithmetic the builder could not fold); None otherwise."""
    found, stack, seen = set(), [v], set()
    while stack:
        x = stack.pop()
        if x is None or x.id in seen:
            continue
        seen.add(x.id)
        if x.is_const:
            if x.is_symbolic_const:
                for e in np.asarray(x.const).reshape(-1):
                    if isinstance(e, S.Sym):
                        found |= set(e.free_symbols())
            continue
        if x.producer is None:
            return None
        stack.extend(x.producer.inputs)
    return found or None


def static_or_fixed(d, what: str) -> int:
    """An int for a dim that must be known when compiling; a symbolic one asks for a variant
    per its value (NeedsDims)."""
    if isinstance(d, S.Sym):
        raise NeedsDims(f"{what} ({d}) must be known when compiling", d.free_symbols())
    return int(d)


# graph inputs read as shape arguments are specialised on only when this small (elements):
# shapes, axes, counts, scales; a larger tensor would mean a compile per run
VALUE_INPUT_LIMIT = 64


def _source_inputs(v) -> list | None:
    """The graph inputs `v` is computed from, when they are all it depends on (constants
    aside) and each is small; None otherwise."""
    found, stack, seen = [], [v], set()
    while stack:
        x = stack.pop()
        if x is None or x.is_const or x.id in seen:
            continue
        seen.add(x.id)
        if x.producer is None:
            if not all(isinstance(d, int) for d in x.shape) or math.prod(x.shape) > VALUE_INPUT_LIMIT:
                return None
            found.append(x.name)
        else:
            stack.extend(x.producer.inputs)
    return found or None


def known(v, what: str):
    """The compile-time value of an input that must be constant (possibly symbolic)."""
    if v is None:
        return None
    if not v.is_const:
        msg = (f"{what} is computed at run time; Ember needs it known when compiling "
               f"(data-dependent shapes are not supported)")
        src = _source_inputs(v)
        if src:
            raise NeedsValues(f"{what} is read from graph input(s) {src} at run time", src)
        syms = symbols_of(v)
        if syms:
            raise NeedsDims(f"{what} is computed from input dims {sorted(syms)}", syms)
        raise ConvertError(msg)
    return v.const


def ints_of(v, what, scalar_ok=False):
    """A 1-D constant input's values (`scalar_ok`: a 0-D one too, as onnxruntime reads
    Squeeze/Unsqueeze axes)."""
    c = known(v, what)
    if c is None:
        return None
    if np.ndim(c) != 1 and not (scalar_ok and np.ndim(c) == 0):
        raise ShapeError(f"{what} must be a 1-D tensor, got shape {list(np.shape(c))}")
    return [x if isinstance(x, S.Sym) else int(x) for x in np.asarray(c).reshape(-1).tolist()]


def take(b, x, axis, t):
    """x[..., t, ...] along `axis`, that axis removed."""
    starts = [0] * x.type.rank
    starts[axis] = t
    sizes = list(x.shape)
    sizes[axis] = 1
    part = b.op("slice", [x], starts=tuple(starts), steps=(1,) * x.type.rank, sizes=tuple(sizes))
    return b.op("reshape", [part], shape=tuple(d for i, d in enumerate(x.shape) if i != axis))


def stack(b, parts, axis):
    """The values `parts` stacked along a new `axis`."""
    ups = [b.op("reshape", [p], shape=tuple(p.shape[:axis]) + (1,) + tuple(p.shape[axis:])) for p in parts]
    return ups[0] if len(ups) == 1 else b.op("concat", ups, axis=axis)


# ------------------------------------------------------------------------------ elementwise
_BIN = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Pow": "pow", "Equal": "eq",
        "Less": "lt", "Greater": "gt", "LessOrEqual": "le", "GreaterOrEqual": "ge",
        "And": "and", "Or": "or", "Xor": "xor"}
_UN = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Erf": "erf", "Exp": "exp", "Log": "log",
       "Sqrt": "sqrt", "Neg": "neg", "Reciprocal": "reciprocal", "Abs": "abs", "Floor": "floor",
       "Ceil": "ceil", "Not": "not", "HardSwish": "hard_swish", "Softplus": "softplus",
       "Sin": "sin", "Cos": "cos", "Tan": "tan", "Asin": "asin", "Acos": "acos", "Atan": "atan",
       "Sinh": "sinh", "Cosh": "cosh", "Asinh": "asinh", "Acosh": "acosh", "Atanh": "atanh"}


@converter(*_BIN)
def _binary(b, n, ins, opset):
    a, c = ins
    if n.op_type == "Pow" and c.is_const and c.const.size == 1 and a.dtype != "bool":
        e = float(c.const.reshape(-1)[0])
        if e == 2.0:
            return b.op("mul", [a, a], _name=n.name)
        if e == 1.0:
            return a
        if e == 0.5:
            return b.op("sqrt", [a], _name=n.name)
        if e == 3.0:
            return b.op("mul", [b.op("mul", [a, a]), a], _name=n.name)
        if e == -1.0:
            return b.op("reciprocal", [a], _name=n.name)
        if c.dtype != a.dtype:
            c = b.scalar(e, a.dtype)
    return b.op(_BIN[n.op_type], [a, c], _name=n.name)


@converter(*_UN)
def _unary(b, n, ins, opset):
    return b.op(_UN[n.op_type], [ins[0]], _name=n.name)


@converter("Mod")
def _mod(b, n, ins, opset):
    """fmod=1: the C remainder (sign of A). fmod=0: the floor remainder (sign of B), from it:
    a nonzero remainder whose sign differs from B's moves by B; a zero one takes B's sign."""
    r = b.op("mod", ins, _name=n.name)
    if attrs_of(n).get("fmod", 0) or ins[0].dtype.startswith("uint"):
        return r
    dt = ins[0].dtype
    zero = b.scalar(0, dt)
    b_neg = b.op("lt", [ins[1], zero])
    moved = b.op("and", [b.op("not", [b.op("eq", [r, zero])]), b.op("xor", [b.op("lt", [r, zero]), b_neg])])
    out = b.op("where", [moved, b.op("add", [r, ins[1]]), r])
    if dt.startswith("float"):
        signed_zero = b.op("where", [b_neg, b.scalar(-0.0, dt), zero])
        out = b.op("where", [b.op("eq", [r, zero]), signed_zero, out])
    return out


@converter("Max", "Min")
def _maxmin(b, n, ins, opset):
    op = n.op_type.lower()
    acc = ins[0]
    for x in ins[1:]:
        acc = b.op(op, [acc, x], _name=n.name)
    return acc


@converter("Sum", "Mean")
def _summean(b, n, ins, opset):
    acc = ins[0]
    for x in ins[1:]:
        acc = b.op("add", [acc, x], _name=n.name)
    if n.op_type == "Mean" and len(ins) > 1:
        acc = b.op("mul", [acc, b.scalar(1.0 / len(ins), acc.dtype)], _name=n.name)
    return acc


@converter("Where")
def _where(b, n, ins, opset):
    return b.op("where", ins, _name=n.name)


@converter("Cast")
def _cast(b, n, ins, opset):
    at = attrs_of(n)
    return _cast_to(b, n, ins[0], from_onnx(at["to"]), at)


@converter("CastLike")
def _castlike(b, n, ins, opset):
    return _cast_to(b, n, ins[0], ins[1].dtype, attrs_of(n))


def _cast_to(b, n, x, to, at):
    if x.dtype == to:
        return x
    if at.get("round_mode", "up") != "up":
        raise ConvertError(f"Cast's round_mode '{at['round_mode']}' is not supported (only 'up', for float8e8m0)")
    sat = {"saturate": int(at.get("saturate", 1))} if to.startswith("float8") else {}
    return b.op("cast", [x], to=to, _name=n.name, **sat)


@converter("Clip")
def _clip(b, n, ins, opset):
    x = ins[0]
    if opset < 11:
        at = attrs_of(n)
        lo = b.scalar(at.get("min", -3.4028234663852886e38), x.dtype)
        hi = b.scalar(at.get("max", 3.4028234663852886e38), x.dtype)
        return b.op("clip", [x, lo, hi], _name=n.name)
    return b.op("clip", list(ins) + [None] * (3 - len(ins)), _name=n.name)


@converter("LeakyRelu")
def _leaky(b, n, ins, opset):
    return b.op("leaky_relu", ins, alpha=float(attrs_of(n).get("alpha", 0.01)), _name=n.name)


@converter("HardSigmoid")
def _hsig(b, n, ins, opset):
    at = attrs_of(n)
    x = ins[0]
    y = b.op("add", [b.op("mul", [x, b.scalar(at.get("alpha", 0.2), x.dtype)]),
                     b.scalar(at.get("beta", 0.5), x.dtype)])
    return b.op("clip", [y, b.scalar(0, x.dtype), b.scalar(1, x.dtype)], _name=n.name)


@converter("Gelu")
def _gelu(b, n, ins, opset):
    return b.op("gelu", ins, approximate=attrs_of(n).get("approximate", "none"), _name=n.name)


@converter("Identity", "Dropout")
def _identity(b, n, ins, opset):
    if n.op_type == "Dropout":
        training = len(ins) > 2 and ins[2] is not None
        if training and bool(np.asarray(known(ins[2], "Dropout training_mode")).any()):
            ratio = known(ins[1], "Dropout ratio") if len(ins) > 1 and ins[1] is not None else 0.5
            if float(np.asarray(ratio)) != 0.0:
                raise ConvertError("Dropout in training mode (random masks) is not supported; Ember "
                                   "runs Dropout for inference only")
        if len(n.output) > 1 and n.output[1]:
            mask = b.op("expand", [b.scalar(True, "bool")], shape=ins[0].shape)
            return [ins[0], mask]
    return ins[0]


# ---------------------------------------------------------------------------- linear algebra
@converter("MatMul")
def _matmul(b, n, ins, opset):
    return b.op("matmul", ins, _name=n.name)


@converter("Gemm")
def _gemm(b, n, ins, opset):
    at = attrs_of(n)
    return b.op("gemm", ins, transA=at.get("transA", 0), transB=at.get("transB", 0),
                alpha=float(at.get("alpha", 1.0)), beta=float(at.get("beta", 1.0)), _name=n.name)


def _spatial(x_shape, w_kernel, at, what):
    nd = len(x_shape) - 2
    kernel = list(at.get("kernel_shape") or w_kernel)
    if not all(isinstance(k, int) for k in kernel):
        raise ConvertError(f"{what} kernel size {tuple(str(k) for k in kernel)} must be known when compiling "
                           f"(give kernel_shape, or the weights as an initializer)")
    strides = list(at.get("strides") or [1] * nd)
    dil = list(at.get("dilations") or [1] * nd)
    pads = list(at.get("pads") or [0] * (2 * nd))
    auto = at.get("auto_pad", "NOTSET")
    ceil_mode = at.get("ceil_mode", 0)
    out = []
    spatial = x_shape[2:]
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        if not all(isinstance(d, int) for d in spatial):
            raise ConvertError(f"{what} auto_pad={auto} needs static spatial dims")
        pads = [0] * (2 * nd)
        for i, d in enumerate(spatial):
            o = -(-d // strides[i])
            total = max((o - 1) * strides[i] + (kernel[i] - 1) * dil[i] + 1 - d, 0)
            small, big = total // 2, total - total // 2
            pads[i], pads[i + nd] = (small, big) if auto == "SAME_UPPER" else (big, small)
            out.append(o)
        return kernel, strides, dil, pads, out
    if auto == "VALID":
        pads = [0] * (2 * nd)
    for i, d in enumerate(spatial):
        eff = (kernel[i] - 1) * dil[i] + 1
        num = d + pads[i] + pads[i + nd] - eff
        if ceil_mode:
            o = S.floordiv(num + strides[i] - 1, strides[i]) + 1
            if isinstance(o, int) and isinstance(d, int) and (o - 1) * strides[i] >= d + pads[i]:
                o -= 1
        else:
            o = S.floordiv(num, strides[i]) + 1
        out.append(o)
    return kernel, strides, dil, pads, out


def _same_padded(b, x, w_kernel, at, fill):
    """auto_pad SAME_UPPER / SAME_LOWER over symbolic spatial dims: x padded explicitly (with
    `fill`) by the symbolic amounts SAME gives, and the attributes with auto_pad VALID; x and
    `at` unchanged otherwise. (SAME's pads depend on each size modulo the stride.)"""
    auto = at.get("auto_pad", "NOTSET")
    spatial = x.shape[2:]
    if auto not in ("SAME_UPPER", "SAME_LOWER") or all(isinstance(d, int) for d in spatial):
        return x, at
    nd = len(spatial)
    kernel = list(at.get("kernel_shape") or w_kernel or [])
    if len(kernel) != nd or not all(isinstance(k, int) for k in kernel):
        return x, at        # (_spatial names the problem)
    strides = list(at.get("strides") or [1] * nd)
    dil = list(at.get("dilations") or [1] * nd)
    pre, post = [0, 0], [0, 0]
    for i, d in enumerate(spatial):
        o = S.floordiv(d + strides[i] - 1, strides[i])
        total = S.smax((o - 1) * strides[i] + (kernel[i] - 1) * dil[i] + 1 - d, 0)
        small = S.floordiv(total, 2)
        big = total - small
        pre.append(small if auto == "SAME_UPPER" else big)
        post.append(big if auto == "SAME_UPPER" else small)
    y = b.op("pad", [x, b.scalar(fill, x.dtype)], pre=tuple(pre), post=tuple(post), mode="constant")
    return y, {**at, "auto_pad": "VALID", "pads": [0] * (2 * nd)}


def _lowest(dtype):
    return -np.inf if dtype.startswith(("float", "bfloat")) else int(np.iinfo(to_numpy(dtype)).min)


@converter("Conv")
def _conv(b, n, ins, opset):
    at = attrs_of(n)
    x, w = ins[0], ins[1]
    if x.type.rank < 3:
        raise ConvertError(f"Conv input must have rank >= 3, got {x.shape}")
    x, at = _same_padded(b, x, w.shape[2:], at, 0)
    ins = [x] + list(ins[1:])
    kernel, strides, dil, pads, out = _spatial(x.shape, w.shape[2:], at, "Conv")
    return b.op("conv", [v for v in ins if v is not None], group=int(at.get("group", 1)),
                kernel=tuple(kernel), strides=tuple(strides), dilations=tuple(dil), pads=tuple(pads),
                out=tuple(out), _name=n.name)


@converter("MaxPool", "AveragePool")
def _pool(b, n, ins, opset):
    at = attrs_of(n)
    indices = n.op_type == "MaxPool" and len(n.output) > 1 and n.output[1]
    if indices:
        raise ConvertError("MaxPool's Indices output is not supported")
    x, avg = ins[0], n.op_type == "AveragePool"
    padded, at2 = _same_padded(b, x, None, at, 0 if avg else _lowest(x.dtype))
    kernel, strides, dil, pads, out = _spatial(padded.shape, None, at2, n.op_type)
    geometry = dict(kernel=tuple(kernel), strides=tuple(strides), dilations=tuple(dil), pads=tuple(pads),
                    out=tuple(out))
    if avg and padded is not x and not int(at.get("count_include_pad", 0)):
        # SAME over symbolic dims, padding not counted: the window sums over the padded
        # image divided by those over padded ones (the count of real elements per window)
        ones = b.op("expand", [b.scalar(1, x.dtype)], shape=tuple(x.shape))
        ones, _ = _same_padded(b, ones, None, at, 0)
        s = b.op("pool", [padded], mode="avg", count_include_pad=1, **geometry)
        c = b.op("pool", [ones], mode="avg", count_include_pad=1, **geometry)
        return b.op("div", [s, c], _name=n.name)
    y = b.op("pool", [padded], mode="max" if n.op_type == "MaxPool" else "avg",
             count_include_pad=int(at.get("count_include_pad", 0)), _name=n.name, **geometry)
    return y


@converter("MaxUnpool")
def _max_unpool(b, n, ins, opset):
    at = attrs_of(n)
    x = ins[0]
    nd = x.type.rank - 2
    kernel = list(at.get("kernel_shape", []))
    strides = list(at.get("strides", [1] * nd))
    pads = list(at.get("pads", [0] * 2 * nd))
    if len(kernel) != nd or len(strides) != nd or len(pads) != 2 * nd:
        raise ShapeError(f"MaxUnpool: kernel_shape {kernel}, strides {strides} and pads {pads} must give "
                         f"{nd} spatial dims (pads twice)")
    if not all(isinstance(d, int) for d in x.shape[2:]):
        raise ConvertError("MaxUnpool needs the input's spatial dims known when compiling")
    out = [(x.shape[2 + d] - 1) * strides[d] + kernel[d] - pads[d] - pads[d + nd] for d in range(nd)]
    given = None
    if len(ins) > 2 and ins[2] is not None:
        given = [int(v) for v in np.asarray(known(ins[2], "MaxUnpool output_shape")).reshape(-1)][2:]
        if len(given) != nd or any(g < o for g, o in zip(given, out)):
            raise ShapeError(f"MaxUnpool: output_shape's spatial dims {given} must be at least the {out} the "
                             f"kernel, strides and pads give")
    # out[n, c] (flattened) takes x[n, c, q] at indices[n, c, q] (flat over the whole output,
    # as MaxPool gives them): one scatter per image and channel
    rows, p_in, p_out = S.prod(x.shape[:2]), S.prod(x.shape[2:]), math.prod(out)
    idx = ins[1] if ins[1].dtype == "int64" else b.op("cast", [ins[1]], to="int64")
    base = b.op("mul", [b.op("reshape", [b.op("range", [], start=0, delta=1, length=rows, dtype="int64")],
                             shape=(rows, 1)), b.scalar(p_out, "int64")])
    local = b.op("sub", [b.op("reshape", [idx], shape=(rows, p_in)), base])
    zeros = b.op("expand", [b.scalar(0, x.dtype)], shape=(rows, p_out))
    flat = _scatter_along(b, zeros, local, b.op("reshape", [x], shape=(rows, p_in)), 1, "none", "MaxUnpool")
    y = b.op("reshape", [flat], shape=tuple(x.shape[:2]) + tuple(out))
    if given is None or given == out:
        return y
    # a larger output_shape: the unpooled image at its start, zeros after (as the spec's reference)
    return b.op("pad", [y, b.scalar(0, x.dtype)], pre=(0,) * (nd + 2),
                post=(0, 0) + tuple(g - o for g, o in zip(given, out)), mode="constant", _name=n.name)


@converter("GlobalAveragePool", "GlobalMaxPool")
def _gpool(b, n, ins, opset):
    x = ins[0]
    axes = tuple(range(2, x.type.rank))
    op = "reduce_mean" if n.op_type == "GlobalAveragePool" else "reduce_max"
    return b.op(op, [x], axes=axes, keepdims=1, _name=n.name)


@converter("BatchNormalization")
def _bn(b, n, ins, opset):
    at = attrs_of(n)
    if at.get("training_mode", 0) or (len(n.output) > 1 and any(n.output[1:])):
        raise ConvertError("BatchNormalization in training mode is not supported")
    return b.op("batch_norm", ins[:5], epsilon=float(at.get("epsilon", 1e-5)), _name=n.name)


@converter("LayerNormalization")
def _ln(b, n, ins, opset):
    at = attrs_of(n)
    axis = norm_axis(at.get("axis", -1), ins[0].type.rank)
    if len(n.output) > 1 and any(n.output[1:]):
        return _ln_with_stats(b, n, ins, axis, float(at.get("epsilon", 1e-5)), int(at.get("stash_type", 1)))
    return b.op("layer_norm", [v for v in ins if v is not None], axis=axis,
                epsilon=float(at.get("epsilon", 1e-5)), _name=n.name)


def _ln_with_stats(b, n, ins, axis, eps, stash):
    """LayerNormalization with its Mean and InvStdDev outputs (kept dims of size 1), computed
    in float32 when stash_type is 1, as the spec's function body does."""
    x = ins[0]
    axes = list(range(axis, x.type.rank))
    work = "float32" if stash == 1 and x.dtype != "float64" else x.dtype
    xs = x if work == x.dtype else b.op("cast", [x], to=work)
    mean = b.op("reduce_mean", [xs], axes=axes, keepdims=1)
    d = b.op("sub", [xs, mean])
    var = b.op("reduce_mean", [b.op("mul", [d, d])], axes=axes, keepdims=1)
    inv = b.op("reciprocal", [b.op("sqrt", [b.op("add", [var, b.scalar(eps, work)])])])
    y = b.op("mul", [d, inv])
    if work != x.dtype:
        y = b.op("cast", [y], to=x.dtype)
    y = b.op("mul", [y, ins[1]])
    if len(ins) > 2 and ins[2] is not None:
        y = b.op("add", [y, ins[2]])
    return [y, mean, inv]


@converter("Softmax", "LogSoftmax")
def _softmax(b, n, ins, opset):
    at = attrs_of(n)
    x = ins[0]
    rank = x.type.rank
    log = n.op_type == "LogSoftmax"
    if opset >= 13:
        axis = norm_axis(at.get("axis", -1), rank)
        return b.op("softmax", [x], axis=axis, log=log, _name=n.name)
    axis = norm_axis(at.get("axis", 1), rank)
    if axis == rank - 1:
        return b.op("softmax", [x], axis=axis, log=log, _name=n.name)
    # old semantics: flatten to 2-D at `axis`, softmax over the second dim
    flat = b.op("reshape", [x], shape=(S.prod(x.shape[:axis]), S.prod(x.shape[axis:])))
    y = b.op("softmax", [flat], axis=1, log=log, _name=n.name)
    return b.op("reshape", [y], shape=x.shape)


# ------------------------------------------------------------------------------ reductions
@converter("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin")
def _reduce(b, n, ins, opset):
    at = attrs_of(n)
    x = ins[0]
    rank = x.type.rank
    axes_from_input = opset >= 18 or (n.op_type == "ReduceSum" and opset >= 13)
    axes = ints_of(ins[1], "Reduce axes") if axes_from_input and len(ins) > 1 else at.get("axes")
    keep = int(at.get("keepdims", 1))
    if keep not in (0, 1):
        raise ShapeError(f"keepdims = {keep}, expected 0 or 1")
    if not axes:
        if at.get("noop_with_empty_axes", 0):
            return x
        axes = list(range(rank))
    axes = norm_axes(axes, rank)
    op = {"ReduceMean": "reduce_mean", "ReduceSum": "reduce_sum", "ReduceMax": "reduce_max",
          "ReduceMin": "reduce_min"}[n.op_type]
    return b.op(op, [x], axes=axes, keepdims=keep, _name=n.name)


# ---------------------------------------------------------------------------- shape & data
@converter("Shape")
def _shape(b, n, ins, opset):
    at = attrs_of(n)
    dims = list(ins[0].shape)
    r = len(dims)
    start, end = at.get("start", 0), at.get("end", r)
    start = min(max(start + r if start < 0 else start, 0), r)
    end = min(max(end + r if end < 0 else end, 0), r)
    arr = np.empty(max(end - start, 0), dtype=object)
    arr[:] = dims[start:end]
    return const_value(arr) if any(isinstance(d, S.Sym) for d in arr) else const_value(arr.astype(np.int64))


@converter("Size")
def _size(b, n, ins, opset):
    return b.sym_scalar(S.prod(ins[0].shape))


@converter("Constant")
def _constant(b, n, ins, opset):
    from onnx import numpy_helper
    a = n.attribute[0]
    at = attrs_of(n)
    if a.name == "value":
        return const_value(numpy_helper.to_array(a.t))
    if a.name == "value_float":
        return const_value(np.array(at["value_float"], dtype=np.float32))
    if a.name == "value_floats":
        return const_value(np.array(at["value_floats"], dtype=np.float32))
    if a.name == "value_int":
        return const_value(np.array(at["value_int"], dtype=np.int64))
    if a.name == "value_ints":
        return const_value(np.array(at["value_ints"], dtype=np.int64))
    raise ConvertError(f"Constant with attribute '{a.name}' is not supported")


@converter("ConstantOfShape")
def _cos(b, n, ins, opset):
    from onnx import numpy_helper
    shape = ints_of(ins[0], "ConstantOfShape shape")
    at = [a for a in n.attribute if a.name == "value"]
    val = numpy_helper.to_array(at[0].t).reshape(-1)[0] if at else np.float32(0)
    scalar = const_value(np.array(val))
    return b.op("expand", [scalar], shape=tuple(shape), _name=n.name)


@converter("Reshape")
def _reshape(b, n, ins, opset):
    x = ins[0]
    if opset < 5:
        target = list(attrs_of(n)["shape"])
    else:
        target = ints_of(ins[1], "Reshape's target shape")
    allowzero = attrs_of(n).get("allowzero", 0)
    out = []
    for i, d in enumerate(target):
        if isinstance(d, int) and d == 0 and not allowzero:
            out.append(x.shape[i])
        else:
            out.append(d)
    minus = [i for i, d in enumerate(out) if isinstance(d, int) and d == -1]
    if len(minus) > 1:
        raise ConvertError(f"Reshape target {target} has more than one -1")
    if minus:
        known_p = S.prod(d for i, d in enumerate(out) if i != minus[0])
        if isinstance(known_p, int) and known_p == 0:
            raise ShapeError(f"Reshape target {target} has a -1 beside dims that multiply to 0")
        out[minus[0]] = S.floordiv(S.prod(x.shape), known_p)
    total_in, total_out = S.prod(x.shape), S.prod(out)
    if isinstance(total_in, int) and isinstance(total_out, int) and total_in != total_out:
        raise ShapeError(f"Reshape from {tuple(x.shape)} to {tuple(out)} changes the element count")
    if tuple(out) == tuple(x.shape):
        return x
    if minus and not isinstance(known_p, int):
        # a -1 is undefined where the other dims multiply to 0 at run time: a shape guard
        return b.op("reshape", [x], shape=tuple(out), infer_from=tuple(d for i, d in enumerate(out) if i != minus[0]),
                    _name=n.name)
    return b.op("reshape", [x], shape=tuple(out), _name=n.name)


@converter("Flatten")
def _flatten(b, n, ins, opset):
    x = ins[0]
    axis = attrs_of(n).get("axis", 1)
    r = x.type.rank
    axis = axis + r if axis < 0 else axis
    shape = (S.prod(x.shape[:axis]), S.prod(x.shape[axis:]))
    return b.op("reshape", [x], shape=shape, _name=n.name)


@converter("Squeeze")
def _squeeze(b, n, ins, opset):
    x = ins[0]
    axes = ints_of(ins[1], "Squeeze axes", scalar_ok=True) if opset >= 13 and len(ins) > 1 else attrs_of(n).get("axes")
    r = x.type.rank
    if axes is None:
        if any(isinstance(d, S.Sym) for d in x.shape):
            # which dims are 1 decides the output's rank: known only at run time
            raise ConvertError(f"Squeeze without axes of symbolic shape {tuple(str(d) for d in x.shape)}; "
                               f"give the axes")
        axes = [i for i, d in enumerate(x.shape) if d == 1]
    axes = set(norm_axes(axes, r))
    for a in axes:
        if isinstance(x.shape[a], int) and x.shape[a] != 1:
            raise ConvertError(f"Squeeze axis {a} has size {x.shape[a]}, not 1")
    return b.op("reshape", [x], shape=tuple(d for i, d in enumerate(x.shape) if i not in axes), _name=n.name)


@converter("Unsqueeze")
def _unsqueeze(b, n, ins, opset):
    x = ins[0]
    axes = ints_of(ins[1], "Unsqueeze axes", scalar_ok=True) if opset >= 13 else attrs_of(n)["axes"]
    r = x.type.rank + len(axes)
    axes = norm_axes(axes, r)
    shape = list(x.shape)
    for a in axes:
        shape.insert(a, 1)
    return b.op("reshape", [x], shape=tuple(shape), _name=n.name)


@converter("Transpose")
def _transpose(b, n, ins, opset):
    x = ins[0]
    perm = attrs_of(n).get("perm") or list(reversed(range(x.type.rank)))
    if list(perm) == list(range(x.type.rank)):
        return x
    return b.op("transpose", [x], perm=tuple(perm), _name=n.name)


@converter("Concat")
def _concat(b, n, ins, opset):
    ins = [v for v in ins if v is not None]
    axis = norm_axis(attrs_of(n)["axis"], ins[0].type.rank)
    if len(ins) == 1:
        return ins[0]
    return b.op("concat", ins, axis=axis, _name=n.name)


def _slice_axis(d, start, end, step):
    """Start and length of a slice along a dim of size d (d, start, end may be symbolic),
    clamped as the ONNX spec says: [0, d] for positive steps, [0, d-1] / [-1, d-1] for
    negative ones (huge sentinels like INT64_MAX stand for the dim's end)."""
    big = 1 << 62

    def norm(v, lo, hi):
        if isinstance(v, int):
            if v >= big:
                return hi
            if v <= -big:
                return lo
            if v < 0:
                v = v + d
        elif isinstance(v, S.Sym) and (v.lower_bound() is None or v.lower_bound() < 0):
            # a computed bound of unknown sign (`1 - t`): negative ones count from the end,
            # by the indicator min(max(-v, 0), 1) of v < 0
            v = v + d * S.smin(S.smax(-v, 0), 1)
        return S.smin(S.smax(v, lo), hi)
    if step > 0:
        start, end = norm(start, 0, d), norm(end, 0, d)
        length = S.smax(S.floordiv(end - start + step - 1, step), 0)
    else:
        start, end = norm(start, 0, d - 1), norm(end, -1, d - 1)
        length = S.smax(S.floordiv(start - end + (-step) - 1, -step), 0)
    return start, length


@converter("Slice")
def _slice(b, n, ins, opset):
    x = ins[0]
    r = x.type.rank
    if opset < 10:
        at = attrs_of(n)
        starts, ends = list(at["starts"]), list(at["ends"])
        axes = list(at.get("axes", range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts = ints_of(ins[1], "Slice starts")
        ends = ints_of(ins[2], "Slice ends")
        axes = ints_of(ins[3], "Slice axes") if len(ins) > 3 and ins[3] is not None else list(range(len(starts)))
        steps = ints_of(ins[4], "Slice steps") if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    st_all, step_all, size_all = [0] * r, [1] * r, list(x.shape)
    for s, e, a, p in zip(starts, ends, axes, steps):
        a = norm_axis(a, r)
        if not isinstance(p, int) or p == 0:
            raise ConvertError("Slice steps must be non-zero constants")
        st_all[a], size_all[a] = _slice_axis(x.shape[a], s, e, p)
        step_all[a] = p
    if all(isinstance(s, int) and s == 0 for s in st_all) and all(p == 1 for p in step_all) \
            and tuple(size_all) == tuple(x.shape):
        return x
    return b.op("slice", [x], starts=tuple(st_all), steps=tuple(step_all), sizes=tuple(size_all), _name=n.name)


@converter("Split")
def _split(b, n, ins, opset):
    x = ins[0]
    at = attrs_of(n)
    axis = norm_axis(at.get("axis", 0), x.type.rank)
    k = len(n.output)
    if opset >= 13 and len(ins) > 1 and ins[1] is not None:
        split = ints_of(ins[1], "Split sizes")
    elif opset < 13 and "split" in at:
        split = list(at["split"])
    else:
        d = x.shape[axis]
        k = at.get("num_outputs", k)
        chunk = S.floordiv(d + k - 1, k)
        split = [chunk] * (k - 1) + [d - chunk * (k - 1)]
    outs, off = [], 0
    for sz in split:
        starts = [0] * x.type.rank
        steps = [1] * x.type.rank
        sizes = list(x.shape)
        starts[axis], sizes[axis] = off, sz
        outs.append(b.op("slice", [x], starts=tuple(starts), steps=tuple(steps), sizes=tuple(sizes), _name=n.name))
        off = off + sz
    return outs


@converter("Gather")
def _gather(b, n, ins, opset):
    axis = norm_axis(attrs_of(n).get("axis", 0), ins[0].type.rank)
    return b.op("gather", ins, axis=axis, _name=n.name)


@converter("GatherND")
def _gather_nd(b, n, ins, opset):
    """GatherND as one Gather: each index tuple (and its batch position) folded into a row of
    the data flattened over the batch and indexed dims; a component outside its dim makes
    the row index invalid, so Gather's bounds check reports it."""
    data, idx = ins
    bd = int(attrs_of(n).get("batch_dims", 0))
    k = idx.shape[-1] if idx.type.rank else 0
    if idx.type.rank and not isinstance(k, int):
        raise ConvertError(f"GatherND: the indices' last dim ({k}) must be known when compiling")
    if idx.type.rank < 1 or bd < 0 or bd + k > data.type.rank or bd >= idx.type.rank:
        raise ShapeError(f"GatherND: indices of shape {list(idx.shape)} with batch_dims={bd} do not fit data of "
                         f"shape {list(data.shape)} (batch_dims + the indices' last dim must be <= the data's rank)")
    for i in range(bd):
        if isinstance(data.shape[i], int) and isinstance(idx.shape[i], int) and data.shape[i] != idx.shape[i]:
            raise ShapeError(f"GatherND: batch dim {i} is {data.shape[i]} in data but {idx.shape[i]} in indices")
    idx64 = idx if idx.dtype == "int64" else b.op("cast", [idx], to="int64")
    row_shape = tuple(idx.shape[:-1])
    lin = b.op("expand", [b.scalar(0, "int64")], shape=row_shape)
    bad = b.op("expand", [b.scalar(False, "bool")], shape=row_shape)
    for j in range(k):
        dj = b.sym_scalar(data.shape[bd + j])
        c = take(b, idx64, idx.type.rank - 1, j)
        c = b.op("where", [b.op("lt", [c, b.scalar(0, "int64")]), b.op("add", [c, dj]), c])
        bad = b.op("or", [bad, b.op("or", [b.op("lt", [c, b.scalar(0, "int64")]), b.op("ge", [c, dj])])])
        lin = b.op("add", [b.op("mul", [lin, dj]), c])
    inner = S.prod(data.shape[bd:bd + k])
    if bd:
        rows = S.prod(data.shape[:bd])
        pos = b.op("range", [], start=0, delta=1, length=rows, dtype="int64")
        pos = b.op("reshape", [pos], shape=tuple(data.shape[:bd]) + (1,) * (len(row_shape) - bd))
        lin = b.op("add", [lin, b.op("mul", [pos, b.sym_scalar(inner)])])
    else:
        rows = 1
    lin = b.op("where", [bad, b.scalar(-2 ** 62, "int64"), lin])
    flat = b.op("reshape", [data], shape=(rows * inner,) + tuple(data.shape[bd + k:]))
    return b.op("gather", [flat, lin], axis=0, _name=n.name)


# NonZero, Compress and NonMaxSuppression give shapes that depend on values: folded where
# those are constants; otherwise a session runs the model in stages split there


@converter("NonZero")
def _nonzero(b, n, ins, opset):
    if not ins[0].is_const:   # (from graph inputs too: a stage, rather than a compile per value)
        raise DataDependentShape("NonZero's input is not a constant, and the output's shape depends on its "
                                 "values: InferenceSession runs such a model in native stages split at this node")
    x = np.asarray(ins[0].const)
    if x.dtype == object:
        raise ConvertError("NonZero of a shape tensor is not supported")
    return const_value(np.array(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1))


@converter("NonMaxSuppression")
def _non_max_suppression(b, n, ins, opset):
    raise DataDependentShape("NonMaxSuppression's output length depends on the boxes and scores: "
                             "InferenceSession runs such a model in native stages split at this node")


@converter("Unique")
def _unique(b, n, ins, opset):
    raise DataDependentShape("Unique's output length depends on the values: InferenceSession runs such a model "
                             "in native stages split at this node")


@converter("Compress")
def _compress(b, n, ins, opset):
    x = ins[0]
    if not ins[1].is_const:
        raise DataDependentShape("Compress's condition is not a constant, and the output's shape depends on its "
                                 "values: InferenceSession runs such a model in native stages split at this node")
    cond = np.asarray(ins[1].const).reshape(-1).astype(bool)
    at = attrs_of(n)
    if "axis" in at:
        axis = norm_axis(int(at["axis"]), x.type.rank)
    else:
        x, axis = b.op("reshape", [x], shape=(S.prod(x.shape),)), 0
    d = x.shape[axis]
    if isinstance(d, int) and len(cond) > d:
        raise ShapeError(f"Compress: the condition has {len(cond)} values for a dim of {d}")
    picked = np.nonzero(cond)[0].astype(np.int64)
    return b.op("gather", [x, const_value(picked)], axis=axis, _name=n.name)


@converter("GatherElements")
def _gather_elements(b, n, ins, opset):
    axis = norm_axis(attrs_of(n).get("axis", 0), ins[0].type.rank)
    return b.op("gather_elements", ins, axis=axis, _name=n.name)


@converter("Expand")
def _expand(b, n, ins, opset):
    shape = ints_of(ins[1], "Expand shape")
    return b.op("expand", [ins[0]], shape=tuple(shape), _name=n.name)


@converter("Range")
def _range(b, n, ins, opset):
    start, limit, delta = (known(v, "Range input").reshape(-1)[0] for v in ins)
    dtype = ins[0].dtype
    if all(not isinstance(v, S.Sym) for v in (start, limit, delta)):
        if dtype in ("float16", "float32", "float64"):
            length = max(int(math.ceil((float(limit) - float(start)) / float(delta))), 0)
        else:
            length = max(-(-(int(limit) - int(start)) // int(delta)), 0)
        start, delta = (float(start), float(delta)) if dtype.startswith("float") else (int(start), int(delta))
    else:
        if not (isinstance(delta, (int, np.integer)) and int(delta) > 0):
            raise ConvertError("Range with a symbolic bound needs a positive constant delta")
        delta = int(delta)
        length = S.smax(S.floordiv(limit - start + delta - 1, delta), 0)
    return b.op("range", [], start=start, delta=delta, length=length, dtype=dtype, _name=n.name)


# ------------------------------------------------------------ activations, as decompositions
def _f(b, x, v):
    return b.scalar(v, x.dtype)


@converter("Elu", "Selu", "Celu")
def _elu(b, n, ins, opset):
    at, x = attrs_of(n), ins[0]
    if n.op_type == "Celu":     # max(0, x) + min(0, alpha * (exp(x / alpha) - 1))
        alpha = float(at.get("alpha", 1.0))
        e = b.op("mul", [_f(b, x, alpha), b.op("sub", [b.op("exp", [b.op("div", [x, _f(b, x, alpha)])]), _f(b, x, 1)])])
        return b.op("add", [b.op("relu", [x]), b.op("min", [e, _f(b, x, 0)])], _name=n.name)
    default = 1.0 if n.op_type == "Elu" else 1.67326319217681884765625
    alpha = float(at.get("alpha", default))
    neg = b.op("mul", [_f(b, x, alpha), b.op("sub", [b.op("exp", [x]), _f(b, x, 1)])])
    cond = b.op("lt", [x, _f(b, x, 0)]) if n.op_type == "Elu" else b.op("le", [x, _f(b, x, 0)])
    y = b.op("where", [cond, neg, x], _name=n.name)
    if n.op_type == "Selu":
        y = b.op("mul", [_f(b, x, float(at.get("gamma", 1.05070102214813232421875))), y])
    return y


@converter("ThresholdedRelu")
def _thresholded_relu(b, n, ins, opset):
    x = ins[0]
    alpha = float(attrs_of(n).get("alpha", 1.0))
    return b.op("where", [b.op("gt", [x, _f(b, x, alpha)]), x, _f(b, x, 0)], _name=n.name)


@converter("Shrink")
def _shrink(b, n, ins, opset):
    at, x = attrs_of(n), ins[0]
    bias, lambd = float(at.get("bias", 0.0)), float(at.get("lambd", 0.5))
    lo = b.op("where", [b.op("lt", [x, _f(b, x, -lambd)]), b.op("add", [x, _f(b, x, bias)]), _f(b, x, 0)])
    return b.op("where", [b.op("gt", [x, _f(b, x, lambd)]), b.op("sub", [x, _f(b, x, bias)]), lo], _name=n.name)


@converter("PRelu")
def _prelu(b, n, ins, opset):
    x, slope = ins
    return b.op("where", [b.op("lt", [x, _f(b, x, 0)]), b.op("mul", [x, slope]), x], _name=n.name)


@converter("Sign")
def _sign(b, n, ins, opset):
    x = ins[0]
    if x.dtype.startswith("uint"):
        return b.op("cast", [b.op("gt", [x, _f(b, x, 0)])], to=x.dtype, _name=n.name)
    s = b.op("where", [b.op("gt", [x, _f(b, x, 0)]), _f(b, x, 1),
                       b.op("where", [b.op("lt", [x, _f(b, x, 0)]), _f(b, x, -1), _f(b, x, 0)])])
    if x.dtype.startswith("float"):       # NaN stays NaN
        s = b.op("where", [b.op("eq", [x, x]), s, x])
    return s


@converter("Softsign")
def _softsign(b, n, ins, opset):
    x = ins[0]
    return b.op("div", [x, b.op("add", [_f(b, x, 1), b.op("abs", [x])])], _name=n.name)


@converter("Mish")
def _mish(b, n, ins, opset):
    x = ins[0]
    return b.op("mul", [x, b.op("tanh", [b.op("softplus", [x])])], _name=n.name)


@converter("Swish")
def _swish(b, n, ins, opset):
    x = ins[0]
    alpha = float(attrs_of(n).get("alpha", 1.0))
    z = x if alpha == 1.0 else b.op("mul", [x, _f(b, x, alpha)])
    return b.op("mul", [x, b.op("sigmoid", [z])], _name=n.name)


@converter("IsNaN")
def _isnan(b, n, ins, opset):
    return b.op("not", [b.op("eq", [ins[0], ins[0]])], _name=n.name)


@converter("IsInf")
def _isinf(b, n, ins, opset):
    at, x = attrs_of(n), ins[0]
    pos = b.op("eq", [x, _f(b, x, math.inf)]) if at.get("detect_positive", 1) else None
    neg = b.op("eq", [x, _f(b, x, -math.inf)]) if at.get("detect_negative", 1) else None
    if pos is None and neg is None:
        return b.op("expand", [b.scalar(False, "bool")], shape=x.shape)
    return pos if neg is None else neg if pos is None else b.op("or", [pos, neg], _name=n.name)


@converter("Round")
def _round(b, n, ins, opset):
    return b.op("round", ins, _name=n.name)


@converter("BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot")
def _bitwise(b, n, ins, opset):
    op = {"BitwiseAnd": "and", "BitwiseOr": "or", "BitwiseXor": "xor", "BitwiseNot": "not"}[n.op_type]
    return b.op(op, ins, _name=n.name)


@converter("BitShift")
def _bitshift(b, n, ins, opset):
    d = attrs_of(n).get("direction", "")
    if d not in ("LEFT", "RIGHT"):
        raise ShapeError(f"BitShift direction is '{d}', expected 'LEFT' or 'RIGHT'")
    return b.op("shl" if d == "LEFT" else "shr", ins, _name=n.name)


# ----------------------------------------------------------- reductions, as decompositions
def _reduce_axes(b, n, ins, opset):
    """(axes, keepdims), or None for a no-op reduction (empty axes, noop_with_empty_axes)."""
    at = attrs_of(n)
    rank = ins[0].type.rank
    axes = ints_of(ins[1], f"{n.op_type} axes") if opset >= 18 and len(ins) > 1 else at.get("axes")
    keep = int(at.get("keepdims", 1))
    if keep not in (0, 1):
        raise ShapeError(f"keepdims = {keep}, expected 0 or 1")
    if not axes:
        if at.get("noop_with_empty_axes", 0):
            return None
        axes = list(range(rank))
    return norm_axes(axes, rank), keep


@converter("ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp", "ReduceProd")
def _reduce_more(b, n, ins, opset):
    x = ins[0]
    ax = _reduce_axes(b, n, ins, opset)
    op = n.op_type
    if ax is None:     # the op's pointwise part still applies to every element
        return {"ReduceL1": lambda: b.op("abs", [x]), "ReduceL2": lambda: b.op("abs", [x]),
                "ReduceSumSquare": lambda: b.op("mul", [x, x]), "ReduceLogSum": lambda: b.op("log", [x]),
                "ReduceLogSumExp": lambda: x, "ReduceProd": lambda: x}[op]()
    axes, keep = ax
    if op == "ReduceProd":
        return b.op("reduce_prod", [x], axes=axes, keepdims=keep, _name=n.name)
    if op == "ReduceLogSumExp":    # max-shifted; an all -inf (or empty) slice shifts by 0
        m = b.op("reduce_max", [x], axes=axes, keepdims=1)
        m = b.op("where", [b.op("eq", [m, _f(b, x, -math.inf)]), _f(b, x, 0), m])
        s = b.op("reduce_sum", [b.op("exp", [b.op("sub", [x, m])])], axes=axes, keepdims=1)
        y = b.op("add", [b.op("log", [s]), m])
        return y if keep else b.op("reshape", [y], shape=tuple(d for i, d in enumerate(x.shape) if i not in axes))
    src = {"ReduceL1": lambda: b.op("abs", [x]), "ReduceL2": lambda: b.op("mul", [x, x]),
           "ReduceSumSquare": lambda: b.op("mul", [x, x]), "ReduceLogSum": lambda: x}[op]()
    s = b.op("reduce_sum", [src], axes=axes, keepdims=keep, _name=n.name)
    if op == "ReduceL2":
        if x.dtype.startswith("float"):
            return b.op("sqrt", [s])
        return b.op("cast", [b.op("sqrt", [b.op("cast", [s], to="float64")])], to=x.dtype)
    return b.op("log", [s]) if op == "ReduceLogSum" else s


# ------------------------------------------------------------------------------- Pad, Trilu
@converter("Pad")
def _pad(b, n, ins, opset):
    at, x = attrs_of(n), ins[0]
    rank = x.type.rank
    mode = at.get("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise ShapeError(f"Pad mode is '{mode}', expected constant, reflect, edge or wrap")
    if opset < 11:
        pads, value = at.get("pads", []), b.scalar(float(at.get("value", 0.0)), x.dtype)
        axes = list(range(rank))
    else:
        pads = ints_of(ins[1], "Pad pads")
        value = ins[2] if len(ins) > 2 and ins[2] is not None else b.scalar(0, x.dtype)
        axes = ints_of(ins[3], "Pad axes") if len(ins) > 3 and ins[3] is not None else list(range(rank))
        axes = [norm_axis(a, rank) for a in axes]
    if len(pads) != 2 * len(axes):
        raise ShapeError(f"Pad pads has {len(pads)} values, expected {2 * len(axes)} (begin and end per axis)")
    if value.type.rank > 1 or (value.type.rank == 1 and value.shape[0] != 1):
        raise ShapeError(f"Pad constant_value must be a scalar or one element, got shape {list(value.shape)}")
    if value.type.rank == 1:
        value = b.op("reshape", [value], shape=())
    pre, post = [0] * rank, [0] * rank
    for k, a in enumerate(axes):
        pre[a], post[a] = pads[k], pads[k + len(axes)]
    if mode == "constant":
        return b.op("pad", [x, value], pre=tuple(pre), post=tuple(post), mode=mode, _name=n.name)
    return b.op("pad", [x], pre=tuple(pre), post=tuple(post), mode=mode, _name=n.name)


def _iota(b, d, rank, axis):
    """0..d-1 along `axis` of a rank-`rank` tensor of ones elsewhere (int64)."""
    r = b.op("range", [], start=0, delta=1, length=d, dtype="int64")
    return b.op("reshape", [r], shape=tuple(d if i == axis else 1 for i in range(rank)))


@converter("Trilu")
def _trilu(b, n, ins, opset):
    x = ins[0]
    rank = x.type.rank
    if rank < 2:
        raise ShapeError(f"Trilu needs an input of rank >= 2, got rank {rank}")
    k = known(ins[1], "Trilu k") if len(ins) > 1 and ins[1] is not None else 0
    k = int(np.asarray(k).reshape(-1)[0])
    rows, cols = _iota(b, x.shape[-2], rank, rank - 2), _iota(b, x.shape[-1], rank, rank - 1)
    diff = b.op("sub", [cols, rows])
    keep = b.op("ge" if attrs_of(n).get("upper", 1) else "le", [diff, b.scalar(k, "int64")])
    zero = b.scalar(False, "bool") if x.dtype == "bool" else b.scalar(0, x.dtype)
    return b.op("where", [keep, x, zero], _name=n.name)


# ----------------------------------------------------------------- ArgMax, ArgMin, Hardmax
def _arg_extreme(b, x, axis, keep, largest, last):
    """The index of the first (or `last`) largest / smallest element along `axis`: the
    extreme value, then the smallest (largest) index where it occurs."""
    rank = x.type.rank
    m = b.op("reduce_max" if largest else "reduce_min", [x], axes=[axis], keepdims=1)
    hit = b.op("eq", [x, m])
    if x.dtype.startswith("float"):      # a NaN is the extreme, as numpy's argmax has it
        nan = b.op("not", [b.op("eq", [x, x])])
        any_nan = b.op("reduce_max", [b.op("cast", [nan], to="int32")], axes=[axis], keepdims=1)
        hit = b.op("where", [b.op("gt", [any_nan, b.scalar(0, "int32")]), nan, hit])
    iota = _iota(b, x.shape[axis], rank, axis)
    if last:
        cand = b.op("where", [hit, iota, b.scalar(-1, "int64")])
        return b.op("reduce_max", [cand], axes=[axis], keepdims=keep)
    cand = b.op("where", [hit, iota, b.scalar(np.iinfo(np.int64).max, "int64")])
    return b.op("reduce_min", [cand], axes=[axis], keepdims=keep)


@converter("ArgMax", "ArgMin")
def _argmax(b, n, ins, opset):
    at, x = attrs_of(n), ins[0]
    axis = norm_axis(at.get("axis", 0), x.type.rank)
    keep = int(at.get("keepdims", 1))
    if keep not in (0, 1):
        raise ShapeError(f"keepdims = {keep}, expected 0 or 1")
    return _arg_extreme(b, x, axis, keep, n.op_type == "ArgMax", bool(at.get("select_last_index", 0)))


@converter("Hardmax")
def _hardmax(b, n, ins, opset):
    x = ins[0]
    rank = x.type.rank
    axis = norm_axis(attrs_of(n).get("axis", -1 if opset >= 13 else 1), rank)
    flat = x
    if opset < 13:      # coerced to 2-D at `axis`, as Softmax was
        flat = b.op("reshape", [x], shape=(S.prod(x.shape[:axis]), S.prod(x.shape[axis:])))
        axis = 1
    idx = _arg_extreme(b, flat, axis, 1, True, False)
    y = b.op("cast", [b.op("eq", [_iota(b, flat.shape[axis], flat.type.rank, axis), idx])], to=x.dtype)
    return y if flat is x else b.op("reshape", [y], shape=x.shape)


# ------------------------------------------------------------ Tile, EyeLike, OneHot, CumSum
@converter("Tile")
def _tile(b, n, ins, opset):
    x = ins[0]
    reps = ints_of(ins[1], "Tile repeats")
    if len(reps) != x.type.rank:
        raise ShapeError(f"Tile repeats has {len(reps)} values, expected one per input dimension ({x.type.rank})")
    if any(isinstance(r, int) and r < 0 for r in reps):
        raise ShapeError(f"Tile repeats {reps} has a negative value")
    # [d0, d1] tiled by [r0, r1]: expand [1, d0, 1, d1] to [r0, d0, r1, d1], then merge pairs
    inter = tuple(v for d in x.shape for v in (1, d))
    wide = tuple(v for r, d in zip(reps, x.shape) for v in (r, d))
    y = b.op("expand", [b.op("reshape", [x], shape=inter)], shape=wide)
    return b.op("reshape", [y], shape=tuple(r * d for r, d in zip(reps, x.shape)), _name=n.name)


@converter("EyeLike")
def _eyelike(b, n, ins, opset):
    at, x = attrs_of(n), ins[0]
    if x.type.rank != 2:
        raise ShapeError(f"EyeLike needs a 2-D input, got rank {x.type.rank}")
    dtype = from_onnx(at["dtype"]) if "dtype" in at else x.dtype
    diff = b.op("sub", [_iota(b, x.shape[1], 2, 1), _iota(b, x.shape[0], 2, 0)])
    on = b.op("eq", [diff, b.scalar(int(at.get("k", 0)), "int64")])
    return on if dtype == "bool" else b.op("cast", [on], to=dtype, _name=n.name)


@converter("OneHot")
def _onehot(b, n, ins, opset):
    idx, depth, values = ins
    d = np.asarray(known(depth, "OneHot depth")).reshape(-1)
    if d.size != 1:
        raise ShapeError(f"OneHot depth must hold one value, got {d.size}")
    d = int(d[0])
    if d < 1:
        raise ShapeError(f"OneHot depth is {d}, expected at least 1")
    if values.type.rank != 1 or (isinstance(values.shape[0], int) and values.shape[0] != 2):
        raise ShapeError(f"OneHot values must be [off, on], got shape {list(values.shape)}")
    if not isinstance(values.shape[0], int):    # the reshape's guard checks it holds 2
        values = b.op("reshape", [values], shape=(2,))
    rank = idx.type.rank + 1
    axis = norm_axis(attrs_of(n).get("axis", -1), rank)
    i = idx if idx.dtype == "int64" else b.op("cast", [idx], to="int64")
    i = b.op("where", [b.op("lt", [i, b.scalar(0, "int64")]), b.op("add", [i, b.scalar(d, "int64")]), i])
    i = b.op("reshape", [i], shape=tuple(1 if k == axis else s for k, s in
                                         enumerate(idx.shape[:axis] + (1,) + idx.shape[axis:])))
    hit = b.op("eq", [i, _iota(b, d, rank, axis)])
    off = b.op("gather", [values, b.scalar(0, "int64")], axis=0)
    on = b.op("gather", [values, b.scalar(1, "int64")], axis=0)
    return b.op("where", [hit, on, off], _name=n.name)


@converter("CumSum", "CumProd")
def _cumsum(b, n, ins, opset):
    """y[..., i, ...] = sum (product) over k <= i (k < i: exclusive; k >= i: reverse) of
    x[..., k, ...]: x broadcast over a new axis of outputs, masked, and reduced (one fused
    reduction)."""
    at, x = attrs_of(n), ins[0]
    rank = x.type.rank
    a = np.asarray(known(ins[1], "CumSum axis")).reshape(-1)
    axis = norm_axis(int(a[0]), rank)
    d = x.shape[axis]
    # x as [..., 1(i), d(k), ...] against i along a new axis just before k
    xe = b.op("reshape", [x], shape=x.shape[:axis] + (1,) + x.shape[axis:])
    iv, kv = _iota(b, d, rank + 1, axis), _iota(b, d, rank + 1, axis + 1)
    rel = {(0, 0): "le", (1, 0): "lt", (0, 1): "ge", (1, 1): "gt"}[(int(at.get("exclusive", 0)),
                                                                     int(at.get("reverse", 0)))]
    keep = b.op(rel, [kv, iv])
    prod = n.op_type == "CumProd"
    ident = b.scalar(1 if prod else 0, x.dtype)
    return b.op("reduce_prod" if prod else "reduce_sum", [b.op("where", [keep, xe, ident])], axes=[axis + 1],
                keepdims=0, _name=n.name)


# ------------------------------------------------------------------------- normalizations
@converter("LpNormalization")
def _lpnorm(b, n, ins, opset):
    at, x = attrs_of(n), ins[0]
    axis = norm_axis(at.get("axis", -1), x.type.rank)
    p = int(at.get("p", 2))
    if p not in (1, 2):
        raise ShapeError(f"LpNormalization p is {p}, expected 1 or 2")
    if p == 1:
        norm = b.op("reduce_sum", [b.op("abs", [x])], axes=[axis], keepdims=1)
    else:
        norm = b.op("sqrt", [b.op("reduce_sum", [b.op("mul", [x, x])], axes=[axis], keepdims=1)])
    zero = _f(b, x, 0)
    safe = b.op("where", [b.op("eq", [norm, zero]), _f(b, x, 1), norm])
    return b.op("where", [b.op("eq", [norm, zero]), zero, b.op("div", [x, safe])], _name=n.name)


@converter("InstanceNormalization")
def _instance_norm(b, n, ins, opset):
    x, scale, bias = ins
    rank = x.type.rank
    eps = float(attrs_of(n).get("epsilon", 1e-5))
    axes = list(range(2, rank))
    mean = b.op("reduce_mean", [x], axes=axes, keepdims=1)
    d = b.op("sub", [x, mean])
    var = b.op("reduce_mean", [b.op("mul", [d, d])], axes=axes, keepdims=1)
    chan = tuple(scale.shape) + (1,) * (rank - 2)
    y = b.op("div", [d, b.op("sqrt", [b.op("add", [var, _f(b, x, eps)])])])
    y = b.op("mul", [y, b.op("reshape", [scale], shape=chan)])
    return b.op("add", [y, b.op("reshape", [bias], shape=chan)], _name=n.name)


# ---------------------------------------------------------------------------- quantization
_QRANGE = {"uint8": (0, 255), "int8": (-128, 127), "uint16": (0, 65535), "int16": (-32768, 32767),
           "int32": (-2**31, 2**31 - 1), "uint32": (0, 2**32 - 1),
           "int4": (-8, 7), "uint4": (0, 15), "int2": (-2, 1), "uint2": (0, 3)}
_QFLOATS = ("float8e4m3fn", "float8e4m3fnuz", "float8e5m2", "float8e5m2fnuz", "float4e2m1")


def _per_axis(b, p, x, axis, block):
    """Scale or zero point `p` shaped to broadcast against `x`: a scalar, one value per index
    along `axis`, or (block > 0) one per `block` indices along it."""
    rank = x.type.rank
    if p.type.rank == 0 or (p.type.rank == 1 and p.shape[0] == 1 and block == 0):
        return p if p.type.rank == 0 else b.op("reshape", [p], shape=())
    axis = norm_axis(axis, rank)    # only a per-axis or blocked parameter reads it
    if block > 0:
        if p.type.rank != rank:
            raise ShapeError(f"a blocked scale must have the input's rank {rank}, got shape {list(p.shape)}")
        pos = b.op("div", [_iota(b, x.shape[axis], 1, 0), b.scalar(block, "int64")])
        return b.op("gather", [p, pos], axis=axis)
    if p.type.rank != 1:
        raise ShapeError(f"a per-axis scale must be 1-D, got shape {list(p.shape)}")
    return b.op("reshape", [p], shape=tuple(p.shape[0] if i == axis else 1 for i in range(rank)))


def _q_attrs(n, x):
    at = attrs_of(n)
    return int(at.get("axis", 1)), int(at.get("block_size", 0)), at


@converter("DequantizeLinear")
def _dequantize(b, n, ins, opset):
    x, scale = ins[0], ins[1]
    zp = ins[2] if len(ins) > 2 and ins[2] is not None else None
    axis, block, at = _q_attrs(n, x)
    out = from_onnx(at["output_dtype"]) if at.get("output_dtype") else scale.dtype
    work = "float32" if out != "float64" else out
    s = b.op("cast", [_per_axis(b, scale, x, axis, block)], to=work)
    xf = b.op("cast", [x], to=work)
    if zp is not None:
        xf = b.op("sub", [xf, b.op("cast", [_per_axis(b, zp, x, axis, block)], to=work)])
    y = b.op("mul", [xf, s])
    return y if out == work else b.op("cast", [y], to=out, _name=n.name)


@converter("QuantizeLinear")
def _quantize(b, n, ins, opset):
    x, scale = ins[0], ins[1]
    zp = ins[2] if len(ins) > 2 and ins[2] is not None else None
    axis, block, at = _q_attrs(n, x)
    out = from_onnx(at["output_dtype"]) if at.get("output_dtype") else (zp.dtype if zp is not None else "uint8")
    if out not in _QRANGE and out not in _QFLOATS:
        raise ConvertError(f"QuantizeLinear to {out} is not supported "
                           f"(supported: {', '.join(list(_QRANGE) + list(_QFLOATS))})")
    work = "float64" if x.dtype == "float64" or out in ("int32", "uint32") else "float32"
    q = b.op("div", [b.op("cast", [x], to=work), b.op("cast", [_per_axis(b, scale, x, axis, block)], to=work)])
    if out in _QFLOATS:    # a float8/float4 result: the scaled value rounded by the cast itself
        if zp is not None:
            q = b.op("add", [q, b.op("cast", [_per_axis(b, zp, x, axis, block)], to=work)])
        sat = {"saturate": int(at.get("saturate", 1))} if out.startswith("float8") else {}
        return b.op("cast", [q], to=out, _name=n.name, **sat)
    q = b.op("round", [q])
    if zp is not None:
        q = b.op("add", [q, b.op("cast", [_per_axis(b, zp, x, axis, block)], to=work)])
    lo, hi = _QRANGE[out]
    q = b.op("min", [b.op("max", [q, b.scalar(lo, work)]), b.scalar(hi, work)])
    return b.op("cast", [q], to=out, _name=n.name)


# ------------------------------------------------------------------- integer and QLinear ops
def _centered(b, x, zp, like_axis=None, rank=None):
    """x - zero point, exactly, as float64 (products and sums of such values stay exact)."""
    xf = b.op("cast", [x], to="float64")
    if zp is None:
        return xf
    z = b.op("cast", [zp], to="float64")
    if like_axis is not None and z.type.rank == 1 and z.shape[0] != 1:
        z = b.op("reshape", [z], shape=tuple(z.shape[0] if i == like_axis else 1 for i in range(rank)))
    elif z.type.rank == 1 and z.shape[0] == 1:
        z = b.op("reshape", [z], shape=())
    return b.op("sub", [xf, z])


def _requantize(b, acc, multiplier, y_zp, out):
    """Round acc * multiplier (+ zero point) to nearest even and saturate to `out`."""
    y = b.op("mul", [acc, b.op("cast", [multiplier], to="float64")])
    if y_zp is not None:
        y = b.op("add", [y, b.op("cast", [y_zp], to="float64")])
    lo, hi = _QRANGE[out]
    y = b.op("min", [b.op("max", [b.op("round", [y]), b.scalar(lo, "float64")]), b.scalar(hi, "float64")])
    return b.op("cast", [y], to=out)


def _int_matmul(b, a, azp, w, wzp, name=""):
    """a @ w with both zero points subtracted, as int32 (exact): the int16 GEMM kernel
    (`matmul_int`) where w and its zero point are constants of rank <= 2 and A's zero point is
    per tensor or per row, else a float64 matmul (exact too: |products| < 2^17, sums < 2^53)."""
    eight = ("uint8", "int8")
    const_w = w.is_const and (wzp is None or wzp.is_const) and w.type.rank in (1, 2)
    if const_w and a.dtype in eight and w.dtype in eight and (azp is None or azp.type.rank <= 1 or a.type.rank == 2):
        wv = np.asarray(w.const, np.int16).reshape(w.shape[0], -1)
        if wzp is not None:
            wv = wv - np.asarray(wzp.const, np.int16).reshape(1, -1)
        a16 = b.op("cast", [a], to="int16")
        if azp is not None:
            z = b.op("cast", [azp], to="int16")
            if z.type.rank == 1 and z.shape[0] != 1:        # per row (a is [M, K])
                z = b.op("reshape", [z], shape=(z.shape[0], 1))
            elif z.type.rank == 1:
                z = b.op("reshape", [z], shape=())
            a16 = b.op("sub", [a16, z])
        if w.type.rank == 2:
            return b.op("matmul_int", [a16, const_value(pack_int_pairs(wv))], n=int(wv.shape[1]), _name=name)
        acc = b.op("matmul_int", [a16, const_value(pack_int_pairs(wv))], n=1)
        return b.op("reshape", [acc], shape=tuple(acc.shape[:-1]), _name=name)
    if azp is not None and azp.type.rank == 1 and azp.shape[0] != 1 and a.type.rank == 2:
        azp = b.op("reshape", [azp], shape=(azp.shape[0], 1))
    acc = b.op("matmul", [_centered(b, a, azp), _centered(b, w, wzp, -1 % max(w.type.rank, 1), w.type.rank)])
    return b.op("cast", [acc], to="int32", _name=name)


@converter("MatMulInteger")
def _matmul_integer(b, n, ins, opset):
    a, w = ins[0], ins[1]
    azp = ins[2] if len(ins) > 2 else None
    wzp = ins[3] if len(ins) > 3 else None
    return _int_matmul(b, a, azp, w, wzp, n.name)


@converter("QLinearMatMul")
def _qlinear_matmul(b, n, ins, opset):
    a, a_s, a_zp, w, w_s, w_zp, y_s, y_zp = (list(ins) + [None] * 8)[:8]
    out = y_zp.dtype if y_zp is not None else a.dtype
    acc = b.op("cast", [_int_matmul(b, a, a_zp, w, w_zp)], to="float64")
    mult = b.op("div", [b.op("mul", [a_s, w_s]), y_s])     # in float32, as the spec's reference computes it
    return _requantize(b, acc, mult, y_zp, out)


def _int_conv(b, n, x, xzp, w, wzp):
    """The convolution of x and w, both zero points subtracted, as int32 (exact), on the
    int16 GEMM kernel (`weights_matmul_int`) where w and its zero point are constants, the
    groups 1 and x's zero point per tensor: the columns (im2col, or x itself for a 1x1)
    packed by pixel blocks and pairs of k. None where that does not apply."""
    at = attrs_of(n)
    eight = ("uint8", "int8")
    if not (w.is_const and (wzp is None or wzp.is_const) and int(at.get("group", 1)) == 1
            and x.dtype in eight and w.dtype in eight and x.type.rank >= 3 and w.type.rank == x.type.rank
            and (xzp is None or xzp.type.rank == 0 or tuple(xzp.shape) == (1,))):
        return None
    m = w.shape[0]
    wv = np.asarray(w.const, np.int16).reshape(m, -1)
    if wzp is not None:
        wv = wv - np.asarray(wzp.const, np.int16).reshape(-1, 1)     # per tensor or per output channel
    x16 = b.op("cast", [x], to="int16")
    if xzp is not None:
        x16 = b.op("sub", [x16, b.op("reshape", [b.op("cast", [xzp], to="int16")], shape=())])
    x16, at = _same_padded(b, x16, w.shape[2:], at, 0)     # (0: the zero point, centered)
    kernel, strides, dil, pads, out = _spatial(x16.shape, w.shape[2:], at, n.op_type)
    imgs, kk, npix = x16.shape[0], wv.shape[1], S.prod(out)
    if isinstance(x16.shape[1], int) and x16.shape[1] * S.prod(kernel) != kk:    # (a symbolic one: the reshape's guard)
        raise ShapeError(f"{n.op_type}: weights {list(w.shape)} against input channels {x16.shape[1]}")
    if all(k == 1 for k in kernel) and all(s == 1 for s in strides) and not any(pads):
        col = b.op("reshape", [x16], shape=(imgs, kk, npix))
    else:
        col = b.op("im2col", [x16], group=1, kernel=tuple(kernel), strides=tuple(strides), pads=tuple(pads),
                   dilations=tuple(dil), out=tuple(out))
        col = b.op("reshape", [col], shape=(imgs, kk, npix))
    y = b.op("weights_matmul_int", [const_value(pack_int_rows(wv)), b.op("pack_columns_int", [col])],
             images=imgs, p=npix)
    return b.op("reshape", [y], shape=(imgs, m) + tuple(out))


@converter("ConvInteger")
def _conv_integer(b, n, ins, opset):
    x, w = ins[0], ins[1]
    xzp = ins[2] if len(ins) > 2 else None
    wzp = ins[3] if len(ins) > 3 else None
    acc = _int_conv(b, n, x, xzp, w, wzp)
    if acc is not None:
        return b.op("reshape", [acc], shape=tuple(acc.shape), _name=n.name)
    acc = _conv(b, n, [_centered(b, x, xzp), _centered(b, w, wzp, 0, w.type.rank)], opset)
    return b.op("cast", [acc], to="int32", _name=n.name)


@converter("QLinearConv")
def _qlinear_conv(b, n, ins, opset):
    x, x_s, x_zp, w, w_s, w_zp, y_s, y_zp, bias = (list(ins) + [None] * 9)[:9]
    out = y_zp.dtype if y_zp is not None else x.dtype
    acc = _int_conv(b, n, x, x_zp, w, w_zp)
    if acc is not None:
        if bias is not None:
            acc = b.op("add", [acc, b.op("reshape", [bias], shape=(bias.shape[0],) + (1,) * (acc.type.rank - 2))])
        acc = b.op("cast", [acc], to="float64")
    else:
        xs = [_centered(b, x, x_zp), _centered(b, w, w_zp, 0, w.type.rank)]
        if bias is not None:
            xs.append(b.op("cast", [bias], to="float64"))
        acc = _conv(b, n, xs, opset)
    mult = b.op("div", [b.op("mul", [x_s, w_s]), y_s])
    if mult.type.rank == 1 and mult.shape[0] != 1:     # per output channel
        mult = b.op("reshape", [mult], shape=(mult.shape[0],) + (1,) * (acc.type.rank - 2))
    return _requantize(b, acc, mult, y_zp, out)


@converter("BitCast")
def _bitcast(b, n, ins, opset):
    x, to = ins[0], from_onnx(attrs_of(n)["to"])
    if itemsize(to) != itemsize(x.dtype) or x.dtype in NARROW or to in NARROW:
        raise ConvertError(f"BitCast from {x.dtype} to {to} changes the element size; Ember supports BitCast "
                           f"between types of one size (not the narrow types)")
    if x.dtype == to:
        return x
    return b.op("bitcast", [x], to=to, _name=n.name)


# ------------------------------------------------------------------------------- DFT, STFT
def _twiddles(b, n_in, n_out, length, inverse, onesided, dtype):
    """(C, S) [n_in, n_out]: cos and sin of 2 pi j k / length, as constants of `dtype` (for an
    inverse one-sided transform, rows are bins weighted for the real signal they rebuild)."""
    j = np.arange(n_in, dtype=np.float64)[:, None]
    k = np.arange(n_out, dtype=np.float64)[None, :]
    ang = 2.0 * np.pi * ((j * k) % length) / length
    c, s = np.cos(ang), np.sin(ang)
    if inverse:
        w = np.full((n_in, 1), 1.0 / length)
        if onesided:        # bins 1 .. length/2 - 1 stand for their conjugate pair too
            w[1:] *= 2.0
            if length % 2 == 0 and n_in > length // 2:
                w[length // 2] /= 2.0
        c, s = c * w, s * w
    return const_value(c.astype(to_numpy(dtype))), const_value(s.astype(to_numpy(dtype)))


def _fit_length(b, v, n):
    """v [..., L] cut or zero-padded to [..., n] along its last axis."""
    d = v.shape[-1]
    if d == n:
        return v
    if d > n:
        return b.op("slice", [v], starts=(0,) * v.type.rank, steps=(1,) * v.type.rank,
                    sizes=tuple(v.shape[:-1]) + (n,))
    return b.op("pad", [v, b.scalar(0.0, v.dtype)], pre=(0,) * v.type.rank,
                post=(0,) * (v.type.rank - 1) + (n - d,), mode="constant")


def dft(b, x, axis, length, inverse, onesided):
    """The DFT of x [..., L along `axis`, ..., 1 or 2 (real, imaginary)] as matmuls with
    constant twiddle matrices: [..., bins, ..., 2], or [..., length, ..., 1] for the inverse
    one-sided (real) transform."""
    rank = x.type.rank
    if not isinstance(x.shape[-1], int):
        raise ConvertError(f"DFT: the last dim ({x.shape[-1]}: real or complex) must be known when compiling")
    if x.shape[-1] not in (1, 2):
        raise ShapeError(f"DFT: the last dim holds (real[, imaginary]) and must be 1 or 2, got {x.shape[-1]}")
    if not 0 <= axis < rank - 1:
        raise ShapeError(f"DFT: axis {axis} must name a signal dim (not the last, of size {x.shape[-1]})")
    perm = tuple(i for i in range(rank - 1) if i != axis) + (axis,)
    parts = [b.op("transpose", [take(b, x, rank - 1, c)], perm=perm) for c in range(x.shape[-1])]
    if inverse and onesided:
        bins, n_out = length // 2 + 1, length
    else:
        bins, n_out = length, (length // 2 + 1 if onesided else length)
    parts = [_fit_length(b, p, bins) for p in parts]
    c, s = _twiddles(b, bins, n_out, length, inverse, onesided, parts[0].dtype)
    re = parts[0]
    im = parts[1] if len(parts) > 1 else None
    mm = lambda u, w: b.op("matmul", [u, w])
    # forward: x e^{-i theta}; inverse: x e^{+i theta} (the 1/length is in the twiddles)
    if inverse and onesided:
        outs = [mm(re, c) if im is None else b.op("sub", [mm(re, c), mm(im, s)])]
    else:
        # (re + i im)(cos + i sign sin), sign +1 inverse, -1 forward: (re cos - sign im sin) + i (im cos + sign re sin)
        if im is None:
            y_re = mm(re, c)
            y_im = mm(re, s) if inverse else b.op("neg", [mm(re, s)])
        else:
            rc, rs, ic, is_ = mm(re, c), mm(re, s), mm(im, c), mm(im, s)
            y_re = b.op("sub", [rc, is_]) if inverse else b.op("add", [rc, is_])
            y_im = b.op("add", [ic, rs]) if inverse else b.op("sub", [ic, rs])
        outs = [y_re, y_im]
    back = [0] * (rank - 1)
    for pos, src in enumerate(perm):
        back[src] = pos
    outs = [b.op("transpose", [o], perm=tuple(back)) for o in outs]
    return stack(b, outs, rank - 1)


@converter("DFT")
def _dft(b, n, ins, opset):
    at = attrs_of(n)
    x = ins[0]
    if opset >= 20:
        axis = int(np.asarray(known(ins[2], "DFT axis")).reshape(-1)[0]) if len(ins) > 2 and ins[2] is not None else -2
    else:
        axis = int(at.get("axis", 1))
    axis = axis + x.type.rank if axis < 0 else axis
    inverse, onesided = bool(at.get("inverse", 0)), bool(at.get("onesided", 0))
    if len(ins) > 1 and ins[1] is not None:
        length = int(np.asarray(known(ins[1], "DFT dft_length")).reshape(-1)[0])
    else:
        d = x.shape[axis] if 0 <= axis < x.type.rank else None
        if not isinstance(d, int):
            raise ConvertError(f"DFT: the signal length ({d}) must be known when compiling (the twiddle factors "
                               f"are constants)")
        length = 2 * (d - 1) if inverse and onesided else d
    if length < 1:
        raise ShapeError(f"DFT: dft_length must be positive, got {length}")
    return dft(b, x, axis, length, inverse, onesided)


@converter("STFT")
def _stft(b, n, ins, opset):
    """Frames gathered with one constant index (the signal zero-padded past its end),
    windowed, and transformed by `dft`."""
    x = ins[0]
    if x.type.rank != 3 or not all(isinstance(d, int) for d in x.shape[1:]):
        raise ConvertError(f"STFT: the signal [batch, length, 1 or 2] must have a length known when compiling, got "
                           f"{list(x.shape)}")
    step = int(np.asarray(known(ins[1], "STFT frame_step")).reshape(-1)[0])
    window = ins[2] if len(ins) > 2 else None
    fl = ins[3] if len(ins) > 3 else None
    length = x.shape[1]
    if fl is not None:
        fl = int(np.asarray(known(fl, "STFT frame_length")).reshape(-1)[0])
    elif window is not None:
        fl = window.shape[0]
    else:
        fl = length
    win = window.shape[0] if window is not None else fl
    if not isinstance(win, int) or step < 1 or fl < 1 or fl > length:
        raise ShapeError(f"STFT: frame_step {step} and frame_length {fl} (window {win}) do not fit a signal of "
                         f"{length} samples")
    frames = 1 + (length - fl) // step
    need = (frames - 1) * step + win
    if need > length:
        x = b.op("pad", [x, b.scalar(0.0, x.dtype)], pre=(0, 0, 0), post=(0, need - length, 0), mode="constant")
    pos = (np.arange(frames)[:, None] * step + np.arange(win)[None, :]).astype(np.int64)
    y = b.op("gather", [x, const_value(pos)], axis=1)                   # [batch, frames, win, C]
    if window is not None:
        y = b.op("mul", [y, b.op("reshape", [window], shape=(1, 1, win, 1))])
    return dft(b, y, 2, fl, False, bool(attrs_of(n).get("onesided", 1)))


@converter("MelWeightMatrix")
def _mel_weight_matrix(b, n, ins, opset):
    """The [dft_length / 2 + 1, num_mel_bins] triangular filter bank, a constant: its inputs
    are known when compiling."""
    mels, length, rate, lo, hi = (np.asarray(known(v, "MelWeightMatrix input")).reshape(-1)[0] for v in ins)
    mels, length, rate = int(mels), int(length), int(rate)
    if mels < 1 or length < 1 or rate < 1:
        raise ShapeError(f"MelWeightMatrix: num_mel_bins {mels}, dft_length {length} and sample_rate {rate} must "
                         f"be positive")
    to_mel = lambda hz: 2595.0 * np.log10(1.0 + hz / 700.0)
    edges = to_mel(float(lo)) + np.arange(mels + 2) * (to_mel(float(hi)) - to_mel(float(lo))) / (mels + 2)
    hz = 700.0 * (10.0 ** (edges / 2595.0) - 1.0)
    bins = (((length + 1) * hz) // rate).astype(np.int64)
    if bins.min() < 0 or bins.max() > length // 2:
        raise ShapeError(f"MelWeightMatrix: the band {lo} to {hi} Hz reaches outside the {length // 2 + 1} bins of a "
                         f"{length}-point DFT at {rate} Hz")
    out = np.zeros((length // 2 + 1, mels))
    for i in range(mels):
        left, mid, right = bins[i], bins[i + 1], bins[i + 2]
        if mid == left:
            out[mid, i] = 1.0
        else:
            out[left:mid + 1, i] = (np.arange(left, mid + 1) - left) / (mid - left)
        if right > mid:
            out[mid:right, i] = (right - np.arange(mid, right)) / (right - mid)
    dtype = from_onnx(attrs_of(n).get("output_datatype", 1))
    return const_value(out.astype(to_numpy(dtype)))


# ---------------------------------------------------------------------------------- Resize
@converter("Resize", "Upsample")
def _resize(b, n, ins, opset):
    at, x = attrs_of(n), ins[0]
    rank = x.type.rank
    if n.op_type == "Upsample" or opset < 11:       # (X, scales) or the scales attribute, nearest/linear
        scales_v = ins[1] if len(ins) > 1 else None
        roi = sizes = None
        scales = at.get("scales") if scales_v is None else np.asarray(known(scales_v, "Resize scales")).tolist()
        coord = "asymmetric"
        mode = {"bilinear": "linear"}.get(at.get("mode", "nearest"), at.get("mode", "nearest"))
        nearest, cubic_a, excl, extrap, axes, policy = "floor", -0.75, 0, 0.0, None, "stretch"
    else:
        roi_v = ins[1] if len(ins) > 1 else None
        scales_v = ins[2] if len(ins) > 2 else None
        sizes_v = ins[3] if len(ins) > 3 else None
        if at.get("antialias", 0):
            raise ConvertError("Resize with antialias=1 is not supported")
        mode = at.get("mode", "nearest")
        coord = at.get("coordinate_transformation_mode", "half_pixel")
        nearest = at.get("nearest_mode", "round_prefer_floor")
        cubic_a, excl = float(at.get("cubic_coeff_a", -0.75)), int(at.get("exclude_outside", 0))
        extrap, axes = float(at.get("extrapolation_value", 0.0)), at.get("axes")
        policy = at.get("keep_aspect_ratio_policy", "stretch")
        scales = np.asarray(known(scales_v, "Resize scales")).tolist() if scales_v is not None else None
        sizes = ints_of(sizes_v, "Resize sizes") if sizes_v is not None else None
        if scales is not None and len(scales) == 0:
            scales = None
        if sizes is not None and len(sizes) == 0:
            sizes = None
        roi = np.asarray(known(roi_v, "Resize roi")).tolist() if roi_v is not None and coord == "tf_crop_and_resize" \
            else None
    if mode not in ("nearest", "linear", "cubic"):
        raise ShapeError(f"Resize mode is '{mode}', expected nearest, linear or cubic")
    if mode != "nearest" and not x.dtype.startswith("float"):
        raise ConvertError(f"Resize mode '{mode}' on {x.dtype} is not supported (floats only)")
    if (scales is None) == (sizes is None):
        raise ShapeError("Resize needs exactly one of scales and sizes")
    axes = [norm_axis(a, rank) for a in axes] if axes else list(range(rank))
    if scales is not None:
        for a, sc in zip(axes, scales):
            if not isinstance(x.shape[a], int) and not float(sc).is_integer():
                # floor(s * 1.5) has no exact symbolic form; an integer scale keeps s * k
                raise ConvertError(f"Resize by the non-integer scale {sc} of dimension {a}, of symbolic size "
                                   f"'{x.shape[a]}', is not supported")
    full_scales, out = [1.0] * rank, list(x.shape)
    if scales is not None:
        if len(scales) != len(axes):
            raise ShapeError(f"Resize scales has {len(scales)} values, expected {len(axes)}")
        for a, sc in zip(axes, scales):
            if sc <= 0:
                raise ShapeError(f"Resize scale {sc} must be positive")
            if not isinstance(x.shape[a], int):
                full_scales[a], out[a] = float(sc), x.shape[a] * int(sc)
                continue
            full_scales[a], out[a] = float(sc), int(math.floor(x.shape[a] * sc + 1e-9)) if n.op_type != "Upsample" \
                and opset >= 11 else int(math.floor(x.shape[a] * sc))
    else:
        if len(sizes) != len(axes):
            raise ShapeError(f"Resize sizes has {len(sizes)} values, expected {len(axes)}")
        if any(not isinstance(x.shape[a], int) for a in axes):
            raise ConvertError("Resize to sizes along a dimension of symbolic size is not supported")
        ratios = [sz / x.shape[a] for a, sz in zip(axes, sizes)]
        if policy != "stretch":
            r = min(ratios) if policy == "not_larger" else max(ratios)
            ratios = [r] * len(axes)
            sizes = [int(math.floor(x.shape[a] * r + 0.5)) for a in axes]
        for a, sz, r in zip(axes, sizes, ratios):
            full_scales[a], out[a] = float(r), int(sz)
    roi_pairs = None
    if coord == "tf_crop_and_resize":
        if roi is None or len(roi) != 2 * len(axes):
            raise ShapeError(f"Resize tf_crop_and_resize needs a roi of {2 * len(axes)} values")
        roi_pairs = [(0.0, 1.0)] * rank
        for k, a in enumerate(axes):
            roi_pairs[a] = (float(roi[k]), float(roi[k + len(axes)]))
    lens = tuple(float(d * sc) if isinstance(d, int) else d * int(sc) for d, sc in zip(x.shape, full_scales)) \
        if scales is not None else None
    return b.op("resize", [x], out=tuple(out), scales=tuple(full_scales), lens=lens, mode=mode, coord=coord,
                nearest=nearest,
                cubic_a=cubic_a, exclude_outside=excl, extrapolation=extrap,
                roi=tuple(roi_pairs) if roi_pairs else None, _name=n.name)


# --------------------------------------------------------------------------- ConvTranspose
@converter("Col2Im")
def _col2im(b, n, ins, opset):
    at = attrs_of(n)
    image = [int(v) for v in np.asarray(known(ins[1], "Col2Im image_shape")).reshape(-1)]
    block = [int(v) for v in np.asarray(known(ins[2], "Col2Im block_shape")).reshape(-1)]
    nd = len(image)
    strides = list(at.get("strides", [1] * nd))
    dil = list(at.get("dilations", [1] * nd))
    pads = list(at.get("pads", [0] * 2 * nd))
    if len(block) != nd or len(strides) != nd or len(dil) != nd or len(pads) != 2 * nd or min(block + strides + dil) < 1:
        raise ShapeError(f"Col2Im: image_shape {image}, block_shape {block}, strides {strides}, dilations {dil} and "
                         f"pads {pads} must agree in length (pads twice) and be positive")
    blocks = [(image[i] + pads[i] + pads[i + nd] - dil[i] * (block[i] - 1) - 1) // strides[i] + 1 for i in range(nd)]
    if min(blocks) < 1:
        raise ShapeError(f"Col2Im: block_shape {block} does not fit image_shape {image} with these pads")
    return b.op("col2im", [ins[0]], image=tuple(image), block=tuple(block), strides=tuple(strides),
                pads=tuple(pads), dilations=tuple(dil), blocks=tuple(blocks), _name=n.name)


@converter("RoiAlign")
def _roi_align(b, n, ins, opset):
    at = attrs_of(n)
    ratio = int(at.get("sampling_ratio", 0))
    if ratio <= 0:
        raise ConvertError("RoiAlign with sampling_ratio 0 (samples per bin from each region's size, which the "
                           "data sets) is not supported; give a positive sampling_ratio")
    mode = at.get("mode", "avg")
    ctm = at.get("coordinate_transformation_mode", "half_pixel" if opset >= 16 else "output_half_pixel")
    if mode not in ("avg", "max") or ctm not in ("half_pixel", "output_half_pixel"):
        raise ShapeError(f"RoiAlign mode '{mode}' / coordinate_transformation_mode '{ctm}' is not one the spec defines")
    x = ins[0]
    if x.dtype not in ("float16", "float32", "float64"):
        raise ConvertError(f"RoiAlign of {x.dtype} input is not supported")
    out = (int(at.get("output_height", 1)), int(at.get("output_width", 1)))
    return b.op("roi_align", list(ins), out=out, grid=(ratio, ratio), scale=float(at.get("spatial_scale", 1.0)),
                half_pixel=int(ctm == "half_pixel"), mode=mode, _name=n.name)


@converter("GridSample")
def _grid_sample(b, n, ins, opset):
    at = attrs_of(n)
    mode = {"bilinear": "linear", "bicubic": "cubic"}.get(at.get("mode", "linear" if opset >= 20 else "bilinear"),
                                                         at.get("mode", "linear"))
    pad = at.get("padding_mode", "zeros")
    if mode not in ("nearest", "linear", "cubic") or pad not in ("zeros", "border", "reflection"):
        raise ShapeError(f"GridSample mode '{mode}' / padding_mode '{pad}' is not one the spec defines")
    x, grid = ins
    if x.dtype not in ("float16", "float32", "float64"):
        raise ConvertError(f"GridSample of {x.dtype} input is not supported")
    return b.op("grid_sample", [x, grid], mode=mode, padding=pad, align=int(at.get("align_corners", 0)),
                _name=n.name)


def _conv_transpose_gemm(b, n, x, w, bias, g, kernel, strides, dil, outpad, pads):
    """A strided ConvTranspose as one GEMM and a gather: a 1x1 convolution gives every
    input pixel's contribution to each kernel tap, [N, Cout * taps, d0, d1], then each
    output pixel sums the taps that land on it. Each tap's plane is spread by the stride
    (zeros between) and shifted by its offset, all in one fused pointwise kernel. This does
    the stride^nd fewer multiplies of the real product, where the zero-stuffed convolution
    multiplies the inserted zeros too."""
    nd = len(kernel)
    spatial = tuple(x.shape[2:])
    cin, cout_g = w.shape[0], w.shape[1]
    cin_g, taps = cin // g, int(np.prod(kernel))
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
    out = [s * (d - 1) + e + op - pads[i] - pads[i + nd]
           for i, (s, d, e, op) in enumerate(zip(strides, spatial, eff, outpad))]
    if any(isinstance(o, int) and o <= 0 for o in out):          # the pads leave nothing
        shape = (x.shape[0], g * cout_g) + tuple(max(o, 0) if isinstance(o, int) else o for o in out)
        return b.op("expand", [b.scalar(0, x.dtype)], shape=shape, _name=n.name)
    # weights [Cin, Cout/g, k..] -> [g, Cin/g, Cout/g * taps] -> [g, Cout/g * taps, Cin/g] -> 1x1 conv weights
    wc = b.op("reshape", [w], shape=(g, cin_g, cout_g * taps))
    wc = b.op("transpose", [wc], perm=(0, 2, 1))
    wc = b.op("reshape", [wc], shape=(g * cout_g * taps, cin_g) + (1,) * nd)
    cols = b.op("conv", [x, wc], group=g, kernel=(1,) * nd, strides=(1,) * nd, dilations=(1,) * nd,
                pads=(0,) * (2 * nd), out=spatial)
    c = g * cout_g
    cols = b.op("reshape", [cols], shape=(x.shape[0], c) + tuple(kernel) + spatial)
    zero = b.scalar(0, x.dtype)
    total = None
    if list(kernel) == list(strides) and not any(pads) and not any(outpad) and all(d == 1 for d in dil):
        # the taps tile the output: a pixel shuffle, [N, C, k0, k1, d0, d1] -> [N, C, d0 k0, d1 k1]
        perm = (0, 1) + tuple(v for i in range(nd) for v in (2 + nd + i, 2 + i))
        total = b.op("transpose", [cols], perm=perm)
        total = b.op("reshape", [total], shape=(x.shape[0], c) + tuple(d * k for d, k in zip(spatial, kernel)),
                     **({} if bias is not None else {"_name": n.name}))
    taps_needed = total is None
    for tap in (np.ndindex(*kernel) if taps_needed else ()):
        plane = b.op("slice", [cols], starts=(0, 0) + tap + (0,) * nd, steps=(1,) * (2 + 2 * nd),
                     sizes=(x.shape[0], c) + (1,) * nd + spatial)
        # [N, C, d0, 1, d1, 1], each 1 padded to the stride, merged: the plane spread by the stride
        plane = b.op("reshape", [plane], shape=(x.shape[0], c) + tuple(v for d in spatial for v in (d, 1)))
        plane = b.op("pad", [plane, zero], pre=(0,) * (2 + 2 * nd),
                     post=(0, 0) + tuple(v for s in strides for v in (0, s - 1)), mode="constant")
        plane = b.op("reshape", [plane], shape=(x.shape[0], c) + tuple(d * s for d, s in zip(spatial, strides)))
        # shifted to the tap's offset, out to the uncropped length s (d - 1) + eff + output_padding
        pre = tuple(t * dd for t, dd in zip(tap, dil))
        post = tuple(e + op - s - p for e, op, s, p in zip(eff, outpad, strides, pre))
        plane = b.op("pad", [plane, zero], pre=(0, 0) + pre, post=(0, 0) + post, mode="constant")
        total = plane if total is None else b.op("add", [total, plane])
    if any(pads):
        total = b.op("pad", [total, zero], pre=(0, 0) + tuple(-p for p in pads[:nd]),
                     post=(0, 0) + tuple(-p for p in pads[nd:]), mode="constant",
                     **({} if bias is not None else {"_name": n.name}))
    if bias is not None:
        total = b.op("add", [total, b.op("reshape", [bias], shape=(c,) + (1,) * nd)], _name=n.name)
    return total


@converter("ConvTranspose")
def _conv_transpose(b, n, ins, opset):
    """The gradient of Conv. Strided: a GEMM and a gather of the taps (`_conv_transpose_gemm`).
    Stride 1: a Conv of the input padded by the kernel's extent less the pads (a negative
    pad crops), with the kernel flipped and its in/out channels swapped per group."""
    at = attrs_of(n)
    x, w = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 else None
    rank = x.type.rank
    nd = rank - 2
    if nd < 1 or w.type.rank != rank:
        raise ShapeError(f"ConvTranspose needs input and weights of one rank >= 3, got {x.shape} and {w.shape}")
    g = int(at.get("group", 1))
    kernel = list(at.get("kernel_shape") or w.shape[2:])
    if not all(isinstance(k, int) for k in kernel):
        raise ConvertError("ConvTranspose kernel size must be known when compiling")
    strides = list(at.get("strides") or [1] * nd)
    dil = list(at.get("dilations") or [1] * nd)
    outpad = list(at.get("output_padding") or [0] * nd)
    pads = list(at.get("pads") or [0] * (2 * nd))
    auto = at.get("auto_pad", "NOTSET")
    spatial = x.shape[2:]
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
    want = at.get("output_shape")
    if want is not None or auto in ("SAME_UPPER", "SAME_LOWER"):
        if not all(isinstance(d, int) for d in spatial):
            raise ConvertError("ConvTranspose with output_shape or auto_pad SAME needs static spatial dims")
        want = list(want)[-nd:] if want is not None else [d * s for d, s in zip(spatial, strides)]
        for i in range(nd):
            total = strides[i] * (spatial[i] - 1) + outpad[i] + eff[i] - want[i]
            half = total // 2
            pads[i], pads[i + nd] = (half, total - half) if auto == "SAME_UPPER" else (total - half, half)
    elif auto == "VALID":
        pads = [0] * (2 * nd)
    cin = w.shape[0]
    cout_g = w.shape[1]
    if isinstance(cin, int) and isinstance(x.shape[1], int) and cin != x.shape[1]:
        raise ShapeError(f"ConvTranspose weights have {cin} input channels, the input {x.shape[1]}")
    if any(s > 1 for s in strides):
        return _conv_transpose_gemm(b, n, x, w, bias, g, kernel, strides, dil, outpad, pads)
    up = x
    lo = [e - 1 - pads[i] for i, e in enumerate(eff)]
    hi = [e - 1 - pads[i + nd] + outpad[i] for i, e in enumerate(eff)]
    if any(v != 0 for v in lo + hi):
        up = b.op("pad", [up, b.scalar(0, x.dtype)], pre=(0, 0) + tuple(lo), post=(0, 0) + tuple(hi), mode="constant")
    # weights [Cin, Cout/g, k..] -> [g, Cin/g, Cout/g, k..] -> [g, Cout/g, Cin/g, k..] -> [Cout, Cin/g, k..], flipped
    cin_g = cin // g
    wk = tuple(w.shape[2:])
    wt = b.op("reshape", [w], shape=(g, cin_g, cout_g) + wk)
    wt = b.op("transpose", [wt], perm=(0, 2, 1) + tuple(range(3, 3 + nd)))
    wt = b.op("reshape", [wt], shape=(g * cout_g, cin_g) + wk)
    wt = b.op("slice", [wt], starts=(0, 0) + tuple(k - 1 for k in wk), steps=(1, 1) + (-1,) * nd,
              sizes=tuple(wt.shape))
    out = [u - e + 1 for u, e in zip(up.shape[2:], eff)]       # `up` is padded by now
    if any(isinstance(o, int) and o <= 0 for o in out):          # the pads leave nothing
        shape = (x.shape[0], g * cout_g) + tuple(max(o, 0) if isinstance(o, int) else o for o in out)
        return b.op("expand", [b.scalar(0, x.dtype)], shape=shape, _name=n.name)
    conv_ins = [up, wt] + ([bias] if bias is not None else [])
    return b.op("conv", conv_ins, group=g, kernel=tuple(kernel), strides=(1,) * nd, dilations=tuple(dil),
                pads=(0,) * (2 * nd), out=tuple(out), _name=n.name)


# ------------------------------------------------------------------------- LpPool, LRN
@converter("LpPool", "GlobalLpPool")
def _lppool(b, n, ins, opset):
    """(sum over the window of |x|^p)^(1/p): the window sum is an average pool that counts
    the padding, times the window size."""
    at, x = attrs_of(n), ins[0]
    p = float(at.get("p", 2))
    ax = b.op("abs", [x])
    powed = b.op("mul", [ax, ax]) if p == 2.0 else b.op("pow", [ax, _f(b, x, p)])
    if n.op_type == "GlobalLpPool":
        s = b.op("reduce_sum", [powed], axes=tuple(range(2, x.type.rank)), keepdims=1)
    else:
        powed, at = _same_padded(b, powed, None, at, 0)
        kernel, strides, dil, pads, out = _spatial(powed.shape, None, at, n.op_type)
        avg = b.op("pool", [powed], mode="avg", kernel=tuple(kernel), strides=tuple(strides), dilations=tuple(dil),
                   pads=tuple(pads), out=tuple(out), count_include_pad=1)
        s = b.op("mul", [avg, _f(b, x, float(math.prod(kernel)))])
    return b.op("sqrt", [s]) if p == 2.0 else b.op("pow", [s, _f(b, x, 1.0 / p)], _name=n.name)


@converter("LRN")
def _lrn(b, n, ins, opset):
    """x / (bias + alpha / size * (sum of x^2 over `size` channels around c))^beta."""
    at, x = attrs_of(n), ins[0]
    size = int(at["size"])
    alpha, beta, bias = float(at.get("alpha", 1e-4)), float(at.get("beta", 0.75)), float(at.get("bias", 1.0))
    rank = x.type.rank
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    sq = b.op("mul", [x, x])
    padded = b.op("pad", [sq, _f(b, x, 0)], pre=(0, lo) + (0,) * (rank - 2), post=(0, hi) + (0,) * (rank - 2),
                  mode="constant")
    total = None
    for k in range(size):
        part = b.op("slice", [padded], starts=(0, k) + (0,) * (rank - 2), steps=(1,) * rank, sizes=tuple(x.shape))
        total = part if total is None else b.op("add", [total, part])
    denom = b.op("add", [_f(b, x, bias), b.op("mul", [_f(b, x, alpha / size), total])])
    return b.op("div", [x, b.op("pow", [denom, _f(b, x, beta)])], _name=n.name)


# ---------------------------------------------------------------------------------- Einsum
def _einsum_terms(eq, ranks):
    eq = eq.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise ShapeError(f"Einsum equation '{eq}' has {len(terms)} operands, the node {len(ranks)}")
    letters = sorted({c for t in terms for c in t if c.isalpha()})
    spare = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" if c not in letters]
    ell = None
    out_terms = []
    for t, r in zip(terms, ranks):
        if "..." in t:
            k = r - (len(t) - 3)
            if ell is None:
                ell = "".join(spare[:k])
            if k > len(ell):     # operands may have different ellipsis ranks: the longest wins
                ell = "".join(spare[:k])
            t = t.replace("...", ell[len(ell) - k:] if k else "")
        if len(t) != r:
            raise ShapeError(f"Einsum term '{t}' has {len(t)} letters for an operand of rank {r}")
        out_terms.append(t)
    if arrow:
        out = rhs.replace("...", ell or "")
    else:   # implicit: the letters seen once, alphabetically, after the ellipsis dims
        once = sorted(c for c in letters if sum(t.count(c) for t in terms) == 1)
        out = (ell or "") + "".join(once)
    return out_terms, out


@converter("Einsum")
def _einsum(b, n, ins, opset):
    """Every operand transposed and unsqueezed onto one index space, multiplied (broadcast),
    and summed over the letters not in the output: one fused reduction, exact for any
    equation without diagonals, but not a GEMM (a large contraction is slow)."""
    terms, out = _einsum_terms(attrs_of(n)["equation"], [v.type.rank for v in ins])
    for t in terms:
        if len(set(t)) != len(t):
            raise ConvertError(f"Einsum term '{t}' repeats a letter (a diagonal), which is not supported")
    space = list(dict.fromkeys(out + "".join(terms)))
    size = {}
    for t, v in zip(terms, ins):
        for c, d in zip(t, v.shape):
            if size.get(c, 1) == 1:
                size[c] = d
    acc = None
    for t, v in zip(terms, ins):
        order = [t.index(c) for c in space if c in t]
        x = b.op("transpose", [v], perm=tuple(order)) if order != list(range(len(t))) else v
        shape = tuple(v.shape[t.index(c)] if c in t else 1 for c in space)
        x = b.op("reshape", [x], shape=shape)
        acc = x if acc is None else b.op("mul", [acc, x])
    summed = [i for i, c in enumerate(space) if c not in out]
    if summed:
        acc = b.op("reduce_sum", [acc], axes=summed, keepdims=0)
    kept = [c for c in space if c in out]
    if kept != list(out):
        acc = b.op("transpose", [acc], perm=tuple(kept.index(c) for c in out))
    full = tuple(size[c] for c in out)
    if tuple(acc.shape) != full:
        acc = b.op("expand", [acc], shape=full)
    return acc


# ------------------------------------------------------------------------------------ TopK
TOPK_LIMIT = 64     # TopK unrolls one arg-reduction per value taken


@converter("TopK")
def _topk(b, n, ins, opset):
    """The k largest (smallest) values along `axis` and their indices, sorted, ties to the
    smaller index: k rounds of an arg-reduction, each masking the element it took."""
    at, x = attrs_of(n), ins[0]
    rank = x.type.rank
    axis = norm_axis(at.get("axis", -1), rank)
    k = int(np.asarray(known(ins[1], "TopK k")).reshape(-1)[0]) if opset >= 10 else int(at["k"])
    largest = bool(at.get("largest", 1))
    d = x.shape[axis]
    if k < 0 or (isinstance(d, int) and k > d):
        raise ShapeError(f"TopK k = {k} is outside [0, {d}], the size of axis {axis}")
    if k > TOPK_LIMIT:
        raise ConvertError(f"TopK with k = {k} is not supported (at most {TOPK_LIMIT})")
    if k == 0:
        shape = tuple(0 if i == axis else s for i, s in enumerate(x.shape))
        return [b.op("expand", [b.scalar(0, x.dtype)], shape=shape),
                b.op("expand", [b.scalar(0, "int64")], shape=shape)]
    iota = _iota(b, d, rank, axis)
    fill = b.scalar(-math.inf if largest else math.inf, x.dtype) if x.dtype.startswith("float") else \
        b.scalar(np.iinfo(np.dtype(x.dtype)).min if largest else np.iinfo(np.dtype(x.dtype)).max, x.dtype)
    taken = b.op("expand", [b.scalar(False, "bool")], shape=x.shape)
    vals, idxs = [], []
    for _ in range(k):
        masked = b.op("where", [taken, fill, x])
        m = b.op("reduce_max" if largest else "reduce_min", [masked], axes=[axis], keepdims=1)
        hit = b.op("and", [b.op("eq", [masked, m]), b.op("not", [taken])])
        i = b.op("reduce_min", [b.op("where", [hit, iota, b.scalar(np.iinfo(np.int64).max, "int64")])],
                 axes=[axis], keepdims=1)
        vals.append(b.op("gather_elements", [x, i], axis=axis))
        idxs.append(i)
        taken = b.op("or", [taken, b.op("eq", [iota, i])])
    return [b.op("concat", vals, axis=axis), b.op("concat", idxs, axis=axis, _name=n.name)]


# -------------------------------------------------------------------------------- Scatter
def _scatter_along(b, data, idx, upd, axis, reduction, who):
    """ScatterElements as a gather: out[p] takes the updates whose index along `axis` is
    p[axis] (the last such for reduction none), or reduces them into data[p]. Indices and
    updates must match data's shape off the axis."""
    rank = data.type.rank
    d, kk = data.shape[axis], idx.shape[axis]
    for i, (a, c) in enumerate(zip(data.shape, idx.shape)):
        if i != axis and isinstance(a, int) and isinstance(c, int) and a != c:
            raise ConvertError(f"{who} indices smaller than the data off the axis (dimension {i}: {c} vs {a}) "
                               f"are not supported")
    if tuple(upd.shape) != tuple(idx.shape):
        upd = b.op("reshape", [upd], shape=tuple(idx.shape))      # (its guard checks they match)
    i64 = idx if idx.dtype == "int64" else b.op("cast", [idx], to="int64")
    i64 = b.op("where", [b.op("lt", [i64, b.scalar(0, "int64")]), b.op("add", [i64, b.op(
        "cast", [b.sym_scalar(d)], to="int64")]), i64])
    # rank+1 space: data's dims with the k axis (size K) right after `axis`
    ext = tuple(idx.shape[:axis]) + (1, kk) + tuple(idx.shape[axis + 1:])
    idx_e, upd_e = b.op("reshape", [i64], shape=ext), b.op("reshape", [upd], shape=ext)
    match = b.op("eq", [idx_e, _iota(b, d, rank + 1, axis)])
    if reduction == "none":
        k_iota = _iota(b, kk, rank + 1, axis + 1)
        last = b.op("reduce_max", [b.op("where", [match, k_iota, b.scalar(-1, "int64")])], axes=[axis + 1], keepdims=0)
        has = b.op("ge", [last, b.scalar(0, "int64")])
        val = b.op("gather_elements", [upd, b.op("max", [last, b.scalar(0, "int64")])], axis=axis)
        return b.op("where", [has, val, data])
    red, ident = {"add": ("reduce_sum", 0), "mul": ("reduce_prod", 1),
                  "max": ("reduce_max", -math.inf), "min": ("reduce_min", math.inf)}[reduction]
    if not data.dtype.startswith("float") and reduction in ("max", "min"):
        info = np.iinfo(np.dtype(data.dtype))
        ident = info.min if reduction == "max" else info.max
    r = b.op(red, [b.op("where", [match, upd_e, b.scalar(ident, data.dtype)])], axes=[axis + 1], keepdims=0)
    if reduction == "add":
        return b.op("add", [data, r])
    if reduction == "mul":
        return b.op("mul", [data, r])
    has = b.op("reduce_max", [b.op("cast", [match], to="int32")], axes=[axis + 1], keepdims=0)
    comb = b.op("max" if reduction == "max" else "min", [data, r])
    return b.op("where", [b.op("gt", [has, b.scalar(0, "int32")]), comb, data])


@converter("ScatterElements", "Scatter")
def _scatter_elements(b, n, ins, opset):
    at = attrs_of(n)
    data, idx, upd = ins
    axis = norm_axis(at.get("axis", 0), data.type.rank)
    red = at.get("reduction", "none")
    if red not in ("none", "add", "mul", "max", "min"):
        raise ShapeError(f"{n.op_type} reduction is '{red}', expected none, add, mul, max or min")
    return _scatter_along(b, data, idx, upd, axis, red, n.op_type)


@converter("ScatterND")
def _scatter_nd(b, n, ins, opset):
    """ScatterND as ScatterElements along axis 0 of data viewed as [prod(first q dims), rest]:
    each index tuple linearised, broadcast over the rest."""
    data, idx, upd = ins
    red = attrs_of(n).get("reduction", "none")
    q = idx.shape[-1]
    if not isinstance(q, int):
        raise ConvertError("ScatterND with index tuples of symbolic length is not supported")
    if q > data.type.rank:
        raise ShapeError(f"ScatterND index tuples of length {q} for data of rank {data.type.rank}")
    lead, rest = tuple(data.shape[:q]), tuple(data.shape[q:])
    jn = tuple(idx.shape[:-1])
    i64 = idx if idx.dtype == "int64" else b.op("cast", [idx], to="int64")
    lin = None
    for t in range(q):
        part = b.op("reshape", [b.op("gather", [i64, b.scalar(t, "int64")], axis=idx.type.rank - 1)], shape=jn)
        dim = b.op("cast", [b.sym_scalar(lead[t])], to="int64")
        part = b.op("where", [b.op("lt", [part, b.scalar(0, "int64")]), b.op("add", [part, dim]), part])
        lin = part if lin is None else b.op("add", [b.op("mul", [lin, dim]), part])
    jj, pp = S.prod(jn), S.prod(lead)
    lin = b.op("reshape", [lin], shape=(jj,) + (1,) * len(rest))
    lin = b.op("expand", [lin], shape=(jj,) + rest)
    upd2 = b.op("reshape", [upd], shape=(jj,) + rest)
    out = _scatter_along(b, b.op("reshape", [data], shape=(pp,) + rest), lin, upd2, 0, red, "ScatterND")
    return b.op("reshape", [out], shape=tuple(data.shape), _name=n.name)
