"""Run ansible-playbook as a subprocess and read its PLAY RECAP.

Shared by tests/provision, tests/deploy and tests/cd.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECAP_LINE = re.compile(r"^(?P<host>\S+)\s*:\s*(?P<counts>(?:\w+=\d+\s*)+)$")


@dataclass
class PlaybookResult:
    rc: int
    stdout: str
    stderr: str = ""
    recap: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def changed_total(self) -> int:
        return sum(h.get("changed", 0) for h in self.recap.values())

    @property
    def failed_total(self) -> int:
        return sum(h.get("failed", 0) + h.get("unreachable", 0) for h in self.recap.values())


def parse_recap(stdout: str) -> dict[str, dict[str, int]]:
    recap: dict[str, dict[str, int]] = {}
    lines = stdout.splitlines()
    try:
        start = max(i for i, line in enumerate(lines) if line.startswith("PLAY RECAP"))
    except ValueError:
        return recap
    for line in lines[start + 1 :]:
        m = RECAP_LINE.match(line.strip())
        if not m:
            if line.strip():
                break
            continue
        recap[m["host"]] = {k: int(v) for k, v in (kv.split("=") for kv in m["counts"].split())}
    return recap


def ansible_venv() -> Path:
    return Path(os.environ.get("ANSIBLE_VENV", ROOT / ".venv-ansible"))


def run_playbook(
    playbook: str,
    *args: str,
    env: dict[str, str],
    check_rc: bool = True,
    timeout: float = 900,
) -> PlaybookResult:
    """Run `ansible-playbook PLAYBOOK ARGS...` from the repo root with the given env.

    `playbook` is relative to the repo root (or absolute). With check_rc, a
    non-zero exit raises AssertionError carrying the tail of the output.
    """
    venv = ansible_venv()
    run_env = dict(env)
    run_env.update(
        {
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_STDOUT_CALLBACK": "default",
            "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "PYTHONUNBUFFERED": "1",
            "PATH": f"{venv / 'bin'}{os.pathsep}{run_env.get('PATH', os.defpath)}",
        }
    )
    cmd = [str(venv / "bin" / "ansible-playbook"), playbook, *args]
    proc = subprocess.run(
        cmd,
        cwd=ROOT,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    result = PlaybookResult(proc.returncode, proc.stdout, proc.stderr, parse_recap(proc.stdout))
    if check_rc and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n"
            f"--- stdout (tail) ---\n{proc.stdout[-12000:]}\n"
            f"--- stderr (tail) ---\n{proc.stderr[-4000:]}"
        )
    return result
