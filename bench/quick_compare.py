"""Quick correctness + latency check of Ember against onnxruntime on one basket model.

    python -m bench.quick_compare bert [--batch 1] [--seq 128] [--runs 20]

Each runtime runs in its own process (alternated A B A B, after warm-up), `--threads` each;
prints the max relative difference and median latencies. The full benchmark is bench/run.py."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

_CHILD = r"""
import importlib, json, sys, time, numpy as np
engine, path, feeds_path, runs, out_path, threads = sys.argv[1:7]
feeds = dict(np.load(feeds_path))
if engine == "ember":
    import ember
    so = ember.SessionOptions(); so.intra_op_num_threads = int(threads)
    sess = ember.InferenceSession(path, so)
else:
    ort = importlib.import_module("onnxruntime")
    so = ort.SessionOptions(); so.intra_op_num_threads = int(threads); so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
outs = sess.run(None, feeds)
for _ in range(3):
    sess.run(None, feeds)
ts = []
for _ in range(int(runs)):
    t = time.perf_counter(); sess.run(None, feeds); ts.append((time.perf_counter() - t) * 1e3)
np.savez(out_path, *outs)
print(json.dumps(ts))
"""


def main(argv=None):
    sys.path.insert(0, str(ROOT))
    from bench.models import build, example_inputs
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    path = build(a.model, ROOT / "bench" / ".models")
    feeds = example_inputs(a.model, batch=a.batch, seq=a.seq)
    with tempfile.TemporaryDirectory() as td:
        fp = Path(td) / "feeds.npz"
        np.savez(fp, **feeds)
        times, outs = {"ember": [], "ort": []}, {}
        for _ in range(2):
            for eng in ("ember", "ort"):
                op = Path(td) / f"{eng}.npz"
                r = subprocess.run([sys.executable, "-c", _CHILD, eng, str(path), str(fp), str(a.runs), str(op), str(a.threads)],
                                   capture_output=True, text=True, env={"OMP_NUM_THREADS": "1", **__import__("os").environ})
                if r.returncode:
                    sys.exit(r.stderr[-3000:])
                times[eng] += json.loads(r.stdout.strip().splitlines()[-1])
                outs[eng] = [v for _, v in sorted(np.load(op).items(), key=lambda kv: int(kv[0].split("_")[1]))]
    err = max(float(np.abs(x - y).max() / np.abs(y).max()) for x, y in zip(outs["ember"], outs["ort"]))
    e, o = np.median(times["ember"]), np.median(times["ort"])
    print(f"{a.model} batch {a.batch} seq {a.seq} threads {a.threads}: max rel diff {err:.1e}; median ms: "
          f"ember {e:.2f}, onnxruntime {o:.2f}; Ember/ORT {e / o:.2f}")


if __name__ == "__main__":
    main()
