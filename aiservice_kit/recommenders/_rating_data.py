"""Recommender inputs: checks and id encoding, one home for all models.

The rating models (`MatrixFactorization`, `KNNRatingPredictor`) take
(user, item, rating) triples, never a dense users x items matrix;
`CosineRecommender` takes a sparse matrix or triples too. This module
validates them, maps ids to positions and parses the new histories every
`recommend(user_items=...)` takes (`histories_matrix`).
"""

import os
import zipfile
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from aiservice_kit.recommenders import interactions as _interactions


def normalise_ids(ids: np.ndarray) -> np.ndarray:
    """Stores ids as int64 or unicode when they all are, else object."""
    if ids.dtype.kind in "iu":
        return ids.astype(np.int64)
    if ids.dtype.kind in "US":
        return ids.astype(str)
    values = ids.tolist()
    if values and all(isinstance(v, str) for v in values):
        return np.array(values, dtype=str)
    if values and all(_interactions.is_integer_like(v) for v in values):
        return np.array(values, dtype=np.int64)
    return ids


def open_saved(path: Any, owner: str) -> tuple[str, Any]:
    """Opens the `.npz` file `owner.save` wrote (the suffix may be left out).

    The one check of a recommender's `load` path.

    Args:
        path: str or PathLike. What `load` was given.
        owner: str. The class whose `save` wrote it (for the messages).

    Returns:
        `(path, archive)`: the file's path (with `.npz` when it was left
        out) and numpy's open `NpzFile` (`allow_pickle=False`), to close.

    Raises:
        TypeError: if `path` is not a str or PathLike.
        FileNotFoundError: if there is no such file (nor one with `.npz`).
        ValueError: if it is a directory or not a `.npz` archive.
    """
    expected = f"`path` must be the .npz file {owner}.save wrote"
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{expected}. Received: path={path!r}")
    path = os.fspath(path)
    if not os.path.exists(path) and os.path.exists(f"{path}.npz"):
        path = f"{path}.npz"
    if os.path.isdir(path):
        raise ValueError(
            f"{expected}; {path!r} is a directory. Received: path={path!r}"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{expected}; there is no file at {path!r} (nor at "
            f"{path + '.npz'!r}). Received: path={path!r}"
        )
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{expected}; {path!r} is not a saved {owner} (not a .npz "
            f"archive). Received: path={path!r}"
        )
    try:
        return path, np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"{expected}; {path!r} is not a readable .npz archive "
            f"({error}). Received: path={path!r}"
        ) from None


def check_sparse(name: str, matrix: Any, n_cols: int | None) -> sp.csr_matrix:
    """A validated float32 CSR of non-negative weights (a copy if fixed)."""
    if not sp.issparse(matrix):
        raise TypeError(
            f"`{name}` must be a scipy sparse matrix (users x items), e.g. "
            "scipy.sparse.csr_matrix(dense), or (user_ids, item_ids[, "
            f"weights]) triples. Received: {name} of type "
            f"{type(matrix).__name__}"
        )
    if matrix.ndim != 2:
        raise ValueError(
            f"`{name}` must be 2-D (users x items). "
            f"Received: {name} with shape {matrix.shape}"
        )
    if matrix.dtype.kind not in "biuf":
        raise TypeError(
            f"`{name}` must hold numbers. Received: dtype {matrix.dtype}"
        )
    if n_cols is not None and matrix.shape[1] != n_cols:
        raise ValueError(
            f"`{name}` must have one column per fitted item ({n_cols}). "
            f"Received: {name} with shape {matrix.shape}"
        )
    # A canonical float32 CSR input is used as is (no copy, as
    # scikit-learn's neighbours estimators keep their training data);
    # anything else is converted into a new matrix, never fixed in place.
    csr = sp.csr_matrix(matrix, dtype=np.float32, copy=False)
    if csr.nnz and not np.isfinite(csr.data).all():
        raise ValueError(f"`{name}` must be finite. Received: NaN or inf")
    if csr.nnz and csr.data.min() < 0:
        raise ValueError(
            f"`{name}` must hold weights >= 0. "
            f"Received: minimum {csr.data.min()}"
        )
    if not csr.has_canonical_format or (csr.nnz and not csr.data.all()):
        csr = csr.copy() if csr.data is getattr(matrix, "data", None) else csr
        csr.sum_duplicates()
        csr.eliminate_zeros()
    return csr


