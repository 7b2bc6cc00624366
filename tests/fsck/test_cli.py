"""vmfs-fsck's interface: e2fsck's options and exit codes, one-line usage errors, preen mode, the
refusal to repair beside a live host, JSON, and the interactive policy."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import copy_image, tool
from tests.fsck import corrupt, volumes
from tests.fsck.cases import codes, run_fsck
from vmfs.fsck import ExitCode, FsckOptions, Mode, Policy, check

SAMPLE_HOST = "61137d5a-a2df8778-7ed5-000c29801686"


def fsck(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("vmfs-fsck"), *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["-n", "-y", "x.img"],
        ["-p", "-y", "x.img"],
        ["--bogus", "x.img"],
        ["-n", "--lease", "-1", "x.img"],
        ["-n", "--stale-host", "not-a-uuid", "x.img"],
        ["-n", "--host-uuid", "1234", "x.img"],
        ["-C", "zero", "x.img"],
        ["--json", "x.img"],
    ],
)
def test_usage_errors_exit_16_with_one_line(args: list[str]) -> None:
    r = fsck(*args)
    assert r.returncode == ExitCode.USAGE
    assert r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("vmfs-fsck: ")
    assert "Traceback" not in r.stderr


def test_help() -> None:
    r = fsck("--help")
    assert r.returncode == 0 and "-n" in r.stdout and "--stale-host" in r.stdout


def test_operational_errors_exit_8(tmp_path: Path) -> None:
    r = fsck("-n", str(tmp_path / "missing.img"))
    assert r.returncode == ExitCode.OPERATIONAL and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    zeros = tmp_path / "zeros.img"
    zeros.write_bytes(bytes(64 << 20))
    r = fsck("-n", str(zeros))
    assert r.returncode == ExitCode.OPERATIONAL and "Traceback" not in r.stderr


def test_interactive_needs_a_terminal(populated: Path) -> None:
    r = subprocess.run([tool("vmfs-fsck"), str(populated)], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert r.returncode == ExitCode.OPERATIONAL and "terminal" in r.stderr


def _damaged(tmp_path: Path, populated: Path, steps: list[dict]) -> Path:
    image = volumes.copy(populated, tmp_path / "v.img")
    image.chmod(0o644)
    corrupt.apply(image, steps)
    return image


def test_text_output_and_progress(tmp_path: Path, populated: Path) -> None:
    image = _damaged(tmp_path, populated, [{"op": "fd", "path": "/d1/big", "field": "linkCount", "value": 5}])
    r = fsck("-n", "-C", "0", str(image))  # not a terminal: no progress bars, same output
    assert r.returncode == 4
    assert "Pass 1: " in r.stdout and "Pass 6: " in r.stdout
    assert "/d1/big (FD 0xc00044): link count is 5, counted 1.  Fix it? no" in r.stdout
    r = fsck("-y", str(image))
    assert r.returncode == 1 and "Fix it? yes" in r.stdout and "VOLUME WAS MODIFIED" in r.stdout


def test_json_report(tmp_path: Path, populated: Path) -> None:
    image = _damaged(tmp_path, populated, [{"op": "fd", "path": "/top", "field": "numBlocks", "value": 9}])
    r = fsck("-n", "--json", str(image))
    report = json.loads(r.stdout)
    assert report["exitCode"] == r.returncode == 4
    (finding,) = report["check"]["findings"]
    assert finding["name"] == "FD_COUNT_WRONG" and finding["pass"] == 2 and finding["answer"] is False
    assert finding["facts"]["counted"] == 2 and report["repair"] is None


def test_preen_fixes_safe_problems_only(tmp_path: Path, populated: Path) -> None:
    image = _damaged(tmp_path, populated, [{"op": "cluster", "resource": "FB", "cluster": 0,
                                            "field": "freeResources", "value": {"add": 2}}])
    r = fsck("-p", str(image))
    assert r.returncode == 1 and "FIXED" in r.stdout
    assert fsck("-n", str(image)).returncode == 0
    image = _damaged(tmp_path, populated, [{"op": "pointer", "path": "/top", "index": 1, "like": "/d1/big"}])
    before = volumes.sparse_digest(image)
    r = fsck("-p", str(image))
    assert r.returncode == 4 and "UNEXPECTED INCONSISTENCY" in r.stdout
    assert volumes.sparse_digest(image) == before


def test_refuses_to_repair_beside_a_live_host(tmp_path: Path, vmfs5_image: Path) -> None:
    """The real sample's slot 984 is in use and not watched: -y refuses (12) and writes nothing;
    --force-live repairs anyway and leaves the slot alone."""
    image = copy_image(vmfs5_image, tmp_path / "sample.img")
    corrupt.apply(image, [{"op": "fd", "path": "/directory/file4", "field": "linkCount", "value": 3}])
    before = volumes.sparse_digest(image)
    rc, report = run_fsck(image, "-y")
    assert rc == ExitCode.UNCORRECTED | ExitCode.OPERATIONAL
    assert SAMPLE_HOST in report["refused"]
    assert volumes.sparse_digest(image) == before
    rc, report = run_fsck(image, "-y", "--force-live")
    assert rc == 1, report
    rc, report = run_fsck(image, "-n")
    assert (rc, codes(report)) == (0, [])
    assert "slot 984: in use by host" in "\n".join(report["check"]["notes"])


def test_vmfs6_sample_is_repaired(tmp_path: Path, vmfs6_image: Path) -> None:
    """Damage in a copy of the real VMFS6 sample: repaired, and the tree is the sample's again."""
    image = copy_image(vmfs6_image, tmp_path / "v6.img")
    corrupt.apply(image, [{"op": "dirent6_hash", "dir": "/directory", "name": "file2"},
                          {"op": "fd", "path": "/directory/file4", "field": "linkCount", "value": 7}])
    rc, report = run_fsck(image, "-y")
    assert rc == 1 and report["refused"] is None, report
    assert codes(report) == ["0x03000a DIR6_DAMAGED", "0x040007 LINK_COUNT_WRONG"]
    assert run_fsck(image, "-n")[0] == 0
    def files(tree: dict) -> dict:  # the system files hold fsck's own journal and heartbeat
        return {p: rec for p, rec in tree.items() if not p.endswith(".sf")}

    assert files(volumes.capture(image)) == files(volumes.capture(vmfs6_image))


