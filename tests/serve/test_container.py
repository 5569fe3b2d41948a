"""The Dockerfile: build the image, start a container on a model repository, and drive the server
inside it with the real clients (tritonclient http and grpc). Skips, saying why, where no
container engine or no base image is available.

The base image is a build argument: `EMBER_DOCKER_BASE`, else python:3.11-slim, else
ember-base:bookworm, whichever is present locally. On a machine with no image registry, build
one first, e.g. with debootstrap (behind a TLS-intercepting proxy, copy the host's CA bundle to
/tmp/rootfs/etc/ssl/certs/ca-certificates.crt before the import, so that pip in the build
trusts it):

    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \\
        bookworm /tmp/rootfs && tar -C /tmp/rootfs -c . | docker import - ember-base:bookworm"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

th = pytest.importorskip("tritonclient.http")
tg = pytest.importorskip("tritonclient.grpc")

import ember  # noqa: E402

from .util import mlp_model, save  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
_NO_NETWORK = ("Could not fetch URL", "Temporary failure in name resolution", "Network is unreachable",
               "CERTIFICATE_VERIFY_FAILED", "Failed to establish a new connection")
BASES = [b for b in (os.environ.get("EMBER_DOCKER_BASE"), "python:3.11-slim", "ember-base:bookworm") if b]


def _docker(*args, timeout=60, check=True):
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=check)


@pytest.fixture(scope="module")
def image():
    if shutil.which("docker") is None:
        pytest.skip("no container engine: the docker client is not installed")
    try:
        _docker("info")
    except (subprocess.SubprocessError, OSError):
        pytest.skip("no container engine: docker has no daemon (apt-get install docker.io, then start dockerd)")
    base = next((b for b in BASES if _docker("image", "inspect", b, check=False).returncode == 0), None)
    if base is None:
        pytest.skip(f"none of the base images {BASES} is available locally, and there is no registry to pull "
                    f"from: build one (see this file's docstring)")
    tag = f"ember-serve-test:{uuid.uuid4().hex[:8]}"
    built = _docker("build", "--network", "host", "--build-arg", f"BASE_IMAGE={base}", "-t", tag, str(ROOT),
                    timeout=1800, check=False)
    if built.returncode != 0:
        log = built.stdout + built.stderr
        if any(w in log for w in _NO_NETWORK):     # the package index is out of reach, not a Dockerfile bug
            pytest.skip(f"the image build cannot reach the package index: {log[-400:]}")
        pytest.fail(f"docker build failed:\n{log[-3000:]}")
    yield tag
    _docker("image", "rm", "-f", tag, check=False)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_container_serves_the_repository_with_both_clients(image, tmp_path):
    (tmp_path / "mlp" / "1").mkdir(parents=True)
    model = save(mlp_model(seed=9), tmp_path / "mlp" / "1" / "model.onnx")
    http_port, grpc_port = _free_port(), _free_port()
    name = f"ember-serve-{uuid.uuid4().hex[:8]}"
    _docker("run", "-d", "--name", name, "-p", f"127.0.0.1:{http_port}:8000", "-p", f"127.0.0.1:{grpc_port}:8001",
            "-v", f"{tmp_path}:/models:ro", image)
    try:
        http = th.InferenceServerClient(f"127.0.0.1:{http_port}")
        deadline = time.monotonic() + 300
        while True:
            try:
                if http.is_server_ready():
                    break
            except Exception:  # noqa: BLE001 - not up yet
                pass
            state = _docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip()
            assert state == "true" and time.monotonic() < deadline, _docker("logs", name, check=False).stderr[-3000:]
            time.sleep(1)
        x = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
        want = ember.InferenceSession(str(model)).run(None, {"x": x})[0]
        i = th.InferInput("x", [3, 5], "FP32")
        i.set_data_from_numpy(x)
        np.testing.assert_array_equal(http.infer("mlp", [i]).as_numpy("z"), want)
        g = tg.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        gi = tg.InferInput("x", [3, 5], "FP32")
        gi.set_data_from_numpy(x)
        np.testing.assert_array_equal(g.infer("mlp", [gi]).as_numpy("z"), want)
        for _ in range(60):          # the image's HEALTHCHECK agrees
            if _docker("inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip() == "healthy":
                break
            time.sleep(2)
        else:
            pytest.fail("the container's healthcheck never reported healthy")
        _docker("stop", "-t", "30", name, timeout=60)          # SIGTERM: a graceful stop
        assert _docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "0"
    finally:
        _docker("rm", "-f", name, check=False)
