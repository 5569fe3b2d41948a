"""The basket models plus MiniLM with its real weights: Ember matches onnxruntime within 1e-4
relative error at batch 1 and 4 and two sequence lengths, all from one session."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ember  # noqa: E402
from bench import models as bench_models  # noqa: E402

MODEL_DIR = Path(os.environ.get("EMBER_MODELS_DIR", Path(__file__).resolve().parents[1] / "bench" / ".models"))
SHAPES = {"mlp": [(1, None), (4, None)], "resnet50": [(1, None), (4, None)],
          "mobilenetv2": [(1, None), (4, None)],
          "bert": [(1, 128), (4, 128), (1, 37), (4, 37)], "gpt2": [(1, 128), (4, 128), (1, 37), (4, 37)],
          "minilm": [(1, 0), (4, 0)]}


def _minilm_feeds(batch, which):
    from ember.models.minilm import tokenize
    sentences = ["A man is playing a guitar.", "Someone is playing an instrument.",
                 "The cat sleeps on the sofa all afternoon long.", "Stocks fell sharply."]
    if which:
        sentences = [s + " And then the weather turned cold and everyone went home early." for s in sentences]
    return tokenize(sentences[:batch])


def _path(name):
    if name == "minilm":
        from ember.models.minilm import export_minilm
        return export_minilm(MODEL_DIR / "minilm.onnx")
    return bench_models.build(name, MODEL_DIR)


@pytest.fixture(scope="module", params=list(SHAPES))
def model(request):
    name = request.param
    p = str(_path(name))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return name, ember.InferenceSession(p), ort.InferenceSession(p, so, providers=["CPUExecutionProvider"])


def test_matches_onnxruntime_across_shapes(model):
    name, sess, ref = model
    for k, (batch, seq) in enumerate(SHAPES[name]):
        if name == "minilm":
            feeds = _minilm_feeds(batch, seq)
            feeds = {i.name: feeds[i.name] for i in sess.get_inputs()}
        else:
            feeds = bench_models.example_inputs(name, batch=batch, seq=seq or 128, seed=k)
        got = sess.run(None, feeds)
        want = ref.run(None, feeds)
        for g, w, o in zip(got, want, sess.get_outputs()):
            assert g.shape == w.shape, (name, o.name, batch, seq)
            err = float(np.abs(g - w).max() / np.abs(w).max())
            assert err < 1e-4, f"{name} {o.name} batch {batch} seq {seq}: relative error {err:.2e}"
    # one session served every shape: one plan per signature, one compiled program
    assert len(sess._plans) == len(SHAPES[name])


def test_run_makes_constant_python_calls(model):
    from tests.test_runtime import run_calls
    name, sess, _ = model
    if name == "minilm":
        feeds = {k: v for k, v in _minilm_feeds(1, 0).items() if k in {i.name for i in sess.get_inputs()}}
    else:
        feeds = bench_models.example_inputs(name, batch=1, seq=16)
    sess.run(None, feeds)
    py, c, native = run_calls(sess, lambda: sess.run(None, feeds))
    assert native == 1, f"{name}: {native} native calls in one run"
    assert py < 40 + 2 * len(sess.get_inputs()), f"{name}: {py} Python calls in one run"
    assert c < 40 + 2 * len(sess.get_inputs()), f"{name}: {c} C-function calls in one run"


def test_inspect_bert_fuses(capsys):
    from ember.cli.main import main
    assert main(["inspect", str(_path("bert"))]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]            # "# N ONNX nodes -> M Ember ops -> K kernels"
    n_onnx, n_kernels = int(first.split()[1]), int(first.split()[-2])
    assert n_kernels < 0.6 * n_onnx, first
    assert "matmul" in out and "from ONNX nodes:" in out
