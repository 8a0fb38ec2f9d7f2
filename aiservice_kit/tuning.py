"""Hyperparameter search over the builders and the recommender.

`tune(builder, x, y)` searches the options a builder already has (widths,
depth, dropout, encoder, learning rate, batch size). Each builder's search
space is declared once, in `SEARCH_SPACES`; a user narrows or extends it
with `search_space=`. Keras builders are searched with KerasTuner
(`pip install "aiservice_kit[tune]"`) inside a `tf.distribute` strategy,
with early stopping, on a validation split or K folds. `CosineRecommender`
has no Keras model: the same function runs a grid (or random) search over
its parameters, scored by NDCG@10 on a leave-out split.

Every search writes to `directory/project_name`, so a search that was
killed resumes where it stopped when `tune` is called again with the same
arguments: completed trials are read back, not re-run.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import time
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

import numpy as np

from aiservice_kit import _validation

# ----------------------------------------------------------------- the space


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of a list of values (int, float, str or bool).

    Attributes:
        values: tuple. The candidates.
        default: the value of the defaults trial (the builder's default).
    """

    values: tuple
    default: Any = None

    def __post_init__(self) -> None:
        values = tuple(self.values)
        if not values:
            raise ValueError("`values` of a Choice must not be empty.")
        object.__setattr__(self, "values", values)
        if self.default is None:
            object.__setattr__(self, "default", values[0])
        elif self.default not in values:
            raise ValueError(
                f"`default` must be one of {values}. Received: "
                f"default={self.default!r}"
            )

    def register(self, hp: Any, name: str) -> Any:
        return hp.Choice(name, list(self.values), default=self.default)

    def grid(self) -> tuple:
        return self.values


@dataclasses.dataclass(frozen=True)
class Int:
    """An integer in `[min_value, max_value]` by `step`.

    Attributes:
        min_value: int. The smallest value.
        max_value: int. The largest value (included).
        step: int. The spacing of the values.
        default: int or None. The defaults trial's value (None: min_value).
    """

    min_value: int
    max_value: int
    step: int = 1
    default: int | None = None

    def register(self, hp: Any, name: str) -> Any:
        return hp.Int(
            name,
            self.min_value,
            self.max_value,
            step=self.step,
            default=self.default,
        )

    def grid(self) -> tuple:
        return tuple(range(self.min_value, self.max_value + 1, self.step))


@dataclasses.dataclass(frozen=True)
class Float:
    """A float in `[min_value, max_value]`, linear or log sampled.

    Attributes:
        min_value: float. The smallest value.
        max_value: float. The largest value.
        step: float or None. Spacing of the values (None: continuous).
        sampling: str. `"linear"` or `"log"`.
        default: float or None. The defaults trial's value.
    """

    min_value: float
    max_value: float
    step: float | None = None
    sampling: str = "linear"
    default: float | None = None

    def register(self, hp: Any, name: str) -> Any:
        return hp.Float(
            name,
            self.min_value,
            self.max_value,
            step=self.step,
            sampling=self.sampling,
            default=self.default,
        )

    def grid(self) -> tuple:
        if self.step is None:
            if self.sampling == "log":
                return tuple(
                    np.geomspace(self.min_value, self.max_value, 4).tolist()
                )
            return tuple(
                np.linspace(self.min_value, self.max_value, 4).tolist()
            )
        count = int(round((self.max_value - self.min_value) / self.step))
        return tuple(
            round(self.min_value + i * self.step, 10) for i in range(count + 1)
        )


@dataclasses.dataclass(frozen=True)
class Boolean:
    """True or False.

    Attributes:
        default: bool. The defaults trial's value.
    """

    default: bool = False

    def register(self, hp: Any, name: str) -> Any:
        return hp.Boolean(name, default=self.default)

    def grid(self) -> tuple:
        return (False, True)


SPECS = (Choice, Int, Float, Boolean)

_LR = Float(1e-4, 1e-2, sampling="log", default=1e-3)
_BATCH = Choice((32, 64, 128), default=32)

