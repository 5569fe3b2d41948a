"""Kernel-language front end: a typed Python function's AST -> Ember loop IR.

`Translator` is an `ast.NodeVisitor`. Every expression evaluates to one of
  * `CT(value)`   a compile-time Python value (literals, `Param`s, globals, types, functions);
                  arithmetic on compile-time values folds in Python;
  * `Val(e, t)`   a run-time value: a loop-IR expression with a scalar `DType` or `VecType`;
  * `View`        a strided tensor view (buffer, offset, shape, strides);
  * `RegArray`    a list of locals indexed by compile-time integers (register blocks).
Statements are appended to the current block. Helper functions (local `def`s, other kernels,
plain Python functions) are inlined at each call. Two modes:
  * statement mode (a kernel body): locals are loop-IR locals, control flow is loop-IR control
    flow;
  * expression mode (an elementwise function inlined into a fused graph kernel): no statements
    at all — locals are rebound expressions, `if` merges with selects, `return`s under a
    condition become selects.
Errors raise `KernelError` with file:line:column and a caret.
"""
from __future__ import annotations

import ast
import builtins
import functools
import inspect
import itertools
import linecache
import math
import operator
import textwrap
from dataclasses import dataclass

from ..codegen import loop_ir as L
from ..errors import KernelError
from . import builtins as B
from .types import (INT_BITS, DType, VecType, bool_, float32, float64, int64, dtype_of)


# ------------------------------------------------------------------------------ values
@dataclass
class CT:
    v: object


@dataclass
class Val:
    e: L.Expr
    t: object                       # DType | VecType
    weak: "LocalVar | None" = None  # read from a local whose type is not settled yet
    lits: tuple | None = None       # a select between literals: see Translator._literal_retyper

    @property
    def dtype(self) -> DType:
        return self.t.dtype if isinstance(self.t, VecType) else self.t

    @property
    def width(self):
        return self.t.width if isinstance(self.t, VecType) else None


@dataclass
class LocalVar:
    name: str                       # loop-IR local name (unique per kernel)
    t: object
    decl: L.Decl | None = None
    weak: bool = False              # initialised from a literal: type settles at first typed use
    scope: "Scope | None" = None


@dataclass
class View:
    buf: int
    dtype: DType
    offset: L.Expr
    shape: list
    strides: list
    name: str = "tensor"
    # set on a library kernel's output when the graph fused an epilogue after it: called as
    # hook(flat index, indices or None, value, lanes, mask) -> statements that compute and
    # store the epilogue; the indices are given for the whole tensor (not a subview)
    store_hook: object = None
    whole: bool = True

    @property
    def contiguous_last(self):
        return not self.strides or (isinstance(self.strides[-1], L.Const) and self.strides[-1].value == 1)


@dataclass
class RegArray:
    items: list                     # LocalVar per element


@dataclass
class Bound:
    """A method bound to its receiver (`x.load`, `v.reduce_add`), with bracket params."""
    kind: str
    obj: object
    params: tuple = ()


@dataclass
class Helper:
    """A function to inline: its AST, and the scope it was defined in (None: a global one)."""
    node: ast.FunctionDef
    src: "Source"
    scope: "Scope | None"
    globals: dict
    pyfunc: object = None


@dataclass
class Source:
    filename: str
    line0: int                      # add to AST line numbers
    col0: int                       # add to AST column offsets (dedent)


class Scope:
    par_level = 0                   # parallelize nesting depth where the scope was created

    def __init__(self, parent=None, globals_=None):
        self.vars: dict = {}
        self.parent = parent
        self.globals = globals_ if globals_ is not None else (parent.globals if parent else {})
        self.nonlocals: set = set()

    def lookup(self, name):
        s = self
        while s is not None:
            if name in s.vars:
                return s.vars[name]
            s = s.parent
        return None

    def owner(self, name):
        s = self
        while s is not None:
            if name in s.vars:
                return s
            s = s.parent
        return None


@functools.lru_cache(maxsize=512)
def _parse(fn):
    """AST of a Python function, with the offsets that map it back to its file (cached:
    library kernels are inlined many times per model). Callers must not mutate the AST."""
    try:
        lines, line0 = inspect.getsourcelines(fn)
        filename = inspect.getsourcefile(fn) or "<unknown>"
    except (OSError, TypeError) as e:
        raise KernelError(f"cannot read the source of {getattr(fn, '__name__', fn)!r}: {e}") from None
    text = "".join(lines)
    ded = textwrap.dedent(text)
    col0 = len(lines[0]) - len(lines[0].lstrip()) if ded != text else 0
    tree = ast.parse(ded)
    node = tree.body[0]
    if not isinstance(node, ast.FunctionDef):
        raise KernelError(f"{fn!r} is not a plain function")
    return node, Source(filename, line0 - 1, col0)


class _InlineCtx:
    """One helper call being inlined: where its `return`s go."""

    def __init__(self, label):
        self.label = label                  # statement mode: the block a return leaves
        self.result: LocalVar | None = None
        self.result_t = None
        self.rets: list = []                # expression mode: (path condition, Val)
        self.done = False                   # expression mode: returned on every path


_CMP = {ast.Lt: "lt", ast.LtE: "le", ast.Gt: "gt", ast.GtE: "ge", ast.Eq: "eq", ast.NotEq: "ne"}
_PYCMP = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
          ast.Eq: operator.eq, ast.NotEq: operator.ne}
_BINOP = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "truediv", ast.FloorDiv: "floordiv",
          ast.Mod: "mod", ast.Pow: "pow", ast.BitAnd: "and", ast.BitOr: "or", ast.BitXor: "xor",
          ast.LShift: "shl", ast.RShift: "shr"}
_PYBIN = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "truediv": operator.truediv,
          "floordiv": operator.floordiv, "mod": operator.mod, "pow": operator.pow, "and": operator.and_,
          "or": operator.or_, "xor": operator.xor, "shl": operator.lshift, "shr": operator.rshift}
_SYM = {"add": "+", "sub": "-", "mul": "*", "truediv": "/", "floordiv": "//", "mod": "%", "pow": "**",
        "and": "&", "or": "|", "xor": "^", "shl": "<<", "shr": ">>"}
_VEC_REDUCE = {"reduce_add": "add", "reduce_mul": "mul", "reduce_max": "max", "reduce_min": "min",
               "reduce_and": "and", "reduce_or": "or"}


