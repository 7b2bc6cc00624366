"""A real VMFS3 volume made by ESX (VMFS 3.31), read like the VMFS5/6 samples: the tree equals
vmfs-tools' (written for VMFS3), vmfs-debug agrees with debugvmfs, vmfs-fsck finds it clean, and
mutated metadata only ever raises the library's errors.

The sample is ``shared/fixtures/real/vmfs3.bin.gz`` (the ``test.img`` of the vmfs-tools
repository: label "toto", four 200 MiB disks, thin, thick, zeroedthick, eagerzeroedthick),
unpacked once per session by tests/conftest.py like the VMFS5/6 samples; without it these tests
fail, they are not skipped."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from tests import oracles
from tests.conftest import Mount, tool
from tests.fsck.cases import codes, run_fsck
from tests.helpers import capture_mount, diff_trees
from tests.interop.test_debug_vs_debugvmfs import oracle_show, ours, size_value
from tests.unit.test_fuzz_read import metadata_regions, mutate_and_read

pytestmark = [pytest.mark.oracle]


@pytest.mark.fuse
def test_tree_equals_vmfs_fuse(vmfs3_image: Path, tmp_path: Path) -> None:
    with Mount([tool("vmfs-mount"), str(vmfs3_image), str(tmp_path / "ours")], tmp_path / "ours") as root:
        mine = capture_mount(root)
    theirs = oracles.fuse_tree("vmfs-fuse", [vmfs3_image], tmp_path / "oracle")
    assert diff_trees(mine, theirs) == []
    regular = [p for p, r in mine.items() if stat.S_ISREG(r["mode"])]
    assert len(regular) >= 8 and all("sha256" in mine[p] and "sha256" in theirs[p] for p in regular)


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
    report = oracles.fsck_vmfs(vmfs3_image)
    assert report.counts["Lost blocks"] == tbz
    assert sum(1 for line in report.lines if line.endswith(" is lost.")) == tbz


def test_mutated_metadata_never_crashes(vmfs3_image: Path) -> None:
    from hypothesis import HealthCheck, given, settings

    from tests.helpers import region_mutations

    regions = metadata_regions(vmfs3_image)

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
    @given(region_mutations(len(regions), max_pos=1 << 16, max_bytes=8, max_count=6))
    def run(mutations: list[tuple[int, int, bytes]]) -> None:
        mutate_and_read(vmfs3_image, regions, mutations)

    run()
