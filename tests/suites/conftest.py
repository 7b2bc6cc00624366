"""Outside filesystem test suites (pjdfstest, fsx, fio) run against a real read-write mount.

The suites come as source archives in ``shared/suites/`` (found as tests/conftest.py finds
``shared/``); they are built once into ``build-suites/`` in the checkout (ignored by git;
``$VMFS_SUITES_BUILD`` elsewhere) and the build is reused while the archive is the same.
Every test here mounts a fresh volume with ``vmfs-mount -f`` in the foreground, so that the
unmount can wait for the mount process itself to end (only then is everything on disk and the
heartbeat slot released) before fsck looks.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import REPO, SHARED, tool, unmount, wait_mounted

SUITES = SHARED / "suites"
BUILD = Path(os.environ.get("VMFS_SUITES_BUILD", REPO / "build-suites"))

#: the log line the locking code writes when a lock it holds was rewritten under it
LOCK_STOLEN = "was changed by another host"

PJDFSTEST_BUILD = ["sh", "-c", "autoreconf -ifs && ./configure && make pjdfstest"]
FSX_BUILD = ["gcc", "-O2", "-D_GNU_SOURCE", "-include", "getopt.h", "-include", "sys/stat.h", "-include",
             "fcntl.h", "-include", "unistd.h", "-Istub", "-Isrc", "-Iinclude", "-o", "fsx", "ltp/fsx.c"]


def _archive(prefix: str) -> Path:
    found = sorted(SUITES.glob(f"{prefix}-*.tar.gz"))
    if not found:
        pytest.fail(f"no {prefix}-*.tar.gz in {SUITES} (set VMFS_SHARED to the shared/ folder)")
    return found[-1]


def build_suite(prefix: str, argv: list[str], product: str) -> Path:
    """The folder of a suite built from its archive, built now unless a build of the same archive
    is already there (a lock keeps two test sessions from building it at once)."""
    archive = _archive(prefix)
    dest = BUILD / archive.name.removesuffix(".tar.gz")
    BUILD.mkdir(parents=True, exist_ok=True)
    with open(BUILD / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (dest / product).exists():
            return dest
        work = BUILD / f".{dest.name}.part"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        subprocess.run(["tar", "xzf", str(archive), "-C", str(work)], check=True)
        (top,) = work.iterdir()
        r = subprocess.run(argv, cwd=top, capture_output=True, text=True)
        if r.returncode != 0 or not (top / product).exists():
            pytest.fail(f"building {archive.name} failed ({r.returncode}): {(r.stdout + r.stderr)[-3000:]}")
        shutil.rmtree(dest, ignore_errors=True)
        top.rename(dest)
        work.rmdir()
    return dest


@pytest.fixture(scope="session")
def pjdfstest_dir() -> Path:
    """pjdfstest's source folder with the ``pjdfstest`` program built beside its ``tests/``."""
    return build_suite("pjdfstest", PJDFSTEST_BUILD, "pjdfstest")


@pytest.fixture(scope="session")
def fsx_bin() -> Path:
    return build_suite("fsx-xfstests", FSX_BUILD, "fsx") / "fsx"


def mkfs(image: Path, size: str, *extra: str) -> Path:
    subprocess.run([tool("vmfs-mkfs"), "-t", "vmfs5", "--size", size, *extra, str(image)], check=True,
                   capture_output=True)
    return image


def fsck_n(image: Path) -> tuple[int, str]:
    """``vmfs-fsck -n`` as a user runs it: (exit status, everything it printed)."""
    r = subprocess.run([tool("vmfs-fsck"), "-n", str(image)], capture_output=True, text=True, timeout=900)
    return r.returncode, r.stdout + r.stderr


class RwMount:
    """``vmfs-mount -f -o OPTIONS --log-file LOG IMAGE MNT``; on exit unmounts and waits for the
    mount process to end, which it does only once everything is written back."""

    def __init__(self, image: Path, mountpoint: Path, options: str = "rw", *, log: Path | None = None) -> None:
        self.image = image
        self.mountpoint = mountpoint
        self.options = options
        self.log = log or mountpoint.with_name(mountpoint.name + ".log")
        self.output = self.log.with_suffix(".out")
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None

    def __enter__(self) -> RwMount:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        argv = [tool("vmfs-mount"), "-f", "-o", self.options, "--log-file", str(self.log),
                str(self.image), str(self.mountpoint)]
        with open(self.output, "wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        wait_mounted(self.mountpoint, self.proc)
        return self

    def close(self, timeout: float = 600.0) -> int:
        """Unmount and wait for the mount process; its exit status."""
        if self.proc is None:
            return self.returncode or 0
        unmount(self.mountpoint)
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.returncode = self.proc.wait()
        self.proc = None
        return self.returncode

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def lock_errors(self) -> list[str]:
        """Lines of the mount's log saying a lock it held was taken from it (one host: never)."""
        return [line for line in self.log_text().splitlines() if LOCK_STOLEN in line]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def evict(path: Path) -> None:
    """Drop the kernel's cached pages of one file, so the next read asks the filesystem."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@contextmanager
def oracle_mount(image: Path, mountpoint: Path) -> Iterator[Path]:
    """The volume through vmfs-tools' read-only ``vmfs-fuse`` (an independent reader)."""
    from tests.oracles import OracleMount

    with OracleMount("vmfs-fuse", [image], mountpoint) as root:
        yield root
