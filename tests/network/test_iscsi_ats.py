"""ATS over iSCSI: a target that implements COMPARE AND WRITE (Debian's istgt).

The initiator asks the target at attach (a COMPARE AND WRITE that cannot change a byte) and uses
the command for every on-disk lock update when the target has it, as ESX does on a VAAI array:
no reservation is ever taken, so no other host's I/O is stalled.  These tests run the branch that
tgt never reaches: the probe, a match that writes, a stale compare that writes nothing (sense
MISCOMPARE), atomicity between initiators in separate processes, and hosts in separate network
namespaces sharing a volume on the LUN, read back by vmfs-tools through the target's file.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import tool
from tests.network import netns
from tests.network.istgt import IstgtTarget, available
from tests.network.workload import check_local_copy, count_by_test_and_set, run_shared_workload
from vmfs.device.iscsi import IscsiDevice

pytestmark = [pytest.mark.network]

LUNS = {"caw-commands": 64 << 20, "caw-counter": 64 << 20, "caw-hosts": 1 << 30}


@pytest.fixture(scope="module")
def istgt(tmp_path_factory: pytest.TempPathFactory, lan: netns.Lan) -> Iterator[IstgtTarget]:
    """One istgt for the module, on loopback and on the storage LAN.  CI installs istgt (make
    test), so there a missing istgt fails instead of skipping."""
    why = available()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    target = IstgtTarget(Path(tmp_path_factory.mktemp("istgt")), LUNS, ips=(lan.target_ip,)).start()
    try:
        yield target
    finally:
        target.stop()


def test_compare_and_write_is_used_where_the_target_has_it(istgt: IstgtTarget) -> None:
    url = istgt.url("caw-commands")
    with IscsiDevice(url, readonly=False) as dev:
        assert dev.probe_test_and_set() == "ats"
        assert (dev.stats.ats, dev.stats.ats_miscompares) == (0, 0)  # the probe is not a lock update
        zero, a, b = bytes(512), b"A" * 512, b"B" * 512
        assert dev.compare_and_write(8192, zero, a)
        assert not dev.compare_and_write(8192, zero, b)  # stale: MISCOMPARE, nothing written
        assert dev.read(8192, 512) == a
        assert dev.compare_and_write(8192, a, b) and dev.read(8192, 1024) == b + zero
        assert (dev.stats.mode, dev.stats.ats, dev.stats.ats_miscompares, dev.stats.reservations) == ("ats", 3, 1, 0)
    with open(istgt.backing("caw-commands"), "rb") as f:  # the target's file holds it
        f.seek(8192)
        assert f.read(512) == b


def test_compare_and_write_is_atomic_across_initiators(istgt: IstgtTarget) -> None:
    """Three processes, each its own session and initiator name, increment one counter by
    COMPARE AND WRITE: no increment is lost, they did collide, and nobody reserved."""
    per = 8000  # enough that the three overlap after their start-up (3,000 each did not, once)
    stats = count_by_test_and_set(istgt.url("caw-counter"), 3, per)
    with open(istgt.backing("caw-counter"), "rb") as f:
        f.seek(4096)
        assert int.from_bytes(f.read(8), "little") == 3 * per
    print("per initiator:", stats)
    assert all(s["mode"] == "ats" and s["reservations"] == 0 and s["conflicts"] == 0 for s in stats)
    assert sum(s["ats_miscompares"] for s in stats) > 0  # they did race


@pytest.mark.slow
@pytest.mark.oracle
def test_hosts_in_separate_network_namespaces_share_a_volume_in_ats_mode(
        istgt: IstgtTarget, lan: netns.Lan, tmp_path: Path) -> None:
    """The multi-host workload (tests/cluster/test_multihost.py), two hosts each in its own
    network namespace with its own session to istgt: every host sees the tree the acknowledged
    operations made, the volume is consistent, vmfs-tools reads the target's file the same, and
    the volume's locks were taken by ATS."""
    url = istgt.url("caw-hosts", lan.target_ip)
    run_shared_workload(url, 2, 150, tmp_path, lan.argv)
    check_local_copy(istgt.backing("caw-hosts"), tmp_path)
    r = subprocess.run([tool("vmfs-debug"), "--json", url, "device"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    (device,) = json.loads(r.stdout)
    assert device["transport"] == "iscsi" and device["testAndSet"] == "ats", device
