"""scripts/deploy.sh's control flow, with ansible and gcloud replaced by recording stubs.

The stubs stand in for the hosts: `ansible-playbook -e app_release=X` makes X the
release a loopback service reports and serves, `ansible … img2pdf-live` reports it. So
these tests pin down what the script decides (deploy, smoke, roll back to the
previous commit's own tree, skip an older release, abort when the hosts cannot be
asked, exit codes, job summary, IAP wiring) in seconds; the same script against a
real systemd machine is in test_deploy_machine.py.

The stubs live in a stand-in controller venv (ANSIBLE_VENV), the one deploy.sh must
use; the history deployed is a scratch repository with a copy of the deploy paths
and three commits, so nothing depends on how this checkout was cloned.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from tests.support.servers import free_port

from .conftest import ROOT, controller_venv
from .helpers import (
    copy_tree,
    git,
    linear_history,
    pdf_bytes,
    png_bytes,
    read_json,
    send,
    send_json,
    serve,
)

DEPLOY_PATHS = ("scripts", "config", "ansible", "tests/cd/fixtures")

ANSIBLE_PLAYBOOK_STUB = """#!/usr/bin/env bash
# Record the call, then "deploy": the named release becomes the current one.
{ printf '%s\\n' "$*"; echo "cwd_commit=$(git rev-parse HEAD)"; echo "env_release=$RELEASE";
  echo "remote_user=${ANSIBLE_REMOTE_USER:-}";
  for a in "$@"; do [[ $a == *.gcp.yml ]] && echo "group_vars=$(dirname "$a")/group_vars" \\
    "$(ls "$(dirname "$a")/group_vars/")"; done; } >>"$STUB_STATE/playbook.log"
for arg in "$@"; do
  case "$arg" in oslogin_env_file=*) echo ANSIBLE_REMOTE_USER=sa_1234567890 >"${arg#*=}" ;; esac
  case "$arg" in app_release=*) echo "${arg#app_release=}" >"$STUB_STATE/current" ;; esac
  case "$arg" in @*) cp "${arg#@}" "$STUB_STATE/extra_vars.json" ;; esac
done
if [[ -f "$STUB_STATE/fail_playbook" ]]; then exit 2; fi
"""

# What `ansible GROUP -o -m shell -a '…img2pdf-live…'` prints: the live release, no
# `current` link yet, an unreachable host (exit 4) for the first N calls, or no host.
ANSIBLE_STUB = """#!/usr/bin/env bash
echo "$*" >>"$STUB_STATE/adhoc.log"
n=$(( $(cat "$STUB_STATE/adhoc_calls" 2>/dev/null || echo 0) + 1 ))
echo "$n" >"$STUB_STATE/adhoc_calls"
if [[ -f "$STUB_STATE/unreachable" ]] && (( n <= $(cat "$STUB_STATE/unreachable") )); then
  echo "vm | UNREACHABLE!: Failed to connect to the host via ssh: Connection timed out"
  exit 4
fi
if [[ -f "$STUB_STATE/no_hosts" ]]; then
  echo "[WARNING]: No hosts matched, nothing to do" >&2
  exit 0
fi
if [[ -s "$STUB_STATE/current" ]]; then
  echo "vm | CHANGED | rc=0 | (stdout) img2pdf-live=$(cat "$STUB_STATE/current")"
else
  echo "vm | CHANGED | rc=0 | (stdout) img2pdf-live-none"
fi
"""

# An ansible found on PATH (the runner's pipx ansible-core): deploy.sh must never run it.
PATH_ANSIBLE_STUB = """#!/usr/bin/env bash
echo "$0 $*" >>"$STUB_STATE/path_ansible.log"
exit 1
"""

GCLOUD_STUB = """#!/usr/bin/env bash
echo "$*" >>"$STUB_STATE/gcloud.log"
case "$*" in
  "config get-value account"*) echo deployer@p.iam.gserviceaccount.com ;;
  *"os-login describe-profile"*) echo sa_1234567890 ;;
  *"addresses describe"*) echo 203.0.113.7 ;;
