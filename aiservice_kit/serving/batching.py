"""Dynamic batching: concurrent requests share one call of the signature.

One worker thread per served signature takes the first waiting request,
then every request already queued (up to `max_batch_size` instances), and
may wait up to `max_wait_ms` for more. Requests whose inputs agree on every
axis but the first are concatenated, run once, and the outputs are split
back. While a batch runs, the next one fills up by itself, so the batch
size adapts to the load with no waiting at low load.

The wait adapts to the arrivals. The worker keeps a moving average of the
requests per batch (how many callers it has been serving at once) and of
the time between two requests. Once the queue is empty it waits only while
its batch holds fewer requests than that average, and each time at most
two average gaps: a lone caller (concurrency 1) never waits, and a wait
ends as soon as requests stop coming. `max_wait_ms` bounds it all.
"""

import collections
import concurrent.futures
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from aiservice_kit._validation import check_positive_int
from aiservice_kit.serving._errors import ServingError
from aiservice_kit.serving._handoff import Reply
from aiservice_kit.serving.config import DEFAULT_MAX_BATCH_SIZE
from aiservice_kit.serving.config import DEFAULT_MAX_WAIT_MS
from aiservice_kit.serving.config import INLINE_RUN_LIMIT_MS
from aiservice_kit.serving.config import MAX_WAIT_MS_LIMIT

logger = logging.getLogger("aiservice_kit.serving")

#: Weight of the newest value in the moving averages of the wait.
_SMOOTHING = 0.2
#: `fn(inputs) -> outputs`, both dicts of numpy arrays by tensor name.
RunFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class BatchingConfig:
    """How requests to one model are batched.

    Attributes:
        max_batch_size: int. Most instances run in one call (a request
            larger than this runs alone).
        max_wait_ms: float. The longest the worker waits for more requests
            once it has one (it waits only while more callers are expected,
            see the module's note). 0 (the default) batches only what is
            already waiting: no added latency at low load, full batches
            under load.
    """

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_wait_ms: float = DEFAULT_MAX_WAIT_MS

    def __post_init__(self) -> None:
        check_positive_int("max_batch_size", self.max_batch_size)
        if (
            isinstance(self.max_wait_ms, bool)
            or not isinstance(self.max_wait_ms, (int, float))
            or not 0 <= self.max_wait_ms <= MAX_WAIT_MS_LIMIT
        ):
            raise ValueError(
                "`max_wait_ms` must be a number of milliseconds in "
                f"[0, {MAX_WAIT_MS_LIMIT}]. "
                f"Received: max_wait_ms={self.max_wait_ms!r}"
            )


