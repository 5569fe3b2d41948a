"""Ember's benchmark: Ember, onnxruntime, OpenVINO (f32) and PyTorch eager side by side.

    python -m bench.run [--models mlp,bert] [--threads 1,2] [--runs 30] [--rounds 2] [--skip-micro]
                        [--stability-runs 1000]

Every measurement runs in its own process — engines alternated A B C D A B C D over
`--rounds` rounds, each after warm-up — because an idle runtime's spinning pool threads
distort whatever shares its process. Each child also records how busy the rest of the
machine was during its timed loop (`other_cpu`: system CPU time not spent by the child, in
cores), so a noisy neighbour is visible in the results. Reported: median and p99 latency,
Ember/ORT and Ember/PyTorch ratios, the worst relative difference of each engine's outputs
against onnxruntime; then micro-benchmarks (FMA peak, GEMM, GEMV, fused elementwise vs copy)
and Ember's compile times (cold and warm from the disk cache). Results go to
bench/results/latest.md and .json.
"""
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
ENGINES = ("ember", "ort", "openvino", "torch")

# batch 1 for every model, plus the two batched cases the issue names
MLP_WEIGHT_BYTES = 4 * (1024 * 4096 + 4096 * 4096 + 4096 * 1000 + 4096 + 4096 + 1000)
CASES = [("mlp", 1), ("mlp", 64), ("resnet50", 1), ("mobilenetv2", 1), ("bert", 1), ("bert", 8), ("gpt2", 1)]

_CHILD = r"""
import importlib, json, os, sys, time
import numpy as np
engine, model, path, feeds_path, threads, warmup, runs, out_path, min_time = sys.argv[1:10]
threads, warmup, runs, min_time = int(threads), int(warmup), int(runs), float(min_time)
feeds = dict(np.load(feeds_path))

def busy():                                   # (busy jiffies of the whole machine, now)
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4]

if engine == "ember":
    import ember
    so = ember.SessionOptions(); so.intra_op_num_threads = threads
    sess = ember.InferenceSession(path, so)
    run = lambda: sess.run(None, feeds)
elif engine == "ort":
    ort = importlib.import_module("onnxruntime")
    so = ort.SessionOptions(); so.intra_op_num_threads = threads; so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    run = lambda: sess.run(None, feeds)
elif engine == "openvino":
    ov = importlib.import_module("openvino")
    core = ov.Core()
    compiled = core.compile_model(path, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                "INFERENCE_PRECISION_HINT": "f32",
                                                "PERFORMANCE_HINT": "LATENCY"})
    req = compiled.create_infer_request()
    names = [i.get_any_name() for i in compiled.inputs]
    def run():
        req.infer({n: feeds[n] for n in names})
        return [req.get_output_tensor(k).data.copy() for k in range(len(compiled.outputs))]
else:
    import torch
    sys.path.insert(0, os.environ["EMBER_ROOT"])
    from bench.models import torch_model
    torch.set_num_threads(threads)
    m = torch_model(model)
    args = [torch.from_numpy(v) for v in feeds.values()]
    def run():
        with torch.inference_mode():
            r = m(*args)
        r = r if isinstance(r, (tuple, list)) else [r]
        return [x.numpy() for x in r if hasattr(x, "numpy")]
outs = run()
for _ in range(warmup):
    run()
ts = []
b0, c0, w0 = busy(), time.process_time(), time.perf_counter()
while len(ts) < runs or time.perf_counter() - w0 < min_time:
    t = time.perf_counter(); run(); ts.append((time.perf_counter() - t) * 1e3)
b1, c1, w1 = busy(), time.process_time(), time.perf_counter()
hz = os.sysconf("SC_CLK_TCK")
other = max((b1 - b0) / hz - (c1 - c0), 0.0) / (w1 - w0)
np.savez(out_path, *[np.asarray(o) for o in outs])
print(json.dumps({"times": ts, "other_cpu": other}))
"""


