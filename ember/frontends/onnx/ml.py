"""The ai.onnx.ml domain (what skl2onnx and onnxmltools write), as decompositions into Ember ops.

Tree ensembles compile branch-free: every tree walks its flattened node table in lock-step for
the ensemble's depth, each step one gather of the node's feature, threshold and children and a
select (a leaf points to itself, so a shallow leaf just stays); the leaves' weights are then
gathered and reduced over the trees. Linear models are a MatMul; the scalers, encoders and
post-transforms are elementwise. String tensors have no native form, so the ops that map
strings (CategoryMapper, string LabelEncoder keys) are refused by name.

At the session boundary (runtime/structured.py), as onnxruntime returns them: ZipMap's list of
{label: probability} dicts is built from the probabilities tensor, and a classifier's string
labels are looked up from the label indices the compiled model returns."""
from __future__ import annotations

import math
from collections import deque

import numpy as np

from ...errors import ModelLoadError, ShapeError
from ...ir import symbolic as S
from ...ir.graph import const_value
from .converters import ConvertError, _arg_extreme, attrs_of

ML_CONVERTERS: dict = {}


def ml_converter(*names):
    def deco(fn):
        for n in names:
            ML_CONVERTERS[n] = fn
        return fn
    return deco


class ZipMapped:
    """ZipMap's output: the probabilities it pairs with labels; only a graph output may hold it."""

    def __init__(self, value):
        self.value = value


class StringLabels:
    """A string label output: the index of each row's label in `labels`. Ember has no string
    tensors; only a graph output (through Identity) may hold it, and the session boundary
    looks the strings up (runtime/structured.py)."""

    def __init__(self, index, labels):
        self.index, self.labels = index, labels


def _class_labels(at, ints_key, who):
    """The class labels: (ints, None) or (None, strings)."""
    strings = at.get("classlabels_strings")
    if strings:
        return None, [x.decode() if isinstance(x, bytes) else x for x in strings]
    ints = at.get(ints_key)
    if not ints:
        raise ModelLoadError(f"{who}: needs {ints_key} or classlabels_strings")
    return [int(v) for v in ints], None


def _label_of(b, index, ints, strings):
    """Labels of class indices (int64)."""
    if strings is not None:
        return StringLabels(index, strings)
    return b.op("gather", [_c(np.asarray(ints, dtype=np.int64)), index], axis=0)


def _c(arr):
    return const_value(np.ascontiguousarray(arr))


def _float_input(b, x, what, keep_double=False):
    """X as float32 (float64 too, with `keep_double`), at least 2-D: [N, F]."""
    if x.dtype != "float32" and not (keep_double and x.dtype == "float64"):
        x = b.op("cast", [x], to="float32")
    if x.type.rank == 1:
        x = b.op("reshape", [x], shape=(1, x.shape[0]))
    if x.type.rank != 2:
        raise ShapeError(f"{what}: X must be [N, F] (or [F]), got shape {list(x.shape)}")
    return x


def _isnan(b, x):
    return b.op("not", [b.op("eq", [x, x])])


def _no_strings(at, *names):
    for k in names:
        if at.get(k):
            raise ConvertError(f"attribute '{k}' holds strings; Ember has no string tensors yet, so strings "
                               f"inside the graph are not supported (encode the categories as integers)")


def _tensor_attr(at, name, legacy=None):
    """An attribute given as a list or as its `_as_tensor` form (numpy), or None."""
    from onnx import numpy_helper
    v = at.get(name + "_as_tensor")
    v = at.get(name, legacy) if v is None else v
    if v is None or isinstance(v, np.ndarray):
        return v
    return np.asarray(v) if isinstance(v, (list, tuple, int, float)) else numpy_helper.to_array(v)


# ------------------------------------------------------------------------- post-transforms

def _post_transform(b, s, kind, who):
    """ONNX-ML's post_transform of scores s [N, C]."""
    if kind in (None, "NONE", 0):
        return s
    dt = s.dtype
    if kind in ("LOGISTIC", 2):
        return b.op("sigmoid", [s])
    if kind in ("SOFTMAX", 1):
        return b.op("softmax", [s], axis=1, log=0)
    if kind in ("SOFTMAX_ZERO", 3):
        m = b.op("reduce_max", [s], axes=[1], keepdims=1)
        nonzero = b.op("gt", [b.op("abs", [s]), b.scalar(1e-7, dt)])
        e = b.op("where", [nonzero, b.op("exp", [b.op("sub", [s, m])]),
                           b.op("mul", [s, b.op("exp", [b.op("neg", [m])])])])
        tot = b.op("reduce_sum", [e], axes=[1], keepdims=1)
        return b.op("where", [b.op("eq", [tot, b.scalar(0, dt)]), b.scalar(0.5, dt), b.op("div", [e, tot])])
    if kind in ("PROBIT", 4):
        return _probit(b, s)
    raise ConvertError(f"{who}: post_transform {kind!r} is not one of NONE, LOGISTIC, SOFTMAX, SOFTMAX_ZERO, PROBIT")


