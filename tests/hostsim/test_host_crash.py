"""A simulated ESX host killed (SIGKILL) in the middle of a VMFS transaction, booted again: the datastore's journal is
replayed, the VM powers on again, and every guest write acknowledged before the kill is there.

All through the real command line (``hostsim run``, ``hostsim boot``, ``hostsim vim-cmd``) in
separate processes:

1. ``data/crash-setup.scenario`` boots ``data/crash.host`` on a blank image file (the console
   makes the VMFS5 datastore) and creates the VM ``writer`` (guest ``crash-writer.guest``).
2. ``hostsim boot crash.host --speed 5`` (host esxcrash) runs paced; ``vim-cmd vmsvc/power.on``
   starts the writer.  Its generation k writes 64 KiB of ``random seed 51`` at LBA 2048 + 128 k,
   flushes, then writes sentinel sector 1024 + k (``random seed 52``).
3. Meanwhile ``hostsim boot crash-other.host --speed 5`` (host esxother, same image; the same
   speed, or each host would see the other's heartbeat age at its own pace) registers the VM too,
   and its ``vim-cmd vmsvc/power.on`` is refused: the ``.vmx`` is locked, the message names the
   owner by the host UUID that esxcrash's ``hostsvc/hostsummary`` reports.  esxother stops cleanly.
4. **How the test knows what was acknowledged:** it scans the image file (outside the simulator,
   reading only the bytes on the LUN) for the sentinels, until those of generations 0..8 are
   there; then ``hostsim vsish -e set /reliability/crashMe/JournalHalfHome 1`` makes the host
   SIGKILL its own process right after the first home write of its next journal transaction
   with two or more (the writer's next thin block): committed, half home, which only a replay
   repairs (a kill at a random moment almost never lands there, so without the replay this test
   would pass as well).  Acknowledged are the generations 0..K whose sentinels are on the LUN
   after the kill: a sentinel reaches the LUN only when its write is dispatched, which the guest
   does only after the flush before it completed, i.e. after every data write of its generation
   and the earlier ones was acknowledged.
5. ``hostsim boot crash.host --speed 0.5`` again: same name, so the same VMFS identity; its mount
   replays the journal the killed host left and lets go of its old locks.  ``vim-cmd
   vmsvc/power.on`` must succeed; the guest is still in its first 20 s halt (checked by its
   uptime) when SIGTERM stops the host cleanly, so what is on disk is what the first boot left.
6. Offline: generations 0..K are in ``writer-flat.vmdk`` (our read-only mount and vmfs-fuse),
   and ``vmfs-fsck -n`` exits 0.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import Mount, tool
from tests.oracles import OracleMount

DATA = Path(__file__).resolve().parent / "data"
HOSTSIM = tool("hostsim")
SECTOR = 512
#: the writer's generations (data/guests/crash-writer.guest; checked against the file below)
DATA_LBA, DATA_SECTORS, DATA_SEED = 2048, 128, 51
SENTINEL_LBA, SENTINEL_SEED = 1024, 52
#: the writer's generations, and the sentinel generation the test waits for at least before the kill
GENERATIONS, KILL_AFTER = 300, 8
#: vsish node (hostsim/console/vsish.py): the host panics, SIGKILLing its own process, right after the
#: first home write of its next journal transaction with two or more (the writer's next thin block)
PANIC_NODE = "/reliability/crashMe/JournalHalfHome"
WAIT_S = 120.0


def seeded_sector(seed: int, lba: int) -> bytes:
    """``random seed S`` at sector L (docs/hostsim.md: SHAKE-128 of ``sector:S:L``)."""
    return hashlib.shake_128(b"sector:%d:%d" % (seed, lba)).digest(SECTOR)


def generation(k: int) -> bytes:
    """The 64 KiB generation k writes at LBA 2048 + 128 k."""
    first = DATA_LBA + DATA_SECTORS * k
    return b"".join(seeded_sector(DATA_SEED, first + i) for i in range(DATA_SECTORS))


def sentinel(k: int) -> bytes:
    return seeded_sector(SENTINEL_SEED, SENTINEL_LBA + k)


def test_the_writer_program_is_the_one_this_file_expects() -> None:
    """The constants above are the guest program's: its write lines, word for word."""
    text = (DATA / "guests" / "crash-writer.guest").read_text()
    assert re.search(rf"^\s+write scsi0:0 {DATA_SECTORS * SECTOR // 1024}KiB next within \d+KiB from "
                     rf"{DATA_LBA} random seed {DATA_SEED}$", text, re.M)
    assert re.search(r"^\s+flush scsi0:0$", text, re.M)
    assert re.search(rf"^\s+write scsi0:0 1 sectors next within \d+ sectors from {SENTINEL_LBA} "
                     rf"random seed {SENTINEL_SEED}$", text, re.M)
    assert text.index("flush scsi0:0") < text.index(f"from {SENTINEL_LBA}")
    assert re.search(r"^halt 20s$", text, re.M)


