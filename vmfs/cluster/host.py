"""Who we are on the volume: a host UUID (VMFS style), an IP text, a clock.

A host's UUID must survive restarts so that a remount finds and replays its own journal after an
unclean stop, so the default is derived from the machine id.  Tests and simulated hosts pass their
own identity and an injectable clock, so lease expiry is tested without sleeping for real.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from dataclasses import dataclass, field

from vmfs.ondisk.common import format_uuid


class Clock:
    """Monotonic microseconds and wall-clock seconds; subclass to control time in tests."""

    def monotonic_us(self) -> int:
        return time.monotonic_ns() // 1000

    def wall(self) -> int:
        return int(time.time())

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class ManualClock(Clock):
    """A clock that only moves when told to (tests, simulations)."""

    def __init__(self, start_us: int = 1_000_000, wall: int = 1_700_000_000) -> None:
        self.now_us = start_us
        self.wall_s = wall
        #: called after every step of simulated time (live hosts renew their heartbeats here)
        self.listeners: list = []

    def monotonic_us(self) -> int:
        return self.now_us

    def wall(self) -> int:
        return self.wall_s + self.now_us // 1_000_000

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        """Move time forward in steps of at most 0.5 s, letting every listener react."""
        remaining = int(seconds * 1_000_000)
        while remaining > 0:
            step = min(remaining, 500_000)
            self.now_us += step
            remaining -= step
            for listener in list(self.listeners):
                listener()


def _machine_id() -> bytes:
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(path, "rb") as f:
                value = f.read().strip()
                if value:
                    return value
        except OSError:
            continue
    return socket.gethostname().encode()


def stable_host_uuid(salt: str = "") -> str:
    """A VMFS-style UUID that stays the same for this machine (and ``salt``) across restarts."""
    digest = hashlib.sha256(_machine_id() + b"/pyvmfs/" + salt.encode()).digest()
    mac = bytes([digest[10] | 0x02]) + digest[11:16]  # locally administered MAC
    return format_uuid(digest[0:4] + digest[4:8] + digest[8:10] + mac)


def _local_ip() -> str:
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


@dataclass
class HostIdentity:
    uuid: str = field(default_factory=stable_host_uuid)
    ip: str = field(default_factory=_local_ip)
    clock: Clock = field(default_factory=Clock)
    #: heartbeat renewal period and lease (ESXi: lease 16 s; esx-design.md 1.3, 7)
    heartbeat_period: float = 3.0
    lease: float = 16.0
    #: seconds an unused exclusive lock stays ours (vmfs.cluster.locks, lock keeping); None:
    #: KEEP_IDLE under a real clock, 0 under a manual one (simulations and their tests decide)
    keep_locks: float | None = None

    @classmethod
    def for_process(cls, name: str, **kwargs: object) -> HostIdentity:
        """A distinct, reproducible identity per simulated host name on this machine."""
        return cls(uuid=stable_host_uuid(f"{name}:{os.getuid()}"), **kwargs)  # type: ignore[arg-type]
