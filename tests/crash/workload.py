"""A seeded write workload for crash tests, with the tree each acknowledged operation leaves.

Every step is one operation as a user sees it (a create, a write followed by fsync, a rename...).
The workload runs once, through a :class:`tests.crash.trace.Recorder`, and notes for each step the
range of device writes it issued, so for any cut point the steps acknowledged before it and the
one in flight are known.  What it covers, and why:

* files of every mapping kind: resident (≤ 1 KiB), sub-blocks, file blocks, and files with
  pointer blocks (a block past 256 MiB: VMFS5 file blocks are 1 MiB and an FD maps 256 directly),
  including a file converted from direct to pointer blocks by a write past 256 MiB;
* overwrites of existing bytes (file data is not journaled: the one in flight may be a mix of
  old and new sectors, nothing else), truncates down and up;
* renames to new names, over an existing file, of a directory; unlink of a file with pointer
  blocks; mkdir and rmdir; symlinks, made and removed;
* directories grown past their resident area (7 entries) and past one 8 KiB sub-block (58), then
  shrunk.

Small files' bytes start with four NULs: fsck.vmfs reads the first four bytes of a resident file
as a block address (docs/SPEC.md, "Oracle bugs met"); zeros keep that known false report away so
its counters can be required to be zero.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.crash.trace import Recorder
from vmfs.write.posix import WritableFileSystem

MIB = 1 << 20
#: files up to this size are compared whole; larger (sparse) ones at PROBES only
WHOLE = 4 * MIB
PROBES = (0, MIB, 255 * MIB, 256 * MIB, 257 * MIB, 300 * MIB)
PROBE_LEN = 64 * 1024


@dataclass(frozen=True)
class Sparse:
    """File bytes as (offset, data) pieces over zeros, so a 300 MiB file costs what it holds."""

    size: int = 0
    pieces: tuple[tuple[int, bytes], ...] = ()

    def read(self, offset: int, length: int) -> bytes:
        out = bytearray(max(0, min(length, self.size - offset)))
        for off, data in self.pieces:
            lo, hi = max(off, offset), min(off + len(data), offset + len(out))
            if lo < hi:
                out[lo - offset : hi - offset] = data[lo - off : hi - off]
        return bytes(out)

    def write(self, offset: int, data: bytes) -> Sparse:
        return Sparse(max(self.size, offset + len(data)), (*self.pieces, (offset, data)))

    def truncate(self, size: int) -> Sparse:
        kept = tuple((o, d[: max(0, size - o)]) for o, d in self.pieces if o < size)
        return Sparse(size, kept)


def content_key(read_at: Callable[[int, int], bytes], size: int) -> tuple[int, str]:
    """(size, sha256) of a file's bytes: whole up to WHOLE, else of the PROBES windows."""
    h = hashlib.sha256()
    if size <= WHOLE:
        h.update(read_at(0, size) if size else b"")
    else:
        for off in PROBES:
            if off < size:
                h.update(read_at(off, min(PROBE_LEN, size - off)))
        h.update(read_at(size - min(size, PROBE_LEN), min(size, PROBE_LEN)))
    return size, h.hexdigest()


#: what a tree maps each path to: ("dir",), ("link", target) or ("file", size, sha256)
Entry = tuple
Tree = dict[str, Entry]
Model = dict[str, object]  # path -> None (directory), str (symlink target) or Sparse


def model_tree(model: Model) -> Tree:
    out: Tree = {}
    for path, v in model.items():
        if v is None:
            out[path] = ("dir",)
        elif isinstance(v, str):
            out[path] = ("link", v)
        else:
            assert isinstance(v, Sparse)
            out[path] = ("file", *content_key(v.read, v.size))
    return out


@dataclass
class Step:
    name: str
    first_write: int  # device writes issued before the step began
    last_write: int  # ... and when it returned
    before: Model
    after: Model
    #: a data overwrite in flight may leave a sector-wise mix of old and new at this path
    mixed: tuple[str, int, bytes] | None = None


@dataclass
class Run:
    steps: list[Step] = field(default_factory=list)
    first_cut: int = 0  # writes of the setup part, which is not cut
    total_writes: int = 0

    def at_cut(self, cut: int) -> tuple[Model, Step | None]:
        """The model after every step acknowledged before write ``cut`` + 1 failed, and the step
        in flight then (None when the cut fell between steps)."""
        model: Model = {}
        for step in self.steps:
            if step.last_write <= cut:
                model = step.after
            else:
                return model, (step if step.first_write <= cut else None)
        return model, None


def _data(rng: random.Random, n: int) -> bytes:
    return (bytes(4) + rng.randbytes(max(0, n - 4)))[:n]


