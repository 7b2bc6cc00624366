"""A writer that dies by SIGKILL at the worst moment of a transaction: its journal holds the whole
transaction, none of it has reached home, and its locks are still held.  Whoever next writes as
this host must replay the journal (``python -m tests.fuse.crashing_writer IMAGE DIR [HOST-UUID]``)."""

from __future__ import annotations

import os
import signal
import sys

from vmfs.cluster.attachment import HostAttachment
from vmfs.cluster.host import HostIdentity
from vmfs.write.posix import WritableFileSystem


def main() -> None:
    image, directory = sys.argv[1], sys.argv[2]
    host = HostIdentity(uuid=sys.argv[3]) if len(sys.argv) > 3 else HostIdentity()
    vol = HostAttachment.open(image, host=host)
    journal = vol.journal
    device = vol.volume.device
    real_write = device.write
    journaled = False

    def write(offset: int, data: bytes) -> None:
        nonlocal journaled
        if offset == journal.area.offset and data[:4] != bytes(4):
            journaled = True  # the transaction is in the journal (and flushed right after)
        elif journaled:
            os.kill(os.getpid(), signal.SIGKILL)  # first write home: die before it
        real_write(offset, data)

    device.write = write  # type: ignore[method-assign]
    WritableFileSystem(vol).mkdir(directory)
    raise SystemExit("the transaction finished without the writer being killed")


if __name__ == "__main__":
    main()
