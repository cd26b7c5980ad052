"""HTTPS on <lb-ip>.nip.io, against the offline fake GCP API (issue 9).

One provision run from an empty fake, then: the Google-managed certificate,
the HTTPS proxy, both forwarding rules on one address, the redirect URL map,
the host rule and HSTS; a rerun changes nothing; a certificate left from an
earlier address is replaced and deleted; teardown leaves nothing, twice.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.provision.stack import (
    PROVISION,
    TEARDOWN,
    C,
    assert_teardown_is_a_no_op,
    base_args,
    writes,
)
from tests.support.ansible_run import ansible_venv, run_playbook

ROOT = Path(__file__).resolve().parents[2]
G = f"{C}/global"
WWW = "https://www.googleapis.com/"
HSTS = "Strict-Transport-Security: max-age=31536000"


@pytest.fixture(scope="module")
def ip(fake_gcp, provisioned) -> str:
    return fake_gcp.get(f"{G}/addresses/img2pdf-ip")["address"]


def cert_name(ip: str) -> str:
    return "img2pdf-cert-" + ip.replace(".", "-") + "-nip-io"


def test_managed_certificate_for_the_assigned_address(fake_gcp, provisioned, ip):
    assert fake_gcp.unknown_routes() == []
    certs = fake_gcp.list("compute/global/sslCertificates")
    assert [c["name"] for c in certs] == [cert_name(ip)]
    [cert] = certs
    assert cert["type"] == "MANAGED"
    assert cert["managed"]["domains"] == [f"{ip}.nip.io"]
    [create] = [r for r in fake_gcp.requests_log() if r["id"] == "compute.sslCertificates.insert"]
    assert create["body"]["type"] == "MANAGED"
    assert create["body"]["managed"] == {"domains": [f"{ip}.nip.io"]}
    assert "certificate" not in create["body"] and "privateKey" not in create["body"]


def test_https_proxy_serves_the_certificate_and_the_main_map(fake_gcp, provisioned, ip):
    proxy = fake_gcp.get(f"{G}/targetHttpsProxies/img2pdf-https-proxy")
    assert proxy["sslCertificates"] == [f"{WWW}{G}/sslCertificates/{cert_name(ip)}"]
    assert proxy["urlMap"] == f"{WWW}{G}/urlMaps/img2pdf-urlmap"


def test_both_forwarding_rules_share_the_address(fake_gcp, provisioned, ip):
    http = fake_gcp.get(f"{G}/forwardingRules/img2pdf-http")
    https = fake_gcp.get(f"{G}/forwardingRules/img2pdf-https")
    assert (http["IPAddress"], http["portRange"]) == (ip, "80-80")
    assert (https["IPAddress"], https["portRange"]) == (ip, "443-443")
    assert http["target"] == f"{WWW}{G}/targetHttpProxies/img2pdf-http-proxy"
    assert https["target"] == f"{WWW}{G}/targetHttpsProxies/img2pdf-https-proxy"
    assert http["IPProtocol"] == https["IPProtocol"] == "TCP"
    address = fake_gcp.get(f"{G}/addresses/img2pdf-ip")
    assert sorted(address["users"]) == sorted([http["selfLink"], https["selfLink"]])
    rules = fake_gcp.list("compute/global/forwardingRules")
    assert len(rules) == 2, "one address, two ports, nothing else"


def test_port_80_only_redirects_to_https(fake_gcp, provisioned):
    proxy = fake_gcp.get(f"{G}/targetHttpProxies/img2pdf-http-proxy")
    assert proxy["urlMap"] == f"{WWW}{G}/urlMaps/img2pdf-http-redirect"
    redirect = fake_gcp.get(f"{G}/urlMaps/img2pdf-http-redirect")
    assert redirect["defaultUrlRedirect"] == {
        "httpsRedirect": True,
        "redirectResponseCode": "MOVED_PERMANENTLY_DEFAULT",
        "stripQuery": False,
    }
    for field in ("defaultService", "hostRules", "pathMatchers", "defaultRouteAction"):
        assert field not in redirect, f"port 80 must never reach the backend ({field})"


def test_only_the_nip_io_name_reaches_the_backend(fake_gcp, provisioned, ip):
    url_map = fake_gcp.get(f"{G}/urlMaps/img2pdf-urlmap")
    assert url_map["hostRules"] == [{"hosts": [f"{ip}.nip.io"], "pathMatcher": "app"}]
    assert url_map["pathMatchers"] == [
        {"name": "app", "defaultService": f"{WWW}{G}/backendServices/img2pdf-backend"}
    ]
    # Any other Host: the load balancer's own redirect to the name.
    assert "defaultService" not in url_map
    assert url_map["defaultUrlRedirect"] == {
        "hostRedirect": f"{ip}.nip.io",
        "pathRedirect": "/",
        "stripQuery": True,
        "redirectResponseCode": "MOVED_PERMANENTLY_DEFAULT",
    }
    assert "pathRules" not in url_map["pathMatchers"][0]
    assert "routeRules" not in url_map["pathMatchers"][0]


def test_https_answers_carry_hsts(fake_gcp, provisioned):
    backend = fake_gcp.get(f"{G}/backendServices/img2pdf-backend")
    assert backend["customResponseHeaders"] == [HSTS]


def test_url_and_certificate_status_are_printed(provisioned, workdir, ip):
    url = f"https://{ip}.nip.io/"
    assert (workdir / "lb-url").read_text() == url + "\n"
    assert url in provisioned.stdout
    assert f"{cert_name(ip)} for {ip}.nip.io: PROVISIONING" in provisioned.stdout
    assert f"gcloud compute ssl-certificates describe {cert_name(ip)} --global" in (
        provisioned.stdout
    )


def test_rerun_changes_nothing_and_reports_active(fake_gcp, provisioned, workdir, ip):
    key = f"{G}/sslCertificates/{cert_name(ip)}"
    with fake_gcp._state.lock:  # Google finished provisioning in the meantime
        managed = fake_gcp._state.store[key]["managed"]
        managed["status"] = "ACTIVE"
        managed["domainStatus"] = {f"{ip}.nip.io": "ACTIVE"}
    before = len(fake_gcp.requests_log())
    result = run_playbook(PROVISION, *base_args(workdir), env=fake_gcp.env)
    assert result.changed_total == 0, result.stdout[-4000:]
    assert writes(fake_gcp.requests_log()[before:]) == []
    assert f"{cert_name(ip)} for {ip}.nip.io: ACTIVE." in result.stdout


def test_hsts_is_added_to_an_existing_backend_service(fake_gcp, provisioned, workdir):
    """The module never adds a field the live resource lacks: the role PATCHes it."""
    key = f"{G}/backendServices/img2pdf-backend"
    with fake_gcp._state.lock:  # a backend service from before HTTPS
        backend = fake_gcp._state.store[key]
        del backend["customResponseHeaders"]
        backend["fingerprint"] = "b2xkZXI="
    before = len(fake_gcp.requests_log())
    result = run_playbook(PROVISION, *base_args(workdir), env=fake_gcp.env)
    assert result.changed_total == 1, result.stdout[-4000:]
    assert writes(fake_gcp.requests_log()[before:]) == [("PATCH", key)]
    assert fake_gcp.get(key)["customResponseHeaders"] == [HSTS]


def test_certificate_of_an_earlier_address_is_replaced(fake_gcp, provisioned, workdir, ip):
    """A certificate cannot be changed: a new name goes on the proxy, the old one is deleted."""
    old = "img2pdf-cert-34-120-9-9-nip-io"
    state = fake_gcp._state
    with state.lock:  # as left by an earlier address
        current = state.store[f"{G}/sslCertificates/{cert_name(ip)}"]
        state.store[f"{G}/sslCertificates/{old}"] = {
            **current,
            "name": old,
            "id": "1",
            "selfLink": f"{WWW}{G}/sslCertificates/{old}",
            "managed": {"domains": ["34.120.9.9.nip.io"], "status": "ACTIVE"},
        }
        state.store[f"{G}/sslCertificates/someone-elses"] = {
            **current,
            "name": "someone-elses",
            "id": "2",
            "selfLink": f"{WWW}{G}/sslCertificates/someone-elses",
        }
        state.store[f"{G}/targetHttpsProxies/img2pdf-https-proxy"]["sslCertificates"] = [
            f"{WWW}{G}/sslCertificates/{old}"
        ]
    before = len(fake_gcp.requests_log())
    result = run_playbook(PROVISION, *base_args(workdir), env=fake_gcp.env)
    assert result.changed_total == 2, result.stdout[-4000:]
    assert [p for _, p in writes(fake_gcp.requests_log()[before:])] == [
        # The REST path of this verb has no "global/" (compute.v1 discovery).
        f"{C}/targetHttpsProxies/img2pdf-https-proxy/setSslCertificates",
        f"{G}/sslCertificates/{old}",
    ]
    proxy = fake_gcp.get(f"{G}/targetHttpsProxies/img2pdf-https-proxy")
    assert proxy["sslCertificates"] == [f"{WWW}{G}/sslCertificates/{cert_name(ip)}"]
    names = sorted(c["name"] for c in fake_gcp.list("compute/global/sslCertificates"))
    assert names == sorted([cert_name(ip), "someone-elses"]), "only our prefix is cleaned up"
    with state.lock:
        del state.store[f"{G}/sslCertificates/someone-elses"]


def test_app_settings_for_gcp(tmp_path):
    """The GCP inventory's group_vars give the app the HTTPS name and the rate limit."""
    inv = tmp_path / "inventory"
    (inv / "group_vars").mkdir(parents=True)
    (inv / "hosts.yml").write_text(
        "img2pdf_app:\n  hosts:\n    vm:\n      ansible_connection: local\n"
    )
    for name, src in (
        ("img2pdf_app.yml", ROOT / "ansible/inventory/group_vars/img2pdf_app.yml"),
        ("all.yml", ROOT / "ansible/group_vars/all.yml"),
    ):
        (inv / "group_vars" / name).symlink_to(src)
    playbook = tmp_path / "show.yml"
    shown = tmp_path / "vars.json"
    playbook.write_text(
        "- hosts: img2pdf_app\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.copy:\n"
        f"        dest: {shown}\n"
        "        mode: '0644'\n"
        '        content: \'{{ {"url": app_public_base_url,'
        ' "env": app_env_extra, "mode": app_url_mode} | to_json }}\'\n'
    )
    env = {
        **os.environ,
        "BASE_URL": "https://34.120.0.7.nip.io/",
        "ANSIBLE_INVENTORY_ENABLED": "yaml",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_STDOUT_CALLBACK": "default",
    }
    cmd = [str(ansible_venv() / "bin/ansible-playbook"), "-i", str(inv), str(playbook)]
    subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(shown.read_text()) == {
        "url": "https://34.120.0.7.nip.io/",
        "env": {"RATE_LIMIT_PER_MINUTE": 30, "RATE_LIMIT_BURST": 10, "CLIENT_IP_SOURCE": "gclb"},
        "mode": "public",
    }
    # A private bucket (public access prevention): the app signs its URLs.
    private = [*cmd, "-e", "pdf_bucket_public_read=false"]
    subprocess.run(private, env=env, capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(shown.read_text())["mode"] == "signed"


def test_teardown_leaves_nothing(fake_gcp, provisioned, workdir):
    before = len(fake_gcp.requests_log())
    result = run_playbook(TEARDOWN, *base_args(workdir), env=fake_gcp.env)
    assert result.rc == 0
    assert fake_gcp.resources() == []
    assert not (workdir / "lb-url").exists()
    deleted = [p for m, p in writes(fake_gcp.requests_log()[before:]) if m == "DELETE"]
    order = [p.split("/")[-2] for p in deleted if "/global/" in p]
    first = {coll: order.index(coll) for coll in set(order)}
    assert (
        first["forwardingRules"]
        < first["targetHttpsProxies"]
        < first["urlMaps"]
        < first["sslCertificates"]
        < first["backendServices"]
        < first["addresses"]
    ), order


def test_second_teardown_is_a_no_op(fake_gcp, provisioned, workdir):
    assert_teardown_is_a_no_op(fake_gcp, workdir)
