"""Mandelbrot escape counts in Ember's kernel language, timed against pure CPython, numpy and
(when installed) numba.

    python examples/mandelbrot.py            # 960x960 grid over [-2, 0.6] x [-1.5, 1.5], 200 iterations

The kernel is explicit SIMD: each row is processed in blocks of V vectors of W float64 lanes
(V independent dependency chains keep the FMA pipes busy); rows are spread over the native
thread pool with `parallelize`. Counts are identical to CPython's: the kernel performs the
same float64 operations in the same order (no fast-math, so nothing is contracted into FMAs).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from ember.lang import (SIMD, Param, Tensor, float64, int32, kernel, parallelize, select,
                        set_num_threads, tile, unroll)

X0, X1, Y0, Y1 = -2.0, 0.6, -1.5, 1.5


@kernel
def mandelbrot(out: Tensor[int32, 2], x0: float64, x1: float64, y0: float64, y1: float64,
               max_iter: int, W: Param = 8, V: Param = 6):
    h = out.shape[0]
    w = out.shape[1]
    dx = (x1 - x0) / w
    dy = (y1 - y0) / h

    def row(y):
        ci = y0 + y * dy

        def block(x, span):
            if span == 1:                   # scalar tail: the same arithmetic, one pixel
                cr = x0 + x * dx
                zr = 0.0
                zi = 0.0
                n = 0
                while n < max_iter and zr * zr + zi * zi <= 4.0:
                    zr, zi = zr * zr - zi * zi + cr, 2.0 * zr * zi + ci
                    n += 1
                out[y, x] = int32(n)
            else:
                nv = span // W
                lane = SIMD[float64, W].iota()
                cr = [x0 + (lane + float64(x + k * W)) * dx for k in range(nv)]
                zr = [SIMD[float64, W](0.0) for k in range(nv)]
                zi = [SIMD[float64, W](0.0) for k in range(nv)]
                count = [SIMD[int32, W](0) for k in range(nv)]
                alive = [SIMD[float64, W](0.0) == 0.0 for k in range(nv)]
                one = SIMD[int32, W](1)
                zero = SIMD[int32, W](0)

                def step():
                    for k in unroll(nv):
                        zr2 = zr[k] * zr[k]
                        zi2 = zi[k] * zi[k]
                        alive[k] = alive[k] & (zr2 + zi2 <= 4.0)
                        count[k] += select(alive[k], one, zero)
                        zi[k] = 2.0 * zr[k] * zi[k] + ci
                        zr[k] = zr2 - zi2 + cr[k]

                def still_alive():
                    a = alive[0]
                    for k in unroll(1, nv):
                        a = a | alive[k]
                    return any(a)

                # two iterations per exit test: lanes that escaped stop counting (their
                # `alive` is false), so running one step past the last escape is harmless
                for it in range(0, max_iter - 1, 2):
                    step()
                    step()
                    if not still_alive():
                        break
                if max_iter % 2 == 1 and still_alive():
                    step()
                for k in unroll(nv):
                    out.store(y, x + k * W, count[k])

        tile(block, 0, w, (W * V, W, 1))

    parallelize(row, h)


def mandelbrot_python(h, w, max_iter):
    out = [[0] * w for _ in range(h)]
    for y in range(h):
        ci = Y0 + y * ((Y1 - Y0) / h)
        for x in range(w):
            cr = X0 + x * ((X1 - X0) / w)
            zr = zi = 0.0
            n = 0
            while n < max_iter and zr * zr + zi * zi <= 4.0:
                zr, zi = zr * zr - zi * zi + cr, 2.0 * zr * zi + ci
                n += 1
            out[y][x] = n
    return np.array(out, dtype=np.int32)


def mandelbrot_numpy(h, w, max_iter):
    cr = X0 + np.arange(w) * ((X1 - X0) / w)
    ci = Y0 + np.arange(h) * ((Y1 - Y0) / h)
    cr, ci = np.broadcast_to(cr, (h, w)).copy(), np.broadcast_to(ci[:, None], (h, w)).copy()
    zr, zi = np.zeros((h, w)), np.zeros((h, w))
    count = np.zeros((h, w), dtype=np.int32)
    alive = np.ones((h, w), dtype=bool)
    with np.errstate(all="ignore"):      # escaped points overflow; they are masked out
        _numpy_iterations(zr, zi, cr, ci, count, alive, max_iter)
    return count


def _numpy_iterations(zr, zi, cr, ci, count, alive, max_iter):
    for _ in range(max_iter):
        zr2, zi2 = zr * zr, zi * zi
        alive &= zr2 + zi2 <= 4.0
        if not alive.any():
            break
        count += alive
        zi[...] = 2.0 * zr * zi + ci
        zr[...] = zr2 - zi2 + cr


def mandelbrot_ember(h, w, max_iter, threads):
    out = np.zeros((h, w), dtype=np.int32)
    set_num_threads(threads)
    mandelbrot(out, X0, X1, Y0, Y1, max_iter)
    return out


def _numba_fn():
    try:
        import numba
    except ImportError:
        return None

    @numba.njit(cache=False)
    def mandel_numba(h, w, max_iter):
        out = np.zeros((h, w), dtype=np.int32)
        for y in range(h):
            ci = Y0 + y * ((Y1 - Y0) / h)
            for x in range(w):
                cr = X0 + x * ((X1 - X0) / w)
                zr = zi = 0.0
                n = 0
                while n < max_iter and zr * zr + zi * zi <= 4.0:
                    zr, zi = zr * zr - zi * zi + cr, 2.0 * zr * zi + ci
                    n += 1
                out[y, x] = n
        return out
    return mandel_numba


def best_of(fn, runs):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        r = fn()
        times.append(time.perf_counter() - t)
    return min(times), float(np.median(times)), r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=960)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--python-runs", type=int, default=1)
    args = ap.parse_args(argv)
    n, it = args.size, args.iters
    print(f"mandelbrot {n}x{n}, at most {it} iterations, {os.cpu_count()} CPUs")
    ref_t, _, ref = best_of(lambda: mandelbrot_python(n, n, it), args.python_runs)
    print(f"  pure CPython         {ref_t * 1e3:10.1f} ms")
    rows = [("numpy", lambda: mandelbrot_numpy(n, n, it), 3)]
    numba_fn = _numba_fn()
    if numba_fn is not None:
        numba_fn(8, 8, it)
        rows.append(("numba (1 thread)", lambda: numba_fn(n, n, it), args.runs))
    for t in (1, 2):
        mandelbrot_ember(n, n, it, t)       # compile / warm up
        rows.append((f"ember ({t} thread{'s' if t > 1 else ''})",
                     (lambda t=t: mandelbrot_ember(n, n, it, t)), args.runs))
    results = {}
    for name, fn, runs in rows:
        best, med, out = best_of(fn, runs)
        same = np.array_equal(out, ref)
        results[name] = med
        print(f"  {name:20s} {med * 1e3:10.2f} ms   {ref_t / med:8.1f}x CPython   "
              f"{'identical counts' if same else 'COUNTS DIFFER'}")
        if not same:
            return 1
    e1, e2 = results["ember (1 thread)"], results["ember (2 threads)"]
    print(f"  ember 2 threads vs 1: {e1 / e2:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
