"""Cloud Storage JSON API: buckets, their IAM policies, and objects."""

from __future__ import annotations

import base64
import copy
import time
from typing import TYPE_CHECKING, Any

from .common import BUCKET_RE, WWW, Res, now_utc
from .discovery import ApiError, not_found
from .iam import check_policy, new_etag, policy_view, requested_version, set_policy
from .registry import Request, handles

if TYPE_CHECKING:
    from .state import FakeGcpState


IGNORED_BODY_FIELDS: dict[str, frozenset[str]] = {
    # gcp_storage_bucket sends these query-parameter names in the body; GCS ignores them.
    "storage.buckets.insert": frozenset({"project", "predefinedDefaultObjectAcl"}),
    "storage.buckets.update": frozenset({"project", "predefinedDefaultObjectAcl"}),
    "storage.buckets.patch": frozenset({"project", "predefinedDefaultObjectAcl"}),
}


# ============================================================================ storage
def bucket_key(name: str) -> str:
    return f"storage/v1/b/{name}"


def _bucket_defaults(state: FakeGcpState, b: Res, old: Res | None) -> None:
    loc = str(b.get("location") or "US").upper()
    if old and old["location"] != loc:
        raise ApiError(400, "Cannot change the location of an existing bucket.")
    b["location"] = loc
    b["locationType"] = (
        "multi-region"
        if loc in ("US", "EU", "ASIA")
        else "dual-region"
        if "+" in loc or loc in ("NAM4", "EUR4")
        else "region"
    )
    b.setdefault("storageClass", "STANDARD")
    iam = b.setdefault("iamConfiguration", {})
    ubla = iam.get("uniformBucketLevelAccess") or iam.get("bucketPolicyOnly") or {}
    enabled = bool(ubla.get("enabled", False))
    ubla_out: Res = {"enabled": enabled}
    if enabled:
        prev = (old or {}).get("iamConfiguration", {}).get("uniformBucketLevelAccess", {})
        ubla_out["lockedTime"] = prev.get("lockedTime") or time.strftime(
            "%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + 90 * 86400)
        )
    iam["uniformBucketLevelAccess"] = ubla_out
    iam["bucketPolicyOnly"] = dict(ubla_out)
    pap = iam.get("publicAccessPrevention", "inherited")
    if pap == "unspecified":
        pap = "inherited"
    if pap not in ("inherited", "enforced"):
        raise ApiError(400, f"Invalid argument: publicAccessPrevention {pap}.")
    iam["publicAccessPrevention"] = pap
    b.setdefault("rpo", "DEFAULT")
    # Soft delete is on by default, 7 days (https://cloud.google.com/storage/docs/soft-delete);
    # a full PUT that omits it resets it to that default.
    b.setdefault(
        "softDeletePolicy", {"retentionDurationSeconds": "604800", "effectiveTime": now_utc()}
    )
    if enabled and (b.get("acl") or b.get("defaultObjectAcl")):
        raise ApiError(
            400,
            "Cannot use ACL API to set bucket policy when uniform bucket-level access is enabled. "
            "Read more at https://cloud.google.com/storage/docs/uniform-bucket-level-access",
            reason="invalid",
        )
    for rule in (b.get("lifecycle") or {}).get("rule", []):
        if "action" not in rule or "type" not in rule["action"]:
            raise ApiError(400, "Invalid argument: lifecycle rule needs an action type.")
        if not rule.get("condition"):
            raise ApiError(400, "Invalid argument: lifecycle rule needs a condition.")
    if not enabled:
        b.setdefault("acl", _default_acl(state, b["name"]))
        b.setdefault("defaultObjectAcl", _default_object_acl(state))
    else:
        b.pop("acl", None)
        b.pop("defaultObjectAcl", None)
    b["owner"] = {"entity": f"project-owners-{state.project_number}"}


def _default_acl(state: FakeGcpState, name: str) -> list[Res]:
    n = state.project_number
    return [
        {
            "kind": "storage#bucketAccessControl",
            "bucket": name,
            "entity": f"project-{team}-{n}",
            "role": role,
            "projectTeam": {"projectNumber": n, "team": team},
        }
        for team, role in (("owners", "OWNER"), ("editors", "OWNER"), ("viewers", "READER"))
    ]


def _default_object_acl(state: FakeGcpState) -> list[Res]:
    n = state.project_number
    return [
        {
            "kind": "storage#objectAccessControl",
            "entity": f"project-{team}-{n}",
            "role": role,
            "projectTeam": {"projectNumber": n, "team": team},
        }
        for team, role in (("owners", "OWNER"), ("editors", "OWNER"), ("viewers", "READER"))
    ]


