"""Bad input gives a typed error and writes nothing (item 5 of the brief, section 9.3's checks).

Each case damages one structure of a disk we made, then tries to read and to write.  Both must
raise the expected :class:`VmdkError` subclass, and every byte of every file must be unchanged
afterwards (no CID update, no unclean flag, no grain).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path

import pytest
from construct import Int32ul, Int64ul
from vmdk_helpers import MIB, snapshot_files

from vmfs.vmdk import chain, ops
from vmfs.vmdk.cowd import CowdHeader
from vmfs.vmdk.descriptor import Descriptor
from vmfs.vmdk.disk import open_disk
from vmfs.vmdk.errors import (
    ChainError,
    CorruptError,
    MissingExtentError,
    NotVmdkError,
    UnsupportedError,
    VmdkError,
)
from vmfs.vmdk.sesparse import SeSparseConstHeader, SeSparseVolatileHeader
from vmfs.vmdk.sparse import SparseHeader
from vmfs.vmdk.storage import HostStorage


def _poke(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as fh:
        fh.seek(offset)
        fh.write(data)


def _fill(storage: HostStorage, name: str, ranges: list[tuple[int, int]]) -> None:
    disk = open_disk(storage, name, writable=True)
    try:
        for offset, length in ranges:
            disk.pwrite(offset, bytes([0x40 + offset % 97]) * length)
    finally:
        disk.close()


def _kdmv_header(path: Path):  # type: ignore[no-untyped-def]
    return SparseHeader.parse(path.read_bytes()[:512])


def _attempt(storage: HostStorage, name: str, error: type[VmdkError], tmp_path: Path, offset: int = 0) -> None:
    """Reading and writing ``name`` both fail with ``error``; no file changes."""
    before = snapshot_files(tmp_path)
    with pytest.raises(error) as info:
        disk = open_disk(storage, name)
        try:
            disk.pread(0, disk.size)
        finally:
            disk.close()
    assert isinstance(info.value.errno, int) and info.value.errno > 0
    assert str(info.value)  # a message that names something
    with pytest.raises(error):
        disk = open_disk(storage, name, writable=True)
        try:
            disk.pwrite(offset, b"\xee" * (3 * 64 * 1024 + 512))
        finally:
            disk.close()
    assert snapshot_files(tmp_path) == before


# --- hosted sparse -----------------------------------------------------------------------------------


def _sparse_disk(storage: HostStorage) -> None:
    ops.create_disk(storage, "d.vmdk", 64 * MIB, "monolithicSparse")  # two grain tables
    _fill(storage, "d.vmdk", [(0, 200 * 1024), (40 * MIB, 64 * 1024)])


def test_sparse_truncated_grain_table(storage: HostStorage, tmp_path: Path) -> None:
    _sparse_disk(storage)
    path = tmp_path / "d.vmdk"
    h = _kdmv_header(path)
    end_sector = path.stat().st_size // 512
    for gd in (h.gd_offset, h.rgd_offset):  # GT 1 now starts 2 sectors before the end of the file
        _poke(path, gd * 512 + 4, Int32ul.build(end_sector - 2))
    _attempt(storage, "d.vmdk", CorruptError, tmp_path, offset=40 * MIB)
    # a write that starts in the healthy GT 0 and ends in the damaged GT 1 writes nothing either
    before = snapshot_files(tmp_path)
    disk = open_disk(storage, "d.vmdk", writable=True)
    with pytest.raises(CorruptError, match="truncated"):
        disk.pwrite(32 * MIB - 4096, b"\x01" * 8192)
    disk.close()
    assert snapshot_files(tmp_path) == before


def test_sparse_grain_pointer_beyond_file(storage: HostStorage, tmp_path: Path) -> None:
    _sparse_disk(storage)
    path = tmp_path / "d.vmdk"
    h = _kdmv_header(path)
    gd = path.read_bytes()[h.gd_offset * 512 : h.gd_offset * 512 + 4]
    gt0 = Int32ul.parse(gd)
    _poke(path, gt0 * 512 + 4, Int32ul.build(0x7FFFFFF0))  # grain 1
    with pytest.raises(CorruptError, match="beyond the end of the file"):
        disk = open_disk(storage, "d.vmdk")
        disk.pread(0, 4096)
    _attempt(storage, "d.vmdk", CorruptError, tmp_path)


def test_sparse_truncated_file_header(storage: HostStorage, tmp_path: Path) -> None:
    (tmp_path / "d.vmdk").write_bytes(b"KDMV" + bytes(100))
    _attempt(storage, "d.vmdk", CorruptError, tmp_path)


def test_sparse_unknown_incompatible_flag(storage: HostStorage, tmp_path: Path) -> None:
    _sparse_disk(storage)
    path = tmp_path / "d.vmdk"
    h = _kdmv_header(path)
    _poke(path, 8, Int32ul.build(h.flags | 0x00400000))
    _attempt(storage, "d.vmdk", UnsupportedError, tmp_path)


def test_sparse_version_4(storage: HostStorage, tmp_path: Path) -> None:
    _sparse_disk(storage)
    _poke(tmp_path / "d.vmdk", 4, Int32ul.build(4))
    _attempt(storage, "d.vmdk", UnsupportedError, tmp_path)


def test_sparse_directory_beyond_file(storage: HostStorage, tmp_path: Path) -> None:
    _sparse_disk(storage)
    _poke(tmp_path / "d.vmdk", 56, Int64ul.build(1 << 30))  # gdOffset
    _attempt(storage, "d.vmdk", CorruptError, tmp_path)


# --- stream-optimized ------------------------------------------------------------------------------


def _stream(storage: HostStorage, tmp_path: Path) -> Path:
    ops.create_disk(storage, "s.vmdk", 4 * MIB, "thin")
    _fill(storage, "s.vmdk", [(0, 300 * 1024), (3 * MIB, 4096)])
    ops.clone_disk(storage, "s.vmdk", storage, "d.vmdk", "streamOptimized")
    return tmp_path / "d.vmdk"


def test_stream_missing_footer(storage: HostStorage, tmp_path: Path) -> None:
    path = _stream(storage, tmp_path)
    with path.open("r+b") as fh:
        fh.truncate(path.stat().st_size - 512)
    _attempt(storage, "d.vmdk", CorruptError, tmp_path)


def test_stream_bad_compressed_grain(storage: HostStorage, tmp_path: Path) -> None:
    path = _stream(storage, tmp_path)
    h = _kdmv_header(path)
    first = h.overhead * 512  # first grain record: lba, size, zlib data
    _poke(path, first + 12, b"\x00\x01\x02\x03")
    before = snapshot_files(tmp_path)
    disk = open_disk(storage, "d.vmdk")
    with pytest.raises(CorruptError, match="deflate"):
        disk.pread(0, 4096)
    disk.close()
    assert snapshot_files(tmp_path) == before


def test_stream_record_for_wrong_sector(storage: HostStorage, tmp_path: Path) -> None:
    path = _stream(storage, tmp_path)
    h = _kdmv_header(path)
    _poke(path, h.overhead * 512, Int64ul.build(4096))
    disk = open_disk(storage, "d.vmdk")
    with pytest.raises(CorruptError, match="record is for sector 4096"):
        disk.pread(0, 512)
    disk.close()


# --- COWD ---------------------------------------------------------------------------------------------


def _cowd_chain(storage: HostStorage) -> str:
    ops.create_disk(storage, "b.vmdk", 8 * MIB, "thin")
    _fill(storage, "b.vmdk", [(0, 8 * MIB)])
    leaf = chain.create_snapshot(storage, "b.vmdk", delta_format="vmfsSparse")
    _fill(storage, leaf, [(5 * MIB, 9000)])
    return leaf


def test_cowd_truncated_grain_table(storage: HostStorage, tmp_path: Path) -> None:
    leaf = _cowd_chain(storage)
    delta = tmp_path / "b-000001-delta.vmdk"
    with delta.open("r+b") as fh:  # the GT was appended last: cut its final sector
        fh.truncate(delta.stat().st_size - 512)
    _attempt(storage, leaf, CorruptError, tmp_path, offset=5 * MIB)


def test_cowd_grain_pointer_beyond_file(storage: HostStorage, tmp_path: Path) -> None:
    leaf = _cowd_chain(storage)
    delta = tmp_path / "b-000001-delta.vmdk"
    raw = delta.read_bytes()
    gt = Int32ul.parse(raw[2048 + 4 * 2 : 2048 + 4 * 3])  # GD entry 2 covers 4..6 MiB
    _poke(delta, gt * 512 + 4 * 100, Int32ul.build(0x10000000))
    _attempt(storage, leaf, CorruptError, tmp_path, offset=5 * MIB)


def test_cowd_directory_too_small(storage: HostStorage, tmp_path: Path) -> None:
    leaf = _cowd_chain(storage)
    delta = tmp_path / "b-000001-delta.vmdk"
    h = CowdHeader.parse(delta.read_bytes()[:2048])
    _poke(delta, 24, Int32ul.build(h.num_gd_entries - 1))
    _attempt(storage, leaf, CorruptError, tmp_path)


def test_cowd_opened_without_descriptor(storage: HostStorage, tmp_path: Path) -> None:
    _cowd_chain(storage)
    with pytest.raises(NotVmdkError, match="descriptor"):
        open_disk(storage, "b-000001-delta.vmdk")


# --- seSparse -----------------------------------------------------------------------------------------


def _sesparse_chain(storage: HostStorage) -> str:
    ops.create_disk(storage, "b.vmdk", 8 * MIB, "thin")
    _fill(storage, "b.vmdk", [(0, 8 * MIB)])
    leaf = chain.create_snapshot(storage, "b.vmdk", delta_format="seSparse")
    _fill(storage, leaf, [(5 * MIB, 9000)])
    return leaf


def _se_header(path: Path):  # type: ignore[no-untyped-def]
    return SeSparseConstHeader.parse(path.read_bytes()[:512])


def test_sesparse_grain_pointer_beyond_file(storage: HostStorage, tmp_path: Path) -> None:
    leaf = _sesparse_chain(storage)
    delta = tmp_path / "b-000001-sesparse.vmdk"
    h = _se_header(delta)
    gt = h.grain_tables_offset  # the only GT is pool index 0
    grain = (5 * MIB) // 4096
    _poke(delta, gt * 512 + grain * 8, Int64ul.build(0x3000000000000000 | 0x0000_0100_0000_0000))
    _attempt(storage, leaf, CorruptError, tmp_path, offset=5 * MIB)


def test_sesparse_malformed_directory_entry(storage: HostStorage, tmp_path: Path) -> None:
    leaf = _sesparse_chain(storage)
    delta = tmp_path / "b-000001-sesparse.vmdk"
    h = _se_header(delta)
    _poke(delta, h.grain_dir_offset * 512, Int64ul.build(0x2000000000000000))
    _attempt(storage, leaf, CorruptError, tmp_path)


def test_sesparse_truncated_grain_table(storage: HostStorage, tmp_path: Path) -> None:
    leaf = _sesparse_chain(storage)
    delta = tmp_path / "b-000001-sesparse.vmdk"
    h = _se_header(delta)
    _poke(delta, h.grain_dir_offset * 512, Int64ul.build(0x1000000000000000 | 100000))
    _attempt(storage, leaf, CorruptError, tmp_path)


def test_sesparse_journal_needs_replay(storage: HostStorage, tmp_path: Path) -> None:
    leaf = _sesparse_chain(storage)
    delta = tmp_path / "b-000001-sesparse.vmdk"
    h = _se_header(delta)
    v = SeSparseVolatileHeader.parse(delta.read_bytes()[h.volatile_header_offset * 512 :][:512])
    v.replay_journal = 1
    _poke(delta, h.volatile_header_offset * 512, SeSparseVolatileHeader.build(v))
    _attempt(storage, leaf, UnsupportedError, tmp_path)


# --- descriptors and chains ---------------------------------------------------------------------------


@pytest.mark.parametrize("disk_format", ["thin", "twoGbMaxExtentSparse", "monolithicFlat"])
def test_missing_extent(storage: HostStorage, tmp_path: Path, disk_format: str) -> None:
    ops.create_disk(storage, "d.vmdk", 4 * MIB, disk_format)
    extent = next(p for p in tmp_path.iterdir() if p.name != "d.vmdk")
    extent.unlink()
    _attempt(storage, "d.vmdk", MissingExtentError, tmp_path)
    with pytest.raises(MissingExtentError) as info:
        open_disk(storage, "d.vmdk")
    assert info.value.errno == errno.ENOENT
    assert extent.name in str(info.value)


@pytest.mark.parametrize("delta_format", ["vmfsSparse", "seSparse", "monolithicSparse"])
def test_cid_mismatch_refused(storage: HostStorage, tmp_path: Path, delta_format: str) -> None:
    base_format = "monolithicSparse" if delta_format == "monolithicSparse" else "thin"
    ops.create_disk(storage, "b.vmdk", 4 * MIB, base_format)
    _fill(storage, "b.vmdk", [(0, MIB)])
    leaf = chain.create_snapshot(storage, "b.vmdk", delta_format=delta_format)
    _fill(storage, leaf, [(MIB, 4096)])
    _fill(storage, "b.vmdk", [(2 * MIB, 4096)])  # the parent changes after the child was made: new CID
    _attempt(storage, leaf, ChainError, tmp_path)
    with pytest.raises(ChainError, match="modified after the child was created"):
        open_disk(storage, leaf)
    for op in (chain.create_snapshot, chain.revert_snapshot, chain.delete_snapshot):
        before = snapshot_files(tmp_path)
        with pytest.raises(ChainError):
            op(storage, leaf)
        assert snapshot_files(tmp_path) == before
    disk = open_disk(storage, leaf, check_cid=False)  # recovery: the caller accepts the risk
    disk.close()


def test_missing_parent(storage: HostStorage, tmp_path: Path) -> None:
    ops.create_disk(storage, "b.vmdk", 4 * MIB, "thin")
    leaf = chain.create_snapshot(storage, "b.vmdk")
    desc = Descriptor.parse((tmp_path / leaf).read_bytes())
    desc.parent_hint = "gone.vmdk"
    (tmp_path / leaf).write_bytes(desc.to_bytes())
    _attempt(storage, leaf, MissingExtentError, tmp_path)


def test_parent_loop(storage: HostStorage, tmp_path: Path) -> None:
    ops.create_disk(storage, "b.vmdk", 4 * MIB, "thin")
    leaf = chain.create_snapshot(storage, "b.vmdk")
    desc = Descriptor.parse((tmp_path / leaf).read_bytes())
    desc.parent_hint = leaf
    desc.parent_cid = desc.cid
    (tmp_path / leaf).write_bytes(desc.to_bytes())
    _attempt(storage, leaf, ChainError, tmp_path)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"just some text\n", id="text"),
        pytest.param(bytes(4096), id="zeros"),
        pytest.param(b"version=1\nCID=zzzz\n", id="bad-cid"),
    ],
)
def test_not_a_disk(storage: HostStorage, tmp_path: Path, content: bytes) -> None:
    (tmp_path / "x.vmdk").write_bytes(content)
    with pytest.raises((NotVmdkError, CorruptError)):
        open_disk(storage, "x.vmdk")


def test_failed_write_leaves_no_unclean_flag(storage: HostStorage, tmp_path: Path) -> None:
    """A good write marks the file unclean only while open; close clears it."""
    ops.create_disk(storage, "d.vmdk", 4 * MIB, "monolithicSparse")
    disk = open_disk(storage, "d.vmdk", writable=True)
    disk.pwrite(0, b"x" * 4096)
    assert _kdmv_header(tmp_path / "d.vmdk").unclean_shutdown == 1
    disk.close()
    assert _kdmv_header(tmp_path / "d.vmdk").unclean_shutdown == 0


def test_unclean_flag_reported(storage: HostStorage, tmp_path: Path) -> None:
    ops.create_disk(storage, "d.vmdk", 4 * MIB, "monolithicSparse")
    _poke(tmp_path / "d.vmdk", 72, b"\x01")
    disk = open_disk(storage, "d.vmdk")
    assert disk.top.unclean
    assert disk.info()["chain"][0]["extents"][0]["unclean"]
    disk.close()


def _all_errors() -> list[type[VmdkError]]:
    seen: list[type[VmdkError]] = []
    todo: list[type[VmdkError]] = [VmdkError]
    while todo:
        cls = todo.pop()
        seen.append(cls)
        todo += cls.__subclasses__()
    return seen


@pytest.mark.parametrize("cls", _all_errors(), ids=lambda c: c.__name__)
def test_every_error_has_an_errno(cls: Callable[..., VmdkError]) -> None:
    exc = cls("f", "s", "p") if cls is CorruptError else cls("message")
    assert isinstance(exc.errno, int) and exc.errno > 0
    assert str(exc)
