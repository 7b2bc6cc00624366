"""The block-device interface every layer above talks to.

A device is a flat byte range with positional reads and writes, plus an atomic test-and-set
(:meth:`BlockDevice.compare_and_write`) with the semantics of SCSI COMPARE AND WRITE: the new image
is written only if the current bytes equal the expected image, atomically with respect to every
other host using the same device.  Locking and heartbeat code relies on that primitive alone, so a
backend that can do it for real (byte-range locks for images, SG_IO COMPARE AND WRITE for a LUN)
is all a new transport needs.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable
from typing import Any

from vmfs.errors import DeviceError, ReadOnlyError


class BlockDevice(abc.ABC):
    """Byte-addressed storage.  Offsets and lengths are in bytes."""

    #: sector size used by ATS and torn-write simulation
    sector_size: int = 512
    name: str = "device"
    #: seconds after a write is issued by which it has either reached the storage or never will.
    #: Local storage: 0.  Network storage bounds it (an iSCSI session whose data stays
    #: unacknowledged that long is killed in the kernel), and a host's lease is shortened by it:
    #: a write it sends must land before other hosts may count the host dead.
    late_write_bound: float = 0.0
    #: on network storage, asked under the device's own lock just before each write-type command
    #: is sent: a reason to refuse it (the host can no longer prove its lease), or None.  Set by
    #: the heartbeat (vmfs.cluster.heartbeat); checked at the last moment because a command may
    #: wait behind a slow one for longer than the lease has left.
    write_guard: Callable[[], str | None] | None = None
    #: on a writing host's volume device, the sectors its open group commit has absorbed and not
    #: yet written home (:class:`vmfs.cluster.batch.PendingSectors`): reads return them over the
    #: disk's bytes, and an ATS or a write that touches one commits the batch first.  None elsewhere.
    pending: Any = None

    def __init__(self, *, readonly: bool) -> None:
        self.readonly = readonly

    @property
    @abc.abstractmethod
    def size(self) -> int:
        """Size of the device in bytes."""

    @abc.abstractmethod
    def _read(self, offset: int, length: int) -> bytes: ...

    @abc.abstractmethod
    def _write(self, offset: int, data: bytes) -> None: ...

    @abc.abstractmethod
    def _compare_and_write(self, offset: int, expected: bytes, new: bytes) -> bool: ...

    def read(self, offset: int, length: int) -> bytes:
        """Read exactly ``length`` bytes; reading past the end is an error, not a short read."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise DeviceError(
                f"{self.name}: read of {length} bytes at 0x{offset:x} beyond the device end 0x{self.size:x}"
            )
        if length == 0:
            return b""
        pending = self.pending
        if pending:
            with pending.lock:
                return pending.overlay(offset, self._read(offset, length))
        return self._read(offset, length)

    def write(self, offset: int, data: bytes) -> None:
        if self.readonly:
            raise ReadOnlyError(f"{self.name}: device is open read-only")
        if offset < 0 or offset + len(data) > self.size:
            raise DeviceError(
                f"{self.name}: write of {len(data)} bytes at 0x{offset:x} beyond the device end 0x{self.size:x}"
            )
        if data:
            pending = self.pending
            if pending:
                pending.settle(offset, len(data))
            self._write(offset, bytes(data))

    def compare_and_write(self, offset: int, expected: bytes, new: bytes) -> bool:
        """Atomic test-and-set: write ``new`` at ``offset`` only if the bytes there equal ``expected``.

        Returns True when written, False on a miscompare (nothing written).  Atomic with respect to
        every other user of the same device, in this process and in others.
        """
        if self.readonly:
            raise ReadOnlyError(f"{self.name}: device is open read-only")
        if len(expected) != len(new):
            raise ValueError("compare_and_write needs images of equal length")
        if offset < 0 or offset + len(new) > self.size:
            raise DeviceError(f"{self.name}: ATS at 0x{offset:x} beyond the device end")
        pending = self.pending
        if pending:
            pending.settle(offset, len(new))
        return self._compare_and_write(offset, bytes(expected), bytes(new))

    def flush(self) -> None:  # noqa: B027 - optional hook
        """Make every completed write durable."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the device."""

    def announce(self, incarnation: str) -> None:  # noqa: B027 - optional hook
        """This client now writes as ``incarnation`` (a host's slot and generation): leave what
        another host needs to fence it (:meth:`fence`) where that host can find it."""

    def fence(self, incarnation: str) -> bool:
        """Cut the client that announced ``incarnation`` off the storage, so nothing it sent can
        land from now on, before its locks are broken; True if it was fenced.  Storage whose
        late writes are bounded in time instead (:attr:`late_write_bound`) has nothing to do."""
        return False

    def retire(self, incarnation: str) -> None:  # noqa: B027 - optional hook
        """``incarnation`` ended (released, or fenced and recovered): forget its announcement."""

    def leaves(self) -> list[BlockDevice]:
        """The devices that do the I/O under this one (itself, unless it wraps others)."""
        return [self]

    def before_fork(self) -> None:  # noqa: B027 - optional hook
        """The process is about to fork (a mount going to the background): a device whose client
        runs threads (librados) lets go of its connection here, since no thread crosses fork()."""

    def after_fork(self) -> None:  # noqa: B027 - optional hook
        """In the process that goes on after :meth:`before_fork`: connect again."""

    def __enter__(self) -> BlockDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "ro" if self.readonly else "rw"
        return f"<{type(self).__name__} {self.name} {self.size} bytes {mode}>"


class ProcessLocalDevice(BlockDevice):
    """A device only this process can see (memory, an overlay): no other host can race it, so
    ATS is a compare and a write under one thread lock."""

    def __init__(self, *, readonly: bool) -> None:
        super().__init__(readonly=readonly)
        self._lock = threading.Lock()

    def _compare_and_write(self, offset: int, expected: bytes, new: bytes) -> bool:
        with self._lock:
            if self._read(offset, len(expected)) != expected:
                return False
            self._write(offset, new)
            return True
