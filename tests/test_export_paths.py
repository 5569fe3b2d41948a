"""Every export path users take, with each exporter's default settings: the file a user gets
is loaded by Ember and compared with onnxruntime on the same file, at two shapes from one
session (batch 1, and a larger batch with other lengths).

- torch.onnx, both the dynamo exporter (the default) and TorchScript (`dynamo=False`), for
  transformers models (BERT, GPT-2, MiniLM with its real weights, ViT, T5, Whisper; the rest
  from small configs with fixed seeds) and a plain-torch CNN;
- Keras 3 on its torch backend (`model.export(format="onnx")`);
- JAX and Flax through jax2onnx;
- old opsets: the TorchScript exporter at opsets 9-12 and `onnx.version_converter` below that.

scikit-learn through skl2onnx is tested in tests/ops/test_ml.py. A case whose exporter itself
fails on the model is listed in EXPORTER_FAILS with the exporter's reason, and skipped only
while that exporter still fails."""
from __future__ import annotations

import io
import logging
import os
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import ember  # noqa: E402

TOL = 1e-4

# (case, exporter) -> what the exporter does (checked against torch 2.13, transformers 5.25)
EXPORTER_FAILS = {
    ("t5", "dynamo"): "torch.export cannot view T5's attention output with symbolic strides",
    ("whisper", "torchscript"): "transformers' causal mask uses aten::diff, which TorchScript cannot export",
}


def compare(model, feeds_list, what):
    """Ember against onnxruntime on `model` (a path or ModelProto) for every feed dict, from
    one Ember session; errors relative to each output's largest magnitude."""
    data = model if isinstance(model, (str, os.PathLike)) else model.SerializeToString()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    ref = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    sess = ember.InferenceSession(data)
    ran = 0
    for feeds in feeds_list:
        try:
            want = ref.run(None, feeds)
        except Exception as e:
            # an exporter may bake in a dim it declares dynamic (dynamo traces nn.LSTM's steps):
            # a shape that file cannot take must be refused by Ember too, never answered
            with pytest.raises(ember.errors.EmberError):
                sess.run(None, feeds)
            print(f"{what}: onnxruntime refuses {({k: v.shape for k, v in feeds.items()})}: {str(e)[:120]}")
            continue
        got = sess.run(None, feeds)
        ran += 1
        assert len(got) == len(want), what
        for g, w, o in zip(got, want, ref.get_outputs()):
            shape = {k: v.shape for k, v in feeds.items()}
            assert g.dtype == w.dtype and g.shape == w.shape, (what, o.name, shape, g.dtype, g.shape, w.shape)
            if w.dtype.kind == "f":
                err = float(np.abs(g.astype(np.float64) - w).max(initial=0.0) / max(np.abs(w).max(initial=0.0), 1e-6))
                assert err < TOL, f"{what}: output {o.name} at {shape}: relative error {err:.2e}"
            else:
                np.testing.assert_array_equal(g, w, err_msg=f"{what}: output {o.name} at {shape}")
    assert ran, f"{what}: onnxruntime took none of the test shapes"


# ------------------------------------------------------------------------------ torch.onnx
torch = pytest.importorskip("torch")


def _quiet():
    warnings.filterwarnings("ignore")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)


class Outputs(torch.nn.Module):
    """A transformers model called with named inputs, its tensors returned as a tuple (as a
    user's export of `model(**inputs)` does)."""

    def __init__(self, model, names):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *args):
        out = self.model(**dict(zip(self.names, args)), return_dict=True)
        return tuple(v for v in out.values() if isinstance(v, torch.Tensor))


def _ids(rng, batch, seq, vocab):
    return rng.integers(0, vocab, (batch, seq), dtype=np.int64)


def _mask(batch, seq):
    m = np.ones((batch, seq), np.int64)
    for r in range(1, batch):       # later rows right-padded
        m[r, max(1, seq - 2 * r):] = 0
    return m


def _text_feeds(vocab, with_mask=True):
    rng = np.random.default_rng(0)
    out = []
    for batch, seq in ((1, 5), (3, 11)):
        f = {"input_ids": _ids(rng, batch, seq, vocab)}
        if with_mask:
            f["attention_mask"] = _mask(batch, seq)
        out.append(f)
    return out


