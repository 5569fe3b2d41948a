"""Tensor arguments against numpy: element loads and stores on ranks 0-3, row sub-views and
slices, shape/strides/ndim/size/len, zero-copy in-place updates, non-contiguous and negative
strides (gathers and per-lane stores), masked vector access on strided views, Buffer, bool and
bfloat16 tensors, and arguments without annotations."""
import ml_dtypes
import numpy as np
import pytest

from ember.lang import (SIMD, Buffer, Param, Tensor, bfloat16, bool_, float32, float64, int32, int64, kernel,
                        uint16, unroll, vectorize)

from .helpers import LENGTHS, random_array


@kernel
def describe(x: Tensor[float32, 3], out: Tensor[int64, 1]):
    out[0] = x.shape[0]
    out[1] = x.shape[1]
    out[2] = x.shape[2]
    out[3] = x.strides[0]
    out[4] = x.strides[1]
    out[5] = x.strides[2]
    out[6] = x.ndim
    out[7] = x.size
    out[8] = len(x)
    row = x[1]                    # a rank-2 view
    out[9] = row.ndim
    out[10] = row.shape[1]
    out[11] = len(row[0])
    win = x[1:3]                  # a window keeps the rank
    out[12] = win.shape[0]
    out[13] = win.ndim


@pytest.mark.parametrize("perm", [(0, 1, 2), (2, 0, 1), (1, 2, 0)])
def test_shape_strides_ndim_size_len(perm):
    a = random_array(np.float32, (4, 5, 6), seed=1).transpose(perm)
    out = np.zeros(14, np.int64)
    describe(a, out)
    strides = [s // 4 for s in a.strides]
    assert out.tolist() == [*a.shape, *strides, 3, a.size, len(a), 2, a.shape[2], a.shape[2], 2, 3]


@kernel
def affine3(x: Tensor[float64, 3], y: Tensor[float64, 3], a: float64):
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            for k in range(x.shape[2]):
                y[i, j, k] = a * x[i, j, k] + float64(i * 100 + j * 10 + k)


@pytest.mark.parametrize("shape", [(0, 3, 2), (1, 1, 1), (3, 7, 5), (2, 17, 3)])
def test_rank3_loads_and_stores(shape):
    x = random_array(np.float64, shape, seed=len(shape))
    y = np.zeros(shape)
    affine3(x, y, 1.5)
    i, j, k = np.indices(shape)
    np.testing.assert_array_equal(y, 1.5 * x + (i * 100 + j * 10 + k))
    # a transposed input and a strided output: the same kernel, other strides
    yt = np.zeros((shape[0], shape[1], 2 * shape[2]))[:, :, ::2]
    xt = np.ascontiguousarray(x.transpose(2, 1, 0)).transpose(2, 1, 0)
    affine3(xt, yt, 1.5)
    np.testing.assert_array_equal(yt, y)


@kernel
def rank0(x: Tensor[float32, 0], y: Tensor[float32, 0]) -> float32:
    y[()] = x[()] * 2.0
    return x[()]


def test_rank0_tensors():
    x, y = np.array(3.25, np.float32), np.array(0.0, np.float32)
    assert rank0(x, y) == 3.25 and y == 6.5


@kernel
def row_sums(x: Tensor[float64, 2], out: Tensor[float64, 2]):
    for i in range(x.shape[0]):
        r = x[i]                          # row view
        mid = r[1:len(r) - 1]            # window
        head = r[:2]
        tail = r[2:]
        acc = 0.0
        for j in range(len(mid)):
            acc += mid[j]
        out[i, 0] = acc
        out[i, 1] = head[0] + head[1]
        s = 0.0
        for j in range(len(tail)):
            s += tail[j]
        out[i, 2] = s


@pytest.mark.parametrize("cols", [2, 3, 9, 33])
def test_row_views_and_slices(cols):
    x = random_array(np.float64, (6, cols), seed=cols)
    for arr in (x, np.asfortranarray(x)):
        out = np.zeros((6, 3))
        row_sums(arr, out)
        want = np.stack([x[:, 1:-1].sum(1), x[:, 0] + x[:, 1], x[:, 2:].sum(1)], 1)
        np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)


@kernel
def window_sum(x: Tensor[int64, 1], a: int64, b: int64) -> int64:
    w = x[a:b]
    s = 0
    for i in range(len(w)):
        s += w[i]
    return s


