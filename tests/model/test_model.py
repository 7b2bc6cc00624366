"""Stateful model checking: random operation sequences against an in-memory model, through the
library and through a real FUSE mount, checking after every step the tree (names, kinds, modes,
owners, link counts, timestamps, sizes, bytes), every open handle, the image as a fresh
read-only open sees it, and the free-space accounting; at the end our fsck and the oracles
(vmfs-fuse, dissect.vmfs).

What the rules cover, beyond plain create/mkdir/symlink/write/truncate/unlink/rmdir/rename/chmod:
handles held open across unlink, truncate and rename (a FUSE mount hides such files as
``.fuse_hidden*``, the library refuses with EBUSY), writes through them that leave the length
pending in memory, fsync; chown/lchown and utimens (explicit, UTIME_NOW, UTIME_OMIT);
directories grown and shrunk by dozens of entries; operations that fail (ENOTEMPTY,
ENAMETOOLONG for 128-300 byte names, EFBIG, EBUSY, ENOSPC) interleaved with those handles (the
data loss of issue 10 fault 1); batches run on several threads at once, either on disjoint names
(the result cannot depend on the order, so it is checked exactly) or on the same names (checked
for invariants: no leftovers, no lock alarms in the log, accounting, fsck).  Each example runs on
either a roomy 1 GiB volume or a tiny one (256 MiB, 12 free FDs, 3 pointer blocks) that fills:
ENOSPC is then a legitimate answer, after which the volume must equal the model as it was
before the operation (a write may be short: its first bytes count).

Profiles (environment variable ``VMFS_MODEL_PROFILE``):

``ci`` (the default, and what CI runs)
    fixed seed (``VMFS_MODEL_SEED``, default 20261201), no example database: every run tries the
    same examples, so a failure in CI comes back on any machine.  Modest size (library 30 x 30
    steps, FUSE 12 x 30 steps).
``explore``
    for local runs: a fresh random seed each run (or ``VMFS_MODEL_SEED``), many more and longer
    examples (library 300 x 60, FUSE 60 x 50: an hour or more), no 900 s timeout.  The seed is
    printed with every failure; rerun with the same profile and seed.
    ``VMFS_MODEL_PROFILE=explore .venv/bin/python -m pytest tests/model``
"""

from __future__ import annotations

import errno
import os
import posixpath
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tests import oracles
from tests.conftest import Mount, tool
from tests.helpers import capture_dissect, capture_mount
from tests.model.backends import Backend, FuseBackend, LibraryBackend, Seen, fsck_clean
from tests.model.fsmodel import Model, Node, is_hidden, link_escapes
from vmfs.device import FileDevice
from vmfs.format.geometry import MAX_FILE_SIZE as GEOMETRY_MAX
from vmfs.mkfs import MkfsOptions, format_volume

PROFILE = os.environ.get("VMFS_MODEL_PROFILE", "ci")
if PROFILE not in ("ci", "explore"):
    raise ValueError(f"VMFS_MODEL_PROFILE={PROFILE!r}: use 'ci' or 'explore'")
SEED = int(os.environ.get("VMFS_MODEL_SEED") or (20261201 if PROFILE == "ci" else random.randrange(1 << 32)))
#: (examples, steps) per backend
SIZES_OF = {"ci": {"library": (30, 30), "library6": (20, 30), "fuse": (12, 30), "fuse6": (6, 30)},
            "explore": {"library": (300, 60), "library6": (300, 60), "fuse": (60, 50), "fuse6": (60, 50)}}

NAMES = st.sampled_from(["a", "b", "c", "dir", "f.txt", "é", "n" * 127, "x1", "x2", "sub"])
SMALL = st.binary(max_size=3000)
PATTERN = st.builds(lambda b, n: bytes([b]) * n, st.integers(1, 255), st.sampled_from([1, 1024, 1025, 8192, 8193,
                                                                                       1 << 20, (1 << 20) + 7]))
OFFSETS = st.sampled_from([0, 1, 1000, 1024, 8191, 8192, (1 << 20) - 3, 5 << 20, 257 << 20, 300 << 30])
SIZES = st.sampled_from([0, 1, 100, 1024, 1025, 8192, 8193, 1 << 20, (2 << 20) + 5, 258 << 20, 260 << 30])
#: names too long for VMFS5 (127 bytes): 128 bytes of ASCII, 128 bytes of 64 'é', 255, and past NAME_MAX
LONG_NAMES = st.sampled_from(["L" * 128, "é" * 64, "M" * 200, "N" * 255, "O" * 300])
TIMES = st.sampled_from([0, 1, 1_000_000_000, 1_700_000_000, (1 << 31) - 1, "now", "omit"])
#: operations that may need a new resource and so may fail with ENOSPC
ALLOCATING = frozenset({"create", "mkdir", "symlink", "write", "truncate", "rename", "h_write", "h_truncate"})
MAX_HANDLES = 4
#: steps between remounts at least (a FUSE remount costs seconds)
REMOUNT_GAP = 8
#: the ci profile compares with vmfs-fuse and dissect.vmfs after every ORACLE_EVERY-th FUSE example
ORACLE_EVERY = 3
RACE = "/race"

#: a pytest temporary folder for the images and mounts (set by the fixture below)
BASE: list[Path] = []


@pytest.fixture(autouse=True)
def _model_base(tmp_path: Path) -> Iterator[None]:
    BASE[:] = [tmp_path]
    yield
    BASE.clear()


