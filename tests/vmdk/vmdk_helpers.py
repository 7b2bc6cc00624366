"""Helpers for the VMDK tests: real qemu-img, dissect.hypervisor (tests only: AGPL), data
patterns with holes, and a snapshot of every file's bytes to prove that nothing was written."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

QEMU_IMG = shutil.which("qemu-img")
QEMU_IO = shutil.which("qemu-io")

needs_qemu = pytest.mark.skipif(QEMU_IMG is None, reason="qemu-img is not installed")

MIB = 1 << 20


def qemu_img(*args: str, cwd: Path | str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run qemu-img in ``cwd``; failures show qemu's own message."""
    assert QEMU_IMG is not None
    proc = subprocess.run([QEMU_IMG, *args], cwd=cwd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"qemu-img {args} failed ({proc.returncode}): {proc.stderr}{proc.stdout}")
    if check and args[0] == "compare" and "Images are identical." not in proc.stdout:
        raise AssertionError(f"qemu-img {args}: exit 0 without its verdict: {proc.stdout!r}")
    return proc


def qemu_io(image: str, command: str, *, cwd: Path | str) -> None:
    assert QEMU_IO is not None
    proc = subprocess.run([QEMU_IO, "-f", "vmdk", "-c", command, image], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0 or "error" in proc.stdout.lower():
        raise AssertionError(f"qemu-io {command!r} failed: {proc.stderr}{proc.stdout}")


def qemu_raw(image: str, cwd: Path) -> bytes:
    """The disk's bytes as qemu reads them (``qemu-img convert -O raw``)."""
    out = cwd / f"_qemu_{os.getpid()}.raw"
    try:
        qemu_img("convert", "-O", "raw", image, str(out), cwd=cwd)
        return out.read_bytes()
    finally:
        out.unlink(missing_ok=True)


def qemu_check(image: str, cwd: Path) -> None:
    """qemu-img check; exit 0 alone is not an answer (a wrapper that printed nothing): qemu says
    it checked the image."""
    proc = qemu_img("check", image, cwd=cwd)
    if "No errors were found on the image." not in proc.stdout:
        raise AssertionError(f"qemu-img check {image}: no verdict in {proc.stdout!r} {proc.stderr!r}")


def dissect_read(path: Path) -> bytes:
    """The disk's bytes as dissect.hypervisor reads them (follows parents itself)."""
    from dissect.hypervisor.disk.vmdk import VMDK

    with path.open("rb") as fh:
        disk = VMDK(fh)
        return disk.read(disk.size)


def pattern(size: int, seed: int = 0, *, block: int = 64 * 1024) -> bytes:
    """Deterministic test data with structure: per block, a hole, random bytes, a repeated byte,
    or a block that is zero except for one sector (so grain-granular zero detection is exercised)."""
    rnd = random.Random(seed)
    out = bytearray(size)
    for off in range(0, size, block):
        n = min(block, size - off)
        kind = rnd.randrange(4)
        if kind == 1:
            out[off : off + n] = rnd.randbytes(n)
        elif kind == 2:
            out[off : off + n] = bytes([rnd.randrange(1, 256)]) * n
        elif kind == 3:
            s = rnd.randrange(0, max(1, n // 512)) * 512
            out[off + s : off + min(n, s + 512)] = rnd.randbytes(min(512, n - s))
    return bytes(out)


def snapshot_files(directory: Path) -> dict[str, str]:
    """Name -> sha256 of every file under ``directory``: compare before and after to prove that a
    failed operation wrote nothing."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }
