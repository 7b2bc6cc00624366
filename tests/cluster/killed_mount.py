"""vmfs-mount whose process SIGKILLs itself in the middle of a journal commit (test only).

Run as ``python -m tests.cluster.killed_mount VMFS-MOUNT-ARGS...``: the real ``vmfs-mount`` command
(:func:`tools.mount.main`), with one difference: the image is opened through
:class:`KillingFileDevice`, which watches the writes.  With ``VMFS_TEST_KILL_COMMIT=N`` in the
environment, once the journal write of the N-th transaction of two or more records has been made
(and flushed), the committing thread lets ``VMFS_TEST_KILL_HOME`` (default 1) of the
transaction's home writes through and then sends SIGKILL to its own process before the next one.

So the mount dies with the transaction half written at home, its journal complete: what is in
the page cache survives (it is the same kernel), what was not written is not.  Without a
journal replay the volume would hold half an operation; the next mount by the same host must
replay its own journal.  A SIGKILL at a random moment rarely lands there, which is why the test
uses this hook.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import vmfs.volume.volume
from vmfs.device.file import FileDevice
from vmfs.ondisk.journal import JOURNAL_HEADER_SIZE, JOURNAL_MAGIC, JournalHeader

_MAGIC = JOURNAL_MAGIC.to_bytes(8, "little")


class KillingFileDevice(FileDevice):
    """A FileDevice that kills its process part way through the home writes of a commit."""

    kill_commit = int(os.environ.get("VMFS_TEST_KILL_COMMIT", "0"))
    home_writes = int(os.environ.get("VMFS_TEST_KILL_HOME", "1"))
    commits = 0  # multi-record transactions journaled so far, over every device of the process
    _armed: tuple[int, int] | None = None  # (thread, home writes still let through)
    _local = threading.local()

    def _write(self, offset: int, data: bytes) -> None:
        cls = KillingFileDevice
        me = threading.get_ident()
        if cls._armed is not None and cls._armed[0] == me and not getattr(cls._local, "ats", False):
            if cls._armed[1] == 0:
                os.kill(os.getpid(), signal.SIGKILL)
            cls._armed = (me, cls._armed[1] - 1)
        super()._write(offset, data)
        if cls.kill_commit and data[:8] == _MAGIC and len(data) >= JOURNAL_HEADER_SIZE:
            header = JournalHeader.parse(data[:JOURNAL_HEADER_SIZE])
            if header.numRecords >= 2:
                cls.commits += 1
                if cls.commits == cls.kill_commit:
                    cls._armed = (me, min(cls.home_writes, header.numRecords - 1))

    def _compare_and_write(self, offset: int, expected: bytes, new: bytes) -> bool:
        KillingFileDevice._local.ats = True
        try:
            return super()._compare_and_write(offset, expected, new)
        finally:
            KillingFileDevice._local.ats = False


def main() -> None:
    # the one place the volume opens its images (setattr: a typo here would fail, not pass silently)
    def open_killing(spec: str, *, readonly: bool = True) -> KillingFileDevice:
        return KillingFileDevice(spec, readonly=readonly)

    assert hasattr(vmfs.volume.volume, "open_device")
    vmfs.volume.volume.open_device = open_killing  # type: ignore[assignment]
    from pyvmfs_tools.mount import main as mount_main

    sys.argv[0] = "vmfs-mount"
    mount_main()


if __name__ == "__main__":
    main()
