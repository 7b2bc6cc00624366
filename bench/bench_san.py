"""Hosts sharing a volume over iSCSI and over Ceph RBD against the same on a local image file:
creates per second per host, and the round trip of an on-disk lock update (one test-and-set), at
1, 2 and 4 hosts.

    .venv/bin/python bench/bench_san.py [--hosts 1,2,4] [--creates 300] [--locks 500] [--json out.json]

Needs root and Debian's tgt (istgt for the iSCSI ATS rows, Ceph for the RBD rows): the run
starts its own tgtd on a free loopback port (one I/O thread) exporting a LUN over a fresh 2 GiB
VMFS5 image, an istgt exporting the same image file, and a one-node Ceph cluster (memory-store
OSD) into which each fresh volume is imported, and stops them after.  Each host is a real
process with its own host identity and, on iSCSI, its own session and initiator name.  tgt has
no COMPARE AND WRITE, so on it every lock update is a SCSI-2 reservation (RESERVE, READ, WRITE,
RELEASE): the whole LUN is closed to the other hosts for that time, which is what the lock
figures at 2 and 4 hosts show; istgt has it ("iscsi-ats": one COMPARE AND WRITE per update).
On the image file the test-and-set is a byte-range lock of this machine; on RBD it is
rbd_compare_and_write, atomic in the OSD (ATS mode).

Creates: each host makes ``--creates`` files of 100 bytes in a directory of its own through
the library (journal on, one attachment per host), all hosts at once.  Locks: each host does
``--locks`` test-and-sets on a sector of its own, all hosts at once; the time of one is the
round trip a lock acquire or release pays.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.cluster.conftest import make_volume  # noqa: E402
from tests.network.ceph import CephCluster  # noqa: E402
from tests.network.ceph import available as ceph_available  # noqa: E402
from tests.network.istgt import IstgtTarget  # noqa: E402
from tests.network.istgt import available as istgt_available  # noqa: E402
from tests.network.tgt import TgtTarget, available  # noqa: E402

CLUSTER: CephCluster | None = None  # the Ceph cluster of the run, when Ceph is installed

CREATES = """
import json, sys, time
from vmfs.cluster.attachment import HostAttachment
from vmfs.cluster.host import HostIdentity
from vmfs.write.posix import WritableFileSystem
storage, n, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
host = HostIdentity(uuid=f"7100000{n}-00000000-0000-02000000000{n}", heartbeat_period=1.0)
vol = HostAttachment.open(storage, host=host)
fs = WritableFileSystem(vol)
fs.mkdir(f"/h{n}")
data = bytes(100)
start = time.monotonic()
for i in range(count):
    fd = fs.create(f"/h{n}/f{i}")
    fs.write(fd.address, 0, data)
    fs.flush_all()
elapsed = time.monotonic() - start
stats = [dict(vars(d.device.stats)) if hasattr(d.device, "stats") else {} for d in vol.volume.lvm.devices]
vol.close()
print(json.dumps({"seconds": elapsed, "stats": stats}))
"""

LOCKS = """
import json, sys, time
from vmfs.device.opener import open_device
storage, n, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
dev = open_device(storage, readonly=False)
offset = (1 << 30) + n * 4096  # a sector of this host's own, far from the volume's metadata
times = []
for i in range(count):
    old = dev.read(offset, 512)
    t = time.perf_counter()
    assert dev.compare_and_write(offset, old, i.to_bytes(8, "little") + bytes(504))
    times.append(time.perf_counter() - t)
