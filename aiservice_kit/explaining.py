"""Why did the model say that? Attributions for models and recommenders.

`explain(model, inputs)` returns one small dataclass per input:

- images and numeric sequences: integrated gradients (Sundararajan et al.,
  2017), computed in TensorFlow, against a baseline of zeros (a black
  image; configurable) -> `Attribution`;
- raw-string text models: attributions on the model's own
  `TextVectorization` output, mapped back to spans of the input string:
  gradient x input on the n-gram vector of the default n-gram encoder, or
  occlusion per token for the sequence encoders -> `TextAttribution`;
- `CosineRecommender`: for each recommended item, the liked items (or, for
  `kind="user"`, the neighbour users) that contributed to its score ->
  `RecommendationExplanation`.

`plot_explanation(e)` draws any of them with matplotlib (`[plot]` extra).

This module holds the results and the dispatch; the integrated-gradients
math is `_integrated_gradients` (shared with the `explain` signature of
SavedModel exports), the text methods are `_explain_text`, the plots are
`_explain_plots`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from aiservice_kit import _validation
from aiservice_kit._explain_plots import plot_explanation
from aiservice_kit._integrated_gradients import DEFAULT_STEPS

# ----------------------------------------------------------------- results


@dataclasses.dataclass
class Attribution:
    """Integrated-gradients attributions for one image or sequence.

    Attributes:
        kind: str. `"image"` or `"sequence"`.
        inputs: np.ndarray. The input, as given (no batch axis).
        attributions: np.ndarray. Same shape as `inputs`: each value's share
            of `prediction - baseline_prediction`.
        baseline: np.ndarray. The baseline the path starts from.
        target: int. The class explained.
        target_name: str or None. Its name, when the model stores names.
        prediction: float. The model's output for `target` at `inputs`.
        baseline_prediction: float. The same at `baseline`.
        convergence_delta: float. `attributions.sum() - (prediction -
            baseline_prediction)`: completeness error, which shrinks as
            `steps` grows.
    """

    kind: str
    inputs: np.ndarray
    attributions: np.ndarray
    baseline: np.ndarray
    target: int
    target_name: str | None
    prediction: float
    baseline_prediction: float
    convergence_delta: float

    def per_step(self) -> np.ndarray:
        """Attributions summed over the trailing (feature) axis.

        Returns:
            np.ndarray. One value per time step (sequences) or per pixel
            (images with channels).
        """
        if self.attributions.ndim <= 1:
            return self.attributions
        return self.attributions.sum(axis=-1)


@dataclasses.dataclass
class TextAttribution:
    """Per-token attributions for one text.

    Attributes:
        text: str. The input text.
        tokens: list of str. Its words, as written.
        spans: list of (int, int). Where each token sits in `text`
            (`text[start:end]`).
        attributions: np.ndarray. One value per token: positive pushes
            toward `target`. Gradient x input explains the log-odds
            `log(p / (1 - p))` of `target` (it does not saturate near 1,
            as the probability does on obvious spam); occlusion gives the
            drop in probability when the word is removed.
        char_attributions: np.ndarray. One value per character of `text`
            (each n-gram's share spread over its characters; the word's
            value spread over its characters for occlusion).
        target: int. The class explained.
        target_name: str or None. Its name.
        prediction: float. The model's probability of `target`.
        method: str. `"gradient_x_input"` or `"occlusion"`.
    """

    text: str
    tokens: list[str]
    spans: list[tuple[int, int]]
    attributions: np.ndarray
    char_attributions: np.ndarray
    target: int
    target_name: str | None
    prediction: float
    method: str

    def top_tokens(self, n: int = 5) -> list[tuple[str, float]]:
        """The `n` tokens with the largest attributions.

        Args:
            n: int. How many.

        Returns:
            list of (token, attribution), largest first.
        """
        order = np.argsort(-self.attributions, kind="stable")[:n]
        return [(self.tokens[i], float(self.attributions[i])) for i in order]


@dataclasses.dataclass
class RecommendationExplanation:
    """Why each item was recommended to one user.

    Attributes:
        user: the user id.
        items: np.ndarray. The recommended item ids, best first.
        scores: np.ndarray. Their scores (0.0: popularity back-fill).
        contributors: list of list of (id, float). Per recommended item,
            the liked items (`kind="item"`) or neighbour users
            (`kind="user"`) and their contributions, largest first; they
            sum to the item's score.
        contributor_kind: str. `"item"` or `"user"`.
    """

    user: Any
    items: np.ndarray
    scores: np.ndarray
    contributors: list[list[tuple[Any, float]]]
    contributor_kind: str


# ---------------------------------------------------------------- explain


def explain(
    model: Any,
    inputs: Any,
    *,
    target: int | Sequence[int] | None = None,
    baseline: Any = None,
    steps: int = DEFAULT_STEPS,
    method: str = "auto",
    top_k: int = 10,
    batch_size: int = 64,
) -> list:
    """Explains a model's outputs for some inputs.

    Args:
        model: a `keras.Model` (image, sequence or raw-string text) or a
            fitted `CosineRecommender`.
        inputs: a batch: images `(n, h, w[, c])`, sequences
            `(n, steps, features)`, a list of str, or user ids for the
            recommender.
        target: int, list of int or None. The class to explain per input
            (None: the predicted class).
        baseline: None, a number or an array shaped like one input. The
            integrated-gradients starting point; None is all zeros (a
            black image, a flat zero sequence: after the model's own
            rescaling or normalisation, "no signal").
        steps: int. Integration steps (trapezoid rule); the completeness
            error `convergence_delta` shrinks as they grow: 64 keeps it
            within 1% of the output change on the tested CNN and LSTM.
        method: str. Text models only: `"auto"` (gradient x input for the
            n-gram encoder, occlusion for the others), `"gradient"` or
            `"occlusion"`.
        top_k: int. Recommender only: items explained per user.
        batch_size: int. Interpolated inputs per forward pass.

    Returns:
        A list with one `Attribution`, `TextAttribution` or
        `RecommendationExplanation` per input.

    Raises:
        TypeError: if `model` is neither a Keras model nor a
            `CosineRecommender`.
        ValueError: on a bad argument (`steps` < 1, a target out of range,
            a baseline of the wrong shape, ...).

    Example:
    ```python
    from aiservice_kit import explain, plot_explanation
    explanations = explain(model, x_test[:4])
    explanations[0].attributions.shape  # (28, 28)
    plot_explanation(explanations[0])
    ```
    """
    steps = _validation.check_positive_int("steps", steps)
    batch_size = _validation.check_positive_int("batch_size", batch_size)
    _validation.check_choice(
        "method", method, ("auto", "gradient", "occlusion")
    )
    from aiservice_kit.recommenders import CosineRecommender

    if isinstance(model, CosineRecommender):
        return explain_recommendations(model, inputs, top_k=top_k)
    import keras

    if not isinstance(model, keras.Model):
        raise TypeError(
            "`model` must be a keras.Model or a fitted CosineRecommender. "
            f"Received: model of type {type(model).__name__}"
        )
    if len(model.inputs) != 1:
        raise ValueError(
            "`explain` handles models with one input. Received a model "
            f"with {len(model.inputs)} inputs"
        )
    if model.inputs[0].dtype == "string":
        texts = _texts(inputs)
        targets = _targets(target, len(texts))
        from aiservice_kit._explain_text import explain_texts

        return explain_texts(model, texts, targets, method, batch_size)
    array = np.asarray(inputs, dtype=np.float32)
    expected = tuple(model.inputs[0].shape[1:])
    if array.ndim != len(expected) + 1:
        raise ValueError(
            f"`inputs` must be a batch of shape (n, *{expected}). Received: "
            f"inputs with shape {array.shape}"
        )
    targets = _targets(target, len(array))
    return _integrated_gradients(
        model, array, targets, baseline, steps, batch_size
    )


def _texts(inputs: Any) -> list[str]:
    if isinstance(inputs, str):
        return [inputs]
    texts = list(np.asarray(inputs, dtype=object).ravel())
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(
                "`inputs` of a text model must be strings. Received an "
                f"entry of type {type(text).__name__}"
            )
    return texts


def _targets(target: Any, n: int) -> list[int | None]:
    if target is None:
        return [None] * n
    if np.ndim(target) == 0:
        return [int(target)] * n
    targets = [int(t) for t in target]
    if len(targets) != n:
        raise ValueError(
            "`target` must be one class or one per input. Received "
            f"{len(targets)} targets for {n} inputs"
        )
    return targets


def class_name(model: Any, index: int) -> str | None:
    """The stored name of class `index`, or None (shared with text)."""
    from aiservice_kit.models import get_class_names

    names = get_class_names(model)
    return None if names is None else names[index]


def check_target(target: int, num_outputs: int) -> int:
    """Returns `target` if it indexes an output; raises ValueError."""
    if not 0 <= target < num_outputs:
        raise ValueError(
            f"`target` must be a class index in [0, {num_outputs}). "
            f"Received: target={target}"
        )
    return target


# ----------------------------------------------------- integrated gradients


def _integrated_gradients(
    model: Any,
    array: np.ndarray,
    targets: list,
    baseline: Any,
    steps: int,
    batch_size: int,
) -> list[Attribution]:
    import tensorflow as tf

    from aiservice_kit._integrated_gradients import integrated_gradients
    from aiservice_kit.models.vision import IMAGE_INPUT

    shape = array.shape[1:]
    if baseline is None:
        base = np.zeros(shape, np.float32)
    else:
        base = np.asarray(baseline, dtype=np.float32)
        if base.ndim == 0:
            base = np.full(shape, base, np.float32)
        if base.shape != shape:
            raise ValueError(
                f"`baseline` must be a number or an array of shape {shape}. "
                f"Received: baseline with shape {base.shape}"
            )
    name = model.inputs[0].name.split(":")[0]
    kind = "image" if name == IMAGE_INPUT or len(shape) == 3 else "sequence"
    base_t = tf.constant(base)

    def output(x):
        return model(x, training=False)

    results = []
    for x, target in zip(array, targets, strict=True):
        x_t = tf.constant(x)
        ends = tf.cast(
            model(tf.stack([x_t, base_t]), training=False), tf.float32
        )
        if target is None:
            target = int(tf.argmax(ends[0]))
        target = check_target(target, int(ends.shape[-1]))
        attributions = integrated_gradients(
            output,
            x_t[None],
            base_t,
            tf.constant([target]),
            steps=steps,
            points_per_pass=batch_size,
        )[0].numpy()
        prediction = float(ends[0, target])
        base_prediction = float(ends[1, target])
        delta = float(attributions.sum()) - (prediction - base_prediction)
        results.append(
            Attribution(
                kind=kind,
                inputs=x,
                attributions=attributions,
                baseline=base,
                target=target,
                target_name=class_name(model, target),
                prediction=prediction,
                baseline_prediction=base_prediction,
                convergence_delta=delta,
            )
        )
    return results


# ------------------------------------------------------------ recommender


def explain_recommendations(
    model: Any, user_ids: Any, *, top_k: int = 10
) -> list[RecommendationExplanation]:
    """For each user, which liked items (or neighbours) made each pick.

    The recommender's score of item j for user u is a sum of terms: over
    the user's liked items i, `weight(u, i) x similarity(i, j)` (item
    kind), or over the neighbour users v, `similarity(u, v) x weight(v,
    j)` (user kind). This returns those terms, largest first; they add up
    to the recommended item's score.

    Args:
        model: a fitted `CosineRecommender`.
        user_ids: a user id or a 1-D array of fitted user ids.
        top_k: int. Items explained per user.

    Returns:
        list of `RecommendationExplanation`, one per user.

    Raises:
        NotFittedError: before `fit`.

    Example:
    ```python
    from aiservice_kit.explaining import explain_recommendations
    (e,) = explain_recommendations(model, [42], top_k=5)
    e.contributors[0][:3]  # the three liked items behind the top pick
    ```
    """
    from aiservice_kit.recommenders import interactions

    top_k = _validation.check_positive_int("top_k", top_k)
    scalar = np.ndim(user_ids) == 0
    users = np.atleast_1d(np.asarray(user_ids, dtype=object))
    items, scores = model.recommend(
        users if not scalar else user_ids, top_k=top_k
    )
    items = np.atleast_2d(items)
    scores = np.atleast_2d(scores)
    positions = interactions.lookup(
        model.user_ids_, users, name="user_ids", unknown="ignore"
    )
    history = model.user_items_.tocsr()
    similarity = model.similarity_.tocsr()
    item_ids = model.item_ids_
    results = []
    for row, (user, position) in enumerate(
        zip(users.tolist(), positions, strict=True)
    ):
        columns = interactions.lookup(
            item_ids,
            [i for i, s in zip(items[row], scores[row], strict=True) if s > 0],
            name="items",
            unknown="ignore",
        )
        contributors = []
        column_iter = iter(columns)
        for score in scores[row]:
            if score <= 0 or position < 0:
                contributors.append([])
                continue
            j = next(column_iter)
            if model.kind == "item":
                start, end = history.indptr[position : position + 2]
                liked = history.indices[start:end]
                weights = history.data[start:end].astype(np.float64)
                sims = similarity[liked][:, [j]].toarray().ravel()
                terms = weights * sims
                ids = item_ids[liked]
            else:
                start, end = similarity.indptr[position : position + 2]
                neighbours = similarity.indices[start:end]
                sims = similarity.data[start:end].astype(np.float64)
                weights = history[neighbours][:, [j]].toarray().ravel()
                terms = sims * weights
                ids = model.user_ids_[neighbours]
            keep = terms > 0
            order = np.argsort(-terms[keep], kind="stable")
            contributors.append(
                [(_plain(ids[keep][i]), float(terms[keep][i])) for i in order]
            )
        results.append(
            RecommendationExplanation(
                user=user,
                items=items[row],
                scores=scores[row],
                contributors=contributors,
                contributor_kind=model.kind,
            )
        )
    return results


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


__all__ = [
    "Attribution",
    "RecommendationExplanation",
    "TextAttribution",
    "explain",
    "explain_recommendations",
    "plot_explanation",
]
