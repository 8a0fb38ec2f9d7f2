"""TF Serving's REST protocol, keys, quotas and limits, over real HTTP.

One server subprocess for the module (auth on, a 200 kB body limit), with
request/response pairs replayed from TF Serving's REST API documentation
(tensorflow_serving/g3doc/api_rest.md).
"""

import base64
import json

import httpx
import numpy as np
import pytest
from serving_helpers import CONFIG
from serving_helpers import Server
from serving_helpers import run_signature

from aiservice_kit.cli import main as cli_main
from aiservice_kit.serving import Client
from aiservice_kit.serving import KeyStore
from aiservice_kit.serving import ServingClientError

MAX_BODY = 200_000


@pytest.fixture(scope="module")
def keys(model_root, tmp_path_factory):
    db = tmp_path_factory.mktemp("protocol") / "service.db"
    store = KeyStore(db)
    made = {
        name: store.create(name, plan, models, scopes)[0]
        for name, plan, models, scopes in (
            ("acme", "pro", None, ()),
            ("mnist-only", "pro", ["mnist"], ()),
            ("limited", "limited", None, ()),
            ("quota", "quota", None, ()),
            ("gone", "pro", None, ()),
            ("ops", "pro", None, ("admin",)),
        )
    }
    store.revoke("gone")
    store.close()
    return db, made


@pytest.fixture(scope="module")
def server(model_root, keys, tmp_path_factory):
    db, _ = keys
    # mnist comes from the config file, with TF Serving's version labels.
    config = dict(CONFIG)
    config["models"] = {
        "mnist": {
            "base_path": str(model_root / "mnist"),
            "version_labels": {"stable": 1, "canary": 2},
        }
    }
    config_path = tmp_path_factory.mktemp("protocol-config") / "config.json"
    config_path.write_text(json.dumps(config))
    args = ["--host", "127.0.0.1", "--db", str(db), "--auth", "on"]
    args += ["--config", str(config_path)]
    args += ["--max-body-bytes", str(MAX_BODY)]
    for name in ("half_plus_three", "multi", "echo", "text"):
        args += ["--model", f"{name}={model_root / name}"]
    args += ["--model", f"recommender={model_root / 'recommender'}"]
    log = tmp_path_factory.mktemp("protocol-log") / "server.log"
    running = Server(args, log).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def http(server, keys):
    headers = {"Authorization": f"Bearer {keys[1]['acme']}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as c:
        yield c


def _images(count, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, 28, 28))


# --- request/response pairs from TF Serving's REST API documentation


def test_doc_example_predict_half_plus_three(http):
    response = http.post(
        "/v1/models/half_plus_three:predict",
        content='{"instances": [1.0,2.0,5.0]}',
    )

    assert response.status_code == 200
    assert response.json() == {"predictions": [3.5, 4.0, 5.5]}
    assert response.headers["content-type"] == "application/json"


