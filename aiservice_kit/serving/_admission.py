"""Admission control: what one model accepts per request and at once.

Memory, not CPU, is what a few hostile requests exhaust: a 360 KB
request of 60,000 recommender rows makes the graph build a `[rows,
items]` score matrix, and a 16 MiB JSON body becomes hundreds of MB of
Python lists while it is decoded. So every model has three limits,
checked before the expensive step they guard:

- `max_instances_per_request` (413): counted on the parsed JSON with
  `len()`, before any tensor is built;
- `max_inflight_bytes` (429): request bytes of the model's predict calls
  being read or decoded at once, reserved from Content-Length before the
  body is read (and counted as a chunked body streams in);
- `max_inflight_instances` (429): instances of the model's calls between
  decoding and their reply.

A refusal is a `ServingError` whose message names the limit and its
value; 429s carry `Retry-After: 1`.
"""

import dataclasses
import threading
from typing import Any

from aiservice_kit._validation import check_positive_int
from aiservice_kit.serving._errors import ServingError
from aiservice_kit.serving.config import DEFAULT_MAX_INFLIGHT_BYTES
from aiservice_kit.serving.config import DEFAULT_MAX_INFLIGHT_INSTANCES
from aiservice_kit.serving.config import DEFAULT_MAX_INSTANCES_PER_REQUEST

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
        self._lock = threading.Lock()

    def _busy(self, what: str, limit: str, value: int) -> ServingError:
        return ServingError(
            f"Model '{self.model}' is busy: {what} would exceed "
            f"{limit}={value}; retry shortly.",
            429,
            {"Retry-After": "1"},
        )

    def reserve_bytes(self, size: int) -> None:
        """Counts `size` more request bytes in flight.

        Raises:
            ServingError: 413 when `size` alone exceeds the limit, 429 when
                the calls in flight leave no room.
        """
        limit = self.limits.max_inflight_bytes
        if size > limit:
            raise ServingError(
                f"Request body too large for model '{self.model}': "
                f"{size} bytes; max_inflight_bytes={limit}.",
                413,
            )
        with self._lock:
            if self.inflight_bytes + size > limit:
                raise self._busy(
                    f"{size} more request bytes", "max_inflight_bytes", limit
                )
            self.inflight_bytes += size

    def release_bytes(self, size: int) -> None:
        """Returns bytes reserved with `reserve_bytes`."""
        with self._lock:
            self.inflight_bytes -= size

    def reserve_instances(self, count: int) -> None:
        """Admits a call of `count` instances.

        Raises:
            ServingError: 413 over `max_instances_per_request`, 429 when
                the calls in flight leave no room.
        """
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
