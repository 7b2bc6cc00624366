"""Tree captures for comparing what different readers see of one volume."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

#: files up to this size are hashed whole; larger (sparse) ones through fixed probes
FULL_HASH_LIMIT = 64 << 20
PROBE = 1 << 20


def _sha(read_chunks) -> str:  # type: ignore[no-untyped-def]
    h = hashlib.sha256()
    for chunk in read_chunks:
        h.update(chunk)
    return h.hexdigest()


def digest(read_at, size: int) -> str:  # type: ignore[no-untyped-def]
    """sha256 of a file, or for a huge (sparse) one of its first and last MiB and 64 probes in
    between: every reader is sampled at the same offsets, so the digests stay comparable."""
    h = hashlib.sha256()
    if size <= FULL_HASH_LIMIT:
        pos = 0
        while pos < size:
            chunk = read_at(pos, min(1 << 20, size - pos))
            if not chunk:
                break
            h.update(chunk)
            pos += len(chunk)
        return h.hexdigest()
    offsets = sorted({0, size - PROBE, *(i * (size // 64) for i in range(64))})
    for off in offsets:
        h.update(read_at(off, min(PROBE, size - off)))
    return "probe:" + h.hexdigest()


def _file_reader(f):  # type: ignore[no-untyped-def]
    def read_at(off: int, n: int) -> bytes:
        f.seek(off)
        return f.read(n)

    return read_at


def capture_mount(
    root: Path, *, unreadable: frozenset[str] = frozenset(), skip_content: frozenset[str] = frozenset()
) -> dict[str, dict[str, Any]]:
    """Every entry below a mounted directory: metadata, symlink targets, sha256 of file bytes."""
    tree: dict[str, dict[str, Any]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            rel = "/" + os.path.relpath(full, root)
            st = os.lstat(full)
            rec: dict[str, Any] = {
                "mode": st.st_mode,
                "uid": st.st_uid,
                "gid": st.st_gid,
                "size": st.st_size,
                "nlink": st.st_nlink,
                "mtime": int(st.st_mtime),
                "ctime": int(st.st_ctime),
                "atime": int(st.st_atime),
            }
            if stat.S_ISLNK(st.st_mode):
                rec["target"] = os.readlink(full)
            elif stat.S_ISREG(st.st_mode) and rel not in unreadable and rel not in skip_content:
                with open(full, "rb") as f:
                    rec["sha256"] = digest(_file_reader(f), st.st_size)
            tree[rel] = rec
    return tree


def capture_dissect(images: list[Path]) -> dict[str, dict[str, Any]]:
    """The same tree read by dissect.vmfs (an independent reader; AGPL, tests only)."""
    from dissect.vmfs import lvm, vmfs

    handles = [open(p, "rb") for p in images]  # noqa: SIM115
    try:
        fs = vmfs.VMFS(lvm.LVM(handles).volumes[0].open())
        tree: dict[str, dict[str, Any]] = {}
        pending = ["/"]
        while pending:
            d = pending.pop()
            for name in sorted(fs.get(d).listdir()):
                if name in (".", ".."):
                    continue
                path = d.rstrip("/") + "/" + name
                fd = fs.get(path)
                m = fd.metadata
                rec: dict[str, Any] = {
                    "mode": fd.mode,
                    "uid": m.uid,
                    "gid": m.gid,
                    "size": fd.size,
                    "nlink": m.linkCount,
                    "mtime": m.mtime,
                    "ctime": m.ctime,
                    "atime": m.atime,
                }
                if fd.is_symlink():
                    rec["target"] = fd.link
                elif fd.is_dir():
                    pending.append(path)
                else:
                    rec["sha256"] = digest(_file_reader(fd.open()), fd.size)
                tree[path] = rec
        return tree
    finally:
        for h in handles:
            h.close()


def diff_trees(ours: dict[str, dict[str, Any]], theirs: dict[str, dict[str, Any]]) -> list[str]:
    problems = []
    for path in sorted(set(ours) | set(theirs)):
        a, b = ours.get(path), theirs.get(path)
        if a is None or b is None:
            problems.append(f"{path}: only in {'theirs' if a is None else 'ours'}")
            continue
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                problems.append(f"{path}: {key} ours={a.get(key)!r} theirs={b.get(key)!r}")
    return problems


def region_mutations(regions: int, *, max_pos: int, max_bytes: int, max_count: int):  # type: ignore[no-untyped-def]
    """hypothesis: 1..max_count mutations (region index, position in it, bytes) of metadata regions."""
    from hypothesis import strategies as st

    one = st.tuples(st.integers(0, regions - 1), st.integers(0, max_pos), st.binary(min_size=1, max_size=max_bytes))
    return st.lists(one, min_size=1, max_size=max_count)


def user_tree(fs, content=bytes):  # type: ignore[no-untyped-def]
    """Path -> ``content(file bytes)`` for every regular file and symlink, None for directories,
    of a library-opened volume, leaving out the system files in the root."""
    from vmfs.ondisk import filedesc as F

    out = {}
    for d, entries in fs.walk("/"):
        for e in entries:
            if d == "/" and e.name.endswith(".sf"):
                continue
            fd = fs.volume.read_fd(e.address)
            path = d.rstrip("/") + "/" + e.name
            out[path] = None if fd.type == F.TYPE_DIRECTORY else content(fs.volume.reader(fd).read(0, fd.size))
    return out



def free_port(ip: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on at ``ip`` now (for a daemon a test starts)."""
    import socket

    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def read_pty_until(fd: int, needle: bytes, seen: bytearray, timeout: float = 20.0) -> None:
    """Read a pty into ``seen`` until ``needle`` appears in what arrives from now on."""
    import select
    import time

    start = len(seen)
    deadline = time.monotonic() + timeout
    while needle not in seen[start:]:
        left = deadline - time.monotonic()
        assert left > 0, f"{needle!r} never shown; the screen so far ends {bytes(seen[-400:])!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:
                break
