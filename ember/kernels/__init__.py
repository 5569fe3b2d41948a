"""Ember's library kernels, written in its kernel language, and where the engine uses them:

  * `math`: vector float32 exp / erf / tanh. They implement those ops in every fused graph
    kernel (via `inline_elementwise`, like any elementwise custom op) and the `exp`, `erf`,
    `tanh` builtins of user kernels.
  * `nn`: softmax and layer normalisation over the last axis, as whole-tensor library ops
    (`LibraryImpl`) that the decompose pass leaves in place.
Importing this package registers them (ember.runtime imports it before compiling).
"""
from __future__ import annotations

from ..ir.ops import OPS, LibraryImpl
from ..lang.elementwise import inline_elementwise
from ..lang.frontend import MATH_IMPLS
from . import math as _math
from . import nn as _nn

_F32_IMPLS = {"exp": _math.exp_f32, "erf": _math.erf_f32, "tanh": _math.tanh_f32}


def _pointwise(op, impl):
    builtin = OPS[op].emit

    def emit(o, x):
        if x.dtype == "float32":
            return inline_elementwise(impl, [x])
        return builtin(o, x)
    return emit


for _op, _impl in _F32_IMPLS.items():
    MATH_IMPLS[(_op, "float32")] = _impl
    OPS[_op].emit = _pointwise(_op, _impl)


def _last_axis(node):
    x = node.inputs[0]
    return x.dtype == "float32" and x.type.rank >= 1 and node.attrs.get("axis", -1) % x.type.rank == x.type.rank - 1


def _softmax_applies(node):
    return _last_axis(node) and not node.attrs.get("log")


def _layer_norm_applies(node):
    if not _last_axis(node) or len(node.inputs) < 3 or node.inputs[2] is None:
        return False
    n = node.inputs[0].shape[-1]
    return all(v.dtype == "float32" and tuple(v.shape) == (n,) for v in node.inputs[1:3])


OPS["softmax"].library = LibraryImpl(_softmax_applies, lambda node: (_nn.softmax_rows, {}))
OPS["layer_norm"].library = LibraryImpl(
    _layer_norm_applies, lambda node: (_nn.layer_norm_rows, {"epsilon": float(node.attrs["epsilon"])}))
