"""Cloud Monitoring v3 (uptime checks, alert policies, notification channels) and
Dashboards v1, as far as provisioning uses them.

Bodies are validated against monitoring.v3.json / monitoring.v1.json by the
router (discovery.py); this module adds what the API does beyond the schema,
modelled on the method and field descriptions in those documents and on
https://cloud.google.com/monitoring/api/ref_v3/rest and
https://cloud.google.com/monitoring/dashboards/api-dashboard:

- the API answers 403 SERVICE_DISABLED until monitoring.googleapis.com is enabled;
- names are assigned by the server: uptime checks get a slug of the display
  name plus a random suffix, alert policies and channels a number, dashboards a
  UUID (a dashboard name given at creation is kept); v3 names carry the project
  as the request spelt it, dashboard names the project number; alert policy
  conditions get their own names;
- lists come in pages (the server caps a page, as the docs allow) with
  nextPageToken; an unknown pageToken is a 400;
- PATCH with updateMask changes only the listed fields (snake_case or
  camelCase paths; a listed field missing from the body is cleared), without
  one it replaces the resource; uptime checks refuse a change of their
  monitored resource; dashboards compare the etag (stale: 409 ABORTED);
- uptime checks: period 60s/300s/600s/900s, timeout 1-60 s, selected regions
  covering at least three locations, exactly one of http/tcp check;
- alert policies: one to six conditions, each with exactly one condition type,
  threshold conditions need a filter with a metric type and a duration,
  log-match conditions need alertStrategy.notificationRateLimit, channels must
  exist; deleting a channel that a policy uses needs force=true, deleting an
  uptime check that a policy's filter names is refused (a 400 that says to
  delete the policies first: hashicorp/terraform-provider-google#10176,
  GoogleCloudPlatform/magic-modules#9429).

Checker locations: https://cloud.google.com/monitoring/uptime-checks/introduction
(USA = USA_OREGON + USA_IOWA + USA_VIRGINIA, one checker each; EUROPE,
SOUTH_AMERICA, ASIA_PACIFIC one each; at least three checkers).

Stored under monitoring/v3/projects/<project id>/<collection>/<id> and
monitoring/v1/projects/<project number>/dashboards/<id>.
"""

from __future__ import annotations

import base64
import copy
import os
import re
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .common import now_utc
from .discovery import ApiError, not_found
from .registry import Request, handles

if TYPE_CHECKING:
    from .state import FakeGcpState

Res = dict[str, Any]

SERVICE = "monitoring.googleapis.com"
# Lists answer at most this many items a page, whatever pageSize asks for.
PAGE_MAX = 3
PERIODS = {"60s", "300s", "600s", "900s"}
# Locations behind each uptime check region (USA has three).
REGION_LOCATIONS = {
    "USA": 3,
    "EUROPE": 1,
    "SOUTH_AMERICA": 1,
    "ASIA_PACIFIC": 1,
    "USA_OREGON": 1,
    "USA_IOWA": 1,
    "USA_VIRGINIA": 1,
}
UPTIME_RESOURCE_TYPES = {
    "uptime_url",
    "gce_instance",
    "gae_app",
    "aws_ec2_instance",
    "aws_elb_load_balancer",
    "k8s_service",
    "servicedirectory_service",
    "cloud_run_revision",
}
CONDITION_TYPES = (
    "conditionThreshold",
    "conditionAbsent",
    "conditionMatchedLog",
    "conditionMonitoringQueryLanguage",
    "conditionPrometheusQueryLanguage",
    "conditionSql",
)
DURATION_RE = re.compile(r"^\d+(\.\d{1,9})?s$")
# What the server fills in on each collection and refuses to take from a client.
OUTPUT_ONLY = {
    "uptimeCheckConfigs": {"isInternal"},
    "alertPolicies": {"creationRecord", "mutationRecord", "validity"},
    "notificationChannels": {"creationRecord", "mutationRecords", "verificationStatus"},
    "dashboards": set(),
}


# ----------------------------------------------------------------------------- helpers
def _require_enabled(state: FakeGcpState) -> None:
    if SERVICE not in state.services:
        raise ApiError(
            403,
            f"Cloud Monitoring API has not been used in project {state.project_number} before "
            "or it is disabled. Enable it by visiting https://console.developers.google.com/"
            f"apis/api/{SERVICE}/overview?project={state.project_number} then retry.",
            reason="accessNotConfigured",
            status="PERMISSION_DENIED",
        )


