"""Elementwise kernels: a kernel whose parameters are all scalars is a function of one element.

`inline_elementwise` translates it in expression mode against loop-IR operand expressions —
this is how a custom op (or a library math function) becomes part of a fused graph kernel,
exactly like a built-in pointwise op. `map_kernel` runs it over numpy arrays.
"""
from __future__ import annotations

import numpy as np

from ..codegen import loop_ir as L
from ..errors import InvalidInputError, KernelError
from .frontend import CT, Scope, Translator, Val, _count_assignments
from .types import DType, Param, float32


def inline_elementwise(kern, operands, params=None) -> L.Expr:
    """Loop-IR expression of `kern` applied to `operands` (loop-IR expressions, one per
    run-time parameter in order); `params` gives compile-time `Param` values by name."""
    return _translate(kern, operands, params, expr_mode=True)[1].e


def statements_storing(kern, operands, params, out_buf: int, index: L.Expr) -> list:
    """Loop-IR statements computing `kern` of `operands` and storing it to out_buf[index]: the
    statement-mode counterpart of `inline_elementwise`, for functions with loops (or returns
    inside them), which have no single expression."""
    tr, res = _translate(kern, operands, params, expr_mode=False)
    tr.emit(L.Store(out_buf, index, res.e))
    return tr.blocks.pop()


def _translate(kern, operands, params, expr_mode):
    params = dict(params or {})
    fn = kern.fn
    tr = Translator(fn, expr_mode=expr_mode, fastmath=kern.fastmath)
    tr.scope = Scope(None, dict(fn.__globals__))
    h = tr.helper_of(fn)
    tr._assign_counts = _count_assignments(h.node)
    args, kwargs = [], {}
    it = iter(operands)
    for name, ann in kern._annotations.items():
        if ann is Param:
            if name in params:
                kwargs[name] = CT(params[name])
            continue
        e = next(it)
        d = ann
        if e.dtype != _ldt(d):
            e = L.Cast(e, _ldt(d))
        # bfloat16 is a storage type: the value, rounded to it, computes as a float32
        kwargs[name] = Val(e, d) if d.name != "bfloat16" else Val(tr._round_bf16(e), float32)
    try:
        res = tr.inline(h, args, kwargs, None)
        res = tr.convert_to(res, kern._ret, "the return value")
    except KernelError as e:
        raise e.with_traceback(None) from None
    return tr, res


def _ldt(d: DType) -> str:
    return "float32" if d.name == "bfloat16" else d.name


def map_kernel(kern, bound):
    """Apply an elementwise kernel over arrays of one shape (scalars broadcast)."""
    arrays, shape = [], None
    for name, v in bound.arguments.items():
        if isinstance(v, np.ndarray):
            if shape is not None and v.shape != shape:
                raise InvalidInputError(f"kernel '{kern.__name__}': elementwise arguments must have one "
                                        f"shape, got {shape} and {v.shape}")
            shape = v.shape
    params = {}
    for name, v in bound.arguments.items():
        ann = kern._annotations[name]
        if ann is Param:
            params[name] = v
            continue
        want = ann.np if ann.name != "bfloat16" else np.dtype(np.float32)
        a = np.ascontiguousarray(np.broadcast_to(np.asarray(v, dtype=want), shape)).reshape(-1)
        arrays.append(a)
    key = ("map", tuple(sorted(params.items())))
    spec = kern._specs.get(key)
    if spec is None:
        spec = _compile_map(kern, params)
        kern._specs[key] = spec
    out = np.empty(int(np.prod(shape)), dtype=kern._ret.np if kern._ret.name != "bfloat16" else np.float32)
    import ctypes
    from .kernel import get_num_threads
    bases = (ctypes.c_void_p * (len(arrays) + 1))(*[a.ctypes.data for a in arrays], out.ctypes.data)
    sizes = np.array([out.size], dtype=np.int64)
    spec.fn(bases, sizes.ctypes.data, get_num_threads())
    return out.reshape(shape)


CHUNK = 16384     # elements per parallel task


def _compile_map(kern, params):
    from ..codegen import native
    from ..codegen.llvm import BufferInfo, ModuleBuilder
    from ..codegen.threadpool import ensure_pool
    from .kernel import Specialization
    runtime = [(n, a) for n, a in kern._annotations.items() if a is not Param]
    buffers = {k: BufferInfo(_ldt(a), k) for k, (_, a) in enumerate(runtime)}
    nout = len(runtime)
    buffers[nout] = BufferInfo(_ldt(kern._ret), nout)
    i, c = L.Var("i"), L.Var("c")
    loads = [L.Load(k, i, _ldt(a)) for k, (_, a) in enumerate(runtime)]
    n = L.SizeRef(0)
    lo = L.Bin("mul", c, L.Const(CHUNK, "int64"), "int64")
    hi = L.Bin("min", L.Bin("add", lo, L.Const(CHUNK, "int64"), "int64"), n, "int64")
    try:        # one expression: a vectorised loop
        val = inline_elementwise(kern, loads, params)
        width = max(native.vector_bits() // (8 * max(np.dtype(_ldt(kern._ret)).itemsize, 4)), 4)
        inner = L.For(i, lo, hi, [L.Store(nout, i, val)], vector=width)
    except KernelError:     # loops (a while, say): the function's statements, element by element
        inner = L.For(i, lo, hi, statements_storing(kern, loads, params, nout, i))
    nchunks = L.Bin("div", L.Bin("add", n, L.Const(CHUNK - 1, "int64"), "int64"), L.Const(CHUNK, "int64"), "int64")
    body = [L.For(c, L.Const(0, "int64"), nchunks, [inner], parallel=True)]
    kname = f"map_{kern.__name__}"
    k = L.Kernel(kname, body, (kern.__name__,), "lang")
    mb = ModuleBuilder(kname, buffers, native.vector_bits(), fastmath=kern.fastmath)
    mb.add_kernel(k)
    mb.add_entry()
    text = str(mb.module)
    obj, _ = native.get_object(text)
    ensure_pool()
    return Specialization(native.load_object(obj), None, text, L.kernel_str(k))
