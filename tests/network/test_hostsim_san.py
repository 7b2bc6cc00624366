"""Simulated ESX hosts on separate machines sharing one LUN on the network (issue 15).

Two ``hostsim boot`` processes, each in its own network namespace, boot on one datastore that
``vmfs-mkfs`` made on a tgt LUN (SCSI-2 reservations: tgt has no COMPARE AND WRITE) or on an RBD
image (ATS: librbd's compare-and-write).  They share it only through the target: a VM that one
host runs cannot be powered on by the other (its files are locked on the disk), and can be once
the first powers it off.  Each host's statistics show how it takes on-disk locks: esxtop's device
panel shows the mode (LOCK: SCSI or ATS), the batch file counts reservations and conflicts per
second, or ATS commands and their failures.
"""

from __future__ import annotations

import csv
import io
import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, tool
from tests.helpers import read_pty_until
from tests.network import netns
from tests.network.ceph import CephCluster
from tests.network.tgt import TgtTarget

pytestmark = [pytest.mark.network, pytest.mark.slow]

BIN = Path(sys.executable).parent
GUEST = REPO / "hostsim" / "examples" / "guests" / "disk-writer.guest"

HOST = """\
[host]
name = {name}
pcpus = 2
mhz = 2000
memory_mb = 1024
console_mb = 192
vmkernel_mb = 24
swap_mb = 1024
seed = {seed}

[lun san]
network = {url}
datastore = shared
"""


class BootedHost:
    """``hostsim boot`` of one host in namespace ``k`` of the LAN, administered through its
    console socket with the same CLI a user types."""

    def __init__(self, lan: netns.Lan, k: int, url: str, folder: Path) -> None:
        self.name = f"san-esx{k}"
        self.state = folder / "state"
        self.config = folder / f"{self.name}.host"
        self.config.write_text(HOST.format(name=self.name, seed=k, url=url))
        self.env = {**os.environ, "HOSTSIM_STATE_DIR": str(self.state)}
        self.err = folder / f"{self.name}.err"
        with open(self.err, "w") as err:
            self.proc = subprocess.Popen(lan.argv(k, [str(BIN / "hostsim"), "boot", str(self.config)]), env=self.env,
                                         stdout=subprocess.DEVNULL, stderr=err, cwd=folder)
        deadline = time.monotonic() + 90
        while not (self.state / f"{self.name}.sock").exists():
            assert self.proc.poll() is None, self.err.read_text()
            assert time.monotonic() < deadline, self.err.read_text()
            time.sleep(0.2)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([BIN / "hostsim", args[0], "--host", self.name, *args[1:]], env=self.env,
                              capture_output=True, text=True, timeout=120)

    def esxtop_batch(self, delay: float) -> dict[str, str]:
        """The last row of ``esxtop -b -d delay -n 1``, by column name."""
        r = self.cli("esxtop", "-b", "-d", str(delay), "-n", "1")
        assert r.returncode == 0, r.stderr
        header, *rows = list(csv.reader(io.StringIO(r.stdout)))
        return dict(zip(header, rows[-1], strict=True))

    def device_screen(self) -> str:
        """esxtop's disk device panel on a real pty (``u``), then ``q``."""
        master, slave = pty.openpty()
        proc = subprocess.Popen([BIN / "hostsim", "esxtop", "--host", self.name, "-d", "1"], stdin=slave,
                                stdout=slave, stderr=slave, env=self.env, close_fds=True)
        os.close(slave)
        seen = bytearray()
        try:
            read_pty_until(master, b"%USED", seen)
            os.write(master, b"u")
            read_pty_until(master, b"CONS/s", seen)
            read_pty_until(master, b"\n", seen)  # the row after the header
            read_pty_until(master, b"\n", seen)
            os.write(master, b"q")
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            os.close(master)
        return seen[seen.rindex(b"DEVICE"):].decode(errors="replace")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        return self.err.read_text()


