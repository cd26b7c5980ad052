# -*- coding: utf-8 -*-
"""REST calls to Google APIs for the modules the google.cloud collection lacks.

One place for what every call needs: the bearer token, bounded retries of
transient answers (429, 5xx), waiting for long-running operations (Compute
operations until status DONE, google.longrunning operations until done) and
failing on an operation that is DONE with an `error`, and readable errors
(a disabled API names the service to enable).
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

try:
    import requests

    HAS_REQUESTS = True
except ImportError:  # pragma: no cover - reported by the module
    HAS_REQUESTS = False

TRANSIENT = (429, 500, 502, 503, 504)

# The option every module of this repo takes: the bearer token of its calls
# (the roles pass it through module_defaults).
TOKEN_OPTION = {"access_token": {"type": "str", "required": True, "no_log": True}}


def gcp_module(options, supports_check_mode=False):
    """The AnsibleModule of a REST module: its own options plus the token."""
    from ansible.module_utils.basic import AnsibleModule

    spec = dict(options)
    spec.update(TOKEN_OPTION)
    return AnsibleModule(argument_spec=spec, supports_check_mode=supports_check_mode)


class GcpError(Exception):
    """An error answer, or an operation that finished with an error."""

    def __init__(self, message, status=None, body=None, url=None):
        super().__init__(message)
        self.status = status
        self.body = body or {}
        self.url = url

    @property
    def error(self):
        err = self.body.get("error") if isinstance(self.body, dict) else None
        return err if isinstance(err, dict) else {}

    @property
    def gcp_message(self):
        return str(self.error.get("message") or "")

    @property
    def gcp_status(self):
        return str(self.error.get("status") or "")

    def disabled_service(self):
        """The API a 403 SERVICE_DISABLED names, else None."""
        for detail in self.error.get("details") or []:
            if detail.get("reason") == "SERVICE_DISABLED":
                return (detail.get("metadata") or {}).get("service") or "?"
        return None


def backoff(attempt, first=0.5, cap=8.0):
    """0.5, 1, 2, 4, 8, 8, ... seconds."""
    return min(cap, first * (2**attempt))


class GcpRest:
    def __init__(self, token, timeout=60, op_timeout=900):
        if not HAS_REQUESTS:
            raise GcpError("the python 'requests' package is needed on the controller")
        self.session = requests.Session()
        self.session.headers["Authorization"] = "Bearer " + token
        self.timeout = timeout
        self.op_timeout = op_timeout

    def call(self, method, url, body=None, ok=(200,), attempts=5):
        """(status, parsed JSON or None). Retries transient answers; raises
        GcpError on any status not in `ok`."""
        for attempt in range(attempts):
            kwargs = {"timeout": self.timeout}
            if body is not None:
                kwargs["json"] = body
            resp = self.session.request(method, url, **kwargs)
            try:
                data = resp.json() if resp.content else None
            except ValueError:
                data = {"raw": resp.text[:500]}
            if resp.status_code in ok:
                return resp.status_code, data
            if resp.status_code in TRANSIENT and attempt + 1 < attempts:
                time.sleep(backoff(attempt))
                continue
            raise self._error(method, url, resp.status_code, data)
        raise GcpError("unreachable")  # pragma: no cover

    @staticmethod
    def _error(method, url, status, data):
        err = GcpError("", status, data, url)
        svc = err.disabled_service()
        if svc:
            msg = (
                "%s is disabled in this project (403 SERVICE_DISABLED). provision.yml enables "
                "the APIs it uses first; or enable it: gcloud services enable %s" % (svc, svc)
            )
        else:
            msg = "%s %s -> %s %s: %s" % (
                method,
                url,
                status,
                err.gcp_status,
                err.gcp_message or data,
            )
        err.args = (msg,)
        return err

    # ------------------------------------------------------------ operations
    @staticmethod
    def is_operation(data):
        if not isinstance(data, dict):
            return False
        if str(data.get("kind", "")).endswith("#operation"):
            return True
        return "done" in data and "name" in data and "operations/" in str(data["name"])

    def wait(self, op, request_url):
        """Poll an operation until it is finished; raise GcpError if it finished
        with an error. Returns the finished operation."""
        deadline = time.monotonic() + self.op_timeout
        compute = str(op.get("kind", "")).endswith("#operation")
        if compute:
            poll_url = op["selfLink"]
        else:
            parts = urlsplit(request_url)
            version = parts.path.strip("/").split("/")[0]
            poll_url = "%s://%s/%s/%s" % (parts.scheme, parts.netloc, version, op["name"])
        attempt = 0
        while not self._finished(op, compute):
            if time.monotonic() > deadline:
                raise GcpError("operation %s not finished after %ss" % (poll_url, self.op_timeout))
            time.sleep(backoff(attempt, first=0.25, cap=5.0))
            attempt += 1
            _, op = self.call("GET", poll_url)
        if op.get("error"):
            raise GcpError(
                "operation %s finished with an error: %s" % (op.get("name"), op["error"]),
                body={"error": op["error"]},
                url=poll_url,
            )
        return op

    @staticmethod
    def _finished(op, compute):
        return op.get("status") == "DONE" if compute else bool(op.get("done"))
