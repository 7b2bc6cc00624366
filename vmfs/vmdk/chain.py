"""Snapshot chains: take, revert and delete snapshots of a disk (section 6).

Taking a snapshot adds a delta on top of the current leaf: ``<stem>-00000N.vmdk`` whose
``parentCID`` is the leaf's CID, with a COWD (``vmfsSparse``) or seSparse extent on VMFS-style
disks and a monolithicSparse child on hosted disks (as Workstation and ``qemu-img create -b`` do).
The old leaf is never written again while it has a child.

Reverting discards what the leaf delta holds: the delta is recreated empty (new CID, same parent),
so the disk reads as it did when the snapshot was taken.  Deleting a snapshot consolidates: the
delta's grains are copied into the parent (whose CID therefore changes, section 6.4) and the delta's
files are removed.  Deleting a snapshot in the middle of a chain also repoints the child.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable

from vmfs.vmdk.cowd import create_cowd
from vmfs.vmdk.descriptor import Descriptor, ExtentLine, new_cid, new_long_content_id
from vmfs.vmdk.disk import open_disk
from vmfs.vmdk.errors import ExistsError, InvalidArgumentError, UnsupportedError, VmdkError
from vmfs.vmdk.extent import SECTOR
from vmfs.vmdk.layer import Layer, open_layer
from vmfs.vmdk.sesparse import create_sesparse
from vmfs.vmdk.sparse import DEFAULT_GRAIN_SIZE, create_sparse
from vmfs.vmdk.storage import DiskStorage, join, parent_dir

#: createTypes whose snapshots are hosted monolithicSparse children.
HOSTED_TYPES = frozenset(
    {"monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat", "streamOptimized"}
)
DELTA_FORMATS = ("vmfsSparse", "seSparse", "monolithicSparse")
#: COWD numSectors is a u32: deltas of 2 TiB and more are seSparse (section 6.5).
COWD_LIMIT_SECTORS = 1 << 32
_SNAPSHOT_SUFFIX = re.compile(r"^(?P<stem>.+)-(?P<num>\d{6})$")
#: sectors copied per step when consolidating
COPY_SECTORS = 2048


def split_name(name: str) -> tuple[str, str]:
    """``(directory, stem)`` of a disk name: ``vm/d-000002.vmdk`` gives ``('vm', 'd')``."""
    directory, _, base = name.rpartition("/")
    if base.lower().endswith(".vmdk"):
        base = base[:-5]
    m = _SNAPSHOT_SUFFIX.match(base)
    return directory, m.group("stem") if m else base


def next_snapshot_name(storage: DiskStorage, name: str) -> str:
    """The next free ``<stem>-00000N.vmdk`` for the disk ``name`` (six digits, per disk)."""
    directory, stem = split_name(name)
    for n in range(1, 1000000):
        base = f"{stem}-{n:06d}"
        names = [f"{base}.vmdk", f"{base}-delta.vmdk", f"{base}-sesparse.vmdk"]
        if not any(storage.exists(join(directory, x)) for x in names):
            return join(directory, f"{base}.vmdk")
    raise ExistsError(f"{name}: no free snapshot number")


def relative_hint(child: str, parent: str) -> str:
    """``parentFileNameHint`` for ``parent`` as seen from ``child``'s directory."""
    return posixpath.relpath(parent, parent_dir(child) or ".")


def write_descriptor_file(storage: DiskStorage, name: str, descriptor: Descriptor) -> None:
    """Create a standalone descriptor file (refusing to overwrite)."""
    data = descriptor.to_bytes()
    storage.create(name, 0, "thin")
    with storage.open(name, "r+b") as fh:
        fh.write(data)


def _chain_format(layers: list[Layer]) -> str | None:
    kinds = {layer.descriptor.create_type for layer in layers}
    if "seSparse" in kinds:
        return "seSparse"
    if "vmfsSparse" in kinds:
        return "vmfsSparse"
    return None


def create_snapshot(
    storage: DiskStorage, name: str, *, delta_format: str | None = None, grain_size: int = DEFAULT_GRAIN_SIZE
) -> str:
    """Add an empty delta on top of the leaf ``name``; return the new leaf's name."""
    disk = open_disk(storage, name)
    try:
        layers = disk.layers
        top = disk.top
        cid, capacity = top.cid, disk.sectors
        base = layers[-1].descriptor
        chain_format = _chain_format(layers)
    finally:
        disk.close()
    if base.create_type == "vmfsPassthroughRawDeviceMap":
        raise UnsupportedError(f"{name}: physical-compatibility RDMs cannot have snapshots")
    if delta_format is None:
        if chain_format is not None:
            delta_format = chain_format
        elif base.create_type in HOSTED_TYPES:
            delta_format = "monolithicSparse"
        else:
            delta_format = "vmfsSparse" if capacity < COWD_LIMIT_SECTORS else "seSparse"
    if delta_format not in DELTA_FORMATS:
        raise InvalidArgumentError(f"unknown delta format {delta_format!r} (use one of {', '.join(DELTA_FORMATS)})")
    if chain_format is not None and delta_format != chain_format:
        raise InvalidArgumentError(f"{name}: a {chain_format} chain cannot take a {delta_format} delta")
    if delta_format == "vmfsSparse" and capacity >= COWD_LIMIT_SECTORS:
        raise InvalidArgumentError(f"{name}: disks of 2 TiB and more need seSparse deltas")
    new = next_snapshot_name(storage, name)
    _create_delta(
        storage,
        new,
        capacity,
        delta_format,
        parent=name,
        parent_cid=cid,
        ddb_from=base,
        grain_size=grain_size,
    )
    return new


