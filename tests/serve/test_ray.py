"""Scale-out on Ray: two Ray Serve replicas behind one endpoint (a local Ray head on loopback)
serve the same results as the in-process session, and Ray Data batch inference through
`EmberPredictor` equals it too."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("fastapi")
ray = pytest.importorskip("ray")
pytest.importorskip("ray.serve")
httpx = pytest.importorskip("httpx")
th = pytest.importorskip("tritonclient.http")
tg = pytest.importorskip("tritonclient.grpc")

import ember  # noqa: E402
from ember.serve.repository import ModelConfig, ModelSource  # noqa: E402

from .util import mlp_model, save  # noqa: E402


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import socket
    ray.init(num_cpus=2, include_dashboard=False, address="local", _node_ip_address="127.0.0.1",
             log_to_driver=False)
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    path = save(mlp_model(seed=4), tmp_path_factory.mktemp("ray") / "mlp.onnx")
    try:
        yield path, ports
    finally:
        from ray import serve
        serve.shutdown()
        ray.shutdown()


def test_two_replicas_serve_the_sessions_results(cluster):
    from ember.serve.ray import deploy
    path, (port, grpc_port) = cluster
    deploy([ModelSource("mlp", "1", path, ModelConfig())], replicas=2, port=port, grpc_port=grpc_port)
    sess = ember.InferenceSession(str(path))
    c = th.InferenceServerClient(f"127.0.0.1:{port}")
    g = tg.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    replicas = set()
    rng = np.random.default_rng(0)
    for k in range(24):
        x = rng.standard_normal((1 + k % 4, 5)).astype(np.float32)
        i = th.InferInput("x", list(x.shape), "FP32")
        i.set_data_from_numpy(x)
        want = sess.run(None, {"x": x})[0]
        np.testing.assert_array_equal(c.infer("mlp", [i]).as_numpy("z"), want)
        gi = tg.InferInput("x", list(x.shape), "FP32")
        gi.set_data_from_numpy(x)
        np.testing.assert_array_equal(g.infer("mlp", [gi]).as_numpy("z"), want)
        r = httpx.post(f"http://127.0.0.1:{port}/v2/models/mlp/infer",
                       json={"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                         "data": x.ravel().tolist()}]})
        assert r.status_code == 200
        replicas.add(r.headers["x-ember-replica"])
    assert len(replicas) == 2
    bad = httpx.post(f"http://127.0.0.1:{port}/v2/models/mlp/infer", content=b"{nope")
    assert bad.status_code == 400 and "JSON" in bad.json()["error"]
    # gRPC through Ray's proxy: metadata, and a client's mistake is INVALID_ARGUMENT / NOT_FOUND
    assert g.is_server_live() and g.is_model_ready("mlp") and not g.is_model_ready("nope")
    assert [t.name for t in g.get_model_metadata("mlp").inputs] == ["x"]
    wrong = tg.InferInput("x", [2, 3], "FP32")
    wrong.set_data_from_numpy(np.ones((2, 3), np.float32))
    with pytest.raises(tg.InferenceServerException) as e:
        g.infer("mlp", [wrong])
    assert "INVALID_ARGUMENT" in str(e.value.status()) and "shape" in e.value.message()
    with pytest.raises(tg.InferenceServerException) as e:
        g.infer("nope", [gi])
    assert "NOT_FOUND" in str(e.value.status()) and "unknown model" in e.value.message()


def test_replica_rpc_refuses_bytes_that_are_not_the_request_message(cluster):
    # what Ray's gRPC proxy hands a replica is the raw request: garbage is INVALID_ARGUMENT
    import asyncio

    import grpc

    from ember.serve.ray import EmberReplica

    class Context:                                   # the part of RayServegRPCContext used
        code = details = None

        def invocation_metadata(self):
            return []

        def set_code(self, code):
            self.code = code

        def set_details(self, details):
            self.details = details

    path, _ = cluster
    replica = EmberReplica([ModelSource("mlp", "1", path, ModelConfig())])
    ctx = Context()
    out = asyncio.run(replica.ModelInfer(b"\xff\xff\xff", grpc_context=ctx))
    assert ctx.code == grpc.StatusCode.INVALID_ARGUMENT and "ModelInferRequest" in ctx.details
    assert out.SerializeToString() == b""


def test_ray_data_batch_inference(cluster):
    import ray.data
    from ember.serve.ray import EmberPredictor
    path, _ = cluster
    x = np.random.default_rng(1).standard_normal((37, 5)).astype(np.float32)
    ds = ray.data.from_numpy(x).rename_columns({"data": "x"})
    out = ds.map_batches(EmberPredictor, fn_constructor_kwargs={"model": str(path)}, batch_size=8,
                         compute=ray.data.ActorPoolStrategy(size=1)).take_all()
    got = np.stack([row["z"] for row in out])
    want = ember.InferenceSession(str(path)).run(None, {"x": x})[0]
    order = lambda a: a[np.lexsort(a.T)]          # noqa: E731 - Ray Data need not keep row order
    np.testing.assert_array_equal(order(got), order(want))