def check_rating_scale(value: Any) -> tuple[float, float] | None:
    """Validates a `rating_scale` parameter: None or (low, high)."""
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(
            "`rating_scale` must be None or a (low, high) pair of numbers, "
            f"e.g. (0.5, 5.0). Received: rating_scale={value!r}"
        ) from None
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(
            "`rating_scale` must be a finite (low, high) pair with low < "
            f"high. Received: rating_scale={value!r}"
        )
    return low, high


def split_triples(X: Any) -> tuple[Any, Any, Any]:
    """(user_ids, item_ids, ratings) from a Ratings, a tuple or a matrix."""
    if isinstance(X, _interactions.Ratings):
        return X.user_ids, X.item_ids, X.ratings
    if sp.issparse(X):
        coo = sp.coo_matrix(X)
        return (
            coo.row.astype(np.int64),
            coo.col.astype(np.int64),
            coo.data,
        )
    if isinstance(X, tuple) and len(X) == 3:
        return X
    raise TypeError(
        "`X` must be an interactions.Ratings, a (user_ids, item_ids, "
        "ratings) tuple of 1-D arrays or a scipy sparse users x items "
        f"matrix of ratings. Received: X of type {type(X).__name__}"
    )


def check_ratings(
    ratings: Any,
    length: int,
    rating_scale: tuple[float, float] | None,
    *,
    non_negative: bool = False,
) -> np.ndarray:
    """Finite float32 ratings, one per event, inside `rating_scale`.

    Raises:
        TypeError: on non-numeric ratings.
        ValueError: on a length mismatch, NaN/inf, a value outside the
            scale or (with `non_negative`) a negative weight.
    """
    array = np.asarray(ratings)
    if array.dtype.kind not in "biuf":
        raise TypeError(
            "`ratings` must be numeric. "
            f"Received: ratings with dtype {array.dtype}"
        )
    if array.shape != (length,):
        raise ValueError(
            "`ratings` must have one value per (user, item) pair, shape "
            f"({length},). Received: ratings with shape {array.shape}"
        )
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise ValueError(
            f"`ratings` must be finite. Received: {bad} NaN or inf values"
        )
    if rating_scale is not None and length:
        low, high = rating_scale
        outside = (array < low) | (array > high)
        if outside.any():
            raise ValueError(
                f"`ratings` must lie in rating_scale={rating_scale}. "
                f"Received: {int(outside.sum())} ratings outside it, "
                f"e.g. {array[outside][:3].tolist()}; pass the scale of "
                "your data as `rating_scale`"
            )
    if non_negative and length and array.min() < 0:
        raise ValueError(
            "`ratings` must be >= 0 for implicit feedback (weights: larger "
            f"means stronger). Received: minimum {array.min()}"
        )
    return array


