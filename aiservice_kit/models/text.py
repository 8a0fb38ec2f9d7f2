"""Text classification on raw strings: `build_text_classifier` and helpers.

The model holds its own `TextVectorization`, adapted on the training texts,
so it takes raw strings (input `text`, shape `(batch,)`, dtype string) in
the notebook, in a `.keras` file and in an exported SavedModel alike. It
also stores its class names, so predictions map back to the user's labels.
"""

import re
from collections.abc import Iterable
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from aiservice_kit._tracing import build_before_tracing
from aiservice_kit._validation import check_bool
from aiservice_kit._validation import check_choice
from aiservice_kit._validation import check_fraction
from aiservice_kit._validation import check_optional_positive_int
from aiservice_kit._validation import check_positive_int
from aiservice_kit.models._checks import check_batch_sizes
from aiservice_kit.models._checks import check_validation
from aiservice_kit.models._checks import checked_data
from aiservice_kit.models._checks import class_indices
from aiservice_kit.models._checks import is_pandas
from aiservice_kit.models._checks import label_array
from aiservice_kit.models._contract import get_class_names
from aiservice_kit.models._contract import split_text_model  # noqa: F401
from aiservice_kit.models._heads import check_class_names
from aiservice_kit.models._heads import check_optimizer
from aiservice_kit.models._heads import classification_head
from aiservice_kit.models._heads import compile_classifier
from aiservice_kit.models.layers import ClassNames
from aiservice_kit.models.layers import MaskedGlobalAveragePooling1D
from aiservice_kit.models.layers import PositionalEmbedding
from aiservice_kit.models.layers import TransformerEncoder
from aiservice_kit.models.layers import recurrent_layer

# `split_text_model` is documented here since 0.1; its one home is
# `models._contract`, re-exported above.

#: Name of the string input of every model built by `build_text_classifier`.
TEXT_INPUT = "text"
#: Name of the model's `TextVectorization` layer.
VECTORIZER_NAME = "vectorizer"
#: Accepted encoders. `"ngrams"` is the default: fastest and most accurate
#: on short texts (see docs/text-classification.md).
ENCODERS = ("ngrams", "cnn", "lstm", "bilstm", "transformer")
#: Accepted tokenizations.
TOKENIZATIONS = ("auto", "word", "character")
#: Texts sampled to choose the tokenization and the sequence length.
_SAMPLE_SIZE = 10_000
NGRAM_MODE = "multi_hot"
#: Vocabulary of the `"ngrams"` encoder when `max_tokens="auto"`: the
#: 50,000 most frequent character 1-3-grams (20,000 lost 0.4-0.7 points
#: on online-shopping-zh; see docs/text-classification.md).
NGRAM_MAX_TOKENS = 50_000
#: Vocabulary of the sequence encoders when `max_tokens="auto"`.
SEQUENCE_MAX_TOKENS = 20_000
#: `TextClassifier.fit`'s default batch size for array inputs.
FIT_BATCH_SIZE = 128
#: `TextClassifier.fit`'s early stopping: the held-out fraction, the
#: epochs without a better validation loss before stopping, the epochs
#: trained when `epochs` is not given, and the fewest samples it needs.
VALIDATION_FRACTION = 0.1
PATIENCE = 2
EARLY_STOPPING_EPOCHS = 10
EARLY_STOPPING_MIN_SAMPLES = 200
# Han ideographs, kana, CJK punctuation and full-width forms: scripts
# written without spaces between words.
_CJK = re.compile(
    "[\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uf900-\ufaff\uff00-\uffef]"
)


