"""Ember's loop-level kernel IR: the one substrate that graph lowering (and the kernel
language) targets, and that the LLVM backend translates.

Expressions are small immutable trees; statements are loops, stores, locals and branches.
Vectors appear two ways:
  * implicitly: a `For(..., vector=W)` runs its body W lanes at a time (plus one masked tail
    iteration); inside it, the loop variable is a lane ramp and every expression is evaluated
    per lane — loads become vector loads, gathers or broadcasts as their index allows;
  * explicitly: `VLoad`, `Broadcast`, `VStore`, `Fma`, `HReduce` for hand-blocked kernels such
    as GEMM, and `VecScope` to evaluate ordinary expressions lane-wise at a given base index.
`For(parallel=True)` marks loops a thread pool may split: the LLVM backend outlines the body
into a function and hands it to the native pool (`ember_parallel_for`).
Control flow beyond counted loops (`Loop`, `Break`, `Continue`, `Return`) and the vector
operations below `HReduce` exist for the kernel language (`ember.lang`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class Expr:
    __slots__ = ()
    dtype: str


@dataclass(frozen=True, eq=False)
class Const(Expr):
    value: Any
    dtype: str


@dataclass(frozen=True, eq=False)
class Var(Expr):
    name: str
    dtype: str = "int64"


@dataclass(frozen=True, eq=False)
class SizeRef(Expr):
    """A runtime size (or arena offset): slot `slot` of the kernel's int64 size table."""
    slot: int
    dtype: str = "int64"


@dataclass(frozen=True, eq=False)
class Load(Expr):
    buf: int
    index: Expr
    dtype: str
    cond: Expr | None = None    # guarded: where cond is false the value is `fill` and memory
    fill: float = 0.0           # at `index` is never touched (padding, windows past an edge)


@dataclass(frozen=True, eq=False)
class Bin(Expr):
    op: str          # add sub mul div mod max min pow and or xor eq lt le
    a: Expr
    b: Expr
    dtype: str


@dataclass(frozen=True, eq=False)
class Un(Expr):
    op: str          # neg abs exp log sqrt tanh erf floor ceil not
    a: Expr
    dtype: str


@dataclass(frozen=True, eq=False)
class Cast(Expr):
    a: Expr
    dtype: str
    saturate: bool = True    # to a float8 type: out-of-range values become its largest finite


@dataclass(frozen=True, eq=False)
class Select(Expr):
    cond: Expr
    a: Expr
    b: Expr
    dtype: str


@dataclass(frozen=True, eq=False)
class Local(Expr):
    name: str
    dtype: str


# explicit vectors --------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class VLoad(Expr):
    buf: int
    index: Expr      # scalar index of lane 0; lane i reads index + i*step
    lanes: int
    dtype: str
    mask: Expr | None = None
    step: int = 1    # 2..4: a de-interleaving load (a stride-2 convolution row)


@dataclass(frozen=True, eq=False)
class Broadcast(Expr):
    a: Expr
    lanes: int
    dtype: str


@dataclass(frozen=True, eq=False)
class Fma(Expr):
    a: Expr
    b: Expr
    c: Expr
    dtype: str


@dataclass(frozen=True, eq=False)
class LaneMask(Expr):
    """Vector of `lanes` booleans: base + lane < limit."""
    base: Expr
    limit: Expr
    lanes: int
    dtype: str = "bool"


@dataclass(frozen=True, eq=False)
class HReduce(Expr):
    op: str          # add max min
    a: Expr
    dtype: str


@dataclass(frozen=True, eq=False)
class ScalarArg(Expr):
    """A kernel argument passed as 64 bits in slot `slot` of the size table (ints sign-extended,
    floats as float64 bits), converted to `dtype`."""
    slot: int
    dtype: str


@dataclass(frozen=True, eq=False)
class Bitcast(Expr):
    a: Expr
    dtype: str
    lanes: int = 0     # a vector reread with lanes of another width (0: the input's lane count)


@dataclass(frozen=True, eq=False)
class Iota(Expr):
    """The vector [0, 1, ..., lanes-1]."""
    lanes: int
    dtype: str


@dataclass(frozen=True, eq=False)
class Extract(Expr):
    vec: Expr
    index: Expr
    dtype: str


