"""A real iSCSI target that implements COMPARE AND WRITE, for tests: Debian's ``istgt``
(istgt 20111008, the release that added VMware's ATS to it), started here on free ports with its
own configuration file and stopped after.

tgt rejects COMPARE AND WRITE, so without this target the ATS branch of our iSCSI initiator
would only ever run as far as tgt's refusal.  istgt reads its LUNs from its configuration at
start, so the target is made with every LUN the tests will use (one target name per LUN).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.helpers import free_port

NODE_BASE = "iqn.2026-12.org.pyvmfs.istgt"

CONF = """\
[Global]
  NodeBase "{node}"
  PidFile {dir}/istgt.pid
  AuthFile {dir}/auth.conf
  MediaDirectory {dir}
  LogFacility "local7"
  Timeout 30
  NopInInterval 20
  DiscoveryAuthMethod None
  MaxSessions 32
  MaxConnections 4
  FirstBurstLength 262144
  MaxBurstLength 1048576
  MaxRecvDataSegmentLength 262144
  InitialR2T Yes
  ImmediateData Yes
  ErrorRecoveryLevel 0
[UnitControl]
  AuthMethod None
  Portal UC1 127.0.0.1:{control}
  Netmask 127.0.0.1
[PortalGroup1]
{portals}
[InitiatorGroup1]
  InitiatorName "ALL"
{netmasks}
"""

LUN = """\
[LogicalUnit{n}]
  TargetName {name}
  Mapping PortalGroup1 InitiatorGroup1
  AuthMethod None
  UseDigest Auto
  UnitType Disk
  QueueDepth 32
  LUN0 Storage {backing} Auto
"""


def available() -> str | None:
    if shutil.which("istgt") is None:
        return "istgt is not installed: apt-get install istgt (make test installs it)"
    return None


class IstgtTarget:
    """One istgt with one LUN 0 per name in ``luns`` (name -> size in bytes of a new sparse file,
    or an existing image file to export), listening on 127.0.0.1 and on every address of ``ips``."""

    def __init__(self, workdir: Path, luns: dict[str, int | Path], ips: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.luns = luns
        self.ips = ("127.0.0.1", *ips)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "istgt.log"

    def url(self, name: str, ip: str = "127.0.0.1") -> str:
        return f"iscsi://{ip}:{self.port}/{NODE_BASE}:{name}/0"

    def backing(self, name: str) -> Path:
        given = self.luns[name]
        return given if isinstance(given, Path) else self.workdir / f"{name}.img"

    def start(self) -> IstgtTarget:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "auth.conf").write_text("")
        portals = "\n".join(f"  Portal DA{k} {ip}:{self.port}" for k, ip in enumerate(self.ips, 1))
        # each portal's /24 may log in (istgt refuses 0.0.0.0/0 as "access denied")
        netmasks = "\n".join(f"  Netmask {ip.rsplit('.', 1)[0]}.0/24" for ip in self.ips)
        text = CONF.format(node=NODE_BASE, dir=self.workdir, control=free_port(), portals=portals,
                           netmasks=netmasks)
        for n, (name, size) in enumerate(self.luns.items(), 1):
            if not isinstance(size, Path):
                with open(self.backing(name), "wb") as f:
                    f.truncate(size)
            text += LUN.format(n=n, name=name, backing=self.backing(name))
        conf = self.workdir / "istgt.conf"
        conf.write_text(text)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(["istgt", "-c", str(conf), "-D", "-q"], stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"istgt did not start: {self.log.read_text()[-2000:]}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)
        self.proc = None
