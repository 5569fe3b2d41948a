"""Does dynamic batching pay? `ember serve` with the demo model (all-MiniLM-L6-v2) behind
/v1/embeddings, one sentence per request, driven by `ember loadtest` in its own process.

    python -m bench.serve [--seconds 20] [--rounds 2] [--soak 300]

1. Closed loop, 32 clients: the server with dynamic batching (max 32 rows, 2 ms queue delay)
   against the same server at batch size 1, alternated over rounds (fresh server processes).
2. Open loop at 80% of the batching server's peak throughput, 3 windows on one server: p50 and
   p99 of each, and the window with the median p99/p50.
3. `--soak S`: 64 clients for S seconds; errors, and the server's resident memory after warm-up
   and at the end.

Before the figures: the model's FLOPs per token against the machine's measured FMA peak, and
the model's own run time in process at batch 1 and in 32-row runs, so that the batching gain
can be read against what compute allows. Writes bench/results/serve.md
and serve.json."""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "bench" / ".models"
RESULTS = ROOT / "bench" / "results"
NAME = "all-MiniLM-L6-v2"
# MiniLM-L6: 6 layers of hidden 384 and FFN 1536: 4*384^2 + 2*384*1536 multiply-adds per token
FLOP_PER_TOKEN = 6 * 2 * (4 * 384 * 384 + 2 * 384 * 1536)


def _repo() -> Path:
    from ember.models.minilm import export_minilm
    from ember.serve.demo_repository import write_demo_repository
    repo = MODELS / "serve-repo"
    write_demo_repository(repo, onnx_path=export_minilm(MODELS / "minilm.onnx"))
    return repo


