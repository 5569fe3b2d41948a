"""The disk cache verifies what it reads: a damaged entry is rebuilt with a warning, never
loaded; the stat index is keyed by target; concurrent writers never expose half a file.
Every case loads in a fresh process, so a crash fails the test, not the test run."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ember.codegen import native

CHILD = textwrap.dedent("""
    import sys, warnings, numpy as np, ember
    from tests.util import mlp_model
    path = sys.argv[1]
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        s = ember.InferenceSession(path)
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    y = s.run(None, {"x": x})[0]
    import onnx
    from onnx.reference import ReferenceEvaluator
    ref = ReferenceEvaluator(onnx.load(path)).run(None, {"x": x})[0]
    print(s.compile_stats["cache"], float(np.abs(y - ref).max()),
          sum(issubclass(x.category, ember.errors.CacheWarning) for x in w))
""")


def _run(model_path, cache, extra_env=None):
    env = {**os.environ, "EMBER_CACHE_DIR": str(cache), **(extra_env or {})}
    r = subprocess.run([sys.executable, "-c", CHILD, str(model_path)], capture_output=True, text=True,
                       timeout=300, env=env, cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0, f"child exited with {r.returncode}:\n{r.stderr[-3000:]}"
    cache_state, err, warned = r.stdout.split()
    assert float(err) < 1e-4
    return cache_state, int(warned)


@pytest.fixture
def cached(tmp_path):
    from tests.util import mlp_model
    import onnx
    path = tmp_path / "mlp.onnx"
    onnx.save(onnx.load_model_from_string(mlp_model(layers=2)), path)
    cache = tmp_path / "cache"
    assert _run(path, cache) == ("miss", 0)
    assert _run(path, cache) == ("hit", 0)
    return path, cache


def _damage(cache: Path, suffix: str, how: str):
    files = [p for p in cache.iterdir() if p.name.endswith(suffix)]     # (the thread pool's object too)
    assert files
    for f in files:
        data = f.read_bytes()
        if how == "truncate":
            f.write_bytes(data[: len(data) // 2])
        elif how == "random":
            f.write_bytes(np.random.default_rng(0).integers(0, 256, len(data), dtype=np.uint8).tobytes())
        else:                                   # one block zeroed in the middle
            mid = len(data) // 2
            f.write_bytes(data[:mid] + bytes(min(4096, len(data) - mid)) + data[mid + 4096:])


@pytest.mark.parametrize("suffix", [".o", ".weights.npy", ".json", ".ref"])
@pytest.mark.parametrize("how", ["truncate", "random", "zeroed"])
def test_damaged_entry_is_rebuilt_with_a_warning(cached, suffix, how):
    path, cache = cached
    _damage(cache, suffix, how)
    state, warned = _run(path, cache)
    # a damaged stat index only costs rehashing the model file: the entry itself is intact
    assert state == ("hit" if suffix == ".ref" else "miss") and warned >= 1
    assert _run(path, cache) == ("hit", 0)      # rebuilt whole


def test_stat_index_is_keyed_by_target(cached):
    if not native.has_feature("avx512f"):
        pytest.skip("the host has no AVX-512: EMBER_TARGET=avx2 is the host build")
    path, cache = cached
    assert _run(path, cache, {"EMBER_TARGET": "avx2"}) == ("miss", 0)
    assert _run(path, cache, {"EMBER_TARGET": "avx2"}) == ("hit", 0)
    assert _run(path, cache) == ("hit", 0)


def test_concurrent_compiles_share_one_cache(tmp_path):
    from tests.util import mlp_model
    import onnx
    path = tmp_path / "mlp.onnx"
    onnx.save(onnx.load_model_from_string(mlp_model(layers=3)), path)
    cache = tmp_path / "cache"
    env = {**os.environ, "EMBER_CACHE_DIR": str(cache)}
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=Path(__file__).resolve().parents[1])
             for _ in range(3)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        state, e, warned = out.split()
        assert float(e) < 1e-4 and warned == "0"
    assert not [p for p in cache.iterdir() if ".tmp" in p.name]
