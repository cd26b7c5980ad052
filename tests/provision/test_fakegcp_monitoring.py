"""The fake's Cloud Monitoring v3 and Dashboards v1, by direct requests through
the proxy: what provisioning tests rely on it to refuse or assign."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.provision.conftest import FakeGcp
from tests.provision.test_fakegcp import call, ok

P = "img2pdf-test"
N = "123456789012"
M = f"https://monitoring.googleapis.com/v3/projects/{P}"
D = f"https://monitoring.googleapis.com/v1/projects/{P}/dashboards"


@pytest.fixture
def gcp(fake_gcp: FakeGcp) -> Iterator[FakeGcp]:
    fake_gcp.reset()
    ok(
        call(
            fake_gcp,
            "POST",
            f"https://serviceusage.googleapis.com/v1/projects/{P}/services/"
            "monitoring.googleapis.com:enable",
            {},
        )
    )
    yield fake_gcp
    fake_gcp.reset()


def uptime(regions: list[str] | None = None, **over: Any) -> dict[str, Any]:
    body = {
        "displayName": "img2pdf /ping",
        "monitoredResource": {
            "type": "uptime_url",
            "labels": {"project_id": P, "host": "34.1.2.3.nip.io"},
        },
        "httpCheck": {"useSsl": True, "path": "/ping"},
        "timeout": "10s",
        "selectedRegions": regions or ["USA_VIRGINIA", "EUROPE", "ASIA_PACIFIC"],
    }
    return {**body, **over}


def policy(name: str = "p", **over: Any) -> dict[str, Any]:
    body = {
        "displayName": name,
        "combiner": "OR",
        "conditions": [
            {
                "displayName": "c",
                "conditionThreshold": {
                    "filter": 'metric.type="loadbalancing.googleapis.com/https/request_count"',
                    "comparison": "COMPARISON_GT",
                    "thresholdValue": 1,
                    "duration": "60s",
                },
            }
        ],
    }
    return {**body, **over}


def test_api_is_refused_until_enabled(fake_gcp: FakeGcp) -> None:
    fake_gcp.reset()
    with fake_gcp.state.lock:  # on by default; a project where it was turned off
        fake_gcp.state.services.discard("monitoring.googleapis.com")
    resp = call(fake_gcp, "GET", f"{M}/alertPolicies")
    assert resp.status_code == 403
    assert resp.json()["error"]["status"] == "PERMISSION_DENIED"
    assert "monitoring.googleapis.com" in resp.json()["error"]["message"]


def test_uptime_check_gets_a_server_name_and_defaults(gcp: FakeGcp) -> None:
    created = ok(call(gcp, "POST", f"{M}/uptimeCheckConfigs", uptime()))
    assert created["name"].startswith(f"projects/{P}/uptimeCheckConfigs/img2pdf-ping-")
    assert created["period"] == "60s"
    assert created["httpCheck"]["port"] == 443
    assert created["httpCheck"]["requestMethod"] == "GET"
    got = ok(call(gcp, "GET", f"https://monitoring.googleapis.com/v3/{created['name']}"))
    assert got == created
    # a client may not choose the name
    named = call(gcp, "POST", f"{M}/uptimeCheckConfigs", uptime(name=created["name"]))
    assert named.status_code == 400


@pytest.mark.parametrize(
    ("regions", "status"),
    [
        (["EUROPE", "ASIA_PACIFIC"], 400),  # two locations: one short
        (["USA_OREGON", "EUROPE", "ASIA_PACIFIC"], 200),  # exactly three
        (["USA"], 200),  # one region of three locations
    ],
)
def test_uptime_regions_need_three_locations(gcp: FakeGcp, regions, status) -> None:
    resp = call(gcp, "POST", f"{M}/uptimeCheckConfigs", uptime(regions))
    assert resp.status_code == status, resp.text


@pytest.mark.parametrize(
    ("over", "status"),
    [
        ({"period": "120s"}, 400),
        ({"period": "900s"}, 200),
        ({"timeout": "61s"}, 400),
        ({"timeout": "60s"}, 200),
        ({"timeout": "1s"}, 200),
        ({"timeout": "0s"}, 400),
        ({"contentMatchers": [{"content": "pong", "matcher": "CONTAINS"}]}, 400),  # enum
        ({"httpChek": {}}, 400),  # unknown field (discovery document)
    ],
)
def test_uptime_check_fields_are_validated(gcp: FakeGcp, over, status) -> None:
    resp = call(gcp, "POST", f"{M}/uptimeCheckConfigs", uptime(**over))
    assert resp.status_code == status, resp.text


def test_update_mask_changes_only_the_listed_fields(gcp: FakeGcp) -> None:
    created = ok(call(gcp, "POST", f"{M}/alertPolicies", policy(severity="ERROR")))
    url = f"https://monitoring.googleapis.com/v3/{created['name']}"
    cond_name = created["conditions"][0]["name"]
    assert cond_name.startswith(created["name"] + "/conditions/")
    patched = ok(
        call(
            gcp,
            "PATCH",
            url + "?updateMask=display_name,user_labels",
            {"displayName": "q", "severity": "WARNING"},
        )
    )
    assert patched["displayName"] == "q"
    assert patched["severity"] == "ERROR", "not in the mask: kept"
    assert "userLabels" not in patched, "in the mask but absent: cleared"
    assert patched["conditions"][0]["name"] == cond_name
    assert patched["creationRecord"] == created["creationRecord"]
    # without a mask the body replaces the policy (the id stays)
    replaced = ok(call(gcp, "PATCH", url, policy("r")))
    assert replaced["name"] == created["name"]
    assert "severity" not in replaced


def test_uptime_monitored_resource_cannot_change(gcp: FakeGcp) -> None:
    created = ok(call(gcp, "POST", f"{M}/uptimeCheckConfigs", uptime()))
    url = f"https://monitoring.googleapis.com/v3/{created['name']}"
    moved = uptime()["monitoredResource"]
    moved["labels"]["host"] = "34.9.9.9.nip.io"
    resp = call(gcp, "PATCH", url + "?updateMask=monitored_resource", {"monitoredResource": moved})
    assert resp.status_code == 400
    resp = call(gcp, "PATCH", url + "?updateMask=timeout", {"timeout": "20s"})
    assert ok(resp)["timeout"] == "20s"


def test_lists_come_in_pages(gcp: FakeGcp) -> None:
    names = {ok(call(gcp, "POST", f"{M}/alertPolicies", policy(f"p{i}")))["name"] for i in range(7)}
    seen, token, pages = set(), "", 0
    while True:
        page = ok(call(gcp, "GET", f"{M}/alertPolicies?pageSize=100&pageToken={token}"))
        pages += 1
        seen |= {p["name"] for p in page["alertPolicies"]}
        token = page.get("nextPageToken", "")
        if not token:
            break
    assert seen == names
    assert pages == 3, "the server caps a page at 3"
    assert call(gcp, "GET", f"{M}/alertPolicies?pageToken=bogus").status_code == 400
    assert ok(call(gcp, "GET", f"{M}/notificationChannels")) == {}


def test_missing_objects_are_404(gcp: FakeGcp) -> None:
    for url in (f"{M}/alertPolicies/123", f"{M}/uptimeCheckConfigs/x-1", f"{D}/abc"):
        assert call(gcp, "GET", url).status_code == 404
        assert call(gcp, "DELETE", url).status_code == 404


def test_policy_needs_an_existing_channel_and_a_valid_condition(gcp: FakeGcp) -> None:
    missing = policy(notificationChannels=[f"projects/{P}/notificationChannels/999"])
    assert call(gcp, "POST", f"{M}/alertPolicies", missing).status_code == 404
    no_duration = policy()
    del no_duration["conditions"][0]["conditionThreshold"]["duration"]
    assert call(gcp, "POST", f"{M}/alertPolicies", no_duration).status_code == 400
    log_match = policy(
        conditions=[{"displayName": "l", "conditionMatchedLog": {"filter": "severity>=ERROR"}}]
    )
    assert call(gcp, "POST", f"{M}/alertPolicies", log_match).status_code == 400
    log_match["alertStrategy"] = {"notificationRateLimit": {"period": "300s"}}
    ok(call(gcp, "POST", f"{M}/alertPolicies", log_match))
    seven = policy(conditions=policy()["conditions"] * 7)
    assert call(gcp, "POST", f"{M}/alertPolicies", seven).status_code == 400


def test_channel_in_use_needs_force(gcp: FakeGcp) -> None:
    bad = {"type": "email", "labels": {"email_address": "not-an-address"}}
    assert call(gcp, "POST", f"{M}/notificationChannels", bad).status_code == 400
    channel = ok(
        call(
            gcp,
            "POST",
            f"{M}/notificationChannels",
            {"type": "email", "labels": {"email_address": "a@example.com"}},
        )
    )
    pol = ok(
        call(gcp, "POST", f"{M}/alertPolicies", policy(notificationChannels=[channel["name"]]))
    )
    url = f"https://monitoring.googleapis.com/v3/{channel['name']}"
    assert call(gcp, "DELETE", url).status_code == 400
    ok(call(gcp, "DELETE", url + "?force=true"))
    after = ok(call(gcp, "GET", f"https://monitoring.googleapis.com/v3/{pol['name']}"))
    assert after["notificationChannels"] == []


def test_uptime_check_named_by_a_policy_cannot_be_deleted(gcp: FakeGcp) -> None:
    check = ok(call(gcp, "POST", f"{M}/uptimeCheckConfigs", uptime()))
    check_id = check["name"].rsplit("/", 1)[1]
    pol = policy()
    pol["conditions"][0]["conditionThreshold"]["filter"] = (
        'metric.type="monitoring.googleapis.com/uptime_check/check_passed" AND '
        f'metric.label.check_id="{check_id}"'
    )
    created = ok(call(gcp, "POST", f"{M}/alertPolicies", pol))
    url = f"https://monitoring.googleapis.com/v3/{check['name']}"
    assert call(gcp, "DELETE", url).status_code == 400
    ok(call(gcp, "DELETE", f"https://monitoring.googleapis.com/v3/{created['name']}"))
    ok(call(gcp, "DELETE", url))


def test_dashboard_names_use_the_project_number_and_etags_guard_updates(gcp: FakeGcp) -> None:
    body = {"displayName": "d", "mosaicLayout": {"columns": 48, "tiles": []}}
    created = ok(call(gcp, "POST", D, body))
    assert created["name"].startswith(f"projects/{N}/dashboards/")
    url = f"https://monitoring.googleapis.com/v1/{created['name']}"
    stale = {**body, "displayName": "e", "etag": "0" * 32}
    resp = call(gcp, "PATCH", url, stale)
    assert resp.status_code == 409 and resp.json()["error"]["status"] == "ABORTED"
    updated = ok(call(gcp, "PATCH", url, {**body, "displayName": "e", "etag": created["etag"]}))
    assert updated["etag"] != created["etag"] and updated["displayName"] == "e"
    both = {**body, "gridLayout": {"columns": "2"}}
    assert call(gcp, "POST", D, both).status_code == 400
    assert call(gcp, "POST", D, {"mosaicLayout": {}}).status_code == 400  # displayName
    ok(call(gcp, "DELETE", url))
    assert gcp.list(f"monitoring/v1/projects/{N}/dashboards") == []
