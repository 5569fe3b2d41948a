"""`InferenceSession`: the onnxruntime-shaped API over a compiled model.

`run` validates the feeds, finds the plan for this input-shape signature (symbolic sizes and
arena offsets, computed once and cached), and makes one native call that runs every kernel.
It is safe to call from several threads: plans are immutable and each call takes its own arena.
"""
from __future__ import annotations

import ctypes
import json
import os
import threading
import time

import numpy as np

from ..errors import (DataDependentError, EmberError, InvalidInputError, StructuredIOError, UnsupportedOpError,
                      ValueDependentError, DimDependentError)
from ..ir import guards
from ..ir import symbolic as S
from ..ir.dtypes import onnx_type_str, to_numpy
from ..schedule.memory import plan_arena
from ..codegen.threadpool import default_threads
from .compiler import compile_model
from .iobinding import IOBinding


class NodeArg:
    def __init__(self, name, dtype, shape):
        self.name = name
        self.dtype = dtype
        self.shape = [d if isinstance(d, int) else str(d) for d in shape]
        self.type = onnx_type_str(dtype)

    def __repr__(self):
        return f"NodeArg(name='{self.name}', type='{self.type}', shape={self.shape})"


class SessionOptions:
    """Mirrors onnxruntime.SessionOptions for the settings Ember honours."""

    def __init__(self):
        self.intra_op_num_threads = 0
        self.enable_cache = True
        # as in onnxruntime: time every kernel of every run; `end_profiling()` writes a
        # Chrome/Perfetto trace (open it in ui.perfetto.dev) and returns its path
        self.enable_profiling = False
        self.profile_file_prefix = "ember_profile"


# the most working memory one run may plan: larger sizes come from absurd input dims
MAX_ARENA_BYTES = 1 << 40


class _Plan:
    """One input-shape signature: the build that runs it (the model, or a variant specialised
    for a size-1 broadcast), its sizes and arena offsets."""
    __slots__ = ("compiled", "fn", "wptr", "sizes", "sizes_ptr", "arena_bytes", "out_shapes", "status_off")

    def __init__(self, compiled, sizes, arena_bytes, out_shapes):
        self.compiled = compiled
        # byte offset of the run's status word in the arena (-1: the model checks no data)
        self.status_off = -1 if compiled.status_slot is None else int(sizes[compiled.status_slot])
        self.fn = compiled.fn
        self.wptr = compiled.weights.ctypes.data
        self.sizes = sizes
        self.sizes_ptr = sizes.ctypes.data
        self.arena_bytes = arena_bytes
        self.out_shapes = out_shapes


class _ArenaPool:
    """A session's working memory, shared by every shape signature. A run takes the smallest
    free arena that fits, else a new one, for which a free arena too small is dropped. So the
    session holds at most one arena per run in flight, each the size of the largest run so far,
    however many signatures it has seen. (An arena kept per signature grew a server's RSS by 8%
    in a 5-minute soak: MiniLM behind a batcher sees ~100 (rows, tokens) signatures.)"""

    def __init__(self):
        self._free: list[np.ndarray] = []
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> np.ndarray:
        need = max(nbytes, 64) + 64                  # + 64: the base is aligned up to 64 bytes
        with self._lock:
            fits = [k for k, a in enumerate(self._free) if a.nbytes >= need]
            if fits:
                return self._free.pop(min(fits, key=lambda k: self._free[k].nbytes))
            if self._free:                           # all too small: the largest makes way
                self._free.pop(max(range(len(self._free)), key=lambda k: self._free[k].nbytes))
        try:
            return np.empty(need, dtype=np.uint8)
        except MemoryError:
            raise InvalidInputError(f"these input shapes need {nbytes / 2**30:.1f} GiB of working "
                                    f"memory, more than can be allocated") from None

    def give(self, a: np.ndarray):
        with self._lock:
            self._free.append(a)


