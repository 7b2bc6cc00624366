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
from typing import Protocol, runtime_checkable

from vmfs.vmdk.chain import remove_disk_files, write_descriptor_file
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
from vmfs.vmdk.errors import ExistsError, InvalidArgumentError, UnsupportedError
from vmfs.vmdk.extent import SECTOR, is_zero
from vmfs.vmdk.flat import FlatExtent
from vmfs.vmdk.geometry import ADAPTER_TYPES, geometry_for
from vmfs.vmdk.layer import Layer, open_layer
from vmfs.vmdk.sesparse import create_sesparse
from vmfs.vmdk.sparse import DEFAULT_GRAIN_SIZE, SparseExtent, create_sparse, write_embedded_descriptor
from vmfs.vmdk.storage import DiskStorage, ThinStorage, join, parent_dir
from vmfs.vmdk.stream_optimized import export_stream

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
#: granularity of zero detection for ``punch_zero`` (a host file system block)
PUNCH_BLOCK = 4096


@runtime_checkable
class ProvisioningStorage(Protocol):
    """Optional: change how an existing file is allocated, natively (VMFS: allocate and zero
    blocks, clear to-be-zeroed flags).  Without it, holes are filled by writing zeros."""

    def set_provisioning(self, name: str, provisioning: str) -> None: ...


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
) -> str:
    """Create a new, zero-filled disk of ``size`` bytes (rounded up to whole sectors)."""
    fmt = normalize_format(disk_format)
    if adapter not in ADAPTER_TYPES:
        raise InvalidArgumentError(
            f"unknown adapter type {adapter!r} (use one of {', '.join(ADAPTER_TYPES)})"
        )
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
            storage.create(undo.add(join(directory, flat)), capacity * SECTOR, provisioning)  # type: ignore[arg-type]
            ddb = _ddb(
                capacity, adapter, hwversion or DEFAULT_HW_VERSION_VMFS, thin=provisioning == "thin", cid=cid
            )
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
                export_stream(
                    lambda s, n: bytes(n * SECTOR), storage, name, capacity, descriptor=desc.to_bytes()
                )
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
                    create_sparse(
                        storage, join(directory, ext), n, grain_size=grain_size, zeroed_grain=zeroed_grain
                    )
                    lines.append(ExtentLine("RW", n, "SPARSE", ext))
                else:
                    storage.create(join(directory, ext), n * SECTOR, hosted_provisioning)  # type: ignore[arg-type]
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


def _single_layer(storage: DiskStorage, name: str, *, writable: bool) -> Layer:
    layer = open_layer(storage, name, writable=writable)
    if layer.descriptor.has_parent:
        layer.close()
        raise UnsupportedError(f"{name}: disk is a snapshot delta (consolidate its snapshots first)")
    return layer


def _provisioning(desc: Descriptor) -> str:
    if desc.thin_provisioned or desc.create_type == "vmfsThin":
        return "thin"
    if desc.create_type == "vmfsEagerZeroedThick":
        return "eagerzeroedthick"
    return "zeroedthick"


def extend_disk(storage: DiskStorage, name: str, size: int) -> None:
    """Grow a disk to ``size`` bytes (``vmkfstools -X``).  Deltas, streams and RDMs cannot grow,
    and a disk cannot shrink."""
    capacity = _sectors(size)
    layer = _single_layer(storage, name, writable=True)
    try:
        desc = layer.descriptor
        ctype = desc.create_type
        if capacity < layer.capacity:
            raise InvalidArgumentError(
                f"{name}: new size {capacity} sectors is smaller than {layer.capacity}"
            )
        if capacity == layer.capacity:
            return
        lines = desc.extents
        if ctype in ("streamOptimized",) or ctype.startswith("vmfsRaw") or ctype in DELTA_FORMATS:
            raise UnsupportedError(f"{name}: a {ctype} disk cannot be extended")
        if any(line.type not in ("FLAT", "VMFS", "SPARSE") for line in lines):
            raise UnsupportedError(
                f"{name}: extents of type {', '.join({x.type for x in lines})} cannot grow"
            )
        layer.mark_modified()  # new CID and unclean marks, before anything changes
        grow = capacity - layer.capacity
        directory, stem = _stem(name)
        split = ctype.startswith("twoGbMaxExtent")
        last_ext = layer.extents[-1]
        room = (SPLIT_SECTORS - last_ext.capacity) if split else grow
        add = min(max(room, 0), grow)
        if add:
            if isinstance(last_ext, SparseExtent):
                last_ext.grow(last_ext.capacity + add)
            elif isinstance(last_ext, FlatExtent):
                storage.resize(
                    last_ext.name,
                    (last_ext.offset + last_ext.capacity + add) * SECTOR,
                    _provisioning(desc),  # type: ignore[arg-type]
                )
            lines[-1].sectors += add
            grow -= add
        index = len(lines)
        for n in _split(grow) if grow else []:
            index += 1
            sparse = lines[-1].type == "SPARSE"
            ext = f"{stem}-{'s' if sparse else 'f'}{index:03d}.vmdk"
            if sparse:
                create_sparse(
                    storage, join(directory, ext), n, grain_size=getattr(last_ext, "grain_size", 128)
                )
                lines.append(ExtentLine("RW", n, "SPARSE", ext))
            else:
                storage.create(join(directory, ext), n * SECTOR, _provisioning(desc))  # type: ignore[arg-type]
                lines.append(ExtentLine("RW", n, "FLAT", ext, 0))
        desc.set_extents(lines)
        geo = desc.geometry
        adapter = desc.adapter_type
        if geo is not None and adapter in ADAPTER_TYPES:
            style = "vmware" if ctype.startswith("vmfs") else "qemu"
            desc.geometry = geometry_for(capacity, adapter, style)  # type: ignore[arg-type]
        layer.save_descriptor()
    finally:
        layer.close()


