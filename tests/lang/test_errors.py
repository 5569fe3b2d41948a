"""Compile errors name the exact file:line:column, quote the line and put a caret under the
offending construct; wrong arguments at call time raise InvalidInputError naming the argument.
Locations are computed from each kernel's own source with `inspect`."""
import numpy as np
import pytest

from ember.errors import InvalidInputError, KernelError
from ember.lang import (SIMD, Param, Tensor, float32, float64, int8, int32, int64, kernel, parallelize,
                        uint16, unroll, vectorize)

from .helpers import assert_error_at, kernel_error, where

F4 = (np.zeros(4, np.float32),)
I4 = (np.zeros(4, np.int32),)


# --------------------------------------------------------------------------- the kernels
@kernel
def mismatch(x: Tensor[float32, 1], y: float64) -> float32:
    return x[0] + y


@kernel
def int_true_div(a: int32, b: int32) -> int32:
    return a / b


@kernel
def uses_try(x: Tensor[float32, 1]):
    try:
        x[0] = 1.0
    except Exception:
        pass


@kernel
def uses_lambda(x: Tensor[float32, 1]):
    f = lambda v: v * 2.0  # noqa: E731
    x[0] = f(x[1])


@kernel
def uses_with(x: Tensor[float32, 1]):
    with open("log.txt") as f:  # noqa: F841
        x[0] = 1.0


@kernel
def uses_global(x: Tensor[float32, 1]):
    global counter
    x[0] = 1.0


@kernel
def uses_assert(x: Tensor[float32, 1]):
    assert len(x) > 0
    x[0] = 1.0


@kernel
def undefined_name(x: Tensor[float32, 1]):
    x[0] = undefined_thing * 2.0  # noqa: F821


@kernel
def parallel_race(x: Tensor[float32, 1]):
    total = 0.0

    def body(i):
        nonlocal total
        total += x[i]
    parallelize(body, len(x))
    x[0] = total


@kernel
def parallel_assign(x: Tensor[int32, 1]):
    last = int32(0)

    def body(i):
        nonlocal last
        if x[i] > 0:
            last = int32(i)
    parallelize(body, len(x))


@kernel
def vector_if(x: Tensor[float32, 1]):
    v = x.load[4](0)
    if v > 0.0:
        x[0] = 1.0


@kernel
def vector_while(x: Tensor[float32, 1]):
    v = x.load[4](0)
    while v < 10.0:
        v = v * 2.0


@kernel
def store_wrong_dtype(x: Tensor[int32, 1], y: float32):
    x[0] = y


@kernel
def vector_store_wrong_dtype(x: Tensor[float32, 1]):
    x.store(0, SIMD[float64, 4](1.0))


@kernel
def store_float_literal(x: Tensor[int32, 1]):
    x[1] = 2.5


@kernel
def break_in_unroll(x: Tensor[float32, 1]):
    for k in unroll(4):
        if x[k] > 0.0:
            break


@kernel
def continue_in_unroll(x: Tensor[float32, 1]):
    for i in range(len(x)):
        for k in unroll(2):
            continue


@kernel
def int_widths(a: int32, b: int64) -> int64:
    return b - a


@kernel
def float_into_int_local(x: Tensor[float32, 1]):
    n = 1
    n = 2.5
    x[0] = float32(n)


@kernel
def literal_overflow(x: Tensor[int32, 1], b: int32):
    x[0] = b * 5000000000


@kernel
def lane_read_out_of_range(x: Tensor[float32, 1]):
    v = x.load[4](0)
    x[0] = v[4]


@kernel
def lane_write_out_of_range(x: Tensor[float32, 1]):
    v = x.load[4](0)
    v[7] = 1.0


@kernel
def widths_differ(x: Tensor[float32, 1]):
    x.store(0, x.load[4](0) * x.load[8](0))


@kernel
def run_time_step(x: Tensor[float32, 1], s: int64):
    for i in range(0, len(x), s):
        x[i] = 0.0


@kernel
def recursion(x: Tensor[float32, 1]):
    def down(n):
        return down(n)
    x[0] = down(1.0)


@kernel
def calls_print(x: Tensor[float32, 1]):
    print(x[0])


@kernel
def string_constant(x: Tensor[float32, 1]):
    x[0] = "one"


@kernel
def too_many_indices(x: Tensor[float32, 1]):
    x[0, 1] = 1.0


