"""Tests for `aiservice_kit.models.text`: raw strings in, labels out."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from aiservice_kit import build_text_classifier
from aiservice_kit import get_strategy
from aiservice_kit.datasets import load_labelled_text
from aiservice_kit.models.text import ENCODERS
from aiservice_kit.models.text import encode_labels
from aiservice_kit.models.text import get_class_names
from aiservice_kit.models.text import predict_labels
from aiservice_kit.models.text import prepare_texts
from aiservice_kit.models.text import split_text_model

TEXTS = [
    "free prize call now",
    "win cash now, text WIN to 8000",
    "claim your free prize today",
    "urgent! you won a free ticket",
    "see you at lunch",
    "are we still meeting later",
    "call me when you get home",
    "thanks for dinner last night",
]
LABELS = ["spam"] * 4 + ["ham"] * 4


def _fit_tiny(model, repeats=40):
    """One epoch over the tiny set repeated: many steps, one epoch overhead."""
    model.fit(
        np.repeat(np.asarray(TEXTS, dtype=object), repeats),
        np.repeat(encode_labels(model, LABELS), repeats),
        batch_size=8,
        epochs=1,
        verbose=0,
    )
    return model


@pytest.mark.parametrize("encoder", ENCODERS)
def test_every_encoder_takes_raw_strings_and_learns(encoder):
    model = build_text_classifier(
        TEXTS,
        class_names=["ham", "spam"],
        encoder=encoder,
        embedding_dim=8,
        units=8,
        dense_units=8,
        dropout=0.0,
        optimizer=keras.optimizers.Adam(0.01),
    )
    assert model.inputs[0].name == "text"
    assert model.layers[-1].name == "probabilities"
    _fit_tiny(model)
    probabilities = model.predict(TEXTS, verbose=0)
    assert probabilities.shape == (len(TEXTS), 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert list(predict_labels(model, TEXTS)) == LABELS


def test_numpy_fixed_width_strings_and_bytes_are_accepted():
    unicode_texts = np.array(TEXTS)  # dtype <U.., which Keras' fit rejects
    byte_texts = np.array([text.encode() for text in TEXTS])
    model = build_text_classifier(unicode_texts, num_classes=2)
    x = prepare_texts(unicode_texts)
    assert x.dtype == object and list(x) == TEXTS
    assert list(prepare_texts(byte_texts)) == TEXTS
    model.fit(unicode_texts, np.array([1] * 4 + [0] * 4), verbose=0)
    model.evaluate(byte_texts, np.array([1] * 4 + [0] * 4), verbose=0)
    assert predict_labels(model, byte_texts).dtype == np.int64
    assert get_class_names(model) is None


def test_tf_data_dataset_of_pairs_adapts_the_vocabulary():
    dataset = tf.data.Dataset.from_tensor_slices(
        (TEXTS, [1] * 4 + [0] * 4)
    ).batch(3)
    model = build_text_classifier(dataset, num_classes=2, encoder="cnn")
    vectorizer, _ = split_text_model(model)
    assert "prize" in vectorizer.get_vocabulary()
    model.fit(dataset, epochs=1, verbose=0)
    unbatched = tf.data.Dataset.from_tensor_slices(TEXTS)
    model = build_text_classifier(unbatched, num_classes=2)
    assert model.predict(TEXTS, verbose=0).shape == (8, 2)


def test_chinese_texts_use_characters_and_are_learned():
    texts = [
        "恭喜你中奖了请立即回复领取奖金",
        "免费领取大奖点击链接",
        "限时优惠马上购买",
        "明天一起吃午饭吧",
        "我到家了晚点给你打电话",
        "会议改到下午三点",
    ]
    labels = ["垃圾", "垃圾", "垃圾", "正常", "正常", "正常"]
    model = build_text_classifier(
        texts,
        class_names=["正常", "垃圾"],
        encoder="transformer",
        embedding_dim=16,
        units=16,
        dropout=0.0,
        optimizer=keras.optimizers.Adam(0.01),
    )
    vectorizer, _ = split_text_model(model)
    vocabulary = vectorizer.get_vocabulary()
    assert "奖" in vocabulary and "饭" in vocabulary  # single characters
    model.fit(
        np.repeat(texts, 30), np.repeat(labels, 30), batch_size=6, verbose=0
    )  # numpy str_ texts and string labels, converted by the model
    assert list(predict_labels(model, texts)) == labels
    assert get_class_names(model) == ["正常", "垃圾"]


def test_keras_file_round_trip_predicts_identically_on_strings(tmp_path):
    model = _fit_tiny(
        build_text_classifier(TEXTS, class_names=["ham", "spam"]), repeats=3
    )
    path = tmp_path / "text.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects
    np.testing.assert_array_equal(
        loaded.predict(TEXTS, verbose=0), model.predict(TEXTS, verbose=0)
    )
    assert get_class_names(loaded) == ["ham", "spam"]


def test_transformer_round_trip(tmp_path):
    model = build_text_classifier(
        TEXTS,
        class_names=["ham", "spam"],
        encoder="transformer",
        embedding_dim=8,
        units=8,
    )
    # Trained first: Keras warns on loading a compiled, never-trained model.
    _fit_tiny(model, repeats=1)
    model.save(tmp_path / "t.keras")
    loaded = keras.saving.load_model(tmp_path / "t.keras")
    np.testing.assert_allclose(
        loaded.predict(TEXTS, verbose=0),
        model.predict(TEXTS, verbose=0),
        atol=1e-6,
    )


def test_exported_saved_model_takes_strings_and_matches(tmp_path):
    model = _fit_tiny(
        build_text_classifier(TEXTS, class_names=["ham", "spam"]), repeats=3
    )
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve",
        lambda text: model(text, training=False),
        input_signature=[tf.TensorSpec([None], tf.string, name="text")],
    )
    archive.write_out(str(tmp_path / "1"))
    reloaded = tf.saved_model.load(str(tmp_path / "1"))
    served = reloaded.serve(tf.constant(TEXTS)).numpy()
    np.testing.assert_allclose(
        served, model.predict(TEXTS, verbose=0), atol=1e-6
    )


@pytest.mark.multi_device
def test_mirrored_strategy_trains_the_raw_string_model():
    # get_strategy keeps one MirroredStrategy per device set: a second one
    # over the same devices in this process breaks collectives.
    strategy = get_strategy(kind="mirrored")
    assert strategy.num_replicas_in_sync == 2, "conftest makes 2 CPUs"
    with strategy.scope():
        model = build_text_classifier(
            TEXTS,
            class_names=["ham", "spam"],
            optimizer=keras.optimizers.Adam(0.01),
        )
        vectorizer, numeric = split_text_model(model)
    before = model(tf.constant(TEXTS), training=False).numpy()
    labels = encode_labels(model, LABELS)
    dataset = (
        tf.data.Dataset.from_tensor_slices((TEXTS, labels))
        .repeat(20)
        .batch(4)
        .map(lambda text, label: (vectorizer(text), label))
    )
    numeric.fit(dataset, epochs=1, shuffle=False, verbose=0)
    after = model(tf.constant(TEXTS), training=False).numpy()
    assert np.abs(after - before).max() > 0.1  # the string model trained
    np.testing.assert_allclose(
        after,
        numeric(vectorizer(tf.constant(TEXTS)), training=False).numpy(),
        atol=1e-6,
    )
    assert list(np.argmax(after, axis=1)) == list(labels)


def test_labels_map_both_ways():
    model = build_text_classifier(TEXTS, class_names=["ham", "spam"])
    np.testing.assert_array_equal(encode_labels(model, ["spam", "ham"]), [1, 0])
    np.testing.assert_array_equal(encode_labels(model, [0, 1, 1]), [0, 1, 1])
    with pytest.raises(ValueError, match="not among the model's classes"):
        encode_labels(model, ["eggs"])
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\)"):
        encode_labels(model, [2])
    unnamed = build_text_classifier(TEXTS, num_classes=2)
    with pytest.raises(TypeError, match="stores no class names"):
        encode_labels(unnamed, ["spam"])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({}, ValueError, "Give `num_classes`"),
        ({"num_classes": 1}, ValueError, "num_classes"),
        ({"num_classes": 2.0}, TypeError, "num_classes"),
        ({"class_names": "ham"}, TypeError, "class_names"),
        ({"class_names": ["a", "a"]}, ValueError, "distinct"),
        ({"num_classes": 3, "class_names": ["a", "b"]}, ValueError, "disagree"),
        ({"num_classes": 2, "encoder": "rnn"}, ValueError, "encoder"),
        ({"num_classes": 2, "tokenize": "bpe"}, ValueError, "tokenize"),
        ({"num_classes": 2, "dropout": 1.0}, ValueError, "dropout"),
        ({"num_classes": 2, "max_tokens": 0}, ValueError, "max_tokens"),
        ({"num_classes": 2, "sequence_length": -1}, ValueError, "sequence_"),
        ({"num_classes": 2, "optimizer": 3}, TypeError, "optimizer"),
        ({"num_classes": 2, "dense_units": "big"}, TypeError, "dense_units"),
        (
            {"num_classes": 2, "encoder": "transformer", "num_heads": 3},
            ValueError,
            "divisible",
        ),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        build_text_classifier(TEXTS, **kwargs)


@pytest.mark.parametrize(
    ("texts", "error", "match"),
    [
        ("just one string", TypeError, "not a single string"),
        ([1, 2, 3], TypeError, "strings only"),
        ([], ValueError, "empty"),
        (np.array([["a", "b"]]), ValueError, "one-dimensional"),
        (
            tf.data.Dataset.from_tensor_slices([1, 2]),
            TypeError,
            "must yield strings",
        ),
    ],
)
def test_bad_texts_raise_clear_errors(texts, error, match):
    with pytest.raises(error, match=match):
        build_text_classifier(texts, num_classes=2)


def test_split_text_model_refuses_models_without_strings():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(ValueError, match="string input"):
        split_text_model(model)
    with pytest.raises(TypeError, match="keras.Model"):
        split_text_model("model")


@pytest.mark.large
def test_sms_spam_f1_with_default_encoder(data_dir):
    from sklearn.metrics import f1_score
    from sklearn.model_selection import train_test_split

    texts, labels = load_labelled_text(
        data_dir / "sms-spam-collection" / "SMSSpamCollection"
    )
    x_train, x_test, y_train, y_test = train_test_split(
        texts, labels, test_size=0.2, stratify=labels, random_state=0
    )
    model = build_text_classifier(x_train, class_names=["ham", "spam"])
    model.fit(x_train, encode_labels(model, y_train), epochs=5, verbose=0)
    predicted = predict_labels(model, x_test)
    f1 = f1_score(y_test, predicted.astype(str), pos_label="spam")
    assert f1 >= 0.95, f"spam F1 {f1:.4f} < 0.95"


def test_texts_empty_after_standardization_do_not_poison_training():
    texts = [*TEXTS, ":)", "!!!"]  # no word left after stripping punctuation
    model = build_text_classifier(
        texts, num_classes=2, encoder="transformer", embedding_dim=8, units=8
    )
    model.fit(texts, np.array([1] * 4 + [0] * 6), batch_size=10, verbose=0)
    assert np.all(np.isfinite(model.predict(texts, verbose=0)))


def _tfidf_lr_accuracy(x_train, y_train, x_test, y_test, analyzer, ngrams):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(analyzer=analyzer, ngram_range=ngrams)
    model = LogisticRegression(max_iter=2000)
    model.fit(vectorizer.fit_transform(x_train), y_train)
    return np.mean(model.predict(vectorizer.transform(x_test)) == y_test)


def _shopping(data_dir, column):
    import csv
    import gzip

    path = data_dir / "online-shopping-zh" / "online_shopping_9_cats.csv.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    texts = np.asarray([row["review"] for row in rows], dtype=object)
    return texts, np.asarray([row[column] for row in rows], dtype=object)


@pytest.mark.large
@pytest.mark.parametrize("data", ["sms", "shopping-sentiment"])
def test_defaults_at_least_match_tfidf_logistic_regression(data_dir, data):
    from sklearn.model_selection import train_test_split

    if data == "sms":
        texts, labels = load_labelled_text(
            data_dir / "sms-spam-collection" / "SMSSpamCollection"
        )
    else:
        # A stratified 10,000-review subset of the 52,773 keeps the test
        # near a minute; benchmarks/text.py runs the full set.
        texts, labels = _shopping(data_dir, "label")
        texts, _, labels, _ = train_test_split(
            texts, labels, train_size=10_000, stratify=labels, random_state=0
        )
    x_train, x_test, y_train, y_test = train_test_split(
        texts, labels, test_size=0.2, stratify=labels, random_state=0
    )
    baseline = max(
        _tfidf_lr_accuracy(x_train, y_train, x_test, y_test, "char", (1, 3)),
        _tfidf_lr_accuracy(x_train, y_train, x_test, y_test, "word", (1, 2)),
    )
    model = build_text_classifier(
        x_train, class_names=sorted(set(labels.tolist()))
    )
    history = model.fit(x_train, y_train, verbose=0)  # every default
    assert "val_loss" in history.history  # early stopping was on
    accuracy = np.mean(predict_labels(model, x_test) == y_test)
    assert accuracy >= baseline, f"{accuracy:.4f} < TF-IDF+LR {baseline:.4f}"


def test_fit_early_stopping_is_explicit_and_switchable():
    texts = np.asarray(TEXTS * 30, dtype=object)
    labels = LABELS * 30
    model = build_text_classifier(texts, class_names=["ham", "spam"])
    history = model.fit(texts, labels, epochs=3, verbose=0)
    assert "val_loss" in history.history
    assert len(history.history["loss"]) <= 3  # `epochs` is honoured
    plain = model.fit(texts, labels, epochs=2, early_stopping=False, verbose=0)
    assert "val_loss" not in plain.history
    assert len(plain.history["loss"]) == 2
    few = model.fit(texts[:20], labels[:20], epochs=1, verbose=0)
    assert "val_loss" not in few.history  # too few samples to hold out
    with pytest.raises(ValueError, match="early_stopping"):
        model.fit(texts, labels, early_stopping="yes")
