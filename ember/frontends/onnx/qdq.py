"""Integer matmuls from the QDQ format, before conversion.

A QDQ model (what `onnxruntime.quantization.quantize_static` writes by default, and what
PyTorch's and TensorFlow's quantization export) spells an int8 layer in float:

    MatMul(DequantizeLinear(xq, xs, xz), DequantizeLinear(wq, ws, wz))

which, computed as written, is a float32 matmul of the dequantized values. With xq 8-bit,
wq a constant 8-bit matrix and the scales per tensor (ws also per column), it equals

    Cast(MatMulInteger(xq, wq, xz, wz), float) * (xs * ws)

exactly up to float32 rounding (the integer sum is exact, where the float one rounds at every
step): `integer_matmuls` rewrites it so (Gemm too, with its transB, alpha and bias; and Conv
to ConvInteger, the scales per output channel), and the integer op then runs the int16 GEMM
kernel. The DequantizeLinear nodes stay for any other
reader (dead ones are dropped with the rest of the dead code). A pure function of the node
list and the initializers.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

_EIGHT = (TensorProto.UINT8, TensorProto.INT8)


def _attr(n, name, default):
    for a in n.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _size(init) -> int:
    return int(np.prod(init.dims)) if len(init.dims) else 1


def _dq(node, inits, weight_axis=None, weight_rank=2):
    """(q, scale, zero point or '') of a DequantizeLinear that the rewrite may read through:
    float32 scales and per tensor, or for a weight (a constant 2-D int8/uint8 matrix) also
    per channel along `weight_axis`; an activation's zero point given (its type is the
    activation's)."""
    if node is None or node.op_type != "DequantizeLinear" or node.domain not in ("", "ai.onnx"):
        return None
    if _attr(node, "block_size", 0) or _attr(node, "output_dtype", 0) not in (0, TensorProto.FLOAT):
        return None
    q, s, z = (list(node.input) + ["", ""])[:3]
    scale = inits.get(s)
    if scale is None or scale.data_type != TensorProto.FLOAT:
        return None
    zero = inits.get(z) if z else None
    if z and zero is None:
        return None
    sizes = {_size(scale)} | ({_size(zero)} if zero is not None else set())
    if weight_axis is not None:
        w = inits.get(q)
        if w is None or w.data_type not in _EIGHT or len(w.dims) != weight_rank:
            return None
        if zero is not None and zero.data_type != w.data_type:
            return None
        if sizes != {1}:        # per channel: along the axis that becomes the output's columns
            axis = _attr(node, "axis", 1) % weight_rank
            if axis != weight_axis or not sizes <= {1, w.dims[axis]} or len(scale.dims) > 1:
                return None
    elif zero is None or zero.data_type not in _EIGHT or sizes != {1}:
        return None
    return q, s, z


def integer_matmuls(nodes, initializers):
    """[(NodeProto, opset)] with each QDQ MatMul / Gemm over 8-bit values rewritten to
    MatMulInteger, a Cast and the product of the scales (module docstring)."""
    inits = {i.name: i for i in initializers}
    producer = {o: n for n, _ in nodes for o in n.output if o}
    out = []
    for n, opset in nodes:
        rewritten = _rewrite(n, opset, producer, inits) if n.domain in ("", "ai.onnx") else None
        out.extend((r, opset) for r in rewritten) if rewritten else out.append((n, opset))
    return out


def _rewrite(n, opset, producer, inits):
    if n.op_type == "Conv":
        return _rewrite_conv(n, producer, inits)
    if n.op_type == "MatMul" and len(n.input) == 2:
        a_in, w_in, bias, trans_b, alpha, beta = n.input[0], n.input[1], "", 0, 1.0, 1.0
    elif n.op_type == "Gemm" and len(n.input) >= 2 and not _attr(n, "transA", 0):
        a_in, w_in = n.input[0], n.input[1]
        bias = n.input[2] if len(n.input) > 2 else ""
        trans_b, alpha, beta = _attr(n, "transB", 0), float(_attr(n, "alpha", 1.0)), float(_attr(n, "beta", 1.0))
        if bias and beta != 1.0:
            return None
    else:
        return None
    a = _dq(producer.get(a_in), inits)
    w = _dq(producer.get(w_in), inits, weight_axis=0 if trans_b else 1)
    if a is None or w is None:
        return None
    tag = (n.name or n.output[0]) + "_int"
    nodes, wq = [], w[0]
    if trans_b:
        nodes.append(helper.make_node("Transpose", [w[0]], [tag + "_wt"], perm=[1, 0], name=tag + "_wt"))
        wq = tag + "_wt"
    nodes += [
        helper.make_node("MatMulInteger", [a[0], wq, a[2], w[2]], [tag + "_acc"], name=tag),
        helper.make_node("Cast", [tag + "_acc"], [tag + "_f"], to=TensorProto.FLOAT, name=tag + "_f"),
        helper.make_node("Mul", [a[1], w[1]], [tag + "_s"], name=tag + "_s"),
    ]
    if alpha != 1.0:
        nodes.append(helper.make_node("Constant", [], [tag + "_alpha"], name=tag + "_alpha",
                                      value=helper.make_tensor(tag + "_alpha", TensorProto.FLOAT, [], [alpha])))
        nodes.append(helper.make_node("Mul", [tag + "_s", tag + "_alpha"], [tag + "_sa"], name=tag + "_sa"))
        scale = tag + "_sa"
    else:
        scale = tag + "_s"
    y = n.output[0]
    nodes.append(helper.make_node("Mul", [tag + "_f", scale], [tag + "_y" if bias else y], name=tag + "_y"))
    if bias:
        nodes.append(helper.make_node("Add", [tag + "_y", bias], [y], name=n.name or tag + "_bias"))
    return nodes


