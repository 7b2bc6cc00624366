"""Disk operations as ``vmkfstools`` offers them, as a library API (the tool is a thin wrapper).

=====================  ==========  =============================================================
function               vmkfstools  what it does
=====================  ==========  =============================================================
:func:`create_disk`    ``-c -d``   new disk: thin / zeroedthick / eagerzeroedthick, hosted formats
:func:`clone_disk`     ``-i -d``   copy a whole chain into a new disk of any format
:func:`extend_disk`    ``-X``      grow a disk without snapshots
:func:`inflate_disk`   ``-j``      allocate every block of a thin disk
:func:`eager_zero`     ``-k``      zero the not-yet-zeroed blocks of a zeroedthick disk
:func:`punch_zero`     ``-K``      give all-zero blocks back to a thin disk
:func:`delete_disk`    ``-U``      remove descriptor and extents
:func:`rename_disk`    ``-E``      rename descriptor and extents, fixing the extent lines
:func:`create_rdm`     ``-r -z``   RDM mapping file, virtual or passthrough
:func:`lock_info`      ``-D``      what the storage knows about each file's lock and owner
=====================  ==========  =============================================================

Everything goes through a :class:`~vmfs.vmdk.storage.DiskStorage`, so the same calls work on host
directories and (later) inside VMFS volumes.  An operation that fails removes what it created.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable

from vmfs.vmdk.chain import disk_files, remove_disk_files, write_descriptor_file
from vmfs.vmdk.cowd import create_cowd
from vmfs.vmdk.descriptor import (
    Descriptor,
    ExtentLine,
    canonical_create_type,
    new_cid,
    new_long_content_id,
    new_uuid_text,
)
from vmfs.vmdk.disk import Disk, open_disk
from vmfs.vmdk.errors import ExistsError, InvalidArgumentError, MissingExtentError, UnsupportedError
from vmfs.vmdk.extent import SECTOR, is_zero
from vmfs.vmdk.flat import FlatExtent
from vmfs.vmdk.geometry import ADAPTER_TYPES, geometry_for
from vmfs.vmdk.layer import open_layer
from vmfs.vmdk.sesparse import create_sesparse
from vmfs.vmdk.sparse import DEFAULT_GRAIN_SIZE, SparseExtent, create_sparse, write_embedded_descriptor
from vmfs.vmdk.storage import DiskStorage, join, parent_dir
from vmfs.vmdk.stream_optimized import export_stream
from vmfs.vmdk.thin import eager_zero, inflate_disk, provision_range, provisioning_of, punch_zero, single_layer

#: ``-d`` words and the createType / provisioning they mean.  Hosted and ESX delta formats are
#: accepted under their createType names.
VMFS_FORMATS: dict[str, tuple[str, str]] = {
    "zeroedthick": ("vmfs", "zeroedthick"),
    "thin": ("vmfs", "thin"),
    "eagerzeroedthick": ("vmfs", "eagerzeroedthick"),
    "vmfs": ("vmfs", "zeroedthick"),
    "vmfsThin": ("vmfsThin", "thin"),
    "vmfsPreallocated": ("vmfsPreallocated", "zeroedthick"),
    "vmfsEagerZeroedThick": ("vmfsEagerZeroedThick", "eagerzeroedthick"),
}
HOSTED_FORMATS = (
    "monolithicSparse",
    "monolithicFlat",
    "twoGbMaxExtentSparse",
    "twoGbMaxExtentFlat",
    "streamOptimized",
)
DELTA_FORMATS = ("vmfsSparse", "seSparse")
FORMAT_ALIASES = {"2gbsparse": "twoGbMaxExtentSparse"}
DISK_FORMATS: tuple[str, ...] = (*VMFS_FORMATS, *HOSTED_FORMATS, *DELTA_FORMATS, *FORMAT_ALIASES)

#: Split size of twoGbMaxExtent* extents: VMware's 2047 MiB (qemu uses exactly 2 GiB).
SPLIT_SECTORS = 4192256
#: sectors per copy step
COPY_SECTORS = 2048
DEFAULT_ADAPTER = "lsilogic"
DEFAULT_HW_VERSION_VMFS = "13"
DEFAULT_HW_VERSION_HOSTED = "4"


def normalize_format(disk_format: str) -> str:
    """The canonical ``-d`` word (case-insensitive; ``2gbsparse`` and createType aliases)."""
    lowered = {f.lower(): f for f in (*VMFS_FORMATS, *HOSTED_FORMATS, *DELTA_FORMATS)}
    lowered.update(FORMAT_ALIASES)
    key = disk_format.lower()
    if key in lowered:
        return lowered[key]
    canonical = canonical_create_type(disk_format)
    if canonical in VMFS_FORMATS or canonical in HOSTED_FORMATS or canonical in DELTA_FORMATS:
        return canonical
    raise InvalidArgumentError(f"unknown disk format {disk_format!r} (use one of {', '.join(DISK_FORMATS)})")


def _stem(name: str) -> tuple[str, str]:
    directory, _, base = name.rpartition("/")
    if not base.lower().endswith(".vmdk") or len(base) <= 5:
        raise InvalidArgumentError(f"{name}: disk names end in .vmdk")
    return directory, base[:-5]


def _sectors(size: int) -> int:
    if size <= 0:
        raise InvalidArgumentError(f"disk size must be positive (got {size})")
    return -(-size // SECTOR)


def _ddb(
    capacity: int, adapter: str, hwversion: str, *, thin: bool = False, vmfs: bool = True, cid: int = 0
) -> list[tuple[str, str]]:
    geo = geometry_for(capacity, adapter)
    if vmfs:  # ESXi writes its DDB sorted by key
        items = [
            ("ddb.adapterType", adapter),
            ("ddb.geometry.cylinders", str(geo.cylinders)),
            ("ddb.geometry.heads", str(geo.heads)),
            ("ddb.geometry.sectors", str(geo.sectors)),
            ("ddb.longContentID", new_long_content_id(cid)),
        ]
        if thin:
            items.append(("ddb.thinProvisioned", "1"))
        return [*items, ("ddb.uuid", new_uuid_text()), ("ddb.virtualHWVersion", hwversion)]
    return [
        ("ddb.virtualHWVersion", hwversion),
        ("ddb.geometry.cylinders", str(geo.cylinders)),
        ("ddb.geometry.heads", str(geo.heads)),
        ("ddb.geometry.sectors", str(geo.sectors)),
        ("ddb.adapterType", adapter),
    ]


class _Undo:
    """Names created so far, removed again if the operation fails."""

    def __init__(self, storage: DiskStorage) -> None:
        self.storage = storage
        self.names: list[str] = []

    def check_free(self, *names: str) -> None:
        for name in names:
            if self.storage.exists(name):
                raise ExistsError(f"{name}: already exists")

    def add(self, name: str) -> str:
        self.names.append(name)
        return name

    def rollback(self) -> None:
        for name in reversed(self.names):
            if self.storage.exists(name):
                self.storage.remove(name)


def _split(capacity: int) -> list[int]:
    return [min(SPLIT_SECTORS, capacity - s) for s in range(0, capacity, SPLIT_SECTORS)]


def create_disk(
    storage: DiskStorage,
    name: str,
    size: int,
    disk_format: str = "zeroedthick",
    *,
    adapter: str = DEFAULT_ADAPTER,
    hwversion: str | None = None,
    grain_size: int = DEFAULT_GRAIN_SIZE,
    zeroed_grain: bool = False,
    hosted_provisioning: str = "zeroedthick",
    progress: Callable[[int, int], None] | None = None,
) -> str:
    """Create a new, zero-filled disk of ``size`` bytes (rounded up to whole sectors).

    With ``progress`` (done, total in sectors) a thick VMFS-format disk is made thin first and
    then allocated chunk by chunk (:func:`vmfs.vmdk.thin.provision_range`), so a long eager-zeroed
    create reports and can be stopped between chunks; a stop removes what was created."""
    fmt = normalize_format(disk_format)
    if adapter not in ADAPTER_TYPES:
        raise InvalidArgumentError(f"unknown adapter type {adapter!r} (use one of {', '.join(ADAPTER_TYPES)})")
    capacity = _sectors(size)
    directory, stem = _stem(name)
    undo = _Undo(storage)
    undo.check_free(name)
    cid = new_cid()
    try:
        if fmt in VMFS_FORMATS:
            create_type, provisioning = VMFS_FORMATS[fmt]
            flat = f"{stem}-flat.vmdk"
            undo.check_free(join(directory, flat))
            if progress is None or provisioning == "thin":
                storage.create(undo.add(join(directory, flat)), capacity * SECTOR, provisioning)
            else:
                storage.create(undo.add(join(directory, flat)), capacity * SECTOR, "thin")
                provision_range(storage, join(directory, flat), 0, capacity * SECTOR, provisioning,
                                progress=progress, total=capacity)
            ddb = _ddb(capacity, adapter, hwversion or DEFAULT_HW_VERSION_VMFS, thin=provisioning == "thin", cid=cid)
            desc = Descriptor.new(
                create_type=create_type, extents=[ExtentLine("RW", capacity, "VMFS", flat)], cid=cid, ddb=ddb
            )
            write_descriptor_file(storage, undo.add(name), desc)
        elif fmt in ("monolithicSparse", "streamOptimized"):
            desc = Descriptor.new(
                create_type=fmt,
                extents=[ExtentLine("RW", capacity, "SPARSE", f"{stem}.vmdk")],
                cid=cid,
                ddb=_ddb(capacity, adapter, hwversion or DEFAULT_HW_VERSION_HOSTED, vmfs=False),
                encoding=None,
            )
            undo.add(name)
            if fmt == "monolithicSparse":
                create_sparse(
                    storage,
                    name,
                    capacity,
                    grain_size=grain_size,
                    descriptor=desc.to_bytes(),
                    zeroed_grain=zeroed_grain,
                )
            else:
                export_stream(lambda s, n: bytes(n * SECTOR), storage, name, capacity, descriptor=desc.to_bytes())
        elif fmt in ("monolithicFlat", "twoGbMaxExtentFlat", "twoGbMaxExtentSparse"):
            sizes = [capacity] if fmt == "monolithicFlat" else _split(capacity)
            lines = []
            for i, n in enumerate(sizes, 1):
                if fmt == "monolithicFlat":
                    ext = f"{stem}-flat.vmdk"
                else:
                    ext = f"{stem}-{'s' if fmt.endswith('Sparse') else 'f'}{i:03d}.vmdk"
                undo.check_free(join(directory, ext))
                undo.add(join(directory, ext))
                if fmt == "twoGbMaxExtentSparse":
                    create_sparse(storage, join(directory, ext), n, grain_size=grain_size, zeroed_grain=zeroed_grain)
                    lines.append(ExtentLine("RW", n, "SPARSE", ext))
                else:
                    storage.create(join(directory, ext), n * SECTOR, hosted_provisioning)
                    lines.append(ExtentLine("RW", n, "FLAT", ext, 0))
            desc = Descriptor.new(
                create_type=fmt,
                extents=lines,
                cid=cid,
                ddb=_ddb(capacity, adapter, hwversion or DEFAULT_HW_VERSION_HOSTED, vmfs=False),
                encoding=None,
            )
            write_descriptor_file(storage, undo.add(name), desc)
        else:  # vmfsSparse / seSparse without a parent
            suffix, etype = ("delta", "VMFSSPARSE") if fmt == "vmfsSparse" else ("sesparse", "SESPARSE")
            ext = f"{stem}-{suffix}.vmdk"
            undo.check_free(join(directory, ext))
            undo.add(join(directory, ext))
            if fmt == "vmfsSparse":
                create_cowd(storage, join(directory, ext), capacity, geometry=geometry_for(capacity, adapter))
            else:
                create_sesparse(storage, join(directory, ext), capacity)
            desc = Descriptor.new(
                create_type=fmt,
                extents=[ExtentLine("RW", capacity, etype, ext)],
                cid=cid,
                ddb=_ddb(capacity, adapter, hwversion or DEFAULT_HW_VERSION_VMFS, cid=cid),
            )
            write_descriptor_file(storage, undo.add(name), desc)
    except BaseException:
        undo.rollback()
        raise
    return name


def copy_disk(
    src: Disk, dst: Disk, *, progress: Callable[[int, int], None] | None = None, chunk: int = COPY_SECTORS
) -> None:
    """Copy every non-zero chunk of ``src`` into ``dst`` (which reads as zeros to begin with)."""
    total = min(src.sectors, dst.sectors)
    for s in range(0, total, chunk):
        n = min(chunk, total - s)
        data = src.read_sectors(s, n)
        if not is_zero(data):
            dst.write_sectors(s, data)
        if progress is not None:
            progress(s + n, total)


def _source_settings(disk: Disk) -> tuple[str, str | None]:
    adapter = None
    hwversion = None
    for layer in reversed(disk.layers):  # the base holds the DDB; children usually do not
        adapter = layer.descriptor.adapter_type or adapter
        hwversion = layer.descriptor.get("ddb.virtualHWVersion") or hwversion
    return (adapter if adapter in ADAPTER_TYPES else DEFAULT_ADAPTER), hwversion


def clone_disk(
    src_storage: DiskStorage,
    src: str,
    dst_storage: DiskStorage,
    dst: str,
    disk_format: str = "zeroedthick",
    *,
    adapter: str | None = None,
    hwversion: str | None = None,
    grain_size: int = DEFAULT_GRAIN_SIZE,
    progress: Callable[[int, int], None] | None = None,
) -> str:
    """Copy the disk ``src`` (with its whole chain, flattened) into a new disk ``dst`` of
    ``disk_format``.  The source is only read."""
    fmt = normalize_format(disk_format)
    source = open_disk(src_storage, src)
    try:
        src_adapter, src_hw = _source_settings(source)
        adapter = adapter or src_adapter
        hwversion = hwversion or src_hw
        if fmt == "streamOptimized":
            _, stem = _stem(dst)
            if dst_storage.exists(dst):
                raise ExistsError(f"{dst}: already exists")
            desc = Descriptor.new(
                create_type=fmt,
                extents=[ExtentLine("RW", source.sectors, "SPARSE", f"{stem}.vmdk")],
                ddb=_ddb(source.sectors, adapter, hwversion or DEFAULT_HW_VERSION_HOSTED, vmfs=False),
                encoding=None,
            )
            export_stream(source.read_sectors, dst_storage, dst, source.sectors, descriptor=desc.to_bytes())
            return dst
        create_disk(
            dst_storage,
            dst,
            source.size,
            fmt,
            adapter=adapter,
            hwversion=hwversion,
            grain_size=grain_size,
            hosted_provisioning="thin",
        )
        try:
            target = open_disk(dst_storage, dst, writable=True)
            try:
                copy_disk(source, target, progress=progress)
            finally:
                target.close()
        except BaseException:
            remove_disk_files(dst_storage, dst)
            raise
        return dst
    finally:
        source.close()


def extend_disk(
    storage: DiskStorage,
    name: str,
    size: int,
    *,
    provisioning: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Grow a disk to ``size`` bytes (``vmkfstools -X``).  Deltas, streams and RDMs cannot grow,
    and a disk cannot shrink.  New flat space is allocated per ``provisioning`` (default: thin
    for thin disks, zeroedthick otherwise), chunk by chunk with ``progress(done, total)`` in new
    sectors between chunks.  If it raises, the descriptor keeps the old size (the disk reads as
    before), the grown last file keeps what was allocated and new extent files are removed:
    running the same extend again finishes it."""
    capacity = _sectors(size)
    probe = single_layer(storage, name, writable=False)  # refuse before opening for writing
    try:
        ctype = probe.descriptor.create_type
        lines = probe.descriptor.extents
        if capacity < probe.capacity:
            raise InvalidArgumentError(f"{name}: new size {capacity} sectors is smaller than {probe.capacity}")
        if capacity == probe.capacity:
            return
        if ctype == "streamOptimized" or ctype.startswith("vmfsRaw") or ctype in DELTA_FORMATS:
            raise UnsupportedError(f"{name}: a {ctype} disk cannot be extended")
        if any(line.type not in ("FLAT", "VMFS", "SPARSE") for line in lines):
            raise UnsupportedError(f"{name}: extents of type {', '.join({x.type for x in lines})} cannot grow")
    finally:
        probe.close()
    layer = open_layer(storage, name, writable=True)
    try:
        desc = layer.descriptor
        lines = desc.extents
        prov = provisioning or provisioning_of(desc)
        layer.mark_modified()  # new CID and unclean marks, before anything changes
        grow = capacity - layer.capacity
        directory, stem = _stem(name)
        split = ctype.startswith("twoGbMaxExtent")
        last_ext = layer.extents[-1]
        room = (SPLIT_SECTORS - last_ext.capacity) if split else grow
        add = min(max(room, 0), grow)
        total, done = grow, 0
        if progress is not None:
            progress(0, total)
        undo = _Undo(storage)
        try:
            if add:
                if isinstance(last_ext, SparseExtent):
                    last_ext.grow(last_ext.capacity + add)
                    done += add
                elif isinstance(last_ext, FlatExtent):
                    start = (last_ext.offset + last_ext.capacity) * SECTOR
                    storage.resize(last_ext.name, start + add * SECTOR, "thin")  # a hole first, then
                    done = provision_range(storage, last_ext.name, start, start + add * SECTOR, prov,
                                           progress=progress, done=done, total=total)
                lines[-1].sectors += add
                grow -= add
            index = len(lines)
            for n in _split(grow) if grow else []:
                index += 1
                sparse = lines[-1].type == "SPARSE"
                ext = f"{stem}-{'s' if sparse else 'f'}{index:03d}.vmdk"
                undo.check_free(join(directory, ext))
                if sparse:
                    create_sparse(storage, undo.add(join(directory, ext)), n,
                                  grain_size=getattr(last_ext, "grain_size", 128))
                    lines.append(ExtentLine("RW", n, "SPARSE", ext))
                    done += n
                else:
                    storage.create(undo.add(join(directory, ext)), n * SECTOR, "thin")
                    done = provision_range(storage, join(directory, ext), 0, n * SECTOR, prov,
                                           progress=progress, done=done, total=total)
                    lines.append(ExtentLine("RW", n, "FLAT", ext, 0))
        except BaseException:
            undo.rollback()
            raise
        if progress is not None:
            progress(total, total)
        desc.set_extents(lines)
        geo = desc.geometry
        adapter = desc.adapter_type
        if geo is not None and adapter in ADAPTER_TYPES:
            desc.geometry = geometry_for(capacity, adapter)
        layer.save_descriptor()
    finally:
        layer.close()


