"""Dynamic batching: concurrent requests to one model are stacked along the batch dimension, up
to the model's `max_batch_size` rows or until the oldest has waited `max_queue_delay_ms`, run
once on a worker thread (the native run releases the GIL), and split back.

Requests join one batch only when their other dims agree, or differ only in dims the config pads
(`pad`: ragged token sequences); those outputs are cropped back to each request's own size.
Padding is paid for in compute: 32 sentences of 8 to 16 tokens padded to 16 do 1.5x the work
of the sentences themselves. So a gathered batch is split by size into the runs that cost least
(`plan_runs`: padded elements plus a fixed cost per run), run one after the other, shortest
first, each answered as soon as it is done.
While every instance is busy, requests keep queueing, so batches grow with the load. A batch
that fails on an Ember error is re-run one request at a time, so that one bad request fails
alone and with its own message."""
from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..errors import CompileError, EmberError
from .protocol import RequestError


@dataclass(eq=False)      # identity: items are found in the queue by `is`
class _Item:
    feeds: dict
    rows: int
    key: tuple
    sizes: dict                    # padded symbol -> this request's size
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


def plan_runs(sizes: list[tuple[int, ...]], rows: list[int]) -> list[list[int]]:
    """Split requests (their padded dims' sizes and rows) into runs: lists of request indices.

    A run of requests costs its rows times the product of its largest size in each padded dim
    (the elements it computes, padding included), plus a fixed cost per run: per-kernel and
    thread start-up costs. Measured on MiniLM at 2 threads, a one-row run of 8 tokens took
    1.7 ms and a token in a 32-row run 0.14 ms, so the fixed part was ~4.5 tokens, about half a
    row. It is set at one average row's elements, which leans to fewer, larger runs: those also
    keep the GEMMs' row tiles full. The split is exact over contiguous ranges in order of
    elements per row (dynamic programming over at most max_batch_size requests)."""
    n = len(sizes)
    if n <= 1 or not sizes[0]:
        return [list(range(n))]
    order = sorted(range(n), key=lambda i: (math.prod(sizes[i]), sizes[i]))
    fixed = sum(r * math.prod(s) for r, s in zip(rows, sizes)) / sum(rows)
    best, cut = [0.0] + [math.inf] * n, [0] * (n + 1)
    for hi in range(1, n + 1):
        # the run order[lo:hi], grown downwards from lo = hi - 1: its rows and largest sizes
        # are kept as it grows (this runs on the event loop for every gathered batch)
        top, run_rows = [0] * len(sizes[0]), 0
        for lo in range(hi - 1, -1, -1):
            k = order[lo]
            top = [max(a, b) for a, b in zip(top, sizes[k])]
            run_rows += rows[k]
            c = best[lo] + run_rows * math.prod(top) + fixed
            if c < best[hi]:
                best[hi], cut[hi] = c, lo
    runs, hi = [], n
    while hi:
        runs.append(sorted(order[cut[hi]:hi]))
        hi = cut[hi]
    return runs[::-1]


