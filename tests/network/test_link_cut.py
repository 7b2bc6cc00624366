"""A host's link to the storage cut (``ip link set ... down`` on its switch port) and restored,
with real iSCSI sessions and RADOS clients from separate network namespaces.

What must hold: a write sent into the cut never lands after the link comes back (it would
overwrite what the surviving hosts wrote after taking over): on iSCSI because the session dies
with it, on RBD because the survivors blocklist the cut-off client first; a reservation the
cut-off host held is cleared by a LUN reset so the others go on, and that host cannot write
under the reservation it lost; and under a real multi-host workload the survivors go on within
the lease plus a heartbeat period, nothing acknowledged is lost, the cut host re-attaches when
its link is back, and the volume checks clean."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, tool
from tests.network import netns
from tests.network.ceph import CephCluster
from tests.network.cut_worker import content
from tests.network.tgt import TgtTarget
from vmfs.cluster.attachment import HostAttachment
from vmfs.cluster.host import HostIdentity
from vmfs.device.iscsi import LINK_TIMEOUT, RESET_AFTER, IscsiDevice
from vmfs.device.opener import open_device
from vmfs.device.rbd import OSD_OP_TIMEOUT
from vmfs.volume.namespace import FileSystem
from vmfs.volume.slots import read_slots
from vmfs.volume.volume import Volume
from vmfs.write.posix import WritableFileSystem

pytestmark = [pytest.mark.network, pytest.mark.slow]


@pytest.fixture
def lun(tgt_target: TgtTarget, request: pytest.FixtureRequest) -> tuple[str, Path]:
    name = request.node.name.replace("[", "-").replace("]", "").replace("_", "-").lower()[:60]
    return tgt_target.add_lun(name, 1 << 30)


#: a host on the far side of the link, driven line by line: `write OFFSET BYTE`, `announce NAME`,
#: `reserve`, `reserved-write OFFSET BYTE` (iSCSI), `quit`
HOST = """
import sys, time
from vmfs.device.opener import open_device
dev = open_device(sys.argv[1], readonly=False)
print("ready", flush=True)
for line in sys.stdin:
    cmd = line.split()
    t0 = time.monotonic()
    try:
        if cmd[0] == "write":
            dev.write(int(cmd[1]), bytes([int(cmd[2])]) * 4096)
        elif cmd[0] == "announce":
            dev.announce(cmd[1])
        elif cmd[0] == "reserve":
            dev._command(lambda: dev._lib.iscsi_reserve6_sync(dev._ctx, dev.url.lun), "RESERVE(6)")
        elif cmd[0] == "reserved-write":
            dev._write(int(cmd[1]), bytes([int(cmd[2])]) * 4096, reserved=True)
        elif cmd[0] == "quit":
            break
        print("ok", round(time.monotonic() - t0, 2), flush=True)
    except Exception as exc:
        print("failed", round(time.monotonic() - t0, 2), type(exc).__name__, str(exc).replace(chr(10), " "), flush=True)
