"""One simulated host: mounts the shared volume read-write through the library, runs random
operations, records what was acknowledged, then (after every host is done) dumps the tree it
sees.  Run as a real process (``python -m tests.cluster.worker``: the multi-host tests and
bench/bench_cluster.py), or as a thread of one process whose hosts share one device object
(:func:`run` given a device)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
from pathlib import Path

from tests.helpers import user_tree
from vmfs.cluster.attachment import HostAttachment
from vmfs.cluster.host import HostIdentity
from vmfs.device.base import BlockDevice
from vmfs.device.shared import SharedDevice
from vmfs.errors import BusyError, NoSpaceError
from vmfs.write.posix import WritableFileSystem


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tree(fs: WritableFileSystem) -> dict[str, str | None]:
    return user_tree(fs, digest)


def run(storage: str | BlockDevice, n: int, ops: int, seed: int, workdir: str, hosts: int, journaling: bool) -> dict:
    """Host ``n`` on the image at path ``storage``, or on its own handle of the device object
    ``storage`` that the other hosts of this process share."""
    rng = random.Random(seed)
    host = HostIdentity(uuid=f"7000000{n}-00000000-0000-02000000000{n}", ip=f"198.51.100.{n}",
                        heartbeat_period=1.0)
    if isinstance(storage, str):
        vol = HostAttachment.open(storage, host=host, journaling=journaling)
    else:
        vol = HostAttachment.from_devices([SharedDevice(storage)], host=host, journaling=journaling)
    commit = float(os.environ.get("VMFS_COMMIT", "0"))
    if commit:
        vol.group_commit(commit)  # as vmfs-mount -o commit=SECONDS does (bench/bench_cluster.py)
    fs = WritableFileSystem(vol)
    model: dict[str, bytearray] = {}
    dirs = {f"/h{n}"}
    counts = {"ok": 0, "busy": 0, "nospace": 0}
    try:
        fs.mkdir(f"/h{n}")
    except FileExistsError:
        pass
    start = time.monotonic()
    for i in range(ops):
        kind = rng.choices(["create", "write", "rename", "unlink", "truncate", "mkdir"], [30, 30, 15, 10, 10, 5])[0]
        mine = sorted(model)
        try:
            if kind == "create" or not mine:
                parent = rng.choice(sorted(dirs) + ["/shared"] * 2)
                p = f"{parent}/h{n}-{i}"
                data = rng.randbytes(rng.choice([0, 10, 800, 3000, 9000, 70000]))
                fs.write_file(p, data)
                model[p] = bytearray(data)
            elif kind == "write":
                p = rng.choice(mine)
                off = rng.choice([0, len(model[p]), rng.randrange(0, len(model[p]) + 1)])
                data = rng.randbytes(rng.choice([1, 100, 4096, 20000]))
                fs.write(fs.resolve(p).address, off, data)
                buf = model[p]
                if len(buf) < off:
                    buf.extend(bytes(off - len(buf)))
                buf[off : off + len(data)] = data
            elif kind == "rename":
                p = rng.choice(mine)
                q = f"{rng.choice([*sorted(dirs), '/shared'])}/h{n}-r{i}"
                fs.rename(p, q)
                model[q] = model.pop(p)
            elif kind == "unlink":
                p = rng.choice(mine)
                fs.unlink(p)
                del model[p]
            elif kind == "truncate":
                p = rng.choice(mine)
                size = rng.choice([0, 5, 1024, 8193, 100000])
                fs.truncate(fs.resolve(p).address, size)
                buf = model[p]
                if size < len(buf):
                    del buf[size:]
                else:
                    buf.extend(bytes(size - len(buf)))
            else:
                d = f"{rng.choice(sorted(dirs))}/d{i}"
                fs.mkdir(d)
                dirs.add(d)
            counts["ok"] += 1
        except BusyError:
            counts["busy"] += 1
        except NoSpaceError:
            counts["nospace"] += 1
    elapsed = time.monotonic() - start
    fs.flush_all()
    # barrier: wait until every host finished its operations, then look at the whole tree
    Path(workdir, f"done-{n}").write_text("done")
    wait_for(workdir, "done", hosts)
    time.sleep(0.2)
    vol.volume.trust_cache_for(0)
    vol.volume.invalidate_caches()
    seen = tree(fs)
    Path(workdir, f"seen-{n}").write_text("seen")
    wait_for(workdir, "seen", hosts)
    vol.close()
    return {
        "host": n,
        "model": {p: digest(bytes(b)) for p, b in model.items()},
        "dirs": sorted(dirs),
        "seen": seen,
        "counts": counts,
        "elapsed": elapsed,
        "ops": ops,
    }


def main() -> None:
    image, n, ops, seed, workdir, hosts = sys.argv[1:7]
    journaling = os.environ.get("VMFS_JOURNAL", "1") != "0"
    try:
        result = run(image, int(n), int(ops), int(seed), workdir, int(hosts), journaling)
    except BaseException:
        import traceback

        Path(workdir, f"error-{n}").write_text(traceback.format_exc())
        raise
    Path(workdir, f"result-{n}.json").write_text(json.dumps(result))


def wait_for(workdir: str, prefix: str, hosts: int) -> None:
    """A barrier between the host processes (files in a shared folder); gives up as soon as one
    host failed, so a crash never leaves the others waiting."""
    while len(list(Path(workdir).glob(prefix + "-*"))) < hosts:
        errors = list(Path(workdir).glob("error-*"))
        if errors:
            raise SystemExit(f"another host failed: {errors[0].read_text()[-500:]}")
        time.sleep(0.1)


if __name__ == "__main__":
    main()