def _available(engine):
    mod = {"ember": "ember", "ort": "onnxruntime", "openvino": "openvino", "torch": "torch"}[engine]
    import importlib.util
    return importlib.util.find_spec(mod) is not None


def _child(engine, model, path, feeds_path, threads, warmup, runs, out_path, min_time=0.0):
    """Times `runs` runs, and more until `min_time` seconds have passed: a model of a few ms
    then gets hundreds of runs per process, so one disturbance of the shared machine moves
    its median less (MLP batch 1 once read 2.39 ms in 60 runs, 1.69 ms in 1000)."""
    env = {**os.environ, "EMBER_ROOT": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    r = subprocess.run([sys.executable, "-c", _CHILD, engine, model, str(path), str(feeds_path), str(threads),
                        str(warmup), str(runs), str(out_path), str(min_time)], capture_output=True, text=True,
                       env=env)
    if r.returncode:
        return None, r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"
    return json.loads(r.stdout.strip().splitlines()[-1]), None


def bench_models(cases, threads_list, engines, runs, rounds, warmup, log, min_time=1.0):
    from bench.models import build, example_inputs
    rows = []
    with tempfile.TemporaryDirectory() as td:
        for model, batch in cases:
            path = build(model)
            feeds = example_inputs(model, batch=batch)
            fp = Path(td) / f"{model}_{batch}.npz"
            np.savez(fp, **feeds)
            for threads in threads_list:
                res = {e: {"times": [], "other_cpu": [], "error": None} for e in engines}
                outs = {}
                for _ in range(rounds):
                    for e in engines:                  # alternated A B C D, every round
                        if res[e]["error"]:
                            continue
                        op = Path(td) / f"{e}.npz"
                        r, err = _child(e, model, path, fp, threads, warmup, runs, op, min_time)
                        if err:
                            res[e]["error"] = err
                            log(f"  {model} b{batch} t{threads} {e}: FAILED {err}")
                            continue
                        res[e]["times"] += r["times"]
                        res[e]["other_cpu"].append(r["other_cpu"])
                        z = np.load(op)
                        outs[e] = [z[k] for k in sorted(z.files, key=lambda s: int(s.split("_")[1]))]
                row = {"model": model, "batch": batch, "threads": threads}
                for e in engines:
                    t = np.array(res[e]["times"])
                    row[e] = None if not len(t) else {
                        "median_ms": float(np.median(t)), "p99_ms": float(np.percentile(t, 99)),
                        "other_cpu": float(max(res[e]["other_cpu"] or [0])),
                        "max_rel_diff_vs_ort": _rel_diff(outs.get(e), outs.get("ort"))}
                    if res[e]["error"]:
                        row[e] = {"error": res[e]["error"]}
                rows.append(row)
                log("  " + _row_md(row, engines))
    return rows


def _rel_diff(a, b):
    if a is None or b is None:
        return None
    worst = 0.0
    for x, y in zip(a, b):
        if x.shape != y.shape:
            return None
        scale = float(np.abs(y).max()) or 1.0
        worst = max(worst, float(np.abs(x.astype(np.float64) - y).max()) / scale)
    return worst


def _ms(r):
    if r is None:
        return "–"
    if "error" in r:
        return "failed"
    return f"{r['median_ms']:.2f} / {r['p99_ms']:.2f}"


def _ratio(a, b):
    if not a or not b or "error" in a or "error" in b:
        return "–"
    return f"{a['median_ms'] / b['median_ms']:.2f}"


def _row_md(row, engines):
    cells = [row["model"], str(row["batch"]), str(row["threads"])] + [_ms(row.get(e)) for e in engines]
    cells += [_ratio(row.get("ember"), row.get("ort")), _ratio(row.get("ember"), row.get("torch"))]
    diff = (row.get("ember") or {}).get("max_rel_diff_vs_ort")
    cells.append("–" if diff is None else f"{diff:.1e}")
    return "| " + " | ".join(cells) + " |"


# ------------------------------------------------------------------------------ micro
_MICRO = r"""
import json, os, sys, time
import numpy as np
kind, threads, arg = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sys.path.insert(0, os.environ["EMBER_ROOT"])
from bench.micro import run_micro
print(json.dumps(run_micro(kind, threads, arg)))
"""


def bench_micro(threads_list, log):
    out = []
    jobs = [("fma", "-")] + [("gemm", str(n)) for n in (256, 512, 1024, 2048)] + [("gemv", "4096"),
                                                                                 ("eltwise", "16777216"),
                                                                                 ("copy", "16777216"),
                                                                                 ("read", str(MLP_WEIGHT_BYTES)),
                                                                                 ("mlp_read", str(MLP_WEIGHT_BYTES))]
    for kind, arg in jobs:
        for t in threads_list:
            env = {**os.environ, "EMBER_ROOT": str(ROOT)}
            r = subprocess.run([sys.executable, "-c", _MICRO, kind, str(t), arg], capture_output=True, text=True,
                               env=env)
            if r.returncode:
                log(f"  micro {kind} {arg} t{t}: FAILED {r.stderr.strip().splitlines()[-1:]}")
                continue
            res = json.loads(r.stdout.strip().splitlines()[-1])
            res.update(kind=kind, arg=arg, threads=t)
            out.append(res)
            log(f"  micro {kind} {arg} t{t}: {res}")
    return out


def bench_compile(models, log):
    out = []
    code = ("import time, sys, ember; t = time.perf_counter(); ember.InferenceSession(sys.argv[1]); "
            "print(time.perf_counter() - t)")
    from bench.models import build
    for m in models:
        path = build(m)
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "EMBER_CACHE_DIR": cache}
            times = []
            for _ in range(2):                 # cold, then warm from the disk cache (a new process)
                r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env)
                times.append(float(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else float("nan"))
        out.append({"model": m, "cold_s": times[0], "warm_s": times[1]})
        log(f"  compile {m}: cold {times[0]:.2f} s, warm {times[1] * 1e3:.1f} ms")
    return out


def bench_stability(cases, threads_list, runs, log):
    """Ember alone, `runs` timed runs in one process per case: the tail of its latency."""
    from bench.models import build, example_inputs
    out = []
    with tempfile.TemporaryDirectory() as td:
        for model, batch in cases:
            fp = Path(td) / "feeds.npz"
            np.savez(fp, **example_inputs(model, batch=batch))
            for t in threads_list:
                r, err = _child("ember", model, build(model), fp, t, 10, runs, Path(td) / "out.npz")
                if err:
                    log(f"  stability {model} t{t}: FAILED {err}")
                    continue
                x = np.array(r["times"])
                out.append({"model": model, "batch": batch, "threads": t, "runs": runs,
                            "median_ms": float(np.median(x)), "p99_ms": float(np.percentile(x, 99)),
                            "other_cpu": r["other_cpu"]})
                log(f"  stability {model} b{batch} t{t}: p50 {out[-1]['median_ms']:.2f} p99 {out[-1]['p99_ms']:.2f}")
    return out


def machine(micro=()) -> dict:
    """The CPU (lscpu's model name), the target Ember planned for, and the measured FMA peak
    and read bandwidth: from the micro-benchmarks where they ran, else from Ember's own probe
    (ember.runtime.probe, in a fresh process)."""
    import platform
    model = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=30).stdout
        model = next(l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name")) or model
    except (OSError, StopIteration, subprocess.SubprocessError):
        pass
    code = ("import json; from ember.runtime.probe import measured_target as m; t = m(); "
            "print(json.dumps({'isa': t.isa, 'l2_bytes': t.l2_bytes, 'l3_bytes': t.l3_bytes, 'cores': t.cores, "
            "'fma_gflops': t.fma_gflops, 'read_gbs': t.read_gbs, 'plan_key': t.plan_key()}))")
    try:
        probe = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                          timeout=300, cwd=ROOT).stdout.strip().splitlines()[-1])
    except (IndexError, ValueError, subprocess.SubprocessError):
        probe = {}
    fma = next((m["gflops"] for m in micro if m["kind"] == "fma" and m["threads"] == 1), None)
    read = next((m["gbps"] for m in micro if m["kind"] == "read" and m["threads"] == 1), None)
    return {"cpu": model, "target": probe,
            "fma_gflops_1t": fma if fma is not None else probe.get("fma_gflops"),
            "read_gbs_1t": read if read is not None else probe.get("read_gbs")}


