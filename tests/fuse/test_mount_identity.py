"""One process writes a volume as one host (issue 10, fault 8), and vmfs-umount returns only once
the volume is closed (fault 9).

Two read-write mounts of one image under one host UUID would share heartbeat slot, journal and
every lock; the second is refused naming the first.  A killed writer's identity comes back at
once (the kernel drops its flock) and replays its journal.  A slot in use under our UUID that no
local lock explains is watched before reuse, and a live renewer refuses us.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyvmfs_tools.umount import process_gone

from tests.conftest import REPO, tool, unmount, wait_mounted
from tests.fsck.cases import codes, run_fsck
from vmfs.cluster.attachment import HostAttachment
from vmfs.cluster.host import HostIdentity, ManualClock
from vmfs.cluster.identitylock import RUN_DIR_ENV, run_dir
from vmfs.errors import BusyError
from vmfs.volume.namespace import FileSystem
from vmfs.volume.slots import read_slot, read_slots
from vmfs.volume.volume import Volume
from vmfs.write.posix import WritableFileSystem

OTHER_HOST = "6100000a-00000000-0000-02000000000a"


def _image(tmp_path: Path, name: str = "v.img") -> Path:
    image = tmp_path / name
    subprocess.run([tool("vmfs-mkfs"), "-t", "vmfs5", "--size", "1G", str(image)], check=True, capture_output=True)
    return image


def _records(image: Path) -> list[dict[str, object]]:
    """The lock-file records naming ``image`` (this machine's writers of it)."""
    found = []
    for path in run_dir().glob("*.lock"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if record.get("image") == str(image):
            found.append(record)
    return found


def _in_use(image: Path) -> list[tuple[int, str]]:
    with Volume.open(image) as vol:
        return [(s.slot, s.owner) for s in read_slots(vol, in_use_only=True)]


def _cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode()


@pytest.mark.fuse
def test_second_mount_as_same_host_refused_other_host_allowed(tmp_path: Path) -> None:
    image = _image(tmp_path)
    a, b, c = (tmp_path / n for n in ("a", "b", "c"))
    for m in (a, b, c):
        m.mkdir()
    subprocess.run([tool("vmfs-mount"), "-o", "rw", str(image), str(a)], check=True, timeout=30)
    try:
        (a / "f").write_bytes(b"first")
        (record,) = _records(image)
        pid = record["pid"]
        assert isinstance(pid, int) and "vmfs-mount" in _cmdline(pid)  # the background process, not its parent
        assert record["mountpoint"] == str(a)
        with Volume.open(image) as vol:  # that process renews the heartbeat (no thread survives a fork)
            slot = read_slot(vol, 0)
            time.sleep(HostIdentity().heartbeat_period + 1)
            assert read_slot(vol, 0).hb.stamp != slot.hb.stamp

        r = subprocess.run([tool("vmfs-mount"), "-o", "rw", str(image), str(b)], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 1 and not os.path.ismount(b)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert f"process {pid} (mounted at {a})" in r.stderr and "Traceback" not in r.stderr

        subprocess.run([tool("vmfs-mount"), "-o", "rw", "--host-uuid", OTHER_HOST, str(image), str(c)],
                       check=True, timeout=30)
        try:
            (c / "g").write_bytes(b"second host")
            assert sorted(owner for _, owner in _in_use(image)) == sorted([OTHER_HOST, record["host"]])
        finally:
            assert subprocess.run([tool("vmfs-umount"), str(c)], timeout=150).returncode == 0
    finally:
        r = subprocess.run([tool("vmfs-umount"), str(a)], capture_output=True, text=True, timeout=150)
    assert r.returncode == 0, r.stderr
    # vmfs-umount returned: the process is gone, every slot free, the lock file removed
    assert _in_use(image) == [] and _records(image) == []
    assert process_gone(pid)
    rc, report = run_fsck(image, "-n")
    assert (rc, codes(report)) == (0, [])


@pytest.mark.fuse
def test_killed_mount_identity_comes_back_at_once(tmp_path: Path) -> None:
    """SIGKILL leaves the slot in use and the lock file without an outcome; the next mount as the
    same host reuses that slot (next generation, same journal block) without waiting a lease."""
    image = _image(tmp_path)
    mnt = tmp_path / "m"
    mnt.mkdir()
    proc = subprocess.Popen([tool("vmfs-mount"), "-f", "-o", "rw", str(image), str(mnt)])
    try:
        wait_mounted(mnt, proc)
        (mnt / "kept").write_bytes(b"k" * 70000)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        unmount(mnt)  # detaches the dead mount
    with Volume.open(image) as vol:
        (dead,) = read_slots(vol, in_use_only=True)
    start = time.monotonic()
    subprocess.run([tool("vmfs-mount"), "-o", "rw", str(image), str(mnt)], check=True, timeout=30)
    try:
        assert time.monotonic() - start < HostIdentity().lease / 2
        with Volume.open(image) as vol:
            (now,) = read_slots(vol, in_use_only=True)
        assert (now.slot, now.owner, now.hb.hbGen, now.hb.journalAddr) == (
            dead.slot, dead.owner, dead.hb.hbGen + 1, dead.hb.journalAddr)
        assert (mnt / "kept").read_bytes() == b"k" * 70000
    finally:
        assert subprocess.run([tool("vmfs-umount"), str(mnt)], timeout=150).returncode == 0
    rc, report = run_fsck(image, "-n")
    assert (rc, codes(report)) == (0, [])


@pytest.mark.fuse
def test_killed_writer_journal_replayed_by_next_mount(tmp_path: Path) -> None:
    """A writer of this host killed between journal and home writes: the next mount as this host
    replays the journal (the directory exists), at once."""
    image = _image(tmp_path)
    r = subprocess.run([sys.executable, "-m", "tests.fuse.crashing_writer", str(image), "/replayed"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == -signal.SIGKILL, r.stderr
    with Volume.open(image) as vol:
        assert "replayed" not in [e.name for e in FileSystem(vol).listdir("/")]  # nothing reached home
    mnt, log = tmp_path / "m", tmp_path / "mount.log"
    mnt.mkdir()
    start = time.monotonic()
    subprocess.run([tool("vmfs-mount"), "--log-file", str(log), "-o", "rw", str(image), str(mnt)], check=True,
                   timeout=30)
    try:
        assert time.monotonic() - start < HostIdentity().lease / 2
        assert "replayed" in os.listdir(mnt)
        assert "replayed" in log.read_text() and "of our own journal" in log.read_text()
    finally:
        assert subprocess.run([tool("vmfs-umount"), str(mnt)], timeout=150).returncode == 0
    rc, report = run_fsck(image, "-n")
    assert (rc, codes(report)) == (0, [])


@pytest.mark.fuse
def test_umount_waits_for_the_close_and_reports_a_timeout(tmp_path: Path) -> None:
    """A lazy unmount with a file still open: the mount process lives until the file is closed,
    so vmfs-umount times out (exit 2) and the slot is still in use; once the file is closed,
    vmfs-umount of the detached mount point waits for the close and succeeds."""
    image = _image(tmp_path)
    mnt = tmp_path / "m"
    mnt.mkdir()
    subprocess.run([tool("vmfs-mount"), "-o", "rw", str(image), str(mnt)], check=True, timeout=30)
    f = open(mnt / "open", "wb")  # noqa: SIM115
    try:
        f.write(b"x" * (1 << 20))
        f.flush()
        r = subprocess.run([tool("vmfs-umount"), "-z", "-t", "1", str(mnt)], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 2 and "still writing back" in r.stderr, r.stderr
        assert not os.path.ismount(mnt) and len(_in_use(image)) == 1
        waiter = subprocess.Popen([tool("vmfs-umount"), "-v", str(mnt)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)  # after a plain detach: waits too
        time.sleep(1)
        assert waiter.poll() is None
    finally:
        f.close()
    out, err = waiter.communicate(timeout=150)
    assert waiter.returncode == 0 and "released" in out, err
    assert _in_use(image) == []
    r = subprocess.run([tool("vmfs-umount"), str(mnt)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and r.stderr.strip() == f"vmfs-umount: {mnt}: not mounted"
    with Volume.open(image) as vol:
        fd = FileSystem(vol).resolve("/open")
        assert fd.size == 1 << 20


def test_same_volume_twice_in_one_process_refused(tmp_path: Path) -> None:
    image = _image(tmp_path)
    host = HostIdentity(uuid=OTHER_HOST)
    first = HostAttachment.open(image, host=host)
    try:
        with pytest.raises(BusyError, match=r"already open read-write as host .* by this process"):
            HostAttachment.open(image, host=HostIdentity(uuid=OTHER_HOST))
        assert [s.slot for s in read_slots(first.volume, in_use_only=True)] == [first.heartbeat.slot]
    finally:
        first.close()
    HostAttachment.open(image, host=host).close()


def _dies(att: HostAttachment) -> None:
    """A simulated crash: renewals stop, the lock goes (as the kernel drops a dead process's)."""
    att.crash()


def test_live_renewer_of_our_uuid_without_lock_file_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another writer under our UUID that took no lock here (another container's /run, a cloned
    machine-id): its slot keeps moving while we watch, so we refuse."""
    image = _image(tmp_path)
    clock = ManualClock()
    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path / "run-a"))
    live = HostAttachment.open(image, host=HostIdentity(uuid=OTHER_HOST, clock=clock))
    try:
        monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path / "run-b"))
        start = clock.monotonic_us()
        with pytest.raises(BusyError, match="being renewed by another writer"):
            HostAttachment.open(image, host=HostIdentity(uuid=OTHER_HOST, clock=clock))
        assert clock.monotonic_us() - start <= (HostIdentity().heartbeat_period + 1) * 1_000_000
        assert [s.slot for s in read_slots(live.volume, in_use_only=True)] == [live.heartbeat.slot]
    finally:
        live.close()


@pytest.mark.parametrize("same_run_dir", [True, False])
def test_dead_writer_of_our_uuid_reused_after_watching_only_if_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, same_run_dir: bool
) -> None:
    """A dead writer's lock file names its slot: reused at once.  Without it (another lock
    directory, e.g. after a reboot) the slot is watched for a lease and a period first."""
    image = _image(tmp_path)
    clock = ManualClock()
    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path / "run-a"))
    dead = HostAttachment.open(image, host=HostIdentity(uuid=OTHER_HOST, clock=clock))
    WritableFileSystem(dead).mkdir("/d")
    slot = dead.heartbeat.slot
    _dies(dead)
    if not same_run_dir:
        monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path / "run-b"))
    start = clock.monotonic_us()
    host = HostIdentity(uuid=OTHER_HOST, clock=clock)
    again = HostAttachment.open(image, host=host)
    try:
        waited = (clock.monotonic_us() - start) / 1e6
        if same_run_dir:
            assert waited == 0
        else:
            assert waited >= host.lease + host.heartbeat_period
        assert again.heartbeat.slot == slot
        assert "d" in [e.name for e in WritableFileSystem(again).listdir("/")]
    finally:
        again.close()


def test_lock_files_of_deleted_images_are_swept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crashed writer's lock file stays (it names the dead slot); once its image is gone, the
    next read-write open on this machine removes it.  A held one is never touched."""
    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path / "run"))
    gone, kept, other = _image(tmp_path, "gone.img"), _image(tmp_path, "kept.img"), _image(tmp_path, "other.img")
    _dies(HostAttachment.open(gone, host=HostIdentity(uuid=OTHER_HOST)))
    held = HostAttachment.open(kept, host=HostIdentity(uuid=OTHER_HOST))
    try:
        gone.unlink()
        assert {r["image"] for r in _records_in(tmp_path / "run")} == {str(gone), str(kept)}
        HostAttachment.open(other, host=HostIdentity(uuid=OTHER_HOST)).close()
        assert {r["image"] for r in _records_in(tmp_path / "run")} == {str(kept)}
    finally:
        held.close()
    assert _records_in(tmp_path / "run") == []


def _records_in(directory: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in directory.glob("*.lock")]
