"""TF Serving's gRPC API, called with TF Serving's own stubs.

One app (`create_app(..., grpc_port=...)`) runs in a real uvicorn server
on loopback in a thread of this process, so the answers can be compared
with the Keras models and the recommender that were served. The client
is `tensorflow_serving.apis`' `PredictionServiceStub` and
`ModelServiceStub` over a real channel; keys go as metadata, and the
ledger is read back from the SQLite file.
"""

import json
import subprocess
import threading
import time

import grpc
import keras
import numpy as np
import pytest
import tensorflow as tf
import uvicorn
from serving_helpers import CLI
from serving_helpers import CONFIG
from serving_helpers import REPO_ROOT
from serving_helpers import Server
from serving_helpers import export_half_plus_three
from serving_helpers import export_recommender
from serving_helpers import free_port
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.apis import regression_pb2

from aiservice_kit import build_cnn
from aiservice_kit.serving import create_app
from aiservice_kit.serving.auth import KeyStore
from aiservice_kit.serving.metering import SQLiteMeter

pytestmark = pytest.mark.large

TEXTS = ["free prize now", "see you at lunch", "win cash now"]


def _text_classifier() -> keras.Model:
    keras.utils.set_random_seed(3)
    vectorizer = keras.layers.TextVectorization(
        max_tokens=50, output_mode="multi_hot"
    )
    vectorizer.adapt(tf.constant(TEXTS))
    inputs = keras.Input(shape=(), dtype="string", name="text")
    outputs = keras.layers.Dense(2, activation="softmax", name="probabilities")(
        vectorizer(inputs)
    )
    return keras.Model(inputs, outputs)


