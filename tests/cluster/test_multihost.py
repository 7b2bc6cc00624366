"""Acceptance: four hosts share one volume read-write with 1,000 mixed operations each, in
private directories and one shared directory: as four real processes on the image file, and as
four threads of this process whose host attachments share one device object (they must behave
exactly as the processes do)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import oracles
from tests.cluster import worker
from tests.cluster.conftest import make_volume
from tests.conftest import REPO, Mount, tool
from tests.helpers import capture_mount, diff_trees
from vmfs.cluster.attachment import HostAttachment
from vmfs.cluster.host import HostIdentity
from vmfs.device.file import FileDevice
from vmfs.volume.usage import marked_used, referenced_resources
from vmfs.volume.volume import Volume
from vmfs.write.posix import WritableFileSystem

pytestmark = [pytest.mark.slow, pytest.mark.oracle, pytest.mark.fuse]

HOSTS = 4
OPS = 1000


def run_hosts(image: Path | str, workdir: Path, hosts: int, ops: int, env: dict | None = None,
              wrap: Callable[[int, list[str]], list[str]] | None = None) -> list[dict]:
    """``hosts`` worker processes on the volume; ``wrap(n, argv)`` may start host n otherwise
    (inside its own network namespace)."""
    procs = [
        subprocess.Popen(
            (wrap or (lambda _n, argv: argv))(n, [
                sys.executable, "-m", "tests.cluster.worker", str(image), str(n), str(ops), str(100 + n),
                str(workdir), str(hosts)]),
            cwd=REPO, env=env, stderr=subprocess.PIPE,
        )
        for n in range(1, hosts + 1)
    ]
    for p in procs:
        _, err = p.communicate(timeout=3000)
        assert p.returncode == 0, err.decode()[-3000:]
    return [json.loads((workdir / f"result-{n}.json").read_text()) for n in range(1, hosts + 1)]


def run_hosts_in_process(image: Path, workdir: Path, hosts: int, ops: int) -> list[dict]:
    """The same hosts as threads of this process, each attached through its own handle on one
    device object (:class:`vmfs.device.shared.SharedDevice`)."""
    device = FileDevice(image, readonly=False)
    results: dict[int, dict] = {}

    def host_thread(n: int) -> None:
        try:
            results[n] = worker.run(device, n, ops, 100 + n, str(workdir), hosts, True)
        except BaseException:
            (workdir / f"error-{n}").write_text(traceback.format_exc())  # the others stop waiting
            raise

    threads = [threading.Thread(target=host_thread, args=(n,), name=f"host-{n}") for n in range(1, hosts + 1)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=3000)
    finally:
        device.close()
    errors = sorted(workdir.glob("error-*"))
    assert not errors, errors[0].read_text()[-3000:]
    assert sorted(results) == list(range(1, hosts + 1))
    return [results[n] for n in range(1, hosts + 1)]


@pytest.mark.parametrize(("placement", "version"), [("processes", 5), ("threads on one device", 5), ("processes", 6)],
                         ids=["processes", "threads on one device", "processes-vmfs6"])
def test_four_hosts_share_a_volume(tmp_path: Path, placement: str, version: int) -> None:
    image = make_volume(tmp_path / "shared.img", 4 << 30, version=version)
    vol = HostAttachment.open(image, host=HostIdentity(uuid="70000009-00000000-0000-020000000009"))
    WritableFileSystem(vol).mkdir("/shared")
    vol.close()
    if placement == "processes":
        results = run_hosts(image, tmp_path, HOSTS, OPS)
    else:
        results = run_hosts_in_process(image, tmp_path, HOSTS, OPS)
    # every host saw the same tree at the end
    seen = [r["seen"] for r in results]
    assert all(s == seen[0] for s in seen)
    # and that tree is exactly what the acknowledged operations made
    expected: dict[str, str | None] = {"/shared": None}
    for r in results:
        expected.update({d: None for d in r["dirs"]})
        expected.update(r["model"])
    assert seen[0] == expected
    assert sum(r["counts"]["ok"] for r in results) >= HOSTS * OPS * 0.95
    # the volume is consistent and every other reader sees the same bytes
    with Volume.open(image) as ro:
        refs, used = referenced_resources(ro), marked_used(ro)
        assert all(refs[k] == used[k] for k in used)
        assert not any(s.in_use for s in __import__("vmfs.volume.slots", fromlist=["x"]).read_slots(ro))
    with Mount([tool("vmfs-mount"), str(image), str(tmp_path / "ours")], tmp_path / "ours") as root:
        ours = capture_mount(root)
    if version == 6:  # files with holes: their content through dissect only (vmfs6-fuse's hole bug)
        holed = oracles.holed_files(image)
        theirs = oracles.fuse_tree("vmfs6-fuse", [image], tmp_path / "oracle", skip_content=holed)
        assert diff_trees({p: {k: v for k, v in r.items() if not (p in holed and k == "sha256")}
                           for p, r in ours.items()}, theirs) == []
    else:
        theirs = oracles.fuse_tree("vmfs-fuse", [image], tmp_path / "oracle", unreadable=frozenset({"/.sdd.sf"}))
        theirs.pop("/.sdd.sf")
        assert diff_trees({p: r for p, r in ours.items() if p != "/.sdd.sf"}, theirs) == []
    assert diff_trees(ours, oracles.dissect_tree([image])) == []