def encode_triples(
    X: Any,
    rating_scale: tuple[float, float] | None,
    *,
    non_negative: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validates and encodes triples.

    Returns:
        `(users, items, ratings, user_vocab, item_vocab)`: int64 positions,
        float32 ratings and the two vocabularies.

    Raises:
        TypeError, ValueError: see `check_ratings`; ValueError on empty
        data or mismatched lengths.
    """
    user_ids, item_ids, ratings = split_triples(X)
    user_array = _interactions._as_id_array("user_ids", user_ids)
    item_array = _interactions._as_id_array("item_ids", item_ids)
    if len(user_array) != len(item_array):
        raise ValueError(
            "`user_ids` and `item_ids` must have the same length. Received: "
            f"{len(user_array)} user ids and {len(item_array)} item ids"
        )
    if len(user_array) == 0:
        raise ValueError(
            "`X` must hold at least one (user, item, rating) triple. "
            "Received: 0 triples"
        )
    values = check_ratings(
        ratings, len(user_array), rating_scale, non_negative=non_negative
    )
    user_vocab = normalise_ids(_interactions.vocabulary(user_array))
    item_vocab = normalise_ids(_interactions.vocabulary(item_array))
    users = _interactions.lookup(user_vocab, user_array, name="user_ids")
    items = _interactions.lookup(item_vocab, item_array, name="item_ids")
    return users, items, values, user_vocab, item_vocab


def id_positions(
    vocab: np.ndarray, ids: Any, name: str, unknown: str
) -> tuple[np.ndarray, bool]:
    """Positions of one id or a 1-D array of ids (scalar flag second)."""
    scalar = np.ndim(ids) == 0 and not isinstance(ids, (list, tuple))
    if scalar:
        if isinstance(ids, (float, np.floating)):
            raise TypeError(
                f"`{name}` must be an id or a 1-D array of them. "
                f"Received: {name}={ids!r}"
            )
        array = np.empty(1, dtype=object)
        array[0] = ids.item() if hasattr(ids, "item") else ids
        ids = normalise_ids(array)
    return (
        _interactions.lookup(vocab, ids, name=name, unknown=unknown),
        scalar,
    )


def to_ids(vocab: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Ids at positions; -1 becomes -1, "" or None by the id type."""
    valid = idx >= 0
    if vocab.dtype.kind == "O":
        out = np.empty(idx.shape, dtype=object)
        out[valid] = vocab[idx[valid]]
        return out
    out = vocab[np.where(valid, idx, 0)]
    if not valid.all():
        out[~valid] = -1 if vocab.dtype.kind in "iu" else ""
    return out


def histories_matrix(
    item_vocab: np.ndarray,
    user_items: Any,
    n_rows: int | None,
    rating_range: tuple[float, float] | None,
    *,
    explicit: bool,
    unknown: str = "error",
) -> sp.csr_matrix:
    """The users x fitted items CSR of `recommend`'s `user_items`.

    The one parser of new histories for every recommender
    (`CosineRecommender`, `MatrixFactorization`).

    Args:
        item_vocab: np.ndarray. The fitted item ids (column order).
        user_items: a scipy sparse matrix (one column per fitted item) or
            a sequence with one history per user: {item_id: rating or
            weight} mappings, or item-id sequences (weight 1, repeats
            summed) when not explicit.
        n_rows: int or None. The rows expected (one per user id).
        rating_range: (low, high) or None. Explicit ratings must lie in it.
        explicit: bool. Histories must carry ratings (any sign, stored as
            given); otherwise they are non-negative weights, zeros
            dropped.
        unknown: str. `"error"` raises on item ids `fit` never saw,
            `"ignore"` drops them.

    Returns:
        float32 CSR (n_histories, n_items), duplicates summed.

    Raises:
        TypeError: on wrongly typed histories.
        ValueError: on shape mismatches, unknown ids or bad ratings.
    """
    n_items = len(item_vocab)
    if sp.issparse(user_items) and not explicit:
        liked = check_sparse("user_items", user_items, n_items)
    elif sp.issparse(user_items):
        liked = sp.csr_matrix(user_items, dtype=np.float32)
        if liked.shape[1] != n_items:
            raise ValueError(
                "`user_items` must have one column per fitted item "
                f"({n_items}). Received: shape {liked.shape}"
            )
        check_ratings(liked.data, liked.nnz, rating_range)
    elif isinstance(user_items, Sequence) and not isinstance(
        user_items, (str, bytes)
    ):
        lengths, keys, values = [], [], []
        for entry in user_items:
            before = len(keys)
            if isinstance(entry, Mapping):
                keys.extend(entry.keys())
                values.extend(entry.values())
            elif isinstance(entry, (str, bytes)) or not hasattr(
                entry, "__len__"
            ):
                raise TypeError(
                    "`user_items` must hold one item-id sequence or "
                    "{item_id: rating} mapping per user. Received an "
                    f"entry of type {type(entry).__name__}"
                )
            elif explicit:
                raise TypeError(
                    "`user_items` must hold {item_id: rating} mappings "
                    "for objective='explicit' (fold-in needs the "
                    "ratings). Received an item-id sequence"
                )
            else:
                keys.extend(entry)
                values.extend([1.0] * len(entry))
            lengths.append(len(keys) - before)
        weights = check_ratings(
            values, len(values), rating_range, non_negative=not explicit
        )
        # One vectorised lookup for the whole batch.
        positions = (
            _interactions.lookup(
                item_vocab, keys, name="user_items", unknown=unknown
            )
            if keys
            else np.empty(0, np.int64)
        )
        rows = np.repeat(np.arange(len(lengths)), lengths)
        keep = positions >= 0
        liked = sp.csr_matrix(
            (weights[keep], (rows[keep], positions[keep])),
            shape=(len(user_items), n_items),
        )
        liked.sum_duplicates()
        if not explicit:
            liked.eliminate_zeros()
    else:
        raise TypeError(
            "`user_items` must be a scipy sparse matrix (users x fitted "
            "items) or a sequence of histories. "
            f"Received: user_items of type {type(user_items).__name__}"
        )
    if n_rows is not None and liked.shape[0] != n_rows:
        raise ValueError(
            "`user_items` must have one row per entry of `user_ids`. "
            f"Received: {liked.shape[0]} rows for {n_rows} users"
        )
    return liked