def to_markdown(rows, engines, micro, compile_times, meta, stability=()):
    per = f"at least {meta['runs']} runs and {meta['min_time']:g} s" if meta.get("min_time") else f"{meta['runs']} runs"
    lines = [f"Ember benchmark, {meta['date']}, {meta['cpu']}; {per} x {meta['rounds']} rounds "
             f"per cell, each engine in its own process, alternated. Latency: median / p99 ms."
             + (f" Ember compiled for `{meta['ember_target']}` (EMBER_TARGET); its peers use the whole CPU."
                if meta.get("ember_target", "host") != "host" else ""), ""]
    if meta.get("fma_gflops_1t") or meta.get("read_gbs_1t"):
        t = meta.get("target") or {}
        lines[-1:-1] = [f"Machine: {meta['cpu']}; one core's measured float32 FMA peak "
                        f"{meta.get('fma_gflops_1t') or 0:.0f} GFLOP/s and read bandwidth {meta.get('read_gbs_1t') or 0:.1f} GB/s; "
                        f"Ember's target `{t.get('plan_key', '?')}` (ISA/vector bits/registers/masks/L1/L2/L3/cores/balance)."]
    head = ["model", "batch", "threads"] + [{"ember": "Ember", "ort": "onnxruntime", "openvino": "OpenVINO f32",
                                             "torch": "PyTorch eager"}[e] for e in engines]
    head += ["Ember/ORT", "Ember/PyTorch", "Ember max rel diff"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += [_row_md(r, engines) for r in rows]
    for t in sorted({r["threads"] for r in rows}):
        ratios = [r["ember"]["median_ms"] / r["ort"]["median_ms"] for r in rows if r["threads"] == t
                  and r.get("ember") and r.get("ort") and "error" not in r["ember"] and "error" not in r["ort"]]
        tr = [r["ember"]["median_ms"] / r["torch"]["median_ms"] for r in rows if r["threads"] == t
              and r.get("ember") and r.get("torch") and "error" not in r["ember"] and "error" not in r["torch"]]
        if ratios:
            lines.append(f"\nGeometric mean at {t} thread(s): Ember/ORT {np.exp(np.mean(np.log(ratios))):.2f}"
                         + (f", Ember/PyTorch {np.exp(np.mean(np.log(tr))):.2f}" if tr else ""))
    for r1 in rows:     # Ember's own 2-thread speedup
        r2 = next((r for r in rows if r["model"] == r1["model"] and r["batch"] == r1["batch"]
                   and r["threads"] == 2), None)
        if r1["threads"] == 1 and r2 and all(x.get("ember") and "error" not in x["ember"] for x in (r1, r2)):
            lines.append(f"{'' if lines[-1].lstrip().startswith('2-thread') else chr(10)}2-thread speedup, "
                         f"{r1['model']} b{r1['batch']}: Ember "
                         f"{r1['ember']['median_ms'] / r2['ember']['median_ms']:.2f}x" + "".join(
                             f", {e} {r1[e]['median_ms'] / r2[e]['median_ms']:.2f}x" for e in engines
                             if e != "ember" and r1.get(e) and r2.get(e) and "error" not in r1[e]
                             and "error" not in r2[e]))
    if stability:
        lines += ["", "| Ember latency stability | threads | runs | median ms | p99 ms | p99/p50 |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {x['model']} b{x['batch']} | {x['threads']} | {x['runs']} | {x['median_ms']:.2f} | "
                  f"{x['p99_ms']:.2f} | {x['p99_ms'] / x['median_ms']:.2f} |" for x in stability]
    # the memory-bound case against the read bandwidth of the same bytes, both medians,
    # alternated in one process (micro mlp_read)
    for m in micro or []:
        if m["kind"] == "mlp_read":
            lines.append(f"\nMLP batch 1, {m['threads']} thread(s): Ember streams its {MLP_WEIGHT_BYTES / 1e6:.0f} MB "
                         f"of weights at {m['mlp_gbps']:.1f} GB/s = {m['pct_of_read']:.0f}% of the read bandwidth "
                         f"measured beside it ({m['read_gbps']:.1f} GB/s; medians, alternated in one process)")
    if micro:
        lines += ["", "| micro-benchmark | size | threads | result |", "|---|---|---|---|"]
        for m in micro:
            desc = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items()
                             if k not in ("kind", "arg", "threads"))
            lines.append(f"| {m['kind']} | {m['arg']} | {m['threads']} | {desc} |")
    if compile_times:
        lines += ["", "| model | compile cold (s) | load warm from disk cache (ms) |", "|---|---|---|"]
        lines += [f"| {c['model']} | {c['cold_s']:.2f} | {c['warm_s'] * 1e3:.1f} |" for c in compile_times]
    return "\n".join(lines) + "\n"


