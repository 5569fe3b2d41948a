"""Conformance harness: build small ONNX models, run them on the engine under test and
on the ONNX reference evaluator, and compare every output.

Engine selection (environment variable ``EMBER_TEST_ENGINE``):
  * unset / ``ember`` -> ``ember.InferenceSession`` (the default)
  * ``ort``           -> ``onnxruntime.InferenceSession`` on the CPU provider; used to
                         validate the suite itself before/independently of Ember.
The reference is always ``onnx.reference.ReferenceEvaluator``.

Debugging aid: set ``EMBER_TEST_DUMP_DIR=/some/dir`` and every failing comparison writes
``<n>.onnx`` plus ``<n>.npz`` (the feeds) there, so a failure can be replayed by hand.
"""
from __future__ import annotations

import itertools
import os
from typing import Iterable, Mapping, Sequence

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

ENGINE = os.environ.get("EMBER_TEST_ENGINE", "ember").strip().lower() or "ember"
if ENGINE not in ("ember", "ort"):
    raise RuntimeError(f"EMBER_TEST_ENGINE must be 'ember' or 'ort', not {ENGINE!r}")
IS_ORT = ENGINE == "ort"

# numpy dtype name <-> ONNX element type, for the dtypes the suite exercises.
NP_TO_ONNX = {
    "float32": TensorProto.FLOAT,
    "float16": TensorProto.FLOAT16,
    "float64": TensorProto.DOUBLE,
    "int64": TensorProto.INT64,
    "int32": TensorProto.INT32,
    "int8": TensorProto.INT8,
    "uint8": TensorProto.UINT8,
    "int16": TensorProto.INT16,
    "uint16": TensorProto.UINT16,
    "uint32": TensorProto.UINT32,
    "uint64": TensorProto.UINT64,
    "bool": TensorProto.BOOL,
}
ONNX_TO_NP = {v: np.dtype(k) for k, v in NP_TO_ONNX.items()}

FLOATS = ("float32", "float16")
INTS = ("int32", "int64")
NUMERIC = FLOATS + INTS
ALL = NUMERIC + ("bool",)


def onnx_type(dtype) -> int:
    return NP_TO_ONNX[np.dtype(dtype).name]


def ort_skip(reason: str):
    """pytest mark: skip this case only when the engine under test is onnxruntime."""
    return pytest.mark.skipif(IS_ORT, reason=f"onnxruntime gap (not an Ember skip): {reason}")


# --------------------------------------------------------------------------- tolerances
# (rtol, atol) per dtype and per "kind" of computation.  The comparison is
#   |actual - expected| <= atol * scale + rtol * |expected|
# where `scale` is supplied by the test: 1 for pointwise ops, and the magnitude of the
# summed terms for accumulating ops (MatMul/Conv: K * max|a| * max|b|, ReduceSum: n *
# max|x|, ...), because the absolute rounding error of a sum is proportional to that and
# not to the (possibly cancelled) result.
#   * "exact":          correctly rounded ops (add, mul, div, sqrt, neg, ...)
#   * "transcendental": exp/log/tanh/erf/pow/sigmoid/softmax/gelu..., which engines
#                       typically implement with polynomial approximations (a few ULP).
# float16: one ULP is ~9.8e-4 relative; engines usually compute in float32 and round
# once while the numpy reference rounds after every step, so allow ~2-4 ULP.
TOLERANCES = {
    "float32": {"exact": (1e-5, 1e-6), "transcendental": (5e-5, 5e-6)},
    "float64": {"exact": (1e-12, 1e-13), "transcendental": (1e-9, 1e-10)},
    "float16": {"exact": (2e-3, 1e-3), "transcendental": (4e-3, 2e-3)},
}


def tolerance(dtype, kind: str = "exact") -> tuple[float, float]:
    return TOLERANCES[np.dtype(dtype).name][kind]


# --------------------------------------------------------------------------- model building
def value_info(name: str, dtype, shape) -> onnx.ValueInfoProto:
    """Typed value info; `shape` entries may be ints, str (symbolic dims) or None."""
    return helper.make_tensor_value_info(name, onnx_type(dtype), None if shape is None else list(shape))


def _opset_imports(opset: int, extra: Mapping[str, int] | None = None):
    ops = [helper.make_opsetid("", opset)]
    for dom, ver in (extra or {}).items():
        ops.append(helper.make_opsetid(dom, ver))
    return ops