def _create_delta(
    storage: DiskStorage,
    new: str,
    capacity: int,
    delta_format: str,
    *,
    parent: str,
    parent_cid: int,
    ddb_from: Descriptor,
    grain_size: int = DEFAULT_GRAIN_SIZE,
) -> None:
    """Create the files of an empty delta ``new`` over ``parent``; nothing is left on failure."""
    hint = relative_hint(new, parent)
    directory, _, base = new.rpartition("/")
    stem = base[:-5] if base.lower().endswith(".vmdk") else base
    cid = new_cid()
    created: list[str] = []
    try:
        if delta_format == "monolithicSparse":
            ddb = [
                (k, v)
                for k, v in ddb_from.ddb_items()
                if k.lower() in ("ddb.virtualhwversion", "ddb.adaptertype") or k.lower().startswith("ddb.geometry.")
            ]
            descriptor = Descriptor.new(
                create_type="monolithicSparse",
                extents=[ExtentLine("RW", capacity, "SPARSE", base)],
                cid=cid,
                parent_cid=parent_cid,
                parent_hint=hint,
                ddb=ddb,
                encoding=None,
            )
            if storage.exists(new):
                raise ExistsError(f"{new}: already exists")
            created.append(new)
            create_sparse(storage, new, capacity, grain_size=grain_size, descriptor=descriptor.to_bytes())
            return
        if delta_format == "vmfsSparse":
            extent_base, etype = f"{stem}-delta.vmdk", "VMFSSPARSE"
            ddb = [("ddb.longContentID", new_long_content_id(cid))]
        else:
            extent_base, etype = f"{stem}-sesparse.vmdk", "SESPARSE"
            ddb = [
                ("ddb.encoding", "UTF-8"),
                ("ddb.grain", "8"),
                ("ddb.longContentID", new_long_content_id(cid)),
            ]
        extent_name = join(directory, extent_base)
        for x in (new, extent_name):
            if storage.exists(x):
                raise ExistsError(f"{x}: already exists")
        created.append(extent_name)
        if delta_format == "vmfsSparse":
            create_cowd(storage, extent_name, capacity)
        else:
            create_sesparse(storage, extent_name, capacity)
        descriptor = Descriptor.new(
            create_type=delta_format,
            extents=[ExtentLine("RW", capacity, etype, extent_base)],
            cid=cid,
            parent_cid=parent_cid,
            parent_hint=hint,
            ddb=ddb,
            snapshot=True,
        )
        created.append(new)
        write_descriptor_file(storage, new, descriptor)
    except BaseException:
        for x in created:
            if storage.exists(x):
                storage.remove(x)
        raise


def revert_snapshot(storage: DiskStorage, name: str) -> str:
    """Throw away what the delta ``name`` holds, so the disk reads as its parent again.  The delta
    keeps its files, descriptor and parent; its extent is recreated empty and it gets a new CID
    (its content changed).  Returns ``name``."""
    disk = open_disk(storage, name)  # the chain must be intact
    try:
        if len(disk.layers) < 2:
            raise InvalidArgumentError(f"{name}: not a snapshot (it has no parent)")
        top = disk.top
        desc = top.descriptor
        capacity = disk.sectors
        grain = getattr(top.extents[0], "grain_size", DEFAULT_GRAIN_SIZE)
        embedded = top.embedded is not None
        lines = desc.extents
    finally:
        disk.close()
    create_type = desc.create_type
    if create_type not in DELTA_FORMATS or len(lines) != 1:
        raise UnsupportedError(f"{name}: cannot revert a {create_type} delta with {len(lines)} extents")
    desc.cid = new_cid()
    if embedded:
        data = desc.to_bytes()
        storage.remove(name)
        create_sparse(storage, name, capacity, grain_size=grain, descriptor=data)
        return name
    extent_name = join(parent_dir(name), lines[0].filename or "")
    storage.remove(extent_name)
    if lines[0].type == "VMFSSPARSE":
        create_cowd(storage, extent_name, capacity)
    elif lines[0].type == "SESPARSE":
        create_sesparse(storage, extent_name, capacity)
    else:
        raise UnsupportedError(f"{name}: cannot revert a {lines[0].type} extent")
    data = desc.to_bytes()
    with storage.open(name, "r+b") as fh:
        fh.write(data)
        fh.truncate(len(data))
    return name


