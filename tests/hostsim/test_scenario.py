"""The scenario file: parsed into timed steps, the example scenario, and every malformed case as
one line ``FILE:LINE: message``."""

from __future__ import annotations

from pathlib import Path

import pytest

from hostsim.console import scenario as sc
from hostsim.console.config import ConfigError
from hostsim.console.scenario import ScenarioError, load, parse

ROOT = Path(__file__).resolve().parents[2]
S = 1_000_000

HOST = """\
[host]
name = esx01
pcpus = 2
mhz = 2000
memory_mb = 2048

[lun l0]
memory = 8G
datastore = ds0

[lun l1]
memory = 8G
lun = 1
datastore = ds1

[pool gold]
cpu_shares = high
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "h.host").write_text(HOST)
    (tmp_path / "hog.guest").write_text("guest hog\nforever\n    compute 10ms\nend\n")
    return tmp_path


def run(folder: Path, body: str) -> sc.Scenario:
    path = folder / "s.scenario"
    path.write_text("boot h.host\n" + body)
    return load(path)


def test_steps_in_order_with_times(folder: Path) -> None:
    s = run(folder, """\
esxtop every 2s            # sampling
create vm a memory=512M vcpus=2 cpu.shares=high cpu.reservation=1.5GHz cpu.limit=unlimited \
cpu.min=20% cpu.max=150 mem.shares=3000 mem.reservation=256M mem.limit=384M pool=gold guest=hog.guest \
disk=8G disk=1G:zeroedthick@ds1 disk=512M:eagerzeroedthick balloon=no
power on a
at 30s set a cpu.shares=low mem.limit=unlimited
at 30s snapshot create a s1
run 1m
idle-tax 75%
snapshot revert a s1
at 2m
snapshot remove a s1
power off a
""")
    kinds = [(type(st).__name__, st.at_us, st.line) for st in s.steps]
    assert kinds == [("Boot", 0, 1), ("EsxtopInterval", 0, 2), ("CreateVm", 0, 3), ("PowerOn", 0, 4),
                     ("Advance", 30 * S, 5), ("SetControls", 30 * S, 5), ("Snapshot", 30 * S, 6),
                     ("Advance", 90 * S, 7), ("SetIdleTax", 90 * S, 8), ("Snapshot", 90 * S, 9),
                     ("Advance", 120 * S, 10), ("Snapshot", 120 * S, 11), ("PowerOff", 120 * S, 12)]
    assert s.end_us == 120 * S and s.config.name == "esx01"
    boot, esx, create = s.steps[:3]
    assert isinstance(boot, sc.Boot) and boot.config is s.config
    assert isinstance(esx, sc.EsxtopInterval) and esx.interval_us == 2 * S
    assert isinstance(create, sc.CreateVm)
    assert (create.name, create.memory_mb, create.vcpus, create.pool, create.balloon) == ("a", 512, 2, "gold", False)
    assert create.guest == folder / "hog.guest"
    assert create.controls == sc.Controls(cpu_shares="high", cpu_reservation_mhz=1500, cpu_limit_mhz=-1,
                                          cpu_min_pct=20.0, cpu_max_pct=150.0, mem_shares=3000,
                                          mem_reservation_mb=256, mem_limit_mb=384)
    assert create.disks == (sc.DiskSpec("scsi0:0", 8 << 30, "thin", "ds0"),
                            sc.DiskSpec("scsi0:1", 1 << 30, "zeroedthick", "ds1"),
                            sc.DiskSpec("scsi0:2", 512 << 20, "eagerzeroedthick", "ds0"))
    change = s.steps[5]
    assert isinstance(change, sc.SetControls)
    assert change.controls == sc.Controls(cpu_shares="low", mem_limit_mb=-1)
    snap = s.steps[6]
    assert isinstance(snap, sc.Snapshot) and (snap.vm, snap.op, snap.snapshot) == ("a", "create", "s1")
    tax = s.steps[8]
    assert isinstance(tax, sc.SetIdleTax) and tax.tax == pytest.approx(0.75)


def test_disk_nodes_skip_the_controller(folder: Path) -> None:
    disks = " ".join(["disk=1G"] * 9)
    create = run(folder, f"create vm a memory=64M {disks}\n").steps[1]
    assert isinstance(create, sc.CreateVm)
    assert [d.node for d in create.disks] == [f"scsi0:{i}" for i in (0, 1, 2, 3, 4, 5, 6, 8, 9)]


def test_the_contention_example() -> None:
    s = load(ROOT / "hostsim" / "examples" / "contention.scenario")
    creates = [st for st in s.steps if isinstance(st, sc.CreateVm)]
    assert [c.name for c in creates] == ["web1", "db1", "batch1"]
    assert all(d.kind == "thin" for c in creates for d in c.disks)
    assert all(c.guest is not None and c.guest.is_file() for c in creates)
    assert sum(c.memory_mb for c in creates) > s.config.memory_mb - s.config.console_mb - s.config.vmkernel_mb
    assert sum(c.vcpus for c in creates) > s.config.pcpus
    assert [st.op for st in s.steps if isinstance(st, sc.Snapshot)] == ["create", "revert", "remove"]
    times = [st.at_us for st in s.steps]
    assert times == sorted(times) and s.end_us == 480 * S


BAD = [
    # (scenario body after "boot h.host", the line named, words of the message)
    ("frobnicate\n", 2, "unknown command 'frobnicate'"),
    ("create vm a memory=64M\ncreate vm a memory=64M\n", 3, "a VM named 'a' already exists"),
    ("create vm a\n", 2, "create vm a: memory=SIZE is required"),
    ("create vm a memory=lots\n", 2, "memory: not a size: 'lots'"),
    ("create vm a memory=2M\n", 2, "a VM needs at least 4 MB"),
    ("create vm a memory=64M vcpus=9\n", 2, "vcpus: 9 is out of range (1 to 8)"),
    ("create vm a memory=64M colour=red\n", 2, "unknown option 'colour'"),
    ("create vm a memory=64M memory=128M\n", 2, "option 'memory' given twice"),
    ("create vm a memory=64M vcpus=\n", 2, "option 'vcpus' has no value"),
    ("create vm a memory=64M oops\n", 2, "expected key=value, got 'oops'"),
    ("create vm a memory=64M cpu.shares=loud\n", 2, "cpu.shares: not shares: 'loud'"),
    ("create vm a memory=64M cpu.reservation=fast\n", 2, "cpu.reservation: not a frequency"),
    ("create vm a memory=64M cpu.reservation=2GHz cpu.limit=1GHz\n", 2, "limit 1000 MHz is below the reservation"),
    ("create vm a memory=64M cpu.min=60% cpu.max=50%\n", 2, "cpu.max 50% is below cpu.min 60%"),
    ("create vm a memory=64M cpu.max=150%\n", 2, "cpu.max 150% is above 100% per vCPU"),
    ("create vm a memory=64M mem.reservation=128M\n", 2, "mem.reservation 128 MB is above the VM's memory 64 MB"),
    ("create vm a memory=64M guest=missing.guest\n", 2, "guest: {dir}/missing.guest: no such file"),
    ("create vm a memory=64M pool=platinum\n", 2, "pool: no pool 'platinum'"),
    ("create vm a memory=64M disk=1G@nowhere\n", 2, "disk: no datastore 'nowhere'"),
    ("create vm a memory=64M disk=1G:thick\n", 2, "disk: type 'thick' is not one of thin, zeroedthick"),
    ("create vm a memory=64M disk=100\n", 2, "a size is a positive multiple of 512 bytes"),
    ("create vm a memory=64M " + "disk=1G " * 16 + "\n", 2, "at most 15 disks on scsi0"),
    ("create vm a memory=64M balloon=maybe\n", 2, "balloon: not yes or no"),
    ("create disk a\n", 2, "usage: create vm NAME"),
    ("power on a\n", 2, "no VM named 'a' (create it first)"),
    ("create vm a memory=64M\npower on a\npower on a\n", 4, "a is already powered on"),
    ("create vm a memory=64M\npower off a\n", 3, "a is not powered on"),
    ("create vm a memory=64M\npower up a\n", 3, "usage: power on|off VM"),
    ("create vm a memory=64M\nset a\n", 3, "usage: set VM"),
    ("create vm a memory=64M\nset a cpu.limit=lots\n", 3, "cpu.limit: not a frequency"),
    ("create vm a memory=64M\nset a vcpus=2\n", 3, "unknown option 'vcpus'"),
    ("create vm a memory=64M\nset a mem.reservation=1G\n", 3, "mem.reservation 1024 MB is above the VM's memory"),
    ("create vm a memory=64M\nsnapshot revert a s1\n", 3, "a has no snapshot 's1'"),
    ("create vm a memory=64M\nsnapshot create a s1\nsnapshot remove a s1\nsnapshot remove a s1\n", 5,
     "a has no snapshot 's1'"),
    ("create vm a memory=64M\nsnapshot create a s1\nsnapshot create a s1\n", 4, "a already has a snapshot 's1'"),
    ("create vm a memory=64M\nsnapshot take a s1\n", 3, "usage: snapshot create|revert|remove VM NAME"),
    ("at 30s\nat 20s\n", 3, "at 20s is before the current time (30 s)"),
    ("at soon\n", 2, "at: not a duration: 'soon'"),
    ("at\n", 2, "usage: at TIME"),
    ("run 0s\n", 2, "run 0s: the duration must be positive"),
    ("run\n", 2, "usage: run DURATION"),
    ("esxtop every 0s\n", 2, "the interval must be positive"),
    ("esxtop 5s\n", 2, "usage: esxtop every DURATION"),
    ("idle-tax 1.5\n", 2, "idle-tax: 1.5 is out of range (0.0 to 0.99)"),
    ("idle-tax 120%\n", 2, "idle-tax: 120.0 is out of range (0.0 to 99.0)"),
    ("boot h.host\n", 2, "the host is already booted"),
    ("create vm 'a b memory=64M\n", 2, "cannot split the line into words"),
    ("at 5s frobnicate\n", 2, "unknown command 'frobnicate'"),
]


@pytest.mark.parametrize(("body", "line", "message"), BAD, ids=[b[2][:40] for b in BAD])
def test_every_malformed_case_is_one_line_naming_its_line(folder: Path, body: str, line: int, message: str) -> None:
    path = folder / "s.scenario"
    with pytest.raises(ScenarioError) as info:
        run(folder, body)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"{path}:{line}: "), text
    assert message.format(dir=folder) in text, text


def test_boot_must_come_first(folder: Path) -> None:
    with pytest.raises(ScenarioError, match=r"s.scenario:2: the first command must be 'boot CONFIG'$"):
        parse("# comment\nrun 5s\nboot h.host\n", folder / "s.scenario")
    with pytest.raises(ScenarioError, match=r"s.scenario:1: empty scenario"):
        parse("# nothing\n", folder / "s.scenario")
    with pytest.raises(ScenarioError, match=r"s.scenario:1: usage: boot CONFIG$"):
        parse("boot\n", folder / "s.scenario")


def test_a_bad_boot_config_is_reported_at_its_own_line(folder: Path) -> None:
    (folder / "bad.host").write_text(HOST.replace("mhz = 2000", "mhz = fast"))
    with pytest.raises(ConfigError, match=r"bad.host:4: mhz: not a whole number: 'fast'$"):
        parse("boot bad.host\n", folder / "s.scenario")
    with pytest.raises(ConfigError, match=r"none.host: cannot read"):
        parse("boot none.host\n", folder / "s.scenario")


def test_unreadable_scenario(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"x.scenario: cannot read: No such file or directory$"):
        load(tmp_path / "x.scenario")
