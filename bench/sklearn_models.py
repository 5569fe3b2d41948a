"""scikit-learn models as skl2onnx exports them by default (ZipMap'd probabilities included):
Ember against onnxruntime, each engine in its own process, alternated, after warm-up.

    python -m bench.sklearn_models [--threads 1,2] [--rounds 2] [--min-time 1.0]

Models are trained here with fixed seeds on synthetic data (nothing downloaded). Reported:
median latency per engine at batch 1 and 1000, the Ember/ORT ratio, and whether Ember's
first output agrees with onnxruntime's (labels equal; regressions within 1e-5). Results go to bench/results/sklearn.md and .json, with the CPU,
its measured FMA peak and read bandwidth (bench.run.machine)."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BATCHES = (1, 1000)

_CHILD = r"""
import json, sys, time
import numpy as np
engine, path, x_path, threads, min_time, out_path = sys.argv[1:7]
x = np.load(x_path)
if engine == "ember":
    import ember
    so = ember.SessionOptions(); so.intra_op_num_threads = int(threads)
    sess = ember.InferenceSession(path, so)
else:
    import onnxruntime as ort
    so = ort.SessionOptions(); so.intra_op_num_threads = int(threads); so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
name = sess.get_inputs()[0].name
run = lambda: sess.run(None, {name: x})
for _ in range(10):
    out = run()
times, start = [], time.perf_counter()
while len(times) < 30 or time.perf_counter() - start < float(min_time):
    t = time.perf_counter(); run(); times.append(time.perf_counter() - t)
np.save(out_path, np.asarray(out[0]))
print(json.dumps({"median_ms": float(np.median(times)) * 1e3, "runs": len(times)}))
"""


def models():
    """{name: (fitted estimator, X float32)}: the kinds the issue names."""
    from sklearn.datasets import make_classification, make_regression
    from sklearn.decomposition import PCA
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier, RandomForestRegressor
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
    x, y = make_classification(2000, 20, n_informative=10, n_classes=3, random_state=0)
    xr, yr = make_regression(2000, 20, random_state=1)
    x, xr = x.astype(np.float32), xr.astype(np.float32)
    out = {
        "random_forest_100": (RandomForestClassifier(100, max_depth=12, random_state=0), x, y),
        "gradient_boosting_100": (GradientBoostingClassifier(n_estimators=100, random_state=0), x, y),
        "random_forest_regressor_50": (RandomForestRegressor(50, max_depth=10, random_state=0), xr, yr),
        "logistic_regression": (LogisticRegression(max_iter=1000), x, y),
        "svc_rbf": (SVC(), x, y),
        "scaler_pca_logistic": (make_pipeline(StandardScaler(), PCA(8), LogisticRegression(max_iter=1000)), x, y),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for m, xx, yy in out.values():
            m.fit(xx, yy)
    return {k: (m, xx) for k, (m, xx, _) in out.items()}


def _child(engine, path, x_path, threads, min_time, out_path):
    r = subprocess.run([sys.executable, "-c", _CHILD, engine, str(path), str(x_path), str(threads), str(min_time),
                        str(out_path)], capture_output=True, text=True, cwd=ROOT)
    if r.returncode:
        return None, (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
    return json.loads(r.stdout.strip().splitlines()[-1]), None


def _agree(a, b) -> bool:
    """Labels equal; a regression's values within 1e-5 of its largest magnitude."""
    if a.shape != b.shape:
        a = a.reshape(b.shape) if a.size == b.size else a
    if a.dtype.kind == "f":
        return a.shape == b.shape and bool(np.abs(a - b).max(initial=0) <= 1e-5 * max(np.abs(b).max(initial=0), 1))
    return np.array_equal(a, b)


def main(argv=None):
    sys.path.insert(0, str(ROOT))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--min-time", type=float, default=1.0)
    a = ap.parse_args(argv)
    from skl2onnx import to_onnx

    from bench.run import machine
    log = lambda m: print(m, file=sys.stderr, flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        for name, (model, x) in models().items():
            path = td / f"{name}.onnx"
            path.write_bytes(to_onnx(model, x[:1]).SerializeToString())
            for batch in BATCHES:
                xp = td / f"{name}_{batch}.npy"
                np.save(xp, x[:batch])
                for threads in [int(t) for t in a.threads.split(",")]:
                    times = {"ember": [], "ort": []}
                    err = {}
                    for _ in range(a.rounds):
                        for e in times:                 # alternated, every round
                            r, bad = _child(e, path, xp, threads, a.min_time, td / f"{e}.npy")
                            if bad:
                                err[e] = bad
                                continue
                            times[e].append(r["median_ms"])
                    same = not err and _agree(np.load(td / "ember.npy", allow_pickle=True),
                                              np.load(td / "ort.npy", allow_pickle=True))
                    row = {"model": name, "batch": batch, "threads": threads, "errors": err, "labels_equal": bool(same),
                           **{e: (float(np.median(t)) if t else None) for e, t in times.items()}}
                    row["ember_over_ort"] = row["ember"] / row["ort"] if row["ember"] and row["ort"] else None
                    rows.append(row)
                    log(f"  {name} b{batch} t{threads}: ember {row['ember']} ms, ort {row['ort']} ms, "
                        f"ratio {row['ember_over_ort']}, outputs agree {same} {err or ''}")
    meta = {"date": time.strftime("%Y-%m-%d"), **machine(), "rounds": a.rounds, "min_time": a.min_time,
            "cpus": os.cpu_count()}
    ratios = [r["ember_over_ort"] for r in rows if r["ember_over_ort"]]
    lines = [f"scikit-learn models (skl2onnx default exports), {meta['date']}, {meta['cpu']}; one core's FMA peak "
             f"{meta['fma_gflops_1t']:.0f} GFLOP/s, read bandwidth {meta['read_gbs_1t']:.1f} GB/s. Each engine in its "
             f"own process, alternated over {a.rounds} rounds, at least {a.min_time:g} s of runs each; medians (ms).",
             "", "| model | batch | threads | Ember | onnxruntime | Ember/ORT | outputs agree with ORT's |",
             "|---|---|---|---|---|---|---|"]
    fmt = lambda v, p=3: "-" if v is None else f"{v:.{p}f}"
    for r in rows:
        lines.append(f"| {r['model']} | {r['batch']} | {r['threads']} | {fmt(r['ember'])} | {fmt(r['ort'])} | "
                     f"{fmt(r['ember_over_ort'], 2)} | {'yes' if r['labels_equal'] else 'NO'} |")
    if ratios:
        lines += ["", f"Geometric mean Ember/ORT: {float(np.exp(np.mean(np.log(ratios)))):.2f} over {len(ratios)} cells"]
    md = "\n".join(lines) + "\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sklearn.md").write_text(md)
    (RESULTS / "sklearn.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
