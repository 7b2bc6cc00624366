"""A writer host killed at random moments; another host recovers it.  The writer is a real
process killed with SIGKILL, or a host of this process on the device object the survivor
shares, whose device handle dies under it."""

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
from tests.cluster.killed_writer import WRITER_UUID, write_until_killed
from tests.conftest import REPO
from vmfs.cluster.attachment import HostAttachment
from vmfs.cluster.host import HostIdentity, ManualClock
from vmfs.device.base import BlockDevice
from vmfs.device.file import FileDevice
from vmfs.device.shared import SharedDevice
from vmfs.volume.slots import read_slots
from vmfs.volume.usage import marked_used, referenced_resources
from vmfs.write.posix import WritableFileSystem

pytestmark = [pytest.mark.crash, pytest.mark.slow]


def wait_for_lines(log: Path, lines: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:  # type: ignore[type-arg]
    """Wait until the writer's log holds ``lines`` acknowledged operations (it must not die)."""
    deadline = time.monotonic() + timeout
    while not log.exists() or len(log.read_text().splitlines()) < lines:
        assert proc.poll() is None, f"the writer exited ({proc.returncode}) before killing"
        assert time.monotonic() < deadline, f"the writer acknowledged fewer than {lines} operations in {timeout} s"
        time.sleep(0.05)


def survive(survivor: HostAttachment, clock: ManualClock, acked: dict[str, str], round_: int) -> None:
    """Another host takes over the killed writer: its slot is still claimed, so the survivor waits
    out its lease, then recovers it; every acknowledged file is there with its bytes."""
    clock.advance(25)
    assert [s.slot for s in read_slots(survivor.volume) if s.in_use] == [survivor.heartbeat.slot]
    fs = WritableFileSystem(survivor)
    present = {f"/w/{e.name}" for e in fs.listdir("/w")}
    for path, digest in acked.items():
        assert path in present, f"round {round_}: acknowledged {path} is missing"
        fd = fs.resolve(path)
        assert hashlib.sha256(survivor.volume.reader(fd).read(0, fd.size)).hexdigest() == digest, path
    assert len(present - set(acked)) <= 2  # at most the operation in flight
    refs, used = referenced_resources(survivor.volume), marked_used(survivor.volume)
    assert all(refs[k] == used[k] for k in used), f"round {round_}: leak or double allocation"
    # clean up the in-flight leftovers so the next round's acknowledged set stays exact
    for extra in present - set(acked):
        fs.unlink(extra)
    survivor.close()
    assert len(acked) > 2 * (round_ + 1)  # every round made progress


def _prepare(tmp_path: Path) -> Path:
    image = make_volume(tmp_path / "vol.img", 4 << 30, num_fds=20000, num_sub_blocks=32000)
    vol = HostAttachment.open(image, host=HostIdentity(uuid="70000009-00000000-0000-020000000009"))
    WritableFileSystem(vol).mkdir("/w")
    vol.close()
    return image


@pytest.mark.parametrize("storage", ["image file", pytest.param("iscsi", marks=pytest.mark.network),
                                     pytest.param("rbd", marks=pytest.mark.network)])
def test_sigkill_writer_then_takeover(tmp_path: Path, storage: str, request: pytest.FixtureRequest) -> None:
    """The writer is a real process, killed with SIGKILL at a random moment; on the image file, on
    a real iSCSI LUN over it (each host its own session: reservation mode on tgt), or on a copy of
    it in a real Ceph cluster's RBD image (each host its own client: ATS mode)."""
    image: Path | str = _prepare(tmp_path)
    if storage == "iscsi":
        image = request.getfixturevalue("tgt_target").export("sigkill", image)
    elif storage == "rbd":
        image = request.getfixturevalue("ceph_cluster").import_image("sigkill", image)
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
        clock = ManualClock()
        survive(HostAttachment.open(image, host=host(3, clock)), clock, acked, round_)


class Killed(BaseException):
    """The writer host's process is gone (no library code may catch this and carry on)."""


class DyingHandle(SharedDevice):
    """A host's handle on the shared device whose process dies after ``left`` more writes, ATS
    and flushes: from then on nothing of that host reaches the device, as after SIGKILL."""

    def __init__(self, device: BlockDevice) -> None:
        super().__init__(device)
        self.left: int | None = None

    def _spend(self) -> None:
        if self.left is not None:
            if self.left <= 0:
                raise Killed
            self.left -= 1

    def _write(self, offset: int, data: bytes) -> None:
        self._spend()
        super()._write(offset, data)

    def _compare_and_write(self, offset: int, expected: bytes, new: bytes) -> bool:
        self._spend()
        return super()._compare_and_write(offset, expected, new)

    def flush(self) -> None:
        self._spend()
        super().flush()


def test_killed_writer_on_the_shared_device_then_takeover(tmp_path: Path) -> None:
    """The same rounds with both hosts in this process on one device object: the writer's handle
    dies after a random number of device operations (mid-commit included), the survivor takes
    over through its own handle."""
    image = _prepare(tmp_path)
    rng = random.Random(11)
    acked: dict[str, str] = {}
    device = FileDevice(image, readonly=False)
    try:
        for round_ in range(8):
            clock = ManualClock()
            handle = DyingHandle(device)
            writer = HostAttachment.from_devices([handle], host=HostIdentity(uuid=WRITER_UUID, clock=clock))
            handle.left = rng.randrange(30, 600)
            try:
                write_until_killed(WritableFileSystem(writer), len(acked), acked.__setitem__)
            except Killed:
                pass
            writer.crash()
            survive(HostAttachment.from_devices([SharedDevice(device)], host=host(3, clock)), clock, acked, round_)
    finally:
        device.close()
