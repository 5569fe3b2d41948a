"""Ember's kernel language: typed Python functions compiled to native code through Ember's
loop IR and LLVM backend (see docs/kernel-language.md).

    from ember.lang import kernel, Tensor, float32

    @kernel
    def axpy(a: float32, x: Tensor[float32, 1], y: Tensor[float32, 1]):
        for i in range(x.shape[0]):
            y[i] = a * x[i] + y[i]
"""
from .builtins import (bitcast, ceil, erf, exp, floor, fma, log, parallelize, rsqrt, select, shuffle,
                       sqrt, tanh, tile, unroll, vectorize)
from .kernel import Kernel, get_num_threads, kernel, set_num_threads, vector_width
from .types import (SIMD, Buffer, Param, Tensor, bfloat16, bool_, float16, float32, float64, int8, int16,
                    int32, int64, uint8, uint16, uint32, uint64)
from ..errors import KernelError

__all__ = ["kernel", "Kernel", "KernelError", "SIMD", "Tensor", "Buffer", "Param", "bool_", "int8", "int16",
           "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "bfloat16", "float32",
           "float64", "exp", "log", "tanh", "erf", "sqrt", "rsqrt", "floor", "ceil", "fma", "select",
           "bitcast", "shuffle", "vectorize", "parallelize", "tile", "unroll", "set_num_threads",
           "get_num_threads", "vector_width"]
