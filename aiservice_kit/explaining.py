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
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from aiservice_kit import _validation

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
    steps: int = 64,
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
        return _explain_texts(model, texts, targets, method, batch_size)
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


def _class_name(model: Any, index: int) -> str | None:
    from aiservice_kit.models import get_class_names

    names = get_class_names(model)
    return None if names is None else names[index]


def _check_target(target: int, num_outputs: int) -> int:
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
    alphas = tf.linspace(0.0, 1.0, steps + 1)
    # Trapezoid weights: half at both ends of the path.
    weights = np.full(steps + 1, 1.0 / steps, np.float32)
    weights[[0, -1]] /= 2
    base_t = tf.constant(base)

    def output(x, target):
        return tf.cast(model(x, training=False), tf.float32)[:, target]

    results = []
    for x, target in zip(array, targets, strict=True):
        x_t = tf.constant(x)
        probabilities = model(tf.stack([x_t, base_t]), training=False)
        if target is None:
            target = int(tf.argmax(probabilities[0]))
        num_outputs = int(probabilities.shape[-1])
        target = _check_target(target, num_outputs)
        ends = tf.cast(probabilities, tf.float32)[:, target]
        total = tf.zeros(shape, tf.float32)
        for start in range(0, steps + 1, batch_size):
            a = alphas[start : start + batch_size]
            a = tf.reshape(a, (-1,) + (1,) * len(shape))
            path = base_t[None] + a * (x_t - base_t)[None]
            with tf.GradientTape() as tape:
                tape.watch(path)
                values = output(path, target)
            grads = tape.gradient(values, path)
            w = tf.reshape(
                weights[start : start + batch_size], (-1,) + (1,) * len(shape)
            )
            total += tf.reduce_sum(grads * w, axis=0)
        attributions = ((x_t - base_t) * total).numpy()
        prediction = float(ends[0])
        base_prediction = float(ends[1])
        delta = float(attributions.sum()) - (prediction - base_prediction)
        results.append(
            Attribution(
                kind=kind,
                inputs=x,
                attributions=attributions,
                baseline=base,
                target=target,
                target_name=_class_name(model, target),
                prediction=prediction,
                baseline_prediction=base_prediction,
                convergence_delta=delta,
            )
        )
    return results


# ------------------------------------------------------------------- text


def _standardize(vectorizer: Any, texts: list[str]) -> list[str]:
    """Applies the vectorizer's own standardization (lower, punctuation)."""
    import tensorflow as tf

    mode = vectorizer.get_config().get("standardize")
    values = tf.constant(texts)
    if mode in ("lower", "lower_and_strip_punctuation"):
        values = tf.strings.lower(values)
    if mode == "lower_and_strip_punctuation":
        values = tf.strings.regex_replace(
            values, r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']', ""
        )
    return [v.decode("utf-8") for v in values.numpy().tolist()]


def _explain_texts(
    model: Any,
    texts: list[str],
    targets: list,
    method: str,
    batch_size: int,
) -> list[TextAttribution]:
    import tensorflow as tf

    from aiservice_kit.models import split_text_model

    vectorizer, numeric = split_text_model(model)
    config = vectorizer.get_config()
    multi_hot = config.get("output_mode") == "multi_hot"
    if method == "auto":
        method = "gradient" if multi_hot else "occlusion"
    if method == "gradient" and not multi_hot:
        raise ValueError(
            "`method='gradient'` needs the n-gram (multi-hot) encoder; use "
            "'occlusion' for sequence encoders. Received a vectorizer with "
            f"output_mode={config.get('output_mode')!r}"
        )
    probabilities = model.predict(
        tf.constant(texts), batch_size=batch_size, verbose=0
    )
    scorer = _log_probability_fn(model, vectorizer, numeric)
    results = []
    for text, target, probs in zip(texts, targets, probabilities, strict=True):
        if target is None:
            target = int(np.argmax(probs))
        target = _check_target(target, len(probs))
        if method == "gradient":
            result = _ngram_gradient(vectorizer, scorer, text, target)
        else:
            result = _occlusion(model, vectorizer, text, target, batch_size)
        tokens, spans, attributions, chars = result
        results.append(
            TextAttribution(
                text=text,
                tokens=tokens,
                spans=spans,
                attributions=attributions,
                char_attributions=chars,
                target=target,
                target_name=_class_name(model, target),
                prediction=float(probs[target]),
                method=(
                    "gradient_x_input" if method == "gradient" else "occlusion"
                ),
            )
        )
    return results


