"""An iSCSI LUN as a block device, through Debian's libiscsi (user space, over ctypes).

The kernel of the machines we run on has no iSCSI initiator, so the initiator is libiscsi's,
loaded with ctypes: no compiler, no unmaintained wrapper (the PyPI ones drop sense data, which
the locking below depends on).  One :class:`IscsiDevice` is one iSCSI session with its own
initiator name, so two hosts are two I_T nexuses to the target, as two ESX hosts are.

The atomic test-and-set follows what the LUN offers, found at the first one:

- ``ats``: SCSI COMPARE AND WRITE (opcode 0x89), atomic in the target; a miscompare comes back as
  CHECK CONDITION with sense key MISCOMPARE.
- ``reserve``: a target that rejects COMPARE AND WRITE (INVALID OPERATION CODE; Debian's tgt does)
  gets what VMFS3 did on ESX 3.5 before ATS: SCSI-2 RESERVE(6), read, compare, write, RELEASE(6),
  the reservation held for that one update and no longer.  While it is held, every other
  initiator's commands get RESERVATION CONFLICT; they are retried with a growing back-off, which
  is the stall esx-design.md section 1.5 describes, and counted.

libiscsi's context is not thread-safe, so every command runs under the device's lock, and a
reserved update holds a second lock for its whole sequence (two threads of one host must not
interleave RESERVE ... RELEASE).

**No write lands late.**  A host whose link is cut must not have a write arrive at the target
after the other hosts may have counted it dead and broken its locks.  libiscsi's own timeout only
forgets a command; the bytes stay in the kernel's socket buffer and were measured arriving when
the link came back, and its auto-reconnect resends what it still had queued.  So every socket gets
``TCP_USER_TIMEOUT`` (:data:`LINK_TIMEOUT`): data the target's kernel has not acknowledged by
then kills the connection and is discarded.  Auto-reconnect is off; a session that failed is
dropped with a reset (``SO_LINGER`` 0, nothing more goes out of it) and logged in again on the
next command.  :attr:`late_write_bound` tells the heartbeat how much earlier than the lease to
stop writing, and :attr:`write_guard` is asked under the lock right before every write-type
command goes out.

**A reservation left behind.**  An initiator cut off while it held a reservation keeps the LUN
reserved (tgt frees it only when it sees the connection die).  After :data:`RESET_AFTER` seconds
of conflicts without a break, a host sends a LUN reset, as ESX does.  The reset gives every other
session a UNIT ATTENTION on its next command, which is retried, or, inside a reserved update,
restarts the update from RESERVE: its own reservation was cleared, so nothing it read still holds.
A RESERVATION CONFLICT inside our own reserved update means the same.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import logging
import os
import random
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import unquote

from vmfs.device.base import BlockDevice
from vmfs.errors import DeviceError, InvalidArgumentError

log = logging.getLogger("vmfs.device.iscsi")

_STATUS_GOOD = 0
_STATUS_CHECK_CONDITION = 2
_STATUS_RESERVATION_CONFLICT = 0x18
_SENSE_ILLEGAL_REQUEST = 0x05
_SENSE_UNIT_ATTENTION = 0x06
#: libiscsi's own statuses (iscsi.h): cancelled, error, timed out; the session is unusable after them
_STATUS_LIBISCSI = 0x0F000000
_SENSE_MISCOMPARE = 0x0E
_ASCQ_INVALID_OPCODE = 0x2000
_SESSION_NORMAL = 2
_HEADER_DIGEST_NONE_CRC32C = 2  # offer none, accept CRC32C: what targets usually settle on
#: largest transfer of one command; bigger reads and writes are split
_MAX_TRANSFER = 1 << 20
#: how long a command retries RESERVATION CONFLICT before it gives up (a host that died holding a
#: reservation is cleared by a LUN reset: :meth:`IscsiDevice.reset_lun`)
CONFLICT_PATIENCE = 30.0
#: seconds of RESERVATION CONFLICT without a break after which a LUN reset clears the reservation
#: (a live holder keeps one for a single lock update: milliseconds)
RESET_AFTER = 8.0
#: unit attentions in a row a command is retried through (each reports one event, then clears)
_MAX_ATTENTIONS = 8
#: seconds sent data may stay unacknowledged by the target's kernel before the connection is
#: killed (TCP_USER_TIMEOUT); a silent peer only: a busy target still acknowledges
LINK_TIMEOUT = 4.0
#: the kernel checks the user timeout on retransmission timers, and data the target's kernel took
#: may wait behind its queue: the margin beyond LINK_TIMEOUT a write can take to land
_LANDING_MARGIN = 2.0


class _Sense(ctypes.Structure):
    """``struct scsi_sense``: 16 bytes, as gcc lays it out (checked by tests/device/test_iscsi.py
    against ``offsetof`` in a compiled probe where a compiler and the header are present)."""

    _fields_ = [
        ("error_type", ctypes.c_ubyte),
        ("key", ctypes.c_int),
        ("ascq", ctypes.c_int),
        # three one-bit fields that gcc packs into the byte before bit_pointer
        ("flags", ctypes.c_ubyte),
        ("bit_pointer", ctypes.c_ubyte),
        ("field_pointer", ctypes.c_uint16),
    ]


class _Data(ctypes.Structure):
    _fields_ = [("size", ctypes.c_int), ("data", ctypes.POINTER(ctypes.c_ubyte))]


class _Task(ctypes.Structure):
    """The head of libiscsi's ``struct scsi_task`` (scsi-lowlevel.h, libiscsi 1.19): only the
    fields read here, which come first; the struct is always libiscsi's own allocation."""

    _fields_ = [
        ("status", ctypes.c_int),
        ("cdb_size", ctypes.c_int),
        ("xfer_dir", ctypes.c_int),
        ("expxferlen", ctypes.c_int),
        ("cdb", ctypes.c_ubyte * 16),
        ("residual_status", ctypes.c_int),
        ("residual", ctypes.c_size_t),
        ("sense", _Sense),
        ("datain", _Data),
    ]


