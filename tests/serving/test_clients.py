"""Third-party clients, unchanged, against our server on loopback.

TF Serving's REST tutorial code (`requests` + `np.argmax`), TF Serving's
REST `:classify`/`:regress`, Triton's `tritonclient[http]` and KServe's
`InferenceRESTClient` (the Open Inference Protocol, binary tensors
included) call a real uvicorn server in
a thread of this process, with API keys. Answers are compared with the
Keras models', and every call is checked in the usage ledger.
"""

import asyncio
import json
import threading
import time

import httpx
import keras
import numpy as np
import pytest
import requests
import tensorflow as tf
import uvicorn
from serving_helpers import free_port

from aiservice_kit import build_cnn
from aiservice_kit import build_text_classifier
from aiservice_kit.export import export_saved_model
from aiservice_kit.serving import Client
from aiservice_kit.serving import KeyStore
from aiservice_kit.serving import create_app
from aiservice_kit.serving.metering import SQLiteMeter

tritonclient_http = pytest.importorskip("tritonclient.http")
InferenceServerException = pytest.importorskip(
    "tritonclient.utils"
).InferenceServerException

pytestmark = pytest.mark.large

TEXTS = ["win a free prize now", "see you at lunch", "cash prize, call now"]
TEXT_LABELS = [1, 0, 1]


def _textbook_digits(mnist_split):
    """TF Serving's tutorial CNN (Sequential, float pixels in [0, 1])."""
    x_train, y_train, x_test, y_test = mnist_split
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    images = x_train[:3000, ..., None].astype("float32") / 255.0
    model.fit(images, y_train[:3000], epochs=3, batch_size=64, verbose=0)
    test_images = x_test[:10, ..., None].astype("float32") / 255.0
    return model, test_images, y_test[:10]


