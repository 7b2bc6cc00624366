"""Acceptance: vmfs-debug prints the values debugvmfs/debugvmfs6 print for the FS descriptor and
the root directory."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests import oracles
from tests.conftest import copy_image, tool
from vmfs.ondisk.heartbeat import HB_IN_USE
from vmfs.volume.slots import read_slots
from vmfs.volume.volume import Volume

pytestmark = pytest.mark.oracle

LVM_DATA = 0x1100000  # device offset of volume offset 0 in both samples
UNITS = {"bytes": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
#: what `show inode[...]` prints for every inode
INODE_KEYS = ("ID", "ID2", "Links", "Type", "Flags", "Size", "Block size", "Block count", "UID", "GID", "Mode",
              "ZLA", "TBZ", "COW", "Access Time", "Modify Time", "Change Time")


def oracle_show(prog: str, image: Path, *what: str) -> dict[str, str]:
    # `show` with no variable prints the FS descriptor (`show fs` prints nothing and exits 1)
    require = INODE_KEYS if what else oracles.SHOW_FS_KEYS
    return oracles.debugvmfs_show([image], *what, prog=prog, require=require)


def ours(image: Path, *args: str) -> dict:
    out = subprocess.run([tool("vmfs-debug"), "--json", str(image), *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def size_value(text: str) -> float:
    number, unit = text.split()
    return float(number) * UNITS[unit]


@pytest.mark.parametrize(("name", "prog"), [("vmfs5", "debugvmfs"), ("vmfs6", "debugvmfs6")])
def test_fs_descriptor(name: str, prog: str, request: pytest.FixtureRequest) -> None:
    image = request.getfixturevalue(f"{name}_image")
    theirs = oracle_show(prog, image)
    mine = ours(image, "fs")
    assert len(theirs) == 10
    assert int(theirs["Volume Version"]) == mine["majorVersion"]
    assert int(theirs["Version"]) == mine["minorVersion"]
    assert theirs["Label"] == mine["fsLabel"]
    assert theirs["Mode"] == mine["mode"]
    assert theirs["UUID"] == mine["uuid"]
    assert theirs["Creation time"] == mine["creation"]
    assert size_value(theirs["Block size"]) == mine["fileBlockSize"]
    assert size_value(theirs["Subblock size"]) == mine["subBlockSize"]
    assert size_value(theirs["FDC Header size"]) == mine["fdcClusterGroupOffset"]
    assert int(theirs["FDC Bitmap count"]) == mine["fdcClustersPerGroup"]


def test_fs_descriptor_vmfs6_fields_against_dissect(vmfs6_image: Path) -> None:
    # debugvmfs6 does not print the VMFS6-only fields; dissect.vmfs does.
    from dissect.vmfs import lvm, vmfs

    with open(vmfs6_image, "rb") as fh:
        fs = vmfs.VMFS(lvm.LVM([fh]).volumes[0].open())
        d = fs.descriptor
        mine = ours(vmfs6_image, "fs")
        assert mine["fsLabel"] == fs.label
        assert mine["uuid"] == str(fs.uuid)
        assert mine["mdAlignment"] == d.mdAlignment == 4096
        assert mine["sfbToLfbShift"] == d.sfbToLfbShift == 9
        assert mine["ptrBlockShift"] == d.ptrBlockShift
        assert mine["leaseIntervalMs"] == d.leaseIntervalMs
        assert mine["journalBlockSize"] == d.journalBlockSize


@pytest.mark.parametrize(("name", "prog"), [("vmfs5", "debugvmfs"), ("vmfs6", "debugvmfs6")])
def test_root_inode(name: str, prog: str, request: pytest.FixtureRequest) -> None:
    image = request.getfixturevalue(f"{name}_image")
    theirs = oracle_show(prog, image, 'inode["/"]')
    mine = ours(image, "inode", "/")
    assert int(theirs["ID"], 16) == mine["descAddr"] == 4
    assert int(theirs["ID2"], 16) == mine["generation"]
    assert int(theirs["Links"]) == mine["linkCount"]
    assert int(theirs["Type"]) == mine["type"]
    assert int(theirs["Flags"]) == mine["flags"]
    assert abs(size_value(theirs["Size"]) - mine["fileLength"]) < 0.01 * mine["fileLength"]
    assert size_value(theirs["Block size"]) == mine["blockSize"]
    assert int(theirs["Block count"]) == mine["numBlocks"]
    assert int(theirs["UID"]) == mine["uid"]
    assert int(theirs["GID"]) == mine["gid"]
    assert theirs["Mode"].split()[0] == mine["modeOctal"]
    assert int(theirs["ZLA"]) == mine["zla"]
    assert int(theirs["TBZ"]) == mine["tbz"]
    assert int(theirs["COW"]) == mine["cow"]
    assert theirs["Access Time"] == mine["atimeText"]
    assert theirs["Modify Time"] == mine["mtimeText"]
    assert theirs["Change Time"] == mine["ctimeText"]


@pytest.mark.parametrize(("name", "prog"), [("vmfs5", "debugvmfs"), ("vmfs6", "debugvmfs6")])
def test_root_listing(name: str, prog: str, request: pytest.FixtureRequest) -> None:
    image = request.getfixturevalue(f"{name}_image")
    listing = oracles.debugvmfs_ls([image], "/", prog=prog)
    theirs = {name: (nlink, size) for name, (_, nlink, size) in listing.items() if name not in (".", "..")}
    mine = {r["name"]: (r["nlink"], r["size"]) for r in ours(image, "ls", "-l", "/")}
    assert theirs == mine
    assert "directory" in mine and ".fdc.sf" in mine


def compare_heartbeats(prog: str, image: Path) -> set[int]:
    """The active heartbeats debugvmfs lists equal ours, and there is at least one (an empty
    answer from both sides would compare nothing)."""
    theirs = oracles.debugvmfs_heartbeats([image], prog=prog)
    mine = {hb["addr"]: hb for hb in ours(image, "heartbeats")}
    assert set(theirs) == set(mine)
    assert mine, "no active heartbeat on this image: nothing was compared"
    for addr, hb in mine.items():
        assert theirs[addr]["UUID"] == hb["owner"]
    return set(mine)


@pytest.fixture
def vmfs6_with_heartbeat(vmfs5_image: Path, vmfs6_image: Path, tmp_path: Path) -> tuple[Path, int]:
    """The VMFS6 sample was imaged with no host on it (every slot free): a copy whose slot 3
    carries the VMFS5 sample's live ESXi heartbeat, its address field set to slot 3's (VMFS6
    slots are 4 KiB apart, vmfs-format.md 4)."""
    with Volume.open(vmfs5_image) as vol:
        live = next(s for s in read_slots(vol) if s.in_use)
    with Volume.open(vmfs6_image) as vol:
        addr = vol.geometry.hb_slot_addr(3)
        assert not any(s.in_use for s in read_slots(vol))
    slot = bytearray(live.raw)
    assert int.from_bytes(slot[:4], "little") == HB_IN_USE
    slot[4:12] = addr.to_bytes(8, "little")
    image = copy_image(vmfs6_image, tmp_path / "v6hb.img")
    with open(image, "r+b") as f:
        f.seek(LVM_DATA + addr)
        f.write(slot)
    return image, addr


@pytest.mark.parametrize(("name", "prog"), [("vmfs5", "debugvmfs"), ("vmfs6", "debugvmfs6")])
def test_heartbeats_and_resources(name: str, prog: str, request: pytest.FixtureRequest) -> None:
    if name == "vmfs5":
        image = request.getfixturevalue("vmfs5_image")
        assert compare_heartbeats(prog, image) == {0x37B000}
        df = oracles.debugvmfs_df([image], prog=prog)
        fb = next(r for r in ours(image, "resources") if r["type"] == 1)
        assert (fb["total"], fb["used"]) == (df["Total blocks"], df["Allocated blocks"]) == (256, 15)
    else:
        image, addr = request.getfixturevalue("vmfs6_with_heartbeat")
        assert compare_heartbeats(prog, image) == {addr}
        # the sample itself: no active heartbeat for either reader
        assert oracles.debugvmfs_heartbeats([request.getfixturevalue("vmfs6_image")], prog=prog) == {}
        assert ours(request.getfixturevalue("vmfs6_image"), "heartbeats") == []
