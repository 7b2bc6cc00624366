"""esxtop over HostSamples: rates, the four panels, PDH-CSV batch files (read back by the csv
module and by pandas), the interactive loop on a real pty, and the PNG plot.

The samples are built by hand from constant rates (a VM that gets 2/3 of a pCPU for the whole
run has ``used_us = 2 t / 3``), so every expected figure below is arithmetic on those rates, not
a copy of the code's output."""

from __future__ import annotations

import csv
import io
import os
import pty
import re
import select
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import pytest

from hostsim.console import esxtop, pdh
from hostsim.console.esxtop import Interval, batch, batch_csv, disk_rates, lock_rates, screen
from hostsim.console.plot import plot_run
from hostsim.console.stats import (
    CpuStat,
    DeviceSample,
    DiskStat,
    GroupSample,
    HostMemStat,
    HostSample,
    LockStat,
    MemStat,
    PcpuSample,
    SampleError,
    VmDiskSample,
    VmMemSample,
)
from tests.helpers import read_pty_until

ROOT = Path(__file__).resolve().parents[2]
S = 1_000_000
EPOCH = 1_764_547_200  # 2025-12-01 00:00:00 UTC
LUN = "naa.6000c29a1b2c3d4e5f60718293a4b5c6"


def sample(t: int, *, with_db: bool = True, host: str = "esx01") -> HostSample:
    """One pCPU shared 2:1 by web1 and db1 (db1 is a 2-vCPU VM that is also ready half the
    time), the console using 5 %; web1 writes 40 and reads 60 commands per second on one LUN."""
    s = t // S
    groups = [GroupSample(1, "console", CpuStat(used_us=t // 20, run_us=t // 20), 1, 1, "console"),
              GroupSample(10, "web1", CpuStat(used_us=2 * t // 3, run_us=2 * t // 3, rdy_us=t // 3,
                                              wait_us=t // 10, mlmtd_us=t // 4), 1, 3)]
    memory = [VmMemSample(10, "web1", MemStat(memsz_mb=512, grant_mb=400, sztgt_mb=380, tchd_mb=120,
                                              mctl_sz_mb=50, mctl_tgt_mb=60, mctl_max_mb=256, swcur_mb=12,
                                              swtgt_mb=20, swr_pages=256 * s, sww_pages=512 * s, ovhd_mb=54))]
    if with_db:
        groups.append(GroupSample(11, "db1", CpuStat(used_us=t // 3, run_us=t // 3, rdy_us=t // 2,
                                                     cstp_us=t // 8), 2, 4))
        memory.append(VmMemSample(11, "db1", MemStat(memsz_mb=1024, grant_mb=900), balloon=False))
    disk = DiskStat(cmds=100 * s, reads=60 * s, writes=40 * s, bytes_read=60 * s * 4096,
                    bytes_written=40 * s * 65536, davg_us_total=100 * s * 2000, kavg_us_total=100 * s * 500,
                    qavg_us_total=100 * s * 400, gavg_us_total=100 * s * 2500, errors=s // 5)
    return HostSample(
        time_us=t, host=host, mhz=2000, epoch_s=EPOCH,
        pcpus=(PcpuSample(used_us=t, idle_us=0), PcpuSample(used_us=t // 4, idle_us=3 * t // 4)),
        groups=tuple(groups), memory=tuple(memory),
        host_memory=HostMemStat(state="soft", machine_mb=2048, free_mb=100, vmkernel_mb=24, console_mb=192,
                                minfree_mb=122, reserved_mb=700, unreserved_mb=1156, balloon_mb=50),
        devices=(DeviceSample(LUN, disk, queue_depth=32,
                              locks=LockStat("reserve", reservations=3 * s, conflicts=s)),),
        vm_disks=(VmDiskSample(10, "web1", LUN, disk),),
    )


def history(n: int = 3, step: int = 5 * S) -> list[HostSample]:
    return [sample(k * step) for k in range(n)]


# -- rates ---------------------------------------------------------------------------------------


def test_cpu_rates_are_differences_over_the_interval() -> None:
    iv = Interval(sample(5 * S), sample(10 * S))
    web, db = iv.cpu[10], iv.cpu[11]
    assert web.used == pytest.approx(200 / 3, abs=1e-3) and db.used == pytest.approx(100 / 3, abs=1e-3)
    assert web.rdy == pytest.approx(100 / 3, abs=1e-3) and db.rdy == pytest.approx(50)
    assert web.mlmtd == pytest.approx(25) and web.wait == pytest.approx(10) and db.cstp == pytest.approx(12.5)
    assert iv.pcpu_used() == [pytest.approx(100), pytest.approx(25)]
    assert iv.pcpu_util() == [pytest.approx(100), pytest.approx(25)]


def test_a_group_that_appears_inside_the_interval_counts_from_zero() -> None:
    before, after = sample(0, with_db=False), sample(5 * S)
    iv = Interval(before, after)
    assert iv.cpu[11].used == pytest.approx(100 / 3, abs=1e-3)  # db1's cumulative 5/3 s over 5 s
    assert 11 in iv.mem


def test_a_restarted_or_renamed_group_counts_from_zero() -> None:
    before = sample(100 * S)
    after = sample(5 * S, with_db=True)  # same GIDs, counters lower: powered off and on again
    after = HostSample(**{**vars(after), "time_us": 105 * S})
    iv = Interval(before, after)  # 5 s, in which the new group's whole 10/3 s count (not 10/3 - 200/3)
    assert iv.cpu[10].used == pytest.approx(200 / 3, abs=1e-3)
    assert iv.mem[10].swr_s == pytest.approx(256 * 5 * 4096 / 2**20 / 5)
    assert iv.devices[LUN].cmds_s == pytest.approx(100)  # 500 commands since the restart
    assert iv.vm_disks[10].total.cmds_s == pytest.approx(100)
    renamed = HostSample(**{**vars(sample(10 * S)),
                            "groups": tuple(GroupSample(g.gid, "other" if g.gid == 10 else g.name, g.cpu, g.vcpus,
                                                        g.nworlds, g.kind) for g in sample(10 * S).groups)})
    assert Interval(sample(5 * S), renamed).cpu[10].used == pytest.approx(2 * 10 / 3 / 5 * 100, abs=1e-3)


def test_disk_means_are_per_command_and_gavg_is_davg_plus_kavg() -> None:
    iv = Interval(sample(5 * S), sample(15 * S))
    d = iv.devices[LUN]
    assert (d.cmds_s, d.reads_s, d.writes_s) == (100, 60, 40)
    assert d.mbread_s == pytest.approx(60 * 4096 / 2**20) and d.mbwrtn_s == pytest.approx(40 * 65536 / 2**20)
    assert (d.davg, d.kavg, d.gavg, d.qavg) == (2.0, 0.5, 2.5, 0.4)
    assert d.gavg == d.davg + d.kavg
    assert d.failed_s == pytest.approx(0.2)
    idle = disk_rates(DiskStat(cmds=5), DiskStat(cmds=5), 5.0)
    assert idle.davg == 0.0 and idle.cmds_s == 0.0  # no command in the interval: no mean, no error


def test_swap_traffic_is_in_mb_per_second() -> None:
    iv = Interval(sample(0), sample(4 * S))
    assert iv.mem[10].swr_s == pytest.approx(1.0)  # 256 pages of 4 KiB per second
    assert iv.mem[10].sww_s == pytest.approx(2.0)
    assert iv.swap_rates() == (pytest.approx(1.0), pytest.approx(2.0))


@pytest.mark.parametrize(("a", "b", "message"), [
    (sample(5 * S), sample(5 * S), "does not follow"),
    (sample(10 * S), sample(5 * S), "does not follow"),
    (sample(0), sample(5 * S, host="esx02"), "two hosts"),
])
def test_samples_that_cannot_be_compared(a: HostSample, b: HostSample, message: str) -> None:
    with pytest.raises(SampleError, match=message):
        Interval(a, b)


def test_bad_samples_are_refused() -> None:
    with pytest.raises(SampleError, match="at least one pCPU"):
        HostSample(time_us=0, host="h", mhz=1, pcpus=())
    with pytest.raises(SampleError, match="share a GID"):
        HostSample(time_us=0, host="h", mhz=1, pcpus=(PcpuSample(),),
                   groups=(GroupSample(1, "a", CpuStat()), GroupSample(1, "b", CpuStat())))
    with pytest.raises(SampleError, match="memory state"):
        HostMemStat(state="panic")
    with pytest.raises(SampleError, match="two samples"):
        screen([sample(0)])


def test_stats_copy_any_object_with_the_contract_names() -> None:
    class Counters:  # what a scheduler's counters() returns, whatever its class
        used_us, run_us, sys_us, ovrlp_us, rdy_us, wait_us = 1, 2, 3, 4, 5, 6
        vmwait_us, idle_us, cstp_us, mlmtd_us, swpwt_us = 7, 8, 9, 10, 11
        extra = "ignored"

    assert CpuStat.of(Counters()) == CpuStat(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)
    assert HostMemStat.of(Counters(), machine_mb=4096).machine_mb == 4096


# -- panels --------------------------------------------------------------------------------------


def test_cpu_panel_layout() -> None:
    text = screen(history(), "c")
    lines = text.splitlines()
    assert re.fullmatch(r" ?\d{1,2}:\d\d:\d\d[ap]m up +\d+:\d\d, 8 worlds, 2 VMs, 3 vCPUs; "
                        r"CPU load average: [\d.]+, [\d.]+, [\d.]+", lines[0]), lines[0]
    assert lines[0].startswith("12:00:10am up  0:00")
    assert lines[1] == "PCPU USED(%): 100.0 25.0 AVG: 62.5"
    assert lines[2] == "PCPU UTIL(%): 100.0 25.0 AVG: 62.5"
    assert lines[4].split() == ["ID", "GID", "NAME", "NWLD", "%USED", "%RUN", "%SYS", "%WAIT", "%VMWAIT", "%RDY",
                                "%IDLE", "%OVRLP", "%CSTP", "%MLMTD", "%SWPWT"]
    rows = [line.split() for line in lines[5:]]
    assert [r[2] for r in rows] == ["web1", "db1", "console"]  # by %USED, highest first
    assert rows[0][:5] == ["10", "10", "web1", "3", "66.67"] and rows[0][9] == "33.33"
    assert rows[1][3:5] == ["4", "33.33"] and rows[1][9] == "50.00" and rows[1][12] == "12.50"
    # the load average: (100 % + 25 %) / 2 pCPUs over the whole 10 s
    assert lines[0].endswith("0.62, 0.62, 0.62") or lines[0].endswith("0.63, 0.63, 0.63")


def test_memory_panel_layout() -> None:
    lines = screen(history(), "m").splitlines()
    assert "MEM overcommit avg: 0.00, 0.00, 0.00" in lines[0]
    assert lines[1].split() == ["PMEM", "/MB:", "2048", "total:", "192", "cos,", "24", "vmk,", "1732", "other,",
                                "100", "free"]
    assert lines[2].split() == ["VMKMEM/MB:", "1856", "managed:", "122", "minfree,", "700", "rsvd,", "1156",
                                "ursvd,", "soft", "state"]
    assert lines[4].split()[-4:] == ["1.00", "r/s,", "2.00", "w/s"]
    assert lines[5].split()[:6] == ["MEMCTL/MB:", "50", "curr,", "60", "target,", "256"]
    assert lines[7].split() == ["GID", "NAME", "MEMSZ", "GRANT", "SZTGT", "TCHD", "MCTL?", "MCTLSZ", "MCTLTGT",
                                "MCTLMAX", "SWCUR", "SWTGT", "SWR/s", "SWW/s", "OVHD"]
    assert lines[8].split() == ["10", "web1", "512.00", "400.00", "380.00", "120.00", "Y", "50.00", "60.00",
                                "256.00", "12.00", "20.00", "1.00", "2.00", "54.00"]
    assert lines[9].split()[:3] == ["11", "db1", "1024.00"] and lines[9].split()[6] == "N"


def test_disk_panels_layout() -> None:
    dev = screen(history(), "u").splitlines()
    assert dev[2].split() == ["DEVICE", "PATH/WORLD/PARTITION", "DQLEN", "CMDS/s", "READS/s", "WRITES/s",
                              "MBREAD/s", "MBWRTN/s", "DAVG/cmd", "KAVG/cmd", "GAVG/cmd", "QAVG/cmd",
                              "LOCK", "ATS", "ATSF", "RESV/s", "CONS/s"]
    assert dev[3].split() == [LUN, "-", "32", "100.00", "60.00", "40.00", "0.23", "2.50", "2.00", "0.50", "2.50",
                              "0.40", "SCSI", "0", "0", "3.00", "1.00"]
    vm = screen(history(), "v").splitlines()
    assert vm[2].split() == ["GID", "VMNAME", "VDEVNAME", "NVDISK", "CMDS/s", "READS/s", "WRITES/s", "MBREAD/s",
                             "MBWRTN/s", "GAVG/cmd"]
    assert vm[3].split() == ["10", "web1", "-", "1", "100.00", "60.00", "40.00", "0.23", "2.50", "2.50"]
    assert vm[4].split() == [LUN, "1", "100.00", "60.00", "40.00", "0.23", "2.50", "2.50"]


def test_unknown_panel() -> None:
    with pytest.raises(esxtop.EsxtopError, match="unknown panel"):
        screen(history(), "x")


# -- batch mode ----------------------------------------------------------------------------------


def test_batch_file_layout_read_with_the_csv_module() -> None:
    text = batch_csv(history(4))
    assert text.startswith('"(PDH-CSV 4.0) (UTC)(0)","\\\\esx01\\Memory\\Memory Overcommit (1 Minute Avg)"')
    assert "\r" not in text and text.endswith("\n")
    for line in text.splitlines():  # every field quoted, as real files are
        assert line.startswith('"') and line.endswith('"')
    rows = list(csv.reader(io.StringIO(text)))
    header, data = rows[0], rows[1:]
    assert len(data) == 3 and all(len(r) == len(header) for r in data)
    assert [r[0] for r in data] == ["12/01/2025 00:00:05", "12/01/2025 00:00:10", "12/01/2025 00:00:15"]
    col = {name: i for i, name in enumerate(header)}
    for name in (r"\\esx01\Physical Cpu(0)\% Processor Time", r"\\esx01\Physical Cpu(_Total)\% Util Time",
                 r"\\esx01\Group Cpu(10:web1)\% Used", r"\\esx01\Group Cpu(11:db1)\% Ready",
                 r"\\esx01\Memory\Free MBytes", r"\\esx01\Group Memory(10:web1)\Memory Granted Size MBytes",
                 rf"\\esx01\Physical Disk SCSI Device({LUN})\Average Guest MilliSec/Command",
                 r"\\esx01\Virtual Disk(web1)\Commands/sec"):
        assert name in col, name
    last = data[-1]
    assert last[col[r"\\esx01\Group Cpu(10:web1)\% Used"]] == "66.67"
    assert last[col[r"\\esx01\Group Cpu(11:db1)\% Ready"]] == "50.00"
    assert last[col[r"\\esx01\Group Cpu(11:db1)\Members"]] == "4"
    assert last[col[r"\\esx01\Physical Cpu(_Total)\% Processor Time"]] == "62.50"
    assert last[col[r"\\esx01\Memory\Kernel State"]] == "1"  # soft
    assert last[col[rf"\\esx01\Physical Disk SCSI Device({LUN})\Average Kernel MilliSec/Command"]] == "0.50"
    assert last[col[rf"\\esx01\Physical Disk SCSI Device({LUN})\Reservations/sec"]] == "3.00"
    assert last[col[rf"\\esx01\Physical Disk SCSI Device({LUN})\Reservation Conflicts/sec"]] == "1.00"
    assert last[col[rf"\\esx01\Physical Disk SCSI Device({LUN})\ATS Commands"]] == "0"


def test_batch_file_read_by_pandas_matches_the_samples() -> None:
    pd = pytest.importorskip("pandas")
    samples = history(5)
    frame = pd.read_csv(io.StringIO(batch_csv(samples)))
    assert frame.columns[0] == "(PDH-CSV 4.0) (UTC)(0)"
    stamps = pd.to_datetime(frame.iloc[:, 0], format="%m/%d/%Y %H:%M:%S", utc=True)
    assert [int(t.timestamp()) - EPOCH for t in stamps] == [5, 10, 15, 20]
    for k in range(1, len(samples)):
        iv = Interval(samples[k - 1], samples[k])
        row = frame.iloc[k - 1]
        assert row[r"\\esx01\Group Cpu(10:web1)\% Used"] == pytest.approx(iv.cpu[10].used, abs=0.005)
        assert row[r"\\esx01\Group Memory(10:web1)\Swap Read MBytes/sec"] == pytest.approx(iv.mem[10].swr_s)
        assert row[rf"\\esx01\Physical Disk SCSI Device({LUN})\Commands/sec"] == pytest.approx(100)


def test_an_entity_absent_from_a_refresh_is_blank() -> None:
    samples = [sample(0, with_db=False), sample(5 * S, with_db=False), sample(10 * S)]
    rows = list(csv.reader(io.StringIO(batch_csv(samples))))
    col = rows[0].index(r"\\esx01\Group Cpu(11:db1)\% Used")
    # db1's whole cumulative 10/3 s counts in the interval it appeared in (from zero: 3.33 s / 5 s)
    assert rows[1][col] == pdh.MISSING and rows[2][col] == "66.67"


def test_load_averages_cover_their_windows() -> None:
    def busy(t: int) -> HostSample:  # one pCPU fully used for 120 s, then half
        used = min(t, 120 * S) + max(0, t - 120 * S) // 2
        return HostSample(time_us=t, host="h", mhz=1000, pcpus=(PcpuSample(used_us=used, idle_us=t - used),))

    samples = [busy(k * 10 * S) for k in range(31)]  # 0 to 300 s every 10 s
    rows = list(csv.reader(io.StringIO(batch_csv(samples))))
    col = {name: i for i, name in enumerate(rows[0])}
    last = rows[-1]
    assert last[col[r"\\h\Physical Cpu Load\Cpu Load (1 Minute Avg)"]] == "0.50"  # 240 to 300 s
    assert last[col[r"\\h\Physical Cpu Load\Cpu Load (5 Minute Avg)"]] == "0.70"  # (120 + 90) / 300
    assert last[col[r"\\h\Physical Cpu Load\Cpu Load (15 Minute Avg)"]] == "0.70"
    assert rows[12][col[r"\\h\Physical Cpu Load\Cpu Load (1 Minute Avg)"]] == "1.00"  # at 120 s


def test_batch_file_is_deterministic() -> None:
    assert batch_csv(history(4)).encode() == batch_csv(history(4)).encode()


def test_batch_takes_iterations_plus_one_samples_delay_apart() -> None:
    asked: list[int] = []
    now = [0]

    def sampler(delay_us: int) -> HostSample:
        asked.append(delay_us)
        now[0] += delay_us
        return sample(now[0])

    text = batch(sampler, delay_s=2, iterations=3)
    assert asked == [0, 2 * S, 2 * S, 2 * S]
    assert len(text.splitlines()) == 4


@pytest.mark.parametrize(("argv", "message"), [
    (["-d", "0"], "positive number of seconds"),
    (["-d", "abc"], "invalid float value"),
    (["-n", "0"], "at least 1 iteration"),
    (["-x"], "unknown option -x"),
])
def test_bad_options_are_one_line(argv: list[str], message: str) -> None:
    err = io.StringIO()
    assert esxtop.main(argv, lambda _d: sample(0), stdout=io.StringIO(), stderr=err) == 2
    assert message in err.getvalue() and err.getvalue().count("\n") == 1


def test_main_batch_mode() -> None:
    out = io.StringIO()
    now = [0]

    def sampler(delay_us: int) -> HostSample:
        now[0] += delay_us
        return sample(now[0])

    assert esxtop.main(["-b", "-d", "5", "-n", "2"], sampler, stdout=out) == 0
    assert out.getvalue() == batch_csv(history(3))


# -- interactive ---------------------------------------------------------------------------------


def test_interactive_refuses_without_a_terminal() -> None:
    err = io.StringIO()
    assert esxtop.interactive(lambda _d: sample(0), stdin=io.StringIO(), stdout=io.StringIO(), stderr=err) == 1
    assert err.getvalue() == "esxtop: the interactive screen needs a terminal; use -b for batch mode\n"


PTY_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_esxtop import sample
    from hostsim.console import esxtop
    now = [0]
    def sampler(delay_us):
        now[0] += max(delay_us, 1)
        return sample(now[0])
    sys.exit(esxtop.main(sys.argv[1:], sampler))
""")


def test_interactive_switches_panels_on_a_pty(tmp_path: Path) -> None:
    script = tmp_path / "run_esxtop.py"
    script.write_text(PTY_SCRIPT.format(tests=str(Path(__file__).parent)))
    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(script), "-d", "0.3"], stdin=slave, stdout=slave, stderr=slave,
                            env=env, close_fds=True)
    os.close(slave)
    seen = bytearray()
    try:
        read_pty_until(master, b"%USED", seen)
        for key, needle in ((b"m", b"MCTLSZ"), (b"u", b"DAVG/cmd"), (b"v", b"VDEVNAME"), (b"h", b"q: quit")):
            os.write(master, key)
            read_pty_until(master, needle, seen)
        os.write(master, b"s")
        read_pty_until(master, b"Delay of update in seconds:", seen)
        os.write(master, b"nope\n")
        read_pty_until(master, b"not a positive number", seen)
        os.write(master, b"c")
        read_pty_until(master, b"PCPU USED(%)", seen)
        os.write(master, b"q")
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


def test_interactive_with_n_stops_by_itself(tmp_path: Path) -> None:
    script = tmp_path / "run_esxtop.py"
    script.write_text(PTY_SCRIPT.format(tests=str(Path(__file__).parent)))
    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(script), "-d", "0.2", "-n", "3"], stdin=slave, stdout=slave,
                            stderr=slave, env=env, close_fds=True)
    os.close(slave)
    seen = bytearray()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # read while it runs (a full pty would block it)
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    seen += os.read(master, 65536)
                except OSError:  # EIO: the child closed its end
                    break
            elif proc.poll() is not None:
                break
        assert proc.wait(timeout=5) == 0
        assert seen.count(b"PCPU USED(%)") == 3  # three refreshes, then it quit on its own
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


def test_batch_file_is_the_same_under_other_hash_seeds() -> None:
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from test_esxtop import history; "
            "from hostsim.console.esxtop import batch_csv; sys.stdout.write(batch_csv(history(4)))")
    outs = {subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent)], capture_output=True, check=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": seed}).stdout
            for seed in ("1", "2", "3")}
    assert len(outs) == 1 and next(iter(outs)) == batch_csv(history(4)).encode()


# -- plot ----------------------------------------------------------------------------------------


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        assert zlib.crc32(kind + body) == int.from_bytes(data[pos + 8 + length:pos + 12 + length], "big")
        chunks.append((kind, body))
        pos += 12 + length
    return chunks


def test_plot_is_a_deterministic_png_without_a_date(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    plot_run(history(6), a)
    plot_run(history(6), b)
    assert a.read_bytes() == b.read_bytes()
    kinds = [k for k, _ in _png_chunks(a.read_bytes())]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND"
    assert b"tIME" not in kinds and b"tEXt" not in kinds and b"iTXt" not in kinds
    width = int.from_bytes(_png_chunks(a.read_bytes())[0][1][:4], "big")
    assert width == 1000
    plot_run(history(6, step=2 * S), c)  # other data, other picture
    assert c.read_bytes() != a.read_bytes()
    with pytest.raises(SampleError):
        plot_run(history(1), tmp_path / "d.png")


def test_lock_rates_count_ats_since_open_and_reservations_per_second() -> None:
    """ATS and ATSF are counts since the device was opened (as esxtop's ATS statistics);
    RESV/s and CONS/s are the growth over the interval; a device whose counters went down (opened
    again) counts from zero."""
    before = LockStat("ats", ats=40, ats_failures=2)
    after = LockStat("ats", ats=90, ats_failures=5)
    r = lock_rates(before, after, 5.0)
    assert (r.mode_label, r.ats, r.atsf, r.resv_s, r.cons_s) == ("ATS", 90, 5, 0.0, 0.0)
    r = lock_rates(LockStat("reserve", reservations=100, conflicts=30),
                   LockStat("reserve", reservations=150, conflicts=40), 10.0)
    assert (r.mode_label, r.resv_s, r.cons_s) == ("SCSI", 5.0, 1.0)
    r = lock_rates(LockStat("reserve", reservations=100, conflicts=30), LockStat("reserve", reservations=20), 10.0)
    assert (r.resv_s, r.cons_s) == (2.0, 0.0)
    assert lock_rates(None, LockStat(), 1.0).mode_label == "-"
