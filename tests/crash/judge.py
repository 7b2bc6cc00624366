"""Judging a recovered volume: our reader, our fsck, dissect.vmfs, fsck.vmfs.

The crash tests keep their disks in memory (a cut point costs milliseconds, not an image copy),
so the readers are pointed at devices instead of files: dissect.vmfs reads through a file object
over the device, vmfs-fsck's phases open the device in place of the image path (the one place
the tool opens devices, ``vmfs.fsck.run.open_device``, is given a factory: the fsck code that runs is
the real one, the bytes it reads are the crashed disk's), and fsck.vmfs, a separate program, gets
the device written out to a sparse image file.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.crash.workload import Entry, Model, Sparse, Step, Tree, content_key, model_tree
from vmfs.cluster.host import HostIdentity
from vmfs.device.base import BlockDevice
from vmfs.fsck import FsckOptions, Mode, Policy, check
from vmfs.ondisk import filedesc as F
from vmfs.volume.namespace import FileSystem

FSCK_HOST = HostIdentity(uuid="5f000000-00000009-0009-020000000009", ip="192.0.2.9")


# -- our reader -----------------------------------------------------------------------------------------------


def our_tree(fs: FileSystem) -> Tree:
    """The user-visible tree as our library reads it (system files left out)."""
    out: Tree = {}
    for d, entries in fs.walk("/"):
        for e in entries:
            if d == "/" and e.name.endswith(".sf"):
                continue
            path = d.rstrip("/") + "/" + e.name
            fd = fs.volume.read_fd(e.address)
            if fd.type == F.TYPE_DIRECTORY:
                out[path] = ("dir",)
            elif fd.type == F.TYPE_SYMLINK:
                out[path] = ("link", fs.readlink(path))
            else:
                reader = fs.volume.reader(fd)
                out[path] = ("file", *content_key(reader.read, fd.size))
    return out


def our_tree_of(device: BlockDevice) -> Tree:
    """:func:`our_tree` of a device opened read-only (no slot claimed, nothing written)."""
    from vmfs.volume.volume import Volume

    with Volume.from_devices([_Window(device, readonly=True)]) as vol:
        return our_tree(FileSystem(vol))


# -- dissect.vmfs -------------------------------------------------------------------------------------------------


class DeviceFile(io.RawIOBase):
    """A read-only file object over a block device (what dissect.vmfs reads from)."""

    def __init__(self, device: BlockDevice) -> None:
        self.device = device
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.pos, os.SEEK_END: self.device.size}[whence]
        self.pos = base + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        n = max(0, min(len(buffer), self.device.size - self.pos))
        buffer[:n] = self.device.read(self.pos, n)
        self.pos += n
        return n


def dissect_tree(device: BlockDevice) -> Tree:
    """The same tree read by dissect.vmfs (an independent reader; AGPL, tests only)."""
    from dissect.vmfs import lvm, vmfs

    fs = vmfs.VMFS(lvm.LVM([DeviceFile(device)]).volumes[0].open())
    out: Tree = {}
    pending = ["/"]
    while pending:
        d = pending.pop()
        for name in fs.get(d).listdir():
            if name in (".", "..") or (d == "/" and name.endswith(".sf")):
                continue
            path = d.rstrip("/") + "/" + name
            fd = fs.get(path)
            if fd.is_dir():
                out[path] = ("dir",)
                pending.append(path)
            elif fd.is_symlink():
                out[path] = ("link", fd.link)
            else:
                fh = fd.open()

                def read_at(off: int, n: int, fh=fh) -> bytes:  # type: ignore[no-untyped-def]
                    fh.seek(off)
                    return fh.read(n)

                out[path] = ("file", *content_key(read_at, fd.size))
    return out


# -- vmfs-fsck on a device ---------------------------------------------------------------------------------------


class _Window(BlockDevice):
    """A device seen through another read-only flag (fsck opens its check phases read-only)."""

    def __init__(self, base: BlockDevice, readonly: bool) -> None:
        super().__init__(readonly=readonly)
        self.base = base
        self.name = base.name

    @property
    def size(self) -> int:
        return self.base.size

    def _read(self, offset: int, length: int) -> bytes:
        return self.base.read(offset, length)

    def _write(self, offset: int, data: bytes) -> None:
        self.base.write(offset, data)

    def _compare_and_write(self, offset: int, expected: bytes, new: bytes) -> bool:
        return self.base.compare_and_write(offset, expected, new)

    def flush(self) -> None:
        self.base.flush()


@contextlib.contextmanager
def devices_for_fsck(monkeypatch: pytest.MonkeyPatch, disks: dict[str, BlockDevice]) -> Iterator[None]:
    """While active, vmfs-fsck opening the image ``name`` gets ``disks[name]`` (read-only phases
    through a read-only window).  ``disks`` may be changed in between runs (a fault device for
    the repair that dies, the plain disk after)."""

    def open_device(path: str, readonly: bool = True) -> BlockDevice:
        return _Window(disks[str(path)], readonly)

    with monkeypatch.context() as m:
        m.setattr("vmfs.fsck.run.open_device", open_device)
        yield


def fsck(name: str, mode: Mode, *, stale_hosts: frozenset[str] = frozenset()) -> tuple[int, list[str]]:
    """(exit code, one line per finding of the check phase, then of the verify phase after a
    repair, prefixed "verify ") of vmfs-fsck on the image ``name``."""
    report = check([name], FsckOptions(Policy(mode), host=FSCK_HOST, stale_hosts=stale_hosts))
    lines = [f"{f.problem.code.name}: {f.subject}: {f.message}" for f in report.check.findings]
    if report.verify is not None:
        lines += [f"verify {f.problem.code.name}: {f.subject}: {f.message}" for f in report.verify.findings]
    if report.error:
        lines.append(f"error: {report.error}")
    return int(report.exit_code), lines


# -- fsck.vmfs ----------------------------------------------------------------------------------------------------


def write_image(device: BlockDevice, path: Path, chunk: int = 1 << 20) -> Path:
    """The device as a sparse image file (runs of zeros become holes)."""
    zero = bytes(chunk)
    with open(path, "wb") as f:
        f.truncate(device.size)
        for off in range(0, device.size, chunk):
            data = device.read(off, min(chunk, device.size - off))
            if data != zero[: len(data)]:
                f.seek(off)
                f.write(data)
    return path


def fsck_vmfs_counts(device: BlockDevice, path: Path) -> dict[str, int]:
    """fsck.vmfs's summary counters for the device (written to ``path``)."""
    from tests.oracles import FSCK_SUMMARY, fsck_vmfs

    report = fsck_vmfs(write_image(device, path))
    path.unlink()
    return {k: report.counts[k] for k in FSCK_SUMMARY}


