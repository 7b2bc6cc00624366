"""The multi-host workload of tests/cluster/test_multihost.py on network storage, and its checks,
shared by the iSCSI and the RBD tests: what differs between them is only how a host reaches the
storage and how the oracles get its bytes (the target's backing file, an export of the image)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests import oracles
from tests.cluster.test_multihost import run_hosts
from tests.conftest import REPO, Mount, tool
from tests.helpers import capture_mount, diff_trees
from vmfs.cluster.attachment import HostAttachment
from vmfs.cluster.host import HostIdentity
from vmfs.volume.slots import read_slots
from vmfs.volume.usage import marked_used, referenced_resources
from vmfs.volume.volume import Volume
from vmfs.write.posix import WritableFileSystem


def run_shared_workload(storage: str, hosts: int, ops: int, workdir: Path,
                        wrap: Callable[[int, list[str]], list[str]]) -> None:
    """Format ``storage``, run ``hosts`` worker processes (started through ``wrap``), and check
    that every host saw the tree the acknowledged operations made and that the volume is
    consistent, read through the same storage."""
    r = subprocess.run([tool("vmfs-mkfs"), "-t", "vmfs5", storage], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    vol = HostAttachment.open(storage, host=HostIdentity(uuid="70000009-00000000-0000-020000000009"))
    WritableFileSystem(vol).mkdir("/shared")
    vol.close()
    results = run_hosts(storage, workdir, hosts, ops, wrap=wrap)
    seen = [x["seen"] for x in results]
    assert all(s == seen[0] for s in seen)
    expected: dict[str, str | None] = {"/shared": None}
    for x in results:
        expected.update({d: None for d in x["dirs"]})
        expected.update(x["model"])
    assert seen[0] == expected
    print("per host ops:", json.dumps([x["counts"] for x in results]))
    with Volume.open(storage) as ro:
        refs, used = referenced_resources(ro), marked_used(ro)
        assert all(refs[k] == used[k] for k in used)
        assert not any(s.in_use for s in read_slots(ro))


def check_local_copy(image: Path, workdir: Path) -> None:
    """The bytes the storage holds, as a local image: vmfs-fsck finds it clean and vmfs-tools reads
    the same tree as our mount."""
    r = subprocess.run([tool("vmfs-fsck"), "-n", str(image)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout
    with Mount([tool("vmfs-mount"), str(image), str(workdir / "ours")], workdir / "ours") as root:
        ours = capture_mount(root)
    theirs = oracles.fuse_tree("vmfs-fuse", [image], workdir / "oracle", unreadable=frozenset({"/.sdd.sf"}))
    theirs.pop("/.sdd.sf")
    assert diff_trees({p: v for p, v in ours.items() if p != "/.sdd.sf"}, theirs) == []


COUNTER = """
import json, sys
from vmfs.device.opener import open_device
dev = open_device(sys.argv[1], readonly=False)
for _ in range(int(sys.argv[2])):
    while True:
        old = dev.read(4096, 512)
        n = int.from_bytes(old[:8], "little")
        if dev.compare_and_write(4096, old, (n + 1).to_bytes(8, "little") + bytes(504)):
            break
print(json.dumps(vars(dev.stats)))
dev.close()
"""


def count_by_test_and_set(storage: str, processes: int, per: int) -> list[dict]:
    """``processes`` clients of ``storage`` (each its own session or RADOS client) add ``per`` each
    to one counter (the first 8 bytes of the sector at 4096) by read and test-and-set, retried on
    a miscompare; returns each client's device statistics.  A lost increment is a broken ATS."""
    procs = [subprocess.Popen([sys.executable, "-c", COUNTER, storage, str(per)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(processes)]
    stats = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
        stats.append(json.loads(out.splitlines()[-1]))
    return stats
