"""Time vmfs-fsck on a volume of 100,000 files and directories, against fsck.vmfs on the same volume
and e2fsck on an ext4 image holding the same tree; print the figures and the ratios.

    .venv/bin/python bench/bench_fsck.py [--entries N] [--dir DIR] [--repeat N] [--keep]

The VMFS5 volume is built through the library directly (WritableFileSystem, journaling off: a
measurement, not a crash-safe write), not through FUSE.  The tree: 40 top directories, each with
45 subdirectories of 55 small files ("@file N"; resident, as ESXi keeps files under 1 KiB), i.e.
1,840 directories and 99,000 files for the default; --entries scales the number of subdirectories.
The same tree is written to a host folder and packed into ext4 with ``mkfs.ext4 -d``.

Every checker runs read-only on a warm page cache, best of --repeat: ``vmfs-fsck -n`` (the
console script: Python start-up included), ``fsck.vmfs``, ``e2fsck -fn``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vmfs.cluster.attachment import HostAttachment
from vmfs.cluster.host import HostIdentity, ManualClock
from vmfs.device.file import FileDevice
from vmfs.mkfs import MkfsOptions, format_volume
from vmfs.write.posix import WritableFileSystem

BIN = Path(sys.executable).parent
TOP = 40
FILES = 55  # 55 files + '.' + '..' fit one 8 KiB sub-block directory (58 entries)
GIB = 1 << 30


def shape(entries: int) -> tuple[int, int]:
    """(top directories, subdirectories per top) for about ``entries`` files and directories."""
    per_top = max(1, round(entries / TOP / (FILES + 1)))
    return TOP, per_top


def tree(entries: int):  # type: ignore[no-untyped-def]
    tops, subs = shape(entries)
    for t in range(tops):
        yield f"/d{t:02d}", None
        for s in range(subs):
            yield f"/d{t:02d}/s{s:02d}", None
            for i in range(FILES):
                yield f"/d{t:02d}/s{s:02d}/f{i:02d}", f"@file {i}\n".encode()


def build_vmfs(image: Path, entries: int) -> tuple[int, float]:
    t0 = time.perf_counter()
    with open(image, "wb") as f:
        f.truncate(64 * GIB + (17 << 20))
    dev = FileDevice(image, readonly=False)
    try:
        format_volume([dev], MkfsOptions(label="bench", num_fds=min(129024, entries + entries // 10 + 64)))
    finally:
        dev.close()
    host = HostIdentity(uuid="5f000000-000000b0-00b0-0200000000b0", ip="192.0.2.176", clock=ManualClock(),
                        heartbeat_period=3600, lease=1e9)
    count = 0
    with HostAttachment.open(image, host=host, journaling=False) as vol:
        fs = WritableFileSystem(vol)
        for path, data in tree(entries):
            if data is None:
                fs.mkdir(path)
            else:
                fd = fs.create(path)
                fs.write(fd.address, 0, data)
            count += 1
    return count, time.perf_counter() - t0


def build_ext4(image: Path, folder: Path, entries: int) -> float:
    t0 = time.perf_counter()
    folder.mkdir()
    for path, data in tree(entries):
        p = folder / path.lstrip("/")
        if data is None:
            p.mkdir()
        else:
            p.write_bytes(data)
    size = max(1 * GIB, entries * 8192)
    with open(image, "wb") as f:
        f.truncate(size)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-N", str(entries + 1000), "-d", str(folder), str(image)], check=True)
    return time.perf_counter() - t0


def best(argv: list[str], repeat: int, ok: tuple[int, ...] = (0,)) -> tuple[float, str]:
    times = []
    out = ""
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = subprocess.run(argv, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if r.returncode not in ok:
            raise SystemExit(f"{argv[0]} exited {r.returncode}: {r.stderr.strip() or r.stdout[-400:]}")
        out = r.stdout
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--dir", help="work folder (default: a temporary one)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the images")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-fsck-", dir=args.dir))
    try:
        vmfs = work / "vmfs.img"
        count, vmfs_build = build_vmfs(vmfs, args.entries)
        ext4 = work / "ext4.img"
        ext4_build = build_ext4(ext4, work / "tree", args.entries)
        ours, out = best([str(BIN / "vmfs-fsck"), "-n", "--json", str(vmfs)], args.repeat)
        report = json.loads(out)
        files = report["summary"]["files"]["used"]
        theirs, fsck_vmfs_out = best(["fsck.vmfs", str(vmfs)], args.repeat, ok=(0, 1, 2, 4))
        e2fsck, _ = best(["e2fsck", "-fn", str(ext4)], args.repeat)
        inodes = sum(1 for _ in (work / "tree").rglob("*"))
        print(f"tree: {count} files and directories ({files} FDs in use with the system files; ext4: {inodes})")
        print(f"build: VMFS5 through the library {vmfs_build:.1f} s, ext4 (mkfs.ext4 -d) {ext4_build:.1f} s")
        print(f"{'checker':<22} {'seconds':>8}")
        print(f"{'vmfs-fsck -n':<22} {ours:>8.2f}")
        print(f"{'fsck.vmfs':<22} {theirs:>8.2f}")
        print(f"{'e2fsck -fn (ext4)':<22} {e2fsck:>8.2f}")
        print(f"ratio vmfs-fsck / fsck.vmfs = {ours / theirs:.2f}")
        print(f"ratio vmfs-fsck / e2fsck    = {ours / e2fsck:.2f}")
        seconds = report["check"]["seconds"]
        print("vmfs-fsck passes: " + ", ".join(f"{k} {v:.2f}s" for k, v in seconds.items()))
        print("fsck.vmfs says: " + " | ".join(line.strip() for line in fsck_vmfs_out.splitlines()[-6:]))
    finally:
        if args.keep:
            print(f"images kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
