"""Quantized int8 models: Ember against onnxruntime on the same quantized files, and against
Ember's own float32.

    python -m bench.quantized [--threads 1,2] [--runs 20] [--rounds 2] [--only bert_qdyn,...]

The float32 basket models (bench/models.py: BERT-base, ResNet-50; random weights from fixed
seeds) are quantized by `onnxruntime.quantization` with its defaults:
  * `quantize_dynamic`: weights int8, activations quantized at run time
    (DynamicQuantizeLinear + MatMulInteger / ConvInteger);
  * `quantize_static`: the QDQ format (QuantizeLinear/DequantizeLinear pairs), calibrated
    (MinMax) on 8 random inputs from a fixed seed.
Each engine runs in its own process, alternated, after warm-up (bench.run's child). Reported:
medians, onnxruntime int8 / Ember int8 and Ember float32 / Ember int8, and accuracy: the int8
output against float32 (max |diff| relative to the float32 output's largest magnitude; for
ResNet-50 also the top-1 agreement) and Ember's int8 output against onnxruntime's. Results go
to bench/results/quantized.md and .json with the machine (lscpu model, FMA peak, bandwidth).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.run import RESULTS, _child, machine

CASES = {                       # name: (float model, quantization, batch)
    "bert_qdyn": ("bert", "dynamic", 1),
    "bert_qdq": ("bert", "static", 1),
    "resnet50_qdyn": ("resnet50", "dynamic", 1),
    "resnet50_qdq": ("resnet50", "static", 1),
}


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol: 8 random valid inputs, fixed seed."""

    def __init__(self, model, n=8):
        from bench.models import example_inputs
        self._feeds = iter([example_inputs(model, batch=1, seed=100 + i) for i in range(n)])

    def get_next(self):
        return next(self._feeds, None)


def quantized_path(case: str) -> Path:
    """The quantized file for `case`, made from the float32 basket model unless it is there."""
    from bench.models import DEFAULT_OUT, build
    model, how, _ = CASES[case]
    out = Path(DEFAULT_OUT) / f"{case}.onnx"
    if out.exists():
        return out
    src = build(model)
    from onnxruntime.quantization import quantize_dynamic, quantize_static
    tmp = out.with_suffix(".tmp.onnx")
    if how == "dynamic":
        quantize_dynamic(str(src), str(tmp))
    else:
        quantize_static(str(src), str(tmp), _Calibration(model))
    tmp.rename(out)
    return out


def _accuracy(model, q, f):
    scale = float(np.abs(f).max()) or 1.0
    acc = {"max_rel_diff_vs_f32": float(np.abs(q.astype(np.float64) - f).max() / scale)}
    if model == "resnet50":
        acc["top1_agrees_with_f32"] = bool(np.argmax(q, axis=-1) == np.argmax(f, axis=-1))
    return acc


def run(cases, threads_list, runs, rounds, warmup, log):
    from bench.models import build, example_inputs
    rows = []
    with tempfile.TemporaryDirectory() as td:
        for case in cases:
            model, how, batch = CASES[case]
            fpath, qpath = build(model), quantized_path(case)
            feeds = example_inputs(model, batch=batch)
            fp = Path(td) / f"{case}.npz"
            np.savez(fp, **feeds)
            variants = [("ember_int8", "ember", qpath), ("ort_int8", "ort", qpath), ("ember_f32", "ember", fpath)]
            for threads in threads_list:
                times = {v: [] for v, _, _ in variants}
                outs, errors = {}, {}
                for _ in range(rounds):
                    for v, engine, path in variants:          # alternated, every round
                        if v in errors:
                            continue
                        op = Path(td) / f"{v}.npz"
                        r, err = _child(engine, model, path, fp, threads, warmup, runs, op, 1.0)
                        if err:
                            errors[v] = err
                            log(f"  {case} t{threads} {v}: FAILED {err}")
                            continue
                        times[v] += r["times"]
                        outs[v] = np.load(op)["arr_0"]
                med = {v: float(np.median(t)) if t else None for v, t in times.items()}
                row = {"case": case, "model": model, "quantization": how, "batch": batch, "threads": threads,
                       "median_ms": med, "errors": errors}
                if med["ember_int8"] and med["ort_int8"]:
                    row["ort_int8_over_ember_int8"] = med["ort_int8"] / med["ember_int8"]
                if med["ember_int8"] and med["ember_f32"]:
                    row["ember_f32_over_ember_int8"] = med["ember_f32"] / med["ember_int8"]
                if "ember_int8" in outs and "ember_f32" in outs:
                    row["accuracy"] = _accuracy(model, outs["ember_int8"], outs["ember_f32"])
                if "ember_int8" in outs and "ort_int8" in outs:
                    o = outs["ort_int8"]
                    row["max_rel_diff_vs_ort_int8"] = float(np.abs(outs["ember_int8"] - o).max() /
                                                            (np.abs(o).max() or 1.0))
                rows.append(row)
                log("  " + _row_md(row))
    return rows


