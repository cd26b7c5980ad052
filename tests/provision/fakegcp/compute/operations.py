"""Compute operations: PENDING on the reply, RUNNING while polled, then DONE."""

from __future__ import annotations

import copy
import time
import uuid
from typing import TYPE_CHECKING, Any

from ..common import (
    Res,
    key_of,
    now,
)
from ..discovery import not_found
from ..registry import Request, handles
from .refs import (
    Key,
    self_link,
)

if TYPE_CHECKING:
    from ..state import FakeGcpState


# ---------------------------------------------------------------------------- operations
def make_op(
    state: FakeGcpState,
    op_type: str,
    key: str,
    res: Res | None,
    scope_key: str | None = None,
    error: Res | None = None,
) -> tuple[int, Res]:
    """A Compute operation. Like GCP's, it answers PENDING/RUNNING on the reply
    and on the first `state.op_polls` polls, then DONE; a DONE operation may carry
    `error` (https://cloud.google.com/compute/docs/api/how-tos/api-requests-responses#handling_api_responses:
    "the operation is DONE ... check the error field")."""
    k = Key(scope_key or key)
    name = f"operation-{int(time.time() * 1000)}-{uuid.uuid4().hex[:13]}"
    if k.scope_kind in ("zone", "region"):
        op_key = f"{k.scope_path}/operations/{name}"
    else:
        op_key = f"compute/v1/projects/{k.project}/global/operations/{name}"
    t = now()
    op: Res = {
        "kind": "compute#operation",
        "id": state.new_id(),
        "name": name,
        "operationType": op_type,
        "targetLink": self_link(key),
        "targetId": (res or {}).get("id", state.new_id()),
        "status": "DONE",
        "user": f"deployer@{k.project}.iam.gserviceaccount.com",
        "progress": 100,
        "insertTime": t,
        "startTime": t,
        "endTime": t,
        "selfLink": self_link(op_key),
    }
    if k.scope_kind == "zone":
        op["zone"] = self_link(k.scope_path)
    elif k.scope_kind == "region":
        op["region"] = self_link(k.scope_path)
    if error is not None:
        op["error"] = error
        op["httpErrorStatusCode"] = 403
        op["httpErrorMessage"] = "FORBIDDEN"
    state.operations[op_key] = op
    state.pending[op_key] = (state.op_polls, None)
    return 200, op_in_progress(op, "PENDING")


def op_in_progress(op: Res, status: str) -> Res:
    out = {k: copy.deepcopy(v) for k, v in op.items() if k not in ("error", "endTime")}
    out["status"] = status
    out["progress"] = 0
    for k in ("httpErrorStatusCode", "httpErrorMessage"):
        out.pop(k, None)
    return out


@handles(
    "compute.globalOperations.get",
    "compute.regionOperations.get",
    "compute.zoneOperations.get",
    "compute.globalOperations.wait",
    "compute.regionOperations.wait",
    "compute.zoneOperations.wait",
)
def op_get(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key = key_of("compute", req.prefix)
    op = state.operations.get(key)
    if op is None:
        raise not_found(Key(key).short())
    left, _ = state.pending.get(key, (0, None))
    if left > 0 and req.method.name != "wait":  # wait blocks until DONE
        state.pending[key] = (left - 1, None)
        return 200, op_in_progress(op, "RUNNING")
    state.pending.pop(key, None)
    return 200, copy.deepcopy(op)


@handles(
    "compute.globalOperations.list", "compute.regionOperations.list", "compute.zoneOperations.list"
)
def op_list(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    coll = key_of("compute", req.path)
    items = [copy.deepcopy(o) for k, o in state.operations.items() if k.rsplit("/", 1)[0] == coll]
    return 200, {"kind": "compute#operationList", "items": items, "selfLink": self_link(coll)}


@handles(
    "compute.globalOperations.delete",
    "compute.regionOperations.delete",
    "compute.zoneOperations.delete",
)
def op_delete(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key = key_of("compute", req.path)
    if state.operations.pop(key, None) is None:
        raise not_found(Key(key).short())
    return 204, None
