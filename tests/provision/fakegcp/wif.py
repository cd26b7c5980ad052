"""IAM workload identity pools and providers (long-running operations, soft delete)."""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .common import POOL_ID_RE, Res
from .discovery import ApiError, not_found
from .registry import Handler, Request, handles

if TYPE_CHECKING:
    from .state import FakeGcpState


# ============================================================================ IAM: workload pools
POOL_TYPE = "type.googleapis.com/google.iam.v1.WorkloadIdentityPool"
PROVIDER_TYPE = "type.googleapis.com/google.iam.v1.WorkloadIdentityPoolProvider"


def _pools_and_providers(verb: str) -> Callable[[Handler], Handler]:
    """Register one handler for a verb of both pools and their providers."""
    pools = "iam.projects.locations.workloadIdentityPools"
    return handles(f"{pools}.{verb}", f"{pools}.providers.{verb}")


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
        raise not_found(
            message=f"Requested entity was not found. ({kind} {key.removeprefix('iam/v1/')})"
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


@_pools_and_providers("get")
def wif_get(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    return 200, copy.deepcopy(_wif_get(state, _wif_key(state, req.path)))


@_pools_and_providers("list")
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


@_pools_and_providers("patch")
def wif_patch(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key, res = _wif_in_state(state, req.path, False, "The resource is deleted.")
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
    return _wif_lro(state, key, res)


@_pools_and_providers("delete")
def wif_delete(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key, res = _wif_in_state(state, req.path, False, "The resource is already deleted.")
    res["state"] = "DELETED"
    res["expireTime"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 30 * 86400))
    if "/providers/" not in key:
        for k, r in state.store.items():
            if k.startswith(key + "/providers/") and r.get("state") != "DELETED":
                r["state"] = "DELETED"
                r["expireTime"] = res["expireTime"]
    return _wif_lro(state, key, res)


@_pools_and_providers("undelete")
def wif_undelete(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key, res = _wif_in_state(state, req.prefix, True, "The resource is not deleted.")
    res["state"] = "ACTIVE"
    res.pop("expireTime", None)
    return _wif_lro(state, key, res)


def _wif_in_state(state: FakeGcpState, path: str, deleted: bool, refusal: str) -> tuple[str, Res]:
    """The pool or provider at `path`, refused (400 FAILED_PRECONDITION) unless it is
    soft-deleted (`deleted`) or live (not `deleted`)."""
    key = _wif_key(state, path)
    res = _wif_get(state, key)
    if (res.get("state") == "DELETED") != deleted:
        raise ApiError(400, refusal, status="FAILED_PRECONDITION")
    return key, res


def _wif_lro(state: FakeGcpState, key: str, res: Res) -> tuple[int, Any]:
    return _lro(state, key, res, PROVIDER_TYPE if "/providers/" in key else POOL_TYPE)


@_pools_and_providers("operations.get")
def wif_op_get(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key = _wif_key(state, req.path)
    op = state.poll_google_lro(key)
    if op is None:
        raise not_found(message="Operation not found.")
    return 200, op
