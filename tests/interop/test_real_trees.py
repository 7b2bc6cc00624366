"""Acceptance: the real ESXi samples read identically through vmfs-mount, the C oracles
(vmfs-fuse for VMFS5, vmfs6-fuse for VMFS6) and dissect.vmfs."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tests import oracles
from tests.conftest import Mount, tool
from tests.helpers import capture_mount, diff_trees

pytestmark = [pytest.mark.oracle, pytest.mark.fuse]

ORACLE = {"vmfs5": "vmfs-fuse", "vmfs6": "vmfs6-fuse"}


def _ours(image: Path, mnt: Path) -> dict:
    with Mount([tool("vmfs-mount"), str(image), str(mnt)], mnt) as root:
        return capture_mount(root)


@pytest.mark.parametrize("name", ["vmfs5", "vmfs6"])
def test_tree_equals_fuse_oracle(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    image = request.getfixturevalue(f"{name}_image")
    ours = _ours(image, tmp_path / "ours")
    # vmfs-fuse (vmfs-tools 0.2.5) reports the VMFS5 .sdd.sf, a type-5 FD whose stored mode is
    # 040700, as a socket (S_IFREG OR-ed into S_IFDIR) and cannot read it; vmfs-format.md 8.4.
    # That entry is checked against dissect.vmfs below instead.
    quirk = {"/.sdd.sf"} if name == "vmfs5" else set()
    theirs = oracles.fuse_tree(ORACLE[name], [image], tmp_path / "oracle", unreadable=frozenset(quirk))
    for path in quirk:
        assert stat.S_ISSOCK(theirs[path]["mode"]), "the vmfs-fuse .sdd.sf quirk is gone: drop the exemption"
        assert stat.S_ISDIR(ours[path]["mode"])
        del theirs[path]
    ours_cmp = {p: r for p, r in ours.items() if p not in quirk}
    assert diff_trees(ours_cmp, theirs) == []
    # the content really was compared: every regular file carries a hash, on both sides
    regular = [p for p, r in ours_cmp.items() if stat.S_ISREG(r["mode"])]
    assert len(regular) >= 10 and all("sha256" in ours_cmp[p] and "sha256" in theirs[p] for p in regular)
    assert ours["/directory/symlink"]["target"] == "file4"


@pytest.mark.parametrize("name", ["vmfs5", "vmfs6"])
def test_tree_equals_dissect(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    image = request.getfixturevalue(f"{name}_image")
    ours = _ours(image, tmp_path / "ours")
    theirs = oracles.dissect_tree([image])
    assert diff_trees(ours, theirs) == []
    assert len(ours) >= 14
    assert all("sha256" in r for r in theirs.values() if stat.S_ISREG(r["mode"]))
