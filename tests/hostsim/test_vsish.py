"""``vsish`` crash nodes on a host in this process: a panic in the middle of a VMFS transaction
leaves it committed and half home (vmfs-fsck sees the damage), and the same host booted again
replays it (vmfs-fsck clean).  The real-process version, SIGKILL included, is test_host_crash.py."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest

from hostsim.console import config as cfg
from hostsim.console.host import Host
from hostsim.console.vsish import vsish
from hostsim.errors import HostPanic
from tests.conftest import tool

CONFIG = """\
[host]
name = esxpanic
pcpus = 2
mhz = 2000
memory_mb = 1024
mode = esx2
seed = 5
epoch = 2026-12-01T08:00:00Z

[lun lun0]
image = lun0.img
datastore = ds1
format = vmfs5
"""


def boot(tmp_path: Path) -> Host:
    path = tmp_path / "esxpanic.host"
    path.write_text(CONFIG)
    image = tmp_path / "lun0.img"
    if not image.exists():
        with open(image, "wb") as f:
            f.truncate(1 << 30)
    return Host(cfg.load(path))


def fsck(image: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("vmfs-fsck"), "-n", str(image)], capture_output=True, text=True)


def test_vsish_nodes_and_errors(tmp_path: Path) -> None:
    host = boot(tmp_path)
    try:
        assert vsish(host, ["-e", "ls", "/reliability/crashMe"]) == ("JournalHalfHome\nPanic\n", 0)
        assert vsish(host, ["-e", "get", "/reliability/crashMe/JournalHalfHome"]) == ("0\n", 0)
        assert vsish(host, ["-e", "set", "/reliability/crashMe/JournalHalfHome", "1"]) == ("", 0)
        assert vsish(host, ["-e", "get", "/reliability/crashMe/JournalHalfHome"]) == ("1\n", 0)
        assert vsish(host, ["-e", "set", "/reliability/crashMe/JournalHalfHome", "0"]) == ("", 0)
        assert vsish(host, ["-e", "get", "/reliability/crashMe/JournalHalfHome"]) == ("0\n", 0)
        out, rc = vsish(host, ["-e", "get", "/reliability/crashMe/Nope"])
        assert (out, rc) == ("vsish: /reliability/crashMe/Nope: no such node\n", 1)
        out, rc = vsish(host, ["-e", "set", "/reliability/crashMe/Panic", "yes"])
        assert rc == 1 and out == "vsish: /reliability/crashMe/Panic: the value is 1 (crash) or 0\n"
        out, rc = vsish(host, ["-e", "frobnicate", "/"])
        assert rc == 1 and out.startswith("usage: vsish -e get|set|ls NODE")
        host.create_dummy_vm("quiet", None)  # disarmed: no panic
        assert not host.crashed
    finally:
        host.shutdown()
    assert fsck(tmp_path / "lun0.img").returncode == 0


def test_a_panic_half_way_home_is_replayed_by_the_next_boot(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    image = tmp_path / "lun0.img"
    host = boot(tmp_path)
    assert vsish(host, ["-e", "set", "/reliability/crashMe/JournalHalfHome", "1"]) == ("", 0)
    with pytest.raises(HostPanic, match=r"esxpanic: PSOD: crashMe in a VMFS journal transaction: "
                                        r"home write 1 of \d+ done"):
        host.create_dummy_vm("victim", None)
    assert host.crashed and any("PSOD" in line for line in host.events)
    damaged = fsck(image)
    assert damaged.returncode == 4 and "records committed" in damaged.stdout, damaged.stdout

    with caplog.at_level(logging.WARNING, logger="vmfs"):
        again = boot(tmp_path)
    try:
        assert any("replayed" in r.getMessage() and "our own journal" in r.getMessage() for r in caplog.records)
    finally:
        again.shutdown()
    clean = fsck(image)
    assert clean.returncode == 0, clean.stdout


def test_panic_now_stops_the_host_at_once(tmp_path: Path) -> None:
    host = boot(tmp_path)
    with pytest.raises(HostPanic, match="PSOD: crashMe Panic"):
        vsish(host, ["-e", "set", "/reliability/crashMe/Panic", "1"])
    assert host.crashed
    out, rc = vsish(host, ["-e", "set", "/reliability/crashMe/JournalHalfHome", "1"])
    assert rc == 1 and "not running" in out
    boot(tmp_path).shutdown()  # the next boot recovers the slot the panic left
    assert fsck(tmp_path / "lun0.img").returncode == 0
