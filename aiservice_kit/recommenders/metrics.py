"""Ranking metrics for top-k recommendations; rating errors; k-fold CV.

`rmse`, `mae` and `cross_validate` serve the rating models
(`MatrixFactorization`, `KNNRatingPredictor`); the ranking metrics below
apply to every recommender that returns ranked item ids.

Every metric takes `recommended`, a `(n_users, >= k)` array of item ids
(best first; padding such as -1 or "" never matches), and `relevant`, the
held-out items of the same users in the same order: either a users x items
scipy sparse matrix (when `recommended` holds column indices) or a sequence
of collections of item ids. Relevance is binary. Metrics are averaged over
the users with at least one relevant item; users without any are skipped,
so a split that leaves some users untested does not dilute the score.

Definitions (for one user, hits h_i in {0, 1} at ranks i = 1..k, R the
relevant set):

- precision@k = sum(h) / k
- recall@k = sum(h) / |R|
- hit rate@k = 1 if sum(h) > 0 else 0
- NDCG@k = sum(h_i / log2(i + 1)) / sum_{i <= min(k, |R|)} 1 / log2(i + 1)
- AP@k = sum(h_i * precision@i) / min(k, |R|); MAP@k is its mean.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from aiservice_kit import _validation


def _is_padding(item: Any) -> bool:
    return (
        item is None
        or (isinstance(item, str) and item == "")
        or (isinstance(item, int) and item == -1)
    )


def _hits(
    recommended: Any, relevant: Any, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Returns (hits (users x k) bool, relevant counts) for tested users."""
    k = _validation.check_positive_int("k", k)
    recs = np.asarray(recommended)
    if recs.ndim != 2:
        raise ValueError(
            "`recommended` must be a 2-D array (users x ranked items). "
            f"Received: recommended with shape {recs.shape}"
        )
    if recs.shape[1] < k:
        raise ValueError(
            f"`recommended` must hold at least k={k} items per user. "
            f"Received: recommended with shape {recs.shape}"
        )
    recs = recs[:, :k]
    if sp.issparse(relevant):
        matrix = sp.csr_matrix(relevant)
        if matrix.shape[0] != recs.shape[0]:
            raise ValueError(
                "`relevant` must have one row per user of `recommended`. "
                f"Received: {matrix.shape[0]} rows for {recs.shape[0]} users"
            )
        if recs.dtype.kind not in "iu":
            raise TypeError(
                "With a sparse `relevant`, `recommended` must hold integer "
                f"column indices. Received: dtype {recs.dtype}"
            )
        matrix.sum_duplicates()
        matrix.eliminate_zeros()
        n_items = matrix.shape[1]
        rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
        keys = rows.astype(np.int64) * n_items + matrix.indices
        valid = (recs >= 0) & (recs < n_items)
        rec_keys = np.arange(recs.shape[0], dtype=np.int64)[
            :, None
        ] * n_items + np.where(valid, recs, 0)
        hits = np.isin(rec_keys, keys) & valid
        counts = np.diff(matrix.indptr)
    elif isinstance(relevant, Sequence) and not isinstance(
        relevant, (str, bytes)
    ):
        if len(relevant) != recs.shape[0]:
            raise ValueError(
                "`relevant` must have one entry per user of `recommended`. "
                f"Received: {len(relevant)} entries for {recs.shape[0]} users"
            )
        hits = np.zeros(recs.shape, dtype=bool)
        counts = np.zeros(recs.shape[0], dtype=np.int64)
        for row, items in enumerate(relevant):
            wanted = set(np.asarray(list(items)).tolist())
            counts[row] = len(wanted)
            hits[row] = [
                item in wanted and not _is_padding(item)
                for item in recs[row].tolist()
            ]
    else:
        raise TypeError(
            "`relevant` must be a scipy sparse matrix or a sequence of "
            "collections of item ids. "
            f"Received: relevant of type {type(relevant).__name__}"
        )
    tested = counts > 0
    return hits[tested], counts[tested]


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else 0.0


def precision_at_k(recommended: Any, relevant: Any, k: int = 10) -> float:
    """Mean share of the top-k that is relevant.

    Args:
        recommended: array-like (n_users, >= k). Ranked item ids per user.
        relevant: sparse matrix or sequence of collections. Held-out items.
        k: int >= 1. Cut-off.

    Returns:
        float in [0, 1].

    Raises:
        TypeError: on unsupported input types.
        ValueError: on shape mismatches or k < 1.

    Example:
    ```python
    precision_at_k([[1, 2, 3]], [{2, 9}], k=3)  # 1/3
    ```
    """
    hits, _ = _hits(recommended, relevant, k)
    return _mean(hits.sum(axis=1) / k)


