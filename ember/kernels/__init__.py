"""Ember's library kernels, written in its kernel language, and where the engine uses them:

  * `math`: vector float32 exp / erf / tanh. They implement those ops in every fused graph
    kernel (via `inline_elementwise`, like any elementwise custom op) and the `exp`, `erf`,
    `tanh` builtins of user kernels.
  * `nn`: softmax and layer normalisation over the last axis, as whole-tensor library ops
    (`LibraryImpl`) that the decompose pass leaves in place.
  * `attention`: fused scaled-dot-product attention, for the `attention` op that the
    `fuse_attention` pass forms.
  * `winograd`: the input and output transforms of Winograd F(2x2, 3x3) convolutions
    (`winograd_input` / `winograd_output`, which the conv decomposition forms).
  * `pool`: 3x3 stride-2 max pooling, separable (other pools use the generic lowering).
  * `depthwise`: 3x3 depthwise convolutions, stride 2 and stride 1, each input row loaded once.
  * `im2col`: the columns of 3x3 stride-2 convolutions, each input row loaded once.
The kernels that write each output element once (all but softmax and im2col) take the
pointwise kernel after them as a fused epilogue (BatchNorm, ReLU, a residual ...).
Importing this package registers them (ember.runtime imports it before compiling).
"""
from __future__ import annotations

from ..ir.ops import OPS, LibraryImpl
from ..lang import vector_width
from ..lang.elementwise import inline_elementwise
from ..lang.frontend import MATH_IMPLS
from . import attention as _attention
from . import depthwise as _depthwise
from . import im2col as _im2col
from . import math as _math
from . import nn as _nn
from . import pool as _pool
from . import winograd as _winograd

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
    _layer_norm_applies, lambda node: (_nn.layer_norm_rows, {"epsilon": float(node.attrs["epsilon"])}),
    epilogue=True)


def _attention_applies(node):
    q, kt, v, bias = node.inputs
    d = v.shape[-1]
    return (all(x.dtype == "float32" and x.type.rank == 4 for x in node.inputs)
            and isinstance(d, int) and d % _attention.W == 0 and d <= 128 and q.shape[-1] == d
            and bias.shape[-1] == kt.shape[-1])


def _attention_lower(node):
    d = node.inputs[2].shape[-1]
    # R query rows x (d/16 accumulators + KB score vectors) in 24 of the 32 registers. Blocks
    # of 64 keys halve the softmax's per-block reductions and rescaling against 32 keys
    # (head_dim 64: 3 rows x 64 keys 5-7% faster than 4 x 32 at 128-384 keys; 128: 2 x 64
    # 19% faster than 2 x 32)
    kb = 4
    return _attention.attention_bshd, {"scale": float(node.attrs["scale"]), "D": d, "KB": kb,
                                       "R": max(1, min(4, 24 // (d // _attention.W + kb)))}


OPS["attention"].library = LibraryImpl(_attention_applies, _attention_lower, epilogue=True)


def _f32(node):
    return node.inputs[0].dtype == "float32"


# (the window kernels keep arrays of vectors live: at twice the register width they spill)
OPS["winograd_input"].library = LibraryImpl(_f32, lambda node: (_winograd.winograd_input, {"width": vector_width()}))
OPS["winograd_output"].library = LibraryImpl(_f32, lambda node: (_winograd.winograd_output, {"width": vector_width()}),
                                             epilogue=True)


def _window_3x3_s2(node):
    """A float32 2-d window op of 3x3, stride 2, begin pads 1, whose output (oh, ow) has its
    window centre at (2oh, 2ow), inside the image (what the stride-2 kernels assume)."""
    at = node.attrs
    x = node.inputs[0]
    if not (x.dtype == "float32" and x.type.rank == 4 and tuple(at["kernel"]) == (3, 3)
            and tuple(at["strides"]) == (2, 2) and tuple(at["dilations"]) == (1, 1)
            and tuple(at["pads"][:2]) == (1, 1)):
        return False
    h, w = x.shape[2:]
    return (isinstance(h, int) and isinstance(w, int)
            and tuple(at["out"]) == ((h - 1) // 2 + 1, (w - 1) // 2 + 1))


def _window_3x3_s1(node):
    """A float32 2-d 3x3 window op of stride 1 and pads 1 whose output is the image's size,
    on rows wider than half a vector (narrower ones run over flat pixels: ops.py)."""
    at = node.attrs
    x = node.inputs[0]
    if not (x.dtype == "float32" and x.type.rank == 4 and tuple(at["kernel"]) == (3, 3)
            and tuple(at["strides"]) == (1, 1) and tuple(at["dilations"]) == (1, 1)
            and tuple(at["pads"]) == (1, 1, 1, 1) and not at.get("flat")):
        return False
    h, w = x.shape[2:]
    return isinstance(h, int) and isinstance(w, int) and w > 8 and tuple(at["out"]) == (h, w)


def _depthwise_kernel(node):
    if node.inputs[1].dtype != "float32":
        return None
    if _window_3x3_s2(node):
        return _depthwise.depthwise_3x3_s2
    if _window_3x3_s1(node):
        return _depthwise.depthwise_3x3_s1
    return None


OPS["pool"].library = LibraryImpl(lambda node: node.attrs["mode"] == "max" and _window_3x3_s2(node),
                                  lambda node: (_pool.max_pool_3x3_s2, {"width": vector_width()}), epilogue=True)
def _row_bands(node) -> int:
    """Bands of output rows for the depthwise kernels' tasks (their docstring): two halves,
    as the pixel-split 1x1 convolutions around them give two threads; only where the second
    band's output starts on a cache line (a line two cores write moves between them on every
    write: false sharing once per channel), and on images of 32 rows or more (at 28x28 the
    extra input rows and shorter runs cost more than they save: 22 -> 27 us at 1 thread)."""
    oh, ow = node.attrs["out"]
    if (oh * ow) % 16 or oh < 32:
        return 1
    rows = -(-oh // 2)
    while (rows * ow) % 16:
        rows += 1
    return -(-oh // rows)


OPS["dwconv"].library = LibraryImpl(
    lambda node: _depthwise_kernel(node) is not None,
    lambda node: (_depthwise_kernel(node), {"width": vector_width(), "bands": _row_bands(node)}),
    epilogue=True)
OPS["im2col"].library = LibraryImpl(
    lambda node: not node.attrs.get("flat") and len(node.attrs["kernel"]) == 2 and _window_3x3_s2(node),
    lambda node: (_im2col.im2col_3x3_s2, {"width": vector_width()}))