def _resolve(
    future: concurrent.futures.Future | Reply,
    result: Any = None,
    error: BaseException | None = None,
) -> None:
    """Completes a future unless its caller gave up (client went away)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except concurrent.futures.InvalidStateError:
        pass


def _unloaded() -> ServingError:
    """The 503 of a request to a batcher that was closed."""
    return ServingError("This model version was unloaded.", 503)


def _size_of(inputs: dict[str, np.ndarray]) -> int:
    """Instances in a request (the first axis of its first input)."""
    first = next(iter(inputs.values()))
    return int(first.shape[0]) if first.ndim else 1


@dataclasses.dataclass
class _Item:
    inputs: dict[str, np.ndarray]
    size: int
    future: concurrent.futures.Future | Reply
    key: tuple = ()


class Batcher:
    """Runs `fn` on batches of concurrent requests in one worker thread.

    Args:
        fn: callable. `fn(inputs) -> outputs` on dicts of numpy arrays.
        config: BatchingConfig. Batch size and wait.
        name: str. Used for the thread name and logs.
        on_batch: callable or None. Called with each batch's instance count
            (for metrics).

    Example:
    ```python
    batcher = Batcher(lambda x: {"y": x["x"] * 2}, BatchingConfig())
    future = batcher.submit({"x": np.ones((1, 3))})
    future.result()["y"]
    batcher.close()
    ```
    """

    def __init__(
        self,
        fn: RunFn,
        config: BatchingConfig | None = None,
        *,
        name: str = "model",
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._fn = fn
        self._config = config or BatchingConfig()
        self._on_batch = on_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._carry: collections.deque = collections.deque()
        self._closed = False
        self._lock = threading.Lock()
        # The adaptive wait: mean requests per batch and seconds between
        # two submits (None until two have come).
        self._width = 1.0
        self._gap: float | None = None
        self._last_submit: float | None = None
        # Held while `fn` runs, by the worker or by a caller running alone
        # (`run(..., now_if_free=True)`): `fn` never runs twice at once.
        self._running = threading.Lock()
        # Moving average of the seconds one call of `fn` takes.
        self._run_s: float | None = None
        self._thread = threading.Thread(
            target=self._work, name=f"batcher-{name}", daemon=True
        )
        self._thread.start()

    def submit(
        self, inputs: dict[str, np.ndarray]
    ) -> concurrent.futures.Future:
        """Queues one request; the future resolves to its outputs.

        Args:
            inputs: dict of numpy arrays sharing their first axis.

        Returns:
            A `concurrent.futures.Future` of the output dict (or a
            `ServingError`).
        """
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._enqueue(inputs, future)
        return future

    def _may_run_here(self) -> bool:
        """Takes `_running` for a caller when running here is cheap."""
        run_s = self._run_s
        return (
            run_s is not None
            and run_s * 1000 <= INLINE_RUN_LIMIT_MS
            and self._queue.empty()
            and not self._carry
            and self._running.acquire(blocking=False)
        )

    def _enqueue(self, inputs: dict[str, np.ndarray], future: Any) -> None:
        size = _size_of(inputs)
        key = tuple(
            (name, array.dtype.str, array.shape[1:])
            for name, array in sorted(inputs.items())
        )
        with self._lock:
            if self._closed:
                _resolve(future, error=_unloaded())
                return
            now = time.monotonic()
            if self._last_submit is not None:
                gap = now - self._last_submit
                self._gap = (
                    gap
                    if self._gap is None
                    else self._gap + _SMOOTHING * (gap - self._gap)
                )
            self._last_submit = now
            self._queue.put(_Item(inputs, size, future, key))

    async def run(
        self, inputs: dict[str, np.ndarray], *, now_if_free: bool = False
    ) -> dict[str, np.ndarray]:
        """Runs one request in the next batch, from the event loop.

        `submit` with the worker's answer sent straight to the loop
        (`_handoff.Reply`): one hand-off instead of a chained future.

        Args:
            inputs: dict of numpy arrays sharing their first axis.
            now_if_free: bool. For a call alone on the server: run `fn`
                right here, without the worker's two hand-offs, when no
                request is queued, `fn` is not running, and its runs have
                lately taken at most `INLINE_RUN_LIMIT_MS` (a longer one
                would hold up the event loop's other connections).

        Returns:
            The request's outputs.

        Raises:
            ServingError: as `fn` raised it, or 503 once closed.
        """
        if now_if_free and self._may_run_here():
            try:
                if self._closed:
                    raise _unloaded()
                return self._call(inputs, _size_of(inputs))
            finally:
                self._running.release()
        reply = Reply()
        self._enqueue(inputs, reply)
        return await reply.wait()

    def close(self) -> None:
        """Finishes the queued requests, then stops the worker."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(None)

    def _next(self, timeout: float | None) -> Any:
        if self._carry:
            return self._carry.popleft()
        if timeout is None:
            return self._queue.get()
        if timeout <= 0:
            return self._queue.get_nowait()
        return self._queue.get(timeout=timeout)

    def _pause(self, requests: int, deadline: float) -> float:
        """Seconds to wait for one more request (<= 0: run the batch now).

        Waits only while the batch holds fewer requests than batches have
        lately held, at most two mean gaps between requests, and never
        past the deadline (`max_wait_ms` after the batch's first request).
        """
        gap = self._gap
        if gap is None or requests >= round(self._width):
            return 0.0
        return min(deadline - time.monotonic(), 2.0 * gap)

    def _work(self) -> None:
        limit = self._config.max_batch_size
        wait = self._config.max_wait_ms / 1000.0
        stopping = False
        while not stopping:
            first = self._next(None)
            if first is None:
                break
            batch = [first]
            size = first.size
            deadline = time.monotonic() + wait
            while size < limit:
                try:
                    item = self._next(0)
                except queue.Empty:
                    pause = self._pause(len(batch), deadline) if wait else 0
                    if pause <= 0:
                        break
                    try:
                        item = self._queue.get(timeout=pause)
                    except queue.Empty:
                        break
                if item is None:
                    stopping = True
                    break
                if size + item.size > limit:
                    self._carry.append(item)
                    break
                batch.append(item)
                size += item.size
            self._width += _SMOOTHING * (len(batch) - self._width)
            groups: dict[tuple, list[_Item]] = {}
            for item in batch:
                groups.setdefault(item.key, []).append(item)
            with self._running:
                for group in groups.values():
                    self._run_group(group)
        with self._running:
            while self._carry:
                item = self._carry.popleft()
                self._run_group([item])

    def _run_one(self, item: _Item) -> None:
        try:
            outputs = self._call(item.inputs, item.size)
        except BaseException as error:  # reported to the caller, never lost
            _resolve(item.future, error=error)
            return
        _resolve(item.future, result=outputs)

    def _call(
        self, inputs: dict[str, np.ndarray], size: int
    ) -> dict[str, np.ndarray]:
        if self._on_batch is not None:
            self._on_batch(size)
        started = time.perf_counter()
        try:
            return self._fn(inputs)
        finally:
            took = time.perf_counter() - started
            run_s = self._run_s
            self._run_s = (
                took if run_s is None else run_s + _SMOOTHING * (took - run_s)
            )

    def _run_group(self, group: list[_Item]) -> None:
        if len(group) == 1:
            self._run_one(group[0])
            return
        names = list(group[0].inputs)
        total = sum(item.size for item in group)
        try:
            merged = {
                name: np.concatenate([item.inputs[name] for item in group])
                for name in names
            }
            outputs = self._call(merged, total)
        except BaseException:  # isolate the request that failed
            for item in group:
                self._run_one(item)
            return
        if any(
            array.ndim == 0 or array.shape[0] != total
            for array in outputs.values()
        ):
            for item in group:  # outputs not per instance: run one by one
                self._run_one(item)
            return
        start = 0
        for item in group:
            stop = start + item.size
            _resolve(
                item.future,
                result={
                    name: array[start:stop] for name, array in outputs.items()
                },
            )
            start = stop
