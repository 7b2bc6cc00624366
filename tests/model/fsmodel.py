"""A simple in-memory model of a POSIX tree and the errno each operation must give.

Backends (the library, a FUSE mount) run the same operations; the state machine compares them
with this model after every step.  Nodes are objects (inodes), so an open handle keeps its file
across rename and unlink; the model also knows owners, link counts and timestamps (as intervals:
"set by an operation between these two seconds"), and the names of files that a FUSE mount hides
(``.fuse_hidden*``) while an unlinked file is still open.
"""

from __future__ import annotations

import copy
import errno
import posixpath
from dataclasses import dataclass, field

CHUNK = 1 << 20
#: largest VMFS5 file (vmfs.format.geometry.MAX_FILE_SIZE[5]); one byte more is EFBIG
MAX_FILE_SIZE = 69201586814976
#: longest VMFS5 directory entry name in bytes (128-byte field with a NUL)
NAME_MAX_BYTES = 127
#: model names of hidden files start so
HIDDEN = ".fuse_hidden"
#: names an unlinked open file may have: libfuse's (when its own open count says open) or the
#: library's (vmfs.write.posix.ORPHAN_PREFIX: when this host has it open), both removed at last close
HIDDEN_PREFIXES = (".fuse_hidden", ".vmfs-deleted-")

#: a timestamp the model knows only to lie in [lo, hi] (hi None: "no later than now")
Stamp = tuple[int, "int | None"]


