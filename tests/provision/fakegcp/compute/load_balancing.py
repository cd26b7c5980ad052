"""The external HTTP(S) load balancer: instance groups, health checks, backend
services, URL maps, target proxies, addresses and forwarding rules."""

from __future__ import annotations

import ipaddress
import re
import time
from typing import TYPE_CHECKING, Any

from ..common import (
    WWW,
    Res,
    content_fingerprint,
    label_fingerprint,
)
from ..discovery import ApiError
from ..registry import Request, handles
from .generic import (
    before_delete,
    check_fingerprint,
    defaults,
    fp_view,
    target_of,
)
from .operations import make_op
from .refs import (
    Key,
    check_ref,
    normalise_ref,
    ref_key,
    self_link,
)

if TYPE_CHECKING:
    from ..state import FakeGcpState


@defaults("instanceGroups")
def _instance_group(state: FakeGcpState, k: Key, res: Res, old: Res | None) -> None:
    res["size"] = len(state.members.get(k.key, []))
    res["fingerprint"] = content_fingerprint({"namedPorts": res.get("namedPorts", [])})


@defaults("healthChecks")
def _health_check(state: FakeGcpState, k: Key, res: Res, old: Res | None) -> None:
    res.setdefault("checkIntervalSec", 5)
    res.setdefault("timeoutSec", 5)
    res.setdefault("unhealthyThreshold", 2)
    res.setdefault("healthyThreshold", 2)
    if res["timeoutSec"] > res["checkIntervalSec"]:
        raise ApiError(
            400,
            "Invalid value for field 'resource.timeoutSec': "
            f"'{res['timeoutSec']}'. TimeoutSec should be less than checkIntervalSec.",
        )
    typ = res["type"]
    sub = {
        "HTTP": "httpHealthCheck",
        "HTTPS": "httpsHealthCheck",
        "HTTP2": "http2HealthCheck",
        "TCP": "tcpHealthCheck",
        "SSL": "sslHealthCheck",
        "GRPC": "grpcHealthCheck",
    }.get(typ)
    if sub:
        hc = res.setdefault(sub, {})
        if not (hc.get("port") or hc.get("portName") or hc.get("portSpecification")):
            hc["port"] = {"HTTPS": 443, "SSL": 443, "HTTP2": 443}.get(typ, 80)
        if typ in ("HTTP", "HTTPS", "HTTP2"):
            hc.setdefault("requestPath", "/")
        if typ != "GRPC":
            hc.setdefault("proxyHeader", "NONE")
        for other in {
            "httpHealthCheck",
            "httpsHealthCheck",
            "http2HealthCheck",
            "tcpHealthCheck",
            "sslHealthCheck",
            "grpcHealthCheck",
        } - {sub}:
            if other in res:
                raise ApiError(
                    400, f"Invalid value for field 'resource.{other}': health check type is {typ}."
                )


@defaults("httpHealthChecks", "httpsHealthChecks")
def _legacy_health_check(state: FakeGcpState, k: Key, res: Res, old: Res | None) -> None:
    res.setdefault("port", 443 if k.coll == "httpsHealthChecks" else 80)
    res.setdefault("requestPath", "/")
    res.setdefault("checkIntervalSec", 5)
    res.setdefault("timeoutSec", 5)
    res.setdefault("unhealthyThreshold", 2)
    res.setdefault("healthyThreshold", 2)


@defaults("backendServices")
def _backend_service(state: FakeGcpState, k: Key, res: Res, old: Res | None) -> None:
    res.setdefault("protocol", "HTTP")
    res.setdefault("loadBalancingScheme", "EXTERNAL")
    res.setdefault("port", 80)
    res.setdefault("portName", "http")
    res.setdefault("timeoutSec", 30)
    res.setdefault("sessionAffinity", "NONE")
    res.setdefault("affinityCookieTtlSec", 0)
    res.setdefault("connectionDraining", {"drainingTimeoutSec": 300})
    for i, b in enumerate(res.get("backends", [])):
        if "group" not in b:
            raise ApiError(400, f"Required field 'resource.backends[{i}].group' not specified")
        check_ref(state, b["group"], f"resource.backends[{i}].group")
        b.setdefault("balancingMode", "UTILIZATION")
        b.setdefault("capacityScaler", 1)
    for i, hc in enumerate(res.get("healthChecks", [])):
        check_ref(state, hc, f"resource.healthChecks[{i}]")
    if res.get("backends") and not res.get("healthChecks"):
        raise ApiError(
            400,
            "Invalid value for field 'resource.healthChecks': ''. "
            "A backend service with instance group backends must have a health check.",
        )
    res["fingerprint"] = content_fingerprint(fp_view(res))


