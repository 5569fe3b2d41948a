"""`@ember.kernel`: compile a typed Python function, call it on numpy arrays.

A call binds the arguments, finds (or compiles) the specialisation for their kinds — tensor
dtype/rank/inner contiguity, scalar types, compile-time `Param` values — and makes one native
call. Specialisations are cached in memory by that key and their objects on disk by a hash of
the LLVM IR (the same cache as models).

Calling convention (the same as model kernels): `bases[k]` is the data pointer of the k-th
tensor argument (then an 8-byte slot for the return value); the int64 size table holds, per
tensor, its shape then its strides (in elements), then one 64-bit slot per scalar argument.

A kernel whose parameters are all scalars is also an elementwise function: called with
arrays it maps over them (same shapes, or scalars), and it can be registered as a graph op
(`ember.custom_op`) that fuses into its neighbours' kernels.
"""
from __future__ import annotations

import ctypes
import functools
import inspect
import os
import sys
import threading

import numpy as np

from ..codegen import loop_ir as L
from ..codegen import native
from ..codegen.llvm import BufferInfo, ModuleBuilder
from ..codegen.threadpool import default_threads, ensure_pool
from ..errors import EmberError, InvalidInputError, KernelError
from .frontend import CT, Scope, Translator, Val, View, _count_assignments, _parse
from .types import DType, Param, TensorType, dtype_of

_threads = threading.local()


