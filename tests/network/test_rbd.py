"""A VMFS volume on a real Ceph RBD image: a one-node Ceph cluster (monitor and memory-store OSD)
started for the session on the storage LAN's address, librbd as our client.

``rbd_compare_and_write`` is atomic in the OSD, so locks run in ATS mode: no reservation, no
stall of the other hosts.  These tests show the test-and-set atomic across client processes, run
the tools and 2 and 4 hosts (each in its own network namespace) on one image, and check what the
hosts wrote through an export of the image read by vmfs-tools, which cannot read RBD."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests import oracles
from tests.conftest import Mount, tool
from tests.helpers import capture_mount, diff_trees
from tests.network import netns
from tests.network.ceph import CephCluster
from tests.network.workload import check_local_copy, count_by_test_and_set, run_shared_workload
from vmfs.device.opener import open_device
from vmfs.device.rbd import RbdDevice, RbdSpec
from vmfs.errors import DeviceError, InvalidArgumentError

pytestmark = [pytest.mark.network]


@pytest.fixture
def image(ceph_cluster: CephCluster, request: pytest.FixtureRequest) -> str:
    name = request.node.name.replace("[", "-").replace("]", "").replace("_", "-").replace(" ", "-").lower()
    return ceph_cluster.image(name[:40], 1 << 30)


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=600)


def test_spec_forms() -> None:
    s = RbdSpec.parse("rbd:vms/store@snap1:conf=/etc/ceph/ceph.conf:id=admin:keyring=/k")
    assert (s.pool, s.image, s.snap) == ("vms", "store", "snap1")
    assert s.options == {"conf": "/etc/ceph/ceph.conf", "id": "admin", "keyring": "/k"}
    assert str(s) == "rbd:vms/store@snap1"
    for bad in ("rbd:noslash", "rbd:p/i:novalue", "rbd:/i"):
        with pytest.raises(InvalidArgumentError):
            RbdSpec.parse(bad)


def test_reads_and_writes_at_any_offset(image: str) -> None:
    with open_device(image, readonly=False) as dev:
        assert isinstance(dev, RbdDevice) and dev.size == 1 << 30
        dev.write(1000, b"partial sector")
        big = bytes(range(256)) * (9 << 12)  # 9 MiB: several objects and several calls
        dev.write((7 << 20) + 3, big)
        dev.flush()
        assert dev.read(995, 24) == bytes(5) + b"partial sector" + bytes(5)
        assert dev.read((7 << 20) + 3, len(big)) == big
        with pytest.raises(DeviceError, match="beyond the device end"):
            dev.read(dev.size - 10, 20)
    with open_device(image) as ro:  # another client sees the same bytes
        assert ro.read(1000, 14) == b"partial sector"


def test_test_and_set_is_atomic_across_clients(image: str) -> None:
    """Three processes, each its own RADOS client, increment one counter by compare-and-write:
    no increment is lost, and stale compares were refused."""
    per = 150
    stats = count_by_test_and_set(image, 3, per)
    with open_device(image) as dev:
        assert int.from_bytes(dev.read(4096, 8), "little") == 3 * per
    print("per client:", stats)
    assert sum(s["ats_miscompares"] for s in stats) > 0  # they did race, and the OSD refused the stale ones


@pytest.mark.fuse
@pytest.mark.oracle
def test_tools_make_check_and_mount_a_volume_on_the_image(image: str, ceph_cluster: CephCluster,
                                                          tmp_path: Path) -> None:
    r = _run(tool("vmfs-mkfs"), "-t", "vmfs5", "-L", "ceph", image)
    assert r.returncode == 0, r.stderr
    with Mount([tool("vmfs-mount"), "-f", "-o", "rw", image, str(tmp_path / "rw")], tmp_path / "rw") as root:
        (root / "vm").mkdir()
        (root / "vm" / "disk-flat.vmdk").write_bytes(b"\x5a" * (3 << 20) + b"tail")
        (root / "vm" / "small.txt").write_text("in the cluster\n")
    r = _run(tool("vmfs-fsck"), "-n", image)
    assert r.returncode == 0, r.stdout + r.stderr
    r = _run(tool("vmfs-debug"), image, "device")
    assert r.returncode == 0 and "Transport: rbd" in r.stdout and "Test-and-set: ATS" in r.stdout, r.stdout + r.stderr
    with Mount([tool("vmfs-mount"), image, str(tmp_path / "ro")], tmp_path / "ro") as root:
        ours = capture_mount(root)
        assert (root / "vm" / "small.txt").read_text() == "in the cluster\n"
    exported = tmp_path / "export.img"
    ceph_cluster.export(image, exported)
    theirs = oracles.fuse_tree("vmfs-fuse", [exported], tmp_path / "oracle", unreadable=frozenset({"/.sdd.sf"}))
    theirs.pop("/.sdd.sf")
    assert diff_trees({p: v for p, v in ours.items() if p != "/.sdd.sf"}, theirs) == []


def test_bad_images_are_one_line_errors(ceph_cluster: CephCluster) -> None:
    conf = ceph_cluster.conf
    for spec, why in [(f"rbd:rbd/none:conf={conf}", "image rbd/none: ENOENT"),
                      (f"rbd:nopool/x:conf={conf}", "pool nopool: ENOENT"),
                      ("rbd:rbd/x:mon_host=127.0.0.1\\:1:client_mount_timeout=2", "cannot connect"),
                      ("rbd:rbd/x:conf=/nonexistent.conf", "cannot read the Ceph configuration"),
                      ("rbd:noslash", "not an RBD image")]:
        r = _run(tool("vmfs-fsck"), "-n", spec)
        assert r.returncode != 0 and why in r.stdout + r.stderr, r.stdout + r.stderr
        assert "Traceback" not in r.stderr


@pytest.mark.slow
@pytest.mark.oracle
@pytest.mark.parametrize("hosts", [2, 4], ids=["2 hosts", "4 hosts"])
def test_hosts_in_separate_network_namespaces_share_a_volume_on_the_image(
        image: str, lan: netns.Lan, ceph_cluster: CephCluster, tmp_path: Path, hosts: int) -> None:
    """The multi-host workload of tests/cluster/test_multihost.py, each host a process in its own
    network namespace, its own RADOS client reaching the monitor and the OSD over its own veth
    link (ATS mode): every host sees the tree the acknowledged operations made, the volume is
    consistent, and vmfs-tools reads an export of the image the same."""
    run_shared_workload(image, hosts, 150, tmp_path, lan.argv)
    exported = tmp_path / "export.img"
    ceph_cluster.export(image, exported)
    check_local_copy(exported, tmp_path)
