"""The kernel language: each construct and type against numpy / pure Python, on random inputs
whose lengths are not multiples of the vector width."""
import inspect

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import ember
from ember.errors import InvalidInputError, KernelError
from ember.lang import (SIMD, Param, Tensor, bfloat16, bitcast, bool_, fma, float16, float32,
                        float64, int8, int16, int32, int64, parallelize, select, set_num_threads, shuffle,
                        tile, uint8, uint16, uint32, uint64, unroll, vectorize)
from ember.lang import exp, log, tanh, erf, sqrt, rsqrt, floor, ceil

LENGTHS = [0, 1, 7, 17, 33, 100]
rng = np.random.default_rng(0)


# ---------------------------------------------------------------------------- scalar types
@ember.kernel
def axpb(x: Tensor[float32, 1], y: Tensor[float32, 1], a: float32, b: float32):
    for i in range(len(x)):
        y[i] = a * x[i] + b


@pytest.mark.parametrize("n", LENGTHS)
def test_scalar_loop(n):
    x = rng.standard_normal(n).astype(np.float32)
    y = np.empty_like(x)
    axpb(x, y, 1.5, -2.0)
    np.testing.assert_allclose(y, 1.5 * x - 2.0, rtol=1e-6)


@ember.kernel
def int_ops(x: Tensor[int64, 1], y: Tensor[int64, 1], d: int64):
    for i in range(len(x)):
        y[i] = (x[i] // d) * 1000 + x[i] % d + ((x[i] << 2) >> 1) - (x[i] & 7) + (x[i] | 1) - (x[i] ^ 3)


@given(st.lists(st.integers(-10**6, 10**6), max_size=40), st.integers(1, 50).map(lambda v: v * (1 if v % 2 else -1)))
@settings(max_examples=20, deadline=None)
def test_integer_semantics_follow_python(xs, d):
    x = np.array(xs, dtype=np.int64)
    y = np.empty_like(x)
    int_ops(x, y, d)
    want = [(v // d) * 1000 + v % d + ((v << 2) >> 1) - (v & 7) + (v | 1) - (v ^ 3) for v in xs]
    assert y.tolist() == want


@pytest.mark.parametrize("dt", [int8, int16, int32, uint8, uint16, uint32, uint64, float16, float64])
def test_every_scalar_type_roundtrips_arithmetic(dt):
    @ember.kernel
    def mix(x: Tensor[dt, 1], y: Tensor[dt, 1]):
        for i in range(len(x)):
            y[i] = x[i] * dt(3) + dt(1)
    npd = dt.np
    x = (rng.integers(0, 20, 17) if npd.kind in "iu" else rng.standard_normal(17)).astype(npd)
    y = np.empty_like(x)
    mix(x, y)
    np.testing.assert_allclose(y.astype(np.float64), (x * npd.type(3) + npd.type(1)).astype(np.float64),
                               rtol=1e-3 if npd == np.float16 else 1e-12)


def test_bool_and_bfloat16():
    @ember.kernel
    def positive(x: Tensor[float32, 1], y: Tensor[bool_, 1], z: Tensor[bfloat16, 1]):
        for i in range(len(x)):
            y[i] = x[i] > 0.0
            z[i] = bfloat16(x[i])      # rounds to bfloat16, stored as 16 bits
    x = rng.standard_normal(23).astype(np.float32)
    y = np.empty(23, bool)
    z = np.empty(23, np.uint16)
    positive(x, y, z)
    assert (y == (x > 0)).all()
    back = (z.astype(np.uint32) << 16).view(np.float32)
    np.testing.assert_allclose(back, x, rtol=2 ** -8)


def test_int_meets_float_and_weak_literals():
    @ember.kernel
    def mean(x: Tensor[float32, 1]) -> float32:
        acc = 0.0
        for i in range(len(x)):
            acc += x[i]
        return acc / len(x)          # int64 length converts to float32
    x = rng.standard_normal(33).astype(np.float32)
    assert abs(mean(x) - x.mean()) < 1e-5


# ---------------------------------------------------------------------------- control flow
@ember.kernel
def odd_sum_until(x: Tensor[int64, 1], stop: int64) -> int64:
    total = 0
    for i in range(len(x)):
        if x[i] == stop:
            break
        if x[i] % 2 == 0:
            continue
        total += x[i]
    return total


def test_break_continue():
    for _ in range(10):
        x = rng.integers(0, 30, 40)
        want = 0
        for v in x:
            if v == 13:
                break
            if v % 2:
                want += v
        assert odd_sum_until(x, 13) == want


@ember.kernel
def reversed_copy(x: Tensor[float32, 1], y: Tensor[float32, 1]):
    j = 0
    for i in range(len(x) - 1, -1, -1):      # negative step
        y[j] = x[i]
        j += 1


def test_negative_step_and_short_circuit():
    x = rng.standard_normal(17).astype(np.float32)
    y = np.empty_like(x)
    reversed_copy(x, y)
    assert (y == x[::-1]).all()

    @ember.kernel
    def count_in_range(x: Tensor[float32, 1], n: int64) -> int64:
        c = 0
        for i in range(n + 5):
            if i < len(x) and x[i] > 0.0:     # x[i] is never read past the end
                c += 1
        return c
    assert count_in_range(x, len(x)) == int((x > 0).sum())


# ---------------------------------------------------------------------------- SIMD
@ember.kernel
def simd_ops(x: Tensor[float32, 1], y: Tensor[float32, 1], W: Param = 8):
    lane = SIMD[int64, W].iota()
    for i in range(0, len(x), W):
        m = lane + i < len(x)
        v = x.load[W](i, mask=m)
        r = v.shuffle(*(W - 1 - k for k in range(W)))           # reversed lanes
        w = select(v > 0.0, v * 2.0, -v) + fma(v, v, 1.0) - r + r
        y.store(i, w, mask=m)


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("W", [4, 8, 16])
def test_simd_masked_loads_stores(n, W):
    x = rng.standard_normal(n).astype(np.float32)
    y = np.full_like(x, np.nan)
    simd_ops(x, y, W=W)
    np.testing.assert_allclose(y, np.where(x > 0, 2 * x, -x) + (x * x + 1), rtol=1e-5, atol=1e-6)


def test_simd_reductions_lanes_shuffles():
    @ember.kernel
    def stats(x: Tensor[float32, 1], out: Tensor[float32, 1]):
        v = x.load[8](0)
        out[0] = v.reduce_add()
        out[1] = v.reduce_max()
        out[2] = v.reduce_min()
        out[3] = v.reduce_mul()
        v[3] = 100.0
        out[4] = v[3] + v[0]
        out[5] = shuffle(v, v * 2.0, (0, 8, 1, 9)).reduce_add()
        out[6] = float32(any(v > 50.0)) + float32(all(v > -1e9))
        out[7] = float32(v.width)
        bits = bitcast(v, int32)
        out[8] = bitcast(bits, float32)[1]
    x = rng.standard_normal(8).astype(np.float32)
    out = np.zeros(9, np.float32)
    stats(x, out)
    v = x.copy()
    ref = [x.sum(), x.max(), x.min(), np.prod(x)]
    v[3] = 100
    ref += [100 + v[0], v[0] + 2 * v[0] + v[1] + 2 * v[1], 2.0, 8.0, x[1]]
    np.testing.assert_allclose(out, ref, rtol=1e-5)


# ---------------------------------------------------------------------------- tensors
def test_strided_views_gather_and_subviews():
    @ember.kernel
    def col_sums(x: Tensor[float32, 2], out: Tensor[float32, 1]):
        for j in range(x.shape[1]):
            acc = 0.0
            for i in range(x.shape[0]):
                acc += x[i, j]
            out[j] = acc

    @ember.kernel
    def row_times(x: Tensor[float32, 2], out: Tensor[float32, 2]):
        for i in range(x.shape[0]):
            r = x[i]                       # a row view
            w = r[1:]                      # a window
            for j in range(len(w)):
                out[i, j] = w[j] * float32(x.strides[0] > 0)

    @ember.kernel
    def vec_rows(x: Tensor[float32, 2], out: Tensor[float32, 2]):
        for i in range(x.shape[0]):
            out.store(i, 0, x.load[4](i, 0) * 2.0)
    a = rng.standard_normal((9, 13)).astype(np.float32)
    out = np.empty(13, np.float32)
    col_sums(a, out)
    np.testing.assert_allclose(out, a.sum(0), rtol=1e-5)
    t = np.empty((13, 9), np.float32)
    col_sums(a.T, t[:, 0])                # transposed input, strided output: zero-copy views
    np.testing.assert_allclose(t[:9, 0], a.T.sum(0), rtol=1e-5)
    o2 = np.empty((9, 12), np.float32)
    row_times(a, o2)
    np.testing.assert_allclose(o2, a[:, 1:])
    o3 = np.zeros((13, 4), np.float32)
    vec_rows(np.ascontiguousarray(a.T)[:, ::2], o3)     # non-contiguous last axis: a gather
    np.testing.assert_allclose(o3, 2 * a.T[:, ::2][:, :4])


# ---------------------------------------------------------------------------- helpers
@ember.kernel
def vsum(x: Tensor[float32, 1], W: Param = 16) -> float32:
    acc = SIMD[float32, W](0.0)
    tail = 0.0

    def body(i, w):
        nonlocal acc, tail
        if w == 1:
            tail += x[i]
        else:
            acc += x.load[w](i)
    vectorize(body, len(x), W)
    return acc.reduce_add() + tail


@pytest.mark.parametrize("n", LENGTHS)
def test_vectorize_and_param_specialisations(n):
    x = rng.standard_normal(n).astype(np.float32)
    for W in (4, 16):
        assert abs(vsum(x, W=W) - x.sum()) < 1e-4
    before = len(vsum._specs)
    vsum(x, W=4)
    assert len(vsum._specs) == before           # same kinds: the cached specialisation


@ember.kernel
def tiled_scale(x: Tensor[float32, 1], y: Tensor[float32, 1]):
    def body(i, t):
        for k in unroll(t):
            y[i + k] = x[i + k] * float32(t)
    tile(body, 0, len(x), (8, 4, 1))


@pytest.mark.parametrize("n", [0, 3, 13, 30])
def test_tile_and_unroll(n):
    x = rng.standard_normal(n).astype(np.float32)
    y = np.empty_like(x)
    tiled_scale(x, y)
    k = np.arange(n)
    size = np.where(k < n // 8 * 8, 8, np.where(k < n // 8 * 8 + (n % 8) // 4 * 4, 4, 1))
    np.testing.assert_allclose(y, x * size)


def _square(v):                     # a plain Python helper: inlined too
    return v * v


@ember.kernel
def poly_rows(x: Tensor[float64, 2], y: Tensor[float64, 2], k: int64):
    def row(i):
        def f(v):
            return _square(v) + float64(k)
        for j in range(x.shape[1]):
            y[i, j] = f(x[i, j])
    parallelize(row, x.shape[0])


@pytest.mark.parametrize("threads", [1, 2])
def test_parallelize_helpers_threads(threads):
    x = rng.standard_normal((37, 11))
    y = np.empty_like(x)
    set_num_threads(threads)
    try:
        poly_rows(x, y, 3)
    finally:
        set_num_threads(None)
    np.testing.assert_allclose(y, x * x + 3)


def test_register_array_gemm_tile():
    @ember.kernel
    def outer(a: Tensor[float32, 1], b: Tensor[float32, 1], c: Tensor[float32, 2]):
        acc = [SIMD[float32, 8](0.0) for r in range(4)]
        bv = b.load[8](0)
        for r in unroll(4):
            acc[r] = fma(SIMD[float32, 8](a[r]), bv, acc[r])
        for r in unroll(4):
            c.store(r, 0, acc[r])
    a = rng.standard_normal(4).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    c = np.empty((4, 8), np.float32)
    outer(a, b, c)
    np.testing.assert_allclose(c, np.outer(a, b), rtol=1e-6)


# ---------------------------------------------------------------------------- math
@ember.kernel
def math_f64(x: float64) -> float64:
    return exp(x) * 0.25 + log(abs(x) + 1.0) + tanh(x) + erf(x) + sqrt(abs(x)) + rsqrt(abs(x) + 1.0) \
        + floor(x) + ceil(x) + min(x, 0.5) + max(x, -0.5)


@ember.kernel
def math_f32(x: float32) -> float32:
    return exp(x) * 0.25 + log(abs(x) + 1.0) + tanh(x) + erf(x) + sqrt(abs(x)) + rsqrt(abs(x) + 1.0) \
        + floor(x) + ceil(x) + min(x, 0.5) + max(x, -0.5)


def _math_ref(x):
    from math import erf as merf
    return (np.exp(x) * 0.25 + np.log(np.abs(x) + 1) + np.tanh(x) + np.vectorize(merf)(x) + np.sqrt(np.abs(x))
            + 1 / np.sqrt(np.abs(x) + 1) + np.floor(x) + np.ceil(x) + np.minimum(x, 0.5) + np.maximum(x, -0.5))


@pytest.mark.parametrize("n", [1, 17, 100])
def test_math_functions_elementwise_map(n):
    x = rng.standard_normal(n) * 3
    np.testing.assert_allclose(math_f64(x), _math_ref(x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(math_f32(x.astype(np.float32)), _math_ref(x.astype(np.float32).astype(np.float64)),
                               rtol=2e-5, atol=2e-5)
    assert abs(math_f64(0.3) - _math_ref(np.array([0.3]))[0]) < 1e-12     # scalar call


def test_fastmath_is_opt_in():
    @ember.kernel(fastmath=True)
    def dot(x: Tensor[float32, 1], y: Tensor[float32, 1]) -> float32:
        acc = 0.0
        for i in range(len(x)):
            acc += x[i] * y[i]
        return acc
    x, y = rng.standard_normal((2, 101)).astype(np.float32)
    assert abs(dot(x, y) - float(x.astype(np.float64) @ y)) < 1e-3
    assert "fast" in dot.llvm_ir(x, y)
    assert " fast " not in axpb.llvm_ir(x, y, 1.0, 2.0)


# ---------------------------------------------------------------------------- errors
def _line_of(fn, text):
    lines, first = inspect.getsourcelines(fn)
    for k, line in enumerate(lines):
        if text in line:
            return first + k, line.index(text) + 1
    raise AssertionError(text)


def _error(kern, *args):
    with pytest.raises(KernelError) as e:
        kern(*args)
    return str(e.value)


def test_type_error_has_location_and_caret():
    @ember.kernel
    def bad(x: Tensor[float32, 1], y: float64) -> float32:
        return x[0] + y
    msg = _error(bad, np.zeros(2, np.float32), 1.0)
    line, col = _line_of(bad.fn, "x[0] + y")
    assert msg.splitlines()[0] == (f"{__file__}:{line}:{col}: type mismatch in '+': float32 and float64 "
                                   "(cast one side, e.g. float32(...))")
    assert msg.splitlines()[1].strip() == "return x[0] + y"
    assert msg.splitlines()[2].index("^") == msg.splitlines()[1].index("x[0]")


@pytest.mark.parametrize("src, needle, wording", [
    ("int_div", "a // 1 / b", "'/' on int64 values: use // for integer division"),
    ("unsupported", "lambda", "unsupported Python construct: Lambda"),
    ("undefined", "nope", "name 'nope' is not defined"),
    ("vector_if", "if v > 0.0", "condition is a vector of lanes"),
    ("store_dtype", "y[0] = 1.5", "float literal 1.5 used with a int32 value"),
    ("race", "total = total", "cannot assign 'total' inside a parallelize body"),
])
def test_error_messages(src, needle, wording):
    kern = ERROR_KERNELS[src]
    msg = _error(kern, *ERROR_ARGS.get(src, (np.zeros(4, np.int32),)))
    line, col = _line_of(kern.fn, needle)
    assert msg.startswith(f"{__file__}:{line}:"), msg
    assert wording in msg.splitlines()[0], msg


def _k_int_div(y: Tensor[int32, 1], a: int64 = 3, b: int64 = 2) -> int64:
    return a // 1 / b


def _k_unsupported(y: Tensor[int32, 1]):
    f = lambda v: v  # noqa: E731
    y[0] = f(1)


def _k_undefined(y: Tensor[int32, 1]):
    y[0] = nope  # noqa: F821


def _k_vector_if(y: Tensor[int32, 1]):
    v = SIMD[float32, 4](1.0)
    if v > 0.0:
        y[0] = 1


def _k_store_dtype(y: Tensor[int32, 1]):
    y[0] = 1.5


def _k_race(y: Tensor[int32, 1]):
    total = 0

    def body(i):
        nonlocal total
        total = total + i
    parallelize(body, 4)
    y[0] = int32(total)


ERROR_KERNELS = {}
for _name in ("int_div", "unsupported", "undefined", "vector_if", "store_dtype", "race"):
    ERROR_KERNELS[_name] = ember.kernel(globals()[f"_k_{_name}"])
ERROR_ARGS = {}


def test_wrong_arguments_at_call_time():
    with pytest.raises(InvalidInputError, match="argument 'x' must be a float32 array of rank 1, got float64"):
        axpb(np.zeros(3), np.zeros(3, np.float32), 1.0, 2.0)
    with pytest.raises(InvalidInputError, match="missing a required argument"):
        axpb(np.zeros(3, np.float32))