def build_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Sequence[tuple[str, np.ndarray]],
    outputs: Sequence[str],
    initializers: Sequence[tuple[str, np.ndarray]] = (),
    opset: int = 18,
    input_shapes: Mapping[str, Sequence] | None = None,
    output_shapes: bool = True,
    name: str = "ember_conformance",
) -> onnx.ModelProto:
    """Model from nodes; graph inputs typed from the example arrays (shape overridable per
    input via `input_shapes`, e.g. {"x": ["batch", 16]}).  Output types come from ONNX shape
    inference (falling back to the reference evaluator); output shapes are declared when
    `output_shapes` and inference found them."""
    input_shapes = dict(input_shapes or {})
    g_inputs = [value_info(n, a.dtype, input_shapes.get(n, a.shape)) for n, a in inputs]
    inits = [numpy_helper.from_array(np.asarray(a), n) for n, a in initializers]
    g_outputs = [helper.make_empty_tensor_value_info(o) for o in outputs]
    graph = helper.make_graph(list(nodes), name, g_inputs, g_outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=_opset_imports(opset), producer_name="ember-tests")
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))

    inferred = {}
    try:
        m2 = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
        inferred = {v.name: v for v in itertools.chain(m2.graph.value_info, m2.graph.output)}
    except Exception:  # noqa: BLE001 - fall back to running the reference below
        pass
    ref_outs = None
    for i, oname in enumerate(outputs):
        vi = inferred.get(oname)
        tt = vi.type.tensor_type if vi is not None and vi.type.HasField("tensor_type") else None
        if tt is not None and tt.elem_type:
            elem = tt.elem_type
            shape = None
            if output_shapes and tt.HasField("shape"):
                # unknown dims stay unknown (None); symbolic ones keep their name
                shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]
            elif output_shapes and not input_shapes:   # not even the rank (shape from an input's values)
                if ref_outs is None:
                    ref_outs = ReferenceEvaluator(model).run(None, {n: a for n, a in inputs})
                shape = list(np.asarray(ref_outs[i]).shape)
        else:
            if ref_outs is None:
                feeds = {n: a for n, a in inputs}
                ref_outs = ReferenceEvaluator(model).run(None, feeds)
            elem = onnx_type(np.asarray(ref_outs[i]).dtype)
            shape = list(np.asarray(ref_outs[i]).shape) if output_shapes and not input_shapes else None
        model.graph.output[i].CopyFrom(helper.make_tensor_value_info(oname, elem, shape))
    onnx.checker.check_model(model)
    return model


