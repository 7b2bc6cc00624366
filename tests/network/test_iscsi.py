"""A VMFS volume on a real iSCSI LUN: Debian's tgt as the target, libiscsi as our initiator.

tgt rejects COMPARE AND WRITE, so the test-and-set runs in reservation mode (RESERVE(6), read,
compare, write, RELEASE(6)): these tests show it atomic across initiators in separate processes,
show another initiator stalled (and counted) while a reservation is held, and run the tools and
four hosts on the LUN.  What went over the wire is checked through the target's backing file by
the oracles, which cannot speak iSCSI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tests import oracles
from tests.conftest import REPO, Mount, tool
from tests.helpers import capture_mount, diff_trees
from tests.network import netns
from tests.network.tgt import TgtTarget
from tests.network.workload import check_local_copy, count_by_test_and_set, run_shared_workload
from vmfs.device.iscsi import IscsiDevice, IscsiUrl, _Sense, _Task
from vmfs.device.opener import open_device
from vmfs.errors import DeviceError, InvalidArgumentError

pytestmark = [pytest.mark.network]


@pytest.fixture
def lun(tgt_target: TgtTarget, request: pytest.FixtureRequest) -> tuple[str, Path]:
    name = request.node.name.replace("[", "-").replace("]", "").replace("_", "-").lower()[:60]
    return tgt_target.add_lun(name, 1 << 30)


def test_struct_layout_matches_libiscsi_header(tmp_path: Path) -> None:
    """The ctypes view of ``struct scsi_task`` has gcc's offsets (a wrong one reads garbage status)."""
    if shutil.which("gcc") is None or not Path("/usr/include/iscsi/scsi-lowlevel.h").exists():
        pytest.skip("needs gcc and libiscsi-dev (make test installs them)")
    src = tmp_path / "probe.c"
    src.write_text(textwrap.dedent("""\
        #include <stdio.h>
        #include <stddef.h>
        #include <stdint.h>
        #include <iscsi/iscsi.h>
        #include <iscsi/scsi-lowlevel.h>
        int main(void) {
            printf("%zu %zu %zu %zu %zu %zu\\n", offsetof(struct scsi_task, status),
                   offsetof(struct scsi_task, sense), offsetof(struct scsi_task, datain),
                   offsetof(struct scsi_sense, key), offsetof(struct scsi_sense, ascq), sizeof(struct scsi_sense));
            return 0;
        }
        """))
    subprocess.run(["gcc", str(src), "-o", str(tmp_path / "probe")], check=True)
    got = subprocess.run([str(tmp_path / "probe")], capture_output=True, text=True, check=True).stdout.split()
    import ctypes

    ours = [_Task.status.offset, _Task.sense.offset, _Task.datain.offset, _Sense.key.offset, _Sense.ascq.offset,
            ctypes.sizeof(_Sense)]
    assert [int(x) for x in got] == ours


def test_url_forms() -> None:
    u = IscsiUrl.parse("iscsi://alice%s3cret@192.0.2.7:3261/iqn.2026-12.org.example:disk1/3")
    assert (u.host, u.port, u.target, u.lun, u.user, u.password) == (
        "192.0.2.7", 3261, "iqn.2026-12.org.example:disk1", 3, "alice", "s3cret")
    assert "s3cret" not in str(u) and "s3cret" not in repr(u)
    assert IscsiUrl.parse("iscsi://san/iqn.x:y/0").port == 3260
    with pytest.raises(InvalidArgumentError, match="not an iSCSI URL"):
        IscsiUrl.parse("iscsi://san/iqn.x:y")


def test_reads_and_writes_at_any_offset(lun: tuple[str, Path]) -> None:
    url, backing = lun
    with open_device(url, readonly=False) as dev:
        assert isinstance(dev, IscsiDevice)
        assert dev.size == 1 << 30 and dev.block_size == 512
        dev.write(1000, b"partial sector")  # read-modify-write of two blocks
        big = bytes(range(256)) * (3 << 12)  # 3 MiB: split into 1 MiB commands
        dev.write(5 << 20, big)
        dev.flush()
        assert dev.read(995, 24) == bytes(5) + b"partial sector" + bytes(5)
        assert dev.read((5 << 20) + 7, len(big) - 7) == big[7:]
        with pytest.raises(DeviceError, match="beyond the device end"):
            dev.read(dev.size - 10, 20)
    raw = backing.read_bytes()[: 9 << 20]
    assert raw[1000:1014] == b"partial sector" and raw[5 << 20 : (5 << 20) + len(big)] == big


