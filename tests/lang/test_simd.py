"""SIMD vectors against numpy: arithmetic and comparisons on float and integer lanes of several
widths, select, reductions, shuffles, lane reads and writes, iota, splats and lane-wise
conversions, any/all, masked loads and stores over tails of every length."""
import ml_dtypes
import numpy as np
import pytest

from ember.lang import (SIMD, Param, Tensor, bool_, bfloat16, float16, float32, float64, fma, int8, int16,
                        int32, int64, kernel, select, shuffle, uint16, unroll, vectorize)
from ember.lang.types import DTYPES

from .helpers import LENGTHS, random_array


def _float_lanes(dt):
    @kernel
    def float_lanes(x: Tensor[dt, 1], y: Tensor[dt, 1], out: Tensor[dt, 2], masks: Tensor[bool_, 2],
                    W: Param = 8):
        lane = SIMD[int64, W].iota()
        for i in range(0, len(x), W):
            m = lane + i < len(x)              # the tail is masked
            a = x.load[W](i, mask=m)
            b = y.load[W](i, mask=m)
            b = select(m, b, 1.0)              # masked-off lanes must not divide by zero
            out.store(0, i, a + b, mask=m)
            out.store(1, i, a - b, mask=m)
            out.store(2, i, a * b, mask=m)
            out.store(3, i, a / b, mask=m)
            out.store(4, i, a // b, mask=m)
            out.store(5, i, a % b, mask=m)
            out.store(6, i, a ** 2, mask=m)
            out.store(7, i, -a, mask=m)
            out.store(8, i, abs(a), mask=m)
            out.store(9, i, min(a, b), mask=m)
            out.store(10, i, max(a, 0.5), mask=m)        # a scalar broadcasts
            out.store(11, i, select(a > b, a, b * 2.0), mask=m)
            out.store(12, i, fma(a, b, 1.0), mask=m)
            out.store(13, i, a * 3 + SIMD[dt, W](1.5), mask=m)      # splat
            masks.store(0, i, a < b, mask=m)
            masks.store(1, i, a >= b, mask=m)
            masks.store(2, i, (a == b) | (a != a), mask=m)
            masks.store(3, i, a != b, mask=m)
    return float_lanes


FLOAT_LANES = {name: _float_lanes(DTYPES[name]) for name in ("float16", "float32", "float64")}


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("name, W", [("float32", 4), ("float32", 8), ("float32", 16), ("float64", 4),
                                     ("float64", 8), ("float16", 16)])
def test_float_lanes(name, W, n):
    dt = np.dtype(name)
    t = dt.type
    x = random_array(dt, n, seed=n)
    y = random_array(dt, n, seed=n + 50, nonzero=True)
    if n > 3:
        x[3] = y[3]
    out = np.full((14, n), 7, dt)
    masks = np.zeros((4, n), bool)
    FLOAT_LANES[name](x, y, out, masks, W=W)
    ref = [x + y, x - y, x * y, x / y, x // y, x % y, x * x, -x, np.abs(x), np.minimum(x, y),
           np.maximum(x, t(0.5)), np.where(x > y, x, y * t(2)), None, x * t(3) + t(1.5)]
    for k, want in enumerate(ref):
        if want is None:            # fma: one rounding of the exact a*b + 1
            want = (x.astype(np.float64) * y.astype(np.float64) + 1).astype(dt) if name != "float64" else x * y + 1
            np.testing.assert_allclose(out[k], want, rtol=1e-15 if name == "float64" else 1e-7 if name == "float32"
                                       else 1e-3)
            continue
        if name == "float16":
            np.testing.assert_allclose(out[k], want, rtol=1e-3, atol=1e-3, err_msg=f"row {k}")
        else:
            np.testing.assert_array_equal(out[k], want, err_msg=f"row {k}")
    np.testing.assert_array_equal(masks, [x < y, x >= y, x == y, x != y])


def _int_lanes(dt):
    @kernel
    def int_lanes(x: Tensor[dt, 1], y: Tensor[dt, 1], out: Tensor[dt, 2], masks: Tensor[bool_, 2], W: Param = 8):
        def body(i, w):                       # w is W in the main loop, 1 on the tail
            a = x.load[w](i)
            b = y.load[w](i)
            out.store(0, i, a + b)
            out.store(1, i, a - b)
            out.store(2, i, a * b)
            out.store(3, i, a // b)
            out.store(4, i, a % b)
            out.store(5, i, a & b)
            out.store(6, i, a | b)
            out.store(7, i, a ^ b)
            out.store(8, i, ~a)
            out.store(9, i, a << 3)
            out.store(10, i, a >> 2)
            out.store(11, i, min(a, b))
            out.store(12, i, max(a, b))
            out.store(13, i, abs(a))               # the identity on unsigned lanes
            out.store(14, i, select(a < b, a, b))
            out.store(15, i, a * 5 - 7)
            masks.store(0, i, a < b)
            masks.store(1, i, a == b)
        vectorize(body, len(x), W)
    return int_lanes

INT_LANES = {name: _int_lanes(DTYPES[name]) for name in ("int8", "uint8", "int16", "uint16", "int32", "int64",
                                                         "uint32", "uint64")}


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("name, W", [("int8", 32), ("uint8", 64), ("int16", 16), ("uint16", 8), ("int32", 8),
                                     ("int32", 16), ("int64", 4), ("uint32", 8), ("uint64", 4)])
def test_integer_lanes(name, W, n):
    dt = np.dtype(name)
    t = dt.type
    x = random_array(dt, n, seed=n)
    y = random_array(dt, n, seed=n + 9, nonzero=True)
    if n > 3:
        x[1] = y[1]
        y[2] = 1 if dt.kind == "u" else -1
    out = np.zeros((16, n), dt)
    masks = np.zeros((2, n), bool)
    INT_LANES[name](x, y, out, masks, W=W)
    with np.errstate(all="ignore"):
        ref = [x + y, x - y, x * y, x // y, x % y, x & y, x | y, x ^ y, ~x, x << t(3), x >> t(2),
               np.minimum(x, y), np.maximum(x, y), np.abs(x), np.where(x < y, x, y),
               x * t(5) - t(7)]
    for k, want in enumerate(ref):
        np.testing.assert_array_equal(out[k], want, err_msg=f"row {k}")
    np.testing.assert_array_equal(masks, [x < y, x == y])


@kernel
def reductions(x: Tensor[int32, 1], f: Tensor[float64, 1], out: Tensor[int64, 1], fout: Tensor[float64, 1]):
    v = x.load[16](0)
    out[0] = int64(v.reduce_add())
    out[1] = int64(v.reduce_mul())
    out[2] = int64(v.reduce_max())
    out[3] = int64(v.reduce_min())
    out[4] = int64(v.reduce_and())
    out[5] = int64(v.reduce_or())
    m = v > 0
    out[6] = int64(m.reduce_and())
    out[7] = int64(m.reduce_or())
    out[8] = int64(any(m))
    out[9] = int64(all(m))
    out[10] = int64(all(v > -1000000))
    out[11] = int64(any(v > 1000000))
    w = f.load[8](0)
    fout[0] = w.reduce_add()
    fout[1] = w.reduce_mul()
    fout[2] = w.reduce_max()
    fout[3] = w.reduce_min()


@pytest.mark.parametrize("seed", range(6))
def test_reductions_and_any_all(seed):
    x = random_array(np.int32, 16, seed=seed, lo=-9, hi=9)
    if seed == 0:
        x = np.abs(x) + 1                # all positive: all(m) is true
    f = random_array(np.float64, 8, seed=seed)
    out, fout = np.zeros(12, np.int64), np.zeros(4)
    reductions(x, f, out, fout)
    with np.errstate(over="ignore"):
        want = [x.sum(dtype=np.int32), np.prod(x, dtype=np.int32), x.max(), x.min(), np.bitwise_and.reduce(x),
                np.bitwise_or.reduce(x), (x > 0).all(), (x > 0).any(), (x > 0).any(), (x > 0).all(), 1, 0]
    assert out.tolist() == [int(v) for v in want]
    np.testing.assert_allclose(fout, [f.sum(), np.prod(f), f.max(), f.min()], rtol=1e-14)


@kernel
def lanes_and_shuffles(x: Tensor[float32, 1], out: Tensor[float32, 1], k: int64):
    v = x.load[8](0)
    w = SIMD[float32, 8].iota()
    out[0] = v[k]                          # run-time lane read
    out[1] = v[7]
    v[k] = w[3] * 10.0                     # run-time lane write
    v[0] = -1.0                            # compile-time lane write
    out.store(2, v)
    out.store(10, v.shuffle(7, 6, 5, 4, 3, 2, 1, 0))
    out.store(18, v.shuffle(1, 1, 0, 0))
    out.store(22, shuffle(v, w, (0, 8, 1, 9, 2, 10, 3, 11)))
    h = shuffle(v, w, (15, 14))
    out[30] = h[0] + h[1]
    out[31] = float32(v.width + h.width)
    s = v.shuffle(4)                       # one lane: a scalar
    out[32] = s


@pytest.mark.parametrize("k", [1, 2, 5, 7])
def test_lane_access_and_shuffles(k):
    x = random_array(np.float32, 8, seed=k)
    out = np.zeros(33, np.float32)
    lanes_and_shuffles(x, out, k)
    w = np.arange(8, dtype=np.float32)
    v = x.copy()
    v[k] = 30.0
    v[0] = -1.0
    want = [x[k], x[7], *v, *v[::-1], v[1], v[1], v[0], v[0], *np.stack([v[:4], w[:4]], 1).ravel(),
            w[7] + w[6], 10.0, v[4]]
    np.testing.assert_array_equal(out, np.array(want, np.float32))


@kernel
def conversions(x: Tensor[float32, 1], i8: Tensor[int8, 1], u16: Tensor[uint16, 1], f64: Tensor[float64, 1],
                f16: Tensor[float16, 1], bf: Tensor[bfloat16, 1], io: Tensor[int64, 1]):
    for i in range(0, len(x) - 7, 8):
        v = x.load[8](i)
        i8.store(i, SIMD[int8, 8](v))                       # lane-wise conversions
        u16.store(i, SIMD[uint16, 8](abs(v)))
        f64.store(i, SIMD[float64, 8](v) * 2.0)
        f16.store(i, SIMD[float16, 8](v))
        bf.store(i, v)                                      # rounded by the store
        io.store(i, SIMD[int64, 8].iota() + i + SIMD[int64, 8](int64(v[0] > 0.0)))


@pytest.mark.parametrize("n", LENGTHS)
def test_lane_wise_conversions(n):
    x = random_array(np.float32, n, seed=n)
    m = n // 8 * 8
    outs = [np.zeros(n, t) for t in (np.int8, np.uint16, np.float64, np.float16, ml_dtypes.bfloat16, np.int64)]
    conversions(x, *outs)
    xm = x[:m]
    np.testing.assert_array_equal(outs[0][:m], xm.astype(np.int8))
    np.testing.assert_array_equal(outs[1][:m], np.abs(xm).astype(np.uint16))
    np.testing.assert_array_equal(outs[2][:m], xm.astype(np.float64) * 2)
    np.testing.assert_array_equal(outs[3][:m], xm.astype(np.float16))
    np.testing.assert_array_equal(outs[4][:m], xm.astype(ml_dtypes.bfloat16))
    want_io = np.arange(m) + np.repeat(x[:m:8] > 0, 8) if m else np.zeros(0)
    np.testing.assert_array_equal(outs[5][:m], want_io)
    for out in outs:                       # the tail is not written
        assert (out[m:].astype(np.float64) == 0).all()


@kernel
def masked_copy(x: Tensor[int16, 1], y: Tensor[int16, 1], W: Param = 8):
    lane = SIMD[int32, W].iota()
    for i in range(0, len(x), W):
        m = lane < int32(len(x) - i)
        v = x.load[W](i, mask=m)
        y.store(i, select(m, v + 1, v), mask=m)
        if not all(m):
            y[len(y) - 1] = v.reduce_add() + int16(v[W - 1] == 0)     # masked-off lanes loaded 0


@pytest.mark.parametrize("n", [1, 7, 17, 33, 100])
@pytest.mark.parametrize("W", [4, 16])
def test_masked_loads_and_stores_leave_the_rest_alone(n, W):
    x = random_array(np.int16, n, seed=n, lo=-1000, hi=1000)
    y = np.full(n + 1, 12345, np.int16)              # one guard element past the end
    masked_copy(x, y, W=W)
    want = np.append(x + 1, 12345).astype(np.int16)
    if n % W:
        want[-1] = x[n - n % W:].sum() + 1
    np.testing.assert_array_equal(y, want)


@kernel
def register_block(a: Tensor[float32, 2], b: Tensor[float32, 2], c: Tensor[float32, 2]):
    # c[0:4, 0:8] = a[0:4, :] @ b[:, 0:8] with a register array of four SIMD accumulators
    acc = [SIMD[float32, 8](0.0) for r in range(4)]
    for k in range(a.shape[1]):
        bv = b.load[8](k, 0)
        for r in unroll(4):
            acc[r] = fma(SIMD[float32, 8](a[r, k]), bv, acc[r])
    for r in unroll(4):
        c.store(r, 0, acc[r])


@pytest.mark.parametrize("k", [1, 7, 33])
def test_register_arrays_of_vectors(k):
    a = random_array(np.float32, (4, k), seed=k)
    b = random_array(np.float32, (k, 8), seed=k + 1)
    c = np.zeros((4, 8), np.float32)
    register_block(a, b, c)
    np.testing.assert_allclose(c, a.astype(np.float64) @ b, rtol=1e-5, atol=1e-4)


@kernel
def bf16_vectors(x: Tensor[float32, 1], y: Tensor[bfloat16, 1], s: bfloat16):
    for i in range(0, len(x) - 7, 8):
        v = SIMD[bfloat16, 8](x.load[8](i))          # rounded lane-wise; the lanes are float32
        y.store(i, v * SIMD[bfloat16, 8](s) + 1.0)    # a splat of a run-time scalar


@pytest.mark.parametrize("n", LENGTHS)
def test_bfloat16_vectors(n):
    bf = ml_dtypes.bfloat16
    x = random_array(np.float32, n, seed=n)
    y = np.zeros(n, bf)
    bf16_vectors(x, y, 1.3)
    m = n // 8 * 8
    s = np.float32(bf(1.3))
    np.testing.assert_array_equal(y[:m], (x[:m].astype(bf).astype(np.float32) * s + np.float32(1)).astype(bf))
    assert (y[m:] == 0).all()
