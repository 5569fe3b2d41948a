"""Helpers and specialisation: vectorize, parallelize (1 and 2 threads, nested, reading the
enclosing variables), tile, unroll, register arrays, local defs (defaults, keywords, nonlocal),
calls to other kernels and to plain Python functions, closures, Param specialisations and
their cache, fastmath."""
import numpy as np
import pytest

from ember.lang import (SIMD, Param, Tensor, float32, float64, get_num_threads, int32, int64, kernel,
                        parallelize, set_num_threads, tile, unroll, vectorize)

from .helpers import LENGTHS, random_array


@pytest.fixture
def threads():
    """Run with a given number of threads, restoring the default afterwards."""
    def use(n):
        set_num_threads(n)
        assert get_num_threads() == n
    yield use
    set_num_threads(None)


# ------------------------------------------------------------------------------ vectorize
@kernel
def vsum(x: Tensor[float32, 1], W: Param = 16) -> float32:
    acc = SIMD[float32, W](0.0)
    tail = 0.0

    def body(i, w):
        nonlocal acc, tail
        if w == 1:                    # compile-time: the tail specialisation
            tail += x[i]
        else:
            acc += x.load[w](i)
    vectorize(body, len(x), W)
    return acc.reduce_add() + tail


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("W", [4, 8, 16])
def test_vectorize_main_loop_and_tail(n, W):
    x = random_array(np.float32, n, seed=n)
    np.testing.assert_allclose(vsum(x, W=W), x.astype(np.float64).sum(), rtol=1e-5, atol=1e-4)


@kernel
def visits(out: Tensor[int64, 1], n: int64, W: Param = 8):
    def body(i, w):
        for k in range(w):
            out[i + k] = out[i + k] * 100 + w
    vectorize(body, n, W)