def make_image(directory: Path, tiny: bool, version: int = 5) -> Path:
    """A roomy volume (1 GiB, 256 FDs, 64 pointer blocks) or a tiny one that fills.  VMFS6: the
    smallest volume (512 MiB, of which 400 are its fixed system files) with 11 free FDs and 32
    sub-blocks, or 1 GiB with 256 FDs; no pointer blocks (none on VMFS6 yet)."""
    image = directory / "model.img"
    if version == 6:
        size = (17 + (512 if tiny else 1024)) << 20
        opts = {"version": 6, "num_fds": 20 if tiny else 256, "num_sub_blocks": 32 if tiny else 1024}
    elif tiny:
        size, opts = (17 + 256) << 20, {"num_fds": 20, "num_sub_blocks": 32, "num_pointer_blocks": 3}
    else:
        size, opts = (17 + 1024) << 20, {"num_fds": 256, "num_pointer_blocks": 64}
    with open(image, "wb") as f:
        f.truncate(size)
    dev = FileDevice(image, readonly=False)
    try:
        format_volume([dev], MkfsOptions(label="model", creation_time_us=1_700_000_000_000_000, **opts))
    finally:
        dev.close()
    return image


class VmfsMachine(RuleBasedStateMachine):
    backend_kind = "library"
    version = 5

    def __init__(self) -> None:
        super().__init__()
        base = BASE[0] if BASE else Path(os.environ.get("TMPDIR", "/tmp"))
        self.tmp = base / f"ex{time.monotonic_ns()}"
        self.tmp.mkdir()
        self.model = Model(open_unlink="hide", max_file_size=GEOMETRY_MAX[self.version])
        #: model handle id -> backend handle
        self.bh: dict[int, Any] = {}
        self.tiny = False
        self.steps_since_remount = 0

    @initialize(tiny=st.booleans())
    def start(self, tiny: bool) -> None:
        self.tiny = tiny
        image = make_image(self.tmp, tiny, self.version)
        self.fs: LibraryBackend | FuseBackend
        if self.backend_kind == "library":
            self.fs = LibraryBackend(image)
        else:
            self.fs = FuseBackend(image, self.tmp / "mnt", tool("vmfs-mount"))
        self.image = image

    def teardown(self) -> None:
        """Close everything, check once more in full, unmount, fsck; after a failed step only
        clean up (a second error would hide the first)."""
        try:
            if hasattr(self, "fs") and sys.exc_info()[1] is None:
                self.close_all()
                self.check_all(full=True)
                self.fs.close()
                del self.fs
                fsck_clean(self.image)
        finally:
            self.abandon()

    def abandon(self) -> None:
        """After a failure: close what is open (errors ignored), unmount, remove the folder."""
        if hasattr(self, "fs"):
            for h in self.bh.values():
                self.fs.h("close", h)
            self.bh.clear()
            try:
                self.fs.close()
            except Exception:  # the failure being reported matters more than this one
                if isinstance(self.fs, FuseBackend):
                    subprocess.run(["fusermount", "-u", "-z", str(self.fs.mnt)], check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- helpers --------------------------------------------------------------------------------------

    def _dir(self, data) -> str:  # type: ignore[no-untyped-def]
        return data.draw(st.sampled_from(self.model.paths("dir")))

    def _any(self, data) -> str:  # type: ignore[no-untyped-def]
        paths = [p for p in self.model.nodes if p != "/" and not is_hidden(p)]
        return data.draw(st.sampled_from(sorted(paths))) if paths else "/nothing"

    def _file(self, data) -> str:  # type: ignore[no-untyped-def]
        return data.draw(st.sampled_from(self.model.paths("file")))

    def _stamp_start(self) -> None:
        self.model.now = (int(time.time()), None)  # type: ignore[assignment]

    def _apply(self, op: str, model_op: Callable[..., int | None], *args: object) -> int | None:
        """Run ``op`` on the backend and on the model; an ENOSPC where the model expects success
        is legitimate for an allocating operation if nothing changed (a write may be short: its
        first bytes count, and ``model_op(model, n)`` applies those), which the invariants then
        check against the model as it was."""
        snapshot = self.model.snapshot() if op in ALLOCATING else None
        self._stamp_start()
        expected = model_op(self.model)
        got = self.fs.run(op, *args) if not op.startswith("h_") else self.fs.h(op[2:], *args)[0]
        if got == errno.ENOSPC and expected is None and snapshot is not None:
            event(f"ENOSPC on {op}")
            done = self.fs.last_done
            self.model = snapshot
            if done:
                self._stamp_start()
                model_op(self.model, done)
        else:
            assert got == expected, f"{op}{_short(args)}: errno {_name(got)}, expected {_name(expected)}"
        self.model.close_stamps(int(time.time()) + 1)
        return got

    def _open_nodes(self) -> list[int]:
        return sorted(self.model.handles)

    # -- namespace rules ------------------------------------------------------------------------------------

    @rule(data=st.data(), name=NAMES)
    def create(self, data, name: str) -> None:  # type: ignore[no-untyped-def]
        p = posixpath.join(self._dir(data), name)
        self._apply("create", lambda m: m.create(p), p)

    @rule(data=st.data(), name=NAMES)
    def mkdir(self, data, name: str) -> None:  # type: ignore[no-untyped-def]
        p = posixpath.join(self._dir(data), name)
        self._apply("mkdir", lambda m: m.mkdir(p), p)

    @rule(data=st.data(), name=NAMES, link=st.sampled_from(["a", "../b", "/x/y", "t" * 300, "sub/a"]))
    def symlink(self, data, name: str, link: str) -> None:  # type: ignore[no-untyped-def]
        p = posixpath.join(self._dir(data), name)
        self._apply("symlink", lambda m: m.symlink(link, p), link, p)

    @precondition(lambda self: self.model.paths("file"))
    @rule(data=st.data(), offset=OFFSETS, payload=st.one_of(SMALL, PATTERN))
    def write(self, data, offset: int, payload: bytes) -> None:  # type: ignore[no-untyped-def]
        p = self._file(data)
        if offset > (1 << 30) and len(payload) > 4096:
            payload = payload[:4096]
        self._apply("write", lambda m, n=None: m.write(p, offset, payload[:n]), p, offset, payload)

    @precondition(lambda self: self.model.paths("file"))
    @rule(data=st.data(), size=SIZES)
    def truncate(self, data, size: int) -> None:  # type: ignore[no-untyped-def]
        p = self._file(data)
        self._apply("truncate", lambda m: m.truncate(p, size), p, size)

    @rule(data=st.data())
    def unlink(self, data) -> None:  # type: ignore[no-untyped-def]
        p = self._any(data)
        self._apply("unlink", lambda m: m.unlink(p), p)

    @rule(data=st.data())
    def rmdir(self, data) -> None:  # type: ignore[no-untyped-def]
        p = self._any(data)
        self._apply("rmdir", lambda m: m.rmdir(p), p)

    @rule(data=st.data(), name=NAMES)
    def rename(self, data, name: str) -> None:  # type: ignore[no-untyped-def]
        src = self._any(data)
        dst = posixpath.join(self._dir(data), name)
        self._apply("rename", lambda m: m.rename(src, dst), src, dst)

    @precondition(lambda self: self.model.handles)
    @rule(data=st.data(), name=NAMES)
    def rename_open_file(self, data, name: str) -> None:  # type: ignore[no-untyped-def]
        """Move (or replace) a file that a handle holds open."""
        node = self.model.handles[data.draw(st.sampled_from(self._open_nodes()))]
        src = next((p for p, n in self.model.nodes.items() if n is node and not is_hidden(p)), None)
        if src is None:
            return  # already unlinked
        other = data.draw(st.sampled_from([*self.model.paths("file"), posixpath.join(self._dir(data), name)]))
        if data.draw(st.booleans()):
            src, other = other, src  # replace the open file with another one
        self._apply("rename", lambda m: m.rename(src, other), src, other)

    @rule(data=st.data(), mode=st.sampled_from([0o600, 0o644, 0o755, 0o700, 0o444, 0o1777]))
    def chmod(self, data, mode: int) -> None:  # type: ignore[no-untyped-def]
        paths = self.model.paths("file") + [p for p in self.model.paths("dir") if p != "/"]
        if paths:
            p = data.draw(st.sampled_from(paths))
            self._apply("chmod", lambda m: m.chmod(p, mode), p, mode)

    @rule(data=st.data(), uid=st.sampled_from([0, 123, 65534]), gid=st.sampled_from([0, 456, 65534]),
          follow=st.booleans())
    def chown(self, data, uid: int, gid: int, follow: bool) -> None:  # type: ignore[no-untyped-def]
        """chown and lchown: only the link itself changes with lchown (issue 10 fault 2)."""
        p = self._any(data)
        node = self.model.nodes.get(p)
        if follow and node is not None and node.kind == "link" and link_escapes(p, node.target or ""):
            follow = False  # the target would be looked up on the host, outside the model
        self._apply("chown", lambda m: m.chown(p, uid, gid, follow=follow), p, uid, gid, follow)

    @precondition(lambda self: self.model.paths("link"))
    @rule(data=st.data(), uid=st.sampled_from([123, 65534]), gid=st.sampled_from([456, 65534]))
    def lchown_link(self, data, uid: int, gid: int) -> None:  # type: ignore[no-untyped-def]
        """lchown(2) of a symlink changes the link, never its target (issue 10 fault 2: a
        privilege hole when it followed), and works on a dangling link."""
        p = data.draw(st.sampled_from(self.model.paths("link")))
        self._apply("chown", lambda m: m.chown(p, uid, gid, follow=False), p, uid, gid, False)

    @rule(data=st.data(), atime=TIMES, mtime=TIMES)
    def utimens(self, data, atime: int | str, mtime: int | str) -> None:  # type: ignore[no-untyped-def]
        """Explicit times, UTIME_NOW and UTIME_OMIT (issue 10 fault 4), on links too (no follow)."""
        p = self._any(data)
        if atime == mtime == "omit":
            mtime = "now"  # Linux answers 0 to a double UTIME_OMIT without even looking up the path
        self._apply("utimens", lambda m: m.utimens(p, atime, mtime), p, atime, mtime)

    @rule(data=st.data(), count=st.sampled_from([8, 20, 60]))
    def populate(self, data, count: int) -> None:  # type: ignore[no-untyped-def]
        """Grow a directory past one block of entries (58 fit in 8 KiB), stopping at ENOSPC."""
        d = self._dir(data)
        for i in range(count):
            p = posixpath.join(d, f"m{i:03d}")
            if self._apply("create", lambda m, p=p: m.create(p), p) == errno.ENOSPC:
                break

    @rule(data=st.data(), keep=st.sampled_from([0, 1, 7]))
    def depopulate(self, data, keep: int) -> None:  # type: ignore[no-untyped-def]
        """Shrink a big directory from the middle (each removal moves the last entry)."""
        d = self._dir(data)
        names = sorted(p for p in self.model.children(d) if posixpath.basename(p).startswith("m"))
        for p in names[1::2] + names[::2][keep:]:
            self._apply("unlink", lambda m, p=p: m.unlink(p), p)

    # -- operations that fail: with handles open, nothing else may change -----------------------------------

    @rule(data=st.data(), name=LONG_NAMES, op=st.sampled_from(
        ["create", "mkdir", "symlink", "stat", "chmod", "unlink", "rmdir", "truncate", "rename_src", "rename_dst"]))
    def long_name(self, data, name: str, op: str) -> None:  # type: ignore[no-untyped-def]
        """Every operation on a 128-300 byte name is ENAMETOOLONG (issue 10 fault 6)."""
        p = posixpath.join(self._dir(data), name)
        if op == "rename_dst" and len(self.model.nodes) == 1:
            op = "rename_src"  # Linux looks the source up first: a missing one is ENOENT
        args: tuple[object, ...] = {
            "symlink": ("a", p), "chmod": (p, 0o600), "truncate": (p, 0), "rename_src": (p, "/renamed"),
            "rename_dst": (self._any(data), p),
        }.get(op, (p,))
        got = self.fs.run(op.split("_")[0], *args)
        assert got == errno.ENAMETOOLONG, f"{op}{_short(args)}: errno {_name(got)}, expected ENAMETOOLONG"

    @precondition(lambda self: any(self.model.children(d) for d in self.model.paths("dir") if d != "/"))
    @rule(data=st.data())
    def rmdir_not_empty(self, data) -> None:  # type: ignore[no-untyped-def]
        d = data.draw(st.sampled_from([d for d in self.model.paths("dir") if d != "/" and self.model.children(d)]))
        self._apply("rmdir", lambda m: m.rmdir(d), d)

    @precondition(lambda self: self.model.paths("file"))
    @rule(data=st.data(), how=st.sampled_from(["truncate", "write", "h_truncate", "h_write", "max"]))
    def too_big(self, data, how: str) -> None:  # type: ignore[no-untyped-def]
        """EFBIG past the largest VMFS5 file; exactly the largest size is allowed."""
        p = self._file(data)
        if how == "truncate":
            over = self.model.max_file_size + 1
            self._apply("truncate", lambda m: m.truncate(p, over), p, over)
        elif how == "write":
            top = self.model.max_file_size
            self._apply("write", lambda m: m.write(p, top, b"z"), p, top, b"z")
        elif how == "max":
            top = self.model.max_file_size
            self._apply("truncate", lambda m: m.truncate(p, top), p, top)
        elif self.model.handles:
            h = data.draw(st.sampled_from(self._open_nodes()))
            node = self.model.handles[h]
            if how == "h_truncate":
                self._apply("h_truncate", lambda m: m.truncate_node(m.handles[h], self.model.max_file_size + 1),
                            self.bh[h], self.model.max_file_size + 1)
            else:
                top = self.model.max_file_size
                self._apply("h_write", lambda m: m.write_node(m.handles[h], top, b"z"), self.bh[h], top, b"z")
            assert node is self.model.handles[h]

    @precondition(lambda self: self.tiny and self.model.paths("file"))
    @rule(data=st.data(), mib=st.sampled_from([40, 100]), byte=st.integers(1, 255))
    def fill(self, data, mib: int, byte: int) -> None:  # type: ignore[no-untyped-def]
        """Append tens of MiB (through a handle when one is open) until the tiny volume is full."""
        payload = bytes([byte]) * (mib << 20)
        if self.model.handles and data.draw(st.booleans()):
            h = data.draw(st.sampled_from(self._open_nodes()))
            end = self.model.handles[h].data.size  # type: ignore[union-attr]
            self._apply("h_write", lambda m, n=None: m.write_node(m.handles[h], end, payload[:n]),
                        self.bh[h], end, payload)
        else:
            p = self._file(data)
            end = self.model.nodes[p].data.size  # type: ignore[union-attr]
            self._apply("write", lambda m, n=None: m.write(p, end, payload[:n]), p, end, payload)

    @precondition(lambda self: len(self.model.handles) < MAX_HANDLES)
    @rule(data=st.data(), kind=st.sampled_from(["enotempty", "enametoolong", "efbig", "enospc"]))
    def pending_write_then_failure(self, data, kind: str) -> None:  # type: ignore[no-untyped-def]
        """Issue 10 fault 1 exactly: two writes through a handle (the second leaves its length
        change pending in memory), an operation elsewhere that fails, then the length seen
        through the handle, and after close on disk (the invariants), must be the full one."""
        p = "/pending"
        if self.model.kind(p) is None:
            self._apply("create", lambda m: m.create(p), p)
        if self.model.kind(p) != "file":
            return
        err, bh = self.fs.h("open", p)
        assert err is None, f"open {p}: errno {_name(err)}"
        h = self.model.open(p)
        self.bh[h] = bh
        for byte in b"ab":
            off = self.model.handles[h].data.size  # type: ignore[union-attr]
            chunk = bytes([byte]) * 131072
            self._apply("h_write", lambda m, n=None, o=off, c=chunk: m.write_node(m.handles[h], o, c[:n]),
                        bh, off, chunk)
        if kind == "enospc" and not self.tiny:
            kind = "enotempty"  # the roomy volume does not fill
        self._fail(data, kind)
        size = self.model.handles[h].data.size  # type: ignore[union-attr]
        err, got = self.fs.h("size", bh)
        assert got == size, f"after a failed {kind}: {p} is {got} bytes through its handle, model {size}"
        self._close(h)

    def _fail(self, data, kind: str) -> None:  # type: ignore[no-untyped-def]
        """One operation that fails."""
        if kind == "enospc":
            for i in range(24):  # the tiny volume has 12 free FDs: creates end in ENOSPC
                q = f"/fd{i}"
                if self._apply("create", lambda m, q=q: m.create(q), q) == errno.ENOSPC:
                    return
            return
        if kind == "enametoolong":
            q = "/" + "L" * 128
            self._apply("create", lambda m: m.create(q), q)
        elif kind == "efbig":
            over = self.model.max_file_size + 1
            self._apply("truncate", lambda m: m.truncate("/pending", over), "/pending", over)
        else:
            for q in ("/full", "/full/sub"):
                if self.model.kind(q) is None:
                    self._apply("mkdir", lambda m, q=q: m.mkdir(q), q)
            self._apply("rmdir", lambda m: m.rmdir("/full"), "/full")

    # -- open handles -----------------------------------------------------------------------------------

    @precondition(lambda self: len(self.model.handles) < MAX_HANDLES and self.model.paths("file"))
    @rule(data=st.data())
    def open_handle(self, data) -> None:  # type: ignore[no-untyped-def]
        p = self._file(data)
        if p.startswith(RACE + "/"):
            return  # the race batches must know every handle on their names
        err, h = self.fs.h("open", p)
        assert err is None, f"open {p}: errno {_name(err)}"
        self.bh[self.model.open(p)] = h

    @precondition(lambda self: self.model.handles)
    @rule(data=st.data(), offset=st.sampled_from([0, 1, 4095, 8192, 130000, 1 << 20, 3 << 20, "end"]),
          payload=st.one_of(SMALL, PATTERN))
    def handle_write(self, data, offset: int | str, payload: bytes) -> None:  # type: ignore[no-untyped-def]
        """A write through a handle: inside allocated blocks its length change stays pending."""
        h = data.draw(st.sampled_from(self._open_nodes()))
        off = self.model.handles[h].data.size if offset == "end" else offset  # type: ignore[union-attr]
        self._apply("h_write", lambda m, n=None: m.write_node(m.handles[h], off, payload[:n]),
                    self.bh[h], off, payload)

    @precondition(lambda self: self.model.handles)
    @rule(data=st.data(), size=SIZES)
    def handle_truncate(self, data, size: int) -> None:  # type: ignore[no-untyped-def]
        h = data.draw(st.sampled_from(self._open_nodes()))
        self._apply("h_truncate", lambda m: m.truncate_node(m.handles[h], size), self.bh[h], size)

    @precondition(lambda self: self.model.handles)
    @rule(data=st.data())
    def handle_fsync(self, data) -> None:  # type: ignore[no-untyped-def]
        h = data.draw(st.sampled_from(self._open_nodes()))
        err, _ = self.fs.h("fsync", self.bh[h])
        assert err is None, f"fsync: errno {_name(err)}"

    @precondition(lambda self: self.model.handles)
    @rule(data=st.data())
    def close_handle(self, data) -> None:  # type: ignore[no-untyped-def]
        self._close(data.draw(st.sampled_from(self._open_nodes())))

    def _close(self, h: int) -> None:
        err, _ = self.fs.h("close", self.bh.pop(h))
        assert err is None, f"close: errno {_name(err)}"
        self.model.close(h)
        self.fs.settle(hidden=self._hidden_count())

    def close_all(self) -> None:
        for h in self._open_nodes():
            self._close(h)

    def _hidden_count(self) -> int:
        return sum(1 for p in self.model.nodes if is_hidden(p))

    @precondition(lambda self: self.steps_since_remount >= REMOUNT_GAP)
    @rule()
    def remount(self) -> None:
        """Unmount and mount again (vmfs-tools' debugvmfs must open the image in between)."""
        self.steps_since_remount = 0
        self.close_all()
        self.check_all(full=True)
        self.fs.remount()

    # -- several threads at once --------------------------------------------------------------------------

    @precondition(lambda self: not self.tiny and self.backend_kind == "fuse")
    @rule(data=st.data(), threads=st.integers(2, 4))
    def threads_disjoint(self, data, threads: int) -> None:  # type: ignore[no-untyped-def]
        """Each thread works on its own two names in one shared directory: any interleaving gives
        the same result, so errnos and the tree are checked exactly."""
        d = self._dir(data)
        plans = [data.draw(st.lists(thread_op(posixpath.join(d, f"t{i}x"), posixpath.join(d, f"t{i}y")),
                                    min_size=2, max_size=5)) for i in range(threads)]
        self._stamp_start()
        expected = [[model_thread_op(self.model, op) for op in plan] for plan in plans]
        got = run_threads(self.fs, plans)
        self.model.close_stamps(int(time.time()) + 1)
        for plan, want, have in zip(plans, expected, got, strict=True):
            for op, w, g in zip(plan, want, have, strict=True):
                assert g == w, f"thread op {_short(op)}: errno {_name(g)}, expected {_name(w)} (plans {_short(plans)})"

    @precondition(lambda self: not self.tiny and self.backend_kind == "fuse")
    @rule(data=st.data(), threads=st.integers(2, 4))
    def threads_same_names(self, data, threads: int) -> None:  # type: ignore[no-untyped-def]
        """Threads create, write, fsync, rename, truncate and unlink the same names of one
        directory (issue 10 fault 7).  The result depends on the order, so only invariants are
        checked: expected errnos only, no hidden leftovers, no lock alarms, every byte left one
        that some thread wrote; the names are then removed (the model stays deterministic)."""
        if any(p.startswith(RACE + "/") for p, n in self.model.nodes.items() if self.model.is_open(n)):
            return
        if any(self.model.kind(f"{RACE}/r{i}") not in (None, "file") for i in range(3)):
            return  # another rule made one of the names a directory or link
        if self.model.kind(RACE) != "dir" and self._apply("mkdir", lambda m: m.mkdir(RACE), RACE) is not None:
            return
        names = [f"{RACE}/r{i}" for i in range(3)]
        plans = [data.draw(st.lists(race_op(names), min_size=3, max_size=6)) for _ in range(threads)]
        got = run_threads(self.fs, plans)
        for plan, have in zip(plans, got, strict=True):
            for op, g in zip(plan, have, strict=True):
                assert g in RACE_ERRNOS[op[0]], f"race op {_short(op)}: errno {_name(g)} (plans {_short(plans)})"
        self.fs.settle(hidden=self._hidden_count())
        if isinstance(self.fs, FuseBackend):
            assert self.fs.log_alarms() == [], self.fs.log_alarms()[:5]
        self._check_race_and_clear(plans)

    def _check_race_and_clear(self, plans: list[list[tuple]]) -> None:
        """Every race name left is a file holding only bytes that some thread wrote; then they
        are removed, so that the model (and what later steps draw) never depends on the order
        the threads ran in."""
        written = {0} | {op[2][0] for plan in plans for op in plan if op[0] in ("create_write", "cycle")}
        names = [f"{RACE}/r{i}" for i in range(3)]
        seen = self.fs.tree()
        for p in names:
            s = seen.get(p)
            if s is not None:
                assert s.kind == "file", f"race left {p} as a {s.kind}"
                content = s.file.read(0, s.size)
                assert set(content) <= written, f"{p}: bytes {sorted(set(content) - written)[:5]} nobody wrote"
            if s is not None:
                assert self.fs.run("unlink", p) is None, f"unlink {p} after the race"
            self.model.nodes.pop(p, None)
        self.model.nodes[RACE].mtime = (self.model.nodes[RACE].mtime[0], int(time.time()) + 1)

    # -- invariants ---------------------------------------------------------------------------------------

    @invariant()
    def everything_matches(self) -> None:
        if hasattr(self, "fs"):
            self.steps_since_remount += 1
            self.check_all(full=False)

    def check_all(self, *, full: bool) -> None:
        self.check_handles()
        self.check_tree(full=full)
        self.check_disk(full=full)
        for node in self.model.nodes.values():
            if node.data is not None:
                node.data.dirty.clear()

    def check_handles(self) -> None:
        for h, node in self.model.handles.items():
            data = node.data
            assert data is not None
            err, size = self.fs.h("size", self.bh[h])
            assert err is None and size == data.size, f"handle {h}: size {size} (errno {err}), model {data.size}"
            for off, n in data.probes(full=False):
                err, got = self.fs.h("read", self.bh[h], off, n)
                assert err is None and got == data.read(off, n), f"handle {h}: content differs at {off}"

    def check_tree(self, *, full: bool) -> None:
        got = self.fs.tree()
        want = {p: n for p, n in self.model.nodes.items() if not is_hidden(p)}
        shown = {p for p in got if not is_hidden(p)}
        assert shown == set(want), f"only backend {sorted(shown - set(want))}, only model {sorted(set(want) - shown)}"
        shown_hidden, hidden = _hidden_per_dir(got), _hidden_per_dir(self.model.nodes)
        # the mount lists libfuse's hidden names but not the library's: at most the model's
        assert all(n <= hidden.get(d, 0) for d, n in shown_hidden.items()), f"hidden: {shown_hidden}, model {hidden}"
        if self.backend_kind == "library":
            assert shown_hidden == hidden, f"hidden files: {shown_hidden}, model {hidden}"
        for p, node in want.items():
            check_node(p, node, got[p], self.model.nlink(p), full=full)

    def check_disk(self, *, full: bool) -> None:
        """The image as a separate open sees it: every file that no handle holds open has its
        full length on disk (issue 10 fault 1: a failed operation must not drop another file's
        pending length), the tree is the model's, the accounting adds up."""
        view = self.fs.disk_full() if full else self.fs.disk()
        assert view.problems == [], view.problems
        want = {p: n for p, n in self.model.nodes.items() if p != "/" and not is_hidden(p)}
        shown = {p for p in view.entries if not is_hidden(p)}
        assert shown == set(want), f"on disk only {sorted(shown - set(want))}, model only {sorted(set(want) - shown)}"
        assert _hidden_per_dir(view.entries) == _hidden_per_dir(self.model.nodes), "hidden files on disk differ"
        for p, node in want.items():
            kind, size = view.entries[p]
            assert kind == node.kind, f"{p}: on disk a {kind}"
            if node.data is not None and not self.model.is_open(node):
                assert size == node.data.size, f"{p}: on disk {size} bytes, model {node.data.size} (closed)"


def check_node(p: str, node: Node, seen: Seen, nlink: int, *, full: bool) -> None:
    assert seen.kind == node.kind, f"{p}: a {seen.kind}, model a {node.kind}"
    if node.kind != "link":
        assert seen.mode == node.mode, f"{p}: mode {seen.mode:o}, model {node.mode:o}"
    owner, model_owner = (seen.uid, seen.gid), (node.uid, node.gid)
    assert owner == model_owner, f"{p}: owner {owner}, model {model_owner}"
    assert seen.nlink == nlink, f"{p}: {seen.nlink} links, model {nlink}"
    for what, value, (lo, hi) in (("mtime", seen.mtime, node.mtime), ("atime", seen.atime, node.atime)):
        assert lo <= value <= (hi if hi is not None else value), f"{p}: {what} {value}, model [{lo}, {hi}]"
    if node.kind == "link":
        assert seen.target == node.target, f"{p}: -> {seen.target}, model -> {node.target}"
    elif node.kind == "file":
        data = node.data
        assert data is not None
        assert seen.size == data.size, f"{p}: size {seen.size}, model {data.size}"
        for off, n in data.probes(full=full) + seen.file.allocated():
            for sub in range(off, off + n, 1 << 22):
                m = min(1 << 22, off + n - sub)
                assert seen.file.read(sub, m) == data.read(sub, m), f"{p}: content differs at {sub}"


def _hidden_per_dir(paths: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in paths:
        if is_hidden(p):
            out[posixpath.dirname(p)] = out.get(posixpath.dirname(p), 0) + 1
    return out


def _name(e: int | None) -> str:
    return "success" if e is None else errno.errorcode.get(e, str(e))


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) < 300 else text[:300] + "..."


# -- thread batches ---------------------------------------------------------------------------------------

def thread_op(x: str, y: str):  # type: ignore[no-untyped-def]
    """One operation of a thread that owns the names x and y."""
    pattern = st.builds(lambda b, n: bytes([b]) * n, st.integers(1, 255), st.sampled_from([1, 5000, 70000, 1 << 20]))
    return st.one_of(
        st.tuples(st.just("create"), st.sampled_from([x, y])),
        st.tuples(st.just("mkdir"), st.just(y)),
        st.tuples(st.just("rmdir"), st.just(y)),
        st.tuples(st.just("write"), st.just(x), st.sampled_from([0, 4096, 1 << 20]), pattern),
        st.tuples(st.just("truncate"), st.just(x), st.sampled_from([0, 10, 1 << 20])),
        st.tuples(st.just("rename"), st.sampled_from([(x, y), (y, x)])),
        st.tuples(st.just("unlink"), st.sampled_from([x, y])),
        st.tuples(st.just("cycle"), st.just(x), pattern),
    )


def model_thread_op(model: Model, op: tuple) -> int | None:
    kind = op[0]
    if kind == "rename":
        return model.rename(*op[1])
    if kind == "write":
        return model.write(op[1], op[2], op[3])
    if kind == "cycle":
        node = model.nodes.get(op[1])
        if node is None:
            return errno.ENOENT
        if node.kind == "dir":
            return errno.EISDIR
        return model.write_node(node, 0, op[2])
    return getattr(model, kind)(*op[1:])


def race_op(names: list[str]):  # type: ignore[no-untyped-def]
    name = st.sampled_from(names)
    pattern = st.builds(lambda b, n: bytes([b]) * n, st.integers(1, 255), st.sampled_from([100, 9000, 300000]))
    return st.one_of(
        st.tuples(st.just("create_write"), name, pattern),
        st.tuples(st.just("cycle"), name, pattern),
        st.tuples(st.just("unlink"), name),
        st.tuples(st.just("rename"), st.tuples(name, name)),
        st.tuples(st.just("truncate"), name, st.sampled_from([0, 50, 200000])),
    )


#: what each race operation may answer when other threads change the same names meanwhile (an
#: open file that is unlinked or renamed over keeps a hidden name: never EBUSY)
RACE_ERRNOS: dict[str, set[int | None]] = {
    "create_write": {None, errno.ENOENT},
    "cycle": {None, errno.ENOENT},
    "unlink": {None, errno.ENOENT},
    "rename": {None, errno.ENOENT},
    "truncate": {None, errno.ENOENT},
}


def run_one(fs: Backend, op: tuple) -> int | None:
    kind = op[0]
    if kind == "rename":
        return fs.run("rename", *op[1])
    if kind in ("cycle", "create_write"):
        if kind == "create_write":
            err = fs.run("create", op[1])
            if err not in (None, errno.EEXIST):
                return err
        err, h = fs.h("open", op[1])
        if err is not None:
            return err
        try:
            err = fs.h("write", h, 0, op[2])[0] or fs.h("fsync", h)[0]
        finally:
            err = err or fs.h("close", h)[0]
        return err
    return fs.run(kind, *op[1:])


def run_threads(fs: Backend, plans: list[list[tuple]]) -> list[list[int | None]]:
    """Run each plan on its own thread, all starting together; errnos per operation."""
    results: list[list[int | None]] = [[] for _ in plans]
    failures: list[BaseException] = []
    barrier = threading.Barrier(len(plans))

    def work(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            for op in plans[i]:
                results[i].append(run_one(fs, op))
        except BaseException as exc:  # a traceback from a thread fails the rule, not the thread
            failures.append(exc)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(len(plans))]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert not any(w.is_alive() for w in workers), "a thread hung"
    if failures:
        raise failures[0]
    return results


class FuseMachine(VmfsMachine):
    backend_kind = "fuse"
    #: examples finished so far in this process (the ci profile runs the oracles on some only)
    examples = 0

    def teardown(self) -> None:
        try:
            if hasattr(self, "fs") and sys.exc_info()[1] is None:
                self.close_all()
                self.check_all(full=True)
                alarms = self.fs.log_alarms()  # type: ignore[union-attr]
                assert alarms == [], alarms[:5]
                self.fs.close()
                del self.fs
                fsck_clean(self.image)
                FuseMachine.examples += 1
                if PROFILE == "explore" or FuseMachine.examples % ORACLE_EVERY == 1:
                    check_oracles(self.image, self.tmp, self.version)
        finally:
            self.abandon()


def double_indirect_files(image: Path) -> frozenset[str]:
    """Files in double-indirect mode (> 256 GiB): vmfs-tools misreads them (it takes ZLA 4304 for
    single indirect, vmfs-format.md 8.5), so their bytes are compared with dissect.vmfs only."""
    from vmfs.ondisk import filedesc as F
    from vmfs.volume.namespace import FileSystem
    from vmfs.volume.volume import Volume

    found = set()
    with Volume.open(image) as vol:
        fs = FileSystem(vol)
        for d, entries in fs.walk("/"):
            for e in entries:
                if vol.read_fd(e.address).zla == F.ZLA_DOUBLE_INDIRECT:
                    found.add(posixpath.join(d, e.name))
    return frozenset(found)


def check_oracles(image: Path, tmp: Path, version: int = 5) -> None:
    """vmfs-fuse (vmfs6-fuse) and dissect.vmfs read what we wrote identically to our own mount.
    vmfs6-fuse reads nothing after a file's first hole (docs/SPEC.md): those files' bytes are
    compared with dissect.vmfs only."""
    skip = double_indirect_files(image)
    if version == 6:
        skip |= oracles.holed_files(image)
    with Mount([tool("vmfs-mount"), str(image), str(tmp / "ours")], tmp / "ours") as root:
        ours = capture_mount(root)
    prog, quirk = ("vmfs6-fuse", frozenset()) if version == 6 else ("vmfs-fuse", frozenset({"/.sdd.sf"}))
    with Mount([prog, str(image), str(tmp / "oracle")], tmp / "oracle") as root:
        theirs = capture_mount(root, unreadable=quirk, skip_content=skip)
    if quirk:
        theirs.pop("/.sdd.sf", None)
    for tree in (ours, theirs):
        for rec in tree.values():
            rec.pop("atime", None)
    ours_cmp = {p: {k: v for k, v in r.items() if not (p in skip and k == "sha256")} for p, r in ours.items()}
    for path in quirk:
        ours_cmp.pop(path, None)
    assert ours_cmp == theirs
    dis = capture_dissect([image])
    for rec in dis.values():
        rec.pop("atime", None)
    assert ours == dis


def machine_settings(backend: str) -> settings:
    examples, steps = SIZES_OF[PROFILE][backend]
    return settings(max_examples=examples, stateful_step_count=steps, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck), print_blob=True)


