"""Write a new VMFS5 or VMFS6 volume onto devices.

Order of writes, so that an interrupted format never leaves something that looks valid:

1. each extent's LVM area [0, 17 MiB): old bytes there (an old VMFS header, an MBR...) are
   zeroed, then the new LVM metadata is written;
2. the logical volume is opened with the reader's own LVM code (:func:`open_logical_volume`),
   which checks the headers just written, and every block of every system file is written,
   zeroing whatever old bytes lie between the new structures (unused FD slots must be all-zero,
   vmfs-format.md 5) — the old FS descriptor sector is zeroed here too;
3. after a flush, the FS descriptor: until it is there no reader takes the volume for VMFS.

Only ranges that are not already zero are rewritten with zeros, so a fresh sparse image costs the
metadata alone: reading holes is cheap, and nothing else of the volume is touched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from vmfs.device.base import BlockDevice
from vmfs.device.lvm import open_logical_volume
from vmfs.errors import InvalidArgumentError
from vmfs.mkfs import content, content6
from vmfs.mkfs.errors import ExistingDataError
from vmfs.mkfs.layout import Layout, SystemFileLayout
from vmfs.mkfs.lvm import lvm_pieces
from vmfs.mkfs.options import MkfsOptions
from vmfs.mkfs.planner import plan
from vmfs.mkfs.signatures import detect_signature

#: Bytes read at a time when checking that a gap is zero.
_CHUNK = 4 << 20
_ZEROS = bytes(_CHUNK)


class _Sink:
    """Writes pieces in increasing offsets and makes the gaps between them zero."""

    def __init__(self, device: BlockDevice, advance: Callable[[int], None] | None = None) -> None:
        self.device = device
        self.written = 0
        self.advance = advance or (lambda n: None)  #: told how many bytes of the span are done

    def fill(self, start: int, end: int, pieces: Iterable[tuple[int, bytes]]) -> None:
        pos = start
        for offset, data in pieces:
            if offset < pos or offset + len(data) > end:
                raise AssertionError(f"piece at 0x{offset:x} out of order or outside 0x{start:x}..0x{end:x}")
            self.zero(pos, offset)
            self.device.write(offset, data)
            self.written += len(data)
            self.advance(len(data))
            pos = offset + len(data)
        self.zero(pos, end)

    def write(self, offset: int, data: bytes) -> None:
        self.device.write(offset, data)
        self.written += len(data)

    def zero(self, start: int, end: int) -> None:
        while start < end:
            n = min(_CHUNK, end - start)
            if self.device.read(start, n) != _ZEROS[:n]:
                self.write(start, _ZEROS[:n])
            self.advance(n)
            start += n


def _run_pieces(layout: Layout, f: SystemFileLayout, file_start: int, length: int,
                vol_start: int) -> Iterator[tuple[int, bytes]]:
    """The pieces of ``f`` that fall in its file range [file_start, file_start + length), at
    their volume offsets (a file of several block runs is written run by run)."""
    module = content6 if layout.version == 6 else content
    end = file_start + length
    for offset, data in module.system_file_pieces(layout, f):
        lo, hi = max(offset, file_start), min(offset + len(data), end)
        if lo < hi:
            yield vol_start + lo - file_start, data[lo - offset : hi - offset]


def format_volume(
    devices: list[BlockDevice], options: MkfsOptions | None = None, *,
    progress: Callable[[int, int], None] | None = None,
) -> Layout:
    """Format ``devices`` (the extents, in volume order) as one VMFS volume of ``options.version``.

    ``progress(done, total)``, in bytes of the regions mkfs writes or checks for zeros, is called
    after each piece or chunk; an exception raised from it stops the format before the FS
    descriptor is written, so no reader takes the devices for a new volume.

    Raises :class:`ExistingDataError` when a device holds a file system, volume or partition table
    and ``options.force`` is not set; nothing is written then.
    """
    options = options or MkfsOptions()
    if len({id(d) for d in devices}) != len(devices):
        raise InvalidArgumentError("the same device is given twice")
    layout = plan([d.size for d in devices], options)
    if not options.force:
        for dev in devices:
            sig = detect_signature(dev)
            if sig is not None:
                raise ExistingDataError(dev.name, sig.what)
    bs = layout.block_size
    total = sum(e.data_offset for e in layout.extents) + sum(f.num_blocks * bs for f in layout.system_files)
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    written = 0
    for dev, extent in zip(devices, layout.extents, strict=True):
        sink = _Sink(dev, advance)
        sink.fill(0, extent.data_offset, lvm_pieces(layout, extent))
        written += sink.written
        dev.flush()
    volume = open_logical_volume(list(devices))
    if volume.size != layout.volume_size:  # pragma: no cover - the reader disagrees with the plan
        raise AssertionError(f"reader assembles {volume.size} bytes, planned {layout.volume_size}")
    sink = _Sink(volume, advance)
    runs = []
    for f in layout.system_files:
        pos = 0
        for first, count in f.block_runs:
            runs.append((first, count, pos, f))
            pos += count * bs
    for first, count, file_start, f in sorted(runs, key=lambda r: r[0]):
        base = first * bs
        sink.fill(base, base + count * bs, _run_pieces(layout, f, file_start, count * bs, base))
    volume.flush()
    module = content6 if layout.version == 6 else content
    sink.write(*module.fs_descriptor_piece(layout))
    volume.flush()
    layout.bytes_written = written + sink.written
    return layout
