"""provision.yml / teardown.yml against the offline fake GCP API.

The playbooks run unchanged; the modules reach the fake through an HTTPS
proxy (see conftest.py). Every test asserts on the fake's state or on the
requests it received, not on what Ansible printed.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.ansible_run import run_playbook

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = ROOT / "ansible"
PROVISION = "ansible/provision.yml"
TEARDOWN = "ansible/teardown.yml"
PROJECT = "img2pdf-test"
REGION = "us-central1"
ZONE = "us-central1-b"
C = f"compute/v1/projects/{PROJECT}"
BUCKET = f"{PROJECT}-img2pdf-pdfs"
SA_EMAIL = f"img2pdf-vm@{PROJECT}.iam.gserviceaccount.com"
SA_MEMBER = f"serviceAccount:{SA_EMAIL}"

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


def bindings(policy: dict | None) -> dict[str, set[str]]:
    return {b["role"]: set(b.get("members", [])) for b in (policy or {}).get("bindings", [])}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("provision")


@pytest.fixture(scope="module")
def provisioned(fake_gcp, workdir):
    """One provision run from an empty fake; the tests below build on it in order."""
    fake_gcp.reset()
    result = run_playbook(PROVISION, *base_args(workdir), env=fake_gcp.env)
    return result


def test_provision_from_empty_creates_the_stack(fake_gcp, provisioned, workdir):
    assert provisioned.rc == 0
    assert fake_gcp.unknown_routes() == []

    net = fake_gcp.get(f"{C}/global/networks/img2pdf-vpc")
    assert net and net["autoCreateSubnetworks"] is False
    subnet = fake_gcp.get(f"{C}/regions/{REGION}/subnetworks/img2pdf-{REGION}")
    assert subnet["privateIpGoogleAccess"] is True
    assert subnet["ipCidrRange"] == "10.10.0.0/24"

    app_fw = fake_gcp.get(f"{C}/global/firewalls/img2pdf-allow-lb-to-app")
    assert sorted(app_fw["sourceRanges"]) == ["130.211.0.0/22", "35.191.0.0/16"]
    assert app_fw["allowed"] == [{"IPProtocol": "tcp", "ports": ["8080"]}]
    assert app_fw["targetTags"] == ["img2pdf-app"]
    assert app_fw["network"].endswith("/global/networks/img2pdf-vpc")
    ssh_fw = fake_gcp.get(f"{C}/global/firewalls/img2pdf-allow-iap-ssh")
    assert ssh_fw["sourceRanges"] == ["35.235.240.0/20"]
    assert ssh_fw["allowed"] == [{"IPProtocol": "tcp", "ports": ["22"]}]
    assert ssh_fw["targetTags"] == ["img2pdf-app"]
    firewalls = [k for k in fake_gcp.resources() if "/global/firewalls/" in k]
    assert len(firewalls) == 2, "nothing else is opened"

    router = fake_gcp.get(f"{C}/regions/{REGION}/routers/img2pdf-router")
    [nat] = router["nats"]
    assert nat["name"] == "img2pdf-nat"
    assert nat["natIpAllocateOption"] == "AUTO_ONLY"
    assert nat["sourceSubnetworkIpRangesToNat"] == "LIST_OF_SUBNETWORKS"
    assert nat["subnetworks"][0]["name"].endswith(f"/subnetworks/img2pdf-{REGION}")

    sa = fake_gcp.get(f"iam/v1/projects/{PROJECT}/serviceAccounts/{SA_EMAIL}")
    assert sa and sa["email"] == SA_EMAIL
    project_roles = bindings(fake_gcp.get(f"cloudresourcemanager/v1/projects/{PROJECT}:iamPolicy"))
    granted = {role for role, members in project_roles.items() if SA_MEMBER in members}
    assert granted == set(), "no agent on the VM: no project roles"

    bucket = fake_gcp.get(f"storage/v1/b/{BUCKET}")
    assert bucket["location"] == "US-CENTRAL1"
    assert bucket["iamConfiguration"]["uniformBucketLevelAccess"]["enabled"] is True
    assert bucket["iamConfiguration"]["publicAccessPrevention"] == "inherited"
    [rule] = bucket["lifecycle"]["rule"]
    assert rule["action"]["type"] == "Delete"
    assert rule["condition"]["age"] == 7
    bucket_roles = bindings(fake_gcp.get(f"storage/v1/b/{BUCKET}/iam"))
    assert SA_MEMBER in bucket_roles["roles/storage.objectCreator"]
    public = {role for role, members in bucket_roles.items() if "allUsers" in members}
    assert public == {"roles/storage.legacyObjectReader"}, "read objects, never list the bucket"
    sa_bucket_roles = {role for role, members in bucket_roles.items() if SA_MEMBER in members}
    assert sa_bucket_roles == {"roles/storage.objectCreator"}

    vm = fake_gcp.get(f"{C}/zones/{ZONE}/instances/img2pdf-vm")
    assert vm["machineType"].endswith("/machineTypes/e2-micro")
    [nic] = vm["networkInterfaces"]
    assert not nic.get("accessConfigs"), "the VM must have no external IP"
    assert nic["subnetwork"].endswith(f"/subnetworks/img2pdf-{REGION}")
    assert vm["shieldedInstanceConfig"] == {
        "enableSecureBoot": True,
        "enableVtpm": True,
        "enableIntegrityMonitoring": True,
    }
    metadata = {i["key"]: i["value"] for i in vm["metadata"].get("items", [])}
    assert metadata["enable-oslogin"] == "TRUE"
    assert metadata["block-project-ssh-keys"] == "TRUE"
    assert vm["tags"]["items"] == ["img2pdf-app"]
    assert vm["labels"]["app"] == "img2pdf"
    assert vm["deletionProtection"] is False
    [vm_sa] = vm["serviceAccounts"]
    assert vm_sa["email"] == SA_EMAIL
    assert vm_sa["scopes"] == ["https://www.googleapis.com/auth/cloud-platform"]
    [boot] = vm["disks"]
    assert boot["boot"] is True and int(boot["diskSizeGb"]) == 30
    disk = fake_gcp.get(f"{C}/zones/{ZONE}/disks/img2pdf-vm")
    if disk is not None:
        assert disk["type"].endswith("/diskTypes/pd-standard")
        assert "debian-12" in disk.get("sourceImage", "")

    group = fake_gcp.get(f"{C}/zones/{ZONE}/instanceGroups/img2pdf-ig")
    assert group["namedPorts"] == [{"name": "http", "port": 8080}]
    hc = fake_gcp.get(f"{C}/global/healthChecks/img2pdf-hc")
    assert hc["type"] == "HTTP"
    assert hc["httpHealthCheck"]["requestPath"] == "/ping"
    assert hc["httpHealthCheck"]["port"] == 8080
    backend = fake_gcp.get(f"{C}/global/backendServices/img2pdf-backend")
    assert backend["protocol"] == "HTTP"
    assert backend["portName"] == "http"
    assert backend["timeoutSec"] == 30
    assert backend["backends"][0]["group"].endswith(f"/zones/{ZONE}/instanceGroups/img2pdf-ig")
    # The per-VM rate target derived from docs/capacity.md.
    assert backend["backends"][0]["maxRatePerInstance"] == 10.0
    assert backend["healthChecks"][0].endswith("/global/healthChecks/img2pdf-hc")
    url_map = fake_gcp.get(f"{C}/global/urlMaps/img2pdf-urlmap")
    [matcher] = url_map["pathMatchers"]
    assert matcher["defaultService"].endswith("/global/backendServices/img2pdf-backend")
    proxy = fake_gcp.get(f"{C}/global/targetHttpProxies/img2pdf-http-proxy")
    assert proxy["urlMap"].endswith("/global/urlMaps/img2pdf-http-redirect")
    address = fake_gcp.get(f"{C}/global/addresses/img2pdf-ip")
    rule = fake_gcp.get(f"{C}/global/forwardingRules/img2pdf-http")
    assert rule["portRange"] == "80-80"
    assert rule["IPProtocol"] == "TCP"
    assert rule["IPAddress"] == address["address"]
    assert rule["target"].endswith("/global/targetHttpProxies/img2pdf-http-proxy")

    assert (workdir / "lb-url").read_text() == f"https://{address['address']}.nip.io/\n"
    assert f"https://{address['address']}.nip.io/" in provisioned.stdout


def test_instance_group_holds_the_vm(fake_gcp, provisioned):
    group = fake_gcp.get(f"{C}/zones/{ZONE}/instanceGroups/img2pdf-ig")
    assert group["size"] == 1
    added = [
        i["instance"]
        for r in fake_gcp.requests_log()
        if r["id"] == "compute.instanceGroups.addInstances"
        for i in r["body"]["instances"]
    ]
    assert added == [f"https://www.googleapis.com/{C}/zones/{ZONE}/instances/img2pdf-vm"]


def test_second_run_changes_nothing(fake_gcp, provisioned, workdir):
    before = len(fake_gcp.requests_log())
    result = run_playbook(PROVISION, *base_args(workdir), env=fake_gcp.env)
    assert result.changed_total == 0, result.stdout[-4000:]
    assert writes(fake_gcp.requests_log()[before:]) == []


def test_app_port_change_touches_only_what_depends_on_it(fake_gcp, provisioned, workdir):
    before = len(fake_gcp.requests_log())
    result = run_playbook(PROVISION, *base_args(workdir, "-e", "app_port=8081"), env=fake_gcp.env)
    touched = writes(fake_gcp.requests_log()[before:])
    touched_paths = sorted({p.split("?")[0] for _, p in touched})
    assert touched_paths == sorted(
        [
            f"{C}/global/firewalls/img2pdf-allow-lb-to-app",
            f"{C}/global/healthChecks/img2pdf-hc",
            f"{C}/zones/{ZONE}/instanceGroups/img2pdf-ig/setNamedPorts",
        ]
    ), touched
    assert result.changed_total == 3, result.stdout[-4000:]

    fw = fake_gcp.get(f"{C}/global/firewalls/img2pdf-allow-lb-to-app")
    assert fw["allowed"] == [{"IPProtocol": "tcp", "ports": ["8081"]}]
    group = fake_gcp.get(f"{C}/zones/{ZONE}/instanceGroups/img2pdf-ig")
    assert group["namedPorts"] == [{"name": "http", "port": 8081}]
    hc = fake_gcp.get(f"{C}/global/healthChecks/img2pdf-hc")
    assert hc["httpHealthCheck"]["port"] == 8081

    again = run_playbook(PROVISION, *base_args(workdir, "-e", "app_port=8081"), env=fake_gcp.env)
    assert again.changed_total == 0, again.stdout[-4000:]

    back = run_playbook(PROVISION, *base_args(workdir), env=fake_gcp.env)
    assert back.changed_total == 3, back.stdout[-4000:]
    group = fake_gcp.get(f"{C}/zones/{ZONE}/instanceGroups/img2pdf-ig")
    assert group["namedPorts"] == [{"name": "http", "port": 8080}]


def test_metadata_drift_is_repaired(fake_gcp, provisioned, workdir):
    """The instance module never updates metadata; the role's setMetadata does."""
    key = f"{C}/zones/{ZONE}/instances/img2pdf-vm"
    state = fake_gcp._state  # drift made behind Ansible's back, as a console edit would
    with state.lock:
        state.store[key]["metadata"] = {
            "kind": "compute#metadata",
            "fingerprint": "ZHJpZnRlZA==",
            "items": [
                {"key": "enable-oslogin", "value": "FALSE"},
                {"key": "startup-script", "value": "true"},
            ],
        }
    before = len(fake_gcp.requests_log())
    result = run_playbook(PROVISION, *base_args(workdir), env=fake_gcp.env)
    assert result.changed_total == 1, result.stdout[-4000:]
    assert [p for _, p in writes(fake_gcp.requests_log()[before:])] == [f"{key}/setMetadata"]
    vm = fake_gcp.get(key)
    metadata = {i["key"]: i["value"] for i in vm["metadata"]["items"]}
    assert metadata == {
        "enable-oslogin": "TRUE",
        "block-project-ssh-keys": "TRUE",
        "startup-script": "true",  # keys the role does not manage are kept
    }