def _winograd_shaped(n, wi) -> bool:
    """A 3x3 stride-1 convolution with 32 channels or more on both sides: in float32 it runs as
    Winograd F(2x2, 3x3), 2.25x fewer multiplies, which the exact integer kernel's 1.5x
    faster multiply-adds (AVX2) do not make up (ResNet-50's QDQ file on a Zen 3, 1 thread,
    summed kernel times: 94.5 ms with these left in float32 against 98.8 with every conv on
    integers, on a noisy host; float32 alone 93.1). The image size is not known here: small
    images, which float32 runs without Winograd, stay in float32 too."""
    nd = len(wi.dims) - 2
    return (list(wi.dims[2:]) == [3, 3] and list(_attr(n, "strides", [1] * nd)) == [1, 1]
            and list(_attr(n, "dilations", [1] * nd)) == [1, 1] and min(wi.dims[0], wi.dims[1]) >= 32
            and (list(_attr(n, "pads", [0] * 4)) == [1, 1, 1, 1]
                 or _attr(n, "auto_pad", b"NOTSET") in (b"SAME_UPPER", b"SAME_LOWER", "SAME_UPPER", "SAME_LOWER")))


def _rewrite_conv(n, producer, inits):
    """Conv(DQ(x), DQ(w), bias) of one group -> ConvInteger, Cast, the scales per output
    channel ([M, 1, ...]) and the bias. Left in float32: grouped ones (a grouped ConvInteger
    runs as a float64 convolution) and those Winograd serves better."""
    if _attr(n, "group", 1) != 1 or len(n.input) < 2:
        return None
    wi = inits.get(producer[n.input[1]].input[0]) if n.input[1] in producer else None
    if wi is None or len(wi.dims) < 3 or _winograd_shaped(n, wi):
        return None
    a = _dq(producer.get(n.input[0]), inits)
    w = _dq(producer.get(n.input[1]), inits, weight_axis=0, weight_rank=len(wi.dims))
    if a is None or w is None:
        return None
    tag, y = (n.name or n.output[0]) + "_int", n.output[0]
    bias = n.input[2] if len(n.input) > 2 else ""
    channels = [-1] + [1] * (len(wi.dims) - 2)        # (a per-tensor scale: [1, 1, ...])
    conv_attrs = {a_.name: helper.get_attribute_value(a_) for a_ in n.attribute}
    nodes = [
        helper.make_node("ConvInteger", [a[0], w[0], a[2], w[2]], [tag + "_acc"], name=tag, **conv_attrs),
        helper.make_node("Cast", [tag + "_acc"], [tag + "_f"], to=TensorProto.FLOAT, name=tag + "_f"),
        helper.make_node("Mul", [a[1], w[1]], [tag + "_s"], name=tag + "_s"),
        helper.make_node("Constant", [], [tag + "_shape"], name=tag + "_shape",
                         value=helper.make_tensor(tag + "_shape", TensorProto.INT64, [len(channels)], channels)),
        helper.make_node("Reshape", [tag + "_s", tag + "_shape"], [tag + "_sc"], name=tag + "_sc"),
        helper.make_node("Mul", [tag + "_f", tag + "_sc"], [tag + "_y" if bias else y], name=tag + "_y"),
    ]
    if bias:
        nodes += [helper.make_node("Reshape", [bias, tag + "_shape"], [tag + "_b"], name=tag + "_b"),
                  helper.make_node("Add", [tag + "_y", tag + "_b"], [y], name=n.name or tag + "_bias")]
    return nodes
