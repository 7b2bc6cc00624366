"""Hosts on separate network stacks: one Linux network namespace per host, joined to the
target by veth pairs on a bridge, as separate machines on one storage LAN are.

The target (tgtd) stays in the root namespace and gets a portal on the bridge's address; each
host is a process started with ``ip netns exec``, so its iSCSI session leaves through its own
interface and a test can cut that link (``ip link set ... down``) without touching the others.
Names carry a tag of this test process, so parallel runs do not meet, and :meth:`Lan.down`
removes everything (also what a crashed earlier run of the same tag left).
"""

from __future__ import annotations

import os
import shutil
import subprocess


def available() -> str | None:
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


class Lan:
    """A bridge with the target's address and ``hosts`` namespaces, one veth pair each."""

    def __init__(self, hosts: int) -> None:
        n = os.getpid() % 200 + 20
        self.tag = f"pv{os.getpid() % 10000:04d}"
        self.subnet = f"10.79.{n}"
        self.target_ip = f"{self.subnet}.1"
        self.bridge = f"{self.tag}br"
        self.hosts = hosts

    def namespace(self, k: int) -> str:
        return f"{self.tag}-h{k}"

    def root_end(self, k: int) -> str:
        """The host's link as the switch sees it: the end to pull to cut the host off."""
        return f"{self.tag}b{k}"

    def host_ip(self, k: int) -> str:
        return f"{self.subnet}.{10 + k}"

    def up(self) -> Lan:
        self.down()
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.target_ip}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for k in range(1, self.hosts + 1):
            ns, root, inner = self.namespace(k), self.root_end(k), f"{self.tag}h{k}"
            _ip("netns", "add", ns)
            _ip("link", "add", root, "type", "veth", "peer", "name", inner)
            _ip("link", "set", inner, "netns", ns)
            _ip("link", "set", root, "master", self.bridge)
            _ip("link", "set", root, "up")
            _ip("-n", ns, "addr", "add", f"{self.host_ip(k)}/24", "dev", inner)
            _ip("-n", ns, "link", "set", inner, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        return self

    def argv(self, k: int, argv: list[str]) -> list[str]:
        """``argv`` run as host ``k``, inside its namespace."""
        return ["ip", "netns", "exec", self.namespace(k), *argv]

    def cut(self, k: int) -> None:
        _ip("link", "set", self.root_end(k), "down")

    def restore(self, k: int) -> None:
        _ip("link", "set", self.root_end(k), "up")

    def down(self) -> None:
        for k in range(1, self.hosts + 1):
            _ip("netns", "del", self.namespace(k), check=False)
            _ip("link", "del", self.root_end(k), check=False)
        _ip("link", "del", self.bridge, check=False)
