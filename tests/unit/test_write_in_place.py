"""Writes inside a file this host holds open for writing, into blocks it owns, go to the device
without a transaction (``WritableFileSystem._write_in_place``), and leave exactly what the
transactional path leaves: the bytes, the deferred times, a clean fsck.  Everything else (a new
block, a to-be-zeroed block, growth, a file not open for writing, a host that lost its lease)
still takes the normal path: the tests count the transactions opened."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fsck import volumes
from tests.fsck.cases import codes, run_fsck
from vmfs.cluster.attachment import HostAttachment
from vmfs.errors import VolumeLostError
from vmfs.volume.namespace import FileSystem
from vmfs.volume.volume import Volume
from vmfs.write.posix import WritableFileSystem

MIB = 1 << 20


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return volumes.make_volume(tmp_path / "inplace.img")


def _read(image: Path, path: str) -> bytes:
    with Volume.open(image) as vol:
        fd = FileSystem(vol).resolve(path)
        return vol.reader(fd).read(0, fd.size)


def _counting(vol: HostAttachment) -> HostAttachment:
    """Count the transactions ``vol`` opens (a rewrite in place opens none; the transactional
    path opens one even when it ends up with nothing to commit)."""
    opened = vol.transaction
    vol.opened = 0  # type: ignore[attr-defined]

    def transaction():  # type: ignore[no-untyped-def]
        vol.opened += 1  # type: ignore[attr-defined]
        return opened()
    vol.transaction = transaction  # type: ignore[method-assign]
    return vol


def _opened(vol: HostAttachment) -> int:
    return vol.opened  # type: ignore[attr-defined,no-any-return]


def _new_open(fs: WritableFileSystem, path: str, data: bytes) -> int:
    """Create ``path``, hold it open for writing (as a VMDK or a FUSE handle does), write ``data``
    from offset 0; its FD address."""
    address = fs.create(path).address
    fs.open_file(address, write=True)
    fs.write(address, 0, data)
    return address


def test_rewrites_of_owned_blocks_need_no_transaction(image: Path) -> None:
    expected = bytearray(volumes.data(3 * MIB, 11))
    with HostAttachment.open(image, host=volumes.host()) as vol:
        fs = WritableFileSystem(_counting(vol))
        address = _new_open(fs, "/disk-flat.vmdk", bytes(expected))  # allocates: transactions
        before = _opened(vol)
        mtime = fs.resolve("/disk-flat.vmdk").meta.mtime
        for i, offset in enumerate((0, 4096, MIB - 100, 2 * MIB + 12345, 3 * MIB - 512)):
            chunk = volumes.data(700 + i * 1000, 20 + i)  # one crosses a block boundary
            chunk = chunk[: 3 * MIB - offset]
            fs.write(address, offset, chunk)
            expected[offset : offset + len(chunk)] = chunk
        assert _opened(vol) == before, "a rewrite inside owned blocks opened a transaction"
        assert vol.volume.reader(fs.resolve("/disk-flat.vmdk")).read(0, 3 * MIB) == bytes(expected)
        assert fs.resolve("/disk-flat.vmdk").meta.mtime >= mtime
        assert address in fs.deferred  # the times wait for the close, as a normal write's
        fs.close_file(address, write=True)
    assert _read(image, "/disk-flat.vmdk") == bytes(expected)
    rc, report = run_fsck(image, "-n")
    assert rc == 0, codes(report)


def test_everything_else_takes_the_transactional_path(image: Path) -> None:
    with HostAttachment.open(image, host=volumes.host()) as vol:
        fs = WritableFileSystem(_counting(vol))
        address = _new_open(fs, "/f", volumes.data(MIB, 1))
        for offset, size in ((MIB - 5, 10), (5 * MIB, 10)):  # across the end, past it (a hole)
            before = _opened(vol)
            fs.write(address, offset, b"x" * size)
            assert _opened(vol) > before, (offset, size)
        fs.close_file(address, write=True)

        lazy = fs.create("/lazy")  # thick, lazily zeroed: its blocks are TBZ until written
        fs.allocate(lazy.address, 2 * MIB, eager=False)
        fs.open_file(lazy.address, write=True)
        before = _opened(vol)
        fs.write(lazy.address, 100, b"y" * 10)
        assert _opened(vol) > before  # the block's TBZ flag is cleared in a transaction
        before = _opened(vol)
        fs.write(lazy.address, 200, b"z" * 10)
        assert _opened(vol) == before  # now it is an owned, zeroed block
        fs.close_file(lazy.address, write=True)

        closed = fs.resolve("/f")  # not open for writing: another host may hold it later
        before = _opened(vol)
        fs.write(closed.address, 0, b"w" * 10)
        assert _opened(vol) > before
    data = _read(image, "/lazy")
    assert data[100:110] == b"y" * 10 and data[200:210] == b"z" * 10 and data[:100] == bytes(100)
    rc, report = run_fsck(image, "-n")
    assert rc == 0, codes(report)


def test_a_host_that_lost_its_lease_writes_nothing_in_place(image: Path) -> None:
    with HostAttachment.open(image, host=volumes.host()) as vol:
        fs = WritableFileSystem(_counting(vol))
        address = _new_open(fs, "/f", volumes.data(MIB, 2))
        vol.heartbeat._lost = "test: the lease ran out"
        with pytest.raises(VolumeLostError):
            fs.write(address, 0, b"late")
        vol.heartbeat._lost = None
        fs.close_file(address, write=True)
    assert _read(image, "/f")[:4] == volumes.data(MIB, 2)[:4]


# -- the two paths give the same file ------------------------------------------------------------------

write_ops = st.lists(st.tuples(st.integers(0, 5 * MIB), st.integers(1, 300_000), st.integers(0, 255)),
                     min_size=1, max_size=12)


def _replay(image: Path, ops: list[tuple[int, int, int]], *, in_place: bool) -> bytes:
    with HostAttachment.open(image, host=volumes.host()) as vol:
        fs = WritableFileSystem(vol)
        if not in_place:
            fs._write_in_place = lambda *_args: False  # type: ignore[method-assign]
        fd = fs.resolve("/disk")
        fs.open_file(fd.address, write=True)
        for offset, size, byte in ops:
            fs.write(fd.address, offset, bytes([byte]) * size)
        fs.close_file(fd.address, write=True)
    return _read(image, "/disk")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(write_ops)
def test_in_place_and_transactional_writes_leave_the_same_file(tmp_path: Path, ops: list[tuple[int, int, int]]) -> None:
    """Random writes (inside owned blocks, over TBZ blocks, across the end, into holes past it) on
    a lazily zeroed 3 MiB file: the file reads the same whichever path each write took, and
    both volumes check clean."""
    results = []
    for in_place in (True, False):
        image = tmp_path / f"{in_place}.img"
        image.unlink(missing_ok=True)
        volumes.make_volume(image)
        with HostAttachment.open(image, host=volumes.host()) as vol:
            fs = WritableFileSystem(vol)
            fd = fs.create("/disk")
            fs.allocate(fd.address, 3 * MIB, eager=False)
            fs.open_file(fd.address, write=True)
            fs.write(fd.address, MIB, volumes.data(MIB, 3))  # one block owned and written, two TBZ
            fs.close_file(fd.address, write=True)
        results.append(_replay(image, ops, in_place=in_place))
        rc, report = run_fsck(image, "-n")
        assert rc == 0, codes(report)
    assert results[0] == results[1]
