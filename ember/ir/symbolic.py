"""Symbolic integer expressions for dynamic dimensions ("batch", "seq", batch*seq*12 ...).

A dimension is a Python int or a `Sym`. `Sym` is an integer polynomial over atoms, where an
atom is a symbol name or an opaque term (floordiv, mod, max, min) of two expressions. Every
operation returns a plain int as soon as the result is constant, so static shapes stay ints.
Symbols stand for sizes and are assumed >= 1 (enough to decide `sym == -1` style checks).
"""
from __future__ import annotations

from typing import Union

Dim = Union[int, "Sym"]


def _atom_key(a) -> str:
    return a if isinstance(a, str) else repr(a)


class Sym:
    """Immutable polynomial: {monomial (sorted tuple of atoms): int coefficient}."""

    __slots__ = ("terms", "_hash")

    def __init__(self, terms: dict):
        self.terms = {m: c for m, c in terms.items() if c != 0}
        self._hash = hash(frozenset(self.terms.items()))

    # -- construction -------------------------------------------------------------------
    @staticmethod
    def make(terms: dict) -> Dim:
        terms = {m: c for m, c in terms.items() if c != 0}
        if not terms:
            return 0
        if len(terms) == 1 and () in terms:
            return terms[()]
        return Sym(terms)

    @staticmethod
    def atom(a) -> "Sym":
        return Sym({(a,): 1})

    # -- arithmetic ---------------------------------------------------------------------
    def __add__(self, o):
        o = _terms(o)
        if o is None:
            return NotImplemented
        t = dict(self.terms)
        for m, c in o.items():
            t[m] = t.get(m, 0) + c
        return Sym.make(t)

    __radd__ = __add__

    def __neg__(self):
        return Sym.make({m: -c for m, c in self.terms.items()})

    def __sub__(self, o):
        return self + (-o)

    def __rsub__(self, o):
        return (-self) + o

    def __mul__(self, o):
        o = _terms(o)
        if o is None:
            return NotImplemented
        t: dict = {}
        for m1, c1 in self.terms.items():
            for m2, c2 in o.items():
                m = tuple(sorted(m1 + m2, key=_atom_key))
                t[m] = t.get(m, 0) + c1 * c2
        return Sym.make(t)

    __rmul__ = __mul__

    def __floordiv__(self, o):
        return floordiv(self, o)

    def __rfloordiv__(self, o):
        return floordiv(o, self)

    def __mod__(self, o):
        return mod(self, o)

    def __rmod__(self, o):
        return mod(o, self)

    # -- comparisons --------------------------------------------------------------------
    def __eq__(self, o):
        if isinstance(o, Sym):
            return self.terms == o.terms
        if isinstance(o, int):
            return False  # a Sym is never constant (make() folds constants to int)
        return NotImplemented

    def __ne__(self, o):
        r = self.__eq__(o)
        return r if r is NotImplemented else not r

    def __hash__(self):
        return self._hash

    def lower_bound(self) -> int | None:
        """A lower bound assuming every symbol >= 1, when all coefficients are >= 0 and every
        opaque term has a known non-negative bound (a floordiv, mod, max or min may be 0 or
        less: `max(n // 3 - 1, 0)` must not be taken for `n // 3 - 1`)."""
        total = 0
        for m, c in self.terms.items():
            if c < 0:
                return None
            v = c
            for a in m:
                lb = _atom_lower_bound(a)
                if lb is None or lb < 0:
                    return None
                v *= lb
            total += v
        return total

    def __lt__(self, o):
        return _compare(self, o, "lt")

    def __le__(self, o):
        return _compare(self, o, "le")

    def __gt__(self, o):
        return _compare(o, self, "lt")

    def __ge__(self, o):
        return _compare(o, self, "le")

    def __index__(self):
        raise TypeError(f"symbolic dimension {self} has no static value")

    def __bool__(self):
        return True

    # -- inspection ---------------------------------------------------------------------
    def free_symbols(self) -> set:
        out: set = set()
        for m in self.terms:
            for a in m:
                if isinstance(a, str):
                    out.add(a)
                else:
                    for x in a[1:]:
                        if isinstance(x, Sym):
                            out |= x.free_symbols()
        return out

    def evaluate(self, env: dict) -> int:
        total = 0
        for m, c in self.terms.items():
            v = c
            for a in m:
                v *= _eval_atom(a, env)
            total += v
        return total

    def __repr__(self):
        return str(self)

    def __str__(self):
        parts = []
        for m, c in sorted(self.terms.items(), key=lambda mc: (-len(mc[0]), str(mc[0]))):
            names = "*".join(_atom_str(a) for a in m)
            if not names:
                parts.append(str(c))
            elif c == 1:
                parts.append(names)
            elif c == -1:
                parts.append("-" + names)
            else:
                parts.append(f"{c}*{names}")
        return " + ".join(parts).replace("+ -", "- ")


def _terms(o):
    if isinstance(o, Sym):
        return o.terms
    if isinstance(o, (int,)) and not isinstance(o, bool):
        return {(): int(o)}
    try:
        import numpy as np
        if isinstance(o, np.integer):
            return {(): int(o)}
    except ImportError:  # pragma: no cover
        pass
    return None


def _lower_bound(d) -> int | None:
    return d if isinstance(d, int) else d.lower_bound()


def _atom_lower_bound(a) -> int | None:
    if isinstance(a, str):
        return 1
    op, x, y = a
    lx, ly = _lower_bound(x), _lower_bound(y)
    if op == "max":
        known = [v for v in (lx, ly) if v is not None]
        return max(known) if known else None
    if op == "min":
        return min(lx, ly) if lx is not None and ly is not None else None
    if op == "floordiv" and lx is not None and lx >= 0 and isinstance(y, int) and y > 0:
        return lx // y
    if op == "mod" and isinstance(y, int) and y > 0:
        return 0
    return None


