"""Appends to a file held open for writing preallocate blocks past the end of file.

The run is counted in the FD's numPreAllocBlocks so that every committed state is consistent
(fsck accepts exactly that many blocks past the end), it is given back when the last writer
closes, and its undefined bytes never show: the end of file moving past them zeroes them.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fsck import volumes
from tests.fsck.cases import codes, run_fsck
from vmfs.cluster.attachment import HostAttachment
from vmfs.ondisk import resource as R
from vmfs.volume.filedesc import FileDescriptor
from vmfs.volume.namespace import FileSystem
from vmfs.volume.volume import Volume
from vmfs.write.filedata import FileWriter
from vmfs.write.posix import WritableFileSystem

MIB = 1 << 20


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return volumes.make_volume(tmp_path / "prealloc.img")


def _free_blocks(vol: HostAttachment) -> int:
    return vol.allocators[R.RES_FB].free_count


def _append(fs: WritableFileSystem, address: int, blocks: int, seed: int = 7) -> bytes:
    data = volumes.data(blocks * MIB, seed)
    for i in range(blocks):
        fs.write(address, i * MIB, data[i * MIB : (i + 1) * MIB])
    return data


@contextlib.contextmanager
def _writing(image: Path, host: str = volumes.WRITER) -> Iterator[tuple[HostAttachment, WritableFileSystem]]:
    with HostAttachment.open(image, host=volumes.host(host)) as vol:
        yield vol, WritableFileSystem(vol)


def _open_new(fs: WritableFileSystem, path: str) -> FileDescriptor:
    """Create ``path`` and hold it open for writing, as a FUSE handle does."""
    fd = fs.create(path)
    fs.open_file(fd.address, write=True)
    return fd


def _read(vol: Volume, path: str) -> bytes:
    fd = FileSystem(vol).resolve(path)
    return vol.reader(fd).read(0, fd.size)


def test_appends_preallocate_and_close_gives_back(image: Path) -> None:
    with _writing(image) as (vol, fs):
        free_before = _free_blocks(vol)
        fd = _open_new(fs, "/seq")
        commits = vol.journal.sequence
        data = _append(fs, fd.address, 100)
        # runs as long as the file so far: blocks 0-1, 2-5, 6-13, 14-29, 30-61, 62-125 (one
        # commit per block without preallocation, 22 with runs of a growing eighth)
        assert vol.journal.sequence - commits == 6
        fd = fs.resolve("/seq")
        assert fd.meta.numPreAllocBlocks > 0
        assert fd.meta.numBlocks == 100 + fd.meta.numPreAllocBlocks
        fs.close_file(fd.address, write=True)
        fd = fs.resolve("/seq")
        assert (fd.meta.numPreAllocBlocks, fd.meta.numBlocks, fd.size) == (0, 100, 100 * MIB)
        assert free_before - _free_blocks(vol) == 100
    with Volume.open(image) as vol:
        assert _read(vol, "/seq") == data
    rc, report = run_fsck(image, "-n")
    assert (rc, codes(report)) == (0, [])


def test_crash_while_open_leaves_a_consistent_counted_run(image: Path, tmp_path: Path) -> None:
    """An image taken while the file is open (as after a power cut): the committed length and
    preallocated run agree, fsck finds nothing, and every reader sees the committed length."""
    snapshot = tmp_path / "crashed.img"
    with _writing(image) as (vol, fs):
        fd = _open_new(fs, "/open")
        data = _append(fs, fd.address, 40)
        vol.volume.device.flush()
        shutil.copyfile(image, snapshot)
        fs.close_file(fd.address, write=True)
    with Volume.open(snapshot) as vol:
        fd = FileSystem(vol).resolve("/open")
        assert fd.meta.numPreAllocBlocks > 0
        assert -(-fd.size // MIB) + fd.meta.numPreAllocBlocks == fd.meta.numBlocks
        assert _read(vol, "/open") == data[: fd.size]
    rc, report = run_fsck(snapshot, "-n")  # the writer's heartbeat and locks look live: notes only
    assert (rc, codes(report)) == (0, [])
    # once the writer is declared gone, its slot and locks go; the file keeps its run
    rc, report = run_fsck(snapshot, "-y", "--stale-host", volumes.WRITER)
    assert rc == 1 and all(c.split()[0].startswith("0x06") for c in codes(report)), codes(report)
    # the next writer on that volume truncates the file: the run is freed with the rest
    with _writing(snapshot, volumes.OTHER) as (vol, fs):
        fd = fs.resolve("/open")
        fs.truncate(fd.address, 3 * MIB + 5)
        fd = fs.resolve("/open")
        assert (fd.meta.numPreAllocBlocks, fd.meta.numBlocks) == (0, 4)
    rc, report = run_fsck(snapshot, "-n")
    assert (rc, codes(report)) == (0, [])


def _block_offset(vol: HostAttachment, fd_address: int, index: int) -> int:
    """Volume offset of block ``index`` of a file (which must be allocated)."""
    fd = vol.volume.read_fd(fd_address)
    with vol.transaction() as tx:
        writer = FileWriter(vol, fd)
        addr = writer.get(tx, index)
        assert addr, f"block {index} is not allocated"
        return writer._location(addr)


def _stale(vol: HostAttachment, fd_address: int, first: int, count: int) -> None:
    """Fill preallocated blocks with garbage, as free space from deleted files would hold."""
    for index in range(first, first + count):
        vol.volume.device.write(_block_offset(vol, fd_address, index), b"\xee" * MIB)


@pytest.mark.parametrize("grow", ["truncate", "gap-write"])
def test_growing_past_preallocated_blocks_reads_zeros(image: Path, grow: str) -> None:
    n = 62  # the append of block 62 preallocates 63 more (runs as long as the file)
    with _writing(image) as (vol, fs):
        fd = _open_new(fs, "/grow")
        data = _append(fs, fd.address, n)
        fs.write(fd.address, n * MIB, b"tail")  # the end of file is now inside block n
        fd = fs.resolve("/grow")
        run = fd.meta.numPreAllocBlocks
        assert run >= 3
        _stale(vol, fd.address, n + 1, run)
        vol.volume.device.write(_block_offset(vol, fd.address, n) + 4, b"\xee" * (MIB - 4))
        new_end = (n + 1 + run) * MIB + 100
        if grow == "truncate":
            fs.truncate(fd.address, new_end)
        else:
            fs.write(fd.address, new_end - 1, b"!")
        fs.close_file(fd.address, write=True)
        got = _read(vol.volume, "/grow")
    assert len(got) == new_end
    assert got[: n * MIB] == data
    assert got[n * MIB : n * MIB + 4] == b"tail"
    expected_tail = bytes(new_end - n * MIB - 4)
    if grow == "gap-write":
        expected_tail = expected_tail[:-1] + b"!"
    assert got[n * MIB + 4 :] == expected_tail
    rc, report = run_fsck(image, "-n")
    assert (rc, codes(report)) == (0, [])


def test_truncate_down_frees_the_run(image: Path) -> None:
    with _writing(image) as (vol, fs):
        free_before = _free_blocks(vol)
        fd = _open_new(fs, "/shrink")
        data = _append(fs, fd.address, 50)
        fs.truncate(fd.address, 10 * MIB + 1)
        fd = fs.resolve("/shrink")
        assert (fd.meta.numPreAllocBlocks, fd.meta.numBlocks) == (0, 11)
        fs.close_file(fd.address, write=True)
        assert free_before - _free_blocks(vol) == 11
        assert _read(vol.volume, "/shrink") == data[: 10 * MIB + 1]
    rc, report = run_fsck(image, "-n")
    assert (rc, codes(report)) == (0, [])


def test_no_preallocation_without_an_open_handle(image: Path) -> None:
    with _writing(image) as (_vol, fs):
        fd = fs.create("/plain")
        _append(fs, fd.address, 20)
        fd = fs.resolve("/plain")
        assert (fd.meta.numPreAllocBlocks, fd.meta.numBlocks) == (0, 20)


def test_volume_nearly_full_keeps_space_for_others(image: Path) -> None:
    """Preallocation takes at most a quarter of what is free: a second file can still grow."""
    with _writing(image) as (vol, fs):
        fd = _open_new(fs, "/a")
        block = b"\x5a" * MIB
        for i in range(_free_blocks(vol) - 8):
            fs.write(fd.address, i * MIB, block)
        fd = fs.resolve("/a")
        assert fd.meta.numPreAllocBlocks <= max(0, (_free_blocks(vol) + fd.meta.numPreAllocBlocks) // 4)
        other = fs.create("/b")
        fs.write(other.address, 0, b"x" * (2 * MIB))
        fs.close_file(fd.address, write=True)
    rc, report = run_fsck(image, "-n")
    assert (rc, codes(report)) == (0, [])


@pytest.mark.oracle
def test_oracles_read_a_crash_image_with_a_run(image: Path, tmp_path: Path) -> None:
    """vmfs-tools reads the committed length and bytes of a file with preallocated blocks."""
    snapshot = tmp_path / "crashed.img"
    with _writing(image) as (vol, fs):
        fd = _open_new(fs, "/open")
        data = _append(fs, fd.address, 40)
        fs.fsync(fd.address)
        shutil.copyfile(image, snapshot)
        fs.close_file(fd.address, write=True)
    with Volume.open(snapshot) as vol:
        fd = FileSystem(vol).resolve("/open")
        assert fd.size == 40 * MIB and fd.meta.numPreAllocBlocks > 0
    out = subprocess.run(["debugvmfs", str(snapshot), "cat", "/open"], capture_output=True, check=True).stdout
    assert out == data


def test_removing_a_file_this_host_holds_open_keeps_it_until_last_close(image: Path) -> None:
    """POSIX: an unlinked (or renamed-over) open file outlives its name.  Freeing its FD at once
    would let the handle write the FD back over a freed or reused slot; the library moves the
    entry to a hidden name instead, in one transaction, and removes it at the last close."""
    from vmfs.volume.volume import Volume as _Volume
    from vmfs.write.posix import ORPHAN_PREFIX

    with _writing(image) as (vol, fs):
        fd = fs.create("/held")
        fs.write_file("/other", b"x")
        fs.open_file(fd.address, write=True)
        _append(fs, fd.address, 20)
        fs.unlink("/held")
        assert "held" not in [e.name for e in fs.listdir("/")]
        hidden = fs.hidden_names(vol.volume.root_address)
        assert len(hidden) == 1 and next(iter(hidden)).startswith(ORPHAN_PREFIX)
        fs.write(fd.address, 20 * MIB, b"still mine")
        assert vol.volume.reader(vol.volume.read_fd(fd.address)).read(20 * MIB, 10) == b"still mine"
        fs.create("/held")  # the name is free again
        fs.open_file(fs.resolve("/held").address, write=True)
        fs.rename("/other", "/held")  # over an open file: it too lives on, hidden
        assert len(fs.hidden_names(vol.volume.root_address)) == 2
        fs.close_file(fd.address, write=True)
        assert len(fs.hidden_names(vol.volume.root_address)) == 1
        fs.rename("/held", "/moved")
    with _Volume.open(image) as ro:
        names = [e.name for e in FileSystem(ro).listdir("/")]
        assert "moved" in names and not any(n.startswith(ORPHAN_PREFIX) for n in names)
    rc, report = run_fsck(image, "-n")
    assert (rc, codes(report)) == (0, [])
