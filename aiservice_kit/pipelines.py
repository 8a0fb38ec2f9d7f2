"""tf.data input pipelines that batch, shuffle and shard correctly.

`make_dataset` turns numpy arrays, lists of strings or an existing
`tf.data.Dataset` into a batched, prefetched dataset, ready for `model.fit`
or `strategy.experimental_distribute_dataset`. Under a multi-worker
strategy each worker then reads its own share of the batches (auto-shard
policy DATA, which works for in-memory data, unlike the FILE default).
"""

from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from aiservice_kit._validation import check_bool
from aiservice_kit._validation import check_choice
from aiservice_kit._validation import check_optional_positive_int

#: Accepted values of `make_dataset(shard_policy=...)`.
SHARD_POLICIES = ("data", "file", "auto", "off")
#: Batches kept ready ahead of the model when autotuning is off.
PREFETCH_BATCHES = 2

_SHARD = {
    "data": tf.data.experimental.AutoShardPolicy.DATA,
    "file": tf.data.experimental.AutoShardPolicy.FILE,
    "auto": tf.data.experimental.AutoShardPolicy.AUTO,
    "off": tf.data.experimental.AutoShardPolicy.OFF,
}


def _to_tensor(name: str, value: Any) -> tf.Tensor:
    """Converts arrays and lists (strings included) to one tensor."""
    if isinstance(value, tf.Tensor):
        return value
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(item, (str, bytes)) for item in value):
            return tf.constant(list(value), dtype=tf.string)
        value = np.asarray(value)
    if isinstance(value, np.ndarray):
        if value.dtype.kind in ("U", "S", "O"):
            # numpy fixed-width strings break Keras (TF #65237): go via
            # Python objects to a tf.string tensor.
            return tf.constant(value.astype(object), dtype=tf.string)
        return tf.convert_to_tensor(value)
    raise TypeError(
        f"`{name}` must be a numpy array, a list of strings, a tf.Tensor, a "
        f"dict of those, or a tf.data.Dataset. Received: {name} of type "
        f"{type(value).__name__}"
    )


def _to_tensors(name: str, value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _to_tensor(name, v) for key, v in value.items()}
    return _to_tensor(name, value)


def _num_rows(structure: Any) -> int:
    sizes = {int(t.shape[0]) for t in tf.nest.flatten(structure)}
    if len(sizes) != 1:
        raise ValueError(
            "`x` and `y` must hold the same number of samples. Received "
            f"sample counts: {sorted(sizes)}"
        )
    return sizes.pop()


