"""Our formatted volumes read by the C oracles (vmfs-tools 0.2.5) and by dissect.vmfs."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests import oracles
from tests.helpers import capture_mount, digest
from tests.mkfs.conftest import (
    FIXED,
    GIB,
    MIB,
    SYSTEM_NAMES,
    TIB,
    capture_ours,
    format_images,
    image_for_lv,
    make_image,
)
from vmfs.mkfs import Layout
from vmfs.volume.namespace import FileSystem
from vmfs.volume.volume import Volume

pytestmark = pytest.mark.oracle

#: name -> sizes of the extents
VOLUMES = {
    "256M": [image_for_lv(256 * MIB)],
    "1G": [image_for_lv(GIB)],
    "10G": [image_for_lv(10 * GIB)],
    "2T": [image_for_lv(2 * TIB)],
    "span2": [image_for_lv(512 * MIB), 700 * MIB],
    "span3": [image_for_lv(512 * MIB), 700 * MIB, image_for_lv(256 * MIB)],
}
FSCK_COUNTERS = ("Unallocated blocks", "Lost blocks", "Undefined inodes", "Orphaned inodes", "Directory errors")


@pytest.fixture(scope="module", params=list(VOLUMES))
def volume(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Layout]:
    d = tmp_path_factory.mktemp(request.param)
    images = [make_image(d / f"extent{i}.img", s) for i, s in enumerate(VOLUMES[request.param])]
    return images, format_images(images, FIXED)


def our_hashes(images: list[Path]) -> dict[str, str]:
    """sha256 (tests/helpers.digest) of every regular file below the root, read by our library:
    what the oracles' hashes must equal."""
    out = {}
    with Volume.open(images) as vol:
        fs = FileSystem(vol)
        for e in fs.listdir("/"):
            path = "/" + e.name
            if e.name not in (".", "..") and stat.S_ISREG(fs.stat(path).mode):
                out[path] = digest(fs.reader(path).read, fs.stat(path).size)
    return out


def test_debugvmfs_show(volume: tuple[list[Path], Layout]) -> None:
    images, _ = volume
    # `show fs` prints nothing with this debugvmfs; the extents go in reverse order, which
    # vmfs-tools must sort out itself
    shown = oracles.debugvmfs_show(list(reversed(images)), require=oracles.SHOW_FS_KEYS)
    assert shown == {
        "Volume Version": "14",
        "Version": "81",
        "Label": FIXED.label,
        "Mode": "public",
        "UUID": FIXED.fs_uuid,
        "Creation time": "2021-08-11 07:35:49",
        "Block size": "1 MiB",
        "Subblock size": "8 KiB",
        "FDC Header size": "64 KiB",
        "FDC Bitmap count": "64",
    }
    lvm = oracles.debugvmfs_show(list(reversed(images)), "lvm", require=("UUID", "Num. Extents"))
    assert lvm["UUID"] == FIXED.lv_uuid
    assert int(lvm["Num. Extents"]) == len(images)


def test_debugvmfs_ls_and_df(volume: tuple[list[Path], Layout]) -> None:
    images, layout = volume
    listing = oracles.debugvmfs_ls(list(reversed(images)), "/")
    assert list(listing) == [".", "..", *SYSTEM_NAMES]
    ours = capture_ours(images)
    for name in SYSTEM_NAMES:
        assert listing[name][1:] == (ours["/" + name]["nlink"], ours["/" + name]["size"]), name
    assert listing["."] == ("drwxr-xr-t", 3, 1260)
    assert listing[".sdd.sf"][0] == "drwx------"
    df = oracles.debugvmfs_df(list(reversed(images)))
    assert df["Total blocks"] == layout.num_blocks
    assert df["Allocated blocks"] == layout.used_blocks
    assert df["Free blocks"] == layout.num_blocks - layout.used_blocks


def test_debugvmfs_bitmaps_check(volume: tuple[list[Path], Layout]) -> None:
    images, _ = volume
    assert oracles.debugvmfs_bitmap_errors(list(reversed(images))) == 0


def fsck_report(images: list[Path]) -> tuple[dict[str, int], str]:
    report = oracles.fsck_vmfs(*images)  # no summary, or a crash, raises
    return report.counts, report.text


def test_fsck_no_worse_than_the_sample(volume: tuple[list[Path], Layout], vmfs5_image: Path) -> None:
    """The sample's one lost block is a live journal and its one unallocated "block" is resident
    data (vmfs-format.md 13); a fresh volume has neither."""
    images, layout = volume
    theirs, _ = fsck_report([vmfs5_image])
    ours, text = fsck_report(images)
    for key in FSCK_COUNTERS:
        assert ours[key] <= theirs[key], text
        assert ours[key] == 0, text
    assert ours["File Blocks"] == layout.used_blocks
    assert (ours["Sub-Blocks"], ours["Pointer Blocks"], ours["Inodes"]) == (0, 0, 8)
    assert f"Scanning {layout.resource(4).count} FDC entries" in text


def test_dissect_reads_the_same_tree(volume: tuple[list[Path], Layout]) -> None:
    images, _ = volume
    # extents in reverse order: dissect sorts them by firstPE
    theirs = oracles.dissect_tree(list(reversed(images)))
    ours = capture_ours(images)
    assert set(theirs) == set(ours) == {"/" + n for n in SYSTEM_NAMES}
    for path, rec in ours.items():
        assert {k: theirs[path][k] for k in rec} == rec, path
    hashes = our_hashes(images)
    assert hashes and {p: r["sha256"] for p, r in theirs.items() if "sha256" in r} == hashes


@pytest.mark.fuse
def test_vmfs_fuse_mounts_and_lists(volume: tuple[list[Path], Layout], tmp_path: Path) -> None:
    images, layout = volume
    mnt = tmp_path / "mnt"
    with oracles.OracleMount("vmfs-fuse", images, mnt) as root:
        assert sorted(os.listdir(root)) == sorted(SYSTEM_NAMES)
        st = os.statvfs(root)
        assert st.f_frsize * st.f_blocks == layout.volume_size
        assert st.f_bfree == layout.num_blocks - layout.used_blocks
        # vmfs-fuse shows .sdd.sf as a socket, see tests/interop/test_real_trees.py
        tree = capture_mount(root, unreadable=frozenset({"/.sdd.sf"}))
    ours = capture_ours(images)
    assert set(tree) == set(ours)
    for path, rec in tree.items():
        if path == "/.sdd.sf":
            continue
        assert {k: ours[path][k] for k in ("size", "nlink", "uid", "gid", "mtime")} == {
            k: rec[k] for k in ("size", "nlink", "uid", "gid", "mtime")
        }, path
    # vmfs-fuse reads every system file through our block maps, byte for byte as we do
    hashes = our_hashes(images)
    assert "/.vh.sf" in hashes and {p: r["sha256"] for p, r in tree.items() if "sha256" in r} == hashes
