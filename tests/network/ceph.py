"""A real one-node Ceph cluster for tests: one monitor, one OSD on a memory store, no
authentication, bound to one address (the storage LAN's, so hosts in network namespaces reach
it), started in a few seconds and removed after.

Debian's Ceph 16 (ceph-mon, ceph-osd, ceph-common).  The pool ``rbd`` holds the test images,
made with the layering feature only (with exclusive-lock, several writers of one image take the
image's lock in turn and crawl).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

from tests.helpers import free_port

CONF = """\
[global]
fsid = {fsid}
mon host = v1:{ip}:{port}
mon initial members = a
public network = {ip}/32
auth cluster required = none
auth service required = none
auth client required = none
auth supported = none
auth allow insecure global id reclaim = true
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
osd objectstore = memstore
memstore device bytes = {store_bytes}
osd crush chooseleaf type = 0
osd crush update on start = false
osd class update on start = false
osd max object name len = 256
osd max object namespace len = 64
ms bind msgr2 = false
run dir = {dir}/run
log file = {dir}/$name.log
pid file = {dir}/run/$name.pid
mon data = {dir}/mon.$id
osd data = {dir}/osd.$id
keyring = {dir}/keyring
[mon]
admin socket = {dir}/run/$name.asok
[osd]
admin socket = {dir}/run/$name.asok
[mon.a]
public addr = {ip}:{port}
"""


def available() -> str | None:
    missing = [c for c in ("ceph-mon", "ceph-osd", "ceph", "rbd", "monmaptool", "ceph-authtool") if not shutil.which(c)]
    if missing:
        return f"Ceph is not installed ({', '.join(missing)}): apt-get install ceph-mon ceph-osd ceph-common"
    return None


class CephCluster:
    def __init__(self, workdir: Path, ip: str = "127.0.0.1", store_bytes: int = 3 << 30) -> None:
        self.dir = workdir
        self.ip = ip
        self.port = free_port(ip)
        self.conf = workdir / "ceph.conf"
        self.store_bytes = store_bytes
        self.procs: list[subprocess.Popen[bytes]] = []
        self._images = 0

    def run(self, *argv: str, timeout: float = 60, attempts: int = 3) -> str:
        """Run a Ceph command line against this cluster.  Once in CI (under load) the monitor
        refused the ``ceph`` client's first request with EPERM ("problem getting command
        descriptions"); the monitor's log was not kept, and the likely cause is the refusal of a
        request sent before the client had the monitor map (the OSD's 'wrong fsid', see
        :meth:`_start`).  Only that refusal is tried again."""
        for attempt in range(1, attempts + 1):
            r = subprocess.run([*argv, "-c", str(self.conf)], capture_output=True, text=True, timeout=timeout)
            if r.returncode == 0:
                return r.stdout.strip()
            if "problem getting command descriptions" not in r.stderr or attempt == attempts:
                raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip()[-2000:]}")
            time.sleep(1)
        raise AssertionError("unreachable")

    def _daemon(self, *argv: str) -> None:
        log = open(self.dir / f"{argv[0]}.out", "wb")  # noqa: SIM115 - the daemon's, closed at stop
        self.procs.append(subprocess.Popen([*argv, "-c", str(self.conf), "-f"], stdout=log, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL))

    def start(self, attempts: int = 3) -> CephCluster:
        """Bring the cluster up; a failed start is retried from scratch in a fresh directory (the
        OSD once raced its first monitor map, see :meth:`_start`)."""
        base = self.dir
        failures = []
        for attempt in range(1, attempts + 1):
            self.dir = base / f"try{attempt}"
            self.conf = self.dir / "ceph.conf"
            try:
                return self._start()
            except (RuntimeError, subprocess.SubprocessError) as exc:
                failures.append(f"try {attempt}: {exc}")
                self.stop()
        raise RuntimeError("the Ceph cluster did not come up: " + " | ".join(failures))

    def _start(self) -> CephCluster:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "run").mkdir(exist_ok=True)
        fsid = str(uuid.uuid4())
        self.conf.write_text(CONF.format(fsid=fsid, ip=self.ip, port=self.port, dir=self.dir,
                                         store_bytes=self.store_bytes))
        monmap = self.dir / "monmap"
        subprocess.run(["monmaptool", "--create", "--addv", "a", f"[v1:{self.ip}:{self.port}]", "--fsid", fsid,
                        str(monmap)], check=True, capture_output=True)
        subprocess.run(["ceph-authtool", "--create-keyring", str(self.dir / "keyring"), "--gen-key", "-n", "mon.",
                        "--cap", "mon", "allow *"], check=True, capture_output=True)
        self.run("ceph-mon", "--mkfs", "-i", "a", "--monmap", str(monmap), "--keyring", str(self.dir / "keyring"))
        self._daemon("ceph-mon", "-i", "a")
        osd_uuid = str(uuid.uuid4())
        osd_id = self.run("ceph", "osd", "new", osd_uuid, timeout=60)
        # placed in the CRUSH map here, not by the OSD at its start: its own request raced its
        # first monitor map and was refused ('wrong fsid', a zero fsid) one start in three
        self.run("ceph", "osd", "crush", "add", f"osd.{osd_id}", "1.0", "root=default")
        (self.dir / f"osd.{osd_id}").mkdir(exist_ok=True)
        self.run("ceph-osd", "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid)
        self._daemon("ceph-osd", "-i", osd_id)
        deadline = time.monotonic() + 60
        while "1 up" not in self.run("ceph", "osd", "stat"):
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"the OSD did not come up: {(self.dir / 'ceph-osd.out').read_text()[-2000:]}")
            time.sleep(0.2)
        self.run("ceph", "osd", "pool", "create", "rbd", "8")
        self.run("ceph", "osd", "pool", "application", "enable", "rbd", "rbd")
        return self

    def image(self, name: str, size: int) -> str:
        """A new image in pool rbd (layering only); its IMAGE spec for our tools."""
        self._images += 1
        full = f"{self._images}-{name}"[:60]
        self.run("rbd", "create", "--size", f"{size >> 20}M", "--image-feature", "layering", f"rbd/{full}")
        return f"rbd:rbd/{full}:conf={self.conf}"

    def import_image(self, name: str, path: Path) -> str:
        """A new image holding the bytes of a local file (a volume made there); its IMAGE spec."""
        self._images += 1
        full = f"{self._images}-{name}"[:60]
        self.run("rbd", "import", "--image-feature", "layering", str(path), f"rbd/{full}", timeout=300)
        return f"rbd:rbd/{full}:conf={self.conf}"

    def export(self, spec: str, path: Path) -> None:
        """The image's bytes into a local file, for the oracles (which cannot read RBD)."""
        name = spec.split(":")[1]
        if path.exists():
            os.unlink(path)
        self.run("rbd", "export", name, str(path), timeout=300)

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        self.procs = []
