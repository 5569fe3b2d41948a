"""The ai.onnx.ml domain: tree ensembles (walked branch-free), linear models, SVMs, scalers and
encoders. Random trees and single nodes are checked against onnx.reference on random shapes
(the batch dim symbolic too, NaN features included); the models scikit-learn users export with
skl2onnx are checked against scikit-learn's own predictions: labels equal, probabilities
within 1e-5."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import ember

ort = pytest.importorskip("onnxruntime")

from .harness import check, symbolic_model
from .strategies import examples, rng_from

MODES = ["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ"]


def _model(node, x, ml_opset=3, outputs=None, x_dtype=TensorProto.FLOAT, extra_inputs=()):
    outs = [helper.make_tensor_value_info(o, t, None) for o, t in (outputs or [("Y", TensorProto.FLOAT)])]
    ins = [helper.make_tensor_value_info("X", x_dtype, list(x.shape))] + list(extra_inputs)
    g = helper.make_graph([node], "ml", ins, outs)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("ai.onnx.ml", ml_opset)])
    m.ir_version = 10
    return m


def _random_trees(rng, n_trees, n_feat, depth, modes, int_thresholds):
    """Legacy nodes_* attributes of `n_trees` random trees (node ids shuffled per tree, so
    the root is not always id 0)."""
    cols = {k: [] for k in ("nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_values", "nodes_modes",
                            "nodes_truenodeids", "nodes_falsenodeids", "nodes_missing_value_tracks_true")}
    leaves = []
    for t in range(n_trees):
        nodes, tree_leaves = [], []

        def grow(d):
            i = len(nodes)
            nodes.append(None)
            if d == 0 or (d < depth and rng.random() < 0.3):
                nodes[i] = ("LEAF",)
                tree_leaves.append(i)
                return i
            tr, fa = grow(d - 1), grow(d - 1)
            thr = float(rng.integers(-2, 3)) if int_thresholds else float(rng.normal())
            nodes[i] = (rng.choice(modes), int(rng.integers(n_feat)), thr, tr, fa, int(rng.integers(2)))
            return i

        grow(depth)
        ids = rng.permutation(len(nodes)) + 5       # ids need not be 0..n-1
        order = rng.permutation(len(nodes))
        order = np.concatenate([[0], order[order != 0]])     # the root first: the reference starts there
        for i in order:
            nd = nodes[i]
            cols["nodes_treeids"].append(t)
            cols["nodes_nodeids"].append(int(ids[i]))
            if nd[0] == "LEAF":
                for k, v in (("nodes_featureids", 0), ("nodes_values", 0.0), ("nodes_modes", "LEAF"),
                             ("nodes_truenodeids", 0), ("nodes_falsenodeids", 0),
                             ("nodes_missing_value_tracks_true", 0)):
                    cols[k].append(v)
            else:
                mode, f, thr, tr, fa, mtt = nd
                for k, v in (("nodes_featureids", f), ("nodes_values", thr), ("nodes_modes", str(mode)),
                             ("nodes_truenodeids", int(ids[tr])), ("nodes_falsenodeids", int(ids[fa])),
                             ("nodes_missing_value_tracks_true", mtt)):
                    cols[k].append(v)
        leaves += [(t, int(ids[i])) for i in tree_leaves]
    return cols, leaves


def _features(rng, n, f, int_thresholds):
    x = rng.integers(-3, 4, (n, f)).astype(np.float32) if int_thresholds else rng.normal(size=(n, f)).astype(np.float32)
    x[rng.random((n, f)) < 0.1] = np.nan
    return x


@examples(12)
@given(data=st.data())
def test_tree_ensemble_regressor_matches_reference(data):
    rng = rng_from(data)
    n = data.draw(st.sampled_from([1, 3, 17]), label="rows")
    f = data.draw(st.integers(1, 9), label="features")
    depth = data.draw(st.integers(0, 6), label="depth")
    n_trees = data.draw(st.integers(1, 6), label="trees")
    targets = data.draw(st.integers(1, 3), label="targets")
    modes = data.draw(st.sampled_from([["BRANCH_LEQ"], ["BRANCH_LT"], MODES]), label="modes")
    agg = data.draw(st.sampled_from(["SUM", "AVERAGE", "MIN", "MAX"]), label="aggregate")
    ints = data.draw(st.booleans(), label="integer thresholds")
    cols, leaves = _random_trees(rng, n_trees, f, depth, modes, ints)
    # (under MIN / MAX every leaf weighs every target: a target no leaf weighs scores 0 in
    # onnxruntime and Ember, the float's extreme in onnx.reference; the opset-5 test covers it)
    picks = (lambda: range(targets)) if agg in ("MIN", "MAX") else (lambda: rng.integers(targets, size=2))
    tw = [(t, i, int(c), float(rng.normal())) for t, i in leaves for c in picks()]
    attrs = dict(cols, n_targets=targets, aggregate_function=agg,
                 target_treeids=[w[0] for w in tw], target_nodeids=[w[1] for w in tw],
                 target_ids=[w[2] for w in tw], target_weights=[w[3] for w in tw])
    if data.draw(st.booleans(), label="base values"):
        attrs["base_values"] = rng.normal(size=targets).tolist()
    x = _features(rng, n, f, ints)
    node = helper.make_node("TreeEnsembleRegressor", ["X"], ["Y"], domain="ai.onnx.ml", **attrs)
    check(_model(node, x), {"X": x}, rtol=1e-5, atol=1e-5)


@examples(12)
@given(data=st.data())
def test_tree_ensemble_classifier_matches_reference(data):
    rng = rng_from(data)
    n = data.draw(st.sampled_from([1, 4, 9]), label="rows")
    f = data.draw(st.integers(1, 7), label="features")
    depth = data.draw(st.integers(1, 5), label="depth")
    n_trees = data.draw(st.integers(1, 5), label="trees")
    n_cls = data.draw(st.integers(2, 4), label="classes")
    binary = n_cls == 2 and data.draw(st.booleans(), label="one score column")
    post = data.draw(st.sampled_from(["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO"]), label="post")
    cols, leaves = _random_trees(rng, n_trees, f, depth, ["BRANCH_LEQ", "BRANCH_GT"], False)
    cw = [(t, i, 0 if binary else c, float(rng.uniform(-1, 1))) for t, i in leaves for c in range(n_cls)
          if binary is False or c == 0]
    attrs = dict(cols, post_transform=post, classlabels_int64s=list(range(10, 10 + n_cls)),
                 class_treeids=[w[0] for w in cw], class_nodeids=[w[1] for w in cw],
                 class_ids=[w[2] for w in cw], class_weights=[w[3] for w in cw])
    x = _features(rng, n, f, False)
    node = helper.make_node("TreeEnsembleClassifier", ["X"], ["label", "Y"], domain="ai.onnx.ml", **attrs)
    m = _model(node, x, outputs=[("label", TensorProto.INT64), ("Y", TensorProto.FLOAT)])
    check(m, {"X": x}, rtol=1e-5, atol=1e-6)


@examples(10)
@given(data=st.data())
def test_tree_ensemble_opset5_matches_reference(data):
    """TreeEnsemble (ai.onnx.ml 5): interior nodes and leaves in their own tables, set
    membership splits, double inputs. Checked against onnxruntime: onnx.reference reads a
    one-leaf tree's weight from the wrong table entry (and scores 0 for it)."""
    rng = rng_from(data)
    n = data.draw(st.sampled_from([1, 5]), label="rows")
    f = data.draw(st.integers(1, 5), label="features")
    n_trees = data.draw(st.integers(1, 4), label="trees")
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    nodes = dict(feat=[], split=[], mode=[], tn=[], tl=[], fn=[], fl=[], mtt=[])
    leaf_t, leaf_w, members, roots = [], [], [], []

    def leaf():
        leaf_t.append(int(rng.integers(2)))
        leaf_w.append(float(rng.normal()))
        return len(leaf_t) - 1, 1

    def grow(d):
        if d == 0 or rng.random() < 0.25:
            return leaf()
        i = len(nodes["feat"])
        for k in nodes:
            nodes[k].append(0)
        mode = int(rng.integers(7))
        nodes["feat"][i], nodes["mode"][i] = int(rng.integers(f)), mode
        nodes["split"][i] = float(rng.integers(-2, 3))
        nodes["mtt"][i] = int(rng.integers(2))
        if mode == 6:
            members.extend(sorted(set(rng.integers(-2, 3, 2).astype(float).tolist())) + [np.nan])
        nodes["tn"][i], nodes["tl"][i] = grow(d - 1)
        nodes["fn"][i], nodes["fl"][i] = grow(d - 1)
        return i, 0

    for _ in range(n_trees):
        r, is_leaf = grow(3)
        if is_leaf:         # a one-leaf tree: a node whose two branches are that leaf
            i = len(nodes["feat"])
            for k, v in zip(nodes, (0, 0.0, 0, r, 1, r, 1, 0)):
                nodes[k].append(v)
            r = i
        roots.append(r)
    x = rng.integers(-2, 3, (n, f)).astype(dtype)
    x[rng.random((n, f)) < 0.1] = np.nan
    tensor = lambda a, dt: numpy_helper.from_array(np.asarray(a, dt))
    attrs = dict(nodes_featureids=nodes["feat"], nodes_splits=tensor(nodes["split"], dtype),
                 nodes_modes=tensor(nodes["mode"], np.uint8), nodes_truenodeids=nodes["tn"],
                 nodes_trueleafs=nodes["tl"], nodes_falsenodeids=nodes["fn"], nodes_falseleafs=nodes["fl"],
                 nodes_missing_value_tracks_true=nodes["mtt"], leaf_targetids=leaf_t,
                 leaf_weights=tensor(leaf_w, dtype), tree_roots=roots, n_targets=2,
                 aggregate_function=int(data.draw(st.integers(0, 3), label="aggregate")))
    if members:
        attrs["membership_values"] = tensor(members, dtype)
    node = helper.make_node("TreeEnsemble", ["X"], ["Y"], domain="ai.onnx.ml", **attrs)
    tt = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    m = _model(node, x, ml_opset=5, outputs=[("Y", tt)], x_dtype=tt)
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"X": x})[0]
    for model in (m, symbolic_model(m)):
        got = ember.InferenceSession(model.SerializeToString()).run(None, {"X": x})[0]
        assert got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@examples(10)