@kernel
def float_index(x: Tensor[float32, 1], i: float32):
    x[i] = 1.0


@kernel
def while_else(x: Tensor[float32, 1]):
    while x[0] > 0.0:
        x[0] -= 1.0
    else:
        x[1] = 1.0


@kernel
def returns_vector(x: Tensor[float32, 1]) -> float32:
    return x.load[4](0)


@kernel
def return_in_parallel(x: Tensor[float32, 1]):
    def body(i):
        if x[i] > 0.0:
            return
        x[i] = 0.0
    parallelize(body, len(x))


@kernel
def bad_attribute(x: Tensor[float32, 1]):
    x[0] = x.mean


@kernel
def helper_missing_argument(x: Tensor[float32, 1]):
    def f(a, b):
        return a + b
    x[0] = f(x[0])


@kernel
def bad_simd_width(x: Tensor[float32, 1]):
    v = SIMD[float32, 3](0.0)
    x[0] = v[0]


@kernel
def runtime_vectorize_width(x: Tensor[float32, 1], w: int64):
    def body(i, k):
        x[i] = 0.0
    vectorize(body, len(x), w)


@kernel
def bool_arithmetic(x: Tensor[float32, 1]):
    x[0] = float32((x[0] > 0.0) + (x[1] > 0.0))


@kernel
def rebind_view_in_loop(x: Tensor[int64, 1], n: int64) -> int64:
    for i in range(n):
        x = x[1:]
    return x[0]


@kernel
def rebind_view_in_branch(x: Tensor[int64, 2], r: int64) -> int64:
    row = x[0]
    if r > 0:
        row = x[1]
    return row[0]



@kernel
def bool_lanes_sum(x: Tensor[float32, 1]) -> int32:
    m = x.load[8](0) > 0.0
    return int32(m.reduce_add())



@kernel
def parallel_register_write(x: Tensor[float32, 1]) -> float32:
    acc = [x[0] * 0.0 for k in range(2)]

    def body(i):
        acc[0] += x[i]
    parallelize(body, len(x))
    return acc[0]


@kernel
def parallel_lane_write(x: Tensor[float32, 1]) -> float32:
    v = SIMD[float32, 4](0.0)

    def body(i):
        v[1] = x[i]
    parallelize(body, len(x))
    return v[1]