print("stats", getattr(dev.stats, "reconnects", 0), getattr(dev.stats, "unit_attentions", 0), flush=True)
dev.close()
"""


class FarHost:
    """The HOST script in namespace ``k`` of the LAN."""

    def __init__(self, lan: netns.Lan, k: int, url: str) -> None:
        self.proc = subprocess.Popen(lan.argv(k, [sys.executable, "-c", HOST, url]), cwd=REPO, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.answer() == "ready"

    def answer(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line, self.proc.stderr.read() if self.proc.stderr else ""
        return line

    def ask(self, line: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.answer()

    def quit(self) -> str:
        last = self.ask("quit")
        self.proc.communicate(timeout=60)
        return last

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=30)


def _lan_url(url: str, lan: netns.Lan, target: TgtTarget) -> str:
    return url.replace("127.0.0.1", target.add_portal(lan.target_ip).split(":")[0])


def test_a_write_sent_into_a_cut_link_never_lands_after_it_comes_back(
        lun: tuple[str, Path], lan: netns.Lan, tgt_target: TgtTarget) -> None:
    """The far host writes 0xAA while its link is down; the write fails within the link
    timeout.  Then a host on the target's side writes 0xBB there, the link comes back, and the
    block must stay 0xBB: the far host's bytes died with its session (TCP_USER_TIMEOUT, auto-
    reconnect off, the socket reset).  Without that they arrived about a second after the link
    came back.  The far host then writes again through a new session."""
    url, backing = lun
    far = FarHost(lan, 1, _lan_url(url, lan, tgt_target))
    near = IscsiDevice(url, readonly=False)
    offset = 1 << 20
    try:
        assert far.ask(f"write {offset} 17").startswith("ok")
        lan.cut(1)
        try:
            answer = far.ask(f"write {offset} 170")
            assert answer.startswith("failed"), answer
            assert float(answer.split()[1]) <= LINK_TIMEOUT + 2.5, answer
            near.write(offset, b"\xbb" * 4096)
            near.flush()
        finally:
            lan.restore(1)
        time.sleep(LINK_TIMEOUT + 2)
        assert near.read(offset, 4096) == b"\xbb" * 4096
        with open(backing, "rb") as f:
            f.seek(offset)
            assert f.read(4096) == b"\xbb" * 4096
        # the far host logs in again and writes elsewhere
        assert far.ask(f"write {offset + 8192} 204").startswith("ok")
        assert near.read(offset + 8192, 4096) == b"\xcc" * 4096
        reconnects = int(far.quit().split()[1])
        assert reconnects >= 1
    finally:
        near.close()
        far.kill()


def test_a_write_sent_into_a_cut_link_is_refused_once_the_rbd_client_is_fenced(
        lan: netns.Lan, ceph_cluster: CephCluster) -> None:
    """The far host's RADOS client announces itself and writes 0xAA into a cut link (its
    operation times out after 5 s, but the message may still be on its way).  The near host
    fences it (blocklist) and writes 0xBB; when the link is back the block stays 0xBB, and the
    far client's next write is refused as fenced."""
    image = ceph_cluster.image("cut-write", 64 << 20)
    far = FarHost(lan, 1, image + ":rados_osd_op_timeout=5")
    near = open_device(image, readonly=False)
    offset = 1 << 20
    try:
        assert far.ask("announce far.200000.1").startswith("ok")
        assert far.ask(f"write {offset} 17").startswith("ok")
        lan.cut(1)
        try:
            answer = far.ask(f"write {offset} 170")
            assert answer.startswith("failed"), answer
            assert near.fence("far.200000.1")
            near.write(offset, b"\xbb" * 4096)
            near.flush()
        finally:
            lan.restore(1)
        time.sleep(8)
        assert near.read(offset, 4096) == b"\xbb" * 4096
        answer = far.ask(f"write {offset} 204")
        assert answer.startswith("failed") and "fenced" in answer, answer
        assert near.read(offset, 4096) == b"\xbb" * 4096
        assert not near.fence("nobody.200000.1")  # nothing announced under that name
    finally:
        near.close()
        far.kill()


