"""The metered predict pipeline called directly, without HTTP."""

import asyncio
import json

import pytest
from serving_helpers import export_half_plus_three

from aiservice_kit.serving import KeyStore
from aiservice_kit.serving import ModelConfig
from aiservice_kit.serving import Plan
from aiservice_kit.serving import PriceList
from aiservice_kit.serving import SQLiteMeter
from aiservice_kit.serving._errors import ServingError
from aiservice_kit.serving._predict import predict
from aiservice_kit.serving._servable import load_version
from aiservice_kit.serving._service import Metrics
from aiservice_kit.serving._service import Service
from aiservice_kit.serving.auth import Authenticator
from aiservice_kit.serving.metering import GroupCommitter
from aiservice_kit.serving.ratelimit import RateLimiter
from aiservice_kit.serving.registry import ModelSpec
from aiservice_kit.serving.registry import Registry


@pytest.fixture
def service(tmp_path):
    export_half_plus_three(tmp_path / "hp3")
    db = tmp_path / "service.db"
    store = KeyStore(db)
    meter = SQLiteMeter(db)
    metrics = Metrics()
    registry = Registry(
        {"hp3": ModelConfig(tmp_path / "hp3")},
        load_version,
        60,
        on_batch=metrics.batch,  # as create_app wires it
    )
    registry.start()
    committer = GroupCommitter(meter)
    plans = {
        "tiny": Plan("tiny", monthly_instances=3),
        "paced": Plan(
            "paced", requests_per_second=0.001, burst=2, monthly_instances=100
        ),
    }
    yield Service(
        registry=registry,
        auth=Authenticator(store, required=True),
        limiter=RateLimiter(plans, meter),
        meter=meter,
        committer=committer,
        prices=PriceList(),
        metrics=metrics,
    )
    committer.close()
    registry.stop()
    meter.close()
    store.close()


def test_predict_runs_meters_and_answers_without_http(service):
    _, key = service.auth.store.create("acme", "tiny")
    body = json.dumps({"instances": [1.0, 2.0]}).encode()

    reply = asyncio.run(predict(service, key, ModelSpec("hp3"), body))
    (record,) = service.meter.records(key.id)

    assert reply.status == 200
    assert json.loads(reply.content) == {"predictions": [3.5, 4.0]}
    assert reply.headers["X-Model-Version"] == "123"
    assert reply.headers["X-Request-ID"] == record.request_id
    assert (record.status, record.instances, record.version) == (200, 2, 123)
    assert record.request_bytes == len(body)
    assert record.response_bytes == len(reply.content)
    assert service.limiter.used_this_month(key) == 2


def test_errors_after_acceptance_are_metered_replies(service):
    _, key = service.auth.store.create("acme", "tiny")

    async def read_body() -> bytes:
        raise AssertionError("an unknown version must not read the body")

    missing = asyncio.run(
        predict(service, key, ModelSpec("hp3", version="7"), read_body)
    )
    bad = asyncio.run(predict(service, key, ModelSpec("hp3"), b"{"))
    statuses = [record.status for record in service.meter.records(key.id)]

    assert (missing.status, bad.status) == (404, 400)
    assert json.loads(missing.content) == {
        "error": "Servable not found for request: Specific(hp3, 7)"
    }
    assert "X-Model-Version" not in missing.headers
    assert statuses == [404, 400]


def test_the_quota_refuses_before_acceptance_and_is_not_metered(service):
    _, key = service.auth.store.create("acme", "tiny")
    body = json.dumps({"instances": [1.0, 2.0, 3.0, 4.0]}).encode()

    with pytest.raises(ServingError) as refused:
        asyncio.run(predict(service, key, ModelSpec("hp3"), body))

    assert refused.value.status_code == 429
    assert service.meter.records(key.id) == []


@pytest.mark.parametrize("others_in_flight", [0, 1])
def test_a_key_found_over_its_quota_gets_no_more_model_runs(
    service, others_in_flight
):
    # Alone on the server, a call is admitted before its model runs. With
    # other calls in flight, calls run their model beside the ledger ask;
    # once a key's quota is known to be spent, its calls wait for the
    # answer, so a spent key cannot make the server compute for nothing.
    _, key = service.auth.store.create("acme", "tiny")
    big = json.dumps({"instances": [1.0, 2.0, 3.0, 4.0]}).encode()

    def runs():
        return (
            service.metrics.registry.get_sample_value(
                "aiservice_kit_batch_size_count", {"model": "hp3"}
            )
            or 0
        )

    service.calls_in_flight = others_in_flight
    service.mean_calls_in_flight = others_in_flight + 1.0
    try:
        before = runs()  # the warm-up's run, if counted
        statuses = []
        for _ in range(4):
            with pytest.raises(ServingError) as refused:
                asyncio.run(predict(service, key, ModelSpec("hp3"), big))
            statuses.append(refused.value.status_code)
        after_refusals = runs()
        small = json.dumps({"instances": [1.0]}).encode()
        reply = asyncio.run(predict(service, key, ModelSpec("hp3"), small))
    finally:
        service.calls_in_flight = 0
        service.mean_calls_in_flight = 1.0

    assert statuses == [429] * 4
    ran_ahead = after_refusals - before
    assert ran_ahead == 0 if others_in_flight == 0 else ran_ahead <= 1
    assert reply.status == 200 and runs() == after_refusals + 1
    assert service.limiter.may_run_ahead(key)  # admitted again


def test_every_call_takes_one_token_and_a_refused_one_reserves_nothing(
    service,
):
    # The token and the reservation are one ledger ask made after decoding;
    # a bad request, refused before it, must still take its token.
    _, key = service.auth.store.create("acme", "paced")
    good = json.dumps({"instances": [1.0, 2.0]}).encode()

    def call(body):
        try:
            return asyncio.run(predict(service, key, ModelSpec("hp3"), body))
        except ServingError as error:
            return error

    async def unread_body() -> bytes:
        raise AssertionError("a spent rate must refuse before the body")

    answers = [call(good), call(b"{"), call(good), call(unread_body)]
    statuses = [getattr(a, "status", None) or a.status_code for a in answers]
    records = [record.status for record in service.meter.records(key.id)]
    used, reserved = service.limiter.ledger.usage(key.id)

    assert statuses == [200, 400, 429, 429]
    assert "Rate limit" in answers[2].message
    assert int(answers[3].headers["Retry-After"]) >= 1
    assert records == [200, 400]  # refusals are not metered
    assert (used, reserved) == (2, 0)


def test_oversized_calls_take_their_token_too(service):
    # Refused by the admission limits (413) before the ledger ask: each
    # still takes a token, so a flood of them is rate-limited.
    _, key = service.auth.store.create("acme", "paced")
    too_many = json.dumps({"instances": [1.0] * 2000}).encode()

    def status(body):
        try:
            return asyncio.run(predict(service, key, ModelSpec("hp3"), body))
        except ServingError as error:
            return error.status_code

    assert [status(too_many) for _ in range(3)] == [413, 413, 429]
    assert service.meter.records(key.id) == []
