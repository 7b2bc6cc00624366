"""A virtual disk: the chain of layers from the leaf down to the base (section 6).

Reads go to the leaf and fall through to the parent wherever a delta has no grain; writes go to the
leaf only, completing partial grains from the parent (copy-on-write).  Parents are always opened
read-only: a parent's CID changes on its first write, which would orphan its children (6.1).

The chain is checked when it is opened: each child's ``parentCID`` must equal its parent's ``CID``
(VMware's rule; qemu fails later, on the first read that reaches the parent).  A broken chain is
refused with :class:`~vmfs.vmdk.errors.ChainError` before anything is read or written.

:class:`Disk` is also an ``io.RawIOBase`` over the virtual bytes, so callers can ``seek``/``read``
/``write`` it like a file; ``pread``/``pwrite`` do positional I/O without moving the position.
"""

from __future__ import annotations

import io
import posixpath
from typing import Any

from vmfs.vmdk.descriptor import NO_PARENT
from vmfs.vmdk.errors import ChainError, MissingExtentError, OutOfRangeError, ReadOnlyError, VmdkError
from vmfs.vmdk.extent import SECTOR
from vmfs.vmdk.layer import Layer, open_layer
from vmfs.vmdk.storage import DiskStorage, join

#: ESXi allows 32 snapshots per disk; anything much deeper is a loop or garbage.
MAX_CHAIN_DEPTH = 255


def resolve_parent(storage: DiskStorage, child: str, hint: str) -> str:
    """Storage name of a parent hint: relative to the child's directory (qemu), else the hint's
    base name next to the child (dissect's fallback, for absolute ``/vmfs/volumes/...`` hints)."""
    directory = child.rpartition("/")[0]
    candidate = posixpath.normpath(join(directory, hint)) if not hint.startswith("/") else hint
    if storage.exists(candidate):
        return candidate
    fallback = join(directory, hint.replace("\\", "/").rpartition("/")[2])
    if storage.exists(fallback):
        return fallback
    raise MissingExtentError(f"{child}: parent disk {hint!r} does not exist")


