"""The load test's short mode, under e2-micro limits: correctness under overload, not speed.

Runs `scripts/loadtest.py --mode short` (about a minute: the realistic mix under,
near and well past one VM's capacity, then the worst allowed inputs for memory)
against the real service confined to a cgroup of 0.5 CPU, 1 GiB and no swap, made by
the host's backend (tests/support/cgroups.py: systemd scope, raw v2, or v1 groups).
Fails on any answer the contract does not allow for its input (a 5xx other than
503, or 502 for a reachable image), any request that timed out or lost its
connection, any OOM kill, or cgroups left behind. Asserts nothing about speed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support import cgroups

ROOT = Path(__file__).resolve().parents[2]
CGROUP_ROOT = cgroups.MOUNT


def _leftover_groups() -> list[Path]:
    trees = [CGROUP_ROOT / ctl for ctl in cgroups.V1_CONTROLLERS] + [CGROUP_ROOT]
    found = {p for t in trees if t.is_dir() for p in t.rglob("img2pdf-load*")}
    return sorted(found)


def test_short_load_run_under_e2_micro_limits(tmp_path):
    host = cgroups.detect()
    assert host.backend, f"no cgroup controllers to limit the service with: {host}"
    report_path = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "loadtest.py"), "--mode", "short",
         "--json", str(report_path), "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=170, cwd=ROOT,
    )  # fmt: skip
    print(proc.stdout[-6000:], proc.stderr[-4000:])
    assert report_path.exists(), f"no report (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    report = json.loads(report_path.read_text())
    run = report["runs"][0]
    steps = run["steps"]

    # The limits were set, read back, and held the whole service.
    assert run["cgroup_backend"] == host.backend
    assert run["limits_read_back"] == {
        "cpu_quota_us": 50_000,
        "cpu_period_us": 100_000,
        "memory_max": 1024**3,
        "swap_max": 0,  # a memory test that swaps proves nothing
    }
    for key in ("confinement", "confinement_end"):
        assert len(run[key]["service_pids"]) >= 3, run[key]  # master + 2 workers
        assert not run[key]["outside_cpu"] and not run[key]["outside_memory"], run[key]
    # The quota binds: at most 0.5 CPU per wall second (a little slack for sampling).
    assert max(s["cpu_share"] for s in steps) <= 0.55, [s["cpu_share"] for s in steps]

    # Overload was reached and answered the designed way: 503 + Retry-After.
    overload = max(steps, key=lambda s: s["offered_per_s"] if s["label"] == "mix" else 0)
    assert overload["statuses"].get("503", 0) > 0, overload["statuses"]
    assert all(s["busy_without_retry_after"] == 0 for s in steps)
    # ...and every step converted something (the worst-memory one too: admitted, not refused).
    assert all(s["ok"] > 0 for s in steps), [(s["label"], s["statuses"]) for s in steps]

    # No timeouts, resets or dropped connections; no answer outside the contract.
    for s in steps:
        where = f"{s['label']} @{s['offered_per_s']}/s"
        assert s["client_failures"] == 0, f"{where}: {s['statuses']}"
        assert s["unexpected_count"] == 0, f"{where}: {s['unexpected']}"
        assert s["oom_kills"] == 0, where

    # Nothing was killed, memory stayed under the limit, keep-alive outlived 5 s.
    assert run["oom_kills_total"] == 0
    assert run["sigkill_log_lines"] == []
    assert max(s["max_usage"] for s in steps) < 1024**3
    assert run["keepalive"]["reused"], run["keepalive"]
    assert run["cgroups_removed"]
    assert _leftover_groups() == []

    assert report["violations"] == []
    assert proc.returncode == 0, proc.stdout[-3000:]


def _groups_of(pid: int) -> list[Path]:
    return [p for p in _leftover_groups() if str(pid) in p.name.split("-")]


def test_a_terminated_run_removes_its_service_and_cgroups(tmp_path):
    """SIGTERM (a `kill`, `timeout`) mid-run: the harness stops the confined
    service and removes its cgroups, as at the end of a run."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "loadtest.py"), "--mode", "short",
         "--workdir", str(tmp_path / "work")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
    )  # fmt: skip
    service: set[int] = set()
    try:
        deadline = time.monotonic() + 90
        while len(service) < 5 and time.monotonic() < deadline:  # master, 2 workers, 2 zygotes
            time.sleep(0.5)
            for group in _groups_of(proc.pid):
                if not group.name.startswith("img2pdf-load-"):
                    continue  # the client's own group (img2pdf-loadclient-<pid>)
                with open(group / "cgroup.procs") as procs:
                    service |= {int(line) for line in procs if line.strip()}
        assert len(service) >= 5, "the confined service did not start"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()
    assert _groups_of(proc.pid) == []
    # A zygote still warming up sees its socket's end once it starts serving.
    deadline = time.monotonic() + 15
    alive = service
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [pid for pid in alive if os.path.exists(f"/proc/{pid}")]
    assert alive == [], alive
