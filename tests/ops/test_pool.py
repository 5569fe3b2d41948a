"""Pooling: GlobalAveragePool, MaxPool, AveragePool."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from onnx import helper, numpy_helper

from .harness import FLOATS, build_model, check, node_model, ort_skip
from .strategies import (DIMS, Domain, conv_params, examples, gen, geometry_attrs,
                         pick_consts, rng_from)


@pytest.mark.parametrize("dtype", FLOATS)
@examples(12)
@given(data=st.data())
def test_global_average_pool(dtype, data):
    rng = rng_from(data)
    nd = data.draw(st.integers(1, 3), label="spatial_rank")
    shape = (data.draw(st.sampled_from((1, 2)), label="N"), data.draw(st.sampled_from(DIMS), label="C"))
    shape += tuple(data.draw(st.sampled_from((1, 2, 3, 7, 8, 17)), label="spatial") for _ in range(nd))
    x = gen(rng, dtype, shape, Domain(low=-3.0, high=5.0))
    n = int(np.prod(shape[2:]))
    check(*node_model("GlobalAveragePool", [("x", x)], const=pick_consts(data, ["x"])), scale=5.0 * (1 + np.log2(n)))


def _pool_input(data, rng, dtype, p):
    n = data.draw(st.sampled_from((1, 2)), label="N")
    c = data.draw(st.sampled_from((1, 3, 4, 7)), label="C")
    return gen(rng, dtype, (n, c, *p["spatial"]), Domain(low=-5.0, high=5.0))


def _ceil_mode_ok(p, ceil_mode):
    """With ceil_mode=1 the last window may begin past the input end; ONNX (clarified in
    opset 19) drops windows that start inside the right padding, but implementations
    disagree on the edge, so keep to geometries where the last window starts inside
    input + left padding.  ceil_mode is only combined with explicit pads (NOTSET)."""
    if not ceil_mode:
        return True
    if p["auto_pad"] != "NOTSET":
        return False
    nd = p["nd"]
    pads = p["pads"] or [0] * (2 * nd)
    for i in range(nd):
        ext = (p["kernel"][i] - 1) * p["dilations"][i] + 1
        total = p["spatial"][i] + pads[i] + pads[i + nd]
        out = -(-(total - ext) // p["strides"][i]) + 1
        if (out - 1) * p["strides"][i] >= p["spatial"][i] + pads[i]:
            return False
    return True


def _spec_padding(p, ceil_mode):
    """Per-axis (pad_begin, pad_end, extra_end) exactly as the ONNX spec defines them;
    extra_end is the ceil_mode overhang past the right padding (not counted as padding)."""
    nd, res = p["nd"], []
    for i in range(nd):
        n, k, s, d = p["spatial"][i], p["kernel"][i], p["strides"][i], p["dilations"][i]
        ext = (k - 1) * d + 1
        if p["auto_pad"] in ("SAME_UPPER", "SAME_LOWER"):
            out = -(-n // s)
            total = max(0, (out - 1) * s + ext - n)
            small, big = total // 2, total - total // 2
            pb, pe = (small, big) if p["auto_pad"] == "SAME_UPPER" else (big, small)
        elif p["auto_pad"] == "VALID":
            pb = pe = 0
        else:
            pads = p["pads"] or [0] * (2 * nd)
            pb, pe = pads[i], pads[i + nd]
        span = n + pb + pe - ext
        out = (-(-span // s) if ceil_mode else span // s) + 1
        extra = max(0, (out - 1) * s + ext - (n + pb + pe))
        res.append((pb, pe, extra))
    return res


def _pool_reference(op, x, p, ceil_mode, count_include_pad):
    """onnx.reference's MaxPool/AveragePool get auto_pad SAME_LOWER, 1-D padding and some
    stride/dilation paths wrong, so the reference evaluates an equivalent graph: explicit
    Pad (-inf for Max) + an unpadded, floor-mode pool; for AveragePool, window sums over
    the counted region divided by window counts (both as unpadded AveragePools)."""
    pad = _spec_padding(p, ceil_mode)
    nd = p["nd"]
    begin = [0, 0] + [b for b, _, _ in pad]
    end = [0, 0] + [e + x_ for _, e, x_ in pad]
    pads = np.array(begin + end, dtype=np.int64)
    pool_attrs = dict(kernel_shape=p["kernel"], strides=p["strides"])
    if op == "MaxPool":
        nodes = [helper.make_node("Pad", ["x", "pads", "neg_inf"], ["xp"]),
                 helper.make_node("MaxPool", ["xp"], ["out0"], dilations=p["dilations"], **pool_attrs)]
        inits = [("pads", pads), ("neg_inf", np.array(-np.inf, dtype=x.dtype))]
    else:
        # counted[i] = 1 where an element contributes to the divisor
        counted = np.ones(x.shape, dtype=x.dtype)
        if count_include_pad:
            counted = np.pad(counted, [(0, 0), (0, 0)] + [(b, e) for b, e, _ in pad], constant_values=1)
            counted = np.pad(counted, [(0, 0), (0, 0)] + [(0, ex) for _, _, ex in pad])
        else:
            counted = np.pad(counted, [(0, 0), (0, 0)] + [(b, e + ex) for b, e, ex in pad])
        nodes = [helper.make_node("Pad", ["x", "pads"], ["xp"]),
                 helper.make_node("AveragePool", ["xp"], ["s"], **pool_attrs),
                 helper.make_node("AveragePool", ["counted"], ["c"], **pool_attrs),
                 helper.make_node("Div", ["s", "c"], ["out0"])]
        inits = [("pads", pads), ("counted", counted)]
    assert len(pad) == nd
    return build_model(nodes, [("x", x)], ["out0"], inits, opset=18)


def _same_overhang(p):
    """SAME_* where the formula's total padding is negative (stride > dilated kernel and
    the windows skip the input tail): ONNX clamps to 0 padding, onnxruntime rejects it."""
    if not p["auto_pad"].startswith("SAME"):
        return False
    for n, k, s, d in zip(p["spatial"], p["kernel"], p["strides"], p["dilations"]):
        if (-(-n // s) - 1) * s + (k - 1) * d + 1 - n < 0:
            return True
    return False


def _maxpool_case(dtype, data, p):
    rng = rng_from(data)
    ceil_mode = data.draw(st.sampled_from([None, 0, 1]), label="ceil_mode")
    if not _ceil_mode_ok(p, ceil_mode):
        ceil_mode = 0
    x = _pool_input(data, rng, dtype, p)
    attrs = geometry_attrs(p, data)
    attrs.update(kernel_shape=p["kernel"], ceil_mode=ceil_mode)
    model, feeds = node_model("MaxPool", [("x", x)], attrs)
    check(model, feeds, reference_model=_pool_reference("MaxPool", x, p, ceil_mode, None))


def _averagepool_case(dtype, data, p):
    rng = rng_from(data)
    ceil_mode = data.draw(st.sampled_from([None, 0, 1]), label="ceil_mode")
    if not _ceil_mode_ok(p, ceil_mode):
        ceil_mode = 0
    x = _pool_input(data, rng, dtype, p)
    attrs = geometry_attrs(p, data, with_dilations=False)
    cip = data.draw(st.sampled_from([None, 0, 1]), label="count_include_pad")
    attrs.update(kernel_shape=p["kernel"], ceil_mode=ceil_mode, count_include_pad=cip)
    model, feeds = node_model("AveragePool", [("x", x)], attrs)
    check(model, feeds, scale=5.0, reference_model=_pool_reference("AveragePool", x, p, ceil_mode, cip))


@pytest.mark.parametrize("dtype", FLOATS)
@examples(25)
@given(data=st.data())
def test_maxpool(dtype, data):
    p = data.draw(conv_params(pool=True), label="geometry")
    assume(not _same_overhang(p))  # covered by test_pool_same_stride_exceeds_kernel
    _maxpool_case(dtype, data, p)


@pytest.mark.parametrize("dtype", FLOATS)
@examples(25)
@given(data=st.data())
def test_averagepool(dtype, data):
    p = data.draw(conv_params(pool=True, dilations=False), label="geometry")
    assume(not _same_overhang(p))
    _averagepool_case(dtype, data, p)


@ort_skip("MaxPool/AveragePool with auto_pad SAME_* fail with 'padding values must be non-negative' "
          "when stride > kernel (ONNX clamps the padding to 0)")
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@examples(10)
@given(data=st.data())
def test_pool_same_stride_exceeds_kernel(op, data):
    p = data.draw(conv_params(pool=True, dilations=op == "MaxPool", auto_pads=("SAME_UPPER", "SAME_LOWER")),
                  label="geometry")
    i = data.draw(st.integers(0, p["nd"] - 1), label="overhang_axis")
    ext = (p["kernel"][i] - 1) * p["dilations"][i] + 1
    p["strides"][i] = ext + data.draw(st.integers(1, 2), label="stride_excess")
    p["spatial"][i] = p["strides"][i] * data.draw(st.integers(1, 3), label="windows")
    assert _same_overhang(p)
    (_maxpool_case if op == "MaxPool" else _averagepool_case)("float32", data, p)


@pytest.mark.parametrize("shape,pads,ceil", [((1, 64, 112, 112), (1, 1, 1, 1), 0), ((2, 3, 7, 9), (1, 1, 1, 1), 0),
                                             ((1, 5, 33, 41), (1, 1, 1, 1), 1), ((1, 2, 1, 1), (1, 1, 1, 1), 0),
                                             ((1, 4, 18, 36), (1, 1, 0, 0), 0), ((1, 3, 2, 2), (1, 1, 1, 1), 0)])
def test_max_pool_3x3_stride2_library_kernel(shape, pads, ceil):
    """The ResNet stem's max pool runs as a separable library kernel (row maxima over
    de-interleaved columns, shared rows carried over); odd sizes, 1x1 and 2x2 images, ceil
    mode and asymmetric pads against the reference, with negative inputs so a 0 fill would
    show."""
    from ember.runtime.compiler import compile_model

    x = np.random.default_rng(sum(shape)).uniform(-5.0, -0.5, shape).astype(np.float32)
    model, feeds = node_model("MaxPool", [("x", x)], dict(kernel_shape=[3, 3], strides=[2, 2], pads=list(pads),
                                                          ceil_mode=ceil))
    assert [k for _, k, _ in compile_model(model.SerializeToString(), use_cache=False).kernel_info] == ["library"]
    check(model, feeds)


@pytest.mark.parametrize("op", ["Conv", "MaxPool", "AveragePool", "AveragePoolCounted", "LpPool"])
@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
def test_same_auto_pad_over_symbolic_spatial_dims(op, auto_pad):
    """auto_pad SAME with the image's height and width symbolic (as tf2onnx writes Keras' SAME
    for dynamic images; one dim named '-1'): one build serves every size, each padded by the
    amounts its size modulo the stride gives; against onnxruntime at sizes 1, odd and even."""
    import onnxruntime as ort
    from onnx import TensorProto

    import ember
    rng = np.random.default_rng(5)
    w = rng.normal(size=(4, 3, 3, 2)).astype(np.float32)
    at = dict(kernel_shape=[3, 2], strides=[2, 3])
    if op == "AveragePoolCounted":
        op, at = "AveragePool", dict(at, count_include_pad=1)
    ins = ["x", "w"] if op == "Conv" else ["x"]
    node = helper.make_node(op, ins, ["y"], auto_pad=auto_pad, **at)
    g = helper.make_graph([node], "same", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "-1", "W"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(w, "w")] if op == "Conv" else [])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    sess = ember.InferenceSession(m.SerializeToString())
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    for h, wd in [(1, 1), (11, 8), (12, 7), (5, 13)]:
        x = rng.normal(size=(2, 3, h, wd)).astype(np.float32)
        np.testing.assert_allclose(sess.run(None, {"x": x})[0], want.run(None, {"x": x})[0], rtol=1e-5, atol=1e-5)
