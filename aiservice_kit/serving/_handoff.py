"""Answers from the serving threads to a call waiting on the event loop.

The model batcher, the admission thread and the ledger writer each run in
a thread of their own, and every Predict call waits for all three. Chaining
a `concurrent.futures.Future` to the loop (`asyncio.wrap_future`, with
`asyncio.wait_for` for a deadline) costs two futures, several callbacks and
about 25 us more per answer than resolving the loop's own future with one
`call_soon_threadsafe` (uvloop, this project's 2-core box: 42 against
17.5 us a round trip). `Reply` is that one hand-off, with the two things
the chained futures gave: a deadline, and an undo for an answer that comes
after its caller stopped waiting.
"""

import asyncio
from collections.abc import Callable
from typing import Any


class Reply:
    """A loop future that a worker thread resolves, in one hand-off.

    Create it on the event loop; hand it to the thread, which calls
    `set_result` or `set_exception` once; await `wait` on the loop.

    Args:
        on_late: callable or None. Called on the event loop with a result
            that arrives after the caller stopped waiting (cancelled, or
            past its deadline), to undo what the thread did.

    Example:
    ```python
    reply = Reply()
    work_queue.put((job, reply))  # the worker calls reply.set_result(...)
    result = await reply.wait(timeout=5.0)
    ```
    """

    def __init__(self, on_late: Callable[[Any], None] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future = self.loop.create_future()
        self._on_late = on_late

    def wanted(self) -> bool:
        """Whether the caller still waits (a thread may ask before work)."""
        return not self.future.done()

    def set_result(self, result: Any) -> None:
        """Sends the answer to the loop (from any thread)."""
        self._send(result, None)

    def set_exception(self, error: BaseException) -> None:
        """Sends an error to the loop (from any thread)."""
        self._send(None, error)

    def _send(self, result: Any, error: BaseException | None) -> None:
        try:
            self.loop.call_soon_threadsafe(self._settle, result, error)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    def _settle(self, result: Any, error: BaseException | None) -> None:
        future = self.future
        if future.done():  # the caller went away or its deadline passed
            if error is None and self._on_late is not None:
                self._on_late(result)
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    def _expire(self) -> None:
        if not self.future.done():
            self.future.set_exception(TimeoutError())

    async def wait(self, timeout: float | None = None) -> Any:
        """The thread's answer.

        Args:
            timeout: float or None. Seconds to wait at most.

        Returns:
            What the thread passed to `set_result`.

        Raises:
            TimeoutError: when `timeout` passed first (a later answer goes
                to `on_late`).
            Exception: what the thread passed to `set_exception`.
        """
        if timeout is None:
            return await self.future
        deadline = self.loop.call_later(timeout, self._expire)
        try:
            return await self.future
        finally:
            deadline.cancel()
