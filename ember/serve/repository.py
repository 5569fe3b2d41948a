"""Models to serve: a Triton-style model repository (`name/version/model.onnx`), each model's
config, and `ServedModel`, a compiled session with its v2 metadata and request checks.

Repository layout::

    repo/
      all-MiniLM-L6-v2/
        config.json          optional (or Triton's config.pbtxt: max_batch_size, max_queue_delay,
                             instance count are read from it)
        1/model.onnx
        1/tokenizer.json     optional: the model also serves /v1/embeddings

config.json keys (all optional): max_batch_size (0 turns batching off), max_queue_delay_ms,
instances (runs at once), threads (each run's intra-op threads, 0 = all cores), pad (input
name -> value: requests whose other dims differ are padded to one batch and the outputs cropped
back), versions ("latest", "all" or a list), embedding ({output, pooling, normalize,
max_length})."""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .protocol import RequestError, datatype_of

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


class RepositoryError(Exception):
    """The repository or a model's config is unusable (names the file and the fix)."""


@dataclass
class ModelConfig:
    max_batch_size: int = 32
    max_queue_delay_ms: float = 2.0
    instances: int = 1
    threads: int = 0
    pad: dict = field(default_factory=dict)
    versions: object = "latest"
    embedding: dict | None = None

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "ModelConfig":
        if not isinstance(d, dict):
            raise RepositoryError(f"{where}: the config must be a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise RepositoryError(f"{where}: unknown config key(s) {unknown}; known keys are {sorted(known)}")
        c = cls(**d)
        for key in ("max_batch_size", "instances", "threads"):
            v = getattr(c, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < (1 if key == "instances" else 0):
                raise RepositoryError(f"{where}: {key} must be an integer >= {1 if key == 'instances' else 0}")
        if not isinstance(c.max_queue_delay_ms, (int, float)) or c.max_queue_delay_ms < 0:
            raise RepositoryError(f"{where}: max_queue_delay_ms must be a number >= 0")
        if not isinstance(c.pad, dict) or not all(isinstance(v, (int, float)) for v in c.pad.values()):
            raise RepositoryError(f"{where}: pad must map input names to numbers")
        if c.embedding is not None and not isinstance(c.embedding, dict):
            raise RepositoryError(f"{where}: embedding must be an object")
        return c


def _read_pbtxt(path: Path) -> dict:
    """The few Triton config.pbtxt settings that have a meaning here."""
    text = path.read_text()
    out: dict = {}
    if m := re.search(r"\bmax_batch_size\s*:\s*(\d+)", text):
        out["max_batch_size"] = int(m.group(1))
    if m := re.search(r"\bmax_queue_delay_microseconds\s*:\s*(\d+)", text):
        out["max_queue_delay_ms"] = int(m.group(1)) / 1000
    if m := re.search(r"instance_group\s*\[?\s*{[^}]*\bcount\s*:\s*(\d+)", text):
        out["instances"] = int(m.group(1))
    return out


def read_config(model_dir: Path) -> ModelConfig:
    cj, pb = model_dir / "config.json", model_dir / "config.pbtxt"
    if cj.exists():
        try:
            return ModelConfig.from_dict(json.loads(cj.read_text()), str(cj))
        except ValueError as e:
            raise RepositoryError(f"{cj}: not valid JSON: {e}") from None
    if pb.exists():
        return ModelConfig.from_dict(_read_pbtxt(pb), str(pb))
    return ModelConfig()


def _versions(model_dir: Path, policy) -> list[str]:
    found = sorted((p.name for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()
                    and (p / "model.onnx").exists()), key=int)
    if not found:
        raise RepositoryError(f"{model_dir}: no version folder with a model.onnx (expected {model_dir}/1/model.onnx)")
    if policy == "latest":
        return found[-1:]
    if policy == "all":
        return found
    if isinstance(policy, list):
        want = [str(v) for v in policy]
        missing = [v for v in want if v not in found]
        if missing:
            raise RepositoryError(f"{model_dir}: versions {missing} are listed in the config but not present")
        return want
    raise RepositoryError(f"{model_dir}: versions must be 'latest', 'all' or a list of numbers")


@dataclass
class ModelSource:
    name: str
    version: str
    path: Path
    config: ModelConfig


def scan_repository(root: str | Path) -> list[ModelSource]:
    root = Path(root)
    if not root.is_dir():
        raise RepositoryError(f"model repository {root} is not a folder")
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not _NAME.match(d.name):
            raise RepositoryError(f"{d}: a model name may use letters, digits, '_', '-' and '.'")
        cfg = read_config(d)
        out += [ModelSource(d.name, v, d / v / "model.onnx", cfg) for v in _versions(d, cfg.versions)]
    if not out:
        raise RepositoryError(f"model repository {root} holds no models (expected NAME/1/model.onnx)")
    return out


def model_sources(paths: list[str]) -> list[ModelSource]:
    """`ember serve a.onnx name=b.onnx`: single files, named by their stem unless given a name;
    a config.json beside the file applies to it."""
    out = []
    for p in paths:
        name, sep, file = p.partition("=")
        path = Path(file if sep else p)
        name = name if sep else path.stem
        if not path.is_file():
            raise RepositoryError(f"model file {path} does not exist")
        if not _NAME.match(name):
            raise RepositoryError(f"model name {name!r}: use letters, digits, '_', '-' and '.'")
        out.append(ModelSource(name, "1", path, read_config(path.parent)))
    return out


class ServedModel:
    """One model version, compiled, with what the protocol layer needs to check and batch its
    requests. `run` is called from worker threads; the session is thread-safe."""

    def __init__(self, source: ModelSource):
        import ember
        from .embeddings import Embedder

        self.name, self.version, self.config = source.name, source.version, source.config
        so = ember.SessionOptions()
        so.intra_op_num_threads = self.config.threads
        t0 = time.perf_counter()
        self.session = ember.InferenceSession(str(source.path), so)
        self.compile_seconds = time.perf_counter() - t0
        self.inputs = [(i.name, i.dtype, i.shape) for i in self.session.get_inputs()]
        self.outputs = [(o.name, o.dtype, o.shape) for o in self.session.get_outputs()]
        self.output_names = [n for n, _, _ in self.outputs]
        self._np = {n: np.dtype(self._numpy(t)) for n, t, _ in self.inputs}
        for name in self.config.pad:
            if name not in self._np:
                raise RepositoryError(f"model {self.name}: config pads input {name!r}, which it does not have")
        self.batch_symbol = self._batch_symbol()
        self.embedder = Embedder.for_model(self, source.path.parent, self.config.embedding)
        # input name -> pad value; an embedding model's token inputs padded with 0 are masked out,
        # so texts of any length share a batch. The config itself is left as it was read.
        self.pad = dict(self.config.pad) or ({n: 0 for n, _, _ in self.inputs} if self.embedder else {})
        self.padded_symbols = {d for n, _, s in self.inputs if n in self.pad for d in s[1:] if isinstance(d, str)}

    @staticmethod
    def _numpy(dtype: str):
        from ..ir.dtypes import to_numpy
        return to_numpy(dtype)

    def _batch_symbol(self):
        """The symbol every input and output starts with, when requests may be stacked on it."""
        if self.config.max_batch_size <= 1:
            return None
        firsts = {s[0] if s else None for _, _, s in self.inputs + self.outputs}
        if len(firsts) == 1 and isinstance(next(iter(firsts)), str):
            return next(iter(firsts))
        return None

    @property
    def batching(self) -> bool:
        return self.batch_symbol is not None

    def metadata(self) -> dict:
        def tensors(items):
            return [{"name": n, "datatype": datatype_of(self._numpy(t)),
                     "shape": [d if isinstance(d, int) else -1 for d in s]} for n, t, s in items]
        return {"name": self.name, "versions": [self.version], "platform": "ember_onnx",
                "inputs": tensors(self.inputs), "outputs": tensors(self.outputs)}

    def check(self, feeds: dict[str, np.ndarray]) -> int:
        """Raise RequestError unless `feeds` fit the model's inputs; return the batch rows (1 when
        the model does not batch)."""
        names = [n for n, _, _ in self.inputs]
        unknown = [k for k in feeds if k not in self._np]
        if unknown:
            raise RequestError(f"model '{self.name}' has no input(s) {unknown}; its inputs are {names}")
        missing = [n for n in names if n not in feeds]
        if missing:
            raise RequestError(f"model '{self.name}' needs input(s) {missing}")
        rows = set()
        for name, dtype, shape in self.inputs:
            a, want = feeds[name], self._np[name]
            if a.dtype != want:
                raise RequestError(f"input '{name}' has datatype {datatype_of(a.dtype)}, model '{self.name}' "
                                   f"expects {datatype_of(want)}")
            decl = [d if isinstance(d, int) else -1 for d in shape]
            if a.ndim != len(shape) or any(d >= 0 and g != d for g, d in zip(a.shape, decl)):
                raise RequestError(f"input '{name}' has shape {list(a.shape)}, model '{self.name}' expects "
                                   f"{decl} (-1: any size)")
            if self.batching:
                rows.add(a.shape[0])
        if len(rows) > 1:
            raise RequestError(f"the inputs disagree on the batch size (dimension 0): {sorted(rows)}")
        n = rows.pop() if rows else 1
        if self.batching and n > self.config.max_batch_size:
            # as in Triton: the config bounds a run's rows, and so its working memory
            raise RequestError(f"the request has {n} rows; model '{self.name}' takes at most "
                               f"max_batch_size = {self.config.max_batch_size} per request")
        return n

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(None, feeds)))


def load_models(sources: list[ModelSource], progress=None) -> list[ServedModel]:
    """Compile every model, reporting each to `progress(name, version, seconds or None)`."""
    out = []
    for s in sources:
        if progress:
            progress(s.name, s.version, None)
        m = ServedModel(s)
        if progress:
            progress(s.name, s.version, m.compile_seconds)
        out.append(m)
    return out
