"""The native thread pool, driven the way compiled Ember modules use it: a separately compiled
module that only *declares* ember_parallel_for, resolved through llvm.add_symbol."""
import ctypes
import threading
import time

import llvmlite.binding as llvm
import llvmlite.ir as ir
import numpy as np
import pytest

from ember.codegen import native
from ember.codegen import threadpool

I32, I64, PTR, VOID = ir.IntType(32), ir.IntType(64), ir.PointerType(), ir.VoidType()

# ctx is an int64 array: [out, tids, work, inner_n, scratch]
OUT, TIDS, WORK, INNER_N, SCRATCH = range(5)
CTX_WORDS = 5


def _for_range(b, lo, hi, emit_body):
    """for i in [lo, hi): emit_body(b, i)"""
    f = b.function
    pre = b.block
    head, body, done = f.append_basic_block(), f.append_basic_block(), f.append_basic_block()
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(I64)
    i.add_incoming(lo, pre)
    b.cbranch(b.icmp_signed("<", i, hi), body, done)
    b.position_at_end(body)
    emit_body(b, i)
    i.add_incoming(b.add(i, I64(1)), b.block)
    b.branch(head)
    b.position_at_end(done)


def _ctx_word(b, ctx, k):
    return b.load(b.gep(ctx, [I64(k)], source_etype=I64), typ=I64)


def _build_test_module(triple):
    m = ir.Module(name="threadpool_test")
    m.triple = triple
    parallel_for = ir.Function(m, threadpool.PARALLEL_FOR_TYPE, "ember_parallel_for")
    pthread_self = ir.Function(m, ir.FunctionType(I64, []), "pthread_self")

    # body: out[i] = i*i; tids[i] = pthread_self(); plus `work` rounds of busywork per item
    body = ir.Function(m, threadpool.BODY_TYPE, "body")
    ctx, lo, hi = body.args
    b = ir.IRBuilder(body.append_basic_block())
    out = b.inttoptr(_ctx_word(b, ctx, OUT), PTR)
    tids = b.inttoptr(_ctx_word(b, ctx, TIDS), PTR)
    work = _ctx_word(b, ctx, WORK)
    scratch = b.gep(ctx, [I64(SCRATCH)], source_etype=I64)

    def item(b, i):
        b.store(b.mul(i, i), b.gep(out, [i], source_etype=I64))
        b.store(b.call(pthread_self, []), b.gep(tids, [i], source_etype=I64))
        acc = b.alloca(I64)
        b.store(i, acc)
        _for_range(b, I64(0), work, lambda b, _: b.store(
            b.add(b.mul(b.load(acc, typ=I64), I64(6364136223846793005)), I64(1442695040888963407)),
            acc))
        b.atomic_rmw("xor", scratch, b.load(acc, typ=I64), "monotonic")   # keeps the work alive

    _for_range(b, lo, hi, item)
    b.ret_void()

    # nested_body: row r runs a parallel_for of its own over out[r*inner_n : (r+1)*inner_n]
    nested = ir.Function(m, threadpool.BODY_TYPE, "nested_body")
    ctx, lo, hi = nested.args
    b = ir.IRBuilder(nested.append_basic_block())
    inner_ctx = b.alloca(I64, CTX_WORDS)
    inner_n = _ctx_word(b, ctx, INNER_N)

    def row(b, r):
        for k in range(CTX_WORDS):
            b.store(_ctx_word(b, ctx, k), b.gep(inner_ctx, [I64(k)], source_etype=I64))
        offset = b.mul(b.mul(r, inner_n), I64(8))
        for k in (OUT, TIDS):
            b.store(b.add(_ctx_word(b, ctx, k), offset), b.gep(inner_ctx, [I64(k)], source_etype=I64))
        b.call(parallel_for, [body, inner_ctx, inner_n, I32(2)])

    _for_range(b, lo, hi, row)
    b.ret_void()

    for name, fn in (("run", body), ("run_nested", nested)):
        run = ir.Function(m, ir.FunctionType(VOID, [PTR, I64, I32]), name)
        b = ir.IRBuilder(run.append_basic_block())
        b.call(parallel_for, [fn, run.args[0], run.args[1], run.args[2]])
        b.ret_void()
    return str(m)


