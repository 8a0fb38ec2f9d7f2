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

This module is the entry point; the ranges and the table live in
`_search_spaces`, the trial records in `_trials`, the searches in
`_keras_search` (KerasTuner) and `_recommender_search`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from aiservice_kit import _validation
from aiservice_kit._keras_search import tune_keras
from aiservice_kit._recommender_search import recommender_score
from aiservice_kit._recommender_search import tune_recommender
from aiservice_kit._search_spaces import SEARCH_SPACES
from aiservice_kit._search_spaces import Boolean
from aiservice_kit._search_spaces import Choice
from aiservice_kit._search_spaces import Float
from aiservice_kit._search_spaces import Int
from aiservice_kit._search_spaces import builder_name
from aiservice_kit._search_spaces import search_space
from aiservice_kit._trials import TuneResult
from aiservice_kit._trials import format_table

#: `search_space` by another name: `tune`'s argument of that name hides it.
_resolve_space = search_space

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
    algorithm: str | None = None,
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
            given, and `normalization_data` (`build_lstm`) is the
            sequences trained on. An argument the search space sets too
            (`filters` from `width` and `depth`, ...) is refused: remove
            it from the space with `search_space={"width": None, ...}` to
            fix it here.
        algorithm: str or None. `"bayesian"` (the default for Keras
            builders), `"random"`, `"hyperband"`
            (which sets its own number of trials from `epochs` and ignores
            `max_trials`) or `"grid"`. The recommender accepts `"grid"`
            (every combination, at most `max_trials`; its default) and
            `"random"`.
        max_trials: int. Trial budget (the first trial of a Bayesian,
            random or grid search is the builder's defaults).
        objective: str. `"auto"`: `val_accuracy` for classifiers, else
            `val_loss`; `ndcg@10` for the recommender. Otherwise a metric
            the builder's models report (`loss`, `accuracy`, `mae`, ...,
            with `val_` for the validation data), checked before any
            trial runs. A search resumed from `directory/project_name`
            keeps the objective it was started with: another one raises
            (pass `overwrite=True` to start afresh).
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
            `folds` < 2, a builder without a declared space, an
            `objective` the models do not report or that differs from
            the resumed search's, `builder_kwargs` the search space sets
            too, ...).
        TypeError: on a bad type.

    Example:
    ```python
    from aiservice_kit import build_cnn, tune
    result = tune(build_cnn, x_train, y_train, max_trials=8, epochs=5)
    result.model.evaluate(x_test, y_test)
    print(result.table())
    ```
    """
    if algorithm is not None:
        _validation.check_choice("algorithm", algorithm, _ALGORITHMS)
    max_trials = _validation.check_positive_int("max_trials", max_trials)
    epochs = _validation.check_positive_int("epochs", epochs)
    patience = _validation.check_positive_int("patience", patience, minimum=0)
    overwrite = _validation.check_bool("overwrite", overwrite)
    if not isinstance(objective, str):
        raise TypeError(
            "`objective` must be 'auto' or a metric name such as "
            f"'val_accuracy'. Received: objective={objective!r}"
        )
    if builder_kwargs is not None and not isinstance(builder_kwargs, Mapping):
        raise TypeError(
            "`builder_kwargs` must be a dict of fixed builder arguments "
            f"or None. Received: builder_kwargs={builder_kwargs!r}"
        )
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
    name = builder_name(builder)
    directory = os.fspath(directory)
    project_name = project_name or name
    if _is_recommender(builder):
        algorithm = "grid" if algorithm is None else algorithm
        if algorithm not in ("grid", "random"):
            raise ValueError(
                "`algorithm` must be 'grid' or 'random' for "
                f"CosineRecommender. Received: algorithm={algorithm!r}"
            )
        return tune_recommender(
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
    return tune_keras(
        builder,
        x,
        y,
        space,
        name=name,
        builder_kwargs=dict(builder_kwargs or {}),
        algorithm="bayesian" if algorithm is None else algorithm,
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