def delete_disk(storage: DiskStorage, name: str) -> list[str]:
    """Remove the disk's descriptor and extents, not its parents (``vmkfstools -U``)."""
    if not storage.exists(name):
        raise InvalidArgumentError(f"{name}: no such disk")
    return remove_disk_files(storage, name)


def rename_disk(storage: DiskStorage, old: str, new: str) -> str:
    """Rename a disk and its extents (``vmkfstools -E``).  Extent files named after the old disk
    follow the new name; the descriptor's extent lines are rewritten to match."""
    _, old_stem = _stem(old)
    new_dir, new_stem = _stem(new)
    old_dir = parent_dir(old)
    if storage.exists(new):
        raise ExistsError(f"{new}: already exists")
    layer = open_layer(storage, old)
    try:
        desc = layer.descriptor
        if layer.embedded is not None or layer.synthetic:
            lines = desc.extents
            if len(lines) == 1 and lines[0].filename is not None:
                lines[0].filename = posixpath.basename(new)
            desc.set_extents(lines)
            layer.close()
            if not layer.synthetic:
                write_embedded_descriptor(storage, old, desc.to_bytes())
            storage.rename(old, new)
            return new
        moves: list[tuple[str, str]] = []
        lines = desc.extents
        for line in lines:
            if line.filename is None:
                continue
            fname = line.filename
            base = posixpath.basename(fname)
            if base.startswith(old_stem + "-") or base == old_stem + ".vmdk":
                new_base = new_stem + base[len(old_stem) :]
            else:
                new_base = base
            src = join(old_dir, fname)
            dst = join(new_dir, posixpath.join(posixpath.dirname(fname), new_base))
            if src != dst:
                if storage.exists(dst):
                    raise ExistsError(f"{dst}: already exists")
                moves.append((src, dst))
            line.filename = posixpath.relpath(dst, new_dir or ".") if not fname.startswith("/") else dst
        desc.set_extents(lines)
        data = desc.to_bytes()
    finally:
        layer.close()
    done: list[tuple[str, str]] = []
    try:
        for src, dst in moves:
            storage.rename(src, dst)
            done.append((src, dst))
        storage.create(new, 0, "thin")
        with storage.open(new, "r+b") as fh:
            fh.write(data)
    except BaseException:
        for src, dst in reversed(done):
            storage.rename(dst, src)
        raise
    storage.remove(old)
    return new


