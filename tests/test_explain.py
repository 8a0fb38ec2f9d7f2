"""explain(): completeness, sanity under randomised weights, real spam cues,
recommender contributions, and the plots."""

import re

import keras
import matplotlib
import numpy as np
import pytest

from aiservice_kit import build_cnn
from aiservice_kit import build_lstm
from aiservice_kit import build_text_classifier
from aiservice_kit import explain
from aiservice_kit import plot_explanation
from aiservice_kit.datasets import load_labelled_text
from aiservice_kit.explaining import Attribution
from aiservice_kit.explaining import TextAttribution
from aiservice_kit.models.text import encode_labels
from aiservice_kit.recommenders import CosineRecommender

matplotlib.use("Agg")

#: Completeness: |sum(attributions) - (f(x) - f(baseline))| must stay
#: within this share of |f(x) - f(baseline)| (plus ABSOLUTE) at 64 steps.
RELATIVE = 0.02
ABSOLUTE = 1e-3


@pytest.fixture(scope="module")
def small_mnist_cnn(mnist_split):
    x_train, y_train, x_test, _ = mnist_split
    keras.utils.set_random_seed(0)
    model = build_cnn((28, 28), num_classes=10, filters=(8,), dense_units=32)
    model.fit(x_train[:1500], y_train[:1500], epochs=1, verbose=0)
    return model, x_test[:3]


@pytest.fixture(scope="module")
def small_lstm():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 24, 2)).astype("float32")
    y = (x[:, 12:, 0].mean(axis=1) > 0).astype("int64")  # the second half
    keras.utils.set_random_seed(0)
    model = build_lstm((24, 2), num_classes=2, units=8)
    model.fit(x, y, epochs=3, verbose=0)
    return model, x[:3]


def _check_complete(explanations):
    for e in explanations:
        change = e.prediction - e.baseline_prediction
        assert abs(e.convergence_delta) <= RELATIVE * abs(change) + ABSOLUTE
        np.testing.assert_allclose(
            e.attributions.sum(), change, rtol=RELATIVE, atol=ABSOLUTE
        )


def test_integrated_gradients_are_complete_on_a_cnn(small_mnist_cnn):
    model, images = small_mnist_cnn
    explanations = explain(model, images, steps=64)
    assert len(explanations) == 3
    e = explanations[0]
    assert isinstance(e, Attribution) and e.kind == "image"
    assert e.attributions.shape == (28, 28)
    np.testing.assert_array_equal(e.baseline, 0)  # a black image
    assert e.target == int(np.argmax(model.predict(images[:1], verbose=0)))
    _check_complete(explanations)


def test_integrated_gradients_are_complete_on_an_lstm(small_lstm):
    model, sequences = small_lstm
    explanations = explain(model, sequences, target=1, steps=64)
    assert explanations[0].kind == "sequence"
    assert explanations[0].per_step().shape == (24,)
    _check_complete(explanations)
    # A configurable baseline changes the reference point, still complete.
    shifted = explain(model, sequences[:1], target=1, baseline=0.5)
    assert shifted[0].baseline.shape == (24, 2)
    _check_complete(shifted)


def test_randomising_the_weights_changes_the_attributions(small_mnist_cnn):
    # Adebayo et al. (2018): an explanation that survives randomised weights
    # explains the input, not the model.
    model, images = small_mnist_cnn
    target = explain(model, images[:1])[0].target
    trained = explain(model, images[:1], target=target)[0].attributions
    keras.utils.set_random_seed(7)
    random_model = keras.models.clone_model(model)  # fresh initial weights
    randomised = explain(random_model, images[:1], target=target)[0]
    a, b = trained.ravel(), randomised.attributions.ravel()
    # Signed values: the magnitudes of gradient-times-input methods keep the
    # digit's outline under any weights (|.| correlated 0.71 here, as
    # Adebayo et al. report for IG), the signs do not.
    correlation = np.corrcoef(a, b)[0, 1]
    assert correlation < 0.5, f"attribution correlation {correlation:.2f}"
    change = np.abs(a - b).sum() / np.abs(a).sum()
    assert change > 0.5, f"attributions moved by only {change:.0%}"


#: Words a person points at in SMS spam, and the shapes of premium-rate
#: numbers, prices and links.
SPAM_CUES = {
    "free",
    "call",
    "txt",
    "text",
    "prize",
    "claim",
    "win",
    "won",
    "winner",
    "cash",
    "urgent",
    "mobile",
    "reply",
    "guaranteed",
    "award",
    "stop",
    "ringtone",
    "tone",
    "nokia",
    "camera",
    "service",
    "offer",
}


def _is_cue(token):
    word = re.sub(r"[^a-z0-9£]", "", token.lower())
    return (
        word in SPAM_CUES
        or "£" in token
        or re.search(r"\d{5,}", token) is not None  # premium-rate numbers
        or re.search(r"\d+p\b|ppm|p/min|www|\.com|\.co\.uk", token.lower())
        is not None
    )