def vector_width(dtype=None) -> int:
    """Lanes of `dtype` (float32 by default) in one vector register of the CPU that code is
    generated for: 16 on AVX-512, 8 on AVX2, 4 on SSE/NEON. Kernels that keep arrays of
    vectors in registers take their width from it (twice the register width spills)."""
    if isinstance(dtype, DType):
        size = dtype.np.itemsize if dtype.np is not None else 2          # (bfloat16)
    else:
        size = np.dtype(dtype or "float32").itemsize
    # (narrower types compute in float32 / int32 lanes)
    return max(native.vector_bits() // (8 * max(size, 4)), 4)


def set_num_threads(n: int | None):
    """Threads that `parallelize` may use in kernels called from this Python thread
    (None: the default, all the cores this process may run on)."""
    _threads.n = None if n is None else max(int(n), 1)


def get_num_threads() -> int:
    return getattr(_threads, "n", None) or default_threads()


def _debug(stage):
    d = os.environ.get("EMBER_DEBUG", "")
    return d == "all" or stage in d.split(",")


class Specialization:
    def __init__(self, fn, ret_dtype, ir_text, loop_text):
        self.fn = fn
        self.ret_dtype = ret_dtype
        self.ir = ir_text
        self.loop_ir = loop_text


class Kernel:
    """A compiled-on-first-call kernel. See the module docstring."""

    def __init__(self, fn, fastmath=False, scope_names=None):
        self.fn = fn
        self.fastmath = fastmath
        functools.update_wrapper(self, fn)
        self.signature = inspect.signature(fn)
        self._annotations = {}
        # string annotations (`from __future__ import annotations`) may name things imported
        # in the function that defines the kernel: evaluate them there
        names = {**self._names(), **(scope_names or {})}
        for name, p in self.signature.parameters.items():
            a = p.annotation
            if isinstance(a, str):
                try:
                    a = eval(a, names)
                except Exception:
                    raise KernelError(f"kernel '{fn.__name__}': cannot evaluate the annotation of "
                                      f"'{name}': {a!r}") from None
            self._annotations[name] = a if a is not inspect.Parameter.empty else None
        r = self.signature.return_annotation
        if isinstance(r, str):
            r = eval(r, names)
        self._ret = None if r in (inspect.Signature.empty, None) else dtype_of(r) if not isinstance(r, DType) else r
        self._specs: dict = {}
        self._lock = threading.Lock()

    @property
    def __ember_kernel__(self):
        return self.fn

    @property
    def elementwise(self) -> bool:
        """All parameters are scalars (or compile-time): usable as a pointwise op."""
        return all(isinstance(a, DType) or a is Param for a in self._annotations.values()) and \
            self._ret is not None

    # ------------------------------------------------------------------------- calling
    def __call__(self, *args, **kwargs):
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as e:
            raise InvalidInputError(f"kernel '{self.__name__}': {e}") from None
        bound.apply_defaults()
        if self.elementwise and any(isinstance(v, np.ndarray) for v in bound.arguments.values()):
            return self._map(bound)
        kinds, tensors, scalars = self._classify(bound)
        spec = self._specialization(kinds)
        return self._invoke(spec, tensors, scalars)

    def _classify(self, bound):
        """Per argument: its kind for the specialisation key, plus the run-time payloads."""
        kinds, tensors, scalars = [], [], []
        for name, value in bound.arguments.items():
            ann = self._annotations.get(name)
            if ann is Param or (ann is None and not isinstance(value, (np.ndarray, bool, int, float, np.generic))):
                try:
                    hash(value)
                except TypeError:
                    raise InvalidInputError(f"kernel '{self.__name__}': compile-time parameter '{name}' "
                                            f"must be hashable, got {type(value).__name__}") from None
                kinds.append(("param", name, value))
            elif isinstance(ann, TensorType) or (ann is None and isinstance(value, np.ndarray)):
                arr = self._check_array(name, value, ann)
                dt = ann.dtype.name if ann is not None else dtype_of(arr.dtype).name
                contig = arr.ndim == 0 or arr.strides[-1] == arr.itemsize or arr.shape[-1] <= 1
                kinds.append(("tensor", name, dt, arr.ndim, contig))
                tensors.append(arr)
            else:
                d = ann if isinstance(ann, DType) else dtype_of(type(value)) if isinstance(value, (bool, int, float)) \
                    else dtype_of(value.dtype)
                if isinstance(value, np.ndarray) or not np.isscalar(value):
                    raise InvalidInputError(f"kernel '{self.__name__}': argument '{name}' must be a "
                                            f"{d.name} scalar, got {type(value).__name__}")
                why = _unfit_scalar(d, value)
                if why:
                    raise InvalidInputError(f"kernel '{self.__name__}': argument '{name}' must be a "
                                            f"{d.name} scalar, {why}")
                kinds.append(("scalar", name, d.name))
                scalars.append((d, value))
        return tuple(kinds), tensors, scalars

    def _check_array(self, name, value, ann):
        if not isinstance(value, np.ndarray):
            want = f"a {ann.dtype.name} array of rank {ann.rank}" if ann else "an array"
            raise InvalidInputError(f"kernel '{self.__name__}': argument '{name}' must be {want}, "
                                    f"got {type(value).__name__}")
        if ann is not None:
            ok = value.dtype.name == ann.dtype.name or (ann.dtype.name == "bfloat16" and value.dtype == np.uint16)
            if not ok or value.ndim != ann.rank:
                raise InvalidInputError(
                    f"kernel '{self.__name__}': argument '{name}' must be a {ann.dtype.name} array of rank "
                    f"{ann.rank}, got {value.dtype.name} array of shape {value.shape}")
        if any(s % value.itemsize for s in value.strides):
            raise InvalidInputError(f"kernel '{self.__name__}': argument '{name}' has strides {value.strides} "
                                    f"that are not multiples of its item size; pass a copy")
        return value

    def _invoke(self, spec, tensors, scalars):
        nb = len(tensors) + 1
        ret = np.zeros(1, dtype=np.int64)
        bases = (ctypes.c_void_p * nb)(*[a.ctypes.data for a in tensors], ret.ctypes.data)
        sizes = []
        for a in tensors:
            sizes.extend(a.shape)
            sizes.extend(s // a.itemsize for s in a.strides)
        for d, v in scalars:
            sizes.append(_bits(d, v))
        table = np.array(sizes or [0], dtype=np.int64)
        spec.fn(bases, table.ctypes.data, get_num_threads())
        if spec.ret_dtype is not None:
            rd = "float32" if spec.ret_dtype.name == "bfloat16" else spec.ret_dtype.name
            return ret.view(np.uint8)[:np.dtype(rd).itemsize].view(rd)[0]
        return None

    # ------------------------------------------------------------------------ compiling
    def _specialization(self, kinds):
        spec = self._specs.get(kinds)
        if spec is None:
            with self._lock:
                spec = self._specs.get(kinds)
                if spec is None:
                    try:
                        spec = self._compile(kinds)
                    except KernelError as e:
                        raise e.with_traceback(None) from None
                    self._specs[kinds] = spec
        return spec

    def loop_ir(self, *args, **kwargs) -> str:
        """The loop IR of the specialisation these arguments select (for inspection)."""
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return self._specialization(self._classify(bound)[0]).loop_ir

    def llvm_ir(self, *args, **kwargs) -> str:
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return self._specialization(self._classify(bound)[0]).ir

    def _compile(self, kinds):
        node, src = _parse(self.fn)
        scope = Scope(None, self._names())
        tr = Translator(self.fn, fastmath=self.fastmath)
        tr._assign_counts = _count_assignments(node)
        buffers = {}
        slot = 0
        nt = sum(1 for k in kinds if k[0] == "tensor")
        ti = 0
        for k in kinds:
            if k[0] != "tensor":
                continue
            _, name, dt, rank, contig = k
            shape = [L.SizeRef(slot + i) for i in range(rank)]
            strides = [L.SizeRef(slot + rank + i) for i in range(rank)]
            if contig and rank:
                strides[-1] = L.Const(1, "int64")
            slot += 2 * rank
            mem = "uint16" if dt == "bfloat16" else dt
            buffers[ti] = BufferInfo(mem, ti)
            scope.vars[name] = View(ti, dtype_of(dt) if dt != "bfloat16" else _bf16(), L.Const(0, "int64"),
                                    shape, strides, name)
            ti += 1
        for k in kinds:
            if k[0] == "scalar":
                _, name, dt = k
                if dt == "bfloat16":    # a storage type: the value, rounded to it, is a float32
                    scope.vars[name] = Val(tr._round_bf16(L.ScalarArg(slot, "float32")), dtype_of("float32"))
                else:
                    scope.vars[name] = Val(L.ScalarArg(slot, dt), dtype_of(dt))
                slot += 1
            elif k[0] == "param":
                scope.vars[k[1]] = CT(k[2])
        tr.ret_buf_id = nt
        body = tr.translate_kernel(node, src, scope, self._ret)
        ret_dtype = tr.ret_type
        if ret_dtype is not None:
            rd = "float32" if ret_dtype.name == "bfloat16" else ret_dtype.name
            buffers[nt] = BufferInfo(rd, nt)
            body = _fix_return(body, nt)
        kname = f"kernel_{self.fn.__name__}"
        kern = L.Kernel(kname, body, (self.fn.__name__,), "lang")
        if _debug("loop"):
            print(L.kernel_str(kern), file=sys.stderr)
        mb = ModuleBuilder(kname, buffers, native.vector_bits(), fastmath=self.fastmath)
        try:
            mb.add_kernel(kern)
        except EmberError as e:
            raise KernelError(f"kernel '{self.fn.__name__}': code generation failed: {e}") from None
        mb.add_entry()
        text = str(mb.module)
        if _debug("llvm"):
            print(text, file=sys.stderr)
        obj, _ = native.get_object(text)
        ensure_pool()
        return Specialization(native.load_object(obj), ret_dtype, text, L.kernel_str(kern))

    def _names(self) -> dict:
        """The names the kernel body sees: its module's globals and its closure."""
        g = dict(self.fn.__globals__)
        if self.fn.__closure__:
            g.update(zip(self.fn.__code__.co_freevars, (c.cell_contents for c in self.fn.__closure__)))
        return g

    # ------------------------------------------------------------- inside a model
    def tensor_ranks(self) -> list:
        return [a.rank for a in self._annotations.values() if isinstance(a, TensorType)]

    def loop_body(self, tensors, params=None) -> list:
        """Loop IR of this kernel over a model's buffers, for a library op: `tensors` gives,
        per tensor parameter in order, (buffer id, dtype name, shape exprs, stride exprs) and
        optionally a store hook (see `View.store_hook`) that replaces its vector stores."""
        params = dict(params or {})
        node, src = _parse(self.fn)
        scope = Scope(None, self._names())
        tr = Translator(self.fn, fastmath=self.fastmath)
        tr._assign_counts = _count_assignments(node)
        it = iter(tensors)
        for name, ann in self._annotations.items():
            if ann is Param:
                if name not in params:
                    default = self.signature.parameters[name].default
                    if default is inspect.Parameter.empty:
                        raise KernelError(f"kernel '{self.__name__}': no value for compile-time parameter '{name}'")
                    params[name] = default
                scope.vars[name] = CT(params[name])
            elif isinstance(ann, TensorType):
                buf, dt, shape, strides, *hook = next(it)
                scope.vars[name] = View(buf, dtype_of(dt), L.Const(0, "int64"), list(shape), list(strides), name,
                                        hook[0] if hook else None)
            else:
                raise KernelError(f"kernel '{self.__name__}': scalar parameter '{name}' cannot be bound "
                                  "inside a model (make it a Param)")
        try:
            body = tr.translate_kernel(node, src, scope, None)
        except KernelError as e:
            raise e.with_traceback(None) from None
        if tr.ret_type is not None:
            raise KernelError(f"kernel '{self.__name__}' returns a value; a graph op writes its outputs")
        return body

    # ---------------------------------------------------------------- elementwise map
    def _map(self, bound):
        """Apply an elementwise kernel over arrays (equal shapes; scalars broadcast)."""
        from .elementwise import map_kernel
        return map_kernel(self, bound)


def _bf16():
    from .types import bfloat16
    return bfloat16


def _fix_return(body, buf):
    for s in body:
        if isinstance(s, L.Return) and s.value is not None:
            s.buf = buf
        for attr in ("body", "then", "orelse"):
            sub = getattr(s, attr, None)
            if isinstance(sub, list):
                _fix_return(sub, buf)
    return body


def _unfit_scalar(d: DType, v) -> str | None:
    """Why `v` cannot be passed as a `d` scalar without silently changing it (None: it can)."""
    if not isinstance(v, (bool, int, float, np.bool_, np.integer, np.floating)):
        return f"got {type(v).__name__}"
    if d.is_int:
        if not isinstance(v, (bool, int, np.bool_, np.integer)):
            return f"got {type(v).__name__} {v!r} (convert it to an integer first)"
        info = np.iinfo(d.np)
        if not info.min <= int(v) <= info.max:
            return f"got {int(v)}, outside its range [{info.min}, {info.max}]"
    return None


def _bits(d: DType, v) -> int:
    if d.is_float or d.name == "bfloat16":
        return int(np.float64(v).view(np.int64))
    if d.name == "bool":
        return int(bool(v))
    if d.name == "uint64":
        return int(np.uint64(v).view(np.int64))
    return int(v)


def kernel(fn=None, *, fastmath: bool = False):
    """Compile a typed Python function with Ember (see docs/kernel-language.md).

    `fastmath=True` lets LLVM reassociate and contract floating-point math in this kernel."""
    caller = sys._getframe(1).f_locals
    if fn is None:
        return lambda f: Kernel(f, fastmath=fastmath, scope_names=caller)
    return Kernel(fn, fastmath=fastmath, scope_names=caller)
