"""Corruptions for the fsck corpus, applied through the construct declarations of vmfs/ondisk.

A recipe (``fixtures/fsck/<case>/recipe.json``) lists operations; each names a structure by what it
is on the volume (a file's FD, an entry of a directory, a cluster of a resource, a heartbeat slot)
and the field to change.  The library opened read-only finds where things are; the bytes are
changed through the logical volume.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.fsck import volumes
from vmfs.cluster.alloc import bitmap_mark
from vmfs.cluster.attachment import HostAttachment
from vmfs.device.file import FileDevice
from vmfs.device.lvm import open_logical_volume
from vmfs.format import address as A
from vmfs.ondisk import resource as R
from vmfs.ondisk.dirent5 import DIRENT5_SIZE, Dirent5
from vmfs.ondisk.dirent6 import DIR6_BLOCK_HEADER_SIZE, DIR6_HEADER_SIZE, DIRENT6_SIZE, Dir6BlockHeader, Dirent6
from vmfs.ondisk.fsdesc import FS_DESCRIPTOR_OFFSET, FsDescriptor
from vmfs.ondisk.heartbeat import Heartbeat
from vmfs.volume.directory import open_directory
from vmfs.volume.filereader import FileReader
from vmfs.volume.namespace import FileSystem
from vmfs.volume.volume import SYSTEM_FDS, Volume
from vmfs.write.dirchange6 import PARENT_AT as DIR6_PARENT_AT
from vmfs.write.dirchange6 import SELF_AT as DIR6_SELF_AT
from vmfs.write.dirchange6 import DirectoryChanges6
from vmfs.write.posix import WritableFileSystem

RESOURCES = {"FB": R.RES_FB, "SB": R.RES_SB, "PB": R.RES_PB, "FD": R.RES_FD, "PB2": R.RES_PB2}


class Image:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.vol = Volume.open(path)
        self.fs = FileSystem(self.vol)
        self.geo = self.vol.geometry
        self.dev = FileDevice(path, readonly=False)
        self.lv = open_logical_volume([self.dev])

    def close(self) -> None:
        self.vol.close()
        self.lv.close()

    # -- bytes --------------------------------------------------------------------------------

    def read(self, offset: int, length: int) -> bytes:
        return self.lv.read(offset, length)

    def write(self, offset: int, data: bytes) -> None:
        self.lv.write(offset, data)

    # -- FDs ------------------------------------------------------------------------------------

    def fd(self, path: str):  # type: ignore[no-untyped-def]
        if path in SYSTEM_FDS:
            return self.vol.read_fd(SYSTEM_FDS[path])
        return self.fs.resolve(path, follow=False)

    def edit_fd(self, path: str, change: Callable[[Any], None]) -> None:
        fd = self.fd(path)
        struct = self.geo.structs.file_descriptor
        parsed = struct.parse(self.read(fd.vol_offset, self.geo.fd_size))
        change(parsed)
        self.write(fd.vol_offset, struct.build(parsed))

    def pointers(self, parsed: Any) -> list[int]:
        from vmfs.ondisk.common import unpack_ints

        start = self.geo.ptr_array_offset - self.geo.fd_data_offset
        width = self.geo.addr_width
        return list(unpack_ints(parsed.data[start : start + self.geo.ptr_count * width], width))

    def set_pointers(self, parsed: Any, ptrs: list[int]) -> None:
        from vmfs.format.builders import pointer_array_bytes

        parsed.data = pointer_array_bytes(self.geo, ptrs)

    # -- directories ------------------------------------------------------------------------------

    def dir_location(self, dirpath: str, file_offset: int) -> int:
        fd = self.fs.resolve(dirpath)
        return FileReader(fd).volume_offset(file_offset)

    def entry_offset(self, dirpath: str, name: str) -> int:
        fd = self.fs.resolve(dirpath)
        if name in (".", ".."):
            if self.geo.vmfs6:  # the header's self and parent entries (vmfs-format.md 9.2)
                return DIR6_SELF_AT if name == "." else DIR6_PARENT_AT
            return 0 if name == "." else DIRENT5_SIZE
        return open_directory(self.vol, fd).lookup(name).offset

    def edit_entry(self, dirpath: str, name: str, change: Callable[[Any], None]) -> None:
        off = self.entry_offset(dirpath, name)
        where = self.dir_location(dirpath, off)
        struct, size = (Dirent6, DIRENT6_SIZE) if self.geo.vmfs6 else (Dirent5, DIRENT5_SIZE)
        ent = struct.parse(self.read(where, size))
        change(ent)
        self.write(where, struct.build(ent))

    def dir_slots(self, dirpath: str) -> list[bytes]:
        fd = self.fs.resolve(dirpath)
        raw = FileReader(fd).read(0, fd.size)
        return [raw[i : i + DIRENT5_SIZE] for i in range(0, len(raw), DIRENT5_SIZE)]

    def write_dir(self, dirpath: str, slots: list[bytes]) -> None:
        """Rewrite a directory's slots in place (within its allocated blocks) and its length."""
        for i, s in enumerate(slots):
            self.write(self.dir_location(dirpath, i * DIRENT5_SIZE), s)
        self.edit_fd(dirpath, lambda p: setattr(p.meta, "fileLength", len(slots) * DIRENT5_SIZE))

    # -- resources --------------------------------------------------------------------------------

    def cluster_offset(self, kind: int, cluster: int) -> int:
        res = self.vol.resources[kind]
        return res.reader.volume_offset(res.cluster_header_offset(cluster))

    def edit_cluster(self, kind: int, cluster: int, change: Callable[[Any, Any, bytearray], None]) -> None:
        """``change(lock, meta, bitmap)`` on one cluster header; the bitmap (``bits`` per resource,
        VMFS5 ``bitmap``, VMFS6 the start of ``body``) is written back as changed, the counts as
        ``change`` leaves them."""
        res = self.vol.resources[kind]
        off = self.cluster_offset(kind, cluster)
        md = res.ch // 2
        size = res.meta_struct.sizeof()
        lock = self.geo.structs.lock.parse(self.read(off, md))
        meta = res.meta_struct.parse(self.read(off + md, size))
        bitmap = bytearray(meta.body[: res.bitmap_size]) if self.geo.vmfs6 else bytearray(meta.bitmap)
        change(lock, meta, bitmap)
        if self.geo.vmfs6:
            meta.body = bytes(bitmap) + meta.body[len(bitmap) :]
        else:
            meta.bitmap = bytes(bitmap)
        self.write(off, self.geo.structs.lock.build(lock))
        self.write(off + md, res.meta_struct.build(meta))

    # -- VMFS6 directories, changed through the library -------------------------------------------

    def dir6_change(self, dirpath: str, change: Callable[[Any, Any], None]) -> None:
        """``change(changes, tx)`` with a DirectoryChanges6 of ``dirpath`` in a transaction of a
        host that then leaves cleanly: entries added or removed as the library does, nothing
        else (no FD or link count follows)."""
        self.close()
        with HostAttachment.open(self.path, host=volumes.host()) as vol:
            fd = WritableFileSystem(vol).resolve(dirpath)
            with vol.transaction() as tx:
                change(DirectoryChanges6(vol, open_directory(vol.volume, fd)), tx)
        self.__init__(self.path)  # type: ignore[misc]

    def block_of(self, path: str, index: int) -> int:
        fd = self.fd(path)
        return self.geo.codec.fb_block(fd.pointers[index])


