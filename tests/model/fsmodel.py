"""A simple in-memory model of a POSIX tree and the errno each operation must give.

Backends (the library, a FUSE mount) run the same operations; the state machine compares them
with this model after every step.
"""

from __future__ import annotations

import errno
import posixpath
from dataclasses import dataclass, field

CHUNK = 1 << 20


class SparseData:
    """File contents kept as 1-MiB chunks so a 300 GiB sparse file costs what was written."""

    def __init__(self) -> None:
        self.size = 0
        self.chunks: dict[int, bytearray] = {}

    def write(self, offset: int, data: bytes) -> None:
        if not data:
            return  # POSIX: a write of nothing changes nothing
        pos = offset
        end = offset + len(data)
        while pos < end:
            index, within = divmod(pos, CHUNK)
            n = min(CHUNK - within, end - pos)
            chunk = self.chunks.setdefault(index, bytearray(CHUNK))
            chunk[within : within + n] = data[pos - offset : pos - offset + n]
            pos += n
        self.size = max(self.size, end)

    def truncate(self, size: int) -> None:
        if size < self.size:
            last = size // CHUNK
            for index in [i for i in self.chunks if i > last or (i == last and size % CHUNK == 0)]:
                del self.chunks[index]
            if size % CHUNK and last in self.chunks:
                chunk = self.chunks[last]
                chunk[size % CHUNK :] = bytes(CHUNK - size % CHUNK)
        self.size = size

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        out = bytearray(length)
        pos = offset
        while pos < offset + length:
            index, within = divmod(pos, CHUNK)
            n = min(CHUNK - within, offset + length - pos)
            chunk = self.chunks.get(index)
            if chunk is not None:
                out[pos - offset : pos - offset + n] = chunk[within : within + n]
            pos += n
        return bytes(out)

    def probes(self) -> list[tuple[int, int]]:
        """(offset, length) ranges worth comparing: every written chunk, plus the start, the end
        and the middle of the file."""
        ranges = {(i * CHUNK, CHUNK) for i in self.chunks}
        for off in (0, self.size // 2, max(self.size - 4096, 0)):
            ranges.add((off, 4096))
        return sorted((o, min(n, self.size - o)) for o, n in ranges if o < self.size)


@dataclass
class Model:
    files: dict[str, SparseData] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=lambda: {"/"})
    links: dict[str, str] = field(default_factory=dict)
    #: permission bits of files and directories (symlinks are always 0777)
    modes: dict[str, int] = field(default_factory=dict)

    def exists(self, p: str) -> bool:
        return p in self.files or p in self.dirs or p in self.links

    def children(self, d: str) -> list[str]:
        prefix = d.rstrip("/") + "/"
        out = []
        for p in list(self.files) + list(self.dirs) + list(self.links):
            if p != "/" and p.startswith(prefix) and "/" not in p[len(prefix) :]:
                out.append(p)
        return out

    def parent_errno(self, p: str) -> int | None:
        parent = posixpath.dirname(p)
        if parent in self.dirs:
            return None
        # walk: first missing or non-directory component decides
        parts = parent.strip("/").split("/")
        cur = ""
        for part in parts:
            cur += "/" + part
            if cur in self.files or cur in self.links:
                return errno.ENOTDIR
            if cur not in self.dirs:
                return errno.ENOENT
        return None

    # each returns the expected errno (None = success) and applies the change when it succeeds
    def create(self, p: str) -> int | None:
        e = self.parent_errno(p)
        if e:
            return e
        if self.exists(p):
            return errno.EEXIST
        self.files[p] = SparseData()
        self.modes[p] = 0o644
        return None

    def mkdir(self, p: str) -> int | None:
        e = self.parent_errno(p)
        if e:
            return e
        if self.exists(p):
            return errno.EEXIST
        self.dirs.add(p)
        self.modes[p] = 0o755
        return None

    def chmod(self, p: str, mode: int) -> int | None:
        if p in self.files or p in self.dirs:
            self.modes[p] = mode
            return None
        return errno.ENOENT

    def symlink(self, target: str, p: str) -> int | None:
        e = self.parent_errno(p)
        if e:
            return e
        if self.exists(p):
            return errno.EEXIST
        self.links[p] = target
        return None

    def write(self, p: str, offset: int, data: bytes) -> int | None:
        self.files[p].write(offset, data)
        return None

    def truncate(self, p: str, size: int) -> int | None:
        self.files[p].truncate(size)
        return None

    def unlink(self, p: str) -> int | None:
        e = self.parent_errno(p)
        if e:
            return e
        if p in self.dirs:
            return errno.EISDIR
        if p in self.files:
            del self.files[p]
            self.modes.pop(p, None)
        elif p in self.links:
            del self.links[p]
        else:
            return errno.ENOENT
        return None

    def rmdir(self, p: str) -> int | None:
        e = self.parent_errno(p)
        if e:
            return e
        if p in self.files or p in self.links:
            return errno.ENOTDIR
        if p not in self.dirs:
            return errno.ENOENT
        if self.children(p):
            return errno.ENOTEMPTY
        self.dirs.discard(p)
        self.modes.pop(p, None)
        return None

    def rename(self, src: str, dst: str) -> int | None:
        e = self.parent_errno(src) or self.parent_errno(dst)
        if e:
            return e
        if not self.exists(src):
            return errno.ENOENT
        if src == dst:
            return None
        src_dir = src in self.dirs
        if src_dir and (dst + "/").startswith(src + "/"):
            return errno.EINVAL
        if (src + "/").startswith(dst.rstrip("/") + "/"):
            return errno.ENOTEMPTY  # Linux: the target is an ancestor of the source
        if self.exists(dst):
            dst_dir = dst in self.dirs
            if src_dir and not dst_dir:
                return errno.ENOTDIR
            if not src_dir and dst_dir:
                return errno.EISDIR
            if dst_dir and self.children(dst):
                return errno.ENOTEMPTY
            self.files.pop(dst, None)
            self.links.pop(dst, None)
            self.dirs.discard(dst)
            self.modes.pop(dst, None)
        everything = list(self.files) + list(self.links) + list(self.dirs)
        moves = [p for p in everything if p == src or p.startswith(src + "/")]
        for p in moves:
            q = dst + p[len(src) :]
            if p in self.modes:
                self.modes[q] = self.modes.pop(p)
            if p in self.files:
                self.files[q] = self.files.pop(p)
            elif p in self.links:
                self.links[q] = self.links.pop(p)
            else:
                self.dirs.discard(p)
                self.dirs.add(q)
        return None

    def tree(self) -> dict[str, tuple]:
        out: dict[str, tuple] = {}
        for p, data in self.files.items():
            out[p] = ("file", data, self.modes[p])
        for p in self.dirs:
            if p != "/":
                out[p] = ("dir", None, self.modes[p])
        for p, t in self.links.items():
            out[p] = ("link", t)
        return out
