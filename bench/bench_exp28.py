"""ESX's experiment 28 (../shared/docs/esx-design.md section 8), measured on real network storage:
two hosts each take 1,000 different metadata locks while a third host streams reads; with SCSI
reservations the third host's read latency shows the stalls, with ATS it does not.

    .venv/bin/python bench/bench_exp28.py [--locks 1000] [--out DIR]

Needs root, tgt, istgt and Ceph (what ``make test`` installs).  The run builds a storage LAN (a
bridge and three network namespaces, tests/network/netns.py), starts tgtd (its LUN has no COMPARE
AND WRITE: reservation mode), istgt (COMPARE AND WRITE: ATS over the same protocol) and a
one-node Ceph cluster (rbd_compare_and_write: ATS mode) on the bridge's address, and runs the
same three processes against each, each host in its own namespace.  A lock take is a
test-and-set of the lock's sector from free to held, its release the reverse (what
``vmfs.cluster.locks`` does per lock), on 1,000 sectors of each locker's own.
The reader reads 64 KiB at a time, in sequence, the whole time: first alone (the baseline),
then while the lockers run.  Prints the reader's latency (median, 99th percentile, maximum)
alone and during the locking, the lockers' time, and the RESERVATION CONFLICTs the reader met;
draws the reader's latency over time for both modes into DIR/exp28.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.network import ceph, istgt, netns, tgt  # noqa: E402

READER = """
import json, sys, time
from vmfs.device.opener import open_device
dev = open_device(sys.argv[1], readonly=True)
stop_file, baseline = sys.argv[2], float(sys.argv[3])
samples, offset, start = [], 0, time.monotonic()
ready = False
from pathlib import Path
while True:
    t = time.monotonic()
    dev.read(offset, 65536)
    samples.append((t, time.monotonic() - t))  # CLOCK_MONOTONIC: one clock for every process here
    offset = (offset + 65536) % (256 << 20)
    if not ready and t - start > baseline:
        Path(stop_file + ".ready").touch()
        ready = True
    if Path(stop_file).exists():
        break
stats = dict(vars(dev.stats)) if hasattr(dev, "stats") else {}
print(json.dumps({"samples": samples, "stats": stats}))
"""

LOCKER = """
import json, sys, time
from vmfs.device.opener import open_device
dev = open_device(sys.argv[1], readonly=False)
n, count = int(sys.argv[2]), int(sys.argv[3])
base = (512 << 20) + n * count * 512
free, held = bytes(512), (b"held by %d " % n).ljust(512, b"\\0")
start = time.monotonic()
for i in range(count):
    at = base + i * 512
    assert dev.compare_and_write(at, free, held)   # take
    assert dev.compare_and_write(at, held, free)   # release
took = time.monotonic() - start
stats = dict(vars(dev.stats)) if hasattr(dev, "stats") else {}
print(json.dumps({"start": start, "seconds": took, "stats": stats}))
"""


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def run_mode(spec: str, lan: netns.Lan, locks: int, workdir: Path) -> dict:
    stop = workdir / "stop"
    for p in (stop, Path(f"{stop}.ready")):
        p.unlink(missing_ok=True)
    reader = subprocess.Popen(lan.argv(3, [sys.executable, "-c", READER, spec, str(stop), "2.0"]), cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not Path(f"{stop}.ready").exists():
        if reader.poll() is not None:
            raise SystemExit(f"reader failed: {reader.stderr.read() if reader.stderr else ''}")
        time.sleep(0.05)
    lockers = [subprocess.Popen(lan.argv(n, [sys.executable, "-c", LOCKER, spec, str(n), str(locks)]), cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in (1, 2)]
    results = []
    for p in lockers:
        out, err = p.communicate(timeout=1800)
        if p.returncode != 0:
            raise SystemExit(f"locker failed: {err[-2000:]}")
        results.append(json.loads(out.splitlines()[-1]))
    time.sleep(1.0)  # a tail of reads after the locking
    stop.touch()
    out, err = reader.communicate(timeout=120)
    if reader.returncode != 0:
        raise SystemExit(f"reader failed: {err[-2000:]}")
    read = json.loads(out.splitlines()[-1])
    window = [min(r["start"] for r in results), max(r["start"] + r["seconds"] for r in results)]
    return {"samples": read["samples"], "lockers": results, "reader_stats": read["stats"], "window": window}


def summarise(mode: str, res: dict) -> dict:
    lo, hi = res["window"]
    base = [lat for t, lat in res["samples"] if t < lo]
    during = [lat for t, lat in res["samples"] if lo <= t <= hi]

    def ms(values: list[float]) -> list[float]:
        return [round(statistics.median(values) * 1e3, 3), round(_pct(values, 0.99) * 1e3, 3),
                round(max(values) * 1e3, 3)]

    row = {
        "mode": mode, "reads_alone": len(base), "reads_during": len(during),
        "alone_ms": ms(base), "during_ms": ms(during),
        "locking_seconds": round(hi - lo, 2),
        "reader_conflicts": res["reader_stats"].get("conflicts", 0),
        "reader_conflict_wait_s": round(res["reader_stats"].get("conflict_wait", 0.0), 3),
        "locker_stats": [r["stats"] for r in res["lockers"]],
    }
    print(f"{mode:>28}: reads alone median/p99/max {row['alone_ms']} ms ({len(base)} reads); while two hosts "
          f"take and give back locks {row['during_ms']} ms ({len(during)} reads, {row['locking_seconds']} s); "
          f"the reader met {row['reader_conflicts']} RESERVATION CONFLICTs", flush=True)
    return row


def plot(results: dict[str, dict], rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(10, 3.2 * len(results)), sharex=True, squeeze=False)
    for ax, (mode, res), row in zip(axes[:, 0], results.items(), rows, strict=True):
        first = res["samples"][0][0]
        t = [s[0] - first for s in res["samples"]]
        lat = [s[1] * 1e3 for s in res["samples"]]
        lo, hi = (x - first for x in res["window"])
        ax.plot(t, lat, ".", markersize=2)
        ax.axvspan(lo, hi, color="orange", alpha=0.2, label="two hosts taking locks")
        ax.set_yscale("log")
        ax.set_ylabel("64 KiB read (ms)")
        ax.set_title(f"{mode}: median {row['alone_ms'][0]} ms alone, {row['during_ms'][0]} ms while locking, "
                     f"max {row['during_ms'][2]} ms", fontsize=10)
        ax.legend(loc="upper right")
    axes[-1, 0].set_xlabel("seconds since the reader's first read")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--locks", type=int, default=1000, help="locks each of the two hosts takes and gives back")
    ap.add_argument("--out", default="bench/out", help="folder for exp28.png and exp28.json")
    args = ap.parse_args()
    for why in (tgt.available(), istgt.available(), ceph.available(), netns.available()):
        if why is not None:
            raise SystemExit(f"bench_exp28: {why}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-exp28-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        lan = netns.Lan(3).up()
        target = caw = cluster = None
        try:
            target = tgt.TgtTarget(work / "tgt").start()
            url, _ = target.add_lun("exp28", 1 << 30)
            url = url.replace("127.0.0.1", target.add_portal(lan.target_ip).split(":")[0])
            caw = istgt.IstgtTarget(work / "istgt", {"exp28": 1 << 30}, ips=(lan.target_ip,)).start()
            cluster = ceph.CephCluster(work / "ceph", ip=lan.target_ip).start()
            spec = cluster.image("exp28", 1 << 30)
            results["iSCSI (SCSI-2 reservations)"] = run_mode(url, lan, args.locks, work)
            results["iSCSI (ATS, istgt)"] = run_mode(caw.url("exp28", lan.target_ip), lan, args.locks, work)
            results["RBD (ATS)"] = run_mode(spec, lan, args.locks, work)
        finally:
            if cluster is not None:
                cluster.stop()
            if caw is not None:
                caw.stop()
            if target is not None:
                target.stop()
            lan.down()
    rows = [summarise(mode, res) for mode, res in results.items()]
    plot(results, rows, out / "exp28.png")
    (out / "exp28.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"plot: {out / 'exp28.png'}")


if __name__ == "__main__":
    main()
