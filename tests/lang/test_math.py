"""Math functions against numpy / math on random inputs: exp, log, tanh, erf, sqrt, rsqrt,
floor, ceil, fma, min, max, abs and ** on scalars and vectors of float16, bfloat16, float32
and float64, the math.* spellings, integer min/max/abs, and casts inside expressions."""
import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ember.lang import (Param, Tensor, ceil, erf, exp, float32, float64, floor, fma,
                        int16, int32, int64, kernel, log, rsqrt, sqrt, tanh, uint8, vectorize)
from ember.lang.types import DTYPES

from .helpers import LENGTHS, random_array

np_erf = np.vectorize(math.erf, otypes=[np.float64])

FUNCS = ["exp", "log", "tanh", "erf", "sqrt", "rsqrt", "floor", "ceil", "fma", "min", "max", "abs", "pow3"]


def _reference(x):
    """float64 reference of every row the math kernels write, with the intermediate results
    the kernel rounds to x's type (`abs(v) + 0.5`, `v / 4.0`, `v * v`) rounded the same way
    (bfloat16 values are float32 until they are stored)."""
    def rnd(a):
        return a.astype(np.float32 if x.dtype == ml_dtypes.bfloat16 else x.dtype).astype(np.float64)
    xd = x.astype(np.float64)
    ax = np.abs(xd)
    return [np.exp(rnd(xd / 4)), np.log(rnd(ax + 0.5)), np.tanh(xd), np_erf(xd) if x.size else xd, np.sqrt(ax),
            1 / np.sqrt(rnd(ax + 0.5)), np.floor(xd), np.ceil(xd), xd * xd + 0.5, np.minimum(xd, 0.25),
            np.maximum(xd, -0.25), ax, rnd(xd * xd) * xd]


def _math_kernel(dt):
    @kernel
    def math_rows(x: Tensor[dt, 1], out: Tensor[dt, 2], W: Param = 8):
        def body(i, w):
            v = x.load[w](i)                   # a vector, then scalars on the tail
            out.store(0, i, exp(v / 4.0))
            out.store(1, i, log(abs(v) + 0.5))
            out.store(2, i, tanh(v))
            out.store(3, i, erf(v))
            out.store(4, i, sqrt(abs(v)))
            out.store(5, i, rsqrt(abs(v) + 0.5))
            out.store(6, i, floor(v))
            out.store(7, i, ceil(v))
            out.store(8, i, fma(v, v, 0.5))
            out.store(9, i, min(v, 0.25))
            out.store(10, i, max(v, -0.25))
            out.store(11, i, abs(v))
            out.store(12, i, v ** 3)
        vectorize(body, len(x), W)
    return math_rows


MATH_KERNELS = {name: _math_kernel(DTYPES[name]) for name in ("float16", "bfloat16", "float32", "float64")}

# per type: (relative, absolute) tolerance against the float64 reference, after rounding the
# reference to the type (float32 exp/erf/tanh are Ember's polynomials: a few ulp)
TOL = {"float64": (1e-14, 1e-15), "float32": (2e-6, 1e-7), "float16": (1e-3, 1e-4), "bfloat16": (8e-3, 1e-3)}


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("name, W", [("float64", 4), ("float64", 8), ("float32", 8), ("float32", 16),
                                     ("float16", 16), ("bfloat16", 8)])
def test_math_on_vectors_and_tails(name, W, n):
    npdt = ml_dtypes.bfloat16 if name == "bfloat16" else np.dtype(name)
    x = (random_array(np.float64, n, seed=n) / 3).astype(npdt)
    if n > 4:
        x[:5] = [0.0, -1.5, 2.5, -0.5, 3.0]            # exact halves for floor/ceil
    out = np.zeros((13, n), npdt)
    MATH_KERNELS[name](x, out, W=W)
    rtol, atol = TOL[name]
    for k, (fname, want) in enumerate(zip(FUNCS, _reference(x))):
        got = out[k].astype(np.float64)
        want = want.astype(npdt).astype(np.float64)    # the reference, rounded like the result
        if name in ("float16", "bfloat16"):
            # computed in float32, rounded once: within one unit of the last place of the type
            ulp = np.abs(want) * (2.0 ** -10 if name == "float16" else 2.0 ** -7) + atol
            assert (np.abs(got - want) <= ulp).all(), (fname, x, got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=fname)


@kernel
def math_spellings(x: float64) -> float64:
    return (math.exp(x) + math.log(abs(x) + 1.0) + math.tanh(x) + math.erf(x) + math.sqrt(abs(x))
            + math.floor(x) + math.ceil(x) + math.sin(x) + math.cos(x) + math.fabs(x))


@kernel
def numpy_spellings(x: float32) -> float32:
    return np.exp(x) + np.log(abs(x) + 1.0) + np.tanh(x) + np.sqrt(abs(x)) + np.floor(x) + np.ceil(x) \
        + np.sin(x) + np.cos(x)


