"""One host's handle on a device that several hosts of one process share.

Hosts share a volume only through the disk.  Inside one process (a simulation of several ESX
hosts, or a test that runs them as threads) they hold one device object, as the hosts of a SAN
see one LUN: every read, write, flush and ATS of every handle goes to that object, so an ATS is
atomic between the hosts exactly as it is between processes.  What a handle adds is only its own
life: closing it leaves the device open for the other hosts (the device's owner closes it).
"""

from __future__ import annotations

from vmfs.device.base import BlockDevice
from vmfs.errors import DeviceError


class SharedDevice(BlockDevice):
    """A handle on ``device`` (read-only when asked, or when the device is)."""

    def __init__(self, device: BlockDevice, *, readonly: bool | None = None) -> None:
        super().__init__(readonly=device.readonly if readonly is None else (readonly or device.readonly))
        self.device = device
        self.name = device.name
        #: the storage's path, when it is a file or block device: host identity locks are taken on it
        #: as a separate process would take them (:func:`vmfs.cluster.identitylock.storage_key`)
        self.path = getattr(device, "path", None)
        self.closed = False

    @property
    def size(self) -> int:
        return self.device.size

    def leaves(self) -> list[BlockDevice]:
        return self.device.leaves()

    def _check(self) -> None:
        if self.closed:
            raise DeviceError(f"{self.name}: this host's handle on the device is closed")

    def _read(self, offset: int, length: int) -> bytes:
        self._check()
        return self.device.read(offset, length)

    def _write(self, offset: int, data: bytes) -> None:
        self._check()
        self.device.write(offset, data)

    def _compare_and_write(self, offset: int, expected: bytes, new: bytes) -> bool:
        self._check()
        return self.device.compare_and_write(offset, expected, new)

    def flush(self) -> None:
        self._check()
        self.device.flush()

    def close(self) -> None:
        self.closed = True
