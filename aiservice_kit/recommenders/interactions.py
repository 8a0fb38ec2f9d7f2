"""Interactions: ids <-> sparse matrix, implicit feedback, per-user splits.

Users and items can be identified by any hashable values (ints, strings,
...). `encode_interactions` maps them to the rows and columns of a scipy
CSR matrix and keeps the vocabularies so results can be mapped back.
"""

import csv
import dataclasses
import numbers
import os
from collections.abc import Hashable
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from aiservice_kit import _validation


@dataclasses.dataclass(frozen=True)
class Ratings:
    """Interaction log columns, one entry per (user, item) event.

    Attributes:
        user_ids: np.ndarray. The user of each event.
        item_ids: np.ndarray. The item of each event.
        ratings: np.ndarray of float32. The rating or weight of each event.
        timestamps: np.ndarray of int64 or None. When each event happened.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.user_ids)

    def subset(self, mask: np.ndarray) -> "Ratings":
        """Returns the events where `mask` (bool or index array) selects.

        Args:
            mask: np.ndarray. A boolean mask or integer indices.

        Returns:
            A new `Ratings`.
        """
        return Ratings(
            self.user_ids[mask],
            self.item_ids[mask],
            self.ratings[mask],
            None if self.timestamps is None else self.timestamps[mask],
        )


#: MovieLens file layouts: (file name, separator, has a header row).
_MOVIELENS_FORMATS = {
    "ratings.csv": (",", True),
    "u.data": ("\t", False),
    "ratings.dat": ("::", False),
}


def _movielens_file(path: str) -> tuple[str, str, bool]:
    if os.path.isdir(path):
        for name, (separator, header) in _MOVIELENS_FORMATS.items():
            candidate = os.path.join(path, name)
            if os.path.isfile(candidate):
                return candidate, separator, header
        raise FileNotFoundError(
            "`path` must be a MovieLens ratings file or a directory holding "
            f"one of {list(_MOVIELENS_FORMATS)}. Received: path={path!r}"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(
            "`path` must be a MovieLens ratings file (ratings.csv, u.data or "
            f"ratings.dat) or its directory. Received: path={path!r}"
        )
    name = os.path.basename(path)
    if name.endswith(".dat"):
        return path, "::", False
    if name.endswith(".csv"):
        return path, ",", True
    return path, "\t", False


def load_movielens_ratings(
    path: str | os.PathLike, *, min_rating: float | None = None
) -> Ratings:
    """Loads MovieLens ratings in any of their three published layouts.

    - `ratings.csv` (ml-latest, ml-latest-small, ml-20m...): a header
      `userId,movieId,rating,timestamp`, comma-separated.
    - `u.data` (ml-100k): `user item rating timestamp`, tab-separated,
      no header.
    - `ratings.dat` (ml-1m, ml-10m): `user::item::rating::timestamp`.

    Args:
        path: str or path-like. The file, or a directory holding one of
            them (e.g. `ml-latest-small`, `ml-100k`, `ml-1m`); a file
            named `*.csv` is read as CSV, `*.dat` with `::`, anything else
            as tab-separated.
        min_rating: float or None. When given, keeps only events rated at
            least this much (explicit ratings turned into implicit
            feedback; the kept ratings are left as they are, see
            `to_implicit`).

    Returns:
        A `Ratings` with int64 user and item ids, float32 ratings and int64
        timestamps.

    Raises:
        FileNotFoundError: if no such file exists.
        ValueError: if a CSV header is not the MovieLens one, or a row does
            not hold four numbers.

    Example:
    ```python
    from aiservice_kit.recommenders.interactions import (
        load_movielens_ratings,
    )
    ratings = load_movielens_ratings("ml-latest-small", min_rating=4.0)
    ml100k = load_movielens_ratings("ml-100k")  # reads u.data
    ```
    """
    path, separator, header_row = _movielens_file(os.fspath(path))
    if header_row:
        with open(path, newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle), [])
        expected = ["userId", "movieId", "rating", "timestamp"]
        if [column.strip() for column in header[:4]] != expected:
            raise ValueError(
                f"`path` must be a CSV with columns {expected}. "
                f"Received: path={path!r} with header {header}"
            )
    try:
        if separator == "::":
            with open(path, encoding="latin-1") as handle:
                rows = [line.split("::")[:4] for line in handle if line.strip()]
            table = np.array(rows, dtype=np.float64).reshape(-1, 4)
        else:
            table = np.loadtxt(
                path,
                delimiter=separator,
                skiprows=int(header_row),
                usecols=(0, 1, 2, 3),
                ndmin=2,
            )
    except ValueError as error:
        raise ValueError(
            "`path` must hold rows of four numbers (user, item, rating, "
            f"timestamp). Received: path={path!r} ({error})"
        ) from None
    ratings = Ratings(
        table[:, 0].astype(np.int64),
        table[:, 1].astype(np.int64),
        table[:, 2].astype(np.float32),
        table[:, 3].astype(np.int64),
    )
    if min_rating is not None:
        ratings = ratings.subset(ratings.ratings >= min_rating)
    return ratings


def to_implicit(
    ratings: np.ndarray, threshold: float, *, binary: bool = True
) -> np.ndarray:
    """Turns explicit ratings into implicit-feedback weights.

    Args:
        ratings: array-like of numbers. Explicit ratings.
        threshold: float. Ratings at or above it count as a positive event.
        binary: bool. `True` gives weight 1.0 to kept events; `False` keeps
            the rating as the weight.

    Returns:
        float32 weights, 0.0 where the rating is below the threshold (the
        encoders drop zero weights).

    Example:
    ```python
    to_implicit([5.0, 3.0, 4.0], threshold=4.0)  # [1.0, 0.0, 1.0]
    ```
    """
    values = np.asarray(ratings, dtype=np.float32)
    keep = values >= threshold
    if binary:
        return keep.astype(np.float32)
    return np.where(keep, values, np.float32(0.0)).astype(np.float32)


def _as_id_array(name: str, values: Any) -> np.ndarray:
    if sp.issparse(values) or isinstance(values, (str, bytes)):
        raise TypeError(
            f"`{name}` must be a 1-D sequence of hashable ids. "
            f"Received: {name} of type {type(values).__name__}"
        )
    if isinstance(values, np.ndarray):
        array = values
    elif isinstance(values, (list, tuple, range)):
        # Element by element: numpy would turn [1, "a"] into strings and
        # tuples into extra axes.
        array = np.empty(len(values), dtype=object)
        for position, value in enumerate(values):
            array[position] = value
        if all(is_integer_like(value) for value in values):
            array = np.array(values, dtype=np.int64)
        elif all(isinstance(value, str) for value in values) and values:
            array = np.array(values, dtype=str)
        elif values and all(isinstance(v, numbers.Real) for v in values):
            array = np.asarray(values, dtype=np.float64)  # refused below
    elif isinstance(values, Sequence) or hasattr(values, "__array__"):
        array = np.asarray(values)
    else:
        raise TypeError(
            f"`{name}` must be a 1-D sequence of hashable ids. "
            f"Received: {name} of type {type(values).__name__}"
        )
    if array.ndim != 1:
        raise ValueError(
            f"`{name}` must be 1-D. Received: {name} with shape {array.shape}"
        )
    if array.dtype.kind == "f":
        missing = np.flatnonzero(np.isnan(array))
        if len(missing):
            raise _missing_id(name, array, missing[0])
        raise TypeError(
            f"`{name}` must hold integer or string ids, not floats. "
            f"Received: {name} with dtype {array.dtype}"
        )
    if array.dtype.kind == "O":
        for position, value in enumerate(array):
            if not isinstance(value, Hashable):
                raise TypeError(
                    f"`{name}` must hold hashable ids. Received: "
                    f"{name} containing {value!r}"
                )
            if _is_missing(value):
                raise _missing_id(name, array, position)
    return array


def _is_missing(value: Any) -> bool:
    """None, NaN, NaT or pandas' NA: a missing id, never a real one."""
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN, NaT
    except (TypeError, ValueError):
        return True  # pandas.NA: its comparisons are NA, not a bool


