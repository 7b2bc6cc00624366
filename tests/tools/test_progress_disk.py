"""Progress of vmfs-vmdk inflate (-j), eager-zero (-k), punch-zero (-K) and extend (-X) on disks
inside a VMFS volume: a bar with rate and time left on a pseudo-terminal, vmkfstools' percent
lines with --progress lines, nothing on a pipe; Ctrl-C in the middle exits 130 with one line, the
volume stays fsck-clean, the disk reads exactly what it read before, and the same command run
again finishes the job."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import tool
from tests.tools.test_progress import run_on_pty

MIB = 1 << 20
#: disk size: 512 MiB of zeros written (inflate, eager-zero, extend) or read (punch) is 1-3 s here
DISK_MIB = 512
#: the grown disk starts this small
EXTEND_FROM_MIB = 16

pytestmark = pytest.mark.slow


@dataclass
class Case:
    """One operation: how the disk is made, the option that runs it, its progress label."""

    action: str
    label: str
    argv: list[str]
    clone_format: str
    #: what `vmfs-vmdk -D` of the flat file says once the job is done: (allocated MiB, tbz blocks)
    final: tuple[int, int]
    start_mib: int = DISK_MIB


CASES = {
    "inflate": Case("inflate", "Inflate", ["-j"], "thin", (DISK_MIB, 0)),
    "eagerzero": Case("eagerzero", "Eager zero", ["-k"], "zeroedthick", (DISK_MIB, 0)),
    # half of the source is zeros: punching gives that half back
    "punch": Case("punch", "Punch zero", ["-K"], "eagerzeroedthick", (DISK_MIB // 2, 0)),
    "extend": Case("extend", "Extend", ["-X", f"{DISK_MIB + EXTEND_FROM_MIB}M", "-d", "eagerzeroedthick"],
                   "eagerzeroedthick", (DISK_MIB + EXTEND_FROM_MIB, 0), EXTEND_FROM_MIB),
}


def vmdk(image: Path, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("vmfs-vmdk"), "--volume", str(image), *args], capture_output=True, text=True,
                          timeout=300, **kw)  # type: ignore[call-overload]


def host_source(directory: Path, mib: int) -> tuple[Path, bytes]:
    """A monolithicFlat disk of ``mib`` MiB, random in every other MiB (zeros between)."""
    subprocess.run([tool("vmfs-vmdk"), "-c", f"{mib}M", "-d", "monolithicFlat", str(directory / "src.vmdk")],
                   check=True, capture_output=True)
    data = bytearray(mib * MIB)
    for m in range(0, mib, 2):
        data[m * MIB : (m + 1) * MIB] = os.urandom(MIB)
    (directory / "src-flat.vmdk").write_bytes(data)
    return directory / "src.vmdk", bytes(data)


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    """8 GiB (sparse): mkfs gives a 2 GiB volume a single pointer block, too few for three disks."""
    image = tmp_path / "ds.img"
    subprocess.run([tool("vmfs-mkfs"), "-t", "vmfs5", "--size", "8G", str(image)], check=True, capture_output=True)
    return image


def make_disk(image: Path, case: Case, source: Path, name: str) -> str:
    """Clone the host source into the volume as the disk the operation starts from."""
    path = f"/vm/{name}.vmdk"
    r = vmdk(image, "-p", "-i", f"host:{source}", "-d", case.clone_format, "--progress", "none", path)
    assert r.returncode == 0, r.stderr
    return path


def flat_bytes(image: Path, disk: str) -> bytes:
    r = subprocess.run([tool("vmfs-debug"), str(image), "cat", disk.replace(".vmdk", "-flat.vmdk")],
                       capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout


def allocation(image: Path, disk: str) -> tuple[int, int]:
    """(allocated MiB, TBZ blocks) of the disk's flat file, from `vmfs-vmdk -D`."""
    out = vmdk(image, "-D", disk.replace(".vmdk", "-flat.vmdk")).stdout
    allocated = int(re.search(r"allocated: (\d+)", out).group(1))  # type: ignore[union-attr]
    tbz = int(re.search(r"tbz blocks: (\d+)", out).group(1))  # type: ignore[union-attr]
    return allocated // MIB, tbz


def capacity(image: Path, disk: str) -> int:
    out = vmdk(image, "--info", disk).stdout
    return int(re.search(r": (\d+) bytes", out).group(1))  # type: ignore[union-attr]


