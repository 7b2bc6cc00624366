"""Acceptance: vmfs-debug prints the values debugvmfs/debugvmfs6 print for the FS descriptor and
the root directory."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import tool

pytestmark = pytest.mark.oracle

ENV = {**os.environ, "TZ": "UTC"}
UNITS = {"bytes": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def oracle_show(prog: str, image: Path, *what: str) -> dict[str, str]:
    # `show` with no variable prints the FS descriptor (`show fs` prints nothing and exits 1);
    # debugvmfs may exit with status 1 after printing an answer: judge it by what it prints.
    out = subprocess.run([prog, str(image), "show", *what], capture_output=True, text=True, env=ENV)
    values = {}
    for line in out.stdout.splitlines():
        if line.startswith("VMFS version:"):  # debugvmfs6 prints this before every command
            continue
        key, sep, value = line.partition(":")
        if sep:
            values[key.strip()] = value.strip()
    return values


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
    out = subprocess.run([prog, str(image), "ls", "-l", "/"], capture_output=True, text=True, env=ENV)
    theirs = {}
    for line in out.stdout.splitlines():
        m = re.match(r"(\S+)\s+(\d+)\s+\S+\s+\S+\s+(\d+)\s+(\S+ \S+) (.+)$", line)
        if m and m.group(5) not in (".", ".."):
            theirs[m.group(5)] = (int(m.group(2)), int(m.group(3)))
    mine = {r["name"]: (r["nlink"], r["size"]) for r in ours(image, "ls", "-l", "/")}
    assert theirs == mine


@pytest.mark.parametrize(("name", "prog"), [("vmfs5", "debugvmfs"), ("vmfs6", "debugvmfs6")])
def test_heartbeats_and_resources(name: str, prog: str, request: pytest.FixtureRequest) -> None:
    image = request.getfixturevalue(f"{name}_image")
    out = subprocess.run([prog, str(image), "show_heartbeats"], capture_output=True, text=True).stdout
    theirs = {int(m.group(1), 16) for m in re.finditer(r"Heartbeat ID (0x[0-9a-f]+)", out)}
    mine = {hb["addr"] for hb in ours(image, "heartbeats")}
    assert theirs == mine
    if name == "vmfs5":
        assert mine == {0x37B000}
        df = subprocess.run([prog, str(image), "df"], capture_output=True, text=True).stdout
        total = int(re.search(r"Total blocks\s*:\s*(\d+)", df).group(1))
        used = int(re.search(r"Allocated blocks\s*:\s*(\d+)", df).group(1))
        fb = next(r for r in ours(image, "resources") if r["type"] == 1)
        assert (fb["total"], fb["used"]) == (total, used) == (256, 15)
