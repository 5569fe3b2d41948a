"""Does dynamic batching pay? `ember serve` with the demo model (all-MiniLM-L6-v2) behind
/v1/embeddings, one sentence per request, driven by `ember loadtest` in its own process.

    python -m bench.serve [--seconds 20] [--rounds 2] [--soak 300]

1. Closed loop, 32 clients: the server with dynamic batching (max 32 rows, 2 ms queue delay)
   against the same server at batch size 1, alternated over rounds (fresh server processes).
2. Open loop at 80% of the batching server's peak throughput: p50 and p99.
3. `--soak S`: 64 clients for S seconds; errors, and the server's resident memory after warm-up
   and at the end.

Before the figures: the model's FLOPs per token against the machine's measured FMA peak, so
that the batching gain can be read against what compute allows. Writes bench/results/serve.md
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


def _tokens_per_text() -> float:
    from ember.models.minilm import tokenize
    from ember.serve.loadtest import _TEXTS
    return float(tokenize(list(_TEXTS))["attention_mask"].sum(axis=1).mean())


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
    meta["tokens_per_text"] = _tokens_per_text()
    repo = _repo()
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
        open_loop = _load(srv.url, 256, a.seconds, rate=0.8 * peak)
        print(f"open loop at {0.8 * peak:.0f} req/s: {open_loop['throughput_rps']:.1f} req/s, "
              f"p50 {open_loop['p50_ms']:.1f} ms, p99 {open_loop['p99_ms']:.1f} ms", flush=True)
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
    out = {"meta": meta, "runs": runs, "peak_rps": peak, "batch1_rps": single, "open_loop": open_loop, "soak": soak,
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
             f"Closed loop, {o['args']['clients']} clients, {o['args']['seconds']:g} s per run, "
             f"{o['args']['rounds']} rounds alternated (a fresh server each):",
             "",
             "| server | requests/s | p50 ms | p99 ms | mean batch | model busy | errors |",
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
              f"Open loop at 80% of the batched peak ({0.8 * o['peak_rps']:.0f} requests/s offered, "
              f"{ol['throughput_rps']:.1f} served): p50 {ol['p50_ms']:.1f} ms, p99 {ol['p99_ms']:.1f} ms, "
              f"**p99/p50 {ol['p99_ms'] / ol['p50_ms']:.2f}**, {ol['errors']} errors."]
    s = o.get("soak")
    if s:
        lines += ["", f"Soak, 64 clients for {s['seconds']:.0f} s: {s['ok']} requests, {s['errors']} errors; "
                      f"server RSS {s['rss_start_mb']:.0f} MB after warm-up, {s['rss_end_mb']:.0f} MB at the end "
                      f"({s['rss_end_mb'] / s['rss_start_mb'] - 1:+.1%})."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