def test_a_reservation_left_by_a_cut_off_host_is_cleared_by_a_lun_reset(
        lun: tuple[str, Path], lan: netns.Lan, tgt_target: TgtTarget) -> None:
    """The far host takes a SCSI-2 reservation and its link is cut.  Another host's read meets
    RESERVATION CONFLICT, and after RESET_AFTER seconds it sends a LUN reset and reads.  When the
    far host's link comes back, a write it sends still believing it holds the reservation is not
    executed: the reset left it a UNIT ATTENTION."""
    url, _ = lun
    far = FarHost(lan, 1, _lan_url(url, lan, tgt_target))
    near = IscsiDevice(url, readonly=False)
    offset = 2 << 20
    try:
        near.write(offset, b"\x11" * 4096)
        assert far.ask("reserve").startswith("ok")
        lan.cut(1)
        try:
            t0 = time.monotonic()
            assert near.read(offset, 4096) == b"\x11" * 4096
            waited = time.monotonic() - t0
            print(f"read after the reset: {waited:.1f} s (reset after {RESET_AFTER:g} s), "
                  f"{near.stats.conflicts} conflicts, {near.stats.lun_resets} reset")
            assert RESET_AFTER <= waited <= RESET_AFTER + 3
            assert near.stats.lun_resets == 1 and near.stats.conflicts > 10
        finally:
            lan.restore(1)
        time.sleep(1)
        answer = far.ask(f"reserved-write {offset} 34")
        assert answer.startswith("failed") and "ReservationLost" in answer, answer
        assert near.read(offset, 4096) == b"\x11" * 4096
        attentions = int(far.quit().split()[2])
        assert attentions >= 1
    finally:
        near.close()
        far.kill()


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("storage", ["iscsi", "rbd"])
def test_a_host_cut_off_mid_workload_loses_its_locks_and_nothing_acknowledged(
        storage: str, lan: netns.Lan, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Three hosts create fsync'd files in one directory; host 3's link is cut for 30 s.  The
    survivors must go on within the lease plus a heartbeat period (host 3 may have held the
    directory's lock, or on iSCSI the LUN's reservation; on RBD they fence it first); host 3 must
    fail its writes, and once its link is back, attach again and go on.  Afterwards every
    acknowledged file is there with its bytes, no heartbeat slot is left in use, and vmfs-fsck
    finds the volume clean."""
    if storage == "iscsi":
        target: TgtTarget = request.getfixturevalue("tgt_target")
        url, _ = target.add_lun("cut-workload", 1 << 30)
        lan_url = _lan_url(url, lan, target)
    else:
        cluster: CephCluster = request.getfixturevalue("ceph_cluster")
        url = lan_url = cluster.image("cut-workload", 1 << 30)
    r = subprocess.run([tool("vmfs-mkfs"), "-t", "vmfs5", "--files", "16384", url],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    setup = HostAttachment.open(url, host=HostIdentity(uuid="71000009-00000000-0000-020000000009"))
    WritableFileSystem(setup).mkdir("/shared")
    setup.close()
    stop = tmp_path / "stop"
    logs = {k: tmp_path / f"h{k}.log" for k in (1, 2, 3)}
    procs = {k: subprocess.Popen(lan.argv(k, [sys.executable, "-m", "tests.network.cut_worker", lan_url, str(k),
                                              str(logs[k]), str(stop)]),
                                 cwd=REPO, stderr=subprocess.PIPE, text=True) for k in (1, 2, 3)}
    try:
        deadline = time.monotonic() + 120
        while not all(any(e["event"] == "ack" for e in _events(logs[k])) for k in (1, 2, 3)):
            assert time.monotonic() < deadline, {k: _events(logs[k])[-3:] for k in logs}
            assert all(p.poll() is None for p in procs.values()), {k: p.stderr.read() for k, p in procs.items()
                                                                  if p.poll() is not None and p.stderr}
            time.sleep(0.5)
        time.sleep(3)
        cut_at = time.monotonic()
        lan.cut(3)
        try:
            time.sleep(30)
        finally:
            lan.restore(3)
        restored_at = time.monotonic()
        deadline = restored_at + 90
        while not any(e["event"] == "ack" and e["t"] > restored_at for e in _events(logs[3])):
            assert time.monotonic() < deadline, _events(logs[3])[-5:]
            time.sleep(0.5)
        time.sleep(2)
    finally:
        stop.touch()
        for p in procs.values():
            try:
                p.wait(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=30)
    for k, p in procs.items():
        assert p.returncode == 0, (k, p.stderr.read() if p.stderr else "")
    events = {k: _events(logs[k]) for k in logs}
    assert not [e for k in logs for e in events[k] if e["event"] == "other-error"]
    lease, period = HostIdentity().lease, HostIdentity().heartbeat_period
    for k in (1, 2):  # the survivors: the longest pause in their acknowledgements after the cut
        acks = [e["t"] for e in events[k] if e["event"] == "ack"]
        assert any(t > cut_at for t in acks) and not any(e["event"] == "error" for e in events[k]), events[k][-5:]
        around = [cut_at] + [t for t in acks if t > cut_at]
        pause = max(b - a for a, b in itertools.pairwise(around))
        print(f"host {k}: longest pause after the cut {pause:.1f} s (bound {lease + period:g} s), "
              f"{sum(t > cut_at for t in acks)} files after it")
        assert pause <= lease + period
    cut = events[3]
    errors = [e for e in cut if e["event"] == "error" and e["t"] > cut_at]
    # iSCSI fails it within the lease; on RBD an operation waits for its OSD timeout (30 s)
    assert errors and errors[0]["t"] < restored_at + OSD_OP_TIMEOUT, cut[-8:]
    late = [e for e in cut if e["event"] == "ack" and cut_at + 1 < e["t"] < restored_at]
    assert not late, late  # nothing was acknowledged through a cut link
    print(f"host 3: first error {errors[0]['t'] - cut_at:.1f} s after the cut: {errors[0]['error'][:160]}")
    reattached = [e for e in cut if e["event"] == "attached" and e["t"] > restored_at]
    assert reattached, cut[-8:]
    print(f"host 3: attached again {reattached[0]['t'] - restored_at:.1f} s after the link came back")
    if storage == "rbd":  # the survivors fenced host 3's client before they broke its locks
        blocklist = cluster.run("ceph", "osd", "blocklist", "ls")
        assert f"{lan.host_ip(3)}:0/" in blocklist, blocklist
    # every acknowledged file, with its bytes; no slot left in use; the target's file is clean

    with Volume.open(url) as vol:
        fs = FileSystem(vol)
        for k in logs:
            for e in events[k]:
                if e["event"] == "ack":
                    with fs.open(e["path"]) as f:
                        assert f.read() == content(f"h{k}", e["i"]), e
        assert not any(s.in_use for s in read_slots(vol))
    r = subprocess.run([tool("vmfs-fsck"), "-n", url], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout
