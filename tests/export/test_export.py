"""Export: versioned SavedModel, TFLite and ONNX, each checked against Keras."""

import json
import os
import threading
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from aiservice_kit import ExportError
from aiservice_kit import ExportMismatchError
from aiservice_kit import build_cnn
from aiservice_kit import export_onnx
from aiservice_kit import export_saved_model
from aiservice_kit import export_tflite
from aiservice_kit import verify_export
from aiservice_kit.export import METADATA_DIR
from aiservice_kit.export import METADATA_FILE
from aiservice_kit.export import list_versions
from aiservice_kit.export import load_artifact
from aiservice_kit.export import load_model
from aiservice_kit.export import preflight_onnx
from aiservice_kit.export import preflight_tflite
from aiservice_kit.export import read_export_metadata
from aiservice_kit.export import save_model
from aiservice_kit.export import write_versioned_saved_model
from aiservice_kit.models.sequence import build_lstm

FLOAT_TOLERANCE = 1e-5


def tiny_cnn(**kwargs):
    return build_cnn(
        (8, 8), num_classes=3, filters=(4,), dense_units=8, **kwargs
    )


def tiny_text_model():
    """A raw-string classifier: TextVectorization inside, like the builder."""
    vectorizer = keras.layers.TextVectorization(
        max_tokens=50, output_sequence_length=6, name="text_vectorization"
    )
    vectorizer.adapt(
        tf.constant(["free prize call now", "see you at lunch", "win cash"])
    )
    inputs = keras.Input(shape=(), dtype="string", name="text")
    x = vectorizer(inputs)
    x = keras.layers.Embedding(50, 4, name="embedding")(x)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="probabilities")(
        x
    )
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def sms_classifier(data_dir):
    """build_text_classifier on 400 real SMS messages (raw strings in)."""
    from aiservice_kit.models.text import build_text_classifier

    lines = (data_dir / "sms-spam-collection" / "SMSSpamCollection").read_text(
        encoding="utf-8"
    )
    rows = [line.split("\t", 1) for line in lines.splitlines()[:500]]
    labels = np.array([label == "spam" for label, _ in rows], np.int64)
    texts = np.array([text for _, text in rows], dtype=object)
    keras.utils.set_random_seed(0)
    model = build_text_classifier(
        texts[:400],
        class_names=["ham", "spam"],
        encoder="cnn",
        max_tokens=2000,
        embedding_dim=16,
        units=16,
    )
    model.fit(tf.constant(texts[:400].astype(str)), labels[:400], verbose=0)
    return model, texts[400:]


def tiny_module_writer(tmp_dir):
    module = tf.Module()
    module.serve = tf.function(
        lambda x: {"predictions": 2.0 * x},
        input_signature=[tf.TensorSpec([None], tf.float32, name="x")],
    )
    tf.saved_model.save(
        module, str(tmp_dir), signatures={"serving_default": module.serve}
    )


def serve(version_dir, signature="serving_default", **inputs):
    fn = tf.saved_model.load(str(version_dir)).signatures[signature]
    outputs = fn(**{name: tf.constant(v) for name, v in inputs.items()})
    return {name: value.numpy() for name, value in outputs.items()}


# ---------------------------------------------------------------- layout


def test_versioned_writer_publishes_next_versions_with_metadata(tmp_path):
    base = tmp_path / "model"
    first = write_versioned_saved_model(
        base, None, tiny_module_writer, {"task": "regression"}
    )
    second = write_versioned_saved_model(
        base, None, tiny_module_writer, {"task": "regression"}
    )
    tenth = write_versioned_saved_model(
        base, 10, tiny_module_writer, {"task": "regression", "extra": 1}
    )
    assert (first.name, second.name, tenth.name) == ("1", "2", "10")
    assert list_versions(base) == [1, 2, 10]
    assert sorted(os.listdir(base)) == ["1", "10", "2"]  # no temp dirs left
    meta = read_export_metadata(tenth)
    assert meta["format_version"] == 1
    assert meta["task"] == "regression"
    assert meta["extra"] == 1
    assert meta["class_names"] is None
    assert meta["created_at"].endswith("+00:00")
    assert meta["library_version"]
    result = serve(second, x=np.array([1.5], np.float32))
    np.testing.assert_allclose(result["predictions"], [3.0])
    with pytest.raises(FileExistsError, match="already exists"):
        write_versioned_saved_model(
            base, 2, tiny_module_writer, {"task": "regression"}
        )


