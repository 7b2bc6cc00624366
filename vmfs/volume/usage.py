"""Space and file counts of a volume, as statfs and ``vmfs-debug resources`` report them."""

from __future__ import annotations

from collections.abc import Iterable

from vmfs.ondisk import resource as R
from vmfs.volume.volume import Volume


def volume_usage(volume: Volume) -> dict[str, int]:
    """Block and file totals from the resource cluster headers (cached by the volume)."""
    cached = volume.cached_usage()
    if cached is not None:
        return cached
    fb_total, fb_free = volume.resources[R.RES_FB].usage()
    fd_total, fd_free = volume.resources[R.RES_FD].usage()
    usage = {
        "block_size": volume.geometry.block_size,
        "blocks_total": fb_total,
        "blocks_free": fb_free,
        "files_total": fd_total,
        "files_free": fd_free,
    }
    volume.remember_usage(usage)
    return dict(usage)


def resource_usage(volume: Volume) -> list[dict[str, object]]:
    """Per resource type: geometry and used/free counts."""
    from vmfs.volume.resources import RESOURCE_NAMES

    rows = []
    for kind, res in sorted(volume.resources.items()):
        total, free = res.usage()
        rows.append(
            {
                "type": kind,
                "name": RESOURCE_NAMES[kind],
                "file": res.name,
                "resources_per_cluster": res.rpc,
                "clusters_per_group": res.cpg,
                "cluster_group_offset": res.cgo,
                "resource_size": res.rsz,
                "cluster_group_size": res.cgs,
                "cluster_groups": res.header.numClusterGroups,
                "total": total,
                "used": total - free,
                "free": free,
                "bits_per_resource": res.bits,
            }
        )
    return rows


def referenced_resources(
    volume: Volume, journals: Iterable[int] | None = None
) -> dict[int, set[tuple[int, int]]]:
    """(cluster, resource) of every resource reachable from the root, the system files and the
    journals of in-use heartbeat slots, per resource type.  On a consistent volume this equals
    the set of resources the bitmaps mark used.  ``journals``: the journal addresses of the
    in-use slots when the caller already knows them (parsing every slot costs more than the
    walk of a small volume)."""
    from vmfs.format import address as A
    from vmfs.volume.directory import open_directory
    from vmfs.volume.filedesc import BlockMap
    from vmfs.volume.slots import read_slots

    geo = volume.geometry
    codec = geo.codec
    fb_rpc = volume.resources[R.RES_FB].rpc
    refs: dict[int, set[tuple[int, int]]] = {k: set() for k in volume.resources}
    kind_of = {A.ADDR_SB: R.RES_SB, A.ADDR_PB: R.RES_PB, A.ADDR_PB2: R.RES_PB2, A.ADDR_FD: R.RES_FD}

    def add(address: int) -> None:
        k = address & 7
        if k == A.ADDR_FB:
            refs[R.RES_FB].add(divmod(codec.fb_block(address), fb_rpc))
        elif k in kind_of:
            _, c, r = codec.split(address)
            refs[kind_of[k]].add((c, r))
        elif k == A.ADDR_JB and R.RES_JB in refs:  # a VMFS6 host's journal
            refs[R.RES_JB].add(A.jb_split(address))

    seen: set[int] = set()
    pending = [volume.root_address]
    while pending:
        address = pending.pop()
        if address in seen:
            continue
        seen.add(address)
        add(address)
        fd = volume.read_fd(address)
        if not fd.is_resident:
            for _, a, _ in BlockMap(fd).references():
                add(a)
        if fd.is_dir:
            pending.extend(e.address for e in open_directory(volume, fd).entries())
    if journals is None:
        journals = [slot.hb.journalAddr for slot in read_slots(volume) if slot.in_use and slot.hb.journalAddr]
    for address in journals:
        add(address)
    return refs


def marked_used(volume: Volume) -> dict[int, set[tuple[int, int]]]:
    """(cluster, resource) of every resource the cluster bitmaps mark used (1-bit resources)."""
    used: dict[int, set[tuple[int, int]]] = {}
    for kind, res in volume.resources.items():
        if res.bits != 1:
            continue
        used[kind] = {(cl.number, r) for cl in res.iter_clusters() for r in cl.used_resources()}
    return used