@pytest.fixture(scope="module")
def pool():
    workers = threadpool.ensure_pool(max(2, threadpool.default_threads()))
    # the engine owns (and, deleted, frees) its target machine: give it one of its own, not
    # the process-wide one native.target_machine() caches (later compiles crashed on it)
    tm = native.target_machine.__wrapped__()
    obj, _ = native.get_object(_build_test_module(tm.triple))
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), tm)
    engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
    engine.finalize_object()
    proto = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32)
    fns = {name: proto(engine.get_function_address(name)) for name in ("run", "run_nested")}
    yield workers, fns
    del engine


class Job:
    def __init__(self, n, work=0, inner_n=0):
        self.out = np.full(max(n, 1), -1, dtype=np.int64)
        self.tids = np.zeros(max(n, 1), dtype=np.int64)
        self.ctx = np.array([self.out.ctypes.data, self.tids.ctypes.data, work, inner_n, 0],
                            dtype=np.int64)

    def threads_used(self):
        return {int(t) & (2**64 - 1) for t in self.tids}


def _run(fns, n, nthreads, work=0):
    job = Job(n, work)
    fns["run"](job.ctx.ctypes.data, n, nthreads)
    return job


def test_symbols_registered(pool):
    assert threadpool.parallel_for_address() == llvm.address_of_symbol("ember_parallel_for")
    assert threadpool.ensure_pool() == pool[0]          # idempotent


@pytest.mark.parametrize("nthreads", [1, 2])
@pytest.mark.parametrize("n", [0, 1, 7, 1000, 100003])
def test_results(pool, n, nthreads):
    job = _run(pool[1], n, nthreads)
    if n == 0:
        assert job.out[0] == -1
    else:
        np.testing.assert_array_equal(job.out[:n], np.arange(n, dtype=np.int64) ** 2)
    if nthreads == 1 and n:
        assert job.threads_used() == {threading.get_ident()}


def _job_with_help(fns, tries=50):
    """A job of a few ms with nthreads=2, retried until the caller and a worker both took part
    (a parked worker may wake too late for one job on a loaded machine, and a caller preempted
    right after posting the job finds its share stolen); returns the last job."""
    import threading
    for _ in range(tries):
        job = _run(fns, 100003, 2, work=300)
        np.testing.assert_array_equal(job.out, np.arange(100003, dtype=np.int64) ** 2)
        used = job.threads_used()
        if len(used) > 1 and threading.get_ident() in used:
            break
    return job


def test_workers_take_part(pool):
    workers, fns = pool
    if workers == 0:
        pytest.skip("pool was started without workers (EMBER_NUM_THREADS=1)")
    used = _job_with_help(fns).threads_used()
    assert threading.get_ident() in used        # the caller always participates
    assert len(used) == 2                        # and nthreads=2 lets exactly one worker join


def test_each_thread_keeps_a_contiguous_share(pool):
    """The range is cut into one region per participant: the caller runs from the front of
    the first, the worker from the front of the second, and whoever finishes first steals
    from the back of the other's. So along the range the thread changes at most three
    times (a shared counter handing out chunks in turn changed it at every chunk), and a
    thread sees the same share of consecutive loops: the data it wrote is in its cache."""
    workers, fns = pool
    if workers == 0:
        pytest.skip("pool was started without workers (EMBER_NUM_THREADS=1)")
    job = _job_with_help(fns)
    if len(job.threads_used()) < 2:
        pytest.skip("no worker joined on this loaded machine")
    tids = job.tids
    assert int(tids[0]) & (2**64 - 1) == threading.get_ident()      # the caller starts the range
    assert int(np.count_nonzero(tids[1:] != tids[:-1])) <= 3


