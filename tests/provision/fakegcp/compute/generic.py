"""Generic Compute CRUD (insert, get, list, aggregatedList, patch, update,
delete) for every collection without its own handler, the per-collection hook
tables the API modules fill (defaults, after insert, before delete), and the
verbs shared by several collections (setLabels, set-one-field verbs)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..common import (
    WWW,
    Res,
    content_fingerprint,
    label_fingerprint,
    merge_patch,
    now,
    strings_in,
)
from ..discovery import ApiError, load_doc, not_found, request_schema_name, schema_kind
from ..registry import Request, generic, handles, register
from .filters import apply_filter
from .operations import make_op
from .refs import (
    BACKREF_FIELDS,
    LIST_KINDS,
    NAME_RE,
    REGIONS,
    ZONES,
    Key,
    all_refs,
    check_ref,
    normalise_refs,
    ref_key,
    request_key,
    self_link,
)

if TYPE_CHECKING:
    from ..state import FakeGcpState


# ---------------------------------------------------------------------------- defaults
DefaultsFn = Callable[["FakeGcpState", Key, Res, Res | None], None]
DEFAULTS: dict[str, DefaultsFn] = {}
REQUIRED: dict[str, list[str]] = {
    "subnetworks": ["network", "ipCidrRange"],
    "instances": ["machineType", "disks", "networkInterfaces"],
    "healthChecks": ["type"],
    "targetHttpProxies": ["urlMap"],
    "targetHttpsProxies": ["urlMap", "sslCertificates"],
    "forwardingRules": ["target"],
    "routers": ["network"],
}


def defaults(*colls: str) -> Callable[[DefaultsFn], DefaultsFn]:
    return register(DEFAULTS, *colls)


Hook = Callable[["FakeGcpState", str, Res], None]
# collection -> what an insert does next to the new resource (e.g. list a subnet on its network)
AFTER_INSERT: dict[str, Hook] = {}
# collection -> what a delete undoes on other resources (e.g. free a disk's users)
BEFORE_DELETE: dict[str, Hook] = {}


def after_insert(coll: str) -> Callable[[Hook], Hook]:
    return register(AFTER_INSERT, coll)


def before_delete(coll: str) -> Callable[[Hook], Hook]:
    return register(BEFORE_DELETE, coll)


def fp_view(res: Res) -> Res:
    return {
        k: v
        for k, v in res.items()
        if k not in ("fingerprint", "id", "creationTimestamp", "selfLink", "status")
    }


def core_fields(state: FakeGcpState, key: str, kind: str | None) -> Res:
    k = Key(key)
    core: Res = {
        "id": state.new_id(),
        "creationTimestamp": now(),
        "selfLink": self_link(key),
    }
    if kind:
        core["kind"] = kind
    if k.scope_kind == "zone":
        core["zone"] = self_link(k.scope_path)
    elif k.scope_kind == "region":
        core["region"] = self_link(k.scope_path)
    return core


def _kind_for(req: Request) -> str | None:
    name = request_schema_name(req.method)
    return schema_kind(req.method.doc, name) if name else None


def _check_scope(k: Key) -> None:
    if k.scope_kind == "zone" and k.scope not in ZONES:
        raise ApiError(400, f"Invalid value for field 'zone': '{k.scope}'. Unknown zone.")
    if k.scope_kind == "region" and k.scope not in REGIONS:
        raise ApiError(400, f"Invalid value for field 'region': '{k.scope}'. Unknown region.")


def _check_required(coll: str, res: Res) -> None:
    for f in REQUIRED.get(coll, []):
        if f not in res or res[f] in (None, "", []):
            raise ApiError(400, f"Required field 'resource.{f}' not specified", reason="required")


def _check_refs_exist(state: FakeGcpState, res: Res) -> None:
    for url in all_refs(res):
        check_ref(state, url, "resource")


def _check_and_default(state: FakeGcpState, k: Key, res: Res, old: Res | None) -> None:
    """What an insert or a write checks last: the references exist, then the
    collection's own checks and defaults (DEFAULTS)."""
    _check_refs_exist(
        state, {f: v for f, v in res.items() if f not in ("selfLink", "zone", "region")}
    )
    fn = DEFAULTS.get(k.coll)
    if fn:
        fn(state, k, res, old)