ERRORS = [
    # kernel, args, where the caret goes, the reason (exact)
    (mismatch, F4 + (1.0,), "x[0] + y",
     "type mismatch in '+': float32 and float64 (cast one side, e.g. float32(...))"),
    (int_true_div, (1, 2), "a / b", "'/' on int32 values: use // for integer division, or convert to a float type"),
    (uses_try, F4, "try:", "unsupported Python construct: Try (kernels cannot raise or catch) is not part of the "
                           "kernel language"),
    (uses_lambda, F4, "lambda", "unsupported Python construct: Lambda (define a local function with def) is not "
                                "part of the kernel language"),
    (uses_with, F4, "with", "unsupported Python construct: With is not part of the kernel language"),
    (uses_global, F4, "global", "unsupported Python construct: Global is not part of the kernel language"),
    (uses_assert, F4, "assert", "unsupported Python construct: Assert is not part of the kernel language"),
    (undefined_name, F4, "undefined_thing", "name 'undefined_thing' is not defined"),
    (parallel_race, F4, "total += x[i]",
     "cannot assign 'total' inside a parallelize body: it belongs to the enclosing kernel and iterations run "
     "concurrently (write results to a tensor instead)"),
    (parallel_assign, I4, "last = int32(i)",
     "cannot assign 'last' inside a parallelize body: it belongs to the enclosing kernel and iterations run "
     "concurrently (write results to a tensor instead)"),
    (parallel_register_write, F4, "acc[0] += x[i]",
     "cannot assign 'acc[...]' inside a parallelize body: 'acc' belongs to the enclosing kernel and iterations "
     "run concurrently (write results to a tensor instead)"),
    (parallel_lane_write, F4, "v[1] = x[i]",
     "cannot assign 'v[...]' inside a parallelize body: 'v' belongs to the enclosing kernel and iterations "
     "run concurrently (write results to a tensor instead)"),
    (vector_if, F4, "v > 0.0", "condition is a vector of lanes; reduce it with any(...)/all(...) or use "
                               "select(mask, a, b)"),
    (vector_while, F4, "v < 10.0", "condition is a vector of lanes; reduce it with any(...)/all(...) or use "
                                   "select(mask, a, b)"),
    (store_wrong_dtype, I4 + (1.0,), "x[0] = y", "cannot store float32 into int32 tensor 'x'; convert with int32(...)"),
    (vector_store_wrong_dtype, F4, "x.store(",
     "cannot store SIMD[float64, 4] into float32 tensor 'x'; convert with float32(...)"),
    (store_float_literal, I4, "x[1] = 2.5", "float literal 2.5 used with a int32 value; cast one side"),
    (break_in_unroll, F4, "break", "break inside an unroll(...) loop is not supported"),
    (continue_in_unroll, F4, "continue", "continue inside an unroll(...) loop is not supported"),
    (int_widths, (1, 2), "b - a", "type mismatch in '-': int64 and int32 (cast one side, e.g. int64(...))"),
    (float_into_int_local, F4, "n = 2.5", "float literal 2.5 used with a int64 value; cast one side"),
    (literal_overflow, I4 + (1,), "b * 5000000000", "integer literal 5000000000 does not fit in int32"),
    (lane_read_out_of_range, F4, "v[4]", "lane 4 out of range for SIMD[float32, 4]"),
    (lane_write_out_of_range, F4, "v[7] = 1.0", "lane 7 out of range for SIMD[float32, 4]"),
    (widths_differ, F4, "x.load[4](0) * x.load[8](0)",
     "vector widths differ in '*': SIMD[float32, 4] and SIMD[float32, 8]"),
    (run_time_step, F4 + (2,), "range(0, len(x), s)", "the range step must be a non-zero compile-time integer"),
    (recursion, F4, "down(n)", "helper calls nest too deeply (recursion is not supported)", 1),
    (calls_print, F4, "print(x[0])", "cannot call 'print' inside a kernel"),
    (string_constant, F4, '"one"', "str constants are not supported in kernels"),
    (too_many_indices, F4, "x[0, 1] = 1.0", "a store into tensor 'x' needs 1 indices, got 2"),
    (float_index, F4 + (1.0,), "x[i] = 1.0", "an index must be an integer, got float32"),
    (while_else, F4, "while x[0] > 0.0:", "while ... else is not supported"),
    (returns_vector, F4, "return x.load[4](0)", "a kernel returns a scalar; store vectors into a tensor argument"),
    (return_in_parallel, F4, "return", "return inside a parallelize body"),
    (bad_attribute, F4, "x.mean",
     "tensors have no attribute 'mean' (they have shape, strides, ndim, size, load, store)"),
    (helper_missing_argument, F4, "f(x[0])", "f() is missing argument 'b'"),
    (bad_simd_width, F4, "SIMD[float32, 3]", "SIMD[(float32, 3)]: SIMD width must be a power of two, got 3"),
    (runtime_vectorize_width, F4 + (4,), "vectorize(body, len(x), w)",
     "vectorize(body, n, width) needs a compile-time integer width"),
    (rebind_view_in_loop, (np.arange(5), 2), "x = x[1:]",
     "cannot rebind 'x' (tensor 'x') inside a run-time loop or branch: it is bound when the kernel compiles "
     "(index the tensor with a run-time offset instead)"),
    (rebind_view_in_branch, (np.arange(6).reshape(2, 3), 1), "row = x[1]",
     "cannot rebind 'row' (tensor 'x') inside a run-time loop or branch: it is bound when the kernel compiles "
     "(index the tensor with a run-time offset instead)"),
    (bool_lanes_sum, (np.zeros(8, np.float32),), "m.reduce_add()",
     "reduce_add on bool lanes; convert with SIMD[int32, 8](...) first"),
    (bool_arithmetic, F4, "(x[0] > 0.0) + (x[1] > 0.0)", "arithmetic on bool values; convert with int32(...) first"),
]


@pytest.mark.parametrize("kern, args, needle, reason, occurrence", [e + (0,) * (5 - len(e)) for e in ERRORS],
                         ids=[e[0].__name__ for e in ERRORS])
def test_compile_errors_point_at_the_construct(kern, args, needle, reason, occurrence):
    msg = kernel_error(kern, *args)
    assert_error_at(msg, kern, needle, reason, occurrence)