def _probit(b, s):
    """sqrt(2) * erfinv(2s - 1) with the closed-form erfinv approximation (a = 0.147) that the
    ONNX reference and onnxruntime use."""
    dt = s.dtype
    k = lambda v: b.scalar(v, dt)
    v = b.op("sub", [b.op("mul", [s, k(2.0)]), k(1.0)])
    sign = b.op("where", [b.op("lt", [v, k(0.0)]), k(-1.0), k(1.0)])
    x = b.op("mul", [b.op("sub", [k(1.0), v]), b.op("add", [k(1.0), v])])
    ln = b.op("log", [x])
    a = b.op("add", [k(2.0 / (math.pi * 0.147)), b.op("mul", [ln, k(0.5)])])
    c = b.op("mul", [ln, k(1.0 / 0.147)])
    r = b.op("sqrt", [b.op("sub", [b.op("sqrt", [b.op("sub", [b.op("mul", [a, a]), c])]), a])])
    r = b.op("where", [b.op("eq", [x, k(0.0)]), k(0.0), b.op("mul", [sign, r])])
    return b.op("mul", [r, k(1.41421356)])


def _argmax_rows(b, s):
    """The first index of each row's largest score (int64 [N]); a NaN counts as the largest,
    as numpy's argmax has it (PROBIT of a score outside [0, 1] is NaN)."""
    return _arg_extreme(b, s, 1, 0, True, False)


def _labels(b, s, ints, strings):
    return _label_of(b, _argmax_rows(b, s), ints, strings)


def _binary_scores(b, s, kind):
    """The reference's binary case: one score column s1 becomes [1 - s1, s1] (NONE, PROBIT) or
    [-s1, s1] (the others), before the post-transform."""
    s1 = b.op("slice", [s], starts=(0, 0), steps=(1, 1), sizes=(s.shape[0], 1)) if s.shape[1] != 1 else s
    first = b.op("sub", [b.scalar(1.0, s.dtype), s1]) if kind in (None, "NONE", "PROBIT") else b.op("neg", [s1])
    return b.op("concat", [first, s1], axis=1)


# ------------------------------------------------------------------------------ trees

class _Forest:
    """Trees as flat tables over one node numbering: a leaf's children are itself."""

    def __init__(self, feature, threshold, mode, true_next, false_next, missing_true, roots, members=None):
        self.feature = np.asarray(feature, dtype=np.int64)
        self.threshold = np.asarray(threshold)
        self.mode = np.asarray(mode, dtype=np.int64)
        self.true_next = np.asarray(true_next, dtype=np.int64)
        self.false_next = np.asarray(false_next, dtype=np.int64)
        self.missing_true = np.asarray(missing_true, dtype=bool)
        self.roots = np.asarray(roots, dtype=np.int64)
        self.members = members          # [nodes, M] float (NaN padded) for MEMBER nodes, or None
        self.depth = self._depth()

    @property
    def size(self):
        return len(self.feature)

    def _depth(self):
        n = self.size
        bad = [i for i in (*self.true_next, *self.false_next, *self.roots) if not 0 <= i < n]
        if bad:
            raise ModelLoadError(f"tree ensemble: node reference {bad[0]} is outside its {n} nodes")
        depth, seen = 0, np.full(n, -1)
        q = deque((int(r), 0) for r in self.roots)
        while q:
            i, d = q.popleft()
            if d > n:
                raise ModelLoadError("tree ensemble: its trees contain a cycle")
            if self.true_next[i] == i and self.false_next[i] == i:      # a leaf
                depth = max(depth, d)
                continue
            if seen[i] >= d:
                continue
            seen[i] = d
            q.append((int(self.true_next[i]), d + 1))
            q.append((int(self.false_next[i]), d + 1))
        return depth


# ONNX-ML mode names and TreeEnsemble's mode numbers
_MODES = {"BRANCH_LEQ": 0, "BRANCH_LT": 1, "BRANCH_GTE": 2, "BRANCH_GT": 3, "BRANCH_EQ": 4, "BRANCH_NEQ": 5,
          "BRANCH_MEMBER": 6}
_COMPARE = {0: "le", 1: "lt", 2: "ge", 3: "gt", 4: "eq", 5: "eq"}     # (5, NEQ: eq negated)


