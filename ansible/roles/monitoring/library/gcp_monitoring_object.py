#!/usr/bin/python
"""Idempotent create/update/delete of one Cloud Monitoring object by display name."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gcp_monitoring_object
short_description: One Cloud Monitoring object, found by its display name
description:
  - Manages an uptime check, alert policy or notification channel (Monitoring
    v3) or a dashboard (Monitoring v1). The server assigns their names, so the
    object is found by C(displayName) in the (paginated) list.
  - C(present) creates the object when none has the name; when one has it and
    a field of I(body) differs from what the server holds (the server's own
    additions are ignored), a v3 object is PATCHed with an C(updateMask) of just
    those fields, a dashboard is replaced with its current etag. A change of a
    field in I(immutable) deletes and recreates the object.
  - C(absent) deletes every object of that display name.
options:
  kind:
    description: The collection.
    required: true
    type: str
    choices: [uptimeCheckConfigs, alertPolicies, notificationChannels, dashboards]
  project:
    description: Project id.
    required: true
    type: str
  display_name:
    description: The display name that identifies the object.
    required: true
    type: str
  body:
    description: The wanted object (API field names); displayName is set from I(display_name).
    type: dict
    default: {}
  immutable:
    description: Top-level fields the API refuses to change; a difference recreates the object.
    type: list
    elements: str
    default: []
  force:
    description: Notification channels only, with C(absent) - delete even if policies use it.
    type: bool
    default: false
  state:
    description: Whether the object should exist.
    type: str
    choices: [present, absent]
    default: present
  access_token:
    description: OAuth access token sent as C(Authorization: Bearer).
    required: true
    type: str
  api_root:
    description: Base URL of the Monitoring API.
    type: str
    default: https://monitoring.googleapis.com
author: img2pdf team
"""

RETURN = r"""
name:
  description: The server-assigned resource name (empty when absent).
  returned: always
  type: str
resource:
  description: The object as the server holds it after the run.
  returned: always
  type: dict
updated_fields:
  description: Top-level fields that differed (and were sent in the updateMask).
  returned: always
  type: list
"""

import json
import re
from urllib.error import HTTPError
from urllib.parse import quote, urlencode

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url

API_VERSION = {
    "uptimeCheckConfigs": "v3",
    "alertPolicies": "v3",
    "notificationChannels": "v3",
    "dashboards": "v1",
}
EMPTY = (False, 0, "", None)


def covers(have, want):
    """True when `have` (the server's object) holds every value of `want`.

    Fields the server adds are ignored; proto3 JSON leaves out default values,
    so a wanted false/0/""/[]/{} matches a missing field; numbers compare as
    numbers ("0.1" == 0.1, 1.0 == 1).
    """
    if isinstance(want, dict):
        if have is None:
            return all(covers(None, v) for v in want.values())
        return isinstance(have, dict) and all(covers(have.get(k), v) for k, v in want.items())
    if isinstance(want, list):
        if have is None:
            return not want
        return (
            isinstance(have, list)
            and len(have) == len(want)
            and all(covers(h, w) for h, w in zip(have, want))
        )
    if have is None:
        return want in EMPTY
    if isinstance(want, bool) or isinstance(have, bool):
        return str(want).lower() == str(have).lower()
    if isinstance(want, (int, float)) or isinstance(have, (int, float)):
        try:
            return float(want) == float(have)
        except (TypeError, ValueError):
            return False
    return str(want) == str(have)


def snake(field):
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), field)