def _recommender():
    from aiservice_kit.recommenders import CosineRecommender

    users = ["u1", "u1", "u2", "u2", "u3", "u3", "u4"]
    items = ["a", "b", "a", "c", "b", "c", "d"]
    return CosineRecommender(n_neighbors=3).fit((users, items))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The server, its stubs, its keys and the Keras models it serves."""
    root = tmp_path_factory.mktemp("grpc")
    keras.utils.set_random_seed(1)
    cnn = build_cnn((12, 12), num_classes=3, filters=(4,), dense_units=8)
    text = _text_classifier()
    inputs = keras.Input(shape=(3,), name="x")
    regressor = keras.Model(
        inputs, keras.layers.Dense(1, name="predictions")(inputs)
    )
    export_recommender(root / "recommender")
    (root / "config.json").write_text(json.dumps(CONFIG))
    db = root / "service.db"
    store = KeyStore(db)
    keys = {
        name: store.create(name, plan, models)
        for name, plan, models in (
            ("pro", "pro", None),
            ("quota", "quota", None),
            ("limited", "limited", None),
            ("text-only", "pro", ["text"]),
        )
    }
    store.close()
    grpc_port = free_port()
    app = create_app(
        {
            "cnn": cnn,
            "text": text,
            "regressor": regressor,
            "recommender": root / "recommender",
        },
        db=db,
        config=root / "config.json",
        grpc_port=grpc_port,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=free_port(),
            log_level="warning",
            ws="none",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.05)
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    yield {
        "predict": prediction_service_pb2_grpc.PredictionServiceStub(channel),
        "models": model_service_pb2_grpc.ModelServiceStub(channel),
        "keys": {name: secret for name, (secret, _) in keys.items()},
        "ids": {name: record.id for name, (_, record) in keys.items()},
        "db": db,
        "app": app,
        "cnn": cnn,
        "text": text,
        "regressor": regressor,
    }
    channel.close()
    server.should_exit = True
    thread.join(timeout=60)


def _bearer(secret: str) -> tuple:
    return (("authorization", f"Bearer {secret}"),)


def _predict_request(model: str, **inputs) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


def _input_name(model: keras.Model) -> str:
    return model.inputs[0].name


def _records(served, key: str):
    meter = SQLiteMeter(served["db"])
    try:
        return meter.records(key_id=served["ids"][key])
    finally:
        meter.close()


def _code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()


def test_predict_answers_as_the_keras_model_and_is_metered(served):
    images = np.random.default_rng(0).integers(0, 256, (4, 12, 12), "uint8")
    expected = served["cnn"].predict(images, verbose=0)
    before = len(_records(served, "pro"))
    request = _predict_request("cnn", **{_input_name(served["cnn"]): images})

    response = served["predict"].Predict(
        request, metadata=_bearer(served["keys"]["pro"]), timeout=60
    )

    probabilities = tf.make_ndarray(response.outputs["probabilities"])
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-7)
    assert response.model_spec.name == "cnn"
    assert response.model_spec.signature_name == "serving_default"
    records = _records(served, "pro")[before:]
    assert [(r.model, r.status, r.instances) for r in records] == [
        ("cnn", 200, 4)
    ]
    assert records[0].request_bytes == request.ByteSize()
    assert records[0].response_bytes == response.ByteSize()
    assert records[0].version == response.model_spec.version.value


def test_predict_by_version_with_an_output_filter(served):
    images = np.zeros((1, 12, 12), "uint8")
    request = _predict_request("cnn", **{_input_name(served["cnn"]): images})
    request.model_spec.signature_name = "predict"
    request.output_filter.append("probabilities")
    version = served["predict"].Predict(
        request, metadata=_bearer(served["keys"]["pro"]), timeout=60
    )
    request.model_spec.version.value = version.model_spec.version.value

    response = served["predict"].Predict(
        request, metadata=_bearer(served["keys"]["pro"]), timeout=60
    )

    assert list(response.outputs) == ["probabilities"]
    assert response.model_spec.signature_name == "predict"
    request.model_spec.version_label = "stable"  # no labels configured
    with pytest.raises(grpc.RpcError) as caught:
        served["predict"].Predict(
            request, metadata=_bearer(served["keys"]["pro"]), timeout=60
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Unrecognized servable version label: stable" in (
        caught.value.details()
    )
    request.model_spec.version.value = 99
    assert (
        _code(
            lambda: served["predict"].Predict(
                request, metadata=_bearer(served["keys"]["pro"]), timeout=60
            )
        )
        == grpc.StatusCode.NOT_FOUND
    )


def test_predict_takes_raw_strings(served):
    texts = np.array([t.encode() for t in TEXTS], dtype=object)
    expected = served["text"].predict(tf.constant(TEXTS), verbose=0)

    response = served["predict"].Predict(
        _predict_request("text", text=texts),
        metadata=(("x-api-key", served["keys"]["text-only"]),),
        timeout=60,
    )

    np.testing.assert_allclose(
        tf.make_ndarray(response.outputs["probabilities"]), expected, rtol=1e-5
    )


def test_predict_answers_as_the_recommender(served):
    history = np.array([[b"a", b"b"], [b"c", b""]], dtype=object)
    expected_ids, expected_scores = _recommender().recommend(
        None, 2, user_items=[["a", "b"], ["c"]], unknown_items="ignore"
    )

    response = served["predict"].Predict(
        _predict_request("recommender", item_ids=history),
        metadata=_bearer(served["keys"]["pro"]),
        timeout=60,
    )

    ids = tf.make_ndarray(response.outputs["item_ids"])
    assert (
        ids.astype(str).tolist()
        == np.asarray(expected_ids).astype(str).tolist()
    )
    np.testing.assert_allclose(
        tf.make_ndarray(response.outputs["scores"]), expected_scores, rtol=1e-5
    )


def test_classify_answers_tf_examples_as_tf_serving(served):
    images = np.random.default_rng(1).integers(0, 256, (3, 12, 12), "uint8")
    expected = served["cnn"].predict(images, verbose=0)
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "cnn"
    name = _input_name(served["cnn"])
    for image in images:
        example = request.input.example_list.examples.add()
        example.features.feature[name].int64_list.value.extend(
            image.reshape(-1).tolist()
        )
    before = len(_records(served, "pro"))

    response = served["predict"].Classify(
        request, metadata=_bearer(served["keys"]["pro"]), timeout=60
    )

    rows = response.result.classifications
    assert [[c.label for c in row.classes] for row in rows] == [
        ["0", "1", "2"]
    ] * 3
    np.testing.assert_allclose(
        [[c.score for c in row.classes] for row in rows], expected, rtol=1e-5
    )
    assert response.model_spec.signature_name == "classification"
    records = _records(served, "pro")[before:]
    assert [(r.model, r.status, r.instances) for r in records] == [
        ("cnn", 200, 3)
    ]


def test_classify_merges_the_context_into_each_example(served):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "text"
    listed = request.input.example_list_with_context
    listed.context.features.feature["text"].bytes_list.value.append(b"x")
    for text in TEXTS[:2]:
        example = listed.examples.add()
        example.features.feature["text"].bytes_list.value.append(text.encode())
    expected = served["text"].predict(tf.constant(TEXTS[:2]), verbose=0)

    response = served["predict"].Classify(
        request, metadata=_bearer(served["keys"]["pro"]), timeout=60
    )

    scores = [
        [c.score for c in r.classes] for r in response.result.classifications
    ]
    np.testing.assert_allclose(scores, expected, rtol=1e-5)


def test_classify_is_held_to_predicts_ranges_and_a_bounded_context(served):
    pro = _bearer(served["keys"]["pro"])
    stub = served["predict"]
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "cnn"
    example = request.input.example_list.examples.add()
    pixels = [0] * 143 + [256]  # the uint8 cast would make it 0
    example.features.feature[
        _input_name(served["cnn"])
    ].int64_list.value.extend(pixels)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Classify(request, metadata=pro, timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "uint8 values in [0, 255]" in caught.value.details()

    # A 40 kB context copied into 1,000 examples would be 40 MB.
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "text"
    listed = request.input.example_list_with_context
    context = listed.context.features.feature["text"]
    context.bytes_list.value.append(b"x" * 40_000)
    for _ in range(1000):
        listed.examples.add()
    with pytest.raises(grpc.RpcError) as caught:
        stub.Classify(request, metadata=pro, timeout=60)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "context copied into each" in caught.value.details()


def test_regress_answers_one_float_per_example(served):
    rows = np.random.default_rng(2).normal(size=(4, 3)).astype("float32")
    expected = served["regressor"].predict(rows, verbose=0).reshape(-1)
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "regressor"
    for row in rows:
        example = request.input.example_list.examples.add()
        example.features.feature["x"].float_list.value.extend(row.tolist())

    response = served["predict"].Regress(
        request, metadata=_bearer(served["keys"]["pro"]), timeout=60
    )

    values = [r.value for r in response.result.regressions]
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-6)
    assert response.model_spec.signature_name == "regression"
    request.input.Clear()
    assert (
        _code(
            lambda: served["predict"].Regress(
                request, metadata=_bearer(served["keys"]["pro"]), timeout=60
            )
        )
        == grpc.StatusCode.INVALID_ARGUMENT
    )


def test_metadata_and_status(served):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "cnn"
    request.metadata_field.append("signature_def")
    metadata = served["predict"].GetModelMetadata(
        request, metadata=_bearer(served["keys"]["pro"]), timeout=60
    )
    signatures = get_model_metadata_pb2.SignatureDefMap()
    metadata.metadata["signature_def"].Unpack(signatures)
    assert {"serving_default", "predict", "classification"} <= set(
        signatures.signature_def
    )
    classify = signatures.signature_def["classification"]
    assert list(classify.inputs) == ["inputs"]
    assert classify.inputs["inputs"].dtype == tf.string.as_datatype_enum
    assert set(classify.outputs) == {"classes", "scores"}

    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "cnn"
    status = served["models"].GetModelStatus(
        status_request, metadata=_bearer(served["keys"]["pro"]), timeout=60
    )
    (row,) = status.model_version_status
    assert row.state == row.AVAILABLE
    assert row.version == metadata.model_spec.version.value


def test_keys_models_and_inputs_get_tf_servings_codes(served):
    images = np.zeros((1, 12, 12), "uint8")
    good = _predict_request("cnn", **{_input_name(served["cnn"]): images})
    stub = served["predict"]

    def code(request, metadata=()) -> grpc.StatusCode:
        return _code(lambda: stub.Predict(request, metadata=metadata))

    assert code(good) == grpc.StatusCode.UNAUTHENTICATED
    assert code(good, _bearer("not-a-key")) == grpc.StatusCode.UNAUTHENTICATED
    assert (
        code(good, (("x-api-key", served["keys"]["text-only"]),))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    pro = _bearer(served["keys"]["pro"])
    unknown = _predict_request("nope", x=images)
    assert code(unknown, pro) == grpc.StatusCode.NOT_FOUND
    floats = _predict_request(
        "cnn", **{_input_name(served["cnn"]): images.astype("float64")}
    )
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(floats, metadata=pro)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "uint8" in caught.value.details()
    assert code(_predict_request("cnn", x=images), pro) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    before = _records(served, "pro")
    assert before[-1].status == 400  # a bad input is answered and metered


def test_a_spent_quota_is_resource_exhausted(served):
    quota = _bearer(served["keys"]["quota"])  # 3 instances a month
    images = np.zeros((2, 12, 12), "uint8")
    request = _predict_request("cnn", **{_input_name(served["cnn"]): images})
    served["predict"].Predict(request, metadata=quota, timeout=60)

    with pytest.raises(grpc.RpcError) as caught:
        served["predict"].Predict(request, metadata=quota, timeout=60)

    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "quota" in caught.value.details()
    trailing = dict(caught.value.trailing_metadata())
    assert int(trailing["retry-after"]) >= 1
    records = _records(served, "quota")
    assert [(r.status, r.instances) for r in records] == [(200, 2)]


def test_serve_command_opens_the_grpc_port(tmp_path):
    export_half_plus_three(tmp_path / "half")
    grpc_port = free_port()
    server = Server(
        [
            "--model",
            f"half={tmp_path / 'half'}",
            "--db",
            str(tmp_path / "service.db"),
            "--grpc-port",
            str(grpc_port),
        ],
        tmp_path / "server.log",
    ).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            response = stub.Predict(
                _predict_request(
                    "half", x=np.array([1.0, 2.0, 5.0], "float32")
                ),
                timeout=60,
            )
    finally:
        server.stop()

    np.testing.assert_allclose(
        tf.make_ndarray(response.outputs["y"]), [3.5, 4.0, 5.5]
    )
    assert response.model_spec.version.value == 123
    meter = SQLiteMeter(tmp_path / "service.db")
    records = meter.records()
    meter.close()
    assert [(r.key_id, r.model, r.instances) for r in records] == [
        (None, "half", 3)
    ]


def test_the_grpc_port_must_differ_from_the_rest_port(tmp_path):
    result = subprocess.run(
        [
            *CLI,
            "serve",
            "--model",
            f"m={tmp_path}",
            "--port",
            "8501",
            "--grpc-port",
            "8501",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )

    assert result.returncode == 2
    assert "--grpc-port must differ from --port" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_rate_limit_is_resource_exhausted(served):
    limited = _bearer(served["keys"]["limited"])  # 0.2/s, a burst of 2
    images = np.zeros((1, 12, 12), "uint8")
    request = _predict_request("cnn", **{_input_name(served["cnn"]): images})
    codes = []
    for _ in range(3):
        try:
            served["predict"].Predict(request, metadata=limited, timeout=60)
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as error:
            codes.append(error.code())

    assert codes == [grpc.StatusCode.OK] * 2 + [
        grpc.StatusCode.RESOURCE_EXHAUSTED
    ]
    assert len(_records(served, "limited")) == 2  # refused: not metered


def test_declared_shapes_are_checked_before_any_tensor_is_built(served):
    pro = _bearer(served["keys"]["pro"])
    stub = served["predict"]
    image = _input_name(served["cnn"])

    def refused(model: str, name: str, dims, **values) -> str:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        proto = request.inputs[name]
        proto.dtype = values.pop("dtype")
        for size in dims:
            proto.tensor_shape.dim.add().size = size
        for field, value in values.items():
            getattr(proto, field).extend(value)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(request, metadata=pro, timeout=60)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        return caught.value.details()

    # A negative batch would pass `max_instances_per_request` (and
    # TensorFlow reads -1 as "infer it"): refused, as TF Serving does.
    rows = np.zeros((5000, 12, 12), "uint8").ravel().tolist()
    message = refused(
        "cnn", image, [-1, 12, 12], dtype=tf.uint8.as_datatype_enum,
        int_val=rows,
    )  # fmt: skip
    assert f"Input '{image}'" in message and ">= 0" in message
    # One value declared as 2^27 pixels: the signature's shape refuses it
    # before TensorFlow fills a gigabyte.
    started = time.perf_counter()
    message = refused(
        "cnn", image, [1, 12, 1 << 27], dtype=tf.uint8.as_datatype_enum,
        int_val=[0],
    )  # fmt: skip
    assert "expects shape [-1, 12, 12]" in message
    assert time.perf_counter() - started < 5
    # Where the signature takes any length, the fill is bounded.
    message = refused(
        "recommender", "item_ids", [1, 1 << 24],
        dtype=tf.string.as_datatype_enum, string_val=[b"a"],
    )  # fmt: skip
    assert "1 were sent" in message and "Send every value" in message
    # More values than the shape holds, a dtype no input takes, string
    # bytes in tensor_content: named, before TensorFlow reads them.
    message = refused(
        "cnn", image, [1, 12, 12], dtype=tf.uint8.as_datatype_enum,
        int_val=[0] * 200,
    )  # fmt: skip
    assert "holds 144 values; received 200" in message
    message = refused(
        "cnn", image, [1, 12, 12], dtype=tf.resource.as_datatype_enum
    )
    assert "received dtype DT_RESOURCE" in message
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "recommender"
    proto = request.inputs["item_ids"]
    proto.dtype = tf.string.as_datatype_enum
    proto.tensor_shape.dim.add().size = 1
    proto.tensor_shape.dim.add().size = 1
    proto.tensor_content = b"abcd"
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(request, metadata=pro, timeout=60)
    assert "string_val, not tensor_content" in caught.value.details()


def test_a_call_cancelled_while_its_record_waits_is_not_billed(served):
    import sqlite3

    pro = _bearer(served["keys"]["pro"])
    images = np.zeros((2, 12, 12), "uint8")
    request = _predict_request("cnn", **{_input_name(served["cnn"]): images})
    before = len(_records(served, "pro"))
    # Another program holds SQLite's write lock: the call's record waits
    # for the writer, and the client's deadline passes first.
    holder = sqlite3.connect(served["db"], isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(grpc.RpcError) as caught:
            served["predict"].Predict(request, metadata=pro, timeout=1.0)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(0.5)
    finally:
        holder.execute("COMMIT")
        holder.close()
    deadline = time.monotonic() + 30
    while len(_records(served, "pro")) == before:
        assert time.monotonic() < deadline, "the record was never committed"
        time.sleep(0.1)
    (record,) = _records(served, "pro")[before:]
    # Recorded (the model ran), not billed: the bill counts status 200.
    assert (record.status, record.instances) == (499, 2)


def test_a_message_counts_against_the_models_bytes_in_flight(served):
    pro = _bearer(served["keys"]["pro"])
    images = np.zeros((1, 12, 12), "uint8")
    request = _predict_request("cnn", **{_input_name(served["cnn"]): images})
    admission = served["app"].state.service.registry.models["cnn"].admission
    limit = admission.limits.max_inflight_bytes
    # Other calls hold all but 100 bytes of the model's budget.
    admission.reserve_bytes(limit - 100, "key:someone-else")
    try:
        assert request.ByteSize() > 100
        with pytest.raises(grpc.RpcError) as caught:
            served["predict"].Predict(request, metadata=pro, timeout=60)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"max_inflight_bytes={limit}" in caught.value.details()
        assert dict(caught.value.trailing_metadata())["retry-after"] == "1"
    finally:
        admission.release_bytes(limit - 100, "key:someone-else")
    served["predict"].Predict(request, metadata=pro, timeout=60)
    assert admission.inflight_bytes == 0  # each call gave its bytes back
