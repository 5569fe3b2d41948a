"""`ember serve` over KServe v2, driven by the real clients (tritonclient http and grpc), raw HTTP
for malformed requests, and prometheus_client's parser for /metrics. Results must equal the
in-process session's exactly."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
th = pytest.importorskip("tritonclient.http")
tg = pytest.importorskip("tritonclient.grpc")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from ember.serve.repository import ModelConfig, ModelSource, ServedModel  # noqa: E402

from .util import mlp_model, ragged_model, running, save, typed_model  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return {
        "mlp": ServedModel(ModelSource("mlp", "1", save(mlp_model(), d / "mlp.onnx"),
                                       ModelConfig(max_batch_size=16, max_queue_delay_ms=30))),
        "ragged": ServedModel(ModelSource("ragged", "1", save(ragged_model(), d / "ragged.onnx"),
                                          ModelConfig(max_queue_delay_ms=30, pad={"x": 0}))),
        "typed": ServedModel(ModelSource("typed", "1", save(typed_model(), d / "typed.onnx"), ModelConfig())),
    }


@pytest.fixture(scope="module")
def server(models):
    with running(list(models.values())) as srv:
        yield srv


@pytest.fixture
def http(server):
    return th.InferenceServerClient(f"127.0.0.1:{server.http_port}")


@pytest.fixture
def grpc(server):
    return tg.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")


def _url(server, path):
    return f"http://127.0.0.1:{server.http_port}{path}"


def _ref(models, name, feeds):
    s = models[name].session
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, feeds)))


def test_health_and_metadata(http, grpc):
    assert http.is_server_live() and http.is_server_ready() and http.is_model_ready("mlp")
    assert grpc.is_server_live() and grpc.is_server_ready() and grpc.is_model_ready("typed")
    assert not http.is_model_ready("nope") and not grpc.is_model_ready("nope")
    md = http.get_model_metadata("mlp")
    assert md["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 5]}]
    assert md["outputs"] == [{"name": "z", "datatype": "FP32", "shape": [-1, 3]}]
    gmd = grpc.get_model_metadata("typed", as_json=True)
    assert [(t["name"], t["datatype"], t["shape"]) for t in gmd["inputs"]] == [("a", "INT64", ["2", "-1"]),
                                                                               ("m", "BOOL", ["-1"])]
    assert http.get_server_metadata()["name"] == "ember"
    assert "binary_tensor_data" in grpc.get_server_metadata(as_json=True)["extensions"]


@pytest.mark.parametrize("rows", [0, 1, 3, 8, 16])
def test_http_json_and_binary_and_grpc_equal_the_session(http, grpc, models, rows):
    rng = np.random.default_rng(rows)
    x = rng.standard_normal((rows, 5)).astype(np.float32)
    want = _ref(models, "mlp", {"x": x})["z"]
    for binary in (False, True):
        i = th.InferInput("x", list(x.shape), "FP32")
        i.set_data_from_numpy(x, binary_data=binary)
        r = http.infer("mlp", [i], outputs=[th.InferRequestedOutput("z", binary_data=binary)])
        np.testing.assert_array_equal(r.as_numpy("z"), want)
    i = tg.InferInput("x", list(x.shape), "FP32")
    i.set_data_from_numpy(x)
    np.testing.assert_array_equal(grpc.infer("mlp", [i]).as_numpy("z"), want)


def test_integer_and_bool_tensors(http, grpc, models):
    rng = np.random.default_rng(7)
    for n in (1, 6):
        a = rng.integers(-2**40, 2**40, size=(2, n)).astype(np.int64)
        m = rng.random(n) < 0.5
        want = _ref(models, "typed", {"a": a, "m": m})
        ins = [th.InferInput("a", [2, n], "INT64"), th.InferInput("m", [n], "BOOL")]
        ins[0].set_data_from_numpy(a, binary_data=False)
        ins[1].set_data_from_numpy(m, binary_data=True)
        r = http.infer("typed", ins)
        np.testing.assert_array_equal(r.as_numpy("w"), want["w"])
        assert r.as_numpy("total") == want["total"]
        gins = [tg.InferInput("a", [2, n], "INT64"), tg.InferInput("m", [n], "BOOL")]
        gins[0].set_data_from_numpy(a)
        gins[1].set_data_from_numpy(m)
        g = grpc.infer("typed", gins, outputs=[tg.InferRequestedOutput("total")])
        assert g.as_numpy("w") is None and g.as_numpy("total") == want["total"]


def test_concurrent_requests_are_batched_and_split_back(server, models):
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((int(rng.integers(1, 4)), 5)).astype(np.float32) for _ in range(24)]

    def one(x):
        c = th.InferenceServerClient(f"127.0.0.1:{server.http_port}")
        i = th.InferInput("x", list(x.shape), "FP32")
        i.set_data_from_numpy(x)
        return c.infer("mlp", [i]).as_numpy("z")

    before = _metric(server, "ember_batch_size", "mlp")
    with ThreadPoolExecutor(12) as pool:
        got = list(pool.map(one, xs))
    for x, g in zip(xs, got):
        np.testing.assert_array_equal(g, _ref(models, "mlp", {"x": x})["z"])
    after = _metric(server, "ember_batch_size", "mlp")
    runs, rows = after["count"] - before["count"], after["sum"] - before["sum"]
    assert rows == sum(len(x) for x in xs)
    assert runs < len(xs), "no two requests shared a batch"


def test_ragged_requests_are_padded_and_cropped(server, models):
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((1, int(n))).astype(np.float32) for n in rng.integers(1, 40, size=16)]

    def one(x):
        c = th.InferenceServerClient(f"127.0.0.1:{server.http_port}")
        i = th.InferInput("x", list(x.shape), "FP32")
        i.set_data_from_numpy(x)
        r = c.infer("ragged", [i])
        return r.as_numpy("y"), r.as_numpy("s")

    before = _metric(server, "ember_batch_size", "ragged")
    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(one, xs))
    for x, (y, s) in zip(xs, got):
        want = _ref(models, "ragged", {"x": x})
        np.testing.assert_array_equal(y, want["y"])
        np.testing.assert_allclose(s, want["s"], rtol=1e-6)   # a longer padded row sums in another order
    assert _metric(server, "ember_batch_size", "ragged")["count"] - before["count"] < len(xs)


# --- malformed requests: always a 4xx with a JSON message that names the problem ----------------
def _infer_body(name="x", shape=(1, 5), datatype="FP32", data=None):
    data = [0.5] * int(np.prod(shape)) if data is None else data
    return {"inputs": [{"name": name, "shape": list(shape), "datatype": datatype, "data": data}]}


MALFORMED = [
    ("not json", b"{nope", {}, 400, "not valid JSON"),
    ("not an object", b"[1, 2]", {}, 400, "JSON object"),
    ("no inputs", b"{}", {}, 400, "'inputs'"),
    ("unknown input", _infer_body(name="y"), {}, 400, "'y'"),
    ("wrong datatype", _infer_body(datatype="FP64"), {}, 400, "FP32"),
    ("bad datatype", _infer_body(datatype="FLOAT"), {}, 400, "FLOAT"),
    ("wrong shape", _infer_body(shape=(1, 4)), {}, 400, "[-1, 5]"),
    ("count mismatch", _infer_body(data=[1.0, 2.0]), {}, 400, "2 elements"),
    ("negative dim", _infer_body(shape=(-1, 5), data=[]), {}, 400, "shape"),
    ("string data", _infer_body(data=["a"] * 5), {}, 400, "'a'"),
    ("int for float ok but bool no", _infer_body(data=[True] * 5), {}, 400, "True"),
    ("unknown output", {**_infer_body(), "outputs": [{"name": "q"}]}, {}, 400, "'q'"),
    ("more rows than max_batch_size", _infer_body(shape=(17, 5)), {}, 400, "max_batch_size = 16"),
    ("binary size too big", {"inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP32",
                                         "parameters": {"binary_data_size": 20}}]}, {"binary": b"\0" * 8}, 400,
     "binary section"),
    ("binary header past body", _infer_body(), {"header": "999999"}, 400, "Inference-Header-Content-Length"),
    ("id not a string", {**_infer_body(), "id": 5}, {}, 400, "'id'"),
    ("dims whose product wraps int64", _infer_body(shape=(2**62, 4), data=[]), {}, 400, "needs"),
    ("ragged nesting", _infer_body(data=[[1.0, 2.0], [3.0, 4.0, 5.0]]), {}, 400, "nests"),
    ("nesting unlike the shape", _infer_body(shape=(5, 1), data=[[1.0, 2.0, 3.0, 4.0, 5.0]]), {}, 400, "nests"),
    ("huge binary shape", {"inputs": [{"name": "x", "shape": [2**62, 4], "datatype": "FP32",
                                       "parameters": {"binary_data_size": 0}}]}, {"binary": b""}, 400, "needs"),
]


@pytest.mark.parametrize("case", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_requests_get_a_4xx_that_names_the_problem(server, case):
    _, body, extra, status, words = case
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {}
    if "binary" in extra:
        headers["Inference-Header-Content-Length"] = str(len(raw))
        raw += extra["binary"]
    if "header" in extra:
        headers["Inference-Header-Content-Length"] = extra["header"]
    r = httpx.post(_url(server, "/v2/models/mlp/infer"), content=raw, headers=headers)
    assert r.status_code == status, r.text
    assert words in r.json()["error"], r.json()


def test_unknown_models_routes_and_methods(server):
    r = httpx.post(_url(server, "/v2/models/nope/infer"), json=_infer_body())
    assert r.status_code == 404 and "nope" in r.json()["error"] and "mlp" in r.json()["error"]
    assert httpx.get(_url(server, "/v2/models/mlp/versions/7")).status_code == 404
    assert httpx.get(_url(server, "/v2/nothing/here")).json()["error"].startswith("no route")
    assert httpx.get(_url(server, "/v2/models/mlp/infer")).status_code == 405
    with pytest.raises(Exception, match="unknown model"):
        tg.InferenceServerClient(f"127.0.0.1:{server.grpc_port}").get_model_metadata("nope")


def test_grpc_malformed_requests_are_invalid_argument(grpc):
    i = tg.InferInput("x", [2, 5], "FP32")
    i.set_data_from_numpy(np.ones((2, 5), np.float64).astype(np.float32))
    i._input.shape[:] = [3, 5]           # shape that disagrees with the raw bytes
    with pytest.raises(Exception, match="raw bytes"):
        grpc.infer("mlp", [i])
    j = tg.InferInput("x", [2, 5], "FP64")
    j.set_data_from_numpy(np.ones((2, 5)))
    with pytest.raises(Exception, match="FP32"):
        grpc.infer("mlp", [j])


def test_body_limit_and_compressed_bodies(models):
    with running([models["mlp"]], max_body_bytes=4096) as srv:
        big = _infer_body(shape=(400, 5))
        r = httpx.post(_url(srv, "/v2/models/mlp/infer"), json=big)
        assert r.status_code == 413 and "limit" in r.json()["error"]
        c = th.InferenceServerClient(f"127.0.0.1:{srv.http_port}")
        x = np.random.default_rng(3).standard_normal((2, 5)).astype(np.float32)
        i = th.InferInput("x", [2, 5], "FP32")
        i.set_data_from_numpy(x)
        for algo in ("gzip", "deflate"):
            r = c.infer("mlp", [i], request_compression_algorithm=algo)
            np.testing.assert_array_equal(r.as_numpy("z"), _ref(models, "mlp", {"x": x})["z"])


def test_bearer_token(models):
    with running([models["mlp"]], auth_token="s3cret") as srv:
        assert httpx.get(_url(srv, "/v2/health/ready")).status_code == 200
        r = httpx.get(_url(srv, "/v2/models/mlp"))
        assert r.status_code == 401 and "Bearer" in r.json()["error"]
        assert httpx.get(_url(srv, "/v2/models/mlp"), headers={"Authorization": "Bearer s3cret"}).status_code == 200
        g = tg.InferenceServerClient(f"127.0.0.1:{srv.grpc_port}")
        assert g.is_server_live()
        with pytest.raises(Exception, match="Bearer"):
            g.get_model_metadata("mlp")
        assert g.get_model_metadata("mlp", headers={"authorization": "Bearer s3cret"}).name == "mlp"


def _metric(server, family, model):
    text = httpx.get(_url(server, "/metrics")).text
    out = {"count": 0.0, "sum": 0.0}
    for fam in text_string_to_metric_families(text):
        if fam.name == family:
            for s in fam.samples:
                if s.labels.get("model") == model and s.name.endswith(("_count", "_sum")):
                    out[s.name.rsplit("_", 1)[1]] += s.value
    return out


def test_metrics_parse_with_prometheus_client(server, http):
    x = np.ones((2, 5), np.float32)
    i = th.InferInput("x", [2, 5], "FP32")
    i.set_data_from_numpy(x)
    http.infer("mlp", [i])
    httpx.post(_url(server, "/v2/models/mlp/infer"), json=_infer_body(datatype="FP64"))
    fams = {f.name: f for f in text_string_to_metric_families(httpx.get(_url(server, "/metrics")).text)}
    for name in ("ember_requests", "ember_request_latency_seconds", "ember_queue_time_seconds", "ember_batch_size",
                 "ember_inflight_requests", "ember_model_compile_seconds", "ember_batch_run_seconds"):
        assert name in fams, name
    by_status = {(s.labels["model"], s.labels["status"]): s.value for s in fams["ember_requests"].samples
                 if s.name == "ember_requests_total"}
    assert by_status[("mlp", "200")] >= 1 and by_status[("mlp", "400")] >= 1
    compile_s = [s.value for s in fams["ember_model_compile_seconds"].samples if s.labels["model"] == "mlp"]
    assert compile_s and compile_s[0] > 0


def test_timeout_is_a_504_not_a_hang(models):
    with running([models["mlp"]], request_timeout_s=1e-9) as srv:
        r = httpx.post(_url(srv, "/v2/models/mlp/infer"), json=_infer_body())
        assert r.status_code == 504 and "did not finish" in r.json()["error"]


def test_openapi_document_lists_the_routes(server):
    doc = httpx.get(_url(server, "/openapi.json")).json()
    for path in ("/v2/health/live", "/v2/models/{name}/infer", "/v1/embeddings", "/v1/models", "/metrics"):
        assert path in doc["paths"], path
    assert "InferRequest" in doc["components"]["schemas"]


def test_loadtest_reports_and_refuses_other_hosts(server):
    import asyncio

    from ember.serve.loadtest import LoadTestError, check_loopback, run_load
    res = asyncio.run(run_load(f"http://127.0.0.1:{server.http_port}", model="mlp", requests=60, seconds=20,
                               concurrency=4)).summary()
    assert (res["ok"], res["errors"]) == (60, 0) and res["p50_ms"] <= res["p99_ms"]
    res = asyncio.run(run_load(f"http://127.0.0.1:{server.http_port}", model="mlp", requests=20, seconds=20,
                               concurrency=4, rate=200.0)).summary()
    assert res["ok"] == 20
    for url in ("http://8.8.8.8:80", "ftp://127.0.0.1", "http://10.0.0.1:8000"):
        with pytest.raises(LoadTestError):
            check_loopback(url)
