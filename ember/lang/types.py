"""The kernel language's types, as the Python objects a kernel's annotations name.

  * scalar dtypes: `bool_, int8 ... int64, uint8 ... uint64, float16, bfloat16, float32,
    float64` (`DType`); called inside a kernel they cast, called from Python they make a numpy
    scalar;
  * `SIMD[dtype, width]`: a vector of `width` lanes (`VecType`);
  * `Tensor[dtype, rank]` / `Buffer[dtype]` (rank 1): a view of a numpy array with a shape and
    strides, passed zero-copy;
  * `Param`: a compile-time parameter; each distinct value compiles its own specialisation.

Square brackets always carry compile-time values: `SIMD[float32, 16]`, `x.load[16](i)`.
"""
from __future__ import annotations

import numpy as np

from ..ir.dtypes import FLOATS

INT_BITS = {"int8": 8, "int16": 16, "int32": 32, "int64": 64,
            "uint8": 8, "uint16": 16, "uint32": 32, "uint64": 64}
SIGNED_INTS = ("int8", "int16", "int32", "int64")
UNSIGNED_INTS = ("uint8", "uint16", "uint32", "uint64")
FLOAT_TYPES = ("float16", "bfloat16", "float32", "float64")


class DType:
    """A scalar type. `float32(x)` in a kernel converts x (a scalar or, lane-wise, a vector)."""

    def __init__(self, name: str, np_name: str | None):
        self.name = name
        self.np = np.dtype(np_name) if np_name else None

    def __repr__(self):
        return self.name

    def __call__(self, x):                    # from Python: a numpy scalar
        if self.np is None:
            raise TypeError(f"{self.name} has no numpy equivalent")
        return self.np.type(x)

    @property
    def is_float(self):
        return self.name in FLOATS or self.name == "bfloat16"

    @property
    def is_int(self):
        return self.name in INT_BITS

    @property
    def is_signed(self):
        return self.name in SIGNED_INTS


bool_ = DType("bool", "bool")
int8, int16, int32, int64 = (DType(n, n) for n in SIGNED_INTS)
uint8, uint16, uint32, uint64 = (DType(n, n) for n in UNSIGNED_INTS)
float16, float32, float64 = DType("float16", "float16"), DType("float32", "float32"), DType("float64", "float64")
bfloat16 = DType("bfloat16", None)
DTYPES = {t.name: t for t in (bool_, int8, int16, int32, int64, uint8, uint16, uint32, uint64,
                              float16, bfloat16, float32, float64)}


def dtype_of(x) -> DType:
    """A DType from a DType, a numpy dtype/type or a dtype name."""
    if isinstance(x, DType):
        return x
    if x is bool:
        return bool_
    if x is int:
        return int64
    if x is float:
        return float64
    return DTYPES[np.dtype(x).name]


class VecType:
    """`SIMD[dtype, width]`. Calling it in a kernel splats a scalar or converts a vector."""
    _cache: dict = {}

    def __new__(cls, dtype, width):
        key = (dtype.name, int(width))
        t = cls._cache.get(key)
        if t is None:
            t = super().__new__(cls)
            t.dtype, t.width = dtype, int(width)
            cls._cache[key] = t
        return t

    def __repr__(self):
        return f"SIMD[{self.dtype.name}, {self.width}]"


class _SIMD:
    def __getitem__(self, params):
        if not (isinstance(params, tuple) and len(params) == 2):
            raise TypeError("SIMD takes a dtype and a width: SIMD[float32, 16]")
        dt, width = params
        if not isinstance(width, int) or width < 1 or width & (width - 1):
            raise TypeError(f"SIMD width must be a power of two, got {width!r}")
        return VecType(dtype_of(dt), width)

    def __repr__(self):
        return "SIMD"


SIMD = _SIMD()


class TensorType:
    """`Tensor[dtype, rank]`: a strided view (numpy array argument, passed zero-copy)."""
    _cache: dict = {}

    def __new__(cls, dtype, rank):
        key = (dtype.name, rank)
        t = cls._cache.get(key)
        if t is None:
            t = super().__new__(cls)
            t.dtype, t.rank = dtype, rank
            cls._cache[key] = t
        return t

    def __repr__(self):
        return f"Tensor[{self.dtype.name}, {self.rank}]"


class _Tensor:
    def __getitem__(self, params):
        if not (isinstance(params, tuple) and len(params) == 2 and isinstance(params[1], int)):
            raise TypeError("Tensor takes a dtype and a rank: Tensor[float32, 2]")
        return TensorType(dtype_of(params[0]), params[1])


class _Buffer:
    def __getitem__(self, dt):
        return TensorType(dtype_of(dt), 1)


Tensor = _Tensor()
Buffer = _Buffer()


class _Param:
    """Annotation of a compile-time parameter (`width: Param = 16`); `Param[int]` also works."""

    def __getitem__(self, _):
        return self

    def __repr__(self):
        return "Param"


Param = _Param()