class DynamicBatcher:
    def __init__(self, model, metrics=None):
        self.model = model
        cfg = model.config
        self.max_rows = cfg.max_batch_size if model.batching else 1
        self.delay = cfg.max_queue_delay_ms / 1000 if model.batching else 0.0
        self.metrics = metrics
        self._executor = ThreadPoolExecutor(max_workers=cfg.instances, thread_name_prefix=f"ember-{model.name}")
        self._instances = cfg.instances
        self._pending: deque[_Item] = deque()
        self._running: set[asyncio.Task] = set()
        self._task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._closing = False

    def start(self):
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(self._instances)
        self._task = asyncio.get_running_loop().create_task(self._loop())

    def submit(self, feeds: dict[str, np.ndarray]) -> asyncio.Future:
        """A future of the model's outputs for these feeds; `model.check` refuses (raises at once)
        feeds that do not fit. A future rather than a coroutine: awaiting it costs no task."""
        if self._closing or self._task is None:
            raise RequestError("the server is shutting down", 503)
        rows = self.model.check(feeds)
        key, sizes = self._signature(feeds)
        item = _Item(feeds, rows, key, sizes, asyncio.get_running_loop().create_future())
        self._pending.append(item)
        self._wake.set()
        return item.future

    def _signature(self, feeds):
        padded = self.model.padded_symbols
        key, sizes = [], {}
        for name, _, shape in self.model.inputs:
            a = feeds[name]
            dims = []
            for d, n in zip(shape[1:], a.shape[1:]):
                if isinstance(d, str) and d in padded and name in self.model.pad:
                    sizes[d] = max(sizes.get(d, 0), n)
                    dims.append(None)
                else:
                    dims.append(n)
            key.append((name, a.dtype.str, tuple(dims)))
        return tuple(key), sizes

    async def _loop(self):
        while True:
            while not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
            await self._slots.acquire()
            try:
                batch = await self._gather()
            except Exception as e:           # noqa: BLE001 - a bug here must not hang every request
                self._slots.release()
                self._fail(list(self._pending), e)
                self._pending.clear()
                continue
            if not batch:
                self._slots.release()
                continue
            t = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(t)
            t.add_done_callback(self._running.discard)

    def _ready(self) -> list[_Item]:
        """The oldest live request and those that can share its batch, in arrival order."""
        while self._pending and self._pending[0].future.done():   # timed out or cancelled
            self._pending.popleft()
        if not self._pending:
            return []
        first = self._pending[0]
        picked, rows = [first], first.rows
        for it in list(self._pending)[1:]:
            if rows >= self.max_rows:
                break
            if it.key == first.key and not it.future.done() and rows + it.rows <= self.max_rows:
                picked.append(it)
                rows += it.rows
        return picked

    async def _gather(self) -> list[_Item]:
        picked = self._ready()
        if not picked:
            return []
        deadline = picked[0].enqueued + self.delay
        while sum(i.rows for i in picked) < self.max_rows and not self._closing:
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), left)
            except asyncio.TimeoutError:
                pass
            picked = self._ready()
            if not picked:
                return []
        for it in picked:
            self._pending.remove(it)
        return picked

    async def _run(self, batch: list[_Item]):
        try:
            start = time.perf_counter()
            if self.metrics:
                for it in batch:
                    self.metrics.queue.labels(self.model.name).observe(start - it.enqueued)
            for run in self._plan(batch):
                await self._run_one(run)
        except Exception as e:                        # noqa: BLE001 - a bug here must not hang requests
            self._fail(batch, e)
        finally:
            self._slots.release()

    def _plan(self, batch: list[_Item]) -> list[list[_Item]]:
        """The runs a gathered batch is split into (by padded size), cheapest first."""
        if len(batch) == 1 or not self.model.padded_symbols:
            return [batch]
        symbols = sorted(self.model.padded_symbols)
        sizes = [tuple(it.sizes.get(d, 1) for d in symbols) for it in batch]
        runs = plan_runs(sizes, [it.rows for it in batch])
        # shortest first: the mean wait is least, and every run is answered when it is done
        runs.sort(key=lambda r: sum(batch[i].rows for i in r) * math.prod(max(sizes[i][d] for i in r)
                                                                           for d in range(len(symbols))))
        return [[batch[i] for i in r] for r in runs]

    async def _run_one(self, batch: list[_Item]):
        try:
            outs = await self._native(self._merge(batch), sum(i.rows for i in batch))
        except EmberError as e:
            if len(batch) == 1 or isinstance(e, CompileError):
                self._fail(batch, e)
                return
            for it in batch:                      # find the request that fails, alone
                try:
                    self._answer([it], await self._native(it.feeds, it.rows))
                except Exception as e1:           # noqa: BLE001 - delivered to its request
                    self._fail([it], e1)
            return
        except Exception as e:                    # noqa: BLE001 - delivered to the requests
            self._fail(batch, e)
            return
        self._answer(batch, outs)

    async def _native(self, feeds, rows):
        t = time.perf_counter()
        outs = await asyncio.get_running_loop().run_in_executor(self._executor, self.model.run, feeds)
        if self.metrics:
            self.metrics.run_time.labels(self.model.name).observe(time.perf_counter() - t)
            self.metrics.batch_size.labels(self.model.name).observe(rows)
        return outs

    @staticmethod
    def _fail(batch, e):
        if isinstance(e, EmberError) and not isinstance(e, CompileError):
            e = RequestError(str(e))
        for it in batch:
            if not it.future.done():
                it.future.set_exception(e)

    def _merge(self, batch: list[_Item]) -> dict:
        if len(batch) == 1:
            return batch[0].feeds
        out = {}
        for name, _, _ in self.model.inputs:
            parts = [it.feeds[name] for it in batch]
            if name in self.model.pad:
                shape = (sum(p.shape[0] for p in parts), *np.max([p.shape[1:] for p in parts], axis=0))
                a = np.full(shape, self.model.pad[name], dtype=parts[0].dtype)
                off = 0
                for p in parts:
                    a[(slice(off, off + p.shape[0]), *(slice(0, n) for n in p.shape[1:]))] = p
                    off += p.shape[0]
                out[name] = a
            else:
                out[name] = np.concatenate(parts, axis=0)
        return out

    def _answer(self, batch: list[_Item], outs: dict):
        if len(batch) == 1:
            it = batch[0]
            if not it.future.done():
                it.future.set_result(outs)
            return
        off = 0
        shapes = {n: s for n, _, s in self.model.outputs}
        for it in batch:
            mine = {}
            for name, a in outs.items():
                idx = [slice(off, off + it.rows)]
                for d in shapes[name][1:]:
                    idx.append(slice(0, it.sizes[d]) if isinstance(d, str) and d in it.sizes else slice(None))
                mine[name] = np.ascontiguousarray(a[tuple(idx)])
            off += it.rows
            if not it.future.done():
                it.future.set_result(mine)

    async def close(self):
        """Finish every queued and running request, then stop."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            await self._task
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        self._executor.shutdown(wait=True)
