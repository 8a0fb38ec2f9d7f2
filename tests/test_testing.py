"""`aiservice_kit.testing`: the contract checks pass our own builders and
recommender, the builder of the Architecture page, and fail broken ones
with the rule they break."""

import functools
import re
from pathlib import Path

import keras
import numpy as np
import pytest

from aiservice_kit import CosineRecommender
from aiservice_kit import build_cnn
from aiservice_kit import build_lstm
from aiservice_kit import build_text_classifier
from aiservice_kit.models import PROBABILITIES
from aiservice_kit.testing import BUILDER_RULES
from aiservice_kit.testing import RECOMMENDER_RULES
from aiservice_kit.testing import check_builder
from aiservice_kit.testing import check_recommender

TEXTS = [
    "free prize call now",
    "see you at lunch",
    "ok see you soon",
    "call now to claim your prize",
]
LABELS = ["spam", "ham", "ham", "spam"]
REPO_ROOT = Path(__file__).resolve().parents[1]


def test_cnn_meets_the_contract_and_exports():
    check_builder(
        functools.partial(build_cnn, (8, 8, 1), num_classes=3, filters=(4,)),
        export=True,
    )


def test_lstm_classifier_and_regressor_meet_the_contract():
    check_builder(functools.partial(build_lstm, (5, 2), num_classes=3, units=4))
    check_builder(functools.partial(build_lstm, (5, 2), units=4))


def test_text_classifier_with_string_labels_meets_the_contract_and_exports():
    check_builder(
        functools.partial(
            build_text_classifier, TEXTS, class_names=["ham", "spam"]
        ),
        TEXTS,
        LABELS,
        export=True,
    )


def test_transformer_text_classifier_meets_the_contract():
    check_builder(
        functools.partial(
            build_text_classifier,
            TEXTS,
            num_classes=2,
            encoder="transformer",
            embedding_dim=8,
            units=8,
            num_heads=1,
            sequence_length=6,
        )
    )


def _doc_blocks(page, marker):
    text = (REPO_ROOT / "docs" / page).read_text()
    section = text[text.index(marker) :]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def test_the_custom_builder_of_the_architecture_page_passes_as_written():
    blocks = _doc_blocks("architecture.md", "<!-- check_builder example")
    assert len(blocks) == 2 and "def build_mlp" in blocks[0]
    namespace = {}
    for block in blocks:
        exec(compile(block, "docs/architecture.md", "exec"), namespace)
    assert namespace["build_mlp"](4, 3).name == "mlp"


def _mlp(*, output_name=PROBABILITIES, compile=True, head_dtype="float32"):
    inputs = keras.Input(shape=(4,), name="features")
    outputs = keras.layers.Dense(
        3, activation="softmax", dtype=head_dtype, name=output_name
    )(inputs)
    model = keras.Model(inputs, outputs)
    if compile:
        model.compile("adam", "sparse_categorical_crossentropy")
    return model


@pytest.mark.parametrize(
    "build_fn, rule",
    [
        (functools.partial(_mlp, output_name="dense_out"), "named-output"),
        (lambda: _mlp(compile=False), "compiled-by-default"),
        (lambda compile=True: _mlp(), "compile-false"),
        (functools.partial(_mlp, head_dtype=None), "float32-head"),
        (lambda strategy=None: _mlp(), "no-strategy-argument"),
        (
            lambda: keras.Sequential(
                [keras.Input((4,)), keras.layers.Dense(3)]
            ),
            "returns-functional-model",
        ),
    ],
)
def test_a_broken_builder_fails_naming_the_rule(build_fn, rule):
    assert rule in BUILDER_RULES
    with pytest.raises(AssertionError, match=rf"^\[{rule}\] "):
        check_builder(build_fn)


def test_a_builder_with_an_unregistered_layer_fails_the_round_trip():
    class Doubling(keras.layers.Layer):  # not registered: no load back
        def call(self, inputs):
            return inputs * 2.0

    def build():
        inputs = keras.Input(shape=(4,))
        x = Doubling()(inputs)
        outputs = keras.layers.Dense(
            3, activation="softmax", dtype="float32", name=PROBABILITIES
        )(x)
        model = keras.Model(inputs, outputs)
        model.compile("adam", "sparse_categorical_crossentropy")
        return model

    with pytest.raises(AssertionError, match=r"^\[keras-round-trip\] "):
        check_builder(build)


def test_cosine_recommender_meets_the_estimator_contract():
    check_recommender(CosineRecommender(n_neighbors=5))
    check_recommender(CosineRecommender)
    check_recommender(lambda: CosineRecommender(kind="user", n_neighbors=4))


class _KeepsLiked(CosineRecommender):
    def recommend(self, user_ids, top_k=10, **kwargs):
        kwargs["exclude_liked"] = False
        return super().recommend(user_ids, top_k, **kwargs)


class _FitReturnsNone(CosineRecommender):
    def fit(self, X, y=None):
        super().fit(X, y)


class _SetsFittedInInit(CosineRecommender):
    def __init__(self, kind="item", n_neighbors=20):
        super().__init__(kind, n_neighbors)
        self.cache_ = {}


@pytest.mark.parametrize(
    "factory, rule",
    [
        (_KeepsLiked, "liked-excluded"),
        (_FitReturnsNone, "fit-returns-self"),
        (_SetsFittedInInit, "params"),
    ],
)
def test_a_broken_recommender_fails_naming_the_rule(factory, rule):
    assert rule in RECOMMENDER_RULES
    with pytest.raises(AssertionError, match=rf"^\[{rule}\] "):
        check_recommender(factory)


def test_check_builder_rejects_what_is_not_a_builder():
    with pytest.raises(TypeError, match="build_fn"):
        check_builder(build_cnn((8, 8, 1), num_classes=2, filters=(4,)))
    with pytest.raises(AssertionError, match=r"^\[returns-functional-model\]"):
        check_builder(lambda: np.zeros(3))
