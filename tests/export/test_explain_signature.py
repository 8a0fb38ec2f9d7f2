"""The `explain` signature of a SavedModel: attributions without Python.

Loaded with `tf.saved_model.load` alone, the signature must give what
`aiservice_kit.explain` gives on the Keras model (one implementation of
integrated gradients, traced into the graph), and completeness must hold:
the attributions add up to the change of the explained output from the
all-zeros baseline.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from aiservice_kit import build_cnn
from aiservice_kit import explain
from aiservice_kit import export_saved_model
from aiservice_kit import export_tflite
from aiservice_kit.export import ATTRIBUTIONS
from aiservice_kit.export import EXPLAIN_SIGNATURE
from aiservice_kit.export import SERVING_SIGNATURE
from aiservice_kit.export import read_export_metadata
from aiservice_kit.export.verify import quiet_interpreter_deprecation
from aiservice_kit.models.sequence import build_lstm

#: The exported graph and eager Keras run the same ops; float32 reordering
#: inside the traced graph stays far below this.
MATCH = 1e-5
#: Completeness at 64 steps: within this share of the output change (plus
#: ABSOLUTE), as tests/test_explain.py asks of `explain`.
RELATIVE = 0.02
ABSOLUTE = 1e-3


def _signatures(version_dir):
    return tf.saved_model.load(str(version_dir)).signatures


def _check_complete(attributions, change):
    sums = attributions.reshape(len(attributions), -1).sum(axis=1)
    np.testing.assert_allclose(sums, change, rtol=RELATIVE, atol=ABSOLUTE)


@pytest.fixture(scope="module")
def small_mnist_cnn(mnist_split):
    x_train, y_train, x_test, _ = mnist_split
    keras.utils.set_random_seed(0)
    model = build_cnn((28, 28), num_classes=10, filters=(4,), dense_units=16)
    model.fit(x_train[:1000], y_train[:1000], epochs=1, verbose=0)
    return model, x_test[:4]


def test_cnn_explain_signature_matches_explain_on_keras(
    small_mnist_cnn, tmp_path
):
    model, images = small_mnist_cnn
    version_dir = export_saved_model(model, tmp_path, explain=True)
    signatures = _signatures(version_dir)
    assert {SERVING_SIGNATURE, EXPLAIN_SIGNATURE} <= set(signatures)
    fn = signatures[EXPLAIN_SIGNATURE]
    _, inputs = fn.structured_input_signature
    assert list(inputs) == ["image"] and inputs["image"].dtype == tf.uint8
    assert set(fn.structured_outputs) == {
        "probabilities",
        "predicted_class",
        ATTRIBUTIONS,
    }
    out = {k: v.numpy() for k, v in fn(image=tf.constant(images)).items()}
    served = signatures[SERVING_SIGNATURE](image=tf.constant(images))
    np.testing.assert_allclose(
        out["probabilities"], served["probabilities"].numpy(), atol=MATCH
    )
    assert out[ATTRIBUTIONS].shape == images.shape
    assert out[ATTRIBUTIONS].dtype == np.float32

    expected = explain(model, images)
    np.testing.assert_array_equal(
        out["predicted_class"], [e.target for e in expected]
    )
    reference = np.stack([e.attributions for e in expected])
    scale = np.abs(reference).max()
    np.testing.assert_allclose(
        out[ATTRIBUTIONS], reference, atol=MATCH * max(scale, 1.0)
    )
    # Completeness, from the artifact alone: f(x) - f(black image).
    black = signatures[SERVING_SIGNATURE](
        image=tf.zeros_like(tf.constant(images))
    )["probabilities"].numpy()
    rows = np.arange(len(images))
    targets = out["predicted_class"]
    change = out["probabilities"][rows, targets] - black[rows, targets]
    assert np.abs(change).max() > 0.05  # the explanation explains something
    _check_complete(out[ATTRIBUTIONS], change)

    meta = read_export_metadata(version_dir)
    assert meta["explain"] == {
        "signature": EXPLAIN_SIGNATURE,
        "method": "integrated_gradients",
        "baseline": 0.0,
        "steps": 64,
        "target": "predicted_class",
        "outputs": {
            ATTRIBUTIONS: {"dtype": "float32", "shape": [None, 28, 28]}
        },
    }


def test_sequence_models_explain_their_class_or_first_output(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 12, 2)).astype(np.float32)
    keras.utils.set_random_seed(0)
    classifier = build_lstm((12, 2), num_classes=2, units=4)
    regressor = keras.Sequential(
        [
            keras.Input((12, 2), name="sequence"),
            keras.layers.LSTM(4),
            keras.layers.Dense(1, name="predictions"),
        ]
    )
    for model, key in ((classifier, "probabilities"), (regressor, None)):
        version_dir = export_saved_model(
            model, tmp_path / model.name, explain=True
        )
        signatures = _signatures(version_dir)
        out = signatures[EXPLAIN_SIGNATURE](sequence=tf.constant(x))
        out = {k: v.numpy() for k, v in out.items()}
        if key is None:
            targets = [0, 0, 0]
            values = out["predictions"][:, 0]
            baseline = signatures[SERVING_SIGNATURE](sequence=tf.zeros_like(x))[
                "predictions"
            ].numpy()[:, 0]
        else:
            targets = out["predicted_class"]
            rows = np.arange(len(x))
            values = out[key][rows, targets]
            baseline = signatures[SERVING_SIGNATURE](sequence=tf.zeros_like(x))[
                key
            ].numpy()[rows, targets]
        expected = explain(model, x, target=list(targets))
        np.testing.assert_allclose(
            out[ATTRIBUTIONS],
            np.stack([e.attributions for e in expected]),
            atol=MATCH,
        )
        np.testing.assert_allclose(
            values, [e.prediction for e in expected], atol=MATCH
        )
        _check_complete(out[ATTRIBUTIONS], values - baseline)
        target = read_export_metadata(version_dir)["explain"]["target"]
        assert target == ("output 0" if key is None else "predicted_class")


def test_explain_is_opt_in_and_skipped_where_it_does_not_apply(tmp_path):
    cnn = build_cnn((8, 8), num_classes=3, filters=(4,), dense_units=8)
    plain = export_saved_model(cnn, tmp_path / "plain")
    assert EXPLAIN_SIGNATURE not in _signatures(plain)
    assert "explain" not in read_export_metadata(plain)

    # Tabular rows and raw strings: no `explain` signature, no error.
    tabular = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(1, name="predictions")]
    )
    vectorizer = keras.layers.TextVectorization(
        max_tokens=20, output_sequence_length=4
    )
    vectorizer.adapt(tf.constant(["free prize call now", "see you"]))
    text_input = keras.Input(shape=(), dtype="string", name="text")
    hidden = keras.layers.Embedding(20, 2)(vectorizer(text_input))
    hidden = keras.layers.GlobalAveragePooling1D()(hidden)
    text = keras.Model(
        text_input,
        keras.layers.Dense(2, activation="softmax", name="probabilities")(
            hidden
        ),
    )
    for name, model in (("tabular", tabular), ("text", text)):
        version_dir = export_saved_model(model, tmp_path / name, explain=True)
        assert EXPLAIN_SIGNATURE not in _signatures(version_dir)
        assert "explain" not in read_export_metadata(version_dir)

    # TFLite never gets it, with or without it in the SavedModel path.
    path = export_tflite(cnn, tmp_path / "cnn.tflite")
    with quiet_interpreter_deprecation():
        runner = tf.lite.Interpreter(model_path=str(path))
    assert list(runner.get_signature_list()) == [SERVING_SIGNATURE]


def test_explain_must_be_a_bool(tmp_path):
    cnn = build_cnn((8, 8), num_classes=3, filters=(4,), dense_units=8)
    with pytest.raises(TypeError, match="explain"):
        export_saved_model(cnn, tmp_path, explain="yes")
