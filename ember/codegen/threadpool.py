"""A persistent native thread pool, generated with llvmlite's IR builder and loaded once per
process. Compiled Ember modules only *declare* the exported functions; `ensure_pool` registers
their addresses with `llvm.add_symbol`, so those modules resolve them when they are loaded.

Exported ABI (C view):

    void    ember_parallel_for(void (*fn)(void *ctx, int64 lo, int64 hi), void *ctx,
                               int64 n, int32 nthreads);
    void    ember_pool_start(int32 nworkers);     // idempotent
    int32   ember_pool_workers(void);             // workers running (0 before start)
    void    ember_pool_hold(int32 nthreads);      // a run begins: keep nthreads-1 workers awake
    void    ember_pool_release(int32 nthreads);   // ... and ends

Protocol. All shared state is a handful of globals, each on its own cache line:

* `busy` (i32): one job at a time. A caller takes the pool with a compare-and-swap 0 -> 1
  (acquire); when that fails (a job from another thread, or a nested call from inside a
  parallel body) it simply runs `fn(ctx, 0, n)` inline. No mutex anywhere, so callers never
  block and the pool is never oversubscribed. Released with a store 0 (release).
* job fields (`fn`, `ctx`, `n`, `chunk`, `job_workers`): written with plain stores by the
  caller that holds `busy`, while no worker can be reading them (see `gate`).
* `gate` (i32): OPEN bit | number of workers inside the current job. The caller publishes
  the job with a store OPEN (release); a worker joins with a CAS count -> count+1 that only
  succeeds while OPEN is set (acquire: it then sees the job fields), and leaves with a
  fetch-sub (release: its writes become visible). When the caller has run out of chunks it
  clears OPEN and spins until the gate reads 0 (acquire): every chunk claimed is finished and
  every worker's writes are visible to the caller. Because joining needs the OPEN bit in the
  same word as the count, a late worker can never slip into a job that has been closed and
  then read the fields of the next one. (This replaces a separate "iterations done" counter:
  a chunk is only ever claimed by someone inside the gate, so gate == 0 after closing
  already means "all done".)
* `regions` (one i64 word per participant, each on its own cache line): the range is cut
  into chunks of max(1, n / (participants * 8)) iterations, and the chunks into one
  contiguous region per participant, its word packing front | back << 32 (in chunks).
  Participant `me` (the caller 0, workers numbered by the order they passed the gate) claims
  chunks from the front of its own region with a CAS, then steals from the backs of the
  other regions until all are empty (monotonic is enough: the gate orders everything else).
  So uneven iterations still balance, while each thread keeps the same share of every loop:
  the data it wrote in the previous kernel is in its own cache (a line from the other core
  costs ~100 ns here, ~400 ns in the spells when the two vCPUs sit far apart), and it walks
  its GEMM panels forward, as the next-panel prefetch assumes. A single shared counter handed
  out chunks in turn: MobileNetV2 at 2 threads ran 4% slower, and 20% slower in those spells.
* `seq` (i32, the futex word) and `sleepers` (i32): a worker waits for `seq` to change,
  spinning with `pause` for WORKER_SPINS iterations, then parks: sleepers += 1, re-check `seq`,
  FUTEX_WAIT_PRIVATE(seq, old) (the kernel returns at once if `seq` changed meanwhile),
  sleepers -= 1. The caller bumps `seq` and then issues FUTEX_WAKE_PRIVATE only if
  `sleepers` != 0. Both sides write with a seq_cst RMW and then read the other word with a
  seq_cst load (a Dekker pair): either the worker sees the new `seq` or the caller sees the
  sleeper, so no wakeup is lost.
* `held` (i32) and `hold_workers` (i32): a compiled model's entry brackets its kernels with
  `ember_pool_hold` / `ember_pool_release` (as onnxruntime's executor holds a parallel
  section over a run). While `held` != 0, the workers the run uses (id < hold_workers) keep
  spinning instead of parking, whatever the gaps between its parallel loops; hold also wakes
  parked workers at once, so they are up by the first parallel kernel. Parking and waking
  are otherwise unchanged: this only decides when a worker parks, never whether a job is
  seen. (With the spins alone, ~36 us of `pause` on this guest, a worker parked and was
  woken ~15 times a ResNet-50 run; held, at 2 threads, process-alternated pairs' p20: 5 of
  6 faster for ResNet-50 and for MobileNetV2, median pair ratio ~0.87.)

Only workers with id < nthreads-1 take part in a job; the calling thread always does.
If no worker ever shows up (none started, all busy elsewhere, or after fork()), the caller
simply runs every chunk itself.
"""
from __future__ import annotations