def _cpu_family() -> str:
    """lscpu's CPU family and model numbers (its model name alone, "AMD EPYC", names no core)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    f = {k.strip(): v.strip() for k, _, v in (l.partition(":") for l in out.splitlines())}
    return f"family {f.get('CPU family', '?')}, model {f.get('Model', '?')}"


def _f(x, fmt):
    return "—" if x is None else format(x, fmt)


def _row_md(r):
    m, a = r["median_ms"], r.get("accuracy", {})
    top1 = a.get("top1_agrees_with_f32")
    return (f"| {r['case']} | {r['threads']} | {_f(m['ember_int8'], '.2f')} | {_f(m['ort_int8'], '.2f')} | "
            f"{_f(m['ember_f32'], '.2f')} | {_f(r.get('ort_int8_over_ember_int8'), '.2f')} | "
            f"{_f(r.get('ember_f32_over_ember_int8'), '.2f')} | {_f(a.get('max_rel_diff_vs_f32'), '.2e')}"
            f"{'' if top1 is None else (' (top-1 same)' if top1 else ' (top-1 differs)')} | "
            f"{_f(r.get('max_rel_diff_vs_ort_int8'), '.2e')} |")


def to_markdown(rows, meta):
    lines = ["# Quantized int8 models", "",
             f"Run {meta['date']} on {meta['machine'].get('cpu', '?')} ({meta.get('cpu_family', '?')}): "
             f"one core's measured FMA peak "
             f"{_f(meta['machine'].get('fma_gflops_1t'), '.0f')} GFLOP/s, read bandwidth "
             f"{_f(meta['machine'].get('read_gbs_1t'), '.1f')} GB/s. Command: `{meta['command']}`.", "",
             "Medians in ms, each engine in its own process, alternated. ratio ORT: onnxruntime int8 / Ember "
             "int8 (above 1: Ember faster); ratio f32: Ember float32 / Ember int8. Accuracy: the int8 "
             "output against Ember's float32 output, relative to its largest magnitude.", "",
             "| case | threads | Ember int8 | ORT int8 | Ember f32 | ratio ORT | ratio f32 | int8 vs f32 | "
             "Ember vs ORT int8 |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [_row_md(r) for r in rows]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(CASES))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    a = ap.parse_args(argv)
    cases = [c for c in a.only.split(",") if c]
    unknown = set(cases) - set(CASES)
    if unknown:
        ap.error(f"unknown cases {sorted(unknown)}; expected some of {sorted(CASES)}")
    log = lambda s: print(s, flush=True)
    rows = run(cases, [int(t) for t in a.threads.split(",")], a.runs, a.rounds, a.warmup, log)
    args = sys.argv[1:] if argv is None else argv
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "cpu_family": _cpu_family(),
            "command": " ".join(["python -m bench.quantized"] + args)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "quantized.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (RESULTS / "quantized.md").write_text(to_markdown(rows, meta))
    print(to_markdown(rows, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
