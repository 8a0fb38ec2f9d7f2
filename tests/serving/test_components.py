"""The pieces behind the server, in process: keys, ledger, prices, plans,
batching, the JSON codec, config files and the CLI's error handling."""

import asyncio
import datetime
import decimal
import json
import threading
import time

import numpy as np
import pytest

from aiservice_kit.cli import main as cli_main
from aiservice_kit.serving import BatchingConfig
from aiservice_kit.serving import KeyStore
from aiservice_kit.serving import ModelConfig
from aiservice_kit.serving import Plan
from aiservice_kit.serving import PriceList
from aiservice_kit.serving import SQLiteMeter
from aiservice_kit.serving import UsageRecord
from aiservice_kit.serving import batching
from aiservice_kit.serving import create_app
from aiservice_kit.serving import load_config
from aiservice_kit.serving._codec import TensorInfo
from aiservice_kit.serving._codec import decode_predict
from aiservice_kit.serving._codec import encode_predict
from aiservice_kit.serving._codec import encode_predict_json
from aiservice_kit.serving._errors import ServingError
from aiservice_kit.serving.batching import Batcher
from aiservice_kit.serving.cli import is_loopback
from aiservice_kit.serving.ratelimit import RateLimiter
from aiservice_kit.serving.ratelimit import next_month_start


def _record(key_id="k1", model="m", instances=2, status=200, when=None):
    return UsageRecord(
        request_id=f"r{time.perf_counter_ns()}",
        time=when if when is not None else time.time(),
        key_id=key_id,
        key_name="acme",
        model=model,
        version=1,
        instances=instances,
        request_bytes=10,
        response_bytes=20,
        latency_ms=1.0,
        status=status,
    )


def test_keys_are_stored_hashed_and_shown_once(tmp_path):
    store = KeyStore(tmp_path / "keys.db")
    key, record = store.create("acme", "free", models=["mnist"])

    assert key.startswith(f"ask_{record.id}_")
    assert store.verify(key).name == "acme"
    assert store.verify(key + "x") is None
    assert (
        key.split("_", 2)[2].encode() not in (tmp_path / "keys.db").read_bytes()
    )
    assert record.may_use("mnist") and not record.may_use("other")
    with pytest.raises(ValueError, match="unique"):
        store.create("acme", "free")
    store.revoke("acme")
    assert store.verify(key) is None
    assert store.list() == [] and len(store.list(include_revoked=True)) == 1
    with pytest.raises(ValueError, match="Received: key='nobody'"):
        store.revoke("nobody")
    store.close()


def test_keys_have_no_scope_unless_given_and_scopes_are_checked(tmp_path):
    store = KeyStore(tmp_path / "keys.db")
    _, plain = store.create("acme", "free")
    key, admin = store.create("ops", "free", scopes=["admin"])

    assert plain.scopes == () and not plain.has_scope("admin")
    assert admin.scopes == ("admin",) and store.verify(key).has_scope("admin")
    assert store.grant("acme", "admin").scopes == ("admin",)
    assert store.get(plain.id).scopes == ("admin",)
    assert store.withdraw(plain.id, "admin").scopes == ()
    assert store.get(plain.id).to_json()["scopes"] == []
    with pytest.raises(ValueError, match=r"Received: scopes=\['root'\]"):
        store.create("x", "free", scopes=["root"])
    with pytest.raises(ValueError, match="Received: scopes="):
        store.grant("acme", "root")
    with pytest.raises(ValueError, match="Received: key='nobody'"):
        store.grant("nobody", "admin")
    store.close()


def test_ledger_summarizes_usage_per_key_and_model(tmp_path):
    meter = SQLiteMeter(tmp_path / "ledger.db")
    meter.record_many(
        [
            _record(instances=3),
            _record(instances=2),
            _record(instances=0, status=400),
            _record(model="other", instances=5),
            _record(key_id="k2", instances=7),
            _record(instances=100, when=1_000.0),
        ]
    )

    rows = meter.summarize(key_id="k1", since=2_000.0)

    assert [(r.model, r.requests, r.instances, r.errors) for r in rows] == [
        ("m", 3, 5, 1),
        ("other", 1, 5, 0),
    ]
    assert len(meter.records()) == 6
    meter.close()


