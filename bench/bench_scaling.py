"""How the library's costs grow with the metadata: creates and stats in one directory of 1,000,
10,000 and 100,000 entries, and vmfs-fsck -n of volumes of 10,000 and 100,000 file descriptors.

    .venv/bin/python bench/bench_scaling.py [--sizes 1000,10000,100000] [--window 500]
                                            [--fs vmfs5|vmfs6] [--dir DIR] [--json out.json]

One sparse image per run (VMFS5 by default, made by the library's mkfs with enough FDs for the
largest size), one host attachment with journaling on (every create is a crash-safe journal
transaction, as through the mount) and a real file device; FUSE is left out, so what is timed is
the library's own cost per operation, not the kernel round trip that adds a constant to each.
The directory grows by creates of empty files; when it holds N entries the next ``--window``
creates are timed (creates/s at N), then ``--window`` stats of random existing names: warm
(the attachment's caches as the creates left them) and cold (a fresh read-only volume: the
first stat reads and parses the whole directory, shown on its own in ms, and every later one
reads its FD from the device).  After the largest size, ``vmfs-fsck -n`` (the
console script, start-up included) runs on the image as it is, and the same for a second image
holding a tenth of the entries, so the time per FD at two sizes is shown side by side.

Cost should grow linearly with the metadata: creates/s and stats/s flat across N, fsck time
proportional to the FDs.  A script, not a test: figures depend on the machine and its load.
The VMFS5 format allows at most 129,024 FDs (vmfs-format.md), so 1M-FD volumes need VMFS6,
whose build through the library takes longer than this script should (say so, do not fake it).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vmfs.cluster.attachment import HostAttachment
from vmfs.cluster.host import HostIdentity, ManualClock
from vmfs.device.file import FileDevice
from vmfs.mkfs import MkfsOptions, format_volume
from vmfs.volume.namespace import FileSystem
from vmfs.volume.volume import Volume
from vmfs.write.posix import WritableFileSystem

BIN = Path(sys.executable).parent
GIB = 1 << 30
VMFS5_MAX_FDS = 129_024


def make_image(path: Path, fds: int, version: int) -> None:
    with open(path, "wb") as f:
        f.truncate(64 * GIB)
    dev = FileDevice(path, readonly=False)
    try:
        options: dict[str, object] = {"label": "scaling", "creation_time_us": 1_700_000_000_000_000}
        if version == 5:
            options["num_fds"] = min(VMFS5_MAX_FDS, fds)
        format_volume([dev], MkfsOptions(version=version, **options))  # type: ignore[arg-type]
    finally:
        dev.close()


def host() -> HostIdentity:
    return HostIdentity(uuid="5f000000-000000b1-00b1-0200000000b1", ip="192.0.2.177", clock=ManualClock(),
                        heartbeat_period=3600, lease=1e9)


def fill(fs: WritableFileSystem, start: int, end: int) -> None:
    for i in range(start, end):
        fs.create(f"/big/f{i:07d}")


def timed_creates(fs: WritableFileSystem, start: int, window: int) -> float:
    t0 = time.perf_counter()
    fill(fs, start, start + window)
    return window / (time.perf_counter() - t0)


def timed_stats(fs: FileSystem, count: int, window: int, rng: random.Random) -> float:
    names = [f"/big/f{rng.randrange(count):07d}" for _ in range(window)]
    t0 = time.perf_counter()
    for name in names:
        fs.stat(name)
    return window / (time.perf_counter() - t0)


def cold_stats(image: Path, count: int, window: int, rng: random.Random) -> tuple[float, float]:
    """(seconds of the first stat, which reads and parses the whole directory; stats/s of the
    next ``window``, each reading its FD from the device)."""
    volume = Volume.open(image)
    try:
        fs = FileSystem(volume)
        t0 = time.perf_counter()
        fs.stat(f"/big/f{rng.randrange(count):07d}")
        first = time.perf_counter() - t0
        return first, timed_stats(fs, count, window, rng)
    finally:
        volume.close()


def fsck_seconds(image: Path) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([str(BIN / "vmfs-fsck"), "-n", str(image)], capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"vmfs-fsck -n {image} exited {r.returncode}: {(r.stdout + r.stderr)[-400:]}")
    return elapsed


def run(work: Path, sizes: list[int], window: int, version: int) -> dict[str, object]:
    rng = random.Random(1)
    image = work / "scaling.img"
    make_image(image, (max(sizes) + window) * 5 // 4 + 64, version)  # a quarter free: not a full volume's search
    rows = []
    with HostAttachment.open(image, host=host()) as vol:
        fs = WritableFileSystem(vol)
        fs.mkdir("/big")
        count = 0
        for n in sizes:
            t0 = time.perf_counter()
            fill(fs, count, n)
            grown = time.perf_counter() - t0
            creates = timed_creates(fs, n, window)
            count = n + window
            warm = timed_stats(fs, count, window, rng)
            fs.flush_all()  # (creates of empty files commit as they go: nothing is deferred)
            first, cold = cold_stats(image, count, window, rng)
            rows.append({"entries": n, "creates_per_s": creates, "stats_warm_per_s": warm,
                         "first_stat_cold_s": first, "stats_cold_per_s": cold, "fill_s": grown})
            print(f"{n:>8} entries: {creates:8.0f} creates/s  {warm:9.0f} stats/s warm  {cold:8.0f} stats/s cold"
                  f"  first cold stat {first * 1000:7.1f} ms  (filled in {grown:.1f} s)", flush=True)
    big = fsck_seconds(image)
    small_image = work / "small.img"
    small_n = max(sizes) // 10
    make_image(small_image, small_n * 5 // 4 + 64, version)
    with HostAttachment.open(small_image, host=host()) as vol:
        fs = WritableFileSystem(vol)
        fs.mkdir("/big")
        fill(fs, 0, small_n)
    small = fsck_seconds(small_image)
    fsck = [{"fds": small_n, "seconds": small}, {"fds": count, "seconds": big}]
    for row in fsck:
        print(f"vmfs-fsck -n, {row['fds']:>7} files: {row['seconds']:.2f} s "
              f"({row['seconds'] / row['fds'] * 1e6:.0f} µs per file)")  # type: ignore[operator]
    return {"fs": f"vmfs{version}", "window": window, "rows": rows, "fsck": fsck}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--window", type=int, default=500)
    parser.add_argument("--fs", choices=["vmfs5", "vmfs6"], default="vmfs5")
    parser.add_argument("--dir", help="work folder (default: a temporary one)")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    version = int(args.fs[-1])
    if version == 5 and (max(sizes) + args.window) * 5 // 4 + 64 > VMFS5_MAX_FDS:
        raise SystemExit(f"VMFS5 holds at most {VMFS5_MAX_FDS} FDs: use --fs vmfs6 for more")
    with tempfile.TemporaryDirectory(prefix="bench-scaling-", dir=args.dir) as tmp:
        result = run(Path(tmp), sizes, args.window, version)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