class InferenceSession:
    def __init__(self, model, sess_options: SessionOptions | None = None, providers=None, **kwargs):
        opts = sess_options or SessionOptions()
        self._options = opts
        self._model = model
        self._by_value = None
        self._wrapper = None      # a StagedModel or StructuredModel, when runs go through one
        try:
            self._c = compile_model(model, use_cache=getattr(opts, "enable_cache", True),
                                    specialize=kwargs.get("_fixed_dims"))
        except StructuredIOError:
            self._init_structured()
            return
        except DataDependentError as e:
            self._init_staged(e)
            return
        except ValueDependentError as e:
            if kwargs.get("_variant_of_values"):   # a variant of _ValueVariants: it adds the inputs
                raise
            self._init_by_value(e.inputs)
            return
        except DimDependentError as e:
            if kwargs.get("_fixed_dims") is not None:   # a variant of _DimVariants: it adds the symbols
                raise
            self._init_by_value(e.symbols, by_dims=True)
            return
        c = self._c
        self._variants = {(): c}    # specialised builds, by their fixed symbols (ir.guards)
        self._inputs = [NodeArg(n, t, s) for n, t, s in c.inputs]
        self._outputs = [NodeArg(n, t, s) for n, t, s in c.outputs]
        self._in_names = [n for n, _, _ in c.inputs]
        self._in_index = {n: i for i, n in enumerate(self._in_names)}
        self._out_index = {n: i for i, (n, _, _) in enumerate(c.outputs)}
        self._in_np = [to_numpy(t) for _, t, _ in c.inputs]
        self._in_decl = list(c.inputs)
        self._out_np = [to_numpy(t) for _, t, _ in c.outputs]
        self._plans: dict = {}
        self._plan_lock = threading.Lock()
        self._arenas = _ArenaPool()
        self._nbases = 2 + len(c.inputs) + len(c.outputs)
        self._nthreads = int(getattr(opts, "intra_op_num_threads", 0) or 0) or default_threads()
        self._profiling = bool(getattr(opts, "enable_profiling", False)) and c.profiled_fn is not None
        self._events: list = []          # (start perf_counter s, [kernel seconds])
        self._prof_lock = threading.Lock()

    def _init_by_value(self, names, by_dims=False):
        """The model reads graph inputs as shape arguments (Reshape's shape, Slice's starts,
        reduction axes...): compile one variant per value of those inputs, on first use, each
        a whole-model native build with them as constants (`_ValueVariants`). `by_dims`: it
        needs values computed from input dims (`names`, symbols) instead, one variant per value
        of those dims (`_DimVariants`)."""
        from ..frontends.onnx.loader import declared_inputs, read_model
        proto = read_model(self._model)
        decl = declared_inputs(proto)
        self._by_value = (_DimVariants(proto, names, decl, self._options) if by_dims
                          else _ValueVariants(proto, names, self._options))
        self._c = None
        self._in_decl = decl
        self._inputs = [NodeArg(n, t, s) for n, t, s in decl]
        self._in_names = [n for n, _, _ in decl]
        self._in_index = {n: i for i, n in enumerate(self._in_names)}
        self._in_np = [to_numpy(t) for _, t, _ in decl]
        self._outputs = [NodeArg(vo.name, "float32", []) for vo in proto.graph.output]
        self._out_index = {vo.name: i for i, vo in enumerate(proto.graph.output)}
        self._events, self._prof_lock, self._profiling = [], threading.Lock(), False

    def _init_staged(self, err):
        """An output shape computed from data: native stages split at that node."""
        from ..frontends.onnx.loader import declared_inputs, read_model
        from .staged import StagedModel
        proto = read_model(self._model)
        try:
            self._wrapper = StagedModel(proto, err.node, self._options, InferenceSession)
        except LookupError:      # (inside a subgraph or a function body: no stage boundary there)
            raise err from None
        self._c = None
        self._inputs = [NodeArg(n, t, s) for n, t, s in declared_inputs(proto)]
        self._outputs = [NodeArg(vo.name, "float32", []) for vo in proto.graph.output]
        self._events, self._prof_lock, self._profiling = [], threading.Lock(), False

    def _init_structured(self):
        """Sequence or optional graph inputs or outputs: flattened per run's structure."""
        from ..frontends.onnx.loader import read_model
        from .structured import StructuredModel
        self._wrapper = StructuredModel(read_model(self._model), self._options, InferenceSession)
        self._c = None
        self._inputs = [NodeArg(n, t, []) for n, t in self._wrapper.input_types()]
        self._outputs = [NodeArg(n, t, []) for n, t in self._wrapper.output_types()]
        self._events, self._prof_lock, self._profiling = [], threading.Lock(), False

    # ---------------------------------------------------------------------- introspection
    def get_inputs(self):
        return list(self._inputs)

    def get_outputs(self):
        if self._by_value is not None and self._by_value.last is not None:
            return self._by_value.last.get_outputs()
        return list(self._outputs)

    def get_providers(self):
        return ["EmberCPUExecutionProvider"]

    @property
    def compile_stats(self) -> dict:
        if self._wrapper is not None:
            return {type(self._wrapper).__name__: True}
        if self._c is None:
            last = self._by_value.last
            return dict(last.compile_stats, value_variants=len(self._by_value.sessions)) if last else {}
        return dict(self._c.stats)

    # ------------------------------------------------------------------------------ run
    def run(self, output_names, input_feed, run_options=None):
        if self._wrapper is not None:
            return self._wrapper.run(output_names, input_feed)
        arrays = self._check_feeds(input_feed)
        if self._by_value is not None:
            if output_names is not None:
                for n in output_names:
                    self._output_index(n)
            feed = dict(zip(self._in_names, arrays))
            try:
                inner, rest = self._by_value.session_for(feed)
                return inner.run(output_names, rest, run_options)
            except UnsupportedOpError as e:
                nodes = [(nm, op, f"{why} (compiled for {self._by_value.describe(feed)})") for nm, op, why in e.nodes]
                raise UnsupportedOpError(nodes) from None
            except EmberError as e:
                raise InvalidInputError(f"{e} (compiled for {self._by_value.describe(feed)})") from None
        plan = self._plan_for(arrays)
        picked = None if output_names is None else [self._output_index(n) for n in output_names]
        outs = self._new_outputs(plan)
        self._execute(arrays, outs, plan)
        return outs if picked is None else [outs[k] for k in picked]

    # ------------------------------------------------------------------------ io binding
    def io_binding(self) -> IOBinding:
        if self._wrapper is not None:
            raise EmberError("io_binding is not available for a model run in stages or with sequence or optional "
                             "inputs or outputs: call run()")
        if self._by_value is not None:
            raise EmberError("io_binding is not available for a model that reads graph inputs as shape "
                             f"arguments ({list(self._by_value.names)}): call run()")
        return IOBinding(self)

    def run_with_iobinding(self, iobinding: IOBinding, run_options=None):
        """Run with the binding's inputs, writing its bound outputs in place (onnxruntime's
        `run_with_iobinding`); the results are `iobinding.get_outputs()`."""
        arrays = self._check_feeds(dict(iobinding._inputs))
        plan = self._plan_for(arrays)
        bound, kept = iobinding._outputs, iobinding._kept
        outs = []
        for (name, _, _), shape, dt in zip(self._c.outputs, plan.out_shapes, self._out_np):
            arr = bound.get(name)
            if arr is None:
                arr = kept.get(name)
                if arr is None or arr.shape != shape:
                    arr = kept[name] = _alloc(name, shape, dt)
            elif arr.dtype != dt or arr.shape != shape:
                raise InvalidInputError(f"output '{name}' is bound to {arr.dtype}{list(arr.shape)}, but this run "
                                        f"gives {dt}{list(shape)}; bind a buffer of that type and shape")
            elif not (arr.flags.c_contiguous and arr.flags.writeable):
                raise InvalidInputError(f"output '{name}' is bound to an array that is not C-contiguous and "
                                        f"writeable; bind np.empty({list(shape)}, np.{dt.name})")
            else:
                named = [("input", n, a) for n, a in zip(self._in_names, arrays)]
                named += [("output", n, o) for (n, _, _), o in zip(self._c.outputs, outs)]
                hit = next(((kind, n) for kind, n, other in named if np.may_share_memory(arr, other)), None)
                if hit is not None:
                    raise InvalidInputError(f"output '{name}' is bound to memory that overlaps {hit[0]} '{hit[1]}'; "
                                            f"a kernel may read it after writing the output: bind separate buffers")
            outs.append(arr)
        self._execute(arrays, outs, plan)
        iobinding._results = [outs[self._out_index[name]] for name in bound]

    # ---------------------------------------------------------------------------- common
    def _input_index(self, name):
        if name not in self._in_index:
            raise InvalidInputError(f"unknown input name '{name}'; the model's inputs are {self._describe_inputs()}")
        return self._in_index[name]

    def _output_index(self, name):
        if name not in self._out_index:
            raise InvalidInputError(f"unknown output name '{name}'; the model's outputs are "
                                    f"{list(self._out_index)}")
        return self._out_index[name]

    def _plan_for(self, arrays):
        sig = tuple(a.shape for a in arrays)
        plan = self._plans.get(sig)
        return plan if plan is not None else self._make_plan(arrays, sig)

    def _new_outputs(self, plan):
        return [_alloc(name, s, d) for (name, _, _), s, d in zip(self._c.outputs, plan.out_shapes, self._out_np)]

    def _execute(self, arrays, outs, plan):
        arena = self._arenas.take(plan.arena_bytes)
        base = (arena.ctypes.data + 63) // 64 * 64
        bases = (ctypes.c_void_p * self._nbases)(
            base, plan.wptr, *[a.ctypes.data for a in arrays], *[o.ctypes.data for o in outs])
        status = None
        if plan.status_off >= 0:
            status = ctypes.c_int64.from_address(base + plan.status_off)
            status.value = 0
        try:
            if self._profiling:
                self._run_profiled(bases, plan)
            else:
                plan.fn(bases, plan.sizes_ptr, self._nthreads)
            code = status.value if status is not None else 0
        finally:
            self._arenas.give(arena)
        if code:
            raise InvalidInputError(plan.compiled.checks[code - 1])

    # ------------------------------------------------------------------------- profiling
    def _run_profiled(self, bases, plan):
        n = len(self._c.kernel_info)
        ticks = np.zeros(n + 1, dtype=np.int64)
        t0 = time.perf_counter()
        if plan.compiled is not self._c:   # a specialised variant has kernels of its own
            plan.fn(bases, plan.sizes_ptr, self._nthreads)
            return
        self._c.profiled_fn(bases, plan.sizes_ptr, self._nthreads, ticks.ctypes.data)
        wall = time.perf_counter() - t0
        d = np.diff(ticks).astype(np.float64)
        total = float(ticks[-1] - ticks[0]) or 1.0
        # time-stamp counter ticks -> seconds, by the call's own wall time
        with self._prof_lock:
            self._events.append((t0, d * (wall / total)))

    def kernel_profile(self) -> list[dict]:
        """Per-kernel times over the runs profiled so far (`enable_profiling`), slowest first:
        name, kind, ONNX nodes, calls, median and total milliseconds, share of the summed
        medians."""
        with self._prof_lock:
            events = list(self._events)
        if not events:
            return []
        per = np.array([e[1] for e in events])            # runs x kernels, seconds
        med = np.median(per, axis=0)
        total = med.sum()
        rows = []
        for k, (name, kind, nodes) in enumerate(self._c.kernel_info):
            rows.append({"kernel": name, "kind": kind, "nodes": list(nodes), "calls": len(events),
                         "median_ms": float(med[k] * 1e3), "total_ms": float(per[:, k].sum() * 1e3),
                         "share": float(med[k] / total) if total else 0.0})
        rows.sort(key=lambda r: -r["median_ms"])
        return rows

    def end_profiling(self) -> str:
        """Write the profiled runs as a Chrome trace-event JSON file (Perfetto and
        chrome://tracing open it) and return its path, as onnxruntime does."""
        with self._prof_lock:
            events, self._events = self._events, []
        trace = []
        for t0, secs in events:
            t = t0
            for (name, kind, nodes), dt in zip(self._c.kernel_info, secs):
                trace.append({"name": name, "cat": kind, "ph": "X", "pid": os.getpid(), "tid": 0,
                              "ts": t * 1e6, "dur": dt * 1e6, "args": {"onnx_nodes": list(nodes)}})
                t += dt
        path = f"{getattr(self._options, 'profile_file_prefix', 'ember_profile')}_" \
               f"{time.strftime('%Y-%m-%d_%H-%M-%S')}.json"
        with open(path, "w") as f:
            json.dump({"traceEvents": trace, "displayTimeUnit": "ms"}, f)
        return path

    def _check_feeds(self, feed):
        if not isinstance(feed, dict):
            raise InvalidInputError(f"feeds must be a dict of input name -> array, got {type(feed).__name__}")
        unknown = [k for k in feed if k not in self._in_index]
        if unknown:
            raise InvalidInputError(f"unknown input name(s) {unknown}; the model's inputs are "
                                    f"{self._describe_inputs()}")
        missing = [n for n in self._in_names if n not in feed]
        if missing:
            raise InvalidInputError(f"missing input(s) {missing}; the model's inputs are {self._describe_inputs()}")
        arrays = []
        for name, want, (_, dtype, shape) in zip(self._in_names, self._in_np, self._in_decl):
            a = feed[name]
            if not isinstance(a, np.ndarray):
                try:
                    a = np.asarray(a, dtype=want)
                except (TypeError, ValueError) as e:
                    raise InvalidInputError(f"input '{name}': cannot convert to {dtype}: {e}") from None
            if a.dtype != want:
                raise InvalidInputError(f"input '{name}' has dtype {a.dtype}, expected {dtype} "
                                        f"(convert with .astype(np.{want.name}))")
            if a.ndim != len(shape):
                raise InvalidInputError(f"input '{name}' has rank {a.ndim} (shape {list(a.shape)}), expected "
                                        f"rank {len(shape)} (shape {[str(d) for d in shape]})")
            for i, (got, d) in enumerate(zip(a.shape, shape)):
                if isinstance(d, int) and got != d:
                    raise InvalidInputError(f"input '{name}' has size {got} in dimension {i}, expected {d} "
                                            f"(shape {[str(x) for x in shape]})")
            arrays.append(np.asarray(a, order="C"))
        return arrays

    def _describe_inputs(self):
        return ", ".join(f"'{n}' {t}[{','.join(str(d) for d in s)}]" for n, t, s in self._in_decl)

    def _make_plan(self, arrays, sig):
        env: dict = {}
        where: dict = {}
        for (name, _, shape), a in zip(self._c.inputs, arrays):
            for i, (d, got) in enumerate(zip(shape, a.shape)):
                if isinstance(d, S.Sym):
                    syms = d.free_symbols()
                    if len(syms) == 1 and d == S.sym(next(iter(syms))):
                        s = next(iter(syms))
                        if s in env and env[s] != got:
                            other = where[s]
                            raise InvalidInputError(
                                f"input '{name}' has size {got} in dimension {i} ('{s}'), but input "
                                f"'{other[0]}' dimension {other[1]} gave '{s}' = {env[s]}; they must match")
                        env[s] = got
                        where[s] = (name, i)

        def describe(s):
            return f"input '{where[s][0]}' dimension {where[s][1]}" if s in where else "a model dimension"
        # the guards of the build at hand; a legal size-1 broadcast it cannot compute picks a
        # variant with those symbols fixed, whose own guards are checked in turn
        fixed: dict = {}
        c = self._c
        while True:
            more = guards.check(c.guards, env, describe)
            if not more:
                break
            fixed.update(more)
            c = self._variant(fixed)
        try:
            sizes = np.zeros(max(len(c.size_exprs), 1), dtype=np.int64)
            for k, e in enumerate(c.size_exprs):
                if e is not None:
                    sizes[k] = S.evaluate(e, env)
            buffers = [(slot, S.evaluate(nb, env), f, l) for slot, nb, f, l in c.arena]
            out_shapes = [tuple(S.evaluate(d, env) for d in shape) for _, _, shape in c.outputs]
        except ZeroDivisionError:
            raise InvalidInputError(f"input shapes {[list(s) for s in sig]} are inconsistent with the model") from None
        except OverflowError:
            raise InvalidInputError(f"input shapes {[list(s) for s in sig]} give sizes beyond 64 bits") from None
        if any(x < 0 for s in out_shapes for x in s):
            raise InvalidInputError(f"input shapes {[list(s) for s in sig]} give negative output sizes")
        offsets, total = plan_arena(buffers)
        if total > MAX_ARENA_BYTES:
            raise InvalidInputError(f"input shapes {[list(s) for s in sig]} need {total / 2**30:.0f} GiB of "
                                    f"working memory")
        for slot, off in offsets.items():
            sizes[slot] = off
        plan = _Plan(c, sizes, total, out_shapes)
        with self._plan_lock:
            self._plans.setdefault(sig, plan)
            return self._plans[sig]

    def _variant(self, fixed: dict):
        key = tuple(sorted(fixed.items()))
        with self._plan_lock:
            c = self._variants.get(key)
        if c is None:
            c = compile_model(self._model, use_cache=getattr(self._options, "enable_cache", True),
                              specialize=dict(fixed))
            with self._plan_lock:
                c = self._variants.setdefault(key, c)
        return c


