"""Loop IR -> LLVM IR with llvmlite's IR builder.

Every kernel becomes `void kernel(ptr bases, ptr sizes, i32 nthreads)`: `bases[k]` are the
base pointers (arena, weights, inputs, outputs), `sizes` the per-shape-signature int64 table
(symbolic dims, strides, arena offsets), `nthreads` the most threads its parallel loops may use.
`ember_run(bases, sizes, nthreads)` calls every kernel in order, so one native call runs the
whole model. A parallel loop's body is outlined into `void body(ptr ctx, i64 lo, i64 hi)` and
run by the native thread pool's `ember_parallel_for(body, ctx, n, nthreads)`; `ctx` carries
the base and size tables, the enclosing loop variables and pointers to the enclosing locals.

Inside a vector context (a vectorised `For`, or a `VecScope`) each expression evaluates to a
`Val`: uniform scalar ('s'), per-lane vector ('v'), or an integer ramp base + step*lane ('r')
that stays symbolic so contiguous accesses become plain vector loads and stores.
"""
from __future__ import annotations

import os
import dataclasses
import itertools

import llvmlite.ir as ir

from . import loop_ir as L
from .native import has_feature, target_info
from ..errors import CompileError
from ..ir.dtypes import FLOATS, NARROW, NARROW_FLOATS, compute_dtype
from . import narrow

I1, I8, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
PTR = ir.PointerType()
UNSIGNED = frozenset({"uint8", "uint16", "uint32", "uint64", "bool"})

_LLT = {"float32": ir.FloatType(), "float64": ir.DoubleType(), "float16": ir.HalfType(),
        "int64": I64, "uint64": I64, "int32": I32, "uint32": I32, "int16": ir.IntType(16),
        "uint16": ir.IntType(16), "int8": I8, "uint8": I8, "bool": I1}
_LLT.update({d: (ir.IntType(16) if d == "bfloat16" else I8) for d in NARROW})   # their bits


def llt(dtype):
    return _LLT[dtype]


def mem_t(dtype):
    return I8 if dtype == "bool" else _LLT[dtype]


def mangle(t) -> str:
    if isinstance(t, ir.VectorType):
        return f"v{t.count}{mangle(t.element)}"
    if isinstance(t, ir.FloatType):
        return "f32"
    if isinstance(t, ir.DoubleType):
        return "f64"
    if isinstance(t, ir.HalfType):
        return "f16"
    if isinstance(t, ir.IntType):
        return f"i{t.width}"
    if isinstance(t, ir.PointerType):
        return "p0"
    raise CompileError(f"cannot mangle {t}")


class Val:
    __slots__ = ("kind", "v", "step")

    def __init__(self, kind, v, step=None):
        self.kind, self.v, self.step = kind, v, step


class BufferInfo:
    """Where buffer `id` lives: bases[base] + (offset int, or sizes[offset_slot])."""

    def __init__(self, dtype: str, base: int, offset: int = 0, offset_slot: int | None = None):
        self.dtype, self.base, self.offset, self.offset_slot = dtype, base, offset, offset_slot


# EMBER_VERIFY=1 (the test suite sets it) checks every kernel's loop IR before translating it
VERIFY = os.environ.get("EMBER_VERIFY", "") not in ("", "0")

KERNEL_T = ir.FunctionType(ir.VoidType(), [PTR, PTR, I32])
PROFILED_T = ir.FunctionType(ir.VoidType(), [PTR, PTR, I32, PTR])
BODY_T = ir.FunctionType(ir.VoidType(), [PTR, I64, I64])
PARALLEL_FOR_T = ir.FunctionType(ir.VoidType(), [PTR, PTR, I64, I32])
HOLD_T = ir.FunctionType(ir.VoidType(), [I32])


class ModuleBuilder:
    def __init__(self, name: str, buffers: dict, vector_bits: int = 512, fastmath: bool = False,
                 parallel: bool = True, indirect: bool = False):
        self.module = ir.Module(name=name)
        self.buffers = buffers
        self.vector_bits = vector_bits
        self.fastmath = fastmath
        self.parallel = parallel          # False: parallel loops run serially (no pool calls)
        self.functions = []
        self._intrinsics: dict = {}
        self._outlined = itertools.count()
        # indirect: kernels get a table of their buffers' pointers instead of computing them
        # from bases/offsets, so kernels that differ only in which buffers they touch (the
        # twelve layers of a BERT) compile once and are called with different tables
        self.indirect = indirect
        self.calls: list = []             # indirect: (function, [buffer ids]) per call
        self._by_key: dict = {}

    def intrinsic(self, name, ret, args):
        key = (name, str(ret), tuple(str(a) for a in args))
        f = self._intrinsics.get(key)
        if f is None:
            f = ir.Function(self.module, ir.FunctionType(ret, args), name=name)
            self._intrinsics[key] = f
        return f

    def add_kernel(self, k: L.Kernel, linkage: str = "internal") -> ir.Function:
        if VERIFY:
            L.verify(k, self.buffers)
        local = None
        if self.indirect:
            bufs: dict = {}
            key = (k.kind, _canon(k.body, bufs))
            key = (key, tuple(self.buffers[b].dtype for b in bufs))
            hit = self._by_key.get(key)
            if hit is not None:
                self.calls.append((hit, list(bufs)))
                return hit
            local = bufs
        fn = ir.Function(self.module, KERNEL_T, name=k.name)
        fn.linkage = linkage
        fn.attributes.add("nounwind")
        fe = FunctionEmitter(self, fn)
        fe.bases, fe.sizes, fe.nthreads = fn.args
        fe.local = local
        fe.emit_kernel(k)
        self.functions.append(fn)
        if self.indirect:
            self._by_key[key] = fn
            self.calls.append((fn, list(local)))
        return fn

    def _call_sites(self, b: ir.IRBuilder, args):
        """Call every kernel in order (after each, `after(k)` if given); indirect kernels get
        their buffer-pointer table, built on the stack."""
        if not self.indirect:
            for f in self.functions:
                yield b.call(f, args)
            return
        bases, sizes, nthreads = args
        for f, bufs in self.calls:
            table = b.alloca(ir.ArrayType(PTR, max(len(bufs), 1)))
            for i, buf in enumerate(bufs):
                b.store(_buffer_pointer(b, self.buffers[buf], bases, sizes),
                        b.gep(table, [ir.Constant(I64, 0), ir.Constant(I64, i)]))
            yield b.call(f, [table, sizes, nthreads])

    def _hold_pool(self, b, nthreads, call):
        """Where the kernels have parallel loops, bracket them with ember_pool_hold/release:
        the pool's workers then spin through the gaps between loops rather than park and be
        woken (a futex wake of a parked vCPU costs tens of microseconds in a guest)."""
        if "ember_parallel_for" not in self.module.globals:
            return
        f = self.module.globals.get(call) or ir.Function(self.module, HOLD_T, name=call)
        b.call(f, [nthreads])

    def add_entry(self, name="ember_run"):
        fn = ir.Function(self.module, KERNEL_T, name=name)
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        self._hold_pool(b, fn.args[2], "ember_pool_hold")
        for _ in self._call_sites(b, fn.args):
            pass
        self._hold_pool(b, fn.args[2], "ember_pool_release")
        b.ret_void()
        if _lacks_f16c() and "__soft_half" not in self.module.globals:
            _add_soft_half(self.module)
        return fn

    def add_profiled_entry(self, name="ember_run_profiled"):
        """`ember_run` that also writes the time-stamp counter before the first kernel and
        after each one into `int64 ticks[len(kernels) + 1]` (the profiler's per-kernel times)."""
        fn = ir.Function(self.module, PROFILED_T, name=name)
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        tsc = self.intrinsic("llvm.readcyclecounter", I64, [])
        ticks = fn.args[3]
        self._hold_pool(b, fn.args[2], "ember_pool_hold")
        b.store(b.call(tsc, []), ticks)
        for k, _ in enumerate(self._call_sites(b, fn.args[:3])):
            b.store(b.call(tsc, []), b.gep(ticks, [ir.Constant(I64, k + 1)], source_etype=I64))
        self._hold_pool(b, fn.args[2], "ember_pool_release")
        b.ret_void()
        return fn

    def parallel_for(self):
        f = self.module.globals.get("ember_parallel_for")
        return f if f is not None else ir.Function(self.module, PARALLEL_FOR_T, name="ember_parallel_for")


