"""Any Keras model exports: the task inferred, TF Serving's signatures added.

Each model here is one a user writes by hand (the textbook CNN and LSTM, a
model with two inputs or two outputs, a custom output name, a plain
regressor). Each exports, is verified, converts to LiteRT (and ONNX for the
CNN), and its SavedModel serves TF Serving's classify or regress signature:
hand-built `tf.Example`s in, the model's classes/scores or values out.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from aiservice_kit import ExportMismatchError
from aiservice_kit._layout import CLASSES_OUTPUT
from aiservice_kit._layout import CLASSIFY_SIGNATURE
from aiservice_kit._layout import EXAMPLES_INPUT
from aiservice_kit._layout import PREDICT_SIGNATURE
from aiservice_kit._layout import REGRESS_OUTPUT
from aiservice_kit._layout import REGRESS_SIGNATURE
from aiservice_kit._layout import SCORES_OUTPUT
from aiservice_kit._layout import SERVING_SIGNATURE
from aiservice_kit._layout import SIGNATURE_APIS
from aiservice_kit._layout import TASKS
from aiservice_kit.export import _examples
from aiservice_kit.export import _signature
from aiservice_kit.export import export_onnx
from aiservice_kit.export import export_saved_model
from aiservice_kit.export import export_tflite
from aiservice_kit.export import load_artifact
from aiservice_kit.export import read_export_metadata
from aiservice_kit.export import verify_export

TOLERANCE = 1e-5


def textbook_cnn():
    """The origin documents' MNIST model, shrunk to 8x8 pixels."""
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def textbook_lstm():
    """The origin documents' sentiment LSTM: token ids to a sigmoid."""
    return keras.Sequential(
        [
            keras.Input((6,), dtype="int32"),
            keras.layers.Embedding(20, 4),
            keras.layers.LSTM(4, unroll=True),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )


def float_feature(values):
    values = np.asarray(values, np.float32).reshape(-1).tolist()
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def int_feature(values):
    values = np.asarray(values, np.int64).reshape(-1).tolist()
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def examples(**columns):
    """Serialized tf.Examples, one per row, built as a TF Serving client does.

    Each keyword is a feature: a (name, maker) pair of values per row.
    """
    rows = len(next(iter(columns.values()))[1])
    serialized = []
    for row in range(rows):
        feature = {
            name: make(values[row]) for name, (make, values) in columns.items()
        }
        example = tf.train.Example(features=tf.train.Features(feature=feature))
        serialized.append(example.SerializeToString())
    return tf.constant(serialized)


def signatures(version_dir):
    return tf.saved_model.load(str(version_dir)).signatures


def check_metadata_signatures(meta, expected):
    assert set(meta["signatures"]) == set(expected)
    for signature in meta["signatures"].values():
        assert signature["api"] in SIGNATURE_APIS
    assert meta["task"] in TASKS


# ------------------------------------------------------------ inference rule


def test_the_textbook_cnn_exports_to_every_format_and_classifies(tmp_path):
    model = textbook_cnn()
    version_dir = export_saved_model(model, tmp_path / "cnn")
    meta = read_export_metadata(version_dir)
    assert meta["task"] == "classification"
    check_metadata_signatures(
        meta, [SERVING_SIGNATURE, PREDICT_SIGNATURE, CLASSIFY_SIGNATURE]
    )
    # The output layer keeps its own name in the record.
    (own_name,) = meta["model_outputs"]
    assert own_name == model.layers[-1].name
    assert meta["model_outputs"][own_name]["activation"] == "softmax"
    assert meta["inputs"] == {
        "inputs": {"dtype": "float32", "shape": [None, 8, 8, 1]}
    }
    assert meta["signatures"][CLASSIFY_SIGNATURE]["features"] == {
        "inputs": {"dtype": "float", "shape": [8, 8, 1]}
    }

    x = np.random.default_rng(0).random((5, 8, 8, 1), np.float32)
    expected = model.predict(x, verbose=0)
    loaded = signatures(version_dir)
    out = loaded[CLASSIFY_SIGNATURE](
        **{EXAMPLES_INPUT: examples(inputs=(float_feature, x))}
    )
    classes = out[CLASSES_OUTPUT].numpy()
    assert classes.shape == (5, 10)
    assert [c.decode() for c in classes[0]] == [str(i) for i in range(10)]
    np.testing.assert_allclose(
        out[SCORES_OUTPUT].numpy(), expected, atol=TOLERANCE
    )
    # serving_default returns one tensor (Keras' `model.export`, TF
    # Serving's tutorials); `predict` has every named output.
    default = loaded[SERVING_SIGNATURE](inputs=tf.constant(x))
    assert set(default) == {"probabilities"}
    np.testing.assert_array_equal(
        default["probabilities"].numpy().argmax(axis=-1),
        expected.argmax(axis=-1),
    )
    every = loaded[PREDICT_SIGNATURE](inputs=tf.constant(x))
    np.testing.assert_array_equal(
        every["predicted_class"].numpy(), expected.argmax(axis=-1)
    )

    for artifact in (
        export_tflite(model, tmp_path / "cnn.tflite"),
        export_onnx(model, tmp_path / "cnn.onnx"),
    ):
        report = verify_export(model, artifact, x)
        assert report.max_abs_diff <= TOLERANCE, report
        assert report.class_agreement == 1.0
        run = load_artifact(artifact)
        np.testing.assert_array_equal(
            run(inputs=x)["predicted_class"], expected.argmax(axis=-1)
        )


def test_the_textbook_lstm_is_a_binary_classifier(tmp_path):
    model = textbook_lstm()
    version_dir = export_saved_model(
        model, tmp_path / "lstm", class_names=["negative", "positive"]
    )
    meta = read_export_metadata(version_dir)
    assert meta["task"] == "classification"
    assert meta["class_names"] == ["negative", "positive"]
    assert meta["signatures"][CLASSIFY_SIGNATURE]["outputs"] == {
        "classes": {"dtype": "string", "shape": [None, 2]},
        "scores": {"dtype": "float32", "shape": [None, 2]},
    }
    tokens = np.random.default_rng(1).integers(0, 20, (7, 6)).astype(np.int32)
    p = model.predict(tokens, verbose=0)  # (7, 1)
    loaded = signatures(version_dir)
    out = loaded[CLASSIFY_SIGNATURE](
        inputs=examples(inputs=(int_feature, tokens))
    )
    assert [c.decode() for c in out["classes"].numpy()[3]] == [
        "negative",
        "positive",
    ]
    np.testing.assert_allclose(
        out["scores"].numpy(), np.concatenate([1 - p, p], 1), atol=TOLERANCE
    )
    # One sigmoid column: the predicted class is p >= 0.5, not argmax.
    every = loaded[PREDICT_SIGNATURE](inputs=tf.constant(tokens))
    np.testing.assert_array_equal(
        every["predicted_class"].numpy(), (p[:, 0] >= 0.5).astype(np.int64)
    )
    with pytest.raises(ValueError, match="binary"):
        export_saved_model(model, tmp_path / "bad", class_names=["only"])

    path = export_tflite(model, tmp_path / "lstm.tflite")
    report = verify_export(model, path, tokens)
    assert report.max_abs_diff <= TOLERANCE, report
    assert report.class_agreement == 1.0


def test_a_model_with_two_inputs_classifies_examples_of_both(tmp_path):
    image = keras.Input((8, 8, 1), name="image")
    numbers = keras.Input((3,), name="numbers")
    x = keras.layers.Flatten()(keras.layers.Conv2D(2, 3)(image))
    x = keras.layers.Concatenate()([x, numbers])
    outputs = keras.layers.Dense(4, activation="softmax", name="kind")(x)
    model = keras.Model([image, numbers], outputs)
    version_dir = export_saved_model(model, tmp_path / "two_in")
    meta = read_export_metadata(version_dir)
    assert meta["task"] == "classification"
    assert meta["signatures"][CLASSIFY_SIGNATURE]["features"] == {
        "image": {"dtype": "float", "shape": [8, 8, 1]},
        "numbers": {"dtype": "float", "shape": [3]},
    }
    rng = np.random.default_rng(2)
    images = rng.random((4, 8, 8, 1), np.float32)
    vectors = rng.standard_normal((4, 3)).astype(np.float32)
    expected = model.predict([images, vectors], verbose=0)
    out = signatures(version_dir)[CLASSIFY_SIGNATURE](
        inputs=examples(
            image=(float_feature, images), numbers=(float_feature, vectors)
        )
    )
    np.testing.assert_allclose(out["scores"].numpy(), expected, atol=TOLERANCE)
    path = export_tflite(model, tmp_path / "two_in.tflite")
    sample = {"image": images, "numbers": vectors}
    assert verify_export(model, path, sample).max_abs_diff <= TOLERANCE


def test_a_model_with_two_outputs_serves_both_by_their_names(tmp_path):
    inputs = keras.Input((4,), name="measurements")
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    species = keras.layers.Dense(3, activation="softmax", name="species")(
        hidden
    )
    size = keras.layers.Dense(1, name="size")(hidden)
    model = keras.Model(inputs, [species, size])
    version_dir = export_saved_model(model, tmp_path / "two_out")
    meta = read_export_metadata(version_dir)
    assert meta["task"] == "tensor"
    assert meta["class_names"] is None
    check_metadata_signatures(meta, [SERVING_SIGNATURE, PREDICT_SIGNATURE])
    assert meta["outputs"] == {
        "species": {"dtype": "float32", "shape": [None, 3]},
        "size": {"dtype": "float32", "shape": [None, 1]},
    }
    x = np.random.default_rng(3).standard_normal((5, 4)).astype(np.float32)
    want_species, want_size = model.predict(x, verbose=0)
    out = signatures(version_dir)[SERVING_SIGNATURE](
        measurements=tf.constant(x)
    )
    assert set(out) == {"species", "size"}
    np.testing.assert_allclose(out["species"], want_species, atol=TOLERANCE)
    np.testing.assert_allclose(out["size"], want_size, atol=TOLERANCE)
    path = export_tflite(model, tmp_path / "two_out.tflite")
    assert verify_export(model, path, x).max_abs_diff <= TOLERANCE
    np.testing.assert_allclose(
        load_artifact(path)(measurements=x)["size"], want_size, atol=1e-5
    )
    # Classify carries one head: which one is the caller's to say.
    with pytest.raises(ValueError, match="one output.*species"):
        export_saved_model(model, tmp_path / "bad", task="classification")


def test_a_custom_output_name_is_kept_and_classified_with_labels(tmp_path):
    inputs = keras.Input((4,), name="measurements")
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    outputs = keras.layers.Dense(3, activation="softmax", name="species")(
        hidden
    )
    model = keras.Model(inputs, outputs)
    names = ["setosa", "versicolor", "virginica"]
    version_dir = export_saved_model(model, tmp_path, class_names=names)
    meta = read_export_metadata(version_dir)
    assert meta["task"] == "classification"
    assert meta["model_outputs"] == {
        "species": {
            "dtype": "float32",
            "shape": [None, 3],
            "activation": "softmax",
        }
    }
    x = np.random.default_rng(4).standard_normal((6, 4)).astype(np.float32)
    expected = model.predict(x, verbose=0)
    out = signatures(version_dir)[CLASSIFY_SIGNATURE](
        inputs=examples(measurements=(float_feature, x))
    )
    assert out["classes"].numpy().tolist() == [[n.encode() for n in names]] * 6
    np.testing.assert_allclose(out["scores"].numpy(), expected, atol=TOLERANCE)
    path = export_tflite(model, tmp_path / "species.tflite")
    assert verify_export(model, path, x).class_agreement == 1.0


def test_a_plain_regressor_serves_tf_serving_regress(tmp_path):
    inputs = keras.Input((5,), name="features")
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    version_dir = export_saved_model(model, tmp_path)
    meta = read_export_metadata(version_dir)
    assert meta["task"] == "regression"
    check_metadata_signatures(
        meta, [SERVING_SIGNATURE, PREDICT_SIGNATURE, REGRESS_SIGNATURE]
    )
    assert meta["signatures"][REGRESS_SIGNATURE]["outputs"] == {
        "outputs": {"dtype": "float32", "shape": [None]}
    }
    x = np.random.default_rng(5).standard_normal((6, 5)).astype(np.float32)
    expected = model.predict(x, verbose=0)
    out = signatures(version_dir)[REGRESS_SIGNATURE](
        inputs=examples(features=(float_feature, x))
    )
    assert out[REGRESS_OUTPUT].shape == (6,)
    np.testing.assert_allclose(
        out[REGRESS_OUTPUT].numpy(), expected[:, 0], atol=TOLERANCE
    )
    path = export_tflite(model, tmp_path / "reg.tflite")
    assert verify_export(model, path, x).max_abs_diff <= TOLERANCE


def test_task_regression_overrides_a_sigmoid_score(tmp_path):
    # A sigmoid output reads as a binary classifier; a bounded score
    # (say a click-through rate) is the user's to call a regression.
    inputs = keras.Input((3,), name="features")
    score = keras.layers.Dense(1, activation="sigmoid", name="rate")(inputs)
    model = keras.Model(inputs, score)
    assert _signature.plan(model).task == "classification"
    version_dir = export_saved_model(model, tmp_path, task="regression")
    meta = read_export_metadata(version_dir)
    assert meta["task"] == "regression"
    assert CLASSIFY_SIGNATURE not in meta["signatures"]
    x = np.random.default_rng(6).standard_normal((4, 3)).astype(np.float32)
    out = signatures(version_dir)[REGRESS_SIGNATURE](
        inputs=examples(features=(float_feature, x))
    )
    np.testing.assert_allclose(
        out["outputs"].numpy(),
        model.predict(x, verbose=0)[:, 0],
        atol=TOLERANCE,
    )
    path = export_tflite(model, tmp_path / "rate.tflite", task="regression")
    assert verify_export(model, path, x, task="regression").passed


def test_a_vector_output_is_a_tensor_model_under_its_own_name(tmp_path):
    inputs = keras.Input((4,), name="features")
    embedding = keras.layers.Dense(3, name="embedding")(inputs)
    model = keras.Model(inputs, embedding)
    version_dir = export_saved_model(model, tmp_path)
    meta = read_export_metadata(version_dir)
    assert meta["task"] == "tensor"
    assert meta["outputs"] == {
        "embedding": {"dtype": "float32", "shape": [None, 3]}
    }
    x = np.ones((2, 4), np.float32)
    out = signatures(version_dir)[PREDICT_SIGNATURE](features=tf.constant(x))
    np.testing.assert_allclose(
        out["embedding"], model.predict(x, verbose=0), atol=TOLERANCE
    )
    # Stated as a regression, the same model serves `predictions`, with no
    # regress signature: TF Serving's Regress takes one value per example.
    version_dir = export_saved_model(model, tmp_path, task="regression")
    meta = read_export_metadata(version_dir)
    assert set(meta["outputs"]) == {"predictions"}
    assert REGRESS_SIGNATURE not in meta["signatures"]
    assert REGRESS_SIGNATURE not in signatures(version_dir)


def test_a_classifier_over_a_sequence_gets_no_classify_signature(tmp_path):
    # TF Serving's Classify needs [batch, num_classes] scores; a softmax
    # per timestep is served by `predict` alone, under the task it is told.
    inputs = keras.Input((5, 3), name="sequence")
    tags = keras.layers.Dense(4, activation="softmax", name="tags")(inputs)
    model = keras.Model(inputs, tags)
    version_dir = export_saved_model(model, tmp_path, task="classification")
    meta = read_export_metadata(version_dir)
    assert set(meta["signatures"]) == {SERVING_SIGNATURE, PREDICT_SIGNATURE}
    assert meta["outputs"]["probabilities"]["shape"] == [None, 5, 4]
    every = meta["signatures"][PREDICT_SIGNATURE]["outputs"]
    assert every["predicted_class"]["shape"] == [None, 5]
    x = np.random.default_rng(7).standard_normal((3, 5, 3)).astype(np.float32)
    out = signatures(version_dir)[PREDICT_SIGNATURE](sequence=tf.constant(x))
    np.testing.assert_array_equal(
        out["predicted_class"], model.predict(x, verbose=0).argmax(axis=-1)
    )


@pytest.mark.parametrize(
    ("layers", "task"),
    [
        ([keras.layers.Dense(3, activation="softmax")], "classification"),
        ([keras.layers.Dense(3), keras.layers.Softmax()], "classification"),
        ([keras.layers.Dense(1, activation="sigmoid")], "classification"),
        ([keras.layers.Dense(1)], "regression"),
        ([keras.layers.Dense(1, activation="relu")], "regression"),
        ([keras.layers.Dense(3)], "tensor"),
        ([keras.layers.Dense(3, activation="log_softmax")], "tensor"),
        ([keras.layers.Dense(2, name="predictions")], "regression"),
        ([keras.layers.Dense(2, name="probabilities")], "classification"),
        # A softmax over each row of a [batch, 2, 2] output: not [batch, n].
        ([keras.layers.Reshape((2, 2)), keras.layers.Softmax()], "tensor"),
    ],
)
def test_the_inference_rule(layers, task):
    model = keras.Sequential([keras.Input((4,)), *layers])
    assert _signature.plan(model).task == task


def test_a_nested_model_tells_its_inner_activation():
    inner = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, activation="softmax")]
    )
    inputs = keras.Input((4,), name="features")
    model = keras.Model(inputs, inner(inputs))
    assert _signature.plan(model).task == "classification"


