"""`ember run | inspect | bench MODEL [--ops FILE.py]`: the command line.

Every EmberError is printed as one clear message (exit 2), never a stack trace."""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def _random_feeds(sess, dims: dict, seed: int = 0):
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else dims.get(d, 1 if "batch" in d.lower() or d.endswith("dim0") else 8)
                 for d in i.shape]
        t = i.type[len("tensor("):-1]
        if t in ("float", "double", "float16"):
            a = rng.standard_normal(shape).astype({"float": np.float32, "double": np.float64}.get(t, np.float16))
        elif t == "bool":
            a = rng.random(shape) < 0.5
        else:
            hi = 2 if "mask" in i.name.lower() else 100
            a = rng.integers(0, hi, size=shape).astype(np.int64 if t == "int64" else np.int32)
            if "mask" in i.name.lower():
                a[...] = 1
        feeds[i.name] = a
    return feeds


def _parse_dims(items):
    out = {}
    for it in items or []:
        k, _, v = it.partition("=")
        out[k] = int(v)
    return out


def _load_inputs(items):
    feeds = {}
    for it in items or []:
        name, _, path = it.partition("=")
        feeds[name] = np.load(path, allow_pickle=False)
    return feeds


def _progress(label):
    def cb(stage):
        print(f"\r{label}: {stage:<10}", end="", file=sys.stderr, flush=True)
    return cb


def cmd_run(args):
    import ember
    t0 = time.perf_counter()
    sess = ember.InferenceSession(args.model)
    print(f"compiled in {time.perf_counter() - t0:.2f} s ({sess.compile_stats.get('kernels')} kernels, "
          f"cache {sess.compile_stats.get('cache')})")
    feeds = _random_feeds(sess, _parse_dims(args.dim))
    feeds.update(_load_inputs(args.input))
    outs = sess.run(None, feeds)
    for o, a in zip(sess.get_outputs(), outs):
        summary = ""
        if a.size and a.dtype.kind in "fiub":
            x = a.astype(np.float64)
            summary = f" min {x.min():.6g} max {x.max():.6g} mean {x.mean():.6g}"
        print(f"{o.name}: shape {list(a.shape)} dtype {a.dtype}{summary}")
        if args.save:
            np.save(f"{args.save}_{o.name}.npy", a)
    return 0


def cmd_inspect(args):
    from ember.codegen.loop_ir import kernel_str
    from ember.runtime.compiler import compile_model
    c = compile_model(args.model, use_cache=False)
    g, prog = c.graph, c.program
    print(f"# {c.onnx_nodes} ONNX nodes -> {len(g.nodes)} Ember ops -> {len(prog.kernels)} kernels")
    if args.graph:
        print("\n## optimized graph\n" + str(g))
    print("\n## kernels")
    for k, grp in zip(prog.kernels, prog.groups):
        ops = [n.op for n in grp.nodes] or ["copy"]
        print(f"{k.name:<24} {grp.kind:<9} out {grp.root.type}  ops [{', '.join(ops)}]")
        print(f"{'':<24} from ONNX nodes: {', '.join(grp.origin) or '-'}")
    if args.loops:
        print("\n## loop IR")
        for k in prog.kernels:
            print(kernel_str(k))
    return 0


def cmd_bench(args):
    import ember
    so = ember.SessionOptions()
    so.intra_op_num_threads = args.threads
    sess = ember.InferenceSession(args.model, so)
    feeds = _random_feeds(sess, _parse_dims(args.dim))
    for _ in range(args.warmup):
        sess.run(None, feeds)
    times = []
    width = 30
    for i in range(args.runs):
        t = time.perf_counter()
        sess.run(None, feeds)
        times.append((time.perf_counter() - t) * 1e3)
        done = (i + 1) * width // args.runs
        print(f"\r[{'#' * done}{'.' * (width - done)}] {i + 1}/{args.runs}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    t = np.array(times)
    print(f"median {np.median(t):.3f} ms  p90 {np.percentile(t, 90):.3f} ms  p99 {np.percentile(t, 99):.3f} ms"
          f"  ({args.runs} runs)")
    if args.profile or args.trace:
        so.enable_profiling = True
        prof = ember.InferenceSession(args.model, so)
        for _ in range(max(args.runs // 4, 3)):
            prof.run(None, feeds)
        rows = prof.kernel_profile()
        by_kind: dict = {}
        for r in rows:
            by_kind[r["kind"]] = by_kind.get(r["kind"], 0.0) + r["median_ms"]
        print("by kind: " + ", ".join(f"{k} {v:.2f} ms" for k, v in sorted(by_kind.items(), key=lambda x: -x[1])))
        print(f"\n{'kernel':<28} {'kind':<10} {'median ms':>10} {'share':>7}  ONNX nodes")
        for r in rows[:args.profile or 15]:
            nodes = ", ".join(r["nodes"][:3]) + (" ..." if len(r["nodes"]) > 3 else "")
            print(f"{r['kernel'][:28]:<28} {r['kind']:<10} {r['median_ms']:>10.3f} {r['share']:>6.1%}  {nodes}")
        if args.trace:
            print(f"trace: {prof.end_profiling()}  (open in https://ui.perfetto.dev)")
    return 0


def _load_ops(path):
    """Import a file that registers custom ops (its `if __name__ == "__main__"` part does not run)."""
    import importlib.util
    from ember.errors import EmberError
    spec = importlib.util.spec_from_file_location(f"ember_ops_{abs(hash(path))}", path)
    if spec is None:
        raise EmberError(f"--ops {path}: not a Python file")
    try:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    except FileNotFoundError:
        raise EmberError(f"--ops {path}: no such file") from None


def main(argv=None):
    p = argparse.ArgumentParser(prog="ember", description="Ember: compile and run ONNX models natively")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a model on given or random inputs")
    r.add_argument("model")
    r.add_argument("--input", action="append", metavar="NAME=FILE.npy")
    r.add_argument("--dim", action="append", metavar="SYMBOL=SIZE", help="size for a symbolic dim")
    r.add_argument("--save", metavar="PREFIX", help="save outputs as PREFIX_<name>.npy")
    i = sub.add_parser("inspect", help="show the optimized graph and the fused kernels")
    i.add_argument("model")
    i.add_argument("--graph", action="store_true", help="print the optimized graph")
    i.add_argument("--loops", action="store_true", help="print each kernel's loop IR")
    b = sub.add_parser("bench", help="time a model (median, p90, p99)")
    b.add_argument("model")
    b.add_argument("--runs", type=int, default=100)
    b.add_argument("--warmup", type=int, default=5)
    b.add_argument("--dim", action="append", metavar="SYMBOL=SIZE")
    b.add_argument("--threads", type=int, default=0, help="intra-op threads (0: all cores)")
    b.add_argument("--profile", type=int, nargs="?", const=15, default=0, metavar="N",
                   help="then time every kernel and print the N slowest")
    b.add_argument("--trace", action="store_true", help="also write a Perfetto/Chrome trace file")
    for sp in (r, i, b):
        sp.add_argument("--ops", action="append", metavar="FILE.py",
                        help="run a Python file first (to register custom ops with ember.custom_op)")
    args = p.parse_args(argv)
    from ember.errors import EmberError
    try:
        for path in args.ops or []:
            _load_ops(path)
        return {"run": cmd_run, "inspect": cmd_inspect, "bench": cmd_bench}[args.cmd](args)
    except EmberError as e:
        print(f"ember: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
