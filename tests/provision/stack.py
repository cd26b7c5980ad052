"""What the provision tests share: the playbooks, the project, the arguments
that point ansible-playbook at the fake, and the requests that changed something."""

from __future__ import annotations

from pathlib import Path

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