def _legacy_forest(at, who):
    """The forest of TreeEnsembleClassifier/Regressor's nodes_* attributes; the node index of
    each (tree id, node id) pair."""
    tids = list(at.get("nodes_treeids", []))
    nids = list(at.get("nodes_nodeids", []))
    n = len(tids)
    if n == 0:
        raise ModelLoadError(f"{who}: the ensemble has no nodes")
    cols = ["nodes_featureids", "nodes_modes", "nodes_truenodeids", "nodes_falsenodeids"]
    for k in cols + ["nodes_nodeids"]:
        if len(at.get(k, [])) != n:
            raise ModelLoadError(f"{who}: attribute '{k}' has {len(at.get(k, []))} entries, expected {n} "
                                 f"(one per node, as nodes_treeids)")
    values = _tensor_attr(at, "nodes_values")
    values = np.zeros(n, np.float64) if values is None else values.astype(np.float64)
    if len(values) != n:
        raise ModelLoadError(f"{who}: nodes_values has {len(values)} entries, expected {n}")
    index = {(t, i): k for k, (t, i) in enumerate(zip(tids, nids))}
    modes = [m.decode() if isinstance(m, bytes) else m for m in at["nodes_modes"]]
    mtt = list(at.get("nodes_missing_value_tracks_true", [])) or [0] * n
    feature, mode, tn, fn = [], [], [], []
    for k in range(n):
        if modes[k] == "LEAF":
            feature.append(0), mode.append(0), tn.append(k), fn.append(k)
            continue
        if modes[k] not in _MODES or modes[k] == "BRANCH_MEMBER":
            raise ConvertError(f"{who}: node mode {modes[k]!r} is not supported")
        t = tids[k]
        try:
            tn.append(index[t, at["nodes_truenodeids"][k]])
            fn.append(index[t, at["nodes_falsenodeids"][k]])
        except KeyError as e:
            raise ModelLoadError(f"{who}: node {nids[k]} of tree {t} points to node {e.args[0][1]}, which the tree "
                                 f"does not have") from None
        feature.append(int(at["nodes_featureids"][k]))
        mode.append(_MODES[modes[k]])
    roots = {}
    for k, t in enumerate(tids):
        roots.setdefault(t, k)
    forest = _Forest(feature, values, mode, tn, fn, [bool(m) for m in mtt],
                     [roots[t] for t in sorted(roots)])
    return forest, index


def _walk(b, x, forest, who):
    """The leaf each tree reaches for each row of x [N, F]: int64 [N, trees]."""
    n_feat = x.shape[1]
    if isinstance(n_feat, int) and forest.size and forest.feature.max() >= n_feat:
        raise ShapeError(f"{who}: the trees read feature {int(forest.feature.max())}, but X has {n_feat} features")
    dt = x.dtype
    node = b.op("expand", [_c(forest.roots)], shape=(x.shape[0], len(forest.roots)))
    feature, thr = _c(forest.feature), _c(forest.threshold.astype(dt))
    tn, fn = _c(forest.true_next), _c(forest.false_next)
    branch = forest.true_next != np.arange(forest.size)
    used = sorted(set(forest.mode[branch].tolist())) or [0]
    mode = _c(forest.mode) if len(used) > 1 else None
    nan_matters = bool(forest.missing_true.any()) or 5 in used or 6 in used
    mtt = _c(forest.missing_true) if nan_matters else None
    members = _c(forest.members.astype(dt)) if forest.members is not None else None
    gather = lambda table: b.op("gather", [table, node], axis=0)
    for _ in range(forest.depth):
        xv = b.op("gather_elements", [x, gather(feature)], axis=1)
        t = gather(thr)
        cond = None
        for m in used:
            if m == 6:
                sets = b.op("gather", [members, node], axis=0)                           # [N, T, M]
                xe = b.op("reshape", [xv], shape=(*xv.shape, 1))
                c = b.op("gt", [b.op("reduce_max", [b.op("cast", [b.op("eq", [xe, sets])], to="int32")],
                                     axes=[2], keepdims=0), b.scalar(0, "int32")])
            else:
                c = b.op(_COMPARE[m], [xv, t])
                c = b.op("not", [c]) if m == 5 else c
            cond = c if cond is None else b.op("where", [b.op("eq", [gather(mode), b.scalar(m, "int64")]), c, cond])
        if mtt is not None:
            cond = b.op("where", [_isnan(b, xv), gather(mtt), cond])
        node = b.op("where", [cond, gather(tn), gather(fn)])
    return node


def _aggregate(b, leaves, table, agg, n_trees):
    """Sum / average / min / max over the trees of the leaves' weight rows: [N, targets]. A
    target no reached leaf weighs scores 0 under MIN and MAX, as onnxruntime has it (onnx.reference
    leaves the float's extreme there)."""
    table, touched = table
    w = b.op("gather", [_c(table), leaves], axis=0)                               # [N, T, C]
    if agg in ("MIN", 2, "MAX", 3):
        s = b.op("reduce_min" if agg in ("MIN", 2) else "reduce_max", [w], axes=[1], keepdims=0)
        if touched.all():
            return s
        hit = b.op("reduce_max", [b.op("gather", [_c(touched.astype(np.int8)), leaves], axis=0)], axes=[1], keepdims=0)
        return b.op("where", [b.op("gt", [hit, b.scalar(0, "int8")]), s, b.scalar(0, s.dtype)])
    s = b.op("reduce_sum", [w], axes=[1], keepdims=0)
    if agg in ("AVERAGE", 0):
        s = b.op("div", [s, b.scalar(float(n_trees), s.dtype)])
    return s


def _weight_table(n_nodes, n_targets, nodes, targets, weights, agg, dtype, who):
    """[nodes, targets] weights of each leaf (what MIN / MAX ignore where none is given) and
    which entries a weight was given for."""
    fill = {"MIN": np.finfo(dtype).max, 2: np.finfo(dtype).max,
            "MAX": np.finfo(dtype).min, 3: np.finfo(dtype).min}.get(agg, 0)
    table = np.full((n_nodes, n_targets), fill, dtype=np.float64)
    touched = np.zeros_like(table, dtype=bool)
    for node, t, w in zip(nodes, targets, weights):
        if not 0 <= t < n_targets:
            raise ModelLoadError(f"{who}: a leaf weight targets {t}, outside its {n_targets} targets")
        if agg in ("MIN", 2):
            table[node, t] = min(table[node, t], w)
        elif agg in ("MAX", 3):
            table[node, t] = max(table[node, t], w)
        else:
            table[node, t] += w
        touched[node, t] = True
    return table.astype(dtype), touched