def recall_at_k(recommended: Any, relevant: Any, k: int = 10) -> float:
    """Mean share of each user's relevant items found in the top-k.

    Args:
        recommended: array-like (n_users, >= k). Ranked item ids per user.
        relevant: sparse matrix or sequence of collections. Held-out items.
        k: int >= 1. Cut-off.

    Returns:
        float in [0, 1].

    Example:
    ```python
    recall_at_k([[1, 2, 3]], [{2, 9}], k=3)  # 0.5
    ```
    """
    hits, counts = _hits(recommended, relevant, k)
    return _mean(hits.sum(axis=1) / counts)


def hit_rate_at_k(recommended: Any, relevant: Any, k: int = 10) -> float:
    """Share of users with at least one relevant item in the top-k.

    Args:
        recommended: array-like (n_users, >= k). Ranked item ids per user.
        relevant: sparse matrix or sequence of collections. Held-out items.
        k: int >= 1. Cut-off.

    Returns:
        float in [0, 1].

    Example:
    ```python
    hit_rate_at_k([[1, 2], [3, 4]], [{2}, {9}], k=2)  # 0.5
    ```
    """
    hits, _ = _hits(recommended, relevant, k)
    return _mean(hits.any(axis=1).astype(np.float64))


def ndcg_at_k(recommended: Any, relevant: Any, k: int = 10) -> float:
    """Mean normalised discounted cumulative gain (binary relevance).

    Args:
        recommended: array-like (n_users, >= k). Ranked item ids per user.
        relevant: sparse matrix or sequence of collections. Held-out items.
        k: int >= 1. Cut-off.

    Returns:
        float in [0, 1].

    Example:
    ```python
    ndcg_at_k([[2, 1]], [{2}], k=2)  # 1.0
    ```
    """
    hits, counts = _hits(recommended, relevant, k)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits * discounts).sum(axis=1)
    ideal = np.cumsum(discounts)[np.minimum(counts, k) - 1]
    return _mean(dcg / ideal)


def map_at_k(recommended: Any, relevant: Any, k: int = 10) -> float:
    """Mean average precision at k.

    Args:
        recommended: array-like (n_users, >= k). Ranked item ids per user.
        relevant: sparse matrix or sequence of collections. Held-out items.
        k: int >= 1. Cut-off.

    Returns:
        float in [0, 1].

    Example:
    ```python
    map_at_k([[2, 1, 3]], [{2, 3}], k=3)  # (1/1 + 2/3) / 2
    ```
    """
    hits, counts = _hits(recommended, relevant, k)
    precision_at_i = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    average = (precision_at_i * hits).sum(axis=1) / np.minimum(counts, k)
    return _mean(average)


def catalogue_coverage(recommended: Any, n_items: int, k: int = 10) -> float:
    """Share of the catalogue that appears in at least one top-k list.

    Args:
        recommended: array-like (n_users, >= k). Ranked item ids per user.
            Padding (-1, "" or None) is not counted.
        n_items: int >= 1. Catalogue size.
        k: int >= 1. Cut-off.

    Returns:
        float in [0, 1].

    Example:
    ```python
    catalogue_coverage([[1, 2], [2, 3]], n_items=10, k=2)  # 0.3
    ```
    """
    k = _validation.check_positive_int("k", k)
    n_items = _validation.check_positive_int("n_items", n_items)
    recs = np.asarray(recommended)
    if recs.ndim != 2 or recs.shape[1] < k:
        raise ValueError(
            f"`recommended` must be a 2-D array with at least k={k} "
            f"columns. Received: recommended with shape {recs.shape}"
        )
    values = recs[:, :k].ravel().tolist()
    distinct = {v for v in values if not _is_padding(v)}
    return len(distinct) / n_items


def ranking_report(
    recommended: Any, relevant: Any, k: int = 10, *, n_items: int | None = None
) -> dict[str, float]:
    """All ranking metrics at once.

    Args:
        recommended: array-like (n_users, >= k). Ranked item ids per user.
        relevant: sparse matrix or sequence of collections. Held-out items.
        k: int >= 1. Cut-off.
        n_items: int or None. Catalogue size; adds `coverage@k` when given.

    Returns:
        A dict with `precision@k`, `recall@k`, `ndcg@k`, `map@k`,
        `hit_rate@k` (and `coverage@k`), keys spelled with the actual k.

    Example:
    ```python
    ranking_report(item_ids, test_matrix, k=10, n_items=test_matrix.shape[1])
    ```
    """
    report = {
        f"precision@{k}": precision_at_k(recommended, relevant, k),
        f"recall@{k}": recall_at_k(recommended, relevant, k),
        f"ndcg@{k}": ndcg_at_k(recommended, relevant, k),
        f"map@{k}": map_at_k(recommended, relevant, k),
        f"hit_rate@{k}": hit_rate_at_k(recommended, relevant, k),
    }
    if n_items is not None:
        report[f"coverage@{k}"] = catalogue_coverage(recommended, n_items, k)
    return report


