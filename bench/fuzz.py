"""Long fuzzing run of Ember against onnxruntime (the engine is tests/fuzz/fuzzer.py).

    python -m bench.fuzz --cases 100000 --seed 0 --out bench/results/fuzz.json [--minutes 25]
                         [--findings bench/results/fuzz_findings] [--start 0] [--timeout 10]

Prints a summary table (cases per class, cases/s, distinct findings) and writes it as JSON;
each distinct finding's minimized reproducer (model.onnx, feeds.npz, info.json) goes under
--findings. Cases are a pure function of (seed, index), so `--start` resumes a run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from tests.fuzz import fuzzer


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=100000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--minutes", type=float, default=None, help="stop after this much wall time")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per case before it counts as a hang")
    ap.add_argument("--out", default="bench/results/fuzz.json")
    ap.add_argument("--findings", default=None, help="default: <out without .json>_findings")
    args = ap.parse_args(argv)
    out = Path(args.out)
    findings = Path(args.findings or out.with_suffix("").as_posix() + "_findings")
    # mutated models are compiled once each; keep their cache entries out of the user's cache
    os.environ.setdefault("EMBER_CACHE_DIR", tempfile.mkdtemp(prefix="ember-fuzz-cache-"))
    last = [time.perf_counter()]

    def progress(i, kind, counts):
        if time.perf_counter() - last[0] > 30:
            last[0] = time.perf_counter()
            print(f"  case {i}: {dict(counts)}", file=sys.stderr, flush=True)

    s = fuzzer.run_fuzz(args.cases, args.seed, findings, timeout=args.timeout, start=args.start,
                        time_limit=None if args.minutes is None else args.minutes * 60, progress=progress)
    print(fuzzer.summary_table(s))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(s, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