def test_error_attributes_and_no_compiler_traceback():
    with pytest.raises(KernelError) as info:
        mismatch(np.zeros(2, np.float32), 1.0)
    e = info.value
    file, line, col = where(mismatch, "x[0] + y")
    assert (e.filename, e.lineno, e.col + 1) == (file, line, col)
    assert e.reason.startswith("type mismatch in '+'")
    assert e.__cause__ is None and e.__suppress_context__        # raised `from None`
    # the caret sits under the first character of the offending expression
    src, caret = str(e).splitlines()[1:3]
    assert src[caret.index("^"):].startswith("x[0] + y")


def test_a_failed_compile_is_not_cached():
    for _ in range(2):                      # the same error again, not a stale specialisation
        assert "type mismatch" in kernel_error(mismatch, np.zeros(2, np.float32), 1.0)
    assert not mismatch._specs


# --------------------------------------------------------------------------- call time
@kernel
def axpy(a: float32, x: Tensor[float32, 1], y: Tensor[float32, 1], W: Param = 8):
    for i in range(len(x)):
        y[i] = a * x[i] + y[i]


@kernel
def elementwise_add(a: float32, b: float32) -> float32:
    return a + b


X = np.zeros(3, np.float32)


@pytest.mark.parametrize("args, kwargs, message", [
    ((1.0, np.zeros(3), X), {}, "kernel 'axpy': argument 'x' must be a float32 array of rank 1, got float64 array "
                                "of shape (3,)"),
    ((1.0, np.zeros((3, 1), np.float32), X), {}, "kernel 'axpy': argument 'x' must be a float32 array of rank 1, "
                                                 "got float32 array of shape (3, 1)"),
    ((1.0, [1.0, 2.0], X), {}, "kernel 'axpy': argument 'x' must be a float32 array of rank 1, got list"),
    ((1.0, X, np.zeros(3, np.int32)), {}, "kernel 'axpy': argument 'y' must be a float32 array of rank 1, got int32 "
                                          "array of shape (3,)"),
    ((X, X, X), {}, "kernel 'axpy': argument 'a' must be a float32 scalar, got ndarray"),
    ((1.0, X), {}, "kernel 'axpy': missing a required argument: 'y'"),
    ((1.0, X, X, 8, 9), {}, "kernel 'axpy': too many positional arguments"),
    ((1.0, X, X), {"V": 3}, "kernel 'axpy': got an unexpected keyword argument 'V'"),
    ((1.0, X, X), {"W": [8]}, "kernel 'axpy': compile-time parameter 'W' must be hashable, got list"),
])
def test_wrong_arguments_raise_invalid_input(args, kwargs, message):
    with pytest.raises(InvalidInputError) as e:
        axpy(*args, **kwargs)
    assert str(e.value) == message


@kernel
def takes_scalars(a: int8, b: uint16, c: float32, d: int64) -> float64:
    return float64(a) + float64(b) + float64(c) + float64(d)


@pytest.mark.parametrize("args, message", [
    ((300, 1, 1.0, 1), "argument 'a' must be a int8 scalar, got 300, outside its range [-128, 127]"),
    ((1, -1, 1.0, 1), "argument 'b' must be a uint16 scalar, got -1, outside its range [0, 65535]"),
    ((2.5, 1, 1.0, 1), "argument 'a' must be a int8 scalar, got float 2.5 (convert it to an integer first)"),
    ((1, 1, "1.0", 1), "argument 'c' must be a float32 scalar, got str"),
    ((1, 1, 1.0, 2**63), "argument 'd' must be a int64 scalar, got 9223372036854775808, outside its range "
                         "[-9223372036854775808, 9223372036854775807]"),
])
def test_scalar_arguments_are_not_silently_changed(args, message):
    with pytest.raises(InvalidInputError) as e:
        takes_scalars(*args)
    assert str(e.value) == f"kernel 'takes_scalars': {message}"
    assert takes_scalars(-128, 65535, 3, np.int64(-2**63)) == -128 + 65535 + 3 - 2.0**63


def test_elementwise_shapes_must_agree():
    with pytest.raises(InvalidInputError, match=r"elementwise arguments must have one shape, got \(3,\) and \(4,\)"):
        elementwise_add(np.zeros(3, np.float32), np.zeros(4, np.float32))
    np.testing.assert_array_equal(elementwise_add(np.arange(3, dtype=np.float32), np.float32(1)), [1, 2, 3])
