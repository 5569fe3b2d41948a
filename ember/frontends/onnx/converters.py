"""One converter per ONNX op type: normalises attributes across opsets and emits Ember ops."""
from __future__ import annotations

import math

import numpy as np

from ...errors import ShapeError
from ...ir import symbolic as S
from ...ir.dtypes import from_onnx
from ...ir.graph import const_value
from ...ir.ops import norm_axes, norm_axis

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


def known(v, what: str):
    """The compile-time value of an input that must be constant (possibly symbolic)."""
    if v is None:
        return None
    if not v.is_const:
        raise ConvertError(f"{what} is computed at run time; Ember needs it known when compiling "
                           f"(data-dependent shapes are not supported)")
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
    at = attrs_of(n)
    if not at.get("fmod", 0) and ins[0].dtype in ("float16", "float32", "float64"):
        raise ConvertError("Mod with fmod=0 is only defined for integers")
    if not at.get("fmod", 0):
        raise ConvertError("integer Mod (Python-style sign) is not supported yet; use fmod=1")
    return b.op("mod", ins, _name=n.name)


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
    to = from_onnx(attrs_of(n)["to"])
    if ins[0].dtype == to:
        return ins[0]
    return b.op("cast", [ins[0]], to=to, _name=n.name)


@converter("CastLike")
def _castlike(b, n, ins, opset):
    if ins[0].dtype == ins[1].dtype:
        return ins[0]
    return b.op("cast", [ins[0]], to=ins[1].dtype, _name=n.name)


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
        at = attrs_of(n)
        if len(ins) > 2 and ins[2] is not None and ins[2].is_const and bool(ins[2].const):
            raise ConvertError("Dropout in training mode is not supported for inference")
        if len(n.output) > 1 and n.output[1]:
            mask = b.op("expand", [b.scalar(True, "bool")], shape=ins[0].shape)
            return [ins[0], mask]
        del at
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


@converter("Conv")
def _conv(b, n, ins, opset):
    at = attrs_of(n)
    x, w = ins[0], ins[1]
    if x.type.rank < 3:
        raise ConvertError(f"Conv input must have rank >= 3, got {x.shape}")
    kernel, strides, dil, pads, out = _spatial(x.shape, w.shape[2:], at, "Conv")
    return b.op("conv", [v for v in ins if v is not None], group=int(at.get("group", 1)),
                kernel=tuple(kernel), strides=tuple(strides), dilations=tuple(dil), pads=tuple(pads),
                out=tuple(out), _name=n.name)


@converter("MaxPool", "AveragePool")
def _pool(b, n, ins, opset):
    at = attrs_of(n)
    if n.op_type == "MaxPool" and len(n.output) > 1 and n.output[1]:
        raise ConvertError("MaxPool's Indices output is not supported")
    if at.get("storage_order", 0):
        raise ConvertError("MaxPool storage_order=1 is not supported")
    kernel, strides, dil, pads, out = _spatial(ins[0].shape, None, at, n.op_type)
    return b.op("pool", [ins[0]], mode="max" if n.op_type == "MaxPool" else "avg",
                kernel=tuple(kernel), strides=tuple(strides), dilations=tuple(dil), pads=tuple(pads),
                out=tuple(out), count_include_pad=int(at.get("count_include_pad", 0)), _name=n.name)


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
    if len(n.output) > 1 and any(n.output[1:]):
        raise ConvertError("LayerNormalization's Mean/InvStdDev outputs are not supported")
    axis = norm_axis(at.get("axis", -1), ins[0].type.rank)
    return b.op("layer_norm", [v for v in ins if v is not None], axis=axis,
                epsilon=float(at.get("epsilon", 1e-5)), _name=n.name)


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