def _hf(name):
    """(module, input names, feed dicts) for a transformers model from a small config."""
    import transformers as T
    torch.manual_seed(0)
    if name == "bert":
        m = T.BertModel(T.BertConfig(vocab_size=120, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128))
        return m, ["input_ids", "attention_mask"], _text_feeds(120)
    if name == "minilm":
        from ember.models.minilm import model_dir
        from transformers.utils import logging as hf_logging
        hf_logging.set_verbosity_error()
        m = T.BertModel.from_pretrained(str(model_dir()), add_pooling_layer=False)
        return m, ["input_ids", "attention_mask"], _text_feeds(m.config.vocab_size)
    if name == "gpt2":
        m = T.GPT2Model(T.GPT2Config(vocab_size=120, n_embd=64, n_layer=2, n_head=4, n_positions=64, use_cache=False))
        feeds = _text_feeds(120)
        feeds[-1]["attention_mask"][-1, :3] = 0      # a left-padded row: its first queries see no key
        return m, ["input_ids", "attention_mask"], feeds
    if name == "vit":
        m = T.ViTModel(T.ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                   image_size=32, patch_size=8))
        rng = np.random.default_rng(0)
        return m, ["pixel_values"], [{"pixel_values": rng.standard_normal((b, 3, 32, 32), np.float32)} for b in (1, 3)]
    if name == "t5":
        m = T.T5Model(T.T5Config(vocab_size=120, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                                 use_cache=False))
        feeds = _text_feeds(120)
        rng = np.random.default_rng(1)
        for f, dec in zip(feeds, (3, 7)):
            f["decoder_input_ids"] = _ids(rng, f["input_ids"].shape[0], dec, 120)
        return m, ["input_ids", "attention_mask", "decoder_input_ids"], feeds
    if name == "whisper":
        m = T.WhisperModel(T.WhisperConfig(vocab_size=120, d_model=64, encoder_layers=2, decoder_layers=2,
                                           encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                                           decoder_ffn_dim=128, num_mel_bins=16, max_source_positions=20,
                                           max_target_positions=32, pad_token_id=1, bos_token_id=2, eos_token_id=3,
                                           decoder_start_token_id=2, use_cache=False))
        rng = np.random.default_rng(0)
        feeds = [{"input_features": rng.standard_normal((b, 16, 40), np.float32),
                  "decoder_input_ids": _ids(rng, b, t, 120)} for b, t in ((1, 4), (3, 9))]
        return m, ["input_features", "decoder_input_ids"], feeds
    raise KeyError(name)