def test_lost_group_member_is_added_back(fake_gcp, provisioned, workdir):
    """The group module re-adds a member silently; the role says it changed something."""
    key = f"{C}/zones/{ZONE}/instanceGroups/img2pdf-ig"
    state = fake_gcp._state
    with state.lock:
        state.members[key] = []
        state.store[key]["size"] = 0
    before = len(fake_gcp.requests_log())
    result = run_playbook(PROVISION, *base_args(workdir), env=fake_gcp.env)
    assert result.changed_total == 1, result.stdout[-4000:]
    assert [p for _, p in writes(fake_gcp.requests_log()[before:])] == [f"{key}/addInstances"]
    assert fake_gcp.get(key)["size"] == 1


def test_inventory_finds_the_vm_in_the_app_group(fake_gcp, provisioned, tmp_path):
    """inventory/gcp.yml as committed, with only the credentials swapped for the fake's."""
    text = (ANSIBLE / "inventory" / "gcp.yml").read_text()
    assert "\nauth_kind: application\n" in text
    inv = tmp_path / "test.gcp.yml"
    inv.write_text(
        text.replace("\nauth_kind: application\n", "\nauth_kind: accesstoken\naccess_token: fake\n")
    )
    env = dict(fake_gcp.env, ANSIBLE_INVENTORY_ENABLED="google.cloud.gcp_compute")
    venv = Path(os.environ.get("ANSIBLE_VENV", ROOT / ".venv-ansible"))
    out = subprocess.run(
        [str(venv / "bin" / "ansible-inventory"), "-i", str(inv), "--list"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    data = json.loads(out.stdout, object_hook=lambda d: d.get("__ansible_unsafe", d))
    assert data["img2pdf_app"]["hosts"] == ["img2pdf-vm"]
    hostvars = data["_meta"]["hostvars"]["img2pdf-vm"]
    assert hostvars["ansible_host"] == "img2pdf-vm"
    assert hostvars["private_ip"].startswith("10.10.0.")


def test_teardown_leaves_nothing(fake_gcp, provisioned, workdir):
    result = run_playbook(TEARDOWN, *base_args(workdir), env=fake_gcp.env)
    assert result.rc == 0
    assert fake_gcp.resources() == []
    project_roles = bindings(fake_gcp.get(f"cloudresourcemanager/v1/projects/{PROJECT}:iamPolicy"))
    assert all(SA_MEMBER not in members for members in project_roles.values())
    assert not (workdir / "lb-url").exists()


def test_second_teardown_is_a_no_op(fake_gcp, provisioned, workdir):
    before = len(fake_gcp.requests_log())
    result = run_playbook(TEARDOWN, *base_args(workdir), env=fake_gcp.env)
    assert result.rc == 0
    assert result.changed_total == 0, result.stdout[-4000:]
    assert writes(fake_gcp.requests_log()[before:]) == []
    assert fake_gcp.resources() == []