@pytest.mark.parametrize("storage", ["iscsi", "rbd"])
def test_two_simulated_hosts_on_separate_machines_share_a_network_lun(
        storage: str, lan: netns.Lan, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if storage == "iscsi":
        target: TgtTarget = request.getfixturevalue("tgt_target")
        url, _ = target.add_lun("hostsim-san", 1 << 30)
        host_url = url.replace("127.0.0.1", target.add_portal(lan.target_ip).split(":")[0])
    else:
        cluster: CephCluster = request.getfixturevalue("ceph_cluster")
        url = host_url = cluster.image("hostsim-san", 1 << 30)
    r = subprocess.run([tool("vmfs-mkfs"), "-t", "vmfs5", "-L", "shared", url], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    hosts: list[BootedHost] = []
    try:
        for k in (1, 2):
            (tmp_path / f"h{k}").mkdir()
            hosts.append(BootedHost(lan, k, host_url, tmp_path / f"h{k}"))
        a, b = hosts
        r = a.cli("vim-cmd", "hostsim/createvm", "vm1", "memory=64M", f"guest={GUEST}", "disk=64M:thin")
        assert (r.returncode, r.stdout) == (0, "1\n"), r.stdout + r.stderr
        assert a.cli("vim-cmd", "vmsvc/power.on", "1").stdout == "Powering on VM:\n"
        # the other machine sees the VM's folder through the LUN, and its files locked by host a
        r = b.cli("vim-cmd", "solo/registervm", "/vmfs/volumes/shared/vm1/vm1.vmx")
        assert r.returncode == 0, r.stdout + r.stderr
        vmid = r.stdout.strip()
        r = b.cli("vim-cmd", "vmsvc/power.on", vmid)
        print(f"\n{storage}: host b's power-on while host a runs the VM: {r.stdout.strip()}")
        assert r.returncode == 1 and "lock" in r.stdout.lower() and "Traceback" not in r.stdout + r.stderr
        assert a.cli("vim-cmd", "vmsvc/power.off", "1").stdout == "Powering off VM:\n"
        deadline = time.monotonic() + 60  # host a's locks are given back (or kept briefly, then given back)
        while (r := b.cli("vim-cmd", "vmsvc/power.on", vmid)).returncode != 0:
            assert time.monotonic() < deadline, r.stdout + r.stderr
            time.sleep(1)
        assert r.stdout == "Powering on VM:\n"
        # what each host's statistics say about its locking (a heartbeat renewal every 3 s at least)
        for h in hosts:
            row = h.esxtop_batch(4)
            (device,) = {c.split("(")[1].split(")")[0] for c in row if "Physical Disk SCSI Device(" in c}
            col = rf"\\{h.name}\Physical Disk SCSI Device({device})"
            figures = {name: float(row[f"{col}\\{name}"]) for name in
                       ("ATS Commands", "ATS Failures", "Reservations/sec", "Reservation Conflicts/sec")}
            screen = h.device_screen()
            print(f"{storage}: {h.name}: {figures}\n{screen.strip()}")
            row_line = next(line for line in screen.splitlines() if line.startswith(device))
            if storage == "iscsi":
                assert figures["Reservations/sec"] > 0 and figures["ATS Commands"] == 0
                assert " SCSI " in row_line, row_line
            else:
                assert figures["ATS Commands"] > 0 and figures["Reservations/sec"] == 0
                assert " ATS " in row_line, row_line
        assert b.cli("vim-cmd", "vmsvc/power.off", vmid).stdout == "Powering off VM:\n"
    finally:
        errs = [h.stop() for h in hosts]
    for h, err in zip(hosts, errs, strict=True):
        assert h.proc.returncode == 0 and f"{h.name}: shut down" in err and "Traceback" not in err, err
    r = subprocess.run([tool("vmfs-fsck"), "-n", url], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_host_with_a_network_lun_refuses_to_run_ahead_of_real_time(tmp_path: Path) -> None:
    """`hostsim boot --speed 20` on a LUN shared with other machines: one line, exit 1, before
    anything is opened (the URL need not even answer)."""
    config = tmp_path / "fast.host"
    config.write_text(HOST.format(name="fast", seed=1, url="iscsi://192.0.2.1/iqn.2026-12.org.pyvmfs:none/1"))
    r = subprocess.run([BIN / "hostsim", "boot", str(config), "--speed", "20"], capture_output=True, text=True,
                       timeout=60, env={**os.environ, "HOSTSIM_STATE_DIR": str(tmp_path)})
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "is on the network" in r.stderr, r.stderr