def test_prices_turn_usage_into_a_bill(tmp_path):
    meter = SQLiteMeter(tmp_path / "ledger.db")
    meter.record_many(
        [_record(instances=2500), _record(model="x", instances=10)]
    )
    prices = PriceList({"m": "0.40", "*": 0.1}, currency="EUR")

    bill = prices.bill(meter.summarize())

    assert [line.amount for line in bill.lines] == [
        decimal.Decimal("1.000000"),
        decimal.Decimal("0.001000"),
    ]
    assert bill.total == decimal.Decimal("1.001000")
    assert bill.to_json()["currency"] == "EUR"
    assert PriceList({"m": 1}).charge("free-model", 10**6) == 0
    with pytest.raises(ValueError, match="price of model 'm'"):
        PriceList({"m": -1})
    meter.close()


def test_token_bucket_and_monthly_quota(tmp_path):
    meter = SQLiteMeter(tmp_path / "ledger.db")
    store = KeyStore(tmp_path / "ledger.db")
    _, key = store.create("acme", "tight")
    meter.record(_record(key_id=key.id, instances=8))
    plans = {"tight": Plan("tight", 1.0, burst=2, monthly_instances=10)}
    limiter = RateLimiter(plans, meter)

    limiter.check_rate(key)
    limiter.check_rate(key)
    with pytest.raises(ServingError) as limited:
        limiter.check_rate(key)
    limiter.check_quota(key, 2)
    limiter.add_usage(key, 2)
    with pytest.raises(ServingError) as over:
        limiter.check_quota(key, 1)

    assert limited.value.status_code == 429
    assert limited.value.headers["Retry-After"] == "1"
    assert over.value.status_code == 429
    assert "10 of 10" in over.value.message
    assert int(over.value.headers["Retry-After"]) > 0
    december = datetime.datetime(2026, 12, 5, tzinfo=datetime.timezone.utc)
    assert next_month_start(december).year == 2027
    with pytest.raises(ValueError, match="requests_per_second"):
        Plan("bad", requests_per_second=0)
    meter.close()
    store.close()


def test_batcher_merges_concurrent_requests_and_isolates_failures():
    sizes = []
    gate = threading.Event()

    def run(inputs):
        gate.wait(5)
        x = inputs["x"]
        if (x < 0).any():
            raise ServingError("negative input", 400)
        return {"y": x * 2}

    batcher = Batcher(
        run, BatchingConfig(max_batch_size=8), on_batch=sizes.append
    )
    first = batcher.submit({"x": np.ones((1, 2))})
    time.sleep(0.05)  # the worker holds the first request at the gate
    futures = [batcher.submit({"x": np.full((1, 2), i)}) for i in range(5)]
    bad = batcher.submit({"x": np.full((1, 2), -1)})
    gate.set()

    assert first.result(5)["y"].tolist() == [[2.0, 2.0]]
    for i, future in enumerate(futures):
        assert future.result(5)["y"].tolist() == [[2 * i, 2 * i]]
    with pytest.raises(ServingError, match="negative"):
        bad.result(5)
    assert sizes[:2] == [1, 6]  # one merged batch, then one by one
    assert sizes[2:] == [1] * 6
    batcher.close()
    with pytest.raises(ValueError, match="max_wait_ms"):
        BatchingConfig(max_wait_ms=-1)


def test_a_lone_caller_never_waits_for_a_batch():
    sizes = []
    batcher = Batcher(
        lambda inputs: {"y": inputs["x"] + 1},
        BatchingConfig(max_batch_size=8, max_wait_ms=400),
        on_batch=sizes.append,
    )
    started = time.perf_counter()
    for i in range(5):  # one request at a time, as a client at c=1
        assert batcher.submit({"x": np.full((1,), i)}).result(5)[
            "y"
        ].tolist() == [i + 1]
    elapsed = time.perf_counter() - started
    batcher.close()

    assert elapsed < 0.4  # a fixed wait would take 5 x 0.4 s
    assert sizes == [1] * 5


