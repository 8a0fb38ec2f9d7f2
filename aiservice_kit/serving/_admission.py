"""Admission control: what one model accepts per request and at once.

Memory, not CPU, is what a few hostile requests exhaust: a 360 KB
request of 60,000 recommender rows makes the graph build a `[rows,
items]` score matrix, and a 16 MiB JSON body becomes hundreds of MB of
Python lists while it is decoded. So every model has three limits,
checked before the expensive step they guard:

- `max_instances_per_request` (413): counted before any tensor is built;
  a large JSON body is counted on its bytes before it is parsed
  (`count_instances_in_json`), since parsing a 480 KB body of 60,000
  rows holds the GIL for 15-30 ms;
- `max_inflight_bytes` (429): request bytes of the model's calls (every
  protocol) being read or decoded at once, reserved from Content-Length
  before the body is read (and counted as a chunked body streams in); one
  caller's calls hold at most half of it while another of theirs is in
  flight;
- `max_inflight_instances` (429): instances of the model's calls between
  decoding and their reply.

A refusal is a `ServingError` whose message names the limit and its
value; 429s carry `Retry-After: 1`.
"""

import dataclasses
import threading
from typing import Any

import numpy as np

from aiservice_kit._validation import check_positive_int
from aiservice_kit.serving._errors import ServingError
from aiservice_kit.serving.config import DEFAULT_MAX_INFLIGHT_BYTES
from aiservice_kit.serving.config import DEFAULT_MAX_INFLIGHT_INSTANCES
from aiservice_kit.serving.config import DEFAULT_MAX_INSTANCES_PER_REQUEST

#: The part of a model's `max_inflight_bytes` one caller's calls may hold
#: while they have another in flight (`Admission.reserve_bytes`).
CALLER_SHARE = 0.5

#: The per-model settings of the config file's `[models.NAME]` tables.
LIMIT_FIELDS = (
    "max_instances_per_request",
    "max_inflight_instances",
    "max_inflight_bytes",
)


@dataclasses.dataclass(frozen=True)
class AdmissionLimits:
    """The admission limits of one model (see the module docstring).

    Attributes:
        max_instances_per_request: int. More instances in one call: 413.
        max_inflight_instances: int. Instances of calls being decoded or
            run at once; beyond: 429. At least `max_instances_per_request`.
        max_inflight_bytes: int. Bytes of predict bodies being read or
            decoded at once; beyond: 429 (a lone call over it: 413).
    """

    max_instances_per_request: int = DEFAULT_MAX_INSTANCES_PER_REQUEST
    max_inflight_instances: int = DEFAULT_MAX_INFLIGHT_INSTANCES
    max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES

    def __post_init__(self) -> None:
        for name in LIMIT_FIELDS:
            check_positive_int(name, getattr(self, name))
        if self.max_inflight_instances < self.max_instances_per_request:
            raise ValueError(
                "`max_inflight_instances` must be at least "
                "`max_instances_per_request`, or no request of the largest "
                "size could ever run. Received: max_inflight_instances="
                f"{self.max_inflight_instances}, max_instances_per_request="
                f"{self.max_instances_per_request}"
            )


def count_instances(document: dict[str, Any]) -> int:
    """The instances a predict request holds, from its JSON, in O(1).

    `instances` counts its list items; `inputs` the first axis of its
    (first) value. Shapes are checked later, while decoding: this only
    bounds the work before it starts.
    """
    value = document.get("instances", document.get("inputs"))
    if isinstance(value, dict) and value and "b64" not in value:
        value = next(iter(value.values()))
    return len(value) if isinstance(value, list) else 1


#: JSON's structural characters, and how each changes the nesting depth.
_STRUCTURAL = np.zeros(256, bool)
_STRUCTURAL[[ord(c) for c in "[]{},:"]] = True
_DEPTH_CHANGE = np.zeros(256, np.int32)
_DEPTH_CHANGE[[ord("["), ord("{")]] = 1
_DEPTH_CHANGE[[ord("]"), ord("}")]] = -1
#: Give up (and let the parse count) past this many keys in one object.
_MAX_SCANNED_KEYS = 64
#: `_JsonStructure.members`' index for a value that is not an array or
#: object (or is missing).
_SCALAR = -1


