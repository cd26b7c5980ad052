#!/usr/bin/python
# -*- coding: utf-8 -*-
"""One REST call to a Google API, waiting for the operation it starts."""

from __future__ import annotations

DOCUMENTATION = r"""
module: gcp_api
short_description: Call a Google REST API and wait for the operation it starts
description:
  - Sends one request with a bearer token. When the answer is a long-running
    operation (a Compute operation, or a google.longrunning operation as
    Service Usage and IAM answer), polls it until it is finished and fails if
    it finished with an C(error).
  - Retries 429 and 5xx answers a few times with backoff. A 403
    SERVICE_DISABLED fails with the name of the API to enable.
options:
  url:
    description: Full URL.
    type: str
    required: true
  method:
    description: HTTP method.
    type: str
    default: GET
  body:
    description: JSON body.
    type: raw
  access_token:
    description: OAuth2 access token (the gcp_token lookup).
    type: str
    required: true
  status_code:
    description: Statuses that are not errors (e.g. [200, 404] for a read that may miss).
    type: list
    elements: int
    default: [200]
  wait:
    description: Wait for the operation the answer names.
    type: bool
    default: true
  read_only:
    description: A POST that changes nothing (getIamPolicy, listInstances).
    type: bool
    default: false
  timeout:
    description: Seconds to wait for the operation.
    type: int
    default: 900
"""

from ansible.module_utils.gcp_rest import GcpError, GcpRest, gcp_module


def main():
    module = gcp_module(
        {
            "url": {"type": "str", "required": True},
            "method": {"type": "str", "default": "GET"},
            "body": {"type": "raw"},
            "status_code": {"type": "list", "elements": "int", "default": [200]},
            "wait": {"type": "bool", "default": True},
            "read_only": {"type": "bool", "default": False},
            "timeout": {"type": "int", "default": 900},
        },
        supports_check_mode=False,
    )
    p = module.params
    method = p["method"].upper()
    try:
        rest = GcpRest(p["access_token"], op_timeout=p["timeout"])
        status, data = rest.call(method, p["url"], p["body"], ok=tuple(p["status_code"]))
        operation = None
        if p["wait"] and status < 300 and rest.is_operation(data):
            operation = rest.wait(data, p["url"])
    except GcpError as e:
        module.fail_json(msg=str(e), status=e.status, json=e.body)
    except Exception as e:  # connection errors and the like
        module.fail_json(msg="%s %s: %s" % (method, p["url"], e))
    changed = method != "GET" and not p["read_only"] and status < 300
    module.exit_json(changed=changed, status=status, json=data, operation=operation)


if __name__ == "__main__":
    main()
