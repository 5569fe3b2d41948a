"""Every scalar type of the kernel language against numpy on random data: integer wrap-around,
Python's // and %, shifts, comparisons, float rounding, bfloat16 storage, bool, scalar
arguments and return values, casts, bitcasts and the typing rules (int meets float, literals
adapt, weak locals, compile-time constants)."""
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ember.lang import (SIMD, Param, Tensor, bfloat16, bitcast, bool_, float16, float32, float64, int8,
                        int16, int32, int64, kernel, select, uint8, uint16, uint32, uint64, unroll)
from ember.lang.types import DTYPES

from .helpers import FLOAT_NAMES, INT_NAMES, LENGTHS, kernel_error, random_array

# ------------------------------------------------------------------------------ integers


def _int_kernel(dt):
    @kernel
    def int_ops(x: Tensor[dt, 1], y: Tensor[dt, 1], sh: Tensor[dt, 1], out: Tensor[dt, 2],
                cmp: Tensor[bool_, 2], s: dt) -> dt:
        acc = dt(0)
        for i in range(len(x)):
            a = x[i]
            b = y[i]
            out[0, i] = a + b
            out[1, i] = a - b
            out[2, i] = a * b
            out[3, i] = a // b
            out[4, i] = a % b
            out[5, i] = a & b
            out[6, i] = a | b
            out[7, i] = a ^ b
            out[8, i] = ~a
            out[9, i] = a << sh[i]
            out[10, i] = a >> sh[i]
            out[11, i] = min(a, b)
            out[12, i] = max(a, b)
            out[13, i] = a * s + 3          # the literal takes a's type
            out[14, i] = -a
            out[15, i] = a ** 3
            cmp[0, i] = a < b
            cmp[1, i] = a <= b
            cmp[2, i] = a > b
            cmp[3, i] = a >= b
            cmp[4, i] = a == b
            cmp[5, i] = a != b
            acc += a
        return acc ^ s
    return int_ops


INT_KERNELS = {name: _int_kernel(DTYPES[name]) for name in INT_NAMES}


def _int_reference(x, y, sh, s):
    t = x.dtype.type
    with np.errstate(all="ignore"):
        out = [x + y, x - y, x * y, x // y, x % y, x & y, x | y, x ^ y, ~x, x << sh, x >> sh,
               np.minimum(x, y), np.maximum(x, y), x * t(s) + t(3), -x, x * x * x]
        acc = np.add.reduce(x, dtype=x.dtype) ^ t(s)
    cmp = [x < y, x <= y, x > y, x >= y, x == y, x != y]
    return out, cmp, acc


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("name", INT_NAMES)
def test_integer_arithmetic_wraps_like_numpy(name, n):
    dt = np.dtype(name)
    bits = dt.itemsize * 8
    x = random_array(dt, n, seed=n)
    y = random_array(dt, n, seed=n + 1, nonzero=True)
    if n > 3:
        y[:2] = 1 if dt.kind == "u" else -1                 # INT_MIN // -1 must not trap
        x[2] = y[3]                                          # some equal pairs
    sh = random_array(dt, n, seed=n + 2, lo=0, hi=bits - 1)
    s = random_array(dt, 1, seed=n + 3)[0]
    out = np.zeros((16, n), dt)
    cmp = np.zeros((6, n), bool)
    r = INT_KERNELS[name](x, y, sh, out, cmp, s)
    ref_out, ref_cmp, ref_acc = _int_reference(x, y, sh, s)
    for k, want in enumerate(ref_out):
        np.testing.assert_array_equal(out[k], want, err_msg=f"row {k}")
    for k, want in enumerate(ref_cmp):
        np.testing.assert_array_equal(cmp[k], want, err_msg=f"comparison {k}")
    assert type(r) is dt.type and r == ref_acc


@given(st.lists(st.integers(-2**31, 2**31 - 1), min_size=1, max_size=30),
       st.lists(st.integers(-2**31, 2**31 - 1).filter(bool), min_size=1, max_size=30))