class Translator(ast.NodeVisitor):
    """Translate one kernel specialisation. See the module docstring."""

    def __init__(self, pyfunc, expr_mode=False, fastmath=False):
        self.pyfunc = pyfunc
        self.expr_mode = expr_mode
        self.fastmath = fastmath
        self.blocks: list = [[]]
        self.buffers: dict = {}         # buf id -> (dtype name, base index)
        self.slots: list = []           # size-table slot -> description
        self._names = itertools.count()
        self.node_stack: list = []
        self.src_stack: list = []
        self.loop_depth = 0             # run-time loops of the current inline context
        self.unroll_depth = 0
        self.parallel_scope = None      # Scope of the innermost parallelize body
        self.par_level = 0              # parallelize bodies being translated (nesting depth)
        self.inline_stack: list = []
        self.ret_local: LocalVar | None = None
        self.ret_buf = None
        self.ret_type = None
        self.path: list = []            # expression mode: conditions of the enclosing ifs
        self._active_impls: set = set()
        # run-time branches and loop bodies being translated (one fresh id each), and where
        # each compile-time binding (a tensor view, a tuple) was made: rebinding one elsewhere
        # would not follow the run-time control flow
        self.control_path: tuple = ()
        self._bound_on: dict = {}

    # ------------------------------------------------------------------------ plumbing
    def fresh(self, p):
        return f"{p}_{next(self._names)}"

    def emit(self, s):
        if self.expr_mode:
            self.fail("statements are not allowed here: an elementwise function must be "
                      "straight-line code (no loops, stores or calls with side effects)")
        self.blocks[-1].append(s)

    def fail(self, msg, node=None):
        node = node if node is not None else (self.node_stack[-1] if self.node_stack else None)
        src = self.src_stack[-1] if self.src_stack else None
        if node is None or src is None or not hasattr(node, "lineno"):
            raise KernelError(msg)
        line = node.lineno + src.line0
        col = node.col_offset + src.col0
        raise KernelError(msg, src.filename, line, col, linecache.getline(src.filename, line))

    def visit(self, node):
        self.node_stack.append(node)
        try:
            return super().visit(node)
        finally:
            self.node_stack.pop()

    def generic_visit(self, node):
        what = type(node).__name__
        hint = {"Lambda": "define a local function with def", "Try": "kernels cannot raise or catch",
                "Raise": "kernels cannot raise", "With": "", "ClassDef": "", "Global": "",
                "Import": "import at module level", "ImportFrom": "import at module level",
                "Yield": "", "Await": "", "Delete": "", "Dict": "", "Set": "", "JoinedStr": "",
                "Starred": "", "SetComp": "", "DictComp": "", "GeneratorExp": "", "Assert": ""}.get(what)
        self.fail(f"unsupported Python construct: {what}" + (f" ({hint})" if hint else "") +
                  " is not part of the kernel language")

    def block(self, stmts):
        self.blocks.append([])
        for s in stmts:
            self.visit(s)
        return self.blocks.pop()

    # ------------------------------------------------------------------- entry points
    def translate_kernel(self, node, src, scope, ret_annotation):
        """Statement mode: returns the loop-IR body."""
        self.src_stack.append(src)
        self.scope = scope
        self.node_stack.append(node)
        if ret_annotation is not None:
            self.ret_type = ret_annotation
        self.blocks.append([])
        for name, v in list(scope.vars.items()):     # parameters the body assigns become locals
            if isinstance(v, Val) and name in self._assign_counts:
                lv = self.new_local(name, v)
                lv.scope = scope
                scope.vars[name] = lv
        for s in node.body:
            self.visit(s)
        body = self.blocks.pop()
        self.node_stack.pop()
        self.src_stack.pop()
        return body

    # ----------------------------------------------------------------------- lookups
    def lookup(self, name, node):
        v = self.scope.lookup(name)
        if v is not None:
            return v
        g = self.scope.globals
        if name in g:
            return self.from_python(g[name], name)
        if hasattr(builtins, name):
            return CT(getattr(builtins, name))
        self.fail(f"name '{name}' is not defined", node)

    def from_python(self, obj, name=""):
        return obj if isinstance(obj, (CT, Val, View, RegArray, Helper, LocalVar)) else CT(obj)

    def read(self, v):
        """A binding's value (locals are read as expressions)."""
        if isinstance(v, LocalVar):
            return Val(L.Local(v.name, self.ldt(v.t)), v.t, weak=v if v.weak else None)
        return v

    @staticmethod
    def ldt(t) -> str:
        d = t.dtype if isinstance(t, VecType) else t
        return "float32" if d.name == "bfloat16" else d.name

    # ------------------------------------------------------------- type conversions
    def const_of(self, value, t):
        d = t.dtype if isinstance(t, VecType) else t
        if d.name == "bfloat16":        # a storage type: values are float32 (see convert_to)
            d = float32
            t = VecType(d, t.width) if isinstance(t, VecType) else d
        if d.is_float:
            c = L.Const(float(value), self.ldt(d))
        elif d is bool_:
            c = L.Const(bool(value), "bool")
        else:
            if isinstance(value, float):
                if value != int(value):
                    self.fail(f"float literal {value} used as {d.name}; write an integer or cast")
            bits = INT_BITS[d.name]
            if not -(1 << (bits - 1)) <= int(value) < (1 << bits):     # would silently wrap
                self.fail(f"integer literal {int(value)} does not fit in {d.name}")
            c = L.Const(int(value), d.name)
        return Val(L.Broadcast(c, t.width, c.dtype), t) if isinstance(t, VecType) else Val(c, d)

    def default_type(self, v):
        if isinstance(v, bool):
            return bool_
        if isinstance(v, int):
            return int64
        if isinstance(v, float):
            return float64
        self.fail(f"cannot use {type(v).__name__} value {v!r} in a kernel")

    def rt(self, x, like=None) -> Val:
        """A run-time value from anything value-like (compile-time numbers adapt to `like`)."""
        if isinstance(x, LocalVar):
            x = self.read(x)
        if isinstance(x, Val):
            return x
        if isinstance(x, CT):
            v = x.v
            if isinstance(v, (bool, int, float)) or hasattr(v, "dtype") and getattr(v, "shape", None) == ():
                if hasattr(v, "dtype") and not isinstance(v, (bool, int, float)):
                    return self.const_of(v.item(), dtype_of(v.dtype))
                if like is not None:
                    t = like.t if isinstance(like, Val) else like
                    d = t.dtype if isinstance(t, VecType) else t
                    if isinstance(v, float) and not (d.is_float or d.name == "bfloat16") and v != int(v):
                        self.fail(f"float literal {v} used with a {d.name} value; cast one side")
                    if isinstance(v, bool) or d is not bool_:
                        return self.const_of(v, d)
                return self.const_of(v, self.default_type(v))
            self.fail(f"expected a number, got {self._describe(x)}")
        self.fail(f"expected a number, got {self._describe(x)}")

    def settle(self, lv: LocalVar, t):
        """Give a weakly typed local (`acc = 0.0`) its type on first typed use."""
        if not lv.weak:
            return
        lv.weak = False
        lv.t = t
        if lv.decl is not None:
            lv.decl.init = self.const_of(lv.decl.init.value, t).e if not isinstance(t, VecType) else \
                self.const_of(lv.decl.init.value, t).e
            lv.decl.lanes = t.width if isinstance(t, VecType) else None

    def unify(self, a, b, what):
        """Bring two operands to one type: literals and weak locals adapt; else they must agree."""
        a = self.read(a) if isinstance(a, LocalVar) else a
        b = self.read(b) if isinstance(b, LocalVar) else b
        if isinstance(a, CT) and isinstance(b, CT):
            return a, b
        if isinstance(a, CT):
            b = self._float_for_literal(self._strong(b), a)
            return self.rt(a, b), b
        if isinstance(b, CT):
            a = self._float_for_literal(self._strong(a), b)
            return a, self.rt(b, a)
        if a.lits and not b.lits and b.weak is None:
            a = self._relit(a, b.t)
        elif b.lits and not a.lits and a.weak is None:
            b = self._relit(b, a.t)
        a, b = self._promote_int_float(a, b)
        if a.weak is not None and b.weak is None:
            a = self._retype(a, b.dtype, b.width)
        elif b.weak is not None and a.weak is None:
            b = self._retype(b, a.dtype, a.width)
        elif a.weak is not None and b.weak is not None:
            a, b = self._strong(a), self._strong(b)
        if a.dtype is not b.dtype:
            self.fail(f"type mismatch in {what}: {self._tname(a.t)} and {self._tname(b.t)} "
                      f"(cast one side, e.g. {a.dtype.name}(...))")
        if a.width and b.width and a.width != b.width:
            self.fail(f"vector widths differ in {what}: {self._tname(a.t)} and {self._tname(b.t)}")
        return a, b

    def _float_for_literal(self, v: Val, lit: CT) -> Val:
        if isinstance(lit.v, float) and v.dtype.is_int:
            return self.cast(v, float64)
        return v

    def _promote_int_float(self, a, b):
        """An integer meeting a float converts to that float type (as in Python and C)."""
        fa = a.dtype.is_float or a.dtype.name == "bfloat16"
        fb = b.dtype.is_float or b.dtype.name == "bfloat16"
        if fa and not fb and b.dtype.is_int:
            b = self.cast(self._strong(b), a.dtype if a.weak is None else float64)
        elif fb and not fa and a.dtype.is_int:
            a = self.cast(self._strong(a), b.dtype if b.weak is None else float64)
        return a, b

    def _strong(self, v: Val) -> Val:
        if v.weak is not None:
            self.settle(v.weak, v.weak.t)
            return self._reread(v)
        return v

    def _reread(self, v: Val) -> Val:
        """A weak value after its local settled: the local read with its new type, and the
        negations (the one operation that keeps a value weak, `-acc`) applied again."""
        e, negations = v.e, 0
        while isinstance(e, L.Un) and e.op == "neg":
            e, negations = e.a, negations + 1
        r = self.read(v.weak)
        for _ in range(negations):
            r = Val(L.Un("neg", r.e, self.ldt(r.t)), r.t)
        return r

    def _retype(self, v: Val, d: DType, width=None) -> Val:
        """Settle a weak local; meeting a vector makes it a vector (generic scalar code such
        as a math kernel inlined on SIMD values)."""
        lv = v.weak
        src = lv.t.dtype if isinstance(lv.t, VecType) else lv.t
        if src.is_float and not (d.is_float or d.name == "bfloat16"):
            self.fail(f"'{self._user_name(lv)}' was initialised with a float literal but is used with {d.name}")
        t = VecType(d, lv.t.width) if isinstance(lv.t, VecType) else VecType(d, width) if width else d
        self.settle(lv, t)
        return self._reread(v)

    def _user_name(self, lv):
        return lv.name.rsplit("_", 1)[0]

    @staticmethod
    def _tname(t):
        return repr(t)

    def _describe(self, x):
        if isinstance(x, Val):
            return self._tname(x.t)
        if isinstance(x, View):
            return f"tensor '{x.name}'"
        if isinstance(x, CT):
            return f"{type(x.v).__name__} {x.v!r}"
        return type(x).__name__

    def cast(self, v: Val, d: DType) -> Val:
        if v.weak is not None:
            v = self._strong(v)
        t = VecType(d, v.width) if v.width else d
        if d.name == "bfloat16":
            x = self.cast(v, float32)
            return Val(self._round_bf16(x.e), VecType(float32, v.width) if v.width else float32)
        if v.dtype is d:
            return v
        return Val(L.Cast(v.e, self.ldt(d)), t)

    def _round_bf16(self, e):
        """float32 -> nearest bfloat16 (ties to even), kept as float32."""
        bits = L.Bitcast(e, "int32")
        lsb = L.Bin("and", L.Bin("shr", bits, L.Const(16, "int32"), "int32"), L.Const(1, "int32"), "int32")
        r = L.Bin("add", bits, L.Bin("add", L.Const(0x7FFF, "int32"), lsb, "int32"), "int32")
        r = L.Bin("and", r, L.Const(-65536, "int32"), "int32")
        return L.Bitcast(r, "float32")

    def truthy(self, x, node) -> Val:
        x = self.rt(x)
        if x.width:
            self.fail("condition is a vector of lanes; reduce it with any(...)/all(...) or use "
                      "select(mask, a, b)", node)
        if x.dtype is bool_:
            return x
        return self.compare("ne", x, CT(0), node)

    # ------------------------------------------------------------------ statements
    def visit_Expr(self, node):
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return            # docstring
        self.visit(node.value)

    def visit_Pass(self, node):
        pass

    def visit_FunctionDef(self, node):
        self.scope.vars[node.name] = Helper(node, self.src_stack[-1], self.scope, self.scope.globals)

    def visit_Nonlocal(self, node):
        for n in node.names:
            if self.scope.parent is None or self.scope.parent.owner(n) is None:
                self.fail(f"nonlocal '{n}': no enclosing kernel variable of that name")
            self.scope.nonlocals.add(n)

    def visit_Assign(self, node):
        if len(node.targets) != 1:
            self.fail("chained assignment (a = b = ...) is not supported")
        target = node.targets[0]
        if isinstance(target, ast.Tuple):
            values = self.visit(node.value)
            if not (isinstance(values, CT) and isinstance(values.v, tuple)) or len(values.v) != len(target.elts):
                self.fail(f"cannot unpack {self._describe(values)} into {len(target.elts)} names")
            # evaluate every right-hand side before assigning (a, b = b, a)
            tmps = []
            for v in values.v:
                if isinstance(v, Val) and not self.expr_mode:
                    lv = self.new_local("tmp", v)
                    v = self.read(lv)
                tmps.append(v)
            for t, v in zip(target.elts, tmps):
                self.assign(t, v)
            return
        self.assign(target, self.visit(node.value))

    def visit_AnnAssign(self, node):
        t = self.visit(node.annotation)
        if not (isinstance(t, CT) and isinstance(t.v, (DType, VecType))):
            self.fail(f"annotation must be a scalar type or SIMD[dtype, width], got {self._describe(t)}")
        t = t.v
        if not isinstance(node.target, ast.Name):
            self.fail("annotated assignment needs a plain name")
        if node.value is None:
            self.fail("annotated names need a value")
        v = self.visit(node.value)
        v = self.convert_to(v, t, f"'{node.target.id}'")
        if self.expr_mode:
            self.scope.vars[node.target.id] = v
            return
        lv = self.declare(node.target.id, v)
        lv.weak = False

    def convert_to(self, v, t, what):
        if (t.dtype if isinstance(t, VecType) else t).name == "bfloat16":
            # bfloat16 is a storage type: the value is a float32, rounded as a store would
            v = self.convert_to(v, VecType(float32, t.width) if isinstance(t, VecType) else float32, what)
            return Val(self._round_bf16(v.e), v.t)
        if isinstance(v, CT):
            return self.const_of(v.v, t) if isinstance(t, VecType) and isinstance(v.v, (bool, int, float)) \
                else self.rt(v, t)
        v = self.rt(v)
        if v.lits:
            v = self._relit(v, t)
        if isinstance(t, VecType):
            return self.to_vector(v, t, f"cannot assign {self._tname(v.t)} to {what} of type {self._tname(t)}")
        if v.width:
            self.fail(f"cannot assign {self._tname(v.t)} to {what} of type {t.name}")
        if v.weak is not None:
            return self._retype(v, t)
        if v.dtype is not t:
            self.fail(f"cannot assign {v.dtype.name} to {what} of type {t.name}; "
                      f"convert with {t.name}(...)")
        return v

    def to_vector(self, v: Val, t: VecType, width_error: str) -> Val:
        """A scalar splatted to `t`, or a vector of the same width converted lane-wise."""
        if v.width is None:
            v = self.cast(v, t.dtype) if v.weak is None else self._retype(v, t.dtype)
            return Val(L.Broadcast(v.e, t.width, v.e.dtype), VecType(v.dtype, t.width))    # bfloat16: float32
        if v.width != t.width:
            self.fail(width_error)
        return self.cast(v, t.dtype)

    def new_local(self, hint, v: Val, weak=False) -> LocalVar:
        name = self.fresh(hint)
        decl = L.Decl(name, v.e, lanes=v.width)
        self.emit(decl)
        return LocalVar(name, v.t, decl, weak)

    def declare(self, name, v) -> LocalVar:
        weak = isinstance(v, CT)
        val = self.rt(v)
        if val.weak is not None:       # copying a weak local settles its type
            val = self._strong(val)
        lv = self.new_local(name, val, weak=weak)
        lv.scope = self.scope
        self.scope.vars[name] = lv
        return lv

    def _outside_parallel(self, scope):
        """Was `scope` created outside the innermost parallelize body being translated?"""
        return scope.par_level < self.par_level

    def assign(self, target, value):
        if isinstance(target, ast.Name):
            return self.assign_name(target.id, value, target)
        if isinstance(target, ast.Subscript):
            return self.assign_subscript(target, value)
        if isinstance(target, ast.Tuple):
            if not (isinstance(value, CT) and isinstance(value.v, tuple)):
                self.fail(f"cannot unpack {self._describe(value)}")
            for t, v in zip(target.elts, value.v):
                self.assign(t, v)
            return
        self.fail(f"cannot assign to {type(target).__name__}")

    def _assigned_once(self, name):
        return self._assign_counts.get(name, 0) <= 1

    def assign_name(self, name, value, node):
        scope = self.scope
        if name in scope.nonlocals:
            scope = scope.parent.owner(name)
        cur = scope.vars.get(name) if scope is self.scope else scope.vars.get(name)
        if self.expr_mode:
            if isinstance(value, LocalVar):
                value = self.read(value)
            self.scope.vars[name] = value
            return
        if isinstance(value, (View, RegArray, Helper)) or (isinstance(value, CT) and not
                                                          isinstance(value.v, (bool, int, float))):
            if cur is not None and not (isinstance(cur, type(value))):
                self.fail(f"cannot rebind '{name}' to {self._describe(value)}")
            if isinstance(value, (View, CT)):
                if cur is not None and self._bound_on.get((id(scope), name), ()) != self.control_path:
                    self.fail(f"cannot rebind '{name}' ({self._describe(cur)}) inside a run-time loop or "
                              "branch: it is bound when the kernel compiles (index the tensor with a run-time "
                              "offset instead)")
                self._bound_on[(id(scope), name)] = self.control_path
            scope.vars[name] = value
            return
        if isinstance(value, CT) and cur is None and self._assigned_once(name):
            scope.vars[name] = value        # assigned once from a compile-time value: an alias
            return
        if isinstance(cur, LocalVar):
            if self.parallel_scope is not None and self._outside_parallel(scope):
                self.fail(f"cannot assign '{name}' inside a parallelize body: it belongs to the enclosing "
                          "kernel and iterations run concurrently (write results to a tensor instead)")
            v = value
            if isinstance(v, Val) and v.weak is not None and v.weak is not cur:
                v = self._strong(v)
            if cur.weak and isinstance(v, Val):
                self.settle(cur, v.t)
            v = self.convert_to(v, cur.t, f"'{name}'")
            self.emit(L.Assign(cur.name, v.e))
            return
        if cur is not None and not isinstance(cur, CT):
            self.fail(f"cannot assign to '{name}' ({self._describe(cur)})")
        lv = self.declare(name, value)
        if scope is not self.scope:
            scope.vars[name] = lv

    def assign_subscript(self, target, value):
        obj = self.visit(target.value)
        idx = self.index_list(target.slice)
        if isinstance(obj, View):
            return self.store(obj, idx, value, None, target)
        if isinstance(obj, RegArray):
            self._check_parallel_write(target)
            k = self.ct_int(idx, "register array index")
            lv = obj.items[k]
            v = self.convert_to(value, lv.t, "register array element")
            self.emit(L.Assign(lv.name, v.e))
            return
        if isinstance(obj, Val) and obj.width and isinstance(target.value, ast.Name):
            self._check_parallel_write(target)
            lv = self.scope.lookup(target.value.id)
            if len(idx) != 1:
                self.fail("a vector lane index is one integer")
            if isinstance(idx[0], CT) and not 0 <= idx[0].v < obj.width:
                self.fail(f"lane {idx[0].v} out of range for {self._tname(obj.t)}")
            i = self.as_index(idx[0])
            x = self.convert_to(value, obj.dtype, "a vector lane")
            self.emit(L.Assign(lv.name, L.Insert(obj.e, i, x.e, self.ldt(obj.t))))
            return
        self.fail(f"cannot assign into {self._describe(obj)}")

    def _check_parallel_write(self, target):
        """An element of a register array, or a lane of a vector, of the enclosing kernel
        written from a parallelize body: a data race, like assigning the variable itself."""
        if self.parallel_scope is None or not isinstance(target.value, ast.Name):
            return
        name = target.value.id
        owner = self.scope.owner(name)
        if owner is not None and self._outside_parallel(owner):
            self.fail(f"cannot assign '{name}[...]' inside a parallelize body: '{name}' belongs to the enclosing "
                      "kernel and iterations run concurrently (write results to a tensor instead)")

    def ct_int(self, idx, what):
        if len(idx) != 1 or not isinstance(idx[0], CT) or not isinstance(idx[0].v, int):
            self.fail(f"{what} must be a compile-time integer")
        return idx[0].v

    def visit_AugAssign(self, node):
        op = _BINOP.get(type(node.op))
        if op is None:
            self.fail(f"unsupported operator {type(node.op).__name__}")
        t = node.target
        if isinstance(t, ast.Name):
            cur = self.visit(ast.copy_location(ast.Name(t.id, ast.Load()), t))
            return self.assign_name(t.id, self.binop(op, cur, self.visit(node.value), node), t)
        if isinstance(t, ast.Subscript):
            obj = self.visit(t.value)
            idx = self.index_list(t.slice)
            # evaluate index expressions once: bind non-trivial run-time indices to locals
            idx = [self.read(self.new_local("ix", x)) if isinstance(x, Val) and not
                   isinstance(x.e, (L.Const, L.Var, L.Local)) else x for x in idx]
            if isinstance(obj, View):
                cur = self.load(obj, idx, t)
                return self.store(obj, idx, self.binop(op, cur, self.visit(node.value), node), None, t)
            if isinstance(obj, RegArray):
                self._check_parallel_write(t)
                k = self.ct_int(idx, "register array index")
                cur = self.read(obj.items[k])
                v = self.convert_to(self.binop(op, cur, self.visit(node.value), node), obj.items[k].t, "element")
                self.emit(L.Assign(obj.items[k].name, v.e))
                return
        self.fail(f"cannot update {type(t).__name__} in place")

    def visit_If(self, node):
        c = self.visit(node.test)
        if isinstance(c, CT):
            for s in (node.body if c.v else node.orelse):
                self.visit(s)
            return
        c = self.truthy(c, node.test)
        if self.expr_mode:
            return self._if_expr(c, node)
        then = self.run_time_block(lambda: self.block(node.body))
        orelse = self.run_time_block(lambda: self.block(node.orelse))
        self.emit(L.If(c.e, then, orelse))

    def run_time_block(self, translate):
        """Translate code that runs conditionally or repeatedly (see `control_path`)."""
        saved = self.control_path
        self.control_path = saved + (next(self._names),)
        try:
            return translate()
        finally:
            self.control_path = saved

    def _if_expr(self, c, node):
        """Expression mode: run both branches on copies of the bindings, merge with select."""
        before = dict(self.scope.vars)
        self.path.append(c.e)
        for s in node.body:
            self.visit(s)
        self.path.pop()
        then_vars = self.scope.vars
        self.scope.vars = dict(before)
        self.path.append(L.Un("not", c.e, "bool"))
        for s in node.orelse:
            self.visit(s)
        self.path.pop()
        else_vars = self.scope.vars
        merged = dict(before)
        for name in set(then_vars) | set(else_vars):
            a, b = then_vars.get(name), else_vars.get(name)
            if a is b:
                merged[name] = a
            elif isinstance(a, (Val, CT)) and isinstance(b, (Val, CT)):
                merged[name] = self.select(c, a, b, node)
            elif name in before or (a is None) != (b is None):
                merged[name] = a if b is None else b
        self.scope.vars = merged

    def visit_For(self, node):
        if node.orelse:
            self.fail("for ... else is not supported")
        it = node.iter
        if not isinstance(it, ast.Call):
            self.fail("kernel loops iterate over range(...) or unroll(...)", it)
        fn = self.visit(it.func)
        args = [self.visit(a) for a in it.args]
        if isinstance(fn, CT) and fn.v is B.unroll:
            return self._unrolled(node, args)
        if not (isinstance(fn, CT) and fn.v is range):
            self.fail("kernel loops iterate over range(...) or unroll(...)", it)
        if self.expr_mode:
            self.fail("loops are not allowed in an elementwise function (use unroll(n) for a "
                      "compile-time loop)")
        if not isinstance(node.target, ast.Name):
            self.fail("the loop variable must be a plain name", node.target)
        if not 1 <= len(args) <= 3:
            self.fail("range takes 1 to 3 arguments")
        if len(args) == 1:
            start, stop, step = CT(0), args[0], CT(1)
        else:
            start, stop = args[0], args[1]
            step = args[2] if len(args) == 3 else CT(1)
        if not (isinstance(step, CT) and isinstance(step.v, int)) or step.v == 0:
            self.fail("the range step must be a non-zero compile-time integer", it)
        var = L.Var(self.fresh(node.target.id))
        self.emit(self.counted_loop(var, self.as_index(start), self.as_index(stop), step.v,
                                    node.target.id, lambda: [self.visit(s) for s in node.body]))

    def counted_loop(self, var, start, stop, step, name, body_fn, parallel=False):
        prev = self.scope.vars.get(name)
        self.scope.vars[name] = Val(var, int64)
        self.blocks.append([])
        self.loop_depth += 1
        saved_unroll, self.unroll_depth = self.unroll_depth, 0    # a break in here leaves this loop
        self.run_time_block(body_fn)
        self.unroll_depth = saved_unroll
        self.loop_depth -= 1
        body = self.blocks.pop()
        if prev is None:
            self.scope.vars.pop(name, None)
        else:
            self.scope.vars[name] = prev
        return L.For(var, start, stop, body, step=step, parallel=parallel)

    def _unrolled(self, node, args):
        vals = []
        for a in args:
            if not (isinstance(a, CT) and isinstance(a.v, int)):
                self.fail("unroll(...) bounds must be compile-time integers", node.iter)
            vals.append(a.v)
        if len(range(*vals)) > 4096:
            self.fail("unroll(...) of more than 4096 iterations")
        self.unroll_depth += 1
        for k in range(*vals):
            self.assign_unroll_target(node.target, CT(k))
            for s in node.body:
                self.visit(s)
        self.unroll_depth -= 1

    def assign_unroll_target(self, target, v):
        if not isinstance(target, ast.Name):
            self.fail("the loop variable must be a plain name", target)
        self.scope.vars[target.id] = v

    def visit_While(self, node):
        if node.orelse:
            self.fail("while ... else is not supported")
        if self.expr_mode:
            self.fail("loops are not allowed in an elementwise function")
        self.blocks.append([])
        self.loop_depth += 1
        c = self.visit(node.test)
        if isinstance(c, CT):
            if not c.v:
                self.loop_depth -= 1
                self.blocks.pop()
                return
        else:
            c = self.truthy(c, node.test)
            self.emit(L.If(L.Un("not", c.e, "bool"), [L.Break()]))
        saved_unroll, self.unroll_depth = self.unroll_depth, 0    # a break in here leaves this loop
        self.run_time_block(lambda: [self.visit(s) for s in node.body])
        self.unroll_depth = saved_unroll
        self.loop_depth -= 1
        self.emit(L.Loop(self.blocks.pop()))

    def visit_Break(self, node):
        self._loop_jump(node, L.Break)

    def visit_Continue(self, node):
        self._loop_jump(node, L.Continue)

    def _loop_jump(self, node, cls):
        word = cls.__name__.lower()
        if self.unroll_depth:
            self.fail(f"{word} inside an unroll(...) loop is not supported")
        if self.loop_depth == 0:
            self.fail(f"'{word}' outside a loop")
        self.emit(cls())

    def visit_Return(self, node):
        value = self.visit(node.value) if node.value is not None else None
        ctx = self.inline_stack[-1] if self.inline_stack else None
        if ctx is not None:
            return self._return_from_helper(ctx, value, node)
        if self.parallel_scope is not None:
            self.fail("return inside a parallelize body")
        if value is None:
            self.emit(L.Return())
            return
        v = self.rt(value, self.ret_type)
        if v.width:
            self.fail("a kernel returns a scalar; store vectors into a tensor argument")
        if self.ret_type is None:
            v = self._strong(v)
            self.ret_type = v.dtype
        v = self.convert_to(v, self.ret_type, "the return value")
        if self.ret_buf is None:
            self.ret_buf = "pending"
        self.emit(L.Return(v.e, "ret"))

    def _return_from_helper(self, ctx, value, node):
        if self.expr_mode:
            if value is None:
                self.fail("an elementwise function must return a value")
            cond = None
            for c in self.path:
                cond = c if cond is None else L.Bin("and", cond, c, "bool")
            ctx.rets.append((cond, value))
            ctx.done = not self.path
            return
        if value is not None:
            if ctx.result is None:
                v = self.rt(value, ctx.result_t)
                v = self._strong(v)
                ctx.result = self.new_local("ret", v)
            else:
                v = self.convert_to(value, ctx.result.t, "the return value")
                self.emit(L.Assign(ctx.result.name, v.e))
        self.emit(L.Break(ctx.label))

    # ----------------------------------------------------------------- expressions
    def visit_Constant(self, node):
        if isinstance(node.value, (bool, int, float)):
            return CT(node.value)
        if node.value is None:
            return CT(None)
        self.fail(f"{type(node.value).__name__} constants are not supported in kernels")

    def visit_Name(self, node):
        return self.read(self.lookup(node.id, node))

    def visit_Tuple(self, node):
        return CT(tuple(self.visit(e) for e in node.elts))

    def visit_List(self, node):
        items = [self.visit(e) for e in node.elts]
        return self.reg_array(items)

    def reg_array(self, items):
        if self.expr_mode:
            self.fail("register arrays are not allowed in an elementwise function")
        out = []
        for v in items:
            v = self.rt(v)
            out.append(self.new_local("reg", self._strong(v)))
        return RegArray(out)

    def visit_ListComp(self, node):
        if len(node.generators) != 1 or node.generators[0].ifs:
            self.fail("only [expr for k in range(n)] with a compile-time n is supported")
        g = node.generators[0]
        if not isinstance(g.iter, ast.Call):
            self.fail("only [expr for k in range(n)] with a compile-time n is supported")
        fn = self.visit(g.iter.func)
        args = [self.visit(a) for a in g.iter.args]
        if not (isinstance(fn, CT) and fn.v in (range, B.unroll)) or not all(
                isinstance(a, CT) and isinstance(a.v, int) for a in args):
            self.fail("only [expr for k in range(n)] with a compile-time n is supported")
        items = []
        for k in range(*[a.v for a in args]):
            if isinstance(g.target, ast.Name):
                self.scope.vars[g.target.id] = CT(k)
            items.append(self.visit(node.elt))
        return self.reg_array(items)

    def visit_GeneratorExp(self, node):
        """(expr for k in range(n)) with a compile-time n: a compile-time tuple."""
        items = self._comprehension(node)
        return CT(tuple(items))

    def _comprehension(self, node):
        if len(node.generators) != 1 or node.generators[0].ifs:
            self.fail("only (expr for k in range(n)) with a compile-time n is supported")
        g = node.generators[0]
        fn = self.visit(g.iter.func) if isinstance(g.iter, ast.Call) else None
        args = [self.visit(a) for a in g.iter.args] if fn is not None else []
        if not (isinstance(fn, CT) and fn.v in (range, B.unroll)) or not all(
                isinstance(a, CT) and isinstance(a.v, int) for a in args) or not isinstance(g.target, ast.Name):
            self.fail("only (expr for k in range(n)) with a compile-time n is supported")
        items = []
        for k in range(*[a.v for a in args]):
            self.scope.vars[g.target.id] = CT(k)
            items.append(self.visit(node.elt))
        return items

    def visit_Attribute(self, node):
        obj = self.visit(node.value)
        a = node.attr
        if isinstance(obj, CT):
            if isinstance(obj.v, VecType) and a == "iota":
                return Bound("iota", obj.v)
            try:
                return self.from_python(getattr(obj.v, a))
            except AttributeError:
                self.fail(f"{obj.v!r} has no attribute '{a}'")
        if isinstance(obj, View):
            if a == "shape":
                return CT(tuple(Val(d, int64) for d in obj.shape))
            if a == "strides":
                return CT(tuple(Val(d, int64) for d in obj.strides))
            if a == "ndim":
                return CT(len(obj.shape))
            if a == "size":
                n = L.Const(1, "int64")
                for d in obj.shape:
                    n = L.Bin("mul", n, d, "int64")
                return Val(n, int64)
            if a in ("load", "store"):
                return Bound(a, obj)
            if a == "dtype":
                return CT(obj.dtype)
            self.fail(f"tensors have no attribute '{a}' (they have shape, strides, ndim, size, load, store)")
        if isinstance(obj, Val):
            if a in _VEC_REDUCE or a == "shuffle":
                if not obj.width:
                    self.fail(f"'{a}' needs a SIMD vector, got {self._tname(obj.t)}")
                return Bound(a, obj)
            if a == "width":
                return CT(obj.width or 1)
            if a == "dtype":
                return CT(obj.dtype)
            self.fail(f"{self._tname(obj.t)} has no attribute '{a}'")
        self.fail(f"{self._describe(obj)} has no attribute '{a}'")

    def index_list(self, sl):
        if isinstance(sl, ast.Tuple):
            return [self.visit_slice(e) for e in sl.elts]
        return [self.visit_slice(sl)]

    def visit_slice(self, e):
        if isinstance(e, ast.Slice):
            if e.step is not None:
                self.fail("slices with a step are not supported; index with a stride instead")
            lo = self.visit(e.lower) if e.lower is not None else CT(0)
            hi = self.visit(e.upper) if e.upper is not None else None
            return ("slice", lo, hi)
        return self.visit(e)

    def visit_Subscript(self, node):
        obj = self.visit(node.value)
        if isinstance(obj, CT):
            idx = self.visit(node.slice)
            if isinstance(idx, CT) and isinstance(idx.v, tuple):
                if all(isinstance(x, CT) for x in idx.v):
                    key = tuple(x.v for x in idx.v)
                elif isinstance(obj.v, tuple):
                    self.fail("index a tuple with one compile-time integer")
                else:
                    self.fail(f"{obj.v!r}[...] needs compile-time arguments")
            elif isinstance(idx, CT):
                key = idx.v
            else:
                if isinstance(obj.v, tuple):
                    self.fail("tuple index must be a compile-time integer")
                self.fail(f"{obj.v!r}[...] needs compile-time arguments")
            try:
                r = obj.v[key]
            except (TypeError, KeyError, IndexError) as e:
                self.fail(f"{obj.v!r}[{key!r}]: {e}")
            if isinstance(r, VecType) and r.width == 1:
                r = r.dtype
            return self.from_python(r)
        if isinstance(obj, Bound) and obj.kind in ("load", "iota") and not obj.params:
            p = self.visit(node.slice)
            p = p.v if isinstance(p, CT) and isinstance(p.v, tuple) else (p,)
            if not all(isinstance(x, CT) and isinstance(x.v, int) for x in p):
                self.fail(f"{obj.kind}[...] takes compile-time integers (a vector width)")
            return Bound(obj.kind, obj.obj, tuple(x.v for x in p))
        idx = self.index_list(node.slice)
        if isinstance(obj, View):
            return self.load(obj, idx, node)
        if isinstance(obj, RegArray):
            k = self.ct_int(idx, "register array index")
            if not 0 <= k < len(obj.items):
                self.fail(f"register array index {k} out of range [0, {len(obj.items)})")
            return self.read(obj.items[k])
        if isinstance(obj, Val) and obj.width:
            if len(idx) != 1:
                self.fail("a vector lane index is one integer")
            if isinstance(idx[0], CT) and not 0 <= idx[0].v < obj.width:
                self.fail(f"lane {idx[0].v} out of range for {self._tname(obj.t)}")
            return Val(L.Extract(obj.e, self.as_index(idx[0]), self.ldt(obj.dtype)), obj.dtype)
        self.fail(f"{self._describe(obj)} cannot be indexed")

    # tensors --------------------------------------------------------------------------
    def as_index(self, x) -> L.Expr:
        if isinstance(x, CT):
            if not isinstance(x.v, (int, bool)) or isinstance(x.v, bool):
                self.fail(f"an index must be an integer, got {x.v!r}")
            return L.Const(int(x.v), "int64")
        x = self.rt(x)
        if x.width:
            self.fail("an index must be a scalar integer, got a vector")
        x = self._strong(x)
        if not x.dtype.is_int:
            self.fail(f"an index must be an integer, got {x.dtype.name}")
        return x.e if x.dtype is int64 else L.Cast(x.e, "int64")

    def _flat(self, view: View, idx):
        if len(idx) > len(view.shape):
            self.fail(f"too many indices for tensor '{view.name}' of rank {len(view.shape)}")
        off = view.offset
        for x, st in zip(idx, view.strides):
            term = self.as_index(x)
            if not (isinstance(st, L.Const) and st.value == 1):
                term = L.Bin("mul", term, st, "int64")
            off = term if isinstance(off, L.Const) and off.value == 0 else L.Bin("add", off, term, "int64")
        return off

    def subview(self, view: View, idx):
        off = view.offset
        shape, strides = [], []
        for k, (x, d, st) in enumerate(zip(idx, view.shape, view.strides)):
            if isinstance(x, tuple):
                lo = self.as_index(x[1])
                hi = self.as_index(x[2]) if x[2] is not None else d
                shape.append(L.Bin("sub", hi, lo, "int64"))
                strides.append(st)
                off = L.Bin("add", off, L.Bin("mul", lo, st, "int64"), "int64")
            else:
                off = L.Bin("add", off, L.Bin("mul", self.as_index(x), st, "int64"), "int64")
        shape += view.shape[len(idx):]
        strides += view.strides[len(idx):]
        return View(view.buf, view.dtype, off, shape, strides, view.name, view.store_hook, whole=False)

    def load(self, view: View, idx, node):
        if len(idx) < len(view.shape) or any(isinstance(x, tuple) for x in idx):
            return self.subview(view, idx)
        flat = self._flat(view, idx)
        return self._mem_load(view, L.Load(view.buf, flat, self.mem_dtype(view.dtype)))

    def mem_dtype(self, d: DType):
        return "uint16" if d.name == "bfloat16" else d.name

    def _mem_load(self, view, e, width=None):
        t = VecType(view.dtype, width) if width else view.dtype
        if view.dtype.name == "bfloat16":
            i = L.Cast(e, "int32") if not width else L.Cast(e, "int32")
            bits = L.Bin("shl", i, L.Const(16, "int32"), "int32")
            return Val(L.Bitcast(bits, "float32"), VecType(float32, width) if width else float32)
        return Val(e, t)

    def store(self, view: View, idx, value, mask, node):
        if len(idx) != len(view.shape) or any(isinstance(x, tuple) for x in idx):
            self.fail(f"a store into tensor '{view.name}' needs {len(view.shape)} indices, got {len(idx)}")
        d = view.dtype
        v = value
        if isinstance(v, CT):
            v = self.rt(v, float32 if d.name == "bfloat16" else d)
        v = self.rt(v)
        if v.weak is not None:
            v = self._retype(v, float32 if d.name == "bfloat16" else d)
        want = float32 if d.name == "bfloat16" else d
        if v.lits:
            v = self._relit(v, want)
        if v.dtype is not want:
            self.fail(f"cannot store {self._tname(v.t)} into {d.name} tensor '{view.name}'; convert "
                      f"with {d.name}(...)")
        e = v.e
        if view.store_hook is not None:
            # the epilogue takes the value as computed (not yet rounded to a storage type)
            if v.width is None or not view.contiguous_last:
                self.fail(f"kernel '{self.pyfunc.__name__}' takes fused epilogues (epilogue=True), so its stores into "
                          f"'{view.name}' must be vectors along the last axis")
            ix = [self.as_index(x) for x in idx] if view.whole else None
            for st in view.store_hook(self._flat(view, idx), ix, e, v.width,
                                      self.rt(mask).e if mask is not None else None):
                self.emit(st)
            return
        if d.name == "bfloat16":
            e = L.Cast(L.Bin("shr", L.Bitcast(self._round_bf16(e), "int32"), L.Const(16, "int32"), "int32"),
                       "uint16")
        flat = self._flat(view, idx)
        if v.width is None:
            if mask is not None:
                self.fail("mask= applies to vector stores")
            self.emit(L.Store(view.buf, flat, e))
            return
        m = self.rt(mask).e if mask is not None else None
        if view.contiguous_last:
            self.emit(L.VStore(view.buf, flat, e, m))
            return
        # strided: one scalar store per (selected) lane
        st = view.strides[-1]
        for k in range(v.width):
            s = L.Store(view.buf, L.Bin("add", flat, L.Bin("mul", L.Const(k, "int64"), st, "int64"), "int64"),
                        L.Extract(e, L.Const(k, "int64"), e.dtype))
            self.emit(L.If(L.Extract(m, L.Const(k, "int64"), "bool"), [s]) if m is not None else s)

    def vload(self, view: View, width, idx, mask, node):
        if len(idx) != len(view.shape):
            self.fail(f"load[{width}] on tensor '{view.name}' needs {len(view.shape)} indices, got {len(idx)}")
        flat = self._flat(view, idx)
        md = self.mem_dtype(view.dtype)
        if width == 1:
            if mask is not None:
                self.fail("mask= applies to vector loads")
            return self._mem_load(view, L.Load(view.buf, flat, md))
        m = None
        if mask is not None:
            m = self.rt(mask)
            if m.width != width or m.dtype is not bool_:
                self.fail(f"the mask of load[{width}] must be SIMD[bool, {width}], got {self._tname(m.t)}")
            m = m.e
        if view.contiguous_last:
            return self._mem_load(view, L.VLoad(view.buf, flat, width, md, m), width)
        # strided: a gather (masked-off lanes read the first element, which exists)
        lanes = L.Bin("mul", L.Iota(width, "int64"), L.Broadcast(view.strides[-1], width, "int64"), "int64")
        ix = L.Bin("add", L.Broadcast(flat, width, "int64"), lanes, "int64")
        if m is None:
            return self._mem_load(view, L.Load(view.buf, ix, md), width)
        ix = L.Select(m, ix, L.Broadcast(flat, width, "int64"), "int64")
        v = self._mem_load(view, L.Load(view.buf, ix, md), width)
        # masked-off lanes load 0, as a contiguous masked load gives
        return Val(L.Select(m, v.e, self.const_of(0, v.t).e, self.ldt(v.dtype)), v.t)

    # arithmetic -----------------------------------------------------------------------
    def visit_BinOp(self, node):
        op = _BINOP.get(type(node.op))
        if op is None:
            self.fail(f"unsupported operator {type(node.op).__name__}")
        return self.binop(op, self.visit(node.left), self.visit(node.right), node)

    def binop(self, op, a, b, node):
        a = self.read(a) if isinstance(a, LocalVar) else a
        b = self.read(b) if isinstance(b, LocalVar) else b
        for x in (a, b):
            if not isinstance(x, (CT, Val)) or (isinstance(x, CT) and not isinstance(x.v, (bool, int, float))):
                self.fail(f"unsupported operand for {_SYM[op]}: {self._describe(x)}")
        if isinstance(a, CT) and isinstance(b, CT):
            try:
                return CT(_PYBIN[op](a.v, b.v))
            except (ZeroDivisionError, OverflowError, ValueError) as e:
                self.fail(f"compile-time arithmetic failed: {e}")
        if op == "pow" and isinstance(b, CT) and isinstance(b.v, int) and 0 <= b.v <= 8:
            a = self._strong(self.rt(a))
            if b.v == 0:
                return self.const_of(1, a.t)
            r = a
            for _ in range(b.v - 1):
                r = Val(L.Bin("mul", r.e, a.e, r.e.dtype), a.t)
            return r
        a, b = self.unify(a, b, f"'{_SYM[op]}'")
        t = a.t if a.width else b.t
        d = a.dtype
        dt = self.ldt(d)
        isf = d.is_float or d.name == "bfloat16"
        if op in ("add", "sub", "mul"):
            if d is bool_:
                self.fail("arithmetic on bool values; convert with int32(...) first")
            return Val(L.Bin(op, a.e, b.e, dt), t)
        if op == "truediv":
            if not isf:
                self.fail(f"'/' on {d.name} values: use // for integer division, or convert to a float type")
            return Val(L.Bin("div", a.e, b.e, dt), t)
        if op in ("floordiv", "mod"):
            return self._floordiv_mod(op, a, b, t, isf)
        if op == "pow":
            if not isf:
                self.fail(f"'**' on {d.name} needs a small compile-time exponent (0..8)")
            return Val(L.Bin("pow", a.e, b.e, dt), t)
        if op in ("and", "or", "xor"):
            if isf:
                self.fail(f"bitwise '{_SYM[op]}' on {d.name} values")
            return Val(L.Bin(op, a.e, b.e, dt), t)
        if op in ("shl", "shr"):
            if not d.is_int:
                self.fail(f"shift on {d.name} values")
            return Val(L.Bin(op, a.e, b.e, dt), t)
        self.fail(f"unsupported operator {op}")

    def _floordiv_mod(self, op, a, b, t, isf):
        """Python semantics: floor division, and a remainder with the divisor's sign."""
        dt = self.ldt(a.dtype)
        w = a.width or b.width
        if isf:
            r = L.Bin("mod", a.e, b.e, dt)     # C fmod: sign of a
        else:
            if not a.dtype.is_signed:
                return Val(L.Bin("div" if op == "floordiv" else "mod", a.e, b.e, dt), t)
            r = L.Bin("mod", a.e, b.e, dt)
        zero = self.const_of(0, t).e if w else L.Const(0.0 if isf else 0, dt)
        # r != 0 and (r < 0) != (b < 0): the truncated result must be adjusted
        adjust = L.Bin("and", L.Un("not", L.Bin("eq", r, zero, "bool"), "bool"),
                       L.Bin("xor", L.Bin("lt", r, zero, "bool"), L.Bin("lt", b.e, zero, "bool"), "bool"), "bool")
        if op == "mod":
            return Val(L.Select(adjust, L.Bin("add", r, b.e, dt), r, dt), t)
        one = self.const_of(1, t).e if w else L.Const(1, dt)
        if not isf:
            q = L.Bin("div", a.e, b.e, dt)
            return Val(L.Select(adjust, L.Bin("sub", q, one, dt), q, dt), t)
        # as CPython: divide the exact multiple a - fmod(a, b), so that a quotient just below an
        # integer is not rounded up to it (1.0 // 0.1 is 9.0, where floor(1.0 / 0.1) is 10.0)
        q = L.Bin("div", L.Bin("sub", a.e, r, dt), b.e, dt)
        q = L.Select(adjust, L.Bin("sub", q, one, dt), q, dt)
        fl = L.Un("floor", q, dt)
        half = self.const_of(0.5, t).e if w else L.Const(0.5, dt)
        return Val(L.Select(L.Bin("lt", half, L.Bin("sub", q, fl, dt), "bool"), L.Bin("add", fl, one, dt), fl, dt), t)

    def visit_UnaryOp(self, node):
        x = self.visit(node.operand)
        if isinstance(x, CT):
            f = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_,
                 ast.Invert: operator.invert}[type(node.op)]
            return CT(f(x.v))
        x = self.rt(x)
        if isinstance(node.op, ast.UAdd):
            return x
        if isinstance(node.op, ast.USub):
            if x.dtype is bool_:
                self.fail("cannot negate a bool")
            return Val(L.Un("neg", x.e, self.ldt(x.dtype)), x.t, weak=x.weak)
        if isinstance(node.op, ast.Not):
            c = self.truthy(x, node) if not x.width else x
            if c.dtype is not bool_:
                self.fail("'not' on a vector needs SIMD[bool, w]; use ~ for integer lanes")
            return Val(L.Un("not", c.e, "bool"), c.t)
        if x.dtype.is_float:
            self.fail(f"'~' on {x.dtype.name}")
        return Val(L.Un("not", x.e, self.ldt(x.dtype)), x.t)

    def visit_BoolOp(self, node):
        is_and = isinstance(node.op, ast.And)
        vals = [self.visit(v) for v in node.values[:1]]
        first = vals[0]
        if isinstance(first, CT):
            # compile-time short-circuit
            if bool(first.v) != is_and or len(node.values) == 1:
                return CT(bool(first.v)) if isinstance(first.v, bool) else first
            rest = ast.BoolOp(op=node.op, values=node.values[1:]) if len(node.values) > 2 else node.values[1]
            ast.copy_location(rest, node.values[1])
            return self.visit(rest)
        acc = self.truthy(first, node.values[0])
        if self.expr_mode:
            for v in node.values[1:]:
                c = self.truthy(self.visit(v), v)
                acc = Val(L.Bin("and" if is_and else "or", acc.e, c.e, "bool"), bool_)
            return acc
        # statement mode: short-circuit for real (the right side may index out of range)
        res = self.new_local("cond", acc)
        for v in node.values[1:]:
            self.blocks.append([])
            c = self.truthy(self.visit(v), v)
            self.emit(L.Assign(res.name, c.e))
            inner = self.blocks.pop()
            test = L.Local(res.name, "bool")
            self.emit(L.If(test if is_and else L.Un("not", test, "bool"), inner))
        return self.read(res)

    def visit_Compare(self, node):
        left = self.visit(node.left)
        result = None
        for op, right_node in zip(node.ops, node.comparators):
            right = self.visit(right_node)
            name = _CMP.get(type(op))
            if name is None:
                self.fail(f"unsupported comparison {type(op).__name__}")
            if isinstance(left, CT) and isinstance(right, CT):
                c = CT(_PYCMP[type(op)](left.v, right.v))
            else:
                c = self.compare(name, left, right, node)
            result = c if result is None else self._and(result, c)
            left = right
        return result

    def _and(self, a, b):
        if isinstance(a, CT):
            return b if a.v else a
        if isinstance(b, CT):
            return a if b.v else b
        return Val(L.Bin("and", a.e, b.e, "bool"), a.t if a.width else b.t)

    def compare(self, name, a, b, node):
        a, b = self.unify(a, b, "a comparison")
        w = a.width or b.width
        bt = VecType(bool_, w) if w else bool_
        if name in ("gt", "ge"):
            a, b, name = b, a, {"gt": "lt", "ge": "le"}[name]
        if name == "ne":
            return Val(L.Un("not", L.Bin("eq", a.e, b.e, "bool"), "bool"), bt)
        return Val(L.Bin(name, a.e, b.e, "bool"), bt)

    def visit_IfExp(self, node):
        c = self.visit(node.test)
        if isinstance(c, CT):
            return self.visit(node.body if c.v else node.orelse)
        c = self.rt(c)
        cond = c if c.width and c.dtype is bool_ else self.truthy(c, node.test)   # lanes: a select
        return self.select(cond, self.visit(node.body), self.visit(node.orelse), node)

    def select(self, c, a, b, node):
        if isinstance(c, CT):           # a compile-time condition picks one side (it may stay a literal)
            return a if c.v else b
        la, lb = self._literal_retyper(a), self._literal_retyper(b)
        if la and lb:
            # `1.0 if c else 0.5` (or selects nested in it): typed by default now, re-typed like
            # a literal where it meets a typed value (`_relit`)
            c = self.rt(c)

            def retype(like):
                x, y = la[0](like), lb[0](like)
                if x is None or y is None:
                    return None
                w = c.width or x.width or y.width
                return Val(L.Select(c.e, x.e, y.e, self.ldt(x.dtype)), VecType(x.dtype, w) if w else x.dtype,
                           lits=(retype, d))
            d = float64 if float64 in (la[1], lb[1]) else la[1] if la[1] is lb[1] else int64
            v = retype(d)
            if v is not None:
                return v
        a, b = self.unify(a, b, "select")
        if isinstance(a, CT):
            a, b = self.rt(a), self.rt(b, self.rt(a))
        c = self.rt(c)
        w = a.width or b.width or c.width
        t = VecType(a.dtype, w) if w else a.dtype
        return Val(L.Select(c.e, a.e, b.e, self.ldt(a.dtype)), t)

    def _literal_retyper(self, x):
        """For a number literal, or a select between them: (a function giving it as a value of
        a type, None where it does not fit that type; its default type). Else None."""
        if isinstance(x, CT) and isinstance(x.v, (bool, int, float)):
            def retype(like):
                d = like.dtype if isinstance(like, VecType) else like
                if isinstance(x.v, float) and not (d.is_float or d.name == "bfloat16") and x.v != int(x.v):
                    return None
                return self.const_of(x.v, d) if (d is bool_) == isinstance(x.v, bool) else None
            return retype, self.default_type(x.v)
        return x.lits if isinstance(x, Val) else None

    def _relit(self, v: Val, like) -> Val:
        """A select between literals, typed `like` (a DType or VecType) as the literals would
        have been; unchanged where they do not fit it."""
        r = v.lits[0](like)
        return v if r is None else r

    # calls --------------------------------------------------------------------------
    def visit_Call(self, node):
        fn = self.visit(node.func)
        if isinstance(fn, CT) and fn.v in (B.vectorize, B.parallelize, B.tile):
            return self.call_algorithm(fn.v, node)
        args = []
        for a in node.args:
            if isinstance(a, ast.Starred):       # *t of a compile-time tuple
                t = self.visit(a.value)
                if not (isinstance(t, CT) and isinstance(t.v, tuple)):
                    self.fail("* expands only compile-time tuples", a)
                args.extend(t.v)
            else:
                args.append(self.visit(a))
        kwargs = {k.arg: self.visit(k.value) for k in node.keywords}
        if any(k.arg is None for k in node.keywords):
            self.fail("**kwargs is not supported in kernel calls")
        return self.call(fn, args, kwargs, node)

    def call(self, fn, args, kwargs, node):
        if isinstance(fn, Bound):
            return self.call_method(fn, args, kwargs, node)
        if isinstance(fn, Helper):
            return self.inline(fn, args, kwargs, node)
        if not isinstance(fn, CT):
            self.fail(f"{self._describe(fn)} is not callable")
        f = fn.v
        if isinstance(f, DType):
            self._nargs(args, 1, f.name)
            x = args[0]
            if isinstance(x, CT):
                return self.const_of(x.v, f) if f.name != "bfloat16" else self.cast(self.rt(x, float32), f)
            return self.cast(self.rt(x), f)
        if isinstance(f, VecType):
            self._nargs(args, 1, repr(f))
            x = args[0]
            if isinstance(x, CT):
                return self.const_of(x.v, f)
            x = self.rt(x)
            return self.to_vector(x, f, f"cannot convert {self._tname(x.t)} to {f!r}: widths differ")
        if f in (int, float, bool):
            self._nargs(args, 1, f.__name__)
            d = {int: int64, float: float64, bool: bool_}[f]
            if isinstance(args[0], CT):
                return CT(f(args[0].v))
            return self.cast(self.rt(args[0]), d) if f is not bool else self.truthy(args[0], node)
        if f in B.MATH_UNARY:
            return self.math1(B.MATH_UNARY[f], args, node)
        if f is B.fma:
            self._nargs(args, 3, "fma")
            a, b = self.unify(args[0], args[1], "fma")
            a, c = self.unify(a, args[2], "fma")
            b, c = self.unify(b, c, "fma")
            self._need_float(a, "fma")
            if a.dtype.name == "float16":
                # LLVM would widen to double and call __truncdfhf2, which the JIT cannot resolve:
                # do the same widening here, then one (correct) rounding back to float16
                r = self.call(CT(B.fma), [self.cast(x, float64) for x in (a, b, c)], {}, node)
                return self.cast(r, a.dtype)
            w = a.width or b.width or c.width
            return Val(L.Fma(a.e, b.e, c.e, self.ldt(a.dtype)), VecType(a.dtype, w) if w else a.dtype)
        if f in (min, max) or f in (math.fabs, abs):
            if f in (math.fabs, abs):
                self._nargs(args, 1, "abs")
                x = self.rt(args[0]) if not isinstance(args[0], CT) else None
                if x is None:
                    return CT(abs(args[0].v))
                if x.dtype is bool_ or x.dtype.is_int and not x.dtype.is_signed:
                    return x            # (LLVM's abs would read the bits as signed)
                return Val(L.Un("abs", x.e, self.ldt(x.dtype)), x.t)
            if len(args) != 2:
                self.fail(f"{f.__name__}(a, b) takes two values (for the lanes of a vector, use "
                          f".reduce_{f.__name__}())")
            a, b = self.unify(args[0], args[1], f.__name__)
            if isinstance(a, CT):
                return CT(f(a.v, b.v))
            return Val(L.Bin(f.__name__, a.e, b.e, self.ldt(a.dtype)), a.t if a.width else b.t)
        if f is B.select:
            self._nargs(args, 3, "select")
            return self.select(args[0], args[1], args[2], node)
        if f is B.bitcast:
            self._nargs(args, 2, "bitcast")
            x = self._strong(self.rt(args[0]))
            if not (isinstance(args[1], CT) and isinstance(args[1].v, DType)):
                self.fail("bitcast(x, dtype) needs a dtype as second argument")
            d = args[1].v
            fbits = {"float32": 32, "float64": 64, "float16": 16}
            to_bits, from_bits = INT_BITS.get(d.name, fbits.get(d.name)), INT_BITS.get(x.dtype.name, fbits.get(x.dtype.name))
            if to_bits != from_bits:
                # a vector may be reread as lanes of another width (SIMD[int32, 8] as SIMD[int16, 16])
                total = (x.width or 1) * from_bits if to_bits and from_bits else 0
                if not total or total % to_bits:
                    self.fail(f"bitcast from {x.dtype.name} to {d.name}: sizes differ (a vector may change "
                              f"lane width only when its bits make whole lanes of the new type)")
                lanes = total // to_bits
                return Val(L.Bitcast(x.e, d.name, lanes), VecType(d, lanes) if lanes > 1 else d)
            return Val(L.Bitcast(x.e, d.name), VecType(d, x.width) if x.width else d)
        if f is B.shuffle:
            self._nargs(args, 3, "shuffle")
            a, b = self.rt(args[0]), self.rt(args[1])
            return self.shuffle(a, b, args[2], node)
        if f in (any, all):
            self._nargs(args, 1, f.__name__)
            m = self.rt(args[0])
            if m.dtype is not bool_ or not m.width:
                self.fail(f"{f.__name__}(...) takes a SIMD[bool, w] mask")
            return Val(L.HReduce("or" if f is any else "and", m.e, "bool"), bool_)
        if f is len:
            self._nargs(args, 1, "len")
            if isinstance(args[0], CT) and isinstance(args[0].v, tuple):
                return CT(len(args[0].v))
            if not isinstance(args[0], View):
                self.fail("len(...) takes a tensor")
            return Val(args[0].shape[0], int64)
        if f is range or f is B.unroll:
            self.fail(f"{f.__name__}(...) can only drive a for loop")
        if callable(f) and not isinstance(f, type) and getattr(f, "__code__", None) is not None \
                or hasattr(f, "__ember_kernel__"):
            return self.inline(self.helper_of(f), args, kwargs, node)
        self.fail(f"cannot call {getattr(f, '__name__', f)!r} inside a kernel")

    def helper_of(self, f):
        f = getattr(f, "__ember_kernel__", f)
        node, src = _parse(f)
        g = dict(f.__globals__)
        if f.__closure__:
            for name, cell in zip(f.__code__.co_freevars, f.__closure__):
                g[name] = cell.cell_contents
        return Helper(node, src, None, g, f)

    def _nargs(self, args, n, name):
        if len(args) != n:
            self.fail(f"{name}(...) takes {n} argument{'s' if n != 1 else ''}, got {len(args)}")

    def _need_float(self, x, what):
        if not (x.dtype.is_float or x.dtype.name == "bfloat16"):
            self.fail(f"{what} needs a float value, got {self._tname(x.t)} (convert with float32(...))")

    def math1(self, op, args, node):
        self._nargs(args, 1, op)
        if isinstance(args[0], CT):
            v = args[0].v
            f = {"exp": math.exp, "log": math.log, "tanh": math.tanh, "erf": math.erf, "sqrt": math.sqrt,
                 "rsqrt": lambda x: 1 / math.sqrt(x), "floor": math.floor, "ceil": math.ceil,
                 "sin": math.sin, "cos": math.cos}[op]
            return CT(f(v))
        x = self._strong(self.rt(args[0]))
        if op in ("floor", "ceil") and x.dtype.is_int:
            return x
        self._need_float(x, op)
        if x.dtype.name == "float16":
            # computed in float32 (libm has no half functions), rounded back once
            return self.cast(self.math1(op, [self.cast(x, float32)], node), x.dtype)
        impl = _vector_impl(op, x.dtype.name)
        if impl is not None and impl not in self._active_impls:
            self._active_impls.add(impl)
            try:
                return self.inline(self.helper_of(impl), [x], {}, node)
            finally:
                self._active_impls.discard(impl)
        return Val(L.Un(op, x.e, self.ldt(x.dtype)), x.t)

    def shuffle(self, a, b, indices, node):
        if not (isinstance(indices, CT) and isinstance(indices.v, tuple) and
                all(isinstance(i, CT) and isinstance(i.v, int) for i in indices.v)):
            self.fail("shuffle indices must be compile-time integers")
        idx = tuple(i.v for i in indices.v)
        n = a.width + (b.width if b is not None else 0)
        if any(not 0 <= i < n for i in idx):
            self.fail(f"shuffle index out of range [0, {n})")
        if b is not None:
            a, b = self.unify(a, b, "shuffle")
        w = len(idx)
        if not w or w & (w - 1):
            self.fail("a shuffle must produce a power-of-two number of lanes")
        if w == 1:          # one lane is a scalar (SIMD[dtype, 1] is dtype)
            src, lane = (a, idx[0]) if idx[0] < a.width else (b, idx[0] - a.width)
            return Val(L.Extract(src.e, L.Const(lane, "int64"), self.ldt(a.dtype)), a.dtype)
        return Val(L.Shuffle(a.e, b.e if b is not None else None, idx, self.ldt(a.dtype)), VecType(a.dtype, w))

    def call_method(self, m: Bound, args, kwargs, node):
        if m.kind == "load":
            width = m.params[0] if m.params else 1
            if len(m.params) > 1:
                self.fail("load[...] takes one compile-time width")
            return self.vload(m.obj, width, args, kwargs.get("mask"), node)
        if m.kind == "store":
            if len(args) < 2:
                self.fail("store(i, ..., value) takes the indices then the value")
            return self.store(m.obj, args[:-1], args[-1], kwargs.get("mask"), node)
        if m.kind == "iota":
            if args:
                self.fail("iota() takes no arguments")
            t = m.obj
            return Val(L.Iota(t.width, self.ldt(t.dtype)), t)
        if m.kind in _VEC_REDUCE:
            v = m.obj
            op = _VEC_REDUCE[m.kind]
            if op in ("and", "or") and v.dtype.is_float:
                self.fail(f"{m.kind} on float lanes")
            if op in ("add", "mul") and v.dtype is bool_:
                self.fail(f"{m.kind} on bool lanes; convert with SIMD[int32, {v.width}](...) first")
            return Val(L.HReduce(op, v.e, self.ldt(v.dtype)), v.dtype)
        if m.kind == "shuffle":
            return self.shuffle(m.obj, None, CT(tuple(args)), node)
        self.fail(f"unknown method {m.kind}")

    # algorithm helpers ------------------------------------------------------------------
    def _body_fn(self, node, what):
        if not node.args:
            self.fail(f"{what}(body, ...) needs a function")
        fn = self.visit(node.args[0])
        if isinstance(fn, CT) and callable(fn.v):
            fn = self.helper_of(fn.v)
        if not isinstance(fn, Helper):
            self.fail(f"the first argument of {what} must be a function defined with def")
        return fn

    def call_algorithm(self, alg, node):
        if self.expr_mode:
            self.fail(f"{alg.__name__} cannot be used in an elementwise function")
        body = self._body_fn(node, alg.__name__)
        args = [self.visit(a) for a in node.args[1:]]
        kw = {k.arg: self.visit(k.value) for k in node.keywords}
        if alg is B.vectorize:
            n = args[0] if args else kw.get("n")
            width = args[1] if len(args) > 1 else kw.get("width")
            if n is None or not (isinstance(width, CT) and isinstance(width.v, int) and width.v >= 1):
                self.fail("vectorize(body, n, width) needs a compile-time integer width")
            return self._tile(body, L.Const(0, "int64"), self.as_index(n), (width.v, 1), node)
        if alg is B.tile:
            if len(args) != 3:
                self.fail("tile(body, start, stop, sizes) takes four arguments")
            sizes = args[2]
            if not (isinstance(sizes, CT) and isinstance(sizes.v, tuple) and sizes.v and
                    all(isinstance(s, CT) and isinstance(s.v, int) and s.v >= 1 for s in sizes.v)):
                self.fail("tile sizes must be a tuple of compile-time positive integers")
            return self._tile(body, self.as_index(args[0]), self.as_index(args[1]),
                              tuple(s.v for s in sizes.v), node)
        if alg is B.parallelize:
            if len(args) != 1:
                self.fail("parallelize(body, n) takes two arguments")
            n = self.as_index(args[0])
            var = L.Var(self.fresh("par"))
            saved = self.parallel_scope, self.loop_depth
            self.loop_depth = 0
            self.par_level += 1

            def run():
                self.parallel_scope = self.scope
                self.inline(body, [Val(var, int64)], {}, node, parallel=True)
            loop = self.counted_loop(var, L.Const(0, "int64"), n, 1, "$par", run, parallel=True)
            self.par_level -= 1
            self.parallel_scope, self.loop_depth = saved
            self.emit(loop)
            return CT(None)

    def _tile(self, body, start, stop, sizes, node):
        pos = self.new_local("pos", Val(start, int64))
        cur = L.Local(pos.name, "int64")
        for k, t in enumerate(sizes):
            span = L.Bin("sub", stop, cur, "int64")
            end = stop if t == 1 else L.Bin("add", cur, L.Bin("mul", L.Bin("div", span, L.Const(t, "int64"), "int64"),
                                                                 L.Const(t, "int64"), "int64"), "int64")
            endv = self.new_local("end", Val(end, int64))
            var = L.Var(self.fresh("i"))
            saved = self.loop_depth
            self.loop_depth = 0      # break/continue may not cross into the tile loop
            loop = self.counted_loop(var, cur, L.Local(endv.name, "int64"), t, "$tile",
                                     lambda: self.inline(body, [Val(var, int64), CT(t)], {}, node))
            self.loop_depth = saved
            self.emit(loop)
            if k < len(sizes) - 1:
                self.emit(L.Assign(pos.name, L.Local(endv.name, "int64")))
        return CT(None)

    # inlining ---------------------------------------------------------------------------
    def inline(self, h: Helper, args, kwargs, node, parallel=False):
        fdef = h.node
        if len(self.inline_stack) > 64:
            self.fail("helper calls nest too deeply (recursion is not supported)")
        params = fdef.args
        if params.vararg or params.kwarg or params.kwonlyargs and any(
                d is None for d in params.kw_defaults):
            self.fail(f"helper '{fdef.name}' may only have plain parameters")
        names = [a.arg for a in params.args] + [a.arg for a in params.kwonlyargs]
        if len(args) > len(params.args):
            self.fail(f"{fdef.name}() takes {len(params.args)} arguments, got {len(args)}")
        scope = Scope(h.scope, h.globals)
        scope.par_level = self.par_level
        bound = dict(zip(names, args))
        for k, v in kwargs.items():
            if k not in names:
                self.fail(f"{fdef.name}() has no parameter '{k}'")
            bound[k] = v
        defaults = dict(zip([a.arg for a in params.args][len(params.args) - len(params.defaults):],
                            params.defaults))
        defaults.update({a.arg: d for a, d in zip(params.kwonlyargs, params.kw_defaults) if d is not None})
        for name in names:
            if name not in bound:
                if name not in defaults:
                    self.fail(f"{fdef.name}() is missing argument '{name}'")
                self.src_stack.append(h.src)
                saved_scope, self.scope = self.scope, Scope(h.scope, h.globals)
                bound[name] = self.visit(defaults[name])
                self.scope = saved_scope
                self.src_stack.pop()
        # parameters: run-time values with side-effect-sensitive expressions are evaluated once
        assigned = _count_assignments(fdef)
        for name, v in bound.items():
            if isinstance(v, LocalVar):
                v = self.read(v)
            if isinstance(v, Val) and not self.expr_mode and (
                    name in assigned or not isinstance(v.e, (L.Const, L.Var, L.SizeRef))):
                lv = self.new_local(name, self._strong(v))
                lv.scope = scope
                v = lv if name in assigned else self.read(lv)
            scope.vars[name] = v
            self._bound_on[(id(scope), name)] = self.control_path
        saved_scope = self.scope
        self.scope = scope
        self.src_stack.append(h.src)
        ctx = _InlineCtx(self.fresh("ret"))
        self.inline_stack.append(ctx)
        saved_assign = getattr(self, "_assign_counts", {})
        self._assign_counts = _count_assignments(fdef)
        saved_loop = self.loop_depth
        self.loop_depth = 0
        try:
            body = fdef.body
            tail = body[-1] if body and isinstance(body[-1], ast.Return) else None
            simple = _first_return(body[:-1] if tail is not None else body) is None
            if self.expr_mode:
                for s in body:
                    if ctx.done:
                        break
                    self.visit(s)
                result = self._merge_returns(ctx, fdef)
            elif simple:
                for s in (body[:-1] if tail is not None else body):
                    self.visit(s)
                result = CT(None)
                if tail is not None and tail.value is not None:
                    self.node_stack.append(tail)
                    result = self.visit(tail.value)
                    self.node_stack.pop()
            else:
                if parallel:
                    self.fail("return inside a parallelize body", _first_return(body))
                self.blocks.append([])
                for s in body:
                    self.visit(s)
                inner = self.blocks.pop()
                self.emit(L.Loop(inner + [L.Break(ctx.label)], label=ctx.label))
                result = self.read(ctx.result) if ctx.result is not None else CT(None)
        finally:
            self.loop_depth = saved_loop
            self._assign_counts = saved_assign
            self.inline_stack.pop()
            self.src_stack.pop()
            self.scope = saved_scope
        return result

    def _merge_returns(self, ctx, fdef):
        if not ctx.rets:
            self.fail(f"elementwise function '{fdef.name}' must return a value")
        if ctx.rets[-1][0] is not None:
            self.fail(f"elementwise function '{fdef.name}' must end with a return on every path")
        result = ctx.rets[-1][1]
        for cond, v in reversed(ctx.rets[:-1]):
            result = self.select(Val(cond, bool_), v, result, fdef)
        return result