def _missing_id(name: str, array: np.ndarray, position: int) -> ValueError:
    count = sum(_is_missing(value) for value in array.tolist())
    return ValueError(
        f"`{name}` must hold an id for every event; it has {count} missing "
        f"(None or NaN), the first at position {int(position)}: "
        f"{array[position]!r}. Drop those events (e.g. "
        "df.dropna(subset=[...])) or give them an id. Received: "
        f"{name} of dtype {array.dtype}"
    )


def vocabulary(ids: Any) -> np.ndarray:
    """The sorted distinct ids (first-seen order for unsortable mixes).

    Args:
        ids: 1-D array-like of hashable ids.

    Returns:
        A 1-D numpy array of the distinct ids.
    """
    array = _as_id_array("ids", ids)
    if array.dtype.kind != "O":
        return np.unique(array)
    try:
        unique = sorted(set(array.tolist()))
    except TypeError:
        unique = list(dict.fromkeys(array.tolist()))
    out = np.empty(len(unique), dtype=object)
    for position, value in enumerate(unique):
        out[position] = value
    return out


def lookup(
    vocab: np.ndarray, ids: Any, *, name: str = "ids", unknown: str = "error"
) -> np.ndarray:
    """Maps ids to their positions in `vocab`.

    Args:
        vocab: np.ndarray. A vocabulary from `vocabulary`.
        ids: 1-D array-like of ids.
        name: str. The argument name used in errors.
        unknown: str. `"error"` raises on ids not in `vocab`; `"ignore"`
            maps them to -1.

    Returns:
        int64 positions (-1 for unknown ids when `unknown="ignore"`).

    Raises:
        ValueError: on unknown ids when `unknown="error"`.
    """
    array = _as_id_array(name, ids)
    if vocab.dtype.kind != "O" and array.dtype.kind != "O":
        same_kind = (vocab.dtype.kind in "iu") == (array.dtype.kind in "iu")
        if same_kind and len(vocab):
            pos = np.searchsorted(vocab, array)
            pos = np.minimum(pos, len(vocab) - 1)
            found = vocab[pos] == array
            positions = np.where(found, pos, -1).astype(np.int64)
        else:
            positions = np.full(len(array), -1, dtype=np.int64)
    else:
        index = {value: i for i, value in enumerate(vocab.tolist())}
        positions = np.fromiter(
            (index.get(value, -1) for value in array.tolist()),
            dtype=np.int64,
            count=len(array),
        )
    if unknown == "error" and (positions < 0).any():
        missing = array[positions < 0][:5].tolist()
        raise ValueError(
            f"`{name}` must only hold ids seen in `fit`. Received unknown "
            f"ids: {missing}{' ...' if (positions < 0).sum() > 5 else ''}"
        )
    return positions


