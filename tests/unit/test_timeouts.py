"""timeouts.WaitTimer: one timer per connection still times out each wait, and only the wait."""

from __future__ import annotations

import asyncio

import pytest

from emailrelay.timeouts import WaitTimer


def test_a_wait_that_lasts_too_long_raises_timeout_error():
    async def main() -> float:
        timer = WaitTimer(0.05)
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(TimeoutError):
            await timer.wait(loop.create_future())
        timer.close()
        return loop.time() - start

    assert asyncio.run(main()) >= 0.05


def test_many_short_waits_never_add_up_to_a_timeout():
    async def main() -> list[int]:
        timer = WaitTimer(0.05)
        results = [await timer.wait(asyncio.sleep(0.02, result=n)) for n in range(10)]  # 0.2 s in all
        await asyncio.sleep(0.08)  # between waits: no wait to time out
        results.append(await timer.wait(asyncio.sleep(0.01, result=10)))
        timer.close()
        return results

    assert asyncio.run(main()) == list(range(11))


def test_the_timer_rearms_for_a_wait_that_began_after_it_was_armed():
    async def main() -> None:
        timer = WaitTimer(0.1)
        await timer.wait(asyncio.sleep(0.07))
        # armed for 0.1 s after the first wait began; this wait begins 0.07 s in and must get its own 0.1 s
        assert await timer.wait(asyncio.sleep(0.06, result="ok")) == "ok"
        with pytest.raises(TimeoutError):
            await timer.wait(asyncio.sleep(1))
        timer.close()

    asyncio.run(main())


def test_a_cancel_from_outside_stays_a_cancel():
    async def main() -> None:
        timer = WaitTimer(5)
        task = asyncio.create_task(timer.wait(asyncio.sleep(10)))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        timer.close()

    asyncio.run(main())


def test_the_task_carries_on_after_a_timeout():
    async def main() -> str:
        timer = WaitTimer(0.03)
        with pytest.raises(TimeoutError):
            await timer.wait(asyncio.sleep(1))
        await asyncio.sleep(0.05)  # not cancelled again
        result = await timer.wait(asyncio.sleep(0.01, result="after"))
        timer.close()
        return result

    assert asyncio.run(main()) == "after"


@pytest.mark.parametrize("seconds", [None, 0])
def test_no_timeout(seconds):
    async def main() -> str:
        timer = WaitTimer(seconds)
        return await timer.wait(asyncio.sleep(0.05, result="done"))

    assert asyncio.run(main()) == "done"