@pytest.fixture(scope="module")
def sms_model(data_dir):
    texts, labels = load_labelled_text(
        data_dir / "sms-spam-collection" / "SMSSpamCollection"
    )
    texts = np.asarray(texts, dtype=object)
    labels = np.asarray(labels)
    keras.utils.set_random_seed(0)
    model = build_text_classifier(texts[:2000], class_names=["ham", "spam"])
    model.fit(
        texts[:2000], encode_labels(model, labels[:2000]), epochs=3, verbose=0
    )
    spam = texts[2000:][labels[2000:] == "spam"][:30]
    return model, list(spam)


def test_spam_attributions_point_at_spam_words(sms_model):
    model, spam = sms_model
    explanations = explain(model, spam, target=1)
    assert all(isinstance(e, TextAttribution) for e in explanations)
    assert explanations[0].method == "gradient_x_input"
    hits = 0
    for e in explanations:
        assert len(e.tokens) == len(e.spans) == len(e.attributions)
        for token, (start, end) in zip(e.tokens, e.spans, strict=True):
            assert e.text[start:end] == token
        assert e.char_attributions.shape == (len(e.text),)
        top = [token for token, _ in e.top_tokens(3)]
        hits += any(_is_cue(token) for token in top)
    # Cue tokens are about a quarter of spam tokens; the top 3 of at least
    # 80% of the messages hold one.
    assert hits >= 0.8 * len(explanations), f"{hits}/{len(explanations)}"


def test_occlusion_agrees_with_the_model(sms_model):
    model, spam = sms_model
    (e,) = explain(model, spam[:1], target=1, method="occlusion")
    assert e.method == "occlusion"
    word = int(np.argmax(e.attributions))
    start, end = e.spans[word]
    without = spam[0][:start] + spam[0][end:]
    p = model.predict(np.asarray([spam[0], without], object), verbose=0)
    np.testing.assert_allclose(
        e.attributions[word], p[0, 1] - p[1, 1], rtol=1e-4, atol=1e-6
    )


def test_sequence_text_encoders_use_occlusion():
    texts = ["win a free prize now", "see you at lunch"] * 8
    model = build_text_classifier(
        texts, num_classes=2, encoder="cnn", embedding_dim=8, units=8
    )
    (e,) = explain(model, ["win a free prize now"])
    assert e.method == "occlusion" and e.tokens[0] == "win"
    with pytest.raises(ValueError, match="n-gram"):
        explain(model, ["win"], method="gradient")


@pytest.fixture(scope="module")
def movielens(data_dir):
    from aiservice_kit.recommenders import interactions

    likes = interactions.load_movielens_ratings(
        data_dir / "movielens-latest-small", min_rating=4.0
    )
    return likes.user_ids, likes.item_ids


@pytest.mark.parametrize("kind", ["item", "user"])
def test_recommender_contributions_sum_to_the_score(movielens, kind):
    model = CosineRecommender(kind=kind, n_neighbors=20).fit(movielens)
    users = np.unique(movielens[0])[:5]
    explanations = explain(model, users, top_k=5)
    assert [e.user for e in explanations] == users.tolist()
    scored = 0
    for e in explanations:
        assert e.contributor_kind == kind
        for score, contributors in zip(e.scores, e.contributors, strict=True):
            if score == 0.0:  # popularity back-fill: nothing contributed
                assert contributors == []
                continue
            scored += 1
            values = [value for _, value in contributors]
            assert values == sorted(values, reverse=True)
            np.testing.assert_allclose(sum(values), score, rtol=1e-4)
    assert scored >= 20


def test_plots_return_figures(small_mnist_cnn, small_lstm, movielens):
    from matplotlib.figure import Figure

    model, images = small_mnist_cnn
    lstm, sequences = small_lstm
    text_model = build_text_classifier(
        ["win a free prize", "see you soon"] * 4, num_classes=2
    )
    recommender = CosineRecommender().fit(movielens)
    for e in (
        explain(model, images[:1])[0],
        explain(lstm, sequences[:1])[0],
        explain(text_model, ["win a free prize, call now"])[0],
        explain(recommender, [1], top_k=3)[0],
    ):
        figure = plot_explanation(e)
        assert isinstance(figure, Figure) and figure.axes
        matplotlib.pyplot.close(figure)
    with pytest.raises(TypeError, match="explanation"):
        plot_explanation("not an explanation")


def test_bad_arguments_raise_clear_errors(small_lstm):
    model, sequences = small_lstm
    with pytest.raises(ValueError, match="steps"):
        explain(model, sequences, steps=0)
    with pytest.raises(ValueError, match="baseline"):
        explain(model, sequences, baseline=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="target"):
        explain(model, sequences, target=5)
    with pytest.raises(ValueError, match="shape"):
        explain(model, sequences[0])
    with pytest.raises(TypeError, match="keras.Model"):
        explain("model", sequences)


def test_the_lazy_names_are_the_functions_in_any_import_order():
    # A submodule named like a public function would shadow it once
    # imported: `ak.plot_explanation` first must leave `ak.explain` the
    # function (the module is `aiservice_kit.explaining`).
    import subprocess
    import sys

    code = (
        "import aiservice_kit as ak; ak.plot_explanation; ak.tune; "
        "import inspect; assert inspect.isfunction(ak.explain), ak.explain; "
        "assert inspect.isfunction(ak.tune)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
