"""Answers from the serving threads to the event loop (`_handoff.Reply`),
and the ledger's undo of an admission whose caller stopped waiting."""

import asyncio
import threading
import time

import pytest

from aiservice_kit.serving._db import open_database
from aiservice_kit.serving._handoff import Reply
from aiservice_kit.serving._ledger import Ledger
from aiservice_kit.serving._ledger import Reservation
from aiservice_kit.serving._ledger import ReserveAsk


def _from_thread(fn, *args):
    thread = threading.Thread(target=fn, args=args)
    thread.start()
    thread.join()


def test_a_reply_carries_a_threads_answer_or_error_to_the_loop():
    async def main():
        answered = Reply()
        _from_thread(answered.set_result, 5)
        failed = Reply()
        _from_thread(failed.set_exception, ValueError("bad input"))
        with pytest.raises(ValueError, match="bad input"):
            await failed.wait(1.0)
        return await answered.wait(1.0)

    assert asyncio.run(main()) == 5


def test_an_answer_after_the_deadline_or_a_cancel_goes_to_on_late():
    async def main():
        late = []
        expired = Reply(on_late=late.append)
        with pytest.raises(TimeoutError):
            await expired.wait(0.01)
        assert not expired.wanted()  # the thread may skip the work now
        _from_thread(expired.set_result, "after the deadline")
        left = Reply(on_late=late.append)
        waiting = asyncio.ensure_future(left.wait())
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        _from_thread(left.set_result, "after the cancel")
        failed_late = Reply(on_late=late.append)
        failed_late.future.cancel()
        _from_thread(failed_late.set_exception, RuntimeError("nothing to undo"))
        await asyncio.sleep(0.05)  # the loop runs the hand-offs
        return late

    assert asyncio.run(main()) == ["after the deadline", "after the cancel"]


def test_an_admission_whose_caller_left_holds_no_reservation(tmp_path):
    # The caller goes away while its ask is in the admission transaction
    # (held up on the database lock): the reservation granted after it
    # left is released, so the key's quota is not held by a dead call.
    ledger = Ledger(open_database(tmp_path / "ledger.db"))
    ledger.start()
    released = []

    def release(answer):
        released.append(answer)
        ledger.release(answer.id)

    async def main():
        with ledger.database._lock:  # the database is busy
            asking = asyncio.ensure_future(
                ledger.admit(ReserveAsk("k", 3, 10), on_late=release)
            )
            await asyncio.sleep(0.05)  # the admission thread took the ask
            asking.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asking
        deadline = time.monotonic() + 5
        while not released and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    try:
        asyncio.run(main())
        assert len(released) == 1 and isinstance(released[0], Reservation)
        assert ledger.usage("k") == (0, 0)
    finally:
        ledger.close()