def _project_view(b: Res, projection: str) -> Res:
    out = copy.deepcopy(b)
    if projection != "full":
        for f in ("acl", "defaultObjectAcl", "owner"):
            out.pop(f, None)
    return out


def _get_bucket(state: FakeGcpState, name: str) -> Res:
    b = state.store.get(bucket_key(name))
    if b is None:
        raise not_found(message="The specified bucket does not exist.")
    return b


@handles("storage.buckets.insert")
def bucket_insert(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    state.check_project(req.query["project"])
    body = copy.deepcopy(req.body)
    name = body.get("name", "")
    if not name:
        raise ApiError(400, "Required", reason="required")
    if not BUCKET_RE.match(name) or ".." in name or name.startswith("goog"):
        raise ApiError(400, "Invalid bucket name: '" + name + "'", reason="invalid")
    if bucket_key(name) in state.store:
        raise ApiError(
            409,
            "Your previous request to create the named bucket succeeded and you already own it.",
            reason="conflict",
            status="ALREADY_EXISTS",
        )
    for f in (
        "id",
        "selfLink",
        "timeCreated",
        "updated",
        "metageneration",
        "etag",
        "projectNumber",
    ):
        body.pop(f, None)
    t = now_utc()
    b: Res = {
        "kind": "storage#bucket",
        "selfLink": f"{WWW}storage/v1/b/{name}",
        "id": name,
        "name": name,
        "projectNumber": state.project_number,
        "generation": str(int(time.time() * 1e6)),
        "metageneration": "1",
        "timeCreated": t,
        "updated": t,
        **body,
    }
    _bucket_defaults(state, b, None)
    b["etag"] = "CAE="
    state.store[bucket_key(name)] = b
    n = state.project_number
    bindings = [
        {
            "role": "roles/storage.legacyBucketOwner",
            "members": [f"projectEditor:{state.project}", f"projectOwner:{state.project}"],
        },
        {"role": "roles/storage.legacyBucketReader", "members": [f"projectViewer:{state.project}"]},
    ]
    if b["iamConfiguration"]["uniformBucketLevelAccess"]["enabled"]:
        bindings += [
            {
                "role": "roles/storage.legacyObjectOwner",
                "members": [f"projectEditor:{state.project}", f"projectOwner:{state.project}"],
            },
            {
                "role": "roles/storage.legacyObjectReader",
                "members": [f"projectViewer:{state.project}"],
            },
        ]
    del n
    state.policies[bucket_key(name) + "/iam"] = {
        "kind": "storage#policy",
        "resourceId": f"projects/_/buckets/{name}",
        "version": 1,
        "etag": "CAE=",
        "bindings": bindings,
    }
    return 200, _project_view(b, req.query.get("projection", "noAcl"))


@handles("storage.buckets.get")
def bucket_get(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    b = _get_bucket(state, req.vars["bucket"])
    return 200, _project_view(b, req.query.get("projection", "noAcl"))


@handles("storage.buckets.list")
def bucket_list(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    state.check_project(req.query["project"])
    items = [
        _project_view(b, req.query.get("projection", "noAcl"))
        for k, b in sorted(state.store.items())
        if k.startswith("storage/v1/b/") and k.count("/") == 3
    ]
    out: Res = {"kind": "storage#buckets"}
    if items:
        out["items"] = items
    return 200, out


def _bucket_write(state: FakeGcpState, req: Request, replace: bool) -> tuple[int, Any]:
    old = _get_bucket(state, req.vars["bucket"])
    mg = req.query.get("ifMetagenerationMatch")
    if mg is not None and mg != old["metageneration"]:
        raise ApiError(412, "Precondition Failed", reason="conditionNotMet")
    body = copy.deepcopy(req.body)
    if body.get("name", old["name"]) != old["name"]:
        raise ApiError(400, "Bucket name in the body does not match the URL.")
    keep = (
        "kind",
        "selfLink",
        "id",
        "name",
        "projectNumber",
        "generation",
        "timeCreated",
        "location",
    )
    for f in ("etag", "updated", "metageneration", "locationType", "owner"):
        body.pop(f, None)
    if replace:
        new = {**{f: old[f] for f in keep if f in old}, **body}
        if "location" in body:
            new["location"] = body["location"]
        # a full PUT resets what it omits
        if "iamConfiguration" not in body:
            new["iamConfiguration"] = {}
    else:
        new = copy.deepcopy(old)
        for k, v in body.items():
            if v is None:
                new.pop(k, None)
            elif isinstance(v, dict) and isinstance(new.get(k), dict) and k != "lifecycle":
                new[k].update(v)
            else:
                new[k] = v
        if "iamConfiguration" in body:
            ic = body["iamConfiguration"]
            if "uniformBucketLevelAccess" in ic:
                new["iamConfiguration"].pop("bucketPolicyOnly", None)
    _bucket_defaults(state, new, old)
    new["metageneration"] = str(int(old["metageneration"]) + 1)
    new["etag"] = new_etag()
    new["updated"] = now_utc()
    state.store[bucket_key(old["name"])] = new
    return 200, _project_view(new, req.query.get("projection", "full"))


@handles("storage.buckets.update")
def bucket_update(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    return _bucket_write(state, req, replace=True)


@handles("storage.buckets.patch")
def bucket_patch(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    return _bucket_write(state, req, replace=False)


@handles("storage.buckets.delete")
def bucket_delete(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    b = _get_bucket(state, req.vars["bucket"])
    key = bucket_key(b["name"])
    # https://cloud.google.com/storage/docs/deleting-buckets: only empty buckets.
    if any(k.startswith(key + "/o/") for k in state.store):
        raise ApiError(
            409,
            "The bucket you tried to delete is not empty.",
            reason="conflict",
            status="FAILED_PRECONDITION",
        )
    del state.store[key]
    state.policies.pop(key + "/iam", None)
    return 204, None


@handles("storage.buckets.getIamPolicy")
def bucket_get_iam(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    b = _get_bucket(state, req.vars["bucket"])
    requested = requested_version(req.query.get("optionsRequestedPolicyVersion"))
    return 200, policy_view(state.policies[bucket_key(b["name"]) + "/iam"], requested)


@handles("storage.buckets.setIamPolicy")
def bucket_set_iam(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    b = _get_bucket(state, req.vars["bucket"])
    policy = req.body
    check_policy(state, policy, storage=True)
    public = any(
        m in ("allUsers", "allAuthenticatedUsers")
        for bnd in policy.get("bindings") or []
        for m in bnd.get("members", [])
    )
    pap = b["iamConfiguration"]["publicAccessPrevention"]
    # The org policy constraints/storage.publicAccessPrevention enforces it on
    # every bucket whose own setting is "inherited"
    # (https://cloud.google.com/storage/docs/public-access-prevention#org-policy).
    if public and (pap == "enforced" or state.org_public_access_prevention):
        raise ApiError(
            412,
            "The member bindings allUsers and allAuthenticatedUsers are not allowed since "
            "public access prevention is enforced.",
            reason="conditionNotMet",
        )
    if not b["iamConfiguration"]["uniformBucketLevelAccess"]["enabled"]:
        for bnd in policy.get("bindings") or []:
            if "condition" in bnd:
                raise ApiError(400, "IAM conditions require uniform bucket-level access.")
    return 200, set_policy(state, bucket_key(b["name"]) + "/iam", policy, 412)


@handles("storage.objects.list")
def object_list(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    b = _get_bucket(state, req.vars["bucket"])
    prefix = bucket_key(b["name"]) + "/o/"
    # At most 1,000 items a page, then nextPageToken
    # (https://cloud.google.com/storage/docs/json_api/v1/objects/list).
    size = min(requested_version(req.query.get("maxResults")) or 1000, 1000)
    after = req.query.get("pageToken")
    if after:
        try:
            after = base64.urlsafe_b64decode(after.encode()).decode()
        except ValueError:
            raise ApiError(400, "Invalid page token.") from None
    names = sorted(k for k in state.store if k.startswith(prefix))
    if after:
        names = [k for k in names if k[len(prefix) :] > after]
    page = names[:size]
    out: Res = {"kind": "storage#objects"}
    if page:
        out["items"] = [copy.deepcopy(state.store[k]) for k in page]
    if len(names) > size:
        last = page[-1][len(prefix) :]
        out["nextPageToken"] = base64.urlsafe_b64encode(last.encode()).decode()
    return 200, out


@handles("storage.objects.get")
def object_get(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    b = _get_bucket(state, req.vars["bucket"])
    o = state.store.get(bucket_key(b["name"]) + "/o/" + req.vars["object"])
    if o is None:
        raise not_found(message=f"No such object: {b['name']}/{req.vars['object']}")
    return 200, copy.deepcopy(o)


@handles("storage.objects.delete")
def object_delete(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    b = _get_bucket(state, req.vars["bucket"])
    key = bucket_key(b["name"]) + "/o/" + req.vars["object"]
    if state.store.pop(key, None) is None:
        raise not_found(message=f"No such object: {b['name']}/{req.vars['object']}")
    return 204, None
