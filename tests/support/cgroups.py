"""CPU and memory limits for a process tree, on whatever cgroup setup the host has.

Three backends, chosen by `detect()`:

- ``systemd``: cgroup v2 with systemd as PID 1 (GitHub's ubuntu-24.04 runner, the GCE
  VM): `systemd-run --scope -p CPUQuota=50% -p MemoryMax=1G -p MemorySwapMax=0 …`, and
  `systemd-nspawn --property=MemoryMax=… --property=MemorySwapMax=0` for a machine;
- ``v2``: the unified hierarchy without systemd (a container): a group at the top of
  the hierarchy with `cpu.max`, `memory.max`, `memory.swap.max`;
- ``v1``: the v1 memory/cpu hierarchies, also on a hybrid host whose v2 tree holds no
  controllers (this box): `cpu.cfs_quota_us`, `memory.limit_in_bytes`, and
  `memory.memsw.limit_in_bytes` where swap accounting exists.

Swap is always capped (a memory test that swaps proves nothing): `MemorySwapMax=0`,
`memory.swap.max = 0`, or on v1 memsw = the memory limit plus swappiness 0.

Every reader returns the same keys whatever the backend (`stats()`), so the load test
and the deploy suite read one shape. Every function takes the cgroup mount point and
the /proc root as arguments, so the tests point them at fixture trees.

    python3 tests/support/cgroups.py detect [--root /]   # mode=… backend=… (scripts/test.sh)

Standard library only: scripts/test.sh runs it before any venv exists.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

MOUNT = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("cpu", "cpuacct", "memory")


@dataclass(frozen=True)
class Host:
    """What the host offers: the hierarchy's shape and the backend used for it."""

    mode: str  # "v2" (unified), "hybrid" (v1 controllers + an empty v2 tree), "v1", "none"
    systemd: bool  # systemd is PID 1 (sd_booted: /run/systemd/system exists)
    backend: str | None  # "systemd", "v2", "v1", or None when no limits can be set


def detect(root: Path = Path("/")) -> Host:
    """Look at ROOT/sys/fs/cgroup, ROOT/run/systemd/system and ROOT/usr/bin/systemd-run
    (ROOT is a fixture tree in the tests)."""
    mount = root / "sys/fs/cgroup"
    systemd = (root / "run/systemd/system").is_dir()
    have_systemd_run = any((root / d / "systemd-run").exists() for d in ("usr/bin", "bin"))
    if (mount / "cgroup.controllers").is_file():
        controllers = (mount / "cgroup.controllers").read_text().split()
        if not {"cpu", "memory"} <= set(controllers):
            return Host("v2", systemd, None)
        backend = "systemd" if systemd and have_systemd_run else "v2"
        return Host("v2", systemd, backend)
    if (mount / "memory" / "cgroup.procs").is_file() and (mount / "cpu" / "cgroup.procs").is_file():
        mode = "hybrid" if (mount / "unified").is_dir() else "v1"
        return Host(mode, systemd, "v1")
    return Host("none", systemd, None)


@dataclass(frozen=True)
class Limits:
    """An e2-micro by default: 0.5 CPU, 1 GiB, no swap."""

    cpu_quota_us: int | None = 50_000
    cpu_period_us: int = 100_000
    memory_max: int | None = 1024**3
    cpu_weight: int | None = None  # v2 scale (default 100); v1 shares = weight * 1024 / 100

    @property
    def cpu_percent(self) -> int | None:
        if self.cpu_quota_us is None:
            return None
        return round(self.cpu_quota_us * 100 / self.cpu_period_us)

    @property
    def cpu_shares(self) -> int | None:
        return None if self.cpu_weight is None else self.cpu_weight * 1024 // 100


def _read(path: Path) -> str:
    return path.read_text().strip()


