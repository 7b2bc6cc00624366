"""The two backends the model checker drives: the library itself and a real FUSE mount."""

from __future__ import annotations

import errno
import os
import posixpath
import subprocess
import time
from pathlib import Path

from vmfs.errors import VmfsError
from vmfs.host import HostIdentity
from vmfs.ondisk import filedesc as F
from vmfs.usage import marked_used, referenced_resources
from vmfs.volume import Volume
from vmfs.writeops import WritableFileSystem

HOST = HostIdentity(uuid="5f000000-00000001-0001-020000000001", ip="192.0.2.1")


def is_system(path: str) -> bool:
    return posixpath.dirname(path) == "/" and path.endswith(".sf")


def accounting_problems(volume: Volume) -> list[str]:
    refs = referenced_resources(volume)
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
    """vmfs-tools' debugvmfs can open the volume and list its root (it crashes on some layouts)."""
    r = subprocess.run(["debugvmfs", str(image), "ls", "-l", "/"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and ".fdc.sf" in r.stdout, f"debugvmfs failed ({r.returncode}): {r.stderr}"


class LibraryFile:
    def __init__(self, reader) -> None:  # type: ignore[no-untyped-def]
        self.reader = reader
        self.size = reader.size

    def read(self, offset: int, length: int) -> bytes:
        return self.reader.read(offset, length)

    def allocated(self) -> list[tuple[int, int]]:
        if self.reader.fd.is_resident or not self.size:
            return [(0, self.size)]
        return [(o, n) for o, n, loc in self.reader.extents(0, self.size) if loc is not None]


class MountedFile:
    def __init__(self, path: str) -> None:
        self.path = path
        self.size = os.lstat(path).st_size

    def read(self, offset: int, length: int) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(length)

    def allocated(self) -> list[tuple[int, int]]:
        return []


class LibraryBackend:
    name = "library"

    def __init__(self, image: Path) -> None:
        self.image = image
        self.open()

    def open(self) -> None:
        self.volume = Volume.open(self.image, readonly=False, host=HOST)
        self.fs = WritableFileSystem(self.volume)

    def close(self) -> None:
        self.volume.close()

    def run(self, op: str, *args: object) -> int | None:
        try:
            getattr(self, "_" + op)(*args)
        except VmfsError as exc:
            return exc.errno
        return None

    def _create(self, p: str) -> None:
        self.fs.create(p)

    def _mkdir(self, p: str) -> None:
        self.fs.mkdir(p)

    def _symlink(self, target: str, p: str) -> None:
        self.fs.symlink(target, p)

    def _write(self, p: str, offset: int, data: bytes) -> None:
        self.fs.write(self.fs.resolve(p, follow=False).address, offset, data)

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

    def remount(self) -> None:
        self.close()
        oracle_lists(self.image)
        self.open()

    def tree(self) -> dict[str, tuple]:
        out: dict[str, tuple] = {}
        for d, entries in self.fs.walk("/"):
            for e in entries:
                p = posixpath.join(d, e.name)
                if is_system(p):
                    continue
                fd = self.volume.read_fd(e.address)
                mode = fd.meta.mode & 0o7777
                if fd.type == F.TYPE_DIRECTORY:
                    out[p] = ("dir", None, mode)
                elif fd.type == F.TYPE_SYMLINK:
                    out[p] = ("link", self.fs.read_link_fd(fd))
                else:
                    out[p] = ("file", LibraryFile(self.volume.reader(fd)), mode)
        return out

    def accounting(self) -> list[str]:
        self.fs.flush_all()
        return accounting_problems(self.volume)


class FuseBackend:
    name = "fuse"

    def __init__(self, image: Path, mountpoint: Path, mount_tool: str) -> None:
        self.image = image
        self.mnt = mountpoint
        self.tool = mount_tool
        self.proc: subprocess.Popen[bytes] | None = None
        self.open()

    def open(self) -> None:
        self.mnt.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [self.tool, "-f", "-o", "rw", "--host-uuid", HOST.uuid, str(self.image), str(self.mnt)],
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while not os.path.ismount(self.mnt):
            if self.proc.poll() is not None:
                raise RuntimeError(self.proc.stderr.read().decode() if self.proc.stderr else "mount failed")
            if time.monotonic() > deadline:
                raise RuntimeError("mount did not appear")
            time.sleep(0.02)

    def close(self) -> None:
        subprocess.run(["fusermount", "-u", str(self.mnt)], check=True)
        assert self.proc is not None
        rc = self.proc.wait(timeout=60)
        err = self.proc.stderr.read().decode() if self.proc.stderr else ""
        if rc != 0 or "Traceback" in err:
            raise RuntimeError(f"vmfs-mount exited {rc}: {err}")

    def _p(self, p: str) -> str:
        return str(self.mnt) + p

    def run(self, op: str, *args: object) -> int | None:
        try:
            getattr(self, "_" + op)(*args)
        except OSError as exc:
            return exc.errno
        return None

    def _create(self, p: str) -> None:
        fd = os.open(self._p(p), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        os.close(fd)

    def _mkdir(self, p: str) -> None:
        os.mkdir(self._p(p))

    def _symlink(self, target: str, p: str) -> None:
        os.symlink(target, self._p(p))

    def _write(self, p: str, offset: int, data: bytes) -> None:
        fd = os.open(self._p(p), os.O_WRONLY)
        try:
            view = memoryview(data)
            while view:
                n = os.pwrite(fd, view, offset)
                view = view[n:]
                offset += n
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

    def remount(self) -> None:
        self.close()
        oracle_lists(self.image)
        self.open()

    def tree(self) -> dict[str, tuple]:
        out: dict[str, tuple] = {}
        for dirpath, dirnames, filenames in os.walk(self.mnt):
            for name in dirnames + filenames:
                full = os.path.join(dirpath, name)
                p = "/" + os.path.relpath(full, self.mnt)
                if is_system(p):
                    continue
                mode = os.lstat(full).st_mode & 0o7777
                if os.path.islink(full):
                    out[p] = ("link", os.readlink(full))
                elif os.path.isdir(full):
                    out[p] = ("dir", None, mode)
                else:
                    out[p] = ("file", MountedFile(full), mode)
        return out

    def accounting(self) -> list[str]:
        """Read the image while it stays mounted (every operation has completed and closed its
        files, so the on-disk state is whole)."""
        with Volume.open(self.image) as vol:
            return accounting_problems(vol)


__all__ = ["FuseBackend", "LibraryBackend", "errno"]