class FunctionEmitter:
    def __init__(self, mb: ModuleBuilder, fn: ir.Function, outlined: bool = False):
        self.mb, self.fn = mb, fn
        self.entry = fn.append_basic_block("entry")
        self.eb = ir.IRBuilder(self.entry)
        body = fn.append_basic_block("body")
        self.b = ir.IRBuilder(body)
        self.bases = self.sizes = self.nthreads = None     # set by the creator
        self.outlined = outlined    # inside a parallel body: nested parallel loops run serially
        self.loops: list = []       # (label, continue block, break block), innermost last
        self.vars: dict = {}
        self.locals: dict = {}
        self.vctx = None           # (lanes, mask llvm value | None, ctx id)
        self.memo = [{}]
        self._bufptr: dict = {}
        self.local = None           # indirect kernels: buffer id -> slot of the pointer table
        self._slots: dict = {}
        self._ctx_ids = itertools.count(1)
        self._names = itertools.count()

    # -------------------------------------------------------------------------- plumbing
    def emit_kernel(self, k: L.Kernel):
        self.stmts(k.body)
        self.b.ret_void()
        self.eb.branch(self.fn.blocks[1])

    def size_slot(self, slot: int):
        v = self._slots.get(slot)
        if v is None:
            p = self.eb.gep(self.sizes, [ir.Constant(I64, slot)], source_etype=I64)
            v = self.eb.load(p, typ=I64)
            self._slots[slot] = v
        return v

    def bufptr(self, buf: int):
        p = self._bufptr.get(buf)
        if p is None:
            if self.local is not None:      # indirect: slot `local[buf]` of the pointer table
                bp = self.eb.gep(self.bases, [ir.Constant(I64, self.local[buf])], source_etype=PTR)
                p = self.eb.load(bp, typ=PTR)
            else:
                p = _buffer_pointer(self.eb, self.mb.buffers[buf], self.bases, self.sizes)
            self._bufptr[buf] = p
        return p

    def lanes(self):
        return self.vctx[0] if self.vctx else None

    def vec_t(self, t, n):
        return ir.VectorType(t, n)

    def splat(self, v, n):
        vt = ir.VectorType(v.type, n)
        undef = ir.Constant(vt, ir.Undefined)
        x = self.b.insert_element(undef, v, ir.Constant(I32, 0))
        return self.b.shuffle_vector(x, undef, ir.Constant(ir.VectorType(I32, n), [0] * n))

    def lane_ids(self, n, t=I64):
        return ir.Constant(ir.VectorType(t, n), list(range(n)))

    def as_vec(self, x: Val, n):
        if x.kind == "v":
            return x.v
        if x.kind == "s":
            return self.splat(x.v, n)
        base = self.splat(x.v, n)
        step = x.step
        offs = ir.Constant(ir.VectorType(I64, n), [i * step for i in range(n)]) if isinstance(step, int) \
            else self.b.mul(self.lane_ids(n), self.splat(step, n))
        return self.b.add(base, offs)

    # ------------------------------------------------------------------------ expressions
    def expr(self, e: L.Expr) -> Val:
        if not isinstance(e, L.Local):
            for scope in reversed(self.memo):
                hit = scope.get(id(e))
                if hit is not None:
                    return hit
        v = self._expr(e)
        if not isinstance(e, L.Local):
            self.memo[-1][id(e)] = v
        return v

    def _expr(self, e) -> Val:
        b = self.b
        if isinstance(e, L.Const):
            t = llt(e.dtype)
            if e.dtype in FLOATS:
                return Val("s", ir.Constant(t, float(e.value)))
            if e.dtype == "bool":
                return Val("s", ir.Constant(I1, int(bool(e.value))))
            return Val("s", ir.Constant(t, int(e.value)))
        if isinstance(e, L.Var):
            return self.vars[e.name]
        if isinstance(e, L.SizeRef):
            return Val("s", self.size_slot(e.slot))
        if isinstance(e, L.Load):
            return self.load(e)
        if isinstance(e, L.Bin):
            return self.binop(e)
        if isinstance(e, L.Un):
            return self.unop(e)
        if isinstance(e, L.Cast):
            return self.cast(e)
        if isinstance(e, L.Select):
            c, x, y = self.expr(e.cond), self.expr(e.a), self.expr(e.b)
            if c.kind == "s" and x.kind == "s" and y.kind == "s":
                return Val("s", b.select(c.v, x.v, y.v))
            n = self._lanes_of(c, x, y)
            return Val("v", b.select(self.as_vec(c, n), self.as_vec(x, n), self.as_vec(y, n)))
        if isinstance(e, L.Local):
            slot, lanes, t, _ = self.locals[e.name]
            v = b.load(slot, typ=t)
            return Val("v" if lanes else "s", v)
        if isinstance(e, L.VLoad):
            mask = None if e.mask is None else self.expr(e.mask).v
            if e.step != 1:
                v = self.strided_load(e.buf, self.expr(e.index).v, e.step, e.lanes, mem_t(e.dtype), mask, None)
                return Val("v", self._from_mem(v, e.dtype))
            return Val("v", self.vload(e.buf, self.expr(e.index).v, e.lanes, e.dtype, mask))
        if isinstance(e, L.Broadcast):
            return Val("v", self.splat(self.expr(e.a).v, e.lanes))
        if isinstance(e, L.Fma):
            x, y, z = self.expr(e.a), self.expr(e.b), self.expr(e.c)
            n = self._lanes_of(x, y, z)
            if n is None:
                t = x.v.type
                return Val("s", b.call(self.mb.intrinsic(f"llvm.fma.{mangle(t)}", t, [t, t, t]), [x.v, y.v, z.v]))
            xs, ys, zs = self.as_vec(x, n), self.as_vec(y, n), self.as_vec(z, n)
            t = xs.type
            return Val("v", b.call(self.mb.intrinsic(f"llvm.fma.{mangle(t)}", t, [t, t, t]), [xs, ys, zs]))
        if isinstance(e, L.LaneMask):
            base, lim = self.expr(e.base).v, self.expr(e.limit).v
            ids = b.add(self.splat(base, e.lanes), self.lane_ids(e.lanes))
            return Val("v", b.icmp_signed("<", ids, self.splat(lim, e.lanes)))
        if isinstance(e, L.HReduce):
            return Val("s", self.hreduce(e.op, self.expr(e.a).v, e.dtype))
        if isinstance(e, L.ScalarArg):
            return Val("s", self.scalar_arg(e))
        if isinstance(e, L.Bitcast):
            x = self.expr(e.a)
            v = self.as_vec(x, self.lanes()) if x.kind == "r" else x.v
            t = llt(e.dtype)
            if e.lanes > 1:
                t = ir.VectorType(t, e.lanes)
            elif isinstance(v.type, ir.VectorType) and not e.lanes:
                t = ir.VectorType(t, v.type.count)
            scalar = e.lanes == 1 or (x.kind == "s" and not e.lanes)
            return Val("s" if scalar else "v", b.bitcast(v, t))
        if isinstance(e, L.Iota):
            return Val("v", ir.Constant(ir.VectorType(llt(e.dtype), e.lanes),
                                        [float(i) if e.dtype in FLOATS else i for i in range(e.lanes)]))
        if isinstance(e, L.Extract):
            return Val("s", b.extract_element(self.expr(e.vec).v, self.expr(e.index).v))
        if isinstance(e, L.Insert):
            return Val("v", b.insert_element(self.expr(e.vec).v, self.expr(e.value).v, self.expr(e.index).v))
        if isinstance(e, L.Shuffle):
            x = self.expr(e.a).v
            y = self.expr(e.b).v if e.b is not None else x
            mask = ir.Constant(ir.VectorType(I32, len(e.indices)), list(e.indices))
            return Val("v", b.shuffle_vector(x, y, mask))
        raise CompileError(f"cannot generate code for {e!r}")

    def scalar_arg(self, e: L.ScalarArg):
        raw = self.size_slot(e.slot)
        b = self.b
        if e.dtype in FLOATS:
            d = b.bitcast(raw, ir.DoubleType())
            return d if e.dtype == "float64" else self._fptrunc(d, llt(e.dtype))
        if e.dtype == "bool":
            return b.icmp_unsigned("!=", raw, ir.Constant(I64, 0))
        t = llt(e.dtype)
        return raw if t.width == 64 else b.trunc(raw, t)

    def _lanes_of(self, *vals):
        for x in vals:
            if x.kind == "v":
                return x.v.type.count
        return self.lanes()

    # memory ---------------------------------------------------------------------------
    def elem_ptr(self, buf, idx):
        t = mem_t(self.mb.buffers[buf].dtype)
        return self.b.gep(self.bufptr(buf), [idx], source_etype=t)

    def _from_mem(self, v, dtype):
        if dtype == "bool":
            zero = ir.Constant(v.type, None)
            return self.b.icmp_unsigned("!=", v, zero)
        return v

    def _to_mem(self, v, dtype):
        if dtype == "bool":
            if isinstance(v.type, ir.VectorType):
                return self.b.zext(v, ir.VectorType(I8, v.type.count))
            return self.b.zext(v, I8)
        return v

    def vload(self, buf, idx, n, dtype, mask):
        t = mem_t(dtype)
        vt = ir.VectorType(t, n)
        p = self.elem_ptr(buf, idx)
        if mask is None:
            v = self.b.load(p, typ=vt, align=t.width // 8 if isinstance(t, ir.IntType) else _fbytes(t))
        else:
            f = self.mb.intrinsic(f"llvm.masked.load.{mangle(vt)}.p0", vt, [PTR, I32, ir.VectorType(I1, n), vt])
            v = self.b.call(f, [p, ir.Constant(I32, _bytes(t)), mask, ir.Constant(vt, None)])
        return self._from_mem(v, dtype)

    def load(self, e: L.Load) -> Val:
        if e.cond is not None:
            return self.guarded_load(e)
        idx = self.expr(e.index)
        t = mem_t(e.dtype)
        if idx.kind == "s":
            v = self.b.load(self.elem_ptr(e.buf, idx.v), typ=t, align=_bytes(t))
            return Val("s", self._from_mem(v, e.dtype))
        n = self.lanes() or idx.v.type.count
        mask = self.vctx[1] if self.vctx else None
        if idx.kind == "r" and isinstance(idx.step, int) and idx.step == 1:
            return Val("v", self.vload(e.buf, idx.v, n, e.dtype, mask))
        if idx.kind == "r" and isinstance(idx.step, int) and idx.step == 0:
            v = self.b.load(self.elem_ptr(e.buf, idx.v), typ=t, align=_bytes(t))
            return Val("s", self._from_mem(v, e.dtype))
        if idx.kind == "r" and isinstance(idx.step, int) and 2 <= idx.step <= 4:
            v = self.strided_load(e.buf, idx.v, idx.step, n, t, mask, None)
            return Val("v", self._from_mem(v, e.dtype))
        vidx = self.as_vec(idx, n)
        ptrs = self.b.gep(self.splat(self.bufptr(e.buf), n), [vidx], source_etype=t)
        vt = ir.VectorType(t, n)
        mk = mask if mask is not None else ir.Constant(ir.VectorType(I1, n), [1] * n)
        f = self.mb.intrinsic(f"llvm.masked.gather.{mangle(vt)}.v{n}p0", vt,
                              [ir.VectorType(PTR, n), I32, ir.VectorType(I1, n), vt])
        v = self.b.call(f, [ptrs, ir.Constant(I32, _bytes(t)), mk, ir.Constant(vt, None)])
        return Val("v", self._from_mem(v, e.dtype))

    def guarded_load(self, e: L.Load) -> Val:
        """cond ? buf[index] : fill, touching memory only where cond holds: a masked vector
        load (contiguous lanes) or gather, or a scalar load from a safe index."""
        idx, c = self.expr(e.index), self.expr(e.cond)
        t = mem_t(e.dtype)
        b = self.b
        if idx.kind == "r" and isinstance(idx.step, int) and idx.step == 0:
            idx = Val("s", idx.v)
        if c.kind == "s" and idx.kind == "s":
            safe = b.select(c.v, idx.v, ir.Constant(idx.v.type, 0))
            v = self._from_mem(b.load(self.elem_ptr(e.buf, safe), typ=t, align=_bytes(t)), e.dtype)
            return Val("s", b.select(c.v, v, ir.Constant(v.type, self._fill(e))))
        n = self.lanes() or (idx.v.type.count if idx.kind == "v" else c.v.type.count)
        mask = self.as_vec(c, n) if c.kind != "v" else c.v
        if self.vctx and self.vctx[1] is not None:
            mask = b.and_(mask, self.vctx[1])
        vt = ir.VectorType(t, n)
        fill = ir.Constant(vt, [self._fill(e)] * n)
        if idx.kind == "r" and isinstance(idx.step, int) and idx.step == 1:
            f = self.mb.intrinsic(f"llvm.masked.load.{mangle(vt)}.p0", vt, [PTR, I32, ir.VectorType(I1, n), vt])
            v = b.call(f, [self.elem_ptr(e.buf, idx.v), ir.Constant(I32, _bytes(t)), mask, fill])
        elif idx.kind == "r" and isinstance(idx.step, int) and 2 <= idx.step <= 4:
            v = self.strided_load(e.buf, idx.v, idx.step, n, t, mask, fill)
        else:
            vidx = self.as_vec(idx, n)
            ptrs = b.gep(self.splat(self.bufptr(e.buf), n), [vidx], source_etype=t)
            f = self.mb.intrinsic(f"llvm.masked.gather.{mangle(vt)}.v{n}p0", vt,
                                  [ir.VectorType(PTR, n), I32, ir.VectorType(I1, n), vt])
            v = b.call(f, [ptrs, ir.Constant(I32, _bytes(t)), mask, fill])
        return Val("v", self._from_mem(v, e.dtype))

    def strided_load(self, buf, base, step, n, t, mask, fill):
        """Lanes buf[base + step*i]: one masked load of the step*n contiguous elements and a
        shuffle that keeps every step-th (a stride-2 convolution row; far cheaper than a
        gather). Only the lanes kept are loaded, so nothing past the last one is touched."""
        b = self.b
        wide = n * step
        wt = ir.VectorType(t, wide)
        keep = ir.Constant(ir.VectorType(I1, wide), [int(j % step == 0) for j in range(wide)])
        if mask is None:
            wmask = keep
        elif wide <= 64 and has_feature("bmi2"):
            # one pdep deposits mask bit i at bit i*step; an i1 shuffle costs ~5 vector
            # instructions per load on AVX-512 (mask -> vector -> widen -> mask)
            it = ir.IntType(64 if wide > 32 else 32)
            pdep = self.mb.intrinsic(f"llvm.x86.bmi.pdep.{it.width}", it, [it, it])
            bits = b.zext(b.bitcast(mask, ir.IntType(n)), it)
            pattern = sum(1 << (i * step) for i in range(n))
            dep = b.call(pdep, [bits, ir.Constant(it, pattern)])
            if wide < it.width:
                dep = b.trunc(dep, ir.IntType(wide))
            wmask = b.bitcast(dep, ir.VectorType(I1, wide))
        else:
            spread = b.shuffle_vector(mask, mask, ir.Constant(ir.VectorType(I32, wide), [j // step for j in range(wide)]))
            wmask = b.and_(spread, keep)
        pt = ir.Constant(wt, None) if fill is None else ir.Constant(wt, [fill.constant[0]] * wide)
        f = self.mb.intrinsic(f"llvm.masked.load.{mangle(wt)}.p0", wt, [PTR, I32, ir.VectorType(I1, wide), wt])
        v = b.call(f, [self.elem_ptr(buf, base), ir.Constant(I32, _bytes(t)), wmask, pt])
        return b.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, n), [i * step for i in range(n)]))

    @staticmethod
    def _fill(e):
        if e.dtype in FLOATS:
            return float(e.fill)
        return int(e.fill) if e.dtype != "bool" else int(bool(e.fill))

    def store(self, buf, index: L.Expr, value: L.Expr):
        dtype = self.mb.buffers[buf].dtype
        idx, val = self.expr(index), self.expr(value)
        t = mem_t(dtype)
        if self.vctx is None or (idx.kind == "s" and val.kind == "s" and self.vctx[1] is None):
            if val.kind != "s":
                raise CompileError("vector value stored to a scalar index")
            self.b.store(self._to_mem(val.v, dtype), self.elem_ptr(buf, idx.v), align=_bytes(t))
            return
        n, mask = self.vctx[0], self.vctx[1]
        v = self._to_mem(self.as_vec(val, n), dtype)
        vt = ir.VectorType(t, n)
        if idx.kind == "r" and isinstance(idx.step, int) and idx.step == 1:
            p = self.elem_ptr(buf, idx.v)
            if mask is None:
                self.b.store(v, p, align=_bytes(t))
            else:
                f = self.mb.intrinsic(f"llvm.masked.store.{mangle(vt)}.p0", ir.VoidType(),
                                      [vt, PTR, I32, ir.VectorType(I1, n)])
                self.b.call(f, [v, p, ir.Constant(I32, _bytes(t)), mask])
            return
        vidx = self.as_vec(idx, n)
        ptrs = self.b.gep(self.splat(self.bufptr(buf), n), [vidx], source_etype=t)
        mk = mask if mask is not None else ir.Constant(ir.VectorType(I1, n), [1] * n)
        f = self.mb.intrinsic(f"llvm.masked.scatter.{mangle(vt)}.v{n}p0", ir.VoidType(),
                              [vt, ir.VectorType(PTR, n), I32, ir.VectorType(I1, n)])
        self.b.call(f, [v, ptrs, ir.Constant(I32, _bytes(t)), mk])

    # arithmetic -------------------------------------------------------------------------
    def binop(self, e: L.Bin) -> Val:
        x, y = self.expr(e.a), self.expr(e.b)
        op, b = e.op, self.b
        # integer ramps stay symbolic through + - and * by a constant
        if (x.kind == "r" or y.kind == "r") and x.kind != "v" and y.kind != "v":
            if op in ("add", "sub"):
                if x.kind == "r" and y.kind == "r" and isinstance(x.step, int) and isinstance(y.step, int):
                    f = b.add if op == "add" else b.sub
                    return Val("r", f(x.v, y.v), x.step + y.step if op == "add" else x.step - y.step)
                if x.kind == "r" and y.kind == "s":
                    return Val("r", (b.add if op == "add" else b.sub)(x.v, y.v), x.step)
                if x.kind == "s" and y.kind == "r" and op == "add":
                    return Val("r", b.add(x.v, y.v), y.step)
            if op == "mul":
                r, s = (x, y) if x.kind == "r" else (y, x)
                if s.kind == "s" and isinstance(s.v, ir.Constant) and isinstance(r.step, int):
                    c = int(s.v.constant)
                    return Val("r", b.mul(r.v, s.v), r.step * c)
                if s.kind == "s" and isinstance(r.step, int) and r.step == 1:
                    return Val("r", b.mul(r.v, s.v), s.v)
            if op in ("lt", "le") and self.lanes():
                m = self.ramp_compare(op, x, y)
                if m is not None:
                    return m
        dtype = e.a.dtype
        if x.kind == "s" and y.kind == "s":
            return Val("s", self._scalar_bin(op, x.v, y.v, dtype))
        n = self._lanes_of(x, y)
        return Val("v", self._scalar_bin(op, self.as_vec(x, n), self.as_vec(y, n), dtype))

    def ramp_compare(self, op, x: Val, y: Val):
        """ramp < scalar (or the reverse, or <=) as a lane range: base + s*lane < y holds
        exactly for lane < ceil((y - base) / s), so the mask is one 32-bit compare of the lane
        numbers against a scalar bound instead of a compare of 64-bit index vectors (window
        guards of convolution, pooling and im2col rows are such compares)."""
        ramp_left = x.kind == "r"
        r, s = (x, y) if ramp_left else (y, x)
        if not (r.kind == "r" and s.kind == "s" and isinstance(r.step, int) and r.step > 0
                and r.v.type == I64 and s.v.type == I64):
            return None
        if op == "le":                          # integers: a <= b  <=>  a < b + 1
            one = ir.Constant(I64, 1)
            s = Val("s", self.b.add(s.v, one) if ramp_left else self.b.sub(s.v, one))
        b, n, step = self.b, self.lanes(), ir.Constant(I64, r.step)
        d = b.sub(s.v, r.v)
        if ramp_left:                           # step*lane < d  <=>  lane < ceil(d / step)
            bound = self._ceil_div(d, step, r.step)
        else:                                   # step*lane > d  <=>  lane >= floor(d / step) + 1
            bound = self._ceil_div(b.add(d, ir.Constant(I64, 1)), step, r.step)
        lo, hi = ir.Constant(I64, -1), ir.Constant(I64, n + 1)
        bound = b.select(b.icmp_signed("<", bound, lo), lo, b.select(b.icmp_signed(">", bound, hi), hi, bound))
        lanes = ir.Constant(ir.VectorType(I32, n), list(range(n)))
        lim = self.splat(b.trunc(bound, I32), n)
        return Val("v", b.icmp_signed("<", lanes, lim) if ramp_left else b.icmp_signed(">=", lanes, lim))

    def _ceil_div(self, d, step_v, step: int):
        if step == 1:
            return d
        b = self.b
        up = b.sdiv(b.add(d, ir.Constant(I64, step - 1)), step_v)       # d > 0
        return b.select(b.icmp_signed(">", d, ir.Constant(I64, 0)), up, b.sdiv(d, step_v))

    def _call_intr(self, name, t, args):
        return self.b.call(self.mb.intrinsic(f"{name}.{mangle(t)}", t, [t] * len(args)), args,
                           fastmath=("fast",) if self.mb.fastmath else ())

    def _fast(self, instr):
        if self.mb.fastmath:
            instr.flags.append("fast")
        return instr

    def _minmax(self, op, x, y):
        """NaN-propagating float max/min as compare + select, which x86 lowers to one
        vmaxps/vminps: `maxps(y, x)` is exactly `y > x ? y : x`, NaN in x gives x. A NaN in y
        needs one more select, which folds away when y is a constant (ReLU, Clip).
        `llvm.maximum` also orders -0 below +0 and costs ~6 instructions per vector (a max
        pool ran at a third of onnxruntime's speed on it)."""
        b = self.b
        pred = ">" if op == "max" else "<"
        if isinstance(x, ir.Constant) and not isinstance(y, ir.Constant):
            x, y = y, x
        r = b.select(b.fcmp_ordered(pred, y, x), y, x)
        if isinstance(y, ir.Constant):
            return r
        return b.select(b.fcmp_unordered("uno", y, y), y, r)

    def _scalar_bin(self, op, x, y, dtype):
        b = self.b
        isf = dtype in FLOATS
        uns = dtype in UNSIGNED
        t = x.type
        if isf:
            if op in ("add", "sub", "mul", "div", "mod"):
                f = {"add": b.fadd, "sub": b.fsub, "mul": b.fmul, "div": b.fdiv, "mod": b.frem}[op]
                return self._fast(f(x, y))
            if op in ("max", "min"):
                return self._minmax(op, x, y)
            if op == "pow":
                return self._call_intr("llvm.pow", t, [x, y])
            if op in ("eq", "lt", "le"):
                return b.fcmp_ordered({"eq": "==", "lt": "<", "le": "<="}[op], x, y)
        else:
            if op == "add":
                return b.add(x, y)
            if op == "sub":
                return b.sub(x, y)
            if op == "mul":
                return b.mul(x, y)
            if op in ("div", "mod"):
                # x86 traps on integer division by zero; ONNX leaves it undefined: divide by 1
                zero = ir.Constant(t, None)
                one = ir.Constant(t, [1] * t.count) if isinstance(t, ir.VectorType) else ir.Constant(t, 1)
                isz = b.icmp_unsigned("==", y, zero) if not isinstance(t, ir.VectorType) else \
                    b.icmp_unsigned("==", y, ir.Constant(t, [0] * t.count))
                if uns:
                    y = b.select(isz, one, y)
                    return b.udiv(x, y) if op == "div" else b.urem(x, y)
                # it also traps on INT_MIN / -1: divide by 1 instead, x / -1 being -x (wrapping)
                minus_one = ir.Constant(t, [-1] * t.count) if isinstance(t, ir.VectorType) else ir.Constant(t, -1)
                is_m1 = b.icmp_signed("==", y, minus_one)
                y = b.select(b.or_(isz, is_m1), one, y)
                if op == "div":
                    return b.select(is_m1, b.neg(x), b.sdiv(x, y))
                return b.srem(x, y)
            if op == "max":
                return self._call_intr("llvm.umax" if uns else "llvm.smax", t, [x, y])
            if op == "min":
                return self._call_intr("llvm.umin" if uns else "llvm.smin", t, [x, y])
            if op == "shl":
                return b.shl(x, y)
            if op == "shr":
                return b.lshr(x, y) if uns else b.ashr(x, y)
            if op == "and":
                return b.and_(x, y)
            if op == "or":
                return b.or_(x, y)
            if op == "xor":
                return b.xor(x, y)
            if op in ("eq", "lt", "le"):
                sym = {"eq": "==", "lt": "<", "le": "<="}[op]
                return b.icmp_unsigned(sym, x, y) if uns else b.icmp_signed(sym, x, y)
            if op == "pow":
                fx = b.sitofp(x, ir.DoubleType()) if not isinstance(t, ir.VectorType) else \
                    b.sitofp(x, ir.VectorType(ir.DoubleType(), t.count))
                fy = b.sitofp(y, fx.type)
                r = self._call_intr("llvm.pow", fx.type, [fx, fy])
                return b.fptosi(r, t)
        raise CompileError(f"no lowering for binary op '{op}' on {dtype}")

    def unop(self, e: L.Un) -> Val:
        x = self.expr(e.a)
        if x.kind == "r":
            x = Val("v", self.as_vec(x, self.lanes()))
        v, b, op, t = x.v, self.b, e.op, x.v.type
        isf = e.dtype in FLOATS
        if op == "neg":
            r = b.fneg(v) if isf else b.neg(v)
        elif op == "abs":
            r = self._call_intr("llvm.fabs", t, [v]) if isf else \
                b.call(self.mb.intrinsic(f"llvm.abs.{mangle(t)}", t, [t, I1]), [v, ir.Constant(I1, 0)])
        elif op in ("exp", "log", "sqrt", "floor", "ceil", "tanh", "sin", "cos", "round", "roundeven", "trunc"):
            r = self._call_intr(f"llvm.{op}", t, [v])
        elif op == "rsqrt":
            one = ir.Constant(t, [1.0] * t.count) if isinstance(t, ir.VectorType) else ir.Constant(t, 1.0)
            r = self._fast(b.fdiv(one, self._call_intr("llvm.sqrt", t, [v])))
        elif op in _LIBM:
            r = self._libm_lanes(op + "f" if e.dtype == "float32" else op, v)
        elif op == "not":
            r = b.not_(v)
        else:
            raise CompileError(f"no lowering for unary op '{op}'")
        return Val(x.kind, r)

    def _libm_lanes(self, name, v):
        t = v.type
        et = t.element if isinstance(t, ir.VectorType) else t
        f = self.mb.intrinsic(name, et, [et])
        if not isinstance(t, ir.VectorType):
            return self.b.call(f, [v])
        out = ir.Constant(t, ir.Undefined)
        for i in range(t.count):
            lane = self.b.extract_element(v, ir.Constant(I32, i))
            out = self.b.insert_element(out, self.b.call(f, [lane]), ir.Constant(I32, i))
        return out

    def cast(self, e: L.Cast) -> Val:
        x = self.expr(e.a)
        if x.kind == "r":
            x = Val("v", self.as_vec(x, self.lanes()))
        return Val(x.kind, self._convert(x.v, e.a.dtype, e.dtype, e.saturate))

    def _convert(self, v, src, dst, saturate=True):
        """LLVM value `v` of Ember type `src` converted to `dst`."""
        if src == dst:
            return v
        if src in NARROW or dst in NARROW:
            return self._narrow_cast(v, src, dst, saturate)
        b = self.b
        vec = isinstance(v.type, ir.VectorType)
        dt = llt(dst)
        dt_full = ir.VectorType(dt, v.type.count) if vec else dt
        sf, df = src in FLOATS, dst in FLOATS
        if dst == "bool":
            zero = ir.Constant(v.type, None)
            r = b.fcmp_unordered("!=", v, zero) if sf else b.icmp_unsigned("!=", v, zero)
        elif sf and df:
            r = b.fpext(v, dt_full) if _fbits(dt) > _fbits(v.type.element if vec else v.type) else self._fptrunc(v, dt_full)
        elif sf:
            r = b.fptoui(v, dt_full) if dst in UNSIGNED else b.fptosi(v, dt_full)
        elif df:
            r = b.uitofp(v, dt_full) if src in UNSIGNED else b.sitofp(v, dt_full)
        else:
            sw, dw = (v.type.element if vec else v.type).width, dt.width
            if dw > sw:
                r = b.zext(v, dt_full) if src in UNSIGNED else b.sext(v, dt_full)
            elif dw < sw:
                r = b.trunc(v, dt_full)
            else:
                r = v
        return r

    def _narrow_cast(self, v, src, dst, saturate):
        """A cast from or to a narrow type, lane by lane (the conversions are scalar code):
        decode to the compute type, cast as usual, encode."""
        if isinstance(v.type, ir.VectorType):
            out = ir.Constant(ir.VectorType(mem_t(dst), v.type.count), ir.Undefined)
            for i in range(v.type.count):
                lane = self._narrow_cast(self.b.extract_element(v, ir.Constant(I32, i)), src, dst, saturate)
                out = self.b.insert_element(out, lane, ir.Constant(I32, i))
            return out
        b, module = self.b, self.mb.module
        if src in NARROW:
            v, src = narrow.decode(b, module, v, src), compute_dtype(src)
        if dst not in NARROW:
            return self._convert(v, src, dst)
        if src in FLOATS or dst in NARROW_FLOATS:
            v, src = self._convert(v, src, "float32"), "float32"
        return narrow.encode(b, module, v, dst, saturate, src_float=src == "float32")

    def _fptrunc(self, v, to):
        """fptrunc, except double -> half: x86 has no instruction for it and LLVM would call
        __truncdfhf2, which the JIT cannot resolve in this process. Go through float instead,
        rounding to odd (truncate, then set the last bit if inexact) so that the second
        rounding gives the correctly rounded half."""
        b = self.b
        vec = isinstance(v.type, ir.VectorType)
        src, dst = (v.type.element, to.element) if vec else (v.type, to)
        if not (isinstance(src, ir.DoubleType) and isinstance(dst, ir.HalfType)):
            return b.fptrunc(v, to)
        ft, it = (ir.VectorType(ir.FloatType(), v.type.count), ir.VectorType(I32, v.type.count)) if vec \
            else (ir.FloatType(), I32)
        f = b.fptrunc(v, ft)
        back = b.fpext(f, v.type)
        fabs = self.mb.intrinsic(f"llvm.fabs.{mangle(v.type)}", v.type, [v.type])
        away = b.fcmp_ordered(">", b.call(fabs, [back]), b.call(fabs, [v]))     # rounded up in magnitude
        bits = b.bitcast(f, it)
        one = ir.Constant(it, [1] * v.type.count) if vec else ir.Constant(it, 1)
        bits = b.select(away, b.sub(bits, one), bits)
        bits = b.select(b.fcmp_ordered("!=", back, v), b.or_(bits, one), bits)
        return b.fptrunc(b.bitcast(bits, ft), to)

    def hreduce(self, op, v, dtype):
        if not isinstance(v.type, ir.VectorType):
            return v
        n = v.type.count
        while n > 1:
            h = n // 2
            lo = self.b.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, h), list(range(h))))
            hi = self.b.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, h), list(range(h, n))))
            v = self._scalar_bin(op, lo, hi, dtype)
            n = h
        return self.b.extract_element(v, ir.Constant(I32, 0))

    # ------------------------------------------------------------------------- statements
    def stmts(self, body):
        for s in body:
            self.stmt(s)

    def stmt(self, s):
        if isinstance(s, L.For):
            self.for_(s)
        elif isinstance(s, L.Store):
            self.store(s.buf, s.index, s.value)
        elif isinstance(s, L.VStore):
            self.vstore(s)
        elif isinstance(s, L.Prefetch):
            p = self.elem_ptr(s.buf, self.expr(s.index).v)
            f = self.mb.intrinsic("llvm.prefetch.p0", ir.VoidType(), [PTR, I32, I32, I32])
            self.b.call(f, [p, ir.Constant(I32, 0), ir.Constant(I32, s.level), ir.Constant(I32, 1)])
        elif isinstance(s, L.Flag):
            self.flag(s)
        elif isinstance(s, L.Decl):
            self.decl(s)
        elif isinstance(s, L.Assign):
            self.assign(s)
        elif isinstance(s, L.If):
            self.if_(s)
        elif isinstance(s, L.VecScope):
            base = self.expr(s.base).v
            mask = self.expr(s.mask).v if s.mask is not None else None
            self.vector_body(s.var, base, s.lanes, mask, s.body)
        elif isinstance(s, L.Loop):
            self.loop_forever(s)
        elif isinstance(s, (L.Break, L.Continue)):
            target = self._loop_target(s.label)
            self.b.branch(target[2] if isinstance(s, L.Break) else target[1])
            self._dead_block()
        elif isinstance(s, L.Return):
            if self.outlined:
                raise CompileError("return inside a parallel loop body")
            if s.value is not None:
                self.store(s.buf, L.Const(0, "int64"), s.value)
            self.b.ret_void()
            self._dead_block()
        else:
            raise CompileError(f"cannot generate code for statement {s!r}")

    def vstore(self, s: L.VStore):
        dtype = self.mb.buffers[s.buf].dtype
        idx, val = self.expr(s.index).v, self.expr(s.value).v
        v = self._to_mem(val, dtype)
        p = self.elem_ptr(s.buf, idx)
        t = mem_t(dtype)
        if s.mask is None:
            self.b.store(v, p, align=_bytes(t))
        else:
            vt = v.type
            f = self.mb.intrinsic(f"llvm.masked.store.{mangle(vt)}.p0", ir.VoidType(),
                                  [vt, PTR, I32, ir.VectorType(I1, vt.count)])
            self.b.call(f, [v, p, ir.Constant(I32, _bytes(t)), self.expr(s.mask).v])

    def flag(self, s: L.Flag):
        c = self.expr(s.cond)
        hit = c.v
        if c.kind != "s":           # any active lane: masked-off tail lanes hold no data
            if self.vctx is not None and self.vctx[1] is not None:
                hit = self.b.and_(hit, self.vctx[1])
            vt = hit.type
            hit = self.b.call(self.mb.intrinsic(f"llvm.vector.reduce.or.{mangle(vt)}", I1, [vt]), [hit])
        then_bb, end_bb = self.fn.append_basic_block(), self.fn.append_basic_block()
        self.b.cbranch(hit, then_bb, end_bb)
        self.b.position_at_end(then_bb)
        self.b.store(ir.Constant(I64, s.code), self.elem_ptr(s.buf, ir.Constant(I64, 0)), align=8)
        self.b.branch(end_bb)
        self.b.position_at_end(end_bb)

    def decl(self, s: L.Decl):
        init = self.expr(s.init)
        lanes = s.lanes if s.lanes else (self.lanes() if (self.vctx and init.kind != "s") or
                                         (self.vctx and s.lanes is None) else None)
        et = init.v.type.element if isinstance(init.v.type, ir.VectorType) else init.v.type
        t = ir.VectorType(et, lanes) if lanes else et
        slot = self.eb.alloca(t, name=s.name)
        v = self.as_vec(init, lanes) if lanes else init.v
        self.b.store(v, slot)
        self.locals[s.name] = (slot, lanes, t, self.vctx[2] if self.vctx else 0)

    def assign(self, s: L.Assign):
        slot, lanes, t, ctx = self.locals[s.name]
        val = self.expr(s.value)
        v = self.as_vec(val, lanes) if lanes else val.v
        if lanes is None and val.kind != "s":
            raise CompileError(f"vector value assigned to scalar local '{s.name}'")
        if self.vctx is not None and self.vctx[1] is not None and ctx != self.vctx[2] and lanes:
            old = self.b.load(slot, typ=t)
            v = self.b.select(self.vctx[1], v, old)
        self.b.store(v, slot)

    def if_(self, s: L.If):
        c = self.expr(s.cond)
        if c.kind != "s":
            raise CompileError("if-condition varies across vector lanes")
        with_else = bool(s.orelse)
        then_bb = self.fn.append_basic_block()
        else_bb = self.fn.append_basic_block() if with_else else None
        end_bb = self.fn.append_basic_block()
        self.b.cbranch(c.v, then_bb, else_bb or end_bb)
        self.b.position_at_end(then_bb)
        self.memo.append({})
        self.stmts(s.then)
        self.memo.pop()
        self.b.branch(end_bb)
        if with_else:
            self.b.position_at_end(else_bb)
            self.memo.append({})
            self.stmts(s.orelse)
            self.memo.pop()
            self.b.branch(end_bb)
        self.b.position_at_end(end_bb)

    def _dead_block(self):
        """After a branch or return: later statements of the same list are unreachable."""
        self.b.position_at_end(self.fn.append_basic_block("dead"))

    def _loop_target(self, label):
        for t in reversed(self.loops):
            if label is None or t[0] == label:
                return t
        raise CompileError("break/continue outside a loop" + (f" labelled {label}" if label else ""))

    def _loop(self, start, stop, step, body_fn, full_chunks=False, label=None):
        """Emit `for (i = start; i < stop; i += step) body_fn(i)` (`i > stop` for a negative step;
        with `full_chunks`, only while a whole chunk of `step` fits); returns the exit value of i."""
        b = self.b
        pre = b.block
        head = self.fn.append_basic_block()
        body = self.fn.append_basic_block()
        latch = self.fn.append_basic_block()
        exit_ = self.fn.append_basic_block()
        b.branch(head)
        b.position_at_end(head)
        i = b.phi(I64)
        i.add_incoming(start, pre)
        if step < 0:
            cond = b.icmp_signed(">", i, stop)
        else:
            cond = b.icmp_signed("<", b.add(i, ir.Constant(I64, step - 1)) if full_chunks and step > 1 else i, stop)
        b.cbranch(cond, body, exit_)
        b.position_at_end(body)
        self.memo.append({})
        self.loops.append((label, latch, exit_))
        body_fn(i)
        self.loops.pop()
        self.memo.pop()
        b.branch(latch)
        b.position_at_end(latch)
        nxt = b.add(i, ir.Constant(I64, step))
        i.add_incoming(nxt, latch)
        b.branch(head)
        b.position_at_end(exit_)
        return i

    def loop_forever(self, s: L.Loop):
        b = self.b
        head = self.fn.append_basic_block()
        exit_ = self.fn.append_basic_block()
        b.branch(head)
        b.position_at_end(head)
        self.memo.append({})
        self.loops.append((s.label, head, exit_))
        self.stmts(s.body)
        self.loops.pop()
        self.memo.pop()
        b.branch(head)
        b.position_at_end(exit_)

    def for_(self, s: L.For):
        start, stop = self.expr(s.start).v, self.expr(s.stop).v
        name = s.var.name
        if s.parallel and self.mb.parallel and not self.outlined and self.vctx is None:
            self.parallel_for(s, start, stop)
            return
        if not s.vector or self.vctx is not None:
            prev = self.vars.get(name)

            def body(i):
                self.vars[name] = Val("s", i)
                self.stmts(s.body)
            self._loop(start, stop, s.step, body, label=s.label)
            # the loop variable does not dominate code after the loop
            if prev is None:
                self.vars.pop(name, None)
            else:
                self.vars[name] = prev
            return
        w = s.vector

        def vbody(i):
            self.vector_body(s.var, i, w, None, s.body)
        i_end = self._loop(start, stop, w, vbody, full_chunks=True)
        # one masked iteration for the remainder
        rem = self.b.icmp_signed("<", i_end, stop)
        tail = self.fn.append_basic_block()
        done = self.fn.append_basic_block()
        self.b.cbranch(rem, tail, done)
        self.b.position_at_end(tail)
        ids = self.b.add(self.splat(i_end, w), self.lane_ids(w))
        mask = self.b.icmp_signed("<", ids, self.splat(stop, w))
        self.vector_body(s.var, i_end, w, mask, s.body)
        self.b.branch(done)
        self.b.position_at_end(done)

    def parallel_for(self, s: L.For, start, stop):
        """Outline the loop body and run it on the thread pool (see the module docstring)."""
        b, eb = self.b, self.eb
        cap_vars = [(n, v) for n, v in self.vars.items() if v.kind == "s" and n != s.var.name]
        cap_locals = list(self.locals.items())
        nslots = 3 + len(cap_vars) + len(cap_locals)
        ctx = eb.alloca(ir.ArrayType(I64, nslots), name="pctx")

        def slot(k):
            return b.gep(ctx, [ir.Constant(I64, 0), ir.Constant(I64, k)])
        def put(k, v):      # every slot holds 64 bits: pointers travel as integers
            if isinstance(v.type, ir.PointerType):
                v = b.ptrtoint(v, I64)
            elif v.type != I64:
                v = b.zext(v, I64) if v.type.width < 64 else v
            b.store(v, slot(k))
        put(0, self.bases)
        put(1, self.sizes)
        put(2, start)
        for k, (_, v) in enumerate(cap_vars):
            put(3 + k, v.v)
        for k, (_, (ptr, *_)) in enumerate(cap_locals):
            put(3 + len(cap_vars) + k, ptr)

        fn = ir.Function(self.mb.module, BODY_T, name=f"{self.fn.name}_par{next(self.mb._outlined)}")
        fn.linkage = "internal"
        fe = FunctionEmitter(self.mb, fn, outlined=True)
        pctx, lo, hi = fn.args
        fb = fe.eb

        def cslot(k, t):
            p = fb.gep(pctx, [ir.Constant(I64, 0), ir.Constant(I64, k)], source_etype=ir.ArrayType(I64, nslots))
            v = fb.load(p, typ=I64)
            if isinstance(t, ir.PointerType):
                return fb.inttoptr(v, PTR)
            return v if t == I64 else fb.trunc(v, t)
        fe.bases, fe.sizes, fe.nthreads = cslot(0, PTR), cslot(1, PTR), ir.Constant(I32, 1)
        fe.local = self.local
        base = cslot(2, I64)
        for k, (n, v) in enumerate(cap_vars):
            fe.vars[n] = Val("s", cslot(3 + k, v.v.type))
        for k, (n, (_, lanes, t, _c)) in enumerate(cap_locals):
            fe.locals[n] = (cslot(3 + len(cap_vars) + k, PTR), lanes, t, 0)

        nest = _collapsible_nest(s)
        inner = nest[1:]

        def body(p):
            # one flat index over the collapsed nest: p -> (i0, i1, ...), innermost fastest
            fb2 = fe.b
            counts = [fe._trip(fe.expr(f.start).v, fe.expr(f.stop).v) for f in inner]
            rest = p
            idx = []
            for f, cnt in zip(reversed(inner), reversed(counts)):
                idx.append((f, fb2.add(fe.expr(f.start).v, fb2.srem(rest, cnt))))
                rest = fb2.sdiv(rest, cnt)
            fe.vars[s.var.name] = Val("s", fb2.add(base, rest))
            for f, v in idx:
                fe.vars[f.var.name] = Val("s", v)
            fe.stmts(nest[-1].body)
        fe._loop(lo, hi, 1, body, label=s.label)
        fe.b.ret_void()
        fe.eb.branch(fn.blocks[1])
        n = self._trip(start, stop)
        for f in inner:
            n = b.mul(n, self._trip(self.expr(f.start).v, self.expr(f.stop).v))
        b.call(self.mb.parallel_for(), [fn, ctx, n, self.nthreads])

    def _trip(self, start, stop):
        """max(stop - start, 0)"""
        d = self.b.sub(stop, start)
        return self.b.call(self.mb.intrinsic("llvm.smax.i64", I64, [I64, I64]), [d, ir.Constant(I64, 0)])

    def vector_body(self, var, base, lanes, mask, body):
        saved = self.vctx, self.vars.get(var.name)
        self.vctx = (lanes, mask, next(self._ctx_ids))
        self.vars[var.name] = Val("r", base, 1)
        self.memo.append({})
        self.stmts(body)
        self.memo.pop()
        self.vctx = saved[0]
        if saved[1] is not None:
            self.vars[var.name] = saved[1]


