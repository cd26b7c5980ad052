"""Fixtures for the deploy suite: one real Debian 12 systemd machine for the whole module,
capped at 1 GiB from the host like an e2-micro, and the real playbook run against it.

These tests need root, debootstrap and systemd-nspawn (scripts/test.sh installs them). They
fail, never skip, when any of that is missing: CI must not go green without running them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.machine import DebianMachine  # noqa: E402
from tests.support.servers import free_port  # noqa: E402

GIB = 1024**3
CODE_PATHS = ("app", "config", "scripts", "systemd")
#: Measurements the tests report (durations, scores); printed in pytest's terminal summary,
#: so they show in CI logs even when the tests pass with output captured.
MEASURED: dict[str, str] = {}
RECAP = re.compile(r"^(?P<host>\S+)\s*:\s*(?P<counts>(?:\w+=\d+\s*)+)$", re.M)


def controller_venv() -> Path:
    return Path(os.environ.get("ANSIBLE_VENV", ROOT / ".venv-ansible"))


@dataclass
class PlayResult:
    rc: int
    output: str
    seconds: float
    recap: dict[str, int] = field(default_factory=dict)

    @property
    def changed(self) -> int:
        return self.recap.get("changed", -1)


@dataclass
class Target:
    """The machine as the playbook sees it, plus the service's address from the host."""

    machine: DebianMachine
    inventory: Path
    port: int
    workdir: Path

    @property
    def base_url(self) -> str:
        # The machine shares the host network: the VM's port is reachable on loopback.
        return f"http://127.0.0.1:{self.port}"

    def deploy(self, source: Path, release: str) -> PlayResult:
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "ANSIBLE_INVENTORY_ENABLED": "ansible.builtin.yaml",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_DEPRECATION_WARNINGS": "0",
            "ANSIBLE_LOCAL_TEMP": str(self.workdir / "ansible-tmp"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.workdir / "cp"),
        }
        command = [
            str(controller_venv() / "bin" / "ansible-playbook"),
            "-i",
            str(self.inventory),
            str(ROOT / "ansible" / "deploy.yml"),
            "-e",
            f"app_source_dir={source}",
            "-e",
            f"app_release={release}",
            "-e",
            f"app_local_archive_dir={self.workdir}",
        ]
        started = time.monotonic()
        out = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False
        )
        seconds = time.monotonic() - started
        output = out.stdout + out.stderr
        (self.workdir / f"play-{release}-{int(time.time())}.log").write_text(output)
        recap: dict[str, int] = {}
        for m in RECAP.finditer(out.stdout):
            if m.group("host") == self.machine.name:
                recap = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group("counts"))}
        return PlayResult(out.returncode, output, seconds, recap)

    def sh(self, command: str, **kwargs) -> str:
        return self.machine.run(command, **kwargs).stdout.strip()

    def live_release(self) -> str:
        return Path(self.sh("readlink -e /opt/img2pdf/current")).name

    def unit(self, *props: str) -> dict[str, str]:
        out = self.sh(f"systemctl show img2pdf.service -p {','.join(props)}")
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _require_machine_tools() -> None:
    missing = [
        t for t in ("debootstrap", "systemd-nspawn", "ssh", "ssh-keygen") if not shutil.which(t)
    ]
    if os.geteuid() != 0:
        pytest.fail("the deploy suite boots a systemd-nspawn machine: run it as root")
    if missing:
        pytest.fail(f"missing {missing}: run scripts/test.sh deploy (it installs them)")
    if not (controller_venv() / "bin" / "ansible-playbook").exists():
        pytest.fail(f"no ansible-playbook in {controller_venv()} (scripts/test.sh builds it)")


def make_tree(dest: Path, *, marker: str, broken: bool = False) -> Path:
    """A copy of the checkout's release paths: what a new commit would ship."""
    for name in CODE_PATHS:
        shutil.copytree(
            ROOT / name,
            dest / name,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".venv*", "data"),
        )
    init = dest / "app" / "__init__.py"
    init.write_text(init.read_text() + f"\n# test release: {marker}\n")
    if broken:
        # Compiles, but fails at import: workers cannot boot, /ping never answers.
        main = dest / "app" / "main.py"
        main.write_text(
            main.read_text() + '\nraise ImportError("deliberately broken release (tests/deploy)")\n'
        )
    return dest


@pytest.fixture(scope="module")
def target(tmp_path_factory) -> Target:
    _require_machine_tools()
    workdir = tmp_path_factory.mktemp("deploy")
    port = free_port()
    # The whole machine gets 1 GiB, like an e2-micro: limits inside it are not enforced here.
    with DebianMachine("img2pdf-deploy", workdir=workdir / "vm", memory_limit=GIB) as vm:
        inventory = vm.write_inventory(
            workdir / "hosts.yml",
            host_vars={
                "app_port": port,
                "app_public_base_url": f"http://127.0.0.1:{port}",
                # Test only: sources are served on loopback by the test.
                "app_env_extra": {"ALLOW_PRIVATE_SOURCE_URLS": "1"},
                # A broken release is judged within ~40 s instead of the default 60 s.
                "app_healthcheck_retries": 40,
                "app_healthcheck_delay": 1,
            },
        )
        yield Target(vm, inventory, port, workdir)


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("trees")
    return {
        "r1": make_tree(base / "r1", marker="r1"),
        "r2": make_tree(base / "r2", marker="r2"),
        "broken": make_tree(base / "broken", marker="broken", broken=True),
        "r3": make_tree(base / "r3", marker="r3"),
    }


@pytest.fixture
def report():
    """report(name, value, unit): print a measurement now and again in the terminal summary."""

    def record(name: str, value: float | str, unit: str = "s") -> None:
        text = f"{value:.1f}{unit}" if isinstance(value, float) else f"{value}{unit}"
        MEASURED[name] = text
        print(f"\n[measured] {name}: {text}")

    return record


def pytest_terminal_summary(terminalreporter) -> None:
    if MEASURED:
        terminalreporter.section("deploy measurements")
        for name, value in MEASURED.items():
            terminalreporter.write_line(f"{name}: {value}")
