"""ansible/bootstrap-ci.yml against the offline fake GCP API (tests/provision/fakegcp).

From a project where only provision.yml's service account exists (and only
the IAM API is enabled), the first run enables the APIs CD needs, creates the
pool, the provider restricted to the repository and main, the deployer and its
four bindings (waiting while IAM does not know the new deployer yet); a second
run changes nothing; the deployer gets no other role anywhere.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.ansible_run import run_playbook

from .conftest import ROOT

PROJECT = "img2pdf-test"
REPO = "acme/img2pdf"
POOL = "img2pdf-github"
PROVIDER = "github-oidc"
DEPLOYER = f"img2pdf-deployer@{PROJECT}.iam.gserviceaccount.com"
VM_SA = f"img2pdf-vm@{PROJECT}.iam.gserviceaccount.com"
IAM = f"iam/v1/projects/{PROJECT}"

VM_SA_PLAYBOOK = f"""---
- name: The VM's service account, as provision.yml leaves it
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}"
  tasks:
    - name: VM service account
      google.cloud.gcp_iam_service_account:
        name: {VM_SA}
        display_name: img2pdf VM
        project: {PROJECT}
        auth_kind: accesstoken
        access_token: fake
        state: present
"""


def args(tmp: Path, *extra: str) -> list[str]:
    return [
        "-e", "gcp_auth_kind=accesstoken",
        "-e", "gcp_access_token=fake",
        "-e", f"gcp_project={PROJECT}",
        "-e", f"ci_identity_github_repository={REPO}",
        "-e", f"ci_identity_settings_file={tmp / 'settings.env'}",
        *extra,
    ]  # fmt: skip


def members(policy: dict | None, role: str) -> set[str]:
    return {
        m
        for b in (policy or {}).get("bindings", [])
        if b["role"] == role and not b.get("condition")
        for m in b.get("members", [])
    }


@pytest.fixture(scope="module")
def first_run(fake_gcp, tmp_path_factory):
    fake_gcp.reset()
    with fake_gcp.state.lock:  # the VM's account exists: its API is on
        fake_gcp.state.services.add("iam.googleapis.com")
        # longer than creating the pool and the provider takes, so the
        # deployer's first binding meets the lag
        fake_gcp.state.iam_lag_s = 12.0
    tmp = tmp_path_factory.mktemp("bootstrap")
    (tmp / "vm_sa.yml").write_text(VM_SA_PLAYBOOK)
    run_playbook(str(tmp / "vm_sa.yml"), env=fake_gcp.env)
    fake_gcp.clear_log()
    result = run_playbook(str(ROOT / "ansible" / "bootstrap-ci.yml"), *args(tmp), env=fake_gcp.env)
    return tmp, result


def test_first_run_creates_pool_provider_and_deployer(fake_gcp, first_run):
    _, result = first_run
    assert result.rc == 0
    assert result.changed_total > 0
    assert fake_gcp.unknown_routes() == []
    pool = fake_gcp.get(f"{IAM}/locations/global/workloadIdentityPools/{POOL}")
    assert pool and pool["state"] == "ACTIVE"
    assert fake_gcp.get(f"{IAM}/serviceAccounts/{DEPLOYER}") is not None


def test_enables_the_apis_cd_needs_before_the_pool(fake_gcp, first_run):
    log = fake_gcp.requests_log()
    ids = [r["id"] for r in log]
    [enable] = [r for r in log if r["id"] == "serviceusage.services.batchEnable"]
    assert set(enable["body"]["serviceIds"]) >= {
        "iamcredentials.googleapis.com",
        "sts.googleapis.com",
        "iap.googleapis.com",
        "oslogin.googleapis.com",
        "cloudresourcemanager.googleapis.com",
    }
    assert "iam.googleapis.com" not in enable["body"]["serviceIds"], "only what is disabled"
    pool = ids.index("iam.projects.locations.workloadIdentityPools.create")
    assert ids.index("serviceusage.services.batchEnable") < pool
    done = [i for i, r in enumerate(log) if r["id"] == "serviceusage.operations.get"]
    assert len(done) >= 2 and done[-1] < pool, "its operation is done before the pool"
    assert not [r for r in log if r["status"] == 403]


def test_bindings_of_the_new_deployer_wait_for_iam(fake_gcp, first_run):
    _, result = first_run
    sets = [
        r
        for r in fake_gcp.requests_log()
        if r["id"] == "cloudresourcemanager.projects.setIamPolicy"
    ]
    assert sets[0]["status"] == 400 and "does not exist" in sets[0]["error"]
    assert sets[-1]["status"] == 200
    assert "bounded backoff" in result.stdout
    policy = fake_gcp.get(f"cloudresourcemanager/v1/projects/{PROJECT}:iamPolicy")
    assert [b["role"] for b in policy["bindings"] if "condition" in b] == ["roles/compute.viewer"]


def test_provider_trusts_only_this_repository_on_main(fake_gcp, first_run):
    provider = fake_gcp.get(
        f"{IAM}/locations/global/workloadIdentityPools/{POOL}/providers/{PROVIDER}"
    )
    assert provider["oidc"]["issuerUri"] == "https://token.actions.githubusercontent.com"
    cond = provider["attributeCondition"]
    assert f"assertion.repository == '{REPO}'" in cond
    assert "assertion.ref == 'refs/heads/main'" in cond
    assert "&&" in cond, "both must hold, not either"
    mapping = provider["attributeMapping"]
    assert mapping["google.subject"] == "assertion.sub"
    assert mapping["attribute.repository"] == "assertion.repository"


def test_deployer_gets_exactly_its_roles(fake_gcp, first_run):
    member = f"serviceAccount:{DEPLOYER}"
    project = fake_gcp.get(f"cloudresourcemanager/v1/projects/{PROJECT}:iamPolicy")
    granted = {b["role"] for b in project["bindings"] if member in b.get("members", [])}
    assert granted == {
        "roles/iap.tunnelResourceAccessor",
        "roles/compute.osAdminLogin",
        "roles/compute.viewer",
    }
    # What was there before is kept.
    assert "user:owner@example.com" in members(project, "roles/owner")
    # Acting as a service account: the VM's only.
    vm_policy = fake_gcp.get(f"{IAM}/serviceAccounts/{VM_SA}:iamPolicy")
    assert members(vm_policy, "roles/iam.serviceAccountUser") == {member}
    # Only workflows of the repository may impersonate the deployer.
    deployer_policy = fake_gcp.get(f"{IAM}/serviceAccounts/{DEPLOYER}:iamPolicy")
    principal = (
        f"principalSet://iam.googleapis.com/projects/{fake_gcp.project_number}"
        f"/locations/global/workloadIdentityPools/{POOL}/attribute.repository/{REPO}"
    )
    assert members(deployer_policy, "roles/iam.workloadIdentityUser") == {principal}
    assert [b["role"] for b in deployer_policy["bindings"]] == ["roles/iam.workloadIdentityUser"]


def test_no_key_is_ever_created(fake_gcp, first_run):
    assert not [r for r in fake_gcp.requests_log() if "/keys" in r["path"]]


def test_prints_the_repository_settings(fake_gcp, first_run):
    tmp, result = first_run
    provider = (
        f"projects/{fake_gcp.project_number}/locations/global/workloadIdentityPools/{POOL}"
        f"/providers/{PROVIDER}"
    )
    for line in (
        f"GCP_PROJECT={PROJECT}",
        f"GCP_WORKLOAD_IDENTITY_PROVIDER={provider}",
        f"GCP_DEPLOYER_SA={DEPLOYER}",
    ):
        assert line in result.stdout
    assert (tmp / "settings.env").read_text().splitlines() == [
        f"GCP_PROJECT={PROJECT}",
        f"GCP_WORKLOAD_IDENTITY_PROVIDER={provider}",
        f"GCP_DEPLOYER_SA={DEPLOYER}",
    ]


def test_second_run_changes_nothing(fake_gcp, first_run):
    tmp, _ = first_run
    fake_gcp.clear_log()
    result = run_playbook(str(ROOT / "ansible" / "bootstrap-ci.yml"), *args(tmp), env=fake_gcp.env)
    assert result.changed_total == 0, result.stdout[-3000:]
    assert fake_gcp.write_requests() == []


def test_a_changed_condition_is_patched_in_place(fake_gcp, first_run):
    tmp, _ = first_run
    fake_gcp.clear_log()
    result = run_playbook(
        str(ROOT / "ansible" / "bootstrap-ci.yml"),
        *args(tmp, "-e", "ci_identity_github_ref=refs/heads/release"),
        env=fake_gcp.env,
    )
    assert result.changed_total > 0
    patches = [r for r in fake_gcp.write_requests() if r["method"] == "PATCH"]
    assert len(patches) == 1
    assert patches[0]["query"]["updateMask"] == "attributeCondition"
    provider = fake_gcp.get(
        f"{IAM}/locations/global/workloadIdentityPools/{POOL}/providers/{PROVIDER}"
    )
    assert "assertion.ref == 'refs/heads/release'" in provider["attributeCondition"]
    # and back, so the module's later tests see the main-only provider
    run_playbook(str(ROOT / "ansible" / "bootstrap-ci.yml"), *args(tmp), env=fake_gcp.env)


def test_a_deleted_pool_is_undeleted(fake_gcp, first_run):
    tmp, _ = first_run
    key = f"{IAM}/locations/global/workloadIdentityPools/{POOL}"
    with fake_gcp._state.lock:
        stored = fake_gcp._state.store[fake_gcp._key(key)]
        stored["state"] = "DELETED"
    fake_gcp.clear_log()
    run_playbook(str(ROOT / "ansible" / "bootstrap-ci.yml"), *args(tmp), env=fake_gcp.env)
    assert fake_gcp.get(key)["state"] == "ACTIVE"
    assert any(r["path"].endswith(f"{POOL}:undelete") for r in fake_gcp.write_requests())
