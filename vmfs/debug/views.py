"""Plain-data views of on-disk structures for ``vmfs-debug`` (text and JSON alike).

Everything returned here is built from ``dict``/``list``/``int``/``str`` so a tool can print it or
dump it as JSON without knowing construct.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

from construct import Container, ListContainer

from vmfs.device.lvm import LogicalVolume
from vmfs.format import address as A
from vmfs.ondisk import filedesc as F
from vmfs.ondisk.common import decode_name
from vmfs.ondisk.fsdesc import CONFIG_MODE_MASK
from vmfs.ondisk.heartbeat import HB_IN_USE, HEARTBEAT_REGION_OFFSET
from vmfs.ondisk.lock import LOCK_FREE
from vmfs.volume.filedesc import TYPE_NAMES, ZLA_NAMES, BlockMap, FileDescriptor
from vmfs.volume.usage import resource_usage
from vmfs.volume.volume import Volume

LOCK_MODE_NAMES = {0: "free", 1: "exclusive", 2: "read-only", 3: "multi-writer"}
FS_MODE_NAMES = {0: "private", 1: "shared", 2: "public", 3: "shared"}


def plain(obj: Any) -> Any:
    """Construct containers to JSON-friendly data (bytes as hex, private keys dropped)."""
    if isinstance(obj, Container):
        return {k: plain(v) for k, v in obj.items() if not k.startswith("_")}
    if isinstance(obj, (ListContainer, list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, (bytes, bytearray)):
        return obj.hex() if any(obj) else ""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return obj


def utc(seconds: int) -> str:
    return _dt.datetime.fromtimestamp(seconds, _dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def fs_descriptor(volume: Volume) -> dict[str, Any]:
    d = volume.descriptor
    geo = volume.geometry
    out = plain(d)
    out["fsLabel"] = volume.label
    out.update(
        {
            "version": volume.version_string,
            "mode": FS_MODE_NAMES[d.config & CONFIG_MODE_MASK],
            "creation": utc(d.creationTime),
            "blockSize": geo.block_size,
            "volumeSize": volume.device.size,
            "mdAlignmentEffective": geo.md_size,
            "fdcStart": geo.fdc_start,
            "heartbeatSlots": geo.hb_slots,
            "heartbeatSlotSize": geo.hb_slot_size,
        }
    )
    return out


def lvm_info(volume: Volume) -> dict[str, Any]:
    lv = volume.lvm
    if not isinstance(lv, LogicalVolume) or lv.bare is not None:
        return {"bare": True, "size": volume.device.size}
    devices = []
    for d in lv.devices:
        devices.append(
            {
                "device": d.device.name,
                "size": d.device.size,
                "header": plain(d.header),
                "volume": {**plain(d.volume), "name": decode_name(d.volume.name)},
                "sdNames": d.sd_names,
                "peEntries": [{"tableOffset": off, **plain(e)} for off, e in d.pe_entries],
            }
        )
    return {
        "lvId": lv.devices[0].volume.lvId,
        "size": lv.size,
        "extents": len(lv.devices),
        "devices": devices,
        "mapping": [
            {"volumeOffset": m.l_offset, "length": m.length, "device": m.device.device.name,
             "deviceOffset": m.p_offset, "peId": m.pe_id}
            for m in lv.pe_maps
        ],
    }


TEST_AND_SET = {
    "ats": "ATS (SCSI COMPARE AND WRITE in the target)",
    "reserve": "SCSI-2 reservations (RESERVE, read, compare, write, RELEASE: the target has no COMPARE AND WRITE)",
    "file-lock": "byte-range lock of the image file (hosts on this machine only)",
    "process": "within this process only",
}


def devices(volume: Volume) -> list[dict[str, Any]]:
    """Each extent's transport and the test-and-set that on-disk locks use on it."""
    lv = volume.lvm
    extents = [lv.bare] if isinstance(lv, LogicalVolume) and lv.bare is not None else (
        [d.device for d in lv.devices] if isinstance(lv, LogicalVolume) else [volume.device])
    out = []
    for dev in extents:
        describe = getattr(dev, "describe", None)
        if callable(describe):
            out.append({"device": dev.name, **describe()})
            continue
        path = getattr(dev, "path", None)
        kind = ("block device" if getattr(dev, "is_block_device", False) else "image file") if path else "memory"
        out.append({"device": dev.name, "transport": kind, "size": dev.size,
                    "testAndSet": "file-lock" if path else "process"})
    return out


def heartbeats(volume: Volume, *, all_slots: bool = False) -> list[dict[str, Any]]:
    geo = volume.geometry
    raw = volume.device.read(HEARTBEAT_REGION_OFFSET, geo.heartbeat_region_size)
    slots = []
    for i in range(geo.hb_slots):
        chunk = raw[i * geo.hb_slot_size : i * geo.hb_slot_size + 512]
        hb = geo.structs.heartbeat_slot.parse(chunk + bytes(geo.hb_slot_size - 512)).hb
        if not all_slots and hb.state != HB_IN_USE:
            continue
        entry = plain(hb)
        entry["slot"] = i
        entry["ip"] = decode_name(hb.ip)
        entry["inUse"] = hb.state == HB_IN_USE
        slots.append(entry)
    return slots


def lock_info(lock: Any) -> dict[str, Any]:
    out = plain(lock)
    out["modeName"] = LOCK_MODE_NAMES.get(lock.mode, f"unknown {lock.mode}")
    if lock.hbAddr >= HEARTBEAT_REGION_OFFSET:
        out["hbSlot"] = None
    return out


