"""pjdfstest (the POSIX conformance suite of FreeBSD, ZFS and FUSE filesystems) on a read-write mount.

The whole suite runs with ``prove -j2`` (two test files at a time, so the mount serves two
clients at once; on two cores it takes half the time of one at a time, with the same subtests
and results) from a directory on a fresh volume.  Every failing subtest must
be in ``pjdfstest_expected.txt``, whose entries are the things VMFS cannot store (FIFOs, device
nodes, sockets, hard links; sub-second and post-2106 times), each with its reason; any other
failure fails the test, and so does an expected failure that passes (the list must stay true).

Two mounts:

* ``rw,allow_other,default_permissions``: pjdfstest's non-root steps (``-u 65534``) reach the
  mount, and the kernel checks modes and owners; the whole suite is compared.
* ``rw`` alone: FUSE lets no uid but the mounter's (root) in, so every non-root step gets EACCES
  from the kernel before the filesystem is asked, which no filesystem can change.  This run
  compares the test files that never switch user (about two thirds of them); the files that do
  are checked by the first run only.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.suites.conftest import RwMount, fsck_n, mkfs
from tests.suites.tap import Expected, FileResult, format_ranges, load_expected, parse_prove

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

EXPECTED = Path(__file__).with_name("pjdfstest_expected.txt")
#: 8 GiB: 1984 file descriptors and 7936 blocks; pjdfstest holds at most a few hundred small
#: files at once and writes little data, so it never runs out (an ENOSPC would be a failure)
VOLUME_SIZE = "8G"
SWITCHES_USER = re.compile(r"(^|\s)-[ug]\s+[\d$]")

#: two variants run with group commit (vmfs.cluster.batch): the suite then checks POSIX semantics
#: with operations waiting in the open batch, read back through its pending sectors
VARIANTS = {
    "allow_other": ("rw,allow_other,default_permissions,commit=0.05", False, "vmfs5"),
    "root_only": ("rw", True, "vmfs5"),
    "root_only-vmfs6": ("rw,commit=0.05", True, "vmfs6"),
}


def suite_files(tests: Path, *, root_only: bool) -> list[str]:
    """The suite's test files (relative names); with ``root_only`` only those whose every step
    runs as root (no ``-u UID``/``-g GID`` anywhere in the script)."""
    names = sorted(str(p.relative_to(tests)) for p in tests.rglob("*.t"))
    if root_only:
        names = [n for n in names if not SWITCHES_USER.search((tests / n).read_text())]
    return names


def compare(results: dict[str, FileResult], files: list[str], expected: list[Expected]
            ) -> tuple[dict[str, dict[int, str]], dict[str, set[int]]]:
    """(unexpected failures per file: subtest -> what it tried, expected failures that passed)."""
    unexpected: dict[str, dict[int, str]] = {}
    fixed: dict[str, set[int]] = {}
    for name in files:
        result = results.get(name)
        if result is None:
            unexpected[name] = {0: "prove did not run this file"}
            continue
        bad = {n: why for n, why in result.failed().items()
               if not any(e.covers(name, n) for e in expected)}
        if bad:
            unexpected[name] = bad
        passed = result.passed()
        for e in expected:
            if e.file != name:
                continue
            now_ok = passed if e.subtests is None and not result.failed() else passed & set(e.subtests or ())
            if now_ok:
                fixed.setdefault(name, set()).update(now_ok)
    return unexpected, fixed


def describe(unexpected: dict[str, dict[int, str]], limit: int = 6) -> str:
    lines = []
    for name, bad in sorted(unexpected.items()):
        lines.append(f"{name} {format_ranges(set(bad))}")
        lines += [f"    {n}: {why}" for n, why in sorted(bad.items())[:limit]]
    return "\n".join(lines)


@pytest.mark.timeout(3600)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_pjdfstest(pjdfstest_dir: Path, tmp_path: Path, variant: str) -> None:
    options, root_only, fs = VARIANTS[variant]
    tests = pjdfstest_dir / "tests"
    files = suite_files(tests, root_only=root_only)
    expected = load_expected(EXPECTED)
    image = mkfs(tmp_path / "v.img", VOLUME_SIZE, "-t", fs)
    started = time.monotonic()
    with RwMount(image, tmp_path / "m", options) as mount:
        work = mount.mountpoint / "pjdfstest"
        work.mkdir(mode=0o755)
        run = subprocess.run(["prove", "-j2", "-rv", "--merge", *(str(tests / n) for n in files)], cwd=work,
                             capture_output=True, text=True, timeout=3300)
        leftovers = sorted(os.listdir(work))
        rc = mount.close()
    took = time.monotonic() - started
    (tmp_path / "prove.txt").write_text(run.stdout + run.stderr)
    results = parse_prove(run.stdout, str(tests))
    unexpected, fixed = compare(results, files, expected)
    subtests = sum(len(r.outcomes) for r in results.values())
    print(f"pjdfstest {variant}: {len(files)} files, {subtests} subtests in {took:.0f} s; "
          f"{sum(map(len, unexpected.values()))} unexpected failures in {len(unexpected)} files, "
          f"{sum(map(len, fixed.values()))} expected failures passing; left behind: {leftovers[:10]}")
    (tmp_path / "unexpected.txt").write_text(describe(unexpected, limit=10_000) + "\n")
    assert rc == 0, f"vmfs-mount exited {rc}: {mount.output.read_text()[-2000:]}"
    assert mount.lock_errors() == [], mount.lock_errors()[:5]
    code, report = fsck_n(image)
    assert code == 0, report[-3000:]
    assert not unexpected, (f"pjdfstest failures not in {EXPECTED.name} (full list: {tmp_path}/unexpected.txt):\n"
                            + describe(unexpected)[:20_000])
    assert not fixed, (f"expected failures in {EXPECTED.name} that pass now (take them off the list): "
                       + "; ".join(f"{n} {format_ranges(s)}" for n, s in sorted(fixed.items())))
