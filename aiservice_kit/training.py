"""Training helpers: the documented training path (`train`), the default
callbacks of a resumable run, and history plots."""

import importlib.util
import logging
import os
import tempfile
from collections.abc import Callable
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from aiservice_kit._validation import check_bool
from aiservice_kit._validation import check_fraction
from aiservice_kit._validation import check_optional_positive_int
from aiservice_kit._validation import check_positive_int
from aiservice_kit.distribute import StrategyInfo
from aiservice_kit.distribute import check_model_in_scope
from aiservice_kit.distribute import describe_strategy
from aiservice_kit.distribute import get_strategy
from aiservice_kit.distribute import mixed_precision_policy
from aiservice_kit.pipelines import make_dataset

logger = logging.getLogger("aiservice_kit")


def _history_dict(history: Any) -> dict[str, list[float]]:
    if isinstance(history, keras.callbacks.History):
        history = history.history
    if not isinstance(history, Mapping):
        raise TypeError(
            "`history` must be the keras.callbacks.History returned by fit() "
            f"or its .history dict. Received: history={history!r}"
        )
    if not history:
        raise ValueError(
            "`history` holds no metrics: was the model trained for at least "
            "one epoch? Received: history={}"
        )
    return {
        str(key): [float(v) for v in values] for key, values in history.items()
    }


def plot_history(
    history: Any, path: str | os.PathLike, *, title: str | None = None
) -> Path:
    """Writes the training curves of a fit to a PNG file.

    One panel per metric (loss, accuracy, ...), with the validation curve
    beside the training curve when the fit had validation data. Needs the
    `plot` extra: `pip install 'aiservice_kit[plot]'`.

    Args:
        history: keras.callbacks.History or dict. What `model.fit` returned,
            or its `.history` dict.
        path: str or PathLike. Where to write the PNG.
        title: str or None. A title for the figure.

    Returns:
        The path written, as a `pathlib.Path`.

    Raises:
        ImportError: if matplotlib is not installed.
        TypeError: if `history` is not a History or a dict.
        ValueError: if `history` is empty.

    Example:
    ```python
    history = model.fit(x, y, validation_split=0.1, epochs=5)
    plot_history(history, "curves.png")
    ```
    """
    curves = _history_dict(history)
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib import pyplot
    except ImportError as error:
        raise ImportError(
            "plot_history needs matplotlib: "
            "`pip install 'aiservice_kit[plot]'`."
        ) from error
    metrics = [name for name in curves if not name.startswith("val_")]
    figure, axes = pyplot.subplots(
        1, len(metrics), figsize=(4.5 * len(metrics), 3.5), squeeze=False
    )
    for axis, metric in zip(axes[0], metrics, strict=True):
        epochs = range(1, len(curves[metric]) + 1)
        axis.plot(epochs, curves[metric], marker="o", label="train")
        if f"val_{metric}" in curves:
            axis.plot(
                epochs, curves[f"val_{metric}"], marker="o", label="validation"
            )
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path


# --------------------------------------------------------------------------
# Default callbacks and the documented training path.
# --------------------------------------------------------------------------

#: File names written inside a run directory.
BEST_MODEL_FILE = "best.keras"
FINAL_MODEL_FILE = "model.keras"
BACKUP_DIR = "backup"
LOG_FILE = "log.csv"
TENSORBOARD_DIR = "tensorboard"
#: Batches run per `tf.function` call by `train` when the model asks for 1.
DEFAULT_STEPS_PER_EXECUTION = 32


def default_callbacks(
    run_dir: str | os.PathLike,
    *,
    monitor: str = "val_loss",
    patience: int | None = 5,
    save_best: bool = True,
    backup: bool = True,
    tensorboard: bool = True,
    csv_log: bool = True,
) -> list[keras.callbacks.Callback]:
    """Returns Keras' own callbacks for a resumable, logged training run.

    In this order: `BackupAndRestore` (into `run_dir/backup`, kept after
    training so that running the same command again resumes, or does
    nothing once all epochs are done), `ModelCheckpoint` of the best model
    (`run_dir/best.keras`), `EarlyStopping`, `TensorBoard`
    (`run_dir/tensorboard`) and `CSVLogger` (`run_dir/log.csv`, appended
    to on resume). The backup comes before the CSV log, so an epoch that
    reached the log was backed up too.

    Args:
        run_dir: str or PathLike. Directory of the run (created if needed).
            Use a new directory for a new run: an existing backup resumes.
        monitor: str. Metric that picks the best model and stops early
            (`"val_loss"`; use `"loss"` without validation data).
        patience: int or None. Epochs without improvement before stopping;
            None for no early stopping.
        save_best: bool. Keep the best model in `best.keras`.
        backup: bool. Back up at each epoch end to resume after a crash.
        tensorboard: bool. Write TensorBoard logs.
        csv_log: bool. Append one CSV row of metrics per epoch.

    Returns:
        A list of `keras.callbacks.Callback` for `model.fit(callbacks=...)`.

    Raises:
        TypeError: if an argument has a bad type.
        ValueError: if `patience` is negative.

    Example:
    ```python
    model.fit(x, y, validation_split=0.1, epochs=20,
              callbacks=default_callbacks("runs/mnist"))
    ```
    """
    return _callbacks(
        run_dir,
        monitor=monitor,
        patience=patience,
        save_best=save_best,
        backup=backup,
        tensorboard=tensorboard,
        csv_log=csv_log,
    )