_LIB: ctypes.CDLL | None = None
_LIB_GUARD = threading.Lock()


def _library() -> ctypes.CDLL:
    """libiscsi, loaded once, with the prototypes of the calls used here."""
    global _LIB
    with _LIB_GUARD:
        if _LIB is not None:
            return _LIB
        name = ctypes.util.find_library("iscsi") or "libiscsi.so.7"
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            raise DeviceError("iSCSI needs libiscsi (Debian package libiscsi7), which is not installed") from None
        vp, cp, i, u32, u64 = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_uint64
        task = ctypes.POINTER(_Task)
        ubytes = ctypes.c_char_p
        protos = {
            "iscsi_create_context": (vp, [cp]),
            "iscsi_destroy_context": (i, [vp]),
            "iscsi_get_error": (cp, [vp]),
            "iscsi_set_targetname": (i, [vp, cp]),
            "iscsi_set_session_type": (i, [vp, i]),
            "iscsi_set_header_digest": (i, [vp, i]),
            "iscsi_set_initiator_username_pwd": (i, [vp, cp, cp]),
            "iscsi_set_timeout": (i, [vp, i]),
            "iscsi_full_connect_sync": (i, [vp, cp, i]),
            "iscsi_logout_sync": (i, [vp]),
            "iscsi_readcapacity16_sync": (task, [vp, i]),
            "iscsi_read16_sync": (task, [vp, i, u64, u32, i, i, i, i, i, i]),
            "iscsi_write16_sync": (task, [vp, i, u64, ubytes, u32, i, i, i, i, i, i]),
            "iscsi_compareandwrite_sync": (task, [vp, i, u64, ubytes, u32, i, i, i, i, i, i]),
            "iscsi_synchronizecache16_sync": (task, [vp, i, u64, u32, i, i]),
            "iscsi_reserve6_sync": (task, [vp, i]),
            "iscsi_release6_sync": (task, [vp, i]),
            "iscsi_task_mgmt_lun_reset_sync": (i, [vp, u32]),
            "iscsi_set_noautoreconnect": (None, [vp, i]),
            "iscsi_set_tcp_user_timeout": (i, [vp, i]),
            "iscsi_get_fd": (i, [vp]),
            "scsi_free_scsi_task": (None, [task]),
        }
        for fn, (restype, argtypes) in protos.items():
            f = getattr(lib, fn)
            f.restype = restype
            f.argtypes = argtypes
        _LIB = lib
        return lib


