"""Scheduled graph -> loop IR kernels, a buffer table and a symbolic size table.

`KernelCtx` implements the scalar-op protocol (`o.add`, `o.exp`, `o.reduce`, ...) that op
definitions in `ember.ir.ops` are written against: calling an op's `emit` with it builds loop
IR. Values inlined into a kernel are computed at the index asked for (memoised per index);
stored values are loads. Reductions are placed at the outermost loop level where they are
invariant (a softmax row's max/sum once per row, vectorised along the row).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from . import loop_ir as L
from .llvm import BufferInfo
from ..errors import CompileError
from ..ir import symbolic as S
from ..ir.dtypes import FLOATS, NARROW, compute_dtype, itemsize, to_numpy
from ..ir.graph import Value
from ..ir.ops import OPS, broadcast_shapes, library_impl
from ..ir.target import DEFAULT as DEFAULT_TARGET
from ..schedule.fusion import KernelGroup, Schedule
from ..schedule.gemm import ColTiles, plan_gemm


# ----------------------------------------------------------------------------- size table
class SizeTable:
    """Slots of the runtime int64 table: symbolic dims (evaluated per shape signature) and
    arena offsets (filled by the memory planner)."""

    def __init__(self):
        self.exprs: list = []          # slot -> Dim (or None for planner-filled slots)
        self._index: dict = {}

    def slot(self, d) -> int:
        k = self._index.get(d)
        if k is None:
            k = len(self.exprs)
            self.exprs.append(d)
            self._index[d] = k
        return k

    def reserve(self) -> int:
        self.exprs.append(None)
        return len(self.exprs) - 1


@dataclass
class Program:
    kernels: list                       # loop IR kernels, in order
    buffers: dict                       # buf id -> BufferInfo
    sizes: SizeTable
    weights: np.ndarray                 # uint8 blob
    inputs: list                        # graph input Values (order = bases[2:])
    outputs: list                       # final output Values
    arena: list                         # [(slot, size Dim in bytes, first, last)] per arena buffer
    groups: list = field(default_factory=list)
    checks: list = field(default_factory=list)   # run-time data check messages (KernelCtx.check)
    status_slot: int | None = None               # size-table slot of the status word's arena offset


_IDENT = {"sum": 0.0, "prod": 1.0, "max": -math.inf, "min": math.inf}
# elements of a pointwise kernel's row per parallel chunk (64 KB of float32): rows longer
# than this, or known only at run time, are split so the pool has work to share
POINTWISE_CHUNK = 16384


def _ikey(e):
    """Structural key for the simple index expressions that repeat (consts, vars, sizes)."""
    if isinstance(e, L.Const):
        return ("c", e.value)
    if isinstance(e, (L.Var, L.Local)):
        return ("v", e.name)
    if isinstance(e, L.SizeRef):
        return ("s", e.slot)
    return id(e)


class KernelCtx:
    """The scalar-op protocol over loop IR, plus value emission for one kernel."""

    def __init__(self, lowering: "Lowering", group: KernelGroup, vector_lanes: int):
        self.lw = lowering
        self.group = group
        self.inline = {n.outputs[0].id for n in group.nodes}
        self.memo: dict = {}
        self.levels: list = []          # [{"stmts": [...], "vector": bool}]
        self.level_of_name: dict = {}
        self.W = vector_lanes
        self._lvl_memo: dict = {}
        self._fresh = itertools.count()
        self.overrides: dict = {}

    def fresh(self, p):
        return f"{p}{next(self._fresh)}"

    # -- constants & sizes ----------------------------------------------------------------
    def const(self, value, like):
        dtype = like if isinstance(like, str) else like.dtype
        return L.Const(value, compute_dtype(dtype))

    def iconst(self, v):
        return L.Const(int(v), "int64")

    def size(self, d):
        if isinstance(d, (int, np.integer)):
            return L.Const(int(d), "int64")
        return L.SizeRef(self.lw.sizes.slot(d))

    # -- arithmetic (folds integer constants so index math stays small) --------------------
    def _bin(self, op, a, b, dtype=None):
        dtype = dtype or a.dtype
        if isinstance(a, L.Const) and isinstance(b, L.Const) and a.dtype == "int64" and b.dtype == "int64":
            x, y = a.value, b.value
            r = {"add": lambda: x + y, "sub": lambda: x - y, "mul": lambda: x * y,
                 "max": lambda: max(x, y), "min": lambda: min(x, y)}.get(op)
            if r is not None:
                return L.Const(r(), "int64")
        if a.dtype == "int64" and op in ("add", "sub") and isinstance(b, L.Const) and b.value == 0:
            return a
        if a.dtype == "int64" and op == "add" and isinstance(a, L.Const) and a.value == 0:
            return b
        if a.dtype == "int64" and op == "mul":
            if isinstance(b, L.Const) and b.value == 1:
                return a
            if isinstance(a, L.Const) and a.value == 1:
                return b
            if (isinstance(b, L.Const) and b.value == 0) or (isinstance(a, L.Const) and a.value == 0):
                return L.Const(0, "int64")
        if a.dtype != b.dtype and op not in ("pow",):
            raise CompileError(f"internal: {op} on {a.dtype} and {b.dtype}")
        return L.Bin(op, a, b, dtype)

    def add(self, a, b): return self._bin("add", a, b)
    def sub(self, a, b): return self._bin("sub", a, b)
    def mul(self, a, b): return self._bin("mul", a, b)
    def div(self, a, b): return self._bin("div", a, b)
    def mod(self, a, b): return self._bin("mod", a, b)
    def max(self, a, b): return self._bin("max", a, b)
    def min(self, a, b): return self._bin("min", a, b)

    def pow(self, a, b):
        if b.dtype != a.dtype:
            b = self.cast(b, a.dtype)
        return L.Bin("pow", a, b, a.dtype)

    def eq(self, a, b): return L.Bin("eq", a, b, "bool")
    def lt(self, a, b): return L.Bin("lt", a, b, "bool")
    def le(self, a, b): return L.Bin("le", a, b, "bool")
    def and_(self, a, b): return L.Bin("and", a, b, a.dtype)
    def or_(self, a, b): return L.Bin("or", a, b, a.dtype)
    def xor(self, a, b): return L.Bin("xor", a, b, a.dtype)
    def not_(self, a): return L.Un("not", a, a.dtype)
    def neg(self, a): return L.Un("neg", a, a.dtype)
    def abs(self, a): return L.Un("abs", a, a.dtype)
    def exp(self, a): return L.Un("exp", a, a.dtype)
    def log(self, a): return L.Un("log", a, a.dtype)
    def sqrt(self, a): return L.Un("sqrt", a, a.dtype)
    def tanh(self, a): return L.Un("tanh", a, a.dtype)
    def erf(self, a): return L.Un("erf", a, a.dtype)

    def kernel_math(self, name, a):
        """`ember.kernels.math.<name>` (a kernel-language function) inlined at `a`."""
        from ..kernels import math as kernel_math
        from ..lang.elementwise import inline_elementwise
        return inline_elementwise(getattr(kernel_math, name), [a])

    def math(self, op, a):
        """A float function that codegen computes by name (an LLVM intrinsic or libm)."""
        return L.Un(op, a, a.dtype)

    def floor(self, a):
        return a if a.dtype not in FLOATS else L.Un("floor", a, a.dtype)

    def ceil(self, a):
        return a if a.dtype not in FLOATS else L.Un("ceil", a, a.dtype)

    def where(self, c, a, b):
        return L.Select(c, a, b, a.dtype)

    def cast(self, x, to, saturate=1):
        if to == "float16" or to in NARROW:   # round to the type, keep computing in its compute type
            return L.Cast(L.Cast(x, to, bool(saturate)), compute_dtype(to))
        if x.dtype == to:
            return x
        return L.Cast(x, to)

    def bitcast(self, x, to):
        """The bits of x (computed in its compute type) as a `to` of the same size. bool is a
        byte of 0 or 1, and a half is computed in float32, so those convert rather than bitcast."""
        if "bool" in (x.dtype, to):
            return self.cast(x, to)
        src = "float16" if x.dtype == "float32" and to in ("int16", "uint16") else x.dtype
        if src != x.dtype:
            x = L.Cast(x, src)
        y = L.Bitcast(x, to)
        return L.Cast(y, compute_dtype(to)) if compute_dtype(to) != to else y

    # -- index helpers --------------------------------------------------------------------
    def linearize(self, idx, shape):
        idx, shape = _merge_split_indices(list(idx), list(shape), self.size)
        lin = None
        for i, d in zip(idx, shape):
            lin = i if lin is None else self.add(self.mul(lin, self.size(d)), i)
        return lin if lin is not None else self.iconst(0)

    def delinearize(self, lin, shape):
        out = []
        for k, d in enumerate(reversed(shape)):
            if isinstance(d, int) and d == 1:
                out.append(self.iconst(0))
            elif k == len(shape) - 1:       # the outermost index needs no wrap-around
                out.append(lin)
            else:
                out.append(L.Bin("mod", lin, self.size(d), "int64"))
                lin = L.Bin("div", lin, self.size(d), "int64")
        out.reverse()
        return out

    def reshape_index(self, idx, out_shape, in_shape):
        """The input index of a reshape's output index `idx`. Each run of output dims maps to
        the run of input dims with the same element count (`symbolic.reshape_groups`), so a reshape
        that splits or merges a few dims divides only within those dims, usually by a
        constant, rather than linearizing the whole index and dividing it by every input dim."""
        groups = S.reshape_groups(out_shape, in_shape)
        if groups is None:
            return self.delinearize(self.linearize(idx, out_shape), in_shape)
        src = [self.iconst(0)] * len(in_shape)
        for outs, ins in groups:
            if len(outs) == 1 and len(ins) == 1:
                src[ins[0]] = idx[outs[0]]
                continue
            lin = self.linearize([idx[k] for k in outs], [out_shape[k] for k in outs])
            for k, v in zip(ins, self.delinearize(lin, [in_shape[k] for k in ins])):
                src[k] = v
        return src

    def broadcast_index(self, idx, in_shape, out_shape):
        off = len(out_shape) - len(in_shape)
        return [self.iconst(0) if (isinstance(d, int) and d == 1 and not
                                   (isinstance(out_shape[off + k], int) and out_shape[off + k] == 1))
                else idx[off + k] for k, d in enumerate(in_shape)]

    # -- reductions -----------------------------------------------------------------------
    def _level_of(self, e) -> int:
        """Deepest statement level an expression depends on (-1: none)."""
        k = id(e)
        if k in self._lvl_memo:
            return self._lvl_memo[k][1]
        if isinstance(e, (L.Var, L.Local)):
            r = self.level_of_name.get(e.name, -1)
        elif isinstance(e, (L.Const, L.SizeRef)):
            r = -1
        else:
            r = -1
            for f in ("index", "a", "b", "c", "cond", "mask", "base", "limit"):
                sub = getattr(e, f, None)
                if isinstance(sub, L.Expr):
                    r = max(r, self._level_of(sub))
        self._lvl_memo[k] = (e, r)     # hold e: ids of dead objects get reused
        return r

    def push_level(self, names, vector):
        self.levels.append({"stmts": [], "vector": vector})
        for n in names:
            self.level_of_name[n] = len(self.levels) - 1
        return self.levels[-1]

    def reduce(self, kind, extents, body, dtype, unroll=False, merge=False):
        """`merge`: the reduced axes are adjacent in the input, so one loop runs over all of
        them (a vector of 16 along 7x7 pixels, not 7 lanes of a masked vector per row); its
        split indices fold back into one in `linearize`."""
        cd = compute_dtype(dtype)
        if merge and not unroll and len(extents) > 1:
            inner_body, parts = body, list(extents)
            extents = [S.prod(parts)]
            body = lambda r: inner_body(self.delinearize(r[0], parts))
        ident = _IDENT[kind]
        if cd not in FLOATS:
            info = np.iinfo(to_numpy(cd)) if cd != "bool" else None
            ident = {"sum": 0, "prod": 1}[kind] if kind in ("sum", "prod") else \
                (info.min if kind == "max" else info.max) if info else (kind == "min")
        combine = {"sum": "add", "prod": "mul", "max": "max", "min": "min"}[kind]
        if unroll and all(isinstance(e, int) for e in extents) and int(np.prod(extents)) <= 64:
            acc = None
            for combo in itertools.product(*[range(e) for e in extents]):
                v = body([self.iconst(i) for i in combo])
                acc = v if acc is None else self._bin(combine, acc, v)
            return acc if acc is not None else L.Const(ident, cd)
        rvars = [L.Var(self.fresh("r")) for _ in extents]
        depth = len(self.levels)
        lvl = self.push_level([v.name for v in rvars], vector=True)
        val = body(rvars)
        self.levels.pop()
        # names bound inside the reduction do not count: it depends on the levels outside
        inner = {n: l for n, l in self.level_of_name.items() if l >= depth}
        for n in inner:
            self.level_of_name[n] = -1
        self._lvl_memo.clear()
        deps = [self._level_of(val)] + [self._stmt_level(s) for s in lvl["stmts"]]
        self.level_of_name.update(inner)
        self._lvl_memo.clear()
        place = max(deps + [0])
        acc = self.fresh("acc")
        target = self.levels[place]
        own_vector = not target["vector"]
        update = [L.Assign(acc, self._bin(combine, L.Local(acc, cd), val))]
        loops = lvl["stmts"] + update
        for k in reversed(range(len(extents))):
            loops = [L.For(rvars[k], self.iconst(0), self.size(extents[k]), loops,
                           vector=self.W if (own_vector and k == len(extents) - 1) else 0)]
        target["stmts"].append(L.Decl(acc, L.Const(ident, cd), lanes=self.W if own_vector else None))
        target["stmts"].extend(loops)
        self.level_of_name[acc] = place
        self._lvl_memo.clear()
        if own_vector:
            res = self.fresh("red")
            target["stmts"].append(L.Decl(res, L.HReduce(combine, L.Local(acc, cd), cd), lanes=None))
            self.level_of_name[res] = place
            return L.Local(res, cd)
        return L.Local(acc, cd)

    def _stmt_level(self, s) -> int:
        r = -1
        if isinstance(s, L.For):
            r = max(self._level_of(s.start), self._level_of(s.stop))
            for x in s.body:
                r = max(r, self._stmt_level(x))
        elif isinstance(s, (L.Store, L.Assign, L.Decl)):
            e = getattr(s, "value", None) or getattr(s, "init", None)
            r = self._level_of(e)
        return r

    # -- values ---------------------------------------------------------------------------
    def value(self, v: Value, idx):
        key = (v.id, tuple(_ikey(i) for i in idx))
        hit = self.memo.get(key)
        if hit is not None:
            return hit[0]
        if v.id in self.overrides:
            r = self.overrides[v.id](idx)
        elif v.id in self.inline:
            r = self._compute(v, idx)
        else:
            r = self.lw.load_value(self, v, idx)
        self.memo[key] = (r, idx)      # hold idx: ids of dead objects get reused
        return r

    def check(self, cond, message: str):
        """Report `message` after the run wherever `cond` holds (a data error that ONNX
        defines): a flag set inside the kernel's loop at the level `cond` depends on."""
        if not self.levels:
            raise CompileError(f"internal: a checked index outside a loop nest ({message})")
        target = self.levels[max(self._level_of(cond), 0)]
        target["stmts"].append(L.Flag(cond, self.lw.check_code(message), self.lw.status_buf()))

    def guarded(self, v: Value, idx, cond, fill, safe_idx):
        """`cond ? v[idx] : fill` where idx may be out of bounds when cond is false. A stored
        value becomes one guarded load (a masked vector load along a contiguous row, so
        padded windows stay vectorised); a computed one is computed at the clamped index."""
        stored = (v.id not in self.overrides and v.id not in self.inline
                  and not (v.is_const and (v.is_symbolic_const or v.const.size == 1)))
        if not stored:
            return self.where(cond, self.value(v, safe_idx), self.const(fill, v))
        val = L.Load(self.lw._buf(v), self.linearize(idx, v.shape), v.dtype, cond, fill)
        return L.Cast(val, compute_dtype(v.dtype)) if compute_dtype(v.dtype) != v.dtype else val

    def fma(self, a, b, c):
        if a.dtype in FLOATS:
            return L.Fma(a, b, c, a.dtype)
        return self.add(self.mul(a, b), c)

    def _compute(self, v: Value, idx):
        node = v.producer
        d = OPS[node.op]
        out_shape = v.shape
        if d.kind == "pointwise":
            vals = [self.value(x, self.broadcast_index(idx, x.shape, out_shape)) for x in node.inputs]
            attrs = {k: a for k, a in node.attrs.items() if not k.startswith("_")}
            return d.emit(self, *vals, **attrs)
        if d.kind == "index":
            # ins[k](ix) reads input k at ix; ins[k](ix, guard=(cond, fill, safe_ix)) is
            # `cond ? x[ix] : fill` for windows that may hang over an edge
            ins = [(lambda x: (lambda ix, guard=None: self.value(x, ix) if guard is None
                               else self.guarded(x, ix, *guard)))(x) for x in node.inputs]
            return d.index_emit(self, node, ins, idx)
        raise CompileError(f"internal: cannot inline {node.op}")