def test_a_call_alone_runs_a_fast_model_on_its_own_thread(monkeypatch):
    # `run(..., now_if_free=True)` (a call alone on the server) skips the
    # worker's hand-offs when the model is fast and idle; a slow model, or
    # one already running, stays on the worker, and `fn` never runs twice
    # at once. The limit is raised to 50 ms so that a loaded test machine
    # that preempts the trivial `fn` for a millisecond does not make it
    # "slow".
    monkeypatch.setattr(batching, "INLINE_RUN_LIMIT_MS", 50.0)
    threads, gate, slow = [], threading.Event(), []

    def run(inputs):
        threads.append(threading.current_thread().name)
        if slow:
            time.sleep(slow[0])
        if inputs["x"][0] < 0:
            gate.wait(5)
        return {"y": inputs["x"] + 1}

    batcher = Batcher(run, BatchingConfig(), name="m")

    async def main():
        here = threading.current_thread().name
        first = await batcher.run({"x": np.zeros(1)}, now_if_free=True)
        fast = await batcher.run({"x": np.ones(1)}, now_if_free=True)
        held = batcher.submit({"x": -np.ones(1)})  # fn runs, at the gate
        while len(threads) < 3:
            await asyncio.sleep(0.001)
        waiting = asyncio.ensure_future(
            batcher.run({"x": np.full(1, 2.0)}, now_if_free=True)
        )
        await asyncio.sleep(0.05)
        gate.set()
        busy = await waiting
        held.result(5)
        slow.append(0.1)  # 100 ms a run: over INLINE_RUN_LIMIT_MS
        for _ in range(10):  # the moving average catches up
            await batcher.run({"x": np.ones(1)})
        await batcher.run({"x": np.ones(1)}, now_if_free=True)
        outputs = [first["y"][0], fast["y"][0], busy["y"][0]]
        return here, outputs

    here, outputs = asyncio.run(main())
    batcher.close()

    assert outputs == [1.0, 2.0, 3.0]
    assert threads[0] == "batcher-m"  # no run time known yet
    assert threads[1] == here  # fast and idle: run by the caller
    assert threads[2:4] == ["batcher-m"] * 2  # fn was running: queued
    assert threads[-1] == "batcher-m"  # slow: never on the event loop


def test_concurrent_callers_are_waited_for_within_max_wait():
    sizes = []

    def run(inputs):
        time.sleep(0.005)
        return {"y": inputs["x"]}

    batcher = Batcher(
        run,
        BatchingConfig(max_batch_size=64, max_wait_ms=20),
        on_batch=sizes.append,
    )

    def client():
        for _ in range(20):
            batcher.submit({"x": np.ones((1,))}).result(5)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batcher.close()

    assert sum(sizes) == 160
    assert max(sizes) > 1
    assert len(sizes) < 160 // 2  # mostly batched, not one by one


def test_codec_follows_tf_serving_row_and_column_rules():
    inputs = {
        "a": TensorInfo("a", "float32", (None, 2)),
        "b": TensorInfo("b", "string", (None,)),
    }
    rows = {
        "instances": [
            {"a": [1, 2], "b": "x"},
            {"a": [3, 4], "b": {"b64": "eQ=="}},
        ]
    }

    arrays, fmt, count = decode_predict(rows, inputs)

    assert (fmt, count) == ("row", 2)
    assert arrays["a"].dtype == np.float32
    assert arrays["b"].tolist() == [b"x", b"y"]
    outputs = {"p": np.array([0.5, 1.0], np.float32), "c": np.array([1, 0])}
    assert encode_predict(outputs, "row") == {
        "predictions": [{"c": 1, "p": 0.5}, {"c": 0, "p": 1.0}]
    }
    assert encode_predict(outputs, "columnar") == {
        "outputs": {"c": [1, 0], "p": [0.5, 1.0]}
    }
    assert encode_predict({"p": outputs["p"]}, "row") == {
        "predictions": [0.5, 1.0]
    }


@pytest.mark.parametrize("fmt", ["row", "columnar"])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_json_answers_print_numbers_as_json_dumps_does(fmt, dtype):
    rng = np.random.default_rng(0)
    top = int(np.log10(np.finfo(dtype).max))  # 4, 38 or 308
    scales = 10.0 ** np.arange(-8, min(top, 20))[:, None]
    values = (rng.standard_normal((len(scales), 6)) * scales).astype(dtype)
    values[0, :3] = [np.nan, np.inf, -0.0]
    for rows in (values, values[1:], values[9:]):  # with and without NaN
        outputs = {"p": rows, "c": np.arange(len(rows)), "ok": rows[:, 0] > 0}

        fast = encode_predict_json(outputs, fmt)
        plain = json.dumps(encode_predict(outputs, fmt)).encode()

        assert fast.replace(b" ", b"") == plain.replace(b" ", b"")


