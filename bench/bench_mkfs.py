"""Time vmfs-mkfs on sparse images of 1 TiB and 64 TiB and print the figures.

    .venv/bin/python bench/bench_mkfs.py [--dir DIR] [--repeat N]

For each size: wall time of the command (best of N), bytes it wrote, bytes the image occupies,
and, as the baseline of the same run, the time to write the same number of bytes sequentially
to a plain file in the same folder.  Images go to --dir, else the first of the temporary folder
and /dev/shm that holds a sparse file of that size (ext4 stops at 16 TiB).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TIB = 1 << 40
SIZES = {"1T": TIB, "64T": 64 * TIB}
MKFS = str(Path(sys.executable).with_name("vmfs-mkfs"))


def holds(directory: Path, size: int) -> bool:
    probe = directory / ".bench-probe"
    try:
        with open(probe, "wb") as f:
            f.truncate(size)
        return True
    except OSError:
        return False
    finally:
        probe.unlink(missing_ok=True)


def place(size: int, wanted: str | None) -> Path | None:
    candidates = [Path(wanted)] if wanted else [Path(tempfile.gettempdir()), Path("/dev/shm")]
    return next((d for d in candidates if d.is_dir() and holds(d, size)), None)


def raw_write(directory: Path, nbytes: int) -> float:
    path = directory / ".bench-raw"
    chunk = bytes(4 << 20)
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        left = nbytes
        while left > 0:
            left -= f.write(chunk[: min(len(chunk), left)])
        f.flush()
        os.fsync(f.fileno())
    elapsed = time.perf_counter() - t0
    path.unlink()
    return elapsed


def bench(label: str, size: int, directory: Path, repeat: int) -> dict[str, object]:
    best = float("inf")
    result: dict[str, object] = {}
    for _ in range(repeat):
        workdir = Path(tempfile.mkdtemp(prefix="bench-mkfs-", dir=directory))
        image = workdir / f"{label}.img"
        try:
            t0 = time.perf_counter()
            r = subprocess.run([MKFS, "-t", "vmfs5", "--json", "--size", str(size), image], capture_output=True,
                               text=True)
            elapsed = time.perf_counter() - t0
            if r.returncode != 0:
                raise SystemExit(f"vmfs-mkfs failed: {r.stderr.strip()}")
            layout = json.loads(r.stdout)
            if elapsed < best:
                best = elapsed
                result = {
                    "size": label,
                    "dir": str(directory),
                    "seconds": round(elapsed, 3),
                    "bytes_written": layout["bytesWritten"],
                    "bytes_allocated": image.stat().st_blocks * 512,
                    "volume_bytes": layout["volumeSize"],
                    "metadata_blocks": layout["usedFileBlocks"],
                }
        finally:
            shutil.rmtree(workdir)
    result["raw_write_same_bytes_seconds"] = round(raw_write(directory, int(result["bytes_written"])), 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="folder for the images")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{'size':>5} {'seconds':>8} {'written':>12} {'allocated':>12} {'raw write':>9}  folder")
    for label, size in SIZES.items():
        directory = place(size + (64 << 20), args.dir)
        if directory is None:
            print(f"{label:>5}  skipped: no folder holds a sparse file of this size")
            continue
        r = bench(label, size, directory, args.repeat)
        print(
            f"{label:>5} {r['seconds']:>8} {r['bytes_written']:>12} {r['bytes_allocated']:>12} "
            f"{r['raw_write_same_bytes_seconds']:>9}  {r['dir']}"
        )


if __name__ == "__main__":
    main()