def resolve_hint(child: str, hint: str) -> str:
    return hint if hint.startswith("/") else posixpath.normpath(join(parent_dir(child), hint))


def extent_files(storage: DiskStorage, name: str) -> list[str]:
    """Storage names of the files a disk consists of (descriptor excluded, unless embedded)."""
    layer = open_layer(storage, name)
    try:
        if layer.embedded is not None or layer.synthetic:
            return [name]
        return [e.name for e in layer.extents if not e.name.endswith(":ZERO")]
    finally:
        layer.close()


def delete_snapshot(
    storage: DiskStorage, name: str, *, child: str | None = None, progress: Callable[[int, int], None] | None = None
) -> str:
    """Consolidate the delta ``name`` into its parent and remove it; return the parent's name.

    ``progress(done, total)`` is called after each chunk merged, in sectors of the delta's allocated
    ranges.  It should not raise: a merge stopped half-way leaves a parent that no longer matches
    the delta (the tools defer Ctrl-C to the end of a merge).

    ``name`` is normally the leaf.  For a delta in the middle of a chain, pass its ``child``: the
    child is repointed at the parent (hint and parentCID) once the data is merged.
    """
    disk = open_disk(storage, name)
    try:
        if len(disk.layers) < 2:
            raise InvalidArgumentError(f"{name}: not a snapshot (it has no parent)")
        parent_name = disk.layers[1].name
        top = disk.top
        child_layer = None
        if child is not None:
            child_layer = open_layer(storage, child)
            try:
                if child_layer.parent_cid != top.cid:
                    raise InvalidArgumentError(f"{child}: is not a child of {name}")
            finally:
                child_layer.close()
        target = open_disk(storage, parent_name, writable=True)
        try:
            ranges = list(top.allocated())
            total = sum(count for _, count, _ in ranges)
            done = 0
            for start, count, zero in ranges:
                for s in range(start, start + count, COPY_SECTORS):
                    n = min(COPY_SECTORS, start + count - s)
                    if zero:
                        target.write_sectors(s, bytes(n * SECTOR))
                    else:
                        buf, holes = top.read(s, n)
                        if holes:
                            raise VmdkError(f"{name}: allocated range {s}+{n} has holes")
                        target.write_sectors(s, bytes(buf))
                    done += n
                    if progress is not None:
                        progress(done, total)
            target.flush()
            new_parent_cid = target.top.cid
        finally:
            target.close()
    finally:
        disk.close()
    if child is not None:
        layer = open_layer(storage, child, writable=True)
        try:
            layer.descriptor.parent_cid = new_parent_cid
            layer.descriptor.parent_hint = relative_hint(child, parent_name)
            layer.save_descriptor()
        finally:
            layer.close()
    remove_disk_files(storage, name)
    return parent_name


def consolidate(storage: DiskStorage, name: str, *, progress: Callable[[int, int], None] | None = None) -> str:
    """Merge every delta under the leaf ``name`` down into the base disk; return the base name.
    ``progress`` as for :func:`delete_snapshot`, once per delta merged (from 0 again each time)."""
    current = name
    while True:
        layer = open_layer(storage, current)
        try:
            has_parent = layer.descriptor.has_parent
        finally:
            layer.close()
        if not has_parent:
            return current
        current = delete_snapshot(storage, current, progress=progress)


def disk_files(storage: DiskStorage, name: str) -> list[str]:
    """The files of disk ``name`` (its parents excluded): extents, then the descriptor.  A
    descriptor whose extents cannot be opened still yields the names its extent lines give."""
    try:
        files = extent_files(storage, name)
    except VmdkError:
        files = _named_extents(storage, name)
    return [f for f in files if f != name] + [name]


def remove_disk_files(storage: DiskStorage, name: str) -> list[str]:
    """Remove a disk's descriptor and extents (not its parents); return the names removed."""
    removed = []
    for f in disk_files(storage, name):
        if storage.exists(f):
            storage.remove(f)
            removed.append(f)
    return removed


def _named_extents(storage: DiskStorage, name: str) -> list[str]:
    """Extent names from a descriptor whose extents cannot all be opened."""
    try:
        with storage.open(name, "rb") as fh:
            data = fh.read(1 << 20) or b""
        desc = Descriptor.parse(data, source=name)
    except VmdkError:
        return []
    return [join(parent_dir(name), e.filename) for e in desc.extents if e.filename]
