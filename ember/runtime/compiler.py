"""The compile pipeline, stage by stage, and the compiled-model artifact that is cached on
disk (metadata JSON + weight blob + object file keyed by IR hash)."""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

from ..codegen import loop_ir
from ..codegen import native
from ..codegen.threadpool import ensure_pool
from ..codegen.llvm import ModuleBuilder
from ..codegen.lower import Program, lower
from ..frontends.onnx.loader import load_onnx, read_model
from ..errors import CompileError, EmberError
from ..ir import guards as G
from ..ir import symbolic as S
from ..ir.ops import custom_fingerprint, options_fingerprint
from ..passes import optimize
from ..schedule.fusion import schedule
from .probe import measured_target

FORMAT = 5
_PROFILED = {"ember_run_profiled": native.PROFILED_PROTO}


@dataclass
class Compiled:
    """Everything `run` needs, independent of how it was produced (fresh or from cache)."""
    inputs: list            # [(name, dtype, shape dims)]
    outputs: list           # [(name, dtype, shape dims)]
    size_exprs: list        # slot -> Dim | None (None: arena offset slot)
    arena: list             # [(slot, nbytes Dim, first, last)]
    weights: np.ndarray
    fn: object              # ctypes function
    stats: dict = field(default_factory=dict)
    profiled_fn: object = None   # ember_run that also records per-kernel time stamps
    kernel_info: list = field(default_factory=list)   # [(name, kind, ONNX node names)]
    guards: tuple = ()      # shape assumptions checked once per input-shape signature (ir.guards)
    checks: list = field(default_factory=list)   # run-time data error messages, by status code - 1
    status_slot: int | None = None               # size-table slot of the status word's offset
    # present only after a fresh compile (for inspect)
    graph: object = None
    program: Program | None = None
    onnx_nodes: int = 0


def _debug(stage):
    d = os.environ.get("EMBER_DEBUG", "")
    return d == "all" or stage in d.split(",")


def compile_model(model, use_cache: bool = True, progress=None, specialize: dict | None = None) -> Compiled:
    """Compile `model`; `specialize` {symbol: size} fixes input dims named by those symbols
    (a variant for a size-1 broadcast the shape-generic build cannot compute: ir.guards)."""
    try:
        return _compile(model, use_cache, progress, specialize)
    except EmberError:
        raise
    except Exception as e:     # past the importer's checks, anything else is Ember's own bug
        raise CompileError(f"internal error while compiling the model (an Ember bug: please report it with "
                           f"the model): {type(e).__name__}: {e}") from e