@pytest.mark.parametrize("n", LENGTHS)
def test_vectorize_visits_every_index_once(n):
    out = np.ones(n, np.int64)
    visits(out, n, W=8)
    want = np.where(np.arange(n) < n // 8 * 8, 108, 101)
    np.testing.assert_array_equal(out, want)


# ------------------------------------------------------------------------------ parallelize
@kernel
def row_stats(x: Tensor[float64, 2], out: Tensor[float64, 2], shift: float64):
    scale = 2.0                       # an enclosing local, read by the body
    offsets = [shift * float64(k) for k in range(2)]

    def row(i):
        acc = 0.0                     # the body's own locals
        big = -1e300
        for j in range(x.shape[1]):
            acc += x[i, j]
            big = max(big, x[i, j])
        out[i, 0] = acc * scale + offsets[1]
        out[i, 1] = big
    parallelize(row, x.shape[0])


@pytest.mark.parametrize("nthreads", [1, 2])
@pytest.mark.parametrize("rows", [0, 1, 7, 100])
def test_parallelize_rows(threads, nthreads, rows):
    threads(nthreads)
    x = random_array(np.float64, (rows, 13), seed=rows)
    out = np.zeros((rows, 2))
    row_stats(x, out, 0.25)
    acc = np.zeros(rows)
    for j in range(13):
        acc = acc + x[:, j]
    np.testing.assert_array_equal(out[:, 0], acc * 2 + 0.25)
    np.testing.assert_array_equal(out[:, 1], x.max(1) if rows else np.zeros(0))


@kernel
def grid(out: Tensor[int64, 2], base: int64):
    def row(i):
        def col(j):
            out[i, j] = base + i * 1000 + j
        parallelize(col, out.shape[1])          # nested: runs inside the outer body
    parallelize(row, out.shape[0])


@kernel
def collapsed(out: Tensor[int64, 2]):
    def row(i):
        for j in range(out.shape[1]):           # an inner loop the pool may split too
            out[i, j] = i * 1000 + j
    parallelize(row, out.shape[0])


@pytest.mark.parametrize("nthreads", [1, 2])
@pytest.mark.parametrize("shape", [(0, 5), (1, 1), (17, 9), (3, 100)])
def test_nested_and_collapsed_parallel_loops(threads, nthreads, shape):
    threads(nthreads)
    want = np.arange(shape[0])[:, None] * 1000 + np.arange(shape[1])
    out = np.full(shape, -1, np.int64)
    grid(out, 7)
    np.testing.assert_array_equal(out, want + 7)
    out = np.full(shape, -1, np.int64)
    collapsed(out)
    np.testing.assert_array_equal(out, want)


@kernel
def histogram_rows(x: Tensor[int32, 2], counts: Tensor[int32, 2], W: Param = 8):
    def row(i):
        def chunk(j, w):
            v = x.load[w](i, j)
            for k in unroll(w):
                counts[i, (v[k] if w > 1 else v) % 4] += 1
        vectorize(chunk, x.shape[1], W)
    parallelize(row, x.shape[0])


@pytest.mark.parametrize("nthreads", [1, 2])
def test_parallel_vectorized_rows(threads, nthreads):
    threads(nthreads)
    x = random_array(np.int32, (33, 27), seed=nthreads, lo=0, hi=1000)
    counts = np.zeros((33, 4), np.int32)
    histogram_rows(x, counts)
    want = np.stack([np.bincount(r % 4, minlength=4) for r in x])
    np.testing.assert_array_equal(counts, want)


# ------------------------------------------------------------------------------ tile / unroll
@kernel
def tiled(x: Tensor[int64, 1], start: int64):
    def body(i, t):
        for k in unroll(t):
            x[i + k] = t * 100 + k
    tile(body, start, len(x), (16, 5, 1))


def _tiled(n, start):
    out = [-1] * min(start, n)
    i = start
    for t in (16, 5, 1):
        while i + t <= n:
            out += [t * 100 + k for k in range(t)]
            i += t
    return out


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("start", [0, 3])
def test_tile_covers_with_the_largest_tiles(n, start):
    x = np.full(n, -1, np.int64)
    tiled(x, min(start, n))
    assert x.tolist() == _tiled(n, min(start, n))


@kernel
def poly(x: Tensor[float64, 1], y: Tensor[float64, 1], coeffs: Param = (1.0, -2.0, 0.5)):
    for i in range(len(x)):
        acc = 0.0
        for k in unroll(len(coeffs)):          # Horner with compile-time coefficients
            acc = acc * x[i] + coeffs[k]
        y[i] = acc


@pytest.mark.parametrize("coeffs", [(1.0, -2.0, 0.5), (3.0,), (0.25, 0.0, -1.0, 2.0, 7.0)])
def test_unroll_over_compile_time_tuples(coeffs):
    x = random_array(np.float64, 17, seed=len(coeffs))
    y = np.zeros(17)
    poly(x, y, coeffs=coeffs)
    want = np.zeros(17)
    for c in coeffs:
        want = want * x + c
    np.testing.assert_array_equal(y, want)


@kernel
def register_rows(x: Tensor[float32, 2], out: Tensor[float32, 1]):
    acc = [0.0 * x[0, 0] for r in range(4)]        # a register array (float32 elements)
    for j in range(x.shape[1]):
        for r in unroll(4):
            acc[r] += x[r, j]
    acc[3] = acc[3] * 2.0
    for r in unroll(1, 4, 2):                         # unroll with start and step
        out[r] = acc[r]
    out[0] = acc[0] + acc[2]


def test_register_arrays_with_unroll():
    x = random_array(np.float32, (4, 29), seed=2)
    out = np.zeros(4, np.float32)
    register_rows(x, out)
    sums = np.zeros(4, np.float32)
    for j in range(29):
        sums = sums + x[:, j]
    np.testing.assert_array_equal(out, [sums[0] + sums[2], sums[1], 0, sums[3] * 2])


# ------------------------------------------------------------------------------ inlining
def square(v):                                  # a plain Python function: inlined
    return v * v


@kernel
def cube(v: float64) -> float64:               # another kernel: inlined too
    return v * square(v)


@kernel
def clamp_index(i: int64, n: int64) -> int64:   # a kernel with early returns
    if i < 0:
        return 0
    if i >= n:
        return n - 1
    return i


@kernel
def helpers(x: Tensor[float64, 1], y: Tensor[float64, 1], idx: Tensor[int64, 1], c: float64) -> int64:
    calls = 0

    def f(v, scale=2.0, *, bias=0.0):           # defaults and keyword-only parameters
        nonlocal calls
        calls += 1
        return cube(v) + square(v) * scale + c + bias

    for i in range(len(x)):
        y[i] = f(x[i]) + f(x[i], scale=0.5) + f(x[clamp_index(idx[i], len(x))], bias=1.0)
    return calls


@pytest.mark.parametrize("n", LENGTHS)
def test_local_defs_kernels_and_python_functions_inline(n):
    x = random_array(np.float64, n, seed=n)
    idx = random_array(np.int64, n, seed=n + 1, lo=-5, hi=n + 5)
    y = np.zeros(n)
    calls = helpers(x, y, idx, 1.5)
    assert calls == 3 * n

    def f(v, scale=2.0, bias=0.0):
        return v * (v * v) + v * v * scale + 1.5 + bias
    want = f(x) + f(x, scale=0.5) + f(x[np.clip(idx, 0, max(n - 1, 0))] if n else x, bias=1.0)
    np.testing.assert_allclose(y, want, rtol=1e-14)
    assert cube(1.5) == 3.375 and clamp_index(-3, 5) == 0 and clamp_index(9, 5) == 4


@kernel
def apply_twice(x: Tensor[int64, 1]):
    def twice(fn, v):                            # a helper passed to a helper
        return fn(fn(v))

    def inc(v):
        return v + 3

    for i in range(len(x)):
        x[i] = twice(inc, x[i]) + twice(lambda_free_double, x[i])


def lambda_free_double(v):
    return v * 2


def test_functions_as_arguments():
    x = random_array(np.int64, 9, seed=1, lo=-100, hi=100)
    want = (x + 6) + 4 * x
    apply_twice(x)
    np.testing.assert_array_equal(x, want)


def _make_scaler(factor, W):
    @kernel
    def scaler(x: Tensor[float32, 1]):           # closure variables are compile-time constants
        def body(i, w):
            x.store(i, x.load[w](i) * factor)
        vectorize(body, len(x), W)
    return scaler


@pytest.mark.parametrize("n", [0, 7, 33])
def test_closures(n):
    for factor, W in ((2.0, 4), (-0.5, 16)):
        x = random_array(np.float32, n, seed=n)
        want = x * np.float32(factor)
        _make_scaler(factor, W)(x)
        np.testing.assert_array_equal(x, want)


# ------------------------------------------------------------------------------ specialisation
@kernel
def blocked_sum(x: Tensor[float32, 1], W: Param = 4, scale: Param = 1.0) -> float32:
    acc = SIMD[float32, W](0.0)
    for i in range(0, len(x) - W + 1, W):
        acc += x.load[W](i)
    rest = 0.0
    for i in range(len(x) // W * W, len(x)):
        rest += x[i]
    return (acc.reduce_add() + rest) * scale


def test_param_values_compile_their_own_specialisations():
    blocked_sum._specs.clear()
    x = random_array(np.float32, 64, seed=3)
    blocked_sum(x)
    assert len(blocked_sum._specs) == 1
    blocked_sum(x)
    blocked_sum(x, 4)
    blocked_sum(x, W=4, scale=1.0)
    blocked_sum(random_array(np.float32, 17, seed=4))       # other sizes: the same code
    assert len(blocked_sum._specs) == 1                       # the same arguments reuse it
    blocked_sum(x, W=8)
    assert len(blocked_sum._specs) == 2                       # a new Param value compiles
    r = blocked_sum(x, 8, 2.0)
    assert len(blocked_sum._specs) == 3
    np.testing.assert_allclose(r, 2 * x.astype(np.float64).sum(), rtol=1e-5)
    blocked_sum(x[::2], 8, 2.0)                               # a strided tensor: another kind
    assert len(blocked_sum._specs) == 4
    blocked_sum(x[::2], 8, 2.0)
    assert len(blocked_sum._specs) == 4


@kernel
def typed_by_value(x, s) -> float64:
    return float64(x[0]) * float64(s)


def test_unannotated_argument_kinds_select_specialisations():
    typed_by_value._specs.clear()
    typed_by_value(np.ones(3, np.float32), 2)
    typed_by_value(np.ones(3, np.float32), 3)
    assert len(typed_by_value._specs) == 1
    typed_by_value(np.ones(3, np.float64), 3)
    typed_by_value(np.ones(3, np.float32), 3.0)
    typed_by_value(np.ones(3, np.float32), np.int8(3))
    assert len(typed_by_value._specs) == 4
    assert typed_by_value(np.full(3, 1.5, np.float32), np.int8(-3)) == -4.5


@kernel(fastmath=True)
def fast_dot(x: Tensor[float32, 1], y: Tensor[float32, 1]) -> float32:
    acc = 0.0
    for i in range(len(x)):
        acc += x[i] * y[i]
    return acc


@kernel
def exact_dot(x: Tensor[float32, 1], y: Tensor[float32, 1]) -> float32:
    acc = 0.0
    for i in range(len(x)):
        acc += x[i] * y[i]
    return acc


@pytest.mark.parametrize("n", LENGTHS)
def test_fastmath_is_opt_in(n):
    x, y = random_array(np.float32, n, seed=n), random_array(np.float32, n, seed=n + 1)
    want = np.float32(0)
    for a, b in zip(x, y):
        want = np.float32(want + a * b)
    assert exact_dot(x, y) == want                      # IEEE, in order: bit-identical
    np.testing.assert_allclose(fast_dot(x, y), x.astype(np.float64) @ y, rtol=1e-4, atol=1e-3)
    assert " fast " in fast_dot.llvm_ir(x, y) and " fast " not in exact_dot.llvm_ir(x, y)
    assert "for" in exact_dot.loop_ir(x, y)