import ctypes
import os
import platform
import sys
import threading

import llvmlite.binding as llvm
import llvmlite.ir as ir

from . import native

I32, I64, PTR, VOID = ir.IntType(32), ir.IntType(64), ir.PointerType(), ir.VoidType()
BODY_TYPE = ir.FunctionType(VOID, [PTR, I64, I64])        # void fn(ctx, lo, hi)
# A pointer that knows its pointee, so llvmlite can emit an indirect call through it (it is
# printed as `ptr`, or as legacy `void (ptr, i64, i64)*`, which LLVM parses as `ptr`).
BODY_PTR = BODY_TYPE.as_pointer()
PARALLEL_FOR_TYPE = ir.FunctionType(VOID, [PTR, PTR, I64, I32])

GATE_OPEN = 1 << 31
CHUNKS_PER_THREAD = 8
# Regions (one per participant) that the range is split into; each region's claim word sits
# on its own cache line. More participants than this share the last regions by stealing.
MAX_REGIONS = 64
REGION_STRIDE = 8               # i64 words per region word: one 64-byte line
# Spins (load + pause) before a waiting worker parks. `pause` measured ~23 ns on the Zen 5
# development machine (~40 ns on Intel Skylake+), so 2000 spins is ~50-80 us: long enough
# that back-to-back parallel loops (one per kernel) find the workers awake, short enough that
# an idle pool stops burning CPU almost at once. Waking a parked worker costs a futex call
# plus the kernel's wakeup latency (tens of microseconds), paid only after an idle gap.
WORKER_SPINS = 2000
# While the caller waits for workers to leave, yield the CPU after this many spins: when
# threads outnumber cores, the worker we wait for may be descheduled.
CALLER_SPINS_BEFORE_YIELD = 4096
FUTEX_WAIT_PRIVATE, FUTEX_WAKE_PRIVATE = 128, 129
INT_MAX = 2**31 - 1
FUTEX_SYSCALL = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98}

_lock = threading.Lock()
_engine = None           # the MCJIT engine owning the pool's code: alive for the process
_addresses: dict = {}    # exported name -> address
_workers = None          # workers running, once ensure_pool has started the pool


def default_threads() -> int:
    env = os.environ.get("EMBER_NUM_THREADS")
    if env:
        return max(1, int(env))
    return len(os.sched_getaffinity(0))


def futex_syscall_number() -> int | None:
    """The futex syscall number for this machine, or None where we cannot park (no pool)."""
    if not sys.platform.startswith("linux"):
        return None
    return FUTEX_SYSCALL.get(platform.machine().lower())


