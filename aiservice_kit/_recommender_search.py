"""The grid or random search behind `tune` for `CosineRecommender`.

The recommender has no Keras model: each configuration is fitted on a
leave-out split (each user's latest events, or a random 20%) and scored
by NDCG@10 on the held-out events (`recommender_score`); completed
configurations are read back from the `Sidecar`, so a killed search
resumes.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from aiservice_kit._search_spaces import SPECS
from aiservice_kit._trials import Sidecar
from aiservice_kit._trials import TuneResult
from aiservice_kit._trials import progress


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


def tune_recommender(
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
    sidecar = Sidecar(path)
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
        progress(
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
