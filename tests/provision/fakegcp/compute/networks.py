"""VPC networks, subnetworks, firewalls and Cloud Routers (NAT)."""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING, Any

from ..common import (
    WWW,
    Res,
    content_fingerprint,
)
from ..discovery import ApiError
from ..registry import Request, handles
from .generic import (
    after_insert,
    before_delete,
    defaults,
    refresh_fp,
    target_of,
)
from .operations import make_op
from .refs import (
    Key,
    check_ref,
    ref_key,
)

if TYPE_CHECKING:
    from ..state import FakeGcpState


@defaults("networks")
def _network(state: FakeGcpState, k: Key, res: Res, old: Res | None) -> None:
    if "autoCreateSubnetworks" not in res and "IPv4Range" not in res:
        res["autoCreateSubnetworks"] = True
    res["routingConfig"] = {
        "routingMode": "REGIONAL",
        "bgpBestPathSelectionMode": "LEGACY",
        **res.get("routingConfig", {}),
    }
    res.setdefault("networkFirewallPolicyEnforcementOrder", "AFTER_CLASSIC_FIREWALL")
    res.setdefault("mtu", 1460)
    if old and old.get("subnetworks"):
        res["subnetworks"] = old["subnetworks"]


@defaults("subnetworks")
def _subnetwork(state: FakeGcpState, k: Key, res: Res, old: Res | None) -> None:
    try:
        net = ipaddress.ip_network(res["ipCidrRange"])
    except ValueError:
        raise ApiError(
            400,
            f"Invalid value for field 'resource.ipCidrRange': '{res['ipCidrRange']}'. "
            "Invalid IPCidrRange.",
        ) from None
    if not isinstance(net, ipaddress.IPv4Network) or net.prefixlen > 29:
        raise ApiError(400, f"Invalid value for field 'resource.ipCidrRange': '{net}'.")
    for other_key, other in state.store.items():
        if (
            other_key != k.key
            and other.get("kind") == "compute#subnetwork"
            and other.get("network") == res["network"]
            and ipaddress.ip_network(other["ipCidrRange"]).overlaps(net)
        ):
            raise ApiError(
                400,
                f"Invalid IPCidrRange: {net} conflicts with existing subnetwork "
                f"'{other['name']}' in region '{Key(other_key).scope}'.",
            )
    res["gatewayAddress"] = str(net.network_address + 1)
    res.setdefault("privateIpGoogleAccess", False)
    res.setdefault("purpose", "PRIVATE")
    res.setdefault("stackType", "IPV4_ONLY")
    res["fingerprint"] = content_fingerprint(
        {k2: v for k2, v in res.items() if k2 not in ("fingerprint", "creationTimestamp", "id")}
    )


@defaults("firewalls")
def _firewall(state: FakeGcpState, k: Key, res: Res, old: Res | None) -> None:
    res.setdefault("network", f"{WWW}compute/v1/projects/{k.project}/global/networks/default")
    check_ref(state, res["network"], "resource.network")
    if not res.get("allowed") and not res.get("denied"):
        raise ApiError(400, "Required field 'allowed' not specified")
    res.setdefault("direction", "INGRESS")
    res.setdefault("priority", 1000)
    res.setdefault("disabled", False)
    res.setdefault("logConfig", {"enable": False})
    if res["direction"] == "INGRESS":
        if not (
            res.get("sourceRanges") or res.get("sourceTags") or res.get("sourceServiceAccounts")
        ):
            res["sourceRanges"] = ["0.0.0.0/0"]
    else:
        if res.get("sourceTags"):
            raise ApiError(400, "Invalid value for field 'resource.sourceTags': EGRESS rule.")
        if not res.get("destinationRanges"):
            res["destinationRanges"] = ["0.0.0.0/0"]
    for r in res.get("sourceRanges", []) + res.get("destinationRanges", []):
        try:
            ipaddress.ip_network(r)
        except ValueError:
            raise ApiError(
                400, f"Invalid value for field 'resource.sourceRanges': '{r}'. Invalid IPV4 CIDR."
            ) from None
    for rule in res.get("allowed", []) + res.get("denied", []):
        if "IPProtocol" not in rule:
            raise ApiError(400, "Required field 'resource.allowed[0].IPProtocol' not specified")
        for p in rule.get("ports", []):
            if not re.fullmatch(r"\d{1,5}(-\d{1,5})?", p):
                raise ApiError(400, f"Invalid value for field 'resource.allowed[0].ports': '{p}'.")


NAT_REQUIRED = ["name", "natIpAllocateOption", "sourceSubnetworkIpRangesToNat"]


@defaults("routers")
def _router(state: FakeGcpState, k: Key, res: Res, old: Res | None) -> None:
    names = set()
    for i, nat in enumerate(res.get("nats", [])):
        for f in NAT_REQUIRED:
            if f not in nat:
                raise ApiError(400, f"Required field 'resource.nats[{i}].{f}' not specified")
        if nat["name"] in names:
            raise ApiError(400, f"Duplicate NAT name '{nat['name']}'.")
        names.add(nat["name"])
        if nat["sourceSubnetworkIpRangesToNat"] == "LIST_OF_SUBNETWORKS":
            if not nat.get("subnetworks"):
                raise ApiError(
                    400, f"Required field 'resource.nats[{i}].subnetworks' not specified"
                )
            for s in nat["subnetworks"]:
                check_ref(state, s["name"], f"resource.nats[{i}].subnetworks.name")
        if nat["natIpAllocateOption"] == "MANUAL_ONLY" and not nat.get("natIps"):
            raise ApiError(400, f"Required field 'resource.nats[{i}].natIps' not specified")
        nat.setdefault("enableEndpointIndependentMapping", False)
        nat.setdefault("endpointTypes", ["ENDPOINT_TYPE_VM"])
        if nat["natIpAllocateOption"] == "AUTO_ONLY":
            nat.setdefault("autoNetworkTier", "PREMIUM")


@after_insert("subnetworks")
def _after_subnet(state: FakeGcpState, key: str, res: Res) -> None:
    net = state.store.get(ref_key(res["network"]))
    if net is not None:
        subs = net.setdefault("subnetworks", [])
        if res["selfLink"] not in subs:
            subs.append(res["selfLink"])


@before_delete("subnetworks")
def _before_delete_subnet(state: FakeGcpState, key: str, res: Res) -> None:
    net = state.store.get(ref_key(res["network"]))
    if net is not None and res["selfLink"] in net.get("subnetworks", []):
        net["subnetworks"].remove(res["selfLink"])
        if not net["subnetworks"]:
            net.pop("subnetworks")


@handles("compute.subnetworks.expandIpCidrRange")
def expand_range(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key, res = target_of(state, req)
    try:
        new = ipaddress.ip_network(req.body.get("ipCidrRange", ""))
    except ValueError:
        raise ApiError(400, "Invalid value for field 'ipCidrRange'.") from None
    old = ipaddress.ip_network(res["ipCidrRange"])
    if not (new.prefixlen < old.prefixlen and old.subnet_of(new)):  # type: ignore[arg-type]
        raise ApiError(
            400,
            f"Invalid value for field 'ipCidrRange': '{new}'. "
            "The new range must contain the old one.",
        )
    res["ipCidrRange"] = str(new)
    refresh_fp(res)
    return make_op(state, "expandIpCidrRange", key, res)
