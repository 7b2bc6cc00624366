"""Paths: walking from the root, stat, listing, symlinks, opening files.

This is the POSIX face of a volume used by the FUSE adapter and the tools.  Paths are absolute,
'/'-separated; '.' and '..' are resolved along the path walked (never through an on-disk '..'),
so no name on disk can lead a walk outside the volume.  A damaged volume cannot make a walk
endless either: an entry that leads to a directory already on the path (the directory itself or
one above it: a cycle) is refused as corrupt, and a symbolic link whose target holds a NUL (which
no POSIX path can) is corrupt rather than silently cut.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from vmfs.errors import (
    CorruptError,
    InvalidArgumentError,
    LoopError,
    NotADirError,
    NotFoundError,
)
from vmfs.ondisk import filedesc as F
from vmfs.volume.directory import Directory, DirEntry, open_directory
from vmfs.volume.filedesc import FileDescriptor
from vmfs.volume.filereader import FileReader, FileStream
from vmfs.volume.volume import Volume

MAX_SYMLINK_DEPTH = 40


@dataclass(frozen=True)
class Stat:
    ino: int  # FD address
    mode: int
    nlink: int
    uid: int
    gid: int
    size: int
    blocks: int  # 512-byte units allocated
    block_size: int
    atime: int
    mtime: int
    ctime: int
    type: int
    generation: int

    def as_fuse(self) -> dict[str, int]:
        return {
            "st_ino": self.ino,
            "st_mode": self.mode,
            "st_nlink": self.nlink,
            "st_uid": self.uid,
            "st_gid": self.gid,
            "st_size": self.size,
            "st_blocks": self.blocks,
            "st_blksize": min(self.block_size, 1 << 20) or 4096,
            "st_atime": self.atime,
            "st_mtime": self.mtime,
            "st_ctime": self.ctime,
        }


def stat_fd(fd: FileDescriptor) -> Stat:
    meta = fd.meta
    allocated = 0 if fd.is_resident else meta.numBlocks * meta.blockSize
    return Stat(
        ino=fd.address,
        mode=fd.st_mode,
        nlink=meta.linkCount,
        uid=meta.uid,
        gid=meta.gid,
        size=meta.fileLength,
        blocks=allocated // 512,
        block_size=meta.blockSize,
        atime=meta.atime,
        mtime=meta.mtime,
        ctime=meta.ctime,
        type=meta.type,
        generation=meta.generation,
    )


class FileSystem:
    """Path-level operations on an open :class:`Volume`."""

    def __init__(self, volume: Volume) -> None:
        self.volume = volume

    # -- walking ------------------------------------------------------------------------------------

    def directory(self, fd: FileDescriptor) -> Directory:
        return open_directory(self.volume, fd)

    def _child(self, parent: FileDescriptor, name: str) -> tuple[DirEntry, FileDescriptor]:
        try:
            return self._child_once(parent, name)
        except CorruptError:
            # The directory may be a cached copy another host has changed since (the cache is
            # trusted for a short while without looking at the lock token): an entry whose FD is
            # freed or reused is the sign.  Read the directory from disk once; only an entry that
            # still dangles then is corruption.
            self.volume.reload_fd(parent)
            return self._child_once(parent, name)

    def _child_once(self, parent: FileDescriptor, name: str) -> tuple[DirEntry, FileDescriptor]:
        entry = self.directory(parent).lookup(name)
        fd = self.volume.read_fd(entry.address)
        if fd.generation != entry.generation:
            raise CorruptError(
                f"directory {parent.address:#x}",
                None,
                f"entry {name!r} has generation {entry.generation}, its FD {fd.generation}",
            )
        return entry, fd

    def resolve(self, path: str, *, follow: bool = True, _depth: int = 0) -> FileDescriptor:
        """The FD at ``path``; symlinks in the middle are always followed, the last one if ``follow``."""
        if not path.startswith("/"):
            raise InvalidArgumentError(f"path {path!r} is not absolute")
        parts = [p for p in path.split("/") if p and p != "."]
        fd = self.volume.root
        stack: list[FileDescriptor] = []
        for i, part in enumerate(parts):
            if not fd.is_dir:
                raise NotADirError(f"{'/' + '/'.join(parts[:i])}: not a directory")
            if part == "..":
                if stack:
                    fd = stack.pop()
                continue
            try:
                _, child = self._child(fd, part)
            except NotFoundError:
                raise NotFoundError(f"{'/' + '/'.join(parts[: i + 1])}: no such file or directory") from None
            if child.is_dir and (child.address == fd.address or any(a.address == child.address for a in stack)):
                raise CorruptError(
                    f"directory {fd.address:#x}",
                    None,
                    f"entry {part!r} leads back to directory {child.address:#x} above it (a cycle)",
                )
            last = i == len(parts) - 1
            if child.is_symlink and (follow or not last):
                if _depth >= MAX_SYMLINK_DEPTH:
                    raise LoopError(f"{path}: too many levels of symbolic links")
                target = self.read_link_fd(child)
                base = "/" + "/".join(parts[:i])
                rest = "/".join(parts[i + 1 :])
                new = posixpath.join(base, target, rest) if rest else posixpath.join(base, target)
                return self.resolve(new, follow=follow, _depth=_depth + 1)
            stack.append(fd)
            fd = child
        return fd

    def lookup_entry(self, path: str) -> tuple[FileDescriptor, DirEntry]:
        """(parent directory FD, entry) of ``path``'s last component, not following it."""
        parent_path, name = posixpath.split(path.rstrip("/") or "/")
        if not name:
            raise InvalidArgumentError("the root has no directory entry")
        parent = self.resolve(parent_path or "/")
        if not parent.is_dir:
            raise NotADirError(f"{parent_path}: not a directory")
        return parent, self.directory(parent).lookup(name)

    # -- queries ------------------------------------------------------------------------------------

    def stat(self, path: str, *, follow: bool = False) -> Stat:
        return stat_fd(self.resolve(path, follow=follow))

    def listdir(self, path: str) -> list[DirEntry]:
        fd = self.resolve(path)
        if not fd.is_dir:
            raise NotADirError(f"{path}: not a directory")
        return self.directory(fd).listing()

    def read_link_fd(self, fd: FileDescriptor) -> str:
        if fd.type != F.TYPE_SYMLINK:
            raise InvalidArgumentError(f"FD {fd.address:#x} is not a symbolic link")
        raw = FileReader(fd).read(0, fd.size)
        if b"\x00" in raw:
            raise CorruptError(
                f"symbolic link {fd.address:#x}", fd.vol_offset, f"target holds a NUL byte at offset {raw.index(0)}"
            )
        return raw.decode("utf-8", "surrogateescape")

    def readlink(self, path: str) -> str:
        return self.read_link_fd(self.resolve(path, follow=False))

    def reader(self, path: str) -> FileReader:
        fd = self.resolve(path)
        if fd.is_dir and fd.type != F.TYPE_SYSFILE:
            from vmfs.errors import IsADirError

            raise IsADirError(f"{path}: is a directory")
        return FileReader(fd)

    def open(self, path: str) -> FileStream:
        """A read-only binary stream over the file at ``path``."""
        return FileStream(self.reader(path))

    def walk(self, path: str = "/"):  # type: ignore[no-untyped-def]
        """Yield (directory path, entries) for every directory below ``path``, depth first.

        A directory reached twice (a damaged volume whose entries form a cycle) is reported as
        corrupt rather than walked forever."""
        start = self.resolve(path)
        seen = {start.address}
        pending = [(path, start)]
        while pending:
            current, fd = pending.pop()
            entries = self.directory(fd).listing()
            yield current, entries
            for e in entries:
                if e.type not in (F.TYPE_DIRECTORY, F.TYPE_SYSFILE):
                    continue
                child = self.volume.read_fd(e.address)
                if not child.is_dir:
                    continue
                if child.address in seen:
                    raise CorruptError(
                        f"directory {fd.address:#x}", None, f"entry {e.name!r} leads back to a directory already seen"
                    )
                seen.add(child.address)
                pending.append((posixpath.join(current, e.name), child))