def _export_tf_serving_half_plus_three(base):
    """TF Serving's `saved_model_half_plus_three` test model, as it is:
    no aiservice_kit metadata, and a `tensorflow/serving/regress`
    signature parsing feature `x` from serialized `tf.Example`s."""

    class HalfPlusThree(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def predict(self, x):
            return {"y": 0.5 * x + 3.0}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def regress(self, inputs):
            features = {"x": tf.io.FixedLenFeature([1], tf.float32)}
            x = tf.io.parse_example(inputs, features)["x"]
            return {"outputs": 0.5 * x + 3.0}

    module = HalfPlusThree()
    tf.saved_model.save(
        module,
        str(base / "123"),
        signatures={
            "serving_default": module.predict,
            "tensorflow/serving/regress": module.regress,
        },
    )


@pytest.fixture(scope="module")
def served(mnist_split, tmp_path_factory):
    """Every model exported, a keyed server up; its parts in a dict."""
    root = tmp_path_factory.mktemp("clients")
    digits, test_images, labels = _textbook_digits(mnist_split)
    export_saved_model(digits, root / "digits", 1, verify=False)
    keras.utils.set_random_seed(1)
    image = build_cnn((12, 12), num_classes=3, filters=(4,), dense_units=8)
    export_saved_model(image, root / "image", 1, verify=False)
    text = build_text_classifier(
        np.array(TEXTS), class_names=["ham", "spam"], max_tokens=50
    )
    text.fit(np.array(TEXTS), np.array(TEXT_LABELS), epochs=2, verbose=0)
    export_saved_model(text, root / "text", 1, verify=False)
    regressor = keras.Sequential(
        [keras.Input((3,), name="features"), keras.layers.Dense(1)]
    )
    export_saved_model(regressor, root / "reg", 1, verify=False)
    from aiservice_kit.recommenders import CosineRecommender

    users = [1, 1, 2, 2, 3, 3, 4]
    items = [10, 11, 10, 12, 11, 12, 13]
    recommender = CosineRecommender(n_neighbors=3).fit((users, items))
    recommender.export(root / "recommender", 1, top_k=2)

    _export_tf_serving_half_plus_three(root / "half_plus_three")

    db = root / "service.db"
    store = KeyStore(db)
    keys = {
        name: store.create(name, plan)[0]
        for name, plan in (
            ("acme", "pro"),
            ("small", "quota"),
            ("kserve_small", "quota"),
        )
    }
    store.close()
    config = root / "config.json"
    config.write_text(
        json.dumps({"plans": {"pro": {}, "quota": {"monthly_instances": 3}}})
    )
    app = create_app(
        {
            name: root / name
            for name in ("digits", "image", "text", "reg", "half_plus_three")
        }
        | {"recommender": root / "recommender"},
        db=db,
        config=config,
        access_log=False,
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", ws="none"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.05)
    yield {
        "url": f"127.0.0.1:{port}",
        "db": db,
        "keys": keys,
        "digits": (digits, test_images, labels),
        "image": image,
        "text": text,
        "reg": regressor,
        "recommender": recommender,
    }
    server.should_exit = True
    thread.join(timeout=30)


def _ledger(served, key_name):
    """The usage records of one key, oldest first."""
    store = KeyStore(served["db"])
    (key,) = [k for k in store.list() if k.name == key_name]
    store.close()
    meter = SQLiteMeter(served["db"])
    try:
        return list(meter.records(key.id))
    finally:
        meter.close()


def test_tf_serving_rest_tutorial_code_runs_unchanged(served):
    model, test_images, labels = served["digits"]
    # The tutorial's client code; only the URL and the key header differ.
    data = json.dumps(
        {"signature_name": "serving_default", "instances": test_images.tolist()}
    )
    headers = {
        "content-type": "application/json",
        "Authorization": f"Bearer {served['keys']['acme']}",
    }
    json_response = requests.post(
        f"http://{served['url']}/v1/models/digits:predict",
        data=data,
        headers=headers,
        timeout=60,
    )
    predictions = json.loads(json_response.text)["predictions"]
    served_classes = [int(np.argmax(p)) for p in predictions]

    assert served_classes == list(model.predict(test_images).argmax(axis=1))
    assert np.mean(np.array(served_classes) == labels) >= 0.9, (
        served_classes,
        labels,
    )
    record = _ledger(served, "acme")[-1]
    assert (record.model, record.instances, record.status) == (
        "digits",
        10,
        200,
    )


def test_classify_and_regress_answer_like_tf_serving(served):
    headers = {"Authorization": f"Bearer {served['keys']['acme']}"}
    base = f"http://{served['url']}/v1/models"
    body = {
        "signature_name": "classification",
        "examples": [{"text": text} for text in TEXTS],
    }
    answer = requests.post(
        base + "/text:classify", json=body, headers=headers, timeout=60
    )
    assert answer.status_code == 200, answer.text
    expected = served["text"].predict(tf.constant(TEXTS), verbose=0)
    results = answer.json()["results"]
    assert [[label for label, _ in row] for row in results] == [
        ["ham", "spam"]
    ] * 3
    np.testing.assert_allclose(
        [[score for _, score in row] for row in results], expected, atol=1e-5
    )
    # Our Client: images as arrays (flattened into features), no signature
    # named (the export's `classification` runs).
    images = np.random.default_rng(2).integers(0, 256, (2, 12, 12), "uint8")
    with Client(
        f"http://{served['url']}", api_key=served["keys"]["acme"]
    ) as client:
        results = client.classify("image", [{"image": i} for i in images])
    assert [label for label, _ in results[0]] == ["0", "1", "2"]
    np.testing.assert_allclose(
        [[score for _, score in row] for row in results],
        served["image"].predict(images, verbose=0),
        atol=1e-5,
    )
    # Version URL, context shared by every example, no signature named.
    features = np.array([[1.0, 2.0, 3.0], [0.5, 0.0, -1.0]], np.float32)
    regress = requests.post(
        base + "/reg/versions/1:regress",
        json={
            "context": {"features": [1.0, 2.0, 3.0]},
            "examples": [{}, {"features": [0.5, 0.0, -1.0]}],
        },
        headers=headers,
        timeout=60,
    )
    assert regress.status_code == 200, regress.text
    np.testing.assert_allclose(
        regress.json()["results"],
        served["reg"].predict(features, verbose=0)[:, 0],
        atol=1e-5,
    )
    # TF Serving's 400 for a model without the signature, 404 unknown.
    missing = requests.post(
        base + "/reg:classify",
        json={"signature_name": "classification", "examples": [{}]},
        headers=headers,
        timeout=60,
    )
    assert missing.status_code == 400
    assert (
        "No signature was found with the name: classification"
        in (missing.json()["error"])
    )
    unknown = requests.post(
        base + "/nope:classify", json=body, headers=headers, timeout=60
    )
    assert unknown.status_code == 404
    malformed = requests.get(base + "/text:predict", headers=headers)
    assert malformed.status_code == 400
    records = _ledger(served, "acme")[-5:]
    assert [(r.model, r.instances, r.status) for r in records] == [
        ("text", 3, 200),
        ("image", 2, 200),
        ("reg", 2, 200),
        ("reg", 0, 400),
        ("nope", 0, 404),
    ]


def test_tf_serving_documented_regress_call(served):
    # TF Serving's REST API page: the `regress` call on half_plus_three.
    answer = requests.post(
        f"http://{served['url']}/v1/models/half_plus_three:regress",
        data='{"signature_name": "tensorflow/serving/regress", '
        '"examples": [{"x": 1.0}, {"x": 2.0}]}',
        headers={"Authorization": f"Bearer {served['keys']['acme']}"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"results": [3.5, 4.0]}
    assert answer.headers["x-model-version"] == "123"


def _triton(served, key="acme"):
    client = tritonclient_http.InferenceServerClient(
        served["url"], connection_timeout=60, network_timeout=120
    )
    secret = served["keys"][key]
    return client, lambda: {"Authorization": f"Bearer {secret}"}


def _input(name, array, datatype, binary):
    tensor = tritonclient_http.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def test_tritonclient_health_metadata_and_infer(served):
    client, headers = _triton(served)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("image", headers=headers())
    assert client.get_server_metadata()["name"] == "aiservice_kit"
    metadata = client.get_model_metadata("image", headers=headers())
    assert metadata["inputs"] == [
        {"name": "image", "datatype": "UINT8", "shape": [-1, 12, 12]}
    ]
    assert metadata["outputs"][0]["name"] == "probabilities"

    # UINT8 images, binary both ways (tritonclient's defaults).
    images = np.random.default_rng(0).integers(0, 256, (4, 12, 12), "uint8")
    result = client.infer(
        "image", [_input("image", images, "UINT8", True)], headers=headers()
    )
    np.testing.assert_allclose(
        result.as_numpy("probabilities"),
        served["image"].predict(images, verbose=0),
        atol=1e-5,
    )
    # FP32 as JSON, on a version URL, asking for one output as JSON.
    model, test_images, _ = served["digits"]
    result = client.infer(
        "digits",
        [_input("inputs", test_images[:3], "FP32", False)],
        model_version="1",
        outputs=[
            tritonclient_http.InferRequestedOutput(
                "probabilities", binary_data=False
            )
        ],
        headers=headers(),
    )
    np.testing.assert_allclose(
        result.as_numpy("probabilities"),
        model.predict(test_images[:3], verbose=0),
        atol=1e-5,
    )
    # BYTES: raw strings to the text classifier, JSON and binary.
    texts = np.array([t.encode() for t in TEXTS], dtype=object)
    expected = served["text"].predict(tf.constant(TEXTS), verbose=0)
    for binary in (False, True):
        result = client.infer(
            "text", [_input("text", texts, "BYTES", binary)], headers=headers()
        )
        np.testing.assert_allclose(
            result.as_numpy("probabilities"), expected, atol=1e-5
        )
    # INT64 ids in, INT64 ids and FP32 scores out: the recommender.
    history = np.array([[10, -1], [11, 12]], np.int64)
    result = client.infer(
        "recommender", [_input("item_ids", history, "INT64", True)],
        headers=headers(),
    )  # fmt: skip
    wanted = served["recommender"].recommend(
        None,
        top_k=2,
        user_items=[[10], [11, 12]],
        unknown_items="ignore",
    )
    np.testing.assert_array_equal(result.as_numpy("item_ids"), wanted[0])
    np.testing.assert_allclose(result.as_numpy("scores"), wanted[1], atol=1e-5)
    records = _ledger(served, "acme")[-5:]
    assert [(r.model, r.instances, r.status) for r in records] == [
        ("image", 4, 200),
        ("digits", 3, 200),
        ("text", 3, 200),
        ("text", 3, 200),
        ("recommender", 2, 200),
    ]


def test_v2_errors_keys_and_quotas(served):
    client, headers = _triton(served)
    with pytest.raises(InferenceServerException, match="expects datatype"):
        client.infer(
            "image",
            [_input("image", np.zeros((1, 12, 12), np.float32), "FP32", True)],
            headers=headers(),
        )
    with pytest.raises(InferenceServerException) as unknown:
        client.infer(
            "nope",
            [_input("image", np.zeros((1, 12, 12), np.uint8), "UINT8", True)],
            headers=headers(),
        )
    assert unknown.value.status() == "404"
    with pytest.raises(InferenceServerException) as anonymous:
        client.get_model_metadata("image")
    assert anonymous.value.status() == "401"

    small, small_headers = _triton(served, "small")
    images = np.zeros((2, 12, 12), np.uint8)
    small.infer(
        "image",
        [_input("image", images, "UINT8", True)],
        headers=small_headers(),
    )
    with pytest.raises(InferenceServerException) as refused:
        small.infer(
            "image",
            [_input("image", images, "UINT8", True)],
            headers=small_headers(),
        )
    assert refused.value.status() == "429"
    records = _ledger(served, "small")
    assert [(r.model, r.instances, r.status) for r in records] == [
        ("image", 2, 200)
    ]


def test_kserve_inference_rest_client_v2(served):
    """KServe's own async REST client, protocol v2, with keys and quotas."""
    kserve_client = pytest.importorskip("kserve.inference_client")
    from kserve import InferInput
    from kserve import InferRequest

    base = f"http://{served['url']}"
    acme = {"Authorization": f"Bearer {served['keys']['acme']}"}
    small = {"Authorization": f"Bearer {served['keys']['kserve_small']}"}
    # Copies for every call: kserve's client writes its binary-body
    # headers into the dict it is given.
    model, test_images, labels = served["digits"]
    texts = np.array([t.encode() for t in TEXTS], dtype=object)

    images = np.random.default_rng(2).integers(0, 256, (3, 12, 12), "uint8")
    history = np.array([[10, -1], [11, 12]], np.int64)

    def request(model_name, name, array, datatype, binary=False):
        tensor = InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        return InferRequest(model_name, [tensor])

    async def calls():
        config = kserve_client.RESTConfig(protocol="v2", timeout=120)
        async with kserve_client.InferenceRESTClient(config) as client:
            assert await client.is_server_live(base)
            assert await client.is_server_ready(base)
            assert await client.is_model_ready(
                base, "digits", headers=dict(acme)
            )
            digits = await client.infer(
                base,
                request("digits", "inputs", test_images[:4], "FP32"),
                model_name="digits",
                headers=dict(acme),
            )
            text = await client.infer(
                base,
                request("text", "text", texts, "BYTES"),
                model_name="text",
                headers=dict(acme),
            )
            image = await client.infer(  # binary tensors, kserve's default
                base,
                request("image", "image", images, "UINT8", binary=True),
                model_name="image",
                headers=dict(acme),
            )
            recommended = await client.infer(
                base,
                request("recommender", "item_ids", history, "INT64"),
                model_name="recommender",
                headers=dict(acme),
            )
            with pytest.raises(httpx.HTTPStatusError) as anonymous:
                await client.infer(
                    base,
                    request("digits", "inputs", test_images[:1], "FP32"),
                    model_name="digits",
                )
            await client.infer(
                base,
                request("digits", "inputs", test_images[:2], "FP32"),
                model_name="digits",
                headers=dict(small),
            )
            with pytest.raises(httpx.HTTPStatusError) as over_quota:
                await client.infer(
                    base,
                    request("digits", "inputs", test_images[:2], "FP32"),
                    model_name="digits",
                    headers=dict(small),
                )
            return (
                digits,
                text,
                image,
                recommended,
                anonymous.value,
                over_quota.value,
            )

    digits, text, image, recommended, anonymous, over_quota = asyncio.run(
        calls()
    )
    wanted = served["recommender"].recommend(
        None, top_k=2, user_items=[[10], [11, 12]], unknown_items="ignore"
    )
    answer = {o.name: o.as_numpy() for o in recommended.outputs}
    np.testing.assert_array_equal(answer["item_ids"], wanted[0])
    np.testing.assert_allclose(answer["scores"], wanted[1], atol=1e-5)
    np.testing.assert_allclose(
        {o.name: o.as_numpy() for o in image.outputs}["probabilities"],
        served["image"].predict(images, verbose=0),
        atol=1e-5,
    )
    outputs = {output.name: output.as_numpy() for output in digits.outputs}
    np.testing.assert_allclose(
        outputs["probabilities"],
        model.predict(test_images[:4], verbose=0),
        atol=1e-5,
    )
    text_outputs = {output.name: output.as_numpy() for output in text.outputs}
    np.testing.assert_allclose(
        text_outputs["probabilities"],
        served["text"].predict(tf.constant(TEXTS), verbose=0),
        atol=1e-5,
    )
    assert anonymous.response.status_code == 401
    assert over_quota.response.status_code == 429
    assert "quota" in over_quota.response.json()["error"].lower()
    assert [
        (r.model, r.instances, r.status)
        for r in _ledger(served, "kserve_small")
    ] == [("digits", 2, 200)]
    assert [
        (r.model, r.instances, r.status) for r in _ledger(served, "acme")[-4:]
    ] == [
        ("digits", 4, 200),
        ("text", 3, 200),
        ("image", 3, 200),
        ("recommender", 2, 200),
    ]