# -- operations ------------------------------------------------------------------------------------


def _value(current: int, spec: Any) -> int:
    if isinstance(spec, dict):
        if "add" in spec:
            return current + spec["add"]
        if "or" in spec:
            return current | spec["or"]
    return int(spec, 0) if isinstance(spec, str) else spec


def op_bitmap(img: Image, resource: str, state: str, file: str | None = None, block: int = 0,
              item: int | None = None, keep_count: bool = False) -> None:
    """Mark one resource free or used in its cluster bitmap (and the count with it unless
    ``keep_count``)."""
    kind = RESOURCES[resource]
    res = img.vol.resources[kind]
    number = img.block_of(file, block) if file is not None else (res.num_resources - 1 if item is None else item)
    c, r = divmod(number, res.rpc)

    def change(lock: Any, meta: Any, bitmap: bytearray) -> None:
        bitmap_mark(bitmap, r, res.bits, free=state == "free")
        if not keep_count:
            meta.freeResources += 1 if state == "free" else -1

    img.edit_cluster(kind, c, change)


def op_cluster(img: Image, resource: str, cluster: int, field: str, value: Any) -> None:
    def change(lock: Any, meta: Any, bitmap: bytearray) -> None:
        target = lock.lock if field.startswith("lock.") else meta
        name = field.removeprefix("lock.")
        target[name] = _value(target[name], value)

    img.edit_cluster(RESOURCES[resource], cluster, change)


