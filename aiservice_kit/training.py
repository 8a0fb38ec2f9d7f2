"""Training helpers: the documented training path (`train`), the default
callbacks of a resumable run, and history plots."""

import dataclasses
import importlib.util
import json
import logging
import os
from collections.abc import Callable
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from aiservice_kit._multi_worker import ModelCheckpointOf
from aiservice_kit._multi_worker import build_shared_optimizer
from aiservice_kit._multi_worker import local_copy
from aiservice_kit._multi_worker import multi_worker_fit
from aiservice_kit._multi_worker import split_for_replicas
from aiservice_kit._multi_worker import takes_strings
from aiservice_kit._tracing import build_before_tracing
from aiservice_kit._validation import check_bool
from aiservice_kit._validation import check_fraction
from aiservice_kit._validation import check_optional_positive_int
from aiservice_kit._validation import check_positive_int
from aiservice_kit.distribute import StrategyInfo
from aiservice_kit.distribute import check_model_in_scope
from aiservice_kit.distribute import cpu_has_bf16
from aiservice_kit.distribute import describe_strategy
from aiservice_kit.distribute import get_strategy
from aiservice_kit.distribute import policy_for
from aiservice_kit.models._checks import model_checked_data
from aiservice_kit.pipelines import make_dataset
from aiservice_kit.pipelines import num_samples
from aiservice_kit.pipelines import require_x
from aiservice_kit.pipelines import split_rows

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