def split_rows(value: Any, start: int, stop: int | None) -> Any:
    """Rows `start:stop` of an array, a list, or each value of a dict."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return {key: split_rows(v, start, stop) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return list(value)[start:stop]
    return value[start:stop]


def num_samples(x: Any) -> int | None:
    """Samples in `x` (a dict: its first value); None for an unknown-length
    dataset.

    Raises:
        TypeError: if `x` has no length.
    """
    if isinstance(x, tf.data.Dataset):
        cardinality = int(x.cardinality())
        return cardinality if cardinality >= 0 else None
    if isinstance(x, Mapping):
        x = next(iter(x.values()))
    if not hasattr(x, "__len__"):
        raise TypeError(
            "`x` must be an array, a list, a dict or a tf.data.Dataset. "
            f"Received: x of type {type(x).__name__}"
        )
    return len(x)


def require_x(x: Any) -> None:
    """Refuses a missing `x` naming what is accepted.

    Raises:
        TypeError: if `x` is None.
    """
    if x is None:
        raise TypeError(
            "`x` must be a numpy array, a list of strings, a tf.Tensor, "
            "a dict of those, or a tf.data.Dataset. Received: x=None"
        )


def make_dataset(
    x: Any,
    y: Any = None,
    *,
    batch_size: int | None = 32,
    shuffle: bool = False,
    seed: int | None = None,
    shuffle_buffer_size: int | None = None,
    cache: bool | str = False,
    drop_remainder: bool = False,
    repeat: bool = False,
    map_fn: Callable[..., Any] | None = None,
    prefetch: bool = True,
    autotune: bool = False,
    shard_policy: str = "data",
) -> tf.data.Dataset:
    """Builds a batched, prefetched `tf.data.Dataset` for training.

    In-memory arrays are shuffled as indices and gathered a batch at a time
    (one vectorized op per batch instead of one per sample). Strings are
    kept as `tf.string`, numpy fixed-width strings included.

    Args:
        x: numpy array, list of str, tf.Tensor, dict of those (one entry per
            named model input) or a `tf.data.Dataset` of unbatched elements
            (then `y` must be None).
        y: numpy array, list, tf.Tensor or None. Targets.
        batch_size: int or None. The global batch size; None leaves the
            data unbatched (for a dataset that is batched already).
        shuffle: bool. Reshuffle the samples every epoch.
        seed: int or None. Shuffle seed. Under multi-worker training give a
            seed, so every worker shuffles alike and the DATA shards do not
            overlap (`aiservice_kit.train` does).
        shuffle_buffer_size: int or None. Buffer for shuffling a
            `tf.data.Dataset` source (default 10,000). Arrays are always
            shuffled fully.
        cache: bool or str. Cache the elements of a `tf.data.Dataset`
            source in memory (True) or in files at this path prefix, so an
            expensive source is read once. Ignored for in-memory arrays.
        drop_remainder: bool. Drop the last partial batch of each epoch.
        repeat: bool. Repeat forever (then pass `steps_per_epoch` to fit).
        map_fn: callable or None. Applied to each batch, e.g. a
            `TextVectorization` layer: `map_fn(x_batch, y_batch)` (or
            `map_fn(x_batch)` when `y` is None).
        prefetch: bool. Prepare the next batches while the model trains.
        autotune: bool. Let tf.data's autotuner size its buffers. Off by
            default: on small CPU machines it left both cores idle for 1-2.6
            s at each epoch start (see benchmarks/training.py).
        shard_policy: str. How a multi-worker strategy splits the data:
            `"data"` (every worker reads every source, keeps its share of
            batches; right for in-memory data), `"file"` (one file per
            worker), `"auto"` or `"off"`.

    Returns:
        A `tf.data.Dataset` of `(x, y)` batches (or `x` batches when `y` is
        None).

    Raises:
        TypeError: if `x` or `y` has an unsupported type.
        ValueError: if `x` and `y` differ in length, or an argument has a
            bad value.

    Example:
    ```python
    from aiservice_kit import make_dataset
    dataset = make_dataset(x_train, y_train, batch_size=256, shuffle=True)
    model.fit(dataset, epochs=5)
    ```
    """
    batch_size = check_optional_positive_int("batch_size", batch_size)
    for name, flag in (
        ("shuffle", shuffle),
        ("drop_remainder", drop_remainder),
        ("repeat", repeat),
        ("prefetch", prefetch),
        ("autotune", autotune),
    ):
        check_bool(name, flag)
    seed = check_optional_positive_int("seed", seed, minimum=0)
    shuffle_buffer_size = check_optional_positive_int(
        "shuffle_buffer_size", shuffle_buffer_size
    )
    check_choice("shard_policy", shard_policy, SHARD_POLICIES)
    if not isinstance(cache, (bool, str)):
        raise TypeError(
            "`cache` must be True, False or a file path prefix (str). "
            f"Received: cache={cache!r}"
        )
    if map_fn is not None and not callable(map_fn):
        raise TypeError(
            f"`map_fn` must be a callable or None. Received: map_fn={map_fn!r}"
        )

    if isinstance(x, tf.data.Dataset):
        if y is not None:
            raise ValueError(
                "`y` must be None when `x` is a tf.data.Dataset (its "
                "elements already hold the targets). Received: y of type "
                f"{type(y).__name__}"
            )
        dataset = x
        if cache:
            dataset = dataset.cache("" if cache is True else cache)
        if shuffle:
            dataset = dataset.shuffle(
                shuffle_buffer_size or 10_000,
                seed=seed,
                reshuffle_each_iteration=True,
            )
        if batch_size is not None:
            dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    else:
        require_x(x)
        data = _to_tensors("x", x)
        if y is not None:
            data = (data, _to_tensors("y", y))
        num_rows = _num_rows(data)
        if num_rows == 0:
            raise ValueError("`x` must hold at least one sample. Received: 0")
        if batch_size is None:
            dataset = tf.data.Dataset.from_tensor_slices(data)
            if shuffle:
                dataset = dataset.shuffle(
                    num_rows, seed=seed, reshuffle_each_iteration=True
                )
        else:
            dataset = tf.data.Dataset.range(num_rows)
            if shuffle:
                dataset = dataset.shuffle(
                    num_rows, seed=seed, reshuffle_each_iteration=True
                )
            dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
            dataset = dataset.map(
                lambda index: tf.nest.map_structure(
                    lambda tensor: tf.gather(tensor, index), data
                )
            )
    if map_fn is not None:
        dataset = dataset.map(
            map_fn,
            num_parallel_calls=tf.data.AUTOTUNE if autotune else None,
        )
    if repeat:
        dataset = dataset.repeat()
    if prefetch:
        dataset = dataset.prefetch(
            tf.data.AUTOTUNE if autotune else PREFETCH_BATCHES
        )
    options = tf.data.Options()
    options.autotune.enabled = autotune
    options.experimental_distribute.auto_shard_policy = _SHARD[shard_policy]
    return dataset.with_options(options)


#: `fit` keywords `arrays_as_fit_dataset` carries over to a dataset fit.
_DATASET_FIT_KEYWORDS = frozenset(
    {
        "batch_size",
        "epochs",
        "verbose",
        "callbacks",
        "validation_split",
        "validation_data",
        "shuffle",
        "class_weight",
        "initial_epoch",
        "validation_batch_size",
        "validation_freq",
    }
)


def _is_numeric_array(value: Any) -> bool:
    return isinstance(value, np.ndarray) and value.dtype.kind in "biuf"


def arrays_as_fit_dataset(
    x: Any, y: Any, fit_kwargs: dict[str, Any]
) -> tuple[tf.data.Dataset, dict[str, Any]] | None:
    """Keras' array pipeline without its autotuner, for a plain `fit(x, y)`.

    Keras feeds numpy arrays through a tf.data pipeline whose autotuner,
    on small CPU machines, leaves both cores idle at epoch starts; a
    builder's model trained 1.1-1.36x faster per sample on the same
    batches without it (docs/image-classification.md). This turns a `fit`
    call on numeric arrays into the same call on a dataset that draws
    Keras' own permutations (same batches; a seeded run gives
    bit-identical weights) with the autotuner off, and takes
    `validation_split` from the end of the arrays, as Keras does. Anything
    else is left to Keras.

    Args:
        x: the `x` given to `fit`.
        y: the `y` given to `fit`.
        fit_kwargs: dict. The other keyword arguments given to `fit`.

    Returns:
        `(dataset, kwargs)` to call `fit(dataset, **kwargs)` with, or None
        when Keras should take the call as given: data other than one
        numeric array each for `x` and `y`, arrays of different lengths,
        `sample_weight`, `steps_per_epoch`, `shuffle="batch"`, a
        `validation_split` that leaves either side empty, or a strategy
        with several replicas.

    Example:
    ```python
    import numpy as np
    from aiservice_kit.pipelines import arrays_as_fit_dataset
    x, y = np.zeros((100, 4)), np.zeros(100, "int64")
    dataset, kwargs = arrays_as_fit_dataset(x, y, {"batch_size": 16})
    ```
    """
    if not (_is_numeric_array(x) and _is_numeric_array(y)):
        return None
    if not set(fit_kwargs) <= _DATASET_FIT_KEYWORDS:
        return None
    if len(x) != len(y) or len(x) == 0:
        return None
    shuffle = fit_kwargs.get("shuffle", True)
    batch_size = fit_kwargs.get("batch_size")
    if batch_size is None:
        batch_size = 32  # Keras' default
    if (
        not isinstance(shuffle, bool)
        or type(batch_size) is not int
        or batch_size < 1
    ):
        return None  # Keras' own checks answer anything odd
    if tf.distribute.get_strategy().num_replicas_in_sync > 1:
        return None
    kwargs = {
        key: value
        for key, value in fit_kwargs.items()
        if key not in ("batch_size", "validation_split")
    }
    # The dataset shuffles; Keras' own shuffle flag only warns on one.
    kwargs["shuffle"] = False
    split = fit_kwargs.get("validation_split") or 0.0
    # Keras ignores validation_split when validation_data is given.
    if split and kwargs.get("validation_data") is None:
        if not isinstance(split, float) or not 0.0 < split < 1.0:
            return None
        # Keras' rule (train_validation_split): the last fraction, unshuffled.
        split_at = int(np.floor(len(x) * (1.0 - split)))
        if split_at in (0, len(x)):
            return None
        kwargs["validation_data"] = (x[split_at:], y[split_at:])
        x, y = x[:split_at], y[:split_at]
    return _keras_order_dataset(x, y, batch_size, shuffle), kwargs


def _keras_order_dataset(
    x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool
) -> tf.data.Dataset:
    """Keras' array pipeline (same permutations, same batches), untuned.

    The epoch's permutation is drawn by the same op, in the same place,
    as in Keras' `ArrayDataAdapter`, so a seeded run trains on exactly
    the batches Keras would give it; only the autotuner (and its idle
    epoch starts) is gone.
    """
    data = (tf.convert_to_tensor(x), tf.convert_to_tensor(y))
    num_rows = len(x)
    full_batches = num_rows // batch_size
    in_full_batches = full_batches * batch_size

    def permutation(_):
        indices = tf.range(num_rows, dtype=tf.int64)
        if shuffle:
            indices = tf.random.shuffle(indices)
        return indices

    def batches_of(indices):
        full = tf.data.Dataset.from_tensor_slices(
            tf.reshape(indices[:in_full_batches], [full_batches, batch_size])
        )
        if num_rows == in_full_batches:
            return full
        return full.concatenate(
            tf.data.Dataset.from_tensors(indices[in_full_batches:])
        )

    dataset = tf.data.Dataset.range(1).map(permutation).prefetch(1)
    dataset = dataset.flat_map(batches_of).map(
        lambda indices: tf.nest.map_structure(
            lambda tensor: tf.gather(tensor, indices), data
        )
    )
    # flat_map hides the count; Keras needs it for its steps and progress.
    batches = full_batches + (num_rows > in_full_batches)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(batches))
    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_distribute.auto_shard_policy = _SHARD["data"]
    return dataset.prefetch(PREFETCH_BATCHES).with_options(options)
