"""Volumes for the fsck tests: formatted by vmfs.mkfs and populated through WritableFileSystem,
byte-for-byte reproducible (fixed UUIDs, fixed creation time, a manual clock, seeded data)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

from vmfs.cluster.attachment import HostAttachment
from vmfs.cluster.host import HostIdentity, ManualClock
from vmfs.device.file import FileDevice
from vmfs.mkfs import MkfsOptions, format_volume
from vmfs.ondisk import filedesc as F
from vmfs.volume.filereader import FileReader
from vmfs.volume.namespace import FileSystem, stat_fd
from vmfs.volume.volume import Volume
from vmfs.write.posix import WritableFileSystem

MIB = 1 << 20
GIB = 1 << 30
#: two 256-MiB LVM5 segments plus the 17 MiB before the first PE
IMAGE_SIZE = 512 * MIB + 17 * MIB
OPTIONS = MkfsOptions(
    label="fsck test",
    fs_uuid="65000000-00000001-0001-020000000001",
    lv_uuid="65000000-00000002-0002-020000000001",
    host_uuid="65000000-00000003-0003-020000000001",
    device_uuids=("65000000-00000004-0004-020000000001",),
    creation_time_us=1_700_000_000_000_000,
    num_pointer_blocks=8,  # a double-indirect file needs two, a single-indirect one one
)
#: VMFS6: a volume ESXi would format (it refuses less than about 1.3 GB), 17 MiB before the data
IMAGE_SIZE6 = 2 * GIB + 17 * MIB
OPTIONS6 = dataclasses.replace(OPTIONS, version=6, num_pointer_blocks=None, label="fsck test 6",
                               fs_uuid="65000000-00000001-0001-020000000006")
#: the host that writes the test volumes (not this machine's identity, so fsck never takes its
#: slots for its own)
WRITER = "5f000000-00000001-0001-020000000001"
OTHER = "5f000000-00000002-0002-020000000002"


def host(uuid: str = WRITER) -> HostIdentity:
    return HostIdentity(uuid=uuid, ip="192.0.2.1", clock=ManualClock(), heartbeat_period=3600.0, lease=1e9)


def data(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def populate(fs: WritableFileSystem) -> None:
    fs.mkdir("/d1")
    fs.write_file("/d1/small", b"small file\n" * 9)
    fs.write_file("/d1/sub", data(8000, 1))
    fs.write_file("/d1/big", data(3 * MIB + 12345, 2))
    fs.mkdir("/d1/d2")
    fs.write_file("/d1/d2/inner", b"deep inside\n")
    fs.write_file("/top", data(2 * MIB, 3))
    fs.symlink("d1/small", "/link")
    fs.write_file("/empty", b"")
    fs.mkdir("/many")
    for i in range(70):
        fs.write_file(f"/many/f{i:02d}", f"file {i}\n".encode())
    for path, size in (("/sparse300m", 300 * MIB), ("/huge", 300 * GIB)):
        fd = fs.create(path)
        fs.write(fd.address, size - 4096, data(4096, size & 0xFFFF))


def make_volume(path: Path, version: int = 5) -> Path:
    """The populated volume of the corpus, as VMFS5 or VMFS6."""
    with open(path, "wb") as f:
        f.truncate(IMAGE_SIZE6 if version == 6 else IMAGE_SIZE)
    dev = FileDevice(path, readonly=False)
    try:
        format_volume([dev], OPTIONS6 if version == 6 else OPTIONS)
    finally:
        dev.close()
    with HostAttachment.open(path, host=host()) as vol:
        populate(WritableFileSystem(vol))
    return path


def copy(src: Path, dst: Path) -> Path:
    subprocess.run(["cp", "--sparse=always", str(src), str(dst)], check=True)
    return dst


def sparse_digest(path: Path) -> str:
    """sha256 over the data extents (and their offsets) of a sparse image: cheap, and any write,
    even of zeros into a hole, changes it."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            h.update(start.to_bytes(8, "little"))
            f.seek(start)
            left = end - start
            while left:
                chunk = f.read(min(left, 16 * MIB))
                h.update(chunk)
                left -= len(chunk)
            pos = end
    return h.hexdigest()


def _digest(reader: FileReader, size: int) -> str:
    from tests.helpers import digest

    return digest(reader.read, size)


def capture(path: Path | list[Path]) -> dict[str, dict[str, Any]]:
    """Every entry below the root as our reader sees it, in tests.helpers.capture_dissect's shape."""
    paths = path if isinstance(path, list) else [path]
    with Volume.open(paths) as vol:
        fs = FileSystem(vol)
        tree: dict[str, dict[str, Any]] = {}
        for dirpath, entries in fs.walk("/"):
            for e in entries:
                fd = vol.read_fd(e.address)
                st = stat_fd(fd)
                full = dirpath.rstrip("/") + "/" + e.name
                rec: dict[str, Any] = {"mode": st.mode, "uid": st.uid, "gid": st.gid, "size": st.size,
                                       "nlink": st.nlink, "mtime": st.mtime, "ctime": st.ctime, "atime": st.atime}
                if fd.type == F.TYPE_SYMLINK:
                    rec["target"] = fs.read_link_fd(fd)
                elif not fd.is_dir:
                    rec["sha256"] = _digest(FileReader(fd), fd.size)
                tree[full] = rec
        return tree


def have(tool: str) -> bool:
    return shutil.which(tool) is not None
