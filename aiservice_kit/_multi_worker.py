"""The Keras 3 workarounds for distributed training, in one place.

Keras 3.15 on TensorFlow 2.21 cannot:

- `fit` or `evaluate` under `MultiWorkerMirroredStrategy` (keras #20585,
  TF #72388): the trainer's symbolic build receives per-replica values.
  `multi_worker_fit` drives Keras' own `train_step`/`test_step` through
  `strategy.run` instead, with Keras' callbacks;
- train a model with a string input under more than one replica (keras
  #21172, TF #80951: `AddN` on strings). `split_for_replicas` trains its
  numeric half (`models._contract.split_text_model`) on a vectorizing
  pipeline; the string model shares the weights, and `ModelCheckpointOf`
  checkpoints it rather than the half that `fit` sees;
- evaluate in either case: `local_copy` gives the model outside any
  strategy.

`training.train` decides when these are needed (`training._training_plan`);
this module only carries them out. When Keras fixes an issue, its
workaround is removed here and nowhere else.
"""

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from aiservice_kit.models._contract import split_text_model


def takes_strings(model: keras.Model) -> bool:
    """Whether any input of `model` is a string tensor."""
    return any(
        keras.backend.standardize_dtype(tensor.dtype) == "string"
        for tensor in model.inputs
    )


class ModelCheckpointOf(keras.callbacks.ModelCheckpoint):
    """A `ModelCheckpoint` that saves `saved_model`, whatever `fit` runs.

    Under more than one replica a raw-string text model trains through
    its numeric half (which shares its weights); the best checkpoint must
    still be the string model a user loads and serves.
    """

    def __init__(self, saved_model: keras.Model, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._saved_model = saved_model

    def set_model(self, model: keras.Model) -> None:
        super().set_model(self._saved_model)


def split_for_replicas(
    model: keras.Model, strategy: tf.distribute.Strategy
) -> tuple[keras.Model, Callable[..., Any]]:
    """The numeric half to `fit` and the pipeline map that feeds it.

    Args:
        model: keras.Model. A compiled raw-string model, built in
            `strategy`'s scope.
        strategy: tf.distribute.Strategy. The strategy it trains under.

    Returns:
        `(fit_model, map_fn)`: the numeric model sharing `model`'s weights
        and optimizer, and a `tf.data` map that vectorizes the first
        element of each batch.
    """
    with strategy.scope():
        vectorizer, fit_model = split_text_model(model)
        if getattr(fit_model, "optimizer", None) is None:
            fit_model.compile(
                optimizer=model.optimizer,
                loss=model.loss,
                metrics=["accuracy"],
            )
        # One optimizer for both halves (they share their weights), so
        # the string model's checkpoints carry the real training state.
        model.optimizer = fit_model.optimizer

    def map_fn(*batch: Any) -> Any:
        return (vectorizer(batch[0]), *batch[1:])

    return fit_model, map_fn


def build_shared_optimizer(
    model: keras.Model, strategy: tf.distribute.Strategy
) -> None:
    """Builds the optimizer the halves share when no step ran.

    A finished run started again trains no step; the saved string model
    must still load back compiled.
    """
    if not model.optimizer.built:
        with strategy.scope():
            model.optimizer.build(model.trainable_variables)


def multi_worker_fit(
    model: keras.Model,
    strategy: tf.distribute.Strategy,
    dataset: tf.data.Dataset,
    *,
    epochs: int,
    steps_per_epoch: int,
    validation: tuple[tf.data.Dataset, int] | None,
    callbacks: list[keras.callbacks.Callback],
    verbose: int,
) -> keras.callbacks.History:
    """A custom loop on tf.distribute's collectives (keras #20585).

    Keras' own `Model.train_step`/`test_step` run on each replica through
    `strategy.run`; gradients are all-reduced by the optimizer and metrics
    by their sync-on-read variables, so every worker ends every step with
    the same weights. Keras' callbacks are driven with the same hooks
    `fit` calls.

    Args:
        model: keras.Model. A compiled model built in `strategy`'s scope.
        strategy: tf.distribute.Strategy. The multi-worker strategy.
        dataset: tf.data.Dataset. Batched, repeated training data.
        epochs: int. Number of epochs.
        steps_per_epoch: int. Global batches per epoch.
        validation: tuple or None. `(dataset, steps)` of validation data.
        callbacks: list of keras.callbacks.Callback. As for `fit`.
        verbose: int. As for `fit`.

    Returns:
        The model's `keras.callbacks.History`.
    """
    first = next(iter(dataset.unbatch().batch(2).take(1)))
    with strategy.scope():
        # fit's own build receives per-replica values here and fails
        # (keras #20585); one local batch builds metrics and optimizer.
        model._symbolic_build(data_batch=first)
    iterator = iter(strategy.experimental_distribute_dataset(dataset))

    @tf.function
    def train_function(iterator: Any) -> None:
        strategy.run(model.train_step, args=(next(iterator),))

    @tf.function
    def test_function(iterator: Any) -> None:
        strategy.run(model.test_step, args=(next(iterator),))

    val_iterator = None
    if validation is not None:
        val_iterator = iter(
            strategy.experimental_distribute_dataset(validation[0])
        )
    callback_list = keras.callbacks.CallbackList(
        callbacks,
        add_history=True,
        add_progbar=verbose != 0,
        model=model,
        verbose=verbose,
        epochs=epochs,
        steps=steps_per_epoch,
    )
    model.stop_training = False
    callback_list.on_train_begin()
    initial_epoch = int(getattr(model, "_initial_epoch", None) or 0)
    logs: dict[str, float] = {}
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        for step in range(steps_per_epoch):
            callback_list.on_train_batch_begin(step)
            train_function(iterator)
            callback_list.on_train_batch_end(step)
        logs = {
            name: float(value)
            for name, value in model.get_metrics_result().items()
        }
        if validation is not None:
            model.reset_metrics()
            for _ in range(validation[1]):
                test_function(val_iterator)
            logs.update(
                (f"val_{name}", float(value))
                for name, value in model.get_metrics_result().items()
            )
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
    return model.history


def local_copy(model: keras.Model) -> keras.Model:
    """The model re-loaded outside any strategy (same weights, compiled)."""
    with tempfile.TemporaryDirectory(prefix="aiservice_kit-") as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        with tf.distribute.get_strategy().scope():
            return keras.saving.load_model(path)
