"""A host of tests/network/test_link_cut.py: creates files in /shared until told to stop, each
made durable (fsync) before it is logged as acknowledged; when the volume is lost (its link was
cut) it closes what is left of its attachment and attaches again until it can, as an admin would
remount.  Every event goes to a JSON-lines log with its monotonic time (one clock for the whole
machine, whatever network namespace the process is in)."""

from __future__ import annotations

import json
import os
import sys
import time

from vmfs.cluster.attachment import HostAttachment
from vmfs.cluster.host import HostIdentity
from vmfs.errors import DeviceError, VmfsError, VolumeLostError
from vmfs.write.posix import WritableFileSystem

#: seconds between files: a steady stream to measure pauses on, not a benchmark
PAUSE = 0.02


def content(name: str, i: int) -> bytes:
    return f"{name} file {i}\n".encode() * (1 + i % 40)


def main() -> None:
    url, n, log_path, stop_path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    name = f"h{n}"
    host = HostIdentity(uuid=f"7100000{n}-00000000-0000-02000000000{n}", ip=f"198.51.100.{n}")
    log = open(log_path, "a", buffering=1)  # noqa: SIM115 - the whole run

    def event(kind: str, **fields: object) -> None:
        log.write(json.dumps({"t": time.monotonic(), "event": kind, **fields}) + "\n")

    def attach() -> tuple[HostAttachment, WritableFileSystem]:
        while True:
            try:
                att = HostAttachment.open(url, host=host)
                event("attached", slot=att.heartbeat.slot)
                return att, WritableFileSystem(att)
            except VmfsError as exc:
                event("attach-failed", error=str(exc))
                time.sleep(1)

    att, fs = attach()
    i = 0
    while not os.path.exists(stop_path):
        path = f"/shared/{name}-{i}"
        try:
            fd = fs.write_file(path, content(name, i))
            fs.fsync(fd.address)
            event("ack", path=path, i=i)
            i += 1
        except (VolumeLostError, DeviceError) as exc:
            event("error", path=path, error=f"{type(exc).__name__}: {exc}")
            try:
                att.close()
            except (VmfsError, OSError) as exc2:
                event("close-failed", error=str(exc2))
            att, fs = attach()
            i += 1  # the failed name may or may not exist: never reuse it
        except (VmfsError, OSError) as exc:  # not a lost volume: the test fails on these
            event("other-error", path=path, error=f"{type(exc).__name__}: {exc}")
            time.sleep(0.5)
            i += 1
        time.sleep(PAUSE)
    att.close()
    event("stopped")


if __name__ == "__main__":
    main()