def test_test_and_set_uses_reservations_on_tgt(lun: tuple[str, Path]) -> None:
    url, _ = lun
    with IscsiDevice(url, readonly=False) as dev:
        zero = bytes(512)
        assert dev.compare_and_write(8192, zero, b"A" * 512)
        assert dev.stats.mode == "reserve"  # tgt answered COMPARE AND WRITE with INVALID OPCODE
        assert not dev.compare_and_write(8192, zero, b"B" * 512)  # miscompare: nothing written
        assert dev.read(8192, 512) == b"A" * 512
        assert (dev.stats.reservations, dev.stats.miscompares) == (2, 1)


def test_test_and_set_is_atomic_across_initiators(lun: tuple[str, Path]) -> None:
    """Three processes, each its own iSCSI session and initiator name, increment one counter by
    test-and-set: no increment is lost, and the reservations really collided."""
    url, backing = lun
    per = 150
    stats = count_by_test_and_set(url, 3, per)
    with open(backing, "rb") as f:
        f.seek(4096)
        assert int.from_bytes(f.read(8), "little") == 3 * per
    print("per initiator:", stats)
    assert all(s["mode"] == "reserve" for s in stats)
    assert sum(s["miscompares"] + s["conflicts"] for s in stats) > 0  # they did race


def test_a_held_reservation_stalls_other_initiators_until_released(lun: tuple[str, Path]) -> None:
    url, _ = lun
    holder = IscsiDevice(url, readonly=False, initiator="iqn.2026-12.org.pyvmfs.test:holder")
    other = IscsiDevice(url, readonly=False, initiator="iqn.2026-12.org.pyvmfs.test:other")
    try:
        holder._command(lambda: holder._lib.iscsi_reserve6_sync(holder._ctx, 1), "RESERVE(6)")
        done: list[float] = []

        def reader() -> None:
            other.read(0, 4096)
            done.append(time.monotonic())

        t = threading.Thread(target=reader)
        t.start()
        time.sleep(0.3)
        assert not done  # still refused with RESERVATION CONFLICT and backing off
        released = time.monotonic()
        holder._command(lambda: holder._lib.iscsi_release6_sync(holder._ctx, 1), "RELEASE(6)")
        t.join(timeout=10)
        assert done and done[0] >= released
        assert other.stats.conflicts > 0 and other.stats.conflict_wait > 0.2
    finally:
        holder.close()
        other.close()


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=600)


@pytest.mark.fuse
@pytest.mark.oracle
def test_tools_make_check_and_mount_a_volume_on_the_lun(lun: tuple[str, Path], tmp_path: Path) -> None:
    url, backing = lun
    r = _run(tool("vmfs-mkfs"), "-t", "vmfs5", "-L", "san", url)
    assert r.returncode == 0, r.stderr
    r = _run(tool("vmfs-mkfs"), "--size", "1G", url)
    assert r.returncode == 2 and "network storage" in r.stderr
    with Mount([tool("vmfs-mount"), "-f", "-o", "rw", url, str(tmp_path / "rw")], tmp_path / "rw") as root:
        (root / "vm").mkdir()
        (root / "vm" / "disk-flat.vmdk").write_bytes(b"\x5a" * (3 << 20) + b"tail")
        (root / "vm" / "small.txt").write_text("over the wire\n")
    r = _run(tool("vmfs-fsck"), "-n", url)
    assert r.returncode == 0, r.stdout + r.stderr
    r = _run(tool("vmfs-debug"), url, "fs")
    assert r.returncode == 0 and "san" in r.stdout, r.stdout + r.stderr
    before = backing.read_bytes()[:1 << 20]
    r = _run(tool("vmfs-debug"), url, "device")
    assert r.returncode == 0, r.stderr
    assert "Transport: iscsi" in r.stdout and "Test-and-set: SCSI-2 reservations" in r.stdout, r.stdout
    assert backing.read_bytes()[:1 << 20] == before  # the probe wrote nothing
    r = _run(tool("vmfs-debug"), "--json", str(backing), "device")
    assert json.loads(r.stdout)[0]["testAndSet"] == "file-lock"
    with Mount([tool("vmfs-mount"), url, str(tmp_path / "ro")], tmp_path / "ro") as root:
        ours = capture_mount(root)
        assert (root / "vm" / "small.txt").read_text() == "over the wire\n"
    # the bytes the target stored are a volume vmfs-tools reads the same
    theirs = oracles.fuse_tree("vmfs-fuse", [backing], tmp_path / "oracle", unreadable=frozenset({"/.sdd.sf"}))
    theirs.pop("/.sdd.sf")
    assert diff_trees({p: v for p, v in ours.items() if p != "/.sdd.sf"}, theirs) == []