def count_instances_in_json(data: bytes) -> int | None:
    """`count_instances` of a JSON predict body, read from its bytes.

    Vectorized with numpy, a few milliseconds for a body whose parse
    would build hundreds of thousands of Python objects. Exact for valid
    JSON whose `instances` (or `inputs`, or the first value of an `inputs`
    object) is a list. Anything else (a scalar, b64, an escaped key, a
    body whose brackets or quotes don't balance) gives None, and the
    parsed document is counted instead.

    Args:
        data: bytes. The request body.

    Returns:
        int or None: the instances, or None when the bytes alone don't say.

    Example:
    ```python
    count_instances_in_json(b'{"instances": [[1, 2], [3, 4]]}')  # 2
    ```
    """
    structure = _JsonStructure.scan(data)
    if structure is None:
        return None
    top = structure.members(0)
    if top is None:
        return None
    value = top.get(b'"instances"', top.get(b'"inputs"', _SCALAR))
    if value != _SCALAR and structure.opens_with(value, "{"):
        columns = structure.members(value)
        if columns is None or not columns or b'"b64"' in columns:
            return None
        value = next(iter(columns.values()))
    if value == _SCALAR or not structure.opens_with(value, "["):
        return None
    return structure.count_items(value)


class _JsonStructure:
    """The structural characters of a JSON text outside its strings, with
    the nesting depth before each (`count_instances_in_json`'s scan)."""

    def __init__(self, data: bytes, positions: np.ndarray) -> None:
        self.data = data
        self.positions = positions
        self.chars = np.frombuffer(data, np.uint8)[positions]
        change = _DEPTH_CHANGE[self.chars]
        self.depth_after = np.cumsum(change)
        self.depth_before = self.depth_after - change

    @classmethod
    def scan(cls, data: bytes) -> "_JsonStructure | None":
        """The structure of `data`, or None unless it is one balanced
        object."""
        raw = np.frombuffer(data, np.uint8)
        quotes = _unescaped_quotes(raw)
        if quotes.size % 2:
            return None
        positions = np.flatnonzero(_STRUCTURAL[raw])
        # A character is inside a string when an odd number of quotes
        # come before it.
        positions = positions[np.searchsorted(quotes, positions) % 2 == 0]
        if positions.size < 2:
            return None
        structure = cls(data, positions)
        if (
            data[: positions[0]].strip()
            or data[positions[-1] + 1 :].strip()
            or structure.chars[0] != ord("{")
            or structure.depth_after.min() < 0
            or structure.depth_after[-1] != 0
        ):
            return None
        return structure

    def opens_with(self, index: int, bracket: str) -> bool:
        return self.chars[index] == ord(bracket)

    def _inside(self, opening: int) -> tuple[np.ndarray, int]:
        """Indexes of the structural characters one level inside the array
        or object opened at `opening` (its separators, and the brackets
        that open its members), and its closing index."""
        depth = self.depth_before[opening]
        after = self.depth_after[opening + 1 :]
        closing = opening + 1 + int(np.argmax(after == depth))
        span = np.arange(opening + 1, closing)
        direct = span[self.depth_before[opening + 1 : closing] == depth + 1]
        return direct, closing

    def members(self, opening: int) -> dict[bytes, int] | None:
        """Quoted key -> index of its value's opening bracket (or
        `_SCALAR`) of the object opened at `opening`; a repeated key
        keeps its first place and last value, as in a parse. None past
        `_MAX_SCANNED_KEYS` keys or for an escaped key (its bytes are not
        its name)."""
        direct, _ = self._inside(opening)
        colons = direct[self.chars[direct] == ord(":")]
        if colons.size > _MAX_SCANNED_KEYS:
            return None
        found = {}
        for colon in colons.tolist():
            start, end = self.positions[colon - 1], self.positions[colon]
            key = self.data[start + 1 : end].strip()
            if b"\\" in key:
                return None
            # A repeated key keeps its first place and its last value.
            found[key] = self._value_after(colon)
        return found

    def _value_after(self, colon: int) -> int:
        """The index of the bracket opening the value after `colon`, or
        `_SCALAR`."""
        following = colon + 1
        gap = self.data[self.positions[colon] + 1 : self.positions[following]]
        if gap.strip() or self.chars[following] not in (ord("["), ord("{")):
            return _SCALAR
        return following

    def count_items(self, opening: int) -> int:
        """The items of the array opened at `opening`."""
        direct, closing = self._inside(opening)
        commas = np.count_nonzero(self.chars[direct] == ord(","))
        if commas:
            return int(commas) + 1
        start, end = self.positions[opening], self.positions[closing]
        return 1 if self.data[start + 1 : end].strip() else 0


