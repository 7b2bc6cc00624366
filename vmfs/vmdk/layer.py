"""One link of a disk chain: a descriptor and the extents it lists (section 2, 6.1).

A layer concatenates its extents in descriptor order and keeps the descriptor's CID honest: the
first modification after opening writes a new random CID (section 2.2; qemu does the same) and
sets the extents' unclean-shutdown marks, before any data byte is written, so a parent that
changes can never be mistaken for the one its children were made from.  A clean close clears the
marks again.

Files are opened through a :class:`~vmfs.vmdk.storage.DiskStorage`; extent names are resolved
against the descriptor's directory.  A monolithic file (KDMV with an embedded descriptor) is its
own single extent: its extent line is not followed, because a renamed or copied file must still
open with its own data (section 2.7).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from vmfs.vmdk.cowd import CowdExtent
from vmfs.vmdk.descriptor import Descriptor, ExtentLine, is_descriptor_text, new_cid
from vmfs.vmdk.errors import (
    MissingExtentError,
    NotVmdkError,
    OutOfRangeError,
    ReadOnlyError,
    UnsupportedError,
    VmdkError,
)
from vmfs.vmdk.extent import SECTOR, Extent, Filler, Hole, ZeroExtent
from vmfs.vmdk.flat import FlatExtent
from vmfs.vmdk.sesparse import SeSparseExtent
from vmfs.vmdk.sparse import SparseExtent
from vmfs.vmdk.storage import DiskStorage, join, parent_dir
from vmfs.vmdk.stream_optimized import open_kdmv

#: A text descriptor is small; anything bigger is a raw image, not a descriptor.
MAX_DESCRIPTOR_BYTES = 1 << 20

KDMV_MAGIC = b"KDMV"
COWD_MAGIC = b"COWD"
SESPARSE_MAGIC = bytes.fromhex("bebafeca00000000")


class Layer:
    """A descriptor plus its open extents.  Sector arguments are virtual-disk sectors."""

    def __init__(
        self,
        storage: DiskStorage,
        name: str,
        descriptor: Descriptor,
        extents: list[Extent],
        *,
        writable: bool,
        embedded: SparseExtent | None = None,
        synthetic: bool = False,
    ) -> None:
        self.storage = storage
        self.name = name
        self.descriptor = descriptor
        self.extents = extents
        self.writable = writable
        #: the KDMV extent that holds the descriptor (monolithicSparse, streamOptimized)
        self.embedded = embedded
        #: True when the file had no descriptor and one was made up in memory (bare KDMV extent)
        self.synthetic = synthetic
        self.starts: list[int] = []
        total = 0
        for ext in extents:
            self.starts.append(total)
            total += ext.capacity
            ext.on_modify = self.mark_modified
        self.capacity = total
        self.modified = False
        self._marked_unclean: list[Extent] = []

    def __repr__(self) -> str:
        return f"Layer({self.name!r}, {self.descriptor.create_type}, {self.capacity} sectors)"

    @property
    def directory(self) -> str:
        return parent_dir(self.name)

    @property
    def cid(self) -> int:
        return self.descriptor.cid

    @property
    def parent_cid(self) -> int:
        return self.descriptor.parent_cid

    @property
    def is_delta(self) -> bool:
        return self.descriptor.has_parent

    @property
    def unclean(self) -> bool:
        return any(e.unclean for e in self.extents)

    # -- I/O -----------------------------------------------------------------------------------------

    def _pieces(self, sector: int, count: int) -> Iterator[tuple[int, Extent, int, int]]:
        """``(layer_sector, extent, extent_sector, n)`` for each extent the range touches."""
        if sector < 0 or count < 0 or sector + count > self.capacity:
            raise OutOfRangeError(f"{self.name}: sectors {sector}..{sector + count} beyond {self.capacity}")
        i = bisect.bisect_right(self.starts, sector) - 1
        end = sector + count
        while sector < end:
            ext = self.extents[i]
            inner = sector - self.starts[i]
            n = min(ext.capacity - inner, end - sector)
            if n > 0:
                yield sector, ext, inner, n
            sector += n
            i += 1

    def read(self, sector: int, count: int) -> tuple[bytearray, list[Hole]]:
        """Bytes of ``count`` sectors and the ranges (layer sectors) that belong to the parent."""
        pieces = list(self._pieces(sector, count))
        if len(pieces) == 1:
            lsec, ext, inner, n = pieces[0]
            buf, holes = ext.read(inner, n)
            return buf, [(h + lsec - inner, c) for h, c in holes]
        buf = bytearray()
        holes: list[Hole] = []
        for lsec, ext, inner, n in pieces:
            data, ext_holes = ext.read(inner, n)
            buf += data
            holes += [(h + lsec - inner, c) for h, c in ext_holes]
        return buf, holes

    def prepare_write(self, sector: int, count: int) -> None:
        if not self.writable:
            raise ReadOnlyError(f"{self.name}: disk is open read-only")
        for _lsec, ext, inner, n in self._pieces(sector, count):
            if not ext.writable:
                raise ReadOnlyError(f"{self.name}: extent {ext.name} is read-only")
            ext.prepare_write(inner, n)

    def write(self, sector: int, data: bytes, fill: Filler) -> None:
        """Write whole sectors; ``fill(sector, count)`` reads the parent chain (None: no parent)."""
        count = len(data) // SECTOR
        pieces = list(self._pieces(sector, count))
        self.prepare_write(sector, count)
        if len(pieces) == 1:  # one extent (the usual case): the data as it came, no copy
            lsec, ext, inner, _n = pieces[0]
            delta = lsec - inner
            ext.write(inner, data if type(data) is bytes else bytes(data),
                      (lambda s, c: fill(s + delta, c)) if fill is not None and delta else fill)
            return
        view = memoryview(data)
        for lsec, ext, inner, n in pieces:
            chunk = view[(lsec - sector) * SECTOR : (lsec - sector + n) * SECTOR]
            ext_fill: Filler = None
            if fill is not None:
                delta = lsec - inner
                ext_fill = (lambda s, c, d=delta: fill(s + d, c)) if delta else fill
            ext.write(inner, bytes(chunk), ext_fill)

    def allocated(self) -> Iterator[tuple[int, int, bool]]:
        """Ranges this layer defines itself, in layer sectors."""
        for start, ext in zip(self.starts, self.extents, strict=True):
            for sector, count, zero in ext.allocated():
                yield start + sector, count, zero

    # -- descriptor and lifecycle --------------------------------------------------------------------

    def mark_modified(self) -> None:
        """Record that the content is about to change: new CID in the descriptor, unclean marks
        on the extents.  Runs once per open; extents call it before their first write."""
        if self.modified:
            return
        self.modified = True
        if not self.synthetic:
            self.descriptor.cid = new_cid()
            self.save_descriptor()
        for ext in self.extents:
            if ext.writable and not ext.unclean:
                ext.set_unclean(True)
                self._marked_unclean.append(ext)

    def save_descriptor(self) -> None:
        """Write the descriptor back: in place for embedded ones, as the whole file otherwise."""
        if not self.writable:
            raise ReadOnlyError(f"{self.name}: disk is open read-only")
        if self.synthetic:
            raise UnsupportedError(f"{self.name}: extent has no descriptor to save")
        data = self.descriptor.to_bytes()
        if self.embedded is not None:
            self.embedded.write_descriptor(data)
            return
        with self.storage.open(self.name, "r+b") as fh:
            fh.write(data)
            fh.truncate(len(data))

    def flush(self) -> None:
        for ext in self.extents:
            ext.flush()

    def close(self) -> None:
        errors: list[BaseException] = []
        for ext in self._marked_unclean:
            try:
                ext.set_unclean(False)
            except VmdkError as exc:  # keep closing the others
                errors.append(exc)
        self._marked_unclean = []
        for ext in self.extents:
            try:
                ext.close()
            except (VmdkError, OSError) as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


def _open_extent(storage: DiskStorage, directory: str, line: ExtentLine, writable: bool, desc_name: str) -> Extent:
    writable = writable and line.access == "RW"
    if line.access == "NOACCESS":
        raise UnsupportedError(f"{desc_name}: NOACCESS extent lines are not supported")
    if line.type == "ZERO":
        return ZeroExtent(f"{desc_name}:ZERO", line.sectors)
    if line.filename is None:
        raise NotVmdkError(f"{desc_name}: extent line {line.render()!r} has no file name")
    name = join(directory, line.filename)
    try:
        if line.type in ("FLAT", "VMFS", "VMFSRDM", "VMFSRAW"):
            return FlatExtent(storage, name, line.sectors, offset=line.offset or 0, writable=writable)
        if line.type == "SPARSE":
            return open_kdmv(storage, name, writable=writable)
        if line.type == "VMFSSPARSE":
            return CowdExtent(storage, name, writable=writable)
        if line.type == "SESPARSE":
            return SeSparseExtent(storage, name, writable=writable)
    except MissingExtentError:
        raise MissingExtentError(f"{desc_name}: extent file {line.filename!r} does not exist") from None
    raise UnsupportedError(f"{desc_name}: unknown extent type {line.type!r}")


def open_layer(storage: DiskStorage, name: str, *, writable: bool = False) -> Layer:
    """Open one descriptor (text file or monolithic KDMV) and all of its extents."""
    try:
        size = storage.size(name)
    except MissingExtentError:
        raise MissingExtentError(f"{name}: no such disk") from None
    with storage.open(name, "rb") as fh:
        head = fh.read(8) or b""
        if head[:4] == KDMV_MAGIC:
            fh.close()
            return _open_monolithic(storage, name, writable)
        if head[:4] == COWD_MAGIC or head[:8] == SESPARSE_MAGIC:
            raise NotVmdkError(f"{name}: is a delta extent; open the descriptor that names it")
        if size > MAX_DESCRIPTOR_BYTES:
            raise NotVmdkError(f"{name}: {size} bytes: too big for a descriptor, and not a sparse extent")
        head += fh.read(size) or b""
    if not is_descriptor_text(head):
        raise NotVmdkError(f"{name}: neither a VMDK descriptor nor a sparse extent")
    descriptor = Descriptor.parse(head, source=name)
    if writable and descriptor.change_track_path is not None:
        # Writes would have to be recorded in the -ctk file, whose format is not public; a stale
        # CTK makes incremental backups silently miss data, so refuse instead.
        raise UnsupportedError(
            f"{name}: changed-block tracking is enabled ({descriptor.change_track_path}); "
            "writes are refused because the CTK file cannot be kept up to date"
        )
    extents: list[Extent] = []
    try:
        for line in descriptor.extents:
            extents.append(_open_extent(storage, parent_dir(name), line, writable, name))
    except BaseException:
        for ext in extents:
            ext.close()
        raise
    if not extents:
        raise NotVmdkError(f"{name}: descriptor lists no extents")
    return Layer(storage, name, descriptor, extents, writable=writable)


def _open_monolithic(storage: DiskStorage, name: str, writable: bool) -> Layer:
    ext = open_kdmv(storage, name, writable=writable)
    try:
        raw = ext.read_descriptor()
        if raw is not None and is_descriptor_text(raw):
            descriptor = Descriptor.parse(raw, source=name)
            if ext.capacity == 0:
                raise UnsupportedError(f"{name}: descriptor-only KDMV containers are not supported")
            return Layer(storage, name, descriptor, [ext], writable=writable, embedded=ext)
        base = name.rpartition("/")[2]
        descriptor = Descriptor.new(
            create_type="monolithicSparse",
            extents=[ExtentLine("RW", ext.capacity, "SPARSE", base)],
            encoding=None,
        )
        return Layer(storage, name, descriptor, [ext], writable=writable, synthetic=True)
    except BaseException:
        ext.close()
        raise
