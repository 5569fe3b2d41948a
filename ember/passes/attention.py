"""fuse_attention: recognise scaled-dot-product attention as exported by BERT and GPT-2,

    softmax(matmul(transpose(Q), KT) * scale + bias, axis=-1) @ transpose(V) -> transpose(.)

(scale as a Mul or Div by a constant scalar, before or after the bias Add, or absent, or
as Muls of Q and of KT each by a scalar, as the dynamo exporter writes SDPA; a
Where(mask, scores, fill) with fill -inf or near the float32 minimum becomes the bias
Where(mask, 0, fill); the probabilities may be NaN-guarded, Where(IsNaN(p), 0, p), which
zeroes the rows a mask hides entirely), and replace it with one `attention` op over Q and V in their
[batch, seq, heads, head_dim] layout, so the three kernels and the transposes around them
become one fused kernel. Applies only where the library kernel does (float32, rank 4,
head_dim a multiple of 16, at most 128).
"""
from __future__ import annotations

import numpy as np

from ..ir.graph import Graph
from ..ir.ops import library_impl
from .driver import rewrite

_BHSD = (0, 2, 1, 3)


def _scalar_const(v):
    if v is None or not v.is_const or v.is_symbolic_const or v.const.size != 1:
        return None
    return float(np.asarray(v.const).reshape(-1)[0])


def _producer(v, op):
    p = v.producer if v is not None else None
    return p if p is not None and p.op == op else None


def _scores(x):
    """Walk back from the softmax input to the QK matmul: (matmul node, scale, bias) or None.
    A Mul/Div met before the bias (applied after it) scales the bias too."""
    scale, bias = 1.0, None
    while True:
        p = x.producer
        if p is None:
            return None
        if p.op == "matmul":
            return p, scale, bias
        if p.op in ("mul", "div") and len(p.inputs) == 2:
            a, c = p.inputs
            k = _scalar_const(c)
            if k is None and p.op == "mul":
                a, c, k = c, a, _scalar_const(a)
            if k is None or k == 0.0:
                return None
            scale *= k if p.op == "mul" else 1.0 / k
            x = a
        elif p.op in ("add", "where") and bias is None:
            if p.op == "add":
                a, c = p.inputs
                if _leads_to_matmul(c) and not _leads_to_matmul(a):
                    a, c = c, a           # the scores are the operand from the matmul
                spec = c
            else:
                cond, a, fill = p.inputs
                # where(c, s, fill) == s + where(c, 0, fill) only when s + fill rounds to
                # fill: a fill of -inf or about the float32 minimum (what exporters use)
                f = _scalar_const(fill)
                if f is None or f > -1e30 or not _leads_to_matmul(a):
                    return None
                spec = ("where", cond, fill)
            bias = spec if scale == 1.0 else ("scaled", spec, scale)
            x = a
        else:
            return None


def _leads_to_matmul(v):
    """Is `v` a matmul result, through a few elementwise steps on its first non-constant input?"""
    for _ in range(4):
        p = v.producer if v is not None else None
        if p is None:
            return False
        if p.op == "matmul":
            return True
        v = next((x for x in p.inputs if x is not None and not x.is_const), None)
    return False


def _bias_value(b, spec, dtype):
    if spec is None:
        return None
    if isinstance(spec, tuple) and spec[0] == "scaled":
        inner = _bias_value(b, spec[1], dtype)
        return b.op("mul", [inner, b.scalar(spec[2], dtype)])
    if isinstance(spec, tuple) and spec[0] == "where":
        return b.op("where", [spec[1], b.scalar(0.0, dtype), spec[2]])
    return spec


def _to_bshd(b, x):
    t = _producer(x, "transpose")
    if t is not None and tuple(t.attrs["perm"]) == _BHSD:
        return t.inputs[0]
    return b.op("transpose", [x], perm=_BHSD)


def _unscaled(v):
    """(x, k) where v = x * k for a constant scalar k, else (v, 1.0)."""
    p = _producer(v, "mul")
    if p is not None and len(p.inputs) == 2:
        for x, c in (p.inputs, p.inputs[::-1]):
            k = _scalar_const(c)
            if k is not None and not x.is_const:
                return x, k
    return v, 1.0


def _nan_guarded(probs):
    """(softmax output, 1) for where(isnan(p), 0, p) (IsNaN as not(p == p)), else (probs, 0)."""
    w = _producer(probs, "where")
    if w is None:
        return probs, 0
    cond, zero, p = w.inputs
    neg = _producer(cond, "not")
    eq = _producer(neg.inputs[0], "eq") if neg is not None else None
    if eq is None or eq.inputs[0] is not p or eq.inputs[1] is not p or _scalar_const(zero) != 0.0:
        return probs, 0
    return p, 1


def fuse_attention(graph: Graph) -> Graph:
    def rule(b, node, ins):
        if node.op != "matmul" or len(ins) != 2:
            return None
        probs, vh = ins
        probs, nan_zero = _nan_guarded(probs)
        sm = _producer(probs, "softmax")
        if sm is None or sm.attrs.get("log") or probs.type.rank != 4 or sm.attrs.get("axis", -1) % 4 != 3:
            return None
        found = _scores(sm.inputs[0])
        if found is None:
            return None
        qk, scale, bias_spec = found
        (qh, sq), (kt, sk) = (_unscaled(v) for v in qk.inputs)
        scale *= sq * sk          # (sq q)(sk k)^T: the bias is added after, unscaled
        if qh.type.rank != 4 or kt.type.rank != 4 or vh.type.rank != 4:
            return None
        if not (tuple(qh.shape[:2]) == tuple(kt.shape[:2]) == tuple(vh.shape[:2]) and vh.shape[2] == kt.shape[3]):
            return None                    # broadcast batch/head dims: leave it to the GEMMs
        dtype = qh.dtype
        bias = _bias_value(b, bias_spec, dtype)
        if bias is None:
            bias = b.op("expand", [b.scalar(0.0, dtype)], shape=(1, 1, 1, kt.shape[3]))
        if bias.type.rank > 4:
            return None
        if bias.type.rank < 4:
            bias = b.op("reshape", [bias], shape=(1,) * (4 - bias.type.rank) + tuple(bias.shape))
        if bias.dtype != dtype:
            return None
        full = (qh.shape[0], qh.shape[1], qh.shape[2], kt.shape[3])
        if any(isinstance(d, int) and isinstance(f, int) and d not in (1, f) for d, f in zip(bias.shape, full)):
            return None
        # a symbolic dim the bias shares with the scores only at run time (a mask whose key dim
        # the exporter computed from another input's shape) is checked by the attention op's
        # guards, as the Add it replaces checked it
        if isinstance(bias.shape[3], int) and bias.shape[3] == 1 != kt.shape[3]:
            bias = b.op("expand", [bias], shape=tuple(bias.shape[:3]) + (kt.shape[3],))
        att = b.op("attention", [_to_bshd(b, qh), kt, _to_bshd(b, vh), bias], scale=scale,
                   **({"nan_zero": 1} if nan_zero else {}))
        if library_impl(att.producer) is None:
            return None                    # the new nodes are dead; dead_code drops them
        return [b.op("transpose", [att], perm=_BHSD)]
    return rewrite(graph, rule)