def test_versioned_writer_publishes_nothing_on_failure(tmp_path):
    base = tmp_path / "model"

    def failing(tmp_dir):
        (tmp_dir / "half-written").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_versioned_saved_model(base, None, failing, {"task": "regression"})
    with pytest.raises(ExportError, match="saved_model.pb"):
        write_versioned_saved_model(
            base, None, lambda tmp: None, {"task": "regression"}
        )
    assert os.listdir(base) == []
    with pytest.raises(ValueError, match="task"):
        write_versioned_saved_model(
            base, None, tiny_module_writer, {"task": "ranking"}
        )
    with pytest.raises(ValueError, match="version"):
        write_versioned_saved_model(
            base, 0, tiny_module_writer, {"task": "regression"}
        )


def test_list_versions_ignores_temp_and_other_names(tmp_path):
    for name in ("3", "12", ".tmp-4-abc", "latest", "0"):
        (tmp_path / name).mkdir()
    (tmp_path / "7").write_text("a file, not a version")
    assert list_versions(tmp_path) == [3, 12]
    assert list_versions(tmp_path / "missing") == []


def test_read_export_metadata_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="aiservice_kit"):
        read_export_metadata(tmp_path)
    (tmp_path / METADATA_DIR).mkdir()
    (tmp_path / METADATA_DIR / METADATA_FILE).write_text(
        json.dumps({"format_version": 99, "task": "regression"})
    )
    with pytest.raises(ValueError, match="format_version"):
        read_export_metadata(tmp_path)


def test_concurrent_reader_never_sees_a_partial_version(tmp_path):
    """A poller loads every version it sees while versions are written."""
    base = tmp_path / "model"
    base.mkdir()
    model = tiny_cnn()
    images = np.random.default_rng(0).integers(0, 256, (2, 8, 8), np.uint8)
    expected = model.predict(images, verbose=0)
    seen, failures = set(), []
    done = threading.Event()

    def poll():
        while True:
            finished = done.is_set()  # one last pass after the writer ends
            for version in list_versions(base):
                if version in seen:
                    continue
                path = base / str(version)
                try:
                    read_export_metadata(path)
                    out = serve(path, image=images)
                    np.testing.assert_allclose(
                        out["probabilities"], expected, atol=FLOAT_TOLERANCE
                    )
                except Exception as error:  # any failure is a partial dir
                    failures.append(f"version {version}: {error!r}")
                seen.add(version)
            if finished:
                return
            time.sleep(0.002)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        for _ in range(4):
            export_saved_model(model, base, verify=False)
    finally:
        done.set()
        poller.join(timeout=120)
    assert failures == []
    assert seen == {1, 2, 3, 4}


# ---------------------------------------------------------------- SavedModel


def test_saved_model_signature_takes_raw_pixels_and_names_outputs(tmp_path):
    # Augmentation inside the model: the export must not apply it.
    model = tiny_cnn(augmentation="basic")
    version_dir = export_saved_model(
        model, tmp_path, class_names=["a", "b", "c"]
    )
    assert version_dir == tmp_path / "1"
    loaded = tf.saved_model.load(str(version_dir))
    signature = loaded.signatures["serving_default"]
    _, inputs = signature.structured_input_signature
    assert list(inputs) == ["image"]
    assert inputs["image"].dtype == tf.uint8
    assert inputs["image"].shape.as_list() == [None, 8, 8]
    # serving_default: one tensor, as Keras' `model.export` writes it.
    assert set(signature.structured_outputs) == {"probabilities"}
    every = loaded.signatures["predict"].structured_outputs
    assert set(every) == {"probabilities", "predicted_class"}
    images = np.random.default_rng(1).integers(0, 256, (5, 8, 8), np.uint8)
    first = serve(version_dir, image=images)
    second = serve(version_dir, image=images)
    np.testing.assert_array_equal(
        first["probabilities"], second["probabilities"]
    )
    expected = model.predict(images, verbose=0)
    np.testing.assert_allclose(
        first["probabilities"], expected, atol=FLOAT_TOLERANCE
    )
    every = serve(version_dir, signature="predict", image=images)
    assert every["predicted_class"].dtype == np.int64
    np.testing.assert_array_equal(
        every["predicted_class"], expected.argmax(axis=-1)
    )
    meta = read_export_metadata(version_dir)
    assert meta["task"] == "classification"
    assert meta["class_names"] == ["a", "b", "c"]
    assert meta["inputs"] == {
        "image": {"dtype": "uint8", "shape": [None, 8, 8]}
    }
    assert meta["outputs"]["probabilities"] == {
        "dtype": "float32",
        "shape": [None, 3],
    }
    assert set(meta["outputs"]) == {"probabilities"}
    assert meta["signatures"]["predict"]["outputs"]["predicted_class"] == {
        "dtype": "int64",
        "shape": [None],
    }