@defaults("urlMaps")
def _url_map(state: FakeGcpState, k: Key, res: Res, old: Res | None) -> None:
    if "defaultService" not in res and "defaultUrlRedirect" not in res:
        raise ApiError(400, "Required field 'resource.defaultService' not specified")
    if "defaultService" in res:
        check_ref(state, res["defaultService"], "resource.defaultService")
    res["fingerprint"] = content_fingerprint(fp_view(res))


@defaults("targetHttpProxies", "targetHttpsProxies")
def _target_proxy(state: FakeGcpState, k: Key, res: Res, old: Res | None) -> None:
    check_ref(state, res["urlMap"], "resource.urlMap")
    for i, c in enumerate(res.get("sslCertificates", [])):
        check_ref(state, c, f"resource.sslCertificates[{i}]")
    if k.coll == "targetHttpsProxies":
        if not res.get("sslCertificates") and not res.get("certificateMap"):
            raise ApiError(400, "Required field 'resource.sslCertificates' not specified")
        url_map = state.store.get(ref_key(res["urlMap"]), {})
        if url_map.get("defaultUrlRedirect", {}).get("httpsRedirect"):
            raise ApiError(
                400,
                f"Invalid value for field 'resource.urlMap': '{res['urlMap']}'. "
                "httpsRedirect is not permitted in a URL map used by a target HTTPS proxy.",
            )
        res.setdefault("quicOverride", "NONE")
    res["fingerprint"] = content_fingerprint(fp_view(res))


@defaults("addresses")
def _address(state: FakeGcpState, k: Key, res: Res, old: Res | None) -> None:
    if "address" in res:
        try:
            ipaddress.IPv4Address(res["address"])
        except ValueError:
            raise ApiError(
                400, f"Invalid value for field 'resource.address': '{res['address']}'."
            ) from None
    else:
        n = next(state._next_ip)
        first = "34.120" if k.scope_kind == "global" else "35.208"
        res["address"] = f"{first}.{n // 250}.{n % 250 + 1}"
    res.setdefault("addressType", "EXTERNAL")
    res.setdefault("status", "RESERVED")
    if res["addressType"] == "EXTERNAL":
        res.setdefault("networkTier", "PREMIUM")
    res["labelFingerprint"] = label_fingerprint(res.get("labels"))


@defaults("forwardingRules")
def _forwarding_rule(state: FakeGcpState, k: Key, res: Res, old: Res | None) -> None:
    check_ref(state, res["target"], "resource.target")
    res.setdefault("IPProtocol", "TCP")
    res.setdefault("loadBalancingScheme", "EXTERNAL")
    res.setdefault("networkTier", "PREMIUM")
    pr = str(res.get("portRange", ""))
    if pr:
        m = re.fullmatch(r"(\d{1,5})(?:-(\d{1,5}))?", pr)
        if not m:
            raise ApiError(400, f"Invalid value for field 'resource.portRange': '{pr}'.")
        res["portRange"] = f"{m.group(1)}-{m.group(2) or m.group(1)}"
    elif "targetHttp" in res["target"]:
        res["portRange"] = "80-80" if "targetHttpProxies" in res["target"] else "443-443"
    ip = res.get("IPAddress")
    addr_key = None
    if ip and ip.startswith(WWW):
        addr_key = ref_key(ip)
        check_ref(state, ip, "resource.IPAddress")
        res["IPAddress"] = state.store[addr_key]["address"]
    elif ip:
        for ak, a in state.store.items():
            if a.get("kind") == "compute#address" and a.get("address") == ip:
                addr_key = ak
                break
        else:
            raise ApiError(
                400,
                f"Invalid value for field 'resource.IPAddress': '{ip}'. "
                "Specified IP address is not reserved in this project.",
            )
    else:
        n = next(state._next_ip)
        res["IPAddress"] = f"34.149.{n // 250}.{n % 250 + 1}"
    if addr_key:
        addr = state.store[addr_key]
        users = addr.setdefault("users", [])
        # Several forwarding rules may share one address (80 and 443 of one load
        # balancer), as long as their protocol and port ranges do not overlap.
        for user in users:
            other = state.store.get(ref_key(user))
            if user == self_link(k.key) or other is None:
                continue
            if other.get("IPProtocol") == res["IPProtocol"] and _ports_overlap(
                other.get("portRange", ""), res.get("portRange", "")
            ):
                raise ApiError(
                    400,
                    f"The resource '{Key(addr_key).short()}' is already being used by "
                    f"'{Key(ref_key(user)).short()}'",
                    reason="resourceInUseByAnotherResource",
                )
        if self_link(k.key) not in users:
            users.append(self_link(k.key))
        addr["status"] = "IN_USE"
    res["labelFingerprint"] = label_fingerprint(res.get("labels"))
    res["fingerprint"] = content_fingerprint(fp_view(res))