def test_primary_outputs_are_the_one_line_switch_of_serving_default():
    # serving_default returns one output ("primary": the single-output
    # convention of Keras' `model.export` and TF Serving's tutorials);
    # "all" is what it returned before, and what `predict` returns.
    assert _signature.SERVING_DEFAULT_OUTPUTS == "primary"
    model = textbook_cnn()
    plan = _signature.plan(model)
    x = tf.constant(np.zeros((2, 8, 8, 1), np.float32))
    primary = _signature.serving_fn(model, plan, "primary")(x)
    assert set(primary) == {"probabilities"}
    everything = _signature.serving_fn(model, plan)(x)
    assert set(everything) == {"probabilities", "predicted_class"}
    with pytest.raises(ValueError, match="outputs"):
        _signature.serving_fn(model, plan, "first")


def test_signature_keys_are_tensorflows():
    # TF Serving reads these keys; ours must be TF's own constants.
    assert EXAMPLES_INPUT == tf.saved_model.CLASSIFY_INPUTS
    assert EXAMPLES_INPUT == tf.saved_model.REGRESS_INPUTS
    assert CLASSES_OUTPUT == tf.saved_model.CLASSIFY_OUTPUT_CLASSES
    assert SCORES_OUTPUT == tf.saved_model.CLASSIFY_OUTPUT_SCORES
    assert REGRESS_OUTPUT == tf.saved_model.REGRESS_OUTPUTS
    assert SERVING_SIGNATURE == tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY


def test_verification_catches_a_wrong_classify_signature(tmp_path):
    # A SavedModel whose predict signature is right but whose classify
    # signature runs other weights is refused like any mismatch.
    model, other = textbook_cnn(), textbook_cnn()
    plan = _signature.plan(model)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(other)
    specs = _signature.signature_specs(plan)
    archive.add_endpoint(
        PREDICT_SIGNATURE,
        _signature.serving_fn(model, plan),
        input_signature=specs,
    )
    archive.add_endpoint(
        CLASSIFY_SIGNATURE,
        _examples.classify_fn(other, plan, None),
        input_signature=[tf.TensorSpec([None], tf.string, name="inputs")],
    )
    archive.write_out(str(tmp_path), verbose=False)
    with pytest.raises(ExportMismatchError, match="disagrees"):
        verify_export(model, tmp_path)
