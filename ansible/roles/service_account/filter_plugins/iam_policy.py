"""Pure read-modify-write helpers for IAM policies (project and bucket).

The google.cloud collection has no module for IAM bindings, so roles read the
policy, compute the new one with these filters, and write it back with the
etag they read only when it differs.
"""

import copy


def _bindings(policy):
    return policy.get("bindings") or []


def _as_list(value):
    return [value] if isinstance(value, str) else list(value)


def iam_add_members(policy, roles, members):
    """Return a copy of `policy` where each of `roles` also grants `members`."""
    new = copy.deepcopy(dict(policy or {}))
    bindings = list(_bindings(new))
    wanted = _as_list(members)
    for role in _as_list(roles):
        for binding in bindings:
            # Conditional bindings are left alone: ours are unconditional.
            if binding.get("role") == role and not binding.get("condition"):
                have = binding.setdefault("members", [])
                have.extend(m for m in wanted if m not in have)
                break
        else:
            bindings.append({"role": role, "members": list(wanted)})
    new["bindings"] = bindings
    return new


def iam_remove_members(policy, roles, members):
    """Return a copy of `policy` where none of `roles` grants `members`."""
    new = copy.deepcopy(dict(policy or {}))
    gone = _as_list(members)
    drop = _as_list(roles)
    bindings = []
    for binding in _bindings(new):
        if binding.get("role") in drop and not binding.get("condition"):
            binding["members"] = [m for m in binding.get("members", []) if m not in gone]
            if not binding["members"]:
                continue
        bindings.append(binding)
    new["bindings"] = bindings
    return new


class FilterModule:
    def filters(self):
        return {
            "iam_add_members": iam_add_members,
            "iam_remove_members": iam_remove_members,
        }
