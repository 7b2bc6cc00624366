"""The corruption corpus (fixtures/fsck), run as e2fsprogs runs its f_* tests: vmfs-fsck twice.

For every case, on a freshly formatted and populated volume (or a copy of the real VMFS6 sample)
corrupted through the construct structures:

* ``-n`` finds exactly the problems of ``expect.1``, exits 4 and changes no byte;
* ``-y`` repairs them (exit 1) and its own verification finds what ``expect.2`` says (nothing);
* a second ``-n`` run exits 0;
* every file the case does not involve keeps its content, size and mode;
* the oracles read the repaired volume: vmfs-fuse (VMFS6: vmfs6-fuse) lists the same tree and
  reads the same bytes, dissect.vmfs reads the same tree as our reader.

Fatal cases (``x_``) exit 12 (errors left, check aborted) with -n and -y and are not written.

``test_case6`` runs every case of the populated volume in its VMFS6 form (tests/fsck/cases.py):
the same damage on the populated volume formatted as VMFS6, repaired by the same passes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import oracles
from tests.fsck import cases, corrupt, volumes
from tests.fsck.cases import codes, run_fsck
from tests.helpers import diff_trees, digest

CASES = cases.load()
POPULATED = [c for c in CASES if c.base == "populated"]
#: what must survive a repair that does not involve a file or symlink (directories only have to
#: stay: their length and times follow their entries)
KEPT = ("size", "sha256", "target", "mode", "uid", "gid")


def _involved(path: str, case: cases.Case) -> bool:
    if path.startswith("/lost+found") or (path.count("/") == 1 and path.endswith(".sf")):
        return True  # what fsck adds, and the system files (bitmaps, FDs, heartbeats) it repairs
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in case.involved)


def _prepare(case: cases.Case, tmp_path: Path, base: Path) -> Path:
    image = tmp_path / "volume.img"
    volumes.copy(base, image)
    image.chmod(0o644)
    corrupt.apply(image, case.steps)
    return image


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case: cases.Case, tmp_path: Path, populated: Path, populated_tree: dict, vmfs6_image: Path) -> None:
    if case.base == "populated":
        _run(case, _prepare(case, tmp_path, populated), tmp_path, populated_tree, "vmfs-fuse")
    else:
        _run(case, _prepare(case, tmp_path, vmfs6_image), tmp_path, volumes.capture(vmfs6_image), "vmfs6-fuse")


@pytest.mark.parametrize("case", POPULATED, ids=[c.name for c in POPULATED])
def test_case6(case: cases.Case, tmp_path: Path, populated6: Path, populated6_tree: dict) -> None:
    form = case.as_vmfs6()
    _run(form, _prepare(form, tmp_path, populated6), tmp_path, populated6_tree, "vmfs6-fuse")


def _run(case: cases.Case, image: Path, tmp_path: Path, tree: dict, oracle: str) -> None:
    before = volumes.sparse_digest(image)
    rc, report = run_fsck(image, "-n", *case.args)
    assert codes(report) == case.expect1, report
    assert volumes.sparse_digest(image) == before, "-n wrote to the image"
    if case.kind != "repair":
        want = 12 if case.kind == "fatal" else 4
        assert rc == want
        rc, report = run_fsck(image, "-y", *case.args)
        assert rc == want, report
        assert volumes.sparse_digest(image) == before, "an unrepairable volume was written"
        return
    assert rc == 4
    rc, report = run_fsck(image, "-y", *case.args)
    assert rc == 1, report
    assert codes(report, "verify") == case.expect2
    assert all(f["fixed"] for f in report["repair"]["findings"]), report["repair"]
    rc, report = run_fsck(image, "-n", *case.args)
    assert (rc, codes(report)) == (0, case.expect2)
    after = volumes.capture(image)
    for path, rec in tree.items():
        if _involved(path, case):
            continue
        assert path in after, f"{path} lost"
        if "sha256" not in rec and "target" not in rec:
            continue  # a directory: its length follows its entries
        assert {k: after[path].get(k) for k in KEPT} == {k: rec.get(k) for k in KEPT}, path
    _oracles(image, tmp_path, after, oracle)


def _oracles(image: Path, tmp_path: Path, ours: dict[str, dict], oracle: str) -> None:
    # dissect.vmfs: the whole tree, metadata and content, as our reader has it
    assert diff_trees(ours, oracles.dissect_tree([image])) == []
    # vmfs-fuse / vmfs6-fuse: lists the same tree and reads the same bytes (vmfs-fuse cannot read
    # double-indirect files, vmfs-format.md 8.5, and shows .sdd.sf as a socket, 8.4; vmfs6-fuse
    # reads a file after its first hole as zeros: such files are read through dissect above)
    skip = oracles.holed_files(image) if oracle == "vmfs6-fuse" else frozenset()
    mnt = tmp_path / "mnt"
    with oracles.OracleMount(oracle, [image], mnt) as root:
        listed = set()
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                listed.add("/" + os.path.relpath(os.path.join(dirpath, name), root))
        assert listed == set(ours)
        for path, rec in ours.items():
            if "sha256" in rec and rec["size"] <= 64 << 20 and path not in ("/.sdd.sf",) and path not in skip:
                data = (root / path.lstrip("/")).read_bytes()
                assert digest(lambda o, n, d=data: d[o : o + n], len(data)) == rec["sha256"], path