@given(data=st.data())
def test_linear_classifier_and_regressor_match_reference(data):
    rng = rng_from(data)
    n = data.draw(st.sampled_from([1, 3, 8]), label="rows")
    f = data.draw(st.integers(1, 19), label="features")
    n_cls = data.draw(st.integers(1, 4), label="classes")
    post = data.draw(st.sampled_from(["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO", "PROBIT"]), label="post")
    x = rng.normal(size=(n, f)).astype(np.float32)
    rows = 1 if n_cls == 2 and data.draw(st.booleans(), label="one row") else n_cls
    coef = rng.normal(size=rows * f).tolist()
    labels = list(range(3, 3 + max(n_cls, 2))) if rows > 1 or n_cls == 2 else [1]
    if post == "PROBIT":        # probit is defined on probabilities
        x, coef = np.abs(x) / (4 * f), np.abs(coef).tolist()
    node = helper.make_node("LinearClassifier", ["X"], ["label", "Y"], domain="ai.onnx.ml", coefficients=coef,
                            intercepts=rng.normal(size=rows).tolist() if post != "PROBIT" else [0.01] * rows,
                            classlabels_ints=labels, post_transform=post)
    check(_model(node, x, outputs=[("label", TensorProto.INT64), ("Y", TensorProto.FLOAT)]), {"X": x},
          rtol=1e-5, atol=1e-5)
    t = data.draw(st.integers(1, 3), label="targets")
    node = helper.make_node("LinearRegressor", ["X"], ["Y"], domain="ai.onnx.ml", targets=t,
                            coefficients=rng.normal(size=t * f).tolist(), intercepts=rng.normal(size=t).tolist())
    check(_model(node, x), {"X": x}, rtol=1e-5, atol=1e-5)