@dataclass(frozen=True, eq=False)
class Insert(Expr):
    vec: Expr
    index: Expr
    value: Expr
    dtype: str


@dataclass(frozen=True, eq=False)
class Shuffle(Expr):
    """Lanes picked from the concatenation of `a` and `b` (b may be None: from `a` only)."""
    a: Expr
    b: Expr | None
    indices: tuple
    dtype: str


# statements --------------------------------------------------------------------------------
class Stmt:
    __slots__ = ()


@dataclass(eq=False)
class For(Stmt):
    var: Var
    start: Expr
    stop: Expr
    body: list
    vector: int = 0          # >0: vectorise by this many lanes (masked tail)
    parallel: bool = False
    step: int = 1            # compile-time step (negative: counts down while var > stop)
    label: str | None = None  # target name for Break/Continue
    serial: bool = False     # iterations depend on each other: never collapsed into a parallel loop


@dataclass(eq=False)
class Loop(Stmt):
    """Repeat `body` until a `Break` leaves it."""
    body: list
    label: str | None = None


@dataclass(eq=False)
class Break(Stmt):
    label: str | None = None     # None: the innermost loop


@dataclass(eq=False)
class Continue(Stmt):
    label: str | None = None


@dataclass(eq=False)
class Return(Stmt):
    """Leave the kernel, storing `value` (if any) to element 0 of buffer `buf`."""
    value: Expr | None = None
    buf: int | None = None


@dataclass(eq=False)
class Store(Stmt):
    buf: int
    index: Expr
    value: Expr


@dataclass(eq=False)
class VStore(Stmt):
    buf: int
    index: Expr
    value: Expr
    mask: Expr | None = None


@dataclass(eq=False)
class Prefetch(Stmt):
    """A hint to bring buf[index] into cache (`level` 3: L1 ... 1: L3) ahead of its use."""
    buf: int
    index: Expr
    level: int = 3


@dataclass(eq=False)
class Flag(Stmt):
    """A run-time data error that ONNX defines (an index out of range): where `cond` holds, in
    any active lane, store `code` to element 0 of `buf`, the run's int64 status word. The
    kernel goes on with its indices kept in bounds; the session raises after the call."""
    cond: Expr
    code: int
    buf: int


@dataclass(eq=False)
class Decl(Stmt):
    name: str
    init: Expr
    lanes: int | None = None   # None: the lanes of the context it is declared in


@dataclass(eq=False)
class Assign(Stmt):
    name: str
    value: Expr


@dataclass(eq=False)
class If(Stmt):
    cond: Expr
    then: list
    orelse: list = field(default_factory=list)


@dataclass(eq=False)
class VecScope(Stmt):
    """Evaluate `body` lane-wise with `var` = base + lane, lanes where `mask` holds."""
    var: Var
    base: Expr
    lanes: int
    body: list
    mask: Expr | None = None


@dataclass(eq=False)
class Kernel:
    name: str
    body: list
    origin: tuple = ()          # graph nodes this kernel computes (for inspect)
    kind: str = "pointwise"