class _Server:
    def __init__(self, repo, batch, extra=()):
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "ember.cli.main", "serve", "--model-repository",
                                      str(repo), "--port", str(self.port), "--no-grpc", "--max-batch-size",
                                      str(batch), "--max-queue-delay-ms", "2", *extra], stderr=subprocess.PIPE, text=True)
        import httpx
        for _ in range(1200):
            try:
                if httpx.get(f"{self.url}/v2/health/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(self.proc.stderr.read())
            time.sleep(0.1)
        raise RuntimeError("ember serve did not become ready")

    def rss_mb(self) -> float:
        m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{self.proc.pid}/status").read_text())
        return int(m.group(1)) / 1024

    def metrics(self) -> dict:
        import httpx
        text = httpx.get(f"{self.url}/metrics").text
        out = {}
        for key in ("ember_batch_size_sum", "ember_batch_size_count", "ember_batch_run_seconds_sum"):
            m = re.search(key + r"\{[^}]*\} (\S+)", text)
            out[key] = float(m.group(1)) if m else 0.0
        return out

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _load(url, concurrency, seconds, rate=None, requests=10**7) -> dict:
    cmd = [sys.executable, "-m", "ember.cli.main", "loadtest", url, "--embeddings", NAME, "--concurrency",
           str(concurrency), "--seconds", str(seconds), "--requests", str(requests), "--json"]
    if rate:
        cmd += ["--rate", f"{rate:.1f}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds * 3 + 120)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise RuntimeError(f"loadtest failed: {out.stdout[-500:]} {out.stderr[-1500:]}") from None



def _compute_bound(onnx_path, repeats=15) -> dict:
    """In process, nothing else running: the model's run time per request at batch 1, and per
    row in 32-row runs of one text each (batching with no padding), over the load tool's texts,
    at the server's default threads. Their ratio bounds what batching can gain in compute."""
    import ember
    from ember.models.minilm import tokenize
    from ember.serve.loadtest import _TEXTS
    sess = ember.InferenceSession(str(onnx_path), ember.SessionOptions())
    names = {i.name for i in sess.get_inputs()}

    def per_row(feeds, rows):
        for _ in range(3):
            sess.run(None, feeds)
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            sess.run(None, feeds)
            ts.append(time.perf_counter() - t0)
        return float(np.median(ts)) / rows

    one, batched = [], []
    for text in _TEXTS:
        feeds = {k: v for k, v in tokenize([text]).items() if k in names}
        one.append(per_row(feeds, 1))
        batched.append(per_row({k: np.repeat(v, 32, axis=0) for k, v in feeds.items()}, 32))
    return {"batch1_ms": 1e3 * float(np.mean(one)), "batch32_ms_per_row": 1e3 * float(np.mean(batched)),
            "ratio": float(np.mean(one) / np.mean(batched))}


def policy_tail(bound: dict, tokens_per_text: float, rate: float, lengths: list[int], requests: int = 20000,
                delay_ms: float = 2.0, max_rows: int = 32, overhead_ms: float = 1.0) -> dict:
    """p50 and p99 that the batching policy alone gives at `rate` (steady arrivals, texts drawn
    as the load tool draws them), simulated with run times fitted to the in-process compute
    figures (a fixed cost per run plus a cost per padded token) and nothing else sharing the
    machine: the tail that gathering, `plan_runs` and running shortest first cause by themselves."""
    from ember.serve.batching import plan_runs
    per_token = bound["batch32_ms_per_row"] / tokens_per_text
    fixed = max(bound["batch1_ms"] - per_token * tokens_per_text, 0.0)
    rng = np.random.default_rng(0)
    lens = np.asarray(lengths)[rng.integers(0, len(lengths), requests)]
    arrive = np.arange(requests) * 1e3 / rate
    latency = np.zeros(requests)
    i, t = 0, 0.0
    while i < requests:
        t = max(t, arrive[i] + delay_ms)            # the model is free and the oldest has waited
        j = i + 1
        while j < requests and j - i < max_rows and arrive[j] <= t:
            j += 1
        batch = list(range(i, j))
        runs = plan_runs([(int(lens[k]),) for k in batch], [1] * len(batch))
        for run in sorted(runs, key=lambda r: len(r) * max(lens[batch[q]] for q in r)):
            t += fixed + per_token * len(run) * max(lens[batch[q]] for q in run)
            for q in run:
                latency[batch[q]] = t - arrive[batch[q]] + overhead_ms
        i = j
    lat = latency[requests // 10:]                   # past the start-up
    return {"p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "fixed_ms": fixed, "per_token_ms": per_token}


def _text_lengths() -> list[int]:
    from ember.models.minilm import tokenize
    from ember.serve.loadtest import _TEXTS
    return [int(n) for n in tokenize(list(_TEXTS))["attention_mask"].sum(axis=1)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=20.0, help="each closed-loop measurement")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--soak", type=float, default=0.0, metavar="SECONDS", help="then a 64-client soak this long")
    p.add_argument("--server-args", default="", help="more `ember serve` options, e.g. '--threads 1'")
    a = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from bench.run import machine

    meta = machine()
    meta["date"] = time.strftime("%Y-%m-%d")
    meta["text_lengths"] = _text_lengths()
    meta["tokens_per_text"] = float(np.mean(meta["text_lengths"]))
    repo = _repo()
    bound = _compute_bound(MODELS / "minilm.onnx")
    print(f"compute alone: batch 1 {bound['batch1_ms']:.2f} ms per request, 32-row runs "
          f"{bound['batch32_ms_per_row']:.2f} ms per row: at most {bound['ratio']:.2f}x", flush=True)
    extra = a.server_args.split()
    # batch size 1 also as two one-thread instances: small runs use two threads poorly
    modes = [("batched", 32, extra), ("batch 1", 1, extra), ("batch 1, 2 instances x 1 thread", 1,
                                                               [*extra, "--threads", "1", "--instances", "2"])]
    runs = {m: [] for m, _, _ in modes}
    for r in range(a.rounds):
        for mode, batch, args in modes if r % 2 == 0 else modes[::-1]:
            srv = _Server(repo, batch, args)
            try:
                _load(srv.url, a.clients, 3)                           # warm-up: every batch size planned
                before = srv.metrics()
                res = _load(srv.url, a.clients, a.seconds)
                after = srv.metrics()
                runs_n = after["ember_batch_size_count"] - before["ember_batch_size_count"]
                res["mean_batch"] = (after["ember_batch_size_sum"] - before["ember_batch_size_sum"]) / max(runs_n, 1)
                res["model_busy"] = (after["ember_batch_run_seconds_sum"] - before["ember_batch_run_seconds_sum"]) \
                    / res["seconds"]
                runs[mode].append(res)
                print(f"{mode:>8}: {res['throughput_rps']:.1f} req/s, p50 {res['p50_ms']:.1f} ms, "
                      f"p99 {res['p99_ms']:.1f} ms, mean batch {res['mean_batch']:.1f}, errors {res['errors']}",
                      flush=True)
            finally:
                srv.stop()
    peak = float(np.median([x["throughput_rps"] for x in runs["batched"]]))
    single = max(float(np.median([x["throughput_rps"] for x in rs])) for m, rs in runs.items() if m != "batched")
    srv = _Server(repo, 32, a.server_args.split())
    try:
        _load(srv.url, a.clients, 3)
        windows = []
        for _ in range(3):
            w = _load(srv.url, 256, a.seconds, rate=0.8 * peak)
            windows.append(w)
            print(f"open loop at {0.8 * peak:.0f} req/s: {w['throughput_rps']:.1f} req/s, "
                  f"p50 {w['p50_ms']:.1f} ms, p99 {w['p99_ms']:.1f} ms", flush=True)
        ratios = [w["p99_ms"] / w["p50_ms"] for w in windows]
        open_loop = dict(windows[int(np.argsort(ratios)[len(ratios) // 2])])    # the median window
        open_loop["windows"] = windows
        soak = None
        if a.soak:
            _load(srv.url, 64, 5)
            rss0 = srv.rss_mb()
            soak = _load(srv.url, 64, a.soak)
            soak.update(rss_start_mb=rss0, rss_end_mb=srv.rss_mb())
            print(f"soak {a.soak:.0f} s, 64 clients: {soak['ok']} ok, {soak['errors']} errors, RSS "
                  f"{rss0:.0f} -> {soak['rss_end_mb']:.0f} MB", flush=True)
    finally:
        srv.stop()
    out = {"meta": meta, "compute_bound": bound, "runs": runs, "peak_rps": peak, "batch1_rps": single,
           "open_loop": open_loop, "soak": soak,
           "args": vars(a)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serve.json").write_text(json.dumps(out, indent=1) + "\n")
    (RESULTS / "serve.md").write_text(to_markdown(out))
    print(to_markdown(out))
    return 0


def to_markdown(o) -> str:
    m = o["meta"]
    fma = m.get("fma_gflops_1t") or 0
    tok = m["tokens_per_text"]
    cores = (m.get("target") or {}).get("cores") or os.cpu_count()
    bound = fma * cores * 1e9 / (FLOP_PER_TOKEN * tok) if fma else float("nan")
    lines = [f"`ember serve` dynamic batching, {m['date']}, {m['cpu']} ({cores} cores; one core's FMA peak "
             f"{fma:.0f} GFLOP/s, read bandwidth {m.get('read_gbs_1t') or 0:.1f} GB/s).",
             "",
             f"all-MiniLM-L6-v2 on /v1/embeddings, one sentence per request ({tok:.1f} tokens on average), "
             f"`ember loadtest` in its own process on the same machine. The model does "
             f"{FLOP_PER_TOKEN / 1e6:.1f} MFLOP per token, so all cores at their FMA peak would answer at most "
             f"{bound:.0f} requests/s, with no time left for HTTP, tokenizing or the load tool.",
             "",
             f"Compute alone, in process with nothing else running: a batch-1 run takes "
             f"{o['compute_bound']['batch1_ms']:.2f} ms per request on average over the load tool's texts, and "
             f"32-row runs of one text (batching with no padding) {o['compute_bound']['batch32_ms_per_row']:.2f} ms "
             f"per row. So batching can gain at most **{o['compute_bound']['ratio']:.2f}x** in compute. Beyond that it "
             f"saves only the serving cost paid per run (the hop to a worker thread, the session call); the cost "
             f"paid per request (HTTP, JSON, tokenizing, the load tool) stays.",
             "",
             f"Closed loop, {o['args']['clients']} clients, {o['args']['seconds']:g} s per run, "
             f"{o['args']['rounds']} rounds alternated (a fresh server each):",
             "",
             "| server | requests/s | p50 ms | p99 ms | rows per run | model busy | errors |",
             "|---|---|---|---|---|---|---|"]
    for mode, rs in o["runs"].items():
        for r in rs:
            lines.append(f"| {mode} | {r['throughput_rps']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                         f"{r['mean_batch']:.1f} | {r['model_busy']:.0%} | {r['errors']} |")
    ol = o["open_loop"]
    med = {mode: float(np.median([r["throughput_rps"] for r in rs])) for mode, rs in o["runs"].items()}
    lines += ["", "Median throughput: " + ", ".join(f"{k} {v:.1f}" for k, v in med.items()) + " requests/s. "
              f"Batched against the better batch-1 server: **{o['peak_rps'] / o['batch1_rps']:.2f}x**; against "
              f"batch 1 with the same settings: {o['peak_rps'] / med['batch 1']:.2f}x.",
              "",
              f"Open loop at 80% of the batched peak ({0.8 * o['peak_rps']:.0f} requests/s offered, at a steady "
              f"rate, latency counted from each request's scheduled time), {len(ol.get('windows', [ol]))} windows of "
              f"{o['args']['seconds']:g} s on one server: "
              + "; ".join(f"p50 {w['p50_ms']:.1f} ms, p99 {w['p99_ms']:.1f} ms ({w['p99_ms'] / w['p50_ms']:.2f})"
                          for w in ol.get("windows", [ol]))
              + f". Median window: {ol['throughput_rps']:.1f} served, **p99/p50 {ol['p99_ms'] / ol['p50_ms']:.2f}**, "
              f"{ol['errors']} errors."]
    if m.get("text_lengths"):
        sim = policy_tail(o["compute_bound"], tok, 0.8 * o["peak_rps"], m["text_lengths"])
        lines += ["", f"The batching policy alone, simulated at that rate with run times fitted to the in-process "
                      f"figures ({sim['fixed_ms']:.2f} ms per run plus {sim['per_token_ms']:.3f} ms per padded "
                      f"token, 1 ms of HTTP per request) and nothing else on the machine: p50 {sim['p50_ms']:.1f} ms, "
                      f"p99 {sim['p99_ms']:.1f} ms, p99/p50 {sim['p99_ms'] / sim['p50_ms']:.2f} "
                      f"(`policy_tail` in bench/serve.py). The rest of the measured tail comes from the runs "
                      f"slowing and varying when the load tool, the event loop and the compute threads share "
                      f"the cores."]
    s = o.get("soak")
    if s:
        lines += ["", f"Soak, 64 clients for {s['seconds']:.0f} s: {s['ok']} requests, {s['errors']} errors; "
                      f"server RSS {s['rss_start_mb']:.0f} MB after warm-up, {s['rss_end_mb']:.0f} MB at the end "
                      f"({s['rss_end_mb'] / s['rss_start_mb'] - 1:+.1%})."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