def test_config_file_sets_prices_plans_and_models(tmp_path):
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "service.toml").write_text(
        'currency = "USD"\n[prices]\nm = 0.5\n'
        "[plans.gold]\nrequests_per_second = 10\nmonthly_instances = 1000\n"
        '[models.m]\nbase_path = "m"\nmax_batch_size = 16\n'
        "version_labels = { stable = 1 }\n"
    )

    config = load_config(tmp_path / "service.toml")

    assert config.prices.price_per_1000("m") == decimal.Decimal("0.5")
    assert config.plans["gold"].capacity == 20
    assert config.models["m"].base_path == tmp_path / "m"
    assert config.models["m"].batching.max_batch_size == 16
    assert config.models["m"].version_of("stable") == 1
    (tmp_path / "bad.json").write_text(json.dumps({"plans": {"x": {"rps": 1}}}))
    with pytest.raises(ValueError, match="plans.x"):
        load_config(tmp_path / "bad.json")
    for labels in ({"stable": 0}, {"a/b": 1}, {"stable": "1"}, ["stable"]):
        bad = {"models": {"m": {"base_path": "m", "version_labels": labels}}}
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match="models.m.*version_labels"):
            load_config(tmp_path / "bad.json")


def test_model_config_labels_are_a_checked_read_only_copy():
    labels = {"stable": 1}
    config = ModelConfig("exports/mnist", version_labels=labels)
    labels["stable"] = 7

    assert config.version_of("stable") == 1
    with pytest.raises(TypeError):
        config.version_labels["stable"] = 7
    assert {config: "usable as a key"}  # frozen configs stay hashable
    with pytest.raises(ServingError, match="version label: nope") as error:
        config.version_of("nope")
    assert error.value.status_code == 400


def test_create_app_refuses_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="at least one model"):
        create_app({})
    with pytest.raises(ValueError, match="existing directory"):
        create_app({"m": tmp_path / "missing"})
    with pytest.raises(TypeError, match="base path, a ModelConfig or a keras"):
        create_app({"m": 3})
    with pytest.raises(ValueError, match="max_body_bytes"):
        create_app({"m": tmp_path}, max_body_bytes=0)


def test_loopback_detection_decides_default_auth():
    assert is_loopback("127.0.0.1") and is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve"], "--model NAME=BASE_PATH is required"),
        (["serve", "--model", "nopath"], "must be NAME=BASE_PATH"),
        (["serve", "--model", "m=/nonexistent"], "existing directory"),
        (["serve", "--model", "m=.", "--port", "99999"], "1..65535"),
        (["serve", "--model", "m=.", "--max-wait-ms", "x"], "number >= 0"),
        (["keys", "create", "--name", "a", "--plan", "gold"], "--plan must be"),
        (["usage", "--since", "yesterday"], "ISO-8601"),
        (["usage", "--db", "/nonexistent/x.db"], "--db"),
        (["keys"], "required"),
    ],
)
def test_cli_bad_input_exits_nonzero_with_a_clear_message(
    argv, message, capsys, tmp_path, monkeypatch
):
    monkeypatch.setenv("AISERVICE_KIT_DB", str(tmp_path / "x.db"))
    try:
        code = cli_main(argv)
    except SystemExit as exited:
        code = exited.code

    assert code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_cli_keys_create_list_revoke(capsys, tmp_path):
    db = str(tmp_path / "keys.db")

    assert cli_main(["keys", "create", "--name", "acme", "--plan", "free",
                     "--db", db, "--json"]) == 0  # fmt: skip
    created = json.loads(capsys.readouterr().out)
    assert cli_main(["keys", "list", "--db", db]) == 0
    listing = capsys.readouterr().out
    assert cli_main(["keys", "revoke", "acme", "--db", db]) == 0
    capsys.readouterr()
    assert cli_main(["keys", "list", "--db", db, "--json"]) == 0

    assert created["key"].startswith("ask_") and created["plan"] == "free"
    assert "acme" in listing and created["key"] not in listing
    assert json.loads(capsys.readouterr().out) == []
