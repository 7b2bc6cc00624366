"""Read-write mount properties that the model checker does not look at."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import tool, unmount

pytestmark = pytest.mark.fuse


def test_large_writes_per_call(tmp_path: Path) -> None:
    image = tmp_path / "w.img"
    subprocess.run([tool("vmfs-mkfs"), "--size", "2G", str(image)], check=True, capture_output=True)
    mnt = tmp_path / "m"
    mnt.mkdir()
    proc = subprocess.Popen([tool("vmfs-mount"), "-d", "-o", "rw", str(image), str(mnt)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not os.path.ismount(mnt):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        with open(mnt / "f", "wb") as f:
            for _ in range(16):
                f.write(b"\xab" * (1 << 20))
    finally:
        unmount(mnt)
        out, _ = proc.communicate(timeout=30)
    sizes = [int(m) for m in re.findall(rb"write\[\d+\] (\d+) bytes", out)]
    assert sizes and min(sizes) >= 128 * 1024, sizes[:10]
    assert sum(sizes) >= 16 << 20  # (libfuse logs each write as it arrives and as it completes)
