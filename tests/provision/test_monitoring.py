"""Operating the stack (issue 18), against the offline fake GCP: the load
balancer's request logs, the uptime check, the alert policies, the optional
e-mail channel and the dashboard that provision.yml makes, their idempotence,
and teardown.

One provision run from an empty fake; the tests below build on it in order.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.provision.stack import PROVISION, TEARDOWN, C, base_args, writes
from tests.support.ansible_run import run_playbook

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "img2pdf-test"
NUMBER = "123456789012"
M3 = f"monitoring/v3/projects/{PROJECT}"
DASHBOARDS = f"monitoring/v1/projects/{NUMBER}/dashboards"
SA_MEMBER = f"serviceAccount:img2pdf-vm@{PROJECT}.iam.gserviceaccount.com"
POLICIES = {
    "uptime": "img2pdf: uptime check failing",
    "5xx": "img2pdf: load balancer 5xx ratio",
    "latency": "img2pdf: backend p95 latency",
    "unhealthy": "img2pdf: no healthy backend",
}


@pytest.fixture(scope="module")
def fresh_project(fake_gcp):
    fake_gcp.reset()
    with fake_gcp.state.lock:  # on by default; a project where it was turned off
        fake_gcp.state.services.discard("monitoring.googleapis.com")
    return fake_gcp


def run(fake_gcp, workdir, *extra: str):
    before = len(fake_gcp.requests_log())
    result = run_playbook(PROVISION, *base_args(workdir, *extra), env=fake_gcp.env)
    return result, writes(fake_gcp.requests_log()[before:])


def policies(fake_gcp) -> dict[str, dict]:
    return {p["displayName"]: p for p in fake_gcp.list(f"{M3}/alertPolicies")}


def host(fake_gcp) -> str:
    return fake_gcp.get(f"{C}/global/addresses/img2pdf-ip")["address"] + ".nip.io"


def threshold(policy: dict) -> dict:
    [cond] = policy["conditions"]
    return cond.get("conditionThreshold") or cond["conditionMatchedLog"]


def test_without_an_address_the_uptime_check_waits(fake_gcp, tmp_path):
    """Before the load balancer exists: the other policies and the dashboard, no
    uptime check (it needs the address), and the play does not fail."""
    fake_gcp.reset()
    play = "tests/provision/playbooks/monitoring.yml"
    result = run_playbook(play, *base_args(tmp_path), env=fake_gcp.env)
    assert result.rc == 0
    assert fake_gcp.list(f"{M3}/uptimeCheckConfigs") == []
    assert sorted(policies(fake_gcp)) == sorted(set(POLICIES.values()) - {POLICIES["uptime"]})
    assert len(fake_gcp.list(DASHBOARDS)) == 1
    assert "none: no load balancer address yet" in result.stdout
    fake_gcp.reset()


def test_empty_project_gets_logs_check_policies_and_dashboard(fake_gcp, provisioned):
    assert provisioned.rc == 0
    assert fake_gcp.unknown_routes() == []
    log = fake_gcp.requests_log()
    # The project had the Monitoring API off: it is enabled, in the one batch with the
    # other APIs, before any call to it.
    enable = [i for i, r in enumerate(log) if r["id"] == "serviceusage.services.batchEnable"]
    first_call = min(i for i, r in enumerate(log) if r["host"] == "monitoring.googleapis.com")
    assert len(enable) == 1 and enable[0] < first_call
    assert "monitoring.googleapis.com" in log[enable[0]]["body"]["serviceIds"]

    backend = fake_gcp.get(f"{C}/global/backendServices/img2pdf-backend")
    assert backend["logConfig"] == {"enable": True, "sampleRate": 1}

    name = host(fake_gcp)
    [check] = fake_gcp.list(f"{M3}/uptimeCheckConfigs")
    assert check["displayName"] == "img2pdf /ping"
    assert check["name"].startswith(f"projects/{PROJECT}/uptimeCheckConfigs/img2pdf-ping-")
    assert check["monitoredResource"] == {
        "type": "uptime_url",
        "labels": {"project_id": PROJECT, "host": name},
    }
    http = check["httpCheck"]
    assert (http["useSsl"], http["validateSsl"], http["port"], http["path"]) == (
        True,
        True,
        443,
        "/ping",
    )
    assert check["contentMatchers"] == [{"content": "pong", "matcher": "CONTAINS_STRING"}]
    assert check["selectedRegions"] == ["USA_VIRGINIA", "EUROPE", "ASIA_PACIFIC"]
    assert (check["period"], check["timeout"]) == ("60s", "10s")

    pols = policies(fake_gcp)
    assert sorted(pols) == sorted(POLICIES.values())
    for p in pols.values():
        assert p["enabled"] is True
        assert p["notificationChannels"] == [], "no e-mail given: silent policies"
        assert p["userLabels"] == {"app": "img2pdf", "managed-by": "ansible"}
        assert "docs/operations.md" in p["documentation"]["content"]
        assert p["alertStrategy"]["autoClose"] == "1800s"

    up = threshold(pols[POLICIES["uptime"]])
    assert f'resource.label.host="{name}"' in up["filter"]
    assert "uptime_check/check_passed" in up["filter"]
    assert (up["duration"], up["comparison"], up["thresholdValue"]) == (
        "300s",
        "COMPARISON_GE",
        2,
    )
    assert up["aggregations"][0]["crossSeriesReducer"] == "REDUCE_COUNT_FALSE"

    ratio = threshold(pols[POLICIES["5xx"]])
    assert "metric.label.response_code_class=500" in ratio["filter"]
    assert 'resource.label.url_map_name="img2pdf-urlmap"' in ratio["filter"]
    assert "response_code_class" not in ratio["denominatorFilter"]
    assert ratio["thresholdValue"] == 0.1
    assert ratio["aggregations"][0]["alignmentPeriod"] == "600s"
    assert ratio["denominatorAggregations"][0]["alignmentPeriod"] == "600s"

    lat = threshold(pols[POLICIES["latency"]])
    assert "https/backend_latencies" in lat["filter"]
    assert 'backend_target_name="img2pdf-backend"' in lat["filter"]
    assert lat["aggregations"][0]["perSeriesAligner"] == "ALIGN_PERCENTILE_95"
    assert (lat["thresholdValue"], lat["comparison"]) == (2500, "COMPARISON_GT")

    unhealthy = pols[POLICIES["unhealthy"]]
    assert 'jsonPayload.statusDetails="failed_to_pick_backend"' in threshold(unhealthy)["filter"]
    assert unhealthy["alertStrategy"]["notificationRateLimit"] == {"period": "300s"}

    assert fake_gcp.list(f"{M3}/notificationChannels") == []

    [dash] = fake_gcp.list(DASHBOARDS)
    assert dash["displayName"] == "img2pdf load balancer"
    assert dash["name"].startswith(f"projects/{NUMBER}/dashboards/")
    text = json.dumps(dash)
    assert "__" not in text, "every placeholder is replaced"
    titles = [t["widget"]["title"] for t in dash["mosaicLayout"]["tiles"]]
    assert any("status class" in t for t in titles)
    assert any("Latency percentiles" in t for t in titles)
    assert any("Backend health" in t for t in titles)
    assert any("Uptime check" in t for t in titles)
    assert f'resource.label.host=\\"{name}\\"' in text
    assert 'url_map_name=\\"img2pdf-urlmap\\"' in text


def test_vm_account_has_no_unused_project_roles(fake_gcp, provisioned):
    """App logs stay in the VM's journal (docs/operations.md): no agent, no grants."""
    policy = fake_gcp.get(f"cloudresourcemanager/v1/projects/{PROJECT}:iamPolicy") or {}
    granted = {b["role"] for b in policy.get("bindings", []) if SA_MEMBER in b["members"]}
    assert granted == set()


def test_grants_of_earlier_versions_are_removed(fake_gcp, provisioned, workdir):
    from tests.provision.fakegcp.crm import crm_policy_key

    state = fake_gcp._state
    with state.lock:  # as an earlier version left them
        policy = state.policies[crm_policy_key(state, PROJECT)]
        policy.setdefault("bindings", []).extend(
            [
                {"role": "roles/logging.logWriter", "members": [SA_MEMBER]},
                {"role": "roles/monitoring.metricWriter", "members": [SA_MEMBER, "user:a@b.c"]},
            ]
        )
    result, touched = run(fake_gcp, workdir)
    assert result.changed_total == 1, result.stdout[-4000:]
    assert touched == [("POST", f"v1/projects/{PROJECT}:setIamPolicy")], touched
    after = fake_gcp.get(f"cloudresourcemanager/v1/projects/{PROJECT}:iamPolicy")
    roles = {b["role"]: b["members"] for b in after.get("bindings", [])}
    assert "roles/logging.logWriter" not in roles
    assert roles["roles/monitoring.metricWriter"] == ["user:a@b.c"], "others' grants stay"


def test_rerun_changes_nothing(fake_gcp, provisioned, workdir):
    result, touched = run(fake_gcp, workdir)
    assert result.changed_total == 0, result.stdout[-4000:]
    assert touched == []


