"""Model repositories (Triton's layout, config.json or config.pbtxt, version policies) and the
`ember serve` command: progress while compiling, and a graceful stop on SIGTERM that finishes
the requests in flight."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from ember.serve.repository import RepositoryError, load_models, model_sources, scan_repository  # noqa: E402

from .util import mlp_model, running, save  # noqa: E402


def _repo(tmp_path, versions=(1, 3), config=None, pbtxt=None):
    for v in versions:
        (tmp_path / "mlp" / str(v)).mkdir(parents=True)
        save(mlp_model(seed=v), tmp_path / "mlp" / str(v) / "model.onnx")
    if config is not None:
        (tmp_path / "mlp" / "config.json").write_text(json.dumps(config))
    if pbtxt is not None:
        (tmp_path / "mlp" / "config.pbtxt").write_text(pbtxt)
    return tmp_path


def test_latest_version_by_default_and_all_on_request(tmp_path):
    assert [(s.name, s.version) for s in scan_repository(_repo(tmp_path))] == [("mlp", "3")]
    (tmp_path / "mlp" / "config.json").write_text(json.dumps({"versions": "all", "max_batch_size": 4}))
    srcs = scan_repository(tmp_path)
    assert [s.version for s in srcs] == ["1", "3"] and srcs[0].config.max_batch_size == 4
    models = load_models(srcs)
    x = np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32)
    with running(models) as srv:
        base = f"http://127.0.0.1:{srv.http_port}/v2/models/mlp"
        body = {"inputs": [{"name": "x", "shape": [2, 5], "datatype": "FP32", "data": x.ravel().tolist()}]}
        for v, m in zip(("1", "3"), models):
            r = httpx.post(f"{base}/versions/{v}/infer", json=body).json()
            assert r["model_version"] == v
            np.testing.assert_array_equal(np.array(r["outputs"][0]["data"], np.float32).reshape(2, 3),
                                          m.session.run(None, {"x": x})[0])
        assert httpx.post(f"{base}/infer", json=body).json()["model_version"] == "3"


def test_triton_pbtxt_settings_are_read(tmp_path):
    pb = 'name: "mlp"\nmax_batch_size: 8\ndynamic_batching { max_queue_delay_microseconds: 500 }\n' \
         'instance_group [ { count: 2 kind: KIND_CPU } ]\n'
    (src,) = scan_repository(_repo(tmp_path, versions=(1,), pbtxt=pb))
    assert (src.config.max_batch_size, src.config.max_queue_delay_ms, src.config.instances) == (8, 0.5, 2)


@pytest.mark.parametrize("config, words", [({"max_batchsize": 3}, "unknown config key"),
                                           ({"instances": 0}, "instances"),
                                           ({"pad": {"x": "zero"}}, "pad"),
                                           ({"versions": [1, 2]}, "not present")])
def test_bad_configs_name_the_file_and_key(tmp_path, config, words):
    with pytest.raises(RepositoryError, match=words):
        scan_repository(_repo(tmp_path, versions=(1,), config=config))


def test_bad_layouts(tmp_path):
    with pytest.raises(RepositoryError, match="no models"):
        scan_repository(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RepositoryError, match="1/model.onnx"):
        scan_repository(tmp_path)
    with pytest.raises(RepositoryError, match="does not exist"):
        model_sources([str(tmp_path / "missing.onnx")])


def _slow_model(path):
    """Six 1024x1024 matmuls: tens of milliseconds for 256 rows, so that requests queue."""
    from onnx import TensorProto as TP, helper, numpy_helper
    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for k in range(6):
        inits.append(numpy_helper.from_array((rng.standard_normal((1024, 1024)) / 32).astype(np.float32), f"W{k}"))
        nodes.append(helper.make_node("MatMul", [prev, f"W{k}"], [f"h{k}"]))
        prev = f"h{k}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    g = helper.make_graph(nodes, "slow", [helper.make_tensor_value_info("x", TP.FLOAT, ["batch", 1024])],
                          [helper.make_tensor_value_info("y", TP.FLOAT, ["batch", 1024])], inits)
    save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    (path.parent / "config.json").write_text(json.dumps({"max_batch_size": 0, "threads": 1}))
    return path


def test_ember_serve_stops_gracefully_on_sigterm(tmp_path):
    model = _slow_model(tmp_path / "slow.onnx")
    proc = subprocess.Popen([sys.executable, "-m", "ember.cli.main", "serve", str(model), "--port", "0",
                             "--grpc-port", "0"], stderr=subprocess.PIPE, text=True)
    try:
        seen = ""
        while "HTTP on" not in seen:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "ember serve exited before serving"
            seen += line
        assert "compiling slow (version 1) ... " in seen
        url = re.search(r"http://[\d.]+:\d+", seen).group(0)
        for _ in range(300):
            try:
                if httpx.get(f"{url}/v2/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        x = np.random.default_rng(1).standard_normal((256, 1024)).astype(np.float32)
        body = {"inputs": [{"name": "x", "shape": [256, 1024], "datatype": "FP32",
                            "parameters": {"binary_data_size": x.nbytes}}]}
        head = json.dumps(body).encode()

        def post(_):
            return httpx.post(f"{url}/v2/models/slow/infer", content=head + x.tobytes(), timeout=60,
                              headers={"Inference-Header-Content-Length": str(len(head))})

        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(post, k) for k in range(6)]
            for _ in range(400):       # wait until the server holds all six, then ask it to stop
                text = httpx.get(f"{url}/metrics").text
                m = re.search(r'ember_inflight_requests\{model="slow"\} (\S+)', text)
                if m and float(m.group(1)) >= 6:
                    break
                time.sleep(0.01)
            proc.send_signal(signal.SIGTERM)
            statuses = [f.result().status_code for f in futures]
        assert statuses == [200] * 6
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_serve_needs_models():
    r = subprocess.run([sys.executable, "-m", "ember.cli.main", "serve"], capture_output=True, text=True)
    assert r.returncode == 2 and "--model-repository" in r.stderr
