"""Cloud Resource Manager: the project and its IAM policy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .common import Res
from .discovery import ApiError
from .iam import check_policy, policy_view, requested_version, set_policy
from .registry import Request, handles

if TYPE_CHECKING:
    from .state import FakeGcpState


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
    requested = requested_version(
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
    return 200, set_policy(state, key, policy, 409)
