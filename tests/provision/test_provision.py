"""provision.yml / teardown.yml against the offline fake GCP API.

The playbooks run unchanged; the modules reach the fake through an HTTPS
proxy (see conftest.py). Every test asserts on the fake's state or on the
requests it received, not on what Ansible printed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from tests.provision.stack import (
    PROJECT,
    PROVISION,
    TEARDOWN,
    C,
    assert_teardown_is_a_no_op,
    base_args,
    writes,
)
from tests.support.ansible_run import run_playbook

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = ROOT / "ansible"
REGION = "us-central1"
ZONE = "us-central1-b"
BUCKET = f"{PROJECT}-img2pdf-pdfs"
SA_EMAIL = f"img2pdf-vm@{PROJECT}.iam.gserviceaccount.com"
SA_MEMBER = f"serviceAccount:{SA_EMAIL}"


def bindings(policy: dict | None) -> dict[str, set[str]]:
    return {b["role"]: set(b.get("members", [])) for b in (policy or {}).get("bindings", [])}


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


def test_apis_are_enabled_first_in_one_batch(fake_gcp, provisioned):
    """A brand-new project answers 403 SERVICE_DISABLED: Service Usage comes first."""
    log = fake_gcp.requests_log()
    ids = [r["id"] for r in log]
    first_other = next(i for i, r in enumerate(log) if r["host"] != "serviceusage.googleapis.com")
    assert ids[:first_other][0] == "serviceusage.services.batchGet"
    [enable] = [r for r in log if r["id"] == "serviceusage.services.batchEnable"]
    assert ids.index("serviceusage.services.batchEnable") < first_other
    assert sorted(enable["body"]["serviceIds"]) == sorted(
        [
            "cloudresourcemanager.googleapis.com",
            "compute.googleapis.com",
            "iam.googleapis.com",
            "iamcredentials.googleapis.com",
            "iap.googleapis.com",
            "oslogin.googleapis.com",
            "sts.googleapis.com",
        ]
    ), "only what was disabled (storage is on in a new project)"
    polls = [r for r in log[:first_other] if r["id"] == "serviceusage.operations.get"]
    assert len(polls) >= 2, "the operation is polled until done"
    assert not [r for r in log if r["status"] == 403]


def test_every_operation_is_polled_until_done(fake_gcp, provisioned):
    """The fake answers RUNNING on the reply and the first poll: an operation
    that was waited for was polled at least twice (modules and REST calls alike)."""
    log = fake_gcp.requests_log()
    ops = [(i, r["operation"]) for i, r in enumerate(log) if r.get("operation")]
    assert len(ops) > 20
    kinds = {log[i]["id"] for i, _ in ops}
    assert {
        "serviceusage.services.batchEnable",
        "compute.routers.patch",
        "compute.sslPolicies.insert",
        "compute.sslCertificates.insert",
    } <= kinds
    for i, op in ops:
        polls = [r for r in log[i + 1 :] if r["method"] == "GET" and r["path"].endswith(op)]
        assert len(polls) >= 2, (log[i]["id"], op)


def test_iam_is_read_and_written_as_version_3(fake_gcp, provisioned):
    log = fake_gcp.requests_log()
    reads = [r for r in log if (r["id"] or "").endswith("getIamPolicy")]
    assert reads
    for r in reads:
        version = (
            r["query"].get("optionsRequestedPolicyVersion")
            or r["query"].get("options.requestedPolicyVersion")
            or ((r["body"] or {}).get("options") or {}).get("requestedPolicyVersion")
        )
        assert str(version) == "3", r
    policy = fake_gcp.get(f"cloudresourcemanager/v1/projects/{PROJECT}:iamPolicy")
    [cond] = [b for b in policy["bindings"] if "condition" in b]
    assert cond["role"] == "roles/compute.viewer", "the conditional binding is kept as it was"
    assert policy["version"] == 3


def test_bindings_of_the_new_account_wait_for_iam(fake_gcp, provisioned):
    """The fake refuses the brand-new account for a while; the play retried, then succeeded.
    Its first binding is on the bucket (the account has no project roles)."""
    sets = [r for r in fake_gcp.requests_log() if r["id"] == "storage.buckets.setIamPolicy"]
    assert sets[0]["status"] == 400
    assert "does not exist" in sets[0]["error"]
    assert sets[-1]["status"] == 200
    assert "bounded backoff" in provisioned.stdout, "the task names say so"


def test_bucket_soft_delete_is_off(fake_gcp, provisioned):
    bucket = fake_gcp.get(f"storage/v1/b/{BUCKET}")
    assert bucket["softDeletePolicy"]["retentionDurationSeconds"] == "0"


def test_https_proxy_has_a_tls12_ssl_policy(fake_gcp, provisioned):
    policy = fake_gcp.get(f"{C}/global/sslPolicies/img2pdf-tls")
    assert policy["profile"] == "MODERN" and policy["minTlsVersion"] == "TLS_1_2"
    proxy = fake_gcp.get(f"{C}/global/targetHttpsProxies/img2pdf-https-proxy")
    assert proxy["sslPolicy"] == f"https://www.googleapis.com/{C}/global/sslPolicies/img2pdf-tls"


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


def test_an_operation_done_with_an_error_fails_the_run(fake_gcp, provisioned, workdir):
    """A DONE operation carrying `error` is a failure, not a success."""
    key = f"{C}/zones/{ZONE}/instances/img2pdf-vm"
    state = fake_gcp.state
    with state.lock:
        items = state.store[key]["metadata"]["items"]
        for item in items:
            if item["key"] == "enable-oslogin":
                item["value"] = "FALSE"
    state.fail_next_operation("compute.instances.setMetadata", "QUOTA_EXCEEDED", "no quota")
    result = run_playbook(PROVISION, *base_args(workdir), env=fake_gcp.env, check_rc=False)
    assert result.rc != 0
    assert "finished with an error" in result.stdout and "QUOTA_EXCEEDED" in result.stdout
    metadata = {i["key"]: i["value"] for i in fake_gcp.get(key)["metadata"]["items"]}
    assert metadata["enable-oslogin"] == "FALSE", "the failed operation changed nothing"
    # The next test's run repairs it (one run fewer for the suite).


def test_a_lost_policy_race_is_retried_from_a_fresh_read(fake_gcp, provisioned, workdir):
    key = f"cloudresourcemanager/v1/projects/{PROJECT}:iamPolicy"
    state = fake_gcp.state
    with state.lock:  # a grant an earlier version made, and someone writes while we do
        state.policies[key]["bindings"].append(
            {"role": "roles/logging.logWriter", "members": [SA_MEMBER, "user:x@example.com"]}
        )
        state.policy_races[key] = 1
    before = len(fake_gcp.requests_log())
    result = run_playbook(PROVISION, *base_args(workdir), env=fake_gcp.env)
    # the retired grant removed, and the metadata the previous test's failed operation left
    assert result.changed_total == 2, result.stdout[-4000:]
    vm = fake_gcp.get(f"{C}/zones/{ZONE}/instances/img2pdf-vm")
    assert {i["key"]: i["value"] for i in vm["metadata"]["items"]}["enable-oslogin"] == "TRUE"
    sets = [
        r["status"]
        for r in fake_gcp.requests_log()[before:]
        if r["id"] == "cloudresourcemanager.projects.setIamPolicy"
    ]
    assert sets == [409, 200]
    policy = fake_gcp.get(key)
    assert bindings(policy)["roles/logging.logWriter"] == {"user:x@example.com"}
    assert [b["role"] for b in policy["bindings"] if "condition" in b] == ["roles/compute.viewer"]


def test_one_adc_credential_without_gcloud_refreshed_before_expiry(
    fake_gcp, provisioned, workdir, tmp_path
):
    """No gcp_access_token and no gcloud on PATH: the gcp_token lookup reads
    Application Default Credentials (an authorized_user file, as
    `gcloud auth application-default login` writes) and refreshes the token
    before it expires; the fake answers 401 to an expired token."""
    adc = tmp_path / "adc.json"
    adc.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "fake-client.apps.googleusercontent.com",
                "client_secret": "fake-secret",
                "refresh_token": "fake-refresh-token",
            }
        )
    )
    runtime = tmp_path / "run"
    runtime.mkdir()
    venv = Path(os.environ.get("ANSIBLE_VENV", ROOT / ".venv-ansible"))
    # A gcloud that only records being called shadows any real one.
    shadow = tmp_path / "bin"
    shadow.mkdir()
    called = tmp_path / "gcloud-called"
    (shadow / "gcloud").write_text(f'#!/bin/sh\necho "$*" >>{called}\nexit 1\n')
    (shadow / "gcloud").chmod(0o755)
    env = dict(
        fake_gcp.env,
        GOOGLE_APPLICATION_CREDENTIALS=str(adc),
        XDG_RUNTIME_DIR=str(runtime),
        PATH=f"{venv / 'bin'}:{shadow}:{fake_gcp.env.get('PATH', os.defpath)}",
    )
    assert shutil.which("gcloud", path=env["PATH"]) == str(shadow / "gcloud")
    args = [
        "-i",
        "localhost,",
        "-e",
        f"gcp_project={PROJECT}",
        "-e",
        f"lb_url_file={workdir / 'lb-url'}",
    ]
    state = fake_gcp.state
    with state.lock:
        state.token_lifetime_s = 12  # refreshed when less than 6 s are left
        state.token_requests = 0
    before = len(fake_gcp.requests_log())
    try:
        result = run_playbook(PROVISION, *args, env=env)
    finally:
        with state.lock:
            state.token_lifetime_s = 3600
    assert result.changed_total == 0, result.stdout[-3000:]
    assert not called.exists(), "gcloud is not needed to provision"
    log = fake_gcp.requests_log()[before:]
    assert not [r for r in log if r["status"] == 401]
    tokens = {r.get("token") for r in log if r.get("token")}
    assert state.token_requests >= 2 and len(tokens) == state.token_requests
    assert "fake" not in tokens


def test_public_access_prevention_stops_with_the_way_out(fake_gcp, provisioned, workdir):
    key = f"storage/v1/b/{BUCKET}/iam"
    state = fake_gcp.state
    with state.lock:  # a bucket made before the org policy came in, without the grant yet
        state.policies[key]["bindings"] = [
            b for b in state.policies[key]["bindings"] if "allUsers" not in b["members"]
        ]
        state.org_public_access_prevention = True
    try:
        refused = run_playbook(PROVISION, *base_args(workdir), env=fake_gcp.env, check_rc=False)
        assert refused.rc != 0
        out = " ".join(refused.stdout.split())
        assert "constraints/storage.publicAccessPrevention" in out
        assert "-e pdf_bucket_public_read=false" in out and "URL_MODE=signed" in out

        signed = base_args(workdir, "-e", "pdf_bucket_public_read=false")
        result = run_playbook(PROVISION, *signed, env=fake_gcp.env)
        assert result.rc == 0
        roles = bindings(fake_gcp.get(key))
        assert all("allUsers" not in m for m in roles.values())
        assert SA_MEMBER in roles["roles/storage.legacyObjectReader"], "signing needs read"
        sa_policy = fake_gcp.get(f"iam/v1/projects/{PROJECT}/serviceAccounts/{SA_EMAIL}:iamPolicy")
        assert SA_MEMBER in bindings(sa_policy)["roles/iam.serviceAccountTokenCreator"]
        assert run_playbook(PROVISION, *signed, env=fake_gcp.env).changed_total == 0
    finally:
        with state.lock:
            state.org_public_access_prevention = False


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


def fill_bucket(fake_gcp, count: int) -> None:
    for i in range(count):
        fake_gcp.put_object(BUCKET, f"{i:08x}-{i}.pdf", b"%PDF-1.4")


def test_teardown_leaves_nothing(fake_gcp, provisioned, workdir):
    fill_bucket(fake_gcp, 1234)  # more than a page of the object listing
    before = len(fake_gcp.requests_log())
    result = run_playbook(TEARDOWN, *base_args(workdir), env=fake_gcp.env)
    assert result.rc == 0
    assert fake_gcp.resources() == []
    project_roles = bindings(fake_gcp.get(f"cloudresourcemanager/v1/projects/{PROJECT}:iamPolicy"))
    assert all(SA_MEMBER not in members for members in project_roles.values())
    assert not (workdir / "lb-url").exists()
    log = fake_gcp.requests_log()[before:]
    lists = [r for r in log if r["id"] == "storage.objects.list"]
    assert [bool(r["query"].get("pageToken")) for r in lists] == [False, True]
    deletes = [r for r in log if r["id"] == "storage.objects.delete"]
    assert len(deletes) == 1234 and {r["status"] for r in deletes} == {204}


DEPLOYER = f"img2pdf-deployer@{PROJECT}.iam.gserviceaccount.com"


def test_provision_after_teardown_regrants_the_deployer(fake_gcp, provisioned, workdir):
    """The CD cycle: bootstrap-ci.yml made the deployer; teardown deleted the
    VM's account and with it the deployer's serviceAccountUser on it; the next
    provision gives it back, so CD keeps working."""
    state = fake_gcp.state
    with state.lock:
        key = f"iam/v1/projects/{PROJECT}/serviceAccounts/{DEPLOYER}"
        state.store[key] = {
            "name": f"projects/{PROJECT}/serviceAccounts/{DEPLOYER}",
            "email": DEPLOYER,
            "uniqueId": "100000000000000000777",
            "projectId": PROJECT,
        }
        state.policies[key + ":iamPolicy"] = {"version": 1, "etag": "ACAB"}
    result = run_playbook(PROVISION, *base_args(workdir), env=fake_gcp.env)
    assert result.rc == 0
    policy = fake_gcp.get(f"iam/v1/projects/{PROJECT}/serviceAccounts/{SA_EMAIL}:iamPolicy")
    assert bindings(policy)["roles/iam.serviceAccountUser"] == {f"serviceAccount:{DEPLOYER}"}


def test_second_cycle_teardown_with_a_full_bucket(fake_gcp, provisioned, workdir):
    fill_bucket(fake_gcp, 1001)
    result = run_playbook(TEARDOWN, *base_args(workdir), env=fake_gcp.env)
    assert result.rc == 0
    assert fake_gcp.list(f"storage/b/{BUCKET}/o") == []
    with fake_gcp.state.lock:
        fake_gcp.state.store.pop(f"iam/v1/projects/{PROJECT}/serviceAccounts/{DEPLOYER}")
    assert fake_gcp.resources() == []


def test_second_teardown_is_a_no_op(fake_gcp, provisioned, workdir):
    assert_teardown_is_a_no_op(fake_gcp, workdir)