def prepare_texts(texts: Any, *, name: str = "texts") -> np.ndarray:
    """Returns texts as a 1-D numpy array of Python `str` (dtype object).

    Keras' `fit`, `evaluate` and `predict` reject numpy's fixed-width
    string dtypes (`<U..`, `|S..`; TF #65237). Pass texts through this
    first when they come as such an array.

    Args:
        texts: list, tuple or numpy array of str or bytes (any string
            dtype, shape (n,) or (n, 1)), or a pandas Series.
        name: str. The argument's name used in error messages.

    Returns:
        A numpy array of dtype object holding `str` values.

    Raises:
        TypeError: if `texts` is not a collection of strings.
        ValueError: if it is not one-dimensional.

    Example:
    ```python
    import numpy as np
    from aiservice_kit.models.text import prepare_texts
    x = prepare_texts(np.array(["free prize", "see you at 5"]))
    model.predict(x)
    ```
    """
    if isinstance(texts, (str, bytes)):
        raise TypeError(
            f"`{name}` must be a list or array of strings, not a single "
            f"string. Received: {name}={texts!r:.80}"
        )
    if isinstance(texts, tf.Tensor):
        texts = texts.numpy()
    try:
        array = np.asarray(texts, dtype=object)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"`{name}` must be a list or numpy array of strings. "
            f"Received an object of type {type(texts).__name__}: {error}"
        ) from error
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(
            f"`{name}` must be one-dimensional (one string per sample). "
            f"Received an array of shape {array.shape}"
        )
    out = np.empty(len(array), dtype=object)
    for index, text in enumerate(array):
        if isinstance(text, (bytes, np.bytes_)):
            text = bytes(text).decode("utf-8", errors="replace")
        elif isinstance(text, (str, np.str_)):
            text = str(text)
        else:
            missing = text is None or (
                isinstance(text, (float, np.floating)) and np.isnan(text)
            )
            hint = (
                " (a missing text: drop that sample, or fill it, e.g. with '')"
                if missing
                else " (the model takes raw texts: convert numbers with "
                "str() if they are texts)"
            )
            raise TypeError(
                f"`{name}` must hold strings only; item {index} is a "
                f"{type(text).__name__}: {text!r:.80}{hint}"
            )
        out[index] = text
    return out


def _as_text_input(model: keras.Model, x: Any) -> Any:
    """Converts lists, numpy arrays and pandas Series to what Keras takes.

    Each item must be a string (None, NaN and numbers are refused naming
    the first bad index), and there must be at least one. Datasets,
    tensors and dicts go to Keras unchanged.
    """
    if not (isinstance(x, (list, tuple, np.ndarray)) or is_pandas(x)):
        return x
    texts = prepare_texts(x, name="x")
    if len(texts) == 0:
        raise ValueError(
            f"`x` holds no texts; model '{model.name}' needs at least one "
            f"string. Received: x of length 0"
        )
    return texts