def _compile(model, use_cache, progress, specialize) -> Compiled:
    t0 = time.perf_counter()
    key = _stat_lookup(model) if use_cache and not specialize else None
    raw = None
    if key is None:
        raw = _model_bytes(model)
        if use_cache and raw is not None:
            key = _model_key(raw)
            if b"location" not in raw and not specialize:  # external data: not covered by the stat key
                _stat_remember(model, key)
    if key is not None and specialize:
        key = hashlib.sha256(f"{key}|{sorted(specialize.items())}".encode()).hexdigest()
    if key is not None:
        hit = _load_cached(key)
        if hit is not None:
            hit.stats["load_s"] = time.perf_counter() - t0
            hit.stats["cache"] = "hit"
            return hit
    stats = {}

    def stage(name):
        stats[name] = time.perf_counter() - stage.t
        stage.t = time.perf_counter()
        if progress:
            progress(name)
    stage.t = time.perf_counter()

    proto = read_model(model)
    n_onnx = len(proto.graph.node)
    imported = load_onnx(proto, fixed_dims=specialize)
    stage("import")
    target = measured_target()
    graph = optimize(imported, target=target)
    guards = G.collect(imported, graph)
    stage("optimize")
    sched = schedule(graph, target)
    stage("schedule")
    prog = lower(sched, target)
    stage("lower")
    if _debug("loop"):
        for k in prog.kernels:
            print(loop_ir.kernel_str(k), file=sys.stderr)
    mb = ModuleBuilder("ember_model", prog.buffers, target.vector_bits, indirect=True)
    for k in prog.kernels:
        mb.add_kernel(k)
    mb.add_entry()
    mb.add_profiled_entry()
    ir_text = str(mb.module)
    if _debug("llvm"):
        print(ir_text, file=sys.stderr)
    stage("llvm_ir")
    obj, obj_key = native.get_object(ir_text, use_cache=use_cache)
    stage("native")
    ensure_pool()
    fns = native.load_object(obj, optional=_PROFILED)
    c = Compiled(
        inputs=[(v.name, v.dtype, tuple(v.shape)) for v in prog.inputs],
        outputs=[(name, v.dtype, tuple(v.shape)) for name, v in zip(sched.graph.output_names, prog.outputs)],
        size_exprs=list(prog.sizes.exprs), arena=list(prog.arena), weights=prog.weights,
        stats=stats, graph=graph, program=prog, onnx_nodes=n_onnx,
        fn=fns["ember_run"], profiled_fn=fns.get("ember_run_profiled"),
        kernel_info=[(k.name, k.kind, list(k.origin)) for k in prog.kernels], guards=guards,
        checks=list(prog.checks), status_slot=prog.status_slot)
    c.stats["kernels"] = len(prog.kernels)
    c.stats["unique_kernels"] = len(mb.functions)
    c.stats["cache"] = "miss"
    if key is not None:
        _store_cached(key, c, obj_key)
    c.stats["compile_s"] = time.perf_counter() - t0
    return c


