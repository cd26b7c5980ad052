"""scripts/deploy.sh's control flow, with ansible and gcloud replaced by recording stubs.

The stubs stand in for the hosts: `ansible-playbook -e app_release=X` makes X the
release a loopback service reports and serves, `ansible … readlink` reports it. So
these tests pin down what the script decides (deploy, smoke, roll back to the
previous commit's own tree, exit codes, job summary, IAP wiring) in seconds; the
same script against a real systemd machine is in test_deploy_machine.py.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from .conftest import ROOT, controller_venv
from .helpers import pdf_bytes, png_bytes, read_json, send, send_json, serve

DEPLOY = ROOT / "scripts" / "deploy.sh"

ANSIBLE_PLAYBOOK_STUB = """#!/usr/bin/env bash
# Record the call, then "deploy": the named release becomes the current one.
{ printf '%s\\n' "$*"; echo "cwd_commit=$(git rev-parse HEAD)"; echo "env_release=$RELEASE";
  echo "remote_user=${ANSIBLE_REMOTE_USER:-}";
  for a in "$@"; do [[ $a == *.gcp.yml ]] && echo "group_vars=$(dirname "$a")/group_vars" \
    "$(ls "$(dirname "$a")/group_vars/")"; done; } >>"$STUB_STATE/playbook.log"
for arg in "$@"; do
  case "$arg" in oslogin_env_file=*) echo ANSIBLE_REMOTE_USER=sa_1234567890 >"${arg#*=}" ;; esac
  case "$arg" in app_release=*) echo "${arg#app_release=}" >"$STUB_STATE/current" ;; esac
  case "$arg" in @*) cp "${arg#@}" "$STUB_STATE/extra_vars.json" ;; esac
done
if [[ -f "$STUB_STATE/fail_playbook" ]]; then exit 2; fi
"""

ANSIBLE_STUB = """#!/usr/bin/env bash
echo "$*" >>"$STUB_STATE/adhoc.log"
if [[ -s "$STUB_STATE/current" ]]; then
  echo "vm | CHANGED | rc=0 | (stdout) /opt/img2pdf/releases/$(cat "$STUB_STATE/current")"
else
  echo "vm | FAILED | rc=1 | (stdout) "
  exit 2
fi
"""

GCLOUD_STUB = """#!/usr/bin/env bash
echo "$*" >>"$STUB_STATE/gcloud.log"
case "$*" in
  "config get-value account"*) echo deployer@p.iam.gserviceaccount.com ;;
  *"os-login describe-profile"*) echo sa_1234567890 ;;
  *"addresses describe"*) echo 203.0.113.7 ;;