#: Each builder's search space: option -> range. The default of each range
#: is the builder's own default, and the first trial of a Bayesian or random
#: search runs all defaults, so the search's best is never a configuration
#: that the defaults beat in the same budget. Special names: `width` and
#: `depth` become the builder's `filters` (cnn: width, 2 x width, ...) or
#: `units` (lstm: depth layers of width units); `learning_rate` becomes an
#: Adam optimizer; `batch_size` goes to `fit`. Every other name is passed
#: to the builder as is.
SEARCH_SPACES: dict[str, dict[str, Any]] = {
    "build_cnn": {
        "width": Choice((16, 32, 64), default=32),
        "depth": Int(1, 3, default=2),
        "dense_units": Choice((64, 128, 256), default=128),
        "dropout": Float(0.0, 0.5, step=0.1, default=0.3),
        "learning_rate": _LR,
        "batch_size": _BATCH,
    },
    "build_lstm": {
        "width": Choice((32, 64, 128), default=64),
        "depth": Int(1, 2, default=1),
        "bidirectional": Boolean(default=False),
        "dropout": Float(0.0, 0.5, step=0.1, default=0.2),
        "learning_rate": _LR,
        "batch_size": _BATCH,
    },
    "build_text_classifier": {
        "encoder": Choice(("ngrams", "cnn", "bilstm"), default="ngrams"),
        "dense_units": Choice((16, 32, 64), default=32),
        "dropout": Float(0.0, 0.5, step=0.1, default=0.3),
        "learning_rate": _LR,
        "batch_size": _BATCH,
    },
    "CosineRecommender": {
        "n_neighbors": Choice((10, 20, 50, 100, 200), default=20),
    },
}

#: Names that never reach the builder as they are.
_SPECIAL = ("width", "depth", "learning_rate", "batch_size")
#: Fit options, not builder arguments.
_FIT_KEYS = ("batch_size",)


def _builder_name(builder: Any) -> str:
    if isinstance(builder, str):
        return builder
    if isinstance(builder, type):
        return builder.__name__
    name = getattr(builder, "__name__", None)
    if name is None:
        name = type(builder).__name__
    return name


def search_space(builder: Any, overrides: Any = None) -> Any:
    """Returns the search space `tune` uses for a builder.

    Args:
        builder: a builder function (`build_cnn`, ...), `CosineRecommender`
            or its name.
        overrides: None, a dict or a callable. A dict's entries replace or
            extend the table's: a range (`Choice`, `Int`, `Float`,
            `Boolean`) is searched, None removes an option (the builder's
            default applies), a callable `fn(hp)` returns the value from
            KerasTuner's `hp` itself, and any other value is fixed. A
            callable `fn(hp) -> dict` replaces the whole table.

    Returns:
        A dict of option -> range or value, or the callable given.

    Raises:
        ValueError: if the builder has no declared space and no overrides
            are given.
        TypeError: if `overrides` is neither a dict, a callable nor None.

    Example:
    ```python
    from aiservice_kit.tuning import Choice, search_space
    space = search_space("build_cnn", {"width": Choice((8, 16)), "depth": 1})
    ```
    """
    if callable(overrides) and not isinstance(overrides, Mapping):
        return overrides
    name = _builder_name(builder)
    if name not in SEARCH_SPACES and not overrides:
        raise ValueError(
            f"No search space is declared for {name!r}; pass "
            "`search_space={...}`. Declared: "
            f"{sorted(SEARCH_SPACES)}. Received: builder={builder!r}"
        )
    space = dict(SEARCH_SPACES.get(name, {}))
    if overrides is None:
        return space
    if not isinstance(overrides, Mapping):
        raise TypeError(
            "`search_space` must be a dict of option -> range/value, a "
            "callable fn(hp) -> dict, or None. Received: search_space of "
            f"type {type(overrides).__name__}"
        )
    for key, value in overrides.items():
        if value is None:
            space.pop(key, None)
        else:
            space[key] = value
    return space


_resolve_space = search_space


def _sample(space: Any, hp: Any) -> dict[str, Any]:
    """Registers the space on `hp` and returns the current values."""
    if callable(space) and not isinstance(space, Mapping):
        values = space(hp)
        if not isinstance(values, Mapping):
            raise TypeError(
                "A callable `search_space` must return a dict of option -> "
                f"value. Received: {type(values).__name__}"
            )
        return dict(values)
    values = {}
    for key, spec in space.items():
        if isinstance(spec, SPECS):
            values[key] = spec.register(hp, key)
        elif callable(spec):
            values[key] = spec(hp)
        else:
            values[key] = spec
    return values