def test_changed_threshold_updates_that_policy_only(fake_gcp, provisioned, workdir):
    before = policies(fake_gcp)
    result, touched = run(fake_gcp, workdir, "-e", "monitoring_latency_p95_ms=3000")
    assert result.changed_total == 1, result.stdout[-4000:]
    latency = before[POLICIES["latency"]]
    assert touched == [("PATCH", f"v3/{latency['name']}")], touched
    [patch] = [r for r in fake_gcp.requests_log() if r["method"] == "PATCH"][-1:]
    assert patch["query"] == {"updateMask": "conditions,documentation"}
    after = policies(fake_gcp)
    assert threshold(after[POLICIES["latency"]])["thresholdValue"] == 3000
    assert after[POLICIES["latency"]]["name"] == latency["name"]
    for name in set(POLICIES.values()) - {POLICIES["latency"]}:
        assert after[name] == before[name]

    again, touched = run(fake_gcp, workdir, "-e", "monitoring_latency_p95_ms=3000")
    assert again.changed_total == 0 and touched == []
    back, touched = run(fake_gcp, workdir)
    assert back.changed_total == 1 and len(touched) == 1
    assert threshold(policies(fake_gcp)[POLICIES["latency"]])["thresholdValue"] == 2500


def test_email_channel_is_added_and_removed(fake_gcp, provisioned, workdir):
    email = ("-e", "monitoring_alert_email=oncall@example.com")
    result, touched = run(fake_gcp, workdir, *email)
    [channel] = fake_gcp.list(f"{M3}/notificationChannels")
    assert channel["type"] == "email"
    assert channel["labels"] == {"email_address": "oncall@example.com"}
    assert result.changed_total == 2, result.stdout[-4000:]  # the channel; the policy loop
    assert sorted(m for m, _ in touched) == ["PATCH"] * 4 + ["POST"]
    for p in policies(fake_gcp).values():
        assert p["notificationChannels"] == [channel["name"]]

    again, touched = run(fake_gcp, workdir, *email)
    assert again.changed_total == 0 and touched == []

    # Back to silent: the channel goes (force: the policies lose it with it).
    back, touched = run(fake_gcp, workdir)
    assert back.changed_total == 1, back.stdout[-4000:]
    assert touched == [("DELETE", f"v3/{channel['name']}")], touched
    assert fake_gcp.list(f"{M3}/notificationChannels") == []
    for p in policies(fake_gcp).values():
        assert p["notificationChannels"] == []


