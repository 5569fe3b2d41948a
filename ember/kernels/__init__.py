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
  * `recurrent`: the recurrences of LSTM, GRU and RNN as native loops over time, for the
    `recurrence` op the ONNX frontend forms after the input projections' GEMM.
  * `igemm`: exact integer GEMM of int16 operands (the quantized matmuls and convolutions,
    zero points subtracted), for the `matmul_int` and `weights_matmul_int` ops.
The kernels that write each output element once (all but softmax and im2col) take the
pointwise kernel after them as a fused epilogue (BatchNorm, ReLU, a residual ...).
Each op's definition in `ember.ir.ops` says when its kernel applies and names the function
here that picks the kernel and its compile-time parameters (`LibraryImpl`): importing this
package changes no table, and it is imported only when a model lowers such a node.
"""
from __future__ import annotations

from ..ir.ops import window_3x3_s1, window_3x3_s2
from . import attention as _attention
from . import depthwise as _depthwise
from . import igemm as _igemm
from . import im2col as _im2col
from . import nn as _nn
from . import pool as _pool
from . import recurrent as _recurrent
from . import winograd as _winograd


def lower_softmax(node, target):
    return _nn.softmax_rows, {}


def lower_recurrence(node, target):
    at = node.attrs
    # rows per task share each load of R^T: 4 rows x 4 LSTM gates of accumulators, the 4 gate
    # vectors of R^T and a broadcast h fit 32 vector registers; 2 rows fit 16
    assert 16 % target.f32_lanes == 0       # a vector within one packed block of R^T
    params = {"reverse": int(at.get("reverse", 0)), "clip": float(at.get("clip", 0.0)), "width": target.f32_lanes,
              "rows": 4 if target.vector_registers >= 32 else 2}
    if at["cell"] == "gru":
        params["linear_before_reset"] = int(at.get("linear_before_reset", 0))
    return {"lstm": _recurrent.lstm_sequence, "gru": _recurrent.gru_sequence,
            "rnn": _recurrent.rnn_sequence}[at["cell"]], params


def int_gemm_tile(target) -> dict:
    """Rows (MR) and blocks of 16 columns (NB) of an integer GEMM tile, and the int32 lanes.

    A tile holds MR x NB * (16 / width) accumulators; per k pair it also needs the tile's B
    vectors, the broadcast pair of A and one product: all in registers. AVX2's 16 give 5 rows
    x 2 vectors (14 registers; at 6 x 2 all 16 are needed and LLVM spills); AVX-512's 32 give
    12 rows x 2 blocks (28)."""
    width = target.lanes(32)
    per_block = max(16 // width, 1)
    nb = 1 if target.vector_registers < 32 or per_block > 1 else 2
    vecs = nb * per_block
    mr = max(1, (target.vector_registers - vecs - 4) // vecs)
    return {"MR": min(mr, 12), "NB": nb, "width": min(width, 16)}


def lower_matmul_int(node, target):
    return _igemm.matmul_i16, int_gemm_tile(target)


def lower_weights_matmul_int(node, target):
    """The same register budget: MR channels x one block of 16 pixels (16 / width vectors)."""
    t = int_gemm_tile(target)
    per_block = max(16 // t["width"], 1)
    return _igemm.weights_matmul_i16, {"MR": max(1, min(12, (target.vector_registers - per_block - 4) // per_block)),
                                       "width": t["width"]}


def lower_pack_columns_int(node, target):
    return _igemm.pack_columns_i16, {}


def lower_layer_norm(node, target):
    return _nn.layer_norm_rows, {"epsilon": float(node.attrs["epsilon"])}


def attention_tile(d: int, target) -> dict:
    """Query rows per task (R), key vectors per block (KB) and vector width for attention.

    With 32 vector registers (AVX-512, NEON) R rows x (d/width accumulators + KB score
    vectors) fit the accumulator registers, and blocks of 64 keys halve the softmax's
    per-block reductions and rescaling against 32 keys (head_dim 64: 3 rows x 64 keys 5-7%
    faster than 4 x 32 at 128-384 keys; 128: 2 x 64 19% faster than 2 x 32). With 16 the
    accumulators cannot stay in registers at any R, so the tile is chosen for the score
    phase: R x KB score vectors + KB key vectors + the broadcast query fit, and each key
    vector loaded serves R rows (Zen 3, GPT-2's 12 layers at 1 thread: 3 rows x 2 vectors
    of 8 keys 11.7 ms, 2 x 4 12.8, 1 x 4 of 16 lanes 17.8)."""
    width = target.f32_lanes
    if target.vector_registers < 32:
        kb, r = 2, 3
        assert r * kb + kb + 1 <= target.vector_registers
        return {"R": r, "KB": kb, "width": width}
    kb = max(min(64 // width, 4), 1)
    per_row = d // width + kb
    return {"R": max(1, min(4, target.accumulator_registers // per_row)), "KB": kb, "width": width}


def lower_attention(node, target):
    d = node.inputs[2].shape[-1]
    return _attention.attention_bshd, {"scale": float(node.attrs["scale"]), "D": d,
                                       "nan_zero": int(node.attrs.get("nan_zero", 0)), **attention_tile(d, target)}


# (the window kernels keep arrays of vectors live: at twice the register width they spill)
def lower_winograd_input(node, target):
    return _winograd.winograd_input, {"width": target.f32_lanes}


def lower_winograd_output(node, target):
    return _winograd.winograd_output, {"width": target.f32_lanes}


def lower_max_pool(node, target):
    return _pool.max_pool_3x3_s2, {"width": target.f32_lanes}


def lower_im2col(node, target):
    return _im2col.im2col_3x3_s2, {"width": target.f32_lanes}


def _row_bands(node, target) -> int:
    """Bands of output rows for the depthwise kernels' tasks (their docstring): two halves,
    as the pixel-split 1x1 convolutions around them give two threads; only where the second
    band's output starts on a cache line (a line two cores write moves between them on every
    write: false sharing once per channel), and on images of 32 rows or more (at 28x28 the
    extra input rows and shorter runs cost more than they save: 22 -> 27 us at 1 thread)."""
    oh, ow = node.attrs["out"]
    line = target.line_floats
    if target.cores < 2 or not (isinstance(oh, int) and isinstance(ow, int)) or (oh * ow) % line or oh < 32:
        return 1
    rows = -(-oh // 2)
    while (rows * ow) % line:
        rows += 1
    return -(-oh // rows)


def lower_depthwise(node, target):
    kern = _depthwise.depthwise_3x3_s2 if window_3x3_s2(node) else _depthwise.depthwise_3x3_s1
    assert kern is _depthwise.depthwise_3x3_s2 or window_3x3_s1(node)
    return kern, {"width": target.f32_lanes, "bands": _row_bands(node, target)}