def _missing() -> str | None:
    missing = [n for n in ("vmfs-fuse",) if shutil.which(n) is None]
    if not Path("/dev/fuse").exists():
        missing.append("/dev/fuse")
    return ", ".join(missing) or None


MISSING = _missing()


# -- processes ---------------------------------------------------------------------------------------


def vim_cmd(state: Path, host: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HOSTSIM, "vim-cmd", "--state-dir", str(state), "--host", host, *args],
                          capture_output=True, text=True, timeout=90)


@dataclass
class Booted:
    """A ``hostsim boot`` process of this test (only it is ever signalled or killed)."""

    name: str
    state: Path
    proc: subprocess.Popen[str]
    log: Path
    exit_code: int | None = None
    stderr: str = ""

    def vim(self, *args: str) -> subprocess.CompletedProcess[str]:
        return vim_cmd(self.state, self.name, *args)

    def vim_tool(self, command: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([HOSTSIM, command, "--state-dir", str(self.state), "--host", self.name, *args],
                              capture_output=True, text=True, timeout=90)

    def wait_console(self) -> None:
        deadline = time.monotonic() + WAIT_S
        while True:
            assert self.proc.poll() is None, f"{self.name} exited {self.proc.returncode}: {self.log.read_text()}"
            if (self.state / f"{self.name}.sock").exists() and self.vim("vmsvc/getallvms").returncode == 0:
                return
            assert time.monotonic() < deadline, f"{self.name}: no console after {WAIT_S} s"
            time.sleep(0.1)

    def stop(self, sig: signal.Signals) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.exit_code = self.proc.wait(timeout=WAIT_S)
        self.stderr = self.log.read_text()
        return self.exit_code


def boot(folder: Path, config: str, name: str, speed: float) -> Booted:
    state = folder / f"state-{name}"
    log = folder / f"{name}-{len(list(folder.glob(f'{name}-*.log')))}.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([HOSTSIM, "boot", config, "--state-dir", str(state), "--speed", str(speed)],
                                cwd=folder, stdout=subprocess.DEVNULL, stderr=err, text=True)
    booted = Booted(name, state, proc, log)
    booted.wait_console()
    return booted


def sentinels_on_lun(image: Path) -> set[int]:
    """The generations whose sentinel sector is in the image file (the bytes on the LUN, read
    around its holes; sectors are 512-byte aligned there as in the flat file)."""
    wanted = {sentinel(k): k for k in range(GENERATIONS)}
    found: set[int] = set()
    fd = os.open(image, os.O_RDONLY)
    try:
        size, offset = os.fstat(fd).st_size, 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after offset
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            for pos in range(start, end, 16 << 20):
                chunk = os.pread(fd, min(16 << 20, end - pos), pos)
                for i in range(0, len(chunk), SECTOR):
                    k = wanted.get(chunk[i:i + SECTOR])
                    if k is not None:
                        found.add(k)
            offset = end
    finally:
        os.close(fd)
    return found


def acknowledged(found: set[int]) -> int:
    """The last generation k with every sentinel 0..k on the LUN (-1: none)."""
    k = -1
    while k + 1 in found:
        k += 1
    return k


# -- the sequence ------------------------------------------------------------------------------------


@dataclass
class Crash:
    """What the sequence of the module docstring saw."""

    folder: Path
    owner_uuid: str = ""
    other_power_on: subprocess.CompletedProcess[str] | None = None
    other_exit: int | None = None
    other_stderr: str = ""
    acknowledged: int = -1
    on_lun_after_kill: list[int] = field(default_factory=list)
    killed_rc: int | None = None
    killed_stderr: str = ""
    fsck_before_replay: str = ""
    second_power_on: subprocess.CompletedProcess[str] | None = None
    second_state: str = ""
    second_uptime_s: int = -1
    second_exit: int | None = None
    second_stderr: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def image(self) -> Path:
        return self.folder / "crash.img"