def test_unnamed_input_gets_a_stable_name(tmp_path):
    keys = []
    for build in range(2):
        keras.backend.clear_session() if build else None
        model = keras.Sequential(
            [
                keras.Input((3,)),
                keras.layers.Dense(4, name="hidden"),
                keras.layers.Dense(1, name="predictions"),
            ]
        )
        keys.append(model.inputs[0].name)
        version_dir = export_saved_model(model, tmp_path / str(build))
        assert read_export_metadata(version_dir)["inputs"] == {
            "inputs": {"dtype": "float32", "shape": [None, 3]}
        }
        x = np.ones((2, 3), np.float32)
        np.testing.assert_allclose(
            serve(version_dir, inputs=x)["predictions"],
            model.predict(x, verbose=0),
            atol=FLOAT_TOLERANCE,
        )
    assert all(key.startswith("keras_tensor") for key in keys)


def test_text_classifier_saved_model_takes_strings(sms_classifier, tmp_path):
    model, held_out = sms_classifier
    version_dir = export_saved_model(model, tmp_path)
    out = serve(version_dir, text=held_out)
    expected = model.predict(tf.constant(held_out.astype(str)), verbose=0)
    np.testing.assert_allclose(
        out["probabilities"], expected, atol=FLOAT_TOLERANCE
    )
    meta = read_export_metadata(version_dir)
    assert meta["inputs"] == {"text": {"dtype": "string", "shape": [None]}}
    assert meta["class_names"] == ["ham", "spam"]
    report = verify_export(model, version_dir, held_out)
    assert report.num_samples == 100
    assert report.max_abs_diff <= FLOAT_TOLERANCE
    assert report.class_agreement == 1.0


def test_model_whose_output_tells_no_task_exports_as_a_tensor_model(
    tmp_path,
):
    # Once refused ("Cannot tell the model's task"): any model exports, a
    # linear vector under its own output name, or as the task it is told.
    inputs = keras.Input((3,), name="features")
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(inputs))
    version_dir = export_saved_model(model, tmp_path)
    assert read_export_metadata(version_dir)["task"] == "tensor"
    assert set(serve(version_dir, features=np.ones((1, 3), np.float32))) == {
        "head"
    }
    version_dir = export_saved_model(model, tmp_path, task="regression")
    assert version_dir.name == "2"
    assert read_export_metadata(version_dir)["task"] == "regression"
    with pytest.raises(ValueError, match="task"):
        export_saved_model(model, tmp_path, task="ranking")
    with pytest.raises(TypeError, match="keras.Model"):
        export_saved_model("model.keras", tmp_path)


# ---------------------------------------------------------------- parity


def test_trained_mnist_cnn_float_formats_match_keras(
    trained_mnist_cnn, mnist_split, tmp_path
):
    _, _, x_test, _ = mnist_split
    sample = x_test[:200]
    artifacts = [
        export_saved_model(trained_mnist_cnn, tmp_path / "sm"),
        export_tflite(trained_mnist_cnn, tmp_path / "mnist.tflite"),
        export_onnx(trained_mnist_cnn, tmp_path / "mnist.onnx"),
    ]
    for artifact in artifacts:
        report = verify_export(trained_mnist_cnn, artifact, sample)
        assert report.num_samples == 200
        assert report.max_abs_diff <= FLOAT_TOLERANCE, report
        assert report.class_agreement == 1.0, report


