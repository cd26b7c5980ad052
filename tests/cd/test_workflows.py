"""The two GitHub workflows: triggers, concurrency, least permissions, pinned actions.

actionlint checks syntax and expressions; these tests check the delivery rules
that a valid workflow can still break.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support import machine

from .conftest import ROOT, controller_venv, load_yaml

WORKFLOWS = ROOT / ".github" / "workflows"
SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")


def _load(name: str) -> dict:
    data = load_yaml(WORKFLOWS / name)
    assert isinstance(data, dict)
    # PyYAML (YAML 1.1) reads a bare `on:` key as the boolean True.
    if True in data:
        data["on"] = data.pop(True)
    return data


@pytest.fixture(scope="module")
def ci() -> dict:
    return _load("ci.yml")


@pytest.fixture(scope="module")
def deploy() -> dict:
    return _load("deploy.yml")


def _steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def _permission_sets(workflow: dict) -> list[dict]:
    sets = [workflow.get("permissions")]
    sets += [job.get("permissions") for job in workflow["jobs"].values()]
    return [p for p in sets if p is not None]


def test_actionlint_is_clean():
    actionlint = controller_venv() / "bin" / "actionlint"
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    out = subprocess.run([str(actionlint), *files], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("name", ["ci.yml", "deploy.yml"])
def test_third_party_actions_are_pinned_by_full_sha(name):
    uses = [s["uses"] for s in _steps(_load(name)) if "uses" in s]
    assert uses, "expected some actions"
    for ref in uses:
        if ref.startswith("./"):
            continue  # local actions are versioned with the repo itself
        assert SHA_PIN.match(ref), f"{name}: {ref} is not pinned to a full commit SHA"


@pytest.mark.parametrize("name", ["ci.yml", "deploy.yml"])
def test_every_pin_names_its_release(name):
    text = (WORKFLOWS / name).read_text()
    for line in text.splitlines():
        if re.search(r"uses: \S+@[0-9a-f]{40}", line):
            assert re.search(r"#\s*v\d", line), f"{name}: pin without a tag comment: {line}"


def test_ci_runs_on_every_push_and_pull_request(ci):
    assert "push" in ci["on"] and "pull_request" in ci["on"]
    # No branch filter: every branch and every PR is tested.
    assert not (ci["on"]["push"] or {}).get("branches")
    assert not (ci["on"]["pull_request"] or {}).get("branches")


def test_ci_runs_the_readme_test_command(ci):
    runs = " ".join(s.get("run", "") for s in _steps(ci))
    assert ".ci/run" in runs or "scripts/test.sh" in runs


def test_ci_caches_pip(ci):
    setup = [s for s in _steps(ci) if s.get("uses", "").startswith("actions/setup-python@")]
    assert setup and setup[0]["with"]["cache"] == "pip"


def test_ci_is_read_only(ci):
    assert ci["permissions"] == {"contents": "read"}
    for perms in _permission_sets(ci):
        assert "id-token" not in perms, "CI must not be able to mint cloud credentials"
        assert all(v in ("read", "none") for v in perms.values())


def test_deploy_triggers_only_after_ci_passed_on_main(deploy):
    on = deploy["on"]
    assert set(on) == {"workflow_run", "workflow_dispatch"}
    run = on["workflow_run"]
    assert run["workflows"] == [ci_name()]
    assert run["types"] == ["completed"]
    assert run["branches"] == ["main"]
    (job,) = deploy["jobs"].values()
    cond = job["if"]
    assert "github.event.workflow_run.conclusion == 'success'" in cond
    assert "github.event.workflow_run.head_branch == 'main'" in cond
    assert "github.event.workflow_run.event == 'push'" in cond


def ci_name() -> str:
    return _load("ci.yml")["name"]


def test_deploys_queue_and_are_never_cancelled(deploy):
    conc = deploy["concurrency"]
    assert isinstance(conc, dict) and conc["group"]
    assert "${{" not in conc["group"], "one fixed group: deploys of any ref must not overlap"
    assert conc["cancel-in-progress"] is False


def test_id_token_only_on_the_deploy_job(deploy):
    assert deploy["permissions"] == {}
    (job,) = deploy["jobs"].values()
    assert job["permissions"] == {"contents": "read", "id-token": "write"}


def test_deploy_authenticates_with_workload_identity_not_keys(deploy):
    steps = _steps(deploy)
    auth = [s for s in steps if s.get("uses", "").startswith("google-github-actions/auth@")]
    assert len(auth) == 1
    inputs = auth[0]["with"]
    assert "workload_identity_provider" in inputs and "service_account" in inputs
    assert "credentials_json" not in inputs
    assert "vars.GCP_WORKLOAD_IDENTITY_PROVIDER" in inputs["workload_identity_provider"]
    assert "vars.GCP_DEPLOYER_SA" in inputs["service_account"]
    setup_gcloud = "google-github-actions/setup-gcloud@"
    gcloud = [s for s in steps if s.get("uses", "").startswith(setup_gcloud)]
    assert gcloud and steps.index(auth[0]) < steps.index(gcloud[0])


def test_deploy_workflow_only_wires_inputs_into_the_script(deploy):
    runs = [s["run"].strip() for s in _steps(deploy) if "run" in s]
    assert runs == ["scripts/deploy.sh"], "all deploy logic belongs in scripts/deploy.sh"
    (step,) = [s for s in _steps(deploy) if "run" in s]
    assert step["env"]["SENTRY_DSN"] == "${{ secrets.SENTRY_DSN }}"
    assert step["env"]["DEPLOY_TRANSPORT"] == "iap"
    # The release is the commit CI tested, also what gets checked out.
    (job,) = deploy["jobs"].values()
    assert "workflow_run.head_sha" in job["env"]["RELEASE"]
    checkout = next(s for s in _steps(deploy) if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["ref"] == "${{ env.RELEASE }}"
    assert checkout["with"]["fetch-depth"] == 0, "rollback needs the previous release's commit"


@pytest.mark.parametrize("name", ["ci.yml", "deploy.yml"])
def test_checkout_does_not_persist_the_token(name):
    for step in _steps(_load(name)):
        if step.get("uses", "").startswith("actions/checkout@"):
            assert step["with"]["persist-credentials"] is False


@pytest.mark.parametrize("name", ["ci.yml", "deploy.yml"])
def test_no_service_account_keys_anywhere(name):
    text = (WORKFLOWS / name).read_text().lower()
    assert "credentials_json" not in text
    assert "private_key" not in text


# --- CI as it really runs: parallel jobs, a cached Debian root, per-commit groups on main --


def _test_sh_suites(run: str) -> list[str]:
    """The suites a `… scripts/test.sh a b c` command runs ([] = every suite)."""
    words = run.split()
    return words[words.index("scripts/test.sh") + 1 :] if "scripts/test.sh" in words else []


def _all_suites() -> list[str]:
    text = (ROOT / "scripts" / "test.sh").read_text()
    return re.search(r"^ALL_SUITES=\(([^)]*)\)", text, re.M).group(1).split()


def _job_suites(ci: dict) -> dict[str, list[str]]:
    out = {}
    for name, job in ci["jobs"].items():
        runs = [s["run"] for s in job["steps"] if "scripts/test.sh" in s.get("run", "")]
        assert len(runs) == 1, f"{name}: one scripts/test.sh call per job"
        out[name] = _test_sh_suites(runs[0])
    return out


def test_ci_runs_every_suite_once_in_parallel_jobs(ci):
    suites = _job_suites(ci)
    assert len(suites) >= 4, "lint+unit+service+web, load, provision, deploy+cd"
    assert all(suites.values()), "each job names its suites"
    flat = [s for job in suites.values() for s in job]
    assert sorted(flat) == sorted(_all_suites()), "every suite of test.sh, each once"
    groups = {frozenset(v) for v in suites.values()}
    assert frozenset({"lint", "unit", "service", "web"}) in groups
    assert frozenset({"load"}) in groups and frozenset({"provision"}) in groups
    # deploy and cd boot the same kind of machine: one job, one cached root.
    assert frozenset({"deploy", "cd"}) in groups
    for job in ci["jobs"].values():
        assert "needs" not in job, "the jobs run in parallel"
        assert job["runs-on"] == "ubuntu-24.04"


def test_ci_entry_still_runs_every_suite():
    text = (ROOT / ".ci" / "run").read_text()
    (line,) = [ln for ln in text.splitlines() if "scripts/test.sh" in ln]
    assert _test_sh_suites(line) == [], ".ci/run runs all suites (no subset)"


def test_ci_caches_the_debian_root_keyed_by_its_inputs(ci):
    (job,) = [j for j in ci["jobs"].values() if "deploy" in _job_suites({"jobs": {"j": j}})["j"]]
    steps = job["steps"]
    named = next(s for s in steps if s.get("id") == "rootfs")
    assert "python3 -m tests.support.machine key" in named["run"]
    cache = next(s for s in steps if s.get("uses", "").startswith("actions/cache@"))
    assert steps.index(named) < steps.index(cache) < steps.index(steps[-1])
    assert "steps.rootfs.outputs.name" in cache["with"]["key"]
    assert cache["with"]["path"].startswith("${{ env.IMG2PDF_TEST_CACHE }}/")
    assert "IMG2PDF_TEST_CACHE=$IMG2PDF_TEST_CACHE" in steps[-1]["run"], "tests use that cache"


def test_the_cache_key_is_the_tarball_the_machine_builds():
    out = subprocess.run(
        [sys.executable, "-m", "tests.support.machine", "key"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == machine.rootfs_tarball_name()
    assert re.fullmatch(r"debian-bookworm-[0-9a-f]{16}\.tar", out.stdout.strip())


def test_ci_on_main_gives_every_commit_its_own_concurrency_group(ci):
    conc = ci["concurrency"]
    group = conc["group"]
    # On main: the commit SHA, so no commit's run is cancelled while pending.
    assert "github.ref == 'refs/heads/main' && github.sha" in group
    # Elsewhere: the ref, so a newer push supersedes the older run.
    assert "|| github.ref" in group
    assert conc["cancel-in-progress"] == "${{ github.ref != 'refs/heads/main' }}"


def test_checkouts_need_no_history(ci):
    """The tests make their own history: CI's checkout stays at depth 1."""
    for step in _steps(ci):
        if step.get("uses", "").startswith("actions/checkout@"):
            assert "fetch-depth" not in step["with"]
