"""Memory-aware admission: each job reserves its estimated peak bytes first.

An e2-micro has 1 GB. Decoded images are far larger than their files, so the
number of concurrent requests says little about memory; bytes do. Each worker
process owns a budget (WORKER_MEMORY_BUDGET); a job waits briefly for room,
then gets 503 + Retry-After. A job that could never fit gets 413 at once.
All accounting happens on the event loop, so no lock is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from app.errors import Busy, ImageTooLarge


class Reservation:
    """Bytes held by one job; can grow once the job knows what it really needs."""

    def __init__(self, admission: Admission, nbytes: int):
        self._admission = admission
        self.nbytes = nbytes

    async def resize(self, nbytes: int) -> None:
        await self._admission._resize(self, nbytes)


class Admission:
    def __init__(self, budget_bytes: int, wait_s: float = 1.0, retry_after_s: int = 2):
        self.budget = budget_bytes
        self.wait_s = wait_s
        self.retry_after_s = retry_after_s
        self.in_use = 0
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

    async def _release(self, nbytes: int) -> None:
        async with self._changed:
            self.in_use -= nbytes
            self._changed.notify_all()

    async def _resize(self, reservation: Reservation, nbytes: int) -> None:
        self._check_fits(nbytes)
        delta = nbytes - reservation.nbytes
        if delta > 0:
            await self._wait_for(delta)
        elif delta < 0:
            await self._release(-delta)
        reservation.nbytes = nbytes

    @asynccontextmanager
    async def reserve(self, nbytes: int) -> AsyncIterator[Reservation]:
        """Hold `nbytes` of the budget for the duration of the block."""
        self._check_fits(nbytes)
        await self._wait_for(nbytes)
        reservation = Reservation(self, nbytes)
        try:
            yield reservation
        finally:
            await self._release(reservation.nbytes)

    def stats(self) -> dict[str, int]:
        return {
            "budget": self.budget,
            "in_use": self.in_use,
            "peak_in_use": self.peak_in_use,
            "rejected": self.rejected,
        }