_URL = re.compile(r"^iscsi://(?:(?P<user>[^@%/]+)(?:%(?P<password>[^@/]+))?@)?"
                  r"(?P<host>\[[^\]]+\]|[^/:]+)(?::(?P<port>\d+))?/(?P<target>[^/]+)/(?P<lun>\d+)$")


@dataclass(frozen=True)
class IscsiUrl:
    """``iscsi://[user[%password]@]host[:port]/target-iqn/lun``, libiscsi's own URL form."""

    host: str
    port: int
    target: str
    lun: int
    user: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str) -> IscsiUrl:
        m = _URL.match(url)
        if m is None:
            raise InvalidArgumentError(f"{url}: not an iSCSI URL (iscsi://host[:port]/target-iqn/lun)")
        user = unquote(m["user"]) if m["user"] else None
        password = unquote(m["password"]) if m["password"] else None
        return cls(m["host"], int(m["port"] or 3260), m["target"], int(m["lun"]), user, password)

    @property
    def portal(self) -> str:
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:  # never the password
        return f"iscsi://{self.portal}/{self.target}/{self.lun}"


def is_iscsi_url(spec: str) -> bool:
    return spec.startswith("iscsi://")


_SESSIONS = itertools.count(1)


def default_initiator() -> str:
    """An initiator name of its own for every session: each device is one I_T nexus, as each ESX
    host is one, so two hosts of one process (simulations, tests) reserve against each other."""
    host = re.sub(r"[^a-z0-9.-]", "-", socket.gethostname().lower()) or "host"
    return f"iqn.2026-12.org.pyvmfs:{host}.{os.getpid()}.{next(_SESSIONS)}"


@dataclass
class IscsiStats:
    """What the locking costs on this LUN: shown by ``vmfs-debug`` and the host statistics."""

    mode: str = "unknown"  # 'ats' or 'reserve' once the first test-and-set has run
    ats: int = 0  # COMPARE AND WRITE commands
    ats_miscompares: int = 0
    reservations: int = 0  # RESERVE(6) that succeeded
    conflicts: int = 0  # RESERVATION CONFLICT answers, on any command
    miscompares: int = 0  # test-and-sets under a reservation that found other bytes
    conflict_wait: float = 0.0  # seconds spent backing off from conflicts
    unit_attentions: int = 0  # UNIT ATTENTION answers (after a reset), retried
    restarts: int = 0  # reserved updates started again: the reservation was lost midway
    lun_resets: int = 0  # LUN resets this host sent to clear a reservation left behind
    reconnects: int = 0  # sessions logged in again after one failed


class _ReservationLost(Exception):
    """Inside a reserved update: our reservation is gone (a LUN reset; another host has it)."""


class _ConflictBackoff:
    """Waiting out RESERVATION CONFLICTs for one command: a doubling, jittered pause from 0.5 ms
    to 50 ms; a LUN reset once conflicts have lasted ``RESET_AFTER`` without a break (a
    reservation left by an initiator that is gone, as ESX clears it); an error after
    ``CONFLICT_PATIENCE``."""

    def __init__(self, device: IscsiDevice, what: str) -> None:
        self.device = device
        self.what = what
        self.first: float | None = None
        self.reset = False
        self.pause = 0.0005

    def wait(self) -> None:
        dev = self.device
        now = time.monotonic()
        if self.first is None:
            self.first = now
        elif now - self.first > CONFLICT_PATIENCE:
            raise DeviceError(f"{dev.name}: {self.what}: the LUN stayed reserved by another initiator "
                              f"for {CONFLICT_PATIENCE:.0f} s, through a LUN reset")
        elif not self.reset and now - self.first > RESET_AFTER:
            self.reset = True
            log.warning("%s: reserved by another initiator for %.1f s: sending a LUN reset", dev.name, now - self.first)
            dev.reset_lun()
            return
        wait = self.pause * (0.5 + random.random())
        time.sleep(wait)
        dev.stats.conflict_wait += wait
        self.pause = min(self.pause * 2, 0.05)


