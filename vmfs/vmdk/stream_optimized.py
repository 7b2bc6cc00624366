"""streamOptimized extents: compressed KDMV grains with markers (vmdk-format.md section 3.11).

Two forms exist and both are read: VMware's (header says GD_AT_END; grain records, then a GT
marker and GT per non-empty table, a GD marker and the GD, a footer marker and a footer that
repeats the header with the real gdOffset, and an end-of-stream marker) and qemu's (directories
preallocated at the front like a monolithicSparse, real gdOffset, no markers after the records).

The format is an export format: grains are written once, in order, compressed, so random writes are
refused and :class:`StreamOptimizedWriter` produces a whole file from a sequence of grains in
VMware's form (which qemu, dissect and libvmdk all read, section 10.6).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

from construct import Bytes, Int32ul, Int64ul, Struct

from vmfs.ondisk.common import IntArray
from vmfs.vmdk.errors import CorruptError, ExistsError, InvalidArgumentError
from vmfs.vmdk.extent import SECTOR, is_zero, read_exact
from vmfs.vmdk.sparse import (
    COMPRESS_DEFLATE,
    DEFAULT_DESCRIPTOR_SECTORS,
    DEFAULT_GRAIN_SIZE,
    DEFAULT_GTES_PER_GT,
    FLAG_COMPRESSED,
    FLAG_MARKERS,
    FLAG_NEWLINE_VALID,
    GD_AT_END,
    SparseExtent,
    SparseHeader,
    gd_entries,
    new_header,
    parse_header,
)
from vmfs.vmdk.storage import DiskStorage

MARKER_EOS = 0
MARKER_GT = 1
MARKER_GD = 2
MARKER_FOOTER = 3

# A grain record starts on a sector boundary and is zero-padded to the next one.
GrainRecordHeader = Struct(
    "lba" / Int64ul,  # 0  first virtual sector of the grain
    "size" / Int32ul,  # 8  bytes of zlib data that follow (> 0)
)

# A metadata marker is one sector whose size field is 0.
MetadataMarker = Struct(
    "value" / Int64ul,  # 0   sectors of metadata that follow (not checked by readers)
    "size" / Int32ul,  # 8   0: tells a marker from a grain record
    "type" / Int32ul,  # 12  MARKER_*
    "pad" / Bytes(496),  # 16  zero; kept as read
)

#: flags VMware writes for a stream (qemu adds the redundant-GD bit although it writes no RGD)
STREAM_FLAGS = FLAG_NEWLINE_VALID | FLAG_COMPRESSED | FLAG_MARKERS


class StreamOptimizedExtent(SparseExtent):
    """Read-only access to either form of stream-optimized extent."""

    def __init__(self, storage: DiskStorage, name: str, *, writable: bool = False) -> None:
        super().__init__(storage, name, writable=writable)
        self._cache: tuple[int, bytes] | None = None

    def _read_header(self) -> Any:
        header = parse_header(read_exact(self.fh, 0, SECTOR, self.name, "sparse header"), self.name)
        if header.gd_offset != GD_AT_END:
            return header
        # The real header is the footer: the last three sectors are footer marker, footer, EOS.
        size = self.fh.seek(0, 2)
        if size < 3 * SECTOR:
            raise CorruptError(self.name, "stream footer", "file too short for footer and end-of-stream marker")
        tail = read_exact(self.fh, size - 3 * SECTOR, 3 * SECTOR, self.name, "stream footer")
        marker = MetadataMarker.parse(tail[:SECTOR])
        eos = MetadataMarker.parse(tail[2 * SECTOR :])
        if marker.size != 0 or marker.type != MARKER_FOOTER:
            raise CorruptError(self.name, "stream footer", "no footer marker", offset=size - 3 * SECTOR)
        if eos.value != 0 or eos.size != 0 or eos.type != MARKER_EOS:
            raise CorruptError(self.name, "stream footer", "no end-of-stream marker", offset=size - SECTOR)
        footer = parse_header(tail[SECTOR : 2 * SECTOR], self.name)
        if footer.gd_offset == GD_AT_END:
            raise CorruptError(self.name, "stream footer", "footer has no grain directory", offset=size - 2 * SECTOR)
        return footer

    def _read_compressed(self, grain: int, value: int) -> bytes:
        if self._cache is not None and self._cache[0] == grain:
            return self._cache[1]
        grain_bytes = self.grain_size * SECTOR
        offset = value * SECTOR
        if self.header.flags & FLAG_MARKERS:
            record = GrainRecordHeader.parse(read_exact(self.fh, offset, 12, self.name, f"grain {grain} record"))
            if record.size == 0:
                raise CorruptError(self.name, f"grain {grain} record", "points at a marker", offset=offset)
            if record.lba != grain * self.grain_size:
                raise CorruptError(
                    self.name,
                    f"grain {grain} record",
                    f"record is for sector {record.lba}, not {grain * self.grain_size}",
                    offset=offset,
                )
            compressed = read_exact(self.fh, offset + 12, record.size, self.name, f"grain {grain} data")
        else:
            # Without markers there is no length: qemu reads up to two grains' worth.
            self.fh.seek(offset)
            compressed = self.fh.read(2 * grain_bytes + SECTOR) or b""
        try:
            inflater = zlib.decompressobj()
            data = inflater.decompress(compressed, grain_bytes)
        except zlib.error as exc:
            raise CorruptError(self.name, f"grain {grain} data", f"bad deflate stream: {exc}", offset=offset) from None
        if len(data) < grain_bytes:  # the last grain may hold only the part inside the capacity
            data += bytes(grain_bytes - len(data))
        self._cache = (grain, data)
        return data


def open_kdmv(storage: DiskStorage, name: str, *, writable: bool = False) -> SparseExtent:
    """Open a KDMV file with the class its header calls for."""
    with storage.open(name, "rb") as fh:
        header = parse_header(read_exact(fh, 0, SECTOR, name, "sparse header"), name)
    if header.gd_offset == GD_AT_END or header.flags & FLAG_COMPRESSED:
        return StreamOptimizedExtent(storage, name, writable=writable)
    return SparseExtent(storage, name, writable=writable)


class StreamOptimizedWriter:
    """Write a new stream-optimized extent in VMware's layout, grain by grain in ascending order.

    Memory stays bounded: only the grain table being filled is held, and each finished table is
    written (GT marker + table) as soon as the grains move past it.  All-zero grains are skipped
    and their entries stay 0.
    """

    def __init__(
        self,
        storage: DiskStorage,
        name: str,
        capacity: int,
        *,
        descriptor: bytes,
        grain_size: int = DEFAULT_GRAIN_SIZE,
        level: int = 6,
    ) -> None:
        if capacity <= 0:
            raise InvalidArgumentError(f"{name}: capacity must be positive")
        if storage.exists(name):
            raise ExistsError(f"{name}: already exists")
        self.storage = storage
        self.name = name
        self.capacity = capacity
        self.grain_size = grain_size
        self.level = level
        desc_sectors = max(DEFAULT_DESCRIPTOR_SECTORS, -(-len(descriptor) // SECTOR))
        self._header = new_header(
            capacity=capacity,
            grain_size=grain_size,
            descriptor_offset=1,
            descriptor_size=desc_sectors,
            rgd_offset=0,
            gd_offset=GD_AT_END,
            overhead=1 + desc_sectors,
            version=3,
            flags=STREAM_FLAGS,
            compress_algorithm=COMPRESS_DEFLATE,
        )
        self._n = gd_entries(capacity, grain_size, DEFAULT_GTES_PER_GT)
        self._gd = [0] * self._n
        self._gt: list[int] | None = None
        self._gt_index = -1
        self._last_grain = -1
        self.storage.create(name, 0, "thin")
        self.fh = storage.open(name, "r+b")
        self.fh.write(SparseHeader.build(self._header))
        area = desc_sectors * SECTOR
        self.fh.write(descriptor.split(b"\x00", 1)[0].ljust(area, b"\x00"))
        self._pos = 1 + desc_sectors  # next free sector
        self.closed = False

    def _emit(self, data: bytes) -> int:
        """Append ``data`` padded to whole sectors; return its first sector."""
        start = self._pos
        pad = -len(data) % SECTOR
        self.fh.seek(start * SECTOR)
        self.fh.write(data + bytes(pad))
        self._pos += (len(data) + pad) // SECTOR
        return start

    def _marker(self, value: int, marker_type: int) -> None:
        self._emit(MetadataMarker.build({"value": value, "size": 0, "type": marker_type, "pad": bytes(496)}))

    def _finish_gt(self) -> None:
        if self._gt is None:
            return
        table = IntArray(DEFAULT_GTES_PER_GT, 4).build(self._gt)
        self._marker(len(table) // SECTOR, MARKER_GT)
        self._gd[self._gt_index] = self._emit(table)
        self._gt = None

    def write_grain(self, grain: int, data: bytes) -> None:
        """Add grain ``grain`` (its bytes inside the capacity).  Grains must come in ascending
        order; all-zero grains are dropped."""
        if grain <= self._last_grain or grain * self.grain_size >= self.capacity:
            raise InvalidArgumentError(f"{self.name}: grain {grain} out of order or beyond the capacity")
        self._last_grain = grain
        inside = min(self.grain_size, self.capacity - grain * self.grain_size) * SECTOR
        if len(data) > inside:
            data = data[:inside]
        if is_zero(data):
            return
        gdi, idx = divmod(grain, DEFAULT_GTES_PER_GT)
        if gdi != self._gt_index:
            self._finish_gt()
            self._gt_index = gdi
        if self._gt is None:
            self._gt = [0] * DEFAULT_GTES_PER_GT
        compressed = zlib.compress(bytes(data), self.level)
        record = GrainRecordHeader.build({"lba": grain * self.grain_size, "size": len(compressed)})
        self._gt[idx] = self._emit(record + compressed)

    def close(self) -> None:
        """Write the last GT, the GD, the footer and the end-of-stream marker."""
        if self.closed:
            return
        self._finish_gt()
        directory = IntArray(self._n, 4).build(self._gd)
        self._marker(-(-len(directory) // SECTOR), MARKER_GD)
        gd_sector = self._emit(directory)
        self._marker(1, MARKER_FOOTER)
        footer = dict(self._header, gd_offset=gd_sector)
        self._emit(SparseHeader.build(footer))
        self._marker(0, MARKER_EOS)
        self.fh.truncate(self._pos * SECTOR)
        self.fh.close()
        self.closed = True

    def abort(self) -> None:
        """Close and delete a partial file (so a failed export leaves nothing behind)."""
        if not self.closed:
            self.fh.close()
            self.closed = True
        if self.storage.exists(self.name):
            self.storage.remove(self.name)


def export_stream(
    read: Callable[[int, int], bytes],
    storage: DiskStorage,
    name: str,
    capacity: int,
    *,
    descriptor: bytes,
    grain_size: int = DEFAULT_GRAIN_SIZE,
    chunk_grains: int = 16,
) -> None:
    """Write a whole stream-optimized extent from ``read(sector, count)`` of the source disk."""
    writer = StreamOptimizedWriter(storage, name, capacity, descriptor=descriptor, grain_size=grain_size)
    try:
        grains = -(-capacity // grain_size)
        for first in range(0, grains, chunk_grains):
            last = min(first + chunk_grains, grains)
            start = first * grain_size
            count = min(last * grain_size, capacity) - start
            data = read(start, count)
            if is_zero(data):
                continue
            step = grain_size * SECTOR
            for i, grain in enumerate(range(first, last)):
                writer.write_grain(grain, data[i * step : (i + 1) * step])
        writer.close()
    except BaseException:
        writer.abort()
        raise