def _leaf_weights(at, index, prefix, n_targets, agg, who):
    tids, nids = at.get(f"{prefix}_treeids", []), at.get(f"{prefix}_nodeids", [])
    ids = at.get(f"{prefix}_ids", [])
    w = _tensor_attr(at, f"{prefix}_weights")
    w = np.zeros(0) if w is None else w
    if not len(tids) == len(nids) == len(ids) == len(w):
        raise ModelLoadError(f"{who}: {prefix}_treeids, _nodeids, _ids and _weights differ in length")
    try:
        nodes = [index[t, i] for t, i in zip(tids, nids)]
    except KeyError as e:
        raise ModelLoadError(f"{who}: a weight is given for node {e.args[0][1]} of tree {e.args[0][0]}, which "
                             f"does not exist") from None
    return _weight_table(len(index), n_targets, nodes, list(ids), list(w), agg, np.float32, who)


@ml_converter("TreeEnsembleRegressor")
def _tree_regressor(b, n, ins, opset):
    at, who = attrs_of(n), f"TreeEnsembleRegressor '{n.name}'"
    x = _float_input(b, ins[0], who)
    forest, index = _legacy_forest(at, who)
    n_targets = int(at.get("n_targets", 1))
    agg = at.get("aggregate_function", "SUM")
    if agg not in ("SUM", "AVERAGE", "MIN", "MAX"):
        raise ConvertError(f"{who}: aggregate_function {agg!r} is not one of SUM, AVERAGE, MIN, MAX")
    table = _leaf_weights(at, index, "target", n_targets, agg, who)
    s = _aggregate(b, _walk(b, x, forest, who), table, agg, len(forest.roots))
    base = _tensor_attr(at, "base_values")
    if base is not None and len(base):
        s = b.op("add", [s, _c(np.broadcast_to(base.astype(np.float32), (n_targets,)).copy())])
    return _post_transform(b, s, at.get("post_transform", "NONE"), who)


@ml_converter("TreeEnsembleClassifier")
def _tree_classifier(b, n, ins, opset):
    at, who = attrs_of(n), f"TreeEnsembleClassifier '{n.name}'"
    ints, strings = _class_labels(at, "classlabels_int64s", who)
    x = _float_input(b, ins[0], who)
    forest, index = _legacy_forest(at, who)
    n_classes = len(ints or strings)
    ids = list(at.get("class_ids", []))
    if n_classes == 0 or (ids and max(ids) >= n_classes):
        raise ModelLoadError(f"{who}: class_ids reach {max(ids) if ids else '-'} but there are {n_classes} labels")
    table = _leaf_weights(at, index, "class", n_classes, "SUM", who)
    s = _aggregate(b, _walk(b, x, forest, who), table, "SUM", len(forest.roots))
    base = _tensor_attr(at, "base_values")
    if base is not None and len(base):
        if len(base) not in (1, n_classes):
            raise ModelLoadError(f"{who}: base_values has {len(base)} entries for {n_classes} classes")
        s = b.op("add", [s, _c(np.broadcast_to(base.astype(np.float32), (n_classes,)).copy())])
    kind = at.get("post_transform", "NONE")
    if len(set(ids)) == 1:
        if n_classes == 1:
            raise ConvertError(f"{who}: a single class label is not supported")
        if n_classes != 2:
            raise ConvertError(f"{who}: weights for one class only but {n_classes} labels")
        s = _binary_scores(b, s, kind)
    s = _post_transform(b, s, kind, who)
    return [_labels(b, s, ints, strings), s]


