"""Control flow against pure Python: range loops (any compile-time step, run-time bounds),
while, if/elif/else, break/continue, early returns (from kernels and helpers, out of nested
loops), short-circuit and/or, not, truthiness, chained comparisons, conditional expressions
and tuple assignment."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ember.lang import SIMD, Tensor, bool_, float32, float64, int32, int64, kernel, select, unroll

from .helpers import LENGTHS, random_array


@kernel
def ranges(a: int64, b: int64, out: Tensor[int64, 1]) -> int64:
    k = 0
    for i in range(b):
        out[k] = i
        k += 1
    for i in range(a, b):
        out[k] = i
        k += 1
    for i in range(a, b, 3):
        out[k] = i
        k += 1
    for i in range(b, a, -1):
        out[k] = i
        k += 1
    for i in range(b, a, -4):
        out[k] = i
        k += 1
    return k


@given(st.integers(-20, 30), st.integers(-20, 30))
@settings(max_examples=25, deadline=None)
def test_range_loops_with_any_step(a, b):
    out = np.zeros(200, np.int64)
    k = ranges(a, b, out)
    want = [*range(b), *range(a, b), *range(a, b, 3), *range(b, a, -1), *range(b, a, -4)]
    assert out[:k].tolist() == want


@kernel
def collatz(n: int64, limit: int64) -> int64:
    steps = 0
    while n != 1:
        if steps >= limit:
            return -1
        elif n % 2 == 0:
            n //= 2
        else:
            n = 3 * n + 1
        steps += 1
    return steps


def _collatz(n, limit):
    steps = 0
    while n != 1:
        if steps >= limit:
            return -1
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


@given(st.integers(1, 10**9), st.integers(0, 300))
@settings(max_examples=25, deadline=None)
def test_while_with_elif_and_early_return(n, limit):
    assert collatz(n, limit) == _collatz(n, limit)


@pytest.mark.parametrize("shape", [(0,), (7,), (3, 11), (40000,)])
def test_elementwise_kernels_with_loops_map_over_arrays(shape):
    # no single expression: the map runs the function's statements element by element
    n = random_array(np.int64, shape, seed=len(shape), lo=1, hi=1000)
    limit = random_array(np.int64, shape, seed=5, lo=0, hi=150)
    got = collatz(n, limit)
    assert got.shape == shape and got.dtype == np.int64
    want = np.array([_collatz(a, b) for a, b in zip(n.ravel().tolist(), limit.ravel().tolist())], np.int64)
    np.testing.assert_array_equal(got.ravel(), want)
    np.testing.assert_array_equal(collatz(n, 1000).ravel(), [_collatz(a, 1000) for a in n.ravel().tolist()])


@kernel
def scan(x: Tensor[int64, 2], stop: int64) -> int64:
    total = 0
    for i in range(x.shape[0]):
        j = 0
        while True:
            if j >= x.shape[1]:
                break
            v = x[i, j]
            j += 1
            if v < 0:
                continue
            if v == stop:
                return -total            # leaves both loops
            if v > 50:
                break                    # leaves the inner loop only
            total += v
    return total


def _scan(x, stop):
    total = 0
    for row in x.tolist():
        for v in row:
            if v < 0:
                continue
            if v == stop:
                return -total
            if v > 50:
                break
            total += v
    return total


@pytest.mark.parametrize("seed", range(8))
def test_nested_loops_break_continue_return(seed):
    x = random_array(np.int64, (1 + seed, 3 + 2 * seed), seed=seed, lo=-20, hi=100)
    for stop in (-5, 99, int(x.flat[len(x.flat) // 2])):
        assert scan(x, stop) == _scan(x, stop)


@kernel
def first_index(x: Tensor[float32, 1], t: float32) -> int64:
    def find(v):                      # a helper with returns inside a loop
        for i in range(len(x)):
            if x[i] > v:
                return i
        return -1
    a = find(t)
    b = find(t + 1.0)
    return a * 1000 + b if b >= 0 else a


@pytest.mark.parametrize("n", LENGTHS)
def test_early_return_from_helpers(n):
    x = random_array(np.float32, n, seed=n)
    for t in (-1.0, 0.0, 0.5, 2.0, 100.0):
        idx = [int(np.argmax(x > v)) if (x > v).any() else -1 for v in (t, np.float32(t) + 1)]
        assert first_index(x, t) == (idx[0] * 1000 + idx[1] if idx[1] >= 0 else idx[0])


@kernel
def logic(a: int64, b: int64, c: float64, x: Tensor[int64, 1]) -> int64:
    r = 0
    if a and b:
        r += 1
    if a or b:
        r += 2
    if not a:
        r += 4
    if a > 0 and b > 0 or c > 0.0:
        r += 8
    if c:                                   # a float is true when non-zero
        r += 16
    if 0 <= a < len(x) and x[a] > 0:       # chained; x[a] is only read when a is in range
        r += 32
    if a < 0 or x[a] == 0 or a > 100:      # a short-circuit `or`: a is small when x[a] is read
        r += 64
    return r


def _logic(a, b, c, x):
    r = 0
    r += 1 if (a and b) else 0
    r += 2 if (a or b) else 0
    r += 4 if not a else 0
    r += 8 if (a > 0 and b > 0 or c > 0) else 0
    r += 16 if c else 0
    r += 32 if (0 <= a < len(x) and x[a] > 0) else 0
    r += 64 if (a < 0 or x[a] == 0 or a > 100) else 0
    return r


@given(st.integers(-3, 8), st.integers(-2, 2), st.sampled_from([0.0, -0.0, 1.5, -2.0]))
@settings(max_examples=25, deadline=None)
def test_and_or_not_short_circuit(a, b, c):
    x = np.array([0, 3, -1, 0, 7, 2, 0, 1, 5], np.int64)
    assert logic(a, b, c, x) == _logic(a, b, c, x.tolist())


@kernel
def classify(x: Tensor[float64, 1], out: Tensor[int32, 1]):
    for i in range(len(x)):
        v = x[i]
        if v < -1.0:
            out[i] = -2
        elif v < 0.0:
            out[i] = -1
        elif v == 0.0:
            out[i] = 0
        elif v <= 1.0:
            out[i] = 1
        else:
            out[i] = 2


@pytest.mark.parametrize("n", LENGTHS)
def test_if_elif_else_chain(n):
    x = random_array(np.float64, n, seed=n) / 5
    if n > 2:
        x[:3] = [0.0, 1.0, -1.0]
    out = np.zeros(n, np.int32)
    classify(x, out)
    np.testing.assert_array_equal(out, np.select([x < -1, x < 0, x == 0, x <= 1], [-2, -1, 0, 1], 2))


@kernel
def conditional_exprs(x: Tensor[float32, 1], y: Tensor[float32, 1]):
    for i in range(len(x)):
        y[i] = x[i] if x[i] > 0.0 else -2.0 * x[i]
    if len(x) >= 8:
        v = x.load[8](0)
        y.store(0, v * 3.0 if v > 0.0 else v)       # on a vector condition: a lane-wise select


@pytest.mark.parametrize("n", LENGTHS)
def test_conditional_expressions(n):
    x = random_array(np.float32, n, seed=n)
    y = np.zeros(n, np.float32)
    conditional_exprs(x, y)
    want = np.where(x > 0, x, np.float32(-2) * x)
    if n >= 8:
        want[:8] = np.where(x[:8] > 0, x[:8] * np.float32(3), x[:8])
    np.testing.assert_array_equal(y, want)


@kernel
def fib_pairs(n: int64) -> int64:
    a, b = 0, 1
    for i in range(n):
        a, b = b, a + b        # both right-hand sides are read before assigning
    return a


def test_tuple_assignment_swaps():
    a, b = 0, 1
    for n in range(40):
        assert fib_pairs(n) == a
        a, b = b, a + b


@kernel
def countdown(x: Tensor[int64, 1], out: Tensor[int64, 1]) -> int64:
    k = 0
    for j in unroll(3):
        i = len(x) - 1
        while i >= 0:                 # a break here leaves the while, not the unrolled loop
            if x[i] == j:
                break
            i -= 1
        out[k] = i
        k += 1
    return k


def test_while_inside_unroll_may_break():
    x = np.array([2, 0, 1, 0, 5, 2], np.int64)
    out = np.zeros(3, np.int64)
    assert countdown(x, out) == 3
    assert out.tolist() == [3, 2, 5]


@kernel
def until_converged(x: Tensor[float32, 1]) -> int32:
    n = int32(0)
    if len(x) < 4:
        return -1                      # an early bare exit with a value
    v = x.load[4](0)
    while any(v > 1.0):                # a vector reduced to one condition
        v = v * 0.5
        n += 1
    return n


@pytest.mark.parametrize("seed", range(5))
def test_while_on_a_reduced_vector_condition(seed):
    x = np.abs(random_array(np.float32, 4, seed=seed)) * 100
    want = 0
    v = x.copy()
    while (v > 1).any():
        v = v * np.float32(0.5)
        want += 1
    assert until_converged(x) == want
    assert until_converged(x[:3]) == -1


@kernel
def maybe_fill(x: Tensor[int64, 1], v: int64):
    if len(x) == 0:
        return                        # a bare return
    for i in range(len(x)):
        if x[i] != 0:
            continue
        x[i] = v


@pytest.mark.parametrize("n", LENGTHS)
def test_bare_return_and_continue(n):
    x = random_array(np.int64, n, seed=n, lo=0, hi=3)
    want = np.where(x == 0, 42, x)
    maybe_fill(x, 42)
    np.testing.assert_array_equal(x, want)


@kernel
def sign_flags(a: int64, b: float64) -> bool_:
    return (a < 0) != (b < 0.0) and not (a == 0 or b == 0.0)


@given(st.integers(-5, 5), st.floats(-5, 5))
@settings(max_examples=20, deadline=None)
def test_boolean_returns(a, b):
    assert sign_flags(a, b) == ((a < 0) != (b < 0) and not (a == 0 or b == 0))


@kernel
def vector_mask_logic(x: Tensor[float32, 1], out: Tensor[int32, 1]):
    v = x.load[8](0)
    m = (v > 0.0) & (v < 1.0) | (v == 2.0)
    out.store(0, select_ints(m))
    out.store(8, select_ints(~m))
    out.store(16, select_ints(not (v > 0.5)))
    out.store(24, select_ints(m ^ (v < 0.0)))


def select_ints(m):                  # a plain Python helper, inlined
    return select(m, SIMD[int32, 8](1), SIMD[int32, 8](0))


def test_vector_masks_combine():
    x = random_array(np.float32, 8, seed=4)
    x[0], x[1] = 2.0, 0.5
    out = np.zeros(32, np.int32)
    vector_mask_logic(x, out)
    m = ((x > 0) & (x < 1)) | (x == 2)
    np.testing.assert_array_equal(out, np.concatenate([m, ~m, ~(x > 0.5), m ^ (x < 0)]).astype(np.int32))
