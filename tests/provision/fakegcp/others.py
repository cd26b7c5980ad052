"""Storage, IAM, Resource Manager, Service Usage and IAM Credentials behaviour."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import time
import uuid
from typing import TYPE_CHECKING, Any

from .discovery import ApiError
from .state import (
    ACCOUNT_ID_RE,
    BUCKET_RE,
    MEMBER_RE,
    POOL_ID_RE,
    ROLE_RE,
    WWW,
    Request,
    handles,
    now_utc,
)

if TYPE_CHECKING:
    from .state import FakeGcpState

Res = dict[str, Any]


def new_etag() -> str:
    return base64.b64encode(os.urandom(8)).decode()


# ============================================================================ IAM policies
def check_policy(state: FakeGcpState, policy: Res, storage: bool = False) -> None:
    for i, b in enumerate(policy.get("bindings") or []):
        role = b.get("role", "")
        if not ROLE_RE.match(role):
            raise ApiError(400, f"Role ({role}) does not exist in the resource's hierarchy.")
        if "_withcond_" in role:
            # A v1 read renames conditional bindings; writing one back is refused
            # (https://cloud.google.com/iam/docs/policies#versions).
            raise ApiError(
                400,
                f"Role {role} is a placeholder for a conditional role binding in a version 1 "
                "policy and cannot be set. Read the policy with requestedPolicyVersion 3.",
            )
        if not b.get("members"):
            raise ApiError(400, f"Invalid argument: bindings[{i}].members must not be empty.")
        for m in b["members"]:
            if not MEMBER_RE.match(m) or (m.startswith("project") and not storage):
                raise ApiError(400, f"Invalid argument: member {m} is not valid.")
            if m.startswith("serviceAccount:") and m.endswith(
                f"@{state.project}.iam.gserviceaccount.com"
            ):
                email = m.split(":", 1)[1]
                created = state.sa_created.get(email)
                young = created is not None and time.time() - created < state.iam_lag_s
                # IAM is eventually consistent: a binding naming an account created
                # moments ago is refused (https://cloud.google.com/iam/docs/
                # service-accounts-create#creating: "wait ... before you use it").
                if find_sa(state, email) is None or young:
                    raise ApiError(400, f"Service account {email} does not exist.")


def _has_conditions(policy: Res) -> bool:
    return any("condition" in b for b in policy.get("bindings") or [])


def policy_view(policy: Res, requested: int) -> Res:
    """What getIamPolicy answers for a requested policy version: a policy with
    conditional bindings read as version 1 has those roles renamed
    `<role>_withcond_<hash>` and no condition
    (https://cloud.google.com/iam/docs/policies#versions)."""
    out = copy.deepcopy(policy)
    conditional = _has_conditions(policy)
    out["version"] = 3 if conditional and requested >= 3 else 1
    if conditional and requested < 3:
        renamed = []
        for b in out.get("bindings") or []:
            cond = b.pop("condition", None)
            if cond is not None:
                digest = hashlib.sha1(json.dumps(cond, sort_keys=True).encode()).hexdigest()
                b["role"] = f"{b['role']}_withcond_{digest[:20]}"
            renamed.append(b)
        out["bindings"] = renamed
    return out


def _requested_version(raw: str | int | None) -> int:
    try:
        return int(raw or 0)
    except ValueError:
        raise ApiError(400, f"Invalid requested policy version: {raw}.") from None


def _set_policy(state: FakeGcpState, key: str, policy: Res, stale_code: int) -> Res:
    cur = state.policies[key]
    if state.policy_races.get(key, 0) > 0:
        # Someone else wrote the policy between our read and write.
        state.policy_races[key] -= 1
        cur["etag"] = new_etag()
    if policy.get("etag") and policy["etag"] != cur["etag"]:
        if stale_code == 412:
            raise ApiError(412, "Precondition Failed", reason="conditionNotMet")
        # https://cloud.google.com/iam/docs/policies#etag: a stale etag is 409 ABORTED.
        raise ApiError(
            409,
            "There were concurrent policy changes. Please retry the whole read-modify-write "
            "with exponential backoff.",
            reason="aborted",
            status="ABORTED",
        )
    version = int(policy.get("version") or 1)
    if _has_conditions(policy) and version < 3:
        raise ApiError(
            400,
            "Invalid argument: a policy with conditional role bindings must be version 3.",
        )
    if _has_conditions(cur) and version < 3:
        # https://cloud.google.com/iam/docs/policies#specifying-version-set
        raise ApiError(
            400,
            "The existing policy has conditional role bindings: set it with version 3 "
            "(a version 1 write would drop them).",
        )
    new = {k: v for k, v in policy.items() if k not in ("etag",)}
    new = {**new, "etag": new_etag(), "version": version}
    if not new.get("bindings"):
        new.pop("bindings", None)
    for extra in ("kind", "resourceId"):
        if extra in cur:
            new[extra] = cur[extra]
    state.policies[key] = new
    return policy_view(new, version)


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
        raise ApiError(404, "The specified bucket does not exist.", reason="notFound")
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
    requested = _requested_version(req.query.get("optionsRequestedPolicyVersion"))
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
    return 200, _set_policy(state, bucket_key(b["name"]) + "/iam", policy, 412)


@handles("storage.objects.list")
def object_list(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    b = _get_bucket(state, req.vars["bucket"])
    prefix = bucket_key(b["name"]) + "/o/"
    # At most 1,000 items a page, then nextPageToken
    # (https://cloud.google.com/storage/docs/json_api/v1/objects/list).
    size = min(_requested_version(req.query.get("maxResults")) or 1000, 1000)
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
        raise ApiError(
            404, "No such object: " + f"{b['name']}/{req.vars['object']}", reason="notFound"
        )
    return 200, copy.deepcopy(o)


@handles("storage.objects.delete")
def object_delete(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    b = _get_bucket(state, req.vars["bucket"])
    key = bucket_key(b["name"]) + "/o/" + req.vars["object"]
    if state.store.pop(key, None) is None:
        raise ApiError(
            404, "No such object: " + f"{b['name']}/{req.vars['object']}", reason="notFound"
        )
    return 204, None


# ============================================================================ IAM: service accounts
def sa_key(project: str, email: str) -> str:
    return f"iam/v1/projects/{project}/serviceAccounts/{email}"


def find_sa(state: FakeGcpState, ident: str) -> tuple[str, Res] | None:
    for k, r in state.store.items():
        if (
            k.startswith("iam/")
            and "/serviceAccounts/" in k
            and ident
            in (
                r.get("email"),
                r.get("uniqueId"),
            )
        ):
            return k, r
    return None


def _sa_or_404(state: FakeGcpState, req: Request) -> tuple[str, Res]:
    project = req.vars["projectsId"]
    if project != "-":
        state.check_project(project)
    found = find_sa(state, req.vars["serviceAccountsId"])
    if found is None:
        raise ApiError(
            404,
            f"Service account projects/{project}/serviceAccounts/{req.vars['serviceAccountsId']} "
            "does not exist.",
            reason="notFound",
        )
    return found


@handles("iam.projects.serviceAccounts.create")
def sa_create(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    project = req.vars["projectsId"]
    state.check_project(project)
    account = req.body.get("accountId", "")
    if not ACCOUNT_ID_RE.match(account):
        raise ApiError(
            400,
            f"Invalid account ID: {account!r}. It must be 6-30 characters long and match "
            "[a-z]([-a-z0-9]*[a-z0-9]).",
        )
    email = f"{account}@{state.project}.iam.gserviceaccount.com"
    key = sa_key(state.project, email)
    if key in state.store:
        raise ApiError(
            409,
            f"Service account {account} already exists within project projects/{state.project}.",
            reason="alreadyExists",
            status="ALREADY_EXISTS",
        )
    unique = str(100000000000000000000 + int(state.new_id()) % 10**20)
    sa: Res = {
        "name": f"projects/{state.project}/serviceAccounts/{email}",
        "projectId": state.project,
        "uniqueId": unique,
        "email": email,
        "etag": "MDEwMjE5MjA=",
        "oauth2ClientId": unique,
    }
    extra = req.body.get("serviceAccount") or {}
    for f in ("displayName", "description"):
        if extra.get(f):
            sa[f] = extra[f]
    state.store[key] = sa
    state.sa_created[email] = time.time()
    state.policies[key + ":iamPolicy"] = {"version": 1, "etag": "ACAB"}
    return 200, copy.deepcopy(sa)


@handles("iam.projects.serviceAccounts.get")
def sa_get(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    return 200, copy.deepcopy(_sa_or_404(state, req)[1])


@handles("iam.projects.serviceAccounts.list")
def sa_list(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    state.check_project(req.vars["projectsId"])
    accts = [
        copy.deepcopy(r)
        for k, r in sorted(state.store.items())
        if k.startswith(sa_key(state.project, ""))
    ]
    return 200, ({"accounts": accts} if accts else {})


@handles("iam.projects.serviceAccounts.delete")
def sa_delete(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key, _ = _sa_or_404(state, req)
    del state.store[key]
    state.policies.pop(key + ":iamPolicy", None)
    return 200, {}


@handles("iam.projects.serviceAccounts.patch")
def sa_patch(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    _, sa = _sa_or_404(state, req)
    mask = req.body.get("updateMask", "")
    if not mask:
        raise ApiError(400, "Invalid update mask: empty.")
    fields = [f.strip() for f in mask.split(",")]
    new = req.body.get("serviceAccount") or {}
    for f in fields:
        if f not in ("displayName", "description"):
            raise ApiError(400, f"Invalid update mask path: {f}")
        if new.get(f):
            sa[f] = new[f]
        else:
            sa.pop(f, None)
    sa["etag"] = new_etag()
    return 200, copy.deepcopy(sa)


@handles("iam.projects.serviceAccounts.update")
def sa_update(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    _, sa = _sa_or_404(state, req)
    for f in ("displayName", "description"):
        if req.body.get(f):
            sa[f] = req.body[f]
    sa["etag"] = new_etag()
    return 200, copy.deepcopy(sa)


@handles("iam.projects.serviceAccounts.getIamPolicy")
def sa_get_iam(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key, _ = _sa_or_404(state, req)
    requested = _requested_version(req.query.get("options.requestedPolicyVersion"))
    return 200, policy_view(state.policies[key + ":iamPolicy"], requested)


@handles("iam.projects.serviceAccounts.setIamPolicy")
def sa_set_iam(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key, _ = _sa_or_404(state, req)
    policy = req.body.get("policy") or {}
    check_policy(state, policy)
    return 200, _set_policy(state, key + ":iamPolicy", policy, 409)


@handles("iam.projects.serviceAccounts.disable", "iam.projects.serviceAccounts.enable")
def sa_enable(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    _, sa = _sa_or_404(state, req)
    if req.method.name == "disable":
        sa["disabled"] = True
    else:
        sa.pop("disabled", None)
    return 200, {}


# ============================================================================ IAM: workload pools
POOL_TYPE = "type.googleapis.com/google.iam.v1.WorkloadIdentityPool"
PROVIDER_TYPE = "type.googleapis.com/google.iam.v1.WorkloadIdentityPoolProvider"


def _wif_key(state: FakeGcpState, path: str) -> str:
    """Resource names use the project number, as GCP answers them."""
    parts = path.split("/")
    if len(parts) > 2 and parts[1] == "projects":
        state.check_project(parts[2])
        parts[2] = state.project_number
    return "iam/" + "/".join(parts)


def _lro(state: FakeGcpState, key: str, res: Res, rtype: str) -> tuple[int, Any]:
    """Pool and provider mutations answer an operation that is not done yet
    (https://cloud.google.com/iam/docs/reference/rest/v1/projects.locations.workloadIdentityPools/create)."""
    op_key = key + "/operations/" + uuid.uuid4().hex
    meta = {"@type": "type.googleapis.com/google.iam.v1.WorkloadIdentityPoolOperationMetadata"}
    result = {"@type": rtype, **copy.deepcopy(res)}
    return 200, state.google_lro(op_key, result, metadata=meta)


def _wif_get(state: FakeGcpState, key: str) -> Res:
    res = state.store.get(key)
    if res is None:
        kind = "WorkloadIdentityPoolProvider" if "/providers/" in key else "WorkloadIdentityPool"
        raise ApiError(
            404,
            f"Requested entity was not found. ({kind} {key.removeprefix('iam/v1/')})",
            reason="notFound",
        )
    return res


def _check_provider(body: Res) -> None:
    if "oidc" not in body and "aws" not in body and "saml" not in body and "x509" not in body:
        raise ApiError(400, "Exactly one of oidc, aws, saml or x509 must be set.")
    oidc = body.get("oidc")
    if oidc is not None and not str(oidc.get("issuerUri", "")).startswith("https://"):
        raise ApiError(400, "The issuer URI must be a valid https URL.")
    mapping = body.get("attributeMapping") or {}
    if oidc is not None and "google.subject" not in mapping:
        raise ApiError(400, "The attribute mapping must contain a mapping for 'google.subject'.")
    for k in mapping:
        if not (k.startswith("google.") or k.startswith("attribute.")):
            raise ApiError(400, f"Invalid attribute mapping key: {k}.")
    cond = body.get("attributeCondition")
    if cond is not None:
        for k in [
            c
            for c in cond.replace("(", " ").replace(")", " ").split()
            if c.startswith("attribute.")
        ]:
            name = k.split("=")[0].split("!")[0].split(".")[0:2]
            if ".".join(name) not in mapping:
                raise ApiError(
                    400,
                    f"The attribute condition must be based on mapped attributes: {'.'.join(name)} "
                    "is not mapped.",
                )


def _wif_create(state: FakeGcpState, req: Request, id_param: str, rtype: str) -> tuple[int, Any]:
    ident = req.query.get(id_param, "")
    if not POOL_ID_RE.match(ident) or ident.startswith("gcp-"):
        raise ApiError(400, f"Invalid {id_param}: {ident!r}.")
    parent = _wif_key(state, req.path)
    if "/providers" in parent:
        pool = _wif_get(state, parent.rsplit("/", 1)[0])
        if pool.get("state") == "DELETED":
            raise ApiError(400, "The parent pool is deleted.", status="FAILED_PRECONDITION")
        _check_provider(req.body)
    key = f"{parent}/{ident}"
    if key in state.store:
        raise ApiError(
            409,
            f"Requested entity already exists ({key.removeprefix('iam/v1/')})"
            + (" and is in DELETED state." if state.store[key].get("state") == "DELETED" else ""),
            reason="alreadyExists",
            status="ALREADY_EXISTS",
        )
    res = {"name": key.removeprefix("iam/v1/"), **copy.deepcopy(req.body), "state": "ACTIVE"}
    res.pop("expireTime", None)
    if "disabled" in res and not res["disabled"]:
        res.pop("disabled")
    state.store[key] = res
    return _lro(state, key, res, rtype)


@handles("iam.projects.locations.workloadIdentityPools.create")
def pool_create(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    return _wif_create(state, req, "workloadIdentityPoolId", POOL_TYPE)


@handles("iam.projects.locations.workloadIdentityPools.providers.create")
def provider_create(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    return _wif_create(state, req, "workloadIdentityPoolProviderId", PROVIDER_TYPE)


@handles(
    "iam.projects.locations.workloadIdentityPools.get",
    "iam.projects.locations.workloadIdentityPools.providers.get",
)
def wif_get(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    return 200, copy.deepcopy(_wif_get(state, _wif_key(state, req.path)))


@handles(
    "iam.projects.locations.workloadIdentityPools.list",
    "iam.projects.locations.workloadIdentityPools.providers.list",
)
def wif_list(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    parent = _wif_key(state, req.path)
    show_deleted = req.query.get("showDeleted") == "true"
    items = [
        copy.deepcopy(r)
        for k, r in sorted(state.store.items())
        if k.rsplit("/", 1)[0] == parent and (show_deleted or r.get("state") != "DELETED")
    ]
    field = (
        "workloadIdentityPoolProviders" if parent.endswith("providers") else "workloadIdentityPools"
    )
    return 200, ({field: items} if items else {})


@handles(
    "iam.projects.locations.workloadIdentityPools.patch",
    "iam.projects.locations.workloadIdentityPools.providers.patch",
)
def wif_patch(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key = _wif_key(state, req.path)
    res = _wif_get(state, key)
    if res.get("state") == "DELETED":
        raise ApiError(400, "The resource is deleted.", status="FAILED_PRECONDITION")
    mask = req.query.get("updateMask", "")
    if not mask:
        raise ApiError(400, "update_mask is required.")
    for path in mask.split(","):
        top = path.strip().split(".")[0]
        if top not in req.body and top in ("displayName", "description", "disabled"):
            res.pop(top, None)
            continue
        if top in ("name", "state", "expireTime"):
            raise ApiError(400, f"Invalid update mask path: {path}")
        cur: Any = req.body
        for part in path.strip().split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if top == path.strip():
            if req.body.get(top) in (None, False, "", {}):
                res.pop(top, None)
            else:
                res[top] = copy.deepcopy(req.body[top])
        else:
            node = res
            parts = path.strip().split(".")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = copy.deepcopy(cur)
    if "/providers/" in key:
        _check_provider(res)
    return _lro(state, key, res, PROVIDER_TYPE if "/providers/" in key else POOL_TYPE)


@handles(
    "iam.projects.locations.workloadIdentityPools.delete",
    "iam.projects.locations.workloadIdentityPools.providers.delete",
)
def wif_delete(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key = _wif_key(state, req.path)
    res = _wif_get(state, key)
    if res.get("state") == "DELETED":
        raise ApiError(400, "The resource is already deleted.", status="FAILED_PRECONDITION")
    res["state"] = "DELETED"
    res["expireTime"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 30 * 86400))
    if "/providers/" not in key:
        for k, r in state.store.items():
            if k.startswith(key + "/providers/") and r.get("state") != "DELETED":
                r["state"] = "DELETED"
                r["expireTime"] = res["expireTime"]
    return _lro(state, key, res, PROVIDER_TYPE if "/providers/" in key else POOL_TYPE)


@handles(
    "iam.projects.locations.workloadIdentityPools.undelete",
    "iam.projects.locations.workloadIdentityPools.providers.undelete",
)
def wif_undelete(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key = _wif_key(state, req.prefix)
    res = _wif_get(state, key)
    if res.get("state") != "DELETED":
        raise ApiError(400, "The resource is not deleted.", status="FAILED_PRECONDITION")
    res["state"] = "ACTIVE"
    res.pop("expireTime", None)
    return _lro(state, key, res, PROVIDER_TYPE if "/providers/" in key else POOL_TYPE)


@handles(
    "iam.projects.locations.workloadIdentityPools.operations.get",
    "iam.projects.locations.workloadIdentityPools.providers.operations.get",
)
def wif_op_get(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key = _wif_key(state, req.path)
    op = state.poll_google_lro(key)
    if op is None:
        raise ApiError(404, "Operation not found.", reason="notFound")
    return 200, op


# ============================================================================ resource manager
def crm_policy_key(state: FakeGcpState, project: str) -> str:
    state.check_project(project)
    key = f"cloudresourcemanager/v1/projects/{state.project}:iamPolicy"
    state.policies.setdefault(
        key,
        {
            "version": 3,
            "etag": "BwYAAAAAAAA=",
            "bindings": [
                {"role": "roles/owner", "members": ["user:owner@example.com"]},
                {
                    "role": "roles/editor",
                    "members": [
                        f"serviceAccount:{state.project_number}-compute@developer.gserviceaccount.com"
                    ],
                },
                # Common in real organisations: a time-bound grant, so every
                # policy read must ask for version 3.
                {
                    "role": "roles/compute.viewer",
                    "members": ["group:auditors@example.com"],
                    "condition": {
                        "title": "until-2030",
                        "expression": 'request.time < timestamp("2030-01-01T00:00:00Z")',
                    },
                },
            ],
        },
    )
    return key


def _project(state: FakeGcpState, v3: bool) -> Res:
    if v3:
        return {
            "name": f"projects/{state.project_number}",
            "parent": "organizations/100000000001",
            "projectId": state.project,
            "state": "ACTIVE",
            "displayName": state.project,
            "createTime": "2025-01-01T00:00:00.000Z",
            "etag": 'W/"fake"',
        }
    return {
        "projectNumber": state.project_number,
        "projectId": state.project,
        "lifecycleState": "ACTIVE",
        "name": state.project,
        "createTime": "2025-01-01T00:00:00.000Z",
        "parent": {"type": "organization", "id": "100000000001"},
    }


@handles("cloudresourcemanager.projects.get")
def crm_project_get(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    project = req.vars.get("projectId") or req.vars.get("projectsId", "")
    try:
        state.check_project(project)
    except ApiError:
        raise ApiError(
            403,
            f"The caller does not have permission (project {project})",
            reason="forbidden",
        ) from None
    return 200, _project(state, req.method.doc.endswith("v3"))


@handles("cloudresourcemanager.projects.list")
def crm_project_list(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    return 200, {"projects": [_project(state, False)]}


@handles("cloudresourcemanager.projects.getIamPolicy")
def crm_get_iam(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    project = req.vars.get("resource") or req.vars.get("projectsId", "")
    requested = _requested_version(
        ((req.body or {}).get("options") or {}).get("requestedPolicyVersion")
    )
    return 200, policy_view(state.policies[crm_policy_key(state, project)], requested)


@handles("cloudresourcemanager.projects.setIamPolicy")
def crm_set_iam(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    project = req.vars.get("resource") or req.vars.get("projectsId", "")
    key = crm_policy_key(state, project)
    policy = req.body.get("policy")
    if not policy:
        raise ApiError(400, "Request contains an invalid argument: policy is required.")
    check_policy(state, policy)
    if not any(b.get("role") == "roles/owner" for b in policy.get("bindings") or []):
        raise ApiError(
            400,
            "The policy must contain at least one owner (roles/owner) binding.",
            status="FAILED_PRECONDITION",
        )
    return 200, _set_policy(state, key, policy, 409)


# ============================================================================ service usage
def _service(state: FakeGcpState, svc: str) -> Res:
    return {
        "name": f"projects/{state.project_number}/services/{svc}",
        "config": {"name": svc},
        "state": "ENABLED" if svc in state.services else "DISABLED",
        "parent": f"projects/{state.project_number}",
    }


def _su_op(state: FakeGcpState, response: Res, on_done: Any) -> Res:
    """Enable/disable are long-running: the services change when the operation
    is done (https://cloud.google.com/service-usage/docs/reference/rest/v1/services/batchEnable)."""
    key = f"serviceusage/v1/operations/acat.p2-{state.project_number}-{uuid.uuid4()}"
    return state.google_lro(key, response, on_done=on_done)


def _check_service_ids(svcs: list[str]) -> None:
    for svc in svcs:
        if not svc.endswith(".googleapis.com"):
            raise ApiError(400, f"Not found or permission denied for service(s): {svc}.")


@handles("serviceusage.services.get")
def su_get(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    p, svc = req.vars["v1Id1"], req.vars["servicesId"]
    state.check_project(p)
    return 200, _service(state, svc)


@handles("serviceusage.services.batchGet")
def su_batch_get(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    state.check_project(req.vars["v1Id1"])
    names = req.multi.get("names", [])
    if not names or len(names) > 30:
        raise ApiError(400, "names: between 1 and 30 service names are required.")
    svcs = [n.rsplit("/", 1)[-1] for n in names]
    return 200, {"services": [_service(state, svc) for svc in svcs]}


@handles("serviceusage.services.list")
def su_list(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    state.check_project(req.vars["v1Id1"])
    flt = req.query.get("filter", "")
    if flt not in ("", "state:ENABLED"):
        raise ApiError(400, f"Invalid filter: {flt}")
    return 200, {"services": [_service(state, svc) for svc in sorted(state.services)]}


@handles("serviceusage.services.enable", "serviceusage.services.disable")
def su_enable(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    p, svc = req.vars["v1Id1"], req.vars["servicesId"]
    state.check_project(p)
    _check_service_ids([svc])
    enable = req.method.name == "enable"

    def apply() -> None:
        (state.services.add if enable else state.services.discard)(svc)

    response = {
        "@type": "type.googleapis.com/google.api.serviceusage.v1."
        f"{req.method.name.capitalize()}ServiceResponse",
        "service": {**_service(state, svc), "state": "ENABLED" if enable else "DISABLED"},
    }
    return 200, _su_op(state, response, apply)


@handles("serviceusage.services.batchEnable")
def su_batch(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    state.check_project(req.vars["v1Id1"])
    svcs = list(req.body.get("serviceIds") or [])
    if not svcs or len(svcs) > 20:
        raise ApiError(400, "serviceIds: between 1 and 20 services are required.")
    _check_service_ids(svcs)

    def apply() -> None:
        state.services.update(svcs)

    response = {
        "@type": "type.googleapis.com/google.api.serviceusage.v1.BatchEnableServicesResponse",
        "services": [{**_service(state, svc), "state": "ENABLED"} for svc in svcs],
    }
    return 200, _su_op(state, response, apply)


@handles("serviceusage.operations.get")
def su_op_get(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    op = state.poll_google_lro("serviceusage/" + req.path)
    if op is None:
        raise ApiError(404, "Operation not found.", reason="notFound")
    return 200, op


# ============================================================================ OS Login
def _oslogin_user(state: FakeGcpState, req: Request) -> str:
    user = req.vars["usersId"]
    if user != state.token_email and find_sa(state, user) is None:
        raise ApiError(403, "The caller does not have permission", reason="forbidden")
    return user


def _posix_name(state: FakeGcpState, user: str) -> str:
    # Service accounts log in as sa_<uniqueId>; users as their email with
    # every non-alphanumeric character turned into "_"
    # (https://cloud.google.com/compute/docs/oslogin#posix_username).
    found = find_sa(state, user)
    if found is not None:
        return "sa_" + found[1]["uniqueId"]
    return "".join(c if c.isalnum() else "_" for c in user)[:32]


def _login_profile(state: FakeGcpState, user: str) -> Res:
    now_us = int(time.time() * 1e6)
    keys = {
        fp: k
        for fp, k in state.ssh_keys.items()
        if k["name"].startswith(f"users/{user}/")
        and int(k.get("expirationTimeUsec") or now_us + 1) > now_us
    }
    return {
        "name": user,
        "posixAccounts": [
            {
                "primary": True,
                "username": _posix_name(state, user),
                "uid": "1000123",
                "gid": "1000123",
                "homeDirectory": f"/home/{_posix_name(state, user)}",
                "operatingSystemType": "LINUX",
                "accountId": state.project,
                "name": f"users/{user}/projects/{state.project}",
            }
        ],
        "sshPublicKeys": copy.deepcopy(keys),
    }


@handles("oslogin.users.importSshPublicKey")
def oslogin_import(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    user = _oslogin_user(state, req)
    key = str(req.body.get("key") or "")
    parts = key.split()
    if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-")):
        raise ApiError(400, "Invalid SSH public key.")
    try:
        raw = base64.b64decode(parts[1], validate=True)
    except ValueError:
        raise ApiError(400, "Invalid SSH public key.") from None
    fp = hashlib.sha256(raw).hexdigest()
    entry = {"key": key, "fingerprint": fp, "name": f"users/{user}/sshPublicKeys/{fp}"}
    if req.body.get("expirationTimeUsec"):
        entry["expirationTimeUsec"] = req.body["expirationTimeUsec"]
    state.ssh_keys[fp] = entry
    return 200, {"loginProfile": _login_profile(state, user)}


@handles("oslogin.users.getLoginProfile")
def oslogin_profile(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    return 200, _login_profile(state, _oslogin_user(state, req))


# ============================================================================ iam credentials
@handles("iamcredentials.projects.serviceAccounts.generateAccessToken")
def gen_token(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    if find_sa(state, req.vars["serviceAccountsId"]) is None:
        raise ApiError(404, "Not found; Gaia id not found for email", reason="notFound")
    return 200, {
        "accessToken": "fake-impersonated-token",
        "expireTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600)),
    }