def _lacks_f16c() -> bool:
    return target_info()[0].startswith(("x86_64", "i386", "i686")) and not has_feature("f16c")


def _add_soft_half(module: ir.Module):
    """float <-> half conversions for a target without F16C. LLVM lowers them there to calls
    of __extendhfsf2 / __truncsfhf2, which no library loaded in this process provides (the JIT
    would call a null address): define them in the module, in integer arithmetic."""
    F = ir.FloatType()
    H = ir.HalfType()
    ir.GlobalVariable(module, I8, "__soft_half").initializer = ir.Constant(I8, 0)   # (marker)

    def const(v):
        return ir.Constant(I32, v)

    # half -> float: shift the exponent and mantissa into place and rescale by 2^112 (exact,
    # denormal halves included); infinities and NaNs get the all-ones float exponent
    ext = ir.Function(module, ir.FunctionType(F, [H]), name="__extendhfsf2")
    b = ir.IRBuilder(ext.append_basic_block())
    h = b.zext(b.bitcast(ext.args[0], ir.IntType(16)), I32)
    mag = b.shl(b.and_(h, const(0x7FFF)), const(13))
    scaled = b.bitcast(b.fmul(b.bitcast(mag, F), b.bitcast(const(0x77800000), F)), I32)
    special = b.or_(mag, const(0x7F800000))
    bits = b.select(b.icmp_unsigned(">=", mag, const(0x0F800000)), special, scaled)
    b.ret(b.bitcast(b.or_(bits, b.shl(b.and_(h, const(0x8000)), const(16))), F))

    # float -> half, rounding to nearest even: overflow to inf (NaN stays NaN); results
    # below the smallest normal half by adding a magic number that aligns the mantissa with
    # the half's denormal grid (the FPU rounds); normal results by adding half an ulp
    # (plus one when the kept mantissa is odd) and shifting
    trunc = ir.Function(module, ir.FunctionType(H, [F]), name="__truncsfhf2")
    b = ir.IRBuilder(trunc.append_basic_block())
    f = b.bitcast(trunc.args[0], I32)
    sign = b.lshr(b.and_(f, const(0x80000000)), const(16))
    a = b.and_(f, const(0x7FFFFFFF))
    big = b.select(b.icmp_unsigned(">", a, const(0x7F800000)), const(0x7E00), const(0x7C00))
    magic = const(((127 - 15) + (23 - 10) + 1) << 23)
    tiny = b.sub(b.bitcast(b.fadd(b.bitcast(a, F), b.bitcast(magic, F)), I32), magic)
    odd = b.and_(b.lshr(a, const(13)), const(1))
    normal = b.lshr(b.add(b.add(a, const(((15 - 127) << 23) + 0xFFF)), odd), const(13))
    out = b.select(b.icmp_unsigned(">=", a, const((127 + 16) << 23)), big,
                   b.select(b.icmp_unsigned("<", a, const(113 << 23)), tiny, normal))
    b.ret(b.bitcast(b.trunc(b.or_(out, sign), ir.IntType(16)), H))


