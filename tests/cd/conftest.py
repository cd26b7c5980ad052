"""Shared helpers for the continuous-delivery suite (tests/cd)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def controller_venv() -> Path:
    """The ansible controller venv (Python >= 3.12) that scripts/test.sh builds."""
    return Path(os.environ.get("ANSIBLE_VENV", ROOT / ".venv-ansible"))


def load_yaml(path: Path) -> object:
    """Parse YAML with the controller venv's PyYAML (the service venv has none)."""
    code = (
        "import json, sys, yaml\n"
        "print(json.dumps(yaml.safe_load(open(sys.argv[1], encoding='utf-8'))))\n"
    )
    out = subprocess.run(
        [str(controller_venv() / "bin" / "python"), "-c", code, str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


@pytest.fixture
def root() -> Path:
    return ROOT


# The offline fake GCP API (tests/provision owns it), for bootstrap-ci.yml.
from tests.provision.conftest import fake_gcp  # noqa: E402, F401
