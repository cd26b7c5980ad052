"""Memory-aware admission: every job accounts for the bytes it holds, per worker.

An e2-micro has 1 GB. Decoded images are far larger than their files, so the
number of concurrent requests says little about memory; bytes do. Each worker
process has two pools, and the split is what keeps it free of deadlock:

- the data pool (DOWNLOAD_BUDGET) counts bytes that already exist: source
  downloads as they stream in, finished pages. It never waits: no room means
  503 at once, so nothing ever waits while holding data-pool bytes it could
  give back;
- the work pool (WORKER_MEMORY_BUDGET) counts a conversion's estimated peak.
  A job may wait for it (ADMISSION_WAIT) while holding only data-pool bytes,
  and work-pool holders never wait for anything, so they always finish.

With one pool, jobs holding their downloads while waiting to grow into a big
conversion blocked each other until they all timed out. A job bigger than a
whole pool gets 413 at once. All accounting happens on the event loop, so no
lock is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from app.errors import Busy, ImageTooLarge


class Reservation:
    """What one job holds: `work` bytes (may wait to grow) and `data` bytes (never waits)."""

    def __init__(self, admission: Admission):
        self._admission = admission
        self.nbytes = 0  # work pool
        self.data = 0  # data pool

    async def resize(self, nbytes: int) -> None:
        """Hold `nbytes` of the work pool; waits for room up to ADMISSION_WAIT."""
        await self._admission._resize_work(self, nbytes)

    def try_resize(self, nbytes: int) -> bool:
        """Hold `nbytes` of the work pool if that needs no waiting; False leaves it as is.

        For a job that already holds work-pool bytes: it must never wait while
        holding them (see the module docstring), so it gives them back first.
        """
        return self._admission._try_resize_work(self, nbytes)

    def hold_data(self, nbytes: int) -> None:
        """Hold `nbytes` of the data pool; growing past it answers 503 at once."""
        self._admission._resize_data(self, nbytes)


class Admission:
    def __init__(
        self,
        budget_bytes: int,
        wait_s: float = 1.0,
        retry_after_s: int = 2,
        data_budget_bytes: int | None = None,
    ):
        self.budget = budget_bytes
        self.data_budget = data_budget_bytes if data_budget_bytes is not None else budget_bytes
        self.wait_s = wait_s
        self.retry_after_s = retry_after_s
        self.in_use = 0
        self.data_in_use = 0
        self.peak_in_use = 0
        self.rejected = 0
        self._changed = asyncio.Condition()

    def _check_fits(self, nbytes: int) -> None:
        if nbytes > self.budget:
            raise ImageTooLarge("The image needs more memory to convert than this service allows.")

    async def _wait_for(self, extra: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        async with self._changed:
            while self.in_use + extra > self.budget:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    self.rejected += 1
                    raise Busy(self.retry_after_s)
                # A timed-out wait() re-acquires the lock before raising, so the
                # loop re-checks with the lock held and never leaks a reservation.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)
            self.in_use += extra
            self.peak_in_use = max(self.peak_in_use, self.in_use)

    def _wake(self) -> None:
        async def notify() -> None:
            async with self._changed:
                self._changed.notify_all()

        asyncio.get_running_loop().create_task(notify())

    async def _resize_work(self, reservation: Reservation, nbytes: int) -> None:
        self._check_fits(nbytes)
        delta = nbytes - reservation.nbytes
        if delta > 0:
            await self._wait_for(delta)
        elif delta < 0:
            self.in_use += delta
            self._wake()
        reservation.nbytes = nbytes

    def _try_resize_work(self, reservation: Reservation, nbytes: int) -> bool:
        self._check_fits(nbytes)
        delta = nbytes - reservation.nbytes
        if delta > 0:
            if self.in_use + delta > self.budget:
                return False
            self.in_use += delta
            self.peak_in_use = max(self.peak_in_use, self.in_use)
        elif delta < 0:
            self.in_use += delta
            self._wake()
        reservation.nbytes = nbytes
        return True

    def _resize_data(self, reservation: Reservation, nbytes: int) -> None:
        delta = nbytes - reservation.data
        if delta > 0 and self.data_in_use + delta > self.data_budget:
            self.rejected += 1
            raise Busy(self.retry_after_s)
        self.data_in_use += delta
        reservation.data = nbytes

    @asynccontextmanager
    async def reserve(self, nbytes: int = 0) -> AsyncIterator[Reservation]:
        """A job's reservation, starting with `nbytes` of work; all released at the end."""
        reservation = Reservation(self)
        try:
            if nbytes:
                await reservation.resize(nbytes)
            yield reservation
        finally:
            self.in_use -= reservation.nbytes
            self.data_in_use -= reservation.data
            reservation.nbytes = reservation.data = 0
            self._wake()