@ml_converter("TreeEnsemble")
def _tree_ensemble(b, n, ins, opset):
    """ai.onnx.ml opset 5's TreeEnsemble: interior nodes and leaves in separate tables."""
    at, who = attrs_of(n), f"TreeEnsemble '{n.name}'"
    x = ins[0]
    if x.dtype not in ("float16", "float32", "float64"):
        raise ShapeError(f"{who}: X must be float16, float32 or float64, got {x.dtype}")
    out_dtype = x.dtype
    x = _float_input(b, x, who, keep_double=True)
    get = lambda k: _tensor_attr(at, k)
    feat, modes = at.get("nodes_featureids", []), get("nodes_modes")
    splits = get("nodes_splits")
    tn, fn = at.get("nodes_truenodeids", []), at.get("nodes_falsenodeids", [])
    tl, fl = at.get("nodes_trueleafs", []), at.get("nodes_falseleafs", [])
    lt, lw = at.get("leaf_targetids", []), get("leaf_weights")
    roots = at.get("tree_roots", [])
    k = len(feat)
    modes = np.zeros(k, np.int64) if modes is None else modes.astype(np.int64)
    if splits is None or any(len(v) != k for v in (modes, splits, tn, fn, tl, fl)):
        raise ModelLoadError(f"{who}: the nodes_* attributes must all have {k} entries (one per interior node)")
    if lw is None or len(lw) != len(lt):
        raise ModelLoadError(f"{who}: leaf_weights and leaf_targetids differ in length")
    n_leaf = len(lt)
    mtt = list(at.get("nodes_missing_value_tracks_true", [])) or [0] * k
    glob = lambda leaf, i: k + int(i) if leaf else int(i)
    members = None
    if (modes == 6).any():
        mv = get("membership_values")
        if mv is None:
            raise ModelLoadError(f"{who}: BRANCH_MEMBER nodes need membership_values")
        sets, cur = [], []
        for v in mv.tolist():
            if math.isnan(v):
                sets.append(cur)
                cur = []
            else:
                cur.append(v)
        if len(sets) != int((modes == 6).sum()):
            raise ModelLoadError(f"{who}: membership_values has {len(sets)} sets for {int((modes == 6).sum())} "
                                 f"member nodes")
        width = max(1, max(len(s) for s in sets))
        members = np.full((k + n_leaf, width), np.nan)
        for node, s in zip(np.flatnonzero(modes == 6), sets):
            members[node, :len(s)] = s
    for i in range(k):
        if modes[i] not in (0, 1, 2, 3, 4, 5, 6):
            raise ModelLoadError(f"{who}: node {i} has mode {int(modes[i])}, not one of 0..6")
    nodes_t = [glob(tl[i], tn[i]) for i in range(k)] + list(range(k, k + n_leaf))
    nodes_f = [glob(fl[i], fn[i]) for i in range(k)] + list(range(k, k + n_leaf))
    root_g = [k + int(tn[r]) if (tl[r] and fl[r] and tn[r] == fn[r]) else int(r) for r in roots]
    forest = _Forest(list(feat) + [0] * n_leaf, np.concatenate([splits.astype(np.float64), np.zeros(n_leaf)]),
                     list(modes) + [0] * n_leaf, nodes_t, nodes_f, [bool(v) for v in mtt] + [False] * n_leaf,
                     root_g, members)
    n_targets = int(at.get("n_targets", (max(lt) + 1) if len(lt) else 1))
    agg = int(at.get("aggregate_function", 1))
    if agg not in (0, 1, 2, 3):
        raise ConvertError(f"{who}: aggregate_function {agg} is not one of 0..3")
    dt = np.float64 if x.dtype == "float64" else np.float32
    table = _weight_table(k + n_leaf, n_targets, range(k, k + n_leaf), list(lt), lw.astype(np.float64).tolist(),
                          agg, dt, who)
    s = _aggregate(b, _walk(b, x, forest, who), table, agg, len(root_g))
    s = _post_transform(b, s, int(at.get("post_transform", 0)), who)
    return s if s.dtype == out_dtype else b.op("cast", [s], to=out_dtype)


# ---------------------------------------------------------------------------- linear

def _linear(b, x, at, who, n_out_key=None):
    coef = np.asarray(at.get("coefficients", []), dtype=np.float32)
    f = x.shape[1]
    if not isinstance(f, int):
        raise ConvertError(f"{who}: X's feature dim must be known when compiling")
    if coef.size == 0 or coef.size % f:
        raise ShapeError(f"{who}: {coef.size} coefficients do not split into rows of X's {f} features")
    w = coef.reshape(-1, f).T.copy()
    if x.dtype != "float32":
        x = b.op("cast", [x], to="float32")
    s = b.op("matmul", [x, _c(w)])
    icpt = at.get("intercepts")
    if icpt:
        icpt = np.asarray(icpt, dtype=np.float32)
        if icpt.size not in (1, w.shape[1]):
            raise ShapeError(f"{who}: {icpt.size} intercepts for {w.shape[1]} outputs")
        s = b.op("add", [s, _c(icpt)])
    return s


@ml_converter("LinearRegressor")
def _linear_regressor(b, n, ins, opset):
    at, who = attrs_of(n), f"LinearRegressor '{n.name}'"
    s = _linear(b, _float_input(b, ins[0], who), at, who)
    targets = int(at.get("targets", 1))
    if s.shape[1] != targets:
        raise ShapeError(f"{who}: the coefficients give {s.shape[1]} outputs, but targets = {targets}")
    return _post_transform(b, s, at.get("post_transform", "NONE"), who)


@ml_converter("LinearClassifier")
def _linear_classifier(b, n, ins, opset):
    at, who = attrs_of(n), f"LinearClassifier '{n.name}'"
    ints, strings = _class_labels(at, "classlabels_ints", who)
    labels = ints or strings
    s = _linear(b, _float_input(b, ins[0], who), at, who)
    kind = at.get("post_transform", "NONE")
    if s.shape[1] == 1 and len(labels) == 2:
        s = b.op("concat", [b.op("neg", [s]), s], axis=1)
    s = _post_transform(b, s, kind, who)
    if s.shape[1] > 1:
        return [_labels(b, s, ints, strings), s]
    if strings is not None:
        raise ConvertError(f"{who}: one score column with string labels is not supported")
    thr = b.scalar(0.0 if kind in (None, "NONE") else 0.5, "float32")
    hit = b.op("reshape", [b.op("ge", [s, thr])], shape=(s.shape[0],))
    pos = b.scalar(int(labels[0]) if labels else 1, "int64")
    return [b.op("where", [hit, pos, b.scalar(0, "int64")]), s]


