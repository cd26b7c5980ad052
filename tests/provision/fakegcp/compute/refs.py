"""Compute keys and references: what a resource's key and selfLink are, the
platform's fixed catalogue (regions, zones, machine and disk types, public
images), and the check that a reference names something that exists."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ..common import (
    EMPTY_LABEL_FINGERPRINT,
    WWW,
    Res,
    key_of,
    strings_in,
)
from ..discovery import ApiError, not_found

if TYPE_CHECKING:
    from ..state import FakeGcpState


REGIONS: dict[str, list[str]] = {
    "us-central1": ["a", "b", "c", "f"],
    "us-west1": ["a", "b", "c"],
    "us-east1": ["b", "c", "d"],
    "us-east4": ["a", "b", "c"],
    "europe-west1": ["b", "c", "d"],
    "europe-west4": ["a", "b", "c"],
    "asia-east1": ["a", "b", "c"],
}
ZONES = {f"{r}-{z}": r for r, zs in REGIONS.items() for z in zs}
MACHINE_TYPES = {
    "e2-micro": (2, 1024),
    "e2-small": (2, 2048),
    "e2-medium": (2, 4096),
    "e2-standard-2": (2, 8192),
    "e2-standard-4": (4, 16384),
    "n1-standard-1": (1, 3840),
    "n2-standard-2": (2, 8192),
    "f1-micro": (1, 614),
    "g1-small": (1, 1740),
}
DISK_TYPES = ["pd-standard", "pd-balanced", "pd-ssd", "pd-extreme", "local-ssd"]
IMAGE_FAMILIES = {
    ("debian-cloud", "debian-12"): "debian-12-bookworm-v20250610",
    ("debian-cloud", "debian-11"): "debian-11-bullseye-v20250610",
    ("ubuntu-os-cloud", "ubuntu-2204-lts"): "ubuntu-2204-jammy-v20250612",
    ("ubuntu-os-cloud", "ubuntu-2404-lts-amd64"): "ubuntu-2404-noble-amd64-v20250612",
}
PUBLIC_IMAGE_PROJECTS = {p for p, _ in IMAGE_FAMILIES}
# collections that are part of the platform, not created by the user
BUILTIN_COLLECTIONS = {"zones", "regions", "machineTypes", "diskTypes", "images", "licenses"}
# fields that hold back-references or output lists; ignored by the "in use" scan
BACKREF_FIELDS = {"selfLink", "selfLinkWithId", "users", "subnetworks", "targetLink"}
NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
COMPUTE_REF_RE = re.compile(
    r"^(?:https://(?:www|compute)\.googleapis\.com/compute/(?:v1|beta|alpha)/)?"
    r"(?:projects/(?P<project>[^/\s]+)/)?"
    r"(?P<rest>(?:global|regions/[a-z0-9-]+|zones/[a-z0-9-]+)(?:/[^/\s]+)*)$"
)
NO_NORMALISE_FIELDS = {"metadata", "labels", "description", "items", "sourceRanges"}


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
        raise not_found(k.short())


def resolve_image(url: str) -> Res:
    m = re.match(r"(?:.*/)?projects/([^/]+)/global/images/(family/)?([^/]+)$", url)
    if not m:
        raise ApiError(400, f"Invalid value for field 'sourceImage': '{url}'.")
    project, family, name = m.groups()
    for (p, fam), img in IMAGE_FAMILIES.items():
        if p == project and ((family and fam == name) or (not family and img == name)):
            return image_resource(p, fam, img)
    raise not_found(f"projects/{project}/global/images/{'family/' if family else ''}{name}")


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
    return [s for s in strings_in(res, BACKREF_FIELDS) if s.startswith(WWW + "compute/")]
