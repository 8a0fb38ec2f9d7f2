"""make_dataset: arrays, strings and datasets, batched and sharded."""

import numpy as np
import pytest
import tensorflow as tf

from aiservice_kit import make_dataset
from aiservice_kit.pipelines import arrays_as_fit_dataset


def _rows(dataset):
    return [tuple(np.asarray(t) for t in batch) for batch in dataset]


def test_arrays_are_batched_in_order_with_the_last_partial_batch():
    x = np.arange(10 * 2).reshape(10, 2).astype("float32")
    y = np.arange(10)
    batches = _rows(make_dataset(x, y, batch_size=4))
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x)
    dropped = _rows(make_dataset(x, y, batch_size=4, drop_remainder=True))
    assert [len(b[0]) for b in dropped] == [4, 4]


def test_shuffle_is_a_seeded_permutation_that_changes_each_epoch():
    y = np.arange(100)
    dataset = make_dataset(y, y, batch_size=100, shuffle=True, seed=5)
    first = next(iter(dataset))[1].numpy()
    second = next(iter(dataset))[1].numpy()
    assert sorted(first) == list(y) and sorted(second) == list(y)
    assert not np.array_equal(first, y) and not np.array_equal(first, second)
    again = make_dataset(y, y, batch_size=100, shuffle=True, seed=5)
    np.testing.assert_array_equal(next(iter(again))[1].numpy(), first)


def test_strings_become_tf_strings_including_numpy_fixed_width():
    for texts in (["free prize", "hello"], np.array(["free prize", "hello"])):
        x, y = next(iter(make_dataset(texts, [1, 0], batch_size=2)))
        assert x.dtype == tf.string
        assert x.numpy().tolist() == [b"free prize", b"hello"]
        np.testing.assert_array_equal(y.numpy(), [1, 0])


def test_dict_inputs_and_map_fn_on_batches():
    x = {"a": np.ones((6, 2), "float32"), "b": np.zeros((6,), "int64")}
    dataset = make_dataset(
        x, np.arange(6), batch_size=3, map_fn=lambda f, y: (f["a"] * 2, y)
    )
    features, _ = next(iter(dataset))
    np.testing.assert_array_equal(features.numpy(), np.full((3, 2), 2.0))


def test_an_existing_dataset_is_cached_shuffled_and_batched():
    source = tf.data.Dataset.range(10).map(lambda i: (i, i * 2))
    dataset = make_dataset(
        source, batch_size=5, shuffle=True, seed=1, cache=True, repeat=True
    )
    batches = list(dataset.take(4))
    assert all(len(x) == 5 for x, _ in batches)
    for x, y in batches:
        np.testing.assert_array_equal(y.numpy(), x.numpy() * 2)
    with pytest.raises(ValueError, match="`y` must be None"):
        make_dataset(source, np.arange(10))


def test_options_turn_autotune_off_and_shard_by_data():
    options = make_dataset(np.arange(4), batch_size=2).options()
    assert options.autotune.enabled is False
    assert (
        options.experimental_distribute.auto_shard_policy
        == tf.data.experimental.AutoShardPolicy.DATA
    )
    tuned = make_dataset(np.arange(4), autotune=True, shard_policy="off")
    assert tuned.options().autotune.enabled is True
    assert (
        tuned.options().experimental_distribute.auto_shard_policy
        == tf.data.experimental.AutoShardPolicy.OFF
    )


@pytest.mark.multi_device
def test_mirrored_strategy_splits_each_global_batch_between_replicas():
    from aiservice_kit import get_strategy

    strategy = get_strategy("mirrored", log=False)
    dataset = make_dataset(np.arange(8), np.arange(8), batch_size=4)
    distributed = strategy.experimental_distribute_dataset(dataset)
    x, _ = next(iter(distributed))
    parts = strategy.experimental_local_results(x)
    assert [p.numpy().tolist() for p in parts] == [[0, 1], [2, 3]]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="same number of samples"):
        make_dataset(np.arange(3), np.arange(4))
    with pytest.raises(TypeError, match="`x` must be"):
        make_dataset(object())
    with pytest.raises(ValueError, match="batch_size"):
        make_dataset(np.arange(3), batch_size=0)
    with pytest.raises(ValueError, match="shard_policy"):
        make_dataset(np.arange(3), shard_policy="files")
    with pytest.raises(TypeError, match="cache"):
        make_dataset(np.arange(3), cache=1)
    with pytest.raises(ValueError, match="at least one sample"):
        make_dataset(np.zeros((0, 2)))


