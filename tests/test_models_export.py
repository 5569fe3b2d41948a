"""bench/models.py: the MLP exports to ONNX with a dynamic batch and onnxruntime
matches torch eager. Skipped where torch (or onnxruntime) is not installed."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import models  # noqa: E402

EXPORTERS = ["torchscript"]
try:
    import onnxscript  # noqa: F401

    EXPORTERS.append("dynamo")
except ImportError:
    pass


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_mlp_export_matches_torch(tmp_path, exporter):
    import onnx

    path = models.build("mlp", tmp_path, exporter=exporter)
    assert path == tmp_path / "mlp.onnx" and path.exists()

    m = onnx.load(str(path))
    onnx.checker.check_model(m)
    assert {o.domain: o.version for o in m.opset_import}.get("", None) == 18
    (x,) = m.graph.input
    assert x.name == "x"
    assert [d.dim_param or d.dim_value for d in x.type.tensor_type.shape.dim] == ["batch", 1024]
    ops = Counter(n.op_type for n in m.graph.node)
    assert ops["Gemm"] == 3 and ops["Erf"] == 2

    # onnxruntime (1 thread) vs torch eager, at two batch sizes (dynamic batch)
    for batch, err in [(b, e) for b, _, e in models.verify("mlp", path, shapes=[(1, None), (3, None)])]:
        assert err < 1e-4, (batch, err)

    # cached: a second build does not re-export
    mtime = path.stat().st_mtime_ns
    assert models.build("mlp", tmp_path, exporter=exporter) == path
    assert path.stat().st_mtime_ns == mtime


def test_example_inputs():
    feeds = models.example_inputs("bert", batch=3, seq=16)
    ids, mask = feeds["input_ids"], feeds["attention_mask"]
    assert ids.dtype == mask.dtype == np.int64 and ids.shape == mask.shape == (3, 16)
    assert ids.min() >= 0 and ids.max() < models.BERT_VOCAB
    assert mask[0].all() and not mask[-1].all()  # later rows are right-padded
    gpt = models.example_inputs("gpt2", batch=2, seq=8)["input_ids"]
    assert gpt.shape == (2, 8) and gpt.max() < models.GPT2_VOCAB
    assert models.example_inputs("resnet50", batch=2)["x"].shape == (2, 3, 224, 224)
    with pytest.raises(KeyError):
        models.example_inputs("nope")
