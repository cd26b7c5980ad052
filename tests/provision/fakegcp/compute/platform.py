"""Platform reads: zones, regions, machine types, public images, the project."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..common import (
    EMPTY_LABEL_FINGERPRINT,
    WWW,
    Res,
)
from ..discovery import not_found
from ..registry import Request, handles
from .filters import apply_filter
from .generic import (
    g_get,
)
from .refs import (
    MACHINE_TYPES,
    PUBLIC_IMAGE_PROJECTS,
    REGIONS,
    ZONES,
    resolve_image,
)

if TYPE_CHECKING:
    from ..state import FakeGcpState


# ---------------------------------------------------------------------------- platform reads
def _catalogue_get(
    state: FakeGcpState, req: Request, coll: str, names: Any, view: Any
) -> tuple[int, Any]:
    """zones.get / regions.get: an entry of the platform's fixed catalogue, or GCP's 404."""
    project = req.vars["project"]
    state.check_project(project)
    name = req.vars[coll[:-1]]
    if name not in names:
        raise not_found(f"projects/{project}/{coll}/{name}")
    return 200, view(project, name)


def _entry(kind: str, first_id: int, catalogue: Any, name: str) -> Res:
    """What zones and regions share: kind, a stable id, name, status UP."""
    return {
        "kind": f"compute#{kind}",
        "id": str(first_id + sorted(catalogue).index(name)),
        "name": name,
        "status": "UP",
    }


@handles("compute.zones.get")
def zone_get(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    return _catalogue_get(state, req, "zones", ZONES, _zone)


def _zone(project: str, z: str) -> Res:
    return {
        **_entry("zone", 2000, ZONES, z),
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
    return _catalogue_get(state, req, "regions", REGIONS, _region)


def _region(project: str, r: str) -> Res:
    return {
        **_entry("region", 1000, REGIONS, r),
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
        raise not_found(f"projects/{req.vars['project']}/zones/{z}/machineTypes/{name}")
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
