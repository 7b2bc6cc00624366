"""One writer per host identity and volume on this machine: a lock file under /run/pyvmfs.

A host UUID names one writer of a volume: its heartbeat slot, its journal and every on-disk lock
it takes are that UUID's.  Two processes of one machine writing one volume under the same UUID
would share all three, and each would take the other's locks for its own, so the second one is
refused.  The claim is an ``flock()`` of ``/run/pyvmfs/<volume>-<host>-<storage>.lock``: the
kernel drops it when the holder dies, however it dies, so a crashed writer's identity is free
again at once (and its journal is replayed by whoever takes it next).  The lock belongs to the
open file, not to a process, so it survives the fork with which a FUSE mount goes into the
background; it also excludes a second open of the same file in the same process.

The file says who holds it (process, mount point, command) for the refusal message and for
vmfs-umount, and which heartbeat slot and generation the holder claimed: a successor that finds
that very incarnation still in use on disk knows its owner is dead (the flock says so) and need
not watch the slot for a whole lease.  At a clean close the holder writes its outcome into the
file, removes it, then lets go of the lock; a waiting vmfs-umount, which holds the file open,
reads the outcome once the lock is free.  A file without an outcome was left by a crash.

``<storage>`` is the device and inode of the first extent (or the device number of a block
device): copies of an image share their volume UUID but are separate storage, and must not
exclude each other.  Volumes on devices that are not files (memory devices of tests) have no key
and take no lock; the on-disk heartbeat check still applies to them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmfs.errors import BusyError

if TYPE_CHECKING:
    from vmfs.volume.volume import Volume

#: where the lock files live (tests and unprivileged users may point it elsewhere)
RUN_DIR_ENV = "PYVMFS_RUN_DIR"
SYSTEM_RUN_DIR = Path("/run/pyvmfs")


def run_dir() -> Path:
    """The lock directory: ``$PYVMFS_RUN_DIR``, else /run/pyvmfs when we may create it there,
    else a per-user directory (an unprivileged writer still excludes itself)."""
    configured = os.environ.get(RUN_DIR_ENV)
    if configured:
        return Path(configured)
    if SYSTEM_RUN_DIR.is_dir() or os.access(SYSTEM_RUN_DIR.parent, os.W_OK):
        return SYSTEM_RUN_DIR
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(base) / f"pyvmfs-{os.getuid()}"


def storage_key(volume: Volume) -> tuple[str, str] | None:
    """(key, path) of the storage holding the volume's first extent, or None when it is neither a
    file nor a network LUN (memory devices of simulations)."""
    lvm = getattr(volume, "lvm", None)
    extents = [d.device for d in lvm.devices] if lvm is not None and lvm.devices else [volume.device]
    heads = [d for d in lvm.devices if d.volume.firstPE == 0] if lvm is not None and lvm.devices else []
    device = heads[0].device if heads else extents[0]
    network = getattr(device, "storage_identity", None)
    if isinstance(network, str):  # a LUN over the network: its URL names it on every machine
        return network, device.name
    path = getattr(device, "path", None)
    if not isinstance(path, str):
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    ident = f"rdev{st.st_rdev:x}" if stat.S_ISBLK(st.st_mode) else f"{st.st_dev:x}.{st.st_ino:x}"
    return ident, os.path.abspath(path)


def _read_record(fd: int) -> dict[str, Any] | None:
    """The JSON record of an open lock file; None when empty or half written."""
    try:
        raw = os.pread(fd, 65536, 0)
    except OSError:
        return None
    if not raw.strip():
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _write_record(fd: int, record: dict[str, Any]) -> None:
    data = json.dumps(record, sort_keys=True).encode() + b"\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def describe_holder(record: dict[str, Any] | None) -> str:
    """'process 123 (mounted at /mnt/x)' from a record."""
    if not record:
        return "another process (it has not said which yet)"
    pid = record.get("pid")
    who = "this process" if pid == os.getpid() else f"process {pid}"
    where = record.get("mountpoint")
    detail = f"mounted at {where}" if where else record.get("command") or "no mount point"
    return f"{who} ({detail})"


class IdentityLock:
    """The flock()ed lock file of one (volume, host UUID, storage) on this machine."""

    def __init__(self, path: Path, fd: int, record: dict[str, Any], previous: dict[str, Any] | None) -> None:
        self.path = path
        self._fd = fd
        self.record = record
        #: what a predecessor left in the file: it crashed, or could not give its slot back
        #: (None after a clean close, which removes the file, or the first time)
        self.previous = previous

    @classmethod
    def acquire(cls, volume: Volume, host_uuid: str) -> IdentityLock | None:
        """Take the lock for ``host_uuid`` writing ``volume``; BusyError names a live holder."""
        key = storage_key(volume)
        if key is None:
            return None
        ident, image = key
        directory = run_dir()
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        path = directory / f"{volume.uuid}-{host_uuid}-{ident}.lock"
        sweep(directory, keep=path)
        record: dict[str, Any] = {
            "pid": os.getpid(), "volume": volume.uuid, "host": host_uuid, "image": image,
            "command": " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]) if sys.argv else "",
        }
        conflicts = 0
        for _ in range(50):
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = cls._holder_record(fd)
                os.close(fd)
                conflicts += 1
                if (holder is not None and "closed" in holder) or conflicts < 3:
                    # the holder is closing (it removes the file in a moment), or a vmfs-umount
                    # is just looking whether the lock is held
                    time.sleep(0.02)
                    continue
                raise BusyError(
                    f"{image}: volume {volume.uuid} is already open read-write as host {host_uuid} by "
                    f"{describe_holder(holder)}; one process writes as one host (another host UUID may)"
                ) from None
            if not cls._still_linked(fd, path):
                os.close(fd)  # a holder removed it between our open and our lock: take the new one
                continue
            previous = _read_record(fd)
            _write_record(fd, record)
            return cls(path, fd, record, previous)
        raise BusyError(f"{image}: the lock file {path} keeps changing; try again")

    @staticmethod
    def _holder_record(fd: int) -> dict[str, Any] | None:
        """The holder's record, allowing it a moment to finish writing it."""
        for _ in range(20):
            record = _read_record(fd)
            if record is not None:
                return record
            time.sleep(0.01)
        return None

    @staticmethod
    def _still_linked(fd: int, path: Path) -> bool:
        try:
            return os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    @property
    def dead_slot(self) -> tuple[int, int] | None:
        """(slot, generation) a crashed predecessor had claimed: its owner is known to be dead."""
        prev = self.previous or {}
        slot, gen = prev.get("slot"), prev.get("generation")
        return (slot, gen) if isinstance(slot, int) and isinstance(gen, int) else None

    def update(self, **fields: Any) -> None:
        """Record more about the holder (mount point, heartbeat slot, the pid after a fork)."""
        if self._fd < 0:
            return
        self.record.update(fields)
        _write_record(self._fd, self.record)

    def release(self, outcome: str, *, slot_released: bool = True) -> None:
        """Close: say how it ended, remove the file, let go of the lock (in that order, so a
        waiter that sees the lock free finds the outcome).  If our heartbeat slot could not be
        given back (the device failed), the file stays: it tells the next writer that the slot's
        owner is gone."""
        if self._fd < 0:
            return
        self.record["closed"] = outcome
        try:
            _write_record(self._fd, self.record)
            if slot_released:
                with contextlib.suppress(FileNotFoundError):
                    if self._still_linked(self._fd, self.path):
                        os.unlink(self.path)
        finally:
            os.close(self._fd)
            self._fd = -1

    def give_up(self) -> None:
        """Opening failed before a slot was claimed: leave what a dead predecessor left as it was
        (its slot is still known dead to the next try), else remove the file."""
        if self._fd >= 0 and self.previous is not None:
            _write_record(self._fd, self.previous)
            self.abandon()
        else:
            self.release("failed to open")

    def abandon(self) -> None:
        """Let go without a word, as a crash does (simulated crashes in tests)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def sweep(directory: Path, keep: Path | None = None) -> None:
    """Remove lock files left by crashed writers of images that no longer exist (deleted test
    images, mostly): nobody holds them and no slot they name can be reused."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        path = directory / name
        if not name.endswith(".lock") or path == keep:
            continue
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            record = _read_record(fd)
            image = record.get("image") if record else None
            if isinstance(image, str) and not os.path.exists(image) and IdentityLock._still_linked(fd, path):
                os.unlink(path)
        except OSError:
            pass  # held (BlockingIOError) or gone meanwhile: not ours to remove
        finally:
            os.close(fd)


def holders_of(mountpoint: str, directory: Path | None = None) -> list[tuple[int, dict[str, Any]]]:
    """Held lock files whose record names ``mountpoint``: (open descriptor, record) pairs (files
    left by crashed writers are not held).  The caller closes the descriptors; holding one keeps
    the final record readable after the holder removed the file."""
    directory = directory or run_dir()
    found = []
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    for name in names:
        if not name.endswith(".lock"):
            continue
        try:
            fd = os.open(directory / name, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        record = _read_record(fd)
        if record is not None and record.get("mountpoint") == mountpoint and is_held(fd):
            found.append((fd, record))
        else:
            os.close(fd)
    return found


def is_held(fd: int) -> bool:
    """Whether someone still holds the lock of the open lock file ``fd``."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def final_record(fd: int) -> dict[str, Any] | None:
    return _read_record(fd)