def _unescaped_quotes(raw: np.ndarray) -> np.ndarray:
    """Positions of the quotes that open or close strings."""
    quotes = np.flatnonzero(raw == ord('"'))
    backslashes = np.flatnonzero(raw == ord("\\"))
    if backslashes.size == 0:
        return quotes
    # A quote is escaped when an odd run of backslashes ends right before it.
    run_ends = np.flatnonzero(np.diff(backslashes, append=-2) != 1)
    run_lengths = np.diff(run_ends, prepend=-1)
    escaped = backslashes[run_ends[run_lengths % 2 == 1]] + 1
    return np.setdiff1d(quotes, escaped, assume_unique=True)


class Admission:
    """The counters of one model, checked against its limits (thread-safe).

    Args:
        model: str. The model name (for messages).
        limits: AdmissionLimits.
    """

    def __init__(self, model: str, limits: AdmissionLimits) -> None:
        self.model = model
        self.limits = limits
        self.inflight_bytes = 0
        self.inflight_instances = 0
        self._bytes_by_caller: dict[str, int] = {}
        self._lock = threading.Lock()

    def _busy(self, what: str, limit: str, value: int) -> ServingError:
        return ServingError(
            f"Model '{self.model}' is busy: {what} would exceed "
            f"{limit}={value}; retry shortly.",
            429,
            {"Retry-After": "1"},
        )

    def reserve_bytes(self, size: int, caller: str | None = None) -> None:
        """Counts `size` more request bytes of a new call in flight.

        One caller's calls hold at most `CALLER_SHARE` of the model's
        `max_inflight_bytes` while others wait: a caller holding bytes
        already gets 429 for a call past that share, so a key that stalls
        large bodies cannot lock the model for everyone. A caller's first
        call may take up to the whole budget.

        Args:
            size: int. The call's declared body length.
            caller: str or None. Who calls (the credential presented, or
                the client's address); None skips the share.

        Raises:
            ServingError: 413 when `size` alone exceeds the limit, 429 when
                the calls in flight (or this caller's) leave no room.
        """
        limit = self.limits.max_inflight_bytes
        if size > limit:
            raise ServingError(
                f"Request body too large for model '{self.model}': "
                f"{size} bytes; max_inflight_bytes={limit}.",
                413,
            )
        self._hold(size, caller, new_call=True)

    def grow_bytes(self, size: int, caller: str | None = None) -> None:
        """Counts `size` more bytes of a call already admitted (a body
        streaming past its declared length): only the model's budget
        applies.

        Raises:
            ServingError: 429 when the calls in flight leave no room.
        """
        self._hold(size, caller, new_call=False)

    def _hold(self, size: int, caller: str | None, *, new_call: bool) -> None:
        """Adds `size` bytes for `caller`; the share binds a new call."""
        limit = self.limits.max_inflight_bytes
        with self._lock:
            if self.inflight_bytes + size > limit:
                raise self._busy(
                    f"{size} more request bytes", "max_inflight_bytes", limit
                )
            held = self._bytes_by_caller.get(caller, 0)
            share = int(limit * CALLER_SHARE)
            if new_call and caller is not None and held and held + size > share:
                raise ServingError(
                    f"Too many request bytes in flight from one caller for "
                    f"model '{self.model}': {held} held, {size} more would "
                    f"exceed {share} ({CALLER_SHARE:.0%} of "
                    f"max_inflight_bytes={limit}); retry once your calls "
                    "finish.",
                    429,
                    {"Retry-After": "1"},
                )
            self.inflight_bytes += size
            if caller is not None:
                self._bytes_by_caller[caller] = held + size

    def release_bytes(self, size: int, caller: str | None = None) -> None:
        """Returns bytes reserved with `reserve_bytes` or `grow_bytes`."""
        with self._lock:
            self.inflight_bytes -= size
            if caller is not None:
                left = self._bytes_by_caller.pop(caller, 0) - size
                if left > 0:
                    self._bytes_by_caller[caller] = left

    def reserve_instances(self, count: int) -> None:
        """Admits a call of `count` instances.

        Raises:
            ServingError: 413 over `max_instances_per_request`, 429 when
                the calls in flight leave no room.
        """
        if count < 0:  # a decoder's bug, not the client's: never admitted
            raise ValueError(f"instances must be >= 0; received {count}")
        limit = self.limits.max_instances_per_request
        if count > limit:
            raise ServingError(
                f"Too many instances for model '{self.model}': received "
                f"{count}; max_instances_per_request={limit}. Split the "
                "request.",
                413,
            )
        limit = self.limits.max_inflight_instances
        with self._lock:
            if self.inflight_instances + count > limit:
                raise self._busy(
                    f"{count} more instances", "max_inflight_instances", limit
                )
            self.inflight_instances += count

    def release_instances(self, count: int) -> None:
        """Returns instances admitted with `reserve_instances`."""
        with self._lock:
            self.inflight_instances -= count
