"""The service console of a whole simulated host: boot from a config, the console world, vim-cmd
and vmware-cmd in their real output formats, esxtop's identities over real VMs, and a host that
runs paced in its own process, administered from another one (esx-design.md 6.2, 6.3; section 8
experiments 30 and 31)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hostsim.console import config as cfg
from hostsim.console import scenario as sc
from hostsim.console.esxtop import Interval
from hostsim.console.host import Host, HostError
from hostsim.console.vimcmd import vim_cmd, vmware_cmd
from hostsim.vmkernel.engine import SECOND

ROOT = Path(__file__).resolve().parents[2]
GUESTS = ROOT / "hostsim" / "examples" / "guests"
BIN = Path(sys.executable).parent

HOST_CONFIG = """\
[host]
name = {name}
pcpus = 2
mhz = 2000
memory_mb = 1024
console_mb = 192
vmkernel_mb = 24
swap_mb = 2048
mode = esx2
seed = 7
epoch = 2026-12-01T08:00:00Z

[lun datastore1]
memory = 2G
datastore = datastore1
format = vmfs5
"""


def write_config(tmp_path: Path, name: str = "esx01") -> Path:
    path = tmp_path / f"{name}.host"
    path.write_text(HOST_CONFIG.format(name=name))
    return path


@pytest.fixture
def host(tmp_path: Path):  # type: ignore[no-untyped-def]
    h = Host(cfg.load(write_config(tmp_path)))
    yield h
    if not h.closed:
        h.shutdown()


def test_experiment_31_console_defaults_and_cli(host: Host) -> None:
    """After boot the console world runs on pCPU 0 with 2000 shares and an 8 % minimum;
    vmware-cmd -l lists every registered .vmx, getstate prints `getstate() = on`; vim-cmd
    vmsvc/getallvms prints its header and power.getstate `Powered on`."""
    console = host.cpu.console
    assert console is not None
    a = host.create_vm("web1", memory_mb=128, disks=((64, "thin"),), program=GUESTS / "cpu-hog.guest")
    b = host.create_vm("db1", memory_mb=128, disks=((64, "thin"),), program=GUESTS / "idle.guest")
    host.power_on(a)
    host.run(5 * SECOND)
    out, _rc = vim_cmd(host, ["vmsvc/getallvms"])
    lines = out.splitlines()
    rows = [
        ("console world pCPU", "0", str(console.affinity)),
        ("console shares", "2000", str(console.shares)),
        ("console min", "8 %", f"{console.min_pct} %"),
        ("getallvms header", "Vmid Name File Guest OS Version Annotation", " ".join(lines[0].split())),
        ("vmware-cmd getstate (on)", "getstate() = on", vmware_cmd(host, ["/vmfs/volumes/datastore1/web1/web1.vmx",
                                                                        "getstate"])[0].strip()),
        ("vmware-cmd getstate (off)", "getstate() = off", vmware_cmd(host, ["/vmfs/volumes/datastore1/db1/db1.vmx",
                                                                          "getstate"])[0].strip()),
        ("power.getstate", "Powered on", vim_cmd(host, ["vmsvc/power.getstate", str(a)])[0].splitlines()[-1]),
    ]
    print("\nexperiment 31: console defaults and CLI")
    for what, expected, simulated in rows:
        print(f"  {what:28} expected {expected!r:50} simulated {simulated!r}")
    assert console.affinity == (0,) and console.shares == 2000 and console.min_pct == 8
    assert " ".join(lines[0].split()) == "Vmid Name File Guest OS Version Annotation"
    assert re.match(r"^1\s+web1\s+\[datastore1\] web1/web1\.vmx\s+\S+\s+vmx-\d\d$", lines[1])
    assert re.match(r"^2\s+db1\s+\[datastore1\] db1/db1\.vmx\s+\S+\s+vmx-\d\d$", lines[2])
    assert vmware_cmd(host, ["-l"]) == ("/vmfs/volumes/datastore1/web1/web1.vmx\n"
                                         "/vmfs/volumes/datastore1/db1/db1.vmx\n", 0)
    for what, expected, simulated in rows[3:]:
        assert simulated == expected, what
    # the console world really runs on pCPU 0 only, and the VM keeps pCPU time
    assert host.cpu.console.vcpus[0].last_pcpu in (None, host.cpu.pcpus[0])
    assert vim_cmd(host, ["vmsvc/power.on", str(b)]) == ("Powering on VM:\n", 0)
    assert vmware_cmd(host, ["/vmfs/volumes/datastore1/db1/db1.vmx", "getstate"]) == ("getstate() = on\n", 0)
    assert vmware_cmd(host, ["-q", "/vmfs/volumes/datastore1/db1/db1.vmx", "stop"]) == ("1\n", 0)
    assert vim_cmd(host, ["vmsvc/power.getstate", str(b)])[0].endswith("Powered off\n")


def test_vim_cmd_summaries_and_errors(host: Host) -> None:
    a = host.create_vm("web1", memory_mb=128, vcpus=2, disks=((64, "thin"),), program=GUESTS / "cpu-hog.guest")
    host.power_on(a)
    host.run(10 * SECOND)
    summary, rc = vim_cmd(host, ["vmsvc/get.summary", str(a)])
    assert rc == 0 and summary.startswith("Listsummary:\n(vim.vm.Summary) {\n")
    assert 'powerState = "poweredOn",' in summary and "numCpu = 2," in summary and "memorySizeMB = 128," in summary
    used = int(re.search(r"overallCpuUsage = (\d+),", summary).group(1))  # type: ignore[union-attr]
    assert 3000 <= used <= 4000  # two CPU-bound vCPUs on two 2 GHz pCPUs, beside the console
    hs, rc = vim_cmd(host, ["hostsvc/hostsummary"])
    assert rc == 0 and "numCpuCores = 2," in hs and "cpuMhz = 2000," in hs and 'name = "esx01",' in hs
    assert vim_cmd(host, ["vmsvc/get.guestheartbeatStatus", str(a)]) == ("green\n", 0)
    assert vim_cmd(host, ["vmsvc/power.getstate", "99"]) == ('Unable to find a VM corresponding to "99"\n', 1)
    out, rc = vim_cmd(host, ["vmsvc/no.such"])
    assert rc == 1 and "Unknown command" in out
    out, rc = vim_cmd(host, ["vmsvc/power.on", str(a)])
    assert rc == 1 and "cannot be performed in the current state (Powered on)" in out
    assert vmware_cmd(host, ["/vmfs/volumes/datastore1/nope/nope.vmx", "getstate"])[1] == 1


def test_experiment_30_esxtop_identities_over_real_vms(host: Host) -> None:
    """Over a 5 s refresh with VMs contending for CPU, memory and disk: GAVG = DAVG + KAVG per VM
    and device (±0.1 ms), %USED ≈ %RUN + %SYS − %OVRLP, and per vCPU %RUN + %RDY + %CSTP + %WAIT
    ≈ 100 (±1)."""
    vms = [host.create_vm("web1", memory_mb=128, disks=((64, "thin"),), program=GUESTS / "cpu-hog.guest"),
           host.create_vm("db1", memory_mb=128, vcpus=2, disks=((64, "thin"),), program=GUESTS / "mixed.guest"),
           host.create_vm("log1", memory_mb=64, disks=((64, "thin"),), program=GUESTS / "disk-writer.guest")]
    for vmid in vms:
        host.power_on(vmid)
    host.run(10 * SECOND)
    before = host.sample()
    host.run(15 * SECOND)
    after = host.sample()
    iv = Interval(before, after)
    print("\nexperiment 30: esxtop identities over 5 s")
    checked = 0
    for _gid, r in sorted(iv.cpu.items()):
        lhs = r.used
        rhs = r.run + r.sys - r.ovrlp
        per_vcpu = (r.run + r.rdy + r.cstp + r.wait) / max(r.vcpus, 1)
        print(f"  {r.name:8} %USED {lhs:7.2f} vs %RUN+%SYS-%OVRLP {rhs:7.2f};  "
              f"(%RUN+%RDY+%CSTP+%WAIT)/vCPU {per_vcpu:7.2f} (expected 100 ±1)")
        assert abs(lhs - rhs) <= 0.5
        assert abs(per_vcpu - 100) <= 1
        checked += 1
    assert checked == 4  # three VMs and the console world
    for _gid, d in sorted(iv.vm_disks.items()):
        t = d.total
        print(f"  {d.name:16} GAVG {t.gavg:7.3f} ms vs DAVG+KAVG {t.davg + t.kavg:7.3f} ms, {t.cmds_s:8.1f} cmds/s")
        assert abs(t.gavg - (t.davg + t.kavg)) <= 0.1
    assert any(d.total.cmds_s > 0 for d in iv.vm_disks.values())
    for name, dev in iv.devices.items():
        assert abs(dev.gavg - (dev.davg + dev.kavg)) <= 0.1, name


def test_power_on_refusals_name_the_reason(host: Host) -> None:
    big = host.create_vm("huge", memory_mb=4096, disks=((64, "thin"),))
    with pytest.raises(Exception) as info:
        host.power_on(big)
    assert "insufficient" in str(info.value).lower() and "\n" not in str(info.value)
    assert host.record(big).running is None
    files = [e.name for e in host.filesystem("datastore1").listdir("/huge")]
    assert not [f for f in files if f.endswith(".vswp")]  # nothing left by the refused power-on
    with pytest.raises(HostError, match="no datastore 'nope'"):
        host.create_vm("x", memory_mb=64, datastore="nope")
    with pytest.raises(HostError, match='Unable to find a VM corresponding to "7"'):
        host.power_on(7)


def test_vms_made_registered_and_destroyed_from_the_console(host: Host) -> None:
    """vmsvc/createdummyvm, vmsvc/unregister, solo/registervm (the folder stays on the
    datastore), vmsvc/destroy (it goes)."""
    out, rc = vim_cmd(host, ["vmsvc/createdummyvm", "dummy", "/vmfs/volumes/datastore1"])
    assert (out, rc) == ("1\n", 0)
    assert vim_cmd(host, ["vmsvc/power.on", "1"]) == ("Powering on VM:\n", 0)
    out, rc = vim_cmd(host, ["vmsvc/unregister", "1"])
    assert rc == 1 and "(Powered on)" in out
    assert vim_cmd(host, ["vmsvc/power.off", "1"])[1] == 0
    assert vim_cmd(host, ["vmsvc/unregister", "1"]) == ("", 0)
    assert vim_cmd(host, ["vmsvc/getallvms"])[0].count("\n") == 1  # the header only
    fs = host.filesystem("datastore1")
    assert {"dummy.vmx", "dummy.vmdk", "dummy-flat.vmdk"} <= {e.name for e in fs.listdir("/dummy")}
    out, rc = vim_cmd(host, ["solo/registervm", "/vmfs/volumes/datastore1/dummy/dummy.vmx"])
    assert (out, rc) == ("2\n", 0)
    out, rc = vim_cmd(host, ["solo/registervm", "/vmfs/volumes/datastore1/dummy/dummy.vmx"])
    assert rc == 1 and "already registered as vmid 2" in out
    assert vim_cmd(host, ["vmsvc/destroy", "2"]) == ("", 0)
    assert "dummy" not in {e.name for e in fs.listdir("/")}
    out, rc = vim_cmd(host, ["solo/registervm", "/vmfs/volumes/datastore1/dummy/dummy.vmx"])
    assert rc == 1 and out[-1] == "\n" and out.count("\n") == 1


def _wait_for(path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear")
        time.sleep(0.1)


def test_a_paced_host_is_administered_from_another_process(tmp_path: Path) -> None:
    """`hostsim boot` runs the host paced (here 20 simulated s per second); `hostsim vim-cmd`,
    `vmware-cmd` and `esxtop -b` in other processes reach it through its console socket; SIGTERM
    shuts it down cleanly (VMs off, datastores unmounted)."""
    config = write_config(tmp_path, "esx02")
    state = tmp_path / "state"
    env = {**os.environ, "HOSTSIM_STATE_DIR": str(state)}
    boot = subprocess.Popen([BIN / "hostsim", "boot", str(config), "--speed", "20"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(state / "esx02.sock")

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([BIN / "hostsim", *args], env=env, capture_output=True, text=True, timeout=120)

        r = cli("vim-cmd", "vmsvc/getallvms")
        assert r.returncode == 0
        assert r.stdout.split() == ["Vmid", "Name", "File", "Guest", "OS", "Version", "Annotation"]
        r = cli("vim-cmd", "hostsvc/hostsummary")
        assert r.returncode == 0 and 'name = "esx02",' in r.stdout
        r = cli("esxtop", "-b", "-d", "0.5", "-n", "2")
        assert r.returncode == 0, r.stderr
        rows = r.stdout.splitlines()
        assert rows[0].startswith('"(PDH-CSV 4.0) (UTC)(0)"') and len(rows) == 3  # the header, then -n rows
        assert "\\\\esx02\\Physical Cpu(0)\\% Util Time" in rows[0]
        r = cli("vim-cmd", "vmsvc/power.on", "1")
        assert r.returncode == 1 and 'Unable to find a VM corresponding to "1"' in r.stdout
        r = cli("vmware-cmd", "-l")
        assert r.returncode == 0 and r.stdout == ""
        # a VM made from the shell, as a scenario's `create vm` line makes one
        guest = os.path.relpath(GUESTS / "cpu-hog.guest")
        r = cli("vim-cmd", "hostsim/createvm", "web1", "memory=128M", "vcpus=2", f"guest={guest}", "disk=64M:thin",
                "cpu.shares=high")
        assert (r.returncode, r.stdout) == (0, "1\n"), r.stdout + r.stderr
        assert cli("vim-cmd", "vmsvc/power.on", "1").stdout == "Powering on VM:\n"
        time.sleep(1)
        r = cli("vmware-cmd", "/vmfs/volumes/datastore1/web1/web1.vmx", "getstate")
        assert r.stdout == "getstate() = on\n"
        r = cli("esxtop", "-b", "-d", "0.5", "-n", "1")
        assert r.returncode == 0 and "Group Cpu(1001:web1)" in r.stdout.splitlines()[0]
        r = cli("vim-cmd", "hostsim/createvm", "bad", "memory=lots")
        assert r.returncode == 1 and "memory" in r.stdout and "Traceback" not in r.stdout + r.stderr
        assert cli("vim-cmd", "vmsvc/power.off", "1").stdout == "Powering off VM:\n"
        r = cli("vim-cmd", "--host", "nobody", "vmsvc/getallvms")
        assert r.returncode == 1 and r.stderr.startswith("hostsim: ") and "Traceback" not in r.stderr
    finally:
        boot.send_signal(signal.SIGTERM)
        _out, err = boot.communicate(timeout=120)
    assert boot.returncode == 0, err
    assert "esx02: shut down" in err and "Traceback" not in err
    assert not (state / "esx02.sock").exists()


def test_a_vm_another_host_runs_cannot_be_powered_on_here(tmp_path: Path) -> None:
    """Two simulated hosts on one image LUN (each with its own identity, heartbeat slot and
    locks): the second host's power-on of a VM the first runs fails at once, naming the first
    host as the lock owner; once the first powers it off, the second can run it."""
    image = tmp_path / "shared.img"
    with open(image, "wb") as f:
        f.truncate(2 << 30)
    configs = []
    for name in ("esx-a", "esx-b"):
        text = HOST_CONFIG.format(name=name).replace("memory = 2G", f"image = {image}")
        (tmp_path / f"{name}.host").write_text(text)
        configs.append(tmp_path / f"{name}.host")
    a = Host(cfg.load(configs[0]))  # formats the blank image
    try:
        vmid = a.create_vm("vm1", memory_mb=64, disks=((64, "thin"),), program=GUESTS / "disk-writer.guest")
        a.power_on(vmid)
        a.run(2 * SECOND)
        b = Host(cfg.load(configs[1]))
        try:
            (rec,) = [r for r in b.inventory.values() if r.folder.name == "vm1"]  # registered at boot
            with pytest.raises(Exception) as info:
                b.power_on(rec.vmid)
            message = str(info.value)
            print(f"\nsecond host's power-on: {message}")
            assert a.identity.uuid in message and "lock" in message.lower() and "\n" not in message
            assert b.record(rec.vmid).running is None
            a.power_off(vmid)
            b.power_on(rec.vmid)
            b.run(2 * SECOND)
            assert b.record(rec.vmid).running is not None
        finally:
            b.shutdown()
    finally:
        a.shutdown()
    fsck = subprocess.run([BIN / "vmfs-fsck", "-n", str(image)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


DISK_READER = """\
guest reader
forever
    read scsi0:0 4KiB random within 32MiB