def test_doc_example_model_status(http):
    response = http.get("/v1/models/half_plus_three")

    assert response.status_code == 200
    assert response.json() == {
        "model_version_status": [
            {
                "version": "123",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }


def test_doc_example_unknown_model_is_404(http):
    response = http.post(
        "/v1/models/half:predict", content='{"instances": [1.0,5.0]}'
    )

    assert response.status_code == 404
    assert response.json() == {
        "error": "Servable not found for request: Latest(half)"
    }


def test_doc_example_named_inputs_in_rows_and_columns(http):
    rows = {
        "instances": [
            {
                "tag": "foo",
                "signal": [1, 2, 3, 4, 5],
                "sensor": [[1, 2], [3, 4]],
            },
            {
                "tag": "bar",
                "signal": [3, 4, 1, 2, 5],
                "sensor": [[4, 5], [6, 8]],
            },
        ]
    }
    columns = {
        "inputs": {
            "tag": ["foo", "bar"],
            "signal": [[1, 2, 3, 4, 5], [3, 4, 1, 2, 5]],
            "sensor": [[[1, 2], [3, 4]], [[4, 5], [6, 8]]],
        }
    }

    by_rows = http.post("/v1/models/multi:predict", json=rows)
    by_columns = http.post("/v1/models/multi:predict", json=columns)

    assert by_rows.json() == {
        "predictions": [
            {"sensor_max": 4.0, "signal_sum": 15.0, "tag_length": 3},
            {"sensor_max": 8.0, "signal_sum": 15.0, "tag_length": 3},
        ]
    }
    assert by_columns.json() == {
        "outputs": {
            "sensor_max": [4.0, 8.0],
            "signal_sum": [15.0, 15.0],
            "tag_length": [3, 3],
        }
    }


def test_doc_example_b64_binary_values(http):
    payloads = [b"image bytes", b"awesome image bytes\xff"]
    body = {
        "instances": [{"b64": base64.b64encode(p).decode()} for p in payloads]
    }

    response = http.post("/v1/models/echo:predict", json=body)

    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert [row["length"] for row in predictions] == [11, 20]
    assert [
        base64.b64decode(row["echo_bytes"]["b64"]) for row in predictions
    ] == payloads


# --- predict on the exported models


def test_predict_rows_and_columns_match_the_saved_model(http, model_root):
    images = _images(3)
    expected = run_signature(
        model_root / "mnist" / "2", "predict", image=images.astype("uint8")
    )

    rows = http.post(
        "/v1/models/mnist:predict",
        json={"signature_name": "predict", "instances": images.tolist()},
    )
    columns = http.post(
        "/v1/models/mnist:predict",
        json={
            "signature_name": "predict",
            "inputs": {"image": images.tolist()},
        },
    )
    default = http.post(
        "/v1/models/mnist:predict", json={"instances": images.tolist()}
    )
    # serving_default answers one tensor: TF Serving tutorials' argmax.
    assert np.argmax(default.json()["predictions"], axis=1).tolist() == list(
        expected["predicted_class"]
    )

    assert rows.status_code == 200 and columns.status_code == 200
    assert rows.headers["x-model-version"] == "2"
    predictions = rows.json()["predictions"]
    np.testing.assert_allclose(
        [p["probabilities"] for p in predictions],
        expected["probabilities"],
        rtol=1e-5,
    )
    assert [p["predicted_class"] for p in predictions] == list(
        expected["predicted_class"]
    )
    outputs = columns.json()["outputs"]
    np.testing.assert_allclose(
        outputs["probabilities"], expected["probabilities"], rtol=1e-5
    )


def test_predict_a_given_version(http, model_root):
    images = _images(2, seed=5)
    expected = run_signature(
        model_root / "mnist" / "1", image=images.astype("uint8")
    )

    response = http.post(
        "/v1/models/mnist/versions/1:predict",
        json={"instances": images.tolist()},
    )

    assert response.headers["x-model-version"] == "1"
    np.testing.assert_allclose(
        response.json()["predictions"],
        expected["probabilities"],
        rtol=1e-5,
    )


def test_text_model_takes_raw_strings(http, model_root):
    texts = ["win cash now", "see you at lunch"]
    expected = run_signature(
        model_root / "text" / "1", text=np.array(texts, dtype=object)
    )

    response = http.post("/v1/models/text:predict", json={"instances": texts})

    assert response.status_code == 200
    np.testing.assert_allclose(
        response.json()["predictions"],
        expected["probabilities"],
        rtol=1e-5,
    )


def test_recommender_takes_padded_item_ids(http, model_root):
    history = [["a", ""], ["b", "c"]]
    expected = run_signature(
        model_root / "recommender" / "1",
        item_ids=np.array(history, dtype=object),
    )

    response = http.post(
        "/v1/models/recommender:predict", json={"inputs": {"item_ids": history}}
    )

    assert response.status_code == 200
    outputs = response.json()["outputs"]
    assert outputs["item_ids"] == [
        [item.decode() for item in row] for row in expected["item_ids"]
    ]
    np.testing.assert_allclose(outputs["scores"], expected["scores"], rtol=1e-5)


def test_version_labels_name_versions_as_tf_serving_does(http, model_root):
    images = _images(2, seed=6)
    body = {"instances": images.tolist()}

    for label, version in (("stable", "1"), ("canary", "2")):
        by_label = http.post(
            f"/v1/models/mnist/labels/{label}:predict", json=body
        )
        by_version = http.post(
            f"/v1/models/mnist/versions/{version}:predict", json=body
        )
        assert by_label.status_code == 200
        assert by_label.headers["x-model-version"] == version
        assert by_label.json() == by_version.json()
        status = http.get(f"/v1/models/mnist/labels/{label}").json()
        assert [row["version"] for row in status["model_version_status"]] == [
            version
        ]
        metadata = http.get(f"/v1/models/mnist/labels/{label}/metadata")
        assert metadata.json()["model_spec"]["version"] == version

    unknown = http.post("/v1/models/mnist/labels/nope:predict", json=body)
    assert unknown.status_code == 400
    assert unknown.json() == {
        "error": "Unrecognized servable version label: nope"
    }
    assert http.get("/v1/models/mnist/labels/nope").status_code == 400
    assert http.get("/v1/models/ghost/labels/stable").status_code == 404


def test_python_client_asks_for_labels(server, keys):
    _, made = keys
    with Client(server.url, api_key=made["acme"]) as client:
        client.predict("mnist", _images(1), label="canary")
        assert client.last_version == 2
        assert client.status("mnist", label="stable")[0]["version"] == "1"
        with pytest.raises(ValueError, match="`version` or a `label`"):
            client.predict("mnist", _images(1), version=1, label="stable")


# --- status and metadata


def test_status_lists_every_loaded_version(http):
    everything = http.get("/v1/models/mnist").json()
    one = http.get("/v1/models/mnist/versions/1").json()

    assert [row["version"] for row in everything["model_version_status"]] == [
        "2",
        "1",
    ]
    assert one["model_version_status"][0]["state"] == "AVAILABLE"
    missing = http.get("/v1/models/mnist/versions/9")
    assert missing.status_code == 404
    assert "version 9" in missing.json()["error"]


def test_metadata_has_the_signature_def_and_export_metadata(http):
    latest = http.get("/v1/models/mnist/metadata").json()
    first = http.get("/v1/models/mnist/versions/1/metadata").json()

    assert latest["model_spec"] == {
        "name": "mnist",
        "signature_name": "",
        "version": "2",
    }
    assert first["model_spec"]["version"] == "1"
    signature = latest["metadata"]["signature_def"]["signature_def"][
        "serving_default"
    ]
    assert signature["method_name"] == "tensorflow/serving/predict"
    image = signature["inputs"]["image"]
    assert image["dtype"] == "DT_UINT8"
    assert [d["size"] for d in image["tensor_shape"]["dim"]] == [
        "-1",
        "28",
        "28",
    ]
    assert set(signature["outputs"]) == {"probabilities"}
    every = latest["metadata"]["signature_def"]["signature_def"]["predict"]
    assert set(every["outputs"]) == {"probabilities", "predicted_class"}
    assert latest["metadata"]["aiservice_kit"]["task"] == "classification"


# --- keys, plans, limits


def test_missing_unknown_and_revoked_keys_get_401(server, keys):
    body = {"instances": [1.0]}
    url = server.url + "/v1/models/half_plus_three:predict"
    bad = keys[1]["acme"][:-3] + "xyz"
    for headers in (
        {},
        {"Authorization": f"Bearer {bad}"},
        {"X-API-Key": "not-a-key"},
        {"Authorization": f"Basic {keys[1]['acme']}"},
        {"X-API-Key": keys[1]["gone"]},
    ):
        response = httpx.post(url, json=body, headers=headers)
        assert response.status_code == 401, headers
        assert "error" in response.json()
        assert response.headers["www-authenticate"] == "Bearer"
    assert httpx.get(server.url + "/v1/models/mnist").status_code == 401


def test_x_api_key_header_works(server, keys):
    response = httpx.post(
        server.url + "/v1/models/half_plus_three:predict",
        json={"instances": [2.0]},
        headers={"X-API-Key": keys[1]["acme"]},
    )

    assert response.json() == {"predictions": [4.0]}


def test_a_key_limited_to_one_model_gets_403_elsewhere(server, keys):
    headers = {"X-API-Key": keys[1]["mnist-only"]}

    elsewhere = httpx.post(
        server.url + "/v1/models/half_plus_three:predict",
        json={"instances": [1.0]},
        headers=headers,
    )
    allowed = httpx.get(server.url + "/v1/models/mnist", headers=headers)

    assert elsewhere.status_code == 403
    assert "half_plus_three" in elsewhere.json()["error"]
    assert allowed.status_code == 200


def test_rate_limit_gives_429_with_retry_after(server, keys):
    headers = {"X-API-Key": keys[1]["limited"]}
    url = server.url + "/v1/models/half_plus_three:predict"

    codes = [
        httpx.post(url, json={"instances": [1.0]}, headers=headers)
        for _ in range(4)
    ]

    assert [r.status_code for r in codes[:2]] == [200, 200]
    assert codes[2].status_code == 429
    assert int(codes[2].headers["retry-after"]) >= 1
    assert "Rate limit" in codes[2].json()["error"]


def test_monthly_quota_gives_429_until_next_month(server, keys):
    client = Client(server.url, api_key=keys[1]["quota"])

    assert client.predict("half_plus_three", [1.0, 2.0]) == [3.5, 4.0]
    with pytest.raises(ServingClientError) as refused:
        client.predict("half_plus_three", [1.0, 2.0])
    assert refused.value.status_code == 429
    assert refused.value.retry_after >= 1
    assert "Monthly quota" in refused.value.message
    assert client.predict("half_plus_three", [7.0]) == [6.5]  # 3 of 3
    client.close()


def test_body_over_the_limit_gets_413(http):
    big = {"instances": [[0.5] * 1000] * 50}

    response = http.post(
        "/v1/models/half_plus_three:predict", content=json.dumps(big)
    )

    assert response.status_code == 413
    assert str(MAX_BODY) in response.json()["error"]


# --- every 400

BAD_REQUESTS = [
    ("", "The document is empty"),
    ("{", "JSON Parse error"),
    ("[1, 2]", "Is not object"),
    ('{"instances": [1.0], "inputs": [1.0]}', "only one of 'inputs' or"),
    ('{"signature_name": 3, "instances": [1.0]}', "'signature_name' key"),
    ('{"signature_name": "nope", "instances": [1.0]}', '"nope" not found'),
    ('{"x": [1.0]}', "Missing 'inputs' or 'instances' key"),
    ('{"instances": 1.0}', "to be an list/array"),
    ('{"instances": []}', "No values in 'instances' array"),
    ('{"instances": ["a", "b"]}', "Input 'x' expects float32"),
    ('{"instances": [[1.0], [2.0]]}', "Input 'x' expects shape [-1]"),
    ('{"instances": [true]}', "Input 'x' expects float32"),
    ('{"instances": [{"y": 1.0}]}', "must only have keys: x"),
    ('{"inputs": {"y": [1.0]}}', "Missing named input: x"),
    (
        '{"inputs": {"x": [1.0], "z": [2.0]}}',
        "named input(s) in 'inputs' object: [\"z\"]",
    ),
    ('{"instances": [1e300]}', "without loss of precision"),
]


@pytest.mark.parametrize(("body", "message"), BAD_REQUESTS)
def test_bad_requests_get_400_naming_the_problem(http, body, message):
    response = http.post("/v1/models/half_plus_three:predict", content=body)

    assert response.status_code == 400
    assert message in response.json()["error"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"instances": [[[1] * 28] * 27]}, "Input 'image' expects shape"),
        ({"instances": [[[0.5] * 28] * 28]}, "expects uint8 values"),
        ({"instances": [[[300] * 28] * 28]}, "in [0, 255]"),
        ({"instances": [[[1] * 28] * 28, [[1] * 28]]}, "same shape"),
        ({"inputs": {"image": [[1, 2], [3]]}}, "rectangular"),
    ],
)
def test_wrong_shape_or_dtype_names_the_input(http, body, message):
    response = http.post("/v1/models/mnist:predict", json=body)

    assert response.status_code == 400
    assert message in response.json()["error"]