# unary ops that LLVM has no intrinsic for: a libm call per lane (float32: the "f" variant)
_LIBM = frozenset({"erf", "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh"})


def _buffer_pointer(b: ir.IRBuilder, info: BufferInfo, bases, sizes):
    """bases[info.base] + (info.offset, or sizes[info.offset_slot]) bytes."""
    base = b.load(b.gep(bases, [ir.Constant(I64, info.base)], source_etype=PTR), typ=PTR)
    if info.offset_slot is not None:
        off = b.load(b.gep(sizes, [ir.Constant(I64, info.offset_slot)], source_etype=I64), typ=I64)
    else:
        off = ir.Constant(I64, info.offset)
    return b.gep(base, [off], source_etype=I8)


def _canon(x, bufs: dict):
    """A hashable structural key of loop IR with buffer ids renumbered in order of first use
    (recorded in `bufs`): equal keys mean the same code over different buffers. Expressions
    are DAGs (an inlined erf reuses its argument many times; a tree walk chains gathers of
    gathers), so the key is flat: one entry per distinct node, children named by entry number.
    A nested key would cost time exponential in the chain's depth to hash."""
    table: dict = {}
    root = _canon_node(x, bufs, {}, table)
    return (tuple(table), root)


def _canon_node(x, bufs, memo, table):
    if isinstance(x, (list, tuple)):
        return tuple(_canon_node(y, bufs, memo, table) for y in x)
    if isinstance(x, float):
        return ("f", repr(x))           # nan == nan here, and 0.0 != -0.0
    cls = type(x)
    names = _FIELDS.get(cls)
    if names is None:
        if not dataclasses.is_dataclass(x):
            return x
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(x))
    hit = memo.get(id(x))
    if hit is not None:
        return hit[1]
    out = [cls.__name__]
    for n in names:
        v = getattr(x, n)
        if n == "buf" and isinstance(v, int):
            out.append(("buf", bufs.setdefault(v, len(bufs))))
        else:
            out.append(_canon_node(v, bufs, memo, table))
    r = ("#", table.setdefault(tuple(out), len(table)))
    memo[id(x)] = (x, r)               # hold x: ids of dead objects get reused
    return r