@pytest.mark.large
def test_int8_tflite_of_mnist_cnn_keeps_accuracy(
    trained_mnist_cnn, mnist_split, tmp_path
):
    x_train, _, x_test, y_test = mnist_split
    float_path = export_tflite(trained_mnist_cnn, tmp_path / "f32.tflite")
    int8_path = export_tflite(
        trained_mnist_cnn,
        tmp_path / "int8.tflite",
        "int8",
        representative_data=x_train[:500],
    )
    report = verify_export(trained_mnist_cnn, int8_path, x_test)
    assert report.class_agreement >= 0.99, report
    keras_accuracy = np.mean(
        trained_mnist_cnn.predict(x_test, verbose=0).argmax(-1) == y_test
    )
    predicted = load_artifact(int8_path)(image=x_test)["predicted_class"]
    int8_accuracy = np.mean(predicted == y_test)
    assert keras_accuracy - int8_accuracy <= 0.005, (
        keras_accuracy,
        int8_accuracy,
    )
    assert int8_path.stat().st_size < 0.35 * float_path.stat().st_size
    # Calibrated on blank images, int8 saturates on real digits: the check
    # refuses the file and nothing is published.
    with pytest.raises(ExportMismatchError, match="class agreement"):
        export_tflite(
            trained_mnist_cnn,
            tmp_path / "bad.tflite",
            "int8",
            representative_data=np.zeros((50, 28, 28), np.uint8),
            sample_inputs=x_test[:200],
        )
    assert not (tmp_path / "bad.tflite").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "f32.tflite",
        "int8.tflite",
    ]


def test_lstm_exports_match_keras(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 10, 3)).astype(np.float32)
    unrolled = build_lstm((10, 3), num_classes=3, units=4, unroll=True)
    variable = build_lstm((None, 3), output_size=2, units=4)
    checks = [
        (unrolled, export_tflite(unrolled, tmp_path / "lstm.tflite")),
        (unrolled, export_onnx(unrolled, tmp_path / "lstm.onnx")),
        (unrolled, export_saved_model(unrolled, tmp_path / "sm")),
        (variable, export_saved_model(variable, tmp_path / "sm_var")),
        (variable, export_onnx(variable, tmp_path / "var.onnx")),
    ]
    for model, artifact in checks:
        report = verify_export(model, artifact, x)
        assert report.max_abs_diff <= FLOAT_TOLERANCE, report
    meta = read_export_metadata(tmp_path / "sm_var" / "1")
    assert meta["task"] == "regression"
    assert meta["inputs"] == {
        "sequence": {"dtype": "float32", "shape": [None, None, 3]}
    }


def test_quantized_tflite_is_smaller_and_close(tmp_path):
    # Weights under 1024 values stay float32: give the dense layer more.
    model = build_cnn((8, 8), num_classes=3, filters=(8,), dense_units=64)
    float_path = export_tflite(model, tmp_path / "f.tflite")
    for mode in ("dynamic", "float16"):
        path = export_tflite(model, tmp_path / f"{mode}.tflite", mode)
        assert path.stat().st_size < float_path.stat().st_size
        report = verify_export(model, path)
        assert report.max_abs_diff < 0.05, report


# ---------------------------------------------------------------- preflight


def test_lstm_to_tflite_preflight_names_layer_and_fix(tmp_path):
    model = build_lstm((10, 3), num_classes=2, units=4)
    lstm_name = next(
        layer.name
        for layer in model.layers
        if isinstance(layer, keras.layers.LSTM)
    )
    problems = preflight_tflite(model)
    assert len(problems) == 1
    assert lstm_name in problems[0]
    path = tmp_path / "lstm.tflite"
    with pytest.raises(ExportError, match=rf"'{lstm_name}'.*unroll=True"):
        export_tflite(model, path)
    assert os.listdir(tmp_path) == []
    with pytest.raises(ExportError, match="verify=False"):
        export_tflite(model, path, allow_flex=True)
    assert os.listdir(tmp_path) == []
    export_tflite(model, path, allow_flex=True, verify=False)
    assert b"FlexTensorList" in path.read_bytes()
    wrapped = build_lstm(
        (None, 3), num_classes=2, units=4, cell="gru", bidirectional=True
    )
    message = " ".join(preflight_tflite(wrapped))
    assert (
        "Bidirectional(GRU)" in message and "GRU(..., unroll=True)" in message
    )


