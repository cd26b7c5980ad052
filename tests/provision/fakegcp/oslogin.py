"""OS Login: SSH public keys and login profiles of users and service accounts."""

from __future__ import annotations

import base64
import copy
import hashlib
import time
from typing import TYPE_CHECKING, Any

from .common import Res
from .discovery import ApiError
from .iam import find_sa
from .registry import Request, handles

if TYPE_CHECKING:
    from .state import FakeGcpState


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
