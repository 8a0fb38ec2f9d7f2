"""`:explain` over HTTP: attributions beside predictions, metered and billed.

A real uvicorn server on loopback (in a thread: the in-memory model lives
in this process) serves an image model exported with the `explain`
signature and one exported without it.
"""

import base64
import decimal
import threading
import time

import httpx
import keras
import numpy as np
import pytest
import uvicorn
from serving_helpers import free_port

from aiservice_kit import build_cnn
from aiservice_kit import explain
from aiservice_kit.export import export_saved_model
from aiservice_kit.serving import Client
from aiservice_kit.serving import KeyStore
from aiservice_kit.serving import create_app
from aiservice_kit.serving.config import parse_config
from aiservice_kit.serving.metering import SQLiteMeter

#: Agreement with `aiservice_kit.explain` (float32 graph vs eager).
MATCH = 1e-4


@pytest.fixture
def serve():
    """Starts an app in a thread; yields its URL maker, stops it after."""
    servers = []

    def start(app) -> str:
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(
                app, host="127.0.0.1", port=port, log_level="warning", ws="none"
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        deadline = time.monotonic() + 120
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline
            time.sleep(0.05)
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=60)


def test_explain_answers_attributions_metered_quota_and_billed(serve, tmp_path):
    keras.utils.set_random_seed(0)
    model = build_cnn((12, 12), num_classes=3, filters=(4,), dense_units=8)
    plain = tmp_path / "plain"
    export_saved_model(model, plain)  # no explain signature
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 12, 12), "uint8")
    db = tmp_path / "service.db"
    store = KeyStore(db)
    secret, key = store.create("acme", "small")
    store.close()
    config = parse_config(
        {
            "currency": "USD",
            "prices": {"*": 1.0, "*:explain": 50.0},
            "plans": {"small": {"monthly_instances": 7}},
        }
    )
    app = create_app(
        {"img": model, "plain": plain}, db=db, config=config, auth=True
    )
    url = serve(app)
    paths = app.openapi()["paths"]
    for tail in ("", "/versions/{version}", "/labels/{label}"):
        assert "post" in paths["/v1/models/{model_name}" + tail + ":explain"]
    headers = {"Authorization": f"Bearer {secret}"}

    with httpx.Client(base_url=url, headers=headers, timeout=120) as http:
        rows = http.post(
            "/v1/models/img:explain", json={"instances": images.tolist()}
        )
        columns = http.post(
            "/v1/models/img/versions/1:explain",
            json={"inputs": images[:1].tolist()},
        )
        with Client(url, secret) as client:
            by_client = client.explain("img", images[:1], version=1)
        predicted = http.post(
            "/v1/models/img:predict", json={"instances": images[:1].tolist()}
        )
        refused = http.post(
            "/v1/models/plain:explain", json={"instances": images.tolist()}
        )
        unknown = http.post(
            "/v1/models/nope:explain", json={"instances": images.tolist()}
        )
        other_signature = http.post(
            "/v1/models/img:explain",
            json={"instances": images.tolist(), "signature_name": "classify"},
        )
        over_quota = http.post(
            "/v1/models/img:explain", json={"instances": images[:2].tolist()}
        )
        anonymous = httpx.post(
            url + "/v1/models/img:explain",
            json={"instances": images[:1].tolist()},
        )
        usage = http.get("/v1/usage").json()
        # The explain signature through another route would be an
        # explanation at the predict price: refused, named, not billed.
        through_predict = http.post(
            "/v1/models/img:predict",
            json={
                "instances": images[:1].tolist(),
                "signature_name": "explain",
            },
        )
        not_an_example = http.post(
            "/v1/models/img:predict",
            json={
                "signature_name": "classification",
                "instances": [{"b64": base64.b64encode(b"\xff" * 10).decode()}],
            },
        )
        through_v2 = http.post(
            "/v2/models/img/infer",
            json={
                "parameters": {"signature_name": "explain"},
                "inputs": [
                    {
                        "name": "image",
                        "shape": [1, 12, 12],
                        "datatype": "UINT8",
                        "data": images[:1].ravel().tolist(),
                    }
                ],
            },
        )

    # Rows: `:predict`'s answer plus one attribution per instance.
    assert rows.status_code == 200, rows.text
    body = rows.json()
    assert set(body) == {"predictions", "attributions"}
    expected = explain(model, images)
    served = np.asarray(body["attributions"], np.float32)
    assert served.shape == images.shape
    reference = np.stack([e.attributions for e in expected])
    scale = max(float(np.abs(reference).max()), 1.0)
    np.testing.assert_allclose(served, reference, atol=MATCH * scale)
    assert [p["predicted_class"] for p in body["predictions"]] == [
        e.target for e in expected
    ]
    np.testing.assert_allclose(
        [p["probabilities"] for p in body["predictions"]],
        model.predict(images, verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )
    # Columns: `outputs` plus one attributions tensor; same numbers.
    assert columns.status_code == 200, columns.text
    assert set(columns.json()) == {"outputs", "attributions"}
    np.testing.assert_allclose(
        columns.json()["attributions"], served[:1], atol=1e-5 * scale
    )
    np.testing.assert_array_equal(
        by_client["attributions"], columns.json()["attributions"]
    )
    assert predicted.status_code == 200
    assert "attributions" not in predicted.json()

    # A model exported without the signature: 400 naming the fix.
    assert refused.status_code == 400
    assert "explain=True" in refused.json()["error"]
    assert "export_saved_model" in refused.json()["error"]
    assert unknown.status_code == 404
    assert other_signature.status_code == 400
    assert "signature_name='classify'" in other_signature.json()["error"]
    # 3 + 1 + 1 + 1 instances used of 7: 2 more are over the quota.
    assert over_quota.status_code == 429
    assert anonymous.status_code == 401
    # Bytes TensorFlow cannot read: 400 naming the input, not a codec
    # error about TensorFlow's own message.
    assert not_an_example.status_code == 400
    assert "'inputs'" in not_an_example.json()["error"]
    assert "tf.Example" in not_an_example.json()["error"]
    for refused_elsewhere in (through_predict, through_v2):
        assert refused_elsewhere.status_code == 400, refused_elsewhere.text
        assert ":explain only" in refused_elsewhere.json()["error"]

    meter = SQLiteMeter(db)
    records = meter.records(key_id=key.id)
    meter.close()
    assert [(r.model, r.api, r.status, r.instances) for r in records] == [
        ("img", "explain", 200, 3),
        ("img", "explain", 200, 1),
        ("img", "explain", 200, 1),
        ("img", "predict", 200, 1),
        ("plain", "explain", 400, 0),
        ("nope", "explain", 404, 0),
        ("img", "explain", 400, 0),
        ("img", "predict", 400, 0),
        ("img", "predict", 400, 0),
        ("img", "predict", 400, 0),
    ]
    lines = {(line["model"], line["api"]): line for line in usage["lines"]}
    assert set(lines) == {
        ("img", "explain"),
        ("img", "predict"),
        ("plain", "explain"),
        ("nope", "explain"),
    }
    explained = lines["img", "explain"]
    assert (explained["requests"], explained["instances"]) == (4, 5)
    assert explained["errors"] == 1
    assert decimal.Decimal(explained["price_per_1000"]) == 50
    assert decimal.Decimal(explained["amount"]) == decimal.Decimal("0.25")
    assert decimal.Decimal(lines["img", "predict"]["amount"]) == (
        decimal.Decimal("0.001")
    )
    assert decimal.Decimal(usage["total"]) == decimal.Decimal("0.251")
    assert usage["used_this_month"] == 6


def test_an_older_ledger_gains_the_api_column(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE usage (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
        "request_id TEXT NOT NULL, time REAL NOT NULL, key_id TEXT, "
        "key_name TEXT, model TEXT NOT NULL, version INTEGER, "
        "instances INTEGER NOT NULL, request_bytes INTEGER NOT NULL, "
        "response_bytes INTEGER NOT NULL, latency_ms REAL NOT NULL, "
        "status INTEGER NOT NULL);"
        "INSERT INTO usage (request_id, time, key_id, key_name, model, "
        "version, instances, request_bytes, response_bytes, latency_ms, "
        "status) VALUES ('r1', 1.0, 'k', 'acme', 'm', 1, 4, 10, 10, 1.0, 200)"
    )
    old.commit()
    old.close()

    meter = SQLiteMeter(path)
    rows = meter.summarize()
    meter.close()

    assert [(r.model, r.api, r.instances) for r in rows] == [
        ("m", "predict", 4)
    ]


def test_price_keys_name_a_model_or_an_api():
    from aiservice_kit.serving.pricing import PriceList

    prices = PriceList({"m": 1, "*": 2, "m:explain": 30, "*:explain": 40})

    assert prices.price_per_1000("m") == 1
    assert prices.price_per_1000("m", "explain") == 30
    assert prices.price_per_1000("other", "explain") == 40
    assert PriceList({"m": 1}).price_per_1000("m", "explain") == 1
    with pytest.raises(ValueError, match="'m:explian'"):
        PriceList({"m:explian": 1})