# --------------------------------------------------------------------------- SVMs

def _kernel(b, x, sv, at):
    """K(x, sv) [N, V] for the support vectors sv [V, F]."""
    kind = at.get("kernel_type", "LINEAR")
    params = list(at.get("kernel_params", [])) + [0.0, 0.0, 0.0]
    gamma, coef0, degree = float(params[0]), float(params[1]), float(params[2])
    k = lambda v: b.scalar(v, "float32")
    if kind == "RBF":
        # |x - v|^2 = |x|^2 - 2 x.v + |v|^2, a GEMM instead of an [N, V, F] difference
        xx = b.op("reduce_sum", [b.op("mul", [x, x])], axes=[1], keepdims=1)
        vv = _c((sv.astype(np.float64) ** 2).sum(1).astype(np.float32)[None, :])
        d = b.op("add", [b.op("sub", [xx, b.op("mul", [b.op("matmul", [x, _c(sv.T.copy())]), k(2.0)])]), vv])
        d = b.op("max", [d, k(0.0)])
        return b.op("exp", [b.op("mul", [d, k(-gamma)])])
    dot = b.op("matmul", [x, _c(sv.T.copy())])
    if kind == "LINEAR":
        return dot
    z = b.op("add", [b.op("mul", [dot, k(gamma)]), k(coef0)])
    if kind == "POLY":
        return b.op("pow", [z, k(degree)])
    if kind == "SIGMOID":
        return b.op("tanh", [z])
    raise ConvertError(f"kernel_type {kind!r} is not one of LINEAR, POLY, RBF, SIGMOID")


def _support_vectors(at, f, who):
    sv = np.asarray(at.get("support_vectors", []), dtype=np.float32)
    if sv.size % f:
        raise ShapeError(f"{who}: {sv.size} support-vector values do not split into rows of {f} features")
    return sv.reshape(-1, f)


@ml_converter("SVMRegressor")
def _svm_regressor(b, n, ins, opset):
    at, who = attrs_of(n), f"SVMRegressor '{n.name}'"
    x = _float_input(b, ins[0], who)
    f = x.shape[1]
    if not isinstance(f, int):
        raise ConvertError(f"{who}: X's feature dim must be known when compiling")
    coef = np.asarray(at.get("coefficients", []), dtype=np.float32)
    rho = np.asarray(at.get("rho", [0.0]), dtype=np.float32)
    if int(at.get("one_class", 0)):
        raise ConvertError(f"{who}: one_class SVMs are not supported")
    if int(at.get("n_supports", 0)) > 0:
        sv = _support_vectors(at, f, who)
        if len(coef) != len(sv):
            raise ShapeError(f"{who}: {len(coef)} coefficients for {len(sv)} support vectors")
        s = b.op("matmul", [_kernel(b, x, sv, at), _c(coef.reshape(-1, 1))])
    else:           # a linear SVM: the coefficients are the weights
        s = _linear(b, x, {"coefficients": coef.tolist()}, who)
    s = b.op("add", [s, _c(rho[:1])])
    return _post_transform(b, s, at.get("post_transform", "NONE"), who)