class _ModelCheckpointOf(keras.callbacks.ModelCheckpoint):
    """A `ModelCheckpoint` that saves `saved_model`, whatever `fit` runs.

    Under more than one replica a raw-string text model trains through
    its integer half (which shares its weights); the best checkpoint must
    still be the string model a user loads and serves.
    """

    def __init__(self, saved_model: keras.Model, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._saved_model = saved_model

    def set_model(self, model: keras.Model) -> None:
        super().set_model(self._saved_model)


def _callbacks(
    run_dir: str | os.PathLike,
    *,
    monitor: str,
    patience: int | None,
    save_best: bool = True,
    backup: bool = True,
    tensorboard: bool = True,
    csv_log: bool = True,
    saved_model: keras.Model | None = None,
) -> list[keras.callbacks.Callback]:
    """`default_callbacks`, whose best checkpoint may save another model."""
    if not isinstance(run_dir, (str, os.PathLike)):
        raise TypeError(
            "`run_dir` must be a str or PathLike directory. "
            f"Received: run_dir={run_dir!r}"
        )
    if not isinstance(monitor, str) or not monitor:
        raise TypeError(
            "`monitor` must be a metric name such as 'val_loss'. "
            f"Received: monitor={monitor!r}"
        )
    patience = check_optional_positive_int("patience", patience, minimum=0)
    for name, flag in (
        ("save_best", save_best),
        ("backup", backup),
        ("tensorboard", tensorboard),
        ("csv_log", csv_log),
    ):
        check_bool(name, flag)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    mode = "max" if "acc" in monitor or "auc" in monitor else "min"
    callbacks: list[keras.callbacks.Callback] = []
    if backup:
        callbacks.append(
            keras.callbacks.BackupAndRestore(
                str(run_dir / BACKUP_DIR), delete_checkpoint=False
            )
        )
    if save_best:
        callbacks.append(
            _ModelCheckpointOf(
                saved_model,
                str(run_dir / BEST_MODEL_FILE),
                monitor=monitor,
                mode=mode,
                save_best_only=True,
            )
            if saved_model is not None
            else keras.callbacks.ModelCheckpoint(
                str(run_dir / BEST_MODEL_FILE),
                monitor=monitor,
                mode=mode,
                save_best_only=True,
            )
        )
    if patience is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=monitor, mode=mode, patience=patience
            )
        )
    if tensorboard and importlib.util.find_spec("tensorboard") is None:
        logger.warning(
            "TensorBoard is not installed, so default_callbacks writes no "
            "TensorBoard logs: `pip install tensorboard`."
        )
        tensorboard = False
    if tensorboard:
        callbacks.append(
            keras.callbacks.TensorBoard(
                str(run_dir / TENSORBOARD_DIR), write_graph=False
            )
        )
    if csv_log:
        callbacks.append(
            keras.callbacks.CSVLogger(str(run_dir / LOG_FILE), append=True)
        )
    return callbacks


def _takes_strings(model: keras.Model) -> bool:
    return any(
        keras.backend.standardize_dtype(tensor.dtype) == "string"
        for tensor in model.inputs
    )