class Lowering:
    def __init__(self, sched: Schedule, target=None, nr: int = 2):
        self.s = sched
        self.target = target if target is not None else DEFAULT_TARGET
        self.nr = nr                     # vectors per GEMM tile row (the plan's NR)
        self.sizes = SizeTable()
        self.buffers: dict = {}
        self.buf_of: dict = {}          # value id -> buf id
        self._weights: list = []
        self._woff = 0
        self._packed: dict = {}
        self._bufid = itertools.count()
        self.kernels: list = []
        self._scratch: list = []        # [(slot, nbytes, kernel, kernel)]: arena space for one kernel
        self._ki = 0
        self.checks: list = []          # messages of run-time data checks, code k + 1 -> checks[k]
        self._status = None             # (buf, slot) of the run's status word, once a check needs it

    def lanes(self, dtype):
        bits = 8 * max(itemsize(compute_dtype(dtype)), 4) if dtype != "bool" else 32
        return max(self.target.vector_bits // bits, 4)

    # -- buffers --------------------------------------------------------------------------
    def _new_buf(self, dtype, base, offset=0, offset_slot=None):
        b = next(self._bufid)
        self.buffers[b] = BufferInfo(dtype, base, offset, offset_slot)
        return b

    def _scratch_buf(self, nbytes: int) -> int:
        """Arena space private to the kernel being lowered (live during it only)."""
        slot = self.sizes.reserve()
        self._scratch.append((slot, nbytes, self._ki, self._ki))
        return self._new_buf("float32", 0, offset_slot=slot)

    def status_buf(self) -> int:
        """The run's int64 status word (0: no data error), in the arena for the whole run."""
        if self._status is None:
            slot = self.sizes.reserve()
            self._status = (self._new_buf("int64", 0, offset_slot=slot), slot)
        return self._status[0]

    def check_code(self, message: str) -> int:
        if message not in self.checks:
            self.checks.append(message)
        return self.checks.index(message) + 1

    def weight_buf(self, v: Value):
        b = self.buf_of.get(v.id)
        if b is None:
            arr = np.asarray(v.const, order="C")
            if arr.dtype == np.bool_:
                arr = arr.astype(np.uint8)
            off = (self._woff + 63) // 64 * 64
            self._weights.append((off, arr))
            self._woff = off + arr.nbytes
            b = self._new_buf(v.dtype, 1, off)
            self.buf_of[v.id] = b
        return b

    def base_value(self, v: Value) -> Value:
        while v.id in self.s.views:
            v = self.s.views[v.id]
        return v

    def load_value(self, ctx: KernelCtx, v: Value, idx):
        if v.is_const and v.is_symbolic_const:
            flat = v.const.reshape(-1)
            if flat.size == 1:
                return ctx.cast(ctx.size(flat[0]), v.dtype) if v.dtype != "int64" else ctx.size(flat[0])
            lin = ctx.linearize(idx, v.shape)
            r = ctx.size(flat[-1])
            for k in reversed(range(flat.size - 1)):
                r = L.Select(L.Bin("eq", lin, ctx.iconst(k), "bool"), ctx.size(flat[k]), r, "int64")
            return r
        if v.is_const and v.const.size == 1:
            x = v.const.reshape(-1)[0]
            return L.Const(bool(x) if v.dtype == "bool" else (float(x) if v.dtype in FLOATS else int(x)),
                           compute_dtype(v.dtype))
        base = self.base_value(v)
        if base.is_const:
            buf = self.weight_buf(base)
        else:
            buf = self.buf_of[base.id]
        val = L.Load(buf, ctx.linearize(idx, v.shape), v.dtype)
        if compute_dtype(v.dtype) != v.dtype:
            val = L.Cast(val, compute_dtype(v.dtype))
        return val

    # -- program --------------------------------------------------------------------------
    def run(self) -> Program:
        s = self.s
        g = s.graph
        for k, v in enumerate(g.inputs):
            self.buf_of[v.id] = self._new_buf(v.dtype, 2 + k)
        for k, v in enumerate(g.outputs):
            self.buf_of[v.id] = self._new_buf(v.dtype, 2 + len(g.inputs) + k)
        for vid, v in s.out_alias.items():
            self.buf_of[vid] = self.buf_of[v.id]
        out_ids = {v.id for v in g.outputs}
        # arena buffers for stored intermediates, with lifetimes in kernel order
        first: dict = {}
        last: dict = {}
        for ki, grp in enumerate(s.kernels):
            if grp.root.id not in out_ids and grp.root.id not in self.buf_of:
                slot = self.sizes.reserve()
                self.buf_of[grp.root.id] = self._new_buf(grp.root.dtype, 0, offset_slot=slot)
                first[grp.root.id] = ki
            for n in grp.nodes:
                for x in n.inputs:
                    if x is not None:
                        bx = self.base_value(x)
                        last[bx.id] = ki
            if grp.source is not None:
                last[self.base_value(grp.source).id] = ki
        for ki, grp in enumerate(s.kernels):
            self._ki = ki
            self.kernels.append(self.lower_group(ki, grp))
        arena = list(self._scratch)
        if self._status is not None:
            arena.append((self._status[1], 8, 0, len(self.kernels)))
        for vid, ki in first.items():
            v = s.stored[vid]
            nbytes = S.prod(v.shape) * itemsize(v.dtype)
            arena.append((self.buffers[self.buf_of[vid]].offset_slot, nbytes, ki, max(last.get(vid, ki), ki)))
        blob = np.zeros(max(self._woff, 1), dtype=np.uint8)
        for off, arr in self._weights:
            blob[off:off + arr.nbytes] = np.frombuffer(arr.tobytes(), dtype=np.uint8)
        return Program(self.kernels, self.buffers, self.sizes, blob, list(g.inputs), list(g.outputs),
                       arena, list(s.kernels), self.checks, self._status[1] if self._status else None)

    def lower_group(self, ki, grp: KernelGroup) -> L.Kernel:
        name = f"k{ki}_" + (grp.anchor.op if grp.anchor is not None else
                            (grp.nodes[-1].op if grp.nodes else "copy"))
        if grp.kind == "matmul":
            body = self.lower_matmul(grp)
        elif grp.kind == "library":
            body = self.lower_library(grp)
        else:
            body = self.lower_pointwise(grp)
        return L.Kernel(name, body, grp.origin, grp.kind)

    def _store(self, ctx, root, idx, val):
        buf = self.buf_of[root.id]
        if val.dtype != root.dtype:   # (a decoded float8 inf stays inf: not saturated)
            val = L.Cast(val, root.dtype, saturate=False)
        return L.Store(buf, ctx.linearize(idx, root.shape), val)

    def lower_pointwise(self, grp: KernelGroup):
        root = grp.root
        ctx = KernelCtx(self, grp, self.lanes(root.dtype))
        shape = root.shape
        if any(isinstance(d, int) and d == 0 for d in shape):
            return []
        axes = [i for i, d in enumerate(shape) if not (isinstance(d, int) and d == 1)]
        inner = axes[-1] if axes and not self._reduces_along_rows(grp) else None
        idx = [ctx.iconst(0) if i not in axes else L.Var(f"i{i}") for i in range(len(shape))]
        outer_names = [idx[i].name for i in axes if i != inner]
        ctx.push_level(outer_names, vector=False)
        if inner is not None:
            ctx.push_level([idx[inner].name], vector=True)
        src = grp.source if grp.kind == "copy" else root
        val = ctx.value(src, idx)
        outer = [i for i in axes if i != inner]
        if inner is not None:
            elem = ctx.levels[1]["stmts"] + [self._store(ctx, root, idx, val)]
            extent = ctx.size(shape[inner])
            if isinstance(shape[inner], int) and shape[inner] <= POINTWISE_CHUNK:
                body = ctx.levels[0]["stmts"] + [L.For(idx[inner], ctx.iconst(0), extent, elem, vector=ctx.W)]
            else:
                # a long (or run-time) row in chunks, a loop the pool can split: with no outer
                # axis, or outer axes that are 1 at run time (a batch of one), the row was one
                # serial loop (Exp+Sin on 4M floats: 1 thread 67 ms, 2 threads 69 ms)
                c = L.Var(f"c{inner}")
                lo = ctx.mul(c, ctx.iconst(POINTWISE_CHUNK))
                hi = ctx.min(ctx.add(lo, ctx.iconst(POINTWISE_CHUNK)), extent)
                nchunks = ctx.div(ctx.add(extent, ctx.iconst(POINTWISE_CHUNK - 1)), ctx.iconst(POINTWISE_CHUNK))
                row = ctx.levels[0]["stmts"] + [L.For(idx[inner], lo, hi, elem, vector=ctx.W)]
                body = [L.For(c, ctx.iconst(0), nchunks, row, parallel=not outer)]
        else:
            body = ctx.levels[0]["stmts"] + [self._store(ctx, root, idx, val)]
        for n, i in enumerate(reversed(outer)):
            body = [L.For(idx[i], ctx.iconst(0), ctx.size(shape[i]), body, parallel=(n == len(outer) - 1))]
        return body

    def _reduces_along_rows(self, grp: KernelGroup) -> bool:
        """Whether each output element is a reduction along its input's contiguous axis (a
        global average pool: 1280 channels of 7x7). Then the reduction is the vector loop, one
        output at a time in parallel; vectors across outputs would gather a lane from each
        channel (a global pool over [1, 1280, 7, 7] on its own: 15.5 -> 3.5 us on one thread,
        15.3 -> 2.8 us on two, where the gathers did not scale)."""
        root = grp.root
        size = [d for d in root.shape if not (isinstance(d, int) and d == 1)]
        for n in grp.nodes:
            if n.op not in ("reduce_sum", "reduce_max", "reduce_min"):
                continue
            x, axes = n.inputs[0].shape, set(n.attrs["axes"])
            live = [i for i, d in enumerate(x) if not (isinstance(d, int) and d == 1)]
            out = [d for d in n.outputs[0].shape if not (isinstance(d, int) and d == 1)]
            run = S.prod([x[i] for i in axes])
            if live and live[-1] in axes and out == size and not (isinstance(run, int) and run < 8):
                return True
        return False

    def lower_matmul(self, grp: KernelGroup):
        """Register-blocked GEMM: each task computes an MR x (NR*W) tile of C in registers
        (MR*NR vector accumulators; per k, MR broadcasts of A and NR vector loads of B), then
        runs the fused epilogue on the tile. A constant operand is packed at compile time into
        the order the micro-kernel reads it, so every k step touches one contiguous line:
        constant B (weights of Linear/Gemm) as [N/NB][K][NB] column panels, constant A (the
        weights of a convolution, [Cout, Cin*kh*kw]) as [M/MR][K][MR] row panels."""
        mm = grp.anchor
        a, b = mm.inputs
        out = mm.outputs[0]
        dt = compute_dtype(out.dtype)
        ctx = KernelCtx(self, grp, self.lanes(out.dtype))
        a2 = tuple(a.shape) if a.type.rank > 1 else (1,) + tuple(a.shape)
        b2 = tuple(b.shape) if b.type.rank > 1 else tuple(b.shape) + (1,)
        if any(isinstance(d, int) and d == 0 for d in out.shape):
            return []
        K, N = a2[-1], b2[-1]
        fold_batch = len(b2) == 2
        if fold_batch:
            M = S.prod(a2[:-1])
            batch, a_bat, b_bat = (), (), ()
        else:
            M = a2[-2]
            batch = broadcast_shapes(a2[:-2], b2[:-2])
            a_bat = (1,) * (len(batch) - len(a2[:-2])) + tuple(a2[:-2])
            b_bat = (1,) * (len(batch) - len(b2[:-2])) + tuple(b2[:-2])
        bvars = [L.Var(f"b{i}") for i in range(len(batch))]
        sz = ctx.size
        static = all(isinstance(d, int) for d in (K, N))
        pack_b = (static and fold_batch and dt == "float32" and b.dtype == "float32"
                  and self._const_array(b, b2) is not None)
        # constant A (convolution weights) packs whatever N is: an image of run-time size
        pack_a = (not pack_b and isinstance(K, int) and isinstance(M, int) and dt == "float32"
                  and a.dtype == "float32" and self._const_array(a, a2) is not None)
        implicit = self._implicit_im2col(b) if pack_a and len(batch) == 2 else None
        plan = plan_gemm(M, N, K, self.target, itemsize=itemsize(dt), f32=dt == "float32", pack_a=pack_a,
                         pack_b=pack_b, implicit=implicit is not None, nr=self.nr)
        W, NR, NB = plan.W, plan.NR, plan.NB
        assert W == ctx.W

        def bat_off(shape_b, mat_elems):
            off = ctx.iconst(0)
            for v, d in zip(bvars, shape_b):
                off = ctx.add(ctx.mul(off, sz(d)), ctx.iconst(0) if (isinstance(d, int) and d == 1) else v)
            return ctx.mul(off, sz(mat_elems))
        b_off = bat_off(b_bat, S.prod(b2[-2:])) if not fold_batch else ctx.iconst(0)
        if pack_b:
            bbuf = self.packed_weight_buf(b, b2, "b", NB)
        elif implicit is not None:
            bbuf = self._buf(implicit.inputs[0])
        else:
            bbuf = self._buf(b)
        ib, jb, kv, kb = L.Var("ib"), L.Var("jb"), L.Var("k"), L.Var("kb")

        def epilogue(acc_name, row, col, var, base, mask):
            """The fused pointwise kernel at C[row, col], reading the accumulator for the matmul
            value, evaluated over W lanes with `var` = base + lane."""
            ctx.memo.clear()
            out_idx = self._mm_out_index(ctx, out, a, b, bvars, row, col, fold_batch)
            ctx.overrides = {out.id: lambda ix: L.Local(acc_name, dt)}
            ctx.levels = []
            ctx.push_level([], vector=True)
            val = ctx.value(grp.root, out_idx)
            if ctx.levels[0]["stmts"]:
                raise CompileError("internal: epilogue with reductions")
            return L.VecScope(var, base, W, [self._store(ctx, grp.root, out_idx, val)], mask)

        partial_sums = {}
        copies = {}

        def copy_b_panels(rt):
            """B copied into [batch][N/NB][K][NB] panels (the last padded with zeros): with
            rows outermost, one parallel loop over (batch item, panel) before the tiles (the
            prologue returned); with panels outermost, each panel by the task that runs its
            tiles, just before them (copies[rt][2])."""
            nblk = -(-N // NB)
            cbuf = self._scratch_buf(S.prod(batch) * nblk * K * NB * 4)
            item = ctx.iconst(0)
            for v, d in zip(bvars, batch):
                item = ctx.add(ctx.mul(item, sz(d)), v)
            pk = L.Var("pk")

            def copy_panel(pj):
                dst = ctx.mul(ctx.add(ctx.mul(ctx.add(ctx.mul(item, ctx.iconst(nblk)), pj), sz(K)), pk), ctx.iconst(NB))
                copy = []
                for c in range(NR):
                    col = ctx.add(ctx.mul(pj, ctx.iconst(NB)), ctx.iconst(c * W))
                    mask = None if N % NB == 0 else L.LaneMask(col, sz(N), W)
                    x = L.VLoad(bbuf, ctx.add(b_off, ctx.add(ctx.mul(pk, sz(N)), col)), W, "float32", mask)
                    copy.append(L.VStore(cbuf, ctx.add(dst, ctx.iconst(c * W)), x))
                return [L.For(pk, ctx.iconst(0), sz(K), copy, serial=True)]
            copies[rt] = (cbuf, ctx.mul(ctx.add(ctx.mul(item, ctx.iconst(nblk)), jb), sz(K)), copy_panel(jb))
            if rt.rows_fastest:
                return []
            pj = L.Var("pj")
            loops = [L.For(pj, ctx.iconst(0), ctx.iconst(nblk), copy_panel(pj))]
            for v, d in reversed(list(zip(bvars, batch))):
                loops = [L.For(v, ctx.iconst(0), sz(d), loops)]
            f = loops[0]
            return [L.For(f.var, f.start, f.stop, f.body, parallel=True)]

        def tile(rt):
            """The loop nest over all tiles of `rt.MR` rows; with `rt.tail_mr`, over the whole
            tiles of MR rows only, then the rows left (M mod MR, known at run time) in tiles of
            tail_mr rows."""
            ctx.memo.clear()
            MR, tail_mr, rows_fastest = rt.MR, rt.tail_mr, rt.rows_fastest
            nblk_n = sz(S.floordiv(N + NB - 1, NB))
            prologue = copy_b_panels(rt) if rt.copy_b else []
            ctx.memo.clear()
            if rt.nk > 1:
                # partial sums between K slices: rows 0..M+MR of every panel (the last tile
                # may hang past M), one region per panel
                # panels in groups (rt.group of them, known once per shape signature): slice kb
                # of each panel of the group, then slice kb+1, so A's slice stays in L2
                # ceil(panels / group) groups, their bounds spread evenly: none holds more than
                # rt.group panels, and none is left with a remainder (7 panels by 2: 2, 2, 2, 1
                # of which the last is 4 columns; on 2 cores one ran 4 panels to the other's
                # 2.1), the partial last panel in the last, larger group
                jg, gs = L.Var("jg"), sz(rt.group)
                ngroups = ctx.div(ctx.add(nblk_n, ctx.sub(gs, ctx.iconst(1))), gs)
                j_lo = ctx.div(ctx.mul(jg, nblk_n), ngroups)
                j_hi = ctx.div(ctx.mul(ctx.add(jg, ctx.iconst(1)), nblk_n), ngroups)
                # one region per batch item (batch items run on different threads)
                region = (M + MR) * S.floordiv(N + NB - 1, NB) * NB
                item = ctx.iconst(0)
                for v, d in zip(bvars, batch):
                    item = ctx.add(ctx.mul(item, sz(d)), v)
                partial_sums[rt] = (self._scratch_buf(region * S.prod(batch) * 4),
                                    ctx.mul(kb, ctx.iconst(rt.kc)), j_lo, j_hi, ctx.mul(item, sz(region)))
            if tail_mr:
                nfull = ctx.div(sz(M), ctx.iconst(MR))
                it = L.Var("it")
                ntail = ctx.div(ctx.add(ctx.sub(sz(M), ctx.mul(nfull, ctx.iconst(MR))), ctx.iconst(tail_mr - 1)),
                                ctx.iconst(tail_mr))
                row_loops = [(ib, nfull, tile_rows(rt, MR, ib, ctx.mul(ib, ctx.iconst(MR)), False)),
                             (it, ntail, tile_rows(rt, tail_mr, ctx.add(nfull, it),
                                                   ctx.add(ctx.mul(nfull, ctx.iconst(MR)), ctx.mul(it, ctx.iconst(tail_mr))),
                                                   True))]
            else:
                nblk_m = sz(S.floordiv(M + MR - 1, MR))
                row_loops = [(ib, nblk_m, tile_rows(rt, MR, ib, ctx.mul(ib, ctx.iconst(MR)), rt.guard_rows))]
            if rt.nk > 1:
                # slice kb of every row tile on the panel, then slice kb+1 (serial: it adds to
                # the partial sums of slice kb, on the same thread)
                loops = [L.For(jg, ctx.iconst(0), ngroups, [L.For(kb, ctx.iconst(0), ctx.iconst(rt.nk), [
                    L.For(jb, j_lo, j_hi, [
                        L.For(v, ctx.iconst(0), n, body) for v, n, body in row_loops])], serial=True)])]
            elif rows_fastest and rt.copy_b:
                # (the row tiles serial: one task copies the panel, then runs its tiles)
                loops = [L.For(jb, ctx.iconst(0), nblk_n, copies[rt][2] + [
                    L.For(v, ctx.iconst(0), n, body, serial=True) for v, n, body in row_loops])]
            elif rows_fastest:
                loops = [L.For(jb, ctx.iconst(0), nblk_n, [L.For(v, ctx.iconst(0), n, body) for v, n, body in row_loops])]
            else:
                loops = [L.For(v, ctx.iconst(0), n, [L.For(jb, ctx.iconst(0), nblk_n, body)]) for v, n, body in row_loops]
            for v, d in reversed(list(zip(bvars, batch))):
                loops = [L.For(v, ctx.iconst(0), sz(d), loops)]
            # the outermost loops run on the pool; the perfectly nested loops inside one
            # collapse into one flat range of tiles
            return prologue + [L.For(f.var, f.start, f.stop, f.body, parallel=True) for f in loops]

        def tile_rows(rt, MR, ib, i0, guard):
            """One tile's body: MR rows from row i0 (the ib-th tile on its column panel) by the
            NB columns from jb*NB; `guard`: rows past M exist (their stores are skipped)."""
            ctx.memo.clear()
            j0 = ctx.mul(jb, ctx.iconst(NB))
            cols = [ctx.add(j0, ctx.iconst(c * W)) for c in range(NR)]
            # whole panels (N a multiple of NB) need no masks: on a machine without mask
            # registers a masked load or store is a slower instruction (AVX2's vmaskmovps
            # store: a 96x12544x16 conv 2.4x slower on a Zen 3)
            masks = ([None] * NR if isinstance(N, int) and N % NB == 0
                     else [L.LaneMask(c, sz(N), W) for c in cols])
            if pack_a:
                abuf = self.packed_weight_buf(a, a2, "a", MR)
                a_off = bat_off(a_bat, (M + MR - 1) // MR * MR * K)
                a_row0 = ctx.add(a_off, ctx.mul(ctx.mul(ib, sz(K)), ctx.iconst(MR)))

                def load_a(r, k):
                    return L.Load(abuf, ctx.add(a_row0, ctx.add(ctx.mul(k, ctx.iconst(MR)), ctx.iconst(r))), "float32")
            else:
                abuf = self._buf(a)
                a_off = bat_off(a_bat, S.prod(a2[-2:])) if not fold_batch else ctx.iconst(0)
                mlast = sz(M - 1)

                def load_a(r, k):
                    # a tile hanging past M reads its last row again; a whole tile's rows lie
                    # at fixed offsets from its first (one address register for all of them)
                    row = L.Bin("min", ctx.add(i0, ctx.iconst(r)), mlast, "int64") if r and guard else ctx.add(i0, ctx.iconst(r))
                    x = L.Load(abuf, ctx.add(a_off, ctx.add(ctx.mul(row, sz(K)), k)), a.dtype)
                    return L.Cast(x, dt) if a.dtype != dt else x

            sliced = rt.nk > 1
            if sliced:
                part, k0, j_lo, j_hi, part0 = partial_sums[rt]

            def tile_body(masks):
                """The tile over the first len(masks) vectors of its NR (a partial last panel
                computes only the vectors with columns in it)."""
                nv = len(masks)
                acc = [[f"acc{r}_{c}" for c in range(nv)] for r in range(MR)]
                if sliced:
                    slots = [(acc[r][c], ctx.add(part0, ctx.add(ctx.mul(ctx.add(ctx.mul(jb, sz(M + rt.MR)), ctx.add(i0, ctx.iconst(r))),
                                                                       ctx.iconst(NB)), ctx.iconst(c * W))))
                             for r in range(MR) for c in range(nv)]
                body = [L.Decl(acc[r][c], L.Broadcast(L.Const(0, dt), W, dt), lanes=W)
                        for r in range(MR) for c in range(nv)]
                def kstep(k, bv):
                    """One k step: MR broadcasts of A against the vectors of B."""
                    out = []
                    for r in range(MR):
                        av = L.Broadcast(load_a(r, k), W, dt)
                        for c in range(len(bv)):
                            if dt in FLOATS:
                                upd = L.Fma(av, bv[c], L.Local(acc[r][c], dt), dt)
                            else:
                                upd = L.Bin("add", L.Bin("mul", av, bv[c], dt), L.Local(acc[r][c], dt), dt)
                            out.append(L.Assign(acc[r][c], upd))
                    return out

                if implicit is not None:
                    body.append(self._implicit_im2col_loop(ctx, implicit, bbuf, bvars, cols[:nv], masks, kstep, W))
                else:
                    bv = []
                    for c in range(nv):
                        if pack_b:
                            x = L.VLoad(bbuf, ctx.add(ctx.mul(ctx.add(ctx.mul(jb, sz(K)), kv), ctx.iconst(NB)),
                                                      ctx.iconst(c * W)), W, "float32")
                        elif rt.copy_b:
                            cbuf, panel = copies[rt][:2]
                            x = L.VLoad(cbuf, ctx.add(ctx.mul(ctx.add(panel, kv), ctx.iconst(NB)),
                                                      ctx.iconst(c * W)), W, "float32")
                        else:
                            x = L.VLoad(bbuf, ctx.add(b_off, ctx.add(ctx.mul(kv, sz(N)), cols[c])), W, b.dtype, masks[c])
                        bv.append(L.Cast(x, dt) if b.dtype != dt else x)
                    kbody = kstep(kv, bv)
                    # (the tail tiles of a dynamic M have fewer rows than the plan's MR)
                    streams_on = rt.stream_prefetch and MR >= 4
                    if rt.panel_prefetch == "b" and MR >= 4 and sliced:
                        # the slice the next run of row tiles reads: this slice of the next
                        # panel of the group, or after the group's last the next slice of its
                        # first (packed panels lie slice after slice)
                        last = L.Bin("eq", ctx.add(jb, ctx.iconst(1)), j_hi, "bool")
                        nxt_j = L.Select(last, j_lo, ctx.add(jb, ctx.iconst(1)), "int64")
                        nxt_k = L.Select(last, ctx.add(k0, ctx.iconst(rt.kc)), k0, "int64")
                        kbody.append(_prefetch_next_panel(ctx, bbuf, ctx.mul(ctx.add(ctx.mul(nxt_j, sz(K)), nxt_k),
                                                                             ctx.iconst(NB)),
                                                          ib, ctx.sub(kv, k0), rt.kc, NB))
                    elif rt.panel_prefetch == "b" and MR >= 4:
                        kbody.append(_prefetch_next_panel(ctx, bbuf, ctx.mul(ctx.add(jb, ctx.iconst(1)), sz(K * NB)),
                                                          ib, kv, K, NB))
                    elif rt.panel_prefetch == "a":
                        kbody.append(_prefetch_next_panel(ctx, abuf, ctx.add(a_row0, sz(K * MR)), jb, kv, K, MR))

                    def k_loops(kbeg, kend):
                        """The k loop from kbeg to kend. With stream prefetches, only its last
                        steps issue them, one line each, PF_AHEAD steps per line before the
                        epilogue: at every k step their address arithmetic took issue slots
                        from the FMAs (on cores whose FMA ports also run integer ops, 10% of
                        a 4096x4096 layer, 15-20% of ResNet's 56x56 1x1 convolutions)."""
                        if not streams_on:
                            return [L.For(kv, kbeg, kend, kbody)]
                        kw = L.Bin("max", ctx.sub(kend, ctx.iconst(MR * NR * PF_AHEAD)), kbeg, "int64")
                        slot = ctx.sub(kv, kw) if PF_AHEAD == 1 else ctx.div(ctx.sub(kv, kw), ctx.iconst(PF_AHEAD))
                        streams = self._tile_stream_prefetches(ctx, grp, out, a, b, bvars, fold_batch, i0, cols,
                                                               slot, MR, nv, W, N)
                        nxt = []
                        if rt.next_b_rows:      # row k of the next column panel of B: at every step
                            nxt = self._next_b_rows(ctx, kv, b_off, bbuf, N, NB, nv, W, cols)
                        return [L.For(kv, kbeg, kw, kbody + nxt), L.For(kv, kw, kend, kbody + nxt + streams)]

                    if sliced:
                        body.append(L.If(L.Bin("lt", ctx.iconst(0), kb, "bool"),
                                         [L.Assign(a_, L.VLoad(part, ix, W, dt)) for a_, ix in slots]))
                        # C's lines are needed by the last slice's epilogue only
                        k1 = L.Bin("min", ctx.add(k0, ctx.iconst(rt.kc)), sz(K), "int64")
                        if streams_on:
                            # (B's rows of the next panel, the next run of tiles, in every slice)
                            nxt = (self._next_b_rows(ctx, kv, b_off, bbuf, N, NB, nv, W, cols)
                                   if rt.next_b_rows else [])
                            body.append(L.If(L.Bin("lt", kb, ctx.iconst(rt.nk - 1), "bool"),
                                             [L.For(kv, k0, k1, kbody + nxt)], k_loops(k0, k1)))
                        else:
                            body.append(L.For(kv, k0, k1, kbody))
                    else:
                        body.extend(k_loops(ctx.iconst(0), sz(K)))
                # epilogue: the fused pointwise kernel, reading the accumulator for the matmul value
                jv = L.Var("j")
                tail = []
                for r in range(MR):
                    row = ctx.add(i0, ctx.iconst(r))
                    stores = [epilogue(acc[r][c], row, jv, jv, cols[c], masks[c]) for c in range(nv)]
                    if not guard:
                        tail.extend(stores)
                    else:
                        tail.append(L.If(L.Bin("lt", row, sz(M), "bool"), stores))
                if sliced:
                    # all slices but the last keep their partial sums (rows past M included)
                    tail = [L.If(L.Bin("lt", kb, ctx.iconst(rt.nk - 1), "bool"),
                                 [L.VStore(part, ix, L.Local(a_, dt)) for a_, ix in slots], tail)]
                return body + tail

            # without mask registers, whole column tiles, all but the last, run without masks;
            # a partial last panel of a static N computes only its vectors with columns (196
            # columns in panels of 16: the last one's 4 in one vector of 8, not two), and one
            # that its columns fill needs no mask
            tail = N % NB if isinstance(N, int) else 0
            tail_masks = ([None if (c + 1) * W <= tail else masks[c] for c in range(-(-tail // W))]
                          if tail else masks)
            if rt.unmasked_full_tiles or len(tail_masks) < NR:
                body = [L.If(L.Bin("le", ctx.add(j0, ctx.iconst(NB)), sz(N), "bool"),
                             tile_body([None] * NR), tile_body(tail_masks))]
            else:
                body = tile_body(masks)
            return body

        def tile_cols(ct):
            """The transposed tile, for a constant A and few columns (a convolution over a 7x7
            or 14x14 image: N=49 would pad to 64 lanes): vectors run down NB rows of A (packed
            [M/NB][K][NB]), NC columns of B are broadcast, and the epilogue stores each
            accumulator as a column (a strided scatter, cheap next to the K-long dot products)."""
            ctx.memo.clear()
            NC = ct.NC
            abuf = self.packed_weight_buf(a, a2, "a", NB)
            a_off = bat_off(a_bat, (M + NB - 1) // NB * K)      # in k steps of NB-row panels
            i0 = ctx.mul(ib, ctx.iconst(NB))
            nblk_m, nblk_n = -(-M // NB), -(-N // NC)
            # the last ct.short tiles take NC - 1 columns (49 = 4 x 6 + 5 x 5): tile j starts
            # at column j*NC - max(j - full, 0)
            full = nblk_n - ct.short

            def first_col(tile):
                if not ct.short:
                    return ctx.mul(tile, ctx.iconst(NC))
                return ctx.sub(ctx.mul(tile, ctx.iconst(NC)), ctx.max(ctx.sub(tile, ctx.iconst(full)), ctx.iconst(0)))
            j0 = first_col(jb)
            rows = [ctx.add(i0, ctx.iconst(c * W)) for c in range(NR)]
            masks = [None] * NR if M % NB == 0 else [L.LaneMask(r0, sz(M), W) for r0 in rows]
            cols_fastest, kc, nk, ngroups = ct.cols_fastest, ct.kc, ct.nk, ct.ngroups
            jg = L.Var("jg")
            # groups of tiles, their bounds spread evenly (17 tiles in 2 groups:
            # 8 and 9, where 9 and 8 gave the first group the 12-column tiles, 108 columns to 88)
            jstart = ctx.div(ctx.mul(jg, ctx.iconst(nblk_n)), ctx.iconst(ngroups)) if ngroups > 1 else ctx.iconst(0)
            jend = (ctx.div(ctx.mul(ctx.add(jg, ctx.iconst(1)), ctx.iconst(nblk_n)), ctx.iconst(ngroups))
                    if ngroups > 1 else ctx.iconst(nblk_n))
            kb = L.Var("kb")
            k0 = ctx.mul(kb, ctx.iconst(kc)) if nk > 1 else ctx.iconst(0)
            a_panel = ctx.add(a_off, ctx.mul(ib, sz(K)))
            av = [L.VLoad(abuf, ctx.add(ctx.mul(ctx.add(a_panel, kv), ctx.iconst(NB)), ctx.iconst(c * W)),
                          W, "float32") for c in range(NR)]
            nlast = sz(N - 1)
            pack = []
            if ct.pack_b:
                # B's NC columns of a tile, copied once per run as [tile][k][NCP] (columns
                # past N read 0; see below): a k step then reads NC
                # consecutive floats, where B's rows (N apart) had it touch a line or two per
                # k, which with A's slice overflow L1 (the likely cause; this VM has no
                # counters to confirm it). When: schedule.gemm._col_tiles
                item = ctx.iconst(0)
                for v, d in zip(bvars, batch):
                    item = ctx.add(ctx.mul(item, sz(d)), v)
                # a tile's row is copied as whole vectors (NCP floats apart, its NC columns
                # first; columns past N read 0): element by element the copy took a fifth of
                # a 960->160 layer on 7x7 (0.043 of 0.233 ms)
                nvec = -(-NC // W)
                NCP = nvec * W
                pbuf = self._scratch_buf(S.prod(batch) * nblk_n * K * NCP * 4)
                pj, pk = L.Var("pj"), L.Var("pk")

                def packed_row(tile, k):
                    """Where row k of the copy of column tile `tile` starts."""
                    return ctx.mul(ctx.add(ctx.mul(ctx.add(ctx.mul(item, ctx.iconst(nblk_n)), tile), sz(K)), k),
                                   ctx.iconst(NCP))
                prow = packed_row(pj, pk)
                copy = []
                for v in range(nvec):
                    col0 = ctx.add(first_col(pj), ctx.iconst(v * W))
                    src = ctx.add(b_off, ctx.add(ctx.mul(pk, sz(N)), col0))

                    def vcopy(mask):
                        x = L.VLoad(bbuf, src, W, b.dtype, mask)
                        return [L.VStore(pbuf, ctx.add(prow, ctx.iconst(v * W)), L.Cast(x, dt) if b.dtype != dt else x)]
                    copy.append(L.If(L.Bin("le", ctx.add(col0, ctx.iconst(W)), sz(N), "bool"),
                                     vcopy(None), vcopy(L.LaneMask(col0, sz(N), W))))
                # (the tiles of a row in a plain inner loop: collapsed into one flat parallel
                # range, each vector's (k, tile) cost a division)
                loops = [L.For(pk, ctx.iconst(0), sz(K), [L.For(pj, ctx.iconst(0), ctx.iconst(nblk_n), copy, serial=True)])]
                for v, d in reversed(list(zip(bvars, batch))):
                    loops = [L.For(v, ctx.iconst(0), sz(d), loops)]
                f = loops[0]
                pack = [L.For(f.var, f.start, f.stop, f.body, parallel=True)]
                b_row = packed_row(jb, kv)
            by_slice = ct.by_slice
            iv = L.Var("i")
            part = (self._scratch_buf(S.prod(batch) * nblk_m * nblk_n * NC * NR * W * 4) if nk > 1 else None)

            def tile_body(nc):
                """One tile of nc columns from j0."""
                acc = [[f"acc{nc}_{r}_{c}" for c in range(NR)] for r in range(nc)]
                body = [L.Decl(acc[r][c], L.Broadcast(L.Const(0, dt), W, dt), lanes=W)
                        for r in range(nc) for c in range(NR)]
                kbody = []
                for r in range(nc):
                    if ct.pack_b:
                        bb = L.Broadcast(L.Load(pbuf, ctx.add(b_row, ctx.iconst(r)), dt), W, dt)
                    else:
                        col = L.Bin("min", ctx.add(j0, ctx.iconst(r)), nlast, "int64") if r else j0
                        x = L.Load(bbuf, ctx.add(b_off, ctx.add(ctx.mul(kv, sz(N)), col)), b.dtype)
                        bb = L.Broadcast(L.Cast(x, dt) if b.dtype != dt else x, W, dt)
                    for c in range(NR):
                        kbody.append(L.Assign(acc[r][c], L.Fma(av[c], bb, L.Local(acc[r][c], dt), dt)))
                if by_slice:
                    # this slice of the next row panel (the order below), into L2
                    kbody.append(_prefetch_next_panel(ctx, abuf, ctx.mul(ctx.add(a_panel, ctx.add(sz(K), k0)), ctx.iconst(NB)),
                                                      ctx.sub(jb, jstart), ctx.sub(kv, k0), kc, NB))
                elif cols_fastest:
                    # the next slice (or panel), into L2 while this one is in use
                    kbody.append(_prefetch_next_panel(ctx, abuf, ctx.mul(ctx.add(a_panel, ctx.add(k0, ctx.iconst(kc))),
                                                                         ctx.iconst(NB)),
                                                      ctx.sub(jb, jstart), ctx.sub(kv, k0) if nk > 1 else kv, kc, NB))
                stores = []
                exact = ct.short or N % NC == 0
                for r in range(nc):
                    col = ctx.add(j0, ctx.iconst(r))
                    st = [epilogue(acc[r][c], iv, col, iv, rows[c], masks[c]) for c in range(NR)]
                    stores.extend(st if exact else [L.If(L.Bin("lt", col, sz(N), "bool"), st)])
                if nk == 1:
                    body.append(L.For(kv, ctx.iconst(0), sz(K), kbody))
                    body.extend(stores)
                    return body
                # one region per batch item and tile: the parallel range covers them all
                tile0 = ctx.iconst(0)
                for v, d in zip(bvars, batch):
                    tile0 = ctx.add(ctx.mul(tile0, sz(d)), v)
                tile0 = ctx.add(ctx.mul(tile0, ctx.iconst(nblk_m)), ib)
                tile0 = ctx.mul(ctx.add(ctx.mul(tile0, ctx.iconst(nblk_n)), jb), ctx.iconst(NC * NR * W))
                slots = [(acc[r][c], ctx.add(tile0, ctx.iconst((r * NR + c) * W))) for r in range(nc) for c in range(NR)]
                body.append(L.If(L.Bin("lt", ctx.iconst(0), kb, "bool"),
                                 [L.Assign(a_, L.VLoad(part, ix, W, dt)) for a_, ix in slots]))
                body.append(L.For(kv, k0, L.Bin("min", ctx.add(k0, ctx.iconst(kc)), sz(K), "int64"), kbody))
                body.append(L.If(L.Bin("lt", kb, ctx.iconst(nk - 1), "bool"),
                                 [L.VStore(part, ix, L.Local(a_, dt)) for a_, ix in slots], stores))
                return body

            if ct.short:
                body = [L.If(L.Bin("lt", jb, ctx.iconst(full), "bool"), tile_body(NC), tile_body(NC - 1))]
            else:
                body = tile_body(NC)
            inner, outer = (jb, nblk_n), (ib, nblk_m)
            if not cols_fastest:
                inner, outer = outer, inner
            if by_slice:
                # each task takes a group of column tiles and runs slice 0 of every row panel
                # over them, then slice 1 (serial: slice kb+1 adds to the partial sums of
                # slice kb, on the same thread): see schedule.gemm._col_tiles
                loops = [L.For(jb, jstart, jend, body)]
                loops = [L.For(ib, ctx.iconst(0), ctx.iconst(nblk_m), loops)]
                if nk > 1:      # (unsliced: the pixel split of schedule.gemm._col_tiles)
                    loops = [L.For(kb, ctx.iconst(0), ctx.iconst(nk), loops, serial=True)]
                loops = [L.For(jg, ctx.iconst(0), ctx.iconst(ngroups), loops)]
            elif nk > 1:
                # (serial: slice kb+1 adds to the partial sums of slice kb, on the same thread)
                loops = [L.For(jb, jstart, jend, body)]
                loops = [L.For(kb, ctx.iconst(0), ctx.iconst(nk), loops, serial=True)]
                if ngroups > 1:
                    loops = [L.For(jg, ctx.iconst(0), ctx.iconst(ngroups), loops)]
                loops = [L.For(outer[0], ctx.iconst(0), ctx.iconst(outer[1]), loops)]
            else:
                loops = [L.For(inner[0], ctx.iconst(0), ctx.iconst(inner[1]), body)]
                loops = [L.For(outer[0], ctx.iconst(0), ctx.iconst(outer[1]), loops)]
            for v, d in reversed(list(zip(bvars, batch))):
                loops = [L.For(v, ctx.iconst(0), sz(d), loops)]
            f = loops[0]
            loops[0] = L.For(f.var, f.start, f.stop, f.body, parallel=True)
            return pack + loops

        if isinstance(plan.tiles[0], ColTiles):
            return tile_cols(plan.tiles[0])
        if not plan.small_m:
            return tile(plan.tiles[0])
        return [L.If(L.Bin("lt", sz(M), ctx.iconst(plan.small_m), "bool"), tile(plan.tiles[0]), tile(plan.tiles[1]))]

    def _tile_stream_prefetches(self, ctx, grp, out, a, b, bvars, fold_batch, i0, cols, slot, MR, NR, W, N):
        """Prefetches issued from a GEMM tile's k loop, for the streams that arrive from L3 or
        DRAM in 64-byte pieces half a page apart or more, which the hardware prefetchers do
        not follow (ResNet's 56x56 1x1 convolutions: rows of C and of B are 12.5 KB apart;
        1x1 layers there 15% faster in the model; on 14x14 images, rows 784 bytes apart, the
        prefetchers keep up and these only cost issue slots):
        the lines this tile's epilogue stores and reads at its own index (C and a residual),
        line `slot` of them, into L1: they are there when the accumulators are done."""
        inside = {n.outputs[0].id for n in grp.nodes}
        root = grp.root
        bufs = [self.buf_of[root.id]]
        for n in grp.nodes:
            for v in n.inputs:
                if (v.id not in inside and not v.is_const and v is not out and tuple(v.shape) == tuple(root.shape)
                        and self._buf(v) not in bufs):
                    bufs.append(self._buf(v))
        lines = MR * NR                      # one 64-byte line per row and vector of the tile
        slot = L.Bin("min", slot, ctx.iconst(lines - 1), "int64")
        # C's rows are N apart, so the line of (i0 + r, col + c*W) is the tile's first element
        # plus r*N + c*W: the first is loop-invariant (hoisted), the rest shifts and adds. (Its
        # index through _mm_out_index at every k step divided by a run-time sequence length:
        # BERT 1.8x slower.)
        first = ctx.linearize(self._mm_out_index(ctx, out, a, b, bvars, i0, cols[0], fold_batch), root.shape)
        step = ctx.add(ctx.mul(L.Bin("div", slot, ctx.iconst(NR), "int64"), ctx.iconst(N)),
                       ctx.mul(L.Bin("mod", slot, ctx.iconst(NR), "int64"), ctx.iconst(W)))
        pf = [L.Prefetch(buf, ctx.add(first, step), 3) for buf in bufs]
        return pf

    def _next_b_rows(self, ctx, kv, b_off, bbuf, N, NB, NR, W, cols):
        """With B streaming past resident rows of A: row k of the next column panel of B, into
        L2, so the next panel's first tile does not wait on it."""
        nxt = ctx.add(b_off, ctx.add(ctx.mul(kv, ctx.size(N)), ctx.add(cols[0], ctx.iconst(NB))))
        return [L.Prefetch(bbuf, ctx.add(nxt, ctx.iconst(c * W)), 2) for c in range(NR)]

    def _implicit_im2col(self, b: Value):
        """The im2col node behind B when the schedule left it to the GEMM (not stored)."""
        base = self.base_value(b)
        return self.s.implicit.get(base.id)

    def _implicit_im2col_loop(self, ctx, node, xbuf, bvars, cols, masks, kstep, W):
        """The k loop of a convolution GEMM that reads its B operand straight from the image.
        Stride 1, keeping the width: column j of window element (c, kh, kw) is
        x[c, j + (kh-ph)*W + (kw-pw)] where (j // W + kh - ph, j % W + kw - pw) lies inside
        the image, else 0; contiguous in j, so each B vector is one masked load. Stride s over
        a padded image, whole vectors per output row: the vector at column j reads image row
        s*(j // OW) + kh at columns s*(j % OW + lane) + kw, all inside: one de-interleaving
        load. The masks depend on the tile only (hoisted out of the loop), and there is no
        im2col buffer."""
        at = node.attrs
        (kh_n, kw_n), (ph, pw) = at["kernel"], at["pads"][:2]
        c_n, h_n, w_n = node.inputs[0].shape[1:]
        cg = c_n // at["group"]
        s = at["strides"][0]
        ci = L.Var("ci")
        base = ctx.mul(ctx.add(ctx.mul(bvars[0], ctx.iconst(c_n)), ctx.add(ctx.mul(bvars[1], ctx.iconst(cg)), ci)),
                       ctx.size(h_n * w_n))
        if s != 1:
            return L.For(ci, ctx.iconst(0), ctx.iconst(cg),
                         [self._strided_window_rows(ctx, node, xbuf, base, cols, masks, kstep, W, ci)])

        def vec(v):        # the image's sizes may be known only at run time
            return L.Broadcast(v if isinstance(v, L.Expr) else ctx.size(v), W, "int64")
        lanes = [L.Bin("add", L.Broadcast(col, W, "int64"), L.Iota(W, "int64"), "int64") for col in cols]
        oh = [L.Bin("div", j, vec(w_n), "int64") for j in lanes]
        ow = [L.Bin("mod", j, vec(w_n), "int64") for j in lanes]

        def inside(v, d, n):
            v = L.Bin("add", v, vec(d), "int64")
            return L.Bin("and", L.Bin("le", vec(0), v, "bool"), L.Bin("lt", v, vec(n), "bool"), "bool")
        body = []
        for kh in range(kh_n):
            for kw in range(kw_n):
                bv = []
                for c, col in enumerate(cols):
                    m = L.Bin("and", inside(oh[c], kh - ph, h_n), inside(ow[c], kw - pw, w_n), "bool")
                    if masks[c] is not None:
                        m = L.Bin("and", masks[c], m, "bool")
                    idx = ctx.add(base, ctx.add(col, ctx.add(ctx.mul(ctx.iconst(kh - ph), ctx.size(w_n)),
                                                             ctx.iconst(kw - pw))))
                    bv.append(L.VLoad(xbuf, idx, W, "float32", m))
                k = ctx.add(ctx.mul(ci, ctx.iconst(kh_n * kw_n)), ctx.iconst(kh * kw_n + kw))
                body += kstep(k, bv)
        return L.For(ci, ctx.iconst(0), ctx.iconst(cg), body)

    def _strided_window_rows(self, ctx, node, xbuf, base, cols, masks, kstep, W, ci):
        """The loop over window rows of a stride-s implicit im2col over a padded image (no
        border masks), window columns unrolled (the whole 7x7 window unrolled spilled
        registers: 2.0 ms for ResNet's stem instead of 1.0). Whole tiles (N % (NR*W) == 0,
        the usual case with OW % 16 == 0) need no mask either: their masks are None."""
        at = node.attrs
        (kh_n, kw_n), s, ow_n = at["kernel"], at["strides"][0], at["out"][1]
        w_n = node.inputs[0].shape[3]
        start = [ctx.add(ctx.mul(L.Bin("div", col, ctx.iconst(ow_n), "int64"), ctx.iconst(s * w_n)),
                         ctx.mul(L.Bin("mod", col, ctx.iconst(ow_n), "int64"), ctx.iconst(s))) for col in cols]
        kh = L.Var("kh")
        row = ctx.add(base, ctx.mul(kh, ctx.iconst(w_n)))
        body = []
        for kw in range(kw_n):
            bv = [L.VLoad(xbuf, ctx.add(row, ctx.add(start[c], ctx.iconst(kw))), W, "float32",
                          masks[c], step=s) for c in range(len(cols))]
            k = ctx.add(ctx.mul(ctx.add(ctx.mul(ci, ctx.iconst(kh_n)), kh), ctx.iconst(kw_n)), ctx.iconst(kw))
            body += kstep(k, bv)
        return L.For(kh, ctx.iconst(0), ctx.iconst(kh_n), body)

    def _const_array(self, v: Value, shape=None):
        """The constant behind `v` (through reshape views) as an array of `shape`, or None."""
        base = self.base_value(v)
        shape = tuple(v.shape) if shape is None else tuple(shape)
        if not base.is_const or base.is_symbolic_const or not all(isinstance(d, int) for d in shape):
            return None
        arr = np.asarray(base.const)
        return arr.reshape(shape) if arr.size == S.prod(shape) else None

    def packed_weight_buf(self, v: Value, shape, side: str, width: int):
        """A constant matmul operand repacked (once, at compile time) into micro-kernel order:
        side "b": [.., K, N] -> [ceil(N/width), K, width]; side "a": [.., M, K] ->
        [.., ceil(M/width), K, width]; zero-padded."""
        key = (self.base_value(v).id, v.id, side, width)
        b = self._packed.get(key)
        if b is not None:
            return b
        arr = self._const_array(v, shape).astype(np.float32)
        if side == "b":
            kk, n = arr.shape[-2:]
            np_ = (n + width - 1) // width
            pad = np.zeros((kk, np_ * width), np.float32)
            pad[:, :n] = arr
            packed = np.ascontiguousarray(pad.reshape(kk, np_, width).transpose(1, 0, 2))
        else:
            lead = arr.shape[:-2]
            m, kk = arr.shape[-2:]
            mp = (m + width - 1) // width
            pad = np.zeros(lead + (mp * width, kk), np.float32)
            pad[..., :m, :] = arr
            packed = np.ascontiguousarray(
                np.swapaxes(pad.reshape(lead + (mp, width, kk)), -1, -2))
        off = (self._woff + 63) // 64 * 64
        self._weights.append((off, packed))
        self._woff = off + packed.nbytes
        b = self._new_buf("float32", 1, off)
        self._packed[key] = b
        return b

    def lower_library(self, grp: KernelGroup):
        """A node computed by a kernel-language kernel over its (C-contiguous) tensors."""
        node = grp.anchor
        kern, params = library_impl(node).kernel_for(node, self.target)
        ctx = KernelCtx(self, grp, self.lanes(grp.root.dtype))
        out = node.outputs[0]
        fused = grp.root is not out          # an epilogue was fused after the kernel
        tensors = []
        for v, rank in zip(list(node.inputs) + [out], kern.tensor_ranks()):
            buf = self.buf_of[grp.root.id] if v is out else self._buf(v)
            dims = list(v.shape)
            if len(dims) > rank:        # a rank-k kernel sees leading dims merged (C order)
                dims = [S.prod(dims[:len(dims) - rank + 1])] + dims[len(dims) - rank + 1:]
            dims = [1] * (rank - len(dims)) + dims
            shape = [ctx.size(d) for d in dims]
            strides = [ctx.size(S.prod(dims[k + 1:])) for k in range(len(dims))]
            hook = self._library_epilogue(ctx, grp) if fused and v is out else None
            tensors.append((buf, v.dtype, shape, strides, hook))
        return kern.loop_body(tensors, params)

    def _library_epilogue(self, ctx, grp: KernelGroup):
        """The store hook of a library kernel's output: the fused pointwise kernel evaluated
        at the stored vector's elements, reading the kernel's value for the anchor's output."""
        out = grp.anchor.outputs[0]
        dt = compute_dtype(out.dtype)

        def hook(flat, idx, value, lanes, mask):
            name = ctx.fresh("lib")
            var = L.Var(ctx.fresh("e"))
            ctx.memo.clear()
            # the kernel's own indices keep per-channel operands loop-invariant (a flat index
            # would be split by div/mod at every store); the vector never crosses a row
            # unmasked, so lane k is element (.., last + k)
            if idx is None or len(idx) != out.type.rank:
                idx = ctx.delinearize(flat, out.shape)
            ctx.overrides = {out.id: lambda ix: L.Local(name, dt)}
            ctx.levels = []
            ctx.push_level([], vector=True)
            val = ctx.value(grp.root, idx[:-1] + [var])
            if ctx.levels[0]["stmts"]:
                raise CompileError("internal: library epilogue with reductions")
            ctx.overrides = {}
            if value.dtype != dt:           # a float16 kernel: its epilogue computes in float32
                value = L.Cast(value, dt)
            return [L.Decl(name, value, lanes=lanes),
                    L.VecScope(var, idx[-1], lanes, [self._store(ctx, grp.root, idx[:-1] + [var], val)], mask)]
        return hook

    def _mm_out_index(self, ctx, out, a, b, bvars, row, jv, fold_batch):
        """Index into the matmul's output (its real shape) of element (row, j)."""
        if fold_batch:
            lead = ctx.delinearize(row, a.shape[:-1]) if a.type.rank > 1 else []
            return lead + ([jv] if b.type.rank > 1 else [])
        idx = list(bvars)
        if a.type.rank > 1:
            idx.append(row)
        if b.type.rank > 1:
            idx.append(jv)
        # drop broadcast batch dims that the output does not have (out rank may be smaller)
        return idx[len(idx) - out.type.rank:]

    def _buf(self, v: Value) -> int:
        base = self.base_value(v)
        if base.is_const:
            return self.weight_buf(base)
        return self.buf_of[base.id]


PF_AHEAD = 1      # k steps per prefetched line of C in a GEMM tile's last steps


def _prefetch_next_panel(ctx, buf, next_base, tile_var, kv, K, width):
    """Prefetch (into L2) the packed weight panel that the next run of tiles reads. The first
    tile on a panel otherwise pulls it from DRAM at the pace of its FMAs, which one core's few
    outstanding misses cannot sustain. Step k of the t-th tile on the current panel brings
    in 64-byte line t*K + k of the next (clamped to its last line): the next panel is in cache
    a few tiles in, long before it is needed. Prefetches never fault, even past the end."""
    line = 64 // 4
    slot = ctx.add(ctx.mul(tile_var, ctx.size(K)), kv)
    off = L.Bin("min", ctx.mul(slot, ctx.iconst(line)), ctx.iconst(K * width - line), "int64")
    return L.Prefetch(buf, ctx.add(next_base, off), 2)


def _merge_split_indices(idx, shape, size):
    """Fold adjacent indices (x div d, x mod d) over dims (n, d) back into x over n*d, as
    `delinearize` split them: a merged reduction then reads x as one contiguous run."""
    k = 0
    while k + 1 < len(idx):
        hi, lo = idx[k], idx[k + 1]
        if (isinstance(hi, L.Bin) and isinstance(lo, L.Bin) and hi.op == "div" and lo.op == "mod"
                and hi.a is lo.a and _same_size(hi.b, lo.b) and _same_size(lo.b, size(shape[k + 1]))):
            idx[k:k + 2] = [hi.a]
            shape[k:k + 2] = [S.prod(shape[k:k + 2])]
            k = max(k - 1, 0)
        else:
            k += 1
    return idx, shape


def _same_size(a, b):
    return a is b or (isinstance(a, L.Const) and isinstance(b, L.Const) and a.value == b.value) or (
        isinstance(a, L.SizeRef) and isinstance(b, L.SizeRef) and a.slot == b.slot)


def lower(sched: Schedule, target=None) -> Program:
    """Loop IR for `sched` on `target` (an `ember.ir.target.Target`; None: the default)."""
    return Lowering(sched, target).run()