def fsck_clean(image: Path) -> None:
    r = subprocess.run([tool("vmfs-fsck"), "-n", str(image)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("name", list(CASES))
def test_bar_lines_and_silence(name: str, volume: Path, tmp_path: Path) -> None:
    case = CASES[name]
    source, data = host_source(tmp_path, case.start_mib)
    on_pty, with_lines, quiet = (make_disk(volume, case, source, n) for n in ("a", "b", "c"))

    code, out = run_on_pty([tool("vmfs-vmdk"), "--volume", str(volume), *case.argv, on_pty])
    assert code == 0, out
    frames = [f for f in out.split("\r") if f.startswith(f"{case.label}  [")]
    assert len(frames) >= 2, out  # redrawn while it runs, not only at the end
    assert re.search(r"\[#{30}\] 100%  [\d.]+ (B|KiB|MiB|GiB)/s  0:00:00 left", frames[-1]), frames[-1]
    assert re.search(r"\] +\d+%  [\d.]+ (B|KiB|MiB|GiB)/s  \d:\d\d:\d\d left", frames[0]), frames[0]

    r = vmdk(volume, "--progress", "lines", *case.argv, with_lines)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert all(re.fullmatch(rf"{case.label}: \d+% done\.", line) for line in lines), lines
    percents = [int(line.rsplit(" ", 2)[-2][:-1]) for line in lines]
    assert percents == sorted(set(percents)) and percents[0] == 0 and percents[-1] == 100, percents
    assert len(percents) >= 8, percents  # reported along the way (16 or 64 MiB chunks)

    r = vmdk(volume, *case.argv, quiet)  # not a terminal, not asked: nothing on stderr
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout == (f"{DISK_MIB // 2 * MIB} bytes unallocated\n" if name == "punch" else "")

    fsck_clean(volume)
    for disk in (on_pty, with_lines, quiet):
        assert allocation(volume, disk) == case.final
    assert flat_bytes(volume, quiet) == data + bytes(capacity(volume, quiet) - len(data))


@pytest.mark.parametrize("name", list(CASES))
def test_ctrl_c_stops_cleanly_and_the_same_command_finishes(name: str, volume: Path, tmp_path: Path) -> None:
    case = CASES[name]
    source, data = host_source(tmp_path, case.start_mib)
    disk = make_disk(volume, case, source, "d")
    before = allocation(volume, disk)
    code, seen, rest, out = interrupt_at(
        [tool("vmfs-vmdk"), "--volume", str(volume), "--progress", "lines", *case.argv, disk], case.label
    )
    assert code == 130, seen + rest
    assert out == ""
    assert rest and "Traceback" not in "\n".join(rest), rest
    m = re.fullmatch(rf"vmfs-vmdk: {case.label.lower()} interrupted at (\d+)% \(([\d.]+) MiB of {DISK_MIB}\.0 MiB\): "
                     r"(.*); run again to finish", rest[-1])
    assert m is not None, rest
    percent, done_mib = int(m.group(1)), float(m.group(2))
    assert 10 <= percent < 100 and done_mib == pytest.approx(DISK_MIB * percent / 100, abs=DISK_MIB / 100), rest
    assert all(re.fullmatch(rf"{case.label}: \d+% done\.", line) for line in rest[:-1]), rest

    fsck_clean(volume)  # every chunk was its own set of transactions: nothing half-made
    assert capacity(volume, disk) == case.start_mib * MIB  # an extend keeps the old size until it is done
    assert flat_bytes(volume, disk)[: len(data)] == data  # the disk reads what it read before
    mid = allocation(volume, disk)
    if name == "punch":
        assert case.final[0] < mid[0] < before[0], (before, mid)  # the first chunks were given back
    elif name == "eagerzero":
        assert 0 < mid[1] < before[1], (before, mid)  # TBZ blocks zeroed in the first chunks only
    else:
        assert before[0] < mid[0] < case.final[0], (before, mid)  # blocks allocated in the first chunks only

    r = vmdk(volume, *case.argv, disk)  # the same command again, on a pipe: finishes quietly
    assert r.returncode == 0 and r.stderr == "", r.stderr
    fsck_clean(volume)
    assert allocation(volume, disk) == case.final
    assert capacity(volume, disk) == (case.start_mib + (DISK_MIB if name == "extend" else 0)) * MIB
    assert flat_bytes(volume, disk) == data + bytes(capacity(volume, disk) - len(data))


def test_host_disk_inflate_punch_extend_report_lines_and_keep_the_bytes(tmp_path: Path) -> None:
    """The same options on host files (HostStorage: ranges of posix_fallocate and hole punching)."""
    source, _ = host_source(tmp_path, DISK_MIB)
    disk = tmp_path / "h.vmdk"
    flat = tmp_path / "h-flat.vmdk"
    subprocess.run([tool("vmfs-vmdk"), "--progress", "none", "-i", str(source), "-d", "thin", str(disk)], check=True)

    def run(*args: str) -> list[int]:
        r = subprocess.run([tool("vmfs-vmdk"), "--progress", "lines", *args, str(disk)], capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        percents = [int(m) for m in re.findall(r"^\w[\w ]*: (\d+)% done\.$", r.stderr, re.M)]
        assert len(percents) == len(r.stderr.splitlines()) and percents[0] == 0 and percents[-1] == 100, r.stderr
        same = subprocess.run(["qemu-img", "compare", str(source), str(disk)], capture_output=True, text=True)
        assert same.returncode == 0, same.stdout + same.stderr  # what it reads has not changed
        return percents

    def allocated_mib() -> int:
        return os.stat(flat).st_blocks * 512 // MIB

    assert allocated_mib() <= DISK_MIB // 2 + 1
    assert len(run("-j")) >= 8  # 64 MiB steps
    assert allocated_mib() >= DISK_MIB
    run("-K")
    assert DISK_MIB // 2 <= allocated_mib() <= DISK_MIB // 2 + 1
    run("-X", f"{2 * DISK_MIB}M", "-d", "eagerzeroedthick")
    assert os.stat(flat).st_size == 2 * DISK_MIB * MIB
    assert allocated_mib() >= DISK_MIB // 2 + DISK_MIB  # the new half is allocated


def cat_into_file(argv: list[str], out: Path, timeout: float = 120.0) -> tuple[int, str]:
    """Run with stdout into ``out`` and stderr on a pseudo-terminal: (exit status, what it drew)."""
    with open(out, "wb") as sink:
        return run_on_pty(argv, timeout, stdout=sink)


def interrupt_at(argv: list[str], label: str, percent: int = 10) -> tuple[int, list[str], list[str], str]:
    """Run ``argv`` (with ``--progress lines``) and send SIGINT once ``label: N% done.`` reaches
    ``percent``: (exit status, lines before the signal, lines after it, stdout)."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None and proc.stdout is not None
    seen = []
    for line in proc.stderr:  # well into the job, far from its end
        seen.append(line.rstrip("\n"))
        m = re.fullmatch(rf"{label}: (\d+)% done\.", seen[-1])
        if m and int(m.group(1)) >= percent:
            break
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read().splitlines()
    return proc.wait(timeout=120), seen, rest, proc.stdout.read()


def test_debug_cat_shows_progress_and_stops_on_ctrl_c(volume: Path, tmp_path: Path) -> None:
    """vmfs-debug cat copies a file off the volume without a mount: a bar when stderr is a terminal
    and the bytes go to a file, lines when asked, nothing on a pipe; Ctrl-C exits 130 in one line."""
    source, data = host_source(tmp_path, DISK_MIB)
    make_disk(volume, CASES["punch"], source, "c")  # eagerzeroedthick: every block is read from the image
    cat = [tool("vmfs-debug"), str(volume), "cat"]
    flat = "/vm/c-flat.vmdk"

    code, drawn = cat_into_file([*cat, flat], tmp_path / "out.bin")
    assert code == 0, drawn
    frames = [f for f in drawn.split("\r") if f.startswith("Copy  [")]
    assert len(frames) >= 2, drawn
    assert re.search(r"\[#{30}\] 100%  [\d.]+ (KiB|MiB|GiB)/s  0:00:00 left", frames[-1]), frames[-1]
    assert (tmp_path / "out.bin").read_bytes() == data

    r = subprocess.run([*cat, "--progress", "lines", flat], capture_output=True, timeout=300)
    assert r.returncode == 0 and r.stdout == data
    lines = r.stderr.decode().splitlines()
    assert [int(x.split()[1][:-1]) for x in lines] == list(range(101)), lines  # 1 MiB steps: every percent

    r = subprocess.run([*cat, flat], capture_output=True, timeout=300)
    assert r.returncode == 0 and r.stderr == b"" and r.stdout == data

    with open(tmp_path / "part.bin", "wb") as sink:
        proc = subprocess.Popen([*cat, "--progress", "lines", flat], stdout=sink, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("Copy: 10%"):
                proc.send_signal(signal.SIGINT)
                break
        rest = proc.stderr.read().splitlines()
        assert proc.wait(timeout=60) == 130, rest
    assert re.fullmatch(r"vmfs-debug: cat interrupted at (1\d|[2-9]\d)% \(\d+ of 512 MiB\): the output is incomplete "
                        r"\(nothing was written to the volume\)", rest[-1]), rest
    part = (tmp_path / "part.bin").read_bytes()
    assert 0 < len(part) < len(data) and part == data[: len(part)]


def test_chunk_sizes_follow_the_job() -> None:
    """About 256 steps per job, bounded: small jobs still report often, huge ones do not pay a
    journal commit per 16 MiB, and a Ctrl-C never waits for more than one bounded chunk."""
    from vmfs.vmdk.thin import MAX_IO_CHUNK, MAX_META_CHUNK, MIN_ZERO_CHUNK, PROVISION_CHUNK, chunk_size

    assert chunk_size(512 * MIB, MIN_ZERO_CHUNK, MAX_IO_CHUNK) == 64 * MIB
    assert chunk_size(32 << 30, MIN_ZERO_CHUNK, MAX_IO_CHUNK) == 128 * MIB
    assert chunk_size(1 << 40, MIN_ZERO_CHUNK, MAX_IO_CHUNK) == MAX_IO_CHUNK
    assert chunk_size(64 << 30, PROVISION_CHUNK, MAX_META_CHUNK) == 256 * MIB
    assert chunk_size(100 << 40, PROVISION_CHUNK, MAX_META_CHUNK) == MAX_META_CHUNK
    assert chunk_size(MIB, PROVISION_CHUNK, MAX_IO_CHUNK) == PROVISION_CHUNK
    size = chunk_size((10 << 30) + 12345, PROVISION_CHUNK, MAX_IO_CHUNK, 3 * PROVISION_CHUNK)
    assert size % (3 * PROVISION_CHUNK) == 0 and size >= PROVISION_CHUNK


def _files(image: Path, directory: str) -> list[str]:
    r = subprocess.run([tool("vmfs-debug"), str(image), "ls", directory], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_thick_create_shows_progress_and_ctrl_c_removes_the_partial_disk(volume: Path) -> None:
    """`-c SIZE -d eagerzeroedthick` writes SIZE of zeros: a bar on a terminal, lines when asked,
    silence on a pipe; Ctrl-C removes what was made (nothing half-created is left) and fsck is clean."""
    assert vmdk(volume, "-c", "1M", "-p", "/vm/seed.vmdk").returncode == 0
    code, out = run_on_pty([tool("vmfs-vmdk"), "--volume", str(volume), "-c", f"{DISK_MIB}M", "-d",
                            "eagerzeroedthick", "/vm/a.vmdk"])
    assert code == 0, out
    frames = [f for f in out.split("\r") if f.startswith("Create  [")]
    assert len(frames) >= 2 and "100%" in frames[-1], out
    r = vmdk(volume, "--progress", "lines", "-c", f"{DISK_MIB}M", "-d", "eagerzeroedthick", "/vm/b.vmdk")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert lines[0] == "Create: 0% done." and lines[-1] == "Create: 100% done." and len(lines) >= 8, lines
    r = vmdk(volume, "-c", f"{DISK_MIB}M", "-d", "eagerzeroedthick", "/vm/c.vmdk")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    for disk in ("/vm/a.vmdk", "/vm/b.vmdk", "/vm/c.vmdk"):
        assert allocation(volume, disk) == (DISK_MIB, 0)  # every block allocated and zeroed
    before = _files(volume, "/vm")

    code, seen, rest, _ = interrupt_at([tool("vmfs-vmdk"), "--volume", str(volume), "--progress", "lines", "-c",
                                        f"{DISK_MIB}M", "-d", "eagerzeroedthick", "/vm/d.vmdk"], "Create")
    assert code == 130, seen + rest
    assert re.fullmatch(r"vmfs-vmdk: interrupted .*: the partial disk was removed; the volume was closed cleanly",
                        rest[-1]), rest
    assert _files(volume, "/vm") == before  # no d.vmdk, no d-flat.vmdk
    fsck_clean(volume)
    assert vmdk(volume, "-c", f"{DISK_MIB}M", "-d", "eagerzeroedthick", "/vm/d.vmdk").returncode == 0
    assert allocation(volume, "/vm/d.vmdk") == (DISK_MIB, 0)
    fsck_clean(volume)
