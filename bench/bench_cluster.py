"""Metadata operations per second with 1, 2 and 4 hosts (real processes) sharing one volume: with
the journal and every operation its own commit (what a mount does by default), with the journal
and group commit (``vmfs-mount -o commit=SECONDS``: ``--commit`` seconds, vmfs.cluster.batch), and
with journaling off (not crash-safe: the bound on what the journal costs).

    .venv/bin/python bench/bench_cluster.py [--ops 300] [--hosts 1,2,4] [--commit 0.05] [--json out.json]
                                            [--fs vmfs5|vmfs6]

Each host runs the mixed workload of tests/cluster/worker.py (creates, writes, renames, unlinks,
truncates, mkdirs in a private and a shared directory).  Prints aggregate operations per second.
The 4 GiB volume is VMFS5 unless ``--fs vmfs6`` (the same library mkfs, version 6).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.cluster.conftest import make_volume  # noqa: E402
from vmfs.cluster.attachment import HostAttachment  # noqa: E402
from vmfs.cluster.host import HostIdentity  # noqa: E402
from vmfs.write.posix import WritableFileSystem  # noqa: E402


def run(hosts: int, ops: int, journaling: bool, workdir: Path, version: int = 5, commit: float = 0.0) -> dict:
    workdir.mkdir(parents=True)
    image = make_volume(workdir / "shared.img", 4 << 30, version=version)
    vol = HostAttachment.open(image, host=HostIdentity(uuid="70000009-00000000-0000-020000000009"))
    WritableFileSystem(vol).mkdir("/shared")
    vol.close()
    env = {**os.environ, "VMFS_JOURNAL": "1" if journaling else "0", "VMFS_COMMIT": str(commit)}
    start = time.monotonic()
    procs = [
        subprocess.Popen([sys.executable, "-m", "tests.cluster.worker", str(image), str(n), str(ops), str(n),
                          str(workdir), str(hosts)], cwd=REPO, env=env)
        for n in range(1, hosts + 1)
    ]
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(f"host failed in {workdir}")
    wall = time.monotonic() - start
    results = [json.loads((workdir / f"result-{n}.json").read_text()) for n in range(1, hosts + 1)]
    done = sum(r["counts"]["ok"] for r in results)
    busiest = max(r["elapsed"] for r in results)
    return {
        "hosts": hosts,
        "journaling": journaling,
        "commit": commit,
        "ops": done,
        "busy": sum(r["counts"]["busy"] for r in results),
        "seconds": round(busiest, 2),
        "wall": round(wall, 2),
        "ops_per_s": round(done / busiest, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ops", type=int, default=300, help="operations per host")
    ap.add_argument("--hosts", default="1,2,4")
    ap.add_argument("--json")
    ap.add_argument("--fs", choices=["vmfs5", "vmfs6"], default="vmfs5", help="version of the shared volume")
    ap.add_argument("--commit", type=float, default=0.05, help="group commit interval of the batched run (s)")
    args = ap.parse_args()
    version = 6 if args.fs == "vmfs6" else 5
    modes = [("journal", True, 0.0), (f"journal+batch {args.commit:g}s", True, args.commit), ("no journal", False, 0.0)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        for hosts in [int(h) for h in args.hosts.split(",")]:
            for i, (name, journaling, commit) in enumerate(modes):
                row = run(hosts, args.ops, journaling, Path(tmp) / f"h{hosts}-{i}", version, commit)
                row["mode"] = name
                rows.append(row)
                print(f"{hosts} host(s), {name}: {row['ops']} ops in "
                      f"{row['seconds']} s = {row['ops_per_s']} ops/s (EBUSY after retries: {row['busy']})",
                      flush=True)
    print("\nhosts" + "".join(f"  {name + ' ops/s':>24}" for name, _, _ in modes) + "  batch/journal")
    for hosts in sorted({r["hosts"] for r in rows}):
        mine = {r["mode"]: r["ops_per_s"] for r in rows if r["hosts"] == hosts}
        rates = [mine[name] for name, _, _ in modes]
        print(f"{hosts:5}" + "".join(f"  {rate:24}" for rate in rates) + f"  {rates[1] / rates[0]:12.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