def _split_rows(value: Any, start: int, stop: int | None) -> Any:
    if isinstance(value, Mapping):
        return {key: _split_rows(v, start, stop) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return list(value)[start:stop]
    return value[start:stop]


def _num_samples(x: Any) -> int | None:
    if isinstance(x, tf.data.Dataset):
        cardinality = int(x.cardinality())
        return cardinality if cardinality >= 0 else None
    if isinstance(x, Mapping):
        x = next(iter(x.values()))
    return len(x)


def _worker_dir(run_dir: Path | None, info: StrategyInfo) -> Path | None:
    """The chief writes into run_dir; other workers into a subdirectory."""
    if run_dir is None or info.is_chief:
        return run_dir
    return run_dir / f"worker-{info.worker_index}"


def _build(
    build_fn: Any, strategy: tf.distribute.Strategy, policy: str
) -> keras.Model:
    if isinstance(build_fn, keras.Model):
        model = build_fn
    elif callable(build_fn):
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(policy)
        try:
            with strategy.scope():
                model = build_fn()
        finally:
            keras.config.set_dtype_policy(previous)
    else:
        raise TypeError(
            "`build_fn` must be a function that returns a compiled "
            "keras.Model (e.g. `lambda: build_cnn((28, 28), num_classes="
            f"10)`). Received: build_fn={build_fn!r}"
        )
    if not isinstance(model, keras.Model):
        raise TypeError(
            "`build_fn` must return a keras.Model. Received: a "
            f"{type(model).__name__}"
        )
    check_model_in_scope(model, strategy)
    if getattr(model, "optimizer", None) is None:
        raise ValueError(
            f"The model {model.name!r} returned by `build_fn` is not "
            "compiled. Compile it inside build_fn (aiservice_kit builders "
            "compile by default)."
        )
    return model


def _multi_worker_fit(
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


def train(
    build_fn: Callable[[], keras.Model] | keras.Model,
    x: Any,
    y: Any = None,
    *,
    epochs: int,
    batch_size: int,
    strategy: tf.distribute.Strategy | None = None,
    run_dir: str | os.PathLike | None = None,
    validation_data: tuple[Any, Any] | None = None,
    validation_split: float = 0.0,
    callbacks: list[keras.callbacks.Callback] | None = None,
    shuffle: bool = True,
    seed: int | None = None,
    steps_per_epoch: int | None = None,
    steps_per_execution: int | None = None,
    mixed_precision: bool | None = None,
    patience: int | None = 5,
    verbose: int | str = "auto",
) -> tuple[keras.Model, keras.callbacks.History]:
    """Builds and trains a model the way that fits the hardware.

    The documented training path, a convenience over plain Keras:

    1. picks the strategy (`get_strategy()` unless one is given) and the
       mixed-precision policy that fits it (`mixed_precision_policy`);
    2. calls `build_fn()` inside `strategy.scope()`;
    3. makes the input pipeline with `make_dataset` (shuffled, batched,
       prefetched, tf.data autotuning off, sharded by data);
    4. wires `default_callbacks(run_dir)` when `run_dir` is given, so a
       killed run started again with the same command resumes where it
       stopped, and saves the final model as `run_dir/model.keras`;
    5. trains: `model.fit` on one machine (one device or
       `MirroredStrategy`), or a custom loop of `strategy.run(
       model.train_step)` when several workers train together, because
       `model.fit` fails under `MultiWorkerMirroredStrategy` in Keras 3
       (keras #20585). A model that takes raw strings is trained, under
       more than one replica, through its integer half on a vectorizing
       pipeline (keras #21172); the string model returned shares its
       weights.

    Under multi-worker training the last partial global batch of each
    epoch is dropped (so every replica always has data) and non-chief
    workers write to `run_dir/worker-<index>`.

    Args:
        build_fn: callable or keras.Model. A function returning a compiled
            model (built in the strategy's scope for you). A model built
            beforehand is accepted only if it was built in that scope.
        x: numpy array, list of str, dict of arrays or an unbatched
            `tf.data.Dataset` of `(x, y)` pairs.
        y: numpy array or None. Targets (None for a dataset).
        epochs: int. Number of epochs.
        batch_size: int. The global batch size, split between replicas
            (see `global_batch_size`).
        strategy: tf.distribute.Strategy or None. None uses
            `get_strategy()`.
        run_dir: str, PathLike or None. Where checkpoints, backups and logs
            go (see `default_callbacks`); None for none.
        validation_data: tuple or None. `(x_val, y_val)` arrays.
        validation_split: float. Fraction of the (array) training data,
            taken from the end, held out for validation.
        callbacks: list of keras.callbacks.Callback or None. Added after
            the default ones.
        shuffle: bool. Reshuffle the training data every epoch.
        seed: int or None. Shuffle seed (0 under multi-worker when None,
            so all workers shuffle alike).
        steps_per_epoch: int or None. Needed only for a dataset of unknown
            length.
        steps_per_execution: int or None. Batches per compiled call; None
            keeps the model's own setting, raised to 32 when it is 1 (2-3x
            faster on small models) on a single replica. Under more than
            one replica it must stay 1 (Keras 3.15 fails otherwise).
        mixed_precision: bool or None. None picks for the hardware (off on
            CPU); see `mixed_precision_policy`.
        patience: int or None. Early-stopping patience with a `run_dir`.
        verbose: int or "auto". As in `model.fit`.

    Returns:
        `(model, history)`: the trained model (the string-input model for
        text) and its `keras.callbacks.History`.

    Raises:
        TypeError: if an argument has a bad type.
        ValueError: if an argument has a bad value, the model is not
            compiled, or it was built outside the strategy's scope.

    Example:
    ```python
    import aiservice_kit
    from aiservice_kit.datasets import load_mnist
    x, y = load_mnist("data/mnist", kind="train")
    model, history = aiservice_kit.train(
        lambda: aiservice_kit.build_cnn((28, 28), num_classes=10),
        x, y, epochs=5, batch_size=256, run_dir="runs/mnist",
        validation_split=0.1,
    )
    ```
    """
    epochs = check_positive_int("epochs", epochs)
    batch_size = check_positive_int("batch_size", batch_size)
    validation_split = check_fraction("validation_split", validation_split)
    check_bool("shuffle", shuffle)
    seed = check_optional_positive_int("seed", seed, minimum=0)
    steps_per_epoch = check_optional_positive_int(
        "steps_per_epoch", steps_per_epoch
    )
    steps_per_execution = check_optional_positive_int(
        "steps_per_execution", steps_per_execution
    )
    if mixed_precision is not None:
        check_bool("mixed_precision", mixed_precision)
    if callbacks is not None and not all(
        isinstance(callback, keras.callbacks.Callback) for callback in callbacks
    ):
        raise TypeError(
            "`callbacks` must be a list of keras.callbacks.Callback. "
            f"Received: callbacks={callbacks!r}"
        )
    if strategy is None:
        strategy = get_strategy(log=False)
    info = describe_strategy(strategy)
    multi_worker = info.num_workers > 1
    if multi_worker and seed is None:
        seed = 0
    if validation_data is not None and validation_split:
        raise ValueError(
            "Pass either `validation_data` or `validation_split`, not both. "
            f"Received: validation_split={validation_split}"
        )
    if validation_split:
        if isinstance(x, tf.data.Dataset):
            raise ValueError(
                "`validation_split` needs array inputs; for a dataset pass "
                "`validation_data`. Received: x of type Dataset"
            )
        num_rows = _num_samples(x)
        split = num_rows - max(1, int(round(num_rows * validation_split)))
        validation_data = (
            _split_rows(x, split, None),
            _split_rows(y, split, None),
        )
        x, y = _split_rows(x, 0, split), _split_rows(y, 0, split)

    model = _build(
        build_fn,
        strategy,
        mixed_precision_policy(strategy, enabled=mixed_precision),
    )
    fit_model, map_fn = model, None
    if _takes_strings(model) and info.num_replicas > 1:
        # keras #21172: string tensors cannot cross replicas. Vectorize in
        # the pipeline and train the integer model sharing the weights.
        from aiservice_kit.models.text import split_text_model

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

    num_samples = _num_samples(x)
    if steps_per_epoch is None:
        if num_samples is None:
            raise ValueError(
                "`steps_per_epoch` is needed when `x` is a dataset of "
                "unknown length. Received: steps_per_epoch=None"
            )
        steps_per_epoch = (
            num_samples // batch_size
            if multi_worker
            else -(-num_samples // batch_size)
        )
        if steps_per_epoch < 1:
            raise ValueError(
                f"`batch_size` must not exceed the number of training "
                f"samples ({num_samples}) under multi-worker training. "
                f"Received: batch_size={batch_size}"
            )
    pipeline = {
        "batch_size": batch_size,
        "map_fn": map_fn,
        "drop_remainder": multi_worker,
        "repeat": multi_worker,
    }
    dataset = make_dataset(x, y, shuffle=shuffle, seed=seed, **pipeline)
    validation = None
    if validation_data is not None:
        if not isinstance(validation_data, tuple) or len(validation_data) != 2:
            raise TypeError(
                "`validation_data` must be a tuple (x_val, y_val). "
                f"Received: validation_data of type "
                f"{type(validation_data).__name__}"
            )
        val_dataset = make_dataset(*validation_data, **pipeline)
        val_steps = _num_samples(validation_data[0]) // batch_size
        if multi_worker and val_steps < 1:
            raise ValueError(
                "Under multi-worker training the validation data must hold "
                f"at least one global batch ({batch_size} samples)."
            )
        validation = (val_dataset, val_steps)

    run_dir = _worker_dir(Path(run_dir) if run_dir is not None else None, info)
    all_callbacks = (
        _callbacks(
            run_dir,
            monitor="val_loss" if validation is not None else "loss",
            patience=patience,
            saved_model=model if fit_model is not model else None,
        )
        if run_dir is not None
        else []
    ) + list(callbacks or [])
    if info.num_replicas > 1 and (steps_per_execution or 1) > 1:
        raise ValueError(
            "`steps_per_execution` > 1 fails under more than one replica in "
            "Keras 3.15 (a graph placeholder error in fit's multi-step "
            "loop); leave it None and train() uses 1 there. Received: "
            f"steps_per_execution={steps_per_execution}"
        )
    if info.num_replicas > 1:
        steps_per_execution = 1
    elif steps_per_execution is None and fit_model.steps_per_execution == 1:
        steps_per_execution = DEFAULT_STEPS_PER_EXECUTION
    if steps_per_execution is not None:
        fit_model.steps_per_execution = min(
            steps_per_execution, steps_per_epoch
        )
    if verbose == "auto":
        verbose = 1 if info.is_chief else 0
    if multi_worker:
        history = _multi_worker_fit(
            fit_model,
            strategy,
            dataset,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            validation=validation,
            callbacks=all_callbacks,
            verbose=verbose,
        )
    else:
        history = fit_model.fit(
            dataset,
            epochs=epochs,
            validation_data=None if validation is None else validation[0],
            callbacks=all_callbacks,
            shuffle=False,  # make_dataset shuffles
            verbose=verbose,
        )
    if fit_model is not model and not model.optimizer.built:
        # No step ran (a finished run started again): build the shared
        # optimizer so that the saved string model loads back compiled.
        with strategy.scope():
            model.optimizer.build(model.trainable_variables)
    if run_dir is not None:
        model.save(run_dir / FINAL_MODEL_FILE)
    return model, history


def _local_copy(model: keras.Model) -> keras.Model:
    """The model re-loaded outside any strategy (same weights, compiled)."""
    with tempfile.TemporaryDirectory(prefix="aiservice_kit-") as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        with tf.distribute.get_strategy().scope():
            return keras.saving.load_model(path)


def evaluate(
    model: keras.Model,
    x: Any,
    y: Any = None,
    *,
    batch_size: int = 256,
    verbose: int | str = 0,
) -> dict[str, float]:
    """Evaluates a model wherever it was trained, returning its metrics.

    `model.evaluate` fails under `MultiWorkerMirroredStrategy` (keras
    #20585) and on string inputs under more than one replica (keras
    #21172). In those cases this evaluates a copy of the model outside the
    strategy, on the whole data, on each worker (so every worker gets the
    same numbers, with no collective ops); otherwise it calls
    `model.evaluate` on a `make_dataset` pipeline.

    Args:
        model: keras.Model. A compiled model, e.g. from `train`.
        x: numpy array, list of str, dict of arrays or a `tf.data.Dataset`
            of unbatched `(x, y)` pairs.
        y: numpy array or None. Targets (None for a dataset).
        batch_size: int. Batch size of the evaluation.
        verbose: int or "auto". As in `model.evaluate`.

    Returns:
        A dict of metric name to value, e.g. `{"loss": ..., "accuracy":
        ...}`.

    Raises:
        TypeError: if `model` is not a keras.Model.
        ValueError: if `batch_size` is not positive.

    Example:
    ```python
    model, history = train(build_fn, x_train, y_train, epochs=5,
                           batch_size=256)
    evaluate(model, x_test, y_test)  # {"accuracy": 0.97, "loss": 0.09}
    ```
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`model` must be a keras.Model. Received: model={model!r}"
        )
    batch_size = check_positive_int("batch_size", batch_size)
    info = describe_strategy(model.distribute_strategy)
    if info.num_workers > 1 or (
        _takes_strings(model) and info.num_replicas > 1
    ):
        model = _local_copy(model)
    dataset = make_dataset(x, y, batch_size=batch_size)
    results = model.evaluate(dataset, verbose=verbose, return_dict=True)
    return {name: float(value) for name, value in results.items()}
