"""The fake GCP's state, and the way into it: `FakeGcpState.handle` takes one
decrypted request (see proxy.py), checks what every API checks (credentials,
route and schema from the discovery documents, enabled service, injected
failures) and hands it to the API's handler (registry.py). What each API does
beyond the schema lives in its own module: compute/ (one module per area),
storage.py, iam.py, wif.py, crm.py, serviceusage.py, oslogin.py,
iamcredentials.py, monitoring.py.

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
import hashlib
import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

# The API modules register their handlers when imported (registry.py).
from . import (  # noqa: F401
    compute,
    crm,
    discovery,
    iam,
    iamcredentials,
    monitoring,
    oslogin,
    serviceusage,
    wif,
)
from .common import WWW, key_of, now_utc
from .compute.operations import make_op
from .compute.refs import PUBLIC_IMAGE_PROJECTS
from .discovery import ApiError, not_found
from .registry import Request, handler_for
from .storage import IGNORED_BODY_FIELDS

# Services enabled in a brand-new project without anyone asking
# (https://cloud.google.com/service-usage/docs/enabled-service#default).
# Compute, IAM, Resource Manager, OS Login, IAP, STS and IAM Credentials are not.
DEFAULT_SERVICES = frozenset(
    {
        "bigquery.googleapis.com",
        "bigquerystorage.googleapis.com",
        "cloudapis.googleapis.com",
        "cloudtrace.googleapis.com",
        "datastore.googleapis.com",
        "logging.googleapis.com",
        "monitoring.googleapis.com",
        "servicemanagement.googleapis.com",
        "serviceusage.googleapis.com",
        "sql-component.googleapis.com",
        "storage.googleapis.com",
        "storage-api.googleapis.com",
        "storage-component.googleapis.com",
    }
)
# The service a request needs enabled, by discovery API name; None: always on.
API_SERVICE = {
    "compute": "compute.googleapis.com",
    "iam": "iam.googleapis.com",
    "cloudresourcemanager": "cloudresourcemanager.googleapis.com",
    "iamcredentials": "iamcredentials.googleapis.com",
    "oslogin": "oslogin.googleapis.com",
    "storage": "storage.googleapis.com",
    "serviceusage": "serviceusage.googleapis.com",
}
SERVICE_TITLES = {
    "compute.googleapis.com": "Compute Engine API",
    "iam.googleapis.com": "Identity and Access Management (IAM) API",
    "cloudresourcemanager.googleapis.com": "Cloud Resource Manager API",
    "iamcredentials.googleapis.com": "IAM Service Account Credentials API",
    "oslogin.googleapis.com": "Cloud OS Login API",
    "storage.googleapis.com": "Cloud Storage API",
    "serviceusage.googleapis.com": "Service Usage API",
}


class FakeGcpState:
    """Knobs tests turn (all reset by reset()):

    op_polls          polls of an operation that still answer RUNNING after the
                      first reply (which is always PENDING/RUNNING)
    iam_lag_s         seconds a new service account is refused in IAM bindings
    token_lifetime_s  expires_in of the tokens the fake's token endpoints issue;
                      a request carrying an issued token past its expiry gets 401
    org_public_access_prevention  the org policy storage.publicAccessPrevention
    """

    def __init__(
        self,
        project: str = "img2pdf-test",
        project_number: str = "123456789012",
        iam_lag_s: float = 5.0,
        op_polls: int = 1,
    ):
        self.project = project
        self.project_number = project_number
        self.lock = threading.RLock()
        self._ids = itertools.count(int(project_number) * 1000 + 1)
        self.default_iam_lag_s = iam_lag_s
        self.default_op_polls = op_polls
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        with self.lock:
            self.store: dict[str, dict[str, Any]] = {}
            self.policies: dict[str, dict[str, Any]] = {}
            self.operations: dict[str, dict[str, Any]] = {}
            self.members: dict[str, list[str]] = {}  # instance group key -> instance selfLinks
            self.services: set[str] = set(DEFAULT_SERVICES)
            self.op_polls = self.default_op_polls
            self.iam_lag_s = self.default_iam_lag_s
            # (method id, error) pairs: the next matching mutation answers with an
            # operation that ends DONE carrying `error`, and changes nothing.
            self.failing_ops: list[tuple[str, dict[str, Any]]] = []
            # policy key -> how many of the next setIamPolicy calls lose a race
            # (someone else wrote in between: 409 ABORTED / 412).
            self.policy_races: dict[str, int] = {}
            self.org_public_access_prevention = False
            self.token_lifetime_s = 3600
            self.tokens: dict[str, float] = {}  # issued token -> expiry (epoch)
            self.token_email = "owner@example.com"
            self.sa_created: dict[str, float] = {}  # service account email -> creation time
            self.ssh_keys: dict[str, dict[str, Any]] = {}  # OS Login keys by fingerprint
            self.log: list[dict[str, Any]] = []
            self.unknown: list[str] = []
            self.pending: dict[str, tuple[int, Callable[[], None] | None]] = {}
            self.token_requests = 0
            self._next_ip = itertools.count(10)
            self._net_ips: dict[str, itertools.count[int]] = {}

    def log_token_request(self) -> None:
        self.token_requests += 1

    def new_id(self) -> str:
        return str(next(self._ids) * 7919 % 10**19).rjust(19, "1")

    def projects(self) -> set[str]:
        return {self.project, self.project_number}

    def check_project(self, project: str) -> None:
        if project not in self.projects() and project not in PUBLIC_IMAGE_PROJECTS:
            raise not_found(f"projects/{project}")

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
        if isinstance(body, dict) and status >= 400:
            entry["error"] = (body.get("error") or {}).get("message", "")
        if isinstance(body, dict) and status == 200 and http_method != "GET":
            if body.get("kind") == "compute#operation":
                entry["operation"] = "operations/" + body["name"]
            elif "done" in body and "operations/" in str(body.get("name", "")):
                entry["operation"] = body["name"]
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
            raise not_found(message=f"unknown host {host}")
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            raise ApiError(
                401,
                "Request is missing required authentication credential. Expected OAuth 2 "
                "access token, login cookie or other valid authentication credential.",
                reason="required",
            )
        token = auth[7:].strip()
        entry["token"] = token
        with self.lock:
            expiry = self.tokens.get(token)
        if expiry is not None and expiry <= time.time():
            raise ApiError(
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential.",
                reason="authError",
                status="UNAUTHENTICATED",
            )
        found = discovery.match(host, http_method, path)
        if found is None:
            with self.lock:
                self.unknown.append(f"{http_method} {host}/{path}")
            raise not_found(message=f"Not Found: {http_method} /{path}")
        method, vars = found
        entry["id"] = method.id
        vars = {k: unquote(v) for k, v in vars.items()}
        query = discovery.validate_query(method, query_multi)
        req = Request(method, vars, path, query)
        req.multi = query_multi
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                raise ApiError(400, "Invalid JSON payload received.", reason="parseError") from None
        ignored = IGNORED_BODY_FIELDS.get(method.id, frozenset())
        req.body = discovery.validate_body(method, body, ignored)
        with self.lock:
            self.check_service(method.api)
            failing = self._take_failure(method.id)
            if failing is not None:
                return self.failed_operation(req, failing)
            handler = handler_for(method)
            if handler is None:
                with self.lock:
                    self.unknown.append(f"{http_method} {host}/{path} ({method.id})")
                raise ApiError(
                    501, f"{method.id} is not implemented by the fake", reason="notImplemented"
                )
            return handler(self, req)

    # ------------------------------------------------------------------ strictness
    def check_service(self, api: str) -> None:
        """403 SERVICE_DISABLED until Service Usage enabled the API, in the body
        GCP sends (https://cloud.google.com/service-usage/docs/troubleshooting,
        https://cloud.google.com/apis/design/errors#error_info)."""
        svc = API_SERVICE.get(api)
        if svc is None or svc in self.services:
            return
        title = SERVICE_TITLES.get(svc, svc)
        n = self.project_number
        url = f"https://console.developers.google.com/apis/api/{svc}/overview?project={n}"
        msg = (
            f"{title} has not been used in project {n} before or it is disabled. Enable it "
            f"by visiting {url} then retry. If you enabled this API recently, wait a few "
            "minutes for the action to propagate to our systems and retry."
        )
        err = ApiError(403, msg, reason="accessNotConfigured", status="PERMISSION_DENIED")
        err.domain = "usageLimits"
        err.details = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "SERVICE_DISABLED",
                "domain": "googleapis.com",
                "metadata": {
                    "consumer": f"projects/{n}",
                    "service": svc,
                    "serviceTitle": title,
                    "activationUrl": url,
                    "containerInfo": n,
                },
            },
            {
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [{"description": "Google developers console API activation", "url": url}],
            },
        ]
        raise err

    def fail_next_operation(
        self, method_id: str, code: str = "QUOTA_EXCEEDED", message: str = "injected failure"
    ) -> None:
        """The next `method_id` call answers a RUNNING operation that ends DONE with
        this error (Compute: https://cloud.google.com/compute/docs/api/how-tos/api-requests-responses#handling_api_responses;
        google.longrunning.Operation.error elsewhere), and nothing changes."""
        with self.lock:
            self.failing_ops.append((method_id, {"code": code, "message": message}))

    def _take_failure(self, method_id: str) -> dict[str, Any] | None:
        for i, (mid, err) in enumerate(self.failing_ops):
            if mid == method_id:
                del self.failing_ops[i]
                return err
        return None

    def failed_operation(self, req: Request, err: dict[str, Any]) -> tuple[int, Any]:
        if req.method.api == "compute":
            error = {"errors": [{"code": err["code"], "message": err["message"]}]}
            return make_op(self, req.method.name, key_of("compute", req.prefix), None, error=error)
        return 200, self.google_lro(
            f"{req.method.api}/v1/operations/fail-{uuid.uuid4().hex[:12]}",
            {"code": 9, "message": f"{err['code']}: {err['message']}"},
            error=True,
        )

    def google_lro(
        self,
        key: str,
        result: dict[str, Any],
        error: bool = False,
        metadata: dict[str, Any] | None = None,
        on_done: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """A google.longrunning.Operation: done=false on the reply and on the first
        `op_polls` polls (https://google.aip.dev/151), then `response` or `error`.
        `key` is the operation's key; its name is the key without the API prefix."""
        name = key.split("/", 2)[2] if key.count("/") >= 2 else key
        op: dict[str, Any] = {"name": name, "done": True}
        if metadata:
            op["metadata"] = metadata
        op["error" if error else "response"] = result
        self.operations[key] = op
        self.pending[key] = (self.op_polls, on_done)
        out = {k: v for k, v in op.items() if k not in ("error", "response")}
        out["done"] = False
        return copy.deepcopy(out)

    def poll_google_lro(self, key: str) -> dict[str, Any] | None:
        op = self.operations.get(key)
        if op is None:
            return None
        left, on_done = self.pending.get(key, (0, None))
        if left > 0:
            self.pending[key] = (left - 1, on_done)
            out = {k: v for k, v in op.items() if k not in ("error", "response")}
            out["done"] = False
            return copy.deepcopy(out)
        self.pending.pop(key, None)
        if on_done is not None and "error" not in op:
            on_done()
        return copy.deepcopy(op)

    def issue_token(self) -> dict[str, Any]:
        token = f"ya29.fake-{uuid.uuid4().hex}"
        with self.lock:
            self.tokens[token] = time.time() + self.token_lifetime_s
        return {
            "access_token": token,
            "expires_in": self.token_lifetime_s,
            "token_type": "Bearer",
            "scope": "https://www.googleapis.com/auth/cloud-platform",
            "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
        }

    def _special(
        self, http_method: str, host: str, path: str, query: dict[str, list[str]], raw: bytes
    ) -> tuple[int, Any] | None:
        """Endpoints outside the discovery documents: tokens and media upload."""
        if http_method == "POST" and (
            (host == "oauth2.googleapis.com" and path == "token")
            or (host == "www.googleapis.com" and path in ("oauth2/v4/token", "oauth2/v3/token"))
            or (host == "sts.googleapis.com" and path == "v1/token")
        ):
            with self.lock:
                self.log_token_request()
            return 200, self.issue_token()
        if host == "oauth2.googleapis.com" and path == "tokeninfo":
            # https://developers.google.com/identity/protocols/oauth2/javascript-implicit-flow#tokeninfo-validation
            token = query.get("access_token", [""])[-1]
            with self.lock:
                expiry = self.tokens.get(token)
            if expiry is None or expiry <= time.time():
                raise ApiError(400, "Invalid Value", reason="invalid_token")
            return 200, {
                "email": self.token_email,
                "email_verified": "true",
                "expires_in": str(int(expiry - time.time())),
                "scope": "https://www.googleapis.com/auth/cloud-platform "
                "https://www.googleapis.com/auth/userinfo.email",
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
    def put_object(self, bucket: str, name: str, data: bytes = b"") -> dict[str, Any]:
        bkey = f"storage/v1/b/{bucket}"
        if bkey not in self.store:
            raise not_found(message="The specified bucket does not exist.")
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
