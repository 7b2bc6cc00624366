"""Shared fixtures: the real ESXi samples (unpacked once per session), tool paths, mounts."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("VMFS_SHARED", REPO.parent / "shared"))
REAL = SHARED / "fixtures" / "real"
BIN = Path(os.environ.get("VMFS_BIN", REPO / ".venv" / "bin"))


def tool(name: str) -> str:
    """Path of one of our console scripts (installed in the venv by the test command)."""
    path = BIN / name
    return str(path) if path.exists() else name


#: the shared samples and this session's unpacked copies -> sha256 when first used.  As root,
#: mode 0444 stops no write: a test that writes to a sample instead of a copy must fail the run
#: (_samples_untouched), not leave every later test reading a changed "real" volume.
_SAMPLE_DIGESTS: dict[Path, str] = {}
_SAMPLE_STAMPS: dict[Path, tuple[int, int]] = {}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _stamp(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def _unpack(name: str, cache: Path) -> Path:
    src = REAL / f"{name}.bin.gz"
    if not src.exists():
        pytest.fail(f"real sample {src} not present (set VMFS_SHARED to the shared/ folder)")
    dst = cache / f"{name}.bin"
    if not dst.exists():
        _SAMPLE_DIGESTS.setdefault(src, _sha256(src))
        tmp = dst.with_suffix(".part")
        with gzip.open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
        tmp.rename(dst)
        os.chmod(dst, 0o444)
        _SAMPLE_DIGESTS[dst] = _sha256(dst)
        _SAMPLE_STAMPS[dst] = _stamp(dst)
    return dst


@pytest.fixture(autouse=True)
def _samples_untouched_by_this_test() -> Iterator[None]:
    """Blame the test itself: a write to an unpacked sample moves its size or mtime."""
    yield
    changed = [p.name for p, stamp in _SAMPLE_STAMPS.items() if _stamp(p) != stamp]
    if changed:
        _SAMPLE_STAMPS.update({p: _stamp(p) for p in _SAMPLE_STAMPS})  # report each write once
        pytest.fail(f"this test wrote to the shared sample(s) {changed}: write to copy_image() copies")


@pytest.fixture(scope="session", autouse=True)
def _samples_untouched() -> Iterator[None]:
    """At the end of the session every sample (packed and unpacked) must hash as it did."""
    yield
    changed = [str(p) for p, digest in _SAMPLE_DIGESTS.items() if _sha256(p) != digest]
    if changed:
        pytest.fail(f"the shared samples changed during the session: {changed}")


@pytest.fixture(scope="session", autouse=True)
def _temporary_files_under_pytest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """tempfile (mkdtemp, TemporaryFile; ours and the tools' we start) writes below pytest's
    base temporary folder, which pytest cleans, instead of straight into /tmp."""
    scratch = str(tmp_path_factory.mktemp("tempfile"))
    saved, saved_env = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir, os.environ["TMPDIR"] = scratch, scratch
    yield
    tempfile.tempdir = saved
    if saved_env is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = saved_env


@pytest.fixture(scope="session")
def samples_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("real-samples")


@pytest.fixture(scope="session")
def vmfs5_image(samples_dir: Path) -> Path:
    return _unpack("vmfs5", samples_dir)


@pytest.fixture(scope="session")
def vmfs6_image(samples_dir: Path) -> Path:
    return _unpack("vmfs6", samples_dir)


@pytest.fixture(scope="session")
def vmfs3_image(samples_dir: Path) -> Path:
    return _unpack("vmfs3", samples_dir)


@pytest.fixture(scope="session", params=["vmfs5", "vmfs6"])
def real_image(request: pytest.FixtureRequest, samples_dir: Path) -> Path:
    return _unpack(request.param, samples_dir)


def copy_image(src: Path, dst: Path) -> Path:
    """A writable sparse copy of an image."""
    subprocess.run(["cp", "--sparse=always", str(src), str(dst)], check=True)
    os.chmod(dst, 0o644)
    return dst


class Mount:
    """A real FUSE mount made by a command; unmounted (and waited for) on exit."""

    def __init__(self, argv: list[str], mountpoint: Path, *, timeout: float = 60.0) -> None:
        self.argv = argv
        self.mountpoint = mountpoint
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Path:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + self.timeout
        while not os.path.ismount(self.mountpoint):
            if self.proc.poll() is not None and self.proc.returncode != 0:
                out, err = self.proc.communicate()
                raise RuntimeError(f"mount {self.argv} failed: {err.decode()}{out.decode()}")
            if time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"mount {self.argv} did not appear")
            time.sleep(0.05)
        return self.mountpoint

    def __exit__(self, *exc: object) -> None:
        unmount(self.mountpoint)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def wait_mounted(mountpoint: Path, proc: subprocess.Popen, timeout: float = 60.0) -> None:  # type: ignore[type-arg]
    """Wait until the mount started by ``proc`` is up (it must not exit meanwhile)."""
    deadline = time.monotonic() + timeout
    while not os.path.ismount(mountpoint):
        assert time.monotonic() < deadline and proc.poll() is None, f"{mountpoint} was not mounted"
        time.sleep(0.05)


def unmount(mountpoint: Path) -> None:
    """Unmount with vmfs-umount, which returns once a read-write mount's process has written
    everything back and released its heartbeat slot (a dead mount is detached too); retried while
    the kernel still calls the mount busy right after a close."""
    from pyvmfs_tools.common import mountpoint_key
    from pyvmfs_tools.umount import mounted_at

    target = mountpoint_key(str(mountpoint))
    for _ in range(50):
        if not mounted_at(target):
            return
        r = subprocess.run([tool("vmfs-umount"), str(mountpoint)], capture_output=True)
        if r.returncode == 0 or not mounted_at(target):
            return
        time.sleep(0.1)




@pytest.fixture(scope="session")
def tgt_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One real iSCSI target (tgtd) for the session, stopped at its end.  CI installs tgt (make
    test), so there a missing tgt fails instead of skipping."""
    from tests.network import tgt

    why = tgt.available()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    target = tgt.TgtTarget(Path(tmp_path_factory.mktemp("tgt"))).start()
    try:
        yield target
    finally:
        target.stop()


@pytest.fixture(scope="session")
def lan() -> Iterator[object]:
    """A storage LAN for the session: a bridge with the storage's address and four network
    namespaces, one per host (tests/network/netns.py); removed at the end."""
    from tests.network import netns

    why = netns.available()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    net = netns.Lan(4).up()
    try:
        yield net
    finally:
        net.down()


@pytest.fixture(scope="session")
def ceph_cluster(tmp_path_factory: pytest.TempPathFactory, lan: object) -> Iterator[object]:
    """One real Ceph cluster (a monitor and a memory-store OSD) on the storage LAN's address, for
    the session.  CI installs Ceph (make test), so there a missing Ceph fails instead of skipping."""
    from tests.network import ceph

    why = ceph.available()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    cluster = ceph.CephCluster(Path(tmp_path_factory.mktemp("ceph")), ip=lan.target_ip).start()  # type: ignore[attr-defined]
    try:
        yield cluster
    finally:
        cluster.stop()