def test_text_preflights_name_the_vectorizer_and_the_fix(
    sms_classifier, tmp_path
):
    for model in (sms_classifier[0], tiny_text_model()):
        name = next(
            layer.name
            for layer in model.layers
            if isinstance(layer, keras.layers.TextVectorization)
        )
        for preflight, export, filename in (
            (preflight_onnx, export_onnx, "model.onnx"),
            (preflight_tflite, export_tflite, "model.tflite"),
        ):
            problems = preflight(model)
            assert len(problems) == 1
            assert f"'{name}'" in problems[0]
            assert "split_text_model" in problems[0]
            assert "get_vocabulary" in problems[0]
            with pytest.raises(ExportError, match=name):
                export(model, tmp_path / filename)
    assert os.listdir(tmp_path) == []
    # The fix the message names works: the integer-input model exports to
    # both, and matches the raw-string model on vectorized text.
    from aiservice_kit.models.text import split_text_model

    model, held_out = sms_classifier
    vectorizer, numeric = split_text_model(model)
    token_ids = vectorizer(tf.constant(held_out.astype(str))).numpy()
    expected = model.predict(tf.constant(held_out.astype(str)), verbose=0)
    for path in (
        export_tflite(numeric, tmp_path / "ids.tflite"),
        export_onnx(numeric, tmp_path / "ids.onnx"),
    ):
        (ids_name,) = [spec.name for spec in numeric.inputs]
        if ids_name.startswith("keras_tensor"):  # unnamed: stable "inputs"
            ids_name = "inputs"
        got = load_artifact(path)(**{ids_name: token_ids})["probabilities"]
        np.testing.assert_allclose(got, expected, atol=FLOAT_TOLERANCE)


# ---------------------------------------------------------------- verify


def test_verify_export_catches_a_changed_model(tmp_path):
    model = tiny_cnn()
    version_dir = export_saved_model(model, tmp_path)
    tflite_path = export_tflite(model, tmp_path / "m.tflite")
    dense = model.get_layer("probabilities")
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel * 3.0 + 0.5, bias + 1.0])
    for artifact in (version_dir, tflite_path):
        with pytest.raises(ExportMismatchError, match="max_abs_diff"):
            verify_export(model, artifact)
        report = verify_export(model, artifact, strict=False)
        assert not report.passed
        assert report.max_abs_diff > 1e-3


def test_bad_arguments_are_refused_clearly(tmp_path):
    model = tiny_cnn()
    with pytest.raises(ValueError, match="representative_data"):
        export_tflite(model, tmp_path / "m.tflite", "int8")
    with pytest.raises(ValueError, match="quantization"):
        export_tflite(model, tmp_path / "m.tflite", "int4")
    with pytest.raises(ValueError, match=r"\.tflite"):
        export_tflite(model, tmp_path / "m.bin")
    with pytest.raises(ValueError, match="shape"):
        verify_export(
            model,
            export_saved_model(model, tmp_path / "sm"),
            np.zeros((2, 9, 9), np.uint8),
        )
    with pytest.raises(ValueError, match="versions \\[1\\]"):
        verify_export(model, tmp_path / "sm")
    assert not (tmp_path / "m.tflite").exists()


def test_keras_file_round_trip(tmp_path):
    model = tiny_cnn()
    images = np.random.default_rng(3).integers(0, 256, (3, 8, 8), np.uint8)
    model.fit(images, np.array([0, 1, 2]), epochs=1, verbose=0)
    path = save_model(model, tmp_path / "model.keras")
    restored = load_model(path)
    np.testing.assert_allclose(
        restored.predict(images, verbose=0), model.predict(images, verbose=0)
    )
    assert os.listdir(tmp_path) == ["model.keras"]
    with pytest.raises(ValueError, match=".keras"):
        save_model(model, tmp_path / "model.h5")
