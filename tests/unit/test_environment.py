"""scripts/test.sh's environment detection (scripts/lib.sh: detect_environment) against
fixture roots shaped like the hosts CI and the tests meet, without GitHub:

- GitHub's ubuntu-24.04 runner: cgroup v2 with systemd, Ubuntu apt sources through
  `mirror+file:`, Chrome preinstalled as /usr/bin/chromium (no dpkg chromium), a
  depth-1 checkout;
- a Debian 12 VM (GCE image): cgroup v2 with systemd, Debian deb822 sources, no browser;
- this box: Debian 12 with a hybrid cgroup hierarchy, PID 1 not systemd, Debian's
  chromium, a full clone.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.cd.helpers import git, linear_history

ROOT = Path(__file__).resolve().parents[2]

UBUNTU_SOURCES = """\
Types: deb
URIs: mirror+file:/etc/apt/apt-mirrors.txt
Suites: noble noble-updates noble-backports
Components: main universe restricted multiverse
"""

DEBIAN_SOURCES = """\
Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main

Types: deb
URIs: https://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
"""


def write(path: Path, text: str = "", mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def cgroup_v2_systemd(root: Path) -> None:
    write(root / "sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma\n")
    write(root / "sys/fs/cgroup/cgroup.subtree_control", "cpuset cpu io memory pids\n")
    (root / "run/systemd/system").mkdir(parents=True)
    write(root / "usr/bin/systemd-run", "", 0o755)


def cgroup_hybrid(root: Path) -> None:
    for ctl in ("cpu", "cpuacct", "memory", "pids"):
        write(root / "sys/fs/cgroup" / ctl / "cgroup.procs", "1\n")
    write(root / "sys/fs/cgroup/unified/cgroup.controllers", "")
    write(root / "usr/bin/systemd-run", "", 0o755)


def checkout(tmp: Path, *, shallow: bool) -> Path:
    origin = tmp / "origin"
    origin.mkdir()
    linear_history(origin, 3)
    if not shallow:
        return origin
    clone = tmp / "clone"
    # actions/checkout's default: one commit of history.
    git(tmp, "clone", "-q", "--depth", "1", f"file://{origin}", str(clone))
    return clone


def ubuntu_runner(root: Path) -> Path:
    write(root / "etc/os-release", 'NAME="Ubuntu"\nVERSION_ID="24.04"\nID=ubuntu\nID_LIKE=debian\n')
    write(root / "etc/apt/sources.list.d/ubuntu.sources", UBUNTU_SOURCES)
    cgroup_v2_systemd(root)
    write(root / "usr/bin/chromium", "#!/bin/sh\n", 0o755)  # a link to Chrome, not a package
    write(root / "usr/bin/google-chrome", "#!/bin/sh\n", 0o755)
    return root


def debian_vm(root: Path) -> Path:
    write(root / "etc/os-release", 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n')
    write(root / "etc/apt/sources.list.d/debian.sources", DEBIAN_SOURCES)
    cgroup_v2_systemd(root)
    return root


def hybrid_box(root: Path) -> Path:
    write(root / "etc/os-release", 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n')
    write(root / "etc/apt/sources.list", "deb http://deb.debian.org/debian bookworm main\n")
    cgroup_hybrid(root)
    write(root / "usr/bin/chromium", "#!/bin/sh\n", 0o755)
    return root


def detect(fsroot: Path, repo: Path, **env: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if k != "CHROMIUM"}
    environ.update({"PATH": "/usr/local/bin:/usr/bin:/bin", **env})
    out = subprocess.run(
        ["bash", "-c", 'source scripts/lib.sh && detect_environment "$1" "$2"', "-", fsroot, repo],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(line.split("=", 1) for line in out.stdout.splitlines())


def test_github_ubuntu_2404_runner(tmp_path):
    found = detect(ubuntu_runner(tmp_path / "fs"), checkout(tmp_path, shallow=True))
    assert found == {
        "os": "ubuntu",
        "cgroup_mode": "v2",
        "cgroup_systemd": "yes",
        "cgroup_backend": "systemd",
        "debian_mirror": "http://deb.debian.org/debian",  # not Ubuntu's mirror list
        "browser": "/usr/bin/chromium",  # the preinstalled one
        "apt_chromium": "no",  # never Ubuntu's snap transitional package
        "git": "shallow",
    }


def test_ubuntu_without_a_browser_still_never_apt_installs_chromium(tmp_path):
    fsroot = ubuntu_runner(tmp_path / "fs")
    (fsroot / "usr/bin/chromium").unlink()
    (fsroot / "usr/bin/google-chrome").unlink()
    found = detect(fsroot, checkout(tmp_path, shallow=True))
    assert (found["browser"], found["apt_chromium"]) == ("none", "no")


def test_ubuntu_with_only_google_chrome(tmp_path):
    fsroot = ubuntu_runner(tmp_path / "fs")
    (fsroot / "usr/bin/chromium").unlink()
    assert detect(fsroot, tmp_path)["browser"] == "/usr/bin/google-chrome"


def test_debian_12_vm(tmp_path):
    found = detect(debian_vm(tmp_path / "fs"), checkout(tmp_path, shallow=False))
    assert found == {
        "os": "debian",
        "cgroup_mode": "v2",
        "cgroup_systemd": "yes",
        "cgroup_backend": "systemd",
        "debian_mirror": "https://deb.debian.org/debian",
        "browser": "none",
        "apt_chromium": "yes",  # Debian's own package exists here
        "git": "full",
    }


def test_this_hybrid_box(tmp_path):
    found = detect(hybrid_box(tmp_path / "fs"), checkout(tmp_path, shallow=False))
    assert found == {
        "os": "debian",
        "cgroup_mode": "hybrid",
        "cgroup_systemd": "no",
        "cgroup_backend": "v1",
        "debian_mirror": "http://deb.debian.org/debian",
        "browser": "/usr/bin/chromium",
        "apt_chromium": "no",
        "git": "full",
    }


@pytest.mark.parametrize("make", [ubuntu_runner, debian_vm, hybrid_box])
def test_the_chromium_variable_wins(tmp_path, make):
    found = detect(make(tmp_path / "fs"), tmp_path, CHROMIUM="/opt/chrome/chrome")
    assert (found["browser"], found["apt_chromium"]) == ("/opt/chrome/chrome", "no")


def test_an_export_without_git_is_fine(tmp_path):
    assert detect(hybrid_box(tmp_path / "fs"), tmp_path / "fs")["git"] == "none"
