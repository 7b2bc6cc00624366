"""Throughput of our hosted-sparse and COWD code against qemu-img on the same disks, in one run.

    .venv/bin/python bench/bench_vmdk.py [--size-mib 128] [--ops 2000] [--dir /tmp]

For each disk (a monolithicSparse filled with data, and a COWD delta over a thin flat base whose
every grain is in the delta) it times, through ``vmfs.vmdk``:

* sequential reads of the whole disk in 4 KiB and 64 KiB requests,
* random reads and random writes of 4 KiB and 64 KiB (aligned, ``--ops`` requests each),

and, through qemu, ``qemu-img convert -O raw`` of the whole disk (plus ``qemu-img bench``
sequential reads with the same request sizes when available).  It prints MiB/s and the ratio
ours / qemu.

Then a thin flat disk (``vmfs`` createType) inside a VMFS5 volume (a sparse image formatted with
``vmfs.mkfs``, opened through ``VolumeStorage``, no mount) against the same disk in a host
directory (``HostStorage``): sequential 64 KiB writes into the fresh thin disk (every VMFS block
allocated on the way), sequential 64 KiB reads, random 64 KiB reads and overwrites, and random
64 KiB writes into a second fresh thin disk (allocation on every first touch of a block).  It
prints MiB/s for both and the ratio volume / host.  ``--only vmfs`` runs just that part (no
qemu-img needed).

A script, not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vmfs.cluster.host import HostIdentity
from vmfs.device.file import FileDevice
from vmfs.mkfs import MkfsOptions, format_volume
from vmfs.vmdk import chain, ops
from vmfs.vmdk.disk import Disk, open_disk
from vmfs.vmdk.storage import DiskStorage, HostStorage
from vmfs.vmdk.volume_storage import open_volume_storage

MIB = 1 << 20


def _fill(disk: Disk, seed: int) -> None:
    rnd = random.Random(seed)
    for off in range(0, disk.size, MIB):
        disk.pwrite(off, rnd.randbytes(MIB))


def _timed(func: Callable[[], int]) -> tuple[float, int]:
    start = time.perf_counter()
    nbytes = func()
    return time.perf_counter() - start, nbytes


def _seq_read(disk: Disk, block: int) -> int:
    total = 0
    for off in range(0, disk.size, block):
        total += len(disk.pread(off, block))
    return total


def _random(disk: Disk, block: int, count: int, write: bool, seed: int) -> int:
    rnd = random.Random(seed)
    slots = disk.size // block
    payload = rnd.randbytes(block)
    for _ in range(count):
        off = rnd.randrange(slots) * block
        if write:
            disk.pwrite(off, payload)
        else:
            disk.pread(off, block)
    return count * block


def _qemu_convert(directory: Path, name: str) -> tuple[float, int]:
    out = directory / "_bench.raw"
    start = time.perf_counter()
    subprocess.run(["qemu-img", "convert", "-O", "raw", name, str(out)], cwd=directory, check=True)
    elapsed = time.perf_counter() - start
    size = out.stat().st_size
    out.unlink()
    return elapsed, size


def _qemu_bench(directory: Path, name: str, block: int, size: int) -> tuple[float, int] | None:
    count = size // block
    cmd = ["qemu-img", "bench", "-f", "vmdk", "-c", str(count), "-s", str(block), "-S", str(block), "-d", "1", name]
    proc = subprocess.run(cmd, cwd=directory, capture_output=True, text=True)
    m = re.search(r"Run completed in ([0-9.]+) seconds", proc.stdout)
    if proc.returncode != 0 or m is None:
        return None
    return float(m.group(1)), count * block


def _rate(elapsed: float, nbytes: int) -> float:
    return nbytes / MIB / elapsed if elapsed > 0 else float("inf")


def bench_disk(directory: Path, storage: HostStorage, name: str, ops_count: int) -> list[tuple[str, float, str]]:
    rows: list[tuple[str, float, str]] = []
    q_elapsed, q_bytes = _qemu_convert(directory, name)
    q_rate = _rate(q_elapsed, q_bytes)
    rows.append(("qemu-img convert -O raw (whole disk)", q_rate, "1.00"))
    for block in (4096, 65536):
        disk = open_disk(storage, name)
        try:
            rate = _rate(*_timed(lambda d=disk, b=block: _seq_read(d, b)))
        finally:
            disk.close()
        qb = _qemu_bench(directory, name, block, q_bytes)
        ref = f"{rate / q_rate:.2f}"
        if qb is not None:
            qb_rate = _rate(*qb)
            rows.append((f"qemu-img bench sequential read {block // 1024} KiB", qb_rate, f"{qb_rate / q_rate:.2f}"))
            ref += f" (vs bench: {rate / qb_rate:.2f})"
        rows.append((f"ours sequential read {block // 1024} KiB", rate, ref))
    for write in (False, True):
        for block in (4096, 65536):
            disk = open_disk(storage, name, writable=write)
            try:
                rate = _rate(*_timed(lambda d=disk, b=block, w=write: _random(d, b, ops_count, w, 1)))
            finally:
                disk.close()
            kind = "write" if write else "read"
            rows.append((f"ours random {kind} {block // 1024} KiB x {ops_count}", rate, f"{rate / q_rate:.2f}"))
    return rows


def _seq_write(disk: Disk, block: int, seed: int) -> int:
    payload = random.Random(seed).randbytes(block)
    for off in range(0, disk.size, block):
        disk.pwrite(off, payload)
    return disk.size


def _flat_workloads(storage: DiskStorage, size: int, ops_count: int) -> list[tuple[str, float]]:
    """The flat/thin workloads on one storage: (label, MiB/s)."""
    block = 65536
    ops.create_disk(storage, "seq.vmdk", size, "thin")
    ops.create_disk(storage, "holes.vmdk", size, "thin")
    def rand(write: bool, seed: int) -> Callable[[Disk], int]:
        return lambda d: _random(d, block, ops_count, write, seed)

    steps: list[tuple[str, str, bool, Callable[[Disk], int]]] = [
        ("sequential write 64 KiB (fresh thin disk)", "seq.vmdk", True, lambda d: _seq_write(d, block, 4)),
        ("sequential read 64 KiB", "seq.vmdk", False, lambda d: _seq_read(d, block)),
        (f"random read 64 KiB x {ops_count}", "seq.vmdk", False, rand(False, 5)),
        (f"random overwrite 64 KiB x {ops_count}", "seq.vmdk", True, rand(True, 6)),
        (f"random write 64 KiB into holes x {ops_count}", "holes.vmdk", True, rand(True, 7)),
    ]
    rows: list[tuple[str, float]] = []
    for label, name, write, work in steps:
        disk = open_disk(storage, name, writable=write)
        try:
            start = time.perf_counter()
            nbytes = work(disk)
            disk.flush()
        finally:
            disk.close()
        rows.append((label, _rate(time.perf_counter() - start, nbytes)))
    return rows


def bench_volume(directory: Path, size: int, ops_count: int) -> None:
    """A thin flat disk inside a VMFS5 volume (VolumeStorage) against the same on host files."""
    host_dir = directory / "host"
    host_dir.mkdir()
    host_rows = _flat_workloads(HostStorage(host_dir), size, ops_count)
    image = directory / "volume.img"
    with open(image, "wb") as fh:  # room for two disks plus metadata, whole 256 MiB segments
        fh.truncate(((2 * size + (512 << 20)) // (256 << 20) + 1) * (256 << 20) + (17 << 20))
    dev = FileDevice(image, readonly=False)
    try:
        format_volume([dev], MkfsOptions(label="bench", num_pointer_blocks=64))  # disks > 256 MiB need PBs
    finally:
        dev.close()
    host = HostIdentity(uuid="5f000000-be0c4be0-0000-000000000001")
    with open_volume_storage([image], "/", writable=True, host=host) as vs:
        vol_rows = _flat_workloads(vs, size, ops_count)
    print(f"\nthin flat disk of {size // MIB} MiB: VMFS5 volume (VolumeStorage) vs host files; ratio = volume / host")
    print(f"  {'workload':<48} {'volume MiB/s':>12} {'host MiB/s':>11}  ratio")
    for (what, vol), (_, hst) in zip(vol_rows, host_rows, strict=True):
        print(f"  {what:<48} {vol:>12.1f} {hst:>11.1f}  {vol / hst:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=128)
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--dir", default=None, help="scratch directory (default: a new temporary one)")
    parser.add_argument("--only", choices=("qemu", "vmfs"), default=None, help="run one part only")
    args = parser.parse_args()
    if args.only != "vmfs" and shutil.which("qemu-img") is None:
        sys.exit("qemu-img is needed for the comparison (or use --only vmfs)")
    directory = Path(tempfile.mkdtemp(prefix="bench-vmdk-", dir=args.dir))
    storage = HostStorage(directory)
    size = args.size_mib * MIB
    try:
        if args.only == "vmfs":
            bench_volume(directory, size, args.ops)
            return
        setup = time.perf_counter()
        ops.create_disk(storage, "sparse.vmdk", size, "monolithicSparse")
        disk = open_disk(storage, "sparse.vmdk", writable=True)
        _fill(disk, 1)
        disk.close()
        ops.create_disk(storage, "base.vmdk", size, "thin")
        disk = open_disk(storage, "base.vmdk", writable=True)
        _fill(disk, 2)
        disk.close()
        leaf = chain.create_snapshot(storage, "base.vmdk", delta_format="vmfsSparse")
        disk = open_disk(storage, leaf, writable=True)
        fill_start = time.perf_counter()
        _fill(disk, 3)
        disk.close()
        cowd_fill = _rate(time.perf_counter() - fill_start, size)
        print(
            f"setup: {time.perf_counter() - setup:.1f} s for two {args.size_mib} MiB disks "
            f"(COWD fill through our code: {cowd_fill:.1f} MiB/s); python {sys.version.split()[0]}"
        )
        for label, name in (
            ("hosted sparse (monolithicSparse, 64 KiB grains)", "sparse.vmdk"),
            ("COWD delta (vmfsSparse, 512 B grains) over a thin flat base", leaf),
        ):
            print(f"\n{label}: ratio = ours / qemu-img convert")
            print(f"  {'workload':<48} {'MiB/s':>10}  ratio")
            for what, rate, ratio in bench_disk(directory, storage, name, args.ops):
                print(f"  {what:<48} {rate:>10.1f}  {ratio}")
        if args.only is None:
            scratch = directory / "vmfs"
            scratch.mkdir()
            bench_volume(scratch, size, args.ops)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