def _builder_kwargs(name: str, values: Mapping[str, Any]) -> dict:
    """Turns sampled values into builder keyword arguments."""
    import keras

    kwargs = {
        key: value
        for key, value in values.items()
        if key not in _SPECIAL and key not in _FIT_KEYS
    }
    width = values.get("width")
    depth = values.get("depth")
    if width is not None or depth is not None:
        if name == "build_cnn":
            width = 32 if width is None else int(width)
            depth = 2 if depth is None else int(depth)
            kwargs["filters"] = tuple(width * 2**i for i in range(depth))
        else:
            width = 64 if width is None else int(width)
            depth = 1 if depth is None else int(depth)
            kwargs["units"] = width if depth == 1 else (width,) * depth
    if values.get("learning_rate") is not None:
        kwargs["optimizer"] = keras.optimizers.Adam(
            float(values["learning_rate"])
        )
    return kwargs


# ----------------------------------------------------------------- results


@dataclasses.dataclass
class TuneResult:
    """What `tune` returns.

    Attributes:
        model: the best configuration rebuilt and retrained on all of the
            training data (`x`, `y`; the validation data is not used).
        trials: list of dict. One row per completed trial, in trial order:
            `trial` (id), the hyperparameters, `score` (the objective on
            the validation data; mean over folds with `folds=`),
            `seconds` and `epochs` (best epoch count; None for
            recommenders).
        best_params: dict. The hyperparameters of the best trial.
        best_score: float. Its validation score.
        objective: str. What `score` measures (e.g. `"val_accuracy"`).
        new_trials: int. Trials run by this call (the others were read back
            from `directory`).
    """

    model: Any
    trials: list[dict]
    best_params: dict
    best_score: float
    objective: str
    new_trials: int

    def table(self) -> str:
        """Returns the trials as a plain-text table, best marked `*`."""
        return format_table(self.trials, self.best_score)


def format_table(trials: list[dict], best_score: float | None = None) -> str:
    """Formats trial rows (as in `TuneResult.trials`) as a text table.

    Args:
        trials: list of dict. Rows with `trial`, `score`, `seconds` and
            hyperparameters.
        best_score: float or None. Rows with this score are marked `*`.

    Returns:
        str. One line per trial under a header.
    """
    if not trials:
        return "(no completed trials)"
    keys = []
    for row in trials:
        for key in row:
            if key not in keys and key not in ("trial", "score", "seconds"):
                keys.append(key)
    columns = ["trial", *keys, "score", "seconds"]

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        if isinstance(value, (list, tuple)):
            return "x".join(str(v) for v in value)
        return "-" if value is None else str(value)

    rows = [[cell(row.get(column)) for column in columns] for row in trials]
    widths = [
        max(len(column), *(len(row[i]) for row in rows))
        for i, column in enumerate(columns)
    ]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    ]
    for row, trial in zip(rows, trials, strict=True):
        mark = " *" if trial.get("score") == best_score else ""
        lines.append(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
            + mark
        )
    return "\n".join(lines)


def _progress(
    verbose: int,
    index: Any,
    total: Any,
    params: Mapping,
    objective: str,
    score: Any,
    seconds: float,
    best: Any,
) -> None:
    if not verbose:
        return
    shown = ", ".join(f"{k}={_short(v)}" for k, v in params.items())
    score_text = "failed" if score is None else f"{score:.4f}"
    best_text = "-" if best is None else f"{best:.4f}"
    print(
        f"[tune] trial {index}/{total or '?'}: {shown} -> {objective}="
        f"{score_text} ({seconds:.1f}s; best {best_text})",
        flush=True,
    )


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


# ------------------------------------------------------------------ sidecar