class SparseData:
    """File contents kept as 1-MiB immutable chunks: a 300 GiB sparse file costs what was
    written, and a snapshot of the model (taken before every operation that may fail with
    ENOSPC) shares the chunks instead of copying them."""

    def __init__(self) -> None:
        self.size = 0
        self.chunks: dict[int, bytes] = {}
        #: chunks changed since the last full comparison (compared after each step)
        self.dirty: set[int] = set()

    def __deepcopy__(self, memo: dict) -> SparseData:
        new = SparseData()
        new.size = self.size
        new.chunks = dict(self.chunks)
        new.dirty = set(self.dirty)
        memo[id(self)] = new
        return new

    def write(self, offset: int, data: bytes) -> None:
        if not data:
            return  # POSIX: a write of nothing changes nothing
        pos = offset
        end = offset + len(data)
        while pos < end:
            index, within = divmod(pos, CHUNK)
            n = min(CHUNK - within, end - pos)
            chunk = bytearray(self.chunks.get(index, bytes(CHUNK)))
            chunk[within : within + n] = data[pos - offset : pos - offset + n]
            self.chunks[index] = bytes(chunk)
            self.dirty.add(index)
            pos += n
        self.size = max(self.size, end)

    def truncate(self, size: int) -> None:
        if size < self.size:
            last = size // CHUNK
            for index in [i for i in self.chunks if i > last or (i == last and size % CHUNK == 0)]:
                del self.chunks[index]
            if size % CHUNK and last in self.chunks:
                chunk = bytearray(self.chunks[last])
                chunk[size % CHUNK :] = bytes(CHUNK - size % CHUNK)
                self.chunks[last] = bytes(chunk)
            self.dirty.add(last)
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

    def probes(self, *, full: bool) -> list[tuple[int, int]]:
        """(offset, length) ranges worth comparing: the chunks written since the last full
        comparison (``full``: every written chunk), plus the start, middle and end of the file."""
        ranges = {(i * CHUNK, CHUNK) for i in (self.chunks if full else self.dirty)}
        for off in (0, self.size // 2, max(self.size - 4096, 0)):
            ranges.add((off, 4096))
        return sorted((o, min(n, self.size - o)) for o, n in ranges if o < self.size)


@dataclass
class Node:
    """One inode: a file (``data``), a directory or a symlink (``target``)."""

    kind: str
    mode: int
    mtime: Stamp
    atime: Stamp
    uid: int = 0
    gid: int = 0
    data: SparseData | None = None
    target: str | None = None


def name_too_long(p: str) -> bool:
    return any(len(part.encode("utf-8", "surrogateescape")) > NAME_MAX_BYTES for part in p.split("/"))


@dataclass
class Model:
    nodes: dict[str, Node] = field(default_factory=dict)
    #: handle id -> the node it has open (a file, possibly unlinked)
    handles: dict[int, Node] = field(default_factory=dict)
    #: unlink or rename over a file that is open: "hide" (it keeps a hidden name in its directory
    #: until its last close) or "busy" (refused with EBUSY, as the library once did)
    open_unlink: str = "hide"
    #: [lo, hi] of the operation being modelled, set by the caller before each operation
    now: tuple[int, int] = (0, 0)
    next_handle: int = 1
    next_hidden: int = 1
    #: one byte more is EFBIG: VMFS5's by default, VMFS6's 64 TiB for a VMFS6 volume
    max_file_size: int = MAX_FILE_SIZE

    def __post_init__(self) -> None:
        if "/" not in self.nodes:
            self.nodes["/"] = Node("dir", 0o1755, (0, None), (0, None))  # as mkfs makes it

    def snapshot(self) -> Model:
        return copy.deepcopy(self)

    def close_stamps(self, hi: int) -> None:
        """The operation just modelled has ended by ``hi``: open intervals end there."""
        for node in self.nodes.values():
            for attr in ("mtime", "atime"):
                lo, top = getattr(node, attr)
                if top is None:
                    setattr(node, attr, (lo, hi))

    # -- queries ------------------------------------------------------------------------------------

    def kind(self, p: str) -> str | None:
        node = self.nodes.get(p)
        return node.kind if node else None

    def paths(self, kind: str) -> list[str]:
        return sorted(p for p, n in self.nodes.items() if n.kind == kind and not is_hidden(p))

    def exists(self, p: str) -> bool:
        return p in self.nodes

    def children(self, d: str) -> list[str]:
        prefix = d.rstrip("/") + "/"
        return [p for p in self.nodes if p != "/" and p.startswith(prefix) and "/" not in p[len(prefix) :]]

    def nlink(self, p: str) -> int:
        node = self.nodes[p]
        if node.kind != "dir":
            return 1
        subdirs = sum(1 for c in self.children(p) if self.nodes[c].kind == "dir")
        return subdirs + (3 if p == "/" else 2)  # the root's .sdd.sf/.. counts too (mkfs)

    def is_open(self, node: Node) -> bool:
        return any(h is node for h in self.handles.values())

    def parent_errno(self, p: str) -> int | None:
        if name_too_long(p):
            return errno.ENAMETOOLONG
        parent = posixpath.dirname(p)
        if self.kind(parent) == "dir":
            return None
        # walk: first missing or non-directory component decides
        cur = ""
        for part in parent.strip("/").split("/"):
            cur += "/" + part
            kind = self.kind(cur)
            if kind in ("file", "link"):
                return errno.ENOTDIR
            if kind is None:
                return errno.ENOENT
        return None

    # -- helpers --------------------------------------------------------------------------------------

    def _stamp(self) -> Stamp:
        return self.now

    def _touch_parent(self, p: str) -> None:
        self.nodes[posixpath.dirname(p)].mtime = self._stamp()

    def _new(self, p: str, node: Node) -> int | None:
        e = self.parent_errno(p)
        if e:
            return e
        if self.exists(p):
            return errno.EEXIST
        self.nodes[p] = node
        self._touch_parent(p)
        return None

    def _drop_file(self, p: str) -> None:
        """A file's name goes away: an open file stays as a hidden name of the same directory."""
        node = self.nodes.pop(p)
        if node.kind == "file" and self.is_open(node):
            self.nodes[posixpath.join(posixpath.dirname(p), f"{HIDDEN}{self.next_hidden}")] = node
            self.next_hidden += 1

    def _busy(self, p: str) -> bool:
        """The library refuses to remove a file that is open."""
        node = self.nodes.get(p)
        return self.open_unlink == "busy" and node is not None and node.kind == "file" and self.is_open(node)

    # each returns the expected errno (None = success) and applies the change when it succeeds

    def create(self, p: str) -> int | None:
        t = self._stamp()
        return self._new(p, Node("file", 0o644, t, t, data=SparseData()))

    def mkdir(self, p: str) -> int | None:
        t = self._stamp()
        return self._new(p, Node("dir", 0o755, t, t))

    def symlink(self, target: str, p: str) -> int | None:
        t = self._stamp()
        return self._new(p, Node("link", 0o777, t, t, target=target))

    def _attr_target(self, p: str, *, follow: bool) -> Node | int:
        e = self.parent_errno(p)
        if e:
            return e
        node = self.nodes.get(p)
        if node is None:
            return errno.ENOENT
        for _ in range(8):
            if not (follow and node.kind == "link"):
                return node
            assert node.target is not None
            if name_too_long(node.target):
                return errno.ENAMETOOLONG
            p = resolve_link(p, node.target)
            resolved = self.nodes.get(p)
            if resolved is None:
                return errno.ENOENT  # a dangling link
            node = resolved
        return errno.ELOOP

    def chmod(self, p: str, mode: int) -> int | None:
        node = self._attr_target(p, follow=True)
        if isinstance(node, int):
            return node
        node.mode = mode
        return None

    def chown(self, p: str, uid: int, gid: int, *, follow: bool) -> int | None:
        node = self._attr_target(p, follow=follow)
        if isinstance(node, int):
            return node
        node.uid, node.gid = uid, gid
        return None

    def utimens(self, p: str, atime: int | str, mtime: int | str) -> int | None:
        """Times as seconds, or "now" (UTIME_NOW) or "omit" (UTIME_OMIT); never follows."""
        node = self._attr_target(p, follow=False)
        if isinstance(node, int):
            return node
        for attr, value in (("atime", atime), ("mtime", mtime)):
            if value == "now":
                setattr(node, attr, self._stamp())
            elif value != "omit":
                assert isinstance(value, int)
                setattr(node, attr, (value, value))
        return None

    def write_node(self, node: Node, offset: int, data: bytes) -> int | None:
        assert node.data is not None
        if data and offset + len(data) > self.max_file_size:
            return errno.EFBIG
        node.data.write(offset, data)
        if data:
            node.mtime = self._stamp()
        return None

    def truncate_node(self, node: Node, size: int) -> int | None:
        assert node.data is not None
        if size > self.max_file_size:
            return errno.EFBIG
        if size != node.data.size:
            node.mtime = self._stamp()
        else:
            node.mtime = (min(node.mtime[0], self.now[0]), self.now[1])  # Linux may or may not touch it
        node.data.truncate(size)
        return None

    def write(self, p: str, offset: int, data: bytes) -> int | None:
        """Open ``p`` for writing, write, close (a path that may not be a file)."""
        e = self.parent_errno(p)
        if e:
            return e
        node = self.nodes.get(p)
        if node is None:
            return errno.ENOENT
        if node.kind == "dir":
            return errno.EISDIR
        return self.write_node(node, offset, data)

    def truncate(self, p: str, size: int) -> int | None:
        e = self.parent_errno(p)
        if e:
            return e
        node = self.nodes.get(p)
        if node is None:
            return errno.ENOENT
        if node.kind == "dir":
            return errno.EISDIR
        return self.truncate_node(node, size)

    def unlink(self, p: str) -> int | None:
        e = self.parent_errno(p)
        if e:
            return e
        kind = self.kind(p)
        if kind == "dir":
            return errno.EISDIR
        if kind is None:
            return errno.ENOENT
        if self._busy(p):
            return errno.EBUSY
        self._drop_file(p)
        self._touch_parent(p)
        return None

    def rmdir(self, p: str) -> int | None:
        e = self.parent_errno(p)
        if e:
            return e
        kind = self.kind(p)
        if kind in ("file", "link"):
            return errno.ENOTDIR
        if kind is None:
            return errno.ENOENT
        if self.children(p):
            return errno.ENOTEMPTY
        del self.nodes[p]
        self._touch_parent(p)
        return None

    def rename(self, src: str, dst: str) -> int | None:
        e = self.parent_errno(src) or self.parent_errno(dst)
        if e:
            return e
        if not self.exists(src):
            return errno.ENOENT
        if src == dst:
            return None
        src_dir = self.kind(src) == "dir"
        if src_dir and (dst + "/").startswith(src + "/"):
            return errno.EINVAL
        if (src + "/").startswith(dst.rstrip("/") + "/"):
            return errno.ENOTEMPTY  # Linux: the target is an ancestor of the source
        if self.exists(dst):
            dst_dir = self.kind(dst) == "dir"
            if src_dir and not dst_dir:
                return errno.ENOTDIR
            if not src_dir and dst_dir:
                return errno.EISDIR
            if dst_dir and self.children(dst):
                return errno.ENOTEMPTY
            if self._busy(dst):
                return errno.EBUSY
            self._drop_file(dst)
        moves = [p for p in self.nodes if p == src or p.startswith(src + "/")]
        for p in moves:
            self.nodes[dst + p[len(src) :]] = self.nodes.pop(p)
        self._touch_parent(src)
        self._touch_parent(dst)
        return None

    # -- handles ----------------------------------------------------------------------------------------

    def open(self, p: str) -> int | None:
        """Open an existing regular file for reading and writing; returns the handle id."""
        node = self.nodes[p]
        assert node.kind == "file"
        handle = self.next_handle
        self.next_handle += 1
        self.handles[handle] = node
        return handle

    def close(self, handle: int) -> None:
        """The last close removes a hidden name; its directory's mtime may move then or not."""
        node = self.handles.pop(handle)
        if not self.is_open(node):
            for p in [p for p, n in self.nodes.items() if n is node and is_hidden(p)]:
                del self.nodes[p]
                parent = self.nodes[posixpath.dirname(p)]
                parent.mtime = (parent.mtime[0], None)


def resolve_link(p: str, target: str) -> str:
    """The path a symlink at ``p`` names, inside the model's namespace."""
    return posixpath.normpath(posixpath.join(posixpath.dirname(p), target))


def link_escapes(p: str, target: str) -> bool:
    """A target that leaves the volume (absolute, or '..' above the root): through a mount it
    resolves on the host, so the model cannot say what it names."""
    if target.startswith("/"):
        return True
    depth = p.count("/") - 1
    for part in target.split("/"):
        depth += -1 if part == ".." else 0 if part in ("", ".") else 1
        if depth < 0:
            return True
    return False


def is_hidden(p: str) -> bool:
    return posixpath.basename(p).startswith(HIDDEN_PREFIXES)
