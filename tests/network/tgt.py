"""A real iSCSI target for tests: Debian's tgt (``tgtd``), one daemon per test session on a free
loopback port with its own management port, LUNs backed by sparse image files.

Started and stopped here, so ``make test`` needs nothing running beforehand.  SIGTERM alone does
not stop tgtd; ``tgtadm --mode system --op delete`` does, once every target is deleted.  One I/O
thread (``-t 1``), as the reservation semantics were measured with.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from tests.helpers import free_port

IQN_PREFIX = "iqn.2026-12.org.pyvmfs.test"


def available() -> str | None:
    """None when tgt can run here, else why not (a skip reason)."""
    if shutil.which("tgtd") is None or shutil.which("tgtadm") is None:
        return "tgt (tgtd, tgtadm) is not installed: apt-get install tgt (make test installs it)"
    if os.geteuid() != 0:
        return "tgtd needs root"
    return None


class TgtTarget:
    """One tgtd; :meth:`add_lun` makes a target with one LUN over a new sparse file."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.control = self.port % 32000 + 700  # management channel number (tgtd takes at most 32767)
        self.proc: subprocess.Popen[bytes] | None = None
        self._tid = 0
        self._portals: set[str] = set()
        self.log = workdir / "tgtd.log"

    def adm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(["tgtadm", "-C", str(self.control), "--lld", "iscsi", *args],
                           capture_output=True, text=True, timeout=30)
        if check and r.returncode != 0:
            raise RuntimeError(f"tgtadm {' '.join(args)}: {r.stderr.strip() or r.stdout.strip()}")
        return r

    def start(self) -> TgtTarget:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                ["tgtd", "-f", "-C", str(self.control), "-t", "1", "--iscsi", f"portal=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while self.adm("--mode", "target", "--op", "show", check=False).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tgtd did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)
        return self

    def add_lun(self, name: str, size: int) -> tuple[str, Path]:
        """A new target ``<prefix>:<tid>.<name>`` with LUN 1 over a new sparse file; (URL, backing file)."""
        backing = self.workdir / f"{name}.img"
        with open(backing, "wb") as f:
            f.truncate(size)
        return self.export(name, backing), backing

    def export(self, name: str, backing: Path) -> str:
        """A new target ``<prefix>:<tid>.<name>`` with LUN 1 over an existing image file; its URL."""
        self._tid += 1
        iqn = f"{IQN_PREFIX}:{self._tid}.{name[:48]}"
        self.adm("--mode", "target", "--op", "new", "--tid", str(self._tid), "--targetname", iqn)
        self.adm("--mode", "logicalunit", "--op", "new", "--tid", str(self._tid), "--lun", "1", "-b", str(backing))
        self.adm("--mode", "target", "--op", "bind", "--tid", str(self._tid), "-I", "ALL")
        return f"iscsi://127.0.0.1:{self.port}/{iqn}/1"

    def add_portal(self, ip: str) -> str:
        """Listen on ``ip`` too (a bridge's address); returns the portal's ``host:port``."""
        if ip not in self._portals:  # a listener stays bound while its address comes and goes
            self.adm("--mode", "portal", "--op", "new", "--param", f"portal={ip}:{self.port}")
            self._portals.add(ip)
        return f"{ip}:{self.port}"

    def stop(self) -> None:
        if self.proc is None:
            return
        # tgtd refuses to stop while it has targets: delete them (--force: even with sessions)
        for tid in range(1, self._tid + 1):
            self.adm("--mode", "target", "--op", "delete", "--force", "--tid", str(tid), check=False)
        self.adm("--mode", "system", "--op", "delete", check=False)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)
        self.proc = None
