"""Benchmark models for Ember: built in plain torch with fixed seeds and random
weights (nothing is downloaded), exported to ONNX.

    python -m bench.models [OUT_DIR] [--verify] [--only NAME ...]

Public API:
    MODELS                       names of the basket models
    EXTRA_MODELS                 named extra cases: bert_eager, gpt2_eager (eager attention)
    build(name, out_dir, opset)  export the model into out_dir unless it is there; return its path
    example_inputs(name, ...)    valid random feeds {input name: np.ndarray}
    torch_model(name)            the eager torch module (eval mode) the export comes from
    verify(name, path)           onnxruntime vs torch eager, returns the worst relative error

torch / transformers are imported lazily, so importing this module is cheap.

Exporter: the torch.export-based ("dynamo") exporter, ``torch.onnx.export(...,
dynamo=True, dynamic_shapes=..., optimize=True)``, which needs ``onnxscript``
(tested with onnxscript 0.7.2). Its optimizer constant-folds, deduplicates and
CSEs, and shapes are symbolic, so the graphs are much smaller than the TorchScript
exporter's (GPT-2: 465 vs 2249 nodes; BERT: 428 vs 883; few Shape/Gather/Concat
chains). For the CNNs its BatchNorm->Conv fusion is switched off so that inference
BatchNormalization nodes stay in the graph. ``--exporter torchscript`` (or
``build(..., exporter="torchscript")``) uses the legacy exporter (``dynamo=False``,
``dynamic_axes``, ``do_constant_folding=True``) instead; it also works for all five.
Weights are embedded in the .onnx (no external data; every model is < 2 GB).

The transformers models are wrapped so that the exported graph takes a ready 4-D
additive attention mask (BERT: from attention_mask; GPT-2: causal, from Range)
instead of tracing transformers' masking_utils; verify() checks the wrapped model
against the unmodified transformers call, and they agree exactly in eager torch.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

MODELS = ("mlp", "resnet50", "mobilenetv2", "bert", "gpt2")
# Named extra cases, outside the basket: the transformers models with eager attention
# (explicit MatMul/Softmax/MatMul in torch) instead of the default SDPA that users export with.
EXTRA_MODELS = ("bert_eager", "gpt2_eager")
_VARIANT = {"bert_eager": ("bert", "eager"), "gpt2_eager": ("gpt2", "eager")}
# Export file names that changed meaning: BERT and GPT-2 were once exported with eager
# attention as bert.onnx / gpt2.onnx; the default (SDPA) export gets a new name so a stale
# file is never picked up.
_FILE = {"bert": "bert-sdpa", "gpt2": "gpt2-sdpa"}


def base_model(name: str) -> str:
    """The basket model a named extra case is a variant of (itself for basket models)."""
    return _VARIANT.get(name, (name, None))[0]

DEFAULT_OUT = Path(__file__).resolve().parent / ".models"
DEFAULT_SEQ = 128

BERT_VOCAB = 30522
GPT2_VOCAB = 50257

# Which torch exporter each model uses (see the module docstring).
EXPORTER = {name: "dynamo" for name in MODELS + EXTRA_MODELS}
MAX_DIM = {"batch": 4096, "seq": 512}

# Per model: input names, output names, dynamic axes
_IO = {
    "mlp": (["x"], ["y"], {"x": {0: "batch"}, "y": {0: "batch"}}),
    "resnet50": (["x"], ["y"], {"x": {0: "batch"}, "y": {0: "batch"}}),
    "mobilenetv2": (["x"], ["y"], {"x": {0: "batch"}, "y": {0: "batch"}}),
    "bert": (
        ["input_ids", "attention_mask"],
        ["last_hidden_state", "pooler_output"],
        {
            "input_ids": {0: "batch", 1: "seq"},
            "attention_mask": {0: "batch", 1: "seq"},
            "last_hidden_state": {0: "batch", 1: "seq"},
            "pooler_output": {0: "batch"},
        },
    ),
    "gpt2": (
        ["input_ids"],
        ["last_hidden_state"],
        {"input_ids": {0: "batch", 1: "seq"}, "last_hidden_state": {0: "batch", 1: "seq"}},
    ),
}


# --------------------------------------------------------------------------- #
# Torch model definitions (built lazily so that torch is imported only on use)
# --------------------------------------------------------------------------- #


def _mlp():
    import torch.nn as nn

    return nn.Sequential(
        nn.Linear(1024, 4096),
        nn.GELU(),
        nn.Linear(4096, 4096),
        nn.GELU(),
        nn.Linear(4096, 1000),
    )


def _resnet50():
    import torch
    import torch.nn as nn

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample

        def forward(self, x):
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            if self.downsample is not None:
                identity = self.downsample(x)
            return self.relu(out + identity)

    class ResNet50(nn.Module):
        def __init__(self, layers=(3, 4, 6, 3), num_classes=1000):
            super().__init__()
            self.inplanes = 64
            self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
            self.layer1 = self._make_layer(64, layers[0])
            self.layer2 = self._make_layer(128, layers[1], stride=2)
            self.layer3 = self._make_layer(256, layers[2], stride=2)
            self.layer4 = self._make_layer(512, layers[3], stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(512 * 4, num_classes)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

        def _make_layer(self, planes, blocks, stride=1):
            downsample = None
            if stride != 1 or self.inplanes != planes * 4:
                downsample = nn.Sequential(
                    nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes * 4),
                )
            layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
            self.inplanes = planes * 4
            layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
            return nn.Sequential(*layers)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            x = torch.flatten(self.avgpool(x), 1)
            return self.fc(x)

    return ResNet50()


def _mobilenetv2():
    import torch
    import torch.nn as nn

    def make_divisible(v, divisor=8, min_value=None):
        min_value = min_value or divisor
        new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
        if new_v < 0.9 * v:
            new_v += divisor
        return new_v

    def conv_bn_relu6(inp, oup, kernel=3, stride=1, groups=1):
        return nn.Sequential(
            nn.Conv2d(inp, oup, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(oup),
            nn.ReLU6(inplace=True),
        )

    class InvertedResidual(nn.Module):
        def __init__(self, inp, oup, stride, expand_ratio):
            super().__init__()
            hidden = int(round(inp * expand_ratio))
            self.use_res_connect = stride == 1 and inp == oup
            layers = []
            if expand_ratio != 1:
                layers.append(conv_bn_relu6(inp, hidden, kernel=1))
            layers += [
                conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),  # depthwise
                nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),  # linear bottleneck
                nn.BatchNorm2d(oup),
            ]
            self.conv = nn.Sequential(*layers)

        def forward(self, x):
            if self.use_res_connect:
                return x + self.conv(x)
            return self.conv(x)

    class MobileNetV2(nn.Module):
        def __init__(self, num_classes=1000, width_mult=1.0):
            super().__init__()
            settings = [
                # t, c, n, s
                [1, 16, 1, 1],
                [6, 24, 2, 2],
                [6, 32, 3, 2],
                [6, 64, 4, 2],
                [6, 96, 3, 1],
                [6, 160, 3, 2],
                [6, 320, 1, 1],
            ]
            input_channel = make_divisible(32 * width_mult)
            self.last_channel = make_divisible(1280 * max(1.0, width_mult))
            features = [conv_bn_relu6(3, input_channel, stride=2)]
            for t, c, n, s in settings:
                output_channel = make_divisible(c * width_mult)
                for i in range(n):
                    features.append(
                        InvertedResidual(input_channel, output_channel, s if i == 0 else 1, t)
                    )
                    input_channel = output_channel
            features.append(conv_bn_relu6(input_channel, self.last_channel, kernel=1))
            self.features = nn.Sequential(*features)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.last_channel, num_classes))
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out")
                elif isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, 0, 0.01)
                    nn.init.zeros_(m.bias)

        def forward(self, x):
            x = self.features(x)
            x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
            x = torch.flatten(x, 1)
            return self.classifier(x)

    return MobileNetV2()


def _calibrate_batchnorm(model, seed: int = 1):
    """Give BatchNorm layers non-trivial affine params and realistic running
    statistics (cumulative average over a few random batches in train mode), so
    that inference BatchNormalization is not an identity and activations keep a
    sane scale through the deep random network."""
    import torch
    import torch.nn as nn

    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:
            bn.weight.copy_(torch.rand(bn.weight.shape, generator=g) + 0.5)  # U(0.5, 1.5)
            bn.bias.copy_(torch.randn(bn.bias.shape, generator=g) * 0.1)
            bn.reset_running_stats()
            bn.momentum = None  # cumulative moving average
        model.train()
        for _ in range(2):
            model(torch.randn(8, 3, 224, 224, generator=g))
        for bn in bns:
            bn.momentum = 0.1
    model.eval()


def _perturb_small_params(model, seed: int = 2, std: float = 0.02):
    """Random init leaves every bias at 0 and every LayerNorm at (1, 0). Add a little
    noise to all 1-D parameters so that they are distinct (exporters deduplicate
    identical initializers and drop all-zero biases) and so that a bias or LayerNorm
    bug cannot hide behind zeros and ones."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(torch.randn(p.shape, generator=g) * std)


