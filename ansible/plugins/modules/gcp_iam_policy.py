#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Grant or revoke unconditional role bindings on a GCP IAM policy."""

from __future__ import annotations

DOCUMENTATION = r"""
module: gcp_iam_policy
short_description: Add or remove members of roles in a GCP IAM policy
description:
  - Read-modify-write of the IAM policy of a project (Resource Manager), a
    bucket (Cloud Storage) or a service account (IAM), always as policy
    version 3, so conditional bindings are read as they are and written back
    untouched (a version 1 read renames them C(role_withcond_<hash>) and
    writing that back fails).
  - Only unconditional bindings are changed. Nothing is written when nothing
    differs (changed is truthful).
  - A write that loses a race (409 ABORTED, or 412 for a bucket) is retried
    from a fresh read. A binding naming a service account IAM does not know
    yet (400 "does not exist", IAM is eventually consistent) is retried with
    bounded exponential backoff for I(member_wait) seconds.
options:
  resource:
    description:
      - URL of the resource, one of
        https://cloudresourcemanager.googleapis.com/v1/projects/P,
        https://storage.googleapis.com/storage/v1/b/BUCKET,
        https://iam.googleapis.com/v1/projects/P/serviceAccounts/EMAIL.
    type: str
    required: true
  bindings:
    description: List of {role, members} to add (state=present) or remove (state=absent).
    type: list
    elements: dict
    required: true
  state:
    type: str
    choices: [present, absent]
    default: present
  access_token:
    type: str
    required: true
  member_wait:
    description: Seconds to keep retrying a binding of a service account IAM does not know yet.
    type: int
    default: 120
  races:
    description: Fresh read-modify-write attempts after a lost race.
    type: int
    default: 5
"""

import copy
import time

from ansible.module_utils.gcp_rest import GcpError, GcpRest, backoff, gcp_module


def kind_of(url):
    if "/storage/v1/b/" in url:
        return "storage"
    if "cloudresourcemanager.googleapis.com" in url:
        return "crm"
    if "/serviceAccounts/" in url:
        return "iam"
    raise ValueError("unsupported IAM resource URL: %s" % url)


def read(rest, url, kind):
    if kind == "storage":
        return rest.call("GET", url + "/iam?optionsRequestedPolicyVersion=3")[1]
    if kind == "crm":
        body = {"options": {"requestedPolicyVersion": 3}}
        return rest.call("POST", url + ":getIamPolicy", body)[1]
    return rest.call("POST", url + ":getIamPolicy?options.requestedPolicyVersion=3")[1]


def write(rest, url, kind, policy):
    if kind == "storage":
        return rest.call("PUT", url + "/iam", policy)[1]
    return rest.call("POST", url + ":setIamPolicy", {"policy": policy})[1]


def apply(policy, wanted, present):
    """The policy with `wanted` members added/removed in unconditional bindings."""
    new = copy.deepcopy(policy)
    bindings = new.get("bindings") or []
    for want in wanted:
        role, members = want["role"], list(want.get("members") or [])
        plain = [b for b in bindings if b.get("role") == role and not b.get("condition")]
        if present:
            have = {m for b in plain for m in b.get("members", [])}
            missing = [m for m in members if m not in have]
            if not missing:
                continue
            if plain:
                plain[0]["members"] = list(plain[0].get("members", [])) + missing
            else:
                bindings.append({"role": role, "members": missing})
        else:
            for b in plain:
                b["members"] = [m for m in b.get("members", []) if m not in members]
    new["bindings"] = [b for b in bindings if b.get("members")]
    if not new["bindings"]:
        new.pop("bindings")
    new["version"] = 3
    return new


def same(a, b):
    def norm(p):
        return sorted(
            (x["role"], sorted(x.get("members", [])), repr(x.get("condition")))
            for x in p.get("bindings") or []
        )

    return norm(a) == norm(b)


def is_new_account_lag(err):
    msg = err.gcp_message
    return err.status == 400 and "does not exist" in msg and "ervice account" in msg


def is_public_access_prevention(err):
    return err.status == 412 and "public access prevention" in err.gcp_message.lower()


def main():
    module = gcp_module(
        {
            "resource": {"type": "str", "required": True},
            "bindings": {"type": "list", "elements": "dict", "required": True},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "member_wait": {"type": "int", "default": 120},
            "races": {"type": "int", "default": 5},
        },
        supports_check_mode=True,
    )
    p = module.params
    url = p["resource"].rstrip("/")
    present = p["state"] == "present"
    result = {"changed": False, "races": 0, "member_waits": 0}
    try:
        kind = kind_of(url)
        rest = GcpRest(p["access_token"])
        deadline = time.monotonic() + p["member_wait"]
        while True:
            policy = read(rest, url, kind)
            new = apply(policy, p["bindings"], present)
            if same(policy, new):
                module.exit_json(policy=policy, **result)
            result["changed"] = True
            if module.check_mode:
                module.exit_json(policy=new, **result)
            try:
                written = write(rest, url, kind, new)
                module.exit_json(policy=written, **result)
            except GcpError as e:
                lost_race = e.status == 409 or (
                    kind == "storage" and e.status == 412 and not is_public_access_prevention(e)
                )
                if lost_race and result["races"] < p["races"]:
                    result["races"] += 1
                    time.sleep(backoff(result["races"], first=0.25))
                    continue
                if is_new_account_lag(e) and present and time.monotonic() < deadline:
                    result["member_waits"] += 1
                    time.sleep(backoff(result["member_waits"], first=1.0, cap=16.0))
                    continue
                raise
    except GcpError as e:
        reason = "public_access_prevention" if is_public_access_prevention(e) else ""
        module.fail_json(msg=str(e), status=e.status, json=e.body, reason=reason, **result)
    except ValueError as e:
        module.fail_json(msg=str(e), **result)


if __name__ == "__main__":
    main()
