"""The service under test: `scripts/entrypoint.sh prod` inside fresh e2-micro cgroups."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.load.harness.limits import make_cgroup
from tests.support.servers import Service


@dataclass(frozen=True)
class Variant:
    name: str
    env: dict[str, str] = field(default_factory=dict)
    note: str = ""


DEFAULTS = Variant("defaults", {}, "WEB_CONCURRENCY=2, CONVERT_THREADS=2, budget 320 MiB")


class LimitedService(Service):
    """tests/support/servers.py's Service in its cgroups, up once every worker has started."""

    stop_timeout_s = 40.0

    def __init__(self, variant: Variant, workdir: Path):
        super().__init__(workdir, log_name=f"service-{variant.name}")
        self.variant = variant
        self.data_dir = workdir / f"data-{self.port}"
        del self.env["WEB_CONCURRENCY"]  # the service's own default unless the variant sets it
        self.env.update({"DATA_DIR": str(self.data_dir), **variant.env})
        self.cg = make_cgroup(f"img2pdf-load-{os.getpid()}-{self.port}")
        self.samples: list[tuple[float, int, int]] = []  # (t, rss, usage)
        self._stop_sampling = threading.Event()
        self._sampler: threading.Thread | None = None
        self.escaped: list[int] = []

    def command(self) -> list[str]:
        return self.cg.wrap(super().command())

    def ready(self) -> bool:
        return _get_status(self.port, "/ping") == 200 and self._workers_up()

    def start(self, timeout: float = 90.0) -> LimitedService:
        super().start(timeout)
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    def _workers_up(self) -> bool:
        wanted = int(self.variant.env.get("WEB_CONCURRENCY", "2"))
        return self.log().count('"msg":"started"') >= wanted

    def group_pids(self) -> list[int]:
        assert self.proc
        out = subprocess.run(["pgrep", "-g", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def check_confinement(self) -> dict[str, object]:
        """Every process of the service is in both limited groups (none escaped)."""
        pids = set(self.group_pids())
        held = self.cg.pids_by_controller()
        inside = {ctl: sorted(pids - held[ctl]) for ctl in ("cpu", "memory")}
        self.escaped = sorted(set(inside["cpu"]) | set(inside["memory"]))
        return {
            "service_pids": sorted(pids),
            "outside_cpu": inside["cpu"],
            "outside_memory": inside["memory"],
        }

    def _sample(self) -> None:
        """Peak anonymous memory every 0.2 s; stored PDFs deleted so page cache stays small."""
        while not self._stop_sampling.wait(0.2):
            with contextlib.suppress(OSError):
                m = self.cg.stats()
                self.samples.append((time.monotonic(), int(m["anon"]), int(m["memory_current"])))
            with contextlib.suppress(OSError):
                for p in self.data_dir.glob("*.pdf"):
                    with contextlib.suppress(OSError):
                        p.unlink()

    def peak_between(self, t0: float, t1: float) -> tuple[int, int]:
        window = [s for s in self.samples if t0 <= s[0] <= t1]
        return (max((s[1] for s in window), default=0), max((s[2] for s in window), default=0))

    def kills(self) -> list[str]:
        return [ln for ln in self.log().splitlines() if "was sent SIGKILL" in ln or "SIGKILL" in ln]

    def worker_boots(self) -> int:
        return len(re.findall(r"Booting worker", self.log()))

    def stop(self) -> None:
        self._stop_sampling.set()
        if self._sampler:
            self._sampler.join(5)
        super().stop()

    def remove_cgroups(self) -> bool:
        try:
            self.cg.remove()
        except OSError:
            return False
        return not self.cg.exists


def _get_status(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def keepalive_probe(port: int, idle_s: float) -> dict[str, object]:
    """One connection, idle longer than uvicorn's 5 s default, then reused.

    The LB keeps idle backend connections for 600 s; the backend must keep them
    longer or the LB's next request on one meets a reset (a 502 to the client).
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/ping")
        conn.getresponse().read()
        sock = conn.sock
        local = sock.getsockname() if sock else None
        time.sleep(idle_s)
        conn.request("GET", "/ping")
        resp = conn.getresponse()
        resp.read()
        same = conn.sock is sock and sock is not None and sock.getsockname() == local
        return {"idle_s": idle_s, "reused": bool(same and resp.status == 200), "error": None}
    except (OSError, http.client.HTTPException) as exc:
        return {"idle_s": idle_s, "reused": False, "error": type(exc).__name__}
    finally:
        conn.close()
