"""End to end: the real ``hostsim`` command runs three VMs on a fresh ``vmfs-mkfs`` image, and
independent readers find on the datastore exactly what the guest programs wrote.

The scenario (``data/e2e.scenario``) boots ``data/e2e.host`` (2 pCPUs, 512 MB) on an image file
LUN, creates three VMs with thin disks (four vCPUs, 576 MB of VM memory: CPU and memory are both
overcommitted, and the esxtop CSV must show ready time, ballooning and swapping), takes a snapshot
of ``vmc`` part way while it runs (so its later writes go to its vmfsSparse delta), powers everything off and
stops the host.  The guest programs (``data/guests/e2e-*.guest``) write recomputable patterns
(``text``, ``hex``, ``byte``, ``random seed S``) at given LBAs.

The expected disks are built here from the guest files' own ``write`` lines by a reader of that
one statement form (:func:`read_phases`) and from the contents' definitions in docs/hostsim.md
(``random seed S``: sector L is SHAKE-128 of ``sector:S:L``), never from what the simulator wrote.
They are compared with the VMDKs through our read-only FUSE mount (``vmfs-mount``) and vmfs-tools'
``vmfs-fuse`` (flat files at LBA × 512, every VMDK's whole chain by ``qemu-img compare``, the
delta through ``qemu-img convert``); no ``.vswp`` may be left and ``vmfs-fsck -n`` must pass.
The same scenario run a second time in a fresh process with another ``PYTHONHASHSEED`` on a copy
of the same fresh image must give byte-identical ``esxtop.csv``, ``summary.json``, ``events.log``.
Bad input through the CLI (malformed config, scenario, ``.vmx``, guest program, a missing
datastore or VMDK, admission refusals) is one line on stderr and a non-zero exit, and the volume
stays clean.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Mount, tool
from tests.oracles import OracleMount

DATA = Path(__file__).resolve().parent / "data"
SECTOR = 512
MIB = 1 << 20
HOSTSIM = tool("hostsim")
QEMU_IMG = shutil.which("qemu-img")
RUN_TIMEOUT_S = 600

#: the scenario's VMs: guest program, and per disk node its size in MB and its file stem
VMS: dict[str, tuple[str, dict[str, tuple[int, str]]]] = {
    "vma": ("e2e-a.guest", {"scsi0:0": (128, "vma")}),
    "vmb": ("e2e-b.guest", {"scsi0:0": (128, "vmb"), "scsi0:1": (64, "vmb_1")}),
    "vmc": ("e2e-c.guest", {"scsi0:0": (128, "vmc")}),
}
#: vmc's snapshot is taken after its phase c1 and before c2 (data/e2e.scenario says why)
SNAPSHOT_VM, BASE_PHASES = "vmc", ("c1",)


def _missing_tools() -> str | None:
    """The tools this file needs, and why a test is skipped (only when one really is missing)."""
    missing = [name for name in ("qemu-img", "vmfs-fuse") if shutil.which(name) is None]
    if not Path("/dev/fuse").exists():
        missing.append("/dev/fuse")
    if not Path(HOSTSIM).exists() and shutil.which("hostsim") is None:
        missing.append("hostsim (pip install -e .)")
    return ", ".join(missing) or None


MISSING = _missing_tools()
needs_tools = pytest.mark.skipif(MISSING is not None, reason=f"missing: {MISSING}")


# -- the guest programs' writes, read independently -------------------------------------------------

_WRITE = re.compile(
    r"^write\s+(?P<disk>\S+)\s+(?P<n>\d+)\s*(?P<unit>B|KiB|MiB|sectors)\s+at\s+(?P<lba>\d+)\s+(?P<content>.+)$"
)
_UNITS = {"B": 1, "KiB": 1024, "MiB": MIB, "sectors": SECTOR}


@dataclass(frozen=True)
class Write:
    """One ``write DISK SIZE at LBA CONTENT`` line of a guest program."""

    disk: str
    lba: int
    size: int
    content: str
    line: int

    def data(self) -> bytes:
        """The bytes the line writes, from the content's definition (docs/hostsim.md)."""
        kind, _, arg = self.content.partition(" ")
        if kind in ("text", "hex"):
            m = re.fullmatch(r'"(.*)"', arg)
            assert m, f"line {self.line}: {self.content!r}"
            pattern = _unescape(m.group(1)).encode() if kind == "text" else bytes.fromhex(m.group(1))
            return (pattern * (self.size // len(pattern) + 1))[: self.size]
        if kind == "byte":
            return bytes([int(arg, 0)]) * self.size
        m = re.fullmatch(r"random seed (\d+)", self.content)
        assert m, f"line {self.line}: content {self.content!r} is not one this reader knows"
        seed = int(m.group(1))
        return b"".join(hashlib.shake_128(b"sector:%d:%d" % (seed, self.lba + i)).digest(SECTOR)
                        for i in range(self.size // SECTOR))


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "\\": "\\", '"': '"'}[m.group(1)], text)


def read_phases(path: Path) -> list[tuple[str, list[Write]]]:
    """The program's writes grouped by the ``mark`` that ends each phase, in program order.

    Only straight-line writes are accepted (none inside a loop): their order, and so the disk's
    final contents, is then the file's order whatever the host's timing."""
    phases: list[tuple[str, list[Write]]] = []
    current: list[Write] = []
    depth = 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip() if '"' not in raw else raw.strip()
        if not line:
            continue
        word = line.split()[0]
        if word in ("forever", "repeat", "for", "choose"):
            depth += 1
        elif word == "end":
            depth -= 1
        elif word == "write":
            assert depth == 0, f"{path.name}:{number}: a write inside a loop has no fixed place"
            m = _WRITE.match(line)
            assert m, f"{path.name}:{number}: not a 'write DISK SIZE at LBA CONTENT' line: {line!r}"
            size = int(m.group("n")) * _UNITS[m.group("unit")]
            current.append(Write(m.group("disk"), int(m.group("lba")), size, m.group("content").strip(), number))
        elif word == "mark":
            phases.append((line.split()[1], current))
            current = []
    assert not current, f"{path.name}: writes after the last mark"
    return phases


def expected_disk(writes: list[Write], disk: str) -> dict[int, bytes]:
    """LBA -> the 512 bytes the last write to it put there (absent: never written, zeros)."""
    sectors: dict[int, bytes] = {}
    for w in writes:
        if w.disk != disk:
            continue
        data = w.data()
        for i in range(w.size // SECTOR):
            sectors[w.lba + i] = data[i * SECTOR:(i + 1) * SECTOR]
    return sectors


def write_raw(sectors: dict[int, bytes], size: int, path: Path) -> Path:
    """The expected disk as a sparse raw image for ``qemu-img compare``."""
    with open(path, "wb") as f:
        f.truncate(size)
        for lba, data in sectors.items():
            f.seek(lba * SECTOR)
            f.write(data)
    return path


def program_writes(vm: str, phases: tuple[str, ...] | None = None) -> list[Write]:
    """The writes of ``vm``'s program (only those of ``phases`` when given), in order."""
    out: list[Write] = []
    for name, writes in read_phases(DATA / "guests" / VMS[vm][0]):
        if phases is None or name in phases:
            out.extend(writes)
    return out


def test_the_pattern_reader_reads_every_write_of_the_programs() -> None:
    """The reader this file's expectations rest on: every ``write`` line is read, with the
    sizes and contents the docs define (checked on hand-computed values)."""
    for vm, (guest, disks) in VMS.items():
        text = (DATA / "guests" / guest).read_text()
        lines = [ln for ln in text.splitlines() if ln.strip().startswith("write ")]
        writes = program_writes(vm)
        assert len(writes) == len(lines) > 3
        for w in writes:
            assert w.disk in disks and (w.lba * SECTOR + w.size) <= disks[w.disk][0] * MIB, w
    w = Write("scsi0:0", 10, 1024, 'text "ab\\n"', 1)
    assert w.data()[:7] == b"ab\nab\na" and len(w.data()) == 1024
    assert Write("scsi0:0", 0, 8, 'hex "de ad be"', 1).data() == bytes.fromhex("deadbedeadbedead")
    r = Write("scsi0:0", 7, 1024, "random seed 3", 1).data()
    assert r[512:] == hashlib.shake_128(b"sector:3:8").digest(512) and r[:512] != r[512:]


# -- the run ---------------------------------------------------------------------------------------


@dataclass
class Run:
    """One ``hostsim run`` of the scenario in its own folder and on its own image."""

    folder: Path
    returncode: int
    stdout: str
    stderr: str
    wall_s: float

    @property
    def image(self) -> Path:
        return self.folder / "ds1.img"

    @property
    def out(self) -> Path:
        return self.folder / "out"


def mkfs(image: Path, size: str = "1G", label: str = "ds1") -> Path:
    r = subprocess.run([tool("vmfs-mkfs"), "-t", "vmfs5", "--progress", "none", "-L", label, "--size", size,
                       str(image)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return image


def fsck_clean(image: Path) -> None:
    r = subprocess.run([tool("vmfs-fsck"), "-n", str(image)], capture_output=True, text=True)
    assert r.returncode == 0, f"vmfs-fsck -n {image.name} exited {r.returncode}:\n{r.stdout}{r.stderr}"


def hostsim_env(hash_seed: str) -> dict[str, str]:
    return {**os.environ, "PYTHONHASHSEED": hash_seed, "TZ": "UTC"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Run]:
    """The scenario run twice at once, each in a fresh process with its own hash seed, on two
    sparse copies of one fresh ``vmfs-mkfs`` image."""
    if MISSING is not None:
        pytest.skip(f"missing: {MISSING}")
    base = tmp_path_factory.mktemp("e2e")
    fresh = mkfs(base / "fresh.img")
    folders = []
    for name in ("run1", "run2"):
        folder = base / name
        shutil.copytree(DATA, folder)
        subprocess.run(["cp", "--sparse=always", str(fresh), str(folder / "ds1.img")], check=True)
        folders.append(folder)
    started = time.monotonic()
    procs = [subprocess.Popen([HOSTSIM, "run", "e2e.scenario", "--out", "out"], cwd=folder, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=hostsim_env(seed))
             for folder, seed in zip(folders, ("1", "4242"), strict=True)]
    results = []
    for folder, proc in zip(folders, procs, strict=True):
        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
        results.append(Run(folder, proc.returncode, out, err, time.monotonic() - started))
    print(f"\nhostsim run e2e.scenario, two at once: {results[0].wall_s:.1f} s and {results[1].wall_s:.1f} s wall")
    return results


@pytest.fixture(scope="module")
def run(runs: list[Run]) -> Run:
    r = runs[0]
    assert r.returncode == 0, f"hostsim run exited {r.returncode}:\n{r.stderr}"
    assert "Traceback" not in r.stderr + r.stdout
    return r


@dataclass
class Views:
    """The datastore of the run as our mount and vmfs-fuse show it (both read-only)."""

    ours: Path
    fuse: Path

    def both(self) -> list[tuple[str, Path]]:
        return [("vmfs-mount", self.ours), ("vmfs-fuse", self.fuse)]


@pytest.fixture(scope="module")
def views(run: Run, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Views]:
    mnt = tmp_path_factory.mktemp("mnt")
    with Mount([tool("vmfs-mount"), str(run.image), str(mnt / "ours")], mnt / "ours") as ours, \
            OracleMount("vmfs-fuse", [run.image], mnt / "fuse") as fuse:
        yield Views(ours, fuse)


def _csv_columns(path: Path) -> dict[str, list[str]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert len(rows) > 5, f"{path}: {len(rows)} rows"
    return {name: [r[i] for r in rows[1:]] for i, name in enumerate(rows[0])}


def _peak(columns: dict[str, list[str]], vm: str, counter: str) -> float:
    matches = [v for k, v in columns.items() if re.search(rf"\(\d+:{vm}\)\\{re.escape(counter)}$", k)]
    assert matches, f"no column for {vm} {counter}"
    return max(float(x) for col in matches for x in col if x.strip())


@needs_tools
def test_the_run_overcommits_cpu_and_memory_and_ends_cleanly(run: Run) -> None:
    """Exit 0; the CSV shows every VM waiting for a pCPU at times (%RDY), and ballooning and swapping
    (MEMCTL, SWCUR) on the host; the event
    log has the snapshot taken at 4 s while vmc ran and every VM powered off before shutdown."""
    print(f"\n{run.stdout}")
    cols = _csv_columns(run.out / "esxtop.csv")
    peaks = {vm: [_peak(cols, vm, c) for c in ("% Ready", "MemCtl MBytes", "Swapped MBytes")] for vm in VMS}
    table = "\n".join(f"{vm}: peak %RDY {r:.2f}, MEMCTL {m:.2f} MB, SWCUR {s:.2f} MB"
                      for vm, (r, m, s) in peaks.items())
    print(table)
    assert all(r > 0 for r, _m, _s in peaks.values()) and max(r for r, _m, _s in peaks.values()) > 1.0, table
    assert max(m for _r, m, _s in peaks.values()) > 1.0 and max(s for _r, _m, s in peaks.values()) > 1.0, table
    events = (run.out / "events.log").read_text()
    for needle in ("powered off vmid 3 (vmc)\n", "vmc: snapshot 'mid-run' created", "shut down\n"):
        assert needle in events
    assert re.search(r"^ +4\.000 esxe2e: vmc: snapshot 'mid-run' created", events, re.M)
    assert events.count("powered on vmid 3 (vmc)") == 1  # taken while it ran
    assert events.rindex("powered off") < events.index("shut down")
    assert (run.out / "summary.json").read_text().startswith("{") and (run.out / "esxtop.png").stat().st_size > 0


def _leaf(view: Path, vm: str, node: str) -> Path:
    """The disk the VM's ``.vmx`` names for ``node`` (the snapshot's delta for vmc)."""
    vmx = (view / vm / f"{vm}.vmx").read_text()
    m = re.search(rf'^{re.escape(node)}\.fileName = "([^"]+)"', vmx, re.M)
    assert m, f"{vm}.vmx has no {node}.fileName"
    return view / vm / m.group(1)


def _check_regions(path: Path, writes: list[Write], disk: str, sectors: dict[int, bytes]) -> int:
    """Every region a write of ``disk`` covers holds the expected final bytes in ``path`` (a flat
    file or a raw image: byte LBA × 512); returns the number of regions checked."""
    n = 0
    with open(path, "rb") as f:
        for w in writes:
            if w.disk != disk:
                continue
            f.seek(w.lba * SECTOR)
            got = f.read(w.size)
            want = b"".join(sectors.get(w.lba + i, bytes(SECTOR)) for i in range(w.size // SECTOR))
            assert got == want, f"{path.name}: {w.content} at LBA {w.lba} (guest line {w.line}) differs"
            n += 1
    return n


@needs_tools
def test_each_pattern_is_at_its_offset_of_the_flat_files_through_both_mounts(views: Views) -> None:
    """Through our mount and vmfs-fuse: each written region of each ``-flat.vmdk`` holds the final
    bytes of the program's writes; vmc's flat holds its phase c1 only (c2 came after the
    snapshot: its regions there still read as c1's data or zeros)."""
    for label, view in views.both():
        checked = 0
        for vm, (_guest, disks) in VMS.items():
            in_flat = program_writes(vm, BASE_PHASES if vm == SNAPSHOT_VM else None)
            for node, (_mb, stem) in disks.items():
                flat = view / vm / f"{stem}-flat.vmdk"
                assert flat.stat().st_size == disks[node][0] * MIB
                checked += _check_regions(flat, program_writes(vm), node, expected_disk(in_flat, node))
        print(f"{label}: {checked} regions checked")
        assert checked == sum(len(program_writes(vm)) for vm in VMS)


@needs_tools
def test_qemu_img_finds_every_vmdk_identical_to_the_expected_disk(views: Views, tmp_path: Path) -> None:
    """``qemu-img compare`` of each VMDK, opened through each mount (its whole chain: vmc's delta
    over its base), against a raw image of the program's writes; vmc's base alone against phase
    c1; and vmc's delta converted to raw by qemu-img holds each c2 pattern at its offset.  The
    qemu-img runs go at once (each reads a whole disk through FUSE)."""
    assert QEMU_IMG is not None
    jobs: list[tuple[str, list[str], Path]] = []
    for label, view in views.both():
        for vm, (_guest, disks) in VMS.items():
            for node, (mb, stem) in disks.items():
                leaf = _leaf(view, vm, node)
                assert leaf.name == (f"{stem}-000001.vmdk" if vm == SNAPSHOT_VM else f"{stem}.vmdk")
                want = write_raw(expected_disk(program_writes(vm), node), mb * MIB, tmp_path / f"{vm}-{stem}.raw")
                jobs.append((f"{label}: compare {leaf.name}", _compare(leaf, want), leaf.parent))
                if vm == SNAPSHOT_VM:
                    base = write_raw(expected_disk(program_writes(vm, BASE_PHASES), node), mb * MIB,
                                     tmp_path / f"{vm}-{stem}-base.raw")
                    jobs.append((f"{label}: compare {stem}.vmdk alone", _compare(view / vm / f"{stem}.vmdk", base),
                                 leaf.parent))
                    jobs.append((f"{label}: convert {leaf.name}",
                                 [QEMU_IMG, "convert", "-f", "vmdk", "-O", "raw", str(leaf),
                                  str(tmp_path / f"{label}.raw")],
                                 leaf.parent))
    procs = [(what, subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
             for what, argv, cwd in jobs]
    for what, proc in procs:
        out, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
        assert proc.returncode == 0 and ("convert" in what or "Images are identical." in out), f"{what}: {out}"
    c2 = [w for name, ws in read_phases(DATA / "guests" / VMS[SNAPSHOT_VM][0]) if name == "c2" for w in ws]
    final = expected_disk(program_writes(SNAPSHOT_VM), "scsi0:0")
    for label, view in views.both():
        assert _check_regions(tmp_path / f"{label}.raw", c2, "scsi0:0", final) == len(c2)
        delta = view / SNAPSHOT_VM / f"{SNAPSHOT_VM}-000001-delta.vmdk"
        assert delta.read_bytes()[:4] == b"COWD"  # vmfsSparse
        assert delta.stat().st_size > sum(w.size for w in c2)
    print(f"\n{len(jobs)} qemu-img runs: " + ", ".join(what for what, _, _ in jobs))


def _compare(vmdk: Path, raw: Path) -> list[str]:
    assert QEMU_IMG is not None
    return [QEMU_IMG, "compare", "-f", "vmdk", "-F", "raw", str(vmdk), str(raw)]


@needs_tools
def test_no_vswp_is_left_and_the_folders_are_as_esx_lays_them_out(views: Views) -> None:
    for label, view in views.both():
        names = sorted(str(p.relative_to(view)) for p in view.rglob("*") if not p.name.startswith("."))
        assert not [n for n in names if n.endswith(".vswp")], f"{label}: {names}"
        for vm in VMS:
            for suffix in (".vmx", ".vmsd", ".nvram", ".vmdk", "-flat.vmdk"):
                assert f"{vm}/{vm}{suffix}" in names, f"{label}: {vm}{suffix} missing from {names}"
        assert "vmb/vmb_1-flat.vmdk" in names and "vmc/vmc-000001-delta.vmdk" in names


@needs_tools
def test_the_volume_is_clean_after_the_run(run: Run, views: Views) -> None:
    fsck_clean(run.image)


@needs_tools
def test_two_runs_in_fresh_processes_give_byte_identical_outputs(runs: list[Run]) -> None:
    """Determinism: the same scenario, two processes with different PYTHONHASHSEED, two copies of
    one fresh image: the same esxtop CSV, summary and event log, byte for byte."""
    for r in runs:
        assert r.returncode == 0, r.stderr
    for name in ("esxtop.csv", "summary.json", "events.log"):
        a, b = (r.out / name for r in runs)
        assert a.read_bytes() == b.read_bytes(), f"{name} differs between the two runs"
        print(f"{name}: {a.stat().st_size} bytes, identical")
    fsck_clean(runs[1].image)


@needs_tools
def test_the_run_on_a_vmfs6_datastore(tmp_path: Path) -> None:
    """The same scenario on a datastore of ``vmfs-mkfs``'s default format, VMFS6: every pattern
    at its offset of the flat files through our mount, qemu-img finds each VMDK chain identical
    to the expected disk, no ``.vswp`` left, ``vmfs-fsck -n`` clean, and dissect.vmfs reads every
    file of the datastore as our reader does (vmfs6-fuse reads a thin disk's data after its
    first hole as zeros, docs/SPEC.md, so dissect is the oracle here)."""
    from tests import oracles
    from tests.fsck import volumes
    from tests.helpers import diff_trees
    from vmfs.volume.volume import Volume

    folder = tmp_path / "run6"
    shutil.copytree(DATA, folder)
    image = folder / "ds1.img"
    r = subprocess.run([tool("vmfs-mkfs"), "--progress", "none", "-L", "ds1", "--size", "4G", str(image)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    with Volume.open([image]) as vol:
        assert vol.geometry.version == 6
    proc = subprocess.run([HOSTSIM, "run", "e2e.scenario", "--out", "out"], cwd=folder, capture_output=True,
                          text=True, env=hostsim_env("1"), timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    fsck_clean(image)
    assert diff_trees(volumes.capture(image), oracles.dissect_tree([image])) == []
    with Mount([tool("vmfs-mount"), str(image), str(tmp_path / "ours")], tmp_path / "ours") as view:
        names = sorted(str(p.relative_to(view)) for p in view.rglob("*") if not p.name.startswith("."))
        assert not [n for n in names if n.endswith(".vswp")], names
        checked = 0
        for vm, (_guest, disks) in VMS.items():
            in_flat = program_writes(vm, BASE_PHASES if vm == SNAPSHOT_VM else None)
            for node, (mb, stem) in disks.items():
                checked += _check_regions(view / vm / f"{stem}-flat.vmdk", program_writes(vm), node,
                                          expected_disk(in_flat, node))
                want = write_raw(expected_disk(program_writes(vm), node), mb * MIB, tmp_path / f"{vm}-{stem}.raw")
                leaf = _leaf(view, vm, node)
                out = subprocess.run(_compare(leaf, want), cwd=leaf.parent, capture_output=True, text=True,
                                     timeout=RUN_TIMEOUT_S)
                assert out.returncode == 0 and "Images are identical." in out.stdout, f"{leaf.name}: {out.stdout}"
        assert checked == sum(len(program_writes(vm)) for vm in VMS)


# -- bad input through the command line ------------------------------------------------------------------

_HOST = (DATA / "e2e.host").read_text()


@dataclass(frozen=True)
class BadCase:
    """A ``hostsim run`` that must fail: the files it adds to a copy of data/ (on a copy of a fresh
    image), and a piece of the one line it must print."""

    files: dict[str, str]
    expect: str


_BOOT_SMALL = "boot e2e.host\nesxtop every 1s\n"
BAD_RUNS: dict[str, BadCase] = {
    "config": BadCase({"bad.host": _HOST.replace("pcpus = 2", "pcpus = two"), "case.scenario": "boot bad.host\n"},
                      "bad.host:8: pcpus: not a whole number: 'two'"),
    "config-missing": BadCase({"case.scenario": "boot nothere.host\nrun 1s\n"}, "nothere.host"),
    "image-missing": BadCase({"bad.host": _HOST.replace("image = ds1.img", "image = nothere.img"),
                              "case.scenario": "boot bad.host\n"}, "bad.host:19: image: nothere.img"),
    "scenario": BadCase({"case.scenario": _BOOT_SMALL + "frobnicate now\n"},
                        "case.scenario:3: unknown command 'frobnicate'"),
    "guest": BadCase({"guests/bad.guest": "guest bad\nwrite scsi0:0 4KB at 0 zero\n",
                      "case.scenario": _BOOT_SMALL + "create vm g memory=64M guest=guests/bad.guest disk=64M:thin\n"
                                                     "run 1s\n"},
                     "guests/bad.guest:2: write: unknown size unit 'KB'"),
    "guest-runtime": BadCase({"guests/big.guest": "guest big\nwrite scsi0:0 4KiB at 131070 zero\nforever\n"
                                                  "    halt 1s\nend\n",
                              "case.scenario": _BOOT_SMALL + "create vm g memory=64M guest=guests/big.guest "
                                                             "disk=64M:thin\npower on g\nat 2s power off g\n"},
                             "g: The attempted operation cannot be performed in the current state (Powered off; "
                             "powered off at 0 s: guest stopped: scsi0:0"),
    "datastore-label": BadCase({"bad.host": _HOST.replace("datastore = ds1", "datastore = nosuch"),
                                "case.scenario": "boot bad.host\n"}, "LUN lun0 carries no datastore 'nosuch'"),
    "datastore-disk": BadCase({"case.scenario": _BOOT_SMALL + "create vm g memory=64M disk=64M:thin@nowhere\n"},
                              "case.scenario:3: disk: no datastore 'nowhere'"),
    "insufficient-memory": BadCase({"case.scenario": _BOOT_SMALL + "create vm big memory=256M mem.reservation=250M "
                                                                   "disk=64M:thin\npower on big\nrun 1s\n"},
                                   "case.scenario:4: big: insufficient memory: min + overhead = 250 + 54 = 304 MB"),
    "insufficient-swap": BadCase({"bad.host": _HOST.replace("swap_mb = 1024", "swap_mb = 64"),
                                  "case.scenario": "boot bad.host\nesxtop every 1s\ncreate vm sw memory=192M "
                                                   "disk=64M:thin\npower on sw\nrun 1s\n"},
                                 "case.scenario:4: sw: insufficient swap: max - min = 192 - 0 = 192 MB > 64 MB"),
}


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in text, f"not one line: {text!r}"
    return lines[0]


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, subprocess.CompletedProcess[str]]]:
    """Every BAD_RUNS case at once, each in its own folder on its own copy of one fresh image."""
    if MISSING is not None:
        pytest.skip(f"missing: {MISSING}")
    base = tmp_path_factory.mktemp("bad")
    fresh = mkfs(base / "fresh.img")
    procs = {}
    for name, case in BAD_RUNS.items():
        folder = base / name
        shutil.copytree(DATA, folder)
        subprocess.run(["cp", "--sparse=always", str(fresh), str(folder / "ds1.img")], check=True)
        for rel, text in case.files.items():
            (folder / rel).write_text(text)
        procs[name] = (folder, subprocess.Popen([HOSTSIM, "run", "case.scenario", "--out", "out"], cwd=folder,
                                                text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    done = {}
    for name, (folder, proc) in procs.items():
        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
        done[name] = (folder, subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


@needs_tools
@pytest.mark.parametrize("name", sorted(BAD_RUNS))
def test_bad_input_to_hostsim_run_is_one_line_and_leaves_the_volume_clean(
        name: str, bad_runs: dict[str, tuple[Path, subprocess.CompletedProcess[str]]]) -> None:
    folder, r = bad_runs[name]
    assert r.returncode == 1, f"exit {r.returncode}: {r.stdout}{r.stderr}"
    line = _one_line(r.stderr)
    assert line.startswith("hostsim: ") and BAD_RUNS[name].expect in line, line
    print(f"\n{name}: {line}")
    fsck_clean(folder / "ds1.img")


@needs_tools
def test_bad_vm_files_and_config_through_hostsim_boot_and_vim_cmd(tmp_path: Path) -> None:
    """VM folders broken on the datastore (a malformed ``.vmx``, a missing descriptor, a missing
    flat file), edited through our read-write mount between a scenario that made them and a paced
    boot: the boot names each folder it could not register in one line and runs on; power-on of
    the VM whose flat file is missing is refused in one line; a malformed config fails the boot
    and vim-cmd without a host says so; after a clean stop ``vmfs-fsck -n`` passes."""
    shutil.copytree(DATA, tmp_path / "d")
    folder = tmp_path / "d"
    mkfs(folder / "ds1.img")
    (folder / "setup.scenario").write_text(_BOOT_SMALL + "".join(
        f"create vm {vm} memory=64M disk=64M:thin\n" for vm in ("noflat", "badvmx", "nodesc")) + "run 1s\n")
    r = subprocess.run([HOSTSIM, "run", "-q", "setup.scenario", "--out", "out"], cwd=folder, capture_output=True,
                       text=True, timeout=RUN_TIMEOUT_S)
    assert r.returncode == 0, r.stderr
    with Mount([tool("vmfs-mount"), "-f", "-o", "rw", str(folder / "ds1.img"), str(tmp_path / "rw")],
               tmp_path / "rw") as rw:
        (rw / "noflat" / "noflat-flat.vmdk").unlink()
        (rw / "nodesc" / "nodesc.vmdk").unlink()
        vmx = rw / "badvmx" / "badvmx.vmx"
        text = vmx.read_text()
        assert 'memsize = "64"\n' in text
        vmx.write_text(text.replace('memsize = "64"\n', 'memsize = "lots"\n'))
        vmx_line = text.splitlines().index('memsize = "64"') + 1
    fsck_clean(folder / "ds1.img")

    state = tmp_path / "state"
    r = subprocess.run([HOSTSIM, "vim-cmd", "--state-dir", str(state), "vmsvc/getallvms"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1 and "no booted host has a console" in _one_line(r.stderr)
    (folder / "bad.host").write_text(_HOST.replace("memory_mb = 512", "memory_mb = 512 MB"))
    r = subprocess.run([HOSTSIM, "boot", "bad.host", "--state-dir", str(state)], cwd=folder, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1 and _one_line(r.stderr).startswith("hostsim: bad.host:10: memory_mb"), r.stderr

    log = tmp_path / "boot.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([HOSTSIM, "boot", "e2e.host", "--state-dir", str(state)], cwd=folder,
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 120
        while "booted; console at" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        listed = subprocess.run([HOSTSIM, "vim-cmd", "--state-dir", str(state), "vmsvc/getallvms"],
                                capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0 and [ln.split()[1] for ln in listed.stdout.splitlines()[1:]] == ["noflat"]
        on = subprocess.run([HOSTSIM, "vim-cmd", "--state-dir", str(state), "vmsvc/power.on", "1"],
                            capture_output=True, text=True, timeout=60)
        refused = _one_line(on.stdout + on.stderr)
        assert on.returncode == 1 and "extent file 'noflat-flat.vmdk' does not exist" in refused, refused
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=120)
    lines = log.read_text().splitlines()
    print("\n" + "\n".join(lines) + f"\nvim-cmd vmsvc/power.on 1: {refused}")
    assert rc == 0 and lines[-1] == "esxe2e: shut down", lines
    assert f"hostsim: esxe2e: not registered: [ds1] badvmx/badvmx.vmx:{vmx_line}: memsize: 'lots' is not a " \
           "whole number" in lines
    assert any(ln.startswith("hostsim: esxe2e: not registered: [ds1] nodesc/nodesc.vmx: scsi0:0 names "
                             "[ds1] nodesc/nodesc.vmdk: no such file") for ln in lines), lines
    assert "Traceback" not in log.read_text()
    fsck_clean(folder / "ds1.img")
