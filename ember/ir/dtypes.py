"""Tensor element types: one table mapping ONNX enum, numpy dtype and ONNX type string."""
from __future__ import annotations

import ml_dtypes
import numpy as np

from ..errors import EmberError

# name -> (onnx TensorProto enum, numpy dtype)
_TABLE = {
    "float32": (1, np.float32),
    "uint8": (2, np.uint8),
    "int8": (3, np.int8),
    "uint16": (4, np.uint16),
    "int16": (5, np.int16),
    "int32": (6, np.int32),
    "int64": (7, np.int64),
    "bool": (9, np.bool_),
    "float16": (10, np.float16),
    "float64": (11, np.float64),
    "uint32": (12, np.uint32),
    "uint64": (13, np.uint64),
    # narrow types: stored as their bits (ml_dtypes' one byte per element, two for
    # bfloat16), computed in float32 (or int8/uint8) and converted on every load and store
    "bfloat16": (16, ml_dtypes.bfloat16),
    "float8e4m3fn": (17, ml_dtypes.float8_e4m3fn),
    "float8e4m3fnuz": (18, ml_dtypes.float8_e4m3fnuz),
    "float8e5m2": (19, ml_dtypes.float8_e5m2),
    "float8e5m2fnuz": (20, ml_dtypes.float8_e5m2fnuz),
    "uint4": (21, ml_dtypes.uint4),
    "int4": (22, ml_dtypes.int4),
    "float4e2m1": (23, ml_dtypes.float4_e2m1fn),
    "uint2": (25, ml_dtypes.uint2),
    "int2": (26, ml_dtypes.int2),
}
_ONNX_STR = {"float32": "float", "float64": "double"}
_BY_ENUM = {e: n for n, (e, _) in _TABLE.items()}
_BY_NP = {np.dtype(t): n for n, (_, t) in _TABLE.items()}

FLOATS = frozenset({"float16", "float32", "float64"})
INTS = frozenset({"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"})
SIGNED = frozenset({"int8", "int16", "int32", "int64"})
NARROW_FLOATS = frozenset({"bfloat16", "float8e4m3fn", "float8e4m3fnuz", "float8e5m2", "float8e5m2fnuz",
                           "float4e2m1"})
NARROW_INTS = frozenset({"int4", "uint4", "int2", "uint2"})
NARROW = NARROW_FLOATS | NARROW_INTS


def compute_dtype(dtype: str) -> str:
    """The type a kernel computes a `dtype` value in: float32 for the half and narrow floats,
    int8/uint8 for the sub-byte ints."""
    if dtype == "float16" or dtype in NARROW_FLOATS:
        return "float32"
    if dtype in NARROW_INTS:
        return "uint8" if dtype.startswith("u") else "int8"
    return dtype


def narrow_bits(dtype: str) -> int:
    """Bits of a sub-byte int type's value (4 or 2), kept in the low bits of its byte."""
    return int(dtype[-1])


def from_onnx(enum: int) -> str:
    if enum not in _BY_ENUM:
        try:
            from onnx import TensorProto
            what = f"{TensorProto.DataType.Name(enum).lower()} ({enum})"
        except (ImportError, ValueError):
            what = str(enum)
        raise EmberError(f"ONNX element type {what} is not supported "
                         f"(supported: {', '.join(sorted(_TABLE))})")
    return _BY_ENUM[enum]


def to_onnx(name: str) -> int:
    return _TABLE[name][0]


def from_numpy(dt) -> str:
    dt = np.dtype(dt)
    if dt not in _BY_NP:
        raise EmberError(f"numpy dtype {dt} is not supported")
    return _BY_NP[dt]


def to_numpy(name: str) -> np.dtype:
    return np.dtype(_TABLE[name][1])


def onnx_type_str(name: str) -> str:
    """onnxruntime-style type string, e.g. 'tensor(float)'."""
    return f"tensor({_ONNX_STR.get(name, name)})"


def itemsize(name: str) -> int:
    return to_numpy(name).itemsize