def _word_spans(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    import re

    matches = list(re.finditer(r"\S+", text))
    return [m.group() for m in matches], [m.span() for m in matches]


def _ngram_gradient(
    vectorizer: Any, log_probability: Any, text: str, target: int
) -> tuple:
    """Gradient x input on the multi-hot n-gram vector, shared out."""
    import tensorflow as tf

    config = vectorizer.get_config()
    vector = tf.cast(vectorizer(tf.constant([text])), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(vector)
        value = log_probability(vector)[:, target]
    grads = tape.gradient(value, vector)
    per_ngram = (grads * vector).numpy()[0]
    vocabulary = vectorizer.get_vocabulary()
    index = {token: i for i, token in enumerate(vocabulary)}
    ngrams = config.get("ngrams") or 1
    widths = range(1, ngrams + 1) if isinstance(ngrams, int) else ngrams
    standardized = _standardize(vectorizer, [text])[0]
    words, spans = _word_spans(text)
    chars = np.zeros(len(text), np.float64)
    if config.get("split") == "character":
        # Units are the characters of the standardized text; "lower" keeps
        # ASCII positions, so unit i is text[i] when the lengths agree.
        units = list(standardized)
        unit_spans = (
            [(i, i + 1) for i in range(len(text))]
            if len(standardized) == len(text)
            else None
        )
    else:
        units, unit_spans = [], []
        for word, span in zip(words, spans, strict=True):
            form = _standardize(vectorizer, [word])[0]
            for part in form.split():
                units.append(part)
                unit_spans.append(span)
    unit_attr = np.zeros(len(units), np.float64)
    occurrences: dict[int, list[int]] = {}
    for n in widths:
        for start in range(len(units) - n + 1):
            key = " ".join(units[start : start + n])
            position = index.get(key)
            if position is not None and position > 0:  # 0 is [UNK]
                occurrences.setdefault(position, []).append((start, n))
    for position, places in occurrences.items():
        share = per_ngram[position] / len(places)
        for start, n in places:
            unit_attr[start : start + n] += share / n
    if unit_spans is None:  # lengths changed: spread evenly over the text
        chars[:] = unit_attr.sum() / max(len(text), 1)
    else:
        for value, (start, end) in zip(unit_attr, unit_spans, strict=True):
            chars[start:end] += value / (end - start)
    token_attr = np.array(
        [chars[start:end].sum() for start, end in spans], np.float64
    )
    return words, spans, token_attr, chars


def _log_odds(logits: Any) -> Any:
    """log(p / (1 - p)) per class, from logits, without saturating."""
    import tensorflow as tf

    n = logits.shape[-1]
    others = tf.stack(
        [
            tf.reduce_logsumexp(
                tf.concat([logits[:, :i], logits[:, i + 1 :]], axis=-1),
                axis=-1,
            )
            for i in range(n)
        ],
        axis=-1,
    )
    return logits - others


def _log_probability_fn(model: Any, vectorizer: Any, numeric: Any) -> Any:
    """Log-odds of each class, from the logits when the head allows.

    The gradient of a saturated probability (1.0 in float32 on obvious
    spam) vanishes, as does that of its log-softmax; the log-odds
    `logit_c - logsumexp(other logits)` does not.
    """
    import keras
    import tensorflow as tf

    head = model.layers[-1]
    if (
        isinstance(head, keras.layers.Dense)
        and keras.activations.serialize(head.activation) == "softmax"
    ):
        features = keras.Model(vectorizer.output, head.input)

        def log_probability(x):
            h = tf.cast(features(x, training=False), tf.float32)
            logits = tf.matmul(h, head.kernel) + head.bias
            return _log_odds(logits)

        return log_probability

    def log_of_output(x):
        p = tf.cast(numeric(x, training=False), tf.float32)
        return tf.math.log(p + 1e-7) - tf.math.log(1.0 - p + 1e-7)

    return log_of_output


def _occlusion(
    model: Any, vectorizer: Any, text: str, target: int, batch_size: int
) -> tuple:
    """Drop in the target probability when each word is removed."""
    import tensorflow as tf

    words, spans = _word_spans(text)
    variants = [text]
    for start, end in spans:
        variants.append(text[:start] + text[end:])
    probs = model.predict(
        tf.constant(variants), batch_size=batch_size, verbose=0
    )[:, target]
    attributions = (probs[0] - probs[1:]).astype(np.float64)
    chars = np.zeros(len(text), np.float64)
    for value, (start, end) in zip(attributions, spans, strict=True):
        chars[start:end] = value / (end - start)
    del vectorizer
    return words, spans, attributions, chars


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


# ------------------------------------------------------------------- plot


def plot_explanation(
    explanation: Any, *, ax: Any = None, max_items: int = 5
) -> Any:
    """Draws an explanation and returns the matplotlib Figure.

    Images get a heat map of the attributions over the (grayscale) image;
    texts get each word highlighted (red toward the class, blue against);
    sequences get per-step bars under the signal; recommendations get, per
    recommended item, bars of the liked items behind it. In a notebook the
    returned Figure shows inline.

    Args:
        explanation: an `Attribution`, `TextAttribution` or
            `RecommendationExplanation` (one element of `explain`'s list).
        ax: matplotlib Axes or None. Draw there (a new figure otherwise;
            sequences use it for the bars only).
        max_items: int. Recommended items shown.

    Returns:
        matplotlib.figure.Figure.

    Raises:
        ImportError: if matplotlib is missing (`pip install
            "aiservice_kit[plot]"`).
        TypeError: on anything but the three explanation types.

    Example:
    ```python
    from aiservice_kit import explain, plot_explanation
    figure = plot_explanation(explain(model, ["free prize, call now"])[0])
    figure.savefig("why.png")
    ```
    """
    try:
        import matplotlib.pyplot as plt
    except ModuleNotFoundError as error:
        raise ImportError(
            'plot_explanation needs matplotlib: pip install "aiservice_kit'
            '[plot]" (or matplotlib).'
        ) from error
    if isinstance(explanation, TextAttribution):
        return _plot_text(plt, explanation, ax)
    if isinstance(explanation, Attribution):
        if explanation.kind == "image":
            return _plot_image(plt, explanation, ax)
        return _plot_sequence(plt, explanation, ax)
    if isinstance(explanation, RecommendationExplanation):
        return _plot_recommendation(plt, explanation, ax, max_items)
    raise TypeError(
        "`explanation` must be an Attribution, TextAttribution or "
        "RecommendationExplanation. Received: explanation of type "
        f"{type(explanation).__name__}"
    )


def _figure(plt: Any, ax: Any, size: tuple) -> tuple:
    if ax is None:
        figure, ax = plt.subplots(figsize=size)
        return figure, ax
    return ax.figure, ax


def _title(e: Any) -> str:
    label = e.target_name if e.target_name is not None else e.target
    return f"class {label} (p={e.prediction:.2f})"


def _plot_image(plt: Any, e: Attribution, ax: Any) -> Any:
    figure, ax = _figure(plt, ax, (4, 4))
    image = e.inputs.astype(np.float64)
    if image.ndim == 3:
        image = image.mean(axis=-1)
    heat = e.attributions.astype(np.float64)
    if heat.ndim == 3:
        heat = heat.sum(axis=-1)
    limit = float(np.abs(heat).max()) or 1.0
    ax.imshow(image, cmap="gray")
    ax.imshow(heat, cmap="bwr", vmin=-limit, vmax=limit, alpha=0.55)
    ax.set_title(f"Integrated gradients: {_title(e)}")
    ax.axis("off")
    return figure


def _plot_sequence(plt: Any, e: Attribution, ax: Any) -> Any:
    if ax is None:
        figure, (top, ax) = plt.subplots(
            2, 1, figsize=(7, 4), sharex=True, height_ratios=(1, 1)
        )
        signal = e.inputs if e.inputs.ndim == 2 else e.inputs[:, None]
        top.plot(signal, linewidth=1)
        top.set_ylabel("input")
        top.set_title(f"Integrated gradients per step: {_title(e)}")
    else:
        figure = ax.figure
    steps = e.per_step()
    colours = np.where(steps >= 0, "tab:red", "tab:blue")
    ax.bar(np.arange(len(steps)), steps, color=colours, width=1.0)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xlabel("time step")
    ax.set_ylabel("attribution")
    return figure


def _plot_text(plt: Any, e: TextAttribution, ax: Any) -> Any:
    lines = max(1, math.ceil(len(e.text) / 70))
    figure, ax = _figure(plt, ax, (8, 0.5 + 0.45 * lines))
    ax.axis("off")
    limit = float(np.abs(e.attributions).max()) if len(e.tokens) else 0.0
    limit = limit or 1.0
    cmap = plt.get_cmap("bwr")
    renderer = figure.canvas.get_renderer()
    x, y = 0.0, 1.0
    line_height = 1.0 / (lines + 1)
    for token, value in zip(e.tokens, e.attributions, strict=True):
        colour = cmap(0.5 + 0.5 * float(value) / limit)
        text = ax.text(
            x,
            y,
            token,
            transform=ax.transAxes,
            va="top",
            fontsize=11,
            bbox={"facecolor": colour, "edgecolor": "none", "pad": 1.5},
        )
        width = text.get_window_extent(renderer).width
        width /= ax.get_window_extent(renderer).width
        if x > 0 and x + width > 1.0:  # wrap
            x, y = 0.0, y - line_height
            text.set_position((x, y))
        x += width + 0.012
    ax.set_title(f"{e.method}: {_title(e)}", fontsize=10, loc="left")
    return figure


def _plot_recommendation(
    plt: Any, e: RecommendationExplanation, ax: Any, max_items: int
) -> Any:
    shown = [i for i, s in enumerate(e.scores[:max_items]) if e.contributors[i]]
    figure, ax = _figure(plt, ax, (7, 0.6 + 0.9 * max(len(shown), 1)))
    labels = []
    cmap = plt.get_cmap("tab20")
    for row, i in enumerate(shown):
        left = 0.0
        for k, (_, value) in enumerate(e.contributors[i][:8]):
            ax.barh(row, value, left=left, color=cmap(k % 20))
            left += value
        rest = float(e.scores[i]) - left
        if rest > 0:
            ax.barh(row, rest, left=left, color="lightgray")
        top = ", ".join(str(source) for source, _ in e.contributors[i][:3])
        ax.text(
            float(e.scores[i]) * 1.02,
            row,
            f"{len(e.contributors[i])} {e.contributor_kind}s; top {top}",
            va="center",
            fontsize=8,
        )
        labels.append(f"item {e.items[i]}")
    ax.set_yticks(range(len(shown)), labels)
    ax.invert_yaxis()
    if shown:
        ax.set_xlim(0, max(float(e.scores[i]) for i in shown) * 1.6)
    ax.set_xlabel(
        f"score: contributions of the top 8 {e.contributor_kind}s "
        "(coloured) and the rest (grey)"
    )
    ax.set_title(f"Why these items for user {e.user}")
    return figure


__all__ = [
    "Attribution",
    "RecommendationExplanation",
    "TextAttribution",
    "explain",
    "explain_recommendations",
    "plot_explanation",
]