def test_vmfs6_damage_it_cannot_repair_is_refused(tmp_path: Path, populated6: Path) -> None:
    """A zeroed .fbb.sf header (an LFB parent with its SFB child: not rebuilt on VMFS6) is fatal:
    exit 12, one line that names it, nothing written."""
    image = copy_image(populated6, tmp_path / "v6.img")
    corrupt.apply(image, [{"op": "resource_header", "file": ".fbb.sf", "zero": True}])
    before = volumes.sparse_digest(image)
    r = fsck("-y", str(image))
    assert r.returncode == 12 and "Traceback" not in r.stderr + r.stdout
    assert ".fbb.sf" in r.stdout
    assert volumes.sparse_digest(image) == before


@pytest.mark.parametrize("answer", [False, True])
def test_interactive_answers(tmp_path: Path, populated: Path, answer: bool) -> None:
    image = _damaged(tmp_path, populated, [{"op": "fd", "path": "/d1/big", "field": "linkCount", "value": 5}])
    asked: list[str] = []

    def ask(problem, subject, message):  # type: ignore[no-untyped-def]
        asked.append(message)
        return answer

    before = volumes.sparse_digest(image)
    report = check([str(image)], FsckOptions(Policy(Mode.ASK, ask=ask)))
    assert len(asked) == 1  # asked once: the repair run remembers the answer
    if answer:
        assert report.exit_code == 1
        assert check([str(image)], FsckOptions(Policy(Mode.NO))).exit_code == 0
    else:
        assert report.exit_code == 4 and volumes.sparse_digest(image) == before