@examples(10)
@given(data=st.data())
def test_transformers_match_reference(data):
    """Scaler, Normalizer, Binarizer, Imputer, OneHotEncoder, LabelEncoder, ArrayFeatureExtractor
    and FeatureVectorizer, on random shapes with lengths off the vector width."""
    rng = rng_from(data)
    n = data.draw(st.sampled_from([1, 2, 5]), label="rows")
    f = data.draw(st.sampled_from([1, 3, 17]), label="features")
    x = rng.normal(size=(n, f)).astype(np.float32)
    ml = lambda op, ins=("X",), **at: helper.make_node(op, list(ins), ["Y"], domain="ai.onnx.ml", **at)
    check(_model(ml("Scaler", offset=rng.normal(size=f).tolist(), scale=rng.normal(size=f).tolist()), x), {"X": x},
          rtol=1e-6, atol=1e-6)
    for norm in ("MAX", "L1", "L2"):
        check(_model(ml("Normalizer", norm=norm), x), {"X": x}, rtol=1e-6, atol=1e-6)
    check(_model(ml("Binarizer", threshold=0.3), x), {"X": x})
    xn = x.copy()
    xn[rng.random(x.shape) < 0.3] = np.nan
    check(_model(ml("Imputer", imputed_value_floats=rng.normal(size=f).tolist(), replaced_value_float=np.nan), xn),
          {"X": xn})
    xi = rng.integers(0, 6, (n, f)).astype(np.int64)
    m = _model(ml("OneHotEncoder", cats_int64s=[0, 2, 3, 5], zeros=1), xi, x_dtype=TensorProto.INT64)
    check(m, {"X": xi})
    keys = rng.permutation(8)[:5].tolist()
    m = _model(ml("LabelEncoder", keys_int64s=keys, values_int64s=rng.integers(-9, 9, 5).tolist(), default_int64=-7),
               xi, outputs=[("Y", TensorProto.INT64)], x_dtype=TensorProto.INT64)
    check(m, {"X": xi})
    idx = rng.integers(0, f, data.draw(st.integers(1, 4), label="picked")).astype(np.int64)
    m = _model(ml("ArrayFeatureExtractor", ins=("X", "I")), x,
               extra_inputs=[helper.make_tensor_value_info("I", TensorProto.INT64, [len(idx)])])
    check(m, {"X": x, "I": idx})
    x2 = rng.normal(size=(n, 4)).astype(np.float32)
    m = _model(ml("FeatureVectorizer", ins=("X", "X2"), inputdimensions=[f, 2]), x,
               extra_inputs=[helper.make_tensor_value_info("X2", TensorProto.FLOAT, [n, 4])])
    check(m, {"X": x, "X2": x2})