class _Driver:
    def __init__(self, fs: WritableFileSystem, recorder: Recorder) -> None:
        self.fs = fs
        self.rec = recorder
        self.model: Model = {}
        self.run = Run()

    def step(self, name: str, action: Callable[[], object], change: Callable[[Model], None],
             mixed: tuple[str, int, bytes] | None = None) -> None:
        before = dict(self.model)
        after = dict(self.model)
        change(after)
        first = self.rec.writes
        action()
        self.run.steps.append(Step(name, first, self.rec.writes, before, after, mixed))
        self.model = after

    # -- operations: each does one thing on the volume and the same to the model ------------------------

    def mkdir(self, p: str) -> None:
        self.step(f"mkdir {p}", lambda: self.fs.mkdir(p), lambda m: m.__setitem__(p, None))

    def rmdir(self, p: str) -> None:
        self.step(f"rmdir {p}", lambda: self.fs.rmdir(p), lambda m: m.pop(p))

    def create(self, p: str) -> None:
        self.step(f"create {p}", lambda: self.fs.create(p), lambda m: m.__setitem__(p, Sparse()))

    def write(self, p: str, off: int, data: bytes, *, overwrite: bool = False) -> None:
        def act() -> None:
            address = self.fs.resolve(p).address
            self.fs.write(address, off, data)
            self.fs.fsync(address)

        def change(m: Model) -> None:
            m[p] = m[p].write(off, data)  # type: ignore[union-attr]

        self.step(f"write {p}@{off}+{len(data)}", act, change, (p, off, data) if overwrite else None)

    def truncate(self, p: str, size: int) -> None:
        def act() -> None:
            address = self.fs.resolve(p).address
            self.fs.truncate(address, size)
            self.fs.fsync(address)

        self.step(f"truncate {p} {size}", act, lambda m: m.__setitem__(p, m[p].truncate(size)))  # type: ignore[union-attr]

    def rename(self, a: str, b: str) -> None:
        def change(m: Model) -> None:
            for k in [k for k in m if k == a or k.startswith(a + "/")]:
                m[b + k[len(a):]] = m.pop(k)

        self.step(f"rename {a} {b}", lambda: self.fs.rename(a, b), change)

    def unlink(self, p: str) -> None:
        self.step(f"unlink {p}", lambda: self.fs.unlink(p), lambda m: m.pop(p))

    def symlink(self, target: str, p: str) -> None:
        self.step(f"symlink {p}", lambda: self.fs.symlink(target, p), lambda m: m.__setitem__(p, target))


def workload(fs: WritableFileSystem, recorder: Recorder, seed: int) -> Run:
    """Run the seeded workload on ``fs`` (whose device is ``recorder``); returns its steps.

    A setup part comes first (its writes are not cut points, ``Run.first_cut`` says where the
    tested part begins): two directories filled to just below a size boundary, the resident
    area (7 entries) and one 8 KiB sub-block (58), so that the tested creates cross them without
    spending hundreds of cut points on the creates before."""
    rng = random.Random(seed)
    d = _Driver(fs, recorder)
    for p in ("/a", "/b", "/a/c", "/g1", "/g2"):
        d.mkdir(p)
    for i in range(5):
        d.create(f"/g1/e{i:03d}")
    for i in range(55):
        d.create(f"/g2/e{i:03d}")
    d.run.first_cut = recorder.writes
    sizes = [0, 10, 900, 5000, 9000, 70000, MIB + 17, 2 * MIB + 4096]
    rng.shuffle(sizes)
    files = [f"/{'ab'[i % 2]}/f{i}" for i in range(len(sizes))]
    for p, n in zip(files, sizes, strict=True):
        d.create(p)
        if n:
            d.write(p, 0, _data(rng, n))
    d.symlink("a/f0", "/s0")
    d.symlink("/" + "long/" * 30 + "target", "/b/s1")
    # pointer blocks: a sparse file past 256 MiB, and a small file grown past it (conversion)
    d.create("/b/big")
    d.write("/b/big", 300 * MIB, _data(rng, 8192))
    small = next(p for p in files if 0 < sizes[files.index(p)] < 10000)
    d.write(small, 257 * MIB, _data(rng, 5000))
    # overwrites of bytes already there: a file-block file, the sparse file's block
    fb = next(p for p in files if sizes[files.index(p)] > MIB)
    d.write(fb, 4096 + rng.randrange(512), rng.randbytes(3000), overwrite=True)
    d.write("/b/big", 300 * MIB + 100, rng.randbytes(1000), overwrite=True)
    # renames: to a new name, over an existing file, a whole directory
    others = [p for p in files if p not in (small, fb)]
    d.rename(others[0], "/a/c/moved0")
    d.rename(others[1], others[2])
    d.rename("/a/c", "/b/c2")
    d.mkdir("/b/tmp")
    d.rmdir("/b/tmp")
    # directories past their resident area and past one sub-block, then shrunk again
    for g, first in (("/g1", 5), ("/g2", 55)):
        for i in range(first, first + 5):
            d.create(f"{g}/e{i:03d}")
    for i in (0, 3, 56):
        d.unlink(f"/g2/e{i:03d}")
    d.unlink("/b/big")
    d.unlink("/s0")
    d.truncate(fb, 3)
    d.truncate(others[3], 20000)
    d.mkdir("/b/d")
    d.run.total_writes = recorder.writes
    return d.run
