"""Service Usage: which APIs are enabled; enable/disable are long-running."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from .common import Res
from .discovery import ApiError, not_found
from .registry import Request, handles

if TYPE_CHECKING:
    from .state import FakeGcpState


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
        raise not_found(message="Operation not found.")
    return 200, op