esac
"""


def _executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, list[str]]:
    """A copy of the deploy paths with three commits of history, oldest first."""
    repo = copy_tree(ROOT, tmp_path_factory.mktemp("project"), DEPLOY_PATHS)
    return repo, linear_history(repo, 3)


@pytest.fixture
def commits(project) -> tuple[str, str]:
    """(new, old): the commit to deploy and its parent."""
    _, shas = project
    return shas[1], shas[0]


@pytest.fixture
def stubs(tmp_path, project):
    repo, _ = project
    bin_dir = tmp_path / "bin"
    state = tmp_path / "state"
    state.mkdir()
    _executable(bin_dir / "gcloud", GCLOUD_STUB)
    _executable(bin_dir / "ansible-playbook", PATH_ANSIBLE_STUB)
    _executable(bin_dir / "ansible", PATH_ANSIBLE_STUB)
    # The controller venv deploy.sh must use: current for the requirements it pins.
    venv = tmp_path / "venv"
    _executable(venv / "bin" / "ansible-playbook", ANSIBLE_PLAYBOOK_STUB)
    _executable(venv / "bin" / "ansible", ANSIBLE_STUB)
    real_python = controller_venv() / "bin" / "python"
    _executable(venv / "bin" / "python", f'#!/bin/sh\nexec {real_python} "$@"\n')
    pinned = (repo / "config" / "requirements-ansible.txt").read_bytes()
    (venv / ".requirements.sha256").write_text(hashlib.sha256(pinned).hexdigest() + "\n")
    return bin_dir, state, venv


@pytest.fixture
def fake_hosts(stubs):
    """A loopback 'service' that serves whatever release the stubs deployed."""
    _, state, _ = stubs
    bad: set[str] = set()
    crash: set[str] = set()
    pdf = pdf_bytes(1)
    png = png_bytes()

    def current() -> str:
        f = state / "current"
        return f.read_text().strip() if f.exists() else ""

    def convert(h):
        if current() in bad:
            send_json(h, 500, {"detail": "Internal error.", "code": "internal_error"})
            return
        body = read_json(h)
        port = h.server.server_address[1]
        url = f"http://127.0.0.1:{port}/files/x.pdf"
        send_json(h, 200, {"source_url": body["source_url"], "converted_url": url})

    def openapi(h):
        # `info` as a list makes smoke_test.py itself crash (its stand-in for any bug there).
        info = [] if current() in crash else {"version": current()}
        send_json(h, 200, {"info": info})

    routes = {
        ("GET", "/ping"): lambda h: send_json(h, 200, {"ping": "pong"}),
        ("GET", "/openapi.json"): openapi,
        ("POST", "/image_to_pdf"): convert,
        ("GET", "/files/x.pdf"): lambda h: send(h, 200, pdf, "application/pdf"),
        ("GET", "/smoke.png"): lambda h: send(h, 200, png, "image/png"),
    }
    with serve(routes) as base:
        yield base, bad, state, crash


def run_deploy(stubs, project, base, release, *args, **env_extra) -> subprocess.CompletedProcess:
    bin_dir, state, venv = stubs
    repo, _ = project
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GITHUB_", "SMOKE_", "DEPLOY_", "GCP_", "BASE_URL", "ANSIBLE_"))
    }
    env.update(
        {
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "ANSIBLE_VENV": str(venv),
            "STUB_STATE": str(state),
            "RELEASE": release,
            "DEPLOY_TRANSPORT": "ssh",
            "DEPLOY_INVENTORY": str(state / "inventory.yml"),
            "DEPLOY_LOOKUP_DELAY": "0",
            "BASE_URL": base + "/",
            "SMOKE_SOURCE_URL": f"{base}/smoke.png",
            "SMOKE_WAIT": "5",
            "GITHUB_STEP_SUMMARY": str(state / "summary.md"),
            "GITHUB_OUTPUT": str(state / "output"),
            "CI": "",
        }
    )
    env.update(env_extra)
    return subprocess.run(
        ["bash", str(repo / "scripts" / "deploy.sh"), *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def summary_of(state: Path) -> str:
    return (state / "summary.md").read_text()


def deploy_over(stubs, fake_hosts, project, live, release, *args, **env_extra):
    """deploy.sh for `release` while the hosts report `live` as their current release."""
    base, _, state, _ = fake_hosts
    (state / "current").write_text(live)
    return run_deploy(stubs, project, base, release, *args, **env_extra)


def run_iap_deploy(stubs, project, base, release) -> subprocess.CompletedProcess:
    """CI's transport: IAP, the GCP inventory, project my-proj."""
    repo, _ = project
    return run_deploy(
        stubs,
        project,
        base,
        release,
        DEPLOY_TRANSPORT="iap",
        DEPLOY_INVENTORY=str(repo / "ansible" / "inventory" / "gcp.yml"),
        GCP_PROJECT="my-proj",
    )