class _PoolModule:
    """Builds the pool's LLVM module."""

    def __init__(self, triple: str, futex_nr: int):
        self.module = m = ir.Module(name="ember_threadpool")
        m.triple = triple
        self.futex_nr = futex_nr
        self.is_x86 = triple.startswith(("x86_64", "i386", "i686"))

        def shared(name, typ, init):
            g = ir.GlobalVariable(m, typ, f"ember_pool.{name}")
            g.linkage = "internal"
            g.initializer = ir.Constant(typ, init)
            g.align = 64              # one cache line each: no false sharing between them
            return g

        self.busy = shared("busy", I32, 0)
        self.seq = shared("seq", I32, 0)
        self.sleepers = shared("sleepers", I32, 0)
        self.gate = shared("gate", I32, 0)
        self.regions = shared("regions", ir.ArrayType(I64, MAX_REGIONS * REGION_STRIDE), None)
        self.job_regions = shared("job_regions", I64, 0)
        self.claimed = shared("claimed", I32, 0)     # ember_pool_start ran
        self.workers = shared("workers", I32, 0)     # workers running
        self.job_fn = shared("job_fn", PTR, None)
        self.job_ctx = shared("job_ctx", PTR, None)
        self.job_n = shared("job_n", I64, 0)
        self.job_chunk = shared("job_chunk", I64, 0)
        self.job_workers = shared("job_workers", I32, 0)   # workers allowed to join
        self.held = shared("held", I32, 0)                 # runs in progress (ember_pool_hold)
        self.hold_workers = shared("hold_workers", I32, 0)  # workers those runs keep awake

        def extern(name, ret, args, var_arg=False):
            return ir.Function(m, ir.FunctionType(ret, args, var_arg=var_arg), name)

        self.syscall = extern("syscall", I64, [I64], var_arg=True)
        self.sched_yield = extern("sched_yield", I32, [])
        self.pthread_create = extern("pthread_create", I32, [PTR, PTR, PTR, PTR])
        self.pause_intrinsic = (extern("llvm.x86.sse2.pause", VOID, []) if self.is_x86 else None)

        self.claim = self._build_claim()
        self.run_chunks = self._build_run_chunks()
        self.worker_main = self._build_worker_main()
        self._build_parallel_for()
        self._build_pool_start()
        self._build_pool_workers()
        self._build_pool_hold()

    # --- small helpers -------------------------------------------------------------------

    def pause(self, b):
        if self.pause_intrinsic is not None:
            b.call(self.pause_intrinsic, [])

    def wake_sleepers(self, b, wake, then):
        """After a seq_cst RMW: wake every parked worker (in block `wake`) if any has
        announced itself in `sleepers`, then go on to `then` (the Dekker pair above)."""
        sleepers = self.load(b, self.sleepers, I32, "seq_cst")
        b.cbranch(b.icmp_unsigned("!=", sleepers, I32(0)), wake, then)
        b.position_at_end(wake)
        self.futex(b, FUTEX_WAKE_PRIVATE, I32(INT_MAX))
        b.branch(then)

    def futex(self, b, op, value):
        """syscall(SYS_futex, &seq, op, value, NULL, NULL, 0); every argument passed as a
        full register (the variadic syscall() reads each one as a long)."""
        null = ir.Constant(PTR, None)
        b.call(self.syscall, [I64(self.futex_nr), self.seq, I64(op), b.zext(value, I64),
                              null, null, I64(0)])

    @staticmethod
    def load(b, g, typ, order="monotonic"):
        return b.load_atomic(g, order, typ.width // 8, typ=typ)

    @staticmethod
    def store(b, g, value, order="monotonic"):
        b.store_atomic(value, g, order, value.type.width // 8)

    def function(self, name, ftype, linkage="external"):
        f = ir.Function(self.module, ftype, name)
        f.linkage = linkage
        return f, ir.IRBuilder(f.append_basic_block("entry"))

    # --- functions -----------------------------------------------------------------------

    def region_word(self, b, r):
        return b.gep(self.regions, [I64(0), b.mul(r, I64(REGION_STRIDE))])

    def _build_claim(self):
        """i64 claim(word, from_back): the next chunk of a region, from its front or its back,
        or -1 once it is empty. A region word packs front | back << 32, in chunks."""
        f, b = self.function("ember_pool.claim", ir.FunctionType(I64, [PTR, I32]), "internal")
        word_ptr, from_back = f.args
        entry = b.block
        claim, attempt, got, empty = (f.append_basic_block(s) for s in ("claim", "attempt", "got", "empty"))
        seen = b.load_atomic(word_ptr, "monotonic", 8, typ=I64)
        b.branch(claim)
        b.position_at_end(claim)
        word = b.phi(I64)
        word.add_incoming(seen, entry)
        front = b.and_(word, I64(0xFFFFFFFF))
        back = b.lshr(word, I64(32))
        b.cbranch(b.icmp_unsigned(">=", front, back), empty, attempt)
        b.position_at_end(attempt)
        take_back = b.icmp_unsigned("!=", from_back, I32(0))
        c = b.select(take_back, b.sub(back, I64(1)), front)
        new = b.select(take_back, b.sub(word, I64(1 << 32)), b.add(word, I64(1)))
        result = b.cmpxchg(word_ptr, word, new, "monotonic", "monotonic")
        word.add_incoming(b.extract_value(result, 0), attempt)
        b.cbranch(b.extract_value(result, 1), got, claim)
        b.position_at_end(got)
        b.ret(c)
        b.position_at_end(empty)
        b.ret(I64(-1))
        return f

    def _build_run_chunks(self):
        """void run_chunks(fn, ctx, n, chunk, me): participant `me` (the caller 0, workers by
        join order) runs the chunks of its own region front to back, then steals from the
        backs of the others' regions until every region is empty. A thread so keeps the same
        share of every loop (the pixels or channels it wrote in the previous kernel are in
        its own cache: crossing cores costs ~100-400 ns a line here) and still walks its
        panels forward, as the GEMM's next-panel prefetch assumes; stealing balances the end."""
        f, b = self.function("ember_pool.run_chunks",
                             ir.FunctionType(VOID, [BODY_PTR, PTR, I64, I64, I64]), "internal")
        fn, ctx, n, chunk, me = f.args
        entry = b.block
        blocks = ("own", "run_own", "steal_head", "steal", "run_stolen", "next_region", "done")
        own, run_own, steal_head, steal, run_stolen, next_region, done = (f.append_basic_block(x) for x in blocks)
        nreg = self.load(b, self.job_regions, I64)
        mine = b.icmp_unsigned("<", me, nreg)
        b.cbranch(mine, own, steal_head)

        def run(bb, c):
            lo = bb.mul(c, chunk)
            end = bb.add(lo, chunk)
            bb.call(fn, [ctx, lo, bb.select(bb.icmp_signed("<", end, n), end, n)])

        b.position_at_end(own)
        c = b.call(self.claim, [self.region_word(b, me), I32(0)])
        b.cbranch(b.icmp_signed(">=", c, I64(0)), run_own, steal_head)
        b.position_at_end(run_own)
        run(b, c)
        b.branch(own)

        # steal: regions me+1, me+2, ... (mod nreg), each until it is empty
        b.position_at_end(steal_head)
        k = b.phi(I64)
        k.add_incoming(I64(1), own)
        k.add_incoming(I64(1), entry)
        b.cbranch(b.icmp_unsigned("<=", k, nreg), steal, done)
        b.position_at_end(steal)
        r = b.urem(b.add(me, k), nreg)
        c2 = b.call(self.claim, [self.region_word(b, r), I32(1)])
        b.cbranch(b.icmp_signed(">=", c2, I64(0)), run_stolen, next_region)
        b.position_at_end(run_stolen)
        run(b, c2)
        b.branch(steal)
        b.position_at_end(next_region)
        k.add_incoming(b.add(k, I64(1)), next_region)
        b.branch(steal_head)
        b.position_at_end(done)
        b.ret_void()
        return f

    def _build_worker_main(self):
        """ptr worker_main(ptr id): wait for a new job, join it through the gate, work, leave."""
        f, b = self.function("ember_pool.worker_main", ir.FunctionType(PTR, [PTR]), "internal")
        worker_id = b.ptrtoint(f.args[0], I32)
        last_seq = b.alloca(I32, name="last_seq")
        spins = b.alloca(I32, name="spins")
        b.store(self.load(b, self.seq, I32), last_seq)
        blocks = ("wait", "check", "spin", "spun", "park", "futex_wait", "unpark", "try_join",
                  "cas", "joined", "work", "leave")
        (wait, check, spin, spun, park, futex_wait, unpark, try_join, cas, joined, work,
         leave) = (f.append_basic_block(s) for s in blocks)
        b.branch(wait)

        # Wait for `seq` to move past the last job we saw: spin a while, then park.
        b.position_at_end(wait)
        b.store(I32(0), spins)
        b.branch(check)
        b.position_at_end(check)
        seen = b.load(last_seq, typ=I32)
        seq = self.load(b, self.seq, I32)
        b.cbranch(b.icmp_unsigned("!=", seq, seen), try_join, spin)
        b.position_at_end(spin)
        n_spins = b.load(spins, typ=I32)
        b.store(b.add(n_spins, I32(1)), spins)
        self.pause(b)
        b.cbranch(b.icmp_unsigned("<", n_spins, I32(WORKER_SPINS)), check, spun)
        # out of spins: a run in progress that uses this worker keeps it spinning
        b.position_at_end(spun)
        kept = b.and_(b.icmp_unsigned("!=", self.load(b, self.held, I32), I32(0)),
                      b.icmp_unsigned("<", worker_id, self.load(b, self.hold_workers, I32)))
        b.cbranch(kept, wait, park)
        b.position_at_end(park)
        b.atomic_rmw("add", self.sleepers, I32(1), "seq_cst")
        # Re-check after announcing ourselves: a caller that bumped `seq` before seeing us
        # in `sleepers` will not wake us, so we must not sleep on a stale value.
        seq_now = self.load(b, self.seq, I32, "seq_cst")
        b.cbranch(b.icmp_unsigned("==", seq_now, seen), futex_wait, unpark)
        b.position_at_end(futex_wait)
        self.futex(b, FUTEX_WAIT_PRIVATE, seen)     # returns at once if seq != seen
        b.branch(unpark)
        b.position_at_end(unpark)
        b.atomic_rmw("sub", self.sleepers, I32(1), "monotonic")
        b.branch(wait)

        # A new job was published (or has come and gone): join it while the gate is open.
        b.position_at_end(try_join)
        b.store(seq, last_seq)
        gate = self.load(b, self.gate, I32)
        b.branch(cas)
        b.position_at_end(cas)
        gate_phi = b.phi(I32)
        gate_phi.add_incoming(gate, try_join)
        is_open = b.icmp_unsigned("!=", b.and_(gate_phi, I32(GATE_OPEN)), I32(0))
        attempt = f.append_basic_block("attempt")
        b.cbranch(is_open, attempt, wait)
        b.position_at_end(attempt)
        result = b.cmpxchg(self.gate, gate_phi, b.add(gate_phi, I32(1)), "acquire", "monotonic")
        gate_phi.add_incoming(b.extract_value(result, 0), attempt)
        # the count before we joined, plus one: a participant number unique within the job
        me = b.zext(b.add(b.and_(gate_phi, I32(GATE_OPEN - 1)), I32(1)), I64)
        b.cbranch(b.extract_value(result, 1), joined, cas)

        # Inside the gate the job fields are stable. Take part only if our id is allowed.
        b.position_at_end(joined)
        allowed = b.load(self.job_workers, typ=I32)
        b.cbranch(b.icmp_unsigned("<", worker_id, allowed), work, leave)
        b.position_at_end(work)
        b.call(self.run_chunks, [b.load(self.job_fn, typ=BODY_PTR), b.load(self.job_ctx, typ=PTR),
                                 b.load(self.job_n, typ=I64), b.load(self.job_chunk, typ=I64), me])
        b.branch(leave)
        b.position_at_end(leave)
        b.atomic_rmw("sub", self.gate, I32(1), "release")
        b.branch(wait)
        return f

    def _build_parallel_for(self):
        f, b = self.function("ember_parallel_for",
                             ir.FunctionType(VOID, [BODY_PTR, PTR, I64, I32]))
        fn, ctx, n, nthreads = f.args
        blocks = ("try_take", "inline", "publish", "wake", "share", "close_wait", "close_spin",
                  "close_yield", "finish")
        (try_take, inline, publish, wake, share, close_wait, close_spin, close_yield,
         finish) = (f.append_basic_block(s) for s in blocks)

        workers = self.load(b, self.workers, I32, "acquire")
        participants = b.add(workers, I32(1))
        participants = b.select(b.icmp_signed("<", nthreads, participants), nthreads, participants)
        serial = b.or_(b.icmp_signed("<=", participants, I32(1)), b.icmp_signed("<=", n, I64(1)))
        b.cbranch(serial, inline, try_take)

        b.position_at_end(try_take)
        taken = b.cmpxchg(self.busy, I32(0), I32(1), "acquire", "monotonic")
        b.cbranch(b.extract_value(taken, 1), publish, inline)

        b.position_at_end(inline)
        b.call(fn, [ctx, I64(0), n])
        b.ret_void()

        # We own the pool and the gate is closed with nobody inside: write the job, open it.
        b.position_at_end(publish)
        chunk = b.sdiv(n, b.mul(b.sext(participants, I64), I64(CHUNKS_PER_THREAD)))
        chunk = b.select(b.icmp_signed("<", chunk, I64(1)), I64(1), chunk)
        b.store(fn, self.job_fn)
        b.store(ctx, self.job_ctx)
        b.store(n, self.job_n)
        b.store(chunk, self.job_chunk)
        b.store(b.sub(participants, I32(1)), self.job_workers)
        # split the chunks into one region per participant: [r*nc/P, (r+1)*nc/P)
        nchunks = b.sdiv(b.add(n, b.sub(chunk, I64(1))), chunk)
        p64 = b.sext(participants, I64)
        nreg = b.select(b.icmp_signed("<", p64, I64(MAX_REGIONS)), p64, I64(MAX_REGIONS))
        self.store(b, self.job_regions, nreg)
        pre = b.block
        fill, filled = f.append_basic_block("fill"), f.append_basic_block("filled")
        b.branch(fill)
        b.position_at_end(fill)
        r = b.phi(I64)
        r.add_incoming(I64(0), pre)
        lo_c = b.sdiv(b.mul(r, nchunks), nreg)
        hi_c = b.sdiv(b.mul(b.add(r, I64(1)), nchunks), nreg)
        self.store(b, self.region_word(b, r), b.or_(lo_c, b.shl(hi_c, I64(32))))
        r_next = b.add(r, I64(1))
        r.add_incoming(r_next, fill)
        b.cbranch(b.icmp_signed("<", r_next, nreg), fill, filled)
        b.position_at_end(filled)
        self.store(b, self.gate, I32(GATE_OPEN), "release")
        b.atomic_rmw("add", self.seq, I32(1), "seq_cst")
        self.wake_sleepers(b, wake, share)

        # Work alongside the workers, then close the gate and wait for those inside to leave.
        b.position_at_end(share)
        b.call(self.run_chunks, [fn, ctx, n, chunk, I64(0)])
        b.atomic_rmw("and", self.gate, I32(~GATE_OPEN & 0xFFFFFFFF), "monotonic")
        b.branch(close_wait)
        b.position_at_end(close_wait)
        spins = b.phi(I32)
        spins.add_incoming(I32(0), share)
        inside = self.load(b, self.gate, I32, "acquire")
        b.cbranch(b.icmp_unsigned("==", inside, I32(0)), finish, close_spin)
        b.position_at_end(close_spin)
        spins_next = b.add(spins, I32(1))
        spins.add_incoming(spins_next, close_spin)
        spins.add_incoming(I32(0), close_yield)
        self.pause(b)
        b.cbranch(b.icmp_unsigned("<", spins_next, I32(CALLER_SPINS_BEFORE_YIELD)),
                  close_wait, close_yield)
        b.position_at_end(close_yield)
        b.call(self.sched_yield, [])
        b.branch(close_wait)

        b.position_at_end(finish)
        self.store(b, self.busy, I32(0), "release")
        b.ret_void()

    def _build_pool_start(self):
        f, b = self.function("ember_pool_start", ir.FunctionType(VOID, [I32]))
        nworkers = f.args[0]
        create, loop, done, ret = (f.append_basic_block(s) for s in ("create", "loop", "done", "ret"))
        thread_handle = b.alloca(I64)       # pthread_t; the threads are never joined
        first = b.cmpxchg(self.claimed, I32(0), I32(1), "acq_rel", "monotonic")
        b.cbranch(b.extract_value(first, 1), loop, ret)

        b.position_at_end(loop)
        i = b.phi(I32)
        i.add_incoming(I32(0), f.blocks[0])
        b.cbranch(b.icmp_signed("<", i, nworkers), create, done)
        b.position_at_end(create)
        rc = b.call(self.pthread_create, [thread_handle, ir.Constant(PTR, None), self.worker_main,
                                          b.inttoptr(i, PTR)])
        i.add_incoming(b.add(i, I32(1)), create)
        b.cbranch(b.icmp_signed("==", rc, I32(0)), loop, done)   # stop at the first failure

        # Publish the number actually running: worker ids 0..i-1 exist.
        b.position_at_end(done)
        self.store(b, self.workers, i, "release")
        b.branch(ret)
        b.position_at_end(ret)
        b.ret_void()

    def _build_pool_workers(self):
        f, b = self.function("ember_pool_workers", ir.FunctionType(I32, []))
        b.ret(self.load(b, self.workers, I32, "acquire"))

    def _build_pool_hold(self):
        """hold(nthreads): a run of nthreads begins (nothing for one thread): count it, keep
        its workers awake, wake the parked ones. release(nthreads): it has ended."""
        f, b = self.function("ember_pool_hold", ir.FunctionType(VOID, [I32]))
        hold, wake, ret = (f.append_basic_block(s) for s in ("hold", "wake", "ret"))
        nthreads = f.args[0]
        b.cbranch(b.icmp_signed(">", nthreads, I32(1)), hold, ret)
        b.position_at_end(hold)
        self.store(b, self.hold_workers, b.sub(nthreads, I32(1)))
        b.atomic_rmw("add", self.held, I32(1), "seq_cst")
        # a parked worker re-checks `held` only after its futex returns: wake it now (the
        # spurious wakeup is harmless: it finds `seq` unchanged and spins while held)
        self.wake_sleepers(b, wake, ret)
        b.position_at_end(ret)
        b.ret_void()

        f, b = self.function("ember_pool_release", ir.FunctionType(VOID, [I32]))
        release, ret = (f.append_basic_block(s) for s in ("release", "ret"))
        b.cbranch(b.icmp_signed(">", f.args[0], I32(1)), release, ret)
        b.position_at_end(release)
        b.atomic_rmw("sub", self.held, I32(1), "release")
        b.branch(ret)
        b.position_at_end(ret)
        b.ret_void()


def build_ir(triple: str, futex_nr: int) -> str:
    return str(_PoolModule(triple, futex_nr).module)


EXPORTS = ("ember_parallel_for", "ember_pool_start", "ember_pool_workers", "ember_pool_hold",
           "ember_pool_release")
LIBC_IMPORTS = ("pthread_create", "syscall", "sched_yield")


def _resolve_libc_imports():
    """MCJIT resolves undefined symbols in the process (the engine builder loads the process's
    own symbols); an unresolved one would abort the process at finalize time, so check first
    and fall back to ctypes' view of the process (e.g. pthread_create lives in libpthread
    before glibc 2.34)."""
    for name in LIBC_IMPORTS:
        if not llvm.address_of_symbol(name):
            addr = ctypes.cast(getattr(ctypes.CDLL(None), name), ctypes.c_void_p).value
            llvm.add_symbol(name, addr)


def _load():
    global _engine
    futex_nr = futex_syscall_number()
    tm = native.target_machine()
    obj, _ = native.get_object(build_ir(tm.triple, futex_nr or 0))
    with native._lock:        # the LLVM context is shared with native.load_object
        engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), tm)
        _resolve_libc_imports()
        engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
        engine.finalize_object()
    for name in EXPORTS:
        addr = engine.get_function_address(name)
        assert addr, name
        _addresses[name] = addr
        llvm.add_symbol(name, addr)     # later Ember modules that declare it resolve to this
    _engine = engine


def ensure_pool(nthreads: int | None = None) -> int:
    """Load the pool (once per process) and start `nthreads - 1` workers (default:
    default_threads()). Only the first call that starts workers decides their number.
    Returns the number of workers running."""
    global _workers
    with _lock:
        if _engine is None:
            _load()
        if _workers is None:
            wanted = (default_threads() if nthreads is None else nthreads) - 1
            if futex_syscall_number() is None:
                wanted = 0                  # cannot park idle workers: run everything inline
            ctypes.CFUNCTYPE(None, ctypes.c_int32)(_addresses["ember_pool_start"])(max(0, wanted))
            _workers = ctypes.CFUNCTYPE(ctypes.c_int32)(_addresses["ember_pool_workers"])()
        return _workers


def parallel_for_address() -> int:
    """Address of ember_parallel_for (call ensure_pool first)."""
    if "ember_parallel_for" not in _addresses:
        raise RuntimeError("thread pool not loaded: call ensure_pool() first")
    return _addresses["ember_parallel_for"]
