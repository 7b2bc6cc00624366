"""The two backends the model checker drives: the library itself and a real FUSE mount.

Both offer the same operations by name (``run(op, *args)`` returns the errno, None for success),
open handles (``h_*``), a view of the tree (``tree()``, one :class:`Seen` per path) and the
on-disk view read from the image by a separate read-only open (``disk()``), which is what a
crash or the next mount would find.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmfs.cluster.attachment import HostAttachment
from vmfs.cluster.host import HostIdentity
from vmfs.errors import IsADirError, VmfsError
from vmfs.ondisk import filedesc as F
from vmfs.volume.usage import marked_used, referenced_resources
from vmfs.volume.volume import Volume
from vmfs.write.posix import WritableFileSystem

HOST = HostIdentity(uuid="5f000000-00000001-0001-020000000001", ip="192.0.2.1")
#: what a mount log must never say (issue 10 fault 7: one host fighting itself over a lock)
LOG_ALARMS = ("Traceback", "changed by another host")


def is_system(path: str) -> bool:
    return posixpath.dirname(path) == "/" and path.endswith(".sf")


def journal_addresses(volume: Volume) -> frozenset[int]:
    """The journals of in-use heartbeat slots: fixed while a host stays mounted."""
    from vmfs.volume.slots import read_slots

    return frozenset(s.hb.journalAddr for s in read_slots(volume) if s.in_use and s.hb.journalAddr)


def accounting_problems(volume: Volume, journals: frozenset[int] | None = None) -> list[str]:
    """Bitmaps, cluster counts and the resources reachable from the tree agree."""
    refs = referenced_resources(volume, journals)
    used = marked_used(volume)
    problems = []
    for kind, marked in used.items():
        got = refs.get(kind, set())
        if marked != got:
            problems.append(f"type {kind}: leaked {sorted(marked - got)[:5]} unaccounted {sorted(got - marked)[:5]}")
        res = volume.resources[kind]
        total, free = res.usage()
        if total - free != len(marked):
            problems.append(f"type {kind}: cluster counts say {total - free} used, bitmaps {len(marked)}")
    return problems


def oracle_lists(image: Path) -> None:
    """vmfs-tools' debugvmfs (debugvmfs6 for VMFS6) can open the volume and list its root (they
    crash on some layouts)."""
    with Volume.open(image) as vol:
        prog = "debugvmfs6" if vol.geometry.vmfs6 else "debugvmfs"
    r = subprocess.run([prog, str(image), "ls", "-l", "/"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and ".fdc.sf" in r.stdout, f"{prog} failed ({r.returncode}): {r.stderr}"


def fsck_clean(image: Path) -> None:
    """Our fsck, read-only (in this process: the tool's start-up would double the cost), finds
    nothing on the unmounted image."""
    from vmfs.fsck import FsckOptions, Mode, Policy, check

    report = check([str(image)], FsckOptions(policy=Policy(Mode.NO)))
    assert report.exit_code == 0 and not report.findings, (
        f"fsck exit {report.exit_code}: {[str(f) for f in report.findings][:10]} {report.error or ''}"
    )


@dataclass
class Seen:
    """What a backend shows of one path."""

    kind: str
    mode: int
    uid: int
    gid: int
    nlink: int
    mtime: int
    atime: int
    size: int = 0
    target: str | None = None
    file: Any = None


@dataclass
class DiskView:
    """The image as a fresh read-only open sees it: path -> (kind, size), and accounting."""

    entries: dict[str, tuple[str, int]]
    problems: list[str]


def disk_view(image: Path, journals: frozenset[int] | None) -> DiskView:
    """What a fresh read-only open of the image finds (``journals``: see referenced_resources)."""
    from vmfs.volume.namespace import FileSystem

    with Volume.open(image) as vol:
        fs = FileSystem(vol)
        entries: dict[str, tuple[str, int]] = {}
        for d, listing in fs.walk("/"):
            for e in listing:
                p = posixpath.join(d, e.name)
                if is_system(p):
                    continue
                fd = vol.read_fd(e.address)
                kind = {F.TYPE_DIRECTORY: "dir", F.TYPE_SYMLINK: "link"}.get(fd.type, "file")
                entries[p] = (kind, fd.size)
        return DiskView(entries, accounting_problems(vol, journals))


def hidden_on_disk(image: Path) -> int:
    """Entries of the image named as unlinked open files (libfuse's or the library's)."""
    from tests.model.fsmodel import is_hidden
    from vmfs.volume.namespace import FileSystem

    with Volume.open(image) as vol:
        return sum(1 for d, listing in FileSystem(vol).walk("/") for e in listing if is_hidden(e.name))


class LibraryFile:
    def __init__(self, reader) -> None:  # type: ignore[no-untyped-def]
        self.reader = reader
        self.size = reader.size

    def read(self, offset: int, length: int) -> bytes:
        return self.reader.read(offset, length)

    def allocated(self) -> list[tuple[int, int]]:
        """The allocated ranges (compared whole); none for files past 1 TiB, whose extents
        would be walked block by block (their written chunks are compared anyway)."""
        if self.reader.fd.is_resident or not self.size:
            return [(0, self.size)]
        if self.size > 1 << 40:
            return []
        return [(o, n) for o, n, loc in self.reader.extents(0, self.size) if loc is not None]


class MountedFile:
    def __init__(self, path: str, size: int) -> None:
        self.path = path
        self.size = size

    def read(self, offset: int, length: int) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(length)

    def allocated(self) -> list[tuple[int, int]]:
        return []


class Backend:
    """What both backends share: errno capture and the count of bytes a failed write did."""

    name = ""
    errors: tuple[type[BaseException], ...] = (OSError,)
    image: Path

    def __init__(self) -> None:
        self._local = threading.local()
        self._journals: frozenset[int] | None = None

    def sync_to_disk(self) -> None:
        """Before the disk is looked at: what the backend has acknowledged is to be on it."""

    def disk_full(self) -> DiskView:
        """The on-disk view with the full accounting (heartbeat slots parsed again)."""
        self.sync_to_disk()
        with Volume.open(self.image) as vol:
            self._journals = journal_addresses(vol)
        return disk_view(self.image, None)

    def disk(self) -> DiskView:
        if self._journals is None:
            return self.disk_full()
        self.sync_to_disk()
        return disk_view(self.image, self._journals)

    @property
    def last_done(self) -> int:
        """Bytes the last failed ``write`` of this thread wrote before its error (a short write)."""
        return getattr(self._local, "done", 0)

    def run(self, op: str, *args: object) -> int | None:
        self._local.done = 0
        try:
            getattr(self, "_" + op)(*args)
        except self.errors as exc:
            return exc.errno
        return None

    def h(self, op: str, *args: object) -> tuple[int | None, Any]:
        """A handle operation: (errno or None, result)."""
        self._local.done = 0
        try:
            return None, getattr(self, "h_" + op)(*args)
        except self.errors as exc:
            return exc.errno, None


class LibraryBackend(Backend):
    name = "library"
    errors = (VmfsError,)

    def __init__(self, image: Path) -> None:
        super().__init__()
        self.image = image
        self.open()

    def open(self) -> None:
        self.attachment = HostAttachment.open(self.image, host=HOST)
        self.volume = self.attachment.volume
        self.fs = WritableFileSystem(self.attachment)

    def close(self) -> None:
        self.attachment.close()

    def _create(self, p: str) -> None:
        self.fs.create(p)

    def _mkdir(self, p: str) -> None:
        self.fs.mkdir(p)

    def _symlink(self, target: str, p: str) -> None:
        self.fs.symlink(target, p)

    def _write(self, p: str, offset: int, data: bytes) -> None:
        self._write_at(self.fs.resolve(p, follow=False).address, offset, data)

    def _write_at(self, address: int, offset: int, data: bytes) -> None:
        done = 0
        while done < len(data):
            self._local.done = done
            done += self.fs.write(address, offset + done, data[done:])

    def _truncate(self, p: str, size: int) -> None:
        self.fs.truncate(self.fs.resolve(p, follow=False).address, size)

    def _unlink(self, p: str) -> None:
        self.fs.unlink(p)

    def _rmdir(self, p: str) -> None:
        self.fs.rmdir(p)

    def _rename(self, a: str, b: str) -> None:
        self.fs.rename(a, b)

    def _chmod(self, p: str, mode: int) -> None:
        self.fs.chmod(p, mode)

    def _chown(self, p: str, uid: int, gid: int, follow: bool) -> None:
        self.fs.chown(p, uid, gid, follow=follow)

    def _utimens(self, p: str, atime: int | str, mtime: int | str) -> None:
        def value(v: int | str) -> int | None:
            return None if v == "omit" else self.fs.now() if v == "now" else int(v)

        self.fs.utimens(p, value(atime), value(mtime), follow=False)

    def _stat(self, p: str) -> None:
        self.fs.stat(p)

    # handles: the FD address, opened for writing as the FUSE layer opens it
    def h_open(self, p: str) -> int:
        fd = self.fs.resolve(p)
        if fd.is_dir:
            raise IsADirError(f"{p}: is a directory")
        address = fd.address
        self.fs.open_file(address, write=True)
        return address

    def h_write(self, h: int, offset: int, data: bytes) -> None:
        self._write_at(h, offset, data)

    def h_read(self, h: int, offset: int, length: int) -> bytes:
        return self.volume.reader(self.volume.read_fd(h)).read(offset, length)

    def h_size(self, h: int) -> int:
        return self.volume.read_fd(h).size

    def h_truncate(self, h: int, size: int) -> None:
        self.fs.truncate(h, size)

    def h_fsync(self, h: int) -> None:
        self.fs.fsync(h)

    def h_close(self, h: int) -> None:
        self.fs.close_file(h, write=True)

    def settle(self, hidden: int = 0) -> None:
        """Nothing runs in the background of the library."""

    def remount(self) -> None:
        self.close()
        oracle_lists(self.image)
        self.open()
        self._journals = None

    def tree(self) -> dict[str, Seen]:
        out: dict[str, Seen] = {}
        root = self.volume.read_fd(self.volume.root_address)
        for d, entries in [("", [None]), *self.fs.walk("/")]:
            for e in entries:
                p = posixpath.join(d, e.name) if e is not None else "/"
                if is_system(p):
                    continue
                fd = self.volume.read_fd(e.address) if e is not None else root
                m = fd.meta
                seen = Seen("file", m.mode & 0o7777, m.uid, m.gid, m.linkCount, m.mtime, m.atime, size=fd.size)
                if fd.type == F.TYPE_DIRECTORY:
                    seen.kind = "dir"
                elif fd.type == F.TYPE_SYMLINK:
                    seen.kind, seen.target = "link", self.fs.read_link_fd(fd)
                else:
                    seen.file = LibraryFile(self.volume.reader(fd))
                out[p] = seen
        return out



class FuseBackend(Backend):
    name = "fuse"

    def __init__(self, image: Path, mountpoint: Path, mount_tool: str) -> None:
        super().__init__()
        self.image = image
        self.mnt = mountpoint
        self.tool = mount_tool
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = mountpoint.parent / "mount.log"
        self.open()

    def open(self) -> None:
        self.mnt.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:  # a file, not a pipe: a chatty mount must never block
            self.proc = subprocess.Popen(
                # group commit on: every step's effects wait in the batch until the disk is looked at
                [self.tool, "-f", "-o", "rw,commit=0.05", "--host-uuid", HOST.uuid, str(self.image), str(self.mnt)],
                stderr=log,
            )
        deadline = time.monotonic() + 30
        while not os.path.ismount(self.mnt):
            if self.proc.poll() is not None:
                raise RuntimeError(f"mount failed: {self.log_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("mount did not appear")
            time.sleep(0.02)

    def sync_to_disk(self) -> None:
        """fsync of the mount's root directory: the mount's open batch (it runs with group
        commit) commits, so a separate open of the image sees every acknowledged change."""
        fd = os.open(self.mnt, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def log_alarms(self) -> list[str]:
        return [line for line in self.log_text().splitlines() if any(a in line for a in LOG_ALARMS)]

    def close(self) -> None:
        subprocess.run(["fusermount", "-u", str(self.mnt)], check=True)
        assert self.proc is not None
        rc = self.proc.wait(timeout=60)
        if rc != 0 or "Traceback" in self.log_text():
            raise RuntimeError(f"vmfs-mount exited {rc}: {self.log_text()[-3000:]}")

    def _p(self, p: str) -> str:
        return str(self.mnt) + p

    def _create(self, p: str) -> None:
        fd = os.open(self._p(p), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        os.close(fd)

    def _mkdir(self, p: str) -> None:
        os.mkdir(self._p(p))

    def _symlink(self, target: str, p: str) -> None:
        os.symlink(target, self._p(p))

    def _pwrite_all(self, fd: int, offset: int, data: bytes) -> None:
        view = memoryview(data)
        done = 0
        while done < len(data):
            self._local.done = done
            done += os.pwrite(fd, view[done:], offset + done)

    def _write(self, p: str, offset: int, data: bytes) -> None:
        fd = os.open(self._p(p), os.O_WRONLY)
        try:
            self._pwrite_all(fd, offset, data)
        finally:
            os.close(fd)

    def _truncate(self, p: str, size: int) -> None:
        os.truncate(self._p(p), size)

    def _unlink(self, p: str) -> None:
        os.unlink(self._p(p))

    def _rmdir(self, p: str) -> None:
        os.rmdir(self._p(p))

    def _rename(self, a: str, b: str) -> None:
        os.rename(self._p(a), self._p(b))

    def _chmod(self, p: str, mode: int) -> None:
        os.chmod(self._p(p), mode)

    def _chown(self, p: str, uid: int, gid: int, follow: bool) -> None:
        os.chown(self._p(p), uid, gid, follow_symlinks=follow)

    def _utimens(self, p: str, atime: int | str, mtime: int | str) -> None:
        def spec(v: int | str) -> int:
            return {"now": (1 << 30) - 1, "omit": (1 << 30) - 2}.get(v, 0)  # type: ignore[call-overload]

        if atime == mtime == "now":
            os.utime(self._p(p), follow_symlinks=False)
            return
        # os.utime cannot pass UTIME_NOW/UTIME_OMIT for one field only: utimensat through ctypes
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)

        class Timespec(ctypes.Structure):
            _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

        times = (Timespec * 2)(*(Timespec(v if isinstance(v, int) else 0, spec(v)) for v in (atime, mtime)))
        at_fdcwd, at_symlink_nofollow = -100, 0x100
        if libc.utimensat(at_fdcwd, self._p(p).encode(), times, at_symlink_nofollow) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))

    def _stat(self, p: str) -> None:
        os.lstat(self._p(p))

    def h_open(self, p: str) -> int:
        return os.open(self._p(p), os.O_RDWR)

    def h_write(self, h: int, offset: int, data: bytes) -> None:
        self._pwrite_all(h, offset, data)

    def h_read(self, h: int, offset: int, length: int) -> bytes:
        return os.pread(h, length, offset)

    def h_size(self, h: int) -> int:
        return os.fstat(h).st_size

    def h_truncate(self, h: int, size: int) -> None:
        os.ftruncate(h, size)

    def h_fsync(self, h: int) -> None:
        os.fsync(h)

    def h_close(self, h: int) -> None:
        os.close(h)

    def settle(self, hidden: int = 0, timeout: float = 10.0) -> None:
        """close(2) waits for FLUSH, not for RELEASE, and an unlinked file's hidden name goes
        away at RELEASE.  Wait until the image holds no more than ``hidden`` hidden names."""
        deadline = time.monotonic() + timeout
        while hidden_on_disk(self.image) > hidden and time.monotonic() < deadline:
            time.sleep(0.05)

    def remount(self) -> None:
        self.close()
        oracle_lists(self.image)
        self.open()
        self._journals = None

    def tree(self) -> dict[str, Seen]:
        out: dict[str, Seen] = {}
        for dirpath, dirnames, filenames in os.walk(self.mnt):
            for full in [dirpath] if dirpath == str(self.mnt) else []:
                out["/"] = self._seen(full)
            for name in dirnames + filenames:
                full = os.path.join(dirpath, name)
                p = "/" + os.path.relpath(full, self.mnt)
                if not is_system(p):
                    out[p] = self._seen(full)
        return out

    @staticmethod
    def _seen(full: str) -> Seen:
        st = os.lstat(full)
        seen = Seen("file", st.st_mode & 0o7777, st.st_uid, st.st_gid, st.st_nlink, int(st.st_mtime),
                    int(st.st_atime), size=st.st_size)
        if stat.S_ISLNK(st.st_mode):
            seen.kind, seen.target = "link", os.readlink(full)
        elif stat.S_ISDIR(st.st_mode):
            seen.kind = "dir"
        else:
            seen.file = MountedFile(full, st.st_size)
        return seen



__all__ = ["DiskView", "FuseBackend", "LibraryBackend", "Seen", "errno", "fsck_clean"]