def edit_playbook_stub(stubs, old: str, new: str) -> None:
    """Change the ansible-playbook stub's script (the first `old` becomes `new`)."""
    pb = stubs[2] / "bin" / "ansible-playbook"
    pb.write_text(pb.read_text().replace(old, new, 1))


def test_a_good_release_goes_live(stubs, fake_hosts, project, commits):
    base, _, state, _ = fake_hosts
    new, old = commits
    out = deploy_over(stubs, fake_hosts, project, old, new, "-e", "app_port=1234")
    assert out.returncode == 0, out.stderr
    assert (state / "current").read_text().strip() == new
    calls = (state / "playbook.log").read_text()
    assert f"-i {state / 'inventory.yml'} ansible/deploy.yml -e app_release={new}" in calls
    assert "-e app_port=1234" in calls, "extra arguments reach ansible-playbook"
    assert f"env_release={new}" in calls
    assert f"cwd_commit={new}" in calls, "the release ships from a checkout of its own commit"
    summary = (state / "summary.md").read_text()
    assert "Deploy succeeded" in summary and new in summary and base in summary
    assert f"| Previous release | `{old}` |" in summary
    assert f"| Live now | `{new}` |" in summary
    assert (state / "output").read_text() == f"url={base}/\n"


def test_a_release_failing_the_smoke_test_is_rolled_back(stubs, fake_hosts, project, commits):
    _, bad, state, _ = fake_hosts
    new, old = commits
    bad.add(new)
    out = deploy_over(stubs, fake_hosts, project, old, new)
    assert out.returncode == 1, out.stderr
    assert "POST /image_to_pdf answered HTTP 500" in out.stderr
    assert f"rolling back to {old}" in out.stderr
    assert (state / "current").read_text().strip() == old
    # The rollback ran the previous commit's own playbook and code, named as it.
    second = (state / "playbook.log").read_text().split("ansible/deploy.yml")[2]
    assert f"app_release={old}" in second
    assert f"cwd_commit={old}" in second and f"env_release={old}" in second
    summary = summary_of(state)
    assert "Deploy rolled back" in summary
    assert f"| Live now | `{old}` |" in summary
    assert "/tree-" not in git(project[0], "worktree", "list"), "release worktrees are removed"


def test_a_failed_first_deploy_has_nothing_to_roll_back_to(stubs, fake_hosts, project, commits):
    base, bad, state, _ = fake_hosts
    new, _ = commits
    bad.add(new)
    out = run_deploy(stubs, project, base, new)
    assert out.returncode == 1
    assert "no previous release to roll back to" in out.stderr
    summary = summary_of(state)
    assert "could not be rolled back" in summary
    assert f"| Live now | `{new}` |" in summary


def test_a_failed_playbook_fails_the_deploy_without_a_smoke_test(
    stubs, fake_hosts, project, commits
):
    _, _, state, _ = fake_hosts
    new, old = commits
    (state / "fail_playbook").touch()
    out = deploy_over(stubs, fake_hosts, project, old, new)
    assert out.returncode == 1
    assert "smoke test against" not in out.stderr
    assert "ansible-playbook failed" in (state / "summary.md").read_text()