def test_multi_input_errors_name_the_inputs(http):
    plain = http.post("/v1/models/multi:predict", json={"instances": [1, 2]})
    keys = http.post(
        "/v1/models/multi:predict", json={"instances": [{"tag": "a"}]}
    )
    bad_b64 = http.post(
        "/v1/models/echo:predict", json={"instances": [{"b64": "%%%"}]}
    )

    assert plain.status_code == keys.status_code == bad_b64.status_code == 400
    assert "expecting list of objects" in plain.json()["error"]
    assert "must only have keys: sensor,signal,tag" in keys.json()["error"]
    assert "base64" in bad_b64.json()["error"]


def test_bad_urls_are_400_or_404_never_500(http):
    assert http.post("/v1/models/mnist/versions/x:predict").status_code == 400
    assert http.get("/v1/nothing").status_code == 400
    assert http.get("/nothing").status_code == 404
    assert http.post("/v1/models/mnist").status_code == 400
    # A `:` inside a URL part is malformed, as TF Serving answers it.
    for path in (
        "/v1/models/mn:ist:predict",
        "/v1/models/m/labels/a:b:predict",
    ):
        answer = http.post(path, json={"instances": [0]})
        assert answer.status_code == 400
        assert answer.json()["error"] == f"Malformed request: POST {path}"