@pytest.mark.parametrize("n", LENGTHS)
def test_run_time_slices(n):
    x = random_array(np.int64, n, seed=n, lo=-1000, hi=1000)
    g = np.random.default_rng(n)
    for _ in range(5):
        a, b = sorted(g.integers(0, n + 1, 2).tolist())
        assert window_sum(x, a, b) == x[a:b].sum()
        assert window_sum(x[::-1], a, b) == x[::-1][a:b].sum()


@kernel
def scale_in_place(x: Tensor[float32, 2], counts: Tensor[int32, 1]):
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            x[i, j] *= 2.0
            x[i, j] -= 1.0
        counts[i % len(counts)] += 1


@pytest.mark.parametrize("rows", [0, 1, 7, 17])
def test_augmented_assignment_updates_arrays_in_place(rows):
    x = random_array(np.float32, (rows, 5), seed=rows)
    want = x * np.float32(2) - np.float32(1)
    counts = np.zeros(4, np.int32)
    view = x[:, ::-1]                                 # zero-copy: the caller's memory changes
    scale_in_place(view, counts)
    np.testing.assert_array_equal(x, want)
    np.testing.assert_array_equal(counts, np.bincount(np.arange(rows) % 4, minlength=4))


@kernel
def saxpy_vec(a: float32, x: Tensor[float32, 1], y: Tensor[float32, 1], W: Param = 8):
    def body(i, w):
        y.store(i, a * x.load[w](i) + y.load[w](i))
    vectorize(body, len(x), W)


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("layout", ["contiguous", "step2", "reversed"])
def test_vector_access_on_strided_views(n, layout):
    x = random_array(np.float32, 2 * n, seed=n)
    y = random_array(np.float32, 2 * n, seed=n + 1)
    pick = {"contiguous": slice(0, n), "step2": slice(None, None, 2), "reversed": slice(None, None, -2)}[layout]
    xs, ys = x[pick], y[pick]
    want_y = y.copy()
    want_y[pick] = np.float32(1.5) * xs + ys
    saxpy_vec(1.5, xs, ys)                            # gathers and per-lane stores when strided
    np.testing.assert_array_equal(y, want_y)          # elements in between are untouched


@kernel
def masked_strided(x: Tensor[float32, 2], y: Tensor[float32, 2], W: Param = 8):
    lane = SIMD[int64, W].iota()
    for i in range(x.shape[0]):
        for j in range(0, x.shape[1], W):
            m = lane + j < x.shape[1]
            v = x.load[W](i, j, mask=m)
            y.store(i, j, v * 3.0, mask=m)


@pytest.mark.parametrize("shape", [(3, 0), (3, 1), (2, 7), (5, 17), (4, 33)])
def test_masked_vector_access_on_strided_views(shape):
    x = random_array(np.float32, shape, seed=shape[1])
    for xin in (x, np.asfortranarray(x)):
        y = np.full((shape[0], 2 * shape[1]), 7.0, np.float32)
        masked_strided(xin, y[:, ::2])
        np.testing.assert_array_equal(y[:, ::2], np.float32(3) * x)
        assert (y[:, 1::2] == 7).all()


@kernel
def gather_tail(x: Tensor[float32, 1], out: Tensor[float32, 1], k: int64):
    m = SIMD[int64, 8].iota() < k
    out.store(0, x.load[8](0, mask=m))


@pytest.mark.parametrize("k", [0, 3, 8])
def test_masked_off_lanes_load_zero(k):
    base = random_array(np.float32, 16, seed=k)
    for x in (base[:8], base[::2]):                  # a contiguous load and a gather
        out = np.full(8, 9.0, np.float32)
        gather_tail(x, out, k)
        np.testing.assert_array_equal(out, np.where(np.arange(8) < k, x[:8], 0))


@kernel
def buffer_ops(x: Buffer[uint16], y: Buffer[uint16]) -> int64:
    s = 0
    for i in range(len(x)):
        y[i] = x[i] * uint16(3) + uint16(1)
        s += int64(x[i])
    return s


@pytest.mark.parametrize("n", LENGTHS)
def test_buffer_is_a_rank1_tensor(n):
    x = random_array(np.uint16, n, seed=n)
    y = np.zeros(n, np.uint16)
    assert buffer_ops(x, y) == x.astype(np.int64).sum()
    np.testing.assert_array_equal(y, x * np.uint16(3) + np.uint16(1))


@kernel
def unannotated(x, y, s):
    for i in range(len(x)):
        y[i] = x[i] * s + y[i]