end
"""


def test_disk_shares_in_the_vmx_split_a_saturated_lun(tmp_path: Path) -> None:
    """Two VMs keep a LUN's device queue full (4 vCPUs reading each, so both stay backlogged
    behind a device queue of 2; eager-zeroed disks,
    since a read of a thin disk's hole needs no device command): ESX's
    `sched.scsi0:0.shares` in their .vmx (high 2000 against low 500) gives them the LUN 4:1
    through mClock; changing the controls at run time (`set_controls`, the scenario's
    `set VM disk.shares=...`) evens them out; `throughputCap` caps one at its IOPS."""
    config = write_config(tmp_path, "esx-io")
    text = config.read_text().replace("format = vmfs5\n", "format = vmfs5\nqueue_depth = 2\n")
    config.write_text(text.replace("pcpus = 2", "pcpus = 8").replace("mode = esx2", "mode = esx4"))  # 4-vCPU VMs
    program = tmp_path / "reader.guest"
    program.write_text(DISK_READER)
    h = Host(cfg.load(config))
    try:
        a = h.create_vm("hi", memory_mb=64, vcpus=4, disks=((64, "eagerzeroedthick"),), program=program,
                        disk_shares="high")
        b = h.create_vm("lo", memory_mb=64, vcpus=4, disks=((64, "eagerzeroedthick"),), program=program,
                        disk_shares="low")
        assert h.record(a).folder.vmx.get("sched.scsi0:0.shares") == "high"
        h.power_on(a)
        h.power_on(b)

        def iops(seconds: int) -> dict[str, float]:
            before = h.sample()
            h.run(h.engine.now + seconds * SECOND)
            iv = Interval(before, h.sample())
            return {d.name: d.total.cmds_s for d in iv.vm_disks.values()}

        iops(2)
        first = iops(5)
        h.set_controls(b, disk_shares="high")
        iops(1)
        second = iops(5)
        h.set_controls(a, disk_limit_iops=200)
        iops(1)
        third = iops(5)
        print(f"\nIOPS with shares high:low {first}, high:high {second}, hi capped at 200: {third}")
        assert 3.5 <= first["hi"] / first["lo"] <= 4.5
        assert 0.9 <= second["hi"] / second["lo"] <= 1.1
        assert 190 <= third["hi"] <= 205 and third["lo"] > 2 * third["hi"]
        # the same controls as scenario / `vim-cmd hostsim/createvm` keys
        step = sc.parse_create(["io1", "memory=64M", "disk.shares=high", "disk.reservation=100",
                                "disk.limit=300iops"], h.config)
        assert (step.controls.disk_shares, step.controls.disk_reservation_iops,
                step.controls.disk_limit_iops) == ("high", 100, 300)
        with pytest.raises(sc.ScenarioError, match="limit 300 IOPS is below the reservation 400 IOPS"):
            sc.parse_create(["io2", "memory=64M", "disk.reservation=400", "disk.limit=300"], h.config)
    finally:
        h.shutdown()
