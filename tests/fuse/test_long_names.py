"""Names of 128 to 255 bytes (issue 10, fault 6): no VMFS entry can hold one (127 bytes is the
longest), so every lookup of one is ENAMETOOLONG, never "no such file".  The kernel refuses
names over 255 bytes before asking us; those from 128 up reach our lookup.

Through the library (FileSystem and WritableFileSystem: stat, chmod, unlink, rename, truncate,
readlink, listdir), through a read-only mount (stat, lstat, open, listdir) and through a
read-write mount (stat, chmod, unlink, rename from and to, truncate, utime, rmdir).
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Mount, tool
from vmfs.cluster.attachment import HostAttachment
from vmfs.cluster.host import HostIdentity, ManualClock
from vmfs.errors import NameTooLongError, NotFoundError
from vmfs.write.posix import WritableFileSystem

LENGTHS = (128, 200, 255)


def _host() -> HostIdentity:
    return HostIdentity(uuid="5f000000-00000001-0001-0200000000aa", ip="192.0.2.9", clock=ManualClock(),
                        heartbeat_period=3600.0, lease=1e9)


@pytest.fixture(scope="module")
def small_volume(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh vmfs-mkfs volume holding /f, /d and a 127-byte name (the longest there can be)."""
    image = tmp_path_factory.mktemp("long-names") / "v.img"
    subprocess.run([tool("vmfs-mkfs"), "-t", "vmfs5", "--size", "1G", str(image)], check=True, capture_output=True)
    with HostAttachment.open(image, host=_host()) as vol:
        fs = WritableFileSystem(vol)
        fs.write_file("/f", b"data\n")
        fs.mkdir("/d")
        fs.write_file("/" + "m" * 127, b"longest\n")
    image.chmod(0o444)
    return image


def _errno(call: Callable[[], object]) -> int | None:
    try:
        call()
    except OSError as exc:
        return exc.errno
    return None


@pytest.mark.parametrize("length", LENGTHS)
def test_library_lookups_of_long_names(small_volume: Path, tmp_path: Path, length: int) -> None:
    image = tmp_path / "v.img"
    subprocess.run(["cp", "--sparse=always", str(small_volume), str(image)], check=True)
    image.chmod(0o644)
    long = "/" + "n" * length
    with HostAttachment.open(image, host=_host()) as vol:
        fs = WritableFileSystem(vol)
        calls: dict[str, Callable[[], object]] = {
            "stat": lambda: fs.stat(long),
            "stat below": lambda: fs.stat(long + "/x"),
            "stat in a directory": lambda: fs.stat("/d/" + "n" * length),
            "readlink": lambda: fs.readlink(long),
            "listdir": lambda: fs.listdir(long),
            "chmod": lambda: fs.chmod(long, 0o600),
            "unlink": lambda: fs.unlink(long),
            "rmdir": lambda: fs.rmdir(long),
            "rename from": lambda: fs.rename(long, "/g"),
            "rename to": lambda: fs.rename("/f", long),
            "truncate": lambda: fs.truncate(fs.resolve(long).address, 0),
        }
        for call in calls.values():
            with pytest.raises(NameTooLongError):
                call()
        with pytest.raises(NotFoundError):  # 127 bytes: a name that could exist, and does not
            fs.stat("/" + "n" * 127)
        assert fs.stat("/" + "m" * 127).size == 8
        assert sorted(e.name for e in fs.listdir("/") if not e.name.endswith(".sf")) == ["d", "f", "m" * 127]
        assert fs.reader("/f").read(0, 100) == b"data\n"


@pytest.mark.fuse
def test_read_only_mount_gives_enametoolong(small_volume: Path, tmp_path: Path) -> None:
    mnt = tmp_path / "m"
    with Mount([tool("vmfs-mount"), str(small_volume), str(mnt)], mnt) as root:
        for length in LENGTHS:
            p = root / ("n" * length)
            calls: dict[str, Callable[[], object]] = {
                "stat": lambda p=p: os.stat(p),
                "lstat in a directory": lambda p=p: os.lstat(root / "d" / p.name),
                "open": lambda p=p: open(p, "rb"),  # noqa: SIM115
                "listdir": lambda p=p: os.listdir(p),
                "stat below": lambda p=p: os.stat(p / "below"),
            }
            got = {what: _errno(call) for what, call in calls.items()}
            assert got == dict.fromkeys(calls, errno.ENAMETOOLONG), (length, got)
        assert _errno(lambda: os.stat(root / ("n" * 127))) == errno.ENOENT
        assert (root / ("m" * 127)).read_bytes() == b"longest\n"
        assert _errno(lambda: os.stat(root / ("n" * 256))) == errno.ENAMETOOLONG  # the kernel's own


@pytest.mark.fuse
def test_read_write_mount_gives_enametoolong(small_volume: Path, tmp_path: Path) -> None:
    image = tmp_path / "v.img"
    subprocess.run(["cp", "--sparse=always", str(small_volume), str(image)], check=True)
    image.chmod(0o644)
    mnt = tmp_path / "m"
    with Mount([tool("vmfs-mount"), "-f", "-o", "rw", str(image), str(mnt)], mnt) as root:
        for length in LENGTHS:
            p = root / ("n" * length)
            calls: dict[str, Callable[[], object]] = {
                "stat": lambda p=p: os.stat(p),
                "chmod": lambda p=p: os.chmod(p, 0o600),
                "unlink": lambda p=p: os.unlink(p),
                "rmdir": lambda p=p: os.rmdir(p),
                "rename from": lambda p=p: os.rename(p, root / "g"),
                "rename to": lambda p=p: os.rename(root / "f", p),
                "truncate": lambda p=p: os.truncate(p, 0),
                "utime": lambda p=p: os.utime(p, (1, 1)),
                "create": lambda p=p: open(p, "wb"),  # noqa: SIM115
                "mkdir": lambda p=p: os.mkdir(p),
            }
            got = {what: _errno(call) for what, call in calls.items()}
            assert got == dict.fromkeys(calls, errno.ENAMETOOLONG), (length, got)
        assert (root / "f").read_bytes() == b"data\n"
        assert sorted(n for n in os.listdir(root) if not n.endswith(".sf")) == ["d", "f", "m" * 127]
