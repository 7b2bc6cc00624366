"""fio with data verification on a read-write mount.

Two fio processes at once on one mount: ``mixed`` (4 jobs of random read/write on files of their
own plus 4 jobs on disjoint quarters of one shared file, every written block checked back with
crc32c while the jobs run: verify_backlog) and ``persist`` (2 jobs of random writes with fsync,
verified at their end).  Then the volume is unmounted, checked (``vmfs-fsck -n``), mounted again
and ``persist`` is verified once more from the disk alone (``--verify_only``: a fresh mount has no
cached pages).  Pass: fio exit 0 with no verify error, no "lock ... was changed by another host"
in either mount's log, fsck clean after each unmount.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.suites.conftest import RwMount, fsck_n, mkfs

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

COMMON = """\
[global]
directory=${DIR}
ioengine=psync
bsrange=4k-64k
verify=crc32c
do_verify=1
verify_fatal=1
fsync=16
fsync_on_close=1
randrepeat=1
"""

MIXED = COMMON + """\
verify_backlog=128

[own-files]
rw=randrw
size=32m
numjobs=4

[shared-file]
rw=randrw
filename=shared.dat
filesize=64m
size=16m
offset_increment=16m
numjobs=4
"""

# verify_only replays the writes from the same seeds: randwrite only (randrw's read/write
# choices draw from the generator too, so a replay without the reads would not match)
PERSIST = COMMON + """\
[persist]
rw=randwrite
size=32m
numjobs=2
"""


def start_fio(jobfile: Path, directory: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "DIR": str(directory)}
    # fio keeps its verify state files (*-verify.state) in its working directory: the test's own
    # folder, which the re-verify run after the remount shares, never the checkout
    return subprocess.Popen(["fio", "--output-format=json", f"--output={out}", *extra, str(jobfile)], env=env,
                            cwd=jobfile.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish_fio(proc: subprocess.Popen[str], out: Path) -> dict[str, int]:
    """Wait for fio; fail on a non-zero exit, a job error or any verify message. Bytes done."""
    text, _ = proc.communicate(timeout=1200)
    report = out.read_text() if out.exists() else ""
    assert proc.returncode == 0, f"fio exited {proc.returncode}: {text[-3000:]}{report[-3000:]}"
    start = report.find("{")
    assert start >= 0, f"no JSON report from fio: {text[-3000:]}{report[-3000:]}"
    messages = text + report[:start]  # fio's own messages (verify errors) come before the JSON
    assert "verify:" not in messages, messages[-3000:]
    data = json.loads(report[start:])
    errors = {job["jobname"]: job["error"] for job in data["jobs"] if job["error"]}
    assert errors == {}, errors
    return {"read": sum(j["read"]["io_bytes"] for j in data["jobs"]),
            "write": sum(j["write"]["io_bytes"] for j in data["jobs"])}


@pytest.mark.timeout(1800)
def test_fio_verify(tmp_path: Path) -> None:
    mixed, persist = tmp_path / "mixed.fio", tmp_path / "persist.fio"
    mixed.write_text(MIXED)
    persist.write_text(PERSIST)
    image = mkfs(tmp_path / "v.img", "2G")
    started = time.monotonic()
    with RwMount(image, tmp_path / "m", "rw", log=tmp_path / "mount1.log") as mount:
        procs = [(start_fio(j, mount.mountpoint, tmp_path / f"{j.stem}.json"), tmp_path / f"{j.stem}.json")
                 for j in (mixed, persist)]
        done = [finish_fio(p, out) for p, out in procs]
        rc = mount.close()
    ran = time.monotonic() - started
    assert rc == 0, f"vmfs-mount exited {rc}: {mount.output.read_text()[-2000:]}"
    assert mount.lock_errors() == [], mount.lock_errors()[:5]
    code, report = fsck_n(image)
    assert code == 0, report[-3000:]
    with RwMount(image, tmp_path / "m", "rw", log=tmp_path / "mount2.log") as again:
        proc = start_fio(persist, again.mountpoint, tmp_path / "verify.json", "--verify_only")
        verified = finish_fio(proc, tmp_path / "verify.json")
        rc = again.close()
    assert rc == 0 and again.lock_errors() == [], again.lock_errors()[:5]
    assert verified["read"] >= 64 << 20, verified
    code, report = fsck_n(image)
    assert code == 0, report[-3000:]
    print(f"fio: mixed {done[0]}, persist {done[1]} in {ran:.1f} s; re-verified {verified['read'] >> 20} MiB "
          f"after a remount; total {time.monotonic() - started:.1f} s")
