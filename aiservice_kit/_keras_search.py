"""The KerasTuner search behind `tune` for Keras builders.

Each trial builds the model inside `strategy.scope()`, trains it with
early stopping on a validation split or K folds, and records its seconds
and best epoch count in the `Sidecar`; the best configuration is rebuilt
and retrained on all of the data. The first trial runs every range's
default (`_defaults_first`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

import numpy as np

from aiservice_kit._search_spaces import builder_arguments
from aiservice_kit._search_spaces import fit_to_task
from aiservice_kit._search_spaces import sample
from aiservice_kit._search_spaces import used_options
from aiservice_kit._trials import Sidecar
from aiservice_kit._trials import TuneResult
from aiservice_kit._trials import progress


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


def _as_inputs(x: Any) -> Any:
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], str):
        return np.asarray(x, dtype=object)
    array = np.asarray(x)
    if array.dtype.kind == "U":  # fixed-width strings break fit (TF #65237)
        return array.astype(object)
    return array


def _parameters(builder: Callable) -> Mapping[str, Any]:
    """The names `builder` takes (none when its signature is unreadable)."""
    import inspect

    try:
        return inspect.signature(builder).parameters
    except (TypeError, ValueError):
        return {}


def _inferbuilder_arguments(
    builder: Callable, kwargs: dict, x: np.ndarray, y: Any
) -> dict:
    parameters = _parameters(builder)
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


#: Objectives naming one of these are minimized (losses and errors, such
#: as `val_mae`); the others (accuracy, AUC, ...) are maximized.
_MINIMIZED = (
    "loss",
    "error",
    "mae",
    "mse",
    "mape",
    "msle",
    "crossentropy",
    "hinge",
    "divergence",
    "poisson",
    "logcosh",
)


def direction(objective: str) -> str:
    """`"min"` for a loss or error objective (`val_mae`), else `"max"`."""
    return "min" if any(part in objective for part in _MINIMIZED) else "max"


#: Beside KerasTuner's files: the objective the search was started with.
_SEARCH_RECORD = "aiservice_kit_search.json"


def _set_by_search(name: str, space: Any, kt: Any) -> dict[str, list[str]]:
    """Builder argument -> the search-space options that set it."""
    values = sample(space, kt.HyperParameters())
    if callable(space) and not isinstance(space, Mapping):
        return {argument: [] for argument in builder_arguments(name, values)}
    set_by: dict[str, list[str]] = {}
    for option, value in values.items():
        for argument in builder_arguments(name, {option: value}):
            set_by.setdefault(argument, []).append(option)
    return set_by


def _check_builder_kwargs(
    name: str, space: Any, builder_kwargs: Mapping[str, Any], kt: Any
) -> None:
    """Refuses builder arguments the search space sets too."""
    set_by = _set_by_search(name, space, kt)
    clashes = sorted(set(builder_kwargs) & set(set_by))
    if not clashes:
        return
    options = sorted({option for c in clashes for option in set_by[c]})
    derived = [
        f"{c} from {', '.join(map(repr, sorted(set_by[c])))}"
        for c in clashes
        if set_by[c] and set_by[c] != [c]
    ]
    origin = f" ({'; '.join(derived)})" if derived else ""
    if options:
        removal = ", ".join(f"{option!r}: None" for option in options)
        search = (
            f"out of the search with search_space={{{removal}}} (None "
            "removes an option)"
        )
    else:  # a callable search_space
        search = "out of the dict your `search_space` callable returns"
    raise ValueError(
        f"`builder_kwargs` sets {clashes}, which the search space of "
        f"{name} sets too{origin}. Take them out of `builder_kwargs`, or "
        f"{search} to fix them in `builder_kwargs`. Received: "
        f"builder_kwargs={dict(builder_kwargs)!r}"
    )


def _reported_metrics(
    builder: Callable,
    builder_kwargs: dict,
    name: str,
    space: Any,
    kt: Any,
    strategy: Any,
    x: np.ndarray,
    y: np.ndarray,
) -> list[str] | None:
    """The metrics a trial's model logs (`loss`, `accuracy`, ...).

    One model with the defaults, evaluated on one row; None when that
    cannot run (the search then finds out).
    """
    values = sample(space, kt.HyperParameters())
    with strategy.scope():
        model = builder(**builder_kwargs, **builder_arguments(name, values))
    try:
        logs = model.evaluate(x[:1], y[:1], verbose=0, return_dict=True)
    except Exception:  # noqa: BLE001  (the trials report their own errors)
        return None
    return sorted(logs)


def _check_objective(objective: str, metrics: list[str], name: str) -> None:
    accepted = [*metrics, *(f"val_{metric}" for metric in metrics)]
    if objective not in accepted:
        raise ValueError(
            "`objective` must be 'auto' or a metric the models of "
            f"{name} report: {', '.join(map(repr, accepted))} (val_: on "
            f"the validation data). Received: objective={objective!r}"
        )


def _check_resumed_objective(project_dir: str, objective: str) -> None:
    """Refuses to resume a search that was scored by another objective."""
    path = os.path.join(project_dir, _SEARCH_RECORD)
    try:
        with open(path, encoding="utf-8") as file:
            recorded = json.load(file).get("objective")
    except (OSError, ValueError, AttributeError):
        return  # a new search (or one from before this record)
    if recorded is not None and recorded != objective:
        raise ValueError(
            f"The search in {project_dir} was scored by "
            f"objective={recorded!r}; resuming it under "
            f"objective={objective!r} would mix its trials' scores. Pass "
            f"objective={recorded!r} to resume it, overwrite=True to start "
            "it afresh, or another `project_name` or `directory`. "
            f"Received: objective={objective!r}"
        )


def _record_objective(project_dir: str, objective: str) -> None:
    path = os.path.join(project_dir, _SEARCH_RECORD)
    os.makedirs(project_dir, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as file:
        json.dump({"objective": objective}, file)
    os.replace(tmp, path)


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


def tune_keras(
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
        from aiservice_kit import models

        builders = sorted(n for n in models.__all__ if n.startswith("build_"))
        if builder not in builders:
            raise ValueError(
                f"`builder` named by a string must be one of {builders}. "
                f"Received: builder={builder!r}"
            )
        builder = getattr(models, builder)
    _check_builder_kwargs(name, space, builder_kwargs, kt)
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
    builder_kwargs = _inferbuilder_arguments(builder, builder_kwargs, x, y)
    classifier = bool(
        builder_kwargs.get("num_classes") or builder_kwargs.get("class_names")
    )
    space = fit_to_task(name, space, classifier)
    if objective == "auto":
        objective = "val_accuracy" if classifier else "val_loss"
    else:
        metrics = _reported_metrics(
            builder, builder_kwargs, name, space, kt, strategy, x, y
        )
        if metrics is not None:
            _check_objective(objective, metrics, name)
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
    if "normalization_data" in _parameters(builder) and (
        "normalization_data" not in builder_kwargs
    ):
        # Sequence builders standardize with (and set their random
        # thresholds from) the sequences they are given: those trained on
        # (all of `x` under cross-validation; never `validation_data`).
        builder_kwargs["normalization_data"] = x_fit
    project_dir = os.path.join(directory, project_name)
    if not overwrite:
        _check_resumed_objective(project_dir, objective)
    os.makedirs(project_dir, exist_ok=True)
    sidecar_path = os.path.join(project_dir, "aiservice_kit_trials.json")
    if overwrite and os.path.exists(sidecar_path):
        os.remove(sidecar_path)
    sidecar = Sidecar(sidecar_path)

    def early_stopping():
        return keras.callbacks.EarlyStopping(
            monitor=objective, patience=patience, restore_best_weights=True
        )

    class HyperModel(kt.HyperModel):
        last_epochs = None

        def build(self, hp):
            values = sample(space, hp)
            return builder(**builder_kwargs, **builder_arguments(name, values))

        def fit(self, hp, model, xs, ys, callbacks=None, **kwargs):
            values = sample(space, hp)
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

    objective_direction = direction(objective)
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
            progress(
                verbose,
                int(trial.trial_id) + 1,
                None if algorithm == "hyperband" else max_trials,
                _visible(name, trial.hyperparameters.values),
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
    _record_objective(project_dir, objective)  # after overwrite's clean-up
    _retry_unfinished_trials(tuner.oracle)
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
                **_visible(name, trial.hyperparameters.values),
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
    best_params = _visible(name, best_trial.hyperparameters.values)
    best_epochs = sidecar.data.get(best_trial.trial_id, {}).get("epochs")
    best_epochs = int(best_epochs or epochs)
    values = sample(space, best_trial.hyperparameters)
    keras.utils.set_random_seed(seed)
    with strategy.scope():
        model = builder(**builder_kwargs, **builder_arguments(name, values))
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


def _visible(name: str, values: Mapping[str, Any]) -> dict:
    """A trial's options as shown: no KerasTuner bookkeeping, none unused."""
    return used_options(
        name, {k: v for k, v in values.items() if not k.startswith("tuner/")}
    )


def _retry_unfinished_trials(oracle: Any) -> None:
    """Runs again the trials a killed search left unfinished.

    KerasTuner retries the trials its `oracle.json` lists as ongoing, but a
    search killed after a new trial's `trial.json` was written and before
    `oracle.json` was leaves a RUNNING trial that counts toward
    `max_trials` and never runs. Both kinds go to its retry queue.
    """
    queued = set(oracle._retry_queue)  # KerasTuner's own retry list
    for trial_id in sorted(oracle.trials, key=int):
        if oracle.trials[trial_id].status == "RUNNING" and (
            trial_id not in queued
        ):
            oracle._retry_queue.append(trial_id)


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