def test_string_maps_are_refused_by_name():
    node = helper.make_node("LabelEncoder", ["X"], ["Y"], domain="ai.onnx.ml", keys_int64s=[1, 2],
                            values_strings=["a", "b"])
    m = _model(node, np.zeros((1, 2), np.int64), outputs=[("Y", TensorProto.STRING)], x_dtype=TensorProto.INT64)
    with pytest.raises(ember.errors.EmberError, match="string"):
        ember.InferenceSession(m.SerializeToString())


def test_string_labels_come_back_as_onnxruntime_gives_them():
    """A classifier's string labels (through Identity) as an object array of str, as onnxruntime."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 3)).astype(np.float32)
    node = helper.make_node("LinearClassifier", ["X"], ["label", "Y"], domain="ai.onnx.ml",
                            coefficients=rng.normal(size=9).tolist(), intercepts=[0.1, -0.2, 0.3],
                            classlabels_strings=["ant", "bee", "cat"],
                            post_transform="SOFTMAX")
    ident = helper.make_node("Identity", ["label"], ["out_label"])
    g = helper.make_graph([node, ident], "ml", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 3])],
                          [helper.make_tensor_value_info("out_label", TensorProto.STRING, ["N"]),
                           helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 3])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("ai.onnx.ml", 1)])
    m.ir_version = 10
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"X": x})
    got = ember.InferenceSession(m.SerializeToString()).run(None, {"X": x})
    assert got[0].dtype == want[0].dtype and got[0].shape == want[0].shape
    assert got[0].tolist() == want[0].tolist()
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ scikit-learn

def _sklearn_cases():
    from sklearn.datasets import make_classification, make_regression
    from sklearn.decomposition import PCA
    from sklearn.ensemble import (GradientBoostingClassifier, GradientBoostingRegressor, RandomForestClassifier,
                                  RandomForestRegressor)
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler, StandardScaler
    from sklearn.svm import SVC, SVR, LinearSVC
    from sklearn.tree import DecisionTreeClassifier

    x3, y3 = make_classification(300, 12, n_informative=6, n_classes=3, random_state=0)
    x2, y2 = make_classification(300, 12, random_state=1)
    xr, yr = make_regression(300, 12, random_state=2)
    f32 = lambda a: a.astype(np.float32)
    names = np.array(["setosa", "versicolor", "virginica"])
    return {
        "random_forest_strings": (RandomForestClassifier(10, random_state=0), f32(x3), names[y3]),
        "logistic_regression_strings": (LogisticRegression(max_iter=1000), f32(x3), names[y3]),
        "svc_strings_2": (SVC(), f32(x2), names[y2]),
        "random_forest_3": (RandomForestClassifier(30, random_state=0), f32(x3), y3),
        "random_forest_2": (RandomForestClassifier(10, random_state=0), f32(x2), y2),
        "deep_tree": (DecisionTreeClassifier(random_state=0), f32(x3), y3),
        "gradient_boosting_2": (GradientBoostingClassifier(n_estimators=30, random_state=0), f32(x2), y2),
        "gradient_boosting_3": (GradientBoostingClassifier(n_estimators=20, random_state=0), f32(x3), y3),
        "logistic_regression_3": (LogisticRegression(max_iter=1000), f32(x3), y3),
        "logistic_regression_2": (LogisticRegression(max_iter=1000), f32(x2), y2),
        "svc_rbf": (SVC(), f32(x3), y3),
        "svc_linear_2": (SVC(kernel="linear"), f32(x2), y2),
        "linear_svc": (LinearSVC(), f32(x3), y3),
        "scaler_pca_logistic": (make_pipeline(StandardScaler(), PCA(5), LogisticRegression(max_iter=1000)),
                                f32(x3), y3),
        "minmax_random_forest": (make_pipeline(MinMaxScaler(), RandomForestClassifier(5, random_state=0)),
                                 f32(x3), y3),
        "random_forest_regressor": (RandomForestRegressor(10, random_state=0), f32(xr), yr),
        "gradient_boosting_regressor": (GradientBoostingRegressor(n_estimators=30, random_state=0), f32(xr), yr),
        "linear_regression": (LinearRegression(), f32(xr), yr),
        "svr": (SVR(C=100.0), f32(xr), yr),
    }


CASES = ["random_forest_strings", "logistic_regression_strings", "svc_strings_2", "random_forest_3", "random_forest_2", "deep_tree", "gradient_boosting_2", "gradient_boosting_3",
         "logistic_regression_3", "logistic_regression_2", "svc_rbf", "svc_linear_2", "linear_svc",
         "scaler_pca_logistic", "minmax_random_forest", "random_forest_regressor", "gradient_boosting_regressor",
         "linear_regression", "svr"]


@pytest.mark.parametrize("name", CASES)
def test_skl2onnx_export_matches_sklearn(name):
    """skl2onnx's default export (ZipMap'd probabilities included) against scikit-learn itself:
    labels equal, probabilities within 1e-5, regressions within 1e-5 of the largest target."""
    pytest.importorskip("skl2onnx")
    from skl2onnx import to_onnx
    model, x, y = _sklearn_cases()[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x, y)
        onx = to_onnx(model, x[:1])
    sess = ember.InferenceSession(onx.SerializeToString())
    for rows in (x, x[:1]):
        out = sess.run(None, {sess.get_inputs()[0].name: rows})
        if hasattr(model, "classes_"):
            np.testing.assert_array_equal(out[0], model.predict(rows))
            if hasattr(model, "predict_proba") and not name.startswith("svc"):
                probs = out[1]
                assert isinstance(probs, list) and isinstance(probs[0], dict), "ZipMap gives a list of dicts"
                got = np.array([[d[c] for c in model.classes_] for d in probs])
                np.testing.assert_allclose(got, model.predict_proba(rows), atol=1e-5, rtol=0)
        else:
            ref = model.predict(rows)
            got = np.asarray(out[0]).reshape(ref.shape)
            np.testing.assert_allclose(got, ref, atol=1e-5 * np.abs(y).max(), rtol=0)
