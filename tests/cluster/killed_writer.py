"""A writer host for the SIGKILL test: creates, fills, fsyncs and renames files until killed,
logging every acknowledged operation (the log is fsync'ed after the operation returned)."""

from __future__ import annotations

import hashlib
import os
import sys

from vmfs.cluster.host import HostIdentity
from vmfs.volume.volume import Volume
from vmfs.write.posix import WritableFileSystem


def main() -> None:
    image, log_path = sys.argv[1], sys.argv[2]
    vol = Volume.open(image, readonly=False, host=HostIdentity(uuid="7000000a-00000000-0000-02000000000a",
                                                               heartbeat_period=1.0))
    fs = WritableFileSystem(vol)
    log = open(log_path, "a+", buffering=1)  # noqa: SIM115
    log.seek(0)
    i = len(log.read().splitlines())  # continue after the operations of earlier rounds
    while True:
        data = hashlib.sha256(str(i).encode()).digest() * (1 + i % 300)
        path = f"/w/f{i}"
        fd = fs.create(path)
        fs.write(fd.address, 0, data)
        fs.fsync(fd.address)
        if i % 3 == 0:
            fs.rename(path, f"/w/r{i}")
            path = f"/w/r{i}"
        log.write(f"{path} {hashlib.sha256(data).hexdigest()}\n")
        os.fsync(log.fileno())
        i += 1


if __name__ == "__main__":
    main()
