"""fsx (xfstests' file system exerciser) against a read-write mount.

fsx does random reads, writes, truncates and mapped reads/writes on one file and checks every read
against its in-memory copy; fallocate, hole punching and copy_file_range are tried and left out
when the mount refuses them.  fsx does not read the whole file at its end, so after it passes the
test reads the file through the mount (cached, then with the cache dropped), unmounts (waiting for
the mount to write everything back), requires ``vmfs-fsck -n`` to be clean, and requires the bytes
that vmfs-tools' ``vmfs-fuse`` reads from the image to be the same.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.suites.conftest import RwMount, evict, fsck_n, mkfs, oracle_mount, sha256_file

pytestmark = [pytest.mark.fuse, pytest.mark.slow, pytest.mark.oracle]

SEEDS = list(range(1, 11))
OPS = 20_000
LARGE = 600 << 20
LARGE_OPS = 1500


def _fsx(fsx: Path, target: Path, logdir: Path, *args: str, timeout: float) -> str:
    """One fsx run; its own report (last lines of output and of its operation log) on failure;
    its output on success."""
    r = subprocess.run([str(fsx), "-P", str(logdir), *args, str(target)], capture_output=True, text=True,
                       timeout=timeout)
    if r.returncode != 0:
        log = logdir / f"{target.name}.fsxlog"
        tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
        output = (r.stdout + r.stderr)[-4000:]
        pytest.fail(f"fsx {' '.join(args)} exited {r.returncode}:\n{output}\n--- fsxlog:\n{tail}")
    return r.stdout


def run_and_check(fsx: Path, tmp_path: Path, volume_size: str, *args: str, timeout: float = 1200,
                  fs: str = "vmfs5", options: str = "rw") -> dict[str, float]:
    """fsx on a fresh volume, then the checks after the unmount; the figures (seconds, and the
    largest size fsx truncated the file to)."""
    image = mkfs(tmp_path / "v.img", volume_size, "-t", fs)
    logdir = tmp_path / "fsx"
    logdir.mkdir()
    started = time.monotonic()
    with RwMount(image, tmp_path / "m", options) as mount:
        target = mount.mountpoint / "fsx.file"
        output = _fsx(fsx, target, logdir, *args, timeout=timeout)
        ran = time.monotonic()
        cached = sha256_file(target)
        evict(target)
        uncached = sha256_file(target)
        size = target.stat().st_size
        rc = mount.close()
    unmounted = time.monotonic()
    assert rc == 0, f"vmfs-mount exited {rc}: {mount.output.read_text()[-2000:]}"
    assert mount.lock_errors() == [], mount.lock_errors()[:5]
    assert cached == uncached, "the file read differently once the kernel's cache was dropped"
    code, report = fsck_n(image)
    assert code == 0, report[-3000:]
    if fs == "vmfs6":  # vmfs6-fuse reads nothing after a hole (docs/SPEC.md): dissect.vmfs reads it
        from dissect.vmfs import lvm, vmfs

        with open(image, "rb") as fh:
            data = vmfs.VMFS(lvm.LVM([fh]).volumes[0].open()).get("/fsx.file").open().read()
        assert len(data) == size
        assert hashlib.sha256(data).hexdigest() == cached, "dissect.vmfs reads other bytes than the mount served"
    else:
        with oracle_mount(image, tmp_path / "o") as root:
            theirs = root / "fsx.file"
            assert theirs.stat().st_size == size
            assert sha256_file(theirs) == cached, "vmfs-fuse reads other bytes than the mount served"
    largest = [int(m, 16) for m in re.findall(r"truncating to largest ever: (0x[0-9a-f]+)", output)]
    return {"fsx": ran - started, "after": time.monotonic() - unmounted, "largest": max(largest, default=0)}


@pytest.mark.parametrize("seed", SEEDS)
def test_fsx_mmap(fsx_bin: Path, tmp_path: Path, seed: int) -> None:
    """20,000 operations with mapped reads and writes, files up to 256 KiB (fsx's default); the
    odd seeds with group commit (commit=0.05)."""
    options = "rw,commit=0.05" if seed % 2 else "rw"
    figures = run_and_check(fsx_bin, tmp_path, "1G", "-q", "-N", str(OPS), "-S", str(seed), options=options)
    print(f"fsx seed {seed}: {OPS} ops in {figures['fsx']:.1f} s, checks {figures['after']:.1f} s")


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_fsx_mmap_vmfs6(fsx_bin: Path, tmp_path: Path, seed: int) -> None:
    """The same on VMFS6 (sub-blocks of 64 KiB, resident data up to 3584 bytes, hashed directory)."""
    figures = run_and_check(fsx_bin, tmp_path, "2G", "-q", "-N", str(OPS), "-S", str(seed), fs="vmfs6")
    print(f"fsx VMFS6 seed {seed}: {OPS} ops in {figures['fsx']:.1f} s, checks {figures['after']:.1f} s")


@pytest.mark.timeout(2400)
def test_fsx_large_file(fsx_bin: Path, tmp_path: Path) -> None:
    """Files up to 600 MiB (-l), operations up to 4 MiB (-o) so that truncates and writes reach
    the whole length in a bounded run: the map goes from direct blocks to pointer blocks (past
    256 MiB) and back, under mapped writes too.  Not quiet: fsx's "truncating to largest ever"
    lines say how large the file really got, which must be most of the 600 MiB."""
    figures = run_and_check(fsx_bin, tmp_path, "4G", "-N", str(LARGE_OPS), "-S", "4242", "-l", str(LARGE),
                            "-o", str(4 << 20), timeout=2000)
    print(f"fsx large: {LARGE_OPS} ops, largest {figures['largest'] / (1 << 20):.0f} MiB, in {figures['fsx']:.1f} s, "
          f"checks {figures['after']:.1f} s")
    assert figures["largest"] > 512 << 20, figures
