"""The limits of one e2-micro, made with the host's cgroup backend (tests/support/cgroups.py)."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from tests.support import cgroups

GIB = 1024**3
MIB = 1024**2
HOST = cgroups.detect()
CPU_QUOTA_US, CPU_PERIOD_US = 50_000, 100_000  # e2-micro: 2 vCPU at 25 % = 0.5 CPU
MEMORY_LIMIT = GIB


_HOME: dict[str, Path] = {}


def own_cgroup(controller: str) -> Path:
    """This process's v1 group as it was at start: new groups nest under it."""
    if controller not in _HOME:
        _HOME[controller] = cgroups.own_v1_cgroup(controller)
    return _HOME[controller]


class ClientBoost:
    """Puts the load generator (and the source server it forks) in a cpu group with more
    shares, so a busy host delays the measuring side less. No quota: it only wins ties.
    v1 only: on v2 the client stays where it is (a runner's job has the host to itself)."""

    def __init__(self, name: str, shares: int = 4096):
        self.dir: Path | None = None
        if HOST.backend != "v1":
            return
        for ctl in cgroups.V1_CONTROLLERS:  # remember home before leaving it
            own_cgroup(ctl)
        self.home = own_cgroup("cpu")
        self.dir = self.home / name
        self.dir.mkdir(exist_ok=True)
        (self.dir / "cpu.shares").write_text(str(shares))
        (self.dir / "cgroup.procs").write_text(str(os.getpid()))

    def close(self) -> None:
        if self.dir is None:
            return
        for pid in (self.dir / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                (self.home / "cgroup.procs").write_text(pid)
        deadline = time.monotonic() + 10
        while self.dir.exists():
            try:
                self.dir.rmdir()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def make_cgroup(name: str, cpu_weight: int = 800) -> cgroups.Group:
    """An e2-micro's limits (0.5 CPU, 1 GiB, no swap) with the host's backend.

    The weight (v1: 8192 shares) only matters when the host is busy: it lets the service
    have its 0.5 CPU there too (a VM's baseline is its own), while the quota still caps it."""
    if HOST.backend == "v1":
        for ctl in cgroups.V1_CONTROLLERS:
            own_cgroup(ctl)
    limits = cgroups.Limits(
        cpu_quota_us=CPU_QUOTA_US,
        cpu_period_us=CPU_PERIOD_US,
        memory_max=MEMORY_LIMIT,
        cpu_weight=cpu_weight,
    )
    return cgroups.make_group(name, limits, HOST)
