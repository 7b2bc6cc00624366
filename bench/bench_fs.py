"""Throughput of our FUSE mount against the raw image file and vmfs-tools, and vmfs-mkfs time, in one run.

    .venv/bin/python bench/bench_fs.py [--size 2G] [--files 10000] [--workdir DIR] [--quick]
                                       [--json PATH] [--repeat 3] [--profile DIR] [--no-mkfs]
                                       [--fs vmfs5|vmfs6] [--commit 0.05]

On a sparse VMFS5 volume (``--fs vmfs6``: VMFS6, ``vmfs-mkfs -t vmfs6``) made by vmfs-mkfs in a
fresh folder under --workdir (the smallest 8 GiB * 2^k whose dry-run layout, of that version,
has free file blocks for the file and file descriptors and sub-blocks for --files), it measures,
on the same machine and in the same run:

* sequential write of a --size file in 1 MiB writes, then fsync, through ``vmfs-mount -f -o rw``,
  against the same writes to a plain file next to the image (ratio of throughputs ours / raw),
  and the unmount time that follows (fusermount -u until the mount process has exited);
* sequential read of that file in 1 MiB reads through a read-only ``vmfs-mount``, against the
  plain file and against vmfs-tools' ``vmfs-fuse`` (``vmfs6-fuse`` on VMFS6) reading the same file
  on the same volume; the page cache is dropped before each read when running as root (the
  table says whether it was);
* creating --files files of --file-bytes bytes, in folders of at most --per-dir entries, through
  the read-write mount (files/s) against the same in a folder of the host filesystem, and the
  unmount time after it (host: the time of a sync()); then the same creates again in folders of
  their own with group commit (``-o rw,commit=--commit``, default 0.05 s);
* vmfs-mkfs of sparse 1 TiB and 64 TiB images (bench_mkfs.py; 64 TiB needs /dev/shm or another
  folder that holds a 64 TiB sparse file, else it is skipped).

After the timed reads it checks a few chunks of the file and counts the small files through both
read-only mounts.  --profile DIR runs the read-write mounts under cProfile (single-threaded FUSE
loop, ``-o nothreads``, so that the callbacks are seen) and writes DIR/write.prof and
DIR/files.prof; their figures are then slower than usual.  A script, not a test: numbers depend
on the machine.  A comparison of the versions should use the same --size for both: above
256 MiB (VMFS5) or 320 MiB (VMFS6) a file needs pointer blocks, which VMFS6 writes only from
commit a332a82 on (before it the write failed with ENOSPC there).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_mkfs

MIB = 1 << 20
GIB = 1 << 30
BIN = Path(sys.executable).parent
MKFS = str(BIN / "vmfs-mkfs")
MOUNT = str(BIN / "vmfs-mount")
UNITS = {"": 1, "K": 1 << 10, "M": MIB, "G": GIB, "T": 1 << 40}


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 64M, 2G)")
    return int(m.group(1)) * UNITS[m.group(2)]


def human(nbytes: int) -> str:
    for unit, scale in (("TiB", 1 << 40), ("GiB", GIB), ("MiB", MIB), ("KiB", 1 << 10)):
        if nbytes >= scale and nbytes % scale == 0:
            return f"{nbytes // scale} {unit}"
    return f"{nbytes} B"


def drop_caches() -> bool:
    """Write back and drop the page cache (root only); True when dropped."""
    os.sync()
    if os.geteuid() != 0:
        return False
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


class Mount:
    """A foreground FUSE mount; ``close()`` unmounts it and returns the seconds until the process exited."""

    def __init__(self, argv: list[str], mountpoint: Path, *, timeout: float = 60.0) -> None:
        self.argv = argv
        self.mountpoint = mountpoint
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.unmount_seconds: float | None = None

    def __enter__(self) -> Path:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + self.timeout
        while not os.path.ismount(self.mountpoint):
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"mount {' '.join(self.argv)} failed: {err.strip()}")
            if time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"mount {' '.join(self.argv)} did not appear")
            time.sleep(0.02)
        return self.mountpoint

    def close(self) -> float:
        start = time.perf_counter()
        for _ in range(100):
            if not os.path.ismount(self.mountpoint):
                break
            if subprocess.run(["fusermount", "-u", str(self.mountpoint)], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=600)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            err = self.proc.stderr.read().decode().strip() if self.proc.stderr else ""
            if self.proc.returncode not in (0, None):
                print(f"warning: {self.argv[0]} exited with {self.proc.returncode}: {err}", file=sys.stderr)
            self.proc = None
        self.unmount_seconds = time.perf_counter() - start
        return self.unmount_seconds

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.close()


def ours(image: Path, mountpoint: Path, *, rw: bool, profile: Path | None = None, extra: str = "") -> Mount:
    mode = ("rw" if rw else "ro") + (f",{extra}" if extra else "")
    if profile is None:
        return Mount([MOUNT, "-f", "-o", mode, str(image), str(mountpoint)], mountpoint)
    wrap = [sys.executable, "-m", "cProfile", "-o", str(profile)]
    return Mount([*wrap, MOUNT, "-f", "-o", f"{mode},nothreads", str(image), str(mountpoint)], mountpoint)


def fuse_tool(fs: str) -> str:
    """vmfs-tools' FUSE reader for the version: vmfs-fuse cannot open VMFS6, vmfs6-fuse can."""
    return "vmfs6-fuse" if fs == "vmfs6" else "vmfs-fuse"