def node_model(
    op_type: str,
    inputs: Sequence[tuple[str, np.ndarray | None]],
    attrs: Mapping | None = None,
    n_outputs: int | Sequence[str] = 1,
    opset: int = 18,
    const: Iterable[str] = (),
    output_shapes: bool = True,
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Single-node model.  `inputs` is the node's input list in order: (name, array), or
    (name, None) / None for an omitted optional input (trailing omitted ones are dropped).
    Inputs named in `const` become initializers (constants) instead of graph inputs.
    Returns (model, feeds) where feeds holds the graph inputs."""
    const = set(const)
    entries = [e if e is not None else ("", None) for e in inputs]
    while entries and entries[-1][1] is None:
        entries.pop()
    node_inputs, g_in, g_init = [], [], []
    for name, arr in entries:
        if arr is None:
            node_inputs.append("")
            continue
        node_inputs.append(name)
        (g_init if name in const else g_in).append((name, np.asarray(arr)))
    out_names = [f"out{i}" for i in range(n_outputs)] if isinstance(n_outputs, int) else list(n_outputs)
    attrs = {k: v for k, v in (attrs or {}).items() if v is not None}
    node = helper.make_node(op_type, node_inputs, out_names, name=f"{op_type}_under_test", **attrs)
    model = build_model([node], g_in, out_names, g_init, opset=opset, output_shapes=output_shapes)
    return model, dict(g_in)


# --------------------------------------------------------------------------- running
class _OrtSession:
    def __init__(self, model_bytes: bytes):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 4  # failures surface as exceptions
        self._s = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])

    def run(self, output_names, feeds):
        return self._s.run(output_names, feeds)

    def get_inputs(self):
        return self._s.get_inputs()

    def get_outputs(self):
        return self._s.get_outputs()


def make_session(model: onnx.ModelProto):
    """A session of the engine under test (ember, or onnxruntime when EMBER_TEST_ENGINE=ort)."""
    data = model.SerializeToString()
    if IS_ORT:
        return _OrtSession(data)
    import ember

    return ember.InferenceSession(data)


def run_engine(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    return list(make_session(model).run(None, dict(feeds)))


def run_reference(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    with np.errstate(all="ignore"):  # overflow to inf / NaN is part of what is tested
        return [np.asarray(o) for o in ReferenceEvaluator(model).run(None, dict(feeds))]


# --------------------------------------------------------------------------- comparing
def declared_output_dtypes(model: onnx.ModelProto) -> list[np.dtype | None]:
    res = []
    for o in model.graph.output:
        elem = o.type.tensor_type.elem_type if o.type.HasField("tensor_type") else 0
        res.append(ONNX_TO_NP.get(elem))
    return res


def _describe(model, feeds) -> str:
    try:
        text = onnx.printer.to_text(model.graph)
    except Exception:  # noqa: BLE001
        text = "\n".join(str(n) for n in model.graph.node)
    if len(text) > 4000:
        text = text[:4000] + "\n... (truncated)"
    ins = ", ".join(f"{k}: {v.dtype}{list(v.shape)}" for k, v in feeds.items()) or "(none: all constants)"
    return f"feeds: {ins}\nopset: {[(o.domain or 'ai.onnx', o.version) for o in model.opset_import]}\n{text}"


_dump_counter = itertools.count()


def _dump(model, feeds):
    d = os.environ.get("EMBER_TEST_DUMP_DIR")
    if not d:
        return ""
    os.makedirs(d, exist_ok=True)
    n = f"{os.getpid()}_{next(_dump_counter)}"
    onnx.save(model, os.path.join(d, f"{n}.onnx"))
    np.savez(os.path.join(d, f"{n}.npz"), **feeds)
    return f"\n(dumped to {os.path.join(d, n)}.onnx/.npz)"


def compare(actual, expected, *, rtol: float, atol: float, what: str = "output") -> str | None:
    """None when `actual` matches `expected` (dtype, shape, values), else a message."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    if actual.dtype != expected.dtype:
        return f"{what}: dtype {actual.dtype}, expected {expected.dtype}"
    if actual.shape != expected.shape:
        return f"{what}: shape {actual.shape}, expected {expected.shape}"
    if expected.size == 0:
        return None
    if expected.dtype.kind in "biu":
        bad = actual != expected
        if not bad.any():
            return None
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        return (f"{what}: {int(bad.sum())}/{bad.size} elements differ (exact compare); "
                f"first at {idx}: got {actual[idx]!r}, expected {expected[idx]!r}")
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    a_nan, e_nan = np.isnan(a), np.isnan(e)
    e_inf = np.isinf(e)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(a - e)
        allowed = atol + rtol * np.abs(e)
        bad = ~(err <= allowed)  # NaN error -> bad
    bad = np.where(e_nan, ~a_nan, bad)
    bad = np.where(e_inf, a != e, bad)
    if not bad.any():
        return None
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    finite = ~bad | (np.isfinite(a) & np.isfinite(e))
    worst_i = tuple(int(i) for i in np.unravel_index(np.argmax(np.where(bad & finite, err, -1)), e.shape))
    return (f"{what}: {int(bad.sum())}/{bad.size} elements out of tolerance (rtol={rtol:g}, atol={atol:g}); "
            f"first at {idx}: got {actual[idx]!r}, expected {expected[idx]!r}; "
            f"worst at {worst_i}: got {actual[worst_i]!r}, expected {expected[worst_i]!r} "
            f"(|err|={err[worst_i]:.3g})")


def check(
    model: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    *,
    kind: str = "exact",
    scale: float = 1.0,
    rtol: float | None = None,
    atol: float | None = None,
    session=None,
    reference_model: onnx.ModelProto | None = None,
) -> list[np.ndarray]:
    """Run `model` on the engine under test and on the reference and assert every output
    matches: count, dtype (also against the declared graph output type), shape and values
    (bool/int exact; floats NaN/inf-aware within the dtype's tolerance, see TOLERANCES).
    `rtol`/`atol` override the dtype default; `scale` multiplies atol (see TOLERANCES).
    `session` reuses an existing engine session.  `reference_model` (same inputs/outputs)
    is what the reference evaluates instead of `model`, for semantics the reference does
    not implement (e.g. opset-11 Softmax): spell them out with other ops there.
    Returns the engine's outputs."""
    feeds = dict(feeds)
    expected = run_reference(reference_model if reference_model is not None else model, feeds)
    try:
        sess = session if session is not None else make_session(model)
        actual = list(sess.run(None, feeds))
    except Exception as exc:
        raise AssertionError(f"engine ({ENGINE}) failed: {type(exc).__name__}: {exc}\n{_describe(model, feeds)}"
                             + _dump(model, feeds)) from exc
    errors = []
    if len(actual) != len(expected):
        errors.append(f"engine returned {len(actual)} outputs, reference {len(expected)}")
    declared = declared_output_dtypes(model)
    for i, (a, e) in enumerate(zip(actual, expected)):
        name = model.graph.output[i].name
        dt = declared[i] if i < len(declared) else None
        if dt is not None and e.dtype != dt:
            e = e.astype(dt)  # reference quirk: trust the ONNX-declared type
        if dt is not None and np.asarray(a).dtype != dt:
            errors.append(f"output {name!r}: dtype {np.asarray(a).dtype}, but the graph declares {dt}")
            continue
        if e.dtype.kind == "f":
            r0, a0 = tolerance(e.dtype, kind)
            r = r0 if rtol is None else rtol
            t = (a0 if atol is None else atol) * scale
        else:
            r, t = 0.0, 0.0
        msg = compare(a, e, rtol=r, atol=t, what=f"output {name!r}")
        if msg:
            errors.append(msg)
    if errors:
        raise AssertionError("\n".join(errors) + f"\n[engine={ENGINE}]\n" + _describe(model, feeds)
                             + _dump(model, feeds))
    if SYMBOLIC and session is None and not IS_ORT:
        _check_symbolic(model, feeds, actual)
    return actual


# Every op test runs a second time with each input dim declared as a symbol of its own
# (x_0, x_1, y_0 ...): shape-generic code must then decide at run time what static shapes
# decide at compile time (a dim of 1 that broadcasts, two symbols that must agree, a
# symbolic K). EMBER_TEST_SYMBOLIC=0 turns it off.
SYMBOLIC = os.environ.get("EMBER_TEST_SYMBOLIC", "1") != "0"


def symbolic_model(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """`model` with every graph input dim a distinct symbol and output shapes unknown (None
    when it has no input dims to make symbolic)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    init = {i.name for i in m.graph.initializer}
    changed = False
    for vi in m.graph.input:
        if vi.name in init:
            continue
        for i, d in enumerate(vi.type.tensor_type.shape.dim):
            d.Clear()
            d.dim_param = f"{vi.name}_{i}"
            changed = True
    for vo in m.graph.output:
        vo.type.tensor_type.ClearField("shape")
    return m if changed else None


def _check_symbolic(model, feeds, static_outs):
    import ember
    m = symbolic_model(model)
    if m is None:
        return
    try:
        sess = ember.InferenceSession(m.SerializeToString())
    except ember.errors.UnsupportedOpError:
        return      # a form Ember compiles only for static shapes: refused, never wrong
    try:
        outs = sess.run(None, dict(feeds))
    except Exception as exc:
        raise AssertionError(f"symbolic-shape run failed: {type(exc).__name__}: {exc}\n"
                             f"{_describe(m, feeds)}" + _dump(m, feeds)) from exc
    for i, (a, e) in enumerate(zip(outs, static_outs)):
        a, e = np.asarray(a), np.asarray(e)
        msg = None
        if a.dtype != e.dtype or a.shape != e.shape:
            msg = f"{a.dtype}{list(a.shape)}, the static-shape build gave {e.dtype}{list(e.shape)}"
        elif e.dtype.kind == "f":
            r, t = tolerance(e.dtype, "transcendental")
            scale = max(float(np.nanmax(np.abs(e), initial=0.0, where=np.isfinite(e))), 1.0)
            msg = compare(a, e, rtol=r, atol=t * scale, what="output")
        else:
            msg = compare(a, e, rtol=0, atol=0, what="output")
        if msg:
            raise AssertionError(f"symbolic-shape build, output {i}: {msg}\n{_describe(m, feeds)}" + _dump(m, feeds))
