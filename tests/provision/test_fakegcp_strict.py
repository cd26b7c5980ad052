"""The fake is as strict as GCP where a kinder fake would hide a playbook bug:
disabled APIs, long-running operations, failed operations, IAM lag, conditional
bindings and policy versions, etag races, paged lists, public access prevention,
soft delete, SSL policies, OS Login and expiring tokens. Each test drives the
fake over HTTPS through its proxy, as the playbooks do."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import pytest

from tests.provision.conftest import IAM_LAG_S, FakeGcp
from tests.provision.test_fakegcp import C, P, call, ok

SU = f"https://serviceusage.googleapis.com/v1/projects/{P}"
CRM = f"https://cloudresourcemanager.googleapis.com/v1/projects/{P}"
IAM = f"https://iam.googleapis.com/v1/projects/{P}/serviceAccounts"
GCS = "https://storage.googleapis.com/storage/v1"
V3 = {"options": {"requestedPolicyVersion": 3}}


@pytest.fixture
def fresh(fake_gcp: FakeGcp) -> Iterator[FakeGcp]:
    """A brand-new project: only the default services are enabled."""
    fake_gcp.reset()
    yield fake_gcp
    fake_gcp.reset()


@pytest.fixture
def gcp(fresh: FakeGcp) -> FakeGcp:
    fresh.enable_all_services()
    return fresh


def poll_google(gcp: FakeGcp, base: str, op: dict) -> dict:
    for _ in range(10):
        op = ok(call(gcp, "GET", f"{base}/{op['name']}"))
        if op["done"]:
            return op
    raise AssertionError(f"operation never done: {op}")


def test_apis_are_disabled_until_batch_enable_is_done(fresh: FakeGcp) -> None:
    r = call(fresh, "GET", f"{C}/global/networks")
    assert r.status_code == 403
    err = r.json()["error"]
    assert err["status"] == "PERMISSION_DENIED"
    assert err["errors"][0]["reason"] == "accessNotConfigured"
    [info] = [d for d in err["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
    assert info["reason"] == "SERVICE_DISABLED"
    assert info["metadata"]["service"] == "compute.googleapis.com"
    assert "Compute Engine API has not been used in project" in err["message"]
    for url in (
        f"{IAM}",
        "https://oslogin.googleapis.com/v1/users/owner@example.com/loginProfile",
    ):
        assert call(fresh, "GET", url).status_code == 403
    assert call(fresh, "POST", f"{CRM}:getIamPolicy", V3).status_code == 403
    # Storage and Service Usage are on in every new project.
    assert ok(call(fresh, "GET", f"{GCS}/b", params={"project": P})) == {"kind": "storage#buckets"}

    names = [
        f"projects/{P}/services/{s}" for s in ("compute.googleapis.com", "storage.googleapis.com")
    ]
    got = ok(call(fresh, "GET", f"{SU}/services:batchGet", params={"names": names}))
    assert [s["state"] for s in got["services"]] == ["DISABLED", "ENABLED"]

    op = ok(
        call(
            fresh, "POST", f"{SU}/services:batchEnable", {"serviceIds": ["compute.googleapis.com"]}
        )
    )
    assert op["done"] is False and op["name"].startswith("operations/")
    first = ok(call(fresh, "GET", f"https://serviceusage.googleapis.com/v1/{op['name']}"))
    assert first["done"] is False
    assert call(fresh, "GET", f"{C}/global/networks").status_code == 403, "not before done"
    done = poll_google(fresh, "https://serviceusage.googleapis.com/v1", op)
    assert done["response"]["services"][0]["state"] == "ENABLED"
    assert ok(call(fresh, "GET", f"{C}/global/networks"))["kind"] == "compute#networkList"
    bad = call(fresh, "POST", f"{SU}/services:batchEnable", {"serviceIds": ["compute"]})
    assert bad.status_code == 400


def test_a_failed_operation_is_done_with_an_error_and_changes_nothing(gcp: FakeGcp) -> None:
    gcp.state.fail_next_operation("compute.networks.insert", "QUOTA_EXCEEDED", "Quota 'NETWORKS'")
    op = ok(
        call(gcp, "POST", f"{C}/global/networks", {"name": "n9", "autoCreateSubnetworks": False})
    )
    assert op["status"] == "PENDING" and "error" not in op
    assert ok(call(gcp, "GET", op["selfLink"]))["status"] == "RUNNING"
    done = ok(call(gcp, "GET", op["selfLink"]))
    assert done["status"] == "DONE"
    assert done["error"]["errors"][0]["code"] == "QUOTA_EXCEEDED"
    assert call(gcp, "GET", f"{C}/global/networks/n9").status_code == 404
    # Only the next call fails.
    again = ok(
        call(gcp, "POST", f"{C}/global/networks", {"name": "n9", "autoCreateSubnetworks": False})
    )
    ok(call(gcp, "GET", again["selfLink"]))
    assert "error" not in ok(call(gcp, "GET", again["selfLink"]))

    gcp.state.fail_next_operation("serviceusage.services.batchEnable")
    op = ok(call(gcp, "POST", f"{SU}/services:batchEnable", {"serviceIds": ["sts.googleapis.com"]}))
    done = poll_google(gcp, "https://serviceusage.googleapis.com/v1", op)
    assert done["error"]["code"] == 9 and "response" not in done
    assert "sts.googleapis.com" not in gcp.state.services


def test_zonal_operations_run_then_finish(gcp: FakeGcp) -> None:
    z = f"{C}/zones/us-central1-b"
    op = ok(call(gcp, "POST", f"{z}/instanceGroups", {"name": "g1"}))
    assert op["status"] == "PENDING" and "/zones/us-central1-b/operations/" in op["selfLink"]
    assert ok(call(gcp, "GET", op["selfLink"]))["status"] == "RUNNING"
    assert ok(call(gcp, "GET", op["selfLink"]))["status"] == "DONE"
    op = ok(
        call(
            gcp,
            "POST",
            f"{z}/instanceGroups/g1/setNamedPorts",
            {
                "namedPorts": [],
                "fingerprint": ok(call(gcp, "GET", f"{z}/instanceGroups/g1"))["fingerprint"],
            },
        )
    )
    assert op["status"] == "PENDING"
    # wait blocks until DONE
    assert ok(call(gcp, "POST", op["selfLink"] + "/wait"))["status"] == "DONE"


def test_a_new_service_account_is_refused_in_bindings_for_a_while(gcp: FakeGcp) -> None:
    assert IAM_LAG_S > 0
    sa = ok(call(gcp, "POST", IAM, {"accountId": "lag-test-sa"}))
    member = f"serviceAccount:{sa['email']}"
    pol = ok(call(gcp, "POST", f"{CRM}:getIamPolicy", V3))
    pol["bindings"].append({"role": "roles/logging.logWriter", "members": [member]})
    r = call(gcp, "POST", f"{CRM}:setIamPolicy", {"policy": pol})
    assert r.status_code == 400
    assert f"Service account {sa['email']} does not exist" in r.json()["error"]["message"]
    time.sleep(IAM_LAG_S)
    ok(call(gcp, "POST", f"{CRM}:setIamPolicy", {"policy": pol}))


def test_project_policy_has_a_conditional_binding_read_v1_and_v3(gcp: FakeGcp) -> None:
    v1 = ok(call(gcp, "POST", f"{CRM}:getIamPolicy", {}))
    assert v1["version"] == 1
    renamed = [b for b in v1["bindings"] if "_withcond_" in b["role"]]
    assert len(renamed) == 1 and "condition" not in renamed[0]
    assert renamed[0]["role"].startswith("roles/compute.viewer_withcond_")
    # Writing the v1 view back (with or without the renamed role) is refused.
    assert call(gcp, "POST", f"{CRM}:setIamPolicy", {"policy": v1}).status_code == 400
    v1["bindings"] = [b for b in v1["bindings"] if "_withcond_" not in b["role"]]
    assert call(gcp, "POST", f"{CRM}:setIamPolicy", {"policy": v1}).status_code == 400

    v3 = ok(call(gcp, "POST", f"{CRM}:getIamPolicy", V3))
    assert v3["version"] == 3
    [cond] = [b for b in v3["bindings"] if "condition" in b]
    assert cond["role"] == "roles/compute.viewer"
    v3["bindings"].append({"role": "roles/viewer", "members": ["user:a@example.com"]})
    new = ok(call(gcp, "POST", f"{CRM}:setIamPolicy", {"policy": v3}))
    assert new["version"] == 3 and any("condition" in b for b in new["bindings"])
    # A condition in a version 1 write is refused too.
    new["version"] = 1
    assert call(gcp, "POST", f"{CRM}:setIamPolicy", {"policy": new}).status_code == 400


def test_a_lost_race_is_409_aborted(gcp: FakeGcp) -> None:
    key = f"cloudresourcemanager/v1/projects/{P}:iamPolicy"
    pol = ok(call(gcp, "POST", f"{CRM}:getIamPolicy", V3))
    gcp.state.policy_races[key] = 1
    r = call(gcp, "POST", f"{CRM}:setIamPolicy", {"policy": pol})
    assert r.status_code == 409 and r.json()["error"]["status"] == "ABORTED"
    fresh = ok(call(gcp, "POST", f"{CRM}:getIamPolicy", V3))
    assert fresh["etag"] != pol["etag"]
    ok(call(gcp, "POST", f"{CRM}:setIamPolicy", {"policy": fresh}))


def _bucket(gcp: FakeGcp, name: str) -> dict:
    body = {
        "name": name,
        "location": "US-CENTRAL1",
        "iamConfiguration": {"uniformBucketLevelAccess": {"enabled": True}},
    }
    return ok(call(gcp, "POST", f"{GCS}/b", body, params={"project": P}))


def test_objects_come_in_pages_of_1000_and_a_full_bucket_is_not_deleted(gcp: FakeGcp) -> None:
    _bucket(gcp, "paged-bkt")
    for i in range(1001):
        gcp.put_object("paged-bkt", f"{i:05}.pdf", b"%PDF")
    first = ok(call(gcp, "GET", f"{GCS}/b/paged-bkt/o", params={"maxResults": 5000}))
    assert len(first["items"]) == 1000 and first["items"][0]["name"] == "00000.pdf"
    token = first["nextPageToken"]
    second = ok(call(gcp, "GET", f"{GCS}/b/paged-bkt/o", params={"pageToken": token}))
    assert [o["name"] for o in second["items"]] == ["01000.pdf"]
    assert "nextPageToken" not in second
    r = call(gcp, "DELETE", f"{GCS}/b/paged-bkt")
    assert r.status_code == 409 and "not empty" in r.json()["error"]["message"]


def test_soft_delete_is_on_by_default_and_can_be_turned_off(gcp: FakeGcp) -> None:
    b = _bucket(gcp, "soft-bkt")
    assert b["softDeletePolicy"]["retentionDurationSeconds"] == "604800"
    p = ok(
        call(
            gcp, "PATCH", f"{GCS}/b/soft-bkt", {"softDeletePolicy": {"retentionDurationSeconds": 0}}
        )
    )
    assert p["softDeletePolicy"]["retentionDurationSeconds"] == "0"


def test_org_policy_public_access_prevention_refuses_all_users(gcp: FakeGcp) -> None:
    _bucket(gcp, "pap-bkt")
    pol = ok(call(gcp, "GET", f"{GCS}/b/pap-bkt/iam", params={"optionsRequestedPolicyVersion": 3}))
    pol["bindings"].append({"role": "roles/storage.legacyObjectReader", "members": ["allUsers"]})
    gcp.state.org_public_access_prevention = True
    r = call(gcp, "PUT", f"{GCS}/b/pap-bkt/iam", pol)
    assert r.status_code == 412
    assert "public access prevention is enforced" in r.json()["error"]["message"]
    gcp.state.org_public_access_prevention = False
    ok(call(gcp, "PUT", f"{GCS}/b/pap-bkt/iam", pol))


def test_ssl_policy_attaches_and_is_refused_deletion_while_used(gcp: FakeGcp) -> None:
    g = f"{C}/global"
    op = ok(
        call(
            gcp,
            "POST",
            f"{g}/sslPolicies",
            {"name": "tls12", "profile": "MODERN", "minTlsVersion": "TLS_1_2"},
        )
    )
    ok(call(gcp, "GET", op["selfLink"]))
    pol = ok(call(gcp, "GET", f"{g}/sslPolicies/tls12"))
    assert pol["profile"] == "MODERN" and pol["minTlsVersion"] == "TLS_1_2" and pol["fingerprint"]
    bad = call(gcp, "POST", f"{g}/sslPolicies", {"name": "x", "minTlsVersion": "TLS_9"})
    assert bad.status_code == 400
    ok(
        call(
            gcp,
            "POST",
            f"{g}/urlMaps",
            {"name": "m", "defaultUrlRedirect": {"hostRedirect": "a.nip.io"}},
        )
    )
    ok(
        call(
            gcp,
            "POST",
            f"{g}/sslCertificates",
            {"name": "c", "type": "MANAGED", "managed": {"domains": ["a.nip.io"]}},
        )
    )
    ok(
        call(
            gcp,
            "POST",
            f"{g}/targetHttpsProxies",
            {
                "name": "p",
                "urlMap": f"{g}/urlMaps/m",
                "sslCertificates": [f"{g}/sslCertificates/c"],
            },
        )
    )
    ok(
        call(
            gcp,
            "POST",
            f"{g}/targetHttpsProxies/p/setSslPolicy",
            {"sslPolicy": f"{g}/sslPolicies/tls12"},
        )
    )
    assert ok(call(gcp, "GET", f"{g}/targetHttpsProxies/p"))["sslPolicy"].endswith(
        "/sslPolicies/tls12"
    )
    assert call(gcp, "DELETE", f"{g}/sslPolicies/tls12").status_code == 400


def test_os_login_key_import_and_profile(gcp: FakeGcp) -> None:
    key = "ssh-ed25519 " + base64.b64encode(b"k" * 51).decode() + " deploy"
    user = "https://oslogin.googleapis.com/v1/users/owner@example.com"
    expiry = str(int((time.time() + 300) * 1e6))
    out = ok(
        call(
            gcp,
            "POST",
            f"{user}:importSshPublicKey",
            {"key": key, "expirationTimeUsec": expiry},
            params={"projectId": P},
        )
    )
    [acct] = out["loginProfile"]["posixAccounts"]
    assert acct["username"] == "owner_example_com" and acct["primary"] is True
    profile = ok(call(gcp, "GET", f"{user}/loginProfile"))
    assert [k["key"] for k in profile["sshPublicKeys"].values()] == [key]
    bad = call(gcp, "POST", f"{user}:importSshPublicKey", {"key": "not a key", "ttl": 1})
    assert bad.status_code == 400  # an unknown field, and no key


def test_issued_tokens_expire(gcp: FakeGcp) -> None:
    gcp.state.token_lifetime_s = 1
    tok = ok(
        call(
            gcp,
            "POST",
            "https://oauth2.googleapis.com/token",
            token=None,
            data={"grant_type": "refresh_token"},
        )
    )
    assert tok["expires_in"] == 1
    ok(call(gcp, "GET", f"{C}/global/networks", token=tok["access_token"]))
    info = ok(
        call(
            gcp,
            "GET",
            "https://oauth2.googleapis.com/tokeninfo",
            token=None,
            params={"access_token": tok["access_token"]},
        )
    )
    assert info["email"] == "owner@example.com"
    time.sleep(1.1)
    r = call(gcp, "GET", f"{C}/global/networks", token=tok["access_token"])
    assert r.status_code == 401 and r.json()["error"]["status"] == "UNAUTHENTICATED"
