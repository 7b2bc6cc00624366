"""Hostile images: truncated, wrong magic, addresses out of range, pointer cycles, bad names.

Each case must give the library's own error (never a traceback or a hang), a one-line message and
a non-zero exit code from the tools, EIO through a FUSE mount, and never a path outside it.
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Mount, copy_image, tool
from vmfs.device import FileDevice
from vmfs.errors import CorruptError, NotVmfsError, VmfsError
from vmfs.format import address as A
from vmfs.ondisk import filedesc as F
from vmfs.volume.filereader import FileReader
from vmfs.volume.namespace import FileSystem
from vmfs.volume.volume import Volume

LVM_DATA = 0x1100000  # device offset of volume offset 0 in both samples


def patch(image: Path, offset: int, data: bytes) -> None:
    with open(image, "r+b") as f:
        f.seek(offset)
        f.write(data)


def one_line_failure(*argv: str) -> str:
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


@pytest.fixture
def v5copy(vmfs5_image: Path, tmp_path: Path) -> Path:
    return copy_image(vmfs5_image, tmp_path / "v5.img")


@pytest.fixture
def v6copy(vmfs6_image: Path, tmp_path: Path) -> Path:
    return copy_image(vmfs6_image, tmp_path / "v6.img")


def fd_offset(image: Path, path: str) -> tuple[int, int]:
    """(device offset of the FD metadata of ``path``, FD address)."""
    with Volume.open(image) as vol:
        fd = FileSystem(vol).resolve(path, follow=False)
        return LVM_DATA + fd.vol_offset + vol.geometry.fd_meta_offset, fd.address


@pytest.mark.parametrize("size", [0, 4096, 0x100100, 0x1100000 + 0x300000, 0x1100000 + 0xE00000])
def test_truncated_image(v5copy: Path, size: int, tmp_path: Path) -> None:
    os.truncate(v5copy, size)
    with pytest.raises(VmfsError) as info:
        Volume.open(v5copy)
    assert info.value.errno in (errno.EIO, errno.EINVAL)
    msg = one_line_failure(tool("vmfs-debug"), str(v5copy), "ls", "/")
    assert "vmfs-debug:" in msg
    mnt = tmp_path / "mnt"  # never a shared directory: a mount that did succeed would hide it
    mnt.mkdir()
    one_line_failure(tool("vmfs-mount"), str(v5copy), str(mnt))
    assert not os.path.ismount(mnt)


def test_wrong_lvm_magic(v5copy: Path) -> None:
    patch(v5copy, 0x100000, b"\0\0\0\0")
    with pytest.raises(NotVmfsError):
        Volume.open(v5copy)
    assert "no VMFS LVM header" in one_line_failure(tool("vmfs-debug"), str(v5copy), "fs")


def test_wrong_fs_magic(v6copy: Path) -> None:
    patch(v6copy, LVM_DATA + 0x200000, b"\x12\x34\x56\x78")
    with pytest.raises(NotVmfsError):
        Volume.open(v6copy)
    assert "no VMFS file system" in one_line_failure(tool("vmfs-debug"), str(v6copy), "fs")


def test_not_an_image(tmp_path: Path) -> None:
    one_line_failure(tool("vmfs-debug"), str(tmp_path / "missing.img"), "fs")
    one_line_failure(tool("vmfs-debug"), str(tmp_path), "fs")


def test_address_out_of_range(v5copy: Path, tmp_path: Path) -> None:
    meta, _ = fd_offset(v5copy, "/directory/file5")
    # file5 is ZLA 1 with its only block pointer at FD data +0; point it past the volume end.
    patch(v5copy, meta + 0x200, (A.AddressCodec5().make_fb(100000)).to_bytes(4, "little"))
    with Volume.open(v5copy) as vol:
        fs = FileSystem(vol)
        assert [e.name for e in fs.listdir("/directory")][-2] == "file5"
        with pytest.raises(CorruptError, match="beyond the volume"):
            fs.reader("/directory/file5").read(0, 10)
    assert "beyond the volume" in one_line_failure(tool("vmfs-debug"), str(v5copy), "cat", "/directory/file5")
    with Mount([tool("vmfs-mount"), str(v5copy), str(tmp_path / "m")], tmp_path / "m") as root:
        with pytest.raises(OSError) as info:
            (root / "directory" / "file5").read_bytes()
        assert info.value.errno == errno.EIO
        assert (root / "directory" / "file4").read_bytes() == b"content\n"


def test_pointer_block_cycle(v5copy: Path, tmp_path: Path) -> None:
    """file5 turned into a double-indirect file whose pointer block points to itself."""
    meta, _ = fd_offset(v5copy, "/directory/file5")
    with Volume.open(v5copy) as vol:
        pbc = vol.resources[3]
        pb_vol = pbc.volume_offset(0, 0)
    pb_addr = A.AddressCodec5().make(A.ADDR_PB, 0, 0)
    patch(v5copy, meta + 0x44, F.ZLA_DOUBLE_INDIRECT.to_bytes(4, "little"))
    patch(v5copy, meta + 0x200, pb_addr.to_bytes(4, "little"))
    patch(v5copy, LVM_DATA + pb_vol, pb_addr.to_bytes(4, "little") * 1024)
    with Volume.open(v5copy) as vol, pytest.raises(CorruptError, match="not a data block"):
        FileSystem(vol).reader("/directory/file5").read(0, 8193)
    with Mount([tool("vmfs-mount"), str(v5copy), str(tmp_path / "m")], tmp_path / "m") as root:
        with pytest.raises(OSError) as info:
            (root / "directory" / "file5").read_bytes()
        assert info.value.errno == errno.EIO


def _dirent_name_offset(image: Path, name: str) -> int:
    with Volume.open(image) as vol:
        fs = FileSystem(vol)
        d = fs.resolve("/directory")
        entry = fs.directory(d).lookup(name)
        loc = FileReader(fs.resolve("/directory")).volume_offset(entry.offset)
        return LVM_DATA + loc + 0x0C


#: /directory of both samples without file4, in listing order (VMFS5 / VMFS6)
REST5 = ["file1", "file2", "file3", "file5", "symlink"]
REST6 = ["file1", "file2", "file3", "symlink", "file5"]


def _defects(fs: FileSystem, path: str) -> list[str]:
    directory = fs.directory(fs.resolve(path))
    list(directory.entries())
    return [d.detail for d in directory.defects.values()]


@pytest.mark.parametrize(
    ("new_name", "problem"),
    [(b"ev/il\0", "'/'"), (b"fi\0le4X\0", "NUL"), (b"..\0\0\0\0", "'..'"), (b"\0\0\0\0\0\0", "empty")],
)
def test_bad_entry_names(v5copy: Path, tmp_path: Path, new_name: bytes, problem: str) -> None:
    """An entry whose name no path can hold is hidden: left out of listings and lookups, kept as
    a defect (for fsck) and logged once; the rest of the directory stays readable (docs/SPEC.md,
    directories)."""
    patch(v5copy, _dirent_name_offset(v5copy, "file4"), new_name)
    with Volume.open(v5copy) as vol:
        fs = FileSystem(vol)
        assert [e.name for e in fs.listdir("/directory")] == REST5
        defects = _defects(fs, "/directory")
        assert len(defects) == 1 and problem in defects[0], defects
        with pytest.raises(VmfsError) as info:
            fs.resolve("/directory/file4")
        assert info.value.errno == errno.ENOENT
    r = subprocess.run([tool("vmfs-debug"), str(v5copy), "ls", "/directory"], capture_output=True, text=True,
                       timeout=60)
    assert (r.returncode, r.stdout.split()) == (0, REST5), r.stderr
    assert "hidden" in r.stderr and "Traceback" not in r.stderr
    with Mount([tool("vmfs-mount"), str(v5copy), str(tmp_path / "m")], tmp_path / "m") as root:
        assert sorted(os.listdir(root / "directory")) == sorted(REST5)
        assert (root / "directory" / "file5").read_bytes()[:4] == b"aaaa"
        with pytest.raises(FileNotFoundError):
            os.stat(root / "directory" / "file4")
        assert sorted(os.listdir(root))[-1] == "directory"


def test_vmfs6_bad_name_in_hashed_directory(v6copy: Path) -> None:
    with Volume.open(v6copy) as vol:
        fs = FileSystem(vol)
        entry = fs.directory(fs.resolve("/directory")).lookup("file4")
        loc = FileReader(fs.resolve("/directory")).volume_offset(entry.offset)
    patch(v6copy, LVM_DATA + loc + 0x18, b"a/b\0\0")
    with Volume.open(v6copy) as vol:
        fs = FileSystem(vol)
        assert [e.name for e in fs.listdir("/directory")] == REST6
        defects = _defects(fs, "/directory")
        assert len(defects) == 1 and "'/'" in defects[0], defects


def test_directory_cycle_is_reported(v5copy: Path) -> None:
    # make /directory's entry "file1" a directory entry that points back to the root
    off = _dirent_name_offset(v5copy, "file1") - 0x0C
    patch(v5copy, off, (2).to_bytes(4, "little") + (4).to_bytes(4, "little") + (1).to_bytes(4, "little"))
    with Volume.open(v5copy) as vol, pytest.raises(CorruptError, match="already seen"):
        list(FileSystem(vol).walk("/"))


def test_open_read_only_by_default(vmfs5_image: Path) -> None:
    with Volume.open(vmfs5_image) as vol:
        assert vol.readonly
        with pytest.raises(VmfsError):
            vol.device.write(0, b"x")
    dev = FileDevice(vmfs5_image)
    assert dev.readonly
    dev.close()