class _Sidecar:
    """Per-trial seconds and epochs, next to KerasTuner's own files."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.data: dict[str, dict] = {}
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as file:
                self.data = json.load(file)

    def put(self, key: str, **fields: Any) -> None:
        self.data.setdefault(key, {}).update(fields)
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as file:
            json.dump(self.data, file)
        os.replace(tmp, self.path)


# --------------------------------------------------------------------- tune


def _kerastuner():
    try:
        import keras_tuner
    except ModuleNotFoundError as error:
        if error.name != "keras_tuner":
            raise
        raise ImportError(
            "`tune` on a Keras builder needs KerasTuner: "
            'pip install "aiservice_kit[tune]" (or keras-tuner).'
        ) from error
    return keras_tuner


_ALGORITHMS = ("bayesian", "hyperband", "random", "grid")


def _is_recommender(builder: Any) -> bool:
    from aiservice_kit.recommenders import CosineRecommender

    return builder is CosineRecommender or isinstance(
        builder, CosineRecommender
    )


def tune(
    builder: Any,
    x: Any,
    y: Any = None,
    *,
    search_space: Any = None,
    builder_kwargs: Mapping[str, Any] | None = None,
    algorithm: str = "bayesian",
    max_trials: int = 10,
    objective: str = "auto",
    validation_data: tuple | None = None,
    validation_split: float = 0.2,
    folds: int | None = None,
    epochs: int = 10,
    patience: int = 2,
    directory: str | os.PathLike = "tuning",
    project_name: str | None = None,
    overwrite: bool = False,
    strategy: Any = None,
    seed: int = 0,
    verbose: int = 1,
) -> TuneResult:
    """Searches a builder's hyperparameters and returns the best model.

    Keras builders (`build_cnn`, `build_lstm`, `build_text_classifier`, or
    your own with `search_space=`) are searched with KerasTuner: each trial
    builds a model inside `strategy.scope()`, trains it with early stopping
    on the objective, and is scored on the validation data (or the mean
    over `folds`). `CosineRecommender` (the class or an instance whose
    other parameters are kept) runs a grid or random search over its
    parameters instead, scored by NDCG@10 on a leave-out split: each
    user's 5 latest events when `x` is a `Ratings` with timestamps, else a
    random 20% of each user's events.

    The search writes to `directory/project_name`; called again with the
    same arguments after it was killed (or with a larger `max_trials`), it
    reads the completed trials back and only runs the missing ones. A
    progress line is printed per trial and a table at the end.

    Args:
        builder: callable or class. `build_cnn`, `build_lstm`,
            `build_text_classifier`, `CosineRecommender` or any builder
            `f(**kwargs) -> compiled keras.Model` (with `search_space=`).
        x: the training inputs: images, sequences or texts (numpy arrays or
            lists), or, for the recommender, a `Ratings` or a
            `(user_ids, item_ids[, weights])` tuple.
        y: the training labels (None for the recommender).
        search_space: None, dict or callable; see `search_space()`. None
            uses the builder's row of `SEARCH_SPACES`.
        builder_kwargs: dict or None. Fixed arguments for every build.
            `input_shape`, `num_classes` and `train_texts` are inferred
            from `x` and `y` when the builder takes them and they are not
            given.
        algorithm: str. `"bayesian"` (default), `"random"`, `"hyperband"`
            (which sets its own number of trials from `epochs` and ignores
            `max_trials`) or `"grid"`. The recommender accepts `"grid"`
            (every combination, at most `max_trials`) and `"random"`.
        max_trials: int. Trial budget (the first trial of a Bayesian,
            random or grid search is the builder's defaults).
        objective: str. `"auto"`: `val_accuracy` for classifiers, else
            `val_loss`; `ndcg@10` for the recommender.
        validation_data: `(x_val, y_val)` or None. Scores trials on it;
            otherwise the last `validation_split` of a seeded shuffle of
            `x` is held out.
        validation_split: float in (0, 1). Used without `validation_data`
            and `folds`.
        folds: int >= 2 or None. K-fold cross-validation instead of one
            split (each trial trains K models).
        epochs: int. Most epochs per trial (and Hyperband's max epochs).
        patience: int. Early-stopping patience, in epochs.
        directory: str or path. Where the search is written (resumable).
        project_name: str or None. Subdirectory (None: the builder name).
        overwrite: bool. Start afresh instead of resuming.
        strategy: a `tf.distribute.Strategy` or None
            (`aiservice_kit.get_strategy()`).
        seed: int. Seeds the split, the folds and the search.
        verbose: int. 1 prints a line per trial and the final table.

    Returns:
        A `TuneResult`: `.model` (best configuration retrained on all of
        `x`), `.trials` (the table as a list of dicts), `.best_params`,
        `.best_score`, `.objective`, `.new_trials`.

    Raises:
        ImportError: when KerasTuner is missing (Keras builders only).
        ValueError: on a bad value (unknown algorithm, `max_trials` < 1,
            `folds` < 2, a builder without a declared space, ...).
        TypeError: on a bad type.

    Example:
    ```python
    from aiservice_kit import build_cnn, tune
    result = tune(build_cnn, x_train, y_train, max_trials=8, epochs=5)
    result.model.evaluate(x_test, y_test)
    print(result.table())
    ```
    """
    _validation.check_choice("algorithm", algorithm, _ALGORITHMS)
    max_trials = _validation.check_positive_int("max_trials", max_trials)
    epochs = _validation.check_positive_int("epochs", epochs)
    patience = _validation.check_positive_int("patience", patience, minimum=0)
    overwrite = _validation.check_bool("overwrite", overwrite)
    if folds is not None:
        folds = _validation.check_positive_int("folds", folds, minimum=2)
    if not 0.0 < float(validation_split) < 1.0:
        raise ValueError(
            "`validation_split` must be in (0, 1). Received: "
            f"validation_split={validation_split!r}"
        )
    if not isinstance(builder, str) and not callable(builder):
        if not _is_recommender(builder):
            raise TypeError(
                "`builder` must be a builder function, CosineRecommender or "
                f"its instance. Received: builder={builder!r}"
            )
    space = _resolve_space(builder, search_space)
    name = _builder_name(builder)
    directory = os.fspath(directory)
    project_name = project_name or name
    if _is_recommender(builder):
        if algorithm not in ("grid", "random"):
            raise ValueError(
                "`algorithm` must be 'grid' or 'random' for "
                f"CosineRecommender. Received: algorithm={algorithm!r}"
            )
        return _tune_recommender(
            builder,
            x,
            space,
            algorithm=algorithm,
            max_trials=max_trials,
            objective="ndcg@10" if objective == "auto" else objective,
            project_dir=os.path.join(directory, project_name),
            overwrite=overwrite,
            seed=seed,
            verbose=verbose,
        )
    return _tune_keras(
        builder,
        x,
        y,
        space,
        name=name,
        builder_kwargs=dict(builder_kwargs or {}),
        algorithm=algorithm,
        max_trials=max_trials,
        objective=objective,
        validation_data=validation_data,
        validation_split=float(validation_split),
        folds=folds,
        epochs=epochs,
        patience=patience,
        directory=directory,
        project_name=project_name,
        overwrite=overwrite,
        strategy=strategy,
        seed=seed,
        verbose=verbose,
    )


# ------------------------------------------------------------ keras search


def _as_inputs(x: Any) -> Any:
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], str):
        return np.asarray(x, dtype=object)
    array = np.asarray(x)
    if array.dtype.kind == "U":  # fixed-width strings break fit (TF #65237)
        return array.astype(object)
    return array


def _infer_builder_kwargs(
    builder: Callable, kwargs: dict, x: np.ndarray, y: Any
) -> dict:
    import inspect

    try:
        parameters = inspect.signature(builder).parameters
    except (TypeError, ValueError):
        return kwargs
    if "train_texts" in parameters and "train_texts" not in kwargs:
        kwargs["train_texts"] = x
    elif "input_shape" in parameters and "input_shape" not in kwargs:
        kwargs["input_shape"] = tuple(x.shape[1:])
    if (
        "num_classes" in parameters
        and "num_classes" not in kwargs
        and "class_names" not in kwargs
        and y is not None
    ):
        labels = np.asarray(y)
        if labels.ndim == 1 and labels.dtype.kind in "iu":
            kwargs["num_classes"] = max(int(labels.max()) + 1, 2)
        elif labels.ndim == 2:
            kwargs["num_classes"] = labels.shape[1]
    return kwargs


def _split(x: np.ndarray, y: np.ndarray, fraction: float, seed: int) -> tuple:
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, int(round(fraction * len(x))))
    train, val = order[:-n_val], order[-n_val:]
    return x[train], y[train], x[val], y[val]


def _fit(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    *,
    validation: tuple | None,
    batch_size: int,
    epochs: int,
    callbacks: list,
    strategy: Any,
) -> Any:
    """`model.fit`, vectorizing text in the pipeline under >1 replica."""
    string_input = len(model.inputs) == 1 and model.inputs[0].dtype == "string"
    if string_input and strategy.num_replicas_in_sync > 1:
        # Keras cannot fit a string input under >1 replica (keras #21172):
        # train the numeric part, which shares the model's weights.
        import tensorflow as tf

        from aiservice_kit.models import split_text_model

        with strategy.scope():
            vectorizer, numeric = split_text_model(model)

        def pipeline(xs, ys, shuffle):
            data = tf.data.Dataset.from_tensor_slices((xs, ys))
            if shuffle:
                data = data.shuffle(len(xs), seed=0)
            return data.batch(batch_size).map(lambda a, b: (vectorizer(a), b))

        return numeric.fit(
            pipeline(x, y, True),
            validation_data=(
                None if validation is None else pipeline(*validation, False)
            ),
            epochs=epochs,
            callbacks=callbacks,
            shuffle=False,  # shuffled in the pipeline
            verbose=0,
        )
    return model.fit(
        x,
        y,
        validation_data=validation,
        batch_size=batch_size,
        epochs=epochs,
        callbacks=callbacks,
        verbose=0,
    )


def _tune_keras(
    builder: Any,
    x: Any,
    y: Any,
    space: Any,
    *,
    name: str,
    builder_kwargs: dict,
    algorithm: str,
    max_trials: int,
    objective: str,
    validation_data: tuple | None,
    validation_split: float,
    folds: int | None,
    epochs: int,
    patience: int,
    directory: str,
    project_name: str,
    overwrite: bool,
    strategy: Any,
    seed: int,
    verbose: int,
) -> TuneResult:
    kt = _kerastuner()
    import keras

    if isinstance(builder, str):
        import aiservice_kit

        builder = getattr(aiservice_kit, builder)
    if strategy is None:
        from aiservice_kit.distribute import get_strategy

        strategy = get_strategy(log=False)
    if y is None:
        raise ValueError(
            f"`y` (the labels) is required to tune {name}. Received: y=None"
        )
    x = _as_inputs(x)
    y = np.asarray(y)
    if len(x) != len(y):
        raise ValueError(
            "`x` and `y` must have the same length. Received: "
            f"{len(x)} inputs and {len(y)} labels"
        )
    builder_kwargs = _infer_builder_kwargs(builder, builder_kwargs, x, y)
    if objective == "auto":
        classifier = builder_kwargs.get("num_classes") or builder_kwargs.get(
            "class_names"
        )
        objective = "val_accuracy" if classifier else "val_loss"
    if validation_data is not None:
        x_fit, y_fit = x, y
        validation = (
            _as_inputs(validation_data[0]),
            np.asarray(validation_data[1]),
        )
    elif folds is None:
        x_fit, y_fit, x_val, y_val = _split(x, y, validation_split, seed)
        validation = (x_val, y_val)
    else:
        x_fit, y_fit, validation = x, y, None
    project_dir = os.path.join(directory, project_name)
    os.makedirs(project_dir, exist_ok=True)
    sidecar_path = os.path.join(project_dir, "aiservice_kit_trials.json")
    if overwrite and os.path.exists(sidecar_path):
        os.remove(sidecar_path)
    sidecar = _Sidecar(sidecar_path)

    def early_stopping():
        return keras.callbacks.EarlyStopping(
            monitor=objective, patience=patience, restore_best_weights=True
        )

    class HyperModel(kt.HyperModel):
        last_epochs = None

        def build(self, hp):
            values = _sample(space, hp)
            return builder(**builder_kwargs, **_builder_kwargs(name, values))

        def fit(self, hp, model, xs, ys, callbacks=None, **kwargs):
            values = _sample(space, hp)
            batch_size = int(values.get("batch_size") or 32)
            n_epochs = int(kwargs.get("epochs", epochs))
            if folds is None:
                stop = early_stopping()
                history = _fit(
                    model,
                    xs,
                    ys,
                    validation=validation,
                    batch_size=batch_size,
                    epochs=n_epochs,
                    callbacks=[*(callbacks or []), stop],
                    strategy=strategy,
                )
                scores = history.history[objective]
                best = (
                    int(np.argmax(scores))
                    if objective_direction == "max"
                    else int(np.argmin(scores))
                )
                HyperModel.last_epochs = best + 1
                return history
            from sklearn.model_selection import KFold

            fold_scores, fold_epochs = [], []
            splitter = KFold(folds, shuffle=True, random_state=seed)
            for index, (train, val) in enumerate(splitter.split(xs)):
                if index:
                    with strategy.scope():
                        model = self.build(hp)
                history = _fit(
                    model,
                    xs[train],
                    ys[train],
                    validation=(xs[val], ys[val]),
                    batch_size=batch_size,
                    epochs=n_epochs,
                    callbacks=[early_stopping()],
                    strategy=strategy,
                )
                scores = history.history[objective]
                pick = np.argmax if objective_direction == "max" else np.argmin
                fold_epochs.append(int(pick(scores)) + 1)
                fold_scores.append(float(scores[int(pick(scores))]))
            HyperModel.last_epochs = int(round(np.mean(fold_epochs)))
            return {objective: float(np.mean(fold_scores))}

    objective_direction = (
        "min" if "loss" in objective or "error" in objective else "max"
    )
    kt_objective = kt.Objective(objective, direction=objective_direction)
    state = {"new": 0, "start": 0.0}

    class Progress:
        def on_trial_begin(self, trial):
            state["start"] = time.monotonic()
            super().on_trial_begin(trial)

        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            seconds = time.monotonic() - state["start"]
            state["new"] += 1
            sidecar.put(
                trial.trial_id,
                seconds=seconds,
                epochs=HyperModel.last_epochs,
            )
            best = self.oracle.get_best_trials(1)
            best_score = best[0].score if best else None
            _progress(
                verbose,
                int(trial.trial_id) + 1,
                None if algorithm == "hyperband" else max_trials,
                _visible(trial.hyperparameters.values),
                objective,
                trial.score,
                seconds,
                best_score,
            )

    common = dict(
        objective=kt_objective,
        seed=seed,
        directory=directory,
        project_name=project_name,
        overwrite=overwrite,
        distribution_strategy=strategy,
    )
    if algorithm == "hyperband":
        base = kt.Hyperband
        options = dict(max_epochs=epochs, factor=3, **common)
    else:
        base = {
            "bayesian": kt.BayesianOptimization,
            "random": kt.RandomSearch,
            "grid": kt.GridSearch,
        }[algorithm]
        options = dict(max_trials=max_trials, **common)
    tuner_class = type(f"_{base.__name__}", (Progress, base), {})
    tuner = tuner_class(HyperModel(), **options)
    if algorithm in ("bayesian", "random"):
        _defaults_first(tuner.oracle)
    tuner.search(x_fit, y_fit, epochs=epochs, verbose=0)

    trials = []
    # Ids are zero-padded to len(str(max_trials)): sort them as numbers.
    for trial_id in sorted(tuner.oracle.trials, key=int):
        trial = tuner.oracle.trials[trial_id]
        if trial.status != "COMPLETED" or trial.score is None:
            continue
        extra = sidecar.data.get(trial_id, {})
        trials.append(
            {
                "trial": trial_id,
                **_visible(trial.hyperparameters.values),
                "score": float(trial.score),
                "seconds": extra.get("seconds"),
                "epochs": extra.get("epochs"),
            }
        )
    if not trials:
        raise RuntimeError(
            f"No trial of the search in {project_dir} completed; see the "
            "errors KerasTuner logged above."
        )
    best_trial = tuner.oracle.get_best_trials(1)[0]
    best_params = _visible(best_trial.hyperparameters.values)
    best_epochs = sidecar.data.get(best_trial.trial_id, {}).get("epochs")
    best_epochs = int(best_epochs or epochs)
    values = _sample(space, best_trial.hyperparameters)
    keras.utils.set_random_seed(seed)
    with strategy.scope():
        model = builder(**builder_kwargs, **_builder_kwargs(name, values))
    _fit(
        model,
        x,
        y,
        validation=None,
        batch_size=int(values.get("batch_size") or 32),
        epochs=best_epochs,
        callbacks=[],
        strategy=strategy,
    )
    result = TuneResult(
        model=model,
        trials=trials,
        best_params=best_params,
        best_score=float(best_trial.score),
        objective=objective,
        new_trials=state["new"],
    )
    if verbose:
        print(result.table(), flush=True)
    return result


def _visible(values: Mapping[str, Any]) -> dict:
    return {k: v for k, v in values.items() if not k.startswith("tuner/")}


def _defaults_first(oracle: Any) -> None:
    """Makes the oracle's first trial the defaults of every range."""
    original = oracle.populate_space

    def populate_space(trial_id):
        if not oracle.trials:
            values = oracle.hyperparameters.copy().values
            oracle._tried_so_far.add(oracle._compute_values_hash(values))
            return {"status": "RUNNING", "values": values}
        return original(trial_id)

    oracle.populate_space = populate_space


# ------------------------------------------------------- recommender search


def _recommender_split(x: Any, seed: int) -> tuple:
    from aiservice_kit.recommenders import interactions

    if isinstance(x, interactions.Ratings):
        ratings = x
    elif isinstance(x, tuple) and len(x) in (2, 3):
        weights = (
            np.ones(len(x[0]), np.float32) if len(x) == 2 else np.asarray(x[2])
        )
        ratings = interactions.Ratings(
            np.asarray(x[0]), np.asarray(x[1]), weights.astype(np.float32)
        )
    else:
        raise TypeError(
            "`x` must be a Ratings or a (user_ids, item_ids[, weights]) "
            "tuple to tune CosineRecommender. Received: x of type "
            f"{type(x).__name__}"
        )
    if ratings.timestamps is not None:
        test = interactions.leave_last_n_out(
            ratings.user_ids, ratings.timestamps, n=5
        )
    else:
        test = interactions.random_split(
            ratings.user_ids, test_fraction=0.2, seed=seed
        )
    return ratings, ratings.subset(~test), ratings.subset(test)


def recommender_score(model: Any, test: Any, k: int = 10) -> float:
    """NDCG@k of a fitted recommender on held-out events.

    Args:
        model: a fitted `CosineRecommender`.
        test: `Ratings`. Held-out events; users unknown to the model are
            skipped.
        k: int. The cut-off.

    Returns:
        float. Mean NDCG@k over the held-out users the model knows.
    """
    from aiservice_kit.recommenders import metrics

    relevant: dict = {}
    known = set(model.user_ids_.tolist())
    for user, item in zip(
        test.user_ids.tolist(), test.item_ids.tolist(), strict=True
    ):
        if user in known:
            relevant.setdefault(user, set()).add(item)
    users = list(relevant)
    if not users:
        return 0.0
    recommended, _ = model.recommend(np.asarray(users), top_k=k)
    return metrics.ndcg_at_k(recommended, [relevant[u] for u in users], k=k)


def _tune_recommender(
    builder: Any,
    x: Any,
    space: Any,
    *,
    algorithm: str,
    max_trials: int,
    objective: str,
    project_dir: str,
    overwrite: bool,
    seed: int,
    verbose: int,
) -> TuneResult:
    from aiservice_kit.recommenders import CosineRecommender

    if callable(space) and not isinstance(space, Mapping):
        raise TypeError(
            "CosineRecommender's `search_space` must be a dict of "
            "parameter -> range or value (it has no KerasTuner `hp`)."
        )
    if objective != "ndcg@10":
        raise ValueError(
            "CosineRecommender is scored by NDCG@10 only. Received: "
            f"objective={objective!r}"
        )
    base_params = (
        builder.get_params() if isinstance(builder, CosineRecommender) else {}
    )
    ranges = {k: v for k, v in space.items() if isinstance(v, SPECS)}
    fixed = {k: v for k, v in space.items() if not isinstance(v, SPECS)}
    names = list(ranges)
    defaults = tuple(ranges[k].default for k in names)
    grid = [defaults] + [
        combo
        for combo in itertools.product(*(ranges[k].grid() for k in names))
        if combo != defaults
    ]
    if algorithm == "random":
        rng = np.random.default_rng(seed)
        rest = [grid[i] for i in rng.permutation(len(grid) - 1) + 1]
        grid = [grid[0], *rest]
    grid = grid[:max_trials]

    ratings, train, test = _recommender_split(x, seed)
    os.makedirs(project_dir, exist_ok=True)
    path = os.path.join(project_dir, "trials.json")
    if overwrite and os.path.exists(path):
        os.remove(path)
    sidecar = _Sidecar(path)
    new = 0
    best_score = max(
        (row["score"] for row in sidecar.data.values()), default=None
    )
    train_data = (train.user_ids, train.item_ids, train.ratings)
    for index, combo in enumerate(grid):
        params = dict(zip(names, combo, strict=True))
        key = json.dumps(params, sort_keys=True, default=str)
        if key in sidecar.data:
            continue
        start = time.monotonic()
        model = CosineRecommender(**{**base_params, **fixed, **params})
        score = recommender_score(model.fit(train_data), test)
        seconds = time.monotonic() - start
        sidecar.put(
            key, trial=index, params=params, score=score, seconds=seconds
        )
        new += 1
        best_score = score if best_score is None else max(best_score, score)
        _progress(
            verbose,
            index + 1,
            len(grid),
            params,
            objective,
            score,
            seconds,
            best_score,
        )
    rows = sorted(sidecar.data.values(), key=lambda row: row["trial"])
    trials = [
        {
            "trial": f"{row['trial']:02d}",
            **row["params"],
            "score": float(row["score"]),
            "seconds": row["seconds"],
            "epochs": None,
        }
        for row in rows
    ]
    best = max(rows, key=lambda row: (row["score"], -row["trial"]))
    model = CosineRecommender(**{**base_params, **fixed, **best["params"]})
    model.fit((ratings.user_ids, ratings.item_ids, ratings.ratings))
    result = TuneResult(
        model=model,
        trials=trials,
        best_params=dict(best["params"]),
        best_score=float(best["score"]),
        objective=objective,
        new_trials=new,
    )
    if verbose:
        print(result.table(), flush=True)
    return result


__all__ = [
    "SEARCH_SPACES",
    "Boolean",
    "Choice",
    "Float",
    "Int",
    "TuneResult",
    "format_table",
    "recommender_score",
    "search_space",
    "tune",
]