def main(argv=None):
    sys.path.insert(0, str(ROOT))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(sorted({m for m, _ in CASES})))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=1.0,
                    help="each process also times runs until this many seconds have passed (fast models)")
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--skip-micro", action="store_true")
    ap.add_argument("--skip-compile", action="store_true")
    ap.add_argument("--stability-runs", type=int, default=0,
                    help="also time Ember alone this many runs per case (p99/p50), e.g. 1000")
    ap.add_argument("--stability-models", default="mlp,mobilenetv2,resnet50,bert")
    ap.add_argument("--target", default="host",
                    help="the instruction set Ember compiles for (EMBER_TARGET: host, avx2, sse4.2), to measure "
                         "its narrower variants; results go to latest-TARGET.md")
    a = ap.parse_args(argv)
    os.environ["EMBER_TARGET"] = a.target            # inherited by Ember's processes; peers ignore it
    models = a.models.split(",")
    threads = [int(t) for t in a.threads.split(",")]
    engines = [e for e in a.engines.split(",") if _available(e)]
    missing = [e for e in a.engines.split(",") if e not in engines]

    def log(msg):
        print(msg, file=sys.stderr, flush=True)
    if missing:
        log(f"not installed, skipped: {', '.join(missing)} (pip install -e '.[bench]')")
    cases = [(m, b) for m, b in CASES if m in models]
    log(f"models: {cases}; threads {threads}; engines {engines}")
    rows = bench_models(cases, threads, engines, a.runs, a.rounds, a.warmup, log, a.min_time)
    micro = [] if a.skip_micro else bench_micro(threads, log)
    comp = [] if a.skip_compile else bench_compile(models, log)
    stab = [] if not a.stability_runs else bench_stability(
        [(m, 1) for m in a.stability_models.split(",")], threads, a.stability_runs, log)
    meta = {"date": time.strftime("%Y-%m-%d"), **machine(micro),
            "runs": a.runs, "min_time": a.min_time, "rounds": a.rounds, "cpus": os.cpu_count(),
            "ember_target": a.target}
    md = to_markdown(rows, engines, micro, comp, meta, stab)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "latest" if a.target == "host" else f"latest-{a.target}"
    (RESULTS / f"{stem}.md").write_text(md)
    (RESULTS / f"{stem}.json").write_text(json.dumps({"meta": meta, "models": rows, "micro": micro,
                                                     "compile": comp, "stability": stab}, indent=1))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