@ml_converter("SVMClassifier")
def _svm_classifier(b, n, ins, opset):
    """Support vectors: one-vs-one votes (libsvm's decision), with Platt-scaled pairwise
    probabilities coupled as libsvm does when prob_a / prob_b are given; linear: one score per class."""
    at, who = attrs_of(n), f"SVMClassifier '{n.name}'"
    ints, strings = _class_labels(at, "classlabels_ints", who)
    labels = ints or strings
    x = _float_input(b, ins[0], who)
    f = x.shape[1]
    if not isinstance(f, int):
        raise ConvertError(f"{who}: X's feature dim must be known when compiling")
    coef = np.asarray(at.get("coefficients", []), dtype=np.float32)
    rho = np.asarray(at.get("rho", []), dtype=np.float32)
    per_class = list(at.get("vectors_per_class", []))
    n_cls = len(labels)
    if at.get("prob_a"):
        raise ConvertError(f"{who}: probability estimates (prob_a / prob_b) are not supported yet")
    if not per_class:
        raise ConvertError(f"{who}: a linear SVMClassifier (no support vectors) is not supported yet")
    sv = _support_vectors(at, f, who)
    if sum(per_class) != len(sv) or len(per_class) != n_cls:
        raise ShapeError(f"{who}: vectors_per_class {per_class} do not match {len(sv)} support vectors and "
                         f"{n_cls} classes")
    kmat = _kernel(b, x, sv, at)                                            # [N, V]
    starts = np.concatenate([[0], np.cumsum(per_class)]).astype(int)
    coef = coef.reshape(n_cls - 1, len(sv))
    pairs = [(i, j) for i in range(n_cls) for j in range(i + 1, n_cls)]
    if len(rho) != len(pairs):
        raise ShapeError(f"{who}: {len(rho)} rho values for {len(pairs)} class pairs")
    # the pairwise decision values as one GEMM: column p of w holds the two classes' coefficients
    w = np.zeros((len(sv), len(pairs)), np.float32)
    for p, (i, j) in enumerate(pairs):
        w[starts[i]:starts[i + 1], p] = coef[j - 1, starts[i]:starts[i + 1]]
        w[starts[j]:starts[j + 1], p] = coef[i, starts[j]:starts[j + 1]]
    dec = b.op("add", [b.op("matmul", [kmat, _c(w)]), _c(rho)])               # [N, pairs]
    if n_cls == 2:
        # one decision value; libsvm's sign convention: positive votes for the first class
        scores = b.op("concat", [b.op("neg", [dec]), dec], axis=1)
        pick = b.op("reshape", [b.op("gt", [dec, b.scalar(0.0, "float32")])], shape=(dec.shape[0],))
        lab = _label_of(b, b.op("where", [pick, b.scalar(0, "int64"), b.scalar(1, "int64")]), ints, strings)
        return [lab, _post_transform(b, scores, at.get("post_transform", "NONE"), who)]
    vote_i = np.zeros((len(pairs), n_cls), np.float32)
    vote_j = np.zeros((len(pairs), n_cls), np.float32)
    for p, (i, j) in enumerate(pairs):
        vote_i[p, i] = 1.0
        vote_j[p, j] = 1.0
    win = b.op("cast", [b.op("gt", [dec, b.scalar(0.0, "float32")])], to="float32")
    votes = b.op("add", [b.op("matmul", [win, _c(vote_i)]),
                         b.op("matmul", [b.op("sub", [b.scalar(1.0, "float32"), win]), _c(vote_j)])])
    return [_labels(b, votes, ints, strings), _post_transform(b, dec, at.get("post_transform", "NONE"), who)]


# ------------------------------------------------------------------ transformers

@ml_converter("Scaler")
def _scaler(b, n, ins, opset):
    at, who = attrs_of(n), f"Scaler '{n.name}'"
    x = ins[0]
    if x.dtype != "float32":
        x = b.op("cast", [x], to="float32")
    offset = np.asarray(at.get("offset", [0.0]), np.float32)
    scale = np.asarray(at.get("scale", [1.0]), np.float32)
    f = x.shape[-1] if x.type.rank else 1
    for name, v in (("offset", offset), ("scale", scale)):
        if v.size not in (1, f) and isinstance(f, int):
            raise ShapeError(f"{who}: {name} has {v.size} values for {f} features")
    return b.op("mul", [b.op("sub", [x, _c(offset)]), _c(scale)])


@ml_converter("Normalizer")
def _normalizer(b, n, ins, opset):
    at, who = attrs_of(n), f"Normalizer '{n.name}'"
    x = _float_input(b, ins[0], who)
    norm = at.get("norm", "MAX")
    if norm == "MAX":
        d = b.op("reduce_max", [b.op("abs", [x])], axes=[1], keepdims=1)
    elif norm == "L1":
        d = b.op("reduce_sum", [b.op("abs", [x])], axes=[1], keepdims=1)
    elif norm == "L2":
        d = b.op("sqrt", [b.op("reduce_sum", [b.op("mul", [x, x])], axes=[1], keepdims=1)])
    else:
        raise ConvertError(f"{who}: norm {norm!r} is not one of MAX, L1, L2")
    return b.op("div", [x, b.op("max", [d, b.scalar(1e-30, "float32")])])


@ml_converter("Binarizer")
def _binarizer(b, n, ins, opset):
    x = ins[0]
    thr = float(attrs_of(n).get("threshold", 0.0))
    return b.op("where", [b.op("gt", [x, b.scalar(thr, x.dtype)]), b.scalar(1, x.dtype), b.scalar(0, x.dtype)])


@ml_converter("Imputer")
def _imputer(b, n, ins, opset):
    at, who = attrs_of(n), f"Imputer '{n.name}'"
    x = ins[0]
    if at.get("imputed_value_floats"):
        values, replace = np.asarray(at["imputed_value_floats"]), float(at.get("replaced_value_float", 0.0))
    elif at.get("imputed_value_int64s"):
        values, replace = np.asarray(at["imputed_value_int64s"]), int(at.get("replaced_value_int64", 0))
    else:
        raise ModelLoadError(f"{who}: needs imputed_value_floats or imputed_value_int64s")
    f = x.shape[-1] if x.type.rank else 1
    if isinstance(f, int) and values.size not in (1, f):
        raise ShapeError(f"{who}: {values.size} imputed values for {f} features")
    hit = _isnan(b, x) if isinstance(replace, float) and math.isnan(replace) \
        else b.op("eq", [x, b.scalar(replace, x.dtype)])
    return b.op("where", [hit, _c(values.astype(np.dtype(x.dtype) if x.dtype != "bool" else bool)), x])


