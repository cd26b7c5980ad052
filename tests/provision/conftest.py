"""The fake GCP fixture for provisioning tests.

`fake_gcp` starts, once per session, a CONNECT proxy on 127.0.0.1 that
terminates TLS for the Google API hosts (certificates from a local trustme CA)
and answers with an in-memory fake of Compute, Storage, IAM, Resource Manager,
Service Usage, IAM Credentials and OS Login, validated against Google's
discovery documents and as strict as GCP: after `reset()` the project is
brand-new (only the default services enabled), operations answer RUNNING on
the reply and the first poll, new service accounts are refused in bindings
for IAM_LAG_S, the project policy holds a conditional binding. Tests turn the
other knobs through `fake_gcp.state` (see FakeGcpState). Ansible reaches it through `fake_gcp.env`:

    result = run_playbook("ansible/provision.yml", "-e", "gcp_auth_kind=accesstoken",
                          "-e", "gcp_access_token=fake", env=fake_gcp.env)

State keys (what `get`, `list` and `resources` speak) are REST paths without
the host, prefixed by the API name:

    compute/v1/projects/img2pdf-test/global/networks/NAME
    compute/v1/projects/img2pdf-test/regions/us-central1/subnetworks/NAME
    compute/v1/projects/img2pdf-test/zones/us-central1-b/instances/NAME
    storage/v1/b/BUCKET                 storage/v1/b/BUCKET/o/OBJECT
    iam/v1/projects/img2pdf-test/serviceAccounts/EMAIL
    iam/v1/projects/123456789012/locations/global/workloadIdentityPools/ID[/providers/ID]

IAM policies (not counted by `resources()`):

    storage/v1/b/BUCKET/iam
    cloudresourcemanager/v1/projects/img2pdf-test:iamPolicy   (alias v1/projects/P:iamPolicy)
    iam/v1/projects/img2pdf-test/serviceAccounts/EMAIL:iamPolicy

`get` also accepts a full https URL (selfLink). `list` takes a collection,
either a full key prefix or the short forms "compute/global/firewalls",
"compute/regions/us-central1/subnetworks", "compute/zones/ZONE/instances",
"storage/b", "storage/b/BUCKET/o", "iam/serviceAccounts",
"iam/workloadIdentityPools", "iam/workloadIdentityPools/POOL/providers".
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.provision.fakegcp import FakeGcpServer, FakeGcpState
from tests.provision.stack import PROVISION, base_args
from tests.support.ansible_run import PlaybookResult, run_playbook

__all__ = ["FakeGcp", "PlaybookResult", "fake_gcp", "run_playbook"]

PROJECT = "img2pdf-test"
PROJECT_NUMBER = "123456789012"
# Short but nonzero: a new service account is refused in IAM bindings for this
# long, and every operation answers RUNNING on the reply and the first poll.
# 5 s, not less: the tasks between an account's creation and its first binding
# took more than 2 s on a loaded 2-core box (two workers), and the refusal
# must still be seen there.
IAM_LAG_S = 5.0
OP_POLLS = 1


class FakeGcp:
    """Handle on the running fake: its env for subprocesses and its state."""

    def __init__(self, server: FakeGcpServer):
        self._server = server
        self._state: FakeGcpState = server.state
        self.project: str = self._state.project
        self.project_number: str = self._state.project_number
        self.ca_path: Path = server.ca_path
        self.proxy_url: str = server.proxy_url
        env = dict(os.environ)
        env.update(server.env_overrides())
        self.env: dict[str, str] = env

    # ---------------------------------------------------------------- keys
    def _key(self, path: str) -> str:
        path = re.sub(r"^https://[^/]+/", "", path.strip()).split("?")[0].strip("/")
        if re.match(r"^v\d+/projects/[^/]+:iamPolicy$", path):
            path = "cloudresourcemanager/" + path
        m = re.match(r"^iam/v1/projects/([^/]+)/locations/", path)
        if m and m.group(1) == self.project:
            path = path.replace(f"projects/{self.project}/", f"projects/{self.project_number}/", 1)
        if path.startswith("v1/projects/") and "/serviceAccounts/" in path:
            path = "iam/" + path
        return path

    def get(self, path: str) -> dict[str, Any] | None:
        """A stored resource or IAM policy by key (or selfLink); None if absent."""
        key = self._key(path)
        with self._state.lock:
            if key.startswith("cloudresourcemanager/") and key.endswith(":iamPolicy"):
                from tests.provision.fakegcp.crm import crm_policy_key

                project = key.split("/")[3].split(":")[0]
                key = crm_policy_key(self._state, project)
            res = self._state.store.get(key) or self._state.policies.get(key)
            return copy.deepcopy(res)

    def list(self, collection: str) -> list[dict[str, Any]]:
        """Resources directly inside a collection (see the module docstring for names)."""
        prefix = self._collection_key(collection)
        with self._state.lock:
            return [
                copy.deepcopy(r)
                for k, r in sorted(self._state.store.items())
                if k.rsplit("/", 1)[0] == prefix
            ]

    def _collection_key(self, collection: str) -> str:
        c = collection.strip("/")
        p, n = self.project, self.project_number
        if c.startswith("compute/") and not c.startswith("compute/v1/"):
            return f"compute/v1/projects/{p}/" + c.removeprefix("compute/")
        if c.startswith("storage/") and not c.startswith("storage/v1/"):
            return "storage/v1/" + c.removeprefix("storage/")
        if c == "iam/serviceAccounts":
            return f"iam/v1/projects/{p}/serviceAccounts"
        if c.startswith("iam/workloadIdentityPools"):
            return f"iam/v1/projects/{n}/locations/global/" + c.removeprefix("iam/")
        return self._key(c)

    def resources(self) -> list[str]:
        """Every live stored resource key (soft-deleted workload identity pools excluded)."""
        with self._state.lock:
            return sorted(k for k, r in self._state.store.items() if r.get("state") != "DELETED")

    def requests_log(self) -> list[dict[str, Any]]:
        """Every request: method, host, path (with leading /), query (dict), status,
        id (discovery method id, e.g. compute.networks.insert, or None), body (parsed)."""
        with self._state.lock:
            return copy.deepcopy(self._state.log)

    def write_requests(self) -> list[dict[str, Any]]:
        """Logged requests that can change state (not GET, nor read-only POST verbs)."""
        read_only = ("getIamPolicy", "listInstances", "testIamPermissions", "wait")
        return [
            e
            for e in self.requests_log()
            if e["method"] in ("POST", "PUT", "PATCH", "DELETE")
            and not (e["id"] or "").endswith(read_only)
        ]

    def unknown_routes(self) -> list[str]:
        """Requests no discovery method matched (or the fake does not implement)."""
        with self._state.lock:
            return list(self._state.unknown)

    def refused_connects(self) -> list[str]:
        """CONNECT targets the proxy refused (anything but the Google API hosts)."""
        return self._server.refused

    def clear_log(self) -> None:
        with self._state.lock:
            self._state.log.clear()
            self._state.unknown.clear()

    def put_object(self, bucket: str, name: str, data: bytes = b"") -> dict[str, Any]:
        """Store an object in a bucket (e.g. to prove 'bucket not empty')."""
        with self._state.lock:
            return copy.deepcopy(self._state.put_object(bucket, name, data))

    def reset(self) -> None:
        """Back to a brand-new project: no resources, no operations, no logged
        requests, only the default services enabled, every knob at its default."""
        self._state.reset()

    def enable_all_services(self) -> None:
        """For tests of single APIs that do not go through Service Usage first."""
        from tests.provision.fakegcp.state import API_SERVICE

        with self._state.lock:
            self._state.services.update(API_SERVICE.values())

    @property
    def state(self) -> FakeGcpState:
        """The fake's knobs (op_polls, iam_lag_s, org_public_access_prevention, ...):
        change them under `state.lock`; reset() restores the defaults."""
        return self._state


@pytest.fixture(scope="session")
def fake_gcp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGcp]:
    server = FakeGcpServer(
        tmp_path_factory.mktemp("fake-gcp"),
        FakeGcpState(PROJECT, PROJECT_NUMBER, iam_lag_s=IAM_LAG_S, op_polls=OP_POLLS),
    ).start()
    try:
        yield FakeGcp(server)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def workdir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory per test module for what the playbooks write (lb_url_file)."""
    return tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture(scope="module")
def fresh_project(fake_gcp: FakeGcp) -> FakeGcp:
    """A brand-new project; a module overrides this to provision another one."""
    fake_gcp.reset()
    return fake_gcp


@pytest.fixture(scope="module")
def provisioned(fresh_project: FakeGcp, workdir: Path) -> PlaybookResult:
    """One provision run from the module's fresh project; its tests build on it in order."""
    return run_playbook(PROVISION, *base_args(workdir), env=fresh_project.env)
