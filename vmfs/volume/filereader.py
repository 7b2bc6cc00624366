"""File data: offsets in a file to bytes on the volume.

:class:`FileReader` is the one place where resident data, holes, to-be-zeroed blocks, file blocks,
sub-blocks and large file blocks turn into bytes; runs of blocks that are adjacent on the volume
are fetched with one device read, so a 128 KiB FUSE read of a contiguous file is one I/O.
:class:`FileStream` offers the same as a seekable ``io.RawIOBase``.
"""

from __future__ import annotations

import io

from vmfs.errors import CorruptError, InvalidArgumentError
from vmfs.format import address as A
from vmfs.volume.filedesc import BlockMap, FileDescriptor, VolumeBlocks


class FileReader:
    def __init__(self, fd: FileDescriptor) -> None:
        self.fd = fd
        self.volume: VolumeBlocks = fd.volume

    @property
    def size(self) -> int:
        return self.fd.size

    def extents(self, offset: int, length: int):  # type: ignore[no-untyped-def]
        """Yield (file offset, length, volume offset or None for zeros) covering the range,
        merging pieces that are contiguous on the volume."""
        fd = self.fd
        if fd.is_resident:
            raise CorruptError(f"file descriptor {fd.address:#x}", fd.vol_offset, "resident file has no extents")
        bmap = BlockMap(fd)
        vol = self.volume
        bs = fd.block_size
        shift = bmap.shift
        end = offset + length
        pos = offset
        run_file = offset
        run_vol: int | None = None
        run_len = 0
        while pos < end:
            index = pos >> shift
            within = pos & (bs - 1)
            n = min(bs - within, end - pos)
            addr = bmap.lookup(index)
            loc = vol.data_location(addr, within, n, fd) if addr else None
            if run_len and (
                (loc is None and run_vol is None)
                or (loc is not None and run_vol is not None and run_vol + run_len == loc)
            ):
                run_len += n
            else:
                if run_len:
                    yield run_file, run_len, run_vol
                run_file, run_vol, run_len = pos, loc, n
            pos += n
        if run_len:
            yield run_file, run_len, run_vol

    def read(self, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) clipped to the file size."""
        if offset < 0 or length < 0:
            raise InvalidArgumentError("negative offset or length")
        size = self.fd.size
        if offset >= size or length == 0:
            return b""
        length = min(length, size - offset)
        if self.fd.is_resident:
            return self.fd.resident_data[offset : offset + length]
        parts = []
        dev = self.volume.device
        for _, n, loc in self.extents(offset, length):
            parts.append(bytes(n) if loc is None else dev.read(loc, n))
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def volume_offset(self, offset: int) -> int:
        """Volume offset of file byte ``offset`` (metadata files: never a hole)."""
        for _, _, loc in self.extents(offset, 1):
            if loc is None:
                raise CorruptError(
                    f"system file {self.fd.address:#x}", self.fd.vol_offset, f"hole at file offset 0x{offset:x}"
                )
            return loc
        raise CorruptError(f"system file {self.fd.address:#x}", self.fd.vol_offset, "empty")  # pragma: no cover


class FileStream(io.RawIOBase):
    """A read-only, seekable binary stream over a file's data."""

    def __init__(self, reader: FileReader) -> None:
        super().__init__()
        self.reader = reader
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._pos = seek_position(self._pos, offset, whence, self.reader.size)
        return self._pos

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        data = self.reader.read(self._pos, len(buffer))
        n = len(data)
        buffer[:n] = data
        self._pos += n
        return n

    def readall(self) -> bytes:
        data = self.reader.read(self._pos, max(self.reader.size - self._pos, 0))
        self._pos += len(data)
        return data


def seek_position(current: int, offset: int, whence: int, size: int) -> int:
    """The new position of a seek (io semantics; seeking past the end is allowed)."""
    if whence == io.SEEK_SET:
        pos = offset
    elif whence == io.SEEK_CUR:
        pos = current + offset
    elif whence == io.SEEK_END:
        pos = size + offset
    else:
        raise InvalidArgumentError(f"bad whence {whence}")
    if pos < 0:
        raise InvalidArgumentError("negative seek position")
    return pos


def is_data_address(address: int) -> bool:
    return address & 7 in (A.ADDR_FB, A.ADDR_SB, A.ADDR_LFB)
