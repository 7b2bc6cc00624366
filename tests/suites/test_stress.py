"""Many threads in several processes on one read-write mount, one directory, the same few names.

Each round: a fresh volume, 3 processes x 3 threads (tests/suites/stress_worker.py) doing 150
operations each (half on names of their own, whose every successful change they record, half on
four names they all fight over, with fsync and operations that fail on purpose), then:

* no worker met an error it should not have (a ledger operation failing, EIO, ENOSPC...);
* no ``.fuse_hidden*`` or other name left once every file is closed;
* every ledger file holds exactly what its thread was told it holds (every acknowledged byte,
  nothing removed since), through the mount and through vmfs-tools' ``vmfs-fuse`` after the unmount;
* every shared file is made of cells of records that were written (or zeros from truncates);
* the mount ends with status 0, its log has no "lock ... was changed by another host" (one host
  only: nobody else can change our locks), and ``vmfs-fsck -n`` exits 0.

Rounds: a race that shows in 1 run out of 10 of the issue's 3-4-thread reproduction escapes n
independent rounds with probability 0.9**n: 30 rounds miss it with probability 0.9**30 = 4.2 %
(95.8 % to catch it), and each round here runs 9 workers rather than 3-4, so more chances per round.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.suites.conftest import RwMount, fsck_n, mkfs, oracle_mount
from tests.suites.stress_worker import CELL, FULL_DIR, SHARED, parse_cell

pytestmark = [pytest.mark.fuse, pytest.mark.slow, pytest.mark.oracle]

ROUNDS = 30
PROCS = 3
THREADS = 3
OPS = 150


def run_workers(root: Path, outdir: Path, seed: int) -> list[dict]:  # type: ignore[type-arg]
    """Start every worker process at once, wait for all; their threads' records."""
    procs = []
    for p in range(PROCS):
        out = outdir / f"worker{p}.json"
        argv = [sys.executable, "-m", "tests.suites.stress_worker", str(root), "--out", str(out), "--seed", str(seed),
                "--proc", str(p), "--threads", str(THREADS), "--ops", str(OPS)]
        procs.append((out, subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)))
    threads = []
    for out, proc in procs:
        text, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"worker exited {proc.returncode}: {text.decode(errors='replace')[-3000:]}"
        threads += json.loads(out.read_text())
    return threads


def snapshot(root: Path) -> dict[str, bytes]:
    """Every name in the directory with its bytes (None-free: directories map to b'<dir>')."""
    out = {}
    for name in sorted(os.listdir(root)):
        path = root / name
        out[name] = b"<dir>" if path.is_dir() else path.read_bytes()
    return out


def wait_released(root: Path, timeout: float = 10.0) -> list[str]:
    """libfuse removes a ``.fuse_hidden`` name at RELEASE, which is asynchronous: give it time."""
    deadline = time.monotonic() + timeout
    while True:
        hidden = [n for n in os.listdir(root) if n.startswith(".fuse_hidden")]
        if not hidden or time.monotonic() > deadline:
            return hidden
        time.sleep(0.1)


def shared_problems(name: str, data: bytes, records: set[int]) -> list[str]:
    """Cells of a shared file that are neither zero nor the right cell of a written record."""
    if len(data) % CELL:
        return [f"{name}: length {len(data)} is not a whole number of {CELL}-byte cells"]
    bad = []
    for i in range(0, len(data), CELL):
        raw = data[i:i + CELL]
        if raw == bytes(CELL):
            continue
        parsed = parse_cell(raw)
        if parsed is None or parsed[1] != i // CELL or parsed[0] not in records:
            bad.append(f"{name}: cell {i // CELL} at {i} is {raw.hex()}")
    return bad[:5]


