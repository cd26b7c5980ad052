"""Compute Engine v1 behaviour: generic CRUD plus per-collection defaults and verbs."""

from __future__ import annotations

import copy
import ipaddress
import itertools
import re
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .discovery import ApiError, load_doc, schema_kind
from .state import (
    BACKREF_FIELDS,
    BUILTIN_COLLECTIONS,
    COMPUTE_REF_RE,
    DISK_TYPES,
    EMPTY_LABEL_FINGERPRINT,
    IMAGE_FAMILIES,
    MACHINE_TYPES,
    NAME_RE,
    NO_NORMALISE_FIELDS,
    PUBLIC_IMAGE_PROJECTS,
    REGIONS,
    WWW,
    ZONES,
    Request,
    _strings,
    content_fingerprint,
    handles,
    key_of,
    label_fingerprint,
    merge_patch,
    now,
)

if TYPE_CHECKING:
    from .state import FakeGcpState

Res = dict[str, Any]


# ---------------------------------------------------------------------------- keys & refs
class Key:
    """compute/v1/projects/P/{global|regions/R|zones/Z}/COLL/NAME[/...]"""

    def __init__(self, key: str):
        parts = key.split("/")
        self.key = key
        self.project = parts[3]
        if len(parts) > 4 and parts[4] == "global":
            self.scope_kind, self.scope, rest = "global", "", parts[5:]
        elif len(parts) > 5 and parts[4] in ("regions", "zones"):
            self.scope_kind, self.scope, rest = parts[4][:-1], parts[5], parts[6:]
        else:
            self.scope_kind, self.scope, rest = "project", "", parts[4:]
        self.coll = rest[0] if rest else ""
        self.name = rest[1] if len(rest) > 1 else ""

    @property
    def scope_path(self) -> str:
        base = f"compute/v1/projects/{self.project}"
        if self.scope_kind == "global":
            return base + "/global"
        if self.scope_kind in ("region", "zone"):
            return f"{base}/{self.scope_kind}s/{self.scope}"
        return base

    def short(self) -> str:
        return self.key.removeprefix("compute/v1/")


def request_key(path: str) -> str:
    """Canonical key for a compute path; a few verbs omit 'global/' in their URL."""
    key = key_of("compute", path)
    parts = key.split("/")
    if len(parts) > 4 and parts[4] in GLOBAL_VERB_COLLECTIONS:
        parts.insert(4, "global")
    return "/".join(parts)


LIST_KINDS = {
    "globalAddresses": "compute#addressList",
    "globalForwardingRules": "compute#forwardingRuleList",
    "networks": "compute#networkList",
    "subnetworks": "compute#subnetworkList",
    "firewalls": "compute#firewallList",
    "routers": "compute#routerList",
    "instances": "compute#instanceList",
    "disks": "compute#diskList",
    "instanceGroups": "compute#instanceGroupList",
    "healthChecks": "compute#healthCheckList",
    "backendServices": "compute#backendServiceList",
    "urlMaps": "compute#urlMapList",
    "targetHttpProxies": "compute#targetHttpProxyList",
    "targetHttpsProxies": "compute#targetHttpsProxyList",
    "sslCertificates": "compute#sslCertificateList",
}
GLOBAL_VERB_COLLECTIONS = {"targetHttpProxies", "targetHttpsProxies", "urlMaps", "backendServices"}


def self_link(key: str) -> str:
    return WWW + key


def normalise_ref(value: str, project: str) -> str | None:
    if value.startswith("https://") and "/compute/" not in value:
        return None
    m = COMPUTE_REF_RE.match(value)
    if not m:
        return None
    return f"{WWW}compute/v1/projects/{m.group('project') or project}/{m.group('rest')}"