def _additive_mask(attention_mask):
    """[batch, seq] int 0/1 padding mask -> [batch, 1, 1, seq] float additive mask
    (0 where attended, finfo.min where padded), the classic BERT "extended attention
    mask". Passing it as a 4-D mask makes transformers skip its own mask builder
    (masking_utils), whose traced form is an advanced-indexing mess (GatherND /
    GatherElements over broadcast aranges); the values are the same as its own
    eager mask: where(mask, 0, finfo.min)."""
    import torch

    m = attention_mask[:, None, None, :].to(torch.float32)
    return (1.0 - m) * torch.finfo(torch.float32).min


def _causal_mask(input_ids):
    """[1, 1, seq, seq] float additive causal mask built from Range (no Trilu)."""
    import torch

    seq = input_ids.shape[1]
    pos = torch.arange(seq, device=input_ids.device)
    future = pos[None, :] > pos[:, None]  # key index > query index
    mask = torch.where(future, torch.finfo(torch.float32).min, 0.0).to(torch.float32)
    return mask[None, None, :, :]


def _attention(impl):
    """Config kwargs for the attention implementation: none for the default (SDPA), which is
    what a user's export gets."""
    return {} if impl is None else {"attn_implementation": impl}


def _bert(attn=None):
    import torch
    import transformers

    cfg = transformers.BertConfig(
        vocab_size=BERT_VOCAB,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=512,
        **_attention(attn),
    )
    bert = transformers.BertModel(cfg, add_pooling_layer=True)
    _perturb_small_params(bert)

    class Bert(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            out = self.bert(
                input_ids=input_ids,
                attention_mask=_additive_mask(attention_mask),
                token_type_ids=torch.zeros_like(input_ids),
                return_dict=True,
            )
            return out.last_hidden_state, out.pooler_output

        def reference(self, input_ids, attention_mask):
            """Unmodified transformers path (its own 2-D mask handling)."""
            out = self.bert(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
            return out.last_hidden_state, out.pooler_output

    return Bert()


def _gpt2(attn=None):
    import torch
    import transformers

    cfg = transformers.GPT2Config(
        vocab_size=GPT2_VOCAB,
        n_positions=1024,
        n_embd=768,
        n_layer=12,
        n_head=12,
        use_cache=False,
        **_attention(attn),
    )
    gpt2 = transformers.GPT2Model(cfg)
    _perturb_small_params(gpt2)

    class GPT2(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gpt2 = gpt2

        def forward(self, input_ids):
            # A ready 4-D causal mask: transformers' own builder would, when traced
            # without an attention_mask, also run its packed-sequence detection
            # (aten::diff, unsupported by the TorchScript exporter).
            out = self.gpt2(
                input_ids=input_ids, attention_mask=_causal_mask(input_ids), use_cache=False, return_dict=True
            )
            return out.last_hidden_state

        def reference(self, input_ids):
            """Unmodified transformers path (its own causal mask)."""
            return self.gpt2(input_ids=input_ids, use_cache=False, return_dict=True).last_hidden_state

    return GPT2()


_BUILDERS = {
    "mlp": _mlp,
    "resnet50": _resnet50,
    "mobilenetv2": _mobilenetv2,
    "bert": _bert,
    "gpt2": _gpt2,
}


def torch_model(name: str):
    """The eager torch module (eval mode, deterministic random weights) for `name`."""
    import torch

    _check(name)
    torch.manual_seed(0)
    base, attn = _VARIANT.get(name, (name, None))
    model = _BUILDERS[base](attn) if attn else _BUILDERS[base]()
    if name in ("resnet50", "mobilenetv2"):
        _calibrate_batchnorm(model)
    return model.eval()


# --------------------------------------------------------------------------- #
# Inputs
# --------------------------------------------------------------------------- #


def example_inputs(name: str, batch: int = 1, seq: int = DEFAULT_SEQ, seed: int = 0) -> dict[str, np.ndarray]:
    """Valid random feeds for model `name` (keys are the ONNX input names)."""
    _check(name)
    name = base_model(name)
    rng = np.random.default_rng(seed)
    if name == "mlp":
        return {"x": rng.standard_normal((batch, 1024), dtype=np.float32)}
    if name in ("resnet50", "mobilenetv2"):
        return {"x": rng.standard_normal((batch, 3, 224, 224), dtype=np.float32)}
    if name == "bert":
        ids = rng.integers(1000, BERT_VOCAB, size=(batch, seq), dtype=np.int64)
        ids[:, 0] = 101  # [CLS]
        mask = np.ones((batch, seq), dtype=np.int64)
        # Row 0 is full; later rows get progressively more trailing padding.
        step = seq // (2 * batch) if batch > 1 else 0
        for i in range(1, batch):
            length = max(2, seq - i * step)
            mask[i, length:] = 0
            ids[i, length:] = 0  # [PAD]
        return {"input_ids": ids, "attention_mask": mask}
    if name == "gpt2":
        return {"input_ids": rng.integers(0, GPT2_VOCAB, size=(batch, seq), dtype=np.int64)}
    raise AssertionError(name)


def _check(name: str) -> None:
    if name not in MODELS + EXTRA_MODELS:
        raise KeyError(f"unknown model {name!r}; expected one of {MODELS + EXTRA_MODELS}")


# --------------------------------------------------------------------------- #
# Export
# --------------------------------------------------------------------------- #


def build(name: str, out_dir: str | Path = DEFAULT_OUT, opset: int = 18, exporter: str | None = None) -> Path:
    """Export model `name` to out_dir/<name>.onnx unless that file already exists.

    The export goes to a temporary folder first and is moved into place only when
    it is complete, so an interrupted export never leaves a half-written file that
    the cache would accept. Any external-data files the exporter writes are moved
    alongside (their relative locations stay valid)."""
    _check(name)
    out_dir = Path(out_dir)
    path = out_dir / f"{_FILE.get(name, name)}.onnx"
    if path.exists():
        return path
    out_dir.mkdir(parents=True, exist_ok=True)

    import torch

    model = torch_model(name)
    feeds = example_inputs(name, batch=2, seq=16)  # batch/seq != 1 so nothing gets specialised
    args = tuple(torch.from_numpy(v) for v in feeds.values())

    exporter = exporter or EXPORTER[name]
    if exporter == "dynamo" and not _have_onnxscript():
        warnings.warn("onnxscript is not installed: using the TorchScript exporter", stacklevel=2)
        exporter = "torchscript"
    cnn = name in ("resnet50", "mobilenetv2")
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=f".{name}-") as tmp:
        tmp_path = Path(tmp) / path.name
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecation / tracer chatter
            if exporter == "dynamo":
                _export_dynamo(model, args, tmp_path, opset, *_IO[base_model(name)], keep_batchnorm=cnn)
                if cnn and not _has_op(tmp_path, "BatchNormalization"):
                    for f in Path(tmp).iterdir():
                        f.unlink()
                    exporter = "torchscript"
            if exporter == "torchscript":
                _export_torchscript(model, args, tmp_path, opset, *_IO[base_model(name)])
            elif exporter != "dynamo":
                raise ValueError(f"unknown exporter {exporter!r}")
        for f in Path(tmp).iterdir():  # the .onnx plus any external data
            if f != tmp_path:
                shutil.move(str(f), out_dir / f.name)
        os.replace(tmp_path, path)
    return path


def _have_onnxscript() -> bool:
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def _has_op(path: Path, op_type: str) -> bool:
    import onnx

    return any(n.op_type == op_type for n in onnx.load(str(path), load_external_data=False).graph.node)


def _export_torchscript(model, args, path, opset, input_names, output_names, dynamic_axes):
    import torch

    torch.onnx.export(
        model,
        args,
        str(path),
        dynamo=False,
        opset_version=opset,
        input_names=input_names,
        output_names=output_names,
        dynamic_axes=dynamic_axes,
        do_constant_folding=True,
        export_params=True,
        # The model is already in eval() mode. PRESERVE (rather than the default
        # EVAL) skips the exporter's eval peephole pass, which would fold
        # BatchNorm into the preceding Conv: we want the CNNs to keep
        # inference-mode BatchNormalization nodes for the engine to handle.
        training=torch.onnx.TrainingMode.PRESERVE,
    )


@contextlib.contextmanager
def _without_batchnorm_fusion():
    """The onnxscript optimizer that the dynamo exporter runs folds BatchNormalization
    into the preceding Conv; the CNN benchmarks are meant to keep inference
    BatchNormalization nodes (folding them is the engine's job). Drop those rewrite
    rules for the duration of the export. Uses onnxscript's private rule list
    (checked with onnxscript 0.7.2); if that changes, build() notices the missing
    BatchNormalization nodes and falls back to the TorchScript exporter."""
    try:
        from onnxscript import rewriter
    except ImportError:
        yield
        return
    rules = getattr(rewriter, "_DEFAULT_REWRITE_RULES", None)
    if rules is None:
        yield
        return
    rewriter._DEFAULT_REWRITE_RULES = tuple(r for r in rules if "BatchNorm" not in (getattr(r, "name", "") or ""))
    try:
        yield
    finally:
        rewriter._DEFAULT_REWRITE_RULES = rules


def _export_dynamo(model, args, path, opset, input_names, output_names, dynamic_axes, keep_batchnorm=False):
    import logging

    import torch

    # "torchvision is not installed. Skipping torchvision::..." noise
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    dims = {}
    dynamic_shapes = tuple(
        {ax: dims.setdefault(dn, torch.export.Dim(dn, min=1, max=MAX_DIM[dn])) for ax, dn in dynamic_axes[n].items()}
        for n in input_names
    )
    with _without_batchnorm_fusion() if keep_batchnorm else contextlib.nullcontext():
        prog = torch.onnx.export(
            model,
            args,
            dynamo=True,
            opset_version=opset,
            input_names=input_names,
            output_names=output_names,
            dynamic_shapes=dynamic_shapes,
            optimize=True,  # onnxscript optimizer: constant folding, CSE, dead code
            verbose=False,
        )
    prog.save(str(path), external_data=False)  # all models are < 2 GB: one self-contained file


# --------------------------------------------------------------------------- #
# Verification
# --------------------------------------------------------------------------- #


def _ort_session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def verify(name: str, path: str | Path, shapes=None, model=None) -> list[tuple[int, int | None, float]]:
    """Compare onnxruntime (1 thread) against torch eager.

    Returns [(batch, seq, rel_err)] with rel_err = max|ort - torch| / max|torch| taken
    over all outputs."""
    import torch

    if shapes is None:
        if base_model(name) in ("bert", "gpt2"):
            shapes = [(1, 128), (4, 128), (1, 64), (4, 64)]
        else:
            shapes = [(1, None), (4, None)]
    model = model if model is not None else torch_model(name)
    sess = _ort_session(Path(path))
    results = []
    for batch, seq in shapes:
        feeds = example_inputs(name, batch=batch, seq=seq or DEFAULT_SEQ)
        got = sess.run(None, feeds)
        reference = getattr(model, "reference", model)  # transformers: the unwrapped HF call
        with torch.no_grad():
            ref = reference(*(torch.from_numpy(v) for v in feeds.values()))
        ref = [r.numpy() for r in (ref if isinstance(ref, (tuple, list)) else (ref,))]
        err = 0.0
        for g, r in zip(got, ref, strict=True):
            assert g.shape == r.shape, (name, g.shape, r.shape)
            err = max(err, float(np.abs(g - r).max() / np.abs(r).max()))
        results.append((batch, seq, err))
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", nargs="?", default=str(DEFAULT_OUT))
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--only", nargs="*", choices=MODELS + EXTRA_MODELS, help="build only these models")
    p.add_argument("--exporter", choices=("torchscript", "dynamo"), help="override the per-model default")
    p.add_argument("--verify", action="store_true", help="check onnxruntime against torch eager")
    a = p.parse_args(argv)

    import onnx

    ok = True
    for name in a.only or MODELS:
        t0 = time.perf_counter()
        existed = (Path(a.out_dir) / f"{_FILE.get(name, name)}.onnx").exists()
        path = build(name, a.out_dir, opset=a.opset, exporter=a.exporter)
        dt = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in path.parent.glob(f"{path.name}*"))
        nodes = len(onnx.load(str(path), load_external_data=False).graph.node)
        how = "cached" if existed else f"exported in {dt:.1f} s"
        print(f"{name:12s} {path}  {size / 2**20:7.1f} MiB  {nodes:5d} nodes  ({how})", flush=True)
        if a.verify:
            for batch, seq, err in verify(name, path):
                flag = "ok" if err < 1e-4 else "FAIL"
                ok &= err < 1e-4
                print(f"    batch={batch} seq={seq}  max|diff|/max|ref| = {err:.2e}  {flag}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
