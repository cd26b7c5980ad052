"""Each role owns its variables: prefixed defaults, all declared in its argument spec,
checked by ansible-core before the role's first task.

The spec check is the role's first task and is tagged `always`; a run with a tag no
task has executes it alone, so these tests reach no API and no host.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.ansible_run import ROOT, ansible_venv, run_playbook

ROLES_DIR = ROOT / "ansible" / "roles"
ROLES = sorted(p.name for p in ROLES_DIR.iterdir() if (p / "meta" / "argument_specs.yml").is_file())
# Values no type conversion accepts (a string would become a one-item list).
WRONG_VALUE = {"int": "not-a-number", "list": {"not": "a list"}, "bool": "maybe", "dict": [1, 2]}
# What a real run takes from elsewhere: the checkout above ansible/ (the playbook's
# folder) and the account the credential belongs to (the gcp_token lookup).
CONTEXT = {"app_source_dir": str(ROOT), "gcp_account": "deployer@example.iam.gserviceaccount.com"}


@functools.cache
def load_yaml(path: Path):
    """Parsed with the controller's own YAML library (the test venv has none)."""
    code = "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))"
    python = ansible_venv() / "bin" / "python"
    out = subprocess.run([python, "-c", code, path], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def spec_options(role: str) -> dict[str, dict]:
    spec = load_yaml(ROLES_DIR / role / "meta" / "argument_specs.yml")
    return spec["argument_specs"]["main"]["options"]


def defaults(role: str) -> dict:
    return load_yaml(ROLES_DIR / role / "defaults" / "main.yml") or {}


def check_spec(tmp_path: Path, role: str, *extra: str):
    """Run only the role's argument-spec check, with the repo's group_vars."""
    (tmp_path / "group_vars").symlink_to(ROOT / "ansible" / "group_vars")
    playbook = tmp_path / "spec.yml"  # JSON is YAML
    playbook.write_text(
        json.dumps(
            [
                {
                    "name": f"Argument spec of {role}",
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "roles": [{"role": role}],
                }
            ]
        )
    )
    return run_playbook(
        str(playbook),
        "-i",
        "localhost,",
        "--tags",
        "no-task-has-this-tag",
        "-e",
        json.dumps(CONTEXT),
        *extra,
        env=dict(os.environ),
        check_rc=False,
        timeout=120,
    )


def test_every_role_has_a_spec_and_a_readme():
    roles = sorted(p.name for p in ROLES_DIR.iterdir() if p.is_dir())
    assert roles == ROLES
    for role in roles:
        assert (ROLES_DIR / role / "README.md").is_file(), role


@pytest.mark.parametrize("role", ROLES)
def test_defaults_are_prefixed_and_declared(role):
    options = spec_options(role)
    for name in defaults(role):
        assert name.startswith(f"{role}_"), f"{role}: {name} is not prefixed"
        assert name in options, f"{role}: default {name} is missing from the argument spec"
    for name, option in options.items():
        assert option.get("description"), f"{role}: {name} has no description"


@pytest.mark.parametrize("role", ROLES)
def test_the_repo_values_pass_the_spec(tmp_path, role):
    result = check_spec(tmp_path, role)
    assert result.rc == 0, result.stdout[-3000:]
    assert "Validating arguments against arg spec 'main'" in result.stdout
    assert result.recap["localhost"]["ok"] == 1  # the check, and nothing else ran


@pytest.mark.parametrize("role", ROLES)
def test_a_value_of_the_wrong_type_stops_the_role_first(tmp_path, role):
    typed = {
        name: WRONG_VALUE[opt["type"]]
        for name, opt in spec_options(role).items()
        if opt.get("type") in WRONG_VALUE and "choices" not in opt and name.startswith(role)
    }
    assert typed, f"{role} has no typed option to check"  # every role has one today
    result = check_spec(tmp_path, role, "-e", json.dumps(typed))
    assert result.rc != 0
    assert "Validating arguments against arg spec 'main'" in result.stdout
    assert result.recap["localhost"]["failed"] == 1
    for name in typed:  # each option's type is checked, not only the first
        assert name in result.stdout, (name, result.stdout[-3000:])
