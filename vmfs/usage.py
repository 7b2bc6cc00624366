"""Space and file counts of a volume, as statfs and ``vmfs-debug resources`` report them."""

from __future__ import annotations

from vmfs.ondisk import resource as R
from vmfs.volume import Volume


def volume_usage(volume: Volume) -> dict[str, int]:
    """Block and file totals from the resource cluster headers (cached by the volume)."""
    cached = getattr(volume, "_usage_cache", None)
    if cached is not None and not volume.usage_dirty:
        return dict(cached)
    fb_total, fb_free = volume.resources[R.RES_FB].usage()
    fd_total, fd_free = volume.resources[R.RES_FD].usage()
    usage = {
        "block_size": volume.geometry.block_size,
        "blocks_total": fb_total,
        "blocks_free": fb_free,
        "files_total": fd_total,
        "files_free": fd_free,
    }
    volume._usage_cache = usage  # type: ignore[attr-defined]
    volume.usage_dirty = False
    return dict(usage)


def resource_usage(volume: Volume) -> list[dict[str, object]]:
    """Per resource type: geometry and used/free counts."""
    from vmfs.resources import RESOURCE_NAMES

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
