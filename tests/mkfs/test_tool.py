"""vmfs-mkfs, the command: sizes, refusal and --force, --dry-run, --json, errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import tool
from tests.mkfs.conftest import GIB, MIB, TIB, allocated_bytes, image_for_lv, make_image, run_mkfs, sha256
from vmfs.volume.volume import Volume

SIZE_1G = str(image_for_lv(GIB))


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_creates_a_sparse_image_and_reports(tmp_path: Path) -> None:
    image = tmp_path / "new.img"
    r = run_mkfs("--size", "2G", "-L", "my volume", "--uuid", "61137dd5-df6bc2c8-f0e7-000c29801686", image)
    assert r.returncode == 0, r.stderr
    assert image.stat().st_size == 2 * GIB
    assert allocated_bytes(image) < 4 * MIB
    assert "Made VMFS-5.81 volume 'my volume': 1792 MiB on 1 extent(s)" in r.stdout
    with Volume.open([image]) as vol:
        assert (vol.label, vol.uuid) == ("my volume", "61137dd5-df6bc2c8-f0e7-000c29801686")
        assert vol.device.size == 7 * 256 * MIB


def test_json_output(tmp_path: Path) -> None:
    r = run_mkfs("--json", "--size", "1G", tmp_path / "a.img", tmp_path / "b.img")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["volumeSize"] == 2 * 3 * 256 * MIB
    assert [e["firstSegment"] for e in d["extents"]] == [0, 3]
    assert d["bytesWritten"] > 0
    assert {f["name"] for f in d["systemFiles"]} == {"/", ".fbb.sf", ".fdc.sf", ".pbc.sf", ".sbc.sf", ".vh.sf",
                                                     ".pb2.sf", ".sdd.sf"}


def test_extent_sizes(tmp_path: Path) -> None:
    r = run_mkfs("--extent-size", "600M", "--extent-size", "1G", tmp_path / "a.img", tmp_path / "b.img")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "a.img").stat().st_size == 600 * MIB
    assert (tmp_path / "b.img").stat().st_size == GIB
    r = run_mkfs("--extent-size", "1G", tmp_path / "c.img", tmp_path / "d.img")
    assert r.returncode == 2 and "extent-size" in r.stderr
    assert not (tmp_path / "c.img").exists()


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    image = tmp_path / "dry.img"
    r = run_mkfs("--dry-run", "--size", "64G", image)
    assert r.returncode == 0, r.stderr
    assert not image.exists()
    for needle in ("Would make", "heartbeats (2048 x 512)", ".fdc.sf  FD 0x00800004 @0x421000", "Resources:",
                   "file descriptors", "PE entries of 256 MiB"):
        assert needle in r.stdout
    make_image(image, image_for_lv(GIB))
    before = sha256(image)
    r = run_mkfs("--dry-run", "--json", image)
    assert r.returncode == 0
    assert json.loads(r.stdout)["volumeSize"] == GIB
    assert sha256(image) == before and allocated_bytes(image) == 0


def test_refuses_existing_vmfs_then_force(tmp_path: Path) -> None:
    image = tmp_path / "v.img"
    assert run_mkfs("--size", SIZE_1G, "-L", "first", image).returncode == 0
    before = sha256(image)
    r = run_mkfs("-L", "second", image)
    assert "contains a VMFS volume" in one_line_error(r) and "--force" in r.stderr
    assert r.returncode == 1
    assert sha256(image) == before
    r = run_mkfs("--dry-run", image)
    assert "formatting it needs --force" in r.stdout
    r = run_mkfs("--force", "-L", "second", image)
    assert r.returncode == 0, r.stderr
    with Volume.open([image]) as vol:
        assert vol.label == "second"


def _real(tool: str, *args: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed")
    subprocess.run([tool, *args], check=True, capture_output=True)


def _blkid_type(image: Path) -> str:
    if shutil.which("blkid") is None:
        return ""
    out = subprocess.run(["blkid", "-p", "-o", "export", str(image)], capture_output=True, text=True).stdout
    values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return values.get("TYPE", values.get("PTTYPE", ""))


def _mbr(image: Path) -> None:
    with open(image, "r+b") as f:
        f.seek(446)
        # one primary Linux partition at sector 2048 of 8192 sectors
        f.write(bytes([0x00, 0, 0, 0, 0x83, 0, 0, 0]) + (2048).to_bytes(4, "little") + (8192).to_bytes(4, "little"))
        f.seek(510)
        f.write(b"\x55\xaa")


def _at(offset: int, magic: bytes):  # type: ignore[no-untyped-def]
    def write(image: Path) -> None:
        with open(image, "r+b") as f:
            f.seek(offset)
            f.write(magic)

    return write


MADE_BY = {
    "ext4": (lambda p: _real("mkfs.ext4", "-q", "-F", str(p)), "ext2/ext3/ext4", "ext4"),
    "swap": (lambda p: _real("mkswap", str(p)), "swap area", "swap"),
    "mbr": (_mbr, "MBR partition table", "dos"),
    "xfs": (_at(0, b"XFSB"), "XFS", None),
    "btrfs": (_at(0x10040, b"_BHRfS_M"), "btrfs", None),
    "ntfs": (_at(3, b"NTFS    "), "NTFS", None),
    "fat32": (_at(0x52, b"FAT32   "), "FAT32", None),
    "lvm2": (_at(0x218, b"LVM2 001"), "LVM2", None),
    "luks": (_at(0, b"LUKS\xba\xbe"), "LUKS", None),
    "gpt": (_at(512, b"EFI PART"), "GPT", None),
    "vmfs-bare": (_at(0x200000, (0x2FABF15E).to_bytes(4, "little")), "VMFS file system", None),
}


@pytest.mark.parametrize("kind", list(MADE_BY))
def test_refuses_other_signatures(kind: str, tmp_path: Path) -> None:
    size = image_for_lv(256 * MIB)
    image = make_image(tmp_path / f"{kind}.img", size)
    make, what, blkid_type = MADE_BY[kind]
    make(image)
    if blkid_type is not None and shutil.which("blkid"):  # really that signature, as blkid sees it
        assert _blkid_type(image) == blkid_type
    before = sha256(image)
    r = run_mkfs("--size", str(size + GIB), image)
    assert what in one_line_error(r)
    assert sha256(image) == before and image.stat().st_size == size  # not even extended
    r = run_mkfs("--force", image)
    assert r.returncode == 0, r.stderr
    if shutil.which("blkid"):
        assert _blkid_type(image) == "VMFS_volume_member"  # no trace of the old signature
    with Volume.open([image]) as vol:
        assert vol.device.size == 256 * MIB


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--block-size", "2M"), "1 MiB file blocks only"),
        (("--block-size", "8M"), "1 MiB file blocks only"),
        (("--sub-block-size", "64K"), "8 KiB sub-blocks only"),
        (("--uuid", "nonsense"), "is not of the form"),
        (("-L", "x" * 200), "label"),
    ],
)
def test_bad_options_are_one_line_errors(args: tuple[str, ...], message: str, tmp_path: Path) -> None:
    image = tmp_path / "x.img"
    r = run_mkfs("--size", "1G", *args, image)
    assert message in one_line_error(r)
    assert not image.exists()


def test_block_size_1m_accepted(tmp_path: Path) -> None:
    assert run_mkfs("--size", "1G", "--block-size", "1M", "--sub-block-size", "8K", tmp_path / "x.img").returncode == 0


def test_too_small_leaves_nothing_behind(tmp_path: Path) -> None:
    image = tmp_path / "small.img"
    r = run_mkfs("--size", "200M", image)
    assert "too small" in one_line_error(r)
    assert not image.exists()


def test_refuses_to_shrink_without_force(tmp_path: Path) -> None:
    image = make_image(tmp_path / "big.img", 2 * GIB)
    r = run_mkfs("--size", "1G", image)
    assert "refusing to shrink" in one_line_error(r)
    assert image.stat().st_size == 2 * GIB
    r = run_mkfs("--force", "--size", "1G", image)
    assert r.returncode == 0 and image.stat().st_size == GIB


def test_missing_image_without_size(tmp_path: Path) -> None:
    r = run_mkfs(tmp_path / "nope.img")
    assert r.returncode == 2 and "--size" in r.stderr


def test_file_system_limit_is_a_one_line_error(tmp_path: Path) -> None:
    """ext4 holds files up to 16 TiB: a 64 TiB image there fails cleanly and leaves nothing."""
    probe = tmp_path / "probe"
    try:
        with open(probe, "wb") as f:
            f.truncate(64 * TIB)
        pytest.skip("this file system holds 64 TiB files")
    except OSError:
        pass
    finally:
        probe.unlink(missing_ok=True)
    image = tmp_path / "huge.img"
    r = run_mkfs("--size", "64T", image)
    assert "File too large" in one_line_error(r)
    assert not image.exists()
    assert os.listdir(tmp_path) == []


def test_vmfs6(tmp_path: Path) -> None:
    """-t vmfs6: ESXi's VMFS6 layout (tests/interop/test_vmfs6_writes.py writes on it)."""
    image = tmp_path / "v6.img"
    r = run_mkfs("-t", "vmfs6", "--size", "2G", "-L", "six", image)
    assert r.returncode == 0, r.stderr
    assert "Made VMFS-6.82 volume 'six': 1792 MiB on 1 extent(s)" in r.stdout
    assert "blocks 139..458, 718..1422" in r.stdout  # .sbc.sf: direct run, then grown through a PB2
    assert allocated_bytes(image) < 8 * MIB
    with Volume.open([image]) as vol:
        assert (vol.label, vol.geometry.version, vol.geometry.sub_block_size) == ("six", 6, 64 << 10)
    d = json.loads(run_mkfs("-t", "vmfs6", "--dry-run", "--json", "--size", "2G", tmp_path / "dry.img").stdout)
    assert d["version"] == "VMFS-6.82" and not (tmp_path / "dry.img").exists()
    assert {f["name"]: f["runs"] for f in d["systemFiles"]}[".fdc.sf"] == [[7, 1], [10, 128]]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["-t", "vmfs6", "--size", "528M"], 1, "a VMFS6 volume needs at least 554696704 bytes"),
        (["-t", "vmfs6", "--size", "2G", "--sub-block-size", "8K"], 1, "VMFS6 uses 64 KiB sub-blocks only"),
        (["-t", "vmfs6", "--size", "2G", "--pointer-blocks", "4"], 2, "a VMFS6 volume starts with no pointer"),
        (["-t", "vmfs7", "--size", "2G"], 2, "'vmfs7' is not one of"),
        (["-t", "vmfs6", "--extent-size", "1G", "--extent-size", "1G"], 1, "spanned volumes are not made yet"),
    ],
)
def test_vmfs6_errors(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    devices = [tmp_path / "a.img", tmp_path / "b.img"] if args.count("--extent-size") == 2 else [tmp_path / "a.img"]
    r = run_mkfs(*args, *devices)
    assert r.returncode == code, r.stderr
    assert message in (one_line_error(r) if code == 1 else r.stderr)
    assert not any(d.exists() for d in devices)


def test_vmfs6_is_the_default(tmp_path: Path) -> None:
    """Without -t, vmfs-mkfs makes VMFS6, as ESXi 6.5 and later do; --help says so."""
    image = tmp_path / "default.img"
    r = subprocess.run([tool("vmfs-mkfs"), "--progress", "none", "--size", "2G", str(image)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert "Made VMFS-6.82 volume" in r.stdout
    with Volume.open([image]) as vol:
        assert vol.geometry.version == 6
    help_text = subprocess.run([tool("vmfs-mkfs"), "--help"], capture_output=True, text=True).stdout
    assert "default: vmfs6" in help_text
    # what a VMFS6 volume cannot be yet says how to get a VMFS5 one
    r = subprocess.run([tool("vmfs-mkfs"), "--extent-size", "1G", "--extent-size", "1G", str(tmp_path / "a.img"),
                        str(tmp_path / "b.img")], capture_output=True, text=True)
    assert r.returncode == 1 and "-t vmfs5" in r.stderr
