"""Text attribution for raw-string models (the text half of `explain`).

A raw-string classifier starts with its own `TextVectorization`; the
attributions are computed on that layer's output and mapped back to spans
of the input string:

- gradient x input on the multi-hot n-gram vector of the default n-gram
  encoder, explaining the log-odds of the class (it does not saturate on
  obvious spam as the probability does);
- occlusion per word for the sequence encoders: the drop in probability
  when the word is removed.

`explaining.explain` dispatches here; the results are
`explaining.TextAttribution`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from aiservice_kit.explaining import TextAttribution
from aiservice_kit.explaining import check_target
from aiservice_kit.explaining import class_name


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


def explain_texts(
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
        target = check_target(target, len(probs))
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
                target_name=class_name(model, target),
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
