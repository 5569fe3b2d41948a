"""A schemathesis run against the server's own OpenAPI document, over real HTTP: no generated
request, valid or not, may get a 5xx or crash the server."""
from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from ember.serve.repository import ModelConfig, ModelSource, ServedModel  # noqa: E402

from .util import mlp_model, running, save, typed_model  # noqa: E402


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    models = [ServedModel(ModelSource("mlp", "1", save(mlp_model(), d / "mlp.onnx"), ModelConfig())),
              ServedModel(ModelSource("typed", "1", save(typed_model(), d / "typed.onnx"), ModelConfig()))]
    with running(models) as srv:
        yield schemathesis.openapi.from_url(f"http://127.0.0.1:{srv.http_port}/openapi.json")


def _operations(schema):
    for result in schema.get_all_operations():
        yield result.ok()


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_generated_request_gets_a_5xx(api_schema, mode):
    # schemathesis' pytest plugin does not run under this pytest, so its strategies are driven here
    from hypothesis import given
    from schemathesis import GenerationMode
    ops = list(_operations(api_schema))
    assert len(ops) >= 12
    tried = 0
    for op in ops:
        @given(op.as_strategy(generation_mode=GenerationMode(mode)))
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case):
            case.call_and_validate(checks=[not_a_server_error])
        try:
            run()
            tried += 1
        except Unsatisfiable:          # a route without parameters or body has no invalid form
            assert mode == "negative"
    assert tried >= 3      # negative: at least both infer routes and the embeddings route