def inode(volume: Volume, fd: FileDescriptor) -> dict[str, Any]:
    meta = fd.meta
    geo = volume.geometry
    out = plain(meta)
    out.update(
        {
            "address": fd.address,
            "addressText": geo.codec.describe(fd.address),
            "volumeOffset": fd.vol_offset,
            "typeName": TYPE_NAMES.get(meta.type, str(meta.type)),
            "zlaName": ZLA_NAMES.get(meta.zla, str(meta.zla)),
            "tbz": meta.numTBZBlocksLo | meta.numTBZBlocksHi << 32,
            "cow": meta.numCOWBlocksLo | meta.numCOWBlocksHi << 32,
            "modeOctal": f"{meta.mode:o}",
            "lock": lock_info(fd.lock),
            "lockHeld": fd.lock.mode != LOCK_FREE,
        }
    )
    if meta.zla == F.ZLA_RESIDENT:
        out["residentBytes"] = meta.fileLength
    elif meta.type == F.TYPE_RDM:
        out["rdmId"] = int.from_bytes(bytes(fd.parsed.data[:4]), "little")
    for key in ("atime", "mtime", "ctime"):
        out[key + "Text"] = utc(meta[key])
    return out


def block_map(volume: Volume, fd: FileDescriptor, *, limit: int | None = None) -> dict[str, Any]:
    """The pointer array, pointer blocks and data blocks of a file."""
    geo = volume.geometry
    out: dict[str, Any] = {"address": fd.address, "zla": fd.zla, "blockSize": fd.block_size, "size": fd.size}
    if fd.is_resident:
        out["resident"] = True
        out["blocks"] = []
        return out
    bmap = BlockMap(fd)
    count = -(-fd.size // fd.block_size) if fd.size else 0
    if limit is not None:
        count = min(count, limit)
    blocks = []
    for index in range(count):
        addr = bmap.lookup(index)
        if not addr:
            continue
        loc = volume.data_location(addr, 0, 1, fd)
        blocks.append(
            {"index": index, "address": addr, "text": geo.codec.describe(addr), "volumeOffset": loc}
        )
    out["pointerArray"] = [
        {"slot": i, "address": p, "text": geo.codec.describe(p)} for i, p in enumerate(bmap.pointers) if p
    ]
    out["blocks"] = blocks
    return out


def resources(volume: Volume) -> list[dict[str, Any]]:
    return resource_usage(volume)


def describe_address(volume: Volume, address: int) -> str:
    return volume.geometry.codec.describe(address) if address else "NULL"


__all__ = [
    "A",
    "block_map",
    "describe_address",
    "fs_descriptor",
    "heartbeats",
    "inode",
    "lvm_info",
    "plain",
    "resources",
]


def watch_heartbeats(volume: Volume, seconds: float) -> list[dict[str, Any]]:
    """Heartbeat slots in use, looked at twice ``seconds`` apart: a slot whose stamp moved is
    renewing (its host is alive); one whose stamp stood still has that age at least."""
    import time

    from vmfs.volume.slots import read_slots

    first = {s.slot: s for s in read_slots(volume, in_use_only=True)}
    start = time.monotonic()
    if seconds > 0:
        time.sleep(seconds)
    second = {s.slot: s for s in read_slots(volume, in_use_only=True)}
    waited = time.monotonic() - start
    rows = []
    for slot, view in sorted(second.items()):
        before = first.get(slot)
        moved = before is None or before.hb.stamp != view.hb.stamp or before.hb.hbGen != view.hb.hbGen
        entry = plain(view.hb)
        entry.update(
            {
                "slot": slot,
                "ip": view.ip,
                "inUse": True,
                "renewing": moved if seconds > 0 else None,
                "unchangedFor": None if moved or seconds <= 0 else round(waited, 1),
            }
        )
        rows.append(entry)
    return rows


def held_locks(volume: Volume) -> list[dict[str, Any]]:
    """Every lock held on the volume (mode not free): file descriptors by path where reachable,
    and resource clusters, like ``vmkfstools -D`` over the whole volume."""
    from vmfs.ondisk.lock import LOCK_FREE, LOCK_TYPE_FD, parse_lock
    from vmfs.volume.directory import open_directory

    paths: dict[int, str] = {}
    pending = [("/", volume.root_address)]
    seen: set[int] = set()
    while pending:
        path, address = pending.pop()
        if address in seen:
            continue
        seen.add(address)
        paths[address] = path
        fd = volume.read_fd(address)
        if fd.is_dir:
            for e in open_directory(volume, fd).entries():
                pending.append((path.rstrip("/") + "/" + e.name, e.address))
    rows = []
    fdc = volume.resources[R_FD]
    for c in range(fdc.num_clusters):
        cl = fdc.read_cluster(c)
        for r in cl.used_resources():
            off = fdc.volume_offset(c, r)
            lock = parse_lock(volume.device.read(off, 512))
            if lock.type == LOCK_TYPE_FD and lock.mode != LOCK_FREE:
                address = A.make_fd(c, r)
                rows.append({"object": paths.get(address, f"FD {address:#x}"), "volumeOffset": off,
                             **lock_info(lock)})
    for res in volume.resources.values():
        for c in range(res.num_clusters):
            off = res.reader.volume_offset(res.cluster_header_offset(c))
            lock = parse_lock(volume.device.read(off, 512))
            if lock.mode != LOCK_FREE:
                rows.append({"object": f"{res.name} cluster {c}", "volumeOffset": off, **lock_info(lock)})
    return rows


R_FD = 4