# --- usage, metering, pricing, operations


def test_usage_endpoint_and_cli_bill_the_calls(server, keys, capsys):
    db = str(keys[0])
    config = server.args[server.args.index("--config") + 1]
    client = Client(server.url, api_key=keys[1]["mnist-only"])
    client.predict("mnist", _images(4).tolist())
    client.predict("mnist", _images(1).tolist())
    with pytest.raises(ServingClientError):
        client.predict("mnist", [[1, 2]])

    usage = client.usage()
    capsys.readouterr()
    assert cli_main(["usage", "--db", db, "--key", "mnist-only"]) == 0
    table = capsys.readouterr().out
    assert cli_main(["usage", "--db", db, "--config", config, "--json",
                     "--key", "mnist-only"]) == 0  # fmt: skip
    as_json = json.loads(capsys.readouterr().out)
    client.close()

    assert usage["key"]["name"] == "mnist-only"
    line = usage["lines"][0]
    assert (line["model"], line["requests"], line["errors"]) == ("mnist", 3, 1)
    assert line["instances"] == 5
    assert line["price_per_1000"] == "0.4"
    assert usage["total"] == "0.002000"
    assert usage["used_this_month"] == 5
    assert as_json["total"] == "0.002000"
    assert as_json["lines"][0]["instances"] == 5
    assert "mnist-only" in table and "TOTAL" in table
    assert httpx.get(server.url + "/v1/usage").status_code == 401