def test_an_unreachable_source_image_is_inconclusive_and_keeps_the_release(
    stubs, fake_hosts, project, commits
):
    base, _, state, _ = fake_hosts
    new, old = commits
    out = deploy_over(stubs, fake_hosts, project, old, new, SMOKE_SOURCE_URL=f"{base}/missing.png")
    assert out.returncode == 3, out.stderr
    assert (state / "current").read_text().strip() == new
    assert "inconclusive" in summary_of(state)


def test_iap_transport_is_wired_from_configuration_only(stubs, fake_hosts, project, commits):
    """CI's transport: OS Login key, IAP ProxyCommand, the project in the inventory."""
    base, _, state, _ = fake_hosts
    repo, _ = project
    new, old = commits
    (state / "current").write_text(old)
    out = run_iap_deploy(stubs, project, base, new)
    assert out.returncode == 0, out.stderr
    calls = (state / "playbook.log").read_text()
    # The OS Login key and user come from the same play deploy.yml imports.
    assert "ansible/oslogin.yml -e gcp_project=my-proj" in calls
    assert "remote_user=sa_1234567890" in calls
    inventory = re.search(r"-i (\S+)", calls).group(1)
    assert inventory.endswith(".gcp.yml")
    # The IAP ProxyCommand lives in the inventory's group_vars: they stay beside the copy.
    group_vars = Path(inventory).parent / "group_vars"
    assert f"group_vars={group_vars}" in calls
    assert "img2pdf_app.yml" in calls
    adhoc = (state / "adhoc.log").read_text()
    assert f"--playbook-dir {repo / 'ansible'}" in adhoc, "ad-hoc calls see group_vars/all.yml"


def test_iap_inventory_copy_names_the_project(stubs, fake_hosts, project, commits, tmp_path):
    base, _, _, _ = fake_hosts
    new, _ = commits
    keep = tmp_path / "keep"
    # Make the stub copy the inventory it was given before the script cleans up.
    edit_playbook_stub(
        stubs,
        "if [[ -f",
        'for a in "$@"; do [[ $a == *.gcp.yml ]] && cp "$a" ' + f"{keep}; done\nif [[ -f",
    )
    out = run_iap_deploy(stubs, project, base, new)
    assert out.returncode == 0, out.stderr
    text = keep.read_text()
    assert "my-proj" in text and "img2pdf-test" not in text
    assert "plugin: google.cloud.gcp_compute" in text


# --- 7: the pinned controller, never an ansible on PATH --------------------------------


def test_the_pinned_controller_venv_is_used_never_an_ansible_on_path(
    stubs, fake_hosts, project, commits
):
    """The runner's PATH has pipx ansible-core (no google.cloud, no PyYAML)."""
    _, _, state, _ = fake_hosts
    new, old = commits
    out = deploy_over(stubs, fake_hosts, project, old, new)
    assert out.returncode == 0, out.stderr
    assert not (state / "path_ansible.log").exists(), (state / "path_ansible.log").read_text()
    assert f"app_release={new}" in (state / "playbook.log").read_text()
    assert "img2pdf-live" in (state / "adhoc.log").read_text()


# --- 8: "no current link" is not "host unreachable" ------------------------------------


def test_a_host_unreachable_for_a_while_is_asked_again(stubs, fake_hosts, project, commits):
    _, _, state, _ = fake_hosts
    new, old = commits
    (state / "unreachable").write_text("2")  # the first two look-ups time out
    out = deploy_over(stubs, fake_hosts, project, old, new, DEPLOY_LOOKUP_ATTEMPTS="3")
    assert out.returncode == 0, out.stderr
    assert "attempt 1/3" in out.stderr and "attempt 2/3" in out.stderr
    assert f"| Previous release | `{old}` |" in summary_of(state)


