"""A writer host for the SIGKILL test: creates, fills, fsyncs and renames files until killed,
logging every acknowledged operation (the log is fsync'ed after the operation returned).

:func:`write_until_killed` is the host's work; run as a process (``main``) it is killed with
SIGKILL, run in the test's own process its device handle dies under it."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable

from vmfs.cluster.attachment import HostAttachment
from vmfs.cluster.host import HostIdentity
from vmfs.write.posix import WritableFileSystem

WRITER_UUID = "7000000a-00000000-0000-02000000000a"


def write_until_killed(fs: WritableFileSystem, start: int, acknowledged: Callable[[str, str], None]) -> None:
    """File ``start``, ``start + 1``, ... until something stops us; each acknowledged (path, sha256)
    is reported once its fsync (and rename) returned."""
    i = start
    while True:
        data = hashlib.sha256(str(i).encode()).digest() * (1 + i % 300)
        path = f"/w/f{i}"
        fd = fs.create(path)
        fs.write(fd.address, 0, data)
        fs.fsync(fd.address)
        if i % 3 == 0:
            fs.rename(path, f"/w/r{i}")
            path = f"/w/r{i}"
        acknowledged(path, hashlib.sha256(data).hexdigest())
        i += 1


def main() -> None:
    image, log_path = sys.argv[1], sys.argv[2]
    vol = HostAttachment.open(image, host=HostIdentity(uuid=WRITER_UUID, heartbeat_period=1.0))
    fs = WritableFileSystem(vol)
    log = open(log_path, "a+", buffering=1)  # noqa: SIM115
    log.seek(0)
    start = len(log.read().splitlines())  # continue after the operations of earlier rounds

    def acknowledged(path: str, digest: str) -> None:
        log.write(f"{path} {digest}\n")
        os.fsync(log.fileno())

    write_until_killed(fs, start, acknowledged)


if __name__ == "__main__":
    main()