def _keyed(path: Path) -> dict[str, int]:
    """`key value` lines (memory.stat, cpu.stat, memory.events, memory.oom_control)."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                out[key] = int(value)
    return out


def _rmdir_tree(path: Path, deadline: float) -> None:
    """Remove a cgroup and any children (inner systemd makes some), waiting for exits."""
    while path.exists():
        try:
            for child in sorted((p for p in path.rglob("*") if p.is_dir()), reverse=True):
                with contextlib.suppress(OSError):
                    child.rmdir()
            path.rmdir()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class Group:
    """One limited group. Start processes in it with `wrap(argv)` (or `nspawn(argv)`)."""

    backend = ""

    def __init__(self, name: str, limits: Limits, mount: Path = MOUNT) -> None:
        self.name = name
        self.limits = limits
        self.mount = mount

    # How processes enter it.
    def wrap(self, argv: list[str]) -> list[str]:
        raise NotImplementedError

    def nspawn(self, argv: list[str]) -> list[str]:
        """systemd-nspawn argv (without the limits) -> the command that runs it limited."""
        return self.wrap([*argv, "--register=no", "--keep-unit"])

    # What it holds and used.
    def pids(self) -> set[int]:
        raise NotImplementedError

    def pids_by_controller(self) -> dict[str, set[int]]:
        """The processes in the cpu and in the memory group (one group on v2)."""
        raise NotImplementedError

    def stats(self) -> dict[str, int | float]:
        """cpu_usage_s, nr_throttled, throttled_s, memory_current, memory_peak, anon,
        file, limit_hits, oom_kill: the same keys on every backend."""
        raise NotImplementedError

    def read_back(self) -> dict[str, int | None]:
        """The limits as the kernel holds them: cpu_quota_us, cpu_period_us, memory_max,
        swap_max (0: no swap; None: this host cannot account swap per group)."""
        raise NotImplementedError

    def reset_peak(self) -> bool:
        """Restart the peak counter where the kernel allows it (v1; v2 from Linux 6.12)."""
        return False

    def remove(self, timeout: float = 15.0) -> None:
        raise NotImplementedError

    @property
    def exists(self) -> bool:
        raise NotImplementedError


# --------------------------------------------------------------------------- v1


def own_v1_cgroup(
    controller: str, mount: Path = MOUNT, proc_self: Path = Path("/proc/self")
) -> Path:
    """This process's group in a v1 hierarchy: new groups nest under it, never beside it."""
    with contextlib.suppress(OSError):
        for line in (proc_self / "cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controller in controllers.split(","):
                return mount / controller / path.lstrip("/")
    return mount / controller


class V1Group(Group):
    backend = "v1"

    def __init__(
        self,
        name: str,
        limits: Limits,
        mount: Path = MOUNT,
        proc_self: Path = Path("/proc/self"),
    ) -> None:
        super().__init__(name, limits, mount)
        for ctl in ("cpu", "memory"):
            if not (mount / ctl / "cgroup.procs").exists():
                raise RuntimeError(f"cgroup v1 {ctl} controller not mounted at {mount / ctl}")
        self.dirs: dict[str, Path] = {}
        comounted = (mount / "cpuacct").resolve() == (mount / "cpu").resolve()
        for ctl in V1_CONTROLLERS:
            if ctl == "cpuacct" and (comounted or not (mount / ctl).exists()):
                continue
            d = own_v1_cgroup(ctl, mount, proc_self) / name
            d.mkdir(exist_ok=True)
            self.dirs[ctl] = d
        self.dirs.setdefault("cpuacct", self.dirs["cpu"])
        cpu, mem = self.dirs["cpu"], self.dirs["memory"]
        if limits.cpu_quota_us is not None:
            (cpu / "cpu.cfs_period_us").write_text(str(limits.cpu_period_us))
            (cpu / "cpu.cfs_quota_us").write_text(str(limits.cpu_quota_us))
        if limits.cpu_shares is not None:
            (cpu / "cpu.shares").write_text(str(limits.cpu_shares))
        if limits.memory_max is not None:
            (mem / "memory.limit_in_bytes").write_text(str(limits.memory_max))
            # memsw = memory + swap: equal to the memory limit means no swap at all. It
            # exists only with swap accounting; swappiness 0 keeps the group off swap anyway.
            with contextlib.suppress(OSError):
                if (mem / "memory.memsw.limit_in_bytes").exists():
                    (mem / "memory.memsw.limit_in_bytes").write_text(str(limits.memory_max))
            with contextlib.suppress(OSError):
                (mem / "memory.swappiness").write_text("0")

    def _procs_files(self) -> list[Path]:
        return [d / "cgroup.procs" for d in dict.fromkeys(self.dirs.values())]

    def wrap(self, argv: list[str]) -> list[str]:
        """sh writes its own PID into every group, then execs argv (its children follow)."""
        writes = " && ".join(f"echo $$ > {shlex.quote(str(p))}" for p in self._procs_files())
        return ["/bin/sh", "-c", f'{writes} && exec "$@"', "cgroup-wrapper", *argv]

    def pids(self, controller: str = "memory") -> set[int]:
        return {int(p) for p in _read(self.dirs[controller] / "cgroup.procs").split()}

    def pids_by_controller(self) -> dict[str, set[int]]:
        return {ctl: self.pids(ctl) for ctl in ("cpu", "memory")}

    def stats(self) -> dict[str, int | float]:
        cpu, mem = self.dirs["cpu"], self.dirs["memory"]
        st = _keyed(mem / "memory.stat")
        cpu_stat = _keyed(cpu / "cpu.stat")
        return {
            "cpu_usage_s": int(_read(self.dirs["cpuacct"] / "cpuacct.usage")) / 1e9,
            "nr_throttled": cpu_stat.get("nr_throttled", 0),
            "throttled_s": cpu_stat.get("throttled_time", 0) / 1e9,
            "memory_current": int(_read(mem / "memory.usage_in_bytes")),
            "memory_peak": int(_read(mem / "memory.max_usage_in_bytes")),
            "anon": st.get("total_rss", st.get("rss", 0)),
            "file": st.get("total_cache", st.get("cache", 0)),
            "limit_hits": int(_read(mem / "memory.failcnt")),
            "oom_kill": _keyed(mem / "memory.oom_control").get("oom_kill", 0),
        }

    def read_back(self) -> dict[str, int | None]:
        cpu, mem = self.dirs["cpu"], self.dirs["memory"]
        limit = int(_read(mem / "memory.limit_in_bytes"))
        swap: int | None = None
        with contextlib.suppress(OSError, ValueError):
            swap = int(_read(mem / "memory.memsw.limit_in_bytes")) - limit
        if swap is None and not _host_has_swap():
            swap = 0  # no swap configured at all: nothing can be swapped out
        return {
            "cpu_quota_us": int(_read(cpu / "cpu.cfs_quota_us")),
            "cpu_period_us": int(_read(cpu / "cpu.cfs_period_us")),
            "memory_max": limit,
            "swap_max": swap,
        }

    def reset_peak(self) -> bool:
        (self.dirs["memory"] / "memory.max_usage_in_bytes").write_text("0")
        return True

    def remove(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        for d in dict.fromkeys(self.dirs.values()):
            _rmdir_tree(d, deadline)

    @property
    def exists(self) -> bool:
        return any(d.exists() for d in self.dirs.values())


def _host_has_swap(proc: Path = Path("/proc")) -> bool:
    with contextlib.suppress(OSError):
        return len((proc / "swaps").read_text().strip().splitlines()) > 1
    return True


# --------------------------------------------------------------------------- v2


class _V2Reader(Group):
    """Reads the unified hierarchy's files of `self.dir` (both v2 backends)."""

    dir: Path | None = None

    def _dir(self) -> Path:
        if self.dir is None:
            raise RuntimeError(f"{self.name}: the group does not exist yet (nothing started)")
        return self.dir

    def pids(self, controller: str = "memory") -> set[int]:
        if self.dir is None or not self.dir.exists():
            return set()
        pids: set[int] = set()
        for procs in [self.dir / "cgroup.procs", *self.dir.rglob("*/cgroup.procs")]:
            with contextlib.suppress(OSError):
                pids |= {int(p) for p in _read(procs).split()}
        return pids

    def pids_by_controller(self) -> dict[str, set[int]]:
        pids = self.pids()  # one group holds every controller on v2
        return {"cpu": pids, "memory": pids}

    def stats(self) -> dict[str, int | float]:
        d = self._dir()
        cpu = _keyed(d / "cpu.stat")
        st = _keyed(d / "memory.stat")
        events = _keyed(d / "memory.events")
        current = int(_read(d / "memory.current"))
        peak = current
        with contextlib.suppress(OSError, ValueError):
            peak = int(_read(d / "memory.peak"))  # Linux >= 5.19
        return {
            "cpu_usage_s": cpu.get("usage_usec", 0) / 1e6,
            "nr_throttled": cpu.get("nr_throttled", 0),
            "throttled_s": cpu.get("throttled_usec", 0) / 1e6,
            "memory_current": current,
            "memory_peak": peak,
            "anon": st.get("anon", 0),
            "file": st.get("file", 0),
            "limit_hits": events.get("max", 0),
            "oom_kill": events.get("oom_kill", 0),
        }

    def read_back(self) -> dict[str, int | None]:
        d = self._dir()
        quota, _, period = _read(d / "cpu.max").partition(" ")

        def number(text: str) -> int | None:
            return None if text == "max" else int(text)

        return {
            "cpu_quota_us": number(quota),
            "cpu_period_us": int(period or 100_000),
            "memory_max": number(_read(d / "memory.max")),
            "swap_max": number(_read(d / "memory.swap.max")),
        }

    def reset_peak(self) -> bool:
        with contextlib.suppress(OSError):
            (self._dir() / "memory.peak").write_text("0\n")  # Linux >= 6.12
            return True
        return False

    @property
    def exists(self) -> bool:
        return self.dir is not None and self.dir.exists()


class V2Group(_V2Reader):
    """A group at the top of the unified hierarchy (the root is exempt from v2's
    no-internal-processes rule, so the controllers can always be enabled there)."""

    backend = "v2"

    def __init__(self, name: str, limits: Limits, mount: Path = MOUNT) -> None:
        super().__init__(name, limits, mount)
        enabled = set(_read(mount / "cgroup.subtree_control").split())
        wanted = [c for c in ("cpu", "memory") if c not in enabled]
        if wanted:
            (mount / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in wanted))
        self.dir = mount / name
        self.dir.mkdir(exist_ok=True)
        if limits.cpu_quota_us is not None:
            (self.dir / "cpu.max").write_text(f"{limits.cpu_quota_us} {limits.cpu_period_us}")
        if limits.cpu_weight is not None:
            (self.dir / "cpu.weight").write_text(str(limits.cpu_weight))
        if limits.memory_max is not None:
            (self.dir / "memory.max").write_text(str(limits.memory_max))
            (self.dir / "memory.swap.max").write_text("0")

    def wrap(self, argv: list[str]) -> list[str]:
        procs = shlex.quote(str(self._dir() / "cgroup.procs"))
        return ["/bin/sh", "-c", f'echo $$ > {procs} && exec "$@"', "cgroup-wrapper", *argv]

    def remove(self, timeout: float = 15.0) -> None:
        if self.dir is not None:
            _rmdir_tree(self.dir, time.monotonic() + timeout)


# --------------------------------------------------------------------------- systemd


def systemd_properties(limits: Limits) -> list[str]:
    """The unit properties for `limits` (systemd-run -p X / systemd-nspawn --property=X)."""
    props = ["CPUAccounting=yes", "MemoryAccounting=yes"]
    if limits.cpu_percent is not None:
        props.append(f"CPUQuota={limits.cpu_percent}%")
    if limits.cpu_weight is not None:
        props.append(f"CPUWeight={limits.cpu_weight}")
    if limits.memory_max is not None:
        props.append(f"MemoryMax={limits.memory_max}")
        props.append("MemorySwapMax=0")
    return props


def machine_scope(machine: str) -> str:
    """The scope systemd-machined gives a registered machine (`systemd-escape` rules)."""
    escaped = "".join(
        c if c.isalnum() or c in ":_." else "".join(f"\\x{b:02x}" for b in c.encode())
        for c in machine
    )
    return f"machine-{escaped}.scope"


class SystemdGroup(_V2Reader):
    """A transient scope made by systemd: the unit is created when the wrapped command
    (or the registered machine) starts, and collected when its last process exits."""

    backend = "systemd"

    def __init__(self, name: str, limits: Limits, mount: Path = MOUNT) -> None:
        super().__init__(name, limits, mount)
        self.unit = f"{name}.scope"
        self.dir = None

    def wrap(self, argv: list[str]) -> list[str]:
        props = [a for p in systemd_properties(self.limits) for a in ("-p", p)]
        return [
            "systemd-run",
            "--scope",
            "--quiet",
            "--collect",
            f"--unit={self.unit}",
            *props,
            "--",
            *argv,
        ]

    def nspawn(self, argv: list[str]) -> list[str]:
        """Registered with machined in its own scope, which carries the limits."""
        name = next(a.split("=", 1)[1] for a in argv if a.startswith("--machine="))
        self.unit = machine_scope(name)
        return [*argv, *(f"--property={p}" for p in systemd_properties(self.limits))]

    def attach(self, timeout: float = 30.0) -> Path:
        """Find the unit's cgroup once it runs (systemctl show -p ControlGroup)."""
        deadline = time.monotonic() + timeout
        while True:
            out = subprocess.run(
                ["systemctl", "show", "-p", "ControlGroup", "--value", self.unit],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            if out and (self.mount / out.lstrip("/")).is_dir():
                self.dir = self.mount / out.lstrip("/")
                return self.dir
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.unit} has no cgroup after {timeout}s")
            time.sleep(0.2)

    def _dir(self) -> Path:
        if self.dir is None:
            self.attach()
        return super()._dir()

    def remove(self, timeout: float = 15.0) -> None:
        subprocess.run(["systemctl", "stop", self.unit], capture_output=True, check=False)
        deadline = time.monotonic() + timeout
        while self.dir is not None and self.dir.exists():
            if time.monotonic() > deadline:
                raise OSError(f"{self.dir} still exists")
            time.sleep(0.1)


def make_group(name: str, limits: Limits, host: Host | None = None, mount: Path = MOUNT) -> Group:
    """A group for `limits` with the backend `detect()` chose for this host."""
    host = host or detect()
    if host.backend == "systemd":
        return SystemdGroup(name, limits, mount)
    if host.backend == "v2":
        return V2Group(name, limits, mount)
    if host.backend == "v1":
        return V1Group(name, limits, mount)
    raise RuntimeError(f"no cgroup controllers to limit processes with (cgroup mode {host.mode})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="cgroup detection (see the module docstring)")
    p.add_argument("command", choices=["detect"])
    p.add_argument("--root", type=Path, default=Path("/"))
    args = p.parse_args(argv)
    host = detect(args.root)
    systemd = "yes" if host.systemd else "no"
    print(f"mode={host.mode} systemd={systemd} backend={host.backend or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