@pytest.fixture(scope="module")
def crash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crash]:
    folder = tmp_path_factory.mktemp("crash")
    for item in ("crash.host", "crash-other.host", "crash-setup.scenario", "guests"):
        src = DATA / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, folder / item)
    with open(folder / "crash.img", "wb") as f:
        f.truncate(1 << 30)  # blank: the console makes the datastore
    result = Crash(folder)
    started = time.monotonic()
    r = subprocess.run([HOSTSIM, "run", "-q", "crash-setup.scenario", "--out", "setup"], cwd=folder,
                       capture_output=True, text=True, timeout=WAIT_S)
    assert r.returncode == 0, r.stderr
    booted: list[Booted] = []
    try:
        first = boot(folder, "crash.host", "esxcrash", speed=5)
        booted.append(first)
        result.timings["setup and first boot"] = time.monotonic() - started
        summary = first.vim("hostsvc/hostsummary")
        m = re.search(r'uuid = "([0-9a-f-]+)"', summary.stdout)
        assert summary.returncode == 0 and m, summary.stdout + summary.stderr
        result.owner_uuid = m.group(1)
        on = first.vim("vmsvc/power.on", "1")
        assert on.returncode == 0, on.stdout + on.stderr

        other = boot(folder, "crash-other.host", "esxother", speed=5)
        booted.append(other)
        result.other_power_on = other.vim("vmsvc/power.on", "1")
        result.other_exit = other.stop(signal.SIGTERM)
        result.other_stderr = other.stderr

        deadline = time.monotonic() + WAIT_S
        while (seen := acknowledged(sentinels_on_lun(result.image))) < KILL_AFTER:
            assert first.proc.poll() is None, f"esxcrash exited {first.proc.returncode}: {first.log.read_text()}"
            assert time.monotonic() < deadline, f"sentinel {KILL_AFTER} never reached the LUN"
            time.sleep(0.05)
        armed = first.vim_tool("vsish", "-e", "set", PANIC_NODE, "1")
        assert armed.returncode == 0, armed.stdout + armed.stderr
        result.killed_rc = first.proc.wait(timeout=WAIT_S)  # it kills itself at the next transaction
        result.killed_stderr = first.log.read_text()
        result.on_lun_after_kill = sorted(sentinels_on_lun(result.image))
        result.acknowledged = acknowledged(set(result.on_lun_after_kill))
        assert result.acknowledged >= seen
        result.timings["until the kill"] = time.monotonic() - started
        r = subprocess.run([tool("vmfs-fsck"), "-n", str(result.image)], capture_output=True, text=True)
        result.fsck_before_replay = f"exit {r.returncode}:\n{r.stdout}{r.stderr}"

        second = boot(folder, "crash.host", "esxcrash", speed=0.5)
        booted.append(second)
        result.second_power_on = second.vim("vmsvc/power.on", "1")
        result.second_state = second.vim("vmsvc/power.getstate", "1").stdout
        m = re.search(r"uptimeSeconds = (\d+)", second.vim("vmsvc/get.summary", "1").stdout)
        result.second_uptime_s = int(m.group(1)) if m else -1
        result.second_exit = second.stop(signal.SIGTERM)
        result.second_stderr = second.stderr
        result.timings["whole sequence"] = time.monotonic() - started
    finally:
        for b in booted:
            if b.proc.poll() is None:
                b.proc.kill()
                b.proc.wait()
    print(f"\ncrash sequence: {', '.join(f'{k} {v:.1f} s' for k, v in result.timings.items())}; generations "
          f"0..{result.acknowledged} acknowledged before the kill (sentinels on the LUN after it: "
          f"{result.on_lun_after_kill})\nvmfs-fsck -n right after the kill: "
          f"{result.fsck_before_replay}\nsecond boot's stderr:\n{result.second_stderr}")
    yield result


def test_a_second_host_is_refused_the_running_vm_and_named_the_owner(crash: Crash) -> None:
    r = crash.other_power_on
    assert r is not None
    out = (r.stdout + r.stderr).strip()
    assert r.returncode == 1, out
    assert out == (f"Unable to access file [ds1] writer/writer.vmx since it is locked "
                   f"(exclusive lock, owner {crash.owner_uuid})"), out
    assert crash.other_exit == 0 and "esxother: shut down" in crash.other_stderr, crash.other_stderr
    assert "Traceback" not in crash.other_stderr


