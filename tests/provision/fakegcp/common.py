"""What every API module of the fake shares: the API host prefix, name and IAM
member patterns, timestamps, fingerprints, key helpers and merge patch.

Imports nothing from the rest of the fake, so any module may import it.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import json
import re
from typing import Any

Res = dict[str, Any]

WWW = "https://www.googleapis.com/"
EMPTY_LABEL_FINGERPRINT = "42WmSpB8rSM="
BUCKET_RE = re.compile(r"^[a-z0-9][-a-z0-9_.]{1,61}[a-z0-9]$")
ACCOUNT_ID_RE = re.compile(r"^[a-z]([-a-z0-9]{4,28}[a-z0-9])$")
POOL_ID_RE = re.compile(r"^[a-z0-9-]{4,32}$")
MEMBER_RE = re.compile(
    r"^(allUsers|allAuthenticatedUsers|"
    r"(user|serviceAccount|group|domain|deleted:user|deleted:serviceAccount|deleted:group):\S+|"
    r"principal://\S+|principalSet://\S+|"
    r"(projectOwner|projectEditor|projectViewer):\S+)$"
)
ROLE_RE = re.compile(
    r"^(roles/[A-Za-z0-9_.]+|(projects|organizations)/[^/]+/roles/[A-Za-z0-9_.]+)$"
)


def now() -> str:
    t = dt.datetime.now(dt.timezone(dt.timedelta(hours=-7)))
    return t.isoformat(timespec="milliseconds")


def now_utc() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def content_fingerprint(value: Any) -> str:
    raw = json.dumps(value, sort_keys=True).encode()
    return base64.b64encode(hashlib.sha256(raw).digest()[:8]).decode()


def label_fingerprint(labels: dict[str, str] | None) -> str:
    return content_fingerprint(labels) if labels else EMPTY_LABEL_FINGERPRINT


def key_of(api: str, path: str) -> str:
    path = path.strip("/")
    return path if path.startswith(api + "/") else f"{api}/{path}"


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(target.get(k), dict):
            merge_patch(target[k], v)
        else:
            target[k] = copy.deepcopy(v)
    return target


def strings_in(value: Any, skip: set[str]) -> list[str]:
    out: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if k not in skip:
                out.extend(strings_in(v, skip))
    elif isinstance(value, list):
        for v in value:
            out.extend(strings_in(v, skip))
    elif isinstance(value, str):
        out.append(value)
    return out