esac
"""


def _commits() -> tuple[str, str]:
    out = subprocess.run(
        ["git", "rev-list", "--max-count=2", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    shas = out.stdout.split()
    if len(shas) < 2:
        pytest.fail("deploy tests need two commits of history (a shallow clone?)")
    return shas[0], shas[1]


@pytest.fixture
def stubs(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    state = tmp_path / "state"
    state.mkdir()
    for name, text in [
        ("ansible-playbook", ANSIBLE_PLAYBOOK_STUB),
        ("ansible", ANSIBLE_STUB),
        ("gcloud", GCLOUD_STUB),
    ]:
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return bin_dir, state


@pytest.fixture
def fake_hosts(stubs):
    """A loopback 'service' that serves whatever release the stubs deployed."""
    _, state = stubs
    bad = set()
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

    routes = {
        ("GET", "/ping"): lambda h: send_json(h, 200, {"ping": "pong"}),
        ("GET", "/openapi.json"): lambda h: send_json(h, 200, {"info": {"version": current()}}),
        ("POST", "/image_to_pdf"): convert,
        ("GET", "/files/x.pdf"): lambda h: send(h, 200, pdf, "application/pdf"),
        ("GET", "/smoke.png"): lambda h: send(h, 200, png, "image/png"),
    }
    with serve(routes) as base:
        yield base, bad, state


def run_deploy(stubs, base, release, *args, **env_extra) -> subprocess.CompletedProcess:
    bin_dir, state = stubs
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GITHUB_", "SMOKE_", "DEPLOY_", "GCP_", "BASE_URL", "ANSIBLE_"))
    }
    env.update(
        {
            "PATH": f"{bin_dir}:{controller_venv() / 'bin'}:{os.environ['PATH']}",
            "STUB_STATE": str(state),
            "RELEASE": release,
            "DEPLOY_TRANSPORT": "ssh",
            "DEPLOY_INVENTORY": str(state / "inventory.yml"),
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
        ["bash", str(DEPLOY), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_a_good_release_goes_live(stubs, fake_hosts):
    base, _, state = fake_hosts
    new, old = _commits()
    (state / "current").write_text(old)
    out = run_deploy(stubs, base, new, "-e", "app_port=1234")
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
    assert (state / "output").read_text() == f"url={base}/\n"


def test_a_release_failing_the_smoke_test_is_rolled_back(stubs, fake_hosts):
    base, bad, state = fake_hosts
    new, old = _commits()
    (state / "current").write_text(old)
    bad.add(new)
    out = run_deploy(stubs, base, new)
    assert out.returncode == 1, out.stderr
    assert "POST /image_to_pdf answered HTTP 500" in out.stderr
    assert f"rolling back to {old}" in out.stderr
    assert (state / "current").read_text().strip() == old
    # The rollback ran the previous commit's own playbook and code, named as it.
    second = (state / "playbook.log").read_text().split("ansible/deploy.yml")[2]
    assert f"app_release={old}" in second
    assert f"cwd_commit={old}" in second and f"env_release={old}" in second
    summary = (state / "summary.md").read_text()
    assert "Deploy rolled back" in summary
    worktrees = subprocess.run(
        ["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True
    )
    assert "/tree-" not in worktrees.stdout, "the release worktrees are cleaned up"


def test_a_failed_first_deploy_has_nothing_to_roll_back_to(stubs, fake_hosts):
    base, bad, state = fake_hosts
    new, _ = _commits()
    bad.add(new)
    out = run_deploy(stubs, base, new)
    assert out.returncode == 1
    assert "no previous release to roll back to" in out.stderr
    assert "could not be rolled back" in (state / "summary.md").read_text()


def test_a_failed_playbook_fails_the_deploy_without_a_smoke_test(stubs, fake_hosts):
    base, _, state = fake_hosts
    new, old = _commits()
    (state / "current").write_text(old)
    (state / "fail_playbook").touch()
    out = run_deploy(stubs, base, new)
    assert out.returncode == 1
    assert "smoke test against" not in out.stderr
    assert "ansible-playbook failed" in (state / "summary.md").read_text()


def test_an_unreachable_source_image_is_inconclusive_and_keeps_the_release(stubs, fake_hosts):
    base, _, state = fake_hosts
    new, old = _commits()
    (state / "current").write_text(old)
    out = run_deploy(stubs, base, new, SMOKE_SOURCE_URL=f"{base}/missing.png")
    assert out.returncode == 3, out.stderr
    assert (state / "current").read_text().strip() == new
    assert "inconclusive" in (state / "summary.md").read_text()


def test_iap_transport_is_wired_from_configuration_only(stubs, fake_hosts):
    """CI's transport: OS Login key, IAP ProxyCommand, the project in the inventory."""
    base, _, state = fake_hosts
    new, old = _commits()
    (state / "current").write_text(old)
    out = run_deploy(
        stubs,
        base,
        new,
        DEPLOY_TRANSPORT="iap",
        DEPLOY_INVENTORY=str(ROOT / "ansible" / "inventory" / "gcp.yml"),
        GCP_PROJECT="my-proj",
    )
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
    assert f"--playbook-dir {ROOT / 'ansible'}" in adhoc, "ad-hoc calls see group_vars/all.yml"


def test_iap_inventory_copy_names_the_project(stubs, fake_hosts, tmp_path):
    base, _, _ = fake_hosts
    new, _ = _commits()
    keep = tmp_path / "keep"
    # Make the stub copy the inventory it was given before the script cleans up.
    pb = stubs[0] / "ansible-playbook"
    pb.write_text(
        pb.read_text().replace(
            "if [[ -f",
            'for a in "$@"; do [[ $a == *.gcp.yml ]] && cp "$a" ' + f"{keep}; done\nif [[ -f",
        )
    )
    out = run_deploy(
        stubs,
        base,
        new,
        DEPLOY_TRANSPORT="iap",
        DEPLOY_INVENTORY=str(ROOT / "ansible" / "inventory" / "gcp.yml"),
        GCP_PROJECT="my-proj",
    )
    assert out.returncode == 0, out.stderr
    text = keep.read_text()
    assert "my-proj" in text and "img2pdf-test" not in text
    assert "plugin: google.cloud.gcp_compute" in text