def _labelled(n=50):
    x = np.arange(n * 3, dtype="float32").reshape(n, 3)
    return x, np.arange(n) % 2


def test_a_fit_on_arrays_becomes_a_reshuffled_dataset_of_the_same_batches():
    x, y = _labelled()
    dataset, kwargs = arrays_as_fit_dataset(
        x, y, {"batch_size": 8, "epochs": 3, "verbose": 0}
    )
    assert kwargs == {"epochs": 3, "verbose": 0, "shuffle": False}
    batches = _rows(dataset)
    assert [len(b[0]) for b in batches] == [8] * 6 + [2]
    seen = np.concatenate([b[0] for b in batches])
    assert not np.array_equal(seen, x)  # shuffled...
    np.testing.assert_array_equal(seen[np.argsort(seen[:, 0])], x)  # ...all
    labels = np.concatenate([b[1] for b in batches])
    np.testing.assert_array_equal(labels, (seen[:, 0] // 3).astype(int) % 2)


def test_validation_split_is_the_end_of_the_arrays_as_in_keras():
    x, y = _labelled()
    dataset, kwargs = arrays_as_fit_dataset(
        x, y, {"validation_split": 0.2, "shuffle": False}
    )
    np.testing.assert_array_equal(kwargs["validation_data"][0], x[40:])
    np.testing.assert_array_equal(kwargs["validation_data"][1], y[40:])
    trained = np.concatenate([b[0] for b in _rows(dataset)])
    np.testing.assert_array_equal(trained, x[:40])


@pytest.mark.parametrize(
    "x, kwargs",
    [
        (np.array(["a", "b"]), {}),
        (np.zeros((2, 3)), {"sample_weight": np.ones(2)}),
        (np.zeros((2, 3)), {"steps_per_epoch": 1}),
        (np.zeros((2, 3)), {"shuffle": "batch"}),
        (np.zeros((2, 3)), {"validation_split": 0.6}),  # trains on none
        (np.zeros((3, 3)), {}),  # 3 samples, 2 labels
    ],
)
def test_anything_else_is_left_to_keras(x, kwargs):
    assert arrays_as_fit_dataset(x, np.zeros(2), kwargs) is None


@pytest.mark.parametrize(
    "fit_kwargs",
    [
        {},
        {"validation_split": 0.25},
        # Keras then trains on everything and validates on the given data.
        {"validation_split": 0.25, "validation_data": "first ten"},
        {"class_weight": {0: 1.0, 1: 3.0}},
    ],
)
def test_a_builders_fit_on_arrays_trains_exactly_as_keras_own_fit(fit_kwargs):
    # The faster pipeline draws Keras' permutations: same batches, same
    # weights, bit for bit.
    import keras

    from aiservice_kit import build_cnn

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (70, 8, 8)).astype("uint8")
    y = (x.mean(axis=(1, 2)) > 127).astype("int64")

    if fit_kwargs.get("validation_data") == "first ten":
        fit_kwargs = {**fit_kwargs, "validation_data": (x[:10], y[:10])}

    def fitted(fit):
        keras.utils.set_random_seed(3)
        model = build_cnn((8, 8), 2, filters=(4,))
        history = fit(
            model, x, y, epochs=2, batch_size=16, verbose=0, **fit_kwargs
        )
        return model.get_weights(), history.history

    ours, our_history = fitted(lambda model, *a, **k: model.fit(*a, **k))
    keras_own, keras_history = fitted(keras.Model.fit)
    for a, b in zip(ours, keras_own, strict=True):
        np.testing.assert_array_equal(a, b)
    assert our_history == keras_history
