"""Writing VMFS6: what our read-write mount writes reads back identically through vmfs6-tools'
vmfs6-fuse, dissect.vmfs and our read-only mount, on a volume vmfs-mkfs made and in a copy of the
real ESXi sample; hashed directories of thousands of entries; the full sample answers ENOSPC."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests import oracles
from tests.conftest import Mount, copy_image, tool
from tests.helpers import capture_mount, diff_trees
from vmfs.cluster.attachment import HostAttachment
from vmfs.errors import UnsupportedError
from vmfs.mkfs.layout6 import DATA_OFFSET
from vmfs.ondisk import resource as R
from vmfs.volume.directory import open_directory
from vmfs.volume.volume import Volume
from vmfs.write.posix import WritableFileSystem

pytestmark = [pytest.mark.oracle]

MIB = 1 << 20


def _mkfs6(path: Path, size: str = "2G") -> Path:
    r = subprocess.run([tool("vmfs-mkfs"), "-t", "vmfs6", "--size", size, "-L", "w6", str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return path


def _pattern(seed: int, size: int) -> bytes:
    out = bytearray()
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


def _fsck_clean(image: Path) -> str:
    r = subprocess.run([tool("vmfs-fsck"), "-n", str(image)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def _three_views(image: Path, tmp: Path, holes: dict[str, int] | None = None) -> dict:
    """Our read-only mount, vmfs6-fuse and dissect.vmfs must agree entry for entry.

    ``holes``: files with a hole (a null block pointer) at that offset.  vmfs6-fuse reads every
    block after a file's first hole as zeros (docs/SPEC.md, oracle bugs): for those files it is
    checked up to the hole, and for reading zeros after it (so the test notices a fixed oracle);
    dissect.vmfs checks their whole content."""
    holes = holes or {}
    with Mount([tool("vmfs-mount"), str(image), str(tmp / "ro")], tmp / "ro") as root:
        ours = capture_mount(root)
        mine = {p: (Path(root) / p.lstrip("/")).read_bytes() for p in holes}
    with oracles.OracleMount("vmfs6-fuse", [image], tmp / "oracle") as root:
        theirs = capture_mount(root, skip_content=frozenset(holes))
        for path, at in holes.items():
            data = (Path(root) / path.lstrip("/")).read_bytes()
            assert data[:at] == mine[path][:at], path
            assert data[at:] == bytes(len(data) - at) != mine[path][at:], f"{path}: the vmfs6-fuse hole bug is gone"
    assert diff_trees({p: {k: v for k, v in r.items() if not (p in holes and k == "sha256")} for p, r in ours.items()},
                      theirs) == []
    assert diff_trees(ours, oracles.dissect_tree([image])) == []
    return ours


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.fuse
def test_posix_operations_through_the_rw_mount(tmp_path: Path) -> None:
    """Every write operation of the VMFS5 mount, on VMFS6, across every address mode: resident
    (up to 3584 bytes), sub-blocks of 64 KiB (up to 1 MiB), small file blocks of 1 MiB."""
    image = _mkfs6(tmp_path / "v6.img")
    expect: dict[str, bytes] = {}
    with Mount([tool("vmfs-mount"), "-f", "-o", "rw", str(image), str(tmp_path / "rw")], tmp_path / "rw") as root:
        r = Path(root)
        sizes = {"resident": 100, "edge": 3584, "one-sb": 40_000, "multi-sb": 600_000, "sfb": 3 * MIB + 17}
        (r / "d1").mkdir()
        (r / "d2" / "deep").mkdir(parents=True)
        for i, (name, size) in enumerate(sizes.items()):
            data = _pattern(i, size)
            (r / "d1" / name).write_bytes(data)
            expect[f"/d1/{name}"] = data
        # truncate down through every mode, and up again (the grown tail reads as zeros)
        f = r / "d1" / "shrinks"
        f.write_bytes(_pattern(9, 3 * MIB))
        for size in (700_000, 50_000, 2000, 0):
            os.truncate(f, size)
        os.truncate(f, 1_500_000)
        expect["/d1/shrinks"] = bytes(1_500_000)
        # overwrite in the middle, append, sparse write far out
        g = r / "d1" / "edited"
        g.write_bytes(_pattern(10, 200_000))
        with open(g, "r+b") as fh:
            fh.seek(100_000)
            fh.write(b"MIDDLE")
            fh.seek(0, 2)
            fh.write(b"APPENDED")
        data = bytearray(_pattern(10, 200_000))
        data[100_000:100_006] = b"MIDDLE"
        expect["/d1/edited"] = bytes(data) + b"APPENDED"
        with open(r / "d1" / "sparse", "wb") as fh:
            fh.seek(5 * MIB)
            fh.write(b"far out")
        expect["/d1/sparse"] = bytes(5 * MIB) + b"far out"
        # punch a hole in the file-block file
        h = r / "d1" / "sfb"
        fd = os.open(h, os.O_RDWR)
        try:
            libc_punch(fd, MIB, MIB)
        finally:
            os.close(fd)
        d = bytearray(expect["/d1/sfb"])
        d[MIB : 2 * MIB] = bytes(MIB)
        expect["/d1/sfb"] = bytes(d)
        # renames: within, across, onto an existing name; symlink; unlink; rmdir
        os.rename(r / "d1" / "resident", r / "d1" / "resident-renamed")
        expect["/d1/resident-renamed"] = expect.pop("/d1/resident")
        os.rename(r / "d1" / "one-sb", r / "d2" / "deep" / "moved")
        expect["/d2/deep/moved"] = expect.pop("/d1/one-sb")
        os.rename(r / "d1" / "edge", r / "d1" / "multi-sb")
        expect["/d1/multi-sb"] = expect.pop("/d1/edge")
        os.rename(r / "d2" / "deep", r / "d1" / "deep")
        expect = {k.replace("/d2/deep/", "/d1/deep/"): v for k, v in expect.items()}
        os.symlink("../d1/multi-sb", r / "d2" / "link")
        (r / "gone").write_bytes(b"x" * 5000)
        os.unlink(r / "gone")
        (r / "empty").mkdir()
        os.rmdir(r / "empty")
        # metadata
        os.chmod(r / "d1" / "sfb", 0o640)
        os.chown(r / "d1" / "sfb", 1234, 5678)
        os.utime(r / "d1" / "sparse", (1_600_000_000, 1_500_000_000))
        with pytest.raises(OSError) as exc:
            (r / ("n" * 128)).write_bytes(b"")
        assert exc.value.errno == errno.ENAMETOOLONG
    ours = _three_views(image, tmp_path, holes={"/d1/sfb": MIB, "/d1/sparse": 0})
    for path, data in expect.items():
        assert ours[path]["size"] == len(data), path
        assert ours[path]["sha256"] == _sha(data), path
    assert ours["/d2/link"]["target"] == "../d1/multi-sb"
    assert stat.S_IMODE(ours["/d1/sfb"]["mode"]) == 0o640
    assert (ours["/d1/sfb"]["uid"], ours["/d1/sfb"]["gid"]) == (1234, 5678)
    assert ours["/d1/sparse"]["mtime"] == 1_500_000_000
    assert "/gone" not in ours and "/empty" not in ours and "/d2/deep" not in ours
    # debugvmfs6 cats every file without a hole identically (it shares vmfs6-fuse's hole bug)
    for path, data in expect.items():
        if path not in ("/d1/sfb", "/d1/sparse"):
            assert oracles.debugvmfs_cat([image], path, prog="debugvmfs6") == data, f"debugvmfs6 cat {path}"
    _fsck_clean(image)
    with Volume.open([image]) as vol:
        modes = {name: vol.read_fd(_address(vol, f"/d1/{name}")).meta.zla
                 for name in ("resident-renamed", "multi-sb", "sfb", "shrinks")}
    assert modes == {"resident-renamed": 4305, "multi-sb": 4305, "sfb": 1, "shrinks": 1}


def libc_punch(fd: int, offset: int, length: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 1, 2
    if libc.fallocate(fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, ctypes.c_long(offset), ctypes.c_long(length)):
        raise OSError(ctypes.get_errno(), "fallocate")


def _address(vol: Volume, path: str) -> int:
    from vmfs.volume.namespace import FileSystem

    return FileSystem(vol).resolve(path).address


@pytest.mark.slow
def test_directory_of_5000_entries(tmp_path: Path) -> None:
    """Thousands of names in one hashed directory: blocks appended, hash collisions chained in
    link groups, entries removed and renamed; every reader finds exactly the survivors."""
    image = _mkfs6(tmp_path / "many.img", "4G")
    with HostAttachment.open(image) as att:
        fs = WritableFileSystem(att)
        fs.mkdir("/many")
        for i in range(5000):
            fs.write_file(f"/many/file-{i:05d}", str(i).encode())
        for i in range(0, 5000, 7):
            fs.unlink(f"/many/file-{i:05d}")
        for i in range(1, 5000, 11):
            if i % 7:
                fs.rename(f"/many/file-{i:05d}", f"/many/moved-{i:05d}")
    expect = {}
    for i in range(5000):
        if i % 7:
            expect[f"/many/{'moved' if i % 11 == 1 else 'file'}-{i:05d}"] = _sha(str(i).encode())
    with Volume.open([image]) as vol:
        d = open_directory(vol, vol.read_fd(_address(vol, "/many")))
        assert d.num_blocks > 300  # 4286 entries, 14 per block, plus link blocks
        links = sum(1 for _, nibble in d.block_types() if nibble & 3 == 2)
    assert links >= 1  # collisions happened and went through link groups
    theirs = oracles.dissect_tree([image])
    assert {p: r["sha256"] for p, r in theirs.items() if p.startswith("/many/")} == expect
    with oracles.OracleMount("vmfs6-fuse", [image], tmp_path / "oracle") as root:
        listed = set(os.listdir(Path(root) / "many"))
        assert (Path(root) / "many" / "moved-00012").read_bytes() == b"12"
    assert {f"/many/{n}" for n in listed} == set(expect)
    out = _fsck_clean(image)
    assert "4295/16384 files" in out


@pytest.mark.fuse
def test_writes_into_the_real_sample(vmfs6_image: Path, tmp_path: Path) -> None:
    """The ESXi sample has no free file block: resident and sub-block files fit, a file that needs
    a file block gets ENOSPC and leaves the volume consistent."""
    image = copy_image(vmfs6_image, tmp_path / "sample.img")
    before = _three_views(image, tmp_path / "before")
    with Mount([tool("vmfs-mount"), "-f", "-o", "rw", str(image), str(tmp_path / "rw")], tmp_path / "rw") as root:
        r = Path(root)
        (r / "resident").write_bytes(b"resident data\n" * 20)
        (r / "directory" / "sub-blocks").write_bytes(_pattern(1, 900_000))
        (r / "new-dir").mkdir()
        (r / "new-dir" / "small").write_bytes(b"s" * 3000)
        with pytest.raises(OSError) as exc:
            (r / "directory" / "needs-a-block").write_bytes(_pattern(2, 2 * MIB))
        assert exc.value.errno == errno.ENOSPC
        os.unlink(r / "directory" / "needs-a-block")
        st = os.statvfs(r)
        assert st.f_bfree == 0
    after = _three_views(image, tmp_path / "after")
    assert after["/resident"]["sha256"] == _sha(b"resident data\n" * 20)
    assert after["/directory/sub-blocks"]["sha256"] == _sha(_pattern(1, 900_000))
    assert after["/new-dir/small"]["sha256"] == _sha(b"s" * 3000)
    for path, rec in before.items():  # the sample's own files are untouched (system files change)
        if stat.S_ISREG(rec["mode"]) and not path.startswith("/."):
            assert after[path]["sha256"] == rec["sha256"], path
    _fsck_clean(image)


def test_unconverted_large_file_blocks_are_refused(tmp_path: Path) -> None:
    """A VMFS6 volume with an LFB not converted into small blocks (any large ESXi datastore) is
    not written: the state of a free LFB is unknown (vmfs-format.md 6.4)."""
    image = _mkfs6(tmp_path / "v6.img")
    with Volume.open([image]) as vol:
        sfb = vol.resources[R.RES_FB]
        # the SFB child header's convertedClusters; the image holds 17 MiB of LVM first
        where = DATA_OFFSET + sfb.reader.volume_offset(sfb.header_offset) + 0x54
    with open(image, "r+b") as f:
        f.seek(where)
        f.write((3).to_bytes(4, "little"))  # 3 of 4 converted
    with pytest.raises(UnsupportedError, match="1 of its 4 large file blocks are not converted"):
        HostAttachment.open(image)
    (tmp_path / "m").mkdir()
    r = subprocess.run([tool("vmfs-mount"), "-o", "rw", str(image), str(tmp_path / "m")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "not converted" in r.stderr and "Traceback" not in r.stderr


def _mkfs6_args(path: Path, *args: str) -> Path:
    r = subprocess.run([tool("vmfs-mkfs"), "-t", "vmfs6", *args, str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return path


@pytest.mark.fuse
def test_big_and_sparse_files_through_sub_block_pointer_blocks(tmp_path: Path) -> None:
    """Past 320 MiB a file maps its blocks through pointer blocks, which VMFS6 keeps in 64 KiB
    sub-blocks (.pbc.sf stays empty, as ESXi formats it): a 330 MiB file, then a byte at 70 GiB
    (a sparse extent of more than 64 GiB)."""
    image = _mkfs6(tmp_path / "v6.img", "2G")
    chunk = bytes(range(256)) * 4096
    with HostAttachment.open(image) as att:
        fs = WritableFileSystem(att)
        fd = fs.create("/big")
        for i in range(330):
            fs.write(fd.address, i * MIB, chunk)
        fs.write(fd.address, 70 << 30, b"far out")
    with Volume.open([image]) as vol:
        big = vol.read_fd(_address(vol, "/big"))
        assert big.meta.zla == 3 and big.size == (70 << 30) + 7
        assert {p & 7 for p in big.pointers if p} == {2}  # SB addresses
        assert vol.resources[R.RES_PB].num_resources == 0
    from dissect.vmfs import lvm, vmfs

    with open(image, "rb") as fh:
        f = vmfs.VMFS(lvm.LVM([fh]).volumes[0].open()).get("/big").open()
        for at in (0, 100 * MIB, 329 * MIB):
            f.seek(at)
            assert f.read(MIB) == chunk, at
        f.seek(70 << 30)
        assert f.read(7) == b"far out"
        f.seek(1 << 30)
        assert f.read(MIB) == bytes(MIB)
    with oracles.OracleMount("vmfs6-fuse", [image], tmp_path / "oracle") as root, open(Path(root) / "big", "rb") as g:
        for at in (0, 100 * MIB, 329 * MIB):  # before the hole (its hole bug, see above)
            g.seek(at)
            assert g.read(MIB) == chunk, at
    with Mount([tool("vmfs-mount"), str(image), str(tmp_path / "ro")], tmp_path / "ro") as root, \
            open(Path(root) / "big", "rb") as g:
        g.seek(70 << 30)
        assert g.read(7) == b"far out"
    _fsck_clean(image)


def test_resource_files_grow(tmp_path: Path) -> None:
    """Out of FDs or sub-blocks, a VMFS6 writer adds a cluster group to the resource file (in the
    transaction that needed it); every reader sees the grown files and what is in them."""
    image = _mkfs6_args(tmp_path / "v6.img", "--size", "4G", "--files", "300", "--sub-blocks", "300")
    with Volume.open([image]) as vol:
        before = {k: vol.resources[k].num_resources for k in (R.RES_FD, R.RES_SB)}
    assert before == {R.RES_FD: 300, R.RES_SB: 300}
    with HostAttachment.open(image) as att:
        fs = WritableFileSystem(att)
        for d in range(2):
            fs.mkdir(f"/d{d}")
            for i in range(350):
                fs.write_file(f"/d{d}/f{i}", _pattern(i, 5000))  # one sub-block each
    with Volume.open([image]) as vol:
        after = {k: vol.resources[k].num_resources for k in (R.RES_FD, R.RES_SB)}
        assert vol.resources[R.RES_FD].usage() == (4096, 4096 - 711)
    assert after == {R.RES_FD: 4096, R.RES_SB: 4096}  # one cluster group more: 2 x 8 x 256
    fdc = oracles.debugvmfs_show([image], "fdc", prog="debugvmfs6", require=("Total items",))
    assert int(fdc["Total items"]) == 4096
    theirs = oracles.dissect_tree([image])
    for d in range(2):
        for i in (0, 299, 349):
            assert theirs[f"/d{d}/f{i}"]["sha256"] == _sha(_pattern(i, 5000))
    assert sum(p.startswith("/d") and p.count("/") == 2 for p in theirs) == 700
    _fsck_clean(image)


def test_sub_blocks_grow_through_their_pb2(tmp_path: Path) -> None:
    """A .sbc.sf past an FD's 320 direct pointers is mapped through a PB2 (as on the sample);
    growing it appends the new blocks to the PB2, and readers see them at once."""
    image = _mkfs6_args(tmp_path / "v6.img", "--size", "3G", "--sub-blocks", "5200")
    with Volume.open([image]) as vol:
        sbc = vol.resources[R.RES_SB]
        assert (sbc.fd.meta.zla, sbc.num_resources) == (5, 5200)
    with HostAttachment.open(image) as att:
        fs = WritableFileSystem(att)
        for i in range(340):  # 16 sub-blocks each (files up to 1 MiB stay in sub-blocks)
            fs.write_file(f"/f{i}", bytes([i % 256]) * MIB)
    with Volume.open([image]) as vol:
        sbc = vol.resources[R.RES_SB]
        assert (sbc.fd.meta.zla, sbc.num_resources, sbc.fd.meta.numBlocks) == (5, 8192, 513)
    from dissect.vmfs import lvm, vmfs

    with open(image, "rb") as fh:
        dfs = vmfs.VMFS(lvm.LVM([fh]).volumes[0].open())
        assert all(dfs.get(f"/f{i}").open().read() == bytes([i % 256]) * MIB for i in range(0, 340, 13))
    assert "5440/8192 sub-blocks" in _fsck_clean(image)


@pytest.mark.slow
def test_the_16385th_file(tmp_path: Path) -> None:
    """The issue's own words: 16,384 FDs at format, more when they run out.  16,385 files of one
    sub-block each also grow .sbc.sf past its 16,384 sub-blocks, through the PB2 that maps it.
    The first 16,000 files are made without the journal (half the time: they only fill the
    tables); the last ones, whose creates grow both, go through journaled transactions, as a
    mount makes them."""
    image = _mkfs6(tmp_path / "v6.img", "3G")
    with Volume.open([image]) as vol:
        assert vol.resources[R.RES_FD].num_resources == 16384
        assert vol.resources[R.RES_SB].fd.meta.zla == 5
    filling = 16000
    with HostAttachment.open(image, journaling=False) as att:
        fs = WritableFileSystem(att)
        for d in range(17):
            fs.mkdir(f"/d{d}")
        for n in range(filling):
            fs.write_file(f"/d{n % 17}/f{n}", b"%d" % n + bytes(4000))
    with Volume.open([image]) as vol:
        assert vol.resources[R.RES_FD].num_resources == 16384  # not grown yet
        assert vol.resources[R.RES_SB].num_resources == 16384
    with HostAttachment.open(image) as att:
        assert att.journal is not None
        fs = WritableFileSystem(att)
        for n in range(filling, 16385):
            fs.write_file(f"/d{n % 17}/f{n}", b"%d" % n + bytes(4000))
    with Volume.open([image]) as vol:
        assert vol.resources[R.RES_FD].num_resources > 16384
        assert vol.resources[R.RES_SB].num_resources > 16384
    theirs = oracles.dissect_tree([image])
    assert sum(p.count("/") == 2 for p in theirs) == 16385
    assert theirs[f"/d{16384 % 17}/f16384"]["sha256"] == _sha(b"16384" + bytes(4000))
    assert f"{9 + 17 + 16385}/" in _fsck_clean(image)  # system FDs, folders, files


@pytest.mark.fuse
def test_vmdk_disks_on_vmfs6(tmp_path: Path) -> None:
    """vmfs-vmdk makes thin, lazily and eagerly zeroed disks on a VMFS6 volume; qemu-img reads
    them through vmfs6-fuse (the zeroed-thick disk's to-be-zeroed blocks read as zeros)."""
    image = _mkfs6(tmp_path / "v6.img", "3G")
    disks = (("thin", "thin", "500M"), ("lazy", "zeroedthick", "200M"), ("eager", "eagerzeroedthick", "200M"))
    for name, kind, size in disks:
        r = subprocess.run([tool("vmfs-vmdk"), "--volume", str(image), "-c", size, "-d", kind, f"/{name}.vmdk"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    _fsck_clean(image)
    with Volume.open([image]) as vol:
        lazy = vol.read_fd(_address(vol, "/lazy-flat.vmdk"))
        assert lazy.meta.numBlocks == 200 and all(p & (0xFF << 7) for p in lazy.pointers[:200])  # TBZ
    with oracles.OracleMount("vmfs6-fuse", [image], tmp_path / "oracle") as root:
        for name in ("thin", "lazy", "eager"):
            r = subprocess.run(["qemu-img", "check", str(Path(root) / f"{name}.vmdk")], capture_output=True, text=True)
            assert r.returncode == 0, r.stdout + r.stderr
        r = subprocess.run(["qemu-img", "compare", str(Path(root) / "lazy.vmdk"), str(Path(root) / "eager.vmdk")],
                           capture_output=True, text=True)
        assert r.returncode == 0 and "identical" in r.stdout, r.stdout + r.stderr