# ------------------------------------------------------------------------------- printing
def expr_str(e: Expr) -> str:
    if isinstance(e, Const):
        return repr(e.value)
    if isinstance(e, Var):
        return e.name
    if isinstance(e, SizeRef):
        return f"size[{e.slot}]"
    if isinstance(e, Load):
        if e.cond is not None:
            return f"(buf{e.buf}[{expr_str(e.index)}] if {expr_str(e.cond)} else {e.fill!r})"
        return f"buf{e.buf}[{expr_str(e.index)}]"
    if isinstance(e, Bin):
        sym = {"add": "+", "sub": "-", "mul": "*", "div": "/", "mod": "%", "lt": "<", "le": "<=",
               "eq": "==", "and": "&", "or": "|", "xor": "^"}.get(e.op)
        if sym:
            return f"({expr_str(e.a)} {sym} {expr_str(e.b)})"
        return f"{e.op}({expr_str(e.a)}, {expr_str(e.b)})"
    if isinstance(e, Un):
        return f"{e.op}({expr_str(e.a)})"
    if isinstance(e, Cast):
        return f"{e.dtype}({expr_str(e.a)})"
    if isinstance(e, Select):
        return f"select({expr_str(e.cond)}, {expr_str(e.a)}, {expr_str(e.b)})"
    if isinstance(e, Local):
        return e.name
    if isinstance(e, VLoad):
        m = f", mask={expr_str(e.mask)}" if e.mask is not None else ""
        st = f", step={e.step}" if e.step != 1 else ""
        return f"vload<{e.lanes}>(buf{e.buf}[{expr_str(e.index)}]{m}{st})"
    if isinstance(e, Broadcast):
        return f"broadcast<{e.lanes}>({expr_str(e.a)})"
    if isinstance(e, Fma):
        return f"fma({expr_str(e.a)}, {expr_str(e.b)}, {expr_str(e.c)})"
    if isinstance(e, LaneMask):
        return f"lanemask<{e.lanes}>({expr_str(e.base)} < {expr_str(e.limit)})"
    if isinstance(e, HReduce):
        return f"hreduce_{e.op}({expr_str(e.a)})"
    if isinstance(e, ScalarArg):
        return f"arg[{e.slot}]:{e.dtype}"
    if isinstance(e, Bitcast):
        return f"bitcast<{e.dtype}{f' x {e.lanes}' if e.lanes else ''}>({expr_str(e.a)})"
    if isinstance(e, Iota):
        return f"iota<{e.lanes}>"
    if isinstance(e, Extract):
        return f"{expr_str(e.vec)}[{expr_str(e.index)}]"
    if isinstance(e, Insert):
        return f"insert({expr_str(e.vec)}, {expr_str(e.index)}, {expr_str(e.value)})"
    if isinstance(e, Shuffle):
        b = f", {expr_str(e.b)}" if e.b is not None else ""
        return f"shuffle({expr_str(e.a)}{b}, {list(e.indices)})"
    return repr(e)


def stmts_str(body, indent=1) -> str:
    pad = "  " * indent
    out = []
    for s in body:
        if isinstance(s, For):
            attrs = (" vector=%d" % s.vector if s.vector else "") + (" parallel" if s.parallel else "") \
                + (f" step={s.step}" if s.step != 1 else "") + (f" label={s.label}" if s.label else "") \
                + (" serial" if s.serial else "")
            out.append(f"{pad}for {s.var.name} in [{expr_str(s.start)}, {expr_str(s.stop)}){attrs}:")
            out.append(stmts_str(s.body, indent + 1))
        elif isinstance(s, Loop):
            out.append(f"{pad}loop" + (f" label={s.label}" if s.label else "") + ":")
            out.append(stmts_str(s.body, indent + 1))
        elif isinstance(s, (Break, Continue)):
            out.append(f"{pad}{type(s).__name__.lower()}" + (f" {s.label}" if s.label else ""))
        elif isinstance(s, Return):
            out.append(f"{pad}return" + (f" {expr_str(s.value)}" if s.value is not None else ""))
        elif isinstance(s, Store):
            out.append(f"{pad}buf{s.buf}[{expr_str(s.index)}] = {expr_str(s.value)}")
        elif isinstance(s, VStore):
            m = f" mask={expr_str(s.mask)}" if s.mask is not None else ""
            out.append(f"{pad}vstore buf{s.buf}[{expr_str(s.index)}] = {expr_str(s.value)}{m}")
        elif isinstance(s, Prefetch):
            out.append(f"{pad}prefetch buf{s.buf}[{expr_str(s.index)}] level={s.level}")
        elif isinstance(s, Flag):
            out.append(f"{pad}flag buf{s.buf}[0] = {s.code} if {expr_str(s.cond)}")
        elif isinstance(s, Decl):
            out.append(f"{pad}var {s.name} = {expr_str(s.init)}" + (f" <{s.lanes}>" if s.lanes else ""))
        elif isinstance(s, Assign):
            out.append(f"{pad}{s.name} = {expr_str(s.value)}")
        elif isinstance(s, If):
            out.append(f"{pad}if {expr_str(s.cond)}:")
            out.append(stmts_str(s.then, indent + 1))
            if s.orelse:
                out.append(f"{pad}else:")
                out.append(stmts_str(s.orelse, indent + 1))
        elif isinstance(s, VecScope):
            out.append(f"{pad}lanes {s.var.name} = {expr_str(s.base)} + [0..{s.lanes})"
                       + (f" where {expr_str(s.mask)}" if s.mask is not None else "") + ":")
            out.append(stmts_str(s.body, indent + 1))
    return "\n".join(x for x in out if x)


