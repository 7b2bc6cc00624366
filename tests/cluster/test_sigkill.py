"""A real writer process killed with SIGKILL at random moments; another host recovers it."""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cluster.conftest import host, make_volume
from tests.conftest import REPO
from vmfs.cluster.heartbeat import read_slots
from vmfs.cluster.host import HostIdentity, ManualClock
from vmfs.volume.usage import marked_used, referenced_resources
from vmfs.volume.volume import Volume
from vmfs.write.posix import WritableFileSystem

pytestmark = [pytest.mark.crash, pytest.mark.slow]


def wait_for_lines(log: Path, lines: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:  # type: ignore[type-arg]
    """Wait until the writer's log holds ``lines`` acknowledged operations (it must not die)."""
    deadline = time.monotonic() + timeout
    while not log.exists() or len(log.read_text().splitlines()) < lines:
        assert proc.poll() is None, f"the writer exited ({proc.returncode}) before killing"
        assert time.monotonic() < deadline, f"the writer acknowledged fewer than {lines} operations in {timeout} s"
        time.sleep(0.05)


def test_sigkill_writer_then_takeover(tmp_path: Path) -> None:
    image = make_volume(tmp_path / "vol.img", 4 << 30, num_fds=20000, num_sub_blocks=32000)
    vol = Volume.open(image, readonly=False, host=HostIdentity(uuid="70000009-00000000-0000-020000000009"))
    WritableFileSystem(vol).mkdir("/w")
    vol.close()
    rng = random.Random(11)
    log = tmp_path / "acked.log"
    for round_ in range(8):
        proc = subprocess.Popen([sys.executable, "-m", "tests.cluster.killed_writer", str(image), str(log)],
                                cwd=REPO, stderr=subprocess.PIPE)
        # kill at a random moment once this round has acknowledged some operations: on a busy
        # machine a fixed sleep may end before the writer even started (no wall-clock bet)
        wait_for_lines(log, 3 * (round_ + 1), proc)
        time.sleep(rng.uniform(0.0, 1.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        err = proc.stderr.read().decode() if proc.stderr else ""
        assert "Traceback" not in err, err
        acked = dict(line.split() for line in log.read_text().splitlines())
        # the writer's slot is still claimed: a survivor waits out its lease, then recovers it
        clock = ManualClock()
        survivor = Volume.open(image, readonly=False, host=host(3, clock))
        clock.advance(25)
        assert [s.slot for s in read_slots(survivor) if s.in_use] == [survivor.heartbeat.slot]
        fs = WritableFileSystem(survivor)
        present = {f"/w/{e.name}" for e in fs.listdir("/w")}
        for path, digest in acked.items():
            assert path in present, f"round {round_}: acknowledged {path} is missing"
            fd = fs.resolve(path)
            assert hashlib.sha256(survivor.reader(fd).read(0, fd.size)).hexdigest() == digest, path
        assert len(present - set(acked)) <= 2  # at most the operation in flight
        refs, used = referenced_resources(survivor), marked_used(survivor)
        assert all(refs[k] == used[k] for k in used), f"round {round_}: leak or double allocation"
        # clean up the in-flight leftovers so the next round's log stays exact
        for extra in present - set(acked):
            fs.unlink(extra)
        survivor.close()
        assert len(acked) > 2 * (round_ + 1)  # every round made progress
