import asyncio
import contextlib
import functools

import pytest

from app.admission import Admission
from app.errors import Busy, ImageTooLarge


def run(coro):
    return asyncio.run(coro)


def in_loop(test):
    """An async test run to completion on a fresh event loop."""

    @functools.wraps(test)
    def run_test():
        run(test())

    return run_test


@in_loop
async def test_reserve_and_release_returns_budget():
    adm = Admission(100, wait_s=0.1)
    async with adm.reserve(60) as held:
        assert adm.in_use == 60
        await held.resize(90)
        assert adm.in_use == 90
        await held.resize(10)
        assert adm.in_use == 10
    assert adm.in_use == 0
    assert adm.peak_in_use == 90


@in_loop
async def test_job_that_never_fits_is_413_at_once():
    adm = Admission(100, wait_s=5)
    with pytest.raises(ImageTooLarge):
        async with adm.reserve(101):
            pass
    async with adm.reserve(10) as held:
        with pytest.raises(ImageTooLarge):
            await held.resize(101)
    assert adm.in_use == 0


@in_loop
async def test_over_budget_waits_then_503_with_retry_after():
    adm = Admission(100, wait_s=0.2, retry_after_s=7)
    async with adm.reserve(80):
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(Busy) as err:
            async with adm.reserve(30):
                pass
        assert 0.15 <= loop.time() - t0 < 2
        assert err.value.headers["Retry-After"] == "7"
        assert err.value.status == 503
    assert adm.in_use == 0
    assert adm.rejected == 1


@in_loop
async def test_waiter_is_admitted_when_room_frees():
    adm = Admission(100, wait_s=2)
    order = []

    async def first():
        async with adm.reserve(80):
            order.append("first in")
            await asyncio.sleep(0.1)
        order.append("first out")

    async def second():
        await asyncio.sleep(0.01)
        async with adm.reserve(50):
            order.append("second in")
            assert adm.in_use == 50

    await asyncio.gather(first(), second())
    assert order == ["first in", "first out", "second in"]
    assert adm.in_use == 0


@in_loop
async def test_many_concurrent_jobs_never_exceed_budget():
    adm = Admission(100, wait_s=0.05)
    outcomes = {"ok": 0, "busy": 0}

    async def job(n):
        try:
            async with adm.reserve(30) as held:
                assert adm.in_use <= 100
                await asyncio.sleep(0.01)
                await held.resize(20 + n % 15)
                assert adm.in_use <= 100
                await asyncio.sleep(0.01)
            outcomes["ok"] += 1
        except Busy:
            outcomes["busy"] += 1

    await asyncio.gather(*(job(i) for i in range(60)))
    assert adm.in_use == 0
    assert adm.peak_in_use <= 100
    assert outcomes["ok"] > 0 and outcomes["ok"] + outcomes["busy"] == 60


@in_loop
async def test_data_pool_never_waits_and_is_released():
    adm = Admission(100, wait_s=5, data_budget_bytes=50)
    async with adm.reserve() as a:
        a.hold_data(40)
        async with adm.reserve() as b:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            with pytest.raises(Busy):
                b.hold_data(20)
            assert loop.time() - t0 < 0.1  # refused at once, not after wait_s
            b.hold_data(10)
            assert adm.data_in_use == 50
        a.hold_data(5)
        assert adm.data_in_use == 5
    assert (adm.in_use, adm.data_in_use) == (0, 0)


@in_loop
async def test_jobs_holding_downloads_do_not_deadlock_waiting_for_work():
    """Four jobs hold their sources, each wants most of the work pool: they take turns."""
    adm = Admission(100, wait_s=5, data_budget_bytes=100)
    done = []

    async def job(i):
        async with adm.reserve() as held:
            held.hold_data(20)  # the downloaded source
            await asyncio.sleep(0)
            await held.resize(90)  # the conversion's peak
            assert adm.in_use <= 100
            await asyncio.sleep(0.02)
            await held.resize(5)
            done.append(i)

    await asyncio.wait_for(asyncio.gather(*(job(i) for i in range(4))), timeout=3)
    assert sorted(done) == [0, 1, 2, 3]
    assert adm.rejected == 0
    assert (adm.in_use, adm.data_in_use) == (0, 0)


class DeadlineLoop(asyncio.SelectorEventLoop):
    """An event loop that records when each timer it schedules is due."""

    def __init__(self):
        super().__init__()
        self.due: list[float] = []

    def call_at(self, when, callback, *args, context=None):
        self.due.append(when)
        return super().call_at(when, callback, *args, context=context)


def test_wait_for_room_is_bounded_by_admission_wait_exactly():
    """The waiter's timers never reach past ADMISSION_WAIT (a bound 3x too long fails)."""
    loop = DeadlineLoop()
    wait_s = 0.3

    async def scenario():
        adm = Admission(100, wait_s=wait_s)
        async with adm.reserve(80):
            start = loop.time()
            loop.due.clear()
            with pytest.raises(Busy):
                async with adm.reserve(30):
                    pass
            return start

    try:
        start = loop.run_until_complete(scenario())
    finally:
        loop.close()
    assert loop.due, "the waiter scheduled no timeout"
    # Scheduling happens a few microseconds after `start`; allow 50 ms of slack.
    assert max(loop.due) <= start + wait_s + 0.05
    assert max(loop.due) >= start + wait_s - 0.05


def test_shrinking_job_wakes_a_waiter_at_once():
    """A job that shrinks (its conversion is over) lets a waiter in without a timeout."""

    async def scenario():
        adm = Admission(100, wait_s=60)
        admitted = asyncio.Event()

        async def waiter():
            async with adm.reserve(50):
                admitted.set()

        async with adm.reserve(80) as big:
            task = asyncio.create_task(waiter())
            for _ in range(5):
                await asyncio.sleep(0)
            assert not admitted.is_set()
            await big.resize(10)  # shrink, but keep the reservation
            for _ in range(20):  # a few loop turns, no clock involved
                await asyncio.sleep(0)
                if admitted.is_set():
                    break
            woke = admitted.is_set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Busy):
                await task
        return woke

    assert run(scenario())


@in_loop
async def test_try_resize_grows_only_without_waiting_and_shrinking_wakes():
    adm = Admission(100, wait_s=60)
    async with adm.reserve(30) as a, adm.reserve(40) as b:
        assert a.try_resize(60)  # 60 + 40 fits exactly
        assert adm.in_use == 100
        assert not b.try_resize(41)  # would need waiting: refused, unchanged
        assert (b.nbytes, adm.in_use) == (40, 100)
        assert b.try_resize(10)  # shrinking always works
        assert adm.in_use == 70
        with pytest.raises(ImageTooLarge):
            a.try_resize(101)
    assert adm.in_use == 0
    assert adm.peak_in_use == 100