stats = dict(vars(dev.stats)) if hasattr(dev, "stats") else {}
dev.close()
print(json.dumps({"times": times, "stats": stats}))
"""


def _hosts(script: str, storage: str, hosts: int, count: int) -> list[dict]:
    procs = [subprocess.Popen([sys.executable, "-c", script, storage, str(n), str(count)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n in range(1, hosts + 1)]
    out = []
    for p in procs:
        o, e = p.communicate(timeout=3600)
        if p.returncode != 0:
            raise SystemExit(f"a host failed: {e[-2000:]}")
        out.append(json.loads(o.splitlines()[-1]))
    return out


def measure(storage: str, kind: str, hosts: int, creates: int, locks: int, image: Path) -> dict:
    make_volume(image, 2 << 30, num_fds=8000)  # a fresh volume under the same path (and LUN)
    if kind == "rbd":  # the fresh volume as a new image of the cluster
        storage = CLUSTER.import_image(f"bench-{hosts}", image)  # type: ignore[union-attr]
    made = _hosts(CREATES, storage, hosts, creates)
    timed = _hosts(LOCKS, storage, hosts, locks)
    per_host = [creates / r["seconds"] for r in made]
    lock_us = [t * 1e6 for r in timed for t in r["times"]]
    row = {
        "storage": kind, "hosts": hosts,
        "creates_per_s_per_host": round(statistics.mean(per_host), 1),
        "lock_us_median": round(statistics.median(lock_us), 1),
        "lock_us_p99": round(sorted(lock_us)[int(len(lock_us) * 0.99)], 1),
        "lock_conflicts": sum(r["stats"].get("conflicts", 0) for r in timed),
        "create_conflicts": sum(s.get("conflicts", 0) for r in made for s in r["stats"]),
    }
    print(f"{kind:>10} {hosts} host(s): {row['creates_per_s_per_host']:7.1f} creates/s per host, "
          f"lock update {row['lock_us_median']:7.1f} us median, {row['lock_us_p99']:8.1f} us p99, "
          f"{row['lock_conflicts'] + row['create_conflicts']} reservation conflicts", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", default="1,2,4")
    ap.add_argument("--creates", type=int, default=300, help="files each host creates")
    ap.add_argument("--locks", type=int, default=500, help="test-and-sets each host times")
    ap.add_argument("--json")
    args = ap.parse_args()
    why = available()
    if why is not None:
        raise SystemExit(f"bench_san: {why}")
    global CLUSTER
    rows = []
    kinds = (["image file", "iscsi"] + (["iscsi-ats"] if istgt_available() is None else [])
             + (["rbd"] if ceph_available() is None else []))
    with tempfile.TemporaryDirectory(prefix="bench-san-", dir="/var/tmp") as tmp:
        target = TgtTarget(Path(tmp) / "tgt").start()
        caw = None
        try:
            if "rbd" in kinds:
                CLUSTER = CephCluster(Path(tmp) / "ceph").start()
            image = Path(tmp) / "local.img"
            make_volume(image, 2 << 30)
            url = target.export("bench", image)
            if "iscsi-ats" in kinds:  # the same image file, through a target with COMPARE AND WRITE
                caw = IstgtTarget(Path(tmp) / "istgt", {"bench": image}).start()
            for hosts in [int(h) for h in args.hosts.split(",")]:
                for kind in kinds:
                    storage = {"image file": str(image), "iscsi": url, "rbd": "",
                               "iscsi-ats": caw.url("bench") if caw else ""}[kind]
                    rows.append(measure(storage, kind, hosts, args.creates, args.locks, image))
        finally:
            target.stop()
            if caw is not None:
                caw.stop()
            if CLUSTER is not None:
                CLUSTER.stop()
    for hosts in sorted({r["hosts"] for r in rows}):
        f = next(r for r in rows if r["hosts"] == hosts and r["storage"] == "image file")
        for kind in kinds[1:]:
            n = next(r for r in rows if r["hosts"] == hosts and r["storage"] == kind)
            ratio = n["creates_per_s_per_host"] / f["creates_per_s_per_host"]
            print(f"{hosts} host(s): {kind}/file creates {ratio:.2f}x,"
                  f" lock round trip {n['lock_us_median'] / f['lock_us_median']:.1f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
