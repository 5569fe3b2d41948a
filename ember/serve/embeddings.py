"""Sentence embeddings from a served transformer: the model's own tokenizer (`tokenizer.json`
beside model.onnx) and the pooling its sentence-transformers files name (`1_Pooling/config.json`,
a Normalize module in `modules.json`), for the OpenAI-style /v1/embeddings route."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .protocol import RequestError

_TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _json(path: Path) -> dict | list | None:
    try:
        return json.loads(path.read_text()) if path.exists() else None
    except ValueError:
        return None


class Embedder:
    """Tokenize -> run -> pool -> normalise. `feeds()` tokenizes one request (padded to its own
    longest text; the batcher pads across requests), `pool()` turns the model's token states into
    one vector per text."""

    def __init__(self, model, folder: Path, settings: dict):
        from tokenizers import Tokenizer

        self.model = model
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        st = _json(folder / "sentence_bert_config.json") or {}
        tc = _json(folder / "tokenizer_config.json") or {}
        limit = tc.get("model_max_length")
        self.max_length = int(settings.get("max_length") or st.get("max_seq_length")
                              or (limit if isinstance(limit, int) and limit < 100_000 else 512))
        self.tokenizer.enable_truncation(max_length=self.max_length)
        pool_cfg = _json(folder / "1_Pooling" / "config.json") or {}
        self.pooling = settings.get("pooling") or next(
            (mode for key, mode in (("pooling_mode_cls_token", "cls"), ("pooling_mode_max_tokens", "max"),
                                    ("pooling_mode_mean_tokens", "mean")) if pool_cfg.get(key)), "mean")
        if self.pooling not in ("mean", "cls", "max"):
            raise ValueError(f"pooling {self.pooling!r}: use mean, cls or max")
        modules = _json(folder / "modules.json") or []
        self.normalize = bool(settings.get("normalize", any(
            isinstance(m, dict) and str(m.get("type", "")).endswith("Normalize") for m in modules)))
        self.output = settings.get("output") or model.output_names[0]
        self.input_names = [n for n, _, _ in model.inputs]
        self.dims = next(s for n, _, s in model.outputs if n == self.output)[-1]

    @classmethod
    def for_model(cls, model, folder: Path, settings: dict | None):
        """An Embedder when the model looks like a token encoder with its tokenizer beside it."""
        if not (folder / "tokenizer.json").exists():
            return None
        names = {n for n, _, _ in model.inputs}
        if "input_ids" not in names or not names <= set(_TOKEN_INPUTS):
            return None
        return cls(model, folder, settings or {})

    def token_ids(self, inputs) -> list[list[int]]:
        """The request's `input` (a string, a list of strings, a list of token ids or a list of
        them) as token id lists."""
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs:
            raise RequestError("'input' must be a string, a list of strings or a list of token id lists")
        if all(isinstance(x, str) for x in inputs):
            if any(not x for x in inputs):
                raise RequestError("'input' may not contain empty strings")
            if len(inputs) == 1:
                # encode_batch hands even one text to a rayon pool, whose threads then spin on
                # the cores the model runs on
                return [self.tokenizer.encode(inputs[0]).ids]
            return [e.ids for e in self.tokenizer.encode_batch(inputs)]
        if all(isinstance(x, int) and not isinstance(x, bool) for x in inputs):
            inputs = [inputs]
        vocab = self.tokenizer.get_vocab_size()
        out = []
        for x in inputs:
            if not (isinstance(x, list) and x and all(isinstance(t, int) and not isinstance(t, bool)
                                                     and 0 <= t < vocab for t in x)):
                raise RequestError(f"'input' token lists must hold integers in [0, {vocab})")
            if len(x) > self.max_length:
                raise RequestError(f"a token list has {len(x)} tokens, this model takes at most {self.max_length}")
            out.append(x)
        return out

    def feeds(self, ids: list[list[int]]) -> dict[str, np.ndarray]:
        n, seq = len(ids), max(len(x) for x in ids)
        tokens = np.zeros((n, seq), np.int64)
        mask = np.zeros((n, seq), np.int64)
        for i, x in enumerate(ids):
            tokens[i, :len(x)] = x
            mask[i, :len(x)] = 1
        by_name = {"input_ids": tokens, "attention_mask": mask, "token_type_ids": np.zeros_like(tokens)}
        dt = {n: self.model._np[n] for n in self.input_names}
        return {n: by_name[n].astype(dt[n], copy=False) for n in self.input_names}

    def pool(self, outputs: dict[str, np.ndarray], feeds: dict[str, np.ndarray]) -> np.ndarray:
        h = outputs[self.output].astype(np.float32, copy=False)
        if h.ndim == 3:
            mask = (feeds["attention_mask"] if "attention_mask" in feeds else
                    (feeds["input_ids"] >= 0)).astype(np.float32)[:, :h.shape[1], None]
            if self.pooling == "cls":
                h = h[:, 0]
            elif self.pooling == "max":
                h = np.where(mask > 0, h, -np.inf).max(axis=1)
            else:
                h = (h * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        if self.normalize:
            h = h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)
        return h.astype(np.float32)