def test_a_host_that_stays_unreachable_aborts_before_deploying(stubs, fake_hosts, project, commits):
    _, bad, state, _ = fake_hosts
    new, old = commits
    bad.add(new)  # were it deployed, it could not be rolled back: nothing known to go back to
    (state / "unreachable").write_text("99")
    out = deploy_over(stubs, fake_hosts, project, old, new, DEPLOY_LOOKUP_ATTEMPTS="3")
    assert out.returncode == 2, out.stderr
    assert (state / "adhoc_calls").read_text().strip() == "3"
    assert not (state / "playbook.log").exists(), "nothing may be deployed"
    assert (state / "current").read_text() == old
    summary = summary_of(state)
    assert "Deploy aborted" in summary and "UNREACHABLE" in summary
    assert "| Live now | unknown (unreachable) |" in summary
    assert "::error title=Deploy aborted::" in out.stderr


def test_no_host_in_the_inventory_is_not_a_first_deploy(stubs, fake_hosts, project, commits):
    base, _, state, _ = fake_hosts
    new, _ = commits
    (state / "no_hosts").touch()
    out = run_deploy(stubs, project, base, new, DEPLOY_LOOKUP_ATTEMPTS="1")
    assert out.returncode == 2, out.stderr
    assert not (state / "playbook.log").exists()
    assert "no host in group img2pdf_app answered" in summary_of(state)


def test_no_current_link_is_a_first_deploy(stubs, fake_hosts, project, commits):
    base, _, state, _ = fake_hosts
    new, _ = commits
    out = run_deploy(stubs, project, base, new)
    assert out.returncode == 0, out.stderr
    assert f"release {new} replaces nothing" in out.stderr
    assert "| Previous release | `none` |" in summary_of(state)


# --- 9: never backwards ----------------------------------------------------------------


def test_an_older_release_never_replaces_a_newer_live_one(stubs, fake_hosts, project):
    """CI runs finish out of order, and an old run can be re-run."""
    _, _, state, _ = fake_hosts
    _, shas = project
    out = deploy_over(stubs, fake_hosts, project, shas[2], shas[1])
    assert out.returncode == 0, out.stderr
    assert not (state / "playbook.log").exists(), "nothing may be deployed"
    assert (state / "current").read_text() == shas[2]
    summary = summary_of(state)
    assert "Deploy skipped" in summary and "an ancestor of it" in summary
    assert f"| Live now | `{shas[2]}` |" in summary
    assert "::notice title=Deploy skipped::" in out.stderr


def test_the_oldest_commit_is_skipped_too(stubs, fake_hosts, project):
    _, _, state, _ = fake_hosts
    _, shas = project
    out = deploy_over(stubs, fake_hosts, project, shas[2], shas[0])
    assert out.returncode == 0, out.stderr
    assert not (state / "playbook.log").exists()


def test_a_newer_release_replaces_the_oldest(stubs, fake_hosts, project):
    _, _, state, _ = fake_hosts
    _, shas = project
    out = deploy_over(stubs, fake_hosts, project, shas[0], shas[2])
    assert out.returncode == 0, out.stderr
    assert (state / "current").read_text().strip() == shas[2]


def test_redeploying_the_live_release_is_not_skipped(stubs, fake_hosts, project, commits):
    base, _, state, _ = fake_hosts
    new, _ = commits
    (state / "current").write_text(new)
    out = run_deploy(stubs, project, base, new)
    assert out.returncode == 0, out.stderr
    assert f"app_release={new}" in (state / "playbook.log").read_text()


def test_a_live_release_unknown_here_aborts(stubs, fake_hosts, project, commits):
    """Not in this clone: it may be newer, so it is not replaced blindly."""
    base, _, state, _ = fake_hosts
    new, _ = commits
    (state / "current").write_text("f" * 40)
    out = run_deploy(stubs, project, base, new)
    assert out.returncode == 2, out.stderr
    assert not (state / "playbook.log").exists()
    assert "is not a commit in this clone" in summary_of(state)


# --- 10: every smoke exit classified ----------------------------------------------------


def test_a_smoke_usage_error_is_no_verdict_and_no_rollback(stubs, fake_hosts, project, commits):
    base, _, state, _ = fake_hosts
    new, old = commits
    (state / "current").write_text(old)
    out = run_deploy(stubs, project, base, new, SMOKE_WAIT="soon")  # argparse: exit 2
    assert out.returncode == 4, out.stderr
    assert "rolling back" not in out.stderr
    assert (state / "current").read_text().strip() == new
    summary = summary_of(state)
    assert "Deploy unverified" in summary and "usage error of the smoke test" in summary
    assert "not rolled back" in summary
    assert "::error title=Smoke test broke::" in out.stderr