def epochs_done(run_dir: str | os.PathLike) -> int:
    """Epochs a resumable run has finished, read from its backup.

    Args:
        run_dir: str or PathLike. The run's directory (as given to `train`
            or `default_callbacks`).

    Returns:
        The number of finished epochs `BackupAndRestore` recorded; 0 when
        the run has no backup (a new run).

    Example:
    ```python
    epochs_done("runs/mnist")  # 5
    ```
    """
    path = Path(run_dir) / BACKUP_DIR / "training_metadata.json"
    try:
        return int(json.loads(path.read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


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
            ModelCheckpointOf(
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


@dataclasses.dataclass(frozen=True)
class TrainingPlan:
    """How `train` runs on given hardware: the output of `_training_plan`.

    Attributes:
        policy: str. The Keras dtype policy the model is built under.
        custom_loop: bool. Train with `_multi_worker.multi_worker_fit`
            (several workers) instead of `model.fit`.
        split_strings: bool. A raw-string model must train through its
            numeric half (more than one replica).
        steps_per_epoch: int. Global batches per epoch.
        validation_steps: int or None. Global validation batches.
        steps_per_execution: int or None. Batches per compiled call asked
            by the caller; None lets `steps_per_execution_for` decide.
        drop_remainder: bool. Drop each epoch's partial global batch.
        repeat: bool. Repeat the training data (the custom loop counts
            steps itself).
        seed: int or None. Shuffle seed.
        verbose: int or str. Verbosity of `fit`.
    """

    policy: str
    custom_loop: bool
    split_strings: bool
    steps_per_epoch: int
    validation_steps: int | None
    steps_per_execution: int | None
    drop_remainder: bool
    repeat: bool
    seed: int | None
    verbose: int | str
    num_replicas: int = 1

    def steps_per_execution_for(self, model_value: int) -> int | None:
        """Batches per compiled call for a model set to `model_value`.

        One under several replicas (more fails in Keras 3.15); else the
        caller's value, or `DEFAULT_STEPS_PER_EXECUTION` when the model
        asks for 1, never more than an epoch. None keeps the model's own.
        """
        if self.num_replicas > 1:
            return 1
        steps = self.steps_per_execution
        if steps is None and model_value == 1:
            steps = DEFAULT_STEPS_PER_EXECUTION
        return None if steps is None else min(steps, self.steps_per_epoch)


def _training_plan(
    info: StrategyInfo,
    *,
    num_samples: int | None,
    num_validation_samples: int | None = None,
    batch_size: int,
    steps_per_epoch: int | None = None,
    steps_per_execution: int | None = None,
    seed: int | None = None,
    mixed_precision: bool | None = None,
    verbose: int | str = "auto",
) -> TrainingPlan:
    """The hardware policy of `train`, as a pure function of its inputs.

    Args:
        info: StrategyInfo. What the strategy runs on.
        num_samples: int or None. Training rows (None: unknown length).
        num_validation_samples: int or None. Validation rows, if any.
        batch_size: int. The global batch size.
        steps_per_epoch: int or None. As for `train`.
        steps_per_execution: int or None. As for `train`.
        seed: int or None. As for `train`.
        mixed_precision: bool or None. As for `train`.
        verbose: int or "auto". As for `train`.

    Returns:
        A `TrainingPlan`.

    Raises:
        ValueError: if the data cannot fill a step, or
            `steps_per_execution` > 1 under several replicas.
    """
    multi_worker = info.num_workers > 1
    if info.num_replicas > 1 and (steps_per_execution or 1) > 1:
        raise ValueError(
            "`steps_per_execution` > 1 fails under more than one replica in "
            "Keras 3.15 (a graph placeholder error in fit's multi-step "
            "loop); leave it None and train() uses 1 there. Received: "
            f"steps_per_execution={steps_per_execution}"
        )
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
        if num_samples == 0:
            raise ValueError("`x` must hold at least one sample. Received: 0")
        if steps_per_epoch < 1:
            raise ValueError(
                f"`batch_size` must not exceed the number of training "
                f"samples ({num_samples}) under multi-worker training. "
                f"Received: batch_size={batch_size}"
            )
    validation_steps = None
    if num_validation_samples is not None:
        validation_steps = num_validation_samples // batch_size
        if multi_worker and validation_steps < 1:
            raise ValueError(
                "Under multi-worker training the validation data must hold "
                f"at least one global batch ({batch_size} samples)."
            )
    return TrainingPlan(
        policy=policy_for(
            info.accelerator, mixed_precision, cpu_bf16=cpu_has_bf16()
        ),
        custom_loop=multi_worker,
        split_strings=info.num_replicas > 1,
        steps_per_epoch=steps_per_epoch,
        validation_steps=validation_steps,
        steps_per_execution=steps_per_execution,
        drop_remainder=multi_worker,
        repeat=multi_worker,
        seed=0 if multi_worker and seed is None else seed,
        verbose=(1 if info.is_chief else 0) if verbose == "auto" else verbose,
        num_replicas=info.num_replicas,
    )


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
    3. checks array data as the model's own `fit` does (its `check_data`,
       same messages), then makes the input pipeline with `make_dataset`
       (shuffled, batched, prefetched, autotuning off, sharded by data);
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
        mixed_precision: bool or None. None picks for the hardware
            (bfloat16 on CPUs with AVX512-BF16 or AMX, float32 on other
            CPUs); see `mixed_precision_policy`.
        patience: int or None. Early-stopping patience with a `run_dir`.
        verbose: int or "auto". As in `model.fit`.

    Returns:
        `(model, history)`: the trained model (the string-input model for
        text) and its `keras.callbacks.History`.

    Raises:
        TypeError: if an argument has a bad type.
        ValueError: if an argument has a bad value (data the model's
            `fit` refuses, no training samples left), the model is not
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
    if validation_data is not None and validation_split:
        raise ValueError(
            "Pass either `validation_data` or `validation_split`, not both. "
            f"Received: validation_split={validation_split}"
        )
    if validation_data is not None and (
        not isinstance(validation_data, tuple) or len(validation_data) != 2
    ):
        raise TypeError(
            "`validation_data` must be a tuple (x_val, y_val). "
            f"Received: validation_data of type "
            f"{type(validation_data).__name__}"
        )
    require_x(x)
    if strategy is None:
        strategy = get_strategy(log=False)
    info = describe_strategy(strategy)
    if validation_split:
        if isinstance(x, tf.data.Dataset):
            raise ValueError(
                "`validation_split` needs array inputs; for a dataset pass "
                "`validation_data`. Received: x of type Dataset"
            )
        num_rows = num_samples(x)
        split = num_rows - max(1, int(round(num_rows * validation_split)))
        if split < 1:
            raise ValueError(
                f"`validation_split` leaves no training samples: it holds "
                f"out {num_rows - split} of the {num_rows} samples. Give a "
                "smaller fraction, more data, or `validation_data`. "
                f"Received: validation_split={validation_split}"
            )
        validation_data = (
            split_rows(x, split, None),
            split_rows(y, split, None),
        )
        x, y = split_rows(x, 0, split), split_rows(y, 0, split)
    plan = _training_plan(
        info,
        num_samples=num_samples(x),
        num_validation_samples=(
            None if validation_data is None else num_samples(validation_data[0])
        ),
        batch_size=batch_size,
        steps_per_epoch=steps_per_epoch,
        steps_per_execution=steps_per_execution,
        seed=seed,
        mixed_precision=mixed_precision,
        verbose=verbose,
    )

    model = _build(build_fn, strategy, plan.policy)
    x, y = model_checked_data(model, x, y)
    if validation_data is not None:
        validation_data = model_checked_data(model, *validation_data)
    fit_model, map_fn = model, None
    if plan.split_strings and takes_strings(model):
        fit_model, map_fn = split_for_replicas(model, strategy)
    pipeline = {
        "batch_size": batch_size,
        "map_fn": map_fn,
        "drop_remainder": plan.drop_remainder,
        "repeat": plan.repeat,
    }
    dataset = make_dataset(x, y, shuffle=shuffle, seed=plan.seed, **pipeline)
    validation = None
    if validation_data is not None:
        validation = (
            make_dataset(*validation_data, **pipeline),
            plan.validation_steps,
        )
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
    done = epochs_done(run_dir) if run_dir is not None else 0
    if done >= epochs:
        # BackupAndRestore would start at epoch `done` and train nothing,
        # without a word: say so, and how to train more.
        logger.warning(
            "%s already trained %d epochs (its backup/ says so); "
            "`epochs=%d` trains none. Pass epochs > %d (--epochs M > %d "
            "on a command line) to train more, or a new run_dir to start "
            "over.",
            run_dir,
            done,
            epochs,
            done,
            done,
        )
    fit_steps = plan.steps_per_execution_for(fit_model.steps_per_execution)
    if fit_steps is not None:
        fit_model.steps_per_execution = fit_steps
    if plan.custom_loop:
        history = multi_worker_fit(
            fit_model,
            strategy,
            dataset,
            epochs=epochs,
            steps_per_epoch=plan.steps_per_epoch,
            validation=validation,
            callbacks=all_callbacks,
            verbose=plan.verbose,
        )
    else:
        build_before_tracing(fit_model, dataset)
        history = fit_model.fit(
            dataset,
            epochs=epochs,
            validation_data=None if validation is None else validation[0],
            callbacks=all_callbacks,
            shuffle=False,  # make_dataset shuffles
            verbose=plan.verbose,
        )
    if fit_model is not model:
        build_shared_optimizer(model, strategy)
    if run_dir is not None:
        model.save(run_dir / FINAL_MODEL_FILE)
    return model, history


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
        TypeError: if `model` is not a keras.Model, or `x` is missing.
        ValueError: if `batch_size` is not positive, or the model's own
            checks refuse the data (as in `train`).

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
    require_x(x)
    x, y = model_checked_data(model, x, y)
    info = describe_strategy(model.distribute_strategy)
    if info.num_workers > 1 or (takes_strings(model) and info.num_replicas > 1):
        model = local_copy(model)
    dataset = make_dataset(x, y, batch_size=batch_size)
    build_before_tracing(model, dataset)
    results = model.evaluate(dataset, verbose=verbose, return_dict=True)
    return {name: float(value) for name, value in results.items()}