class _Variants:
    """Compiled variants of a model, one per key a run's feeds give (least recently used
    dropped past LIMIT). Subclasses say how a feed keys its variant (`_key`), how a variant is
    built (`_build`) and, when building shows that more of the feed must be fixed, what
    (`_more`, returning whether it added anything)."""

    LIMIT = 32

    def __init__(self, proto, names, options):
        from collections import OrderedDict
        self.proto, self.names, self.options = proto, list(names), options
        self.sessions: OrderedDict = OrderedDict()
        self.lock = threading.Lock()
        self.last = None

    def session_for(self, feed):
        while True:
            key = self._key(feed)
            with self.lock:
                sess = self.sessions.get(key)
                if sess is not None:
                    self.sessions.move_to_end(key)
            if sess is not None:
                break
            try:
                sess = self._build(feed)
            except UnsupportedOpError as e:
                if not self._more(e, feed):
                    raise
                continue
            with self.lock:
                self.sessions[key] = sess
                while len(self.sessions) > self.LIMIT:
                    self.sessions.popitem(last=False)
            break
        self.last = sess
        return sess, self._rest(feed)


class _ValueVariants(_Variants):
    """The compiled variants of a model whose shape arguments are graph inputs, one per value
    of those inputs. A run looks its variant up by the inputs' bytes (a dict lookup) and makes
    that variant's one native call."""

    def describe(self, feed) -> str:
        return ", ".join(f"input '{n}' = {np.array2string(feed[n], threshold=16)}" for n in self.names)

    def _key(self, feed):
        for n in self.names:
            if feed[n].size > 1 << 16:
                raise InvalidInputError(f"input '{n}' is read as a shape argument and has {feed[n].size} "
                                        f"elements; expected a small tensor")
        return tuple((n, feed[n].dtype.str, feed[n].shape, feed[n].tobytes()) for n in self.names)

    def _build(self, feed):
        from ..frontends.onnx.loader import with_values
        model = with_values(self.proto, {n: feed[n] for n in self.names})
        return InferenceSession(model.SerializeToString(), self.options, _variant_of_values=True)

    def _more(self, e, feed):           # another input read as a shape argument
        new = [n for n in getattr(e, "inputs", ()) if n not in self.names and n in feed] \
            if isinstance(e, ValueDependentError) else []
        self.names += new
        return bool(new)

    def _rest(self, feed):
        return {n: a for n, a in feed.items() if n not in self.names}