def _ports_overlap(a: str, b: str) -> bool:
    """Whether two portRange values ("80-80", "8000-8100"; empty = all ports) overlap."""
    if not a or not b:
        return True
    (a_lo, a_hi), (b_lo, b_hi) = (map(int, r.split("-")) for r in (a, b))
    return a_lo <= b_hi and b_lo <= a_hi


@before_delete("forwardingRules")
def _before_delete_fr(state: FakeGcpState, key: str, res: Res) -> None:
    for a in state.store.values():
        if a.get("kind") == "compute#address" and res["selfLink"] in a.get("users", []):
            a["users"].remove(res["selfLink"])
            if not a["users"]:
                a.pop("users")
                a["status"] = "RESERVED"


@before_delete("instanceGroups")
def _before_delete_group(state: FakeGcpState, key: str, res: Res) -> None:
    state.members.pop(key, None)


def _group_members(state: FakeGcpState, req: Request) -> tuple[str, Res, list[str]]:
    """The instance group a request names and its member instances' selfLinks."""
    key, res = target_of(state, req)
    return key, res, state.members.setdefault(key, [])


def _members_changed(state: FakeGcpState, op: str, key: str, res: Res) -> tuple[int, Any]:
    res["size"] = len(state.members[key])
    return make_op(state, op, key, res)


@handles("compute.instanceGroups.addInstances")
def group_add(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key, res, members = _group_members(state, req)
    for i, ref in enumerate(req.body.get("instances") or []):
        url = normalise_ref(ref.get("instance", ""), Key(key).project)
        if not url:
            raise ApiError(
                400, f"Invalid value for field 'instances[{i}].instance': '{ref.get('instance')}'."
            )
        check_ref(state, url, f"instances[{i}].instance")
        ik = Key(ref_key(url))
        if ik.coll != "instances" or ik.scope != Key(key).scope:
            raise ApiError(
                400, f"Invalid value for field 'instances[{i}].instance': wrong zone or type."
            )
        if url in members:
            raise ApiError(
                400,
                f"The resource '{ik.short()}' is already a member of '{Key(key).short()}'",
                reason="memberAlreadyExists",
            )
        for gkey, gm in state.members.items():
            if url in gm and gkey != key:
                lb = [
                    b
                    for b in state.store.values()
                    if b.get("kind") == "compute#backendService"
                    and any(x.get("group") == self_link(gkey) for x in b.get("backends", []))
                ]
                if lb:
                    raise ApiError(400, "Instance is already in a load-balanced instance group.")
        inst = state.store[ref_key(url)]
        nic_net = inst["networkInterfaces"][0]["network"]
        if res.get("network") and res["network"] != nic_net:
            raise ApiError(
                400,
                f"Resource '{ik.short()}' is expected to be in the network "
                f"'{Key(ref_key(res['network'])).short()}' but is in the network "
                f"'{Key(ref_key(nic_net)).short()}'.",
            )
        res.setdefault("network", nic_net)
        if inst["networkInterfaces"][0].get("subnetwork"):
            res.setdefault("subnetwork", inst["networkInterfaces"][0]["subnetwork"])
        members.append(url)
    return _members_changed(state, "addInstances", key, res)


@handles("compute.instanceGroups.removeInstances")
def group_remove(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key, res, members = _group_members(state, req)
    for ref in req.body.get("instances") or []:
        url = normalise_ref(ref.get("instance", ""), Key(key).project)
        if url in members:
            members.remove(url)
    return _members_changed(state, "removeInstances", key, res)


@handles("compute.instanceGroups.listInstances")
def group_list_instances(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key, res = target_of(state, req)
    want_running = req.body.get("instanceState") == "RUNNING"
    items = []
    for url in state.members.get(key, []):
        inst = state.store.get(ref_key(url))
        status = inst["status"] if inst else "TERMINATED"
        if want_running and status != "RUNNING":
            continue
        item: Res = {"instance": url, "status": status}
        if res.get("namedPorts"):
            item["namedPorts"] = res["namedPorts"]
        items.append(item)
    out: Res = {
        "kind": "compute#instanceGroupsListInstances",
        "id": Key(key).short() + "/listInstances",
        "selfLink": self_link(key) + "/listInstances",
    }
    if items:
        out["items"] = items
    return 200, out


@handles("compute.instanceGroups.setNamedPorts")
def group_named_ports(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key, res = target_of(state, req)
    check_fingerprint(req.body.get("fingerprint"), res.get("fingerprint"))
    ports = req.body.get("namedPorts") or []
    if ports:
        res["namedPorts"] = ports
    else:
        res.pop("namedPorts", None)
    res["fingerprint"] = content_fingerprint({"namedPorts": ports, "t": time.time()})
    return make_op(state, "setNamedPorts", key, res)
