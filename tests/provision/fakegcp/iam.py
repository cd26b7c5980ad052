"""IAM: the allow policies every API shares (storage buckets, the project,
service accounts), and service accounts."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import time
from typing import TYPE_CHECKING, Any

from .common import ACCOUNT_ID_RE, MEMBER_RE, ROLE_RE, Res
from .discovery import ApiError, not_found
from .registry import Request, handles

if TYPE_CHECKING:
    from .state import FakeGcpState


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


def requested_version(raw: str | int | None) -> int:
    try:
        return int(raw or 0)
    except ValueError:
        raise ApiError(400, f"Invalid requested policy version: {raw}.") from None


def set_policy(state: FakeGcpState, key: str, policy: Res, stale_code: int) -> Res:
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
        sa = f"projects/{project}/serviceAccounts/{req.vars['serviceAccountsId']}"
        raise not_found(message=f"Service account {sa} does not exist.")
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
    requested = requested_version(req.query.get("options.requestedPolicyVersion"))
    return 200, policy_view(state.policies[key + ":iamPolicy"], requested)


@handles("iam.projects.serviceAccounts.setIamPolicy")
def sa_set_iam(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key, _ = _sa_or_404(state, req)
    policy = req.body.get("policy") or {}
    check_policy(state, policy)
    return 200, set_policy(state, key + ":iamPolicy", policy, 409)


@handles("iam.projects.serviceAccounts.disable", "iam.projects.serviceAccounts.enable")
def sa_enable(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    _, sa = _sa_or_404(state, req)
    if req.method.name == "disable":
        sa["disabled"] = True
    else:
        sa.pop("disabled", None)
    return 200, {}