# -------------------------------------------------------------------------------- cache
def _model_bytes(model):
    """The bytes that identify the model for the cache (None: do not cache)."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    if isinstance(model, (str, os.PathLike)):
        p = os.fspath(model)
        if not os.path.isfile(p):
            return None
        with open(p, "rb") as f:
            data = f.read()
        if b"location" in data:   # may reference external data files: key on their stats too
            d = os.path.dirname(os.path.abspath(p))
            stats = sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(d) if e.is_file())
            data += repr(stats).encode()
        return data
    try:
        return model.SerializeToString()
    except Exception:
        return None


def _stat_ref(model):
    """For a model file: a key from (path, size, mtime, inode), so a warm load need not read
    and hash the whole file (ccache's 'direct mode'); None for bytes or protos."""
    if not isinstance(model, (str, os.PathLike)) or not os.path.isfile(model):
        return None
    st = os.stat(model)
    # keyed like the model key: by target (EMBER_TARGET included) and Ember's own fingerprint
    ident = (f"{os.path.realpath(model)}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}|{native.target_info()}|"
             f"{measured_target().plan_key()}|{native.compiler_fingerprint()}|{custom_fingerprint()}|{options_fingerprint()}|{FORMAT}")
    return native.cache_dir() / (hashlib.sha256(ident.encode()).hexdigest() + ".ref")


def _stat_lookup(model):
    ref = _stat_ref(model)
    try:
        key = ref.read_bytes().decode("ascii").strip() if ref is not None and ref.exists() else None
    except (OSError, UnicodeDecodeError):
        key = ""
    if key is not None and not re.fullmatch(r"[0-9a-f]{64}", key):     # damaged: rehash the model
        if ref.exists():
            native.reject_cached(ref, "not a model key")
        return None
    return key


def _stat_remember(model, key):
    ref = _stat_ref(model)
    if ref is not None:
        native.write_atomic(ref, key.encode())


def _model_key(raw: bytes) -> str:
    triple, cpu, features = native.target_info()
    h = hashlib.sha256(raw)
    for part in (triple, cpu, features, measured_target().plan_key(), native.compiler_fingerprint(), custom_fingerprint(),
                 options_fingerprint(), str(FORMAT)):
        h.update(part.encode())
    return h.hexdigest()


def _enc(d):
    return None if d is None else S.encode(d)


def _weights_digest(path) -> str:
    """SHA-256 of the weight file's size and of 16 blocks of 64 KB spread over it. Hashing
    all of BERT-base's 440 MB takes 0.8 s here, more than the warm load's budget; weights are
    only read (a bad byte cannot make a kernel leave its buffers), and the blocks catch a
    truncated, zeroed or overwritten file. The object file, which runs, is hashed whole."""
    size = os.path.getsize(path)
    h = hashlib.sha256(str(size).encode())
    block = 1 << 16
    with open(path, "rb") as f:
        for k in range(16):
            f.seek(max(0, (size - block) * k // 15))
            h.update(f.read(block))
    return h.hexdigest()


def _store_cached(key, c: Compiled, obj_key: str):
    d = native.cache_dir()
    wpath = d / f"{key}.weights.npy"
    fd, tmp = tempfile.mkstemp(dir=d, prefix=wpath.name + ".", suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        np.save(f, c.weights)
    digest = _weights_digest(tmp)
    os.replace(tmp, wpath)
    meta = {
        "format": FORMAT, "object": obj_key, "weights": digest,
        "inputs": [[n, t, [S.encode(x) for x in s]] for n, t, s in c.inputs],
        "outputs": [[n, t, [S.encode(x) for x in s]] for n, t, s in c.outputs],
        "sizes": [_enc(x) for x in c.size_exprs],
        "arena": [[slot, S.encode(nb), f, l] for slot, nb, f, l in c.arena],
        "kernels": c.stats.get("kernels", 0),
        "kernel_info": c.kernel_info,
        "guards": [g.encode() for g in c.guards],
        "checks": c.checks, "status_slot": c.status_slot,
    }
    body = json.dumps(meta, sort_keys=True)
    native.write_atomic(d / f"{key}.json", json.dumps({"sha256": hashlib.sha256(body.encode()).hexdigest(),
                                                        "meta": body}).encode())
    native.trim_cache()


def _load_cached(key):
    """The cached model `key`, each of its files verified first; None (with a warning for a
    damaged entry) when it must be compiled."""
    d = native.cache_dir()
    mpath = d / f"{key}.json"
    if not mpath.exists():
        return None
    opath = wpath = mpath
    try:
        outer = json.loads(mpath.read_bytes())
        body = outer["meta"]
        if hashlib.sha256(body.encode()).hexdigest() != outer["sha256"]:
            raise ValueError("its content hash does not match")
        meta = json.loads(body)
        if meta.get("format") != FORMAT:
            return None
        opath = d / f"{meta['object']}.o"
        wpath = d / f"{key}.weights.npy"
        if _weights_digest(wpath) != meta["weights"]:
            raise ValueError(f"its weights file {wpath.name} does not match its content hash")
        weights = np.load(wpath, mmap_mode="r")
        obj = native.read_object(opath)
        if obj is None:
            return None
        native.touch_cached(mpath, wpath, opath)
        ensure_pool()
        fns = native.load_object(obj, optional=_PROFILED)
        return Compiled(
            inputs=[(n, t, tuple(S.decode(x) for x in s)) for n, t, s in meta["inputs"]],
            outputs=[(n, t, tuple(S.decode(x) for x in s)) for n, t, s in meta["outputs"]],
            size_exprs=[None if x is None else S.decode(x) for x in meta["sizes"]],
            arena=[(slot, S.decode(nb), f, l) for slot, nb, f, l in meta["arena"]],
            weights=weights, fn=fns["ember_run"], profiled_fn=fns.get("ember_run_profiled"),
            kernel_info=[tuple(x) for x in meta.get("kernel_info", [])], stats={"kernels": meta.get("kernels", 0)},
            guards=tuple(G.Guard.decode(g) for g in meta["guards"]), checks=meta["checks"],
            status_slot=meta["status_slot"])
    except FileNotFoundError:     # evicted by another process meanwhile
        return None
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        native.reject_cached(mpath, f"unreadable ({type(e).__name__}: {e})")
        return None