def _atom_str(a) -> str:
    if isinstance(a, str):
        return a
    op, x, y = a
    sym = {"floordiv": "//", "mod": "%"}.get(op)
    return f"({x} {sym} {y})" if sym else f"{op}({x}, {y})"


def _eval_atom(a, env) -> int:
    if isinstance(a, str):
        return int(env[a])
    op, x, y = a
    xv, yv = evaluate(x, env), evaluate(y, env)
    return {"floordiv": lambda: xv // yv, "mod": lambda: xv % yv,
            "max": lambda: max(xv, yv), "min": lambda: min(xv, yv)}[op]()


def _compare(a, b, how):
    d = b - a  # a < b  <=> d > 0
    if isinstance(d, int):
        return d > 0 if how == "lt" else d >= 0
    lb = d.lower_bound()
    if lb is not None and lb > (0 if how == "lt" else -1):
        return True
    nd = -d
    lb = nd.lower_bound() if isinstance(nd, Sym) else None
    if lb is not None and lb >= (0 if how == "lt" else 1):
        return False
    raise TypeError(f"cannot decide {a} {'<' if how == 'lt' else '<='} {b} symbolically")


def floordiv(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a // b
    if isinstance(b, int):
        if b == 1:
            return a
        if b > 0 and all(c % b == 0 for c in a.terms.values()):
            return Sym.make({m: c // b for m, c in a.terms.items()})
    if isinstance(a, Sym) and isinstance(b, Sym):
        # exact division by a single monomial, e.g. (12*b*s) // (b*s)
        if len(b.terms) == 1:
            (bm, bc), = b.terms.items()
            out = {}
            for m, c in a.terms.items():
                rest = list(m)
                ok = c % bc == 0
                for x in bm:
                    if x in rest:
                        rest.remove(x)
                    else:
                        ok = False
                if not ok:
                    break
                out[tuple(rest)] = c // bc
            else:
                return Sym.make(out)
        if a == b:
            return 1
        # an integer multiple of a sum, e.g. (16*h + 16) // (8*h + 8)
        (bm, bc), = list(b.terms.items())[:1]
        ac = a.terms.get(bm)
        if ac is not None and ac % bc == 0 and a == b * (ac // bc):
            return ac // bc
    return Sym.atom(("floordiv", a, b))


def mod(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a % b
    q = floordiv(a, b)
    if not (isinstance(q, Sym) and any(not isinstance(t, str) and t[0] == "floordiv"
                                        for m in q.terms for t in m)):
        return a - q * b
    return Sym.atom(("mod", a, b))


def smax(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return max(a, b)
    try:
        return b if a <= b else a
    except TypeError:
        return Sym.atom(("max", a, b))


def smin(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return min(a, b)
    try:
        return a if a <= b else b
    except TypeError:
        return Sym.atom(("min", a, b))


def sym(name: str) -> Sym:
    return Sym.atom(name)


def evaluate(d: Dim, env: dict) -> int:
    return d.evaluate(env) if isinstance(d, Sym) else int(d)


def is_static(d) -> bool:
    return not isinstance(d, Sym)


def prod(dims) -> Dim:
    out: Dim = 1
    for d in dims:
        out = out * d
    return out


def dim_str(d: Dim) -> str:
    return str(d)


# -- a tiny serialisation for the disk cache (JSON-able nested lists) ----------------------
def encode(d: Dim):
    if isinstance(d, int):
        return d
    return [[[_enc_atom(a) for a in m], c] for m, c in d.terms.items()]


def _enc_atom(a):
    return a if isinstance(a, str) else [a[0], encode(a[1]), encode(a[2])]


def decode(j) -> Dim:
    if isinstance(j, int):
        return j
    terms = {}
    for m, c in j:
        terms[tuple(_dec_atom(a) for a in m)] = c
    return Sym.make(terms)


def _dec_atom(a):
    return a if isinstance(a, str) else (a[0], decode(a[1]), decode(a[2]))


def reshape_groups(out_shape, in_shape):
    """The finest pairing of runs of `out_shape`'s dims with runs of `in_shape`'s of equal
    element count (dims of a static 1 left out: their index is 0), as lists of dim positions;
    None where no pairing is found (a static 0, or sizes whose divisibility is unknown)."""
    outs = [k for k, d in enumerate(out_shape) if not (isinstance(d, int) and d == 1)]
    ins = [k for k, d in enumerate(in_shape) if not (isinstance(d, int) and d == 1)]
    if any(isinstance(d, int) and d == 0 for d in list(out_shape) + list(in_shape)):
        return None
    groups, i, j = [], 0, 0
    while i < len(outs) and j < len(ins):
        go, gi = [outs[i]], [ins[j]]
        po, pi = out_shape[outs[i]], in_shape[ins[j]]
        i, j = i + 1, j + 1
        while po != pi:
            if isinstance(po, int) and isinstance(pi, int):
                grow_out = po < pi
            elif mod(pi, po) == 0:
                grow_out = True
            elif mod(po, pi) == 0:
                grow_out = False
            else:
                return None
            if grow_out and i < len(outs):
                go.append(outs[i]); po = po * out_shape[outs[i]]; i += 1
            elif not grow_out and j < len(ins):
                gi.append(ins[j]); pi = pi * in_shape[ins[j]]; j += 1
            else:
                return None
        groups.append((go, gi))
    if i < len(outs) or j < len(ins):
        return None
    return groups