def check_weights(weights: Any, length: int) -> np.ndarray:
    """Validates interaction weights: finite, non-negative, one per event.

    Args:
        weights: array-like of numbers or None (all ones).
        length: int. The number of events.

    Returns:
        float32 weights.

    Raises:
        TypeError: if the weights are not numeric.
        ValueError: on a length mismatch, NaN/inf or a negative weight.
    """
    if weights is None:
        return np.ones(length, dtype=np.float32)
    array = np.asarray(weights)
    if array.dtype.kind not in "biuf":
        raise TypeError(
            "`weights` must be numeric. "
            f"Received: weights with dtype {array.dtype}"
        )
    if array.shape != (length,):
        raise ValueError(
            "`weights` must have one value per interaction, shape "
            f"({length},). Received: weights with shape {array.shape}"
        )
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ValueError("`weights` must be finite. Received: NaN or inf")
    if (array < 0).any():
        raise ValueError(
            "`weights` must be >= 0 (implicit feedback: larger means "
            f"stronger). Received: weights with minimum {array.min()}"
        )
    return array


def encode_interactions(
    user_ids: Any,
    item_ids: Any,
    weights: Any = None,
    *,
    users: np.ndarray | None = None,
    items: np.ndarray | None = None,
    unknown: str = "error",
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Builds a users x items CSR matrix from interaction triples.

    Repeated (user, item) pairs are summed; zero weights are dropped.

    Args:
        user_ids: 1-D array-like of hashable ids. The user of each event.
        item_ids: 1-D array-like of hashable ids. The item of each event.
        weights: 1-D array-like of non-negative numbers, or None (1.0).
        users: np.ndarray or None. A fixed user vocabulary (e.g. the one
            of a training set); None builds it from `user_ids`.
        items: np.ndarray or None. A fixed item vocabulary.
        unknown: str. With fixed vocabularies, `"error"` raises on ids
            outside them and `"ignore"` drops those events.

    Returns:
        `(matrix, users, items)`: a float32 CSR matrix of shape
        `(len(users), len(items))` and the two vocabularies (row and
        column i belongs to `users[i]` / `items[i]`).

    Raises:
        TypeError: if ids are not 1-D sequences of hashable values.
        ValueError: on length mismatches, negative weights or unknown ids.

    Example:
    ```python
    matrix, users, items = encode_interactions(
        ["ann", "ann", "bob"], ["x", "y", "x"]
    )
    matrix.toarray()  # [[1, 1], [1, 0]]
    ```
    """
    _validation.check_choice("unknown", unknown, ("error", "ignore"))
    user_array = _as_id_array("user_ids", user_ids)
    item_array = _as_id_array("item_ids", item_ids)
    if len(user_array) != len(item_array):
        raise ValueError(
            "`user_ids` and `item_ids` must have the same length. Received: "
            f"{len(user_array)} user ids and {len(item_array)} item ids"
        )
    data = check_weights(weights, len(user_array))
    users = vocabulary(user_array) if users is None else users
    items = vocabulary(item_array) if items is None else items
    rows = lookup(users, user_array, name="user_ids", unknown=unknown)
    cols = lookup(items, item_array, name="item_ids", unknown=unknown)
    keep = (rows >= 0) & (cols >= 0) & (data > 0)
    matrix = sp.csr_matrix(
        (data[keep], (rows[keep], cols[keep])),
        shape=(len(users), len(items)),
        dtype=np.float32,
    )
    matrix.sum_duplicates()
    return matrix, users, items


def _user_codes(user_ids: Any) -> np.ndarray:
    users = _as_id_array("user_ids", user_ids)
    return lookup(vocabulary(users), users, name="user_ids")


def random_split(
    user_ids: Any, *, test_fraction: float = 0.2, seed: int | None = 0
) -> np.ndarray:
    """Per-user random split: a fraction of each user's events for testing.

    Each user with at least two events keeps at least one in training;
    `round(test_fraction * n)` of their `n` events (at most `n - 1`) go to
    the test set.

    Args:
        user_ids: 1-D array-like of hashable ids, one per event.
        test_fraction: float in [0, 1). The share of each user's events
            held out.
        seed: int or None. Random seed.

    Returns:
        A boolean mask over the events: True marks a test event.

    Example:
    ```python
    test = random_split(ratings.user_ids, test_fraction=0.2)
    train_set, test_set = ratings.subset(~test), ratings.subset(test)
    ```
    """
    fraction = _validation.check_fraction("test_fraction", test_fraction)
    codes = _user_codes(user_ids)
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(codes)), codes))
    sorted_codes = codes[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_codes)) + 1]
    counts = np.diff(np.r_[starts, len(order)])
    n_test = np.minimum(np.rint(fraction * counts).astype(np.int64), counts - 1)
    rank = np.arange(len(order)) - np.repeat(starts, counts)
    test_sorted = rank < np.repeat(n_test, counts)
    mask = np.zeros(len(order), dtype=bool)
    mask[order] = test_sorted
    return mask


def leave_last_n_out(
    user_ids: Any, timestamps: Any, *, n: int = 5, min_train: int = 1
) -> np.ndarray:
    """Per-user temporal split: each user's `n` latest events for testing.

    Users with fewer than `n + min_train` events keep all of them in
    training. Ties in time are broken by position (later rows count as
    later), so the split is deterministic.

    Args:
        user_ids: 1-D array-like of hashable ids, one per event.
        timestamps: 1-D array-like of numbers, one per event.
        n: int >= 1. Events held out per user.
        min_train: int >= 1. Events a user must keep in training to be
            tested at all.

    Returns:
        A boolean mask over the events: True marks a test event.

    Raises:
        ValueError: if the columns differ in length or `n` < 1.

    Example:
    ```python
    test = leave_last_n_out(ratings.user_ids, ratings.timestamps, n=5)
    ```
    """
    n = _validation.check_positive_int("n", n)
    min_train = _validation.check_positive_int("min_train", min_train)
    codes = _user_codes(user_ids)
    times = np.asarray(timestamps)
    if times.shape != (len(codes),) or times.dtype.kind not in "iuf":
        raise ValueError(
            "`timestamps` must be numbers, one per event, shape "
            f"({len(codes)},). Received: timestamps with shape "
            f"{times.shape} and dtype {times.dtype}"
        )
    order = np.lexsort((np.arange(len(codes)), times, codes))
    sorted_codes = codes[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_codes)) + 1]
    counts = np.diff(np.r_[starts, len(order)])
    rank_from_end = np.repeat(starts + counts, counts) - np.arange(len(order))
    eligible = np.repeat(counts >= n + min_train, counts)
    test_sorted = eligible & (rank_from_end <= n)
    mask = np.zeros(len(order), dtype=bool)
    mask[order] = test_sorted
    return mask


def is_integer_like(value: Any) -> bool:
    """Whether `value` is an integer scalar (not a bool)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def kfold_split(
    n_events: int, *, n_splits: int = 5, seed: int | None = 0
) -> np.ndarray:
    """Assigns each event to one of `n_splits` random folds of equal size.

    The same `(n_events, n_splits, seed)` always gives the same folds, so
    models evaluated one after the other see identical splits (what
    surprise's `KFold(random_state=...)` gives).

    Args:
        n_events: int >= n_splits. The number of events.
        n_splits: int >= 2. The number of folds.
        seed: int or None. Random seed.

    Returns:
        int64 fold number per event; fold f is the test set of split f.

    Raises:
        ValueError: if `n_splits` < 2 or there are fewer events than folds.

    Example:
    ```python
    folds = kfold_split(len(ratings), n_splits=5, seed=0)
    train, test = ratings.subset(folds != 0), ratings.subset(folds == 0)
    ```
    """
    n_splits = _validation.check_positive_int("n_splits", n_splits, minimum=2)
    n_events = _validation.check_positive_int("n_events", n_events, minimum=0)
    if n_events < n_splits:
        raise ValueError(
            f"`n_events` must be at least n_splits={n_splits}. "
            f"Received: n_events={n_events}"
        )
    order = np.random.default_rng(seed).permutation(n_events)
    folds = np.empty(n_events, dtype=np.int64)
    for fold, part in enumerate(np.array_split(order, n_splits)):
        folds[part] = fold
    return folds


def temporal_split(
    timestamps: Any, *, test_fraction: float = 0.2
) -> np.ndarray:
    """Global time split: the latest `test_fraction` of events for testing.

    Everything before a cut-off time trains, everything after tests (ties
    broken by position), as a model deployed at that time would face. For
    a per-user split by time see `leave_last_n_out`; per user at random,
    `random_split`.

    Args:
        timestamps: 1-D array-like of numbers, one per event.
        test_fraction: float in (0, 1). The share of events held out.

    Returns:
        A boolean mask over the events: True marks a test event.

    Raises:
        ValueError: on non-numeric timestamps or a fraction out of range.

    Example:
    ```python
    test = temporal_split(ratings.timestamps, test_fraction=0.2)
    ```
    """
    fraction = _validation.check_fraction("test_fraction", test_fraction)
    times = np.asarray(timestamps)
    if times.ndim != 1 or times.dtype.kind not in "iuf":
        raise ValueError(
            "`timestamps` must be a 1-D array of numbers. Received: shape "
            f"{times.shape}, dtype {times.dtype}"
        )
    order = np.lexsort((np.arange(len(times)), times))
    n_test = int(round(fraction * len(times)))
    mask = np.zeros(len(times), dtype=bool)
    if n_test:
        mask[order[-n_test:]] = True
    return mask