@ml_converter("OneHotEncoder")
def _one_hot_encoder(b, n, ins, opset):
    """A category outside cats_int64s encodes as a row of zeros (with zeros=0 onnxruntime
    raises instead; Ember's compiled code has no way to fail a run on a value)."""
    at, who = attrs_of(n), f"OneHotEncoder '{n.name}'"
    _no_strings(at, "cats_strings")
    cats = at.get("cats_int64s")
    if not cats:
        raise ModelLoadError(f"{who}: needs cats_int64s")
    x = ins[0]
    xe = b.op("reshape", [x], shape=(*x.shape, 1))
    c = _c(np.asarray(cats, dtype=np.int64).astype(np.dtype(x.dtype) if x.dtype != "bool" else np.int64))
    return b.op("cast", [b.op("eq", [xe, c])], to="float32")


@ml_converter("LabelEncoder")
def _label_encoder(b, n, ins, opset):
    at, who = attrs_of(n), f"LabelEncoder '{n.name}'"
    _no_strings(at, "keys_strings", "values_strings", "default_string")
    x = ins[0]
    keys = _tensor_attr(at, "keys_tensor")
    vals = _tensor_attr(at, "values_tensor")
    default = _tensor_attr(at, "default_tensor")
    if keys is None:
        keys = next((np.asarray(at[k]) for k in ("keys_int64s", "keys_floats") if at.get(k)), None)
    if vals is None:
        vals = next((np.asarray(at[k], np.int64 if k.endswith("int64s") else np.float32)
                     for k in ("values_int64s", "values_floats") if at.get(k)), None)
    if keys is None or vals is None:
        raise ConvertError(f"{who}: needs numeric keys and values (string keys or values are not supported)")
    if keys.dtype.kind in "OUS" or vals.dtype.kind in "OUS":
        raise ConvertError(f"{who}: string keys or values are not supported")
    if len(keys) != len(vals):
        raise ModelLoadError(f"{who}: {len(keys)} keys but {len(vals)} values")
    if default is None:
        default = np.asarray(at.get("default_int64", -1) if vals.dtype.kind in "iu" else at.get("default_float", -0.0))
    default = np.asarray(default).reshape(-1)[:1].astype(vals.dtype)
    xe = b.op("reshape", [x], shape=(*x.shape, 1))
    hit = b.op("eq", [xe, _c(keys.astype(np.dtype(x.dtype)))])
    if x.dtype.startswith("float") and np.isnan(keys.astype(np.float64)).any():    # a NaN key matches NaN
        nan_key = _c(np.isnan(keys.astype(np.float64)))
        hit = b.op("or", [hit, b.op("and", [_isnan(b, xe), nan_key])])
    iota = _c(np.arange(len(keys), dtype=np.int64))
    first = b.op("reduce_min", [b.op("where", [hit, iota, b.scalar(len(keys), "int64")])],
                 axes=[x.type.rank], keepdims=0)
    return b.op("gather", [_c(np.concatenate([vals, default])), first], axis=0)


@ml_converter("ArrayFeatureExtractor")
def _array_feature_extractor(b, n, ins, opset):
    x, idx = ins
    if x.type.rank == 1:
        x = b.op("reshape", [x], shape=(1, x.shape[0]))
    flat = b.op("reshape", [idx], shape=(S.prod(idx.shape),)) if idx.type.rank != 1 else idx
    if flat.dtype != "int64":
        flat = b.op("cast", [flat], to="int64")
    return b.op("gather", [x, flat], axis=x.type.rank - 1)


@ml_converter("FeatureVectorizer")
def _feature_vectorizer(b, n, ins, opset):
    at, who = attrs_of(n), f"FeatureVectorizer '{n.name}'"
    dims = list(at.get("inputdimensions", []))
    if len(dims) != len(ins):
        raise ModelLoadError(f"{who}: inputdimensions has {len(dims)} entries for {len(ins)} inputs")
    parts = []
    for v, d in zip(ins, dims):
        if v.type.rank == 1:
            v = b.op("reshape", [v], shape=(v.shape[0], 1))
        if v.type.rank != 2:
            raise ShapeError(f"{who}: every input must be 1-D or 2-D, got shape {list(v.shape)}")
        if v.dtype != "float32":
            v = b.op("cast", [v], to="float32")
        w = v.shape[1]
        if not isinstance(w, int):
            raise ConvertError(f"{who}: the inputs' feature dims must be known when compiling")
        if w > d:
            v = b.op("slice", [v], starts=(0, 0), steps=(1, 1), sizes=(v.shape[0], d))
        elif w < d:
            v = b.op("pad", [v, b.scalar(0, "float32")], pre=(0, 0), post=(0, d - w), mode="constant")
        parts.append(v)
    return parts[0] if len(parts) == 1 else b.op("concat", parts, axis=1)


@ml_converter("ZipMap")
def _zip_map(b, n, ins, opset):
    at = attrs_of(n)
    if not at.get("classlabels_int64s") and not at.get("classlabels_strings"):
        raise ModelLoadError(f"ZipMap '{n.name}': needs classlabels_int64s or classlabels_strings")
    x = ins[0]
    if x.type.rank != 2:
        raise ShapeError(f"ZipMap '{n.name}': X must be [N, C], got shape {list(x.shape)}")
    return ZipMapped(x if x.dtype == "float32" else b.op("cast", [x], to="float32"))