def op_fd(img: Image, path: str, field: str, value: Any) -> None:
    def change(p: Any) -> None:
        target = p.lockBlock.lock if field.startswith("lock.") else p.meta
        name = field.removeprefix("lock.")
        current = target[name]
        target[name] = value if isinstance(current, str) else _value(current, value)

    img.edit_fd(path, change)


def op_pointer(img: Image, path: str, index: int, value: Any = None, like: str | None = None,
               like_index: int = 0) -> None:
    """Set pointer ``index`` of a file's FD: a number, or the pointer of another file."""
    target = img.fd(like).pointers[like_index] if like is not None else _value(0, value)

    def change(p: Any) -> None:
        ptrs = img.pointers(p)
        ptrs[index] = target
        img.set_pointers(p, ptrs)

    img.edit_fd(path, change)


def op_pb_cycle(img: Image, path: str) -> None:
    """In a double-indirect file, make a free entry of the first-level pointer block point to
    that pointer block itself."""
    fd = img.fd(path)
    pb1 = next(p for p in fd.pointers if p)
    kind, c, r = img.geo.codec.split(pb1)
    res = img.vol.resources[kind]
    off = res.volume_offset(c, r)
    from vmfs.ondisk.common import pack_ints, unpack_ints

    width = img.geo.addr_width
    entries = list(unpack_ints(img.read(off, img.geo.pb_size), width))
    free = next(i for i, e in enumerate(entries) if e == 0)
    entries[free] = pb1
    img.write(off, pack_ints(entries, width))


def op_entry(img: Image, dir: str, name: str, field: str, value: Any) -> None:
    def change(ent: Any) -> None:
        if field == "name":
            ent.name = value.encode().ljust(len(ent.name), b"\x00")
        else:
            key = "address" if field == "descAddr" and img.geo.vmfs6 else field
            ent[key] = _value(ent[key], value)

    img.edit_entry(dir, name, change)


def op_remove_entry(img: Image, dir: str, name: str) -> None:
    """Drop an entry as the library does (VMFS5: the last entry takes its slot), keeping its FD."""
    if img.geo.vmfs6:
        img.dir6_change(dir, lambda changes, tx: changes.remove(tx, name))
        return
    slots = img.dir_slots(dir)
    i = img.entry_offset(dir, name) // DIRENT5_SIZE
    last = slots.pop()
    if i < len(slots):
        slots[i] = last
    img.write_dir(dir, slots)


def op_remove_dotdot(img: Image, dir: str) -> None:
    """VMFS5: remove the '..' entry; VMFS6 keeps '..' in the directory header: zero it."""
    if img.geo.vmfs6:
        img.write(img.dir_location(dir, DIR6_PARENT_AT), bytes(DIRENT6_SIZE))
        return
    op_remove_entry(img, dir, "..")


def op_add_entry(img: Image, dir: str, name: str, target: str) -> None:
    fd = img.fd(target)
    if img.geo.vmfs6:
        img.dir6_change(dir, lambda changes, tx: changes.add(tx, name, fd.address, fd.type, fd.generation))
        return
    slots = img.dir_slots(dir)
    slots.append(Dirent5.build({"type": fd.type, "descAddr": fd.address, "generation": fd.generation,
                                "name": name.encode().ljust(128, b"\x00")}))
    img.write_dir(dir, slots)


def op_free_fd(img: Image, path: str) -> None:
    """Release a file's FD (zero slot, bitmap bit free) but leave its directory entry."""
    fd = img.fd(path)
    c, r = A.fd_split(fd.address)
    img.write(fd.vol_offset, bytes(img.geo.fd_size))

    def change(lock: Any, meta: Any, bitmap: bytearray) -> None:
        bitmap_mark(bitmap, r, 1, free=True)
        meta.freeResources += 1

    img.edit_cluster(R.RES_FD, c, change)


def op_garbage_fd_slot(img: Image, seed: int = 1) -> None:
    """Random bytes in the last (free) FD slot."""
    res = img.vol.resources[R.RES_FD]
    c, r = divmod(res.num_resources - 1, res.rpc)
    img.write(res.volume_offset(c, r), random.Random(seed).randbytes(img.geo.fd_size))


