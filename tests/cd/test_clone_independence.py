"""No test depends on how this checkout was cloned: actions/checkout fetches one commit.

The deploy-script tests are run again inside a depth-1 clone of a copy of this tree;
they make their own history in scratch repositories, so they pass there too.
"""

from __future__ import annotations

import os
import subprocess
import sys

from .conftest import ROOT, controller_venv
from .helpers import copy_tree, git, linear_history

PROJECT = (
    "app",
    "config",
    "scripts",
    "systemd",
    "ansible",
    "ansible.cfg",
    "pyproject.toml",
    "tests",
)


def test_the_deploy_script_tests_pass_in_a_depth_1_clone(tmp_path):
    origin = copy_tree(ROOT, tmp_path / "origin", PROJECT)
    linear_history(origin, 2)
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{origin}", str(clone))
    assert git(clone, "rev-parse", "--is-shallow-repository") == "true"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "tests/cd/test_deploy_script.py",
            "-k",
            "good_release_goes_live or rolled_back or older_release_never",
        ],
        cwd=clone,
        env={**os.environ, "ANSIBLE_VENV": str(controller_venv())},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "3 passed" in out.stdout, out.stdout[-2000:]