_FIELDS: dict = {}


def _collapsible_nest(s: L.For) -> list:
    """`s` and the loops perfectly nested in it whose bounds do not depend on the outer loop
    variables: run as one flat parallel loop, so a batch-1 outer loop still spreads work."""
    nest = [s]
    names = {s.var.name}
    while True:
        cur = nest[-1]
        if len(cur.body) != 1 or not isinstance(cur.body[0], L.For):
            return nest
        f = cur.body[0]
        if f.vector or f.step != 1 or f.label or f.serial:
            return nest
        if _uses(f.start, names) or _uses(f.stop, names):
            return nest
        nest.append(f)
        names.add(f.var.name)


def _uses(e, names) -> bool:
    if isinstance(e, (L.Var, L.Local)):
        return e.name in names or isinstance(e, L.Local)
    for field in ("a", "b", "c", "index", "cond", "mask", "base", "limit", "vec", "value"):
        sub = getattr(e, field, None)
        if isinstance(sub, L.Expr) and _uses(sub, names):
            return True
    return False


def _fbits(t):
    return {ir.FloatType: 32, ir.DoubleType: 64, ir.HalfType: 16}[type(t)]


def _fbytes(t):
    return _fbits(t) // 8


def _bytes(t):
    if isinstance(t, ir.IntType):
        return max(t.width // 8, 1)
    return _fbytes(t)