def test_bad_lun_urls_are_one_line_errors(tgt_target: TgtTarget) -> None:
    for url, why in [(f"iscsi://127.0.0.1:{tgt_target.port}/iqn.2026-12.org.pyvmfs.test:none/1", "cannot log in"),
                     ("iscsi://127.0.0.1:1/iqn.x:y/1", "cannot log in"),
                     ("iscsi://127.0.0.1/no-lun", "not an iSCSI URL")]:
        r = _run(tool("vmfs-fsck"), "-n", url)
        assert r.returncode != 0 and why in r.stdout + r.stderr, r.stdout + r.stderr
        assert "Traceback" not in r.stderr
        r = _run(tool("vmfs-debug"), url, "fs")
        assert r.returncode != 0 and "Traceback" not in r.stderr and why in r.stderr, r.stderr


HOLD_SESSION = """
import sys
from vmfs.device.iscsi import IscsiDevice
dev = IscsiDevice(sys.argv[1], readonly=False)
print(dev.initiator, flush=True)
sys.stdin.readline()
dev.close()
"""


def assert_sessions_leave_their_own_namespace(url: str, lan: netns.Lan, target: TgtTarget, hosts: int) -> None:
    """Host k's iSCSI session reaches the target from host k's own address (the target's view)."""
    for k in range(1, hosts + 1):
        p = subprocess.Popen(lan.argv(k, [sys.executable, "-c", HOLD_SESSION, url]), cwd=REPO, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert p.stdout is not None
            initiator = p.stdout.readline().strip()
            assert initiator, p.stderr.read() if p.stderr else ""
            shown = target.adm("--mode", "target", "--op", "show").stdout
            block = shown[shown.index(f"Initiator: {initiator}"):]
            assert f"IP Address: {lan.host_ip(k)}" in block.split("Initiator:")[1], block[:400]
        finally:
            p.communicate("\n", timeout=30)
        assert p.returncode == 0


@pytest.mark.slow
@pytest.mark.oracle
@pytest.mark.parametrize("hosts", [2, 4], ids=["2 hosts", "4 hosts"])
def test_hosts_in_separate_network_namespaces_share_a_volume_on_the_lun(
        lun: tuple[str, Path], lan: netns.Lan, tgt_target: TgtTarget, tmp_path: Path, hosts: int) -> None:
    """The multi-host workload of tests/cluster/test_multihost.py, each host a process in its own
    network namespace with its own iSCSI session over its own veth link to the target
    (reservation mode on tgt): every host sees the tree the acknowledged operations made, the
    volume is consistent, and vmfs-tools reads the target's file the same."""
    url, backing = lun
    url = url.replace("127.0.0.1", tgt_target.add_portal(lan.target_ip).split(":")[0])
    assert_sessions_leave_their_own_namespace(url, lan, tgt_target, hosts)
    run_shared_workload(url, hosts, 150, tmp_path, lan.argv)
    check_local_copy(backing, tmp_path)