# ---------------------------------------------------------------------------- generic verbs
@generic("compute", "insert")
def g_insert(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    state.check_project(req.vars.get("project", ""))
    coll_key = request_key(req.path)
    body = normalise_refs(copy.deepcopy(req.body), req.vars["project"])
    name = body.get("name")
    if not name:
        raise ApiError(400, "Required field 'resource.name' not specified", reason="required")
    if not NAME_RE.match(name):
        raise ApiError(
            400,
            f"Invalid value for field 'resource.name': '{name}'. Must be a match of regex "
            "'(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'",
        )
    key = f"{coll_key}/{name}"
    k = Key(key)
    _check_scope(k)
    if key in state.store:
        raise ApiError(409, f"The resource '{k.short()}' already exists", reason="alreadyExists")
    _check_required(k.coll, body)
    for f in ("id", "selfLink", "creationTimestamp"):
        body.pop(f, None)
    core = core_fields(state, key, _kind_for(req))
    res = {**core, **body}
    for f in ("zone", "region"):  # GCP answers these as URLs whatever the request said
        if f in core:
            res[f] = core[f]
    _check_and_default(state, k, res, None)
    if "labels" in res or k.coll in LABELLED:
        res["labelFingerprint"] = label_fingerprint(res.get("labels"))
    state.store[key] = res
    AFTER_INSERT.get(k.coll, lambda *_: None)(state, key, res)
    return make_op(state, "insert", key, res)


LABELLED = {"instances", "disks", "addresses", "forwardingRules", "images", "vpnTunnels"}


@generic("compute", "get")
def g_get(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    state.check_project(req.vars.get("project", ""))
    key = request_key(req.path)
    k = Key(key)
    _check_scope(k)
    res = state.store.get(key)
    if res is None:
        raise not_found(k.short())
    return 200, copy.deepcopy(res)


@generic("compute", "list")
def g_list(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    state.check_project(req.vars.get("project", ""))
    coll_key = request_key(req.path)
    _check_scope(Key(coll_key + "/x"))
    items = [
        copy.deepcopy(r)
        for key, r in sorted(state.store.items())
        if key.rsplit("/", 1)[0] == coll_key
    ]
    items = apply_filter(items, req.query.get("filter", ""))
    out: Res = {
        "kind": LIST_KINDS.get(req.method.collection, f"compute#{req.method.collection}List"),
        "id": coll_key.removeprefix("compute/v1/"),
        "selfLink": self_link(coll_key),
    }
    if items:
        out["items"] = items
    return 200, out


@generic("compute", "aggregatedList")
def g_aggregated(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    state.check_project(req.vars["project"])
    coll = req.path.rsplit("/", 1)[-1]
    base = f"compute/v1/projects/{req.vars['project']}/"
    groups: dict[str, list[Res]] = {}
    for key, r in sorted(state.store.items()):
        if not key.startswith(base):
            continue
        k = Key(key)
        if k.coll == coll and k.name and key.count("/") == len(k.scope_path.split("/")) + 1:
            scope = "global" if k.scope_kind == "global" else f"{k.scope_kind}s/{k.scope}"
            groups.setdefault(scope, []).append(copy.deepcopy(r))
    items = {}
    for scope, rs in groups.items():
        rs = apply_filter(rs, req.query.get("filter", ""))
        if rs:
            items[scope] = {coll: rs}
    out: Res = {
        "kind": f"compute#{coll[:-1] if coll.endswith('s') else coll}AggregatedList",
        "id": f"projects/{req.vars['project']}/aggregated/{coll}",
        "items": items,
        "selfLink": self_link(base + f"aggregated/{coll}"),
    }
    return 200, out


@generic("compute", "delete")
def g_delete(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key, res = target_of(state, req, req.path)
    k = Key(key)
    check_not_in_use(state, key)
    if res.get("deletionProtection"):
        raise ApiError(
            400,
            f"Invalid resource usage: 'Resource cannot be deleted if it's protected against "
            f"deletion.'. Resource: '{k.short()}'",
            reason="resourceIsProtected",
        )
    del state.store[key]
    BEFORE_DELETE.get(k.coll, lambda *_: None)(state, key, res)
    return make_op(state, "delete", key, res)


def check_not_in_use(state: FakeGcpState, key: str) -> None:
    link = self_link(key)
    res = state.store[key]
    k = Key(key)
    users = [u for u in res.get("users", []) if ref_key(u) in state.store]
    if k.coll == "disks":
        users = [u for u in users if ref_key(u) in state.store]
    for gkey, members in state.members.items():
        if link in members:
            users.append(self_link(gkey))
    for other_key, other in state.store.items():
        if other_key == key or not other_key.startswith("compute/"):
            continue
        if link in strings_in(other, BACKREF_FIELDS):
            users.append(self_link(other_key))
    if users:
        kind = res.get("kind", "compute#resource").split("#")[-1]
        raise ApiError(
            400,
            f"The {kind} resource '{k.short()}' is already being used by "
            f"'{Key(ref_key(users[0])).short()}'",
            reason="resourceInUseByAnotherResource",
        )


def _fingerprint_required(req: Request) -> bool:
    name = request_schema_name(req.method)
    if not name:
        return False
    fp = load_doc(req.method.doc)["schemas"][name].get("properties", {}).get("fingerprint")
    return bool(fp) and "must be provided" in fp.get("description", "")


def check_fingerprint(given: str | None, current: str | None, what: str = "") -> None:
    if given != current:
        raise ApiError(
            412,
            f"Supplied fingerprint does not match current {what}fingerprint.".replace("  ", " "),
            reason="conditionNotMet",
        )


OUTPUT_ONLY = ("id", "creationTimestamp", "selfLink", "kind", "zone", "region", "name")


def _write(state: FakeGcpState, req: Request, replace: bool) -> tuple[int, Any]:
    key, old = target_of(state, req, req.path)
    k = Key(key)
    body = normalise_refs(copy.deepcopy(req.body), k.project)
    if _fingerprint_required(req):
        check_fingerprint(body.get("fingerprint"), old.get("fingerprint"))
    if "name" in body and body["name"] != old["name"]:
        raise ApiError(400, f"Invalid value for field 'resource.name': '{body['name']}'.")
    if replace:
        new = {**{f: old[f] for f in OUTPUT_ONLY if f in old}, **body}
        _check_required(k.coll, new)
    else:
        new = merge_patch(copy.deepcopy(old), body)
        if k.coll == "routers" and "nats" in body:
            new["nats"] = body["nats"]
    for f in OUTPUT_ONLY:
        if f in old:
            new[f] = old[f]
    _check_and_default(state, k, new, old)
    state.store[key] = new
    return make_op(state, "patch" if not replace else "update", key, new)


@generic("compute", "patch")
def g_patch(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    return _write(state, req, replace=False)


@generic("compute", "update")
def g_update(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    return _write(state, req, replace=True)


# ---------------------------------------------------------------------------- verbs
def target_of(state: FakeGcpState, req: Request, path: str | None = None) -> tuple[str, Res]:
    """The stored resource a request acts on (the resource in `path`, by default the
    one a custom verb names) and its key; 404 if there is none."""
    state.check_project(req.vars.get("project", ""))
    key = request_key(req.prefix if path is None else path)
    res = state.store.get(key)
    if res is None:
        raise not_found(Key(key).short())
    return key, res


def refresh_fp(res: Res) -> None:
    if "fingerprint" in res:
        res["fingerprint"] = content_fingerprint(fp_view(res))


@handles(
    "compute.instances.setLabels",
    "compute.disks.setLabels",
    "compute.globalAddresses.setLabels",
    "compute.addresses.setLabels",
    "compute.globalForwardingRules.setLabels",
    "compute.forwardingRules.setLabels",
)
def set_labels(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key, res = target_of(state, req)
    check_fingerprint(req.body.get("labelFingerprint"), res.get("labelFingerprint"), "label ")
    labels = req.body.get("labels") or {}
    if labels:
        res["labels"] = labels
    else:
        res.pop("labels", None)
    res["labelFingerprint"] = label_fingerprint(labels)
    refresh_fp(res)
    return make_op(state, "setLabels", key, res)


def _set_field(field: str) -> Callable[[FakeGcpState, Request], tuple[int, Any]]:
    """A set<Field> verb: the body's `field` replaces the resource's (none: removed)."""

    def handler(state: FakeGcpState, req: Request) -> tuple[int, Any]:
        key, res = target_of(state, req)
        value = normalise_refs(req.body.get(field), Key(key).project)
        for url in value if isinstance(value, list) else [value]:
            if isinstance(url, str) and url.startswith(WWW):
                check_ref(state, url, field)
        if value in (None, []):
            res.pop(field, None)
        else:
            res[field] = value
        refresh_fp(res)
        return make_op(state, req.method.name, key, res)

    return handler


# method id -> the field its set<Field> verb replaces (operationType: the verb's name)
HANDLER_FIELDS = {
    "compute.targetHttpProxies.setUrlMap": "urlMap",
    "compute.targetHttpsProxies.setUrlMap": "urlMap",
    "compute.targetHttpsProxies.setSslCertificates": "sslCertificates",
    "compute.targetHttpsProxies.setQuicOverride": "quicOverride",
    "compute.targetHttpsProxies.setSslPolicy": "sslPolicy",
    "compute.globalForwardingRules.setTarget": "target",
    "compute.forwardingRules.setTarget": "target",
    "compute.subnetworks.setPrivateIpGoogleAccess": "privateIpGoogleAccess",
}
for _mid, _field in HANDLER_FIELDS.items():
    handles(_mid)(_set_field(_field))