def first_difference(a: bytes, b: bytes) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def check_tree(tree: dict[str, bytes], ledger: dict[str, bytes], records: set[int]) -> list[str]:
    problems = []
    for name, data in tree.items():
        if name in ledger:
            if data != ledger[name]:
                problems.append(f"{name}: {len(data)} bytes, the thread was told {len(ledger[name])} "
                                f"(first difference at {first_difference(data, ledger[name])})")
        elif name in SHARED:
            problems += shared_problems(name, data, records)
        elif name != FULL_DIR:
            problems.append(f"{name}: left behind ({len(data)} bytes)")
    problems += [f"{name}: acknowledged ({len(ledger[name])} bytes) but gone" for name in ledger if name not in tree]
    return problems


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_stress_round(tmp_path: Path, round_: int) -> None:
    image = mkfs(tmp_path / "v.img", "2G")
    started = time.monotonic()
    with RwMount(image, tmp_path / "m", "rw") as mount:
        root = mount.mountpoint / "d"
        root.mkdir()
        (root / FULL_DIR).mkdir()
        (root / FULL_DIR / "keep").write_bytes(b"keep")
        threads = run_workers(root, tmp_path, round_)
        worked = time.monotonic() - started
        hidden = wait_released(root)
        mounted = snapshot(root)
        rc = mount.close()
    errors = [e for t in threads for e in t["errors"]]
    ledger = {n: bytes.fromhex(d) for t in threads for n, d in t["ledger"].items()}
    records = {r for t in threads for r in t["records"]}
    ops: dict[str, int] = {}
    for t in threads:
        for k, v in t["ops"].items():
            ops[k] = ops.get(k, 0) + v
    print(f"stress round {round_}: {sum(ops.values())} operations in {worked:.1f} s: {dict(sorted(ops.items()))}")
    problems = [f"worker error: {e}" for e in errors[:10]]
    problems += [f"left behind after every file was closed: {n}" for n in hidden]
    problems += check_tree(mounted, ledger, records)
    if rc != 0:
        problems.append(f"vmfs-mount exited {rc}: {mount.output.read_text()[-2000:]}")
    problems += [f"mount log: {line}" for line in mount.lock_errors()[:5]]
    code, report = fsck_n(image)
    if code != 0:
        problems.append(f"vmfs-fsck -n exited {code}: {report[-3000:]}")
    with oracle_mount(image, tmp_path / "o") as oroot:
        on_disk = snapshot(oroot / "d")
    if on_disk != mounted:
        problems += [f"through vmfs-fuse: {p}" for p in check_tree(on_disk, ledger, records)]
        problems += [f"through vmfs-fuse: {n} differs from what the mount showed"
                     for n in sorted(set(on_disk) | set(mounted)) if on_disk.get(n) != mounted.get(n)]
    assert problems == [], "\n".join(problems)


def test_create_never_enoent(tmp_path: Path) -> None:
    """open(O_CREAT) in an existing directory never fails with ENOENT, whatever unlinks the name
    at the same moment (on ext4: 0 in 6,000).  Through libfuse's path-based API the kernel may
    find the name (a cached entry), send OPEN for a node whose name is gone, and get ENOENT back;
    the stress rounds count this and go on (``shared-write-ENOENT``), this test requires none.
    ESTALE is the mount's answer there; the kernel looks the name up again and retries once, so
    the caller sees it only when the name is unlinked again inside the retry: rare (seen once in
    6,000 on a loaded machine) and allowed up to 0.1 % (docs/guide.md); anything else fails."""
    image = mkfs(tmp_path / "v.img", "1G")
    counts = {"ENOENT": 0, "ESTALE": 0, "other": 0}
    with RwMount(image, tmp_path / "m", "rw") as mount:
        target = mount.mountpoint / "X"

        def creator() -> None:
            for _ in range(3000):
                try:
                    fd = os.open(target, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
                    os.write(fd, b"x")
                    os.close(fd)
                except OSError as e:
                    counts[errno.errorcode[e.errno] if e.errno in (errno.ENOENT, errno.ESTALE) else "other"] += 1

        def unlinker() -> None:
            for _ in range(3000):
                try:
                    os.unlink(target)
                except FileNotFoundError:
                    pass

        workers = [threading.Thread(target=f) for f in (creator, creator, unlinker)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        rc = mount.close()
    assert rc == 0
    print(f"open(O_CREAT) racing unlink: {counts} in 6000")
    assert counts["ENOENT"] == 0 and counts["other"] == 0, f"open(O_CREAT) failed in an existing directory: {counts}"
    assert counts["ESTALE"] <= 6, f"ESTALE more often than the kernel's one retry explains: {counts}"
    code, report = fsck_n(image)
    assert code == 0, report[-3000:]
