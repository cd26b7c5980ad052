"""IAM Service Account Credentials: short-lived access tokens."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .discovery import not_found
from .iam import find_sa
from .registry import Request, handles

if TYPE_CHECKING:
    from .state import FakeGcpState


# ============================================================================ iam credentials
@handles("iamcredentials.projects.serviceAccounts.generateAccessToken")
def gen_token(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    if find_sa(state, req.vars["serviceAccountsId"]) is None:
        raise not_found(message="Not found; Gaia id not found for email")
    return 200, {
        "accessToken": "fake-impersonated-token",
        "expireTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600)),
    }