def _cnn():
    torch.manual_seed(0)

    class Block(torch.nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv = torch.nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.bn = torch.nn.BatchNorm2d(c)
            self.dw = torch.nn.Conv2d(c, c, 3, padding=1, groups=c)

        def forward(self, x):
            return torch.relu(x + self.dw(torch.nn.functional.hardswish(self.bn(self.conv(x)))))

    class CNN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.block = Block(8)
            self.head = torch.nn.Linear(16, 10)

        def forward(self, x):
            x = torch.nn.functional.max_pool2d(self.block(torch.nn.functional.relu6(self.stem(x))), 2)
            up = torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")
            x = torch.cat([torch.nn.functional.adaptive_avg_pool2d(up, 1), x.amax((2, 3), keepdim=True)], 1)
            return torch.softmax(self.head(torch.flatten(x, 1)), -1)

    m = CNN().eval()
    with torch.no_grad():       # running statistics a trained model would have
        m.block.bn.running_mean.uniform_(-0.5, 0.5)
        m.block.bn.running_var.uniform_(0.5, 2.0)
    rng = np.random.default_rng(0)
    return m, ["x"], [{"x": rng.standard_normal((b, 3, 32, 32), np.float32)} for b in (1, 3)]


def _rnn():
    torch.manual_seed(0)

    class RNN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(6, 8, batch_first=True, bidirectional=True)
            self.gru = torch.nn.GRU(16, 5, batch_first=True)

        def forward(self, x):
            y, _ = self.lstm(x)
            z, h = self.gru(y)
            return z, h

    rng = np.random.default_rng(0)
    return RNN().eval(), ["x"], [{"x": rng.standard_normal((b, t, 6), np.float32)} for b, t in ((1, 5), (1, 9), (3, 9))]


def _dynamic(name, a):
    """The dims a user marks dynamic: batch, and the length of token ids and sequences."""
    return (0, 1) if a.dim() in (2, 3) and name != "input_features" else (0,)


def _export(module, names, example, exporter, opset=None):
    """The ONNX model `torch.onnx.export` writes for `module` (batch and lengths dynamic),
    with that exporter's defaults otherwise."""
    _quiet()
    args = tuple(torch.from_numpy(example[n]) for n in names)
    extra = {"opset_version": opset} if opset else {}
    f = io.BytesIO()
    if exporter == "dynamo":
        dims = tuple({i: torch.export.Dim.AUTO for i in _dynamic(n, a)} for n, a in zip(names, args))
        varargs = isinstance(module, Outputs)       # forward(*args): one entry holding them all
        prog = torch.onnx.export(module, args, dynamo=True, input_names=names,
                                 dynamic_shapes=(dims,) if varargs else dims, **extra)
        prog.save(f)
    else:
        axes = {n: {i: ("batch" if i == 0 else f"{n}_len") for i in _dynamic(n, a)} for n, a in zip(names, args)}
        torch.onnx.export(module, args, f, dynamo=False, input_names=names, dynamic_axes=axes, **extra)
    return onnx.load_from_string(f.getvalue())


EXPORTERS = ["dynamo", "torchscript"]
HF = ["bert", "minilm", "gpt2", "vit", "t5", "whisper"]


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", HF)
def test_transformers(name, exporter):
    pytest.importorskip("transformers")
    if exporter == "dynamo":
        pytest.importorskip("onnxscript")
    model, names, feeds = _hf(name)
    module = Outputs(model.eval(), names).eval()
    try:
        proto = _export(module, names, feeds[-1], exporter)
    except Exception as e:
        if (name, exporter) in EXPORTER_FAILS:
            pytest.skip(f"the {exporter} exporter fails on {name}: {EXPORTER_FAILS[name, exporter]} "
                        f"({type(e).__name__})")
        raise
    compare(proto, feeds, f"{name} ({exporter})")


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("build", [_cnn, _rnn], ids=["cnn", "rnn"])
def test_plain_torch(build, exporter):
    if exporter == "dynamo":
        pytest.importorskip("onnxscript")
    module, names, feeds = build()
    compare(_export(module, names, feeds[-1], exporter), feeds, f"{build.__name__} ({exporter})")


# ------------------------------------------------------------------------------ old opsets
@pytest.mark.parametrize("opset", range(7, 13))
@pytest.mark.parametrize("build", [_cnn, _rnn], ids=["cnn", "rnn"])
def test_old_opsets(build, opset):
    """TorchScript writes opsets 9 and up; onnx.version_converter takes them lower."""
    from onnx import version_converter
    module, names, feeds = build()
    proto = _export(module, names, feeds[-1], "torchscript", opset=max(opset, 9))
    if opset < 9:
        try:
            proto = version_converter.convert_version(proto, opset)
        except RuntimeError as e:       # no adapter for some op: nothing for Ember to load
            pytest.skip(f"onnx.version_converter cannot take {build.__name__} to opset {opset}: {str(e)[-80:]}")
    assert {o.domain: o.version for o in proto.opset_import}[""] == opset
    compare(proto, feeds, f"{build.__name__} at opset {opset}")


@pytest.mark.parametrize("attention", ["default", "eager"])
@pytest.mark.parametrize("opset", [10, 11, 12, 14])
def test_old_opset_transformer(opset, attention):
    """BERT through TorchScript at old opsets, with transformers' default attention (SDPA),
    as users export it; TorchScript writes SDPA from opset 14 only, and a lower one is skipped
    while that exporter refuses it. Eager attention is a named extra case that exports at
    10-12 too (below 10 TorchScript cannot write BERT's dynamic Slice)."""
    pytest.importorskip("transformers")
    import transformers as T
    torch.manual_seed(0)
    extra = {} if attention == "default" else {"attn_implementation": "eager"}
    m = T.BertModel(T.BertConfig(vocab_size=120, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=64, **extra)).eval()
    names, feeds = ["input_ids", "attention_mask"], _text_feeds(120)
    module = Outputs(m, names).eval()
    try:
        proto = _export(module, names, feeds[-1], "torchscript", opset=opset)
    except Exception as e:
        if attention == "default" and opset < 14:
            pytest.skip(f"TorchScript cannot write SDPA at opset {opset} ({type(e).__name__})")
        raise
    compare(proto, feeds, f"bert ({attention} attention) at opset {opset}")


# ---------------------------------------------------------------------------------- Keras 3
def _keras():
    if "keras" not in __import__("sys").modules:
        os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip(f"keras runs on its {keras.backend.backend()} backend here; this test exports through torch")
    return keras


@pytest.mark.parametrize("name", ["cnn", "rnn"])
def test_keras(name, tmp_path):
    keras = _keras()
    _quiet()
    keras.utils.set_random_seed(0)
    L = keras.layers
    rng = np.random.default_rng(0)
    if name == "cnn":
        model = keras.Sequential([keras.Input((24, 24, 3)), L.Conv2D(8, 3, padding="same", activation="relu"),
                                  L.BatchNormalization(), L.MaxPooling2D(), L.DepthwiseConv2D(3, padding="same"),
                                  L.Conv2D(16, 1, activation="swish"), L.GlobalAveragePooling2D(),
                                  L.Dense(10, activation="softmax")])
        xs = [rng.random((b, 24, 24, 3), np.float32) for b in (1, 3)]
    else:
        model = keras.Sequential([keras.Input((None, 6)), L.LSTM(8, return_sequences=True), L.GRU(5)])
        xs = [rng.random((b, 7, 6), np.float32) for b in (1, 3)]
    model.predict(xs[-1], verbose=0)
    path = tmp_path / f"keras-{name}.onnx"
    model.export(str(path), format="onnx", verbose=False)
    iname = onnx.load(str(path)).graph.input[0].name
    compare(str(path), [{iname: x} for x in xs], f"keras {name}")


# -------------------------------------------------------------------------------------- JAX
def _jax_cases():
    import jax.numpy as jnp
    from flax import nnx

    class CNN(nnx.Module):
        def __init__(self, rngs):
            self.c1 = nnx.Conv(3, 8, (3, 3), rngs=rngs)
            self.bn = nnx.BatchNorm(8, use_running_average=True, rngs=rngs)
            self.c2 = nnx.Conv(8, 16, (3, 3), strides=2, rngs=rngs)
            self.fc = nnx.Linear(16, 10, rngs=rngs)

        def __call__(self, x):
            x = nnx.avg_pool(nnx.relu(self.bn(self.c1(x))), window_shape=(2, 2), strides=(2, 2))
            return nnx.softmax(self.fc(nnx.gelu(self.c2(x)).mean(axis=(1, 2))))

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.l1, self.ln, self.l2 = nnx.Linear(20, 32, rngs=rngs), nnx.LayerNorm(32, rngs=rngs), \
                nnx.Linear(32, 5, rngs=rngs)

        def __call__(self, x):
            return self.l2(self.ln(nnx.gelu(self.l1(x))))

    class Attention(nnx.Module):
        def __init__(self, rngs):
            self.att = nnx.MultiHeadAttention(num_heads=2, in_features=16, qkv_features=16, decode=False, rngs=rngs)
            self.ln = nnx.LayerNorm(16, rngs=rngs)

        def __call__(self, x):
            return self.ln(x + self.att(x))

    def fn(x):
        return jnp.cumsum(jnp.tanh(x) * 2, axis=1) + jnp.max(x, axis=1, keepdims=True)

    rngs = nnx.Rngs(0)
    return {"cnn": (CNN(rngs), ("B", 16, 16, 3), [(1, 16, 16, 3), (3, 16, 16, 3)]),
            "mlp": (MLP(rngs), ("B", 20), [(1, 20), (4, 20)]),
            "attention": (Attention(rngs), ("B", "T", 16), [(1, 5, 16), (3, 9, 16)]),
            "function": (fn, ("B", "N"), [(1, 1), (3, 7)])}


@pytest.mark.parametrize("name", ["cnn", "mlp", "attention", "function"])
def test_jax(name):
    pytest.importorskip("jax")
    pytest.importorskip("flax")
    j2o = pytest.importorskip("jax2onnx")
    _quiet()
    fn, spec, shapes = _jax_cases()[name]
    proto = j2o.to_onnx(fn, [spec])
    iname = proto.graph.input[0].name
    rng = np.random.default_rng(0)
    compare(proto, [{iname: rng.standard_normal(s, np.float32)} for s in shapes], f"jax {name}")