def create_rdm(
    storage: DiskStorage,
    name: str,
    device: str,
    device_sectors: int,
    *,
    passthrough: bool = False,
    adapter: str = DEFAULT_ADAPTER,
    hwversion: str = DEFAULT_HW_VERSION_VMFS,
) -> str:
    """Create an RDM descriptor and mapping file for ``device`` (``-r`` virtual, ``-z``
    passthrough).  A backend with ``create_rdm(name, device, size, passthrough)`` records the
    device natively (VMFS RDM inode); otherwise the mapping file is a sparse file of the LUN size."""
    if device_sectors <= 0:
        raise InvalidArgumentError(f"{device}: device has no sectors")
    directory, stem = _stem(name)
    mapping = f"{stem}-{'rdmp' if passthrough else 'rdm'}.vmdk"
    undo = _Undo(storage)
    undo.check_free(name, join(directory, mapping))
    cid = new_cid()
    try:
        creator = getattr(storage, "create_rdm", None)
        undo.add(join(directory, mapping))
        if creator is not None:
            creator(join(directory, mapping), device, device_sectors * SECTOR, passthrough)
        else:
            storage.create(join(directory, mapping), device_sectors * SECTOR, "thin")
        desc = Descriptor.new(
            create_type="vmfsPassthroughRawDeviceMap" if passthrough else "vmfsRawDeviceMap",
            extents=[ExtentLine("RW", device_sectors, "VMFSRDM", mapping)],
            cid=cid,
            ddb=_ddb(device_sectors, adapter, hwversion, cid=cid),
        )
        write_descriptor_file(storage, undo.add(name), desc)
    except BaseException:
        undo.rollback()
        raise
    return name


def lock_info(storage: DiskStorage, name: str) -> list[dict[str, str]]:
    """``describe_lock`` of the descriptor and of every extent file that exists (``vmkfstools
    -D``).  Works on damaged disks too: the extent names then come from the descriptor text."""
    if not storage.exists(name):
        raise MissingExtentError(f"{name}: no such disk")
    files = [name] + [f for f in disk_files(storage, name) if f != name and storage.exists(f)]
    return [storage.describe_lock(f) for f in files]


def disk_info(storage: DiskStorage, name: str) -> dict[str, object]:
    """The chain summary of :meth:`Disk.info`."""
    disk = open_disk(storage, name)
    try:
        return disk.info()
    finally:
        disk.close()


__all__ = [
    "DISK_FORMATS",
    "clone_disk",
    "copy_disk",
    "create_disk",
    "create_rdm",
    "delete_disk",
    "disk_info",
    "eager_zero",
    "extend_disk",
    "inflate_disk",
    "lock_info",
    "normalize_format",
    "punch_zero",
    "rename_disk",
]