def _project(state: FakeGcpState, req: Request) -> str:
    p = req.vars["projectsId"]
    state.check_project(p)
    return p


ProjectHandler = Callable[["FakeGcpState", Request, str], tuple[int, Any]]


def _handles(method_id: str) -> Callable[[ProjectHandler], ProjectHandler]:
    """Register a handler that runs only once the API is enabled and the project
    exists; it gets the project as the request spelt it."""

    def deco(fn: ProjectHandler) -> ProjectHandler:
        def handler(state: FakeGcpState, req: Request) -> tuple[int, Any]:
            _require_enabled(state)
            return fn(state, req, _project(state, req))

        handles(method_id)(handler)
        return fn

    return deco


def _prefix(state: FakeGcpState, coll: str) -> str:
    if coll == "dashboards":
        return f"monitoring/v1/projects/{state.project_number}/dashboards/"
    return f"monitoring/v3/projects/{state.project}/{coll}/"


def _key(state: FakeGcpState, coll: str, rid: str) -> str:
    return _prefix(state, coll) + rid


def _get(state: FakeGcpState, coll: str, req: Request) -> Res:
    rid = req.vars[f"{coll}Id"]
    res = state.store.get(_key(state, coll, rid))
    if res is None:
        p = req.vars["projectsId"]
        raise not_found(message=f"Requested entity was not found: projects/{p}/{coll}/{rid}")
    return res


def _name(state: FakeGcpState, coll: str, project_as_sent: str, rid: str) -> str:
    p = state.project_number if coll == "dashboards" else project_as_sent
    return f"projects/{p}/{coll}/{rid}"


def _list(state: FakeGcpState, req: Request, p: str, coll: str) -> tuple[int, Any]:
    prefix = _prefix(state, coll)
    items = [copy.deepcopy(v) for k, v in sorted(state.store.items()) if k.startswith(prefix)]
    for it in items:  # names follow the project spelling of the request
        it["name"] = _name(state, coll, p, it["name"].rsplit("/", 1)[-1])
    size = int(req.query.get("pageSize") or 0)
    size = min(size, PAGE_MAX) if size > 0 else PAGE_MAX
    token = req.query.get("pageToken", "")
    start = 0
    if token:
        try:
            start = int(base64.urlsafe_b64decode(token.encode()).decode().split(":", 1)[1])
        except (ValueError, IndexError):
            raise ApiError(400, f"Invalid page token: {token}") from None
    page = items[start : start + size]
    out: Res = {coll: page} if page else {}
    if start + size < len(items):
        out["nextPageToken"] = base64.urlsafe_b64encode(f"{coll}:{start + size}".encode()).decode()
    if coll == "uptimeCheckConfigs":
        out["totalSize"] = len(items)
    return 200, out


def _refuse_output_only(coll: str, body: Res) -> None:
    for f in OUTPUT_ONLY[coll]:
        body.pop(f, None)


def _camel(path: str) -> str:
    return re.sub(r"_([a-z])", lambda m: m.group(1).upper(), path.strip())


def _apply_mask(cur: Res, body: Res, mask: str) -> Res:
    new = copy.deepcopy(cur)
    for path in filter(None, (_camel(p) for p in mask.split(","))):
        parts = path.split(".")
        src: Any = body
        for part in parts:
            src = src.get(part) if isinstance(src, dict) else None
        dst = new
        for part in parts[:-1]:
            dst = dst.setdefault(part, {})
        if src is None:
            dst.pop(parts[-1], None)
        else:
            dst[parts[-1]] = copy.deepcopy(src)
    return new


def _mutation() -> Res:
    return {"mutateTime": now_utc(), "mutatedBy": "fake@img2pdf-test.iam.gserviceaccount.com"}


def _labels(where: str, labels: Res | None) -> None:
    for k, v in (labels or {}).items():
        if not re.match(r"^[a-z][a-z0-9_-]{0,62}$", k) or not re.match(r"^[a-z0-9_-]{0,63}$", v):
            raise ApiError(400, f"Field {where} has an invalid label {k}={v}.")


def _duration(where: str, value: Any, required: bool = False) -> None:
    if value is None:
        if required:
            raise ApiError(400, f"Field {where} is required.")
        return
    if not DURATION_RE.match(str(value)):
        raise ApiError(400, f"Field {where} has an invalid duration '{value}'.")


def _create_input(req: Request, coll: str, field: str) -> Res:
    """The body without output-only fields; a name is the server's to give."""
    body = copy.deepcopy(req.body)
    _refuse_output_only(coll, body)
    if body.get("name"):
        raise ApiError(400, f"Field {field}.name must be empty on create.")
    return body


def _patch_input(state: FakeGcpState, req: Request, coll: str) -> tuple[Res, Res, str]:
    """The stored resource, the body without output-only fields, the update mask."""
    cur = _get(state, coll, req)
    body = copy.deepcopy(req.body)
    _refuse_output_only(coll, body)
    return cur, body, req.query.get("updateMask", "")


def _stored(state: FakeGcpState, coll: str, rid: str, res: Res) -> tuple[int, Any]:
    """Store a created or changed resource and answer it."""
    state.store[_key(state, coll, rid)] = res
    return 200, copy.deepcopy(res)


def _delete(state: FakeGcpState, req: Request, coll: str) -> tuple[int, Any]:
    _get(state, coll, req)
    del state.store[_key(state, coll, req.vars[f"{coll}Id"])]
    return 200, {}


def _register_reads(coll: str) -> None:
    """list and get: the same for every collection."""

    def list_(state: FakeGcpState, req: Request, p: str) -> tuple[int, Any]:
        return _list(state, req, p, coll)

    def get(state: FakeGcpState, req: Request, p: str) -> tuple[int, Any]:
        return 200, copy.deepcopy(_get(state, coll, req))

    _handles(f"monitoring.projects.{coll}.list")(list_)
    _handles(f"monitoring.projects.{coll}.get")(get)


for _coll in ("uptimeCheckConfigs", "notificationChannels", "alertPolicies", "dashboards"):
    _register_reads(_coll)


# ----------------------------------------------------------------------------- uptime checks
def _check_uptime(body: Res) -> None:
    if not body.get("displayName"):
        raise ApiError(400, "Field uptime_check_config.display_name is required.")
    _duration("uptime_check_config.timeout", body.get("timeout"), required=True)
    secs = float(str(body["timeout"])[:-1])
    if not 1 <= secs <= 60:
        raise ApiError(400, "Field uptime_check_config.timeout must be between 1s and 60s.")
    body.setdefault("period", "60s")
    if body["period"] not in PERIODS:
        raise ApiError(400, f"Field uptime_check_config.period is invalid: {body['period']}.")
    if bool(body.get("httpCheck")) == bool(body.get("tcpCheck")):
        raise ApiError(400, "An uptime check needs exactly one of http_check and tcp_check.")
    targets = [f for f in ("monitoredResource", "resourceGroup", "syntheticMonitor") if f in body]
    if len(targets) != 1:
        raise ApiError(
            400,
            "An uptime check needs exactly one of monitored_resource, resource_group "
            "and synthetic_monitor.",
        )
    mr = body.get("monitoredResource")
    if mr is not None:
        if mr.get("type") not in UPTIME_RESOURCE_TYPES:
            raise ApiError(400, f"Monitored resource type {mr.get('type')} is not supported.")
        if mr["type"] == "uptime_url" and not (mr.get("labels") or {}).get("host"):
            raise ApiError(400, "Monitored resource uptime_url needs the label host.")
    regions = body.get("selectedRegions") or []
    if regions:
        if len(set(regions)) != len(regions) or "REGION_UNSPECIFIED" in regions:
            raise ApiError(400, "Field uptime_check_config.selected_regions is invalid.")
        if sum(REGION_LOCATIONS[r] for r in regions) < 3:
            raise ApiError(
                400, "Selected regions must include a minimum of 3 locations for the check."
            )
    http = body.get("httpCheck")
    if http is not None:
        http.setdefault("requestMethod", "GET")
        http.setdefault("port", 443 if http.get("useSsl") else 80)
        http.setdefault("path", "/")
        if not http["path"].startswith("/"):
            http["path"] = "/" + http["path"]
    for m in body.get("contentMatchers") or []:
        if not m.get("content"):
            raise ApiError(400, "Field content_matchers.content is required.")
        m.setdefault("matcher", "CONTAINS_STRING")
    _labels("uptime_check_config.user_labels", body.get("userLabels"))
    body.setdefault("checkerType", "STATIC_IP_CHECKERS")
    body["isInternal"] = False


def _uptime_id(display_name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", display_name.lower()).strip("-")[:50] or "check"
    return f"{slug}-{os.urandom(4).hex()[:7]}"


@_handles("monitoring.projects.uptimeCheckConfigs.create")
def uptime_create(state: FakeGcpState, req: Request, p: str) -> tuple[int, Any]:
    body = _create_input(req, "uptimeCheckConfigs", "uptime_check_config")
    _check_uptime(body)
    rid = _uptime_id(body["displayName"])
    body["name"] = _name(state, "uptimeCheckConfigs", p, rid)
    return _stored(state, "uptimeCheckConfigs", rid, body)


@_handles("monitoring.projects.uptimeCheckConfigs.patch")
def uptime_patch(state: FakeGcpState, req: Request, p: str) -> tuple[int, Any]:
    cur, body, mask = _patch_input(state, req, "uptimeCheckConfigs")
    new = _apply_mask(cur, body, mask) if mask else {**body, "name": cur["name"]}
    for immutable in ("monitoredResource", "resourceGroup", "syntheticMonitor", "checkerType"):
        if new.get(immutable, cur.get(immutable)) != cur.get(immutable):
            raise ApiError(400, f"The {immutable} of an existing uptime check cannot be changed.")
        if immutable in cur:
            new[immutable] = cur[immutable]
    _check_uptime(new)
    new["name"] = cur["name"]
    return _stored(state, "uptimeCheckConfigs", req.vars["uptimeCheckConfigsId"], new)


@_handles("monitoring.projects.uptimeCheckConfigs.delete")
def uptime_delete(state: FakeGcpState, req: Request, p: str) -> tuple[int, Any]:
    rid = req.vars["uptimeCheckConfigsId"]
    _get(state, "uptimeCheckConfigs", req)
    users = [
        pol["name"]
        for k, pol in state.store.items()
        if k.startswith(_prefix(state, "alertPolicies")) and f'"{rid}"' in _filters(pol)
    ]
    if users:
        raise ApiError(
            400,
            f"The uptime check config {rid} is referenced by alerting policies {users}: "
            "delete them or remove the reference first.",
            status="FAILED_PRECONDITION",
        )
    del state.store[_key(state, "uptimeCheckConfigs", rid)]
    return 200, {}


# ----------------------------------------------------------------------------- channels
def _check_channel(body: Res) -> None:
    typ = body.get("type")
    if not typ:
        raise ApiError(400, "Field notification_channel.type is required.")
    labels = body.get("labels") or {}
    if typ == "email":
        addr = labels.get("email_address", "")
        if not re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", addr):
            raise ApiError(400, f"Label email_address is required and must be an email: {addr!r}.")
        if set(labels) - {"email_address"}:
            raise ApiError(400, f"Unknown labels for channel type email: {sorted(labels)}.")
    _labels("notification_channel.user_labels", body.get("userLabels"))
    body.setdefault("enabled", True)


@_handles("monitoring.projects.notificationChannels.create")
def channel_create(state: FakeGcpState, req: Request, p: str) -> tuple[int, Any]:
    body = copy.deepcopy(req.body)
    _refuse_output_only("notificationChannels", body)
    body.pop("name", None)
    _check_channel(body)
    rid = str(int(state.new_id()) % 10**19)
    body["name"] = _name(state, "notificationChannels", p, rid)
    body["creationRecord"] = _mutation()
    body["mutationRecords"] = [_mutation()]
    # email channels are usable at once; only SMS needs a verification code
    body["verificationStatus"] = "VERIFICATION_STATUS_UNSPECIFIED"
    return _stored(state, "notificationChannels", rid, body)


@_handles("monitoring.projects.notificationChannels.patch")
def channel_patch(state: FakeGcpState, req: Request, p: str) -> tuple[int, Any]:
    cur, body, mask = _patch_input(state, req, "notificationChannels")
    new = _apply_mask(cur, body, mask) if mask else {**body}
    if new.get("type") != cur["type"]:
        raise ApiError(400, "The type of a notification channel cannot be changed.")
    _check_channel(new)
    new["name"] = cur["name"]
    new["creationRecord"] = cur["creationRecord"]
    new["verificationStatus"] = cur["verificationStatus"]
    new["mutationRecords"] = [*cur.get("mutationRecords", []), _mutation()]
    return _stored(state, "notificationChannels", req.vars["notificationChannelsId"], new)


@_handles("monitoring.projects.notificationChannels.delete")
def channel_delete(state: FakeGcpState, req: Request, p: str) -> tuple[int, Any]:
    cur = _get(state, "notificationChannels", req)
    rid = req.vars["notificationChannelsId"]
    users = [
        k
        for k, pol in state.store.items()
        if k.startswith(_prefix(state, "alertPolicies"))
        and any(c.rsplit("/", 1)[-1] == rid for c in pol.get("notificationChannels", []))
    ]
    if users and req.query.get("force") != "true":
        raise ApiError(
            400,
            f"Notification channel {cur['name']} is used by alerting policies; "
            "delete with force=true to remove it from them.",
            status="FAILED_PRECONDITION",
        )
    for k in users:
        pol = state.store[k]
        pol["notificationChannels"] = [
            c for c in pol["notificationChannels"] if c.rsplit("/", 1)[-1] != rid
        ]
    del state.store[_key(state, "notificationChannels", rid)]
    return 200, {}


# ----------------------------------------------------------------------------- alert policies
def _filters(policy: Res) -> str:
    out = []
    for c in policy.get("conditions", []):
        for t in CONDITION_TYPES:
            if t in c:
                out.append(c[t].get("filter", "") + " " + c[t].get("denominatorFilter", ""))
    return " ".join(out)


def _check_policy(state: FakeGcpState, body: Res, name: str) -> None:
    if not body.get("displayName"):
        raise ApiError(400, "Field alert_policy.display_name is required.")
    conds = body.get("conditions") or []
    if not 1 <= len(conds) <= 6:
        raise ApiError(400, "An alerting policy must have between one and six conditions.")
    if len(conds) > 1 and body.get("combiner", "COMBINE_UNSPECIFIED") == "COMBINE_UNSPECIFIED":
        raise ApiError(400, "Field alert_policy.combiner is required with several conditions.")
    for i, c in enumerate(conds):
        where = f"alert_policy.conditions[{i}]"
        if not c.get("displayName"):
            raise ApiError(400, f"Field {where}.display_name is required.")
        kinds = [t for t in CONDITION_TYPES if t in c]
        if len(kinds) != 1:
            raise ApiError(400, f"{where} needs exactly one condition type, got {kinds}.")
        spec = c[kinds[0]]
        if kinds[0] in ("conditionThreshold", "conditionAbsent"):
            if "metric.type" not in spec.get("filter", ""):
                raise ApiError(400, f"Field {where}.filter must name a metric.type.")
            _duration(f"{where}.duration", spec.get("duration"), required=True)
            for a in spec.get("aggregations", []) + spec.get("denominatorAggregations", []):
                _duration(f"{where}.aggregations.alignment_period", a.get("alignmentPeriod"))
            if spec.get("denominatorFilter") and "metric.type" not in spec["denominatorFilter"]:
                raise ApiError(400, f"Field {where}.denominator_filter must name a metric.type.")
        if kinds[0] == "conditionThreshold":
            if spec.get("comparison", "COMPARISON_UNSPECIFIED") == "COMPARISON_UNSPECIFIED":
                raise ApiError(400, f"Field {where}.comparison is required.")
            spec.setdefault("thresholdValue", 0)
        if kinds[0] == "conditionMatchedLog":
            if not spec.get("filter"):
                raise ApiError(400, f"Field {where}.filter is required.")
            limit = (body.get("alertStrategy") or {}).get("notificationRateLimit") or {}
            if not limit.get("period"):
                raise ApiError(
                    400,
                    "Log-based alerting policies need alert_strategy.notification_rate_limit.",
                )
        c.setdefault("name", f"{name}/conditions/{os.urandom(8).hex()}")
    for ch in body.get("notificationChannels") or []:
        m = re.match(r"^projects/([^/]+)/notificationChannels/([^/]+)$", ch)
        if not m or m.group(1) not in state.projects():
            raise ApiError(400, f"Invalid notification channel name: {ch}.")
        if _key(state, "notificationChannels", m.group(2)) not in state.store:
            raise not_found(message=f"Notification channel {ch} does not exist.")
    _labels("alert_policy.user_labels", body.get("userLabels"))
    doc = body.get("documentation")
    if doc is not None and doc.get("content"):
        doc.setdefault("mimeType", "text/markdown")
    body.setdefault("enabled", True)
    body.setdefault("combiner", "OR")


@_handles("monitoring.projects.alertPolicies.create")
def policy_create(state: FakeGcpState, req: Request, p: str) -> tuple[int, Any]:
    body = _create_input(req, "alertPolicies", "alert_policy")
    rid = str(int(state.new_id()) % 10**19)
    name = _name(state, "alertPolicies", p, rid)
    _check_policy(state, body, name)
    body["name"] = name
    body["creationRecord"] = _mutation()
    body["mutationRecord"] = body["creationRecord"]
    return _stored(state, "alertPolicies", rid, body)


@_handles("monitoring.projects.alertPolicies.patch")
def policy_patch(state: FakeGcpState, req: Request, p: str) -> tuple[int, Any]:
    cur, body, mask = _patch_input(state, req, "alertPolicies")
    new = _apply_mask(cur, body, mask) if mask else {**body}
    new["name"] = cur["name"]
    _check_policy(state, new, cur["name"])
    new["creationRecord"] = cur["creationRecord"]
    new["mutationRecord"] = _mutation()
    return _stored(state, "alertPolicies", req.vars["alertPoliciesId"], new)


@_handles("monitoring.projects.alertPolicies.delete")
def policy_delete(state: FakeGcpState, req: Request, p: str) -> tuple[int, Any]:
    return _delete(state, req, "alertPolicies")


# ----------------------------------------------------------------------------- dashboards
def _check_dashboard(body: Res) -> None:
    if not body.get("displayName"):
        raise ApiError(400, "Field dashboard.display_name is required.")
    layouts = [f for f in ("gridLayout", "mosaicLayout", "rowLayout", "columnLayout") if f in body]
    if len(layouts) > 1:
        raise ApiError(400, f"A dashboard has one layout, got {layouts}.")
    for f in ("labels",):
        _labels(f"dashboard.{f}", body.get(f))


def _etag() -> str:
    return os.urandom(16).hex()


@_handles("monitoring.projects.dashboards.create")
def dashboard_create(state: FakeGcpState, req: Request, p: str) -> tuple[int, Any]:
    body = copy.deepcopy(req.body)
    if body.get("etag"):
        raise ApiError(400, "Field dashboard.etag must not be set on create.")
    rid = str(uuid.uuid4())
    if body.get("name"):
        m = re.match(r"^projects/([^/]+)/dashboards/([A-Za-z0-9_-]+)$", body["name"])
        if not m or m.group(1) not in state.projects():
            raise ApiError(400, f"Invalid dashboard name {body['name']}.")
        rid = m.group(2)
        if _key(state, "dashboards", rid) in state.store:
            raise ApiError(409, f"Dashboard {body['name']} already exists.", reason="alreadyExists")
    _check_dashboard(body)
    body["name"] = _name(state, "dashboards", "", rid)
    body["etag"] = _etag()
    if req.query.get("validateOnly") == "true":
        return 200, body
    return _stored(state, "dashboards", rid, body)


@_handles("monitoring.projects.dashboards.patch")
def dashboard_patch(state: FakeGcpState, req: Request, p: str) -> tuple[int, Any]:
    cur = _get(state, "dashboards", req)
    body = copy.deepcopy(req.body)
    if body.get("etag") and body["etag"] != cur["etag"]:
        raise ApiError(
            409,
            "The dashboard was changed since its etag was read: read it again.",
            reason="aborted",
            status="ABORTED",
        )
    _check_dashboard(body)
    body["name"] = cur["name"]
    body["etag"] = _etag()
    if req.query.get("validateOnly") == "true":
        return 200, body
    return _stored(state, "dashboards", req.vars["dashboardsId"], body)


@_handles("monitoring.projects.dashboards.delete")
def dashboard_delete(state: FakeGcpState, req: Request, p: str) -> tuple[int, Any]:
    return _delete(state, req, "dashboards")