@settings(max_examples=20, deadline=None)
def test_int32_floor_division_and_modulo_follow_python(xs, ys):
    n = min(len(xs), len(ys))
    x, y = np.array(xs[:n], np.int32), np.array(ys[:n], np.int32)
    out = np.zeros((16, n), np.int32)
    INT_KERNELS["int32"](x, y, np.zeros(n, np.int32), out, np.zeros((6, n), bool), np.int32(1))
    for a, b, q, r in zip(xs, ys, out[3], out[4]):
        if (a, b) != (-2**31, -1):                       # the one quotient int32 cannot hold
            assert (q, r) == (a // b, a % b)


# ------------------------------------------------------------------------------ floats
def _float_kernel(dt):
    @kernel
    def float_ops(x: Tensor[dt, 1], y: Tensor[dt, 1], out: Tensor[dt, 2], cmp: Tensor[bool_, 2],
                  s: dt) -> dt:
        acc = 0.0
        for i in range(len(x)):
            a = x[i]
            b = y[i]
            out[0, i] = a + b
            out[1, i] = a - b
            out[2, i] = a * b
            out[3, i] = a / b
            out[4, i] = a // b
            out[5, i] = a % b
            out[6, i] = a ** 2
            out[7, i] = -a
            out[8, i] = abs(a)
            out[9, i] = min(a, b)
            out[10, i] = max(a, b)
            out[11, i] = a * 0.5 + s
            cmp[0, i] = a < b
            cmp[1, i] = a <= b
            cmp[2, i] = a > b
            cmp[3, i] = a >= b
            cmp[4, i] = a == b
            cmp[5, i] = a != b
            acc += a * s
        return acc
    return float_ops


FLOAT_KERNELS = {name: _float_kernel(DTYPES[name]) for name in FLOAT_NAMES}


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("name", FLOAT_NAMES)
def test_float_arithmetic_matches_numpy(name, n):
    dt = np.dtype(name)
    t = dt.type
    x = random_array(dt, n, seed=10 + n)
    y = random_array(dt, n, seed=20 + n, nonzero=True)
    if n > 2:
        x[0], y[0] = 1.0, 0.1            # 1.0 // 0.1 is 9.0 in Python (not floor(10.0))
        x[1] = y[1]
    s = t(random_array(dt, 1, seed=n)[0])
    out = np.zeros((12, n), dt)
    cmp = np.zeros((6, n), bool)
    r = FLOAT_KERNELS[name](x, y, out, cmp, s)
    ref = [x + y, x - y, x * y, x / y, x // y, x % y, x * x, -x, np.abs(x), np.minimum(x, y),
           np.maximum(x, y), x * t(0.5) + s]
    for k, want in enumerate(ref):
        # IEEE operations round the same way; float16 is computed through float32 in both
        np.testing.assert_allclose(out[k], want, rtol=1e-3 if name == "float16" else 0,
                                   atol=1e-3 if name == "float16" else 0, err_msg=f"row {k}")
    for k, want in enumerate([x < y, x <= y, x > y, x >= y, x == y, x != y]):
        np.testing.assert_array_equal(cmp[k], want)
    acc = t(0)
    for v in x:                          # the kernel's order of summation
        acc = t(acc + v * s)
    assert type(r) is t
    np.testing.assert_allclose(r, acc, rtol=1e-2 if name == "float16" else 1e-12)


def test_python_float_floor_division_examples():
    x = np.array([1.0, -1.0, 0.7, 5.0, -5.5, 5.5, 7.0], np.float64)
    y = np.array([0.1, 0.1, 0.1, -2.5, 2.0, -2.0, 7.0], np.float64)
    out = np.zeros((12, 7))
    FLOAT_KERNELS["float64"](x, y, out, np.zeros((6, 7), bool), 1.0)
    assert out[4].tolist() == [a // b for a, b in zip(x.tolist(), y.tolist())]
    assert out[5].tolist() == [a % b for a, b in zip(x.tolist(), y.tolist())]


# ------------------------------------------------------------------------------ bfloat16, bool
@kernel
def bf16_ops(x: Tensor[bfloat16, 1], y: Tensor[bfloat16, 1], z: Tensor[bfloat16, 1],
             f: Tensor[float32, 1], s: bfloat16):
    for i in range(len(x)):
        z[i] = x[i] * y[i] + s                  # computed in float32, rounded once by the store
        f[i] = bfloat16(x[i] / y[i])            # the cast rounds; the value stays a float32


@pytest.mark.parametrize("n", LENGTHS)
def test_bfloat16_storage_rounds_to_nearest_even(n):
    bf = ml_dtypes.bfloat16
    x = random_array(np.float32, n, seed=n).astype(bf)
    y = random_array(np.float32, n, seed=n + 7, nonzero=True).astype(bf)
    z = np.zeros(n, bf)
    f = np.zeros(n, np.float32)
    bf16_ops(x, y, z, f, 0.375)
    xf, yf = x.astype(np.float32), y.astype(np.float32)
    np.testing.assert_array_equal(z, (xf * yf + np.float32(0.375)).astype(bf))
    np.testing.assert_array_equal(f, (xf / yf).astype(bf).astype(np.float32))
    z16 = np.zeros(n, np.uint16)                # raw uint16 arrays hold bfloat16 bits too
    bf16_ops(x.view(np.uint16), y.view(np.uint16), z16, f, 0.375)
    np.testing.assert_array_equal(z16, z.view(np.uint16))


@kernel
def bool_ops(a: Tensor[bool_, 1], b: Tensor[bool_, 1], out: Tensor[bool_, 2], k: bool_) -> int32:
    count = int32(0)
    for i in range(len(a)):
        out[0, i] = a[i] & b[i]
        out[1, i] = a[i] | b[i]
        out[2, i] = a[i] ^ b[i]
        out[3, i] = not a[i]
        out[4, i] = a[i] == b[i]
        out[5, i] = a[i] and k
        out[6, i] = a[i] != k
        count += int32(a[i])
    return count


@pytest.mark.parametrize("n", LENGTHS)
def test_bool_tensors_and_scalars(n):
    a, b = random_array(bool, n, seed=n), random_array(bool, n, seed=n + 1)
    out = np.zeros((7, n), bool)
    for k in (True, False):
        c = bool_ops(a, b, out, k)
        for row, want in enumerate([a & b, a | b, a ^ b, ~a, a == b, a & k, a != k]):
            np.testing.assert_array_equal(out[row], want)
        assert c == a.sum()


# ------------------------------------------------------------------------------ scalars in and out
def _echo(dt):
    @kernel
    def echo(a: dt, b: dt) -> dt:
        return a if b == b else b
    return echo


ECHO = {name: _echo(DTYPES[name]) for name in INT_NAMES + FLOAT_NAMES + ["bool"]}


@pytest.mark.parametrize("name", INT_NAMES + FLOAT_NAMES + ["bool"])
def test_scalar_arguments_and_return_values_keep_their_type(name):
    dt = np.dtype(name)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        values = [info.min, info.max, *random_array(dt, 5, seed=3).tolist()]
    elif dt.kind == "f":
        info = np.finfo(dt)
        values = [float(info.max), float(-info.max), float(info.tiny), *random_array(dt, 5, seed=3).tolist()]
    else:
        values = [True, False]
    for v in values:
        r = ECHO[name](dt.type(v), dt.type(v))
        assert type(r) is dt.type and r == dt.type(v), (v, r)


# ------------------------------------------------------------------------------ casts
@kernel
def casts_from_float64(x: Tensor[float64, 1], i8: Tensor[int8, 1], i16: Tensor[int16, 1],
                       i32: Tensor[int32, 1], i64: Tensor[int64, 1], u8: Tensor[uint8, 1],
                       u16: Tensor[uint16, 1], u32: Tensor[uint32, 1], u64: Tensor[uint64, 1],
                       f16: Tensor[float16, 1], f32: Tensor[float32, 1], b: Tensor[bool_, 1],
                       pyint: Tensor[int64, 1]):
    for i in range(len(x)):
        v = x[i]
        i8[i] = int8(v)
        i16[i] = int16(v)
        i32[i] = int32(v)
        i64[i] = int64(v)
        u8[i] = uint8(abs(v))
        u16[i] = uint16(abs(v))
        u32[i] = uint32(abs(v))
        u64[i] = uint64(abs(v))
        f16[i] = float16(v)
        f32[i] = float32(v)
        b[i] = bool_(v)
        pyint[i] = int(v) * 10 + int(bool(v))      # Python's int and bool spellings


@pytest.mark.parametrize("n", LENGTHS)
def test_float_to_every_type(n):
    x = random_array(np.float64, n, seed=n) * 10           # |x| < 127 mostly: in range of int8
    x = np.clip(x, -127, 127)
    if n > 4:
        x[:3] = [0.0, -0.0, 126.99]
        # exact float16 ties and their neighbours: rounding double -> half must be correct
        x[3] = 1 + 2 ** -11
        x[4] = np.nextafter(1 + 2 ** -11, 2)
    outs = [np.zeros(n, t) for t in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                                     "uint64", "float16", "float32", "bool", "int64")]
    casts_from_float64(x, *outs)
    for out in outs[:4]:
        np.testing.assert_array_equal(out, np.trunc(x).astype(out.dtype))
    np.testing.assert_array_equal(outs[-1], np.trunc(x).astype(np.int64) * 10 + (x != 0))
    for out in outs[4:8]:
        np.testing.assert_array_equal(out, np.abs(x).astype(out.dtype))
    np.testing.assert_array_equal(outs[8], x.astype(np.float16))
    np.testing.assert_array_equal(outs[9], x.astype(np.float32))
    np.testing.assert_array_equal(outs[10], x != 0)


@kernel
def float64_to_float16(x: Tensor[float64, 1], y: Tensor[float16, 1], s: float16) -> float16:
    for i in range(len(x)):
        y[i] = float16(x[i])
    return s


def test_float64_to_float16_rounds_once():
    # halfway points between neighbouring float16 values, and the doubles just around them:
    # going through float32 with ordinary rounding would get some of these wrong
    g = np.random.default_rng(5)
    h = g.integers(0, 0x7BFF, 2000).astype(np.uint16).view(np.float16)
    mid = (h.astype(np.float64) + np.nextafter(h, np.float16(np.inf)).astype(np.float64)) / 2
    x = np.concatenate([mid, np.nextafter(mid, 0), np.nextafter(mid, np.inf), -mid, [65519.99, 65520.0, 1e6]])
    y = np.zeros(len(x), np.float16)
    s = 1 + 2 ** -11 + 2 ** -40      # just above a tie: a float16 argument arrives as float64 bits
    r = float64_to_float16(x, y, s)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(y, x.astype(np.float16))
    assert r == np.float16(s)


@kernel
def int_conversions(a: Tensor[int64, 1], u: Tensor[uint64, 1], out8: Tensor[int8, 1], outu16: Tensor[uint16, 1],
                    f64: Tensor[float64, 2], f32: Tensor[float32, 2], small: Tensor[int8, 1],
                    wide: Tensor[int64, 2]):
    for i in range(len(a)):
        out8[i] = int8(a[i])                    # truncates (wraps) like numpy's astype
        outu16[i] = uint16(a[i])
        f64[0, i] = float64(a[i])
        f64[1, i] = float(u[i])                 # Python's float is float64
        f32[0, i] = float32(a[i])
        f32[1, i] = float32(u[i])
        wide[0, i] = int64(small[i])            # sign extension
        wide[1, i] = int64(uint8(small[i]))     # zero extension of the same bits
        wide[2, i] = int64(uint64(a[i]) >> uint64(60))


@pytest.mark.parametrize("n", LENGTHS)
def test_integer_conversions(n):
    a = random_array(np.int64, n, seed=n)
    u = random_array(np.uint64, n, seed=n + 1)
    small = random_array(np.int8, n, seed=n + 2)
    out8, outu16 = np.zeros(n, np.int8), np.zeros(n, np.uint16)
    f64, f32, wide = np.zeros((2, n)), np.zeros((2, n), np.float32), np.zeros((3, n), np.int64)
    int_conversions(a, u, out8, outu16, f64, f32, small, wide)
    np.testing.assert_array_equal(out8, a.astype(np.int8))
    np.testing.assert_array_equal(outu16, a.astype(np.uint16))
    np.testing.assert_array_equal(f64, [a.astype(np.float64), u.astype(np.float64)])
    np.testing.assert_array_equal(f32, [a.astype(np.float32), u.astype(np.float32)])
    np.testing.assert_array_equal(wide, [small.astype(np.int64), small.view(np.uint8).astype(np.int64),
                                         (a.view(np.uint64) >> np.uint64(60)).astype(np.int64)])


@kernel
def bitcasts(f: Tensor[float32, 1], d: Tensor[float64, 1], h: Tensor[float16, 1], i: Tensor[int32, 1],
             q: Tensor[uint64, 1], s: Tensor[int16, 1], back: Tensor[float32, 1]):
    for k in range(len(f)):
        i[k] = bitcast(f[k], int32)
        q[k] = bitcast(d[k], uint64)
        s[k] = bitcast(h[k], int16)
        back[k] = bitcast(bitcast(f[k], int32) ^ int32(-2147483648), float32)     # flips the sign
    if len(f) >= 4:
        v = bitcast(f.load[4](0), uint32)            # lane-wise
        i.store(0, bitcast(v >> uint32(1), int32))


@pytest.mark.parametrize("n", LENGTHS)
def test_bitcast_reinterprets_bits(n):
    f = random_array(np.float32, n, seed=n)
    d = random_array(np.float64, n, seed=n + 1)
    h = random_array(np.float16, n, seed=n + 2)
    i, q, s, back = np.zeros(n, np.int32), np.zeros(n, np.uint64), np.zeros(n, np.int16), np.zeros(n, np.float32)
    bitcasts(f, d, h, i, q, s, back)
    want_i = f.view(np.int32).copy()
    if n >= 4:
        want_i[:4] = (f[:4].view(np.uint32) >> 1).view(np.int32)
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_array_equal(q, d.view(np.uint64))
    np.testing.assert_array_equal(s, h.view(np.int16))
    np.testing.assert_array_equal(back, -f)


@kernel
def lane_width_bitcasts(a: Tensor[int16, 1], pairs: Tensor[int32, 1], halves: Tensor[int16, 1],
                        bytes_: Tensor[uint8, 1]):
    for k in range(len(pairs)):
        pairs[k] = bitcast(a.load[2](2 * k), int32)             # two int16 lanes -> one int32
    if len(pairs) >= 4:
        v = bitcast(pairs.load[4](0), int16)                     # SIMD[int32, 4] -> SIMD[int16, 8]
        halves.store(0, v)
        bytes_.store(0, bitcast(SIMD[int32, 4](pairs[0]), uint8))  # -> SIMD[uint8, 16]


@pytest.mark.parametrize("n", [1, 4, 9])
def test_bitcast_changes_lane_width(n):
    """A vector reread as lanes of another width (int16 pairs as int32, int32 as 4 bytes);
    the bits must make whole lanes."""
    a = random_array(np.int16, 2 * n, seed=n)
    pairs, halves, bytes_ = np.zeros(n, np.int32), np.zeros(8, np.int16), np.zeros(16, np.uint8)
    lane_width_bitcasts(a, pairs, halves, bytes_)
    np.testing.assert_array_equal(pairs, a.view(np.int32))
    if n >= 4:
        np.testing.assert_array_equal(halves, a[:8])
        np.testing.assert_array_equal(bytes_, np.tile(a[:2].view(np.uint8), 4))


def test_bitcast_to_a_partial_lane_is_an_error():
    @kernel
    def bad(a: Tensor[int16, 1], out: Tensor[int32, 1]):
        out[0] = bitcast(a.load[3](0), int32)
    assert "sizes differ" in kernel_error(bad, np.zeros(4, np.int16), np.zeros(1, np.int32))


# ------------------------------------------------------------------------------ typing rules
@kernel
def int_meets_float(n: int64, u: uint16, x: float32, h: float16) -> float32:
    a = n * x                    # int64 converts to float32
    b = h * u                    # uint16 converts to float16
    return a + float32(b) + n    # and again


@given(st.integers(-2**40, 2**40), st.integers(0, 2**16 - 1), st.floats(-1e3, 1e3, width=32),
       st.floats(-10, 10, width=16))
@settings(max_examples=20, deadline=None)
def test_integers_meeting_floats_convert_to_the_float_type(n, u, x, h):
    f32, f16 = np.float32, np.float16
    with np.errstate(all="ignore"):
        want = f32(n) * f32(x) + f32(f16(h) * f16(u)) + f32(n)
    got = int_meets_float(n, u, x, h)
    assert type(got) is np.float32
    np.testing.assert_array_equal(got, want)


@kernel
def literals_adapt(x: Tensor[int8, 1], h: Tensor[float16, 1], out8: Tensor[int8, 1], out16: Tensor[float16, 1]) -> int16:
    total = 0                    # a weak local: int16 at its first typed use
    for i in range(len(x)):
        out8[i] = x[i] * 3 - 100          # int8 arithmetic, wrapping
        out16[i] = h[i] * 0.1 + 1         # float16 arithmetic (0.1 rounded to float16)
        total += int16(x[i]) * 300
    return total


@pytest.mark.parametrize("n", LENGTHS)
def test_literals_and_weak_locals_take_the_other_type(n):
    x = random_array(np.int8, n, seed=n)
    h = random_array(np.float16, n, seed=n + 1)
    out8, out16 = np.zeros(n, np.int8), np.zeros(n, np.float16)
    total = literals_adapt(x, h, out8, out16)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(out8, x * np.int8(3) - np.int8(100))
        np.testing.assert_array_equal(out16, h * np.float16(0.1) + np.float16(1))
        want = np.add.reduce(x.astype(np.int16) * np.int16(300), dtype=np.int16) if n else np.int16(0)
    assert type(total) is np.int16 and total == want


@kernel
def annotated_and_constants(x: Tensor[float32, 1]) -> float64:
    W = 4                        # assigned once from a constant: compile-time (sizes a vector)
    N = W * 2
    total: float64 = 0           # annotated: float64 from the start
    ones: SIMD[float32, N] = 1.0
    for i in range(0, len(x) - N + 1, N):
        total += float64((x.load[N](i) * ones).reduce_add())
    for i in range(len(x) // N * N, len(x)):
        total += float64(x[i])
    return total


@pytest.mark.parametrize("n", LENGTHS)
def test_annotations_and_compile_time_constants(n):
    x = random_array(np.float32, n, seed=n)
    r = annotated_and_constants(x)
    assert type(r) is np.float64
    np.testing.assert_allclose(r, x.astype(np.float64).sum(), rtol=1e-6, atol=1e-9)


@kernel
def literal_selects(x: Tensor[float32, 1], y: Tensor[int8, 2], z: Tensor[float32, 2]):
    for i in range(len(x)):
        y[0, i] = 1 if x[i] > 0.0 else -1           # int literals become int8
        z[0, i] = x[i] * (2.0 if x[i] > 0.0 else 0.5)   # float literals become float32
        y[1, i] = -1 if x[i] < -5.0 else (0 if x[i] < 5.0 else 1)          # nested
        z[1, i] = x[i] + (0.25 if x[i] < 0.0 else (1 if x[i] < 5.0 else 2.5))
    if len(x) >= 8:
        v = x.load[8](0)
        y.store(2, 0, select(v > 0.0, 3, select(v < -5.0, -3, 0)))     # lane-wise
        z.store(2, 0, v * select(v > 0.0, 0.5, 1.5))


@pytest.mark.parametrize("n", [0, 7, 8, 33])
def test_conditional_literals_adapt_too(n):
    x = random_array(np.float32, n, seed=n)
    y, z = np.zeros((3, n), np.int8), np.zeros((3, n), np.float32)
    literal_selects(x, y, z)
    f = np.float32
    np.testing.assert_array_equal(y[0], np.where(x > 0, 1, -1))
    np.testing.assert_array_equal(z[0], x * np.where(x > 0, f(2), f(0.5)))
    np.testing.assert_array_equal(y[1], np.where(x < -5, -1, np.where(x < 5, 0, 1)))
    np.testing.assert_array_equal(z[1], x + np.where(x < 0, f(0.25), np.where(x < 5, f(1), f(2.5))))
    if n >= 8:
        v = x[:8]
        np.testing.assert_array_equal(y[2, :8], np.where(v > 0, 3, np.where(v < -5, -3, 0)))
        np.testing.assert_array_equal(z[2, :8], v * np.where(v > 0, f(0.5), f(1.5)))


# ------------------------------------------------------------------------------ elementwise kernels
@kernel
def smooth_step(x: float32, lo: float32, hi: float32) -> float32:
    t = min(max((x - lo) / (hi - lo), 0.0), 1.0)
    return t * t * (3.0 - 2.0 * t)


@kernel
def ipow(x: int32, p: Param = 3) -> int32:
    r = int32(1)
    for k in unroll(p):
        r = r * x
    return r


@kernel
def is_big(x: float64, limit: float64) -> bool_:
    return abs(x) > limit


def _smooth_ref(x, lo, hi):
    t = np.clip((x - lo) / (hi - lo), 0, 1).astype(np.float32)
    return t * t * (np.float32(3) - np.float32(2) * t)


@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (3, 11), (2, 3, 5)])
def test_elementwise_kernels_map_over_arrays(shape):
    x = random_array(np.float32, shape, seed=len(shape))
    lo = random_array(np.float32, shape, seed=9) - 5
    r = smooth_step(x, lo, np.float32(2.5))              # arrays and a broadcast scalar
    assert r.shape == x.shape and r.dtype == np.float32
    np.testing.assert_allclose(r, _smooth_ref(x, lo, np.float32(2.5)), rtol=1e-5, atol=1e-6)
    i = random_array(np.int32, shape, seed=3, lo=-50, hi=50)
    np.testing.assert_array_equal(ipow(i), i ** 3)
    np.testing.assert_array_equal(ipow(i, p=2), i ** 2)
    d = x.astype(np.float64)
    np.testing.assert_array_equal(is_big(d, 5.0), np.abs(d) > 5)