def _errors(y_true: Any, y_pred: Any) -> np.ndarray:
    true = np.asarray(y_true, dtype=np.float64)
    pred = np.asarray(y_pred, dtype=np.float64)
    if true.shape != pred.shape or true.ndim != 1:
        raise ValueError(
            "`y_true` and `y_pred` must be 1-D and of the same length. "
            f"Received: shapes {true.shape} and {pred.shape}"
        )
    if len(true) == 0:
        raise ValueError("`y_true` must not be empty. Received: 0 ratings")
    if not (np.isfinite(true).all() and np.isfinite(pred).all()):
        raise ValueError("`y_true` and `y_pred` must be finite. Received NaN")
    return pred - true


def rmse(y_true: Any, y_pred: Any) -> float:
    """Root mean squared error of predicted ratings.

    Args:
        y_true: 1-D array-like. The true ratings.
        y_pred: 1-D array-like. The predictions, same length.

    Returns:
        float.

    Raises:
        ValueError: on mismatched shapes, empty or non-finite input.

    Example:
    ```python
    rmse([4.0, 3.0], [3.5, 3.0])  # 0.3535...
    ```
    """
    return float(np.sqrt(np.mean(_errors(y_true, y_pred) ** 2)))


def mae(y_true: Any, y_pred: Any) -> float:
    """Mean absolute error of predicted ratings.

    Args:
        y_true: 1-D array-like. The true ratings.
        y_pred: 1-D array-like. The predictions, same length.

    Returns:
        float.

    Raises:
        ValueError: on mismatched shapes, empty or non-finite input.

    Example:
    ```python
    mae([4.0, 3.0], [3.5, 3.0])  # 0.25
    ```
    """
    return float(np.mean(np.abs(_errors(y_true, y_pred))))


def cross_validate(
    estimator: Any,
    ratings: Any,
    *,
    n_splits: int = 5,
    seed: int | None = 0,
    folds: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """K-fold cross-validation of a rating model (surprise's helper).

    Each split fits a fresh copy of `estimator` (its class built from
    `get_params()`) on the other folds and predicts the held-out fold;
    ids unseen in training are answered by the model's baseline
    (`predict(..., unknown="baseline")`), as surprise does. With the same
    `seed` (or the same `folds`) every model sees the same splits.

    Args:
        estimator: a rating model with `get_params`, `fit` and
            `predict(user_ids, item_ids, unknown=...)`.
        ratings: `interactions.Ratings`. The events.
        n_splits: int >= 2. Folds, when `folds` is None.
        seed: int or None. Seed of `kfold_split`.
        folds: np.ndarray or None. A fold number per event (e.g. from
            `interactions.kfold_split`), used as given.

    Returns:
        A dict of arrays, one value per split: `test_rmse`, `test_mae`,
        `fit_time`, `test_time` (seconds).

    Raises:
        TypeError: if `ratings` is not an `interactions.Ratings`.

    Example:
    ```python
    from aiservice_kit.recommenders import MatrixFactorization, metrics
    scores = metrics.cross_validate(MatrixFactorization(), ratings)
    scores["test_rmse"].mean()
    ```
    """
    import time

    from aiservice_kit.recommenders import interactions

    if not isinstance(ratings, interactions.Ratings):
        raise TypeError(
            "`ratings` must be an interactions.Ratings. "
            f"Received: ratings of type {type(ratings).__name__}"
        )
    if folds is None:
        folds = interactions.kfold_split(
            len(ratings), n_splits=n_splits, seed=seed
        )
    results: dict[str, list[float]] = {
        "test_rmse": [],
        "test_mae": [],
        "fit_time": [],
        "test_time": [],
    }
    for fold in np.unique(folds):
        train = ratings.subset(folds != fold)
        test = ratings.subset(folds == fold)
        model = type(estimator)(**estimator.get_params())
        started = time.perf_counter()
        model.fit(train)
        results["fit_time"].append(time.perf_counter() - started)
        started = time.perf_counter()
        predicted = model.predict(
            test.user_ids, test.item_ids, unknown="baseline"
        )
        results["test_time"].append(time.perf_counter() - started)
        results["test_rmse"].append(rmse(test.ratings, predicted))
        results["test_mae"].append(mae(test.ratings, predicted))
    return {name: np.array(values) for name, values in results.items()}