def test_concurrent_callers(pool):
    workers, fns = pool
    n, rounds, errors = 20011, 20, []
    start = threading.Barrier(4)

    def caller():
        start.wait()
        for _ in range(rounds):
            job = _run(fns, n, 2, work=5)
            if not np.array_equal(job.out, np.arange(n, dtype=np.int64) ** 2):
                errors.append("wrong result")

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "deadlock"
    assert not errors
    if workers:                      # the pool was released: a later job still gets a worker
        assert len(_job_with_help(fns).threads_used()) == 2


def test_nested_parallel_for(pool):
    rows, inner_n = 64, 257
    job = Job(rows * inner_n, work=10, inner_n=inner_n)
    t = threading.Thread(target=pool[1]["run_nested"], args=(job.ctx.ctypes.data, rows, 2))
    t.start()
    t.join(timeout=30)
    assert not t.is_alive(), "nested parallel_for deadlocked"
    expected = np.tile(np.arange(inner_n, dtype=np.int64) ** 2, rows)
    np.testing.assert_array_equal(job.out, expected)


def test_idle_pool_parks(pool):
    _run(pool[1], 100003, 2, work=20)      # wake the workers
    time.sleep(0.05)                        # past their spin phase
    t0 = time.process_time()
    time.sleep(0.2)
    assert time.process_time() - t0 < 0.1  # a spinning worker would burn ~0.2 s


def _hold_fns():
    proto = ctypes.CFUNCTYPE(None, ctypes.c_int32)
    return (proto(llvm.address_of_symbol("ember_pool_hold")),
            proto(llvm.address_of_symbol("ember_pool_release")))


def _cpu_while_idle(seconds=0.2):
    t0 = time.process_time()
    time.sleep(seconds)
    return time.process_time() - t0


def test_held_pool_keeps_its_workers_awake(pool):
    """While a run holds the pool its workers spin through gaps between parallel loops
    (parking and a futex wake cost tens of microseconds in a guest); released, they park."""
    workers, fns = pool
    if workers == 0:
        pytest.skip("pool was started without workers (EMBER_NUM_THREADS=1)")
    hold, release = _hold_fns()
    _run(fns, 100003, 2, work=20)
    time.sleep(0.05)                        # parked
    hold(2)
    try:
        spun = _cpu_while_idle()
        job = _run(fns, 100003, 2, work=20)         # jobs still run while held
        np.testing.assert_array_equal(job.out, np.arange(100003, dtype=np.int64) ** 2)
    finally:
        release(2)
    assert spun > 0.05                      # the worker was woken and kept spinning
    time.sleep(0.05)
    assert _cpu_while_idle() < 0.1          # released: it parks again


def test_one_thread_hold_wakes_nobody(pool):
    hold, release = _hold_fns()
    time.sleep(0.05)
    hold(1)
    try:
        assert _cpu_while_idle() < 0.1
    finally:
        release(1)


def test_compiled_run_releases_the_pool(pool):
    """A compiled model's entry holds the pool for its kernels and releases it on return."""
    import onnx
    import onnx.numpy_helper
    from onnx import TensorProto, helper
    import ember
    if pool[0] == 0:
        pytest.skip("pool was started without workers (EMBER_NUM_THREADS=1)")
    rng = np.random.default_rng(0)
    w = rng.standard_normal((256, 256)).astype(np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [512, 256])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [512, 256])],
                          [onnx.numpy_helper.from_array(w, "w")])
    so = ember.SessionOptions()
    so.intra_op_num_threads = 2
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    sess = ember.InferenceSession(model.SerializeToString(), so)
    x = rng.standard_normal((512, 256)).astype(np.float32)
    for _ in range(3):
        np.testing.assert_allclose(sess.run(None, {"x": x})[0], x @ w, rtol=1e-4, atol=1e-3)
    time.sleep(0.05)
    assert _cpu_while_idle() < 0.1
