"""Tests of the fake GCP API itself: real google.cloud modules and direct requests
through the proxy, so that provisioning tests can trust what it answers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.provision.conftest import FakeGcp
from tests.support.ansible_run import run_playbook

P = "img2pdf-test"
C = f"https://compute.googleapis.com/compute/v1/projects/{P}"


@pytest.fixture
def gcp(fake_gcp: FakeGcp) -> Iterator[FakeGcp]:
    fake_gcp.reset()
    fake_gcp.enable_all_services()
    yield fake_gcp
    fake_gcp.reset()


def call(
    gcp: FakeGcp, method: str, url: str, body: Any = None, token: str | None = "fake", **kw: Any
) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.request(
        method,
        url,
        json=body,
        headers=headers,
        proxies={"https": gcp.proxy_url},
        verify=str(gcp.ca_path),
        timeout=10,
        **kw,
    )


def ok(resp: requests.Response) -> dict[str, Any]:
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_modules_create_rerun_unchanged_and_delete(gcp: FakeGcp) -> None:
    play = "tests/provision/playbooks/smoke.yml"
    first = run_playbook(play, env=gcp.env)
    assert first.recap["localhost"]["changed"] == 3
    net = gcp.get(f"compute/v1/projects/{P}/global/networks/smoke-vpc")
    assert net is not None
    assert (
        net["selfLink"]
        == f"https://www.googleapis.com/compute/v1/projects/{P}/global/networks/smoke-vpc"
    )
    assert net["routingConfig"]["routingMode"] == "REGIONAL"
    assert net["subnetworks"] == [
        f"https://www.googleapis.com/compute/v1/projects/{P}/regions/us-central1/subnetworks/smoke-subnet"
    ]
    (fw,) = gcp.list("compute/global/firewalls")
    assert fw["direction"] == "INGRESS" and fw["priority"] == 1000
    assert fw["network"] == net["selfLink"]
    (sub,) = gcp.list("compute/regions/us-central1/subnetworks")
    assert sub["gatewayAddress"] == "10.10.0.1" and sub["privateIpGoogleAccess"] is True

    gcp.clear_log()
    second = run_playbook(play, env=gcp.env)
    assert second.changed_total == 0
    assert gcp.write_requests() == []

    run_playbook(play, "-e", "smoke_state=absent", env=gcp.env)
    assert gcp.resources() == []
    again = run_playbook(play, "-e", "smoke_state=absent", env=gcp.env)
    assert again.changed_total == 0
    assert gcp.unknown_routes() == []


def _network(gcp: FakeGcp, name: str = "n1") -> dict[str, Any]:
    op = ok(
        call(gcp, "POST", f"{C}/global/networks", {"name": name, "autoCreateSubnetworks": False})
    )
    assert op["kind"] == "compute#operation" and op["status"] == "PENDING"
    assert ok(call(gcp, "GET", op["selfLink"]))["status"] == "RUNNING"
    assert op["targetLink"].endswith(f"/global/networks/{name}")
    assert ok(call(gcp, "GET", op["selfLink"]))["status"] == "DONE"
    return ok(call(gcp, "GET", op["targetLink"]))


def _network_and_subnet(gcp: FakeGcp) -> None:
    """Network n1 and its subnetwork s1 (10.0.0.0/24) in us-central1."""
    _network(gcp)
    subnet = {"name": "s1", "network": "global/networks/n1", "ipCidrRange": "10.0.0.0/24"}
    ok(call(gcp, "POST", f"{C}/regions/us-central1/subnetworks", subnet))


def test_unknown_field_and_bad_enum_are_rejected(gcp: FakeGcp) -> None:
    r = call(gcp, "POST", f"{C}/global/networks", {"name": "n1", "autoCreateSubnet": False})
    assert r.status_code == 400
    assert 'Unknown name "autoCreateSubnet"' in r.json()["error"]["message"]
    _network(gcp)
    r = call(
        gcp,
        "POST",
        f"{C}/global/firewalls",
        {
            "name": "f1",
            "network": "global/networks/n1",
            "direction": "INBOUND",
            "allowed": [{"IPProtocol": "tcp"}],
        },
    )
    assert r.status_code == 400 and "INBOUND" in r.json()["error"]["message"]
    r = call(gcp, "GET", f"{C}/global/networks", params={"filtr": "name=n1"})
    assert r.status_code == 400
    r = call(
        gcp,
        "POST",
        f"{C}/zones/us-central1-a/instances/x/setDeletionProtection?deletionProtection=None",
        {},
    )
    assert r.status_code == 400
    assert gcp.get(f"compute/v1/projects/{P}/global/firewalls/f1") is None


def test_missing_conflict_and_auth(gcp: FakeGcp) -> None:
    r = call(gcp, "GET", f"{C}/global/networks/nope")
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["code"] == 404 and err["errors"][0]["reason"] == "notFound"
    _network(gcp)
    r = call(gcp, "POST", f"{C}/global/networks", {"name": "n1", "autoCreateSubnetworks": False})
    assert r.status_code == 409 and r.json()["error"]["errors"][0]["reason"] == "alreadyExists"
    assert call(gcp, "GET", f"{C}/global/networks/n1", token=None).status_code == 401
    r = call(gcp, "GET", f"{C}/global/nosuchthings/x")
    assert r.status_code == 404
    assert any("nosuchthings" in u for u in gcp.unknown_routes())


def test_stale_fingerprint_is_412(gcp: FakeGcp) -> None:
    _network_and_subnet(gcp)
    ok(
        call(
            gcp,
            "POST",
            f"{C}/zones/us-central1-b/instanceGroups",
            {"name": "g1", "namedPorts": [{"name": "http", "port": 8080}]},
        )
    )
    group = ok(call(gcp, "GET", f"{C}/zones/us-central1-b/instanceGroups/g1"))
    url = f"{C}/zones/us-central1-b/instanceGroups/g1/setNamedPorts"
    body = {"namedPorts": [{"name": "http", "port": 8081}], "fingerprint": "c3RhbGU="}
    r = call(gcp, "POST", url, body)
    assert r.status_code == 412 and r.json()["error"]["errors"][0]["reason"] == "conditionNotMet"
    ok(call(gcp, "POST", url, {**body, "fingerprint": group["fingerprint"]}))
    assert call(gcp, "POST", url, {**body, "fingerprint": group["fingerprint"]}).status_code == 412
    assert gcp.get(f"compute/v1/projects/{P}/zones/us-central1-b/instanceGroups/g1")[
        "namedPorts"
    ] == [{"name": "http", "port": 8081}]


def test_delete_in_use_is_refused(gcp: FakeGcp) -> None:
    _network_and_subnet(gcp)
    r = call(gcp, "DELETE", f"{C}/global/networks/n1")
    assert r.status_code == 400
    assert r.json()["error"]["errors"][0]["reason"] == "resourceInUseByAnotherResource"
    ok(call(gcp, "DELETE", f"{C}/regions/us-central1/subnetworks/s1"))
    ok(call(gcp, "DELETE", f"{C}/global/networks/n1"))
    assert gcp.resources() == []


def test_bucket_and_iam_policy_etags(gcp: FakeGcp) -> None:
    s = "https://storage.googleapis.com/storage/v1"
    b = ok(
        call(
            gcp,
            "POST",
            f"{s}/b?project={P}",
            {
                "name": "bkt-1",
                "location": "us-central1",
                "iamConfiguration": {"uniformBucketLevelAccess": {"enabled": True}},
            },
        )
    )
    assert b["location"] == "US-CENTRAL1" and b["metageneration"] == "1"
    pol = ok(call(gcp, "GET", f"{s}/b/bkt-1/iam"))
    pol["bindings"].append({"role": "roles/storage.legacyObjectReader", "members": ["allUsers"]})
    new = ok(call(gcp, "PUT", f"{s}/b/bkt-1/iam", pol))
    assert call(gcp, "PUT", f"{s}/b/bkt-1/iam", pol).status_code == 412  # stale etag
    assert gcp.get("storage/v1/b/bkt-1/iam")["etag"] == new["etag"]
    gcp.put_object("bkt-1", "a.pdf", b"%PDF")
    assert call(gcp, "DELETE", f"{s}/b/bkt-1").status_code == 409
    crm = "https://cloudresourcemanager.googleapis.com/v1/projects"
    gcp.state.iam_lag_s = 0  # (the lag has its own test)
    p1 = ok(
        call(gcp, "POST", f"{crm}/{P}:getIamPolicy", {"options": {"requestedPolicyVersion": 3}})
    )
    p1["bindings"].append(
        {
            "role": "roles/logging.logWriter",
            "members": [f"serviceAccount:x-vm-sa@{P}.iam.gserviceaccount.com"],
        }
    )
    r = call(gcp, "POST", f"{crm}/{P}:setIamPolicy", {"policy": p1})
    assert r.status_code == 400  # that service account does not exist
    iam = f"https://iam.googleapis.com/v1/projects/{P}/serviceAccounts"
    sa = ok(
        call(gcp, "POST", iam, {"accountId": "x-vm-sa", "serviceAccount": {"displayName": "x"}})
    )
    assert sa["email"] == f"x-vm-sa@{P}.iam.gserviceaccount.com"
    ok(call(gcp, "POST", f"{crm}/{P}:setIamPolicy", {"policy": p1}))
    r = call(gcp, "POST", f"{crm}/{P}:setIamPolicy", {"policy": p1})
    assert r.status_code == 409  # stale etag
    assert (
        gcp.get(f"v1/projects/{P}:iamPolicy")["bindings"][-1]["role"] == "roles/logging.logWriter"
    )


def test_connect_to_other_hosts_is_refused(gcp: FakeGcp) -> None:
    with pytest.raises(requests.exceptions.ProxyError):
        requests.get(
            "https://example.com/",
            proxies={"https": gcp.proxy_url},
            verify=str(gcp.ca_path),
            timeout=10,
        )
    assert "example.com:443" in gcp.refused_connects()
    r = requests.get("http://example.com/", proxies={"http": gcp.proxy_url}, timeout=10)
    assert r.status_code == 403


def test_vm_and_load_balancer_chain(gcp: FakeGcp) -> None:
    z = f"{C}/zones/us-central1-b"
    _network_and_subnet(gcp)
    iam = f"https://iam.googleapis.com/v1/projects/{P}/serviceAccounts"
    ok(call(gcp, "POST", iam, {"accountId": "vm-sa-1"}))
    vm = {
        "name": "vm1",
        "machineType": "zones/us-central1-b/machineTypes/e2-micro",
        "disks": [
            {
                "boot": True,
                "initializeParams": {
                    "sourceImage": "projects/debian-cloud/global/images/family/debian-12",
                    "diskSizeGb": "30",
                },
            }
        ],
        "networkInterfaces": [{"subnetwork": "regions/us-central1/subnetworks/s1"}],
        "serviceAccounts": [{"email": f"nobody-sa@{P}.iam.gserviceaccount.com", "scopes": []}],
        "metadata": {"items": [{"key": "enable-oslogin", "value": "TRUE"}]},
    }
    assert call(gcp, "POST", f"{z}/instances", vm).status_code == 400  # unknown SA
    vm["serviceAccounts"][0]["email"] = f"vm-sa-1@{P}.iam.gserviceaccount.com"
    ok(call(gcp, "POST", f"{z}/instances", vm))
    inst = ok(call(gcp, "GET", f"{z}/instances/vm1"))
    nic = inst["networkInterfaces"][0]
    assert nic["name"] == "nic0" and nic["networkIP"] == "10.0.0.2" and "accessConfigs" not in nic
    assert nic["network"].endswith("/global/networks/n1")
    assert inst["status"] == "RUNNING" and inst["shieldedInstanceConfig"]["enableVtpm"] is True
    disk = gcp.get(inst["disks"][0]["source"])
    assert disk["sourceImage"].endswith("/debian-cloud/global/images/debian-12-bookworm-v20250610")
    assert disk["sizeGb"] == "30" and inst["disks"][0]["autoDelete"] is False

    ok(call(gcp, "POST", f"{z}/instanceGroups", {"name": "g1"}))
    add = {"instances": [{"instance": inst["selfLink"]}]}
    ok(call(gcp, "POST", f"{z}/instanceGroups/g1/addInstances", add))
    r = call(gcp, "POST", f"{z}/instanceGroups/g1/addInstances", add)
    assert r.json()["error"]["errors"][0]["reason"] == "memberAlreadyExists"
    listed = ok(call(gcp, "POST", f"{z}/instanceGroups/g1/listInstances", {"instanceState": "ALL"}))
    assert [i["instance"] for i in listed["items"]] == [inst["selfLink"]]
    assert call(gcp, "DELETE", f"{z}/instances/vm1").status_code == 400  # in the group

    g = f"{C}/global"
    ok(
        call(
            gcp,
            "POST",
            f"{g}/healthChecks",
            {
                "name": "hc",
                "type": "HTTP",
                "httpHealthCheck": {"port": 8080, "requestPath": "/ping"},
            },
        )
    )
    ok(
        call(
            gcp,
            "POST",
            f"{g}/backendServices",
            {
                "name": "be",
                "healthChecks": ["global/healthChecks/hc"],
                "backends": [{"group": "zones/us-central1-b/instanceGroups/g1"}],
            },
        )
    )
    ok(
        call(
            gcp,
            "POST",
            f"{g}/urlMaps",
            {"name": "um", "defaultService": "global/backendServices/be"},
        )
    )
    ok(call(gcp, "POST", f"{g}/targetHttpProxies", {"name": "px", "urlMap": "global/urlMaps/um"}))
    addr = gcp.get(ok(call(gcp, "POST", f"{g}/addresses", {"name": "ip"}))["targetLink"])
    assert addr["address"].startswith("34.120.") and addr["status"] == "RESERVED"
    ok(
        call(
            gcp,
            "POST",
            f"{g}/forwardingRules",
            {
                "name": "fr",
                "target": "global/targetHttpProxies/px",
                "portRange": "80",
                "IPAddress": addr["selfLink"],
            },
        )
    )
    fr = ok(call(gcp, "GET", f"{g}/forwardingRules/fr"))
    assert fr["portRange"] == "80-80" and fr["IPAddress"] == addr["address"]
    assert ok(call(gcp, "GET", f"{g}/addresses/ip"))["status"] == "IN_USE"
    for url in (
        f"{g}/addresses/ip",
        f"{g}/healthChecks/hc",
        f"{g}/backendServices/be",
        f"{g}/urlMaps/um",
        f"{g}/targetHttpProxies/px",
        f"{z}/instanceGroups/g1",
    ):
        assert call(gcp, "DELETE", url).status_code == 400, url
    be = ok(call(gcp, "GET", f"{g}/backendServices/be"))
    assert call(gcp, "PATCH", f"{g}/backendServices/be", {"timeoutSec": 60}).status_code == 412
    ok(
        call(
            gcp,
            "PATCH",
            f"{g}/backendServices/be",
            {"timeoutSec": 60, "fingerprint": be["fingerprint"]},
        )
    )
    md = inst["metadata"]
    assert call(gcp, "POST", f"{z}/instances/vm1/setMetadata", {"items": []}).status_code == 412
    ok(
        call(
            gcp,
            "POST",
            f"{z}/instances/vm1/setMetadata",
            {"items": [], "fingerprint": md["fingerprint"]},
        )
    )

    for url in (
        f"{g}/forwardingRules/fr",
        f"{g}/addresses/ip",
        f"{g}/targetHttpProxies/px",
        f"{g}/urlMaps/um",
        f"{g}/backendServices/be",
        f"{g}/healthChecks/hc",
        f"{z}/instanceGroups/g1",
        f"{z}/instances/vm1",
    ):
        ok(call(gcp, "DELETE", url))
    # autoDelete was false: the boot disk outlives the VM, as on GCP
    assert [d["name"] for d in gcp.list("compute/zones/us-central1-b/disks")] == ["vm1"]


def test_inventory_listing_and_workload_identity(gcp: FakeGcp) -> None:
    _network(gcp, "n2")
    nets = ok(call(gcp, "GET", f"{C}/global/networks", params={"filter": "name = n2"}))
    assert [n["name"] for n in nets["items"]] == ["n2"]
    empty = ok(call(gcp, "GET", f"{C}/global/networks", params={"filter": "name = zz"}))
    assert "items" not in empty
    agg = ok(call(gcp, "GET", f"{C}/aggregated/instances", params={"filter": "labels.app = x"}))
    assert agg["items"] == {}

    base = f"https://iam.googleapis.com/v1/projects/{P}/locations/global/workloadIdentityPools"
    op = ok(
        call(gcp, "POST", base, {"displayName": "gh"}, params={"workloadIdentityPoolId": "ghub"})
    )
    assert op["done"] is False and "response" not in op
    assert op["name"].startswith(f"projects/{gcp.project_number}/locations/global/")
    assert ok(call(gcp, "GET", f"https://iam.googleapis.com/v1/{op['name']}"))["done"] is False
    done = ok(call(gcp, "GET", f"https://iam.googleapis.com/v1/{op['name']}"))
    assert done["done"] is True and done["response"]["state"] == "ACTIVE"
    r = call(gcp, "POST", base, {}, params={"workloadIdentityPoolId": "ghub"})
    assert r.status_code == 409
    provider = {
        "oidc": {"issuerUri": "https://token.actions.githubusercontent.com"},
        "attributeMapping": {"google.subject": "assertion.sub"},
        "attributeCondition": "attribute.repository == 'a/b'",
    }
    r = call(
        gcp,
        "POST",
        f"{base}/ghub/providers",
        provider,
        params={"workloadIdentityPoolProviderId": "gh-oidc"},
    )
    assert r.status_code == 400  # the condition uses an unmapped attribute
    provider["attributeMapping"]["attribute.repository"] = "assertion.repository"
    ok(
        call(
            gcp,
            "POST",
            f"{base}/ghub/providers",
            provider,
            params={"workloadIdentityPoolProviderId": "gh-oidc"},
        )
    )
    ok(call(gcp, "DELETE", f"{base}/ghub"))
    assert ok(call(gcp, "GET", f"{base}/ghub"))["state"] == "DELETED"
    assert not [k for k in gcp.resources() if "workloadIdentityPools" in k]
    ok(call(gcp, "POST", f"{base}/ghub:undelete", {}))
    assert (
        gcp.get(f"iam/v1/projects/{P}/locations/global/workloadIdentityPools/ghub")["state"]
        == "ACTIVE"
    )


def test_forwarding_rules_share_an_address_on_distinct_ports(gcp: FakeGcp) -> None:
    g = f"{C}/global"
    ok(
        call(
            gcp,
            "POST",
            f"{g}/urlMaps",
            {
                "name": "redirect",
                "defaultUrlRedirect": {"httpsRedirect": True, "stripQuery": False},
            },
        )
    )
    ok(
        call(
            gcp,
            "POST",
            f"{g}/targetHttpProxies",
            {"name": "px", "urlMap": "global/urlMaps/redirect"},
        )
    )
    cert = {"name": "c1", "type": "MANAGED", "managed": {"domains": ["34.120.0.1.nip.io"]}}
    ok(call(gcp, "POST", f"{g}/sslCertificates", cert))
    assert ok(call(gcp, "GET", f"{g}/sslCertificates/c1"))["managed"]["status"] == "PROVISIONING"
    https = {"name": "spx", "urlMap": "global/urlMaps/redirect"}
    r = call(gcp, "POST", f"{g}/targetHttpsProxies", https)
    assert r.status_code == 400, "an HTTPS proxy needs a certificate"
    r = call(
        gcp,
        "POST",
        f"{g}/targetHttpsProxies",
        {**https, "sslCertificates": [f"{g}/sslCertificates/c1"]},
    )
    assert r.status_code == 400, "httpsRedirect is not allowed behind an HTTPS proxy"
    ok(
        call(
            gcp,
            "POST",
            f"{g}/urlMaps",
            {"name": "app", "defaultUrlRedirect": {"hostRedirect": "x.nip.io"}},
        )
    )
    ok(
        call(
            gcp,
            "POST",
            f"{g}/targetHttpsProxies",
            {
                "name": "spx",
                "urlMap": "global/urlMaps/app",
                "sslCertificates": ["global/sslCertificates/c1"],
            },
        )
    )
    addr = gcp.get(ok(call(gcp, "POST", f"{g}/addresses", {"name": "ip"}))["targetLink"])
    rule = {"IPAddress": addr["address"], "IPProtocol": "TCP"}
    ok(
        call(
            gcp,
            "POST",
            f"{g}/forwardingRules",
            {**rule, "name": "http", "portRange": "80", "target": "global/targetHttpProxies/px"},
        )
    )
    ok(
        call(
            gcp,
            "POST",
            f"{g}/forwardingRules",
            {
                **rule,
                "name": "https",
                "portRange": "443",
                "target": "global/targetHttpsProxies/spx",
            },
        )
    )
    r = call(
        gcp,
        "POST",
        f"{g}/forwardingRules",
        {**rule, "name": "dup", "portRange": "80-443", "target": "global/targetHttpProxies/px"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["errors"][0]["reason"] == "resourceInUseByAnotherResource"
    assert len(ok(call(gcp, "GET", f"{g}/addresses/ip"))["users"]) == 2
    assert call(gcp, "DELETE", f"{g}/sslCertificates/c1").status_code == 400  # on the proxy
    for coll, name in (
        ("forwardingRules", "https"),
        ("forwardingRules", "http"),
        ("targetHttpsProxies", "spx"),
        ("targetHttpProxies", "px"),
        ("urlMaps", "app"),
        ("urlMaps", "redirect"),
        ("sslCertificates", "c1"),
        ("addresses", "ip"),
    ):
        ok(call(gcp, "DELETE", f"{g}/{coll}/{name}"))
    assert gcp.resources() == []