def mkfs_type(fs: str) -> list[str]:
    """vmfs-mkfs's version arguments (VMFS6 is its default; both are named)."""
    return ["-t", fs]


def theirs(image: Path, mountpoint: Path, fs: str = "vmfs5") -> Mount:
    return Mount([fuse_tool(fs), str(image), str(mountpoint), "-f"], mountpoint)


# -- the measures --------------------------------------------------------------------------------------


def pattern() -> bytes:
    return bytes((i * 131 + (i >> 9)) & 0xFF for i in range(MIB))


def seq_write(path: Path, size: int, chunk: bytes) -> float:
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        left = size
        while left > 0:
            left -= os.write(fd, chunk[: min(len(chunk), left)])
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - start


def seq_read(path: Path, size: int) -> float:
    buf = bytearray(MIB)
    view = memoryview(buf)
    total = 0
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(view):
            total += n
    elapsed = time.perf_counter() - start
    if total != size:
        raise RuntimeError(f"{path}: read {total} bytes, expected {size}")
    return elapsed


def spot_check(path: Path, size: int, chunk: bytes) -> bool:
    """The first, a middle and the last MiB hold what was written."""
    with open(path, "rb") as f:
        for off in sorted({0, (size // 2) // MIB * MIB, max(0, (size - 1) // MIB * MIB)}):
            f.seek(off)
            want = chunk[: min(MIB, size - off)]
            if f.read(len(want)) != want:
                return False
    return True


def layout(nfiles: int, per_dir: int) -> list[tuple[str, list[str]]]:
    ndirs = max(1, math.ceil(nfiles / per_dir))
    names = [f"f{i:06d}" for i in range(nfiles)]
    return [(f"d{d:03d}", names[d * per_dir : (d + 1) * per_dir]) for d in range(ndirs)]


def create_files(root: Path, plan: list[tuple[str, list[str]]], payload: bytes) -> float:
    start = time.perf_counter()
    for dirname, names in plan:
        folder = root / dirname
        os.mkdir(folder)
        for name in names:
            fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, payload)
            finally:
                os.close(fd)
    return time.perf_counter() - start


def count_files(root: Path, plan: list[tuple[str, list[str]]]) -> int:
    return sum(len(os.listdir(root / dirname)) for dirname, _ in plan)


def volume_size(data: int, nfiles: int, ndirs: int, workdir: Path, fs: str = "vmfs5") -> int:
    """Smallest 8 GiB * 2^k volume whose dry-run layout holds the file and the small files.

    The dry run is of the version benchmarked, so its free file blocks already leave out what
    VMFS6's system files take (.sbc.sf alone up to 1 GiB, .jbc.sf 256 MiB); VMFS6 makes a fixed
    16384 file descriptors by default, so --files much above 16000 finds no size there."""
    size = 8 * GIB
    while True:
        r = subprocess.run(
            [MKFS, *mkfs_type(fs), "--dry-run", "--json", "--size", str(size), str(workdir / "dry-run.img")],
            capture_output=True,
            text=True,
            check=True,
        )
        lay = json.loads(r.stdout)
        res = {x["file"]: x for x in lay["resources"]}
        fds = res[".fdc.sf"]["resources"] - res[".fdc.sf"]["used"]
        subs = res[".sbc.sf"]["resources"] - res[".sbc.sf"]["used"]
        blocks_free = lay["fileBlocks"] - lay["usedFileBlocks"]
        need = nfiles + ndirs + 64
        if fds >= need and subs >= need and blocks_free * lay["blockSize"] >= data + ndirs * MIB + GIB:
            return size
        if size >= 64 << 40:
            raise SystemExit(f"no volume up to 64 TiB holds {nfiles} files and {human(data)}")
        size *= 2


def mkfs_figures(workdir: Path, repeat: int) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for label, size in bench_mkfs.SIZES.items():
        candidates = [workdir, Path(tempfile.gettempdir()), Path("/dev/shm")]
        directory = next((d for d in candidates if d.is_dir() and bench_mkfs.holds(d, size + (64 << 20))), None)
        if directory is None:
            out.append({"size": label, "skipped": "no folder holds a sparse file of this size"})
            continue
        try:
            out.append(bench_mkfs.bench(label, size, directory, repeat))
        except SystemExit as exc:
            out.append({"size": label, "skipped": str(exc)})
    return out


# -- the run ---------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    size: int = args.size
    plan = layout(args.files, args.per_dir)
    chunk = pattern()
    payload = bytes(range(256))[: args.file_bytes].ljust(args.file_bytes, b"x")
    image = workdir / "volume.img"
    raw = workdir / "raw.bin"
    mnt = workdir / "mnt"
    prof = Path(args.profile).resolve() if args.profile else None
    if prof:
        prof.mkdir(parents=True, exist_ok=True)

    vsize = volume_size(size, 2 * args.files, 2 * len(plan), workdir, args.fs)  # creates twice: per-op, batched
    t0 = time.perf_counter()
    subprocess.run([MKFS, *mkfs_type(args.fs), "--size", str(vsize), str(image)], check=True, capture_output=True)
    res: dict[str, object] = {
        "machine": {
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "workdir": str(workdir),
            "root": os.geteuid() == 0,
        },
        "volume": {"fs": args.fs, "size": vsize, "mkfs_seconds": round(time.perf_counter() - t0, 3)},
        "size": size,
        "files": args.files,
        "file_bytes": args.file_bytes,
        "dirs": len(plan),
    }

    # 1. sequential write
    drop_caches()
    raw_w = seq_write(raw, size, chunk)
    drop_caches()
    m = ours(image, mnt, rw=True, profile=prof / "write.prof" if prof else None)
    with m:
        try:
            ours_w = seq_write(mnt / "big.bin", size, chunk)
        except OSError as exc:
            raise SystemExit(f"seq write of {human(size)} through vmfs-mount failed: {exc}") from None
        umount_w = m.close()
    res["write"] = {"ours_seconds": ours_w, "raw_seconds": raw_w, "unmount_seconds": umount_w}

    # 3. small files (before the reads, so that the read-only mounts can count them)
    hostdir = workdir / "host-files"
    hostdir.mkdir()
    drop_caches()
    host_c = create_files(hostdir, plan, payload)
    t0 = time.perf_counter()
    os.sync()
    host_sync = time.perf_counter() - t0
    drop_caches()
    m = ours(image, mnt, rw=True, profile=prof / "files.prof" if prof else None)
    with m:
        ours_c = create_files(mnt, plan, payload)
        umount_c = m.close()
    # the same creates again, in folders of their own, with group commit (-o commit=SECONDS)
    batched = [(f"{d}-batch", names) for d, names in plan]
    drop_caches()
    m = ours(image, mnt, rw=True, extra=f"commit={args.commit}")
    with m:
        ours_g = create_files(mnt, batched, payload)
        umount_g = m.close()
    res["create"] = {
        "ours_seconds": ours_c,
        "ours_batched_seconds": ours_g,
        "batched_unmount_seconds": umount_g,
        "commit": args.commit,
        "host_seconds": host_c,
        "host_sync_seconds": host_sync,
        "unmount_seconds": umount_c,
    }

    # 2. sequential read, --repeat rounds of raw / ours / vmfs-fuse (best kept: the disk is noisy)
    reads: dict[str, list[float]] = {"raw": [], "ours": [], "vmfs_fuse": []}
    dropped = False
    checks: dict[str, object] = {}
    tool = fuse_tool(args.fs)
    theirs_error: str | None = None if shutil.which(tool) else f"{tool} not installed"
    for rnd in range(args.repeat):
        dropped = drop_caches()
        reads["raw"].append(seq_read(raw, size))
        drop_caches()
        with ours(image, mnt, rw=False) as root:
            reads["ours"].append(seq_read(root / "big.bin", size))
            if rnd == 0:
                checks["ours_content_ok"] = spot_check(root / "big.bin", size, chunk)
                checks["ours_small_files_seen"] = count_files(root, plan)
        if theirs_error is None:
            drop_caches()
            try:
                with theirs(image, workdir / "mnt-vmfs-fuse", args.fs) as root:
                    reads["vmfs_fuse"].append(seq_read(root / "big.bin", size))
                    if rnd == 0:
                        checks["vmfs_fuse_content_ok"] = spot_check(root / "big.bin", size, chunk)
                        checks["vmfs_fuse_small_files_seen"] = count_files(root, plan)
            except (OSError, RuntimeError) as exc:
                theirs_error = str(exc)
    res["read"] = {
        "ours_seconds": min(reads["ours"]),
        "raw_seconds": min(reads["raw"]),
        "vmfs_fuse_seconds": min(reads["vmfs_fuse"]) if reads["vmfs_fuse"] else None,
        "all_seconds": reads,
        "cache_dropped": dropped,
        "vmfs_fuse_error": theirs_error,
    }
    res["checks"] = checks

    # 4. vmfs-mkfs
    res["mkfs"] = mkfs_figures(workdir, args.mkfs_repeat) if not args.no_mkfs else []
    if prof:
        res["profiles"] = [str(p) for p in sorted(prof.glob("*.prof"))]
    return res


def table(res: dict[str, object]) -> list[tuple[str, str, str, str]]:
    size = int(res["size"])  # type: ignore[arg-type]
    mib = size / MIB

    def rate(seconds: float | None) -> str:
        return "-" if seconds is None else f"{mib / seconds:.1f} MiB/s ({seconds:.2f} s)"

    def ratio(a: float | None, b: float | None) -> str:
        return "-" if a is None or b is None else f"{b / a:.3f}"  # throughput ours / base = time base / ours

    rows: list[tuple[str, str, str, str]] = []
    w, r, c = res["write"], res["read"], res["create"]  # type: ignore[index]
    rows.append(
        (
            f"seq write {human(size)}, 1 MiB + fsync",
            rate(w["ours_seconds"]),
            "raw file: " + rate(w["raw_seconds"]),
            ratio(w["ours_seconds"], w["raw_seconds"]),
        )
    )
    rows.append(("  unmount after the write", f"{w['unmount_seconds']:.2f} s", "", ""))
    note = "cache dropped" if r["cache_dropped"] else "cache NOT dropped"
    best = f", best of {len(r['all_seconds']['ours'])}" if len(r["all_seconds"]["ours"]) > 1 else ""
    rows.append(
        (
            f"seq read {human(size)}, 1 MiB ({note}{best})",
            rate(r["ours_seconds"]),
            "raw file: " + rate(r["raw_seconds"]),
            ratio(r["ours_seconds"], r["raw_seconds"]),
        )
    )
    rows.append(
        (
            "",
            "",
            f"{fuse_tool(str(res['volume'].get('fs', 'vmfs5')))}: "  # type: ignore[attr-defined]
            + (rate(r["vmfs_fuse_seconds"]) if r["vmfs_fuse_seconds"] else f"failed ({r['vmfs_fuse_error']})"),
            ratio(r["ours_seconds"], r["vmfs_fuse_seconds"]),
        )
    )
    n = int(res["files"])  # type: ignore[arg-type]
    rows.append(
        (
            f"create {n} x {res['file_bytes']} B files in {res['dirs']} dirs",
            f"{n / c['ours_seconds']:.0f} files/s ({c['ours_seconds']:.2f} s)",
            f"host fs: {n / c['host_seconds']:.0f} files/s ({c['host_seconds']:.2f} s)",
            ratio(c["ours_seconds"], c["host_seconds"]),
        )
    )
    rows.append(
        (
            f"  the same with -o commit={c['commit']:g} (group commit)",
            f"{n / c['ours_batched_seconds']:.0f} files/s ({c['ours_batched_seconds']:.2f} s)",
            f"unmount {c['batched_unmount_seconds']:.2f} s",
            ratio(c["ours_batched_seconds"], c["host_seconds"]),
        )
    )
    rows.append(
        (
            "  unmount after the creates",
            f"{c['unmount_seconds']:.2f} s",
            f"host sync(): {c['host_sync_seconds']:.2f} s",
            "",
        )
    )
    for m in res["mkfs"]:  # type: ignore[union-attr]
        if "skipped" in m:
            rows.append((f"vmfs-mkfs {m['size']}", "skipped", str(m["skipped"]), ""))
            continue
        rows.append(
            (
                f"vmfs-mkfs {m['size']} sparse ({m['dir']})",
                f"{m['seconds']:.3f} s",
                f"raw write of its {m['bytes_written']} B: {m['raw_write_same_bytes_seconds']:.3f} s",
                f"x{m['seconds'] / max(m['raw_write_same_bytes_seconds'], 1e-6):.1f} time",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=None, help="big file size (default 2G; --quick 64M)")
    parser.add_argument("--files", type=int, default=None, help="small files to create (default 10000; --quick 500)")
    parser.add_argument("--file-bytes", type=int, default=100, help="bytes in each small file")
    parser.add_argument("--commit", type=float, default=0.05, help="group commit interval of the second creates (s)")
    parser.add_argument("--per-dir", type=int, default=1000, help="small files per folder (at most 2000)")
    parser.add_argument("--workdir", help="parent folder of the run's temporary folder (default: the temp dir)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 64 MiB, 500 files")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--profile", metavar="DIR", help="run the read-write mounts under cProfile into DIR")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the three reads (best kept)")
    parser.add_argument("--mkfs-repeat", type=int, default=1, help="vmfs-mkfs runs per size (best kept)")
    parser.add_argument("--no-mkfs", action="store_true", help="skip the vmfs-mkfs figures")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--fs", choices=["vmfs5", "vmfs6"], default="vmfs5",
                        help="version of the volume")
    args = parser.parse_args()
    if args.size is None:
        args.size = 64 * MIB if args.quick else 2 * GIB
    if args.files is None:
        args.files = 500 if args.quick else 10000
    if not 1 <= args.per_dir <= 2000:
        parser.error("--per-dir must be between 1 and 2000")

    workdir = Path(tempfile.mkdtemp(prefix="bench-fs-", dir=args.workdir)).resolve()
    try:
        res = run(args, workdir)
    finally:
        for mnt in (workdir / "mnt", workdir / "mnt-vmfs-fuse"):
            if os.path.ismount(mnt):
                subprocess.run(["fusermount", "-u", str(mnt)], capture_output=True)
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    rows = [("measure", "ours", "baseline", "ratio ours/base"), *table(res)]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    print(f"volume: {human(int(res['volume']['size']))} sparse {args.fs.upper()} in {workdir}")  # type: ignore[index]
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(widths[j]) for j, cell in enumerate(row)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    checks = res["checks"]
    print("checks: " + ", ".join(f"{k}={v}" for k, v in checks.items()))  # type: ignore[union-attr]
    print("ratios are throughputs ours / baseline (below 1: slower than the baseline), except for vmfs-mkfs.")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