@pytest.mark.parametrize("n", [0, 7, 33])
def test_arguments_without_annotations_take_their_kind_from_the_value(n):
    x = random_array(np.float64, n, seed=n)
    y = random_array(np.float64, n, seed=n + 1)
    want = x * 2.5 + y
    unannotated(x, y, 2.5)                          # a float is float64
    np.testing.assert_array_equal(y, want)
    xi = random_array(np.int32, n, seed=n, lo=-100, hi=100)
    yi = random_array(np.int32, n, seed=n + 1, lo=-100, hi=100)
    want = xi * np.int32(3) + yi
    unannotated(xi, yi, np.int32(3))                # a numpy scalar keeps its dtype
    np.testing.assert_array_equal(yi, want)


@kernel
def mask_count(m: Tensor[bool_, 2], x: Tensor[float32, 2], out: Tensor[bool_, 2]) -> int64:
    c = 0
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if m[i, j]:
                c += 1
            out[i, j] = m[i, j] != (x[i, j] > 0.0)
    return c


@pytest.mark.parametrize("shape", [(0, 4), (3, 7), (9, 17)])
def test_bool_tensors(shape):
    m = random_array(bool, shape, seed=1)
    x = random_array(np.float32, shape, seed=2)
    out = np.zeros(shape, bool)
    assert mask_count(m, x, out) == m.sum()
    np.testing.assert_array_equal(out, m != (x > 0))
    out_t = np.zeros(shape[::-1], bool).T
    mask_count(np.asfortranarray(m), x, out_t)
    np.testing.assert_array_equal(out_t, m != (x > 0))


@kernel
def bf16_rows(x: Tensor[bfloat16, 2], y: Tensor[bfloat16, 2], out: Tensor[float32, 1]):
    for i in range(x.shape[0]):
        acc = 0.0
        for j in range(x.shape[1]):
            acc += x[i, j]
            y[i, j] = x[i, j] * 0.5 + 1.0
        out[i] = acc


@pytest.mark.parametrize("shape", [(0, 3), (2, 7), (5, 33)])
def test_bfloat16_tensors(shape):
    x = random_array(np.float32, shape, seed=3).astype(ml_dtypes.bfloat16)
    y = np.zeros(shape, ml_dtypes.bfloat16)
    out = np.zeros(shape[0], np.float32)
    bf16_rows(x, y, out)
    xf = x.astype(np.float32)
    np.testing.assert_array_equal(y, (xf * np.float32(0.5) + np.float32(1)).astype(ml_dtypes.bfloat16))
    want = np.zeros(shape[0], np.float32)
    for j in range(shape[1]):
        want = want + xf[:, j]
    np.testing.assert_array_equal(out, want)
    yt = np.zeros(shape[::-1], np.uint16).T                 # strided raw bits
    bf16_rows(np.asfortranarray(x).view(np.uint16), yt, out)
    np.testing.assert_array_equal(yt, y.view(np.uint16))


@kernel
def vec_rows(x: Tensor[int32, 2], out: Tensor[int32, 2]):
    for i in range(x.shape[0]):
        out.store(i, 0, x.load[4](i, 0) * 2)     # along the last axis, whatever its stride


def test_vector_rows_of_a_transposed_matrix():
    a = random_array(np.int32, (6, 9), seed=4, lo=-1000, hi=1000)
    out = np.zeros((9, 4), np.int32)
    vec_rows(a.T, out)
    np.testing.assert_array_equal(out, 2 * a.T[:, :4])
    out2 = np.zeros((4, 9), np.int32)
    vec_rows(a.T, out2.T)
    np.testing.assert_array_equal(out2.T, 2 * a.T[:, :4])


@kernel
def rebound_views(x: Tensor[int64, 1], out: Tensor[int64, 1]):
    x = x[1:]                        # rebinding where the name was bound: fine
    for k in unroll(2):              # and in compile-time loops
        x = x[1:]
    for i in range(len(x)):
        row = x[i:]                  # bound inside the loop body, each iteration
        out[i] = row[0] + len(row)


@pytest.mark.parametrize("n", [3, 7, 33])
def test_views_rebound_at_compile_time(n):
    x = random_array(np.int64, n, seed=n, lo=-100, hi=100)
    out = np.zeros(n, np.int64)
    rebound_views(x, out)
    np.testing.assert_array_equal(out[:n - 3], x[3:] + np.arange(n - 3, 0, -1))
    assert (out[n - 3:] == 0).all()
