"""Fuzzing from the server's own OpenAPI spec: no request gives a 5xx.

Schemathesis generates requests for every operation in `/openapi.json`
(bodies, path and query parameters, valid and invalid); half of the model
names are swapped for served models so the bodies reach the decoders.
"""

import itertools

import hypothesis
import pytest
import schemathesis
from schemathesis import GenerationMode
from serving_helpers import Server

from aiservice_kit.serving import KeyStore

EXAMPLES = 16  # per operation and mode: ~30 operations since V2
MIN_REQUESTS = 400
MODELS = ("mnist", "half_plus_three", "multi", "echo", "text", "recommender")


@pytest.fixture(scope="module")
def fuzz_server(model_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    store = KeyStore(tmp / "db.sqlite")
    key = store.create("fuzzer", "pro", scopes=["admin"])[0]
    store.close()
    args = ["--db", str(tmp / "db.sqlite"), "--auth", "on"]
    args += ["--config", str(model_root / "config.json")]
    args += ["--access-log", "off"]
    for name in MODELS:
        args += ["--model", f"{name}={model_root / name}"]
    running = Server(args, tmp / "server.log").start()
    running.key = key
    yield running
    running.stop()


def _fuzz(operation, mode, server, sent, examples, path_parameters=None):
    strategy = operation.as_strategy(
        generation_mode=mode, path_parameters=path_parameters
    )

    @hypothesis.given(case=strategy)
    @hypothesis.settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.generate],
    )
    def run(case):
        response = case.call(
            base_url=server.url, headers={"X-API-Key": server.key}, timeout=30
        )
        sent.append(response.status_code)
        assert response.status_code < 500, (
            case.as_curl_command(),
            response.text,
        )

    try:
        run()
    except hypothesis.errors.Unsatisfiable:
        # Nothing to break in an operation without parameters or body.
        assert mode == GenerationMode.NEGATIVE


def test_generated_requests_from_the_openapi_spec_get_no_5xx(
    fuzz_server,
):
    schema = schemathesis.openapi.from_url(  # auth on: the spec needs a key
        fuzz_server.url + "/openapi.json",
        headers={"X-API-Key": fuzz_server.key},
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    sent: list[int] = []
    modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    names = itertools.cycle(MODELS)

    for operation in operations:
        for mode in modes:
            _fuzz(operation, mode, fuzz_server, sent, EXAMPLES)
            if "{model_name}" in operation.path:
                fixed = {"model_name": next(names)}
                _fuzz(operation, mode, fuzz_server, sent, EXAMPLES, fixed)

    assert len(operations) >= 10
    assert len(sent) >= MIN_REQUESTS
    assert all(code < 500 for code in sent)
    assert {200, 400, 404} <= set(sent)