def with_seed_note(case: type) -> type:
    """Name the profile and seed in every failure, so that it can be run again as it was."""
    run = case.runTest

    def runTest(self) -> None:  # type: ignore[no-untyped-def]
        try:
            run(self)
        except BaseException as exc:
            exc.add_note(f"model profile {PROFILE}: rerun with VMFS_MODEL_PROFILE={PROFILE} VMFS_MODEL_SEED={SEED}")
            raise

    case.runTest = runTest
    return case


seed(SEED)(VmfsMachine)
seed(SEED)(FuseMachine)

#: the suite's 900 s pytest-timeout is for the ci profile; an exploration runs as long as it needs
_timeout = pytest.mark.timeout(900 if PROFILE == "ci" else 6 * 3600)

TestLibraryModel = _timeout(with_seed_note(VmfsMachine.TestCase))
TestLibraryModel.settings = machine_settings("library")

TestFuseModel = _timeout(pytest.mark.fuse(with_seed_note(FuseMachine.TestCase)))
FuseMachine.TestCase.settings = machine_settings("fuse")


class Vmfs6Machine(VmfsMachine):
    """The same rules on a VMFS6 volume (hashed directories, 64 KiB sub-blocks, journal blocks)."""

    version = 6


seed(SEED)(Vmfs6Machine)
TestLibraryModel6 = _timeout(with_seed_note(Vmfs6Machine.TestCase))
TestLibraryModel6.settings = machine_settings("library6")


class Fuse6Machine(FuseMachine):
    """The FUSE rules on VMFS6, through a real read-write mount."""

    version = 6


seed(SEED)(Fuse6Machine)
TestFuseModel6 = _timeout(pytest.mark.fuse(with_seed_note(Fuse6Machine.TestCase)))
Fuse6Machine.TestCase.settings = machine_settings("fuse6")
