"""The fake GCP: in-memory state plus the behaviour of each API.

Requests arrive already decrypted (see proxy.py) as (method, host, path, headers, body).
Routing and validation come from the discovery documents (discovery.py); what GCP
does beyond the schema (defaults it fills in, selfLinks, fingerprints, operations,
"in use" refusals, etags) lives here, as small per-collection tables and handlers.

Keys of stored resources are the resource's REST path without the host, prefixed
by the API name when the path does not already start with it:

    compute/v1/projects/P/global/networks/N
    compute/v1/projects/P/zones/Z/instances/I
    storage/v1/b/BUCKET                      (objects: storage/v1/b/BUCKET/o/NAME)
    iam/v1/projects/P/serviceAccounts/EMAIL
    iam/v1/projects/NUMBER/locations/global/workloadIdentityPools/ID[/providers/ID]

IAM policies are kept apart from resources, under:

    storage/v1/b/BUCKET/iam
    cloudresourcemanager/v1/projects/P:iamPolicy
    iam/v1/projects/P/serviceAccounts/EMAIL:iamPolicy
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import itertools
import json
import re
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from . import discovery
from .discovery import ApiError, Method

WWW = "https://www.googleapis.com/"
COMPUTE_PREFIX = "compute/v1/"
EMPTY_LABEL_FINGERPRINT = "42WmSpB8rSM="

REGIONS: dict[str, list[str]] = {
    "us-central1": ["a", "b", "c", "f"],
    "us-west1": ["a", "b", "c"],
    "us-east1": ["b", "c", "d"],
    "us-east4": ["a", "b", "c"],
    "europe-west1": ["b", "c", "d"],
    "europe-west4": ["a", "b", "c"],
    "asia-east1": ["a", "b", "c"],
}
ZONES = {f"{r}-{z}": r for r, zs in REGIONS.items() for z in zs}
MACHINE_TYPES = {
    "e2-micro": (2, 1024),
    "e2-small": (2, 2048),
    "e2-medium": (2, 4096),
    "e2-standard-2": (2, 8192),
    "e2-standard-4": (4, 16384),
    "n1-standard-1": (1, 3840),
    "n2-standard-2": (2, 8192),
    "f1-micro": (1, 614),
    "g1-small": (1, 1740),
}
DISK_TYPES = ["pd-standard", "pd-balanced", "pd-ssd", "pd-extreme", "local-ssd"]
IMAGE_FAMILIES = {
    ("debian-cloud", "debian-12"): "debian-12-bookworm-v20250610",
    ("debian-cloud", "debian-11"): "debian-11-bullseye-v20250610",
    ("ubuntu-os-cloud", "ubuntu-2204-lts"): "ubuntu-2204-jammy-v20250612",
    ("ubuntu-os-cloud", "ubuntu-2404-lts-amd64"): "ubuntu-2404-noble-amd64-v20250612",
}
PUBLIC_IMAGE_PROJECTS = {p for p, _ in IMAGE_FAMILIES}
# collections that are part of the platform, not created by the user
BUILTIN_COLLECTIONS = {"zones", "regions", "machineTypes", "diskTypes", "images", "licenses"}
# fields that hold back-references or output lists; ignored by the "in use" scan
BACKREF_FIELDS = {"selfLink", "selfLinkWithId", "users", "subnetworks", "targetLink"}
NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
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
COMPUTE_REF_RE = re.compile(
    r"^(?:https://(?:www|compute)\.googleapis\.com/compute/(?:v1|beta|alpha)/)?"
    r"(?:projects/(?P<project>[^/\s]+)/)?"
    r"(?P<rest>(?:global|regions/[a-z0-9-]+|zones/[a-z0-9-]+)(?:/[^/\s]+)*)$"
)
NO_NORMALISE_FIELDS = {"metadata", "labels", "description", "items", "sourceRanges"}


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


def _strings(value: Any, skip: set[str]) -> list[str]:
    out: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if k not in skip:
                out.extend(_strings(v, skip))
    elif isinstance(value, list):
        for v in value:
            out.extend(_strings(v, skip))
    elif isinstance(value, str):
        out.append(value)
    return out


class Request:
    def __init__(self, method: Method, vars: dict[str, str], path: str, query: dict[str, str]):
        self.method = method
        self.vars = vars
        self.path = path  # request path, no leading slash, no query
        self.query = query
        self.body: Any = None

    @property
    def prefix(self) -> str:
        """Path up to the end of its last variable (the resource a custom verb acts on)."""
        m = self.method.regex.match(self.path)
        assert m is not None
        return self.path[: m.end(len(m.groups()))] if m.groups() else self.path


Handler = Callable[["FakeGcpState", Request], tuple[int, Any]]
HANDLERS: dict[str, Handler] = {}


def handles(*method_ids: str) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        for mid in method_ids:
            HANDLERS[mid] = fn
        return fn

    return deco


class FakeGcpState:
    def __init__(self, project: str = "img2pdf-test", project_number: str = "123456789012"):
        self.project = project
        self.project_number = project_number
        self.lock = threading.RLock()
        self._ids = itertools.count(int(project_number) * 1000 + 1)
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        with self.lock:
            self.store: dict[str, dict[str, Any]] = {}
            self.policies: dict[str, dict[str, Any]] = {}
            self.operations: dict[str, dict[str, Any]] = {}
            self.members: dict[str, list[str]] = {}  # instance group key -> instance selfLinks
            self.services: set[str] = set()
            self.log: list[dict[str, Any]] = []
            self.unknown: list[str] = []
            self._next_ip = itertools.count(10)
            self._net_ips: dict[str, itertools.count[int]] = {}

    def new_id(self) -> str:
        return str(next(self._ids) * 7919 % 10**19).rjust(19, "1")

    def projects(self) -> set[str]:
        return {self.project, self.project_number}

    def check_project(self, project: str) -> None:
        if project not in self.projects() and project not in PUBLIC_IMAGE_PROJECTS:
            raise ApiError(
                404, f"The resource 'projects/{project}' was not found", reason="notFound"
            )

    # ------------------------------------------------------------------ entry
    def handle(
        self, http_method: str, host: str, target: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, Any]:
        url = urlsplit(target)
        path = url.path.lstrip("/")
        query_multi = parse_qs(url.query, keep_blank_values=True)
        entry: dict[str, Any] = {
            "method": http_method,
            "host": host,
            "path": "/" + path,
            "query": {k: v[-1] for k, v in query_multi.items()},
            "status": 0,
            "id": None,
            "body": None,
        }
        try:
            if raw:
                try:
                    entry["body"] = json.loads(raw)
                except ValueError:
                    entry["body"] = raw.decode(errors="replace")
            status, body = self._handle(http_method, host, path, query_multi, headers, raw, entry)
        except ApiError as e:
            status, body = e.code, e.body()
        except Exception as e:  # a bug in the fake: say so loudly
            status, body = 500, ApiError(500, f"fake GCP internal error: {e!r}").body()
        entry["status"] = status
        with self.lock:
            self.log.append(entry)
        return status, body

    def _handle(
        self,
        http_method: str,
        host: str,
        path: str,
        query_multi: dict[str, list[str]],
        headers: dict[str, str],
        raw: bytes,
        entry: dict[str, Any],
    ) -> tuple[int, Any]:
        special = self._special(http_method, host, path, query_multi, raw)
        if special is not None:
            return special
        if host not in discovery.FAKED_HOSTS:
            raise ApiError(404, f"unknown host {host}", reason="notFound")
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            raise ApiError(
                401,
                "Request is missing required authentication credential. Expected OAuth 2 "
                "access token, login cookie or other valid authentication credential.",
                reason="required",
            )
        found = discovery.match(host, http_method, path)
        if found is None:
            with self.lock:
                self.unknown.append(f"{http_method} {host}/{path}")
            raise ApiError(404, f"Not Found: {http_method} /{path}", reason="notFound")
        method, vars = found
        entry["id"] = method.id
        vars = {k: unquote(v) for k, v in vars.items()}
        query = discovery.validate_query(method, query_multi)
        req = Request(method, vars, path, query)
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                raise ApiError(400, "Invalid JSON payload received.", reason="parseError") from None
        ignored = IGNORED_BODY_FIELDS.get(method.id, frozenset())
        req.body = discovery.validate_body(method, body, ignored)
        with self.lock:
            handler = HANDLERS.get(method.id)
            if handler is None and method.api == "compute":
                handler = COMPUTE_GENERIC.get(method.name)
            if handler is None:
                with self.lock:
                    self.unknown.append(f"{http_method} {host}/{path} ({method.id})")
                raise ApiError(
                    501, f"{method.id} is not implemented by the fake", reason="notImplemented"
                )
            return handler(self, req)

    def _special(
        self, http_method: str, host: str, path: str, query: dict[str, list[str]], raw: bytes
    ) -> tuple[int, Any] | None:
        """Endpoints outside the discovery documents: tokens and media upload."""
        if http_method == "POST" and (
            (host == "oauth2.googleapis.com" and path == "token")
            or (host == "www.googleapis.com" and path in ("oauth2/v4/token", "oauth2/v3/token"))
            or (host == "sts.googleapis.com" and path == "v1/token")
        ):
            return 200, {
                "access_token": "fake-access-token",
                "expires_in": 3600,
                "token_type": "Bearer",
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
            }
        m = re.match(r"^upload/storage/v1/b/([^/]+)/o$", path)
        if m and http_method == "POST" and host in ("storage.googleapis.com", "www.googleapis.com"):
            name = query.get("name", [""])[-1]
            if not name:
                raise ApiError(400, "Required parameter: name", reason="required")
            with self.lock:
                return 200, self.put_object(unquote(m.group(1)), name, raw)
        return None

    # ------------------------------------------------------------------ helpers
    def get_or_404(self, key: str, what: str | None = None) -> dict[str, Any]:
        res = self.store.get(key)
        if res is None:
            raise ApiError(
                404,
                f"The resource '{what or key.split('/', 2)[-1]}' was not found",
                reason="notFound",
            )
        return res

    def put_object(self, bucket: str, name: str, data: bytes = b"") -> dict[str, Any]:
        bkey = f"storage/v1/b/{bucket}"
        if bkey not in self.store:
            raise ApiError(404, "The specified bucket does not exist.", reason="notFound")
        obj = {
            "kind": "storage#object",
            "id": f"{bucket}/{name}/1",
            "selfLink": f"{WWW}storage/v1/b/{bucket}/o/{name}",
            "name": name,
            "bucket": bucket,
            "generation": "1",
            "metageneration": "1",
            "size": str(len(data)),
            "timeCreated": now_utc(),
            "updated": now_utc(),
            "md5Hash": base64.b64encode(hashlib.md5(data).digest()).decode(),
            "storageClass": "STANDARD",
        }
        self.store[f"{bkey}/o/{name}"] = obj
        return obj


IGNORED_BODY_FIELDS: dict[str, frozenset[str]] = {
    # gcp_storage_bucket sends these query-parameter names in the body; GCS ignores them.
    "storage.buckets.insert": frozenset({"project", "predefinedDefaultObjectAcl"}),
    "storage.buckets.update": frozenset({"project", "predefinedDefaultObjectAcl"}),
    "storage.buckets.patch": frozenset({"project", "predefinedDefaultObjectAcl"}),
}

from . import compute as _compute  # noqa: E402  (registers handlers)
from . import monitoring as _monitoring  # noqa: E402,F401
from . import others as _others  # noqa: E402,F401

COMPUTE_GENERIC = _compute.GENERIC
