"""`ember run | inspect | bench MODEL [--ops FILE.py]`: the command line.

Every EmberError is printed as one clear message (exit 2), never a stack trace."""
from __future__ import annotations

import argparse
import os
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


def cmd_serve(args):
    from ember.serve.core import InferenceServer, ServeOptions
    from ember.serve.repository import RepositoryError, load_models, model_sources, scan_repository
    from ember.serve.server import Server
    if bool(args.model) == bool(args.model_repository):
        print("ember serve: give model files or --model-repository DIR (not both)", file=sys.stderr)
        return 2
    try:
        sources = scan_repository(args.model_repository) if args.model_repository else model_sources(args.model)
    except RepositoryError as e:
        print(f"ember serve: {e}", file=sys.stderr)
        return 2
    for s in sources:       # command-line settings override each model's config
        for key in ("max_batch_size", "max_queue_delay_ms", "threads", "instances"):
            if getattr(args, key) is not None:
                setattr(s.config, key, getattr(args, key))
    opts = ServeOptions(max_body_bytes=int(args.max_body_mb * 2**20), request_timeout_s=args.request_timeout,
                        auth_token=args.auth_token)
    if args.ray:
        return _serve_on_ray(args, sources, opts)

    def progress(name, version, seconds):
        if seconds is None:
            print(f"compiling {name} (version {version}) ...", end="", file=sys.stderr, flush=True)
        else:
            print(f" {seconds:.1f} s", file=sys.stderr, flush=True)
    try:
        models = load_models(sources, progress)
    except RepositoryError as e:
        print(f"\nember serve: {e}", file=sys.stderr)
        return 2
    server = Server(InferenceServer(models, opts), host=args.host, port=args.port,
                    grpc_port=None if args.no_grpc else args.grpc_port, log_level=args.log_level)
    grpc_note = "" if args.no_grpc else f", gRPC on {args.host}:{server.grpc_port}"
    print(f"serving {', '.join(sorted({m.name for m in models}))}: HTTP on http://{args.host}:{server.http_port}"
          f"{grpc_note}", file=sys.stderr, flush=True)
    server.run()
    return 0


def _serve_on_ray(args, sources, opts):
    import signal
    try:
        import ray
        from ember.serve.ray import deploy
    except ImportError:
        print("ember serve --ray needs Ray Serve: pip install 'ray[serve]'", file=sys.stderr)
        return 2
    ray.init(address=args.ray_address, include_dashboard=False)
    print(f"deploying {args.replicas} replicas (each compiles the models) ...", file=sys.stderr, flush=True)
    grpc_port = None if args.no_grpc else args.grpc_port
    deploy(sources, replicas=args.replicas, host=args.host, port=args.port, options=opts, grpc_port=grpc_port)
    grpc_note = "" if grpc_port is None else f", gRPC on port {grpc_port} (every interface: Ray's proxy)"
    print(f"serving {', '.join(sorted({s.name for s in sources}))} on Ray Serve: HTTP on "
          f"http://{args.host}:{args.port}{grpc_note} ({args.replicas} replicas)", file=sys.stderr, flush=True)
    import threading
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    finally:
        if args.ray_address:           # a shared cluster: remove this app only
            from ray import serve
            serve.delete("ember")
        ray.shutdown()                 # a cluster started here goes with its replicas
    return 0


def cmd_loadtest(args):
    from ember.serve.loadtest import main as loadtest
    return loadtest(args)


def cmd_demo_repository(args):
    from ember.serve.demo_repository import write_demo_repository
    path = write_demo_repository(args.dir)
    print(f"wrote {path}; serve it with: ember serve --model-repository {args.dir}")
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
    sv = sub.add_parser("serve", help="serve models over KServe v2 (HTTP and gRPC) and OpenAI-style embeddings")
    sv.add_argument("model", nargs="*", metavar="[NAME=]MODEL.onnx")
    sv.add_argument("--model-repository", metavar="DIR", help="a Triton-style repository: NAME/VERSION/model.onnx")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--grpc-port", type=int, default=8001)
    sv.add_argument("--no-grpc", action="store_true", help="serve HTTP only")
    sv.add_argument("--max-batch-size", type=int, help="rows per batch for every model (0: no batching)")
    sv.add_argument("--max-queue-delay-ms", type=float, help="how long a request may wait for its batch to fill")
    sv.add_argument("--threads", type=int, help="intra-op threads per run (0: all cores)")
    sv.add_argument("--instances", type=int, help="runs of one model at once")
    sv.add_argument("--request-timeout", type=float, default=60.0, metavar="SECONDS")
    sv.add_argument("--max-body-mb", type=float, default=64.0, help="the largest request body")
    sv.add_argument("--auth-token", default=os.environ.get("EMBER_AUTH_TOKEN"), help="require 'Authorization: Bearer TOKEN' (health probes excepted)")
    sv.add_argument("--log-level", default="warning")
    sv.add_argument("--ray", action="store_true", help="serve as Ray Serve replicas (needs ray[serve])")
    sv.add_argument("--replicas", type=int, default=2, help="with --ray: how many replicas")
    sv.add_argument("--ray-address", default=None, help="with --ray: a Ray cluster to join (default: start one)")
    lt = sub.add_parser("loadtest", help="drive a running ember serve (loopback only) and report latency")
    lt.add_argument("url", help="the server, e.g. http://127.0.0.1:8000")
    lt.add_argument("--model", help="KServe v2 infer requests to this model, with random inputs")
    lt.add_argument("--embeddings", metavar="MODEL", help="/v1/embeddings requests to this model")
    lt.add_argument("--shape", action="append", metavar="INPUT=2x128", help="an input's shape")
    lt.add_argument("--texts", type=int, default=1, help="texts per embeddings request")
    lt.add_argument("--requests", type=int, default=1000, help="at most this many requests")
    lt.add_argument("--seconds", type=float, default=30.0, help="for at most this long")
    lt.add_argument("--concurrency", type=int, default=8, help="clients (requests in flight)")
    lt.add_argument("--rate", type=float, help="open loop: requests per second")
    lt.add_argument("--auth-token", default=os.environ.get("EMBER_AUTH_TOKEN"))
    lt.add_argument("--json", action="store_true", help="print the summary as JSON")
    dr = sub.add_parser("demo-repository", help="write a model repository with the demo model (all-MiniLM-L6-v2)")
    dr.add_argument("dir")
    for sp in (r, i, b, sv):
        sp.add_argument("--ops", action="append", metavar="FILE.py",
                        help="run a Python file first (to register custom ops with ember.custom_op)")
    args = p.parse_args(argv)
    from ember.errors import EmberError
    try:
        for path in getattr(args, "ops", None) or []:
            _load_ops(path)
        return {"run": cmd_run, "inspect": cmd_inspect, "bench": cmd_bench, "serve": cmd_serve,
                "demo-repository": cmd_demo_repository, "loadtest": cmd_loadtest}[args.cmd](args)
    except EmberError as e:
        print(f"ember: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
