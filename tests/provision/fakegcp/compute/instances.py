"""VM instances: the insert checks and defaults, their disks, and the instance verbs."""

from __future__ import annotations

import ipaddress
import itertools
import time
from typing import TYPE_CHECKING, Any

from ..common import (
    WWW,
    Res,
    content_fingerprint,
    label_fingerprint,
    now,
)
from ..discovery import ApiError
from ..registry import Request, handles
from .generic import (
    before_delete,
    check_fingerprint,
    core_fields,
    defaults,
    fp_view,
    refresh_fp,
    target_of,
)
from .operations import make_op
from .refs import (
    ZONES,
    Key,
    check_ref,
    normalise_ref,
    ref_key,
    resolve_image,
    self_link,
)

if TYPE_CHECKING:
    from ..state import FakeGcpState


@defaults("instances")
def _instance(state: FakeGcpState, k: Key, res: Res, old: Res | None) -> None:
    """An instance insert/update, in GCP's order: machine type, disks (new disks are
    stored only once every check passed), network interfaces, service accounts,
    then the server-side defaults."""
    _check_machine_type(state, k, res)
    new_disks = _attach_disks(state, k, res)
    _attach_network_interfaces(state, k, res)
    _check_service_accounts(state, k, res)
    _fill_instance_defaults(res, old)
    for disk_key, disk in new_disks:
        disk.update(core_fields(state, disk_key, "compute#disk"))
        disk["labelFingerprint"] = label_fingerprint(disk.get("labels"))
        state.store[disk_key] = disk


def _check_machine_type(state: FakeGcpState, k: Key, res: Res) -> None:
    check_ref(state, res["machineType"], "resource.machineType")
    if Key(ref_key(res["machineType"])).scope != k.scope:
        raise ApiError(400, "Invalid value for field 'resource.machineType': zone mismatch.")


def _attach_disks(state: FakeGcpState, k: Key, res: Res) -> list[tuple[str, Res]]:
    """Each attached disk is an existing free disk (`source`) or a new one
    (`initializeParams`); returns the new disks, not stored yet."""
    boots = [d for d in res["disks"] if d.get("boot")]
    if len(boots) != 1:
        raise ApiError(400, "Invalid value for field 'resource.disks': exactly one boot disk.")
    new_disks: list[tuple[str, Res]] = []
    for i, d in enumerate(res["disks"]):
        init = d.pop("initializeParams", None)
        if d.get("source"):
            size = _existing_disk_size(state, i, d)
        elif init:
            disk_key, disk = _new_disk(state, k, i, d, init)
            size = disk["sizeGb"]
            new_disks.append((disk_key, disk))
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
    return new_disks


def _existing_disk_size(state: FakeGcpState, i: int, d: Res) -> str:
    check_ref(state, d["source"], f"resource.disks[{i}].source")
    disk_key = ref_key(d["source"])
    if state.store[disk_key].get("users"):
        raise ApiError(
            400,
            f"The disk resource '{Key(disk_key).short()}' is already being used by "
            f"'{Key(ref_key(state.store[disk_key]['users'][0])).short()}'",
            reason="resourceInUseByAnotherResource",
        )
    return state.store[disk_key]["sizeGb"]


def _new_disk(state: FakeGcpState, k: Key, i: int, d: Res, init: Res) -> tuple[str, Res]:
    zone = k.scope
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
    d["source"] = self_link(disk_key)
    if image:
        d["licenses"] = image["licenses"]
        d["guestOsFeatures"] = image["guestOsFeatures"]
    return disk_key, disk


def _attach_network_interfaces(state: FakeGcpState, k: Key, res: Res) -> None:
    region = ZONES[k.scope]
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


def _check_service_accounts(state: FakeGcpState, k: Key, res: Res) -> None:
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


def _fill_instance_defaults(res: Res, old: Res | None) -> None:
    """Metadata, labels, tags, scheduling, shielded VM: what GCP fills in."""
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
    res["fingerprint"] = content_fingerprint(fp_view(res))


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


@before_delete("instances")
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


@handles("compute.instances.setMetadata")
def set_metadata(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key, res = target_of(state, req)
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
    refresh_fp(res)
    return make_op(state, "setMetadata", key, res)


@handles("compute.instances.setTags")
def set_tags(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key, res = target_of(state, req)
    check_fingerprint(req.body.get("fingerprint"), res["tags"].get("fingerprint"), "tags ")
    items = req.body.get("items") or []
    res["tags"] = {"fingerprint": label_fingerprint(None)}
    if items:
        res["tags"] = {"items": items, "fingerprint": content_fingerprint(items)}
    refresh_fp(res)
    return make_op(state, "setTags", key, res)


@handles("compute.instances.setDeletionProtection")
def set_deletion_protection(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key, res = target_of(state, req)
    res["deletionProtection"] = req.query.get("deletionProtection", "true") == "true"
    refresh_fp(res)
    return make_op(state, "setDeletionProtection", key, res)


def _require_stopped(res: Res, message: str) -> None:
    if res["status"] != "TERMINATED":
        raise ApiError(400, message, reason="resourceNotReady")


@handles("compute.instances.setMachineType")
def set_machine_type(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key, res = target_of(state, req)
    _require_stopped(
        res,
        f"The resource '{Key(key).short()}' is not ready: instance must be stopped to "
        "change its machine type.",
    )
    mt = normalise_ref(req.body.get("machineType", ""), Key(key).project) or ""
    check_ref(state, mt, "machineType")
    res["machineType"] = mt
    refresh_fp(res)
    return make_op(state, "setMachineType", key, res)


@handles("compute.instances.setServiceAccount")
def set_service_account(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key, res = target_of(state, req)
    _require_stopped(res, "The instance must be stopped to change its service account.")
    res["serviceAccounts"] = [
        {"email": req.body.get("email"), "scopes": req.body.get("scopes", [])}
    ]
    return make_op(state, "setServiceAccount", key, res)


@handles("compute.instances.updateShieldedInstanceConfig")
def update_shielded(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key, res = target_of(state, req)
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
    refresh_fp(res)
    return make_op(state, "updateShieldedInstanceConfig", key, res)


@handles("compute.instances.start", "compute.instances.stop")
def start_stop(state: FakeGcpState, req: Request) -> tuple[int, Any]:
    key, res = target_of(state, req)
    res["status"] = "RUNNING" if req.method.name == "start" else "TERMINATED"
    return make_op(state, req.method.name, key, res)