def test_the_host_crashed_with_a_transaction_half_home(crash: Crash) -> None:
    """The kill landed where only a replay can repair the volume: the record committed, its first
    home write done, the others not (and the writer's block allocation was that transaction)."""
    assert crash.killed_rc == -signal.SIGKILL, crash.killed_stderr
    m = re.search(r"esxcrash: PSOD: crashMe in a VMFS journal transaction: home write 1 of (\d+) done",
                  crash.killed_stderr)
    assert m and int(m.group(1)) >= 2, crash.killed_stderr
    m = re.search(r"replayed (\d+) records of our own journal after an unclean stop", crash.second_stderr)
    assert m and int(m.group(1)) >= 2, crash.second_stderr


def test_the_killed_host_is_booted_again_and_the_vm_powers_on(crash: Crash) -> None:
    assert crash.killed_rc == -signal.SIGKILL
    r = crash.second_power_on
    assert r is not None and r.returncode == 0, (r.stdout + r.stderr) if r else None
    assert crash.second_state == "Retrieved runtime info\nPowered on\n"
    assert 0 <= crash.second_uptime_s < 15, "the guest may have begun writing again; the check would be void"
    assert crash.second_exit == 0 and "esxcrash: shut down" in crash.second_stderr, crash.second_stderr
    assert "Traceback" not in crash.second_stderr


def test_the_second_boot_recovers_what_the_killed_host_left(crash: Crash) -> None:
    """Right after the kill the volume shows the dead host's heartbeat slot in use and its three
    locks (.vmx, flat, .vswp) held; the second boot (same identity) says it let go of them (and of
    those of a transaction the kill cut), and after its clean stop no slot is in use."""
    before = crash.fsck_before_replay
    assert f"in use by host {crash.owner_uuid}" in before, before
    for held in ("/writer/writer.vmx", "/writer/writer-flat.vmdk", ".vswp"):
        assert re.search(rf"\([^)]*{re.escape(held)}\) is locked \(mode \d\) by live host {crash.owner_uuid}",
                         before), (held, before)
    m = re.search(r"let go of (\d+) lock\(s\) our previous incarnation held", crash.second_stderr)
    assert m and int(m.group(1)) >= 3, crash.second_stderr  # more when the kill cut a transaction
    r = subprocess.run([tool("vmfs-fsck"), "-n", str(crash.image)], capture_output=True, text=True)
    assert "in use by host" not in r.stdout and "is locked" not in r.stdout, r.stdout


@pytest.mark.skipif(MISSING is not None, reason=f"missing: {MISSING}")
def test_every_acknowledged_write_is_on_disk_after_the_replay(crash: Crash, tmp_path: Path) -> None:
    """Generations 0..K (acknowledged before the kill) are in writer-flat.vmdk, read by our
    read-only mount and by vmfs-fuse; the sentinels up to K too."""
    assert crash.acknowledged >= KILL_AFTER
    with Mount([tool("vmfs-mount"), str(crash.image), str(tmp_path / "ours")], tmp_path / "ours") as ours, \
            OracleMount("vmfs-fuse", [crash.image], tmp_path / "fuse") as fuse:
        for label, root in (("vmfs-mount", ours), ("vmfs-fuse", fuse)):
            with open(root / "writer" / "writer-flat.vmdk", "rb") as f:
                for k in range(crash.acknowledged + 1):
                    f.seek((DATA_LBA + DATA_SECTORS * k) * SECTOR)
                    assert f.read(DATA_SECTORS * SECTOR) == generation(k), f"{label}: generation {k} lost"
                    f.seek((SENTINEL_LBA + k) * SECTOR)
                    assert f.read(SECTOR) == sentinel(k), f"{label}: sentinel {k} lost"
            swaps = sorted(p.name for p in (root / "writer").iterdir() if p.suffix == ".vswp")
            print(f"{label}: generations 0..{crash.acknowledged} intact; .vswp left: {swaps or 'none'}")


def test_the_volume_is_clean_after_the_second_shutdown(crash: Crash) -> None:
    r = subprocess.run([tool("vmfs-fsck"), "-n", str(crash.image)], capture_output=True, text=True)
    assert r.returncode == 0, f"vmfs-fsck -n exited {r.returncode}:\n{r.stdout}{r.stderr}"
