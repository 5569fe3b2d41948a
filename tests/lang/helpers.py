"""Shared pieces of the kernel-language tests: input lengths around the vector widths, seeded
random data per dtype, tolerances, and locating a kernel error in its source."""
import inspect
import linecache

import numpy as np
import pytest

from ember.errors import KernelError

# lengths that are not multiples of any vector width (and the empty and one-element cases)
LENGTHS = [0, 1, 7, 17, 33, 100]

INT_NAMES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
FLOAT_NAMES = ["float16", "float32", "float64"]

# relative tolerance per float type when the kernel and numpy round differently (math functions,
# different association); elementwise IEEE operations are compared exactly
RTOL = {"float16": 2e-3, "bfloat16": 1e-2, "float32": 2e-6, "float64": 1e-13}


def rng(seed=0):
    return np.random.default_rng(seed)


def random_array(dtype, shape, seed=0, lo=None, hi=None, nonzero=False):
    """Random values spread over the type's range (ints: the whole range unless lo/hi are given;
    floats: normal, scaled), never all zeros or ones."""
    g = rng(seed)
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        lo = info.min if lo is None else lo
        hi = info.max if hi is None else hi
        a = g.integers(lo, hi, size=shape, endpoint=True, dtype=np.int64 if dt.kind == "i" or hi < 2**63
                       else np.uint64).astype(dt)
        if nonzero:
            a[a == 0] = 1
        return a
    if dt == np.bool_:
        return g.random(shape) < 0.5
    a = g.standard_normal(shape) * (3 if dt == np.float16 else 10)
    if nonzero:
        a[a == 0] = 1.5
    return a.astype(dt)


def kernel_error(kern, *args, **kwargs) -> str:
    with pytest.raises(KernelError) as e:
        kern(*args, **kwargs)
    return str(e.value)


def where(kern, needle, occurrence=0):
    """(file, line, column) of `needle` in the kernel's source, as a KernelError reports them
    (1-based line and column)."""
    fn = getattr(kern, "fn", kern)
    lines, first = inspect.getsourcelines(fn)
    seen = 0
    body = next(k for k, line in enumerate(lines) if line.lstrip().startswith("def ")) + 1
    for k, line in enumerate(lines[body:], body):     # the body: not the decorator or the name
        if needle in line:
            if seen == occurrence:
                return inspect.getsourcefile(fn), first + k, line.index(needle) + 1
            seen += 1
    raise AssertionError(f"{needle!r} not in the source of {fn.__name__}")


def assert_error_at(msg, kern, needle, reason, occurrence=0):
    """The error's first line is exactly `file:line:col: reason`; the next two lines are the
    source line and a caret under `needle`."""
    file, line, col = where(kern, needle, occurrence)
    first, src, caret = msg.splitlines()[:3]
    assert first == f"{file}:{line}:{col}: {reason}", msg
    assert src.strip() == linecache.getline(file, line).strip(), msg
    assert caret.strip() == "^", msg
    assert caret.index("^") == src.index(needle, len(src) - len(src.lstrip())), msg
