r"""A Ceph RBD image as a block device, through librbd and librados (over ctypes).

Ceph's Python bindings (python3-rbd 16) do not wrap ``rbd_compare_and_write``, the call our
test-and-set needs, so the libraries are loaded with ctypes, as libiscsi is
(:mod:`vmfs.device.iscsi`).  One :class:`RbdDevice` is one RADOS client of its own: two hosts are
two clients, as two hypervisors are.

``rbd_compare_and_write`` is atomic across clients in the OSD (a stale compare returns -EILSEQ
and writes nothing), so on-disk locks run in ATS mode with no reservation.  Images should be made
with ``--image-feature layering`` only: with the exclusive-lock feature, every writer must take
the image's lock in turn, and several hosts writing one image crawl.

IMAGE is written as QEMU writes it: ``rbd:POOL/IMAGE[@SNAP][:OPTION=VALUE...]``, the options being
Ceph's (``conf=/etc/ceph/ceph.conf``, ``id=admin``, ``keyring=...``, ``mon_host=...``, any other
``rados_conf_set`` name; a colon inside a value is written ``\:``, as QEMU has it).  Without
``conf`` the default Ceph search path applies.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import threading
from dataclasses import dataclass, field

from vmfs.device.base import BlockDevice
from vmfs.errors import DeviceError, FencedError, InvalidArgumentError

#: largest single read or write handed to librbd (it splits into objects itself)
_MAX_IO = 4 << 20
#: prefix of the RADOS object (in the image's pool) where a writing host leaves its client address
FENCE_OBJECT_PREFIX = "pyvmfs.fence."
#: seconds a fenced client stays blocklisted: longer than any operation of it can wait to land
FENCE_SECONDS = 3600
#: seconds an OSD operation may wait (a cut link) before it fails with ETIMEDOUT instead of
#: hanging the caller for ever; what it sent may still arrive, which the fencing makes harmless
OSD_OP_TIMEOUT = 30

_LIBS: tuple[ctypes.CDLL, ctypes.CDLL] | None = None
_GUARD = threading.Lock()


def _libraries() -> tuple[ctypes.CDLL, ctypes.CDLL]:
    global _LIBS
    with _GUARD:
        if _LIBS is not None:
            return _LIBS
        try:
            rados = ctypes.CDLL(ctypes.util.find_library("rados") or "librados.so.2")
            rbd = ctypes.CDLL(ctypes.util.find_library("rbd") or "librbd.so.1")
        except OSError:
            raise DeviceError("RBD needs librbd and librados (Debian packages librbd1, librados2)") from None
        vp, cp, i, u64, sz = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint64, ctypes.c_size_t
        pvp = ctypes.POINTER(ctypes.c_void_p)
        for lib, fn, restype, argtypes in [
            (rados, "rados_create", i, [pvp, cp]),
            (rados, "rados_conf_read_file", i, [vp, cp]),
            (rados, "rados_conf_set", i, [vp, cp, cp]),
            (rados, "rados_connect", i, [vp]),
            (rados, "rados_ioctx_create", i, [vp, cp, pvp]),
            (rados, "rados_ioctx_destroy", None, [vp]),
            (rados, "rados_shutdown", None, [vp]),
            (rbd, "rbd_open", i, [vp, cp, pvp, cp]),
            (rbd, "rbd_open_read_only", i, [vp, cp, pvp, cp]),
            (rbd, "rbd_close", i, [vp]),
            (rbd, "rbd_get_size", i, [vp, ctypes.POINTER(u64)]),
            (rbd, "rbd_read", ctypes.c_ssize_t, [vp, u64, sz, ctypes.c_char_p]),
            (rbd, "rbd_write", ctypes.c_ssize_t, [vp, u64, sz, ctypes.c_char_p]),
            (rbd, "rbd_compare_and_write", ctypes.c_ssize_t,
             [vp, u64, sz, ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(u64), i]),
            (rbd, "rbd_flush", i, [vp]),
            (rados, "rados_getaddrs", i, [vp, pvp]),
            (rados, "rados_buffer_free", None, [vp]),
            (rados, "rados_blocklist_add", i, [vp, cp, ctypes.c_uint32]),
            (rados, "rados_wait_for_latest_osdmap", i, [vp]),
            (rados, "rados_write_full", i, [vp, cp, cp, sz]),
            (rados, "rados_read", i, [vp, cp, cp, sz, u64]),
            (rados, "rados_remove", i, [vp, cp]),
        ]:
            f = getattr(lib, fn)
            f.restype = restype
            f.argtypes = argtypes
        _LIBS = (rados, rbd)
        return _LIBS


_SPEC = re.compile(r"^rbd:(?P<pool>[^/:@]+)/(?P<image>[^/:@]+)(?:@(?P<snap>[^/:@]+))?(?P<opts>:.*)?$")


@dataclass(frozen=True)
class RbdSpec:
    """``rbd:POOL/IMAGE[@SNAP][:OPTION=VALUE...]``, QEMU's form."""

    pool: str
    image: str
    snap: str | None = None
    options: dict[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def parse(cls, spec: str) -> RbdSpec:
        m = _SPEC.match(spec)
        if m is None:
            raise InvalidArgumentError(f"{spec}: not an RBD image (rbd:POOL/IMAGE[@SNAP][:conf=FILE:id=NAME...])")
        options = {}
        # QEMU's escape: a colon inside a value (an address with a port) is written \:
        for item in filter(None, (x.replace("\\:", ":") for x in re.split(r"(?<!\\):", m["opts"] or ""))):
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise InvalidArgumentError(f"{spec}: option {item!r} is not NAME=VALUE")
            options[key] = value
        return cls(m["pool"], m["image"], m["snap"], options)

    def __str__(self) -> str:
        return f"rbd:{self.pool}/{self.image}" + (f"@{self.snap}" if self.snap else "")


def is_rbd_spec(spec: str) -> bool:
    return spec.startswith("rbd:")


@dataclass
class RbdStats:
    mode: str = "ats"
    ats: int = 0
    ats_miscompares: int = 0
    fenced: int = 0  # clients of hosts found dead that this one blocklisted


class RbdDevice(BlockDevice):
    """One RBD image through one RADOS client of its own."""

    def __init__(self, spec: str, *, readonly: bool = True) -> None:
        parsed = RbdSpec.parse(spec)
        super().__init__(readonly=readonly or parsed.snap is not None)
        self.spec = parsed
        self.name = str(parsed)
        self.stats = RbdStats()
        self._rados_lib, self._rbd = _libraries()
        self._lock = threading.Lock()
        self._cluster = ctypes.c_void_p()
        self._ioctx = ctypes.c_void_p()
        self._image = ctypes.c_void_p()
        #: our RADOS client address, once announced
        self.address: str | None = None
        self._connect()

    def _connect(self) -> None:
        parsed = self.spec
        # a cluster that does not answer is an error within seconds, not librados' five minutes
        opts = {"client_mount_timeout": "15", "rados_osd_op_timeout": str(OSD_OP_TIMEOUT), **parsed.options}
        try:
            self._check(self._rados_lib.rados_create(ctypes.byref(self._cluster), opts.pop("id", "admin").encode()),
                        "cannot make a RADOS client")
            conf = opts.pop("conf", None)
            if conf:
                self._check(self._rados_lib.rados_conf_read_file(self._cluster, conf.encode()),
                            f"cannot read the Ceph configuration {conf}")
            else:  # the default search path may hold nothing: options can say all (as QEMU does)
                self._rados_lib.rados_conf_read_file(self._cluster, None)
            for key, value in opts.items():
                self._check(self._rados_lib.rados_conf_set(self._cluster, key.encode(), value.encode()),
                            f"Ceph option {key}")
            self._check(self._rados_lib.rados_connect(self._cluster), "cannot connect to the Ceph cluster")
            self._check(self._rados_lib.rados_ioctx_create(self._cluster, parsed.pool.encode(),
                                                           ctypes.byref(self._ioctx)), f"pool {parsed.pool}")
            opener = self._rbd.rbd_open_read_only if self.readonly else self._rbd.rbd_open
            self._check(opener(self._ioctx, parsed.image.encode(), ctypes.byref(self._image),
                               parsed.snap.encode() if parsed.snap else None), f"image {parsed.pool}/{parsed.image}")
            size = ctypes.c_uint64()
            self._check(self._rbd.rbd_get_size(self._image, ctypes.byref(size)), "size of the image")
            self._size = size.value
        except BaseException:
            self._teardown()
            raise

    def _check(self, rc: int, what: str) -> int:
        if rc == -errno.ESHUTDOWN:
            raise FencedError(f"{self.name}: {what}: this client was fenced (blocklisted by a host that found "
                              "ours dead); attach again", errno=errno.EIO)
        if rc < 0:
            raise DeviceError(f"{self.name}: {what}: {errno.errorcode.get(-rc, rc)} ({_strerror(-rc)})", errno=-rc)
        return rc

    @property
    def size(self) -> int:
        return self._size

    @property
    def storage_identity(self) -> str:
        """File-name-safe key of the image for the identity lock (see :mod:`vmfs.cluster.identitylock`)."""
        return re.sub(r"[^A-Za-z0-9.-]", "_", f"rbd-{self.spec.pool}-{self.spec.image}")

    def _read(self, offset: int, length: int) -> bytes:
        out = bytearray(length)
        done = 0
        with self._lock:
            while done < length:
                n = min(length - done, _MAX_IO)
                buf = ctypes.create_string_buffer(n)
                got = self._rbd.rbd_read(self._image, offset + done, n, buf)
                if got < 0:
                    self._check(got, f"read at 0x{offset + done:x}")
                if got == 0:
                    raise DeviceError(f"{self.name}: unexpected end at 0x{offset + done:x}")
                out[done : done + got] = buf.raw[:got]
                done += got
        return bytes(out)

    def _write(self, offset: int, data: bytes) -> None:
        with self._lock:
            for pos in range(0, len(data), _MAX_IO):
                chunk = data[pos : pos + _MAX_IO]
                wrote = self._rbd.rbd_write(self._image, offset + pos, len(chunk), chunk)
                if wrote != len(chunk):
                    self._check(wrote if wrote < 0 else -errno.EIO, f"write at 0x{offset + pos:x}")

    def _compare_and_write(self, offset: int, expected: bytes, new: bytes) -> bool:
        mismatch = ctypes.c_uint64()
        with self._lock:
            rc = self._rbd.rbd_compare_and_write(self._image, offset, len(new), expected, new,
                                                 ctypes.byref(mismatch), 0)
        self.stats.ats += 1
        if rc == -errno.EILSEQ:
            self.stats.ats_miscompares += 1
            return False
        self._check(rc, f"compare-and-write at 0x{offset:x}")
        return True

    def flush(self) -> None:
        if self.readonly:
            return
        with self._lock:
            self._check(self._rbd.rbd_flush(self._image), "flush")

    # -- fencing ---------------------------------------------------------------------------------

    def _fence_object(self, incarnation: str) -> bytes:
        return f"{FENCE_OBJECT_PREFIX}{self.spec.image}.{incarnation}".encode()

    def announce(self, incarnation: str) -> None:
        """Store our RADOS client address in a small object of the image's pool named after the
        image and the incarnation, for whoever has to fence us (:meth:`fence`).  Not the image's
        own metadata: setting that notifies every watcher of the image, and a dead client's
        watch makes the notify wait seconds for its timeout."""
        if self.readonly:
            return
        with self._lock:
            raw = ctypes.c_void_p()
            self._check(self._rados_lib.rados_getaddrs(self._cluster, ctypes.byref(raw)), "our client address")
            try:
                address = ctypes.string_at(raw).decode()
            finally:
                self._rados_lib.rados_buffer_free(raw)
            data = address.encode()
            self._check(self._rados_lib.rados_write_full(self._ioctx, self._fence_object(incarnation), data, len(data)),
                        "recording our client address for fencing")
        self.address = address

    def fence(self, incarnation: str) -> bool:
        """Blocklist the client that announced ``incarnation`` (``ceph osd blocklist add``), as
        Ceph's own exclusive lock does before breaking a dead owner's lock: from the next OSD map
        on, the OSDs refuse every operation it sent, however late it arrives.  Then wait for that
        map, so our own next operations carry it."""
        if self.readonly:
            return False
        with self._lock:
            buf = ctypes.create_string_buffer(256)
            rc = self._rados_lib.rados_read(self._ioctx, self._fence_object(incarnation), buf, 255, 0)
            if rc == -errno.ENOENT:
                return False
            self._check(rc, f"the client address of {incarnation}")
            address = buf.raw[:rc]
            self._check(self._rados_lib.rados_blocklist_add(self._cluster, address, FENCE_SECONDS),
                        f"blocklisting client {address.decode()}")
            self._check(self._rados_lib.rados_wait_for_latest_osdmap(self._cluster), "waiting for the OSD map")
        self.stats.fenced += 1
        return True

    def retire(self, incarnation: str) -> None:
        if self.readonly:
            return
        with self._lock:
            rc = self._rados_lib.rados_remove(self._ioctx, self._fence_object(incarnation))
        if rc not in (0, -errno.ENOENT):
            self._check(rc, f"forgetting the client address of {incarnation}")

    def describe(self) -> dict[str, object]:
        """What ``vmfs-debug IMAGE device`` shows of the image."""
        return {"transport": "rbd", "pool": self.spec.pool, "image": self.spec.image, "size": self.size,
                "testAndSet": "ats", "statistics": dict(vars(self.stats))}

    def _teardown(self) -> None:
        if self._image:
            self._rbd.rbd_close(self._image)
            self._image = ctypes.c_void_p()
        if self._ioctx:
            self._rados_lib.rados_ioctx_destroy(self._ioctx)
            self._ioctx = ctypes.c_void_p()
        if self._cluster:
            self._rados_lib.rados_shutdown(self._cluster)
            self._cluster = ctypes.c_void_p()

    def close(self) -> None:
        with self._lock:
            self._teardown()

    def before_fork(self) -> None:
        """librados runs threads, which fork() does not copy: the child would wait on them for
        ever.  Let go of the client; :meth:`after_fork` connects again."""
        with self._lock:
            self._teardown()

    def after_fork(self) -> None:
        with self._lock:
            if not self._image:
                self._connect()


def _strerror(code: int) -> str:
    return os.strerror(code)