class Api:
    def __init__(self, module):
        self.module = module
        p = module.params
        self.kind = p["kind"]
        self.base = "%s/%s/projects/%s/%s" % (
            p["api_root"].rstrip("/"),
            API_VERSION[self.kind],
            quote(p["project"], safe=""),
            self.kind,
        )
        self.root = p["api_root"].rstrip("/") + "/" + API_VERSION[self.kind] + "/"
        self.headers = {
            "Authorization": "Bearer " + p["access_token"],
            "Content-Type": "application/json",
        }
        self.requests = []

    def call(self, method, url, body=None):
        self.requests.append("%s %s" % (method, url.split("?")[0]))
        data = json.dumps(body).encode() if body is not None else None
        try:
            resp = open_url(
                url, method=method, data=data, headers=self.headers, timeout=60, validate_certs=True
            )
            raw = resp.read()
        except HTTPError as e:
            detail = e.read().decode(errors="replace")
            try:
                detail = json.loads(detail)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                pass
            self.module.fail_json(
                msg="%s %s: HTTP %s: %s" % (method, url.split("?")[0], e.code, detail),
                status=e.code,
            )
        except Exception as e:  # noqa: BLE001  (connection errors: say which call failed)
            self.module.fail_json(msg="%s %s: %s" % (method, url.split("?")[0], e))
        return json.loads(raw) if raw.strip() else {}

    def url(self, name, **query):
        q = "?" + urlencode(query) if query else ""
        return self.root + quote(name, safe="/") + q

    def find(self, display_name):
        found, token = [], None
        while True:
            query = {"pageSize": 100}
            if token:
                query["pageToken"] = token
            page = self.call("GET", self.base + "?" + urlencode(query))
            found.extend(o for o in page.get(self.kind, []) if o.get("displayName") == display_name)
            token = page.get("nextPageToken")
            if not token:
                return found


def main():
    module = AnsibleModule(
        argument_spec=dict(
            kind=dict(type="str", required=True, choices=list(API_VERSION)),
            project=dict(type="str", required=True),
            display_name=dict(type="str", required=True),
            body=dict(type="dict", default={}),
            immutable=dict(type="list", elements="str", default=[]),
            force=dict(type="bool", default=False),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            access_token=dict(type="str", required=True, no_log=True),
            api_root=dict(type="str", default="https://monitoring.googleapis.com"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    api = Api(module)
    found = api.find(p["display_name"])
    result = dict(changed=False, name="", resource={}, updated_fields=[])

    if p["state"] == "absent":
        for obj in found:
            if not module.check_mode:
                query = {"force": "true"} if p["force"] and p["kind"] == "notificationChannels" else {}
                api.call("DELETE", api.url(obj["name"], **query))
            result["changed"] = True
        result["requests"] = api.requests
        module.exit_json(**result)

    want = dict(p["body"], displayName=p["display_name"])
    if len(found) > 1:
        module.fail_json(
            msg="%d %s are named %r (%s): delete the extra ones, the name must be unique."
            % (len(found), p["kind"], p["display_name"], ", ".join(o["name"] for o in found))
        )
    if not found:
        result.update(changed=True, updated_fields=sorted(want))
        if not module.check_mode:
            result["resource"] = api.call("POST", api.base, want)
    else:
        cur = found[0]
        diff = sorted(k for k, v in want.items() if not covers(cur.get(k), v))
        result.update(resource=cur, updated_fields=diff)
        if diff:
            result["changed"] = True
            recreate = [f for f in diff if f in p["immutable"]]
            if module.check_mode:
                pass
            elif recreate:
                api.call("DELETE", api.url(cur["name"]))
                result["resource"] = api.call("POST", api.base, want)
            elif p["kind"] == "dashboards":
                # Dashboards take no updateMask: a full replacement, guarded by the etag.
                body = dict(want, name=cur["name"], etag=cur.get("etag", ""))
                result["resource"] = api.call("PATCH", api.url(cur["name"]), body)
            else:
                mask = ",".join(snake(f) for f in diff)
                body = {f: want[f] for f in diff}
                result["resource"] = api.call(
                    "PATCH", api.url(cur["name"], updateMask=mask), body
                )
    result["name"] = result["resource"].get("name", "")
    result["requests"] = api.requests
    module.exit_json(**result)


if __name__ == "__main__":
    main()