@keras.saving.register_keras_serializable(package="aiservice_kit")
class TextClassifier(keras.Model):
    """The Functional model `build_text_classifier` returns.

    A plain Functional Keras model (same graph, saving and export) whose
    `fit`, `evaluate` and `predict` also accept what users hold: Python
    lists of strings, pandas Series and numpy arrays of any string dtype
    (which Keras itself rejects, TF #65237), and string labels when the
    model stores class names. Texts that are not strings (None, NaN,
    numbers), no texts at all, and labels `CheckedModel` would refuse
    (see `_checks.check_labels`) are refused naming the argument and the
    fix. Datasets, tensors and dicts are passed to Keras unchanged.

    Example:
    ```python
    from aiservice_kit import build_text_classifier
    model = build_text_classifier(texts, class_names=["ham", "spam"])
    model.fit(texts, ["spam", "ham", ...], epochs=5)
    model.predict(["free prize, call now"])
    ```
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)

    def check_data(
        self, x: Any, y: Any = None, *, with_labels: bool = True
    ) -> tuple[Any, Any]:
        """Checks and converts `(x, y)` as `fit` does, before training.

        Texts become a numpy array of `str` (see `prepare_texts`); labels
        become class indices (class names through the stored names).
        `aiservice_kit.train` calls it too, so both paths take and refuse
        the same data.

        Args:
            x: the texts.
            y: the labels.
            with_labels: bool. False for texts alone (`predict`).

        Returns:
            `(x, y)`, checked and converted.

        Raises:
            TypeError: for texts that are not strings, labels of the
                wrong kind.
            ValueError: for no texts, labels of the wrong shape or values,
                or texts and labels of different lengths.
        """
        return checked_data(
            self, x, y, with_labels=with_labels, check_x=_as_text_input
        )

    def fit(
        self,
        x: Any = None,
        y: Any = None,
        *args: Any,
        early_stopping: bool | str = "auto",
        **kwargs: Any,
    ):
        """Keras `fit`, also accepting lists, numpy strings, string labels.

        `batch_size` defaults to 128 rather than Keras' 32: on SMS Spam the
        default encoder trained ~1.7x faster with the same spam F1. A
        `tf.data.Dataset` is not reshuffled (Keras would only warn that it
        ignores `shuffle=True`): shuffle it in the pipeline.

        Early stopping (`early_stopping="auto"`, the default): when `x`
        and `y` are arrays or lists of at least 200 samples and no
        `callbacks`, `validation_data` or `validation_split` is given, a
        random 10% of them is held out (seeded, so runs repeat), training
        runs for `epochs` (default 10 rather than Keras' 1) and stops once
        the validation loss has not improved for 2 epochs, keeping the
        best weights. The bag of n-grams overfits after 2-4 epochs on the
        data sets of docs/text-classification.md. `early_stopping=False`
        is plain Keras `fit`; `True` turns it on even with callbacks (it
        is added to them).

        Args:
            x: texts (list, numpy array, `tf.data.Dataset`, ...).
            y: labels: integers, or class names when the model stores
                them.
            *args: Keras `fit`'s positional arguments.
            early_stopping: bool or "auto". See above.
            **kwargs: Keras `fit`'s keyword arguments.

        Returns:
            The Keras `History`.
        """
        if early_stopping not in ("auto", True, False):
            raise ValueError(
                "`early_stopping` must be True, False or 'auto'. Received: "
                f"early_stopping={early_stopping!r}"
            )
        check_batch_sizes(args, kwargs)
        if isinstance(x, tf.data.Dataset):
            if len(args) < 5:
                kwargs.setdefault("shuffle", False)
        elif not args:
            kwargs.setdefault("batch_size", FIT_BATCH_SIZE)
        x, y = self.check_data(x, y)
        if early_stopping == "auto":
            early_stopping = (
                not args
                and isinstance(x, np.ndarray)
                and y is not None
                and len(x) >= EARLY_STOPPING_MIN_SAMPLES
                and not any(
                    kwargs.get(key)
                    for key in (
                        "callbacks",
                        "validation_data",
                        "validation_split",
                    )
                )
            )
        if early_stopping:
            kwargs = self._hold_out(x, y, kwargs)
            if "_train" in kwargs:
                x, y = kwargs.pop("_train")
            if len(args) < 2:
                kwargs.setdefault("epochs", EARLY_STOPPING_EPOCHS)
        kwargs = check_validation(self, kwargs, check_x=_as_text_input)
        build_before_tracing(self, x, y)
        return super().fit(x, y, *args, **kwargs)

    def _hold_out(self, x: Any, y: Any, kwargs: dict[str, Any]):
        """Adds a held-out validation set and the early-stopping callback."""
        kwargs = dict(kwargs)
        callbacks = list(kwargs.get("callbacks") or [])
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss",
                patience=PATIENCE,
                restore_best_weights=True,
            )
        )
        kwargs["callbacks"] = callbacks
        if kwargs.get("validation_data") is not None or kwargs.get(
            "validation_split"
        ):
            return kwargs
        if not isinstance(x, np.ndarray) or y is None:
            raise ValueError(
                "`early_stopping=True` without `validation_data` needs `x` "
                "and `y` as arrays or lists to hold a validation split "
                "out of. Received: x of type "
                f"{type(x).__name__}, y of type {type(y).__name__}"
            )
        labels = np.asarray(y)
        order = np.random.default_rng(0).permutation(len(x))
        held = max(1, int(round(len(x) * VALIDATION_FRACTION)))
        validation, train = order[:held], order[held:]
        kwargs["validation_data"] = (x[validation], labels[validation])
        kwargs["_train"] = (x[train], labels[train])
        return kwargs

    def evaluate(self, x: Any = None, y: Any = None, *args: Any, **kwargs: Any):
        """Keras `evaluate`, also accepting lists and numpy strings."""
        check_batch_sizes(args, kwargs)
        x, y = self.check_data(x, y)
        build_before_tracing(self, x, y)
        return super().evaluate(x, y, *args, **kwargs)

    def predict(self, x: Any, *args: Any, **kwargs: Any):
        """Keras `predict`, also accepting lists and numpy strings.

        A single string is a batch of one: `predict("free prize")`
        returns probabilities of shape (1, num_classes), as
        `predict(["free prize"])` does.
        """
        if isinstance(x, (str, bytes)):
            x = [x]
        check_batch_sizes(args, kwargs)
        x, _ = self.check_data(x, with_labels=False)
        return super().predict(x, *args, **kwargs)


def _training_texts(train_texts: Any) -> tuple[Any, np.ndarray]:
    """Returns (what to adapt on, a sample of texts as an array)."""
    if isinstance(train_texts, tf.data.Dataset):
        dataset = train_texts
        spec = dataset.element_spec
        if isinstance(spec, (tuple, list)):
            dataset = dataset.map(lambda *parts: parts[0])
        elif isinstance(spec, dict):
            if TEXT_INPUT not in spec:
                raise ValueError(
                    "A dataset of dicts given as `train_texts` must have a "
                    f"'{TEXT_INPUT}' key. Received element_spec={spec}"
                )
            dataset = dataset.map(lambda item: item[TEXT_INPUT])
        spec = dataset.element_spec
        if not isinstance(spec, tf.TensorSpec) or spec.dtype != tf.string:
            raise TypeError(
                "`train_texts` as a tf.data.Dataset must yield strings (or "
                "(text, label) pairs). Received element_spec="
                f"{train_texts.element_spec}"
            )
        if spec.shape.rank == 0:
            dataset = dataset.batch(256)
        elif spec.shape.rank and spec.shape.rank > 1:
            dataset = dataset.map(lambda text: tf.reshape(text, [-1]))
        sample: list[bytes] = []
        for item in dataset.as_numpy_iterator():
            sample.extend(np.atleast_1d(item).tolist())
            if len(sample) >= _SAMPLE_SIZE:
                break
        sample_array = prepare_texts(sample, name="train_texts")
        return dataset, sample_array
    texts = prepare_texts(train_texts, name="train_texts")
    return texts, texts[:_SAMPLE_SIZE]


def _is_cjk(texts: Iterable[str]) -> bool:
    """Whether most texts are written in a script without spaces."""
    texts = list(texts)
    with_cjk = sum(1 for text in texts if _CJK.search(text))
    return with_cjk >= max(1, len(texts) // 5)


def _auto_sequence_length(texts: np.ndarray, tokenize: str) -> int:
    counts = [
        len(text) if tokenize == "character" else len(text.split())
        for text in texts
    ]
    length = int(np.ceil(np.percentile(counts, 95))) if counts else 16
    return int(min(max(length, 16), 512))


def build_text_classifier(
    train_texts: Any,
    num_classes: int | None = None,
    *,
    class_names: Sequence[str] | None = None,
    encoder: str = "ngrams",
    tokenize: str = "auto",
    ngrams: int | None = None,
    max_tokens: int | str | None = "auto",
    sequence_length: int | None = None,
    embedding_dim: int = 64,
    units: int = 64,
    num_heads: int = 2,
    dense_units: int | str | None = "auto",
    dropout: float = 0.3,
    label_mode: str = "int",
    optimizer: str | keras.optimizers.Optimizer = "adam",
    compile: bool = True,
    name: str = "text_classifier",
) -> keras.Model:
    """Builds a text classifier that takes raw strings and returns classes.

    A `TextVectorization` layer is adapted on `train_texts` and placed
    inside the model, so `model.predict(["free prize, call now"])` works,
    and the `.keras` file and an exported SavedModel take raw strings too.

    Encoders (`encoder=`):

    - `"ngrams"` (default): a bag of n-grams (multi-hot) and one
      hidden dense layer. Fastest to train by far and the most accurate on
      short texts (SMS, tickets, reviews up to a few hundred words). With
      character tokenization it uses the 50,000 most frequent character
      1-3-grams, which handle misspellings, numbers and any language. It
      beats character and word TF-IDF + logistic regression on SMS Spam
      and online-shopping-zh (docs/text-classification.md), trained with
      `model.fit(texts, labels)`: early stopping on a held-out 10% is on
      by default (see `TextClassifier.fit`).
    - `"cnn"`: an embedding, a 1-D convolution and global max pooling.
    - `"lstm"` / `"bilstm"`: an embedding and a (bidirectional) LSTM.
    - `"transformer"`: `PositionalEmbedding` and one `TransformerEncoder`
      block, then masked average pooling.

    Tokenization (`tokenize=`): `"word"` (lowercased, punctuation
    stripped, split on whitespace), `"character"`, or `"auto"`: character
    n-grams for the `"ngrams"` encoder; for the sequence encoders, words
    unless the training texts are mostly Chinese or Japanese (scripts
    without spaces), then characters.

    Args:
        train_texts: list or numpy array of str (any string dtype), or a
            `tf.data.Dataset` of strings or of (text, label) pairs. Only
            used to adapt the vocabulary (and choose defaults); train the
            model with `fit` afterwards.
        num_classes: int. Number of classes (>= 2; binary is 2 classes).
            May be omitted when `class_names` is given.
        class_names: list of str or None. The label of each class, in the
            order of the integer labels. Stored in the model: read it back
            with `get_class_names`, map string labels to integers with
            `encode_labels`, and predictions back with `predict_labels`.
        encoder: str. One of `"ngrams"`, `"cnn"`, `"lstm"`, `"bilstm"`,
            `"transformer"`.
        tokenize: str. `"auto"`, `"word"` or `"character"`.
        ngrams: int or None. Longest n-gram of the `"ngrams"` encoder
            (None: 3 for characters, 2 for words). Ignored by the others.
        max_tokens: int, None or "auto". Vocabulary size (most frequent
            tokens or n-grams); None for no limit; `"auto"`: 50,000 for
            the `"ngrams"` encoder, 20,000 for the others.
        sequence_length: int or None. Tokens kept per text by the sequence
            encoders (longer texts are truncated, shorter padded); None:
            the 95th percentile of the training texts' lengths, between
            16 and 512.
        embedding_dim: int. Size of the token embeddings.
        units: int. Filters (cnn), units (lstm, per direction) or
            feed-forward width (transformer).
        num_heads: int. Attention heads of the transformer; must divide
            `embedding_dim`.
        dense_units: int, None or "auto". Width of the hidden dense layer
            before the softmax; None for none; `"auto"`: 32 for the n-gram
            bag (whose dense layer dominates its cost), 64 for the others.
        dropout: float. Dropout rate in [0, 1).
        label_mode: str. `"int"` for integer labels, `"categorical"` for
            one-hot labels.
        optimizer: str or keras.optimizers.Optimizer. Used when compiling.
        compile: bool. Whether to compile the model.
        name: str. The model's name.

    Returns:
        A Functional `keras.Model` with one string input named `text` of
        shape (batch,) and one output `probabilities` of shape
        (batch, num_classes).

    Raises:
        ValueError: if an argument has a bad value (an unknown encoder,
            `num_classes=1`, no training texts, ...).
        TypeError: if an argument has a bad type (texts that are not
            strings, ...).

    Example:
    ```python
    from aiservice_kit import build_text_classifier
    from aiservice_kit.models.text import encode_labels
    from aiservice_kit.models.text import predict_labels
    texts = ["free prize, call now", "see you at 5", ...]
    labels = ["spam", "ham", ...]
    model = build_text_classifier(texts, class_names=["ham", "spam"])
    model.fit(texts, encode_labels(model, labels), epochs=5)
    predict_labels(model, ["claim your free prize"])  # ['spam']
    ```
    """
    num_classes, names = check_class_names(num_classes, class_names)
    check_choice("encoder", encoder, ENCODERS)
    check_choice("tokenize", tokenize, TOKENIZATIONS)
    ngrams = check_optional_positive_int("ngrams", ngrams)
    if max_tokens == "auto":
        max_tokens = (
            NGRAM_MAX_TOKENS if encoder == "ngrams" else SEQUENCE_MAX_TOKENS
        )
    max_tokens = check_optional_positive_int(
        "max_tokens", max_tokens, minimum=3
    )
    sequence_length = check_optional_positive_int(
        "sequence_length", sequence_length
    )
    embedding_dim = check_positive_int("embedding_dim", embedding_dim)
    units = check_positive_int("units", units)
    num_heads = check_positive_int("num_heads", num_heads)
    if encoder == "transformer" and embedding_dim % num_heads:
        raise ValueError(
            "`embedding_dim` must be divisible by `num_heads` for the "
            f"transformer encoder. Received: embedding_dim={embedding_dim}, "
            f"num_heads={num_heads}"
        )
    if dense_units == "auto":
        # The n-gram bag's dense layer holds max_tokens x width weights, the
        # bulk of the model's cost: 32 trained ~35% faster than 64 on SMS
        # Spam with the same F1. The sequence encoders' inputs are small.
        dense_units = 32 if encoder == "ngrams" else 64
    dense_units = check_optional_positive_int("dense_units", dense_units)
    dropout = check_fraction("dropout", dropout)
    check_choice("label_mode", label_mode, ("int", "categorical"))
    check_optimizer(optimizer)
    check_bool("compile", compile)
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a str. Received: name={name!r}")
    adapt_data, sample = _training_texts(train_texts)
    if len(sample) == 0:
        raise ValueError(
            "`train_texts` is empty: the vocabulary is adapted on it, so "
            "give the training texts."
        )

    if tokenize == "auto":
        if encoder == "ngrams" or _is_cjk(sample):
            tokenize = "character"
        else:
            tokenize = "word"
    standardize = (
        "lower" if tokenize == "character" else "lower_and_strip_punctuation"
    )
    split = "character" if tokenize == "character" else "whitespace"
    if encoder == "ngrams":
        if ngrams is None:
            ngrams = 3 if tokenize == "character" else 2
        vectorizer = keras.layers.TextVectorization(
            max_tokens=max_tokens,
            standardize=standardize,
            split=split,
            ngrams=ngrams,
            output_mode=NGRAM_MODE,
            name=VECTORIZER_NAME,
        )
    else:
        if sequence_length is None:
            sequence_length = _auto_sequence_length(sample, tokenize)
        vectorizer = keras.layers.TextVectorization(
            max_tokens=max_tokens,
            standardize=standardize,
            split=split,
            output_mode="int",
            output_sequence_length=sequence_length,
            name=VECTORIZER_NAME,
        )
    vectorizer.adapt(adapt_data)
    vocabulary_size = vectorizer.vocabulary_size()

    inputs = keras.Input(shape=(), dtype="string", name=TEXT_INPUT)
    x = vectorizer(inputs)
    if encoder == "ngrams":
        pass  # multi-hot n-grams feed the dense layer directly
    elif encoder == "cnn":
        x = keras.layers.Embedding(
            vocabulary_size, embedding_dim, name="embedding"
        )(x)
        x = keras.layers.Conv1D(
            units, 5, padding="same", activation="relu", name="conv"
        )(x)
        x = keras.layers.GlobalMaxPooling1D(name="max_pool")(x)
    elif encoder in ("lstm", "bilstm"):
        x = keras.layers.Embedding(
            vocabulary_size, embedding_dim, mask_zero=True, name="embedding"
        )(x)
        x = recurrent_layer(
            "lstm", units, bidirectional=encoder == "bilstm", name="lstm"
        )(x)
    else:
        x = PositionalEmbedding(
            sequence_length,
            vocabulary_size,
            embedding_dim,
            name="embedding",
        )(x)
        x = TransformerEncoder(
            intermediate_dim=units,
            num_heads=num_heads,
            dropout=dropout,
            name="transformer",
        )(x)
        x = MaskedGlobalAveragePooling1D(name="avg_pool")(x)
    if dense_units:
        if dropout and encoder != "ngrams":
            x = keras.layers.Dropout(dropout, name="dense_dropout")(x)
        x = keras.layers.Dense(dense_units, activation="relu", name="dense")(x)
    x = ClassNames(names, name="class_names")(x)
    # Multi-hot n-grams are int64: no dropout straight on them.
    head_dropout = dropout if dense_units or encoder != "ngrams" else 0.0
    outputs = classification_head(x, num_classes, dropout=head_dropout)
    model = TextClassifier(inputs, outputs, name=name)
    if compile:
        compile_classifier(model, optimizer=optimizer, label_mode=label_mode)
    return model


def _check_model(model: Any) -> keras.Model:
    if not isinstance(model, keras.Model):
        raise TypeError(
            "`model` must be a keras.Model. Received: model of type "
            f"{type(model).__name__}"
        )
    return model


def encode_labels(model: keras.Model, labels: Any) -> np.ndarray:
    """Maps labels to the integer class indices the model trains on.

    Args:
        model: keras.Model. The classifier (its stored class names are
            used for string labels).
        labels: list, numpy array or pandas Series of class names (str)
            or of integer indices (whole-number floats such as 1.0 too).

    Returns:
        An int64 numpy array of class indices.

    Raises:
        ValueError: if a label is not one of the model's classes, is
            missing (None, NaN), is a fractional number or an index out
            of range.
        TypeError: if string labels are given to a model without class
            names, or labels are neither strings nor numbers.

    Example:
    ```python
    from aiservice_kit.models.text import encode_labels
    y = encode_labels(model, ["ham", "spam", "ham"])  # array([0, 1, 0])
    ```
    """
    _check_model(model)
    array = label_array(labels, name="labels")
    if array is None:
        array = label_array(np.asarray(labels), name="labels")
    if array.ndim != 1:
        raise ValueError(
            "`labels` must be one-dimensional (one label per sample). "
            f"Received an array of shape {array.shape}"
        )
    return class_indices(model, array, name="labels")


def predict_labels(
    model: keras.Model, texts: Any, *, batch_size: int = 256
) -> np.ndarray:
    """Predicts the most probable class of each text, as the user's labels.

    Args:
        model: keras.Model. A model built by `build_text_classifier`.
        texts: list or numpy array of str (any string dtype).
        batch_size: int. Texts per prediction batch.

    Returns:
        A numpy array of class names (dtype object) when the model stores
        class names, else of int64 class indices.

    Example:
    ```python
    from aiservice_kit.models.text import predict_labels
    predict_labels(model, ["free prize, call now"])  # array(['spam'])
    ```
    """
    texts = prepare_texts(texts)
    batch_size = check_positive_int("batch_size", batch_size)
    probabilities = _check_model(model).predict(
        texts, batch_size=batch_size, verbose=0
    )
    indices = np.argmax(probabilities, axis=-1).astype(np.int64)
    names = get_class_names(model)
    if names is None:
        return indices
    return np.asarray(names, dtype=object)[indices]
