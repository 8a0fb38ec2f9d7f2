"""A version's runtime (TensorFlow, LiteRT, ONNX Runtime), chosen by proof.

Small `build_cnn` models are exported once with `runtimes=`; one version
is tampered with (its LiteRT artifacts replaced by another model's, same
signature), so its proof must fail. One app serves them in a real uvicorn
server on loopback, in a thread of this process, with REST, gRPC and the
Open Inference Protocol, keys and quotas on.
"""

import json
import os
import shutil
import threading
import time

import grpc
import httpx
import keras
import numpy as np
import pytest
import tensorflow as tf
import uvicorn
from serving_helpers import CONFIG
from serving_helpers import export_text_classifier
from serving_helpers import free_port
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from aiservice_kit import build_cnn
from aiservice_kit._layout import read_metadata
from aiservice_kit.cli import main as cli_main
from aiservice_kit.export import export_saved_model
from aiservice_kit.export.verify import compare_outputs
from aiservice_kit.export.verify import prove_runtime
from aiservice_kit.serving import create_app
from aiservice_kit.serving._servable import load_version
from aiservice_kit.serving.auth import KeyStore
from aiservice_kit.serving.batching import BatchingConfig
from aiservice_kit.serving.config import parse_config
from aiservice_kit.serving.registry import ModelConfig
from aiservice_kit.serving.registry import ModelRegistry

SHAPE = (12, 12)


