"""A real VMFS3 volume made by ESX (VMFS 3.31), read like the VMFS5/6 samples: the tree equals
vmfs-tools' (written for VMFS3), vmfs-debug agrees with debugvmfs, vmfs-fsck finds it clean, and
mutated metadata only ever raises the library's errors.

No VMFS3 sample ships in ../shared/fixtures/real/.  One public ESX-made VMFS3 image is the
``test.img`` of the vmfs-tools repository (label "toto", four 200 MiB disks: thin, thick,
zeroedthick, eagerzeroedthick); unpack it with that repository's ``imager -x`` and point
``VMFS3_SAMPLE`` at the raw image, or drop it in as ``shared/fixtures/real/vmfs3.bin.gz``.
Without one these tests are skipped, and say so."""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REAL, Mount, tool
from tests.fsck.cases import codes, run_fsck
from tests.helpers import capture_mount, diff_trees
from tests.interop.test_debug_vs_debugvmfs import oracle_show, ours, size_value
from tests.unit.test_fuzz_read import metadata_regions, mutate_and_read

pytestmark = [pytest.mark.oracle]


@pytest.fixture(scope="module")
def vmfs3_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    packed = REAL / "vmfs3.bin.gz"
    if packed.exists():
        dst = tmp_path_factory.mktemp("vmfs3") / "vmfs3.bin"
        with gzip.open(packed, "rb") as fin, open(dst, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
        return dst
    env = os.environ.get("VMFS3_SAMPLE")
    if env and Path(env).is_file():
        return Path(env)
    pytest.skip("no VMFS3 sample (set VMFS3_SAMPLE to an ESX-made VMFS3 image; see this file's docstring)")


@pytest.mark.fuse
def test_tree_equals_vmfs_fuse(vmfs3_image: Path, tmp_path: Path) -> None:
    with Mount([tool("vmfs-mount"), str(vmfs3_image), str(tmp_path / "ours")], tmp_path / "ours") as root:
        mine = capture_mount(root)
    with Mount(["vmfs-fuse", str(vmfs3_image), str(tmp_path / "oracle")], tmp_path / "oracle") as root:
        theirs = capture_mount(root)
    assert diff_trees(mine, theirs) == []
    regular = [r for r in mine.values() if stat.S_ISREG(r["mode"])]
    assert regular and all("sha256" in r for r in regular)


def test_fs_descriptor_equals_debugvmfs(vmfs3_image: Path) -> None:
    theirs = oracle_show("debugvmfs", vmfs3_image)
    mine = ours(vmfs3_image, "fs")
    assert int(theirs["Volume Version"]) == mine["majorVersion"]
    assert int(theirs["Version"]) == mine["minorVersion"]
    assert theirs["Label"] == mine["fsLabel"]
    assert theirs["UUID"] == mine["uuid"]
    assert size_value(theirs["Block size"]) == mine["fileBlockSize"]
    assert size_value(theirs["Subblock size"]) == mine["subBlockSize"] == 64 << 10
    assert int(theirs["FDC Bitmap count"]) == mine["fdcClustersPerGroup"]


def test_fsck_clean_where_fsck_vmfs_counts_tbz_blocks_lost(vmfs3_image: Path) -> None:
    """fsck.vmfs (0.2.5) strips flags from the block ids it collects and then reports every
    to-be-zeroed block of a lazily zeroed disk as lost; ours counts them as used."""
    rc, report = run_fsck(vmfs3_image, "-n", "-f")
    assert (rc, codes(report)) == (0, [])
    blocks = subprocess.run([tool("vmfs-debug"), str(vmfs3_image), "blocks", "/zeroedthick-flat.vmdk"],
                            capture_output=True, text=True, check=True).stdout
    tbz = sum(1 for line in blocks.splitlines() if "ptr[" in line and "[T]" in line)
    assert tbz > 0
    out = subprocess.run(["fsck.vmfs", str(vmfs3_image)], capture_output=True, text=True).stdout
    assert f"Lost blocks        : {tbz}" in out


def test_mutated_metadata_never_crashes(vmfs3_image: Path) -> None:
    from hypothesis import HealthCheck, given, settings

    from tests.helpers import region_mutations

    regions = metadata_regions(vmfs3_image)

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
    @given(region_mutations(len(regions), max_pos=1 << 16, max_bytes=8, max_count=6))
    def run(mutations: list[tuple[int, int, bytes]]) -> None:
        mutate_and_read(vmfs3_image, regions, mutations)

    run()
