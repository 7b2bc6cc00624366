"""Image files and block devices on this machine.

Reads and writes use ``pread``/``pwrite`` on one descriptor, so the object is safe to share between
threads.  The atomic test-and-set takes a POSIX byte-range lock over the compared range for the
duration of compare and write: every process on this machine that uses the same file (other
simulated hosts, other mounts) serialises on it, and a thread lock does the same inside one
process (POSIX record locks do not exclude threads of one process).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import threading

from vmfs.device.base import BlockDevice
from vmfs.errors import DeviceError, NotFoundError

_ATS_LOCKS: dict[tuple[int, int], threading.Lock] = {}
_ATS_LOCKS_GUARD = threading.Lock()


class FileDevice(BlockDevice):
    """A regular file (image) or a block device node."""

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = True) -> None:
        super().__init__(readonly=readonly)
        self.path = os.fspath(path)
        self.name = self.path
        flags = os.O_RDONLY if readonly else os.O_RDWR
        try:
            self._fd = os.open(self.path, flags | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFoundError(f"{self.path}: no such file or device") from None
        except OSError as exc:
            raise DeviceError(f"{self.path}: {exc.strerror}", errno=exc.errno) from None
        st = os.fstat(self._fd)
        self.is_block_device = stat.S_ISBLK(st.st_mode)
        if not (self.is_block_device or stat.S_ISREG(st.st_mode)):
            os.close(self._fd)
            raise DeviceError(f"{self.path}: neither an image file nor a block device", errno=errno.EINVAL)
        self._size = os.lseek(self._fd, 0, os.SEEK_END) if self.is_block_device else st.st_size
        # POSIX record locks do not exclude two descriptors of one process, so every FileDevice
        # of the same file in this process shares one thread lock for ATS
        with _ATS_LOCKS_GUARD:
            self._ats_lock = _ATS_LOCKS.setdefault((st.st_dev, st.st_ino), threading.Lock())

    @property
    def size(self) -> int:
        return self._size

    def _read(self, offset: int, length: int) -> bytes:
        chunks = []
        done = 0
        while done < length:
            try:
                chunk = os.pread(self._fd, length - done, offset + done)
            except OSError as exc:
                raise DeviceError(f"{self.path}: read error at 0x{offset + done:x}: {exc.strerror}") from None
            if not chunk:
                raise DeviceError(f"{self.path}: unexpected end of device at 0x{offset + done:x}")
            chunks.append(chunk)
            done += len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _write(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        done = 0
        while done < len(data):
            try:
                done += os.pwrite(self._fd, view[done:], offset + done)
            except OSError as exc:
                raise DeviceError(
                    f"{self.path}: write error at 0x{offset + done:x}: {exc.strerror}", errno=exc.errno
                ) from None

    def _compare_and_write(self, offset: int, expected: bytes, new: bytes) -> bool:
        with self._ats_lock:
            fcntl.lockf(self._fd, fcntl.LOCK_EX, len(new), offset, os.SEEK_SET)
            try:
                if self._read(offset, len(expected)) != expected:
                    return False
                self._write(offset, new)
                return True
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN, len(new), offset, os.SEEK_SET)

    def flush(self) -> None:
        if not self.readonly:
            os.fdatasync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