def kernel_str(k: Kernel) -> str:
    return f"kernel {k.name}:  # {k.kind}, from {', '.join(k.origin) or '-'}\n" + stmts_str(k.body)


# ------------------------------------------------------------------------------ verifying
def verify(k: Kernel, buffers=None) -> None:
    """Check that `k` is well formed before it is translated: every loop variable is used
    inside its loop, every local is declared before it is read or assigned (locals live for
    the whole kernel, as Python's do in the kernel language, from their first declaration),
    buffers exist (`buffers`: the ids a module knows), explicit vectors agree on their lanes,
    float arithmetic on its dtype, and Break/Continue sit inside
    the loop they name. Raises `LoopIRError` naming the kernel and the statement; the tests
    run it after every lowering (EMBER_VERIFY=1)."""
    _Verifier(k, buffers).block(k.body)


class _Verifier:
    def __init__(self, k, buffers):
        self.k, self.buffers = k, buffers
        self.vars: list = []            # loop/lane variables in scope
        self.locals: dict = {}          # name -> lanes (None: scalar or the context's)
        self.loops: list = []           # labels (None for unlabelled) of enclosing loops
        self.seen: dict = {}            # (expr id, vars in scope) -> (expr, lanes): DAGs checked once

    def fail(self, what, where):
        from ..errors import LoopIRError
        if isinstance(where, Stmt):
            where = stmts_str([where]).split("\n")[0].strip()
        raise LoopIRError(f"loop IR of kernel '{self.k.name}': {what}\n  at: {where}")

    def local(self, name):
        return self.locals.get(name, KeyError)

    def buf(self, b, where):
        if self.buffers is not None and b not in self.buffers:
            self.fail(f"buffer buf{b} is not one of the module's", where)

    def block(self, body):
        for s in body:
            self.stmt(s)

    def stmt(self, s):
        w = s          # rendered only when something fails
        if isinstance(s, For):
            self.expr(s.start, w)
            self.expr(s.stop, w)
            if s.step == 0:
                self.fail("a loop with step 0", w)
            self.vars.append(s.var.name)
            self.loops.append(s.label)
            self.block(s.body)
            self.loops.pop()
            self.vars.pop()
        elif isinstance(s, Loop):
            self.loops.append(s.label)
            self.block(s.body)
            self.loops.pop()
        elif isinstance(s, (Break, Continue)):
            if not self.loops or (s.label is not None and s.label not in self.loops):
                self.fail("break/continue outside the loop it names", w)
        elif isinstance(s, Return):
            if s.value is not None:
                self.expr(s.value, w)
                self.buf(s.buf, w)
        elif isinstance(s, Store):
            self.buf(s.buf, w)
            self.expr(s.index, w)
            self.expr(s.value, w)
        elif isinstance(s, VStore):
            self.buf(s.buf, w)
            self.expr(s.index, w)
            self.same_lanes([self.expr(s.value, w)] + ([self.expr(s.mask, w)] if s.mask is not None else []), w)
        elif isinstance(s, Prefetch):
            self.buf(s.buf, w)
            self.expr(s.index, w)
        elif isinstance(s, Flag):
            self.buf(s.buf, w)
            self.expr(s.cond, w)
        elif isinstance(s, Decl):
            n = self.expr(s.init, w)
            if s.lanes is not None and n is not None and n != s.lanes:
                self.fail(f"local '{s.name}' declared with {s.lanes} lanes from a {n}-lane value", w)
            self.locals[s.name] = s.lanes if s.lanes is not None else n
        elif isinstance(s, Assign):
            lanes = self.local(s.name)
            if lanes is KeyError:
                self.fail(f"assignment to '{s.name}', which is not declared before it", w)
            n = self.expr(s.value, w)
            if lanes is not None and n is not None and n != lanes:
                self.fail(f"{n}-lane value assigned to '{s.name}' of {lanes} lanes", w)
        elif isinstance(s, If):
            self.expr(s.cond, w)
            self.block(s.then)
            self.block(s.orelse)
        elif isinstance(s, VecScope):
            self.expr(s.base, w)
            if s.mask is not None and self.expr(s.mask, w) not in (None, s.lanes):
                self.fail("a lane scope whose mask has other lanes", w)
            self.vars.append(s.var.name)
            self.block(s.body)
            self.vars.pop()
        else:
            self.fail(f"unknown statement {type(s).__name__}", w)

    def same_lanes(self, ns, where):
        known = {n for n in ns if n is not None}
        if len(known) > 1:
            self.fail(f"operands of {sorted(known)} lanes", where)
        return known.pop() if known else None

    def expr(self, e, where):
        """Checks `e`; returns its explicit lane count (None: scalar, or the context's). An
        expression shared within a DAG (a tree walk's chained gathers) is checked once per
        scope: walked as a tree it would take time exponential in the chain's length."""
        key = (id(e), tuple(self.vars))
        hit = self.seen.get(key)
        if hit is not None:
            return hit[1]
        n = self._expr(e, where)
        self.seen[key] = (e, n)         # (holds e: ids of dead objects get reused)
        return n

    def _expr(self, e, where):
        if isinstance(e, (Const, SizeRef, ScalarArg)):
            return None
        if isinstance(e, Var):
            if e.name not in self.vars:
                self.fail(f"variable '{e.name}' used outside its loop", where)
            return None
        if isinstance(e, Local):
            lanes = self.local(e.name)
            if lanes is KeyError:
                self.fail(f"local '{e.name}' read before it is declared", where)
            return lanes
        if isinstance(e, Load):
            self.buf(e.buf, where)
            self.expr(e.index, where)
            if e.cond is not None:
                self.expr(e.cond, where)
            return None
        if isinstance(e, VLoad):
            self.buf(e.buf, where)
            self.expr(e.index, where)
            if e.mask is not None and self.expr(e.mask, where) not in (None, e.lanes):
                self.fail(f"a {e.lanes}-lane load with a mask of other lanes", where)
            return e.lanes
        if isinstance(e, Bin):
            n = self.same_lanes([self.expr(e.a, where), self.expr(e.b, where)], where)
            if e.op in ("add", "sub", "mul", "div") and e.dtype.startswith(("float", "bfloat")):
                for x in (e.a, e.b):
                    if getattr(x, "dtype", e.dtype) != e.dtype:
                        self.fail(f"{e.op} of {x.dtype} into {e.dtype}", where)
            return n
        if isinstance(e, Fma):
            for x in (e.a, e.b, e.c):
                if getattr(x, "dtype", e.dtype) != e.dtype:
                    self.fail(f"fma of {x.dtype} into {e.dtype}", where)
            return self.same_lanes([self.expr(x, where) for x in (e.a, e.b, e.c)], where)
        if isinstance(e, Select):
            return self.same_lanes([self.expr(x, where) for x in (e.cond, e.a, e.b)], where)
        if isinstance(e, Bitcast) and e.lanes:
            self.expr(e.a, where)
            return e.lanes if e.lanes > 1 else None
        if isinstance(e, (Un, Cast, Bitcast)):
            return self.expr(e.a, where)
        if isinstance(e, Broadcast):
            if self.expr(e.a, where) not in (None, 1):
                self.fail("a broadcast of a vector", where)
            return e.lanes
        if isinstance(e, LaneMask):
            self.expr(e.base, where)
            self.expr(e.limit, where)
            return e.lanes
        if isinstance(e, Iota):
            return e.lanes
        if isinstance(e, HReduce):
            self.expr(e.a, where)
            return None
        if isinstance(e, Extract):
            self.expr(e.vec, where)
            self.expr(e.index, where)
            return None
        if isinstance(e, Insert):
            n = self.expr(e.vec, where)
            self.expr(e.index, where)
            self.expr(e.value, where)
            return n
        if isinstance(e, Shuffle):
            self.expr(e.a, where)
            if e.b is not None:
                self.expr(e.b, where)
            return len(e.indices)
        self.fail(f"unknown expression {type(e).__name__}", where)