def op_resource_header(img: Image, file: str, field: str | None = None, value: Any = None,
                       zero: bool = False, zero_clusters: bool = False) -> None:
    kind = {".fbb.sf": R.RES_FB, ".sbc.sf": R.RES_SB, ".pbc.sf": R.RES_PB, ".fdc.sf": R.RES_FD,
            ".pb2.sf": R.RES_PB2, ".jbc.sf": R.RES_JB}[file]
    res = img.vol.resources[kind]
    off = res.reader.volume_offset(0)
    if zero:
        img.write(off, bytes(R.RES_HEADER_SIZE))
    else:
        h = R.ResourceHeader.parse(img.read(off, R.RES_HEADER_SIZE))
        h[field] = _value(h[field], value)
        img.write(off, R.ResourceHeader.build(h))
    if zero_clusters:
        for c in range(res.num_clusters):
            img.write(img.cluster_offset(kind, c), bytes(res.ch))


def op_heartbeat(img: Image, slot: int, field: str, value: Any) -> None:
    addr = img.geo.hb_slot_addr(slot)
    hb = Heartbeat.parse(img.read(addr, 512))
    hb[field] = value if isinstance(hb[field], str) else _value(hb[field], value)
    img.write(addr, Heartbeat.build(hb))


def op_descriptor(img: Image, field: str, value: Any) -> None:
    d = FsDescriptor.parse(img.read(FS_DESCRIPTOR_OFFSET, 512))
    d[field] = _value(d[field], value)
    img.write(FS_DESCRIPTOR_OFFSET, FsDescriptor.build(d))


def op_lock(img: Image, path: str, slot: int, generation: int, owner: str = volumes.OTHER, mode: int = 1) -> None:
    addr = img.geo.hb_slot_addr(slot)

    def change(p: Any) -> None:
        lock = p.lockBlock.lock
        lock.mode, lock.owner, lock.hbAddr, lock.hbGen = mode, owner, addr, generation
        lock.token += 1

    img.edit_fd(path, change)


def op_dirent6_hash(img: Image, dir: str, name: str) -> None:
    """VMFS6: spoil an entry's stored name hash."""
    fd = img.fs.resolve(dir)
    entry = open_directory(img.vol, fd).lookup(name)
    where = FileReader(fd).volume_offset(entry.offset)
    ent = Dirent6.parse(img.read(where, DIRENT6_SIZE))
    ent.hash32 ^= 0x5A5A5A5A
    img.write(where, Dirent6.build(ent))


def op_dir6_block(img: Image, dir: str, block: int, field: str, value: Any) -> None:
    """VMFS6: change a field of the header of block ``block`` (after the 64 KiB header) of a
    directory, e.g. the type of its allocation map."""
    where = img.dir_location(dir, DIR6_HEADER_SIZE + block * img.geo.md_size)
    bh = Dir6BlockHeader.parse(img.read(where, DIR6_BLOCK_HEADER_SIZE))
    bh[field] = _value(bh[field], value)
    img.write(where, Dir6BlockHeader.build(bh))


def op_symlink_target(img: Image, path: str, target: bytes | str) -> None:
    """Replace a symbolic link's target bytes in place (resident or in its one data block) and
    set its length to match (``target`` as bytes, or text with escapes such as NUL)."""
    raw = target.encode("utf-8", "surrogateescape") if isinstance(target, str) else target
    fd = img.fd(path)
    if fd.is_resident:
        img.edit_fd(path, lambda p: setattr(p, "data", raw + bytes(len(p.data) - len(raw))))
    else:
        img.write(FileReader(fd).volume_offset(0), raw)
    img.edit_fd(path, lambda p: setattr(p.meta, "fileLength", len(raw)))


OPS: dict[str, Callable[..., None]] = {
    name.removeprefix("op_"): fn for name, fn in globals().items() if name.startswith("op_") and callable(fn)
}


def crash_writer(path: Path, uuid: str, write_path: str) -> None:
    """A host that mounts the volume, writes, and dies: its heartbeat slot stays in use and its
    journal keeps its last committed transaction."""
    vol = HostAttachment.open(path, host=volumes.host(uuid))
    WritableFileSystem(vol).write_file(write_path, b"written by a host that then died\n")
    vol.crash()  # a dead process: no renewals, no lock held, nothing released


def apply(path: Path, steps: list[dict[str, Any]]) -> None:
    for step in steps:
        step = dict(step)
        op = step.pop("op")
        if op == "crash_writer":
            from vmfs.fsck.context import fsck_identity

            uuid = fsck_identity().uuid if step["host"] == "vmfs-fsck" else step["host"]
            crash_writer(path, uuid, step["write"])
            continue
        img = Image(path)
        try:
            OPS[op](img, **step)
        finally:
            img.close()