# -- the oracle -------------------------------------------------------------------------------------------------


def _mix_ok(got: Entry, step: Step, read_range: Callable[[str, int, int], bytes]) -> bool:
    """Whether a file is what a data overwrite in flight may leave: file data is not journaled,
    so each sector of the overwritten range may hold its old or its new bytes (a disk cache
    destages sectors in any order); everything else of the file is as before."""
    assert step.mixed is not None
    path, off, data = step.mixed
    before, after = step.before[path], step.after[path]
    assert isinstance(before, Sparse) and isinstance(after, Sparse) and before.size == after.size
    lo, hi = off // 512 * 512, min(before.size, -(-(off + len(data)) // 512) * 512)
    seen = read_range(path, lo, hi - lo)
    for s in range(lo, hi, 512):
        sector = seen[s - lo : s - lo + 512]
        if sector not in (before.read(s, 512), after.read(s, 512)):
            return False
    mixed = before.write(lo, seen).truncate(before.size)
    return got == ("file", *content_key(mixed.read, mixed.size))


def allowed(tree: Tree, done: Model, step: Step | None,
            read_range: Callable[[str, int, int], bytes]) -> str | None:
    """None if ``tree`` is what the acknowledged steps made (the one in flight done or undone as
    a whole, but for the data of an overwrite), else why not.  ``read_range(path, offset, n)``
    reads a file of the recovered volume."""
    before = model_tree(done)
    if tree == before:
        return None
    if step is None:
        return f"not the acknowledged state: {_diff(before, tree)}"
    after = model_tree(step.after)
    if tree == after:
        return None
    if step.mixed is not None:
        path = step.mixed[0]
        same_elsewhere = {k: v for k, v in tree.items() if k != path} == {k: v for k, v in before.items() if k != path}
        if same_elsewhere and path in tree and _mix_ok(tree[path], step, read_range):
            return None
    return (f"step in flight {step.name!r} neither undone nor done: before {_diff(before, tree)}; "
            f"after {_diff(after, tree)}")


def _diff(want: Tree, got: Tree) -> str:
    out = []
    for p in sorted(set(want) | set(got)):
        if want.get(p) != got.get(p):
            out.append(f"{p}: want {want.get(p)} got {got.get(p)}")
    return "; ".join(out[:6]) + (f" (+{len(out) - 6})" if len(out) > 6 else "")