class _DimVariants(_Variants):
    """The compiled variants of a model that needs values computed from input dims while
    compiling (an If on a shape, a Range to a computed size, a trip count), one per value of
    those dims: each a whole-model native build with the dims fixed, looked up by the feeds'
    shapes."""

    def __init__(self, proto, symbols, decl, options):
        super().__init__(proto, symbols, options)
        self.where = {}
        for k, (_, _, shape) in enumerate(decl):
            for i, d in enumerate(shape):
                syms = d.free_symbols() if isinstance(d, S.Sym) else ()
                if len(syms) == 1 and d == S.sym(next(iter(syms))):     # a dim that is a symbol itself
                    self.where.setdefault(next(iter(syms)), (k, i))
        self._check(self.names)

    def _check(self, symbols):
        missing = [s for s in symbols if s not in self.where]
        if missing:
            raise UnsupportedOpError([("(model)", "-", f"needs the values of dims {missing} while compiling, and "
                                      f"they are not input dims Ember can fix per run")])

    def _values(self, feed):
        arrays = list(feed.values())
        return {s: int(arrays[self.where[s][0]].shape[self.where[s][1]]) for s in self.names}

    def describe(self, feed) -> str:
        return ", ".join(f"dim {s} = {v}" for s, v in self._values(feed).items())

    def _key(self, feed):
        return tuple(sorted(self._values(feed).items()))

    def _build(self, feed):
        return InferenceSession(self.proto.SerializeToString(), self.options, _fixed_dims=self._values(feed))

    def _more(self, e, feed):           # fixing these showed more dims that are needed
        new = [s for s in e.symbols if s not in self.names] if isinstance(e, DimDependentError) else []
        self._check(new)
        self.names += new
        return bool(new)

    def _rest(self, feed):
        return feed


def _alloc(name, shape, dtype):
    try:
        return np.empty(shape, dtype=dtype)
    except (MemoryError, ValueError):
        raise InvalidInputError(f"output '{name}' of shape {list(shape)} cannot be allocated") from None