def normalise_refs(value: Any, project: str, field: str = "") -> Any:
    if isinstance(value, dict):
        return {
            k: (v if k in NO_NORMALISE_FIELDS else normalise_refs(v, project, k))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [normalise_refs(v, project, field) for v in value]
    if isinstance(value, str) and "/" in value and " " not in value:
        return normalise_ref(value, project) or value
    return value


def ref_key(url: str) -> str:
    return url.removeprefix(WWW)


def check_ref(state: FakeGcpState, url: str, field: str) -> None:
    """A reference must name something that exists (GCP answers 404 / 400 otherwise)."""
    k = Key(ref_key(url))
    if k.scope_kind == "zone" and k.scope not in ZONES:
        raise ApiError(400, f"Invalid value for field '{field}': '{url}'. Unknown zone.")
    if k.scope_kind == "region" and k.scope not in REGIONS:
        raise ApiError(400, f"Invalid value for field '{field}': '{url}'. Unknown region.")
    if k.coll == "machineTypes":
        if k.name not in MACHINE_TYPES:
            raise ApiError(
                400,
                f"Invalid value for field '{field}': '{url}'. Machine type with name "
                f"'{k.name}' does not exist in zone '{k.scope}'.",
            )
        return
    if k.coll == "diskTypes":
        if k.name not in DISK_TYPES:
            raise ApiError(400, f"Invalid value for field '{field}': '{url}'. Unknown disk type.")
        return
    if k.coll == "images":
        resolve_image(url)
        return
    if not k.coll or k.coll in BUILTIN_COLLECTIONS:
        return
    if ref_key(url) not in state.store:
        raise ApiError(404, f"The resource '{k.short()}' was not found", reason="notFound")


def resolve_image(url: str) -> Res:
    m = re.match(r"(?:.*/)?projects/([^/]+)/global/images/(family/)?([^/]+)$", url)
    if not m:
        raise ApiError(400, f"Invalid value for field 'sourceImage': '{url}'.")
    project, family, name = m.groups()
    for (p, fam), img in IMAGE_FAMILIES.items():
        if p == project and ((family and fam == name) or (not family and img == name)):
            return image_resource(p, fam, img)
    raise ApiError(
        404,
        f"The resource 'projects/{project}/global/images/{'family/' if family else ''}{name}' "
        "was not found",
        reason="notFound",
    )


def image_resource(project: str, family: str, name: str) -> Res:
    return {
        "kind": "compute#image",
        "id": str(abs(hash(name)) % 10**19),
        "creationTimestamp": "2025-06-10T10:00:00.000-07:00",
        "name": name,
        "description": f"{family} image built {name[-8:]}",
        "sourceType": "RAW",
        "status": "READY",
        "archiveSizeBytes": "1234567890",
        "diskSizeGb": "10",
        "licenses": [f"{WWW}compute/v1/projects/{project}/global/licenses/{family}"],
        "family": family,
        "selfLink": f"{WWW}compute/v1/projects/{project}/global/images/{name}",
        "labelFingerprint": EMPTY_LABEL_FINGERPRINT,
        "guestOsFeatures": [
            {"type": t}
            for t in ("UEFI_COMPATIBLE", "VIRTIO_SCSI_MULTIQUEUE", "GVNIC", "SEV_CAPABLE")
        ],
        "storageLocations": ["us", "eu", "asia"],
        "architecture": "X86_64",
    }


def all_refs(res: Res) -> list[str]:
    return [s for s in _strings(res, BACKREF_FIELDS) if s.startswith(WWW + "compute/")]


# ---------------------------------------------------------------------------- operations
def make_op(
    state: FakeGcpState,
    op_type: str,
    key: str,
    res: Res | None,
    scope_key: str | None = None,
    error: Res | None = None,
) -> tuple[int, Res]:
    """A Compute operation. Like GCP's, it answers PENDING/RUNNING on the reply
    and on the first `state.op_polls` polls, then DONE; a DONE operation may carry
    `error` (https://cloud.google.com/compute/docs/api/how-tos/api-requests-responses#handling_api_responses:
    "the operation is DONE ... check the error field")."""
    k = Key(scope_key or key)
    name = f"operation-{int(time.time() * 1000)}-{uuid.uuid4().hex[:13]}"
    if k.scope_kind in ("zone", "region"):
        op_key = f"{k.scope_path}/operations/{name}"
    else:
        op_key = f"compute/v1/projects/{k.project}/global/operations/{name}"
    t = now()
    op: Res = {
        "kind": "compute#operation",
        "id": state.new_id(),
        "name": name,
        "operationType": op_type,
        "targetLink": self_link(key),
        "targetId": (res or {}).get("id", state.new_id()),
        "status": "DONE",
        "user": f"deployer@{k.project}.iam.gserviceaccount.com",
        "progress": 100,
        "insertTime": t,
        "startTime": t,
        "endTime": t,
        "selfLink": self_link(op_key),
    }
    if k.scope_kind == "zone":
        op["zone"] = self_link(k.scope_path)
    elif k.scope_kind == "region":
        op["region"] = self_link(k.scope_path)
    if error is not None:
        op["error"] = error
        op["httpErrorStatusCode"] = 403
        op["httpErrorMessage"] = "FORBIDDEN"
    state.operations[op_key] = op
    state.pending[op_key] = (state.op_polls, None)
    return 200, _op_in_progress(op, "PENDING")


def _op_in_progress(op: Res, status: str) -> Res:
    out = {k: copy.deepcopy(v) for k, v in op.items() if k not in ("error", "endTime")}
    out["status"] = status
    out["progress"] = 0
    for k in ("httpErrorStatusCode", "httpErrorMessage"):
        out.pop(k, None)
    return out


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
    def deco(fn: DefaultsFn) -> DefaultsFn:
        for c in colls:
            DEFAULTS[c] = fn
        return fn

    return deco


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
    res["fingerprint"] = content_fingerprint(_fp_view(res))


@defaults("urlMaps")
def _url_map(state: FakeGcpState, k: Key, res: Res, old: Res | None) -> None:
    if "defaultService" not in res and "defaultUrlRedirect" not in res:
        raise ApiError(400, "Required field 'resource.defaultService' not specified")
    if "defaultService" in res:
        check_ref(state, res["defaultService"], "resource.defaultService")
    res["fingerprint"] = content_fingerprint(_fp_view(res))


# https://cloud.google.com/load-balancing/docs/ssl-policies-concepts: profile
# COMPATIBLE and minimum TLS 1.0 unless set; CUSTOM needs customFeatures.
SSL_PROFILE_FEATURES = {
    "COMPATIBLE": ["TLS_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"],
    "MODERN": ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"],
    "RESTRICTED": ["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"],
}


@defaults("sslPolicies")
def _ssl_policy(state: FakeGcpState, k: Key, res: Res, old: Res | None) -> None:
    profile = res.setdefault("profile", "COMPATIBLE")
    res.setdefault("minTlsVersion", "TLS_1_0")
    if profile == "CUSTOM" and not res.get("customFeatures"):
        raise ApiError(400, "Custom features must be specified for the CUSTOM profile.")
    if profile != "CUSTOM" and res.get("customFeatures"):
        raise ApiError(400, "Custom features may only be given with the CUSTOM profile.")
    res["enabledFeatures"] = sorted(res.get("customFeatures") or SSL_PROFILE_FEATURES[profile])
    res["fingerprint"] = content_fingerprint(_fp_view(res))


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
    res["fingerprint"] = content_fingerprint(_fp_view(res))


@defaults("sslCertificates")
def _ssl_certificate(state: FakeGcpState, k: Key, res: Res, old: Res | None) -> None:
    res.setdefault("type", "SELF_MANAGED")
    if res["type"] == "MANAGED":
        domains = res.get("managed", {}).get("domains") or []
        if not domains:
            raise ApiError(400, "Required field 'resource.managed.domains' not specified")
        if "certificate" in res or "privateKey" in res:
            raise ApiError(400, "Managed certificates cannot carry a certificate or key.")
        res["managed"] = {
            "domains": domains,
            "status": "PROVISIONING",
            "domainStatus": {d: "PROVISIONING" for d in domains},
        }
        res["subjectAlternativeNames"] = domains
    else:
        if "certificate" not in res or "privateKey" not in res:
            raise ApiError(400, "Required field 'resource.certificate' not specified")
        res.pop("privateKey", None)
        res.setdefault("expireTime", "2035-01-01T00:00:00.000-08:00")


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
    res["fingerprint"] = content_fingerprint(_fp_view(res))


def _ports_overlap(a: str, b: str) -> bool:
    """Whether two portRange values ("80-80", "8000-8100"; empty = all ports) overlap."""
    if not a or not b:
        return True
    (a_lo, a_hi), (b_lo, b_hi) = (map(int, r.split("-")) for r in (a, b))
    return a_lo <= b_hi and b_lo <= a_hi


@defaults("instances")
def _instance(state: FakeGcpState, k: Key, res: Res, old: Res | None) -> None:
    zone = k.scope
    region = ZONES[zone]
    check_ref(state, res["machineType"], "resource.machineType")
    if Key(ref_key(res["machineType"])).scope != zone:
        raise ApiError(400, "Invalid value for field 'resource.machineType': zone mismatch.")
    # disks
    boots = [d for d in res["disks"] if d.get("boot")]
    if len(boots) != 1:
        raise ApiError(400, "Invalid value for field 'resource.disks': exactly one boot disk.")
    new_disks: list[tuple[str, Res]] = []
    for i, d in enumerate(res["disks"]):
        init = d.pop("initializeParams", None)
        if d.get("source"):
            check_ref(state, d["source"], f"resource.disks[{i}].source")
            disk_key = ref_key(d["source"])
            if state.store[disk_key].get("users"):
                raise ApiError(
                    400,
                    f"The disk resource '{Key(disk_key).short()}' is already being used by "
                    f"'{Key(ref_key(state.store[disk_key]['users'][0])).short()}'",
                    reason="resourceInUseByAnotherResource",
                )
            size = state.store[disk_key]["sizeGb"]
        elif init:
            disk_name = init.get("diskName") or (k.name if d.get("boot") else f"{k.name}-{i}")
            disk_key = f"{k.scope_path}/disks/{disk_name}"
            if disk_key in state.store:
                raise ApiError(
                    409,
                    f"The resource '{Key(disk_key).short()}' already exists",
                    reason="alreadyExists",
                )
            image = None
            if init.get("sourceImage"):
                image = resolve_image(init["sourceImage"])
            size = str(init.get("diskSizeGb") or (image or {}).get("diskSizeGb") or "10")
            if image and int(size) < int(image["diskSizeGb"]):
                raise ApiError(400, "Requested disk size cannot be smaller than the image size.")
            dtype = init.get("diskType") or f"zones/{zone}/diskTypes/pd-standard"
            dtype = normalise_ref(dtype, k.project) or dtype
            check_ref(state, dtype, f"resource.disks[{i}].initializeParams.diskType")
            disk: Res = {
                "kind": "compute#disk",
                "name": disk_name,
                "sizeGb": size,
                "zone": self_link(k.scope_path),
                "status": "READY",
                "type": dtype,
                "labels": init.get("labels", {}),
                "physicalBlockSizeBytes": "4096",
                "architecture": "X86_64",
                "users": [self_link(k.key)],
            }
            if not disk["labels"]:
                disk.pop("labels")
            if image:
                disk["sourceImage"] = image["selfLink"]
                disk["sourceImageId"] = image["id"]
                disk["licenses"] = image["licenses"]
                disk["guestOsFeatures"] = image["guestOsFeatures"]
            new_disks.append((disk_key, disk))
            d["source"] = self_link(disk_key)
            if image:
                d["licenses"] = image["licenses"]
                d["guestOsFeatures"] = image["guestOsFeatures"]
        else:
            raise ApiError(
                400, f"Invalid value for field 'resource.disks[{i}]': source or initializeParams."
            )
        d["kind"] = "compute#attachedDisk"
        d.setdefault("type", "PERSISTENT")
        d.setdefault("mode", "READ_WRITE")
        d.setdefault("deviceName", f"persistent-disk-{i}")
        d["index"] = i
        d.setdefault("boot", False)
        d.setdefault("autoDelete", False)
        d.setdefault("interface", "SCSI")
        d["diskSizeGb"] = size
        d["architecture"] = "X86_64"
    # network interfaces
    if not res["networkInterfaces"]:
        raise ApiError(400, "Required field 'resource.networkInterfaces' not specified")
    for i, nic in enumerate(res["networkInterfaces"]):
        where = f"resource.networkInterfaces[{i}]"
        if nic.get("subnetwork"):
            check_ref(state, nic["subnetwork"], f"{where}.subnetwork")
            sub = state.store[ref_key(nic["subnetwork"])]
            if Key(ref_key(nic["subnetwork"])).scope != region:
                raise ApiError(400, f"Invalid value for field '{where}.subnetwork': wrong region.")
            if nic.get("network") and nic["network"] != sub["network"]:
                raise ApiError(400, f"Invalid value for field '{where}.network': mismatch.")
            nic["network"] = sub["network"]
        elif nic.get("network"):
            check_ref(state, nic["network"], f"{where}.network")
            net = state.store[ref_key(nic["network"])]
            if not net.get("autoCreateSubnetworks"):
                raise ApiError(
                    400,
                    f"Invalid value for field '{where}.subnetwork': ''. Network interface must "
                    "specify a subnet if the network resource is in custom subnet mode.",
                )
        else:
            nic["network"] = f"{WWW}compute/v1/projects/{k.project}/global/networks/default"
            check_ref(state, nic["network"], f"{where}.network")
        nic["kind"] = "compute#networkInterface"
        nic["name"] = f"nic{i}"
        nic.setdefault("stackType", "IPV4_ONLY")
        if "networkIP" not in nic:
            nic["networkIP"] = _alloc_ip(state, nic.get("subnetwork"))
        for ac in nic.get("accessConfigs", []):
            ac["kind"] = "compute#accessConfig"
            ac.setdefault("type", "ONE_TO_ONE_NAT")
            ac.setdefault("name", "External NAT")
            ac.setdefault("networkTier", "PREMIUM")
            if "natIP" not in ac:
                n = next(state._next_ip)
                ac["natIP"] = f"35.223.{n // 250}.{n % 250 + 1}"
        nic["fingerprint"] = content_fingerprint(nic)
    # service accounts
    for i, sa in enumerate(res.get("serviceAccounts", [])):
        email = sa.get("email", "default")
        if email == "default":
            email = f"{state.project_number}-compute@developer.gserviceaccount.com"
        elif email.endswith(f"@{k.project}.iam.gserviceaccount.com") and not any(
            r.get("email") == email for key2, r in state.store.items() if key2.startswith("iam/")
        ):
            raise ApiError(
                400,
                f"Invalid value for field 'resource.serviceAccounts[{i}].email': '{email}'. "
                f"The user does not have access to service account '{email}'. "
                "User: 'deployer'. Ask a project owner to grant you the "
                "iam.serviceAccountUser role on the service account",
            )
        sa["email"] = email
    # metadata / labels / tags / scheduling / shielded VM
    md = res.get("metadata") or {}
    items = md.get("items") or []
    res["metadata"] = {"kind": "compute#metadata", "fingerprint": content_fingerprint(items)}
    if items:
        res["metadata"]["items"] = items
    res["labelFingerprint"] = label_fingerprint(res.get("labels"))
    tags = res.get("tags") or {}
    res["tags"] = {"fingerprint": label_fingerprint(None)}
    if tags.get("items"):
        res["tags"] = {"items": tags["items"], "fingerprint": content_fingerprint(tags["items"])}
    res["scheduling"] = {
        "onHostMaintenance": "MIGRATE",
        "automaticRestart": True,
        "preemptible": False,
        "provisioningModel": "STANDARD",
        **res.get("scheduling", {}),
    }
    res["shieldedInstanceConfig"] = {
        "enableSecureBoot": False,
        "enableVtpm": True,
        "enableIntegrityMonitoring": True,
        **res.get("shieldedInstanceConfig", {}),
    }
    res["shieldedInstanceIntegrityPolicy"] = {"updateAutoLearnPolicy": True}
    res.setdefault("deletionProtection", False)
    res.setdefault("canIpForward", False)
    res.setdefault("startRestricted", False)
    res["status"] = (old or {}).get("status", "RUNNING")
    res["cpuPlatform"] = "Intel Broadwell"
    res["lastStartTimestamp"] = (old or {}).get("lastStartTimestamp", now())
    res["fingerprint"] = content_fingerprint(_fp_view(res))
    for disk_key, disk in new_disks:
        disk.update(_core(state, disk_key, "compute#disk"))
        disk["labelFingerprint"] = label_fingerprint(disk.get("labels"))
        state.store[disk_key] = disk


def _alloc_ip(state: FakeGcpState, subnetwork: str | None) -> str:
    if not subnetwork:
        return "10.128.0.2"
    sub = state.store[ref_key(subnetwork)]
    net = ipaddress.ip_network(sub["ipCidrRange"])
    used = {
        nic.get("networkIP")
        for r in state.store.values()
        if r.get("kind") == "compute#instance"
        for nic in r.get("networkInterfaces", [])
    }
    for host in itertools.islice(net.hosts(), 1, None):  # .1 is the gateway
        if str(host) not in used:
            return str(host)
    raise ApiError(400, "IP_SPACE_EXHAUSTED")


def _fp_view(res: Res) -> Res:
    return {
        k: v
        for k, v in res.items()
        if k not in ("fingerprint", "id", "creationTimestamp", "selfLink", "status")
    }


def _core(state: FakeGcpState, key: str, kind: str | None) -> Res:
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
    from .discovery import request_schema_name

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


# ---------------------------------------------------------------------------- generic verbs
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
    core = _core(state, key, _kind_for(req))
    res = {**core, **body}
    for f in ("zone", "region"):  # GCP answers these as URLs whatever the request said
        if f in core:
            res[f] = core[f]
    _check_refs_exist(
        state, {f: v for f, v in res.items() if f not in ("selfLink", "zone", "region")}
    )
    fn = DEFAULTS.get(k.coll)
    if fn:
        fn(state, k, res, None)
    if "labels" in res or k.coll in LABELLED:
        res["labelFingerprint"] = label_fingerprint(res.get("labels"))
    state.store[key] = res
    AFTER_INSERT.get(k.coll, lambda *_: None)(state, key, res)
    return make_op(state, "insert", key, res)


LABELLED = {"instances", "disks", "addresses", "forwardingRules", "images", "vpnTunnels"}


def _after_subnet(state: FakeGcpState, key: str, res: Res) -> None:
    net = state.store.get(ref_key(res["network"]))
    if net is not None:
        subs = net.setdefault("subnetworks", [])
        if res["selfLink"] not in subs:
            subs.append(res["selfLink"])


AFTER_INSERT: dict[str, Callable[[FakeGcpState, str, Res], None]] = {"subnetworks": _after_subnet}


def g_get(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    state.check_project(req.vars.get("project", ""))
    key = request_key(req.path)
    k = Key(key)
    _check_scope(k)
    res = state.store.get(key)
    if res is None:
        raise ApiError(404, f"The resource '{k.short()}' was not found", reason="notFound")
    return 200, copy.deepcopy(res)


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


def g_delete(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    state.check_project(req.vars.get("project", ""))
    key = request_key(req.path)
    k = Key(key)
    res = state.store.get(key)
    if res is None:
        raise ApiError(404, f"The resource '{k.short()}' was not found", reason="notFound")
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
        if link in _strings(other, BACKREF_FIELDS):
            users.append(self_link(other_key))
    if users:
        kind = res.get("kind", "compute#resource").split("#")[-1]
        raise ApiError(
            400,
            f"The {kind} resource '{k.short()}' is already being used by "
            f"'{Key(ref_key(users[0])).short()}'",
            reason="resourceInUseByAnotherResource",
        )


def _before_delete_instance(state: FakeGcpState, key: str, res: Res) -> None:
    for d in res.get("disks", []):
        dkey = ref_key(d.get("source", ""))
        disk = state.store.get(dkey)
        if disk is None:
            continue
        if d.get("autoDelete"):
            del state.store[dkey]
        else:
            disk["users"] = [u for u in disk.get("users", []) if u != res["selfLink"]]
            if not disk["users"]:
                disk.pop("users")


def _before_delete_subnet(state: FakeGcpState, key: str, res: Res) -> None:
    net = state.store.get(ref_key(res["network"]))
    if net is not None and res["selfLink"] in net.get("subnetworks", []):
        net["subnetworks"].remove(res["selfLink"])
        if not net["subnetworks"]:
            net.pop("subnetworks")


def _before_delete_fr(state: FakeGcpState, key: str, res: Res) -> None:
    for a in state.store.values():
        if a.get("kind") == "compute#address" and res["selfLink"] in a.get("users", []):
            a["users"].remove(res["selfLink"])
            if not a["users"]:
                a.pop("users")
                a["status"] = "RESERVED"


def _before_delete_group(state: FakeGcpState, key: str, res: Res) -> None:
    state.members.pop(key, None)


BEFORE_DELETE: dict[str, Callable[[FakeGcpState, str, Res], None]] = {
    "instances": _before_delete_instance,
    "subnetworks": _before_delete_subnet,
    "forwardingRules": _before_delete_fr,
    "instanceGroups": _before_delete_group,
}


def _fingerprint_required(req: Request) -> bool:
    from .discovery import request_schema_name

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
    state.check_project(req.vars.get("project", ""))
    key = request_key(req.path)
    k = Key(key)
    old = state.store.get(key)
    if old is None:
        raise ApiError(404, f"The resource '{k.short()}' was not found", reason="notFound")
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
    _check_refs_exist(
        state, {f: v for f, v in new.items() if f not in ("selfLink", "zone", "region")}
    )
    fn = DEFAULTS.get(k.coll)
    if fn:
        fn(state, k, new, old)
    state.store[key] = new
    return make_op(state, "patch" if not replace else "update", key, new)


def g_patch(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    return _write(state, req, replace=False)


def g_update(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    return _write(state, req, replace=True)


GENERIC = {
    "insert": g_insert,
    "get": g_get,
    "list": g_list,
    "delete": g_delete,
    "patch": g_patch,
    "update": g_update,
    "aggregatedList": g_aggregated,
}


# ---------------------------------------------------------------------------- filters
_TERM = re.compile(r'\(?\s*([\w.]+)\s*(!=|=|:|\beq\b|\bne\b)\s*("[^"]*"|[^\s)]+)\s*\)?')


def apply_filter(items: list[Res], expr: str) -> list[Res]:
    expr = expr.strip()
    if not expr:
        return items
    terms = []
    rest = expr
    for m in _TERM.finditer(expr):
        terms.append((m.group(1), m.group(2), m.group(3).strip('"')))
        rest = rest.replace(m.group(0), "", 1)
    rest = re.sub(r"\bAND\b", "", rest).strip()
    if not terms or rest:
        raise ApiError(
            400, f"Invalid value for field 'filter': '{expr}'. Invalid list filter expression."
        )

    def value(item: Res, path: str) -> Any:
        cur: Any = item
        for part in path.split("."):
            if not isinstance(cur, dict):
                return None
            cur = cur.get(part)
        return cur

    def ok(item: Res) -> bool:
        for field, op, want in terms:
            v = value(item, field)
            if op == ":":
                hit = v is not None and (
                    want == "*" or want in (v if isinstance(v, list) else str(v))
                )
            elif op in ("eq", "ne"):
                hit = v is not None and re.fullmatch(want, str(v)) is not None
                hit = hit if op == "eq" else not hit
            else:
                sv = str(v).lower() if isinstance(v, bool) else str(v) if v is not None else None
                hit = (
                    sv is not None
                    and re.fullmatch(re.escape(want).replace(r"\*", ".*"), sv) is not None
                )
                hit = hit if op == "=" else not hit
            if not hit:
                return False
        return True

    return [i for i in items if ok(i)]


# ---------------------------------------------------------------------------- platform reads
@handles("compute.zones.get")
def zone_get(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    state.check_project(req.vars["project"])
    z = req.vars["zone"]
    if z not in ZONES:
        raise ApiError(
            404,
            f"The resource 'projects/{req.vars['project']}/zones/{z}' was not found",
            reason="notFound",
        )
    return 200, _zone(req.vars["project"], z)


def _zone(project: str, z: str) -> Res:
    return {
        "kind": "compute#zone",
        "id": str(2000 + sorted(ZONES).index(z)),
        "name": z,
        "status": "UP",
        "region": f"{WWW}compute/v1/projects/{project}/regions/{ZONES[z]}",
        "selfLink": f"{WWW}compute/v1/projects/{project}/zones/{z}",
        "availableCpuPlatforms": ["Intel Broadwell", "AMD Milan"],
        "supportsPzs": False,
    }


@handles("compute.zones.list")
def zone_list(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    state.check_project(req.vars["project"])
    items = apply_filter(
        [_zone(req.vars["project"], z) for z in sorted(ZONES)], req.query.get("filter", "")
    )
    return 200, {"kind": "compute#zoneList", "items": items}


@handles("compute.regions.get")
def region_get(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    state.check_project(req.vars["project"])
    r = req.vars["region"]
    if r not in REGIONS:
        raise ApiError(
            404,
            f"The resource 'projects/{req.vars['project']}/regions/{r}' was not found",
            reason="notFound",
        )
    return 200, _region(req.vars["project"], r)


def _region(project: str, r: str) -> Res:
    return {
        "kind": "compute#region",
        "id": str(1000 + sorted(REGIONS).index(r)),
        "name": r,
        "status": "UP",
        "zones": [f"{WWW}compute/v1/projects/{project}/zones/{r}-{z}" for z in REGIONS[r]],
        "selfLink": f"{WWW}compute/v1/projects/{project}/regions/{r}",
        "quotas": [],
    }


@handles("compute.regions.list")
def region_list(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    state.check_project(req.vars["project"])
    return 200, {
        "kind": "compute#regionList",
        "items": [_region(req.vars["project"], r) for r in sorted(REGIONS)],
    }


@handles("compute.machineTypes.get")
def machine_type_get(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    state.check_project(req.vars["project"])
    z, name = req.vars["zone"], req.vars["machineType"]
    if z not in ZONES or name not in MACHINE_TYPES:
        raise ApiError(
            404,
            f"The resource 'projects/{req.vars['project']}/zones/{z}/machineTypes/{name}' "
            "was not found",
            reason="notFound",
        )
    cpus, mem = MACHINE_TYPES[name]
    return 200, {
        "kind": "compute#machineType",
        "name": name,
        "guestCpus": cpus,
        "memoryMb": mem,
        "zone": z,
        "isSharedCpu": name.startswith(("e2-micro", "e2-small", "e2-medium", "f1", "g1")),
        "selfLink": f"{WWW}compute/v1/projects/{req.vars['project']}/zones/{z}/machineTypes/{name}",
    }


@handles("compute.images.getFromFamily")
def image_from_family(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    return 200, resolve_image(
        f"/projects/{req.vars['project']}/global/images/family/{req.vars['family']}"
    )


@handles("compute.images.get")
def image_get(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    if req.vars["project"] in PUBLIC_IMAGE_PROJECTS:
        return 200, resolve_image(
            f"/projects/{req.vars['project']}/global/images/{req.vars['image']}"
        )
    return g_get(state, req)


@handles("compute.projects.get")
def project_get(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    state.check_project(req.vars["project"])
    p = req.vars["project"]
    return 200, {
        "kind": "compute#project",
        "id": state.project_number,
        "name": state.project,
        "creationTimestamp": "2025-01-01T00:00:00.000-08:00",
        "commonInstanceMetadata": {
            "kind": "compute#metadata",
            "fingerprint": EMPTY_LABEL_FINGERPRINT,
        },
        "defaultServiceAccount": f"{state.project_number}-compute@developer.gserviceaccount.com",
        "xpnProjectStatus": "UNSPECIFIED_XPN_PROJECT_STATUS",
        "defaultNetworkTier": "PREMIUM",
        "selfLink": f"{WWW}compute/v1/projects/{p}",
    }


# ---------------------------------------------------------------------------- operations
@handles(
    "compute.globalOperations.get",
    "compute.regionOperations.get",
    "compute.zoneOperations.get",
    "compute.globalOperations.wait",
    "compute.regionOperations.wait",
    "compute.zoneOperations.wait",
)
def op_get(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key = key_of("compute", req.prefix)
    op = state.operations.get(key)
    if op is None:
        raise ApiError(404, f"The resource '{Key(key).short()}' was not found", reason="notFound")
    left, _ = state.pending.get(key, (0, None))
    if left > 0 and req.method.name != "wait":  # wait blocks until DONE
        state.pending[key] = (left - 1, None)
        return 200, _op_in_progress(op, "RUNNING")
    state.pending.pop(key, None)
    return 200, copy.deepcopy(op)


@handles(
    "compute.globalOperations.list", "compute.regionOperations.list", "compute.zoneOperations.list"
)
def op_list(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    coll = key_of("compute", req.path)
    items = [copy.deepcopy(o) for k, o in state.operations.items() if k.rsplit("/", 1)[0] == coll]
    return 200, {"kind": "compute#operationList", "items": items, "selfLink": self_link(coll)}


@handles(
    "compute.globalOperations.delete",
    "compute.regionOperations.delete",
    "compute.zoneOperations.delete",
)
def op_delete(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key = key_of("compute", req.path)
    if state.operations.pop(key, None) is None:
        raise ApiError(404, f"The resource '{Key(key).short()}' was not found", reason="notFound")
    return 204, None


# ---------------------------------------------------------------------------- verbs
def _target(state: FakeGcpState, req: Request) -> tuple[str, Res]:
    state.check_project(req.vars.get("project", ""))
    key = request_key(req.prefix)
    res = state.store.get(key)
    if res is None:
        raise ApiError(404, f"The resource '{Key(key).short()}' was not found", reason="notFound")
    return key, res


def _refresh_fp(res: Res) -> None:
    if "fingerprint" in res:
        res["fingerprint"] = content_fingerprint(_fp_view(res))


@handles("compute.instances.setMetadata")
def set_metadata(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key, res = _target(state, req)
    check_fingerprint(req.body.get("fingerprint"), res["metadata"]["fingerprint"], "metadata ")
    items = req.body.get("items") or []
    keys = [i.get("key") for i in items]
    if len(set(keys)) != len(keys):
        raise ApiError(400, "Invalid value for field 'metadata': duplicate keys.")
    res["metadata"] = {"kind": "compute#metadata", "fingerprint": content_fingerprint(items)}
    if items:
        res["metadata"]["items"] = items
    if res["metadata"]["fingerprint"] == req.body.get("fingerprint") and items:
        res["metadata"]["fingerprint"] = content_fingerprint([items, time.time()])
    _refresh_fp(res)
    return make_op(state, "setMetadata", key, res)


@handles(
    "compute.instances.setLabels",
    "compute.disks.setLabels",
    "compute.globalAddresses.setLabels",
    "compute.addresses.setLabels",
    "compute.globalForwardingRules.setLabels",
    "compute.forwardingRules.setLabels",
)
def set_labels(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key, res = _target(state, req)
    check_fingerprint(req.body.get("labelFingerprint"), res.get("labelFingerprint"), "label ")
    labels = req.body.get("labels") or {}
    if labels:
        res["labels"] = labels
    else:
        res.pop("labels", None)
    res["labelFingerprint"] = label_fingerprint(labels)
    _refresh_fp(res)
    return make_op(state, "setLabels", key, res)


@handles("compute.instances.setTags")
def set_tags(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key, res = _target(state, req)
    check_fingerprint(req.body.get("fingerprint"), res["tags"].get("fingerprint"), "tags ")
    items = req.body.get("items") or []
    res["tags"] = {"fingerprint": label_fingerprint(None)}
    if items:
        res["tags"] = {"items": items, "fingerprint": content_fingerprint(items)}
    _refresh_fp(res)
    return make_op(state, "setTags", key, res)


@handles("compute.instances.setDeletionProtection")
def set_deletion_protection(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key, res = _target(state, req)
    res["deletionProtection"] = req.query.get("deletionProtection", "true") == "true"
    _refresh_fp(res)
    return make_op(state, "setDeletionProtection", key, res)


@handles("compute.instances.setMachineType")
def set_machine_type(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key, res = _target(state, req)
    if res["status"] != "TERMINATED":
        raise ApiError(
            400,
            f"The resource '{Key(key).short()}' is not ready: instance must be stopped to "
            "change its machine type.",
            reason="resourceNotReady",
        )
    mt = normalise_ref(req.body.get("machineType", ""), Key(key).project) or ""
    check_ref(state, mt, "machineType")
    res["machineType"] = mt
    _refresh_fp(res)
    return make_op(state, "setMachineType", key, res)


@handles("compute.instances.setServiceAccount")
def set_service_account(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key, res = _target(state, req)
    if res["status"] != "TERMINATED":
        raise ApiError(
            400,
            "The instance must be stopped to change its service account.",
            reason="resourceNotReady",
        )
    res["serviceAccounts"] = [
        {"email": req.body.get("email"), "scopes": req.body.get("scopes", [])}
    ]
    return make_op(state, "setServiceAccount", key, res)


@handles("compute.instances.updateShieldedInstanceConfig")
def update_shielded(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key, res = _target(state, req)
    new = {**res["shieldedInstanceConfig"], **req.body}
    if (
        new != res["shieldedInstanceConfig"]
        and res["status"] != "TERMINATED"
        and (new.get("enableSecureBoot") != res["shieldedInstanceConfig"].get("enableSecureBoot"))
    ):
        raise ApiError(
            400,
            "Secure boot can only be changed while the instance is stopped.",
            reason="resourceNotReady",
        )
    res["shieldedInstanceConfig"] = new
    _refresh_fp(res)
    return make_op(state, "updateShieldedInstanceConfig", key, res)


@handles("compute.instances.start", "compute.instances.stop")
def start_stop(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key, res = _target(state, req)
    res["status"] = "RUNNING" if req.method.name == "start" else "TERMINATED"
    return make_op(state, req.method.name, key, res)


@handles("compute.instanceGroups.addInstances")
def group_add(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key, res = _target(state, req)
    members = state.members.setdefault(key, [])
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
    res["size"] = len(members)
    return make_op(state, "addInstances", key, res)


@handles("compute.instanceGroups.removeInstances")
def group_remove(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key, res = _target(state, req)
    members = state.members.setdefault(key, [])
    for ref in req.body.get("instances") or []:
        url = normalise_ref(ref.get("instance", ""), Key(key).project)
        if url in members:
            members.remove(url)
    res["size"] = len(members)
    return make_op(state, "removeInstances", key, res)


@handles("compute.instanceGroups.listInstances")
def group_list_instances(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key, res = _target(state, req)
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
    key, res = _target(state, req)
    check_fingerprint(req.body.get("fingerprint"), res.get("fingerprint"))
    ports = req.body.get("namedPorts") or []
    if ports:
        res["namedPorts"] = ports
    else:
        res.pop("namedPorts", None)
    res["fingerprint"] = content_fingerprint({"namedPorts": ports, "t": time.time()})
    return make_op(state, "setNamedPorts", key, res)


def _set_field(
    field: str, body_field: str, op: str
) -> Callable[[FakeGcpState, Request], tuple[int, Any]]:
    def handler(state: FakeGcpState, req: Request) -> tuple[int, Any]:
        key, res = _target(state, req)
        value = normalise_refs(req.body.get(body_field), Key(key).project)
        for url in value if isinstance(value, list) else [value]:
            if isinstance(url, str) and url.startswith(WWW):
                check_ref(state, url, body_field)
        if value in (None, []):
            res.pop(field, None)
        else:
            res[field] = value
        _refresh_fp(res)
        return make_op(state, op, key, res)

    return handler


HANDLER_FIELDS = {
    "compute.targetHttpProxies.setUrlMap": ("urlMap", "urlMap", "setUrlMap"),
    "compute.targetHttpsProxies.setUrlMap": ("urlMap", "urlMap", "setUrlMap"),
    "compute.targetHttpsProxies.setSslCertificates": (
        "sslCertificates",
        "sslCertificates",
        "setSslCertificates",
    ),
    "compute.targetHttpsProxies.setQuicOverride": (
        "quicOverride",
        "quicOverride",
        "setQuicOverride",
    ),
    "compute.targetHttpsProxies.setSslPolicy": ("sslPolicy", "sslPolicy", "setSslPolicy"),
    "compute.globalForwardingRules.setTarget": ("target", "target", "setTarget"),
    "compute.forwardingRules.setTarget": ("target", "target", "setTarget"),
    "compute.subnetworks.setPrivateIpGoogleAccess": (
        "privateIpGoogleAccess",
        "privateIpGoogleAccess",
        "setPrivateIpGoogleAccess",
    ),
}
for _mid, (_f, _bf, _op) in HANDLER_FIELDS.items():
    handles(_mid)(_set_field(_f, _bf, _op))


@handles("compute.subnetworks.expandIpCidrRange")
def expand_range(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key, res = _target(state, req)
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
    _refresh_fp(res)
    return make_op(state, "expandIpCidrRange", key, res)