def _cnn(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return build_cnn(SHAPE, num_classes=3, filters=(4,), dense_units=8)


def _copy_version(source, base, version: int):
    """Publishes a copy of a version directory atomically, as an exporter."""
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".tmp-{version}-copy"
    shutil.copytree(source, tmp)
    os.rename(tmp, base / str(version))
    return base / str(version)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("runtimes")
    model = _cnn(5)
    # verify=False: the SavedModel's own check is tested elsewhere; each
    # runtime artifact is still proven against the SavedModel.
    good = export_saved_model(
        model, root / "cnn", 1, verify=False, runtimes=("litert", "onnx")
    )
    other = export_saved_model(
        _cnn(6), root / "other", 1, verify=False, runtimes="litert"
    )
    # The same signatures, another model's weights: a LiteRT conversion
    # that differs from the SavedModel it sits beside.
    tampered = _copy_version(good, root / "tampered", 1)
    for artifact in (other / "runtimes").glob("*.tflite"):
        shutil.copy(artifact, tampered / "runtimes" / artifact.name)
    return {"root": root, "model": model, "good": good, "tampered": tampered}


def _images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(
        0, 256, (count, *SHAPE), "uint8"
    )


# --- export


def test_export_writes_proven_artifacts_and_records_them(exported):
    metadata = read_metadata(exported["good"])

    assert metadata["runtimes"] == {
        "litert": {
            "predict": "runtimes/predict.tflite",
            "serving_default": "runtimes/serving_default.tflite",
        },
        "onnx": {
            "predict": "runtimes/predict.onnx",
            "serving_default": "runtimes/serving_default.onnx",
        },
    }
    assert metadata["proof_inputs"] == "runtimes/proof_inputs.npz"
    for relative in metadata["runtimes"]["litert"].values():
        assert (exported["good"] / relative).is_file()
    with pytest.raises(ValueError, match="runtimes"):
        export_saved_model(
            exported["model"], exported["root"] / "x", runtimes="tf"
        )


def test_a_string_model_is_refused_explicitly_and_skipped_by_auto(tmp_path):
    with pytest.raises(ValueError, match=r"'litert'.*TextVectorization"):
        _export_text(tmp_path / "explicit", runtimes="litert")
    assert list((tmp_path / "explicit").iterdir()) == []  # nothing published
    auto = read_metadata(_export_text(tmp_path / "auto", runtimes="auto"))

    assert auto["runtimes"] == {}
    assert set(auto["runtimes_skipped"]) == {"litert", "onnx"}
    assert "TextVectorization" in auto["runtimes_skipped"]["litert"]
    assert "proof_inputs" not in auto


def _export_text(base, **kwargs):
    keras.utils.set_random_seed(3)
    vectorizer = keras.layers.TextVectorization(
        max_tokens=50, output_mode="multi_hot"
    )
    vectorizer.adapt(tf.constant(["free prize now", "see you at lunch"]))
    inputs = keras.Input(shape=(), dtype="string", name="text")
    outputs = keras.layers.Dense(2, activation="softmax", name="probabilities")(
        vectorizer(inputs)
    )
    return export_saved_model(
        keras.Model(inputs, outputs), base, 1, verify=False, **kwargs
    )


# --- load: the proof


def test_outputs_agree_within_the_verify_tolerance_and_ids_exactly():
    floats = {"p": np.array([0.5, 2.0], "float32")}
    assert compare_outputs(floats, {"p": floats["p"] + 1e-6}) is None
    assert "'p' differs by up to 0.001 (tolerance 2e-05)" in compare_outputs(
        floats, {"p": floats["p"] + 1e-3}
    )
    ids = {"c": np.array([1, 2])}
    assert "'c' (int64) differs in 1 of 2 values" in compare_outputs(
        ids, {"c": np.array([1, 3])}
    )
    nan = {"p": np.array([np.nan, 1.0])}
    assert compare_outputs(nan, {"p": np.array([np.nan, 1.0])}) is None
    assert "differs" in compare_outputs(
        {"p": np.ones(2)}, {"p": np.array([np.nan, 1.0])}
    )
    assert "returns the outputs ['p'], the SavedModel ['c']" in (
        compare_outputs(ids, {"p": ids["c"]})
    )
    assert "has shape [1]" in compare_outputs(ids, {"c": np.array([1])})
    assert "'c' is int32, the SavedModel's int64" in compare_outputs(
        ids, {"c": ids["c"].astype("int32")}
    )


def test_inputs_the_savedmodel_refuses_prove_nothing():
    def refuses(batch):
        raise ValueError("ids out of range")

    def echo(batch):
        return dict(batch)

    rows = {"ids": np.arange(4)}
    assert prove_runtime(echo, echo, rows) is None
    assert "cannot be proven" in prove_runtime(refuses, echo, rows)
    assert "failed on a batch of 1: ValueError" in prove_runtime(
        echo, refuses, rows
    )


def test_a_conversion_that_differs_stays_on_tensorflow_saying_why(
    exported, caplog
):
    caplog.set_level("WARNING", logger="aiservice_kit.serving")
    path = exported["tampered"]
    explicit = load_version("m", 1, path, BatchingConfig(), runtime="litert")
    auto = load_version("m", 1, path, BatchingConfig(), runtime="auto")
    try:
        images = _images(3)
        answer = explicit.signatures["predict"].run({"image": images})
        expected = exported["model"].predict(images, verbose=0)
    finally:
        explicit.close()
        auto.close()

    assert explicit.runtime == "tensorflow"
    assert explicit.signatures["serving_default"].runtime == "tensorflow"
    assert "litert disagrees with TensorFlow" in explicit.runtime_note
    assert "'probabilities' differs by up to" in explicit.runtime_note
    np.testing.assert_allclose(answer["probabilities"], expected, rtol=1e-5)
    # auto goes on to the next proven runtime, and still says why not LiteRT
    assert auto.runtime == "onnx"
    assert auto.runtime_note.startswith("litert disagrees")
    assert auto.runtime_note.endswith("serving on onnx")
    assert "litert disagrees" in caplog.text


def test_litert_for_a_raw_string_model_is_refused_naming_why(tmp_path):
    base = tmp_path / "text"
    export_text_classifier(base)

    with pytest.raises(ValueError, match="takes raw strings"):
        load_version("t", 1, base / "1", BatchingConfig(), runtime="litert")
    model = ModelRegistry("t", ModelConfig(base, runtime="onnx"), load_version)
    model.scan()
    [row] = model.status()
    model.close()
    assert row.state == "END" and not model.ready
    assert "runtime='onnx' cannot serve model 't' version 1" in (
        row.error_message
    )
    assert "serving_default.text takes raw strings" in row.error_message


def test_a_bad_runtime_setting_is_refused_before_serving(tmp_path, capsys):
    with pytest.raises(ValueError, match="`runtime` must be one of"):
        ModelConfig(tmp_path, runtime="tflite")
    with pytest.raises(ValueError, match=r"models.m.*runtime"):
        parse_config({"models": {"m": {"base_path": ".", "runtime": "gpu"}}})
    code = cli_main(["serve", "--model", f"m={tmp_path}", "--runtime", "x"])
    assert code == 2
    assert "--runtime: invalid choice: 'x'" in capsys.readouterr().err
    config = parse_config(
        {"models": {"m": {"base_path": ".", "runtime": "onnx"}}}
    )
    assert config.models["m"].runtime == "onnx"


# --- served


@pytest.fixture(scope="module")
def served(exported, tmp_path_factory):
    root = tmp_path_factory.mktemp("runtimes-served")
    reload_base = root / "reload"
    _copy_version(exported["good"], reload_base, 1)
    config = dict(CONFIG)
    base = exported["good"].parent
    config["models"] = {
        "litert": {"base_path": str(base), "runtime": "litert"},
        "onnx": {"base_path": str(base), "runtime": "onnx"},
        "tampered": {
            "base_path": str(exported["tampered"].parent),
            "runtime": "litert",
        },
        "reload": {"base_path": str(reload_base), "keep_versions": 2},
    }
    db = root / "service.db"
    store = KeyStore(db)
    keys = {
        plan: store.create(plan, plan, None)[0] for plan in ("pro", "quota")
    }
    store.close()
    grpc_port = free_port()
    app = create_app(
        db=db,
        config=parse_config(config),
        poll_interval_s=0.2,
        grpc_port=grpc_port,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=free_port(), log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.05)
    url = f"http://127.0.0.1:{server.config.port}"
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    headers = {"Authorization": f"Bearer {keys['pro']}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        yield {
            "http": http,
            "url": url,
            "keys": keys,
            "grpc": prediction_service_pb2_grpc.PredictionServiceStub(channel),
            "models": model_service_pb2_grpc.ModelServiceStub(channel),
            "reload": reload_base,
        }
    channel.close()
    server.should_exit = True
    thread.join(timeout=60)


def _status(http, model):
    response = http.get(f"/v1/models/{model}")
    assert response.status_code == 200, response.text
    return response.json()["model_version_status"]


@pytest.mark.parametrize("runtime", ["litert", "onnx"])
def test_rest_predict_on_a_runtime_equals_keras(served, exported, runtime):
    images = _images(5, seed=1)
    expected = exported["model"].predict(images, verbose=0)
    http = served["http"]

    default = http.post(
        f"/v1/models/{runtime}:predict", json={"instances": images.tolist()}
    )
    one = http.post(
        f"/v1/models/{runtime}:predict",
        json={"signature_name": "predict", "instances": images[:1].tolist()},
    )

    assert default.status_code == 200, default.text
    np.testing.assert_allclose(
        default.json()["predictions"], expected, rtol=1e-5, atol=1e-6
    )
    assert one.json()["predictions"][0]["predicted_class"] == int(
        expected[0].argmax()
    )
    [row] = _status(http, runtime)
    assert row["runtime"] == runtime
    assert row["status"] == {"error_code": "OK", "error_message": ""}


def test_grpc_predict_and_v2_infer_run_on_their_runtimes(served, exported):
    images = _images(4, seed=2)
    expected = exported["model"].predict(images, verbose=0)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "litert"
    request.inputs["image"].CopyFrom(tf.make_tensor_proto(images))
    metadata = (("authorization", f"Bearer {served['keys']['pro']}"),)

    response = served["grpc"].Predict(request, metadata=metadata, timeout=60)
    infer = served["http"].post(
        "/v2/models/onnx/infer",
        json={
            "inputs": [
                {
                    "name": "image",
                    "shape": list(images.shape),
                    "datatype": "UINT8",
                    "data": images.reshape(-1).tolist(),
                }
            ]
        },
    )

    np.testing.assert_allclose(
        tf.make_ndarray(response.outputs["probabilities"]),
        expected,
        rtol=1e-5,
        atol=1e-6,
    )
    assert infer.status_code == 200, infer.text
    [output] = infer.json()["outputs"]
    np.testing.assert_allclose(
        np.reshape(output["data"], output["shape"]),
        expected,
        rtol=1e-5,
        atol=1e-6,
    )


def test_quotas_and_metering_still_apply_on_a_runtime(served):
    http = served["http"]
    quota = {"Authorization": f"Bearer {served['keys']['quota']}"}
    body = {"instances": _images(3, seed=3).tolist()}

    first = http.post("/v1/models/litert:predict", json=body, headers=quota)
    second = http.post("/v1/models/onnx:predict", json=body, headers=quota)
    usage = http.get("/v1/usage", headers=quota)

    assert first.status_code == 200 and second.status_code == 429
    assert "Monthly quota" in second.json()["error"]
    assert usage.status_code == 200, usage.text
    assert "litert" in json.dumps(usage.json())


def test_a_tampered_version_serves_on_tensorflow_and_its_status_says_why(
    served, exported
):
    images = _images(2, seed=4)
    expected = exported["model"].predict(images, verbose=0)

    answer = served["http"].post(
        "/v1/models/tampered:predict", json={"instances": images.tolist()}
    )
    [row] = _status(served["http"], "tampered")

    np.testing.assert_allclose(
        answer.json()["predictions"], expected, rtol=1e-5, atol=1e-6
    )
    assert row["state"] == "AVAILABLE" and row["runtime"] == "tensorflow"
    assert row["status"]["error_code"] == "OK"
    assert "litert disagrees with TensorFlow" in row["status"]["error_message"]
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "tampered"
    metadata = (("authorization", f"Bearer {served['keys']['pro']}"),)
    [over_grpc] = (
        served["models"]
        .GetModelStatus(request, metadata=metadata, timeout=60)
        .model_version_status
    )
    assert over_grpc.status.error_message == row["status"]["error_message"]


def test_hot_reload_proves_the_new_version_again(served, exported):
    http = served["http"]
    assert [r["runtime"] for r in _status(http, "reload")] == ["litert"]

    _copy_version(exported["tampered"], served["reload"], 2)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = _status(http, "reload")
        if rows[0]["version"] == "2" and rows[0]["state"] == "AVAILABLE":
            break
        time.sleep(0.1)

    assert [(r["version"], r["runtime"]) for r in rows] == [
        ("2", "onnx"),
        ("1", "litert"),
    ]
    assert "litert disagrees" in rows[0]["status"]["error_message"]
    answer = http.post(
        "/v1/models/reload:predict", json={"instances": _images(1).tolist()}
    )
    assert answer.headers["x-model-version"] == "2"