@pytest.mark.parametrize("n", [1, 7, 100])
def test_math_module_and_numpy_spellings(n):
    x = random_array(np.float64, n, seed=n) / 3
    want = (np.exp(x) + np.log(np.abs(x) + 1) + np.tanh(x) + np_erf(x) + np.sqrt(np.abs(x)) + np.floor(x)
            + np.ceil(x) + np.sin(x) + np.cos(x) + np.abs(x))
    np.testing.assert_allclose(math_spellings(x), want, rtol=1e-13)        # mapped over the array
    assert abs(math_spellings(x[0]) - want[0]) <= 1e-13 * abs(want[0])     # and on a scalar
    xf = x.astype(np.float32)
    xd = xf.astype(np.float64)
    want = (np.exp(xd) + np.log(np.abs(xd) + 1) + np.tanh(xd) + np.sqrt(np.abs(xd)) + np.floor(xd) + np.ceil(xd)
            + np.sin(xd) + np.cos(xd))
    np.testing.assert_allclose(numpy_spellings(xf), want, rtol=1e-5, atol=1e-5)


@kernel
def int_math(a: Tensor[int32, 1], b: Tensor[int32, 1], u: Tensor[uint8, 1], out: Tensor[int64, 2]):
    for i in range(len(a)):
        out[0, i] = int64(abs(a[i]))
        out[1, i] = int64(min(a[i], b[i]))
        out[2, i] = int64(max(a[i], b[i]))
        out[3, i] = int64(min(u[i], uint8(100)))          # unsigned comparison
        out[4, i] = int64(max(u[i], uint8(100)))
        out[5, i] = int64(floor(a[i]) + ceil(b[i]))        # the identity on integers
        out[6, i] = int64(a[i]) ** 2
        out[7, i] = int64(abs(int16(a[i] % 1000)))


@pytest.mark.parametrize("n", LENGTHS)
def test_integer_min_max_abs(n):
    a = random_array(np.int32, n, seed=n, lo=-10**6, hi=10**6)
    b = random_array(np.int32, n, seed=n + 1, lo=-10**6, hi=10**6)
    u = random_array(np.uint8, n, seed=n + 2)
    out = np.zeros((8, n), np.int64)
    int_math(a, b, u, out)
    want = [np.abs(a), np.minimum(a, b), np.maximum(a, b), np.minimum(u, 100), np.maximum(u, 100), a + b,
            a.astype(np.int64) ** 2, np.abs(a % 1000)]
    np.testing.assert_array_equal(out, np.array(want, np.int64).reshape(8, n))


@kernel
def fused(a: float32, b: float32, c: float32) -> float32:
    return fma(a, b, c)


@kernel
def unfused(a: float32, b: float32, c: float32) -> float32:
    return a * b + c                 # never contracted into an fma without fastmath


@given(st.floats(-1e3, 1e3, width=32), st.floats(-1e3, 1e3, width=32), st.floats(-1e3, 1e3, width=32))
@settings(max_examples=25, deadline=None)
def test_fma_rounds_once(a, b, c):
    exact = float(np.float64(a) * np.float64(b)) + c       # the product is exact in float64
    f32 = np.float32
    # within half an ulp of a*b+c; the difference taken in float64 (a float32 minus a Python
    # float stays float32 and rounds it). Not always f32(exact): a tiny c breaks a tie that
    # float64 rounds away (3 * 43.324272 + 1.4e-45 rounds up, correctly)
    got = float(fused(a, b, c))
    assert got == f32(exact) or abs(got - exact) <= abs(exact) * 2 ** -24
    assert unfused(a, b, c) == f32(f32(a) * f32(b)) + f32(c)


def test_fma_differs_from_multiply_add():
    a = np.float32(1 + 2 ** -12)
    c = -np.float32(1 + 2 ** -11)               # a*a - c loses the 2**-24 term unless fused
    assert fused(a, a, c) == np.float32(2 ** -24)
    assert unfused(a, a, c) == 0


@kernel
def pow_forms(x: float64, n: int64) -> float64:
    return x ** 0 + x ** 1 + x ** 5 + x ** 0.5 + x ** n + x ** -1.0


@given(st.floats(0.01, 100), st.integers(-4, 6))
@settings(max_examples=20, deadline=None)
def test_powers(x, n):
    want = 1 + x + x ** 5 + x ** 0.5 + x ** n + 1 / x
    assert pow_forms(x, n) == pytest.approx(want, rel=1e-13)


@kernel
def softplus_sum(x: Tensor[float32, 1]) -> float64:
    acc = 0.0
    for i in range(len(x)):
        v = x[i]
        acc += float64(v if v > 20.0 else log(1.0 + exp(v)))     # casts inside expressions
    return acc


@pytest.mark.parametrize("n", LENGTHS)
def test_math_in_control_flow(n):
    x = random_array(np.float32, n, seed=n) * 3
    xd = x.astype(np.float64)
    want = np.where(xd > 20, xd, np.log1p(np.exp(xd))).sum()
    np.testing.assert_allclose(softplus_sum(x), want, rtol=1e-5, atol=1e-5)
