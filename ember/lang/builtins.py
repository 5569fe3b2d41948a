"""The kernel language's built-in functions.

Inside a kernel these names are recognised by identity and compiled; the Python bodies here
only serve documentation and plain-Python use on scalars (so a scalar helper can be tried in
the interpreter). Compile-time arguments are marked in the docstrings.
"""
from __future__ import annotations

import math

import numpy as np


def exp(x):
    """e**x (float scalars or vectors)."""
    return np.exp(x)


def log(x):
    """Natural logarithm."""
    return np.log(x)


def tanh(x):
    return np.tanh(x)


def erf(x):
    return np.vectorize(math.erf)(x) if np.ndim(x) else type(x)(math.erf(x))


def sqrt(x):
    return np.sqrt(x)


def rsqrt(x):
    """1 / sqrt(x)."""
    return 1 / np.sqrt(x)


def floor(x):
    return np.floor(x)


def ceil(x):
    return np.ceil(x)


def fma(a, b, c):
    """a * b + c with one rounding (a hardware FMA)."""
    return a * b + c


def select(cond, a, b):
    """Lane-wise `a if cond else b`; both sides are evaluated."""
    return np.where(cond, a, b)


def bitcast(x, dtype):
    """Reinterpret the bits of `x` as `dtype` (same width). `dtype` is compile-time."""
    return np.asarray(x).view(np.dtype(str(dtype)))


def shuffle(a, b, indices):
    """Lanes `indices` (compile-time) of the concatenation of vectors a and b."""
    return np.concatenate([a, b])[list(indices)]


def vectorize(body, n, width):
    """Call `body(i, width)` for i = 0, width, 2*width, ... while a whole vector fits, then
    `body(i, 1)` for each remaining element. `width` is compile-time, so `x.load[w](i)` in
    the body is a vector load in the main loop and a scalar load in the tail."""
    i = 0
    while i + width <= n:
        body(i, width)
        i += width
    while i < n:
        body(i, 1)
        i += 1


def parallelize(body, n):
    """Call `body(i)` for i in range(n) on Ember's native thread pool. The body may read the
    enclosing variables but not assign them (each call is independent)."""
    for i in range(n):
        body(i)


def tile(body, start, stop, sizes):
    """Cover [start, stop) with tiles: for each size in `sizes` (compile-time, largest first)
    call `body(i, size)` on as many whole tiles as fit, then go on with the next size."""
    i = start
    for t in sizes:
        while i + t <= stop:
            body(i, t)
            i += t


def unroll(*args):
    """`for k in unroll(n)`: a loop unrolled at compile time (`k` is compile-time)."""
    return range(*args)


MATH_UNARY = {exp: "exp", log: "log", tanh: "tanh", erf: "erf", sqrt: "sqrt", rsqrt: "rsqrt",
              floor: "floor", ceil: "ceil",
              math.exp: "exp", math.log: "log", math.tanh: "tanh", math.erf: "erf",
              math.sqrt: "sqrt", math.floor: "floor", math.ceil: "ceil", math.sin: "sin",
              math.cos: "cos", np.exp: "exp", np.log: "log", np.tanh: "tanh", np.sqrt: "sqrt",
              np.floor: "floor", np.ceil: "ceil", np.sin: "sin", np.cos: "cos"}