class Disk(io.RawIOBase):
    """An open chain of layers, leaf first."""

    def __init__(self, layers: list[Layer]) -> None:
        super().__init__()
        if not layers:
            raise VmdkError("a disk needs at least one layer")
        self.layers = layers
        self._pos = 0
        self._released = False

    # -- properties ----------------------------------------------------------------------------------

    @property
    def top(self) -> Layer:
        return self.layers[0]

    @property
    def name(self) -> str:
        return self.top.name

    @property
    def storage(self) -> DiskStorage:
        return self.top.storage

    @property
    def sectors(self) -> int:
        return self.top.capacity

    @property
    def size(self) -> int:
        """Virtual size in bytes."""
        return self.top.capacity * SECTOR

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return self.top.writable

    def seekable(self) -> bool:
        return True

    # -- sector I/O ----------------------------------------------------------------------------------

    def _read_from(self, index: int, sector: int, count: int) -> bytearray:
        layer = self.layers[index]
        inside = max(0, min(count, layer.capacity - sector))
        if inside == 0:
            return bytearray(count * SECTOR)
        buf, holes = layer.read(sector, inside)
        if index + 1 < len(self.layers):
            for start, n in holes:
                off = (start - sector) * SECTOR
                buf[off : off + n * SECTOR] = self._read_from(index + 1, start, n)
        if inside < count:
            buf += bytes((count - inside) * SECTOR)
        return buf

    def read_sectors(self, sector: int, count: int) -> bytes:
        if sector < 0 or count < 0 or sector + count > self.sectors:
            raise OutOfRangeError(f"{self.name}: read of sectors {sector}..{sector + count} beyond {self.sectors}")
        return bytes(self._read_from(0, sector, count))

    def parent_reader(self) -> Any:
        """``fill(sector, count)`` for the leaf: the parent chain's bytes, or None at the base."""
        if len(self.layers) == 1:
            return None
        return lambda s, n: bytes(self._read_from(1, s, n))

    def write_sectors(self, sector: int, data: bytes) -> None:
        if not self.top.writable:
            raise ReadOnlyError(f"{self.name}: disk is open read-only")
        if len(data) % SECTOR:
            raise OutOfRangeError(f"{self.name}: sector write of {len(data)} bytes")
        count = len(data) // SECTOR
        if sector < 0 or sector + count > self.sectors:
            raise OutOfRangeError(f"{self.name}: write of sectors {sector}..{sector + count} beyond {self.sectors}")
        self.top.write(sector, data, self.parent_reader())

    # -- byte I/O --------------------------------------------------------------------------------------

    def pread(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (short at the end of the disk, like a file)."""
        if offset < 0 or length < 0:
            raise OutOfRangeError(f"{self.name}: bad read offset {offset} / length {length}")
        length = max(0, min(length, self.size - offset))
        if length == 0:
            return b""
        first = offset // SECTOR
        last = -(-(offset + length) // SECTOR)
        data = self._read_from(0, first, last - first)
        skip = offset - first * SECTOR
        return bytes(data[skip : skip + length])

    def pwrite(self, offset: int, data: bytes) -> int:
        """Write ``data`` at ``offset``; partial sectors are read, merged and rewritten."""
        if offset < 0 or offset + len(data) > self.size:
            raise OutOfRangeError(f"{self.name}: write of {len(data)} bytes at {offset} beyond {self.size}")
        if not data:
            return 0
        written = len(data)
        first = offset // SECTOR
        last = -(-(offset + len(data)) // SECTOR)
        skip = offset - first * SECTOR
        if skip or (offset + len(data)) % SECTOR:
            buf = bytearray(self._read_from(0, first, last - first))
            buf[skip : skip + len(data)] = data
            data = bytes(buf)
        self.write_sectors(first, bytes(data))
        return written

    def write_zeroes(self, offset: int, length: int) -> None:
        """Zero a range: whole grains become zero/unallocated entries where the format allows."""
        chunk = 1 << 20
        while length > 0:
            n = min(chunk - offset % chunk, length)
            self.pwrite(offset, bytes(n))
            offset += n
            length -= n

    # -- io.RawIOBase ------------------------------------------------------------------------------------

    def readinto(self, buffer: Any) -> int:
        data = self.pread(self._pos, len(buffer))
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def write(self, data: Any) -> int:
        data = bytes(data)
        self.pwrite(self._pos, data)
        self._pos += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise OutOfRangeError(f"{self.name}: negative seek position")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        if not self.closed and not self._released:
            for layer in self.layers:
                layer.flush()

    def close(self) -> None:
        if self.closed:
            return
        self._released = True
        try:
            errors: list[BaseException] = []
            for layer in self.layers:
                try:
                    layer.close()
                except (VmdkError, OSError) as exc:
                    errors.append(exc)
            if errors:
                raise errors[0]
        finally:
            super().close()

    def info(self) -> dict[str, Any]:
        """A summary of the chain, leaf first (for tools and tests)."""
        return {
            "name": self.name,
            "capacity": self.size,
            "chain": [
                {
                    "name": layer.name,
                    "createType": layer.descriptor.create_type,
                    "CID": f"{layer.cid:08x}",
                    "parentCID": f"{layer.parent_cid:08x}",
                    "parentFileNameHint": layer.descriptor.parent_hint,
                    "extents": [
                        {
                            "type": type(e).__name__,
                            "file": e.name,
                            "sectors": e.capacity,
                            "unclean": e.unclean,
                        }
                        for e in layer.extents
                    ],
                }
                for layer in self.layers
            ],
        }


def open_disk(storage: DiskStorage, name: str, *, writable: bool = False, check_cid: bool = True) -> Disk:
    """Open ``name`` and its parents.  Only the leaf is writable.  ``check_cid=False`` opens a chain
    whose CIDs disagree (recovery); the default refuses it."""
    layers: list[Layer] = []
    seen: set[str] = set()
    try:
        current = name
        while True:
            if current in seen or len(layers) >= MAX_CHAIN_DEPTH:
                raise ChainError(f"{name}: parent chain loops or is deeper than {MAX_CHAIN_DEPTH} ({current})")
            seen.add(current)
            layer = open_layer(storage, current, writable=writable and not layers)
            if layers:
                child = layers[-1]
                if check_cid and child.parent_cid != layer.cid:
                    layer.close()
                    raise ChainError(
                        f"{child.name}: parent {layer.name} was modified after the child was created "
                        f"(child parentCID={child.parent_cid:08x}, parent CID={layer.cid:08x})"
                    )
            layers.append(layer)
            desc = layer.descriptor
            if not desc.has_parent:
                break
            if desc.parent_hint is None:
                raise ChainError(f"{current}: parentCID={desc.parent_cid:08x} but no parentFileNameHint")
            if desc.parent_cid == NO_PARENT:
                raise ChainError(f"{current}: parentFileNameHint without a parentCID")
            current = resolve_parent(storage, current, desc.parent_hint)
    except BaseException:
        for layer in layers:
            layer.close()
        raise
    return Disk(layers)
