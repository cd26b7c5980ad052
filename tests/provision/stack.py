"""What the provision tests share: the playbooks, the project, the arguments
that point ansible-playbook at the fake, and the requests that changed something."""

from __future__ import annotations

from pathlib import Path

from tests.support.ansible_run import run_playbook

PROVISION = "ansible/provision.yml"
TEARDOWN = "ansible/teardown.yml"
PROJECT = "img2pdf-test"
C = f"compute/v1/projects/{PROJECT}"
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
# POSTs that only read.
READ_ONLY_POSTS = ("getIamPolicy", "listInstances")


def base_args(tmp: Path, *extra: str) -> list[str]:
    # An explicit localhost inventory: the repo's gcp_compute inventory (from
    # ansible.cfg) would try real credentials before the play starts.
    return [
        "-i", "localhost,",
        "-e", "gcp_auth_kind=accesstoken",
        "-e", "gcp_access_token=fake",
        "-e", f"gcp_project={PROJECT}",
        "-e", f"lb_url_file={tmp / 'lb-url'}",
        *extra,
    ]  # fmt: skip


def writes(log: list[dict]) -> list[tuple[str, str]]:
    """(method, path) of the requests that changed something."""
    out = []
    for r in log:
        path = r["path"].lstrip("/")
        if r["method"] not in MUTATING or path.endswith(READ_ONLY_POSTS):
            continue
        if int(r.get("status", 200)) >= 400:
            continue
        out.append((r["method"], path))
    return out


def assert_teardown_is_a_no_op(fake_gcp, workdir: Path) -> None:
    """A second teardown of a torn-down project changes nothing and sends no write."""
    before = len(fake_gcp.requests_log())
    result = run_playbook(TEARDOWN, *base_args(workdir), env=fake_gcp.env)
    assert result.rc == 0
    assert result.changed_total == 0, result.stdout[-4000:]
    assert writes(fake_gcp.requests_log()[before:]) == []
    assert fake_gcp.resources() == []