class IscsiDevice(BlockDevice):
    """One LUN of an iSCSI target, through one libiscsi session of its own."""

    late_write_bound = LINK_TIMEOUT + _LANDING_MARGIN

    def __init__(self, url: str, *, readonly: bool = True, initiator: str | None = None,
                 timeout: int = 30) -> None:
        super().__init__(readonly=readonly)
        self.url = IscsiUrl.parse(url)
        self.name = str(self.url)
        self.initiator = initiator or os.environ.get("PYVMFS_ISCSI_INITIATOR") or default_initiator()
        self.stats = IscsiStats()
        self._lib = _library()
        self._lock = threading.Lock()
        self._sequence = threading.Lock()
        self._timeout = timeout
        self._closed = False
        self._ctx: int | None = None
        self._error_text = ""
        self._login()
        try:
            self.block_size, self._size = self._capacity()
        except BaseException:
            self._drop()
            raise
        self.sector_size = 512 if self.block_size <= 512 else self.block_size

    # -- session -------------------------------------------------------------------------------

    def _error(self) -> str:
        if not self._ctx:
            return self._error_text or "no session"
        msg = self._lib.iscsi_get_error(self._ctx)
        return msg.decode(errors="replace").strip() if msg else "unknown error"

    def _login(self) -> None:
        """A new session (the caller holds the lock, or nobody else has the device yet)."""
        lib, u = self._lib, self.url
        ctx = lib.iscsi_create_context(self.initiator.encode())
        if not ctx:
            raise DeviceError(f"{self.name}: libiscsi could not make a context")
        self._ctx = ctx
        lib.iscsi_set_targetname(ctx, u.target.encode())
        lib.iscsi_set_session_type(ctx, _SESSION_NORMAL)
        lib.iscsi_set_header_digest(ctx, _HEADER_DIGEST_NONE_CRC32C)
        lib.iscsi_set_timeout(ctx, self._timeout)
        lib.iscsi_set_noautoreconnect(ctx, 1)
        lib.iscsi_set_tcp_user_timeout(ctx, int(LINK_TIMEOUT * 1000))
        if u.user is not None:
            lib.iscsi_set_initiator_username_pwd(ctx, u.user.encode(), (u.password or "").encode())
        if lib.iscsi_full_connect_sync(ctx, u.portal.encode(), u.lun) != 0:
            message = self._error()
            self._drop()
            self._error_text = message
            raise DeviceError(f"{self.name}: cannot log in: {message}")

    def _drop(self) -> None:
        """Forget the session with a TCP reset: the kernel discards whatever it still held to
        send, so nothing of this session reaches the target after now."""
        ctx, self._ctx = self._ctx, None
        if not ctx:
            return
        msg = self._lib.iscsi_get_error(ctx)
        self._error_text = (msg.decode(errors="replace").strip() if msg else "") or "session failed"
        fd = self._lib.iscsi_get_fd(ctx)
        if fd >= 0:
            try:
                with socket.socket(fileno=os.dup(fd)) as sock:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self._lib.iscsi_destroy_context(ctx)

    def _session(self) -> None:
        """Under the lock: a session to issue on, logged in again if the last one failed."""
        if self._closed:
            raise DeviceError(f"{self.name}: device is closed")
        if self._ctx is None:
            self._login()
            self.stats.reconnects += 1

    def _capacity(self) -> tuple[int, int]:
        data = self._command(lambda: self._lib.iscsi_readcapacity16_sync(self._ctx, self.url.lun), "READ CAPACITY")
        if len(data) < 12:
            raise DeviceError(f"{self.name}: short READ CAPACITY answer")
        last_lba = int.from_bytes(data[0:8], "big")
        block = int.from_bytes(data[8:12], "big")
        if block <= 0 or block & (block - 1):
            raise DeviceError(f"{self.name}: block size {block} is not a power of two")
        return block, (last_lba + 1) * block

    @property
    def size(self) -> int:
        return self._size

    @property
    def storage_identity(self) -> str:
        """A file-name-safe key for the LUN (portal, target, LUN): the identity lock's key, so two
        processes of one host identity on this machine exclude each other as on an image file."""
        return re.sub(r"[^A-Za-z0-9.-]", "_", f"iscsi-{self.url.portal}-{self.url.target}-{self.url.lun}")

    # -- commands ------------------------------------------------------------------------------

    def _run(self, issue, what: str, *, write: bool = False, reserved: bool = False):  # type: ignore[no-untyped-def]
        """Issue a command until it is neither refused for a reservation nor answered with a
        unit attention; returns the task (the caller frees it).  ``write``: refused once the write
        guard says so.  ``reserved``: part of our own reserved update, which a conflict or a unit
        attention ends (:class:`_ReservationLost`)."""
        backoff = _ConflictBackoff(self, what)
        attentions = 0
        while True:
            task, answer = self._issue_once(issue, what, write=write)
            if answer == "done":
                return task
            if reserved:
                raise _ReservationLost
            if answer == "unit attention":
                attentions += 1
                if attentions > _MAX_ATTENTIONS:
                    raise DeviceError(f"{self.name}: {what}: unit attention, again and again")
                continue
            backoff.wait()

    def _issue_once(self, issue, what: str, *, write: bool):  # type: ignore[no-untyped-def]
        """One command under the session lock (the write guard is asked right before it goes
        out, so a write that waited behind a slow command cannot slip past the lease).  Returns
        (task, 'done'), or (None, 'unit attention' / 'conflict') for an answer to retry (counted,
        the task freed); a failed command drops the session and raises."""
        with self._lock:
            self._session()
            if write and self.write_guard is not None:
                refusal = self.write_guard()
                if refusal is not None:
                    raise DeviceError(f"{self.name}: {what} not sent: {refusal}")
            task = issue()
            if not task:
                message = self._error()
                self._drop()
                raise DeviceError(f"{self.name}: {what} failed: {message}")
            t = task.contents
            if t.status & _STATUS_LIBISCSI == _STATUS_LIBISCSI:  # timed out, cancelled: the session is gone
                message = self._error()
                self._lib.scsi_free_scsi_task(task)
                self._drop()
                raise DeviceError(f"{self.name}: {what} failed: {message}")
            if t.status == _STATUS_CHECK_CONDITION and t.sense.key == _SENSE_UNIT_ATTENTION:
                self._lib.scsi_free_scsi_task(task)
                self.stats.unit_attentions += 1
                return None, "unit attention"
            if t.status == _STATUS_RESERVATION_CONFLICT:
                self._lib.scsi_free_scsi_task(task)
                self.stats.conflicts += 1
                return None, "conflict"
            return task, "done"

    def _command(self, issue, what: str, *, write: bool = False,  # type: ignore[no-untyped-def]
                 reserved: bool = False) -> bytes:
        task = self._run(issue, what, write=write, reserved=reserved)
        try:
            t = task.contents
            if t.status != _STATUS_GOOD:
                raise DeviceError(f"{self.name}: {what} failed: {self._describe(t)}")
            if t.datain.size <= 0 or not t.datain.data:
                return b""
            return ctypes.string_at(t.datain.data, t.datain.size)
        finally:
            self._lib.scsi_free_scsi_task(task)

    def _describe(self, t: _Task) -> str:
        if t.status == _STATUS_CHECK_CONDITION:
            return f"check condition, sense key 0x{t.sense.key:x}, asc/ascq 0x{t.sense.ascq:04x}"
        return f"status 0x{t.status:x}: {self._error()}"

    def _span(self, offset: int, length: int) -> tuple[int, int]:
        """The first LBA and the block count covering a byte range."""
        bs = self.block_size
        first = offset // bs
        last = (offset + length + bs - 1) // bs
        return first, last - first

    def _read_blocks(self, lba: int, count: int, reserved: bool = False) -> bytes:
        bs, lun = self.block_size, self.url.lun
        out = []
        step = _MAX_TRANSFER // bs
        while count:
            n = min(count, step)
            out.append(self._command(
                lambda lba=lba, n=n: self._lib.iscsi_read16_sync(self._ctx, lun, lba, n * bs, bs, 0, 0, 0, 0, 0),
                "READ(16)", reserved=reserved))
            if len(out[-1]) != n * bs:
                raise DeviceError(f"{self.name}: short read at LBA {lba}")
            lba += n
            count -= n
        return out[0] if len(out) == 1 else b"".join(out)

    def _write_blocks(self, lba: int, data: bytes, reserved: bool = False) -> None:
        bs, lun = self.block_size, self.url.lun
        step = _MAX_TRANSFER
        for pos in range(0, len(data), step):
            chunk = data[pos : pos + step]
            at = lba + pos // bs
            self._command(
                lambda at=at, chunk=chunk: self._lib.iscsi_write16_sync(
                    self._ctx, lun, at, chunk, len(chunk), bs, 0, 0, 0, 0, 0),
                "WRITE(16)", write=True, reserved=reserved)

    def _read(self, offset: int, length: int, reserved: bool = False) -> bytes:
        lba, count = self._span(offset, length)
        raw = self._read_blocks(lba, count, reserved)
        start = offset - lba * self.block_size
        return raw[start : start + length] if (start or len(raw) != length) else raw

    def _write(self, offset: int, data: bytes, reserved: bool = False) -> None:
        bs = self.block_size
        if offset % bs == 0 and len(data) % bs == 0:
            self._write_blocks(offset // bs, data, reserved)
            return
        # a partial block: read, patch, write back.  Not atomic against another initiator; the
        # layers above write a block only under the lock of what owns it.
        lba, count = self._span(offset, len(data))
        image = bytearray(self._read_blocks(lba, count, reserved))
        start = offset - lba * bs
        image[start : start + len(data)] = data
        self._write_blocks(lba, bytes(image), reserved)

    def flush(self) -> None:
        if self.readonly:
            return
        lun = self.url.lun
        self._command(lambda: self._lib.iscsi_synchronizecache16_sync(self._ctx, lun, 0, 0, 0, 0),
                      "SYNCHRONIZE CACHE(16)")

    # -- the test-and-set ---------------------------------------------------------------------

    def _compare_and_write(self, offset: int, expected: bytes, new: bytes) -> bool:
        bs = self.block_size
        if offset % bs or len(new) % bs:
            raise DeviceError(f"{self.name}: test-and-set at 0x{offset:x} of {len(new)} bytes is not "
                              f"whole {bs}-byte blocks")
        if self.stats.mode != "reserve":
            verdict = self._ats(offset, expected, new)
            if verdict is not None:
                return verdict
        return self._reserved_compare_and_write(offset, expected, new)

    def _ats(self, offset: int, expected: bytes, new: bytes) -> bool | None:
        """COMPARE AND WRITE; None when the target does not implement it (then reservations)."""
        bs, lun = self.block_size, self.url.lun
        payload = expected + new
        task = self._run(lambda: self._lib.iscsi_compareandwrite_sync(
            self._ctx, lun, offset // bs, payload, len(payload), bs, 0, 0, 0, 0, 0), "COMPARE AND WRITE",
            write=True)
        try:
            t = task.contents
            if t.status == _STATUS_GOOD:
                self.stats.mode = "ats"
                self.stats.ats += 1
                return True
            if t.status == _STATUS_CHECK_CONDITION and t.sense.key == _SENSE_MISCOMPARE:
                self.stats.mode = "ats"
                self.stats.ats += 1
                self.stats.ats_miscompares += 1
                return False
            if (t.status == _STATUS_CHECK_CONDITION and t.sense.key == _SENSE_ILLEGAL_REQUEST
                    and t.sense.ascq == _ASCQ_INVALID_OPCODE and self.stats.mode == "unknown"):
                self.stats.mode = "reserve"
                return None
            raise DeviceError(f"{self.name}: COMPARE AND WRITE failed: {self._describe(t)}")
        finally:
            self._lib.scsi_free_scsi_task(task)

    def _reserved_compare_and_write(self, offset: int, expected: bytes, new: bytes) -> bool:
        """RESERVE, read, compare, write, RELEASE; started again from RESERVE when the
        reservation is lost midway (the write was then not done: a unit attention or a conflict
        refuses the command it answers)."""
        lun = self.url.lun
        deadline = time.monotonic() + CONFLICT_PATIENCE
        with self._sequence:
            while True:
                self._command(lambda: self._lib.iscsi_reserve6_sync(self._ctx, lun), "RESERVE(6)", write=True)
                self.stats.reservations += 1
                try:
                    current = self._read(offset, len(expected), reserved=True)
                    if current != expected:
                        self.stats.miscompares += 1
                        return False
                    self._write(offset, new, reserved=True)
                    return True
                except _ReservationLost:
                    self.stats.restarts += 1
                    if time.monotonic() > deadline:
                        raise DeviceError(f"{self.name}: lost the reservation for a lock update again and again for "
                                          f"{CONFLICT_PATIENCE:.0f} s") from None
                finally:
                    self._release()

    def _release(self) -> None:
        """RELEASE(6) of our reservation; one that a reset already cleared needs none."""
        try:
            self._command(lambda: self._lib.iscsi_release6_sync(self._ctx, self.url.lun), "RELEASE(6)", reserved=True)
        except _ReservationLost:
            pass

    def probe_test_and_set(self) -> str:
        """Which test-and-set the LUN gives ('ats' or 'reserve'), without changing a byte: a
        COMPARE AND WRITE whose expected image differs from what is there (so it miscompares on a
        target that has the command) and whose new image equals that expected image (so even a
        compare that matched would write what was already there)."""
        if self.stats.mode != "unknown":
            return self.stats.mode
        here = bytearray(self._read_blocks(0, 1))
        here[0] ^= 0xFF
        image = bytes(here)
        counted = self.stats.ats, self.stats.ats_miscompares
        self._ats(0, image, image)
        self.stats.ats, self.stats.ats_miscompares = counted  # a question, not a lock update: not counted
        if self.stats.mode == "unknown":  # it matched: someone wrote exactly that meanwhile
            self.stats.mode = "ats"
        return self.stats.mode

    def describe(self) -> dict[str, object]:
        """What ``vmfs-debug IMAGE device`` shows of the LUN."""
        mode = self.probe_test_and_set()
        return {
            "transport": "iscsi", "portal": self.url.portal, "target": self.url.target, "lun": self.url.lun,
            "initiator": self.initiator, "blockSize": self.block_size, "size": self.size,
            "testAndSet": mode, "statistics": dict(vars(self.stats)),
        }

    def reset_lun(self) -> None:
        """A LUN reset: clears a reservation left by an initiator that is gone (ESX does this when
        a host that held one stops answering)."""
        with self._lock:
            self._session()
            if self._lib.iscsi_task_mgmt_lun_reset_sync(self._ctx, self.url.lun) != 0:
                message = self._error()
                self._drop()
                raise DeviceError(f"{self.name}: LUN reset failed: {message}")
            self.stats.lun_resets += 1

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._ctx is None:
                return
            self._lib.iscsi_logout_sync(self._ctx)
            self._lib.iscsi_destroy_context(self._ctx)
            self._ctx = None