def test_health_readiness_metrics_and_openapi(server, keys, http):
    http.post("/v1/models/half_plus_three:predict", json={"instances": [1.0]})
    ops = {"Authorization": f"Bearer {keys[1]['ops']}"}

    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(server.url + "/readyz").json()
    assert ready["models"]["mnist"] == [2, 1]
    # With auth on, the operator pages need a key with the admin scope.
    assert httpx.get(server.url + "/metrics").status_code == 401
    assert http.get("/metrics").status_code == 403  # unrestricted, no admin
    metrics = http.get("/metrics", headers=ops).text
    assert 'aiservice_kit_predict_requests_total{model="half_plus_three"' in (
        metrics
    )
    assert "aiservice_kit_predict_latency_seconds_bucket" in metrics
    assert 'aiservice_kit_batch_size_count{model="mnist"}' in metrics
    assert 'aiservice_kit_predict_errors_total{model="mnist",status="400"}' in (
        metrics
    )
    spec = http.get("/openapi.json", headers=ops).json()
    assert "/v1/models/{model_name}:predict" in spec["paths"]
    assert http.get("/docs", headers=ops).status_code == 200


def test_access_log_is_json_and_never_holds_a_key(server, keys, http):
    http.get("/v1/models/mnist")
    httpx.get(server.url + "/healthz")

    log = server.log()
    lines = [
        json.loads(line)
        for line in log.splitlines()
        if line.startswith('{"time"')
    ]
    assert any(
        line["path"] == "/v1/models/mnist" and line["key_name"] == "acme"
        for line in lines
    )
    for secret in keys[1].values():
        assert secret not in log
        assert secret.split("_", 2)[2] not in log


def test_python_client_rows_and_columns_give_the_same_answers(server, keys):
    with Client(server.url, api_key=keys[1]["acme"]) as client:
        rows = client.predict("half_plus_three", [1.0, 2.0, 5.0])
        columns = client.predict_columns("half_plus_three", [1.0, 2.0, 5.0])
        named = client.predict(
            "half_plus_three", [1.0], signature_name="serving_default"
        )

    assert rows == columns == [3.5, 4.0, 5.5]
    assert named == [3.5]