def test_sample_rate_is_a_variable(fake_gcp, provisioned, workdir):
    key = f"{C}/global/backendServices/img2pdf-backend"
    result, touched = run(fake_gcp, workdir, "-e", "load_balancer_log_sample_rate=0.25")
    assert result.changed_total == 1, result.stdout[-4000:]
    assert [p for _, p in touched] == [key]
    assert fake_gcp.get(key)["logConfig"] == {"enable": True, "sampleRate": 0.25}
    again, touched = run(fake_gcp, workdir, "-e", "load_balancer_log_sample_rate=0.25")
    assert again.changed_total == 0 and touched == []
    run(fake_gcp, workdir)
    assert fake_gcp.get(key)["logConfig"] == {"enable": True, "sampleRate": 1}


def test_logs_are_enabled_on_an_existing_backend_service(fake_gcp, provisioned, workdir):
    """The module never adds a field the live service lacks: the role PATCHes it."""
    key = f"{C}/global/backendServices/img2pdf-backend"
    with fake_gcp._state.lock:  # a backend service from before this change
        backend = fake_gcp._state.store[key]
        del backend["logConfig"]
        backend["fingerprint"] = "b2xkZXI="
    result, touched = run(fake_gcp, workdir)
    assert result.changed_total == 1, result.stdout[-4000:]
    assert touched == [("PATCH", key)]
    assert fake_gcp.get(key)["logConfig"] == {"enable": True, "sampleRate": 1}


def test_auto_arms_the_uptime_alert_once_the_certificate_is_active(fake_gcp, provisioned, workdir):
    auto = ("-e", "monitoring_uptime_alert_enabled=auto")
    result, touched = run(fake_gcp, workdir, *auto)  # certificate still PROVISIONING
    uptime = policies(fake_gcp)[POLICIES["uptime"]]
    assert uptime["enabled"] is False
    assert result.changed_total == 1 and len(touched) == 1

    ip = host(fake_gcp).removesuffix(".nip.io")
    cert = f"{C}/global/sslCertificates/img2pdf-cert-{ip.replace('.', '-')}-nip-io"
    with fake_gcp._state.lock:
        fake_gcp._state.store[cert]["managed"]["status"] = "ACTIVE"
    armed, touched = run(fake_gcp, workdir, *auto)
    assert armed.changed_total == 1 and touched == [("PATCH", f"v3/{uptime['name']}")]
    assert policies(fake_gcp)[POLICIES["uptime"]]["enabled"] is True
    assert all(p["enabled"] for p in policies(fake_gcp).values())
    again, touched = run(fake_gcp, workdir)
    assert again.changed_total == 0 and touched == []


def test_a_new_address_recreates_the_uptime_check(fake_gcp, provisioned, workdir):
    """The monitored resource cannot be changed: the check is replaced and the
    uptime policy (which filters on the host) follows."""
    [old] = fake_gcp.list(f"{M3}/uptimeCheckConfigs")
    old_key = f"{M3}/uptimeCheckConfigs/" + old["name"].rsplit("/", 1)[1]
    with fake_gcp._state.lock:  # as left by an earlier address
        fake_gcp._state.store[old_key]["monitoredResource"]["labels"]["host"] = "34.1.2.3.nip.io"
    result, touched = run(fake_gcp, workdir)
    assert result.changed_total == 1, result.stdout[-4000:]
    assert [m for m, _ in touched] == ["DELETE", "POST"]
    [new] = fake_gcp.list(f"{M3}/uptimeCheckConfigs")
    assert new["monitoredResource"]["labels"]["host"] == host(fake_gcp)
    assert new["name"] != old["name"]


def test_teardown_removes_everything(fake_gcp, provisioned, workdir):
    result = run_playbook(TEARDOWN, *base_args(workdir), env=fake_gcp.env)
    assert result.rc == 0
    assert fake_gcp.resources() == []
    before = len(fake_gcp.requests_log())
    again = run_playbook(TEARDOWN, *base_args(workdir), env=fake_gcp.env)
    assert again.changed_total == 0, again.stdout[-4000:]
    assert writes(fake_gcp.requests_log()[before:]) == []