def _flat_extents(layer: Layer, what: str) -> list[FlatExtent]:
    exts = [e for e in layer.extents if isinstance(e, FlatExtent)]
    if len(exts) != len(layer.extents) or layer.descriptor.create_type.startswith("vmfsRaw"):
        raise UnsupportedError(f"{layer.name}: {what} applies to flat (VMFS) disks only")
    return exts


def _fill_holes(storage: DiskStorage, ext: FlatExtent, provisioning: str) -> None:
    if isinstance(storage, ProvisioningStorage):
        storage.set_provisioning(ext.name, provisioning)
        return
    if not isinstance(storage, ThinStorage):
        return  # nothing is known to be unallocated
    end = (ext.offset + ext.capacity) * SECTOR
    pos = ext.offset * SECTOR
    holes = []
    for start, length in storage.allocated_ranges(ext.name):
        if start > pos:
            holes.append((pos, min(start, end) - pos))
        pos = max(pos, start + length)
    if pos < end:
        holes.append((pos, end - pos))
    with storage.open(ext.name, "r+b") as fh:
        for start, length in holes:
            fh.seek(start)
            while length > 0:
                n = min(length, 1 << 20)
                fh.write(bytes(n))
                length -= n


def inflate_disk(storage: DiskStorage, name: str) -> None:
    """Allocate every block of a thin disk; it becomes eager-zeroed thick (``vmkfstools -j``)."""
    layer = _single_layer(storage, name, writable=True)
    try:
        desc = layer.descriptor
        if _provisioning(desc) != "thin":
            raise InvalidArgumentError(f"{name}: disk is not thin provisioned")
        for ext in _flat_extents(layer, "inflating"):
            _fill_holes(storage, ext, "eagerzeroedthick")
        desc.remove("ddb.thinProvisioned")
        if desc.create_type == "vmfsThin":
            desc.set("createType", "vmfsEagerZeroedThick")
        layer.save_descriptor()
    finally:
        layer.close()


def eager_zero(storage: DiskStorage, name: str) -> None:
    """Zero every block not yet zeroed in a zeroedthick disk (``vmkfstools -k``).  On a host file
    system, preallocated blocks already read as zeros; only holes need writing."""
    layer = _single_layer(storage, name, writable=True)
    try:
        if _provisioning(layer.descriptor) == "thin":
            raise InvalidArgumentError(f"{name}: disk is thin provisioned (inflate it with -j)")
        for ext in _flat_extents(layer, "eager zeroing"):
            _fill_holes(storage, ext, "eagerzeroedthick")
        if layer.descriptor.create_type in ("vmfsPreallocated",):
            layer.descriptor.set("createType", "vmfsEagerZeroedThick")
            layer.save_descriptor()
    finally:
        layer.close()


def punch_zero(storage: DiskStorage, name: str, *, block: int = PUNCH_BLOCK) -> int:
    """Deallocate all-zero blocks of a flat disk, which becomes thin (``vmkfstools -K``).
    Returns the number of bytes given back."""
    if not isinstance(storage, ThinStorage):
        raise UnsupportedError(f"{name}: the storage cannot deallocate blocks")
    layer = _single_layer(storage, name, writable=True)
    punched = 0
    try:
        zero_block = bytes(block)
        for ext in _flat_extents(layer, "punching zeros"):
            base = ext.offset * SECTOR
            end = base + ext.capacity * SECTOR
            runs: list[tuple[int, int]] = []
            with storage.open(ext.name, "rb") as fh:
                for start, length in storage.allocated_ranges(ext.name):
                    lo = max(start, base) // block * block
                    hi = min(start + length, end)
                    pos = lo
                    while pos < hi:
                        fh.seek(pos)
                        chunk = fh.read(min(1 << 20, hi - pos)) or b""
                        if not chunk:
                            break
                        for off in range(0, len(chunk), block):
                            piece = chunk[off : off + block]
                            if piece == zero_block[: len(piece)] and pos + off >= base:
                                if runs and runs[-1][0] + runs[-1][1] == pos + off:
                                    runs[-1] = (runs[-1][0], runs[-1][1] + len(piece))
                                else:
                                    runs.append((pos + off, len(piece)))
                        pos += len(chunk)
            for start, length in runs:
                storage.punch_zero(ext.name, start, length)
                punched += length
        desc = layer.descriptor
        if desc.create_type.startswith("vmfs") and not desc.thin_provisioned:
            desc.set("ddb.thinProvisioned", "1")
            layer.save_descriptor()
    finally:
        layer.close()
    return punched


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
    """``describe_lock`` of the descriptor and of every extent file (``vmkfstools -D``)."""
    files = [name]
    try:
        layer = open_layer(storage, name)
    except UnsupportedError:
        layer = None
    if layer is not None:
        try:
            files += [e.name for e in layer.extents if e.name != name and storage.exists(e.name)]
        finally:
            layer.close()
    return [storage.describe_lock(f) for f in files]


def disk_info(storage: DiskStorage, name: str) -> dict[str, object]:
    """The chain summary of :meth:`Disk.info`."""
    disk = open_disk(storage, name)
    try:
        return disk.info()
    finally:
        disk.close()