def test_a_smoke_test_crash_is_no_verdict_and_no_rollback(stubs, fake_hosts, project, commits):
    _, _, state, crash = fake_hosts
    new, old = commits
    crash.add(new)
    out = deploy_over(stubs, fake_hosts, project, old, new)
    assert out.returncode == 4, out.stderr
    assert "CRASHED" in out.stderr and "Traceback" in out.stderr
    assert "rolling back" not in out.stderr
    assert (state / "current").read_text().strip() == new
    assert "the smoke test crashed (exit 4)" in summary_of(state)


def test_a_rollback_whose_own_smoke_test_fails_says_what_is_live(
    stubs, fake_hosts, project, commits
):
    _, bad, state, _ = fake_hosts
    new, old = commits
    bad.update({new, old})
    out = deploy_over(stubs, fake_hosts, project, old, new)
    assert out.returncode == 1, out.stderr
    assert f"rolling back to {old}" in out.stderr
    summary = summary_of(state)
    assert "Deploy failed" in summary
    assert f"| Live now | `{old}` |" in summary
    assert "whose own smoke test then failed (the service answered wrongly)" in summary
    assert "::error title=Rollback unhealthy::" in out.stderr


def test_a_failed_rollback_playbook_says_what_is_live(stubs, fake_hosts, project, commits):
    _, bad, state, _ = fake_hosts
    new, old = commits
    bad.add(new)
    # The deploy works; the rollback's playbook fails before switching anything.
    edit_playbook_stub(
        stubs, "for arg in", f'[[ "$*" == *app_release={old}* ]] && exit 2\nfor arg in'
    )
    out = deploy_over(stubs, fake_hosts, project, old, new)
    assert out.returncode == 1, out.stderr
    summary = summary_of(state)
    assert f"the rollback to {old[:12]} failed too" in summary
    assert f"| Live now | `{new}` |" in summary


def test_a_real_unreachable_host_aborts_before_deploying(stubs, project, commits, tmp_path):
    """The real controller against a closed loopback port: UNREACHABLE, not "first deploy"."""
    _, state, venv = stubs
    for name in ("ansible", "ansible-playbook"):
        (venv / "bin" / name).unlink()
        (venv / "bin" / name).symlink_to(controller_venv() / "bin" / name)
    inventory = tmp_path / "hosts.yml"
    host = {
        "ansible_host": "127.0.0.1",
        "ansible_port": free_port(),
        "ansible_user": "nobody",
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
    }
    inventory.write_text(json.dumps({"img2pdf_app": {"hosts": {"vm": host}}}))
    new, _ = commits
    out = run_deploy(
        stubs,
        project,
        "http://127.0.0.1:9",
        new,
        DEPLOY_INVENTORY=str(inventory),
        DEPLOY_LOOKUP_ATTEMPTS="2",
        ANSIBLE_INVENTORY_ENABLED="ansible.builtin.yaml",
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"),
    )
    assert out.returncode == 2, out.stderr
    assert "attempt 2/2" in out.stderr
    summary = summary_of(state)
    assert "Deploy aborted" in summary and "UNREACHABLE" in summary, summary
    assert f"deploying {new}" not in out.stderr, "nothing may be deployed"


def test_an_older_release_goes_live_only_when_asked_by_hand(stubs, fake_hosts, project):
    """A deliberate rollback from a laptop (docs/delivery.md); the workflow never asks."""
    _, _, state, _ = fake_hosts
    _, shas = project
    out = deploy_over(stubs, fake_hosts, project, shas[2], shas[1], DEPLOY_ALLOW_OLDER="1")
    assert out.returncode == 0, out.stderr
    assert (state / "current").read_text().strip() == shas[1]
    deploy_yml = (ROOT / ".github" / "workflows" / "deploy.yml").read_text()
    assert "DEPLOY_ALLOW_OLDER" not in deploy_yml