def test_elementwise_kernels_on_scalars():
    for v in random_array(np.float32, 5, seed=1):
        assert smooth_step(v, np.float32(-1.0), np.float32(1.0)) == _smooth_ref(v, np.float32(-1.0), np.float32(1.0))
    assert ipow(7) == 343 and ipow(-3, p=5) == -243
    assert is_big(-6.0, 5.0) and not is_big(4.0, 5.0)


@kernel
def bf16_scalars(a: bfloat16, b: bfloat16) -> bfloat16:
    return a * b + 0.1


def test_bfloat16_scalars_round_at_the_boundary():
    bf = ml_dtypes.bfloat16
    g = np.random.default_rng(7)
    for a, b in g.standard_normal((6, 2)).astype(np.float32):
        # arguments arrive rounded to bfloat16, compute in float32, the result rounds again
        want = np.float32(bf(np.float32(bf(a)) * np.float32(bf(b)) + np.float32(0.1)))
        r = bf16_scalars(a, b)
        assert type(r) is np.float32 and r == want
    xs = g.standard_normal(9).astype(np.float32)
    want = (xs.astype(bf).astype(np.float32) * np.float32(2) + np.float32(0.1)).astype(bf).astype(np.float32)
    np.testing.assert_array_equal(bf16_scalars(xs, np.float32(2)), want)      # mapped: the same rounding