def _first_return(stmts):
    """The first return statement (not counting nested function definitions), or None."""
    def walk(node):
        if isinstance(node, ast.Return):
            return node
        if isinstance(node, (ast.FunctionDef, ast.Lambda)):
            return None
        return next((r for r in map(walk, ast.iter_child_nodes(node)) if r is not None), None)
    return next((r for r in map(walk, stmts) if r is not None), None)


def _count_assignments(fdef):
    """How often each name is assigned in a function (not counting nested defs)."""
    counts: dict = {}

    def walk(node, in_loop):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.Lambda)):
                # names a nested function assigns through `nonlocal` are run-time variables
                for n in ast.walk(child):
                    if isinstance(n, ast.Nonlocal):
                        for name in n.names:
                            counts[name] = counts.get(name, 0) + 2
                continue
            loop = in_loop or isinstance(child, (ast.For, ast.While))
            targets = []
            if isinstance(child, ast.Assign):
                targets = child.targets
            elif isinstance(child, (ast.AugAssign, ast.AnnAssign)):
                targets = [child.target]
                if isinstance(child, ast.AugAssign) and isinstance(child.target, ast.Name):
                    counts[child.target.id] = counts.get(child.target.id, 0) + 1
            elif isinstance(child, ast.For):
                targets = [child.target]
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        counts[n.id] = counts.get(n.id, 0) + (2 if loop and isinstance(child, ast.For) else 1)
            walk(child, loop)
    walk(fdef, False)
    return counts


def _vector_impl(op: str, dtype: str):
    """The kernel-language implementation of math function `op` that the op table names for
    float32 (`OpDef.vector_f32`, in ember.kernels.math), or None: the libm call."""
    from ..ir.ops import OPS
    d = OPS.get(op)
    if dtype != "float32" or d is None or not d.vector_f32:
        return None
    from ..kernels import math as kernel_math
    return getattr(kernel_math, d.vector_f32)
