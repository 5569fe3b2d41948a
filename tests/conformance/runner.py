"""Runs the ONNX backend test suite (onnx's own cases: node, simple, pytorch-converted,
pytorch-operator and the light real models that ship inside the onnx package) through
`ember.backend`, each case in a worker process, so that a crash or a hang fails that case
alone instead of the whole run.

    python -m tests.conformance.runner [--jobs N] [--only REGEX] [--json FILE]

prints the pass count and the cases by outcome. Outcomes: pass; mismatch (ran, wrong numbers
or shapes); ember-error (a clear EmberError: unsupported op, dtype, ...); error (any other
exception: an Ember bug); crash; timeout; skip (the suite skipped it)."""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import sys
import tempfile
import time
import traceback

CASE_TIMEOUT_S = 120.0


def _suite():
    """{case name: (TestCase class, method name)} of the suite's CPU cases."""
    import warnings

    warnings.filterwarnings("ignore")
    import onnx.backend.test

    import ember.backend

    bt = onnx.backend.test.BackendTest(ember.backend, __name__)
    cases = {}
    for cls in bt.test_cases.values():
        for m in dir(cls):
            if m.startswith("test_") and m.endswith("_cpu"):
                cases[m[: -len("_cpu")]] = (cls, m)
    return cases


def case_names() -> list[str]:
    return sorted(_suite())


def _classify(exc: BaseException) -> str:
    import unittest

    from ember.errors import EmberError

    if isinstance(exc, unittest.SkipTest):
        return "skip"
    if isinstance(exc, EmberError):
        return "ember-error"
    if isinstance(exc, AssertionError):
        return "mismatch"
    return "error"


def _worker(conn, onnx_home):
    os.environ["ONNX_HOME"] = onnx_home
    os.environ.setdefault("EMBER_NUM_THREADS", "1")
    cases = _suite()
    conn.send(("ready", None, None))
    while True:
        name = conn.recv()
        if name is None:
            return
        cls, m = cases[name]
        t0 = time.perf_counter()
        try:
            getattr(cls(m), m)()
            out = ("pass", "")
        except BaseException as e:  # noqa: BLE001 - every outcome is recorded
            kind = _classify(e)
            msg = f"{type(e).__name__}: {e}" if kind != "error" else traceback.format_exc(limit=6)
            out = (kind, msg[:2000])
        conn.send((name, out, time.perf_counter() - t0))


class _Slot:
    def __init__(self, ctx, onnx_home):
        self.parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, onnx_home), daemon=True)
        self.proc.start()
        child.close()
        self.case = None
        self.started = 0.0
        self.ready = False


def run_cases(names, jobs: int = 2, timeout_s: float = CASE_TIMEOUT_S, progress=None) -> dict:
    """{name: {"outcome", "message", "seconds"}} for every case in `names`."""
    ctx = mp.get_context("spawn")
    todo = list(names)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="ember-onnx-home-") as home:
        slots = [_Slot(ctx, home) for _ in range(max(1, min(jobs, len(todo))))]
        while len(results) < len(names):
            for i, s in enumerate(slots):
                if s.ready and s.case is None and todo:
                    s.case, s.started = todo.pop(0), time.perf_counter()
                    s.parent.send(s.case)
                if s.case is not None and time.perf_counter() - s.started > timeout_s:
                    results[s.case] = {"outcome": "timeout", "message": f"over {timeout_s:.0f} s",
                                       "seconds": timeout_s}
                    s.proc.kill()
                    slots[i] = _Slot(ctx, home)
                    continue
            conns = [s.parent for s in slots]
            for c in mp.connection.wait(conns, timeout=0.5):
                s = next(x for x in slots if x.parent is c)
                try:
                    msg = c.recv()
                except (EOFError, OSError):
                    msg = None
                if msg is None:                       # the worker died: a crash
                    if s.case is not None:
                        code = s.proc.exitcode
                        s.proc.join(1)
                        results[s.case] = {"outcome": "crash",
                                           "message": f"worker died (exit code {s.proc.exitcode or code})",
                                           "seconds": time.perf_counter() - s.started}
                    elif not s.ready:
                        raise RuntimeError("a conformance worker died while loading the suite")
                    slots[slots.index(s)] = _Slot(ctx, home)
                    continue
                name, out, secs = msg
                if name == "ready":
                    s.ready = True
                    continue
                results[name] = {"outcome": out[0], "message": out[1], "seconds": secs}
                s.case = None
                if progress:
                    progress(len(results), len(names))
            if not todo and all(s.case is None for s in slots) and len(results) < len(names):
                break
        for s in slots:
            if s.proc.is_alive():
                try:
                    s.parent.send(None)
                except (BrokenPipeError, OSError):
                    pass
                s.proc.join(2)
                if s.proc.is_alive():
                    s.proc.kill()
    return results


EXCLUSIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "exclusions.txt")


def read_exclusions(path: str = EXCLUSIONS) -> dict:
    """{case name: reason} from the exclusion file (`name  reason`, `#` comments)."""
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                name, _, reason = line.partition(" ")
                out[name] = reason.strip()
    return out


def reason_of(message: str) -> str:
    """A one-line reason from an EmberError's message: the node's op and why, or the error;
    for a mismatch, the tolerance line and the largest difference."""
    if message.startswith("AssertionError"):
        lines = [x.strip() for x in message.splitlines() if x.strip()]
        keep = [x for x in lines if x.startswith(("Not equal", "Mismatched", "Max absolute", "Max relative"))]
        return "numbers differ: " + "; ".join(keep or lines[1:3])
    m = re.search(r"node '[^']*' \(([^)]+)\): (.*)", message)
    if m:
        return f"{m.group(1)}: {m.group(2).strip()}"
    return message.split("\n")[0].split(": ", 1)[-1].strip()


# a hand-written reason for a case the suite's own harness cannot check (it raises while
# comparing outputs, whatever the backend returns): kept when the file is regenerated
SUITE_ERROR = "[error] suite: "


def write_exclusions(res: dict, path: str = EXCLUSIONS):
    """Rewrite the exclusion file from a run: every case that did not pass, with its reason."""
    failed = {n: r for n, r in res.items() if r["outcome"] != "pass"}
    # a [mismatch] entry's reason is written by hand (why the numbers differ): kept
    old = read_exclusions(path) if os.path.exists(path) else {}
    with open(path, "w") as f:
        f.write("# ONNX backend test cases Ember does not pass yet, each with the reason: the error it\n"
                "# ends in (tests/conformance/test_suite.py checks each still ends in an EmberError).\n"
                "# Regenerate: python -m tests.conformance.runner --write-exclusions\n")
        for n in sorted(failed):
            r = failed[n]
            tag = "" if r["outcome"] in ("ember-error", "skip") else f"[{r['outcome']}] "
            kept = old.get(n, "")
            hand = tag == "[mismatch] " and kept.startswith(tag) and not kept.startswith(tag + "numbers differ")
            if hand or (tag == "[error] " and kept.startswith(SUITE_ERROR)):
                f.write(f"{n}  {kept}\n")
                continue
            f.write(f"{n}  {tag}{reason_of(r['message'])[:240]}\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--only", default=None, help="regex on case names")
    ap.add_argument("--json", default=None, help="write every case's outcome here")
    ap.add_argument("--show", default="", help="comma list of outcomes whose messages to print")
    ap.add_argument("--write-exclusions", action="store_true",
                    help="rewrite tests/conformance/exclusions.txt from this run (whole suite only)")
    a = ap.parse_args(argv)
    names = case_names()
    if a.only:
        names = [n for n in names if re.search(a.only, n)]
    t0 = time.perf_counter()

    def progress(done, total):
        if done % 100 == 0 or done == total:
            print(f"  {done}/{total} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)

    res = run_cases(names, jobs=a.jobs, progress=progress)
    by: dict = {}
    for n, r in sorted(res.items()):
        by.setdefault(r["outcome"], []).append(n)
    show = set(filter(None, a.show.split(",")))
    for k in sorted(by):
        if k in show:
            for n in by[k]:
                print(f"{k}: {n}: {res[n]['message'][:300]!r}")
    print(f"{len(by.get('pass', []))} of {len(names)} cases pass through ember.backend in "
          f"{time.perf_counter() - t0:.0f} s; " + ", ".join(f"{k} {len(v)}" for k, v in sorted(by.items())))
    if a.write_exclusions:
        if a.only:
            raise SystemExit("--write-exclusions needs the whole suite (no --only)")
        write_exclusions(res)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
