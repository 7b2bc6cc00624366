"""Repairs shared by the passes.  Every one is a library transaction (``HostAttachment.transaction()``),
so a crash in the middle of a repair leaves the volume as the last committed transaction left it,
with the journal able to finish the one in flight.

* :func:`apply_fd_edit`: rewrite one FD (lock fields, metadata fields, pointer entries, clones of
  shared blocks) the way :meth:`HostAttachment.put_fd` writes an FD: metadata and data area through the
  transaction; the lock sector too when a lock field changes.
* :class:`Cloner`: give an FD its own copy of every block (and pointer block) it shares, with
  blocks from the library's allocators (e2fsck's pass 1D clone).  A copy goes to its new block
  before the transaction that points to it commits (the library's ordered-data rule).
* :func:`rewrite_dir5`: write the slots of a VMFS5 directory that differ from a wanted list of
  140-byte entries, and shorten or grow it, through :class:`vmfs.write.filedata.FileWriter`.
* :func:`rebuild_dir6`: make a VMFS6 hashed directory anew from the entries to keep: its file
  cut to a fresh header and allocation map, then each entry added as the library adds one
  (:class:`vmfs.write.dirchange6.DirectoryChanges6`), so no damaged structure survives.
* :func:`edit_dir6`: one change to a sound VMFS6 directory (add, remove, '..') through the same
  class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vmfs.errors import VmfsError
from vmfs.format import address as A
from vmfs.format import builders
from vmfs.fsck.maps import DATA, POINTERS, RES_OF_KIND, Levels, MapRules
from vmfs.ondisk import filedesc as F
from vmfs.ondisk import resource as R
from vmfs.ondisk.common import pack_ints, unpack_ints
from vmfs.ondisk.dirent5 import DIRENT5_SIZE
from vmfs.volume.filedesc import BlockMap
from vmfs.write.dirchange6 import DirectoryChanges6, DirShape6, new_directory6_data
from vmfs.write.filedata import FileWriter

if TYPE_CHECKING:
    from vmfs.cluster.transaction import Transaction
    from vmfs.fsck.context import Context, Entry, Finding, ResKey
    from vmfs.volume.filedesc import FileDescriptor


@dataclass
class FdEdit:
    """Changes to one FD, gathered while a pass looks at it and applied in one transaction."""

    address: int
    vol_offset: int
    lock: dict[str, int] = field(default_factory=dict)
    meta: dict[str, int] = field(default_factory=dict)
    clear_top: set[int] = field(default_factory=set)  # pointer-array indexes to zero
    clear_pb: dict[int, set[int]] = field(default_factory=dict)  # pointer block -> entry indexes
    clone: bool = False
    zero: bool = False  # clear the whole slot (the FD stops existing)
    findings: list[Finding] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.lock or self.meta or self.clear_top or self.clear_pb or self.clone or self.zero)


def apply_fd_edit(ctx: Context, edit: FdEdit, rules: MapRules | None = None) -> bool:
    vol = ctx.volume
    geo = vol.geometry
    md = geo.md_size
    ok = False
    with ctx.repair(*edit.findings):
        with ctx.attachment.transaction() as tx:
            if edit.zero:
                tx.write(edit.vol_offset, bytes(geo.fd_size))
            else:
                fd = geo.structs.file_descriptor.parse(tx.read(edit.vol_offset, geo.fd_size))
                if edit.lock:
                    for k, v in edit.lock.items():
                        fd.lockBlock.lock[k] = v
                    tx.write(edit.vol_offset, geo.structs.lock.build(fd.lockBlock))
                for k, v in edit.meta.items():
                    fd.meta[k] = v
                if fd.meta.zla != F.ZLA_RESIDENT and (edit.clear_top or edit.clear_pb or edit.clone):
                    rules = rules or MapRules(vol)
                    start = geo.ptr_array_offset - geo.fd_data_offset
                    ptrs = list(unpack_ints(fd.data[start : start + geo.ptr_count * geo.addr_width], geo.addr_width))
                    for i in edit.clear_top:
                        ptrs[i] = 0
                    for pb, indexes in edit.clear_pb.items():
                        entries = rules.read_pb(pb, tx.read)
                        for j in indexes:
                            entries[j] = 0
                        tx.write(rules.pb_location(pb), pack_ints(entries, geo.addr_width))
                    if edit.clone:
                        levels = rules.levels.get(fd.meta.zla)
                        if levels is not None:
                            Cloner(ctx, tx, edit.address, rules).run(ptrs, levels)
                    fd.data = builders.pointer_array_bytes(geo, ptrs)
                built = geo.structs.file_descriptor.build(fd)
                tx.write(edit.vol_offset + md, built[md:])  # what HostAttachment.put_fd writes
        ok = True
    vol.invalidate_caches()
    if ok and not edit.zero:
        refresh(ctx, edit.address)
    return ok


def refresh(ctx: Context, address: int) -> None:
    """After a repair rewrote FD ``address`` (or a library call grew or shrank it): its record
    and the resources it owns, as they are now (pass 5 compares the bitmaps with the owners)."""
    st = ctx.state
    vol = ctx.volume
    try:
        fd = vol.read_fd(address)
        keys = set()
        if not fd.is_resident:
            rules = MapRules(vol)
            for _, a, _ in BlockMap(fd).references():
                key = rules.key(a)
                if key is not None:
                    keys.add(key)
    except VmfsError:
        return
    for key in [k for k, owner in st.owners.items() if owner == address and k not in keys]:
        del st.owners[key]
    for key in keys:
        st.owners.setdefault(key, address)
    rec = st.fds.get(address)
    if rec is not None:
        m = fd.meta
        rec.size, rec.links, rec.zla, rec.block_size, rec.mode = m.fileLength, m.linkCount, m.zla, m.blockSize, m.mode


class Cloner:
    """Copy-on-repair of shared blocks for one FD: its first owner keeps each block."""

    def __init__(self, ctx: Context, tx: Transaction, owner: int, rules: MapRules) -> None:
        self.ctx = ctx
        self.tx = tx
        self.owner = owner
        self.rules = rules
        self.owners = ctx.state.owners
        self.seen: set[ResKey] = set()
        self.copied = 0

    def run(self, ptrs: list[int], levels: Levels) -> None:
        for i, a in enumerate(ptrs):
            if a:
                ptrs[i] = self._node(a, 0, levels)

    def _shared(self, key: ResKey) -> bool:
        first = self.owners.get(key)
        return (first is not None and first != self.owner) or key in self.seen

    def _node(self, address: int, level: int, levels: Levels) -> int:
        rules = self.rules
        if address & 7 not in levels.kinds[level]:
            return address
        key = rules.key(address)
        if key is None:
            return address
        shared = self._shared(key)
        self.seen.add(key)
        width = rules.geo.addr_width
        if levels.roles[level] == POINTERS:
            entries = rules.read_pb(address, self.tx.read)
            new = [self._node(e, level + 1, levels) if e else 0 for e in entries]
            if shared:
                clone = self._allocate(address & 7, address)
                self.tx.write(rules.pb_location(clone), pack_ints(new, width))
                return clone
            if new != entries:
                self.tx.write(rules.pb_location(address), pack_ints(new, width))
            return address
        assert levels.roles[level] == DATA
        if not shared:
            return address
        clone = self._allocate(address & 7, address)
        if not rules.is_tbz(address):
            src, n = rules.data_location(address)
            dst, _ = rules.data_location(clone)
            dev = self.ctx.volume.device
            dev.write(dst, dev.read(src, n))
        self.copied += 1
        return clone

    def _allocate(self, kind: int, like: int) -> int:
        vol = self.ctx.volume
        codec = vol.geometry.codec
        if kind == A.ADDR_FB:
            ((c, r),) = self.ctx.attachment.allocators[R.RES_FB].allocate(self.tx, 1)
            rpc = vol.resources[R.RES_FB].rpc
            address = codec.make_fb(c * rpc + r, tbz=self.rules.is_tbz(like))
            key: ResKey = (R.RES_FB, c, r)
        else:
            res = RES_OF_KIND[kind]
            ((c, r),) = self.ctx.attachment.allocators[res].allocate(self.tx, 1)
            address = codec.make(kind, c, r)
            key = (res, c, r)
        self.owners[key] = self.owner
        self.seen.add(key)
        return address


def _dir_transaction(ctx: Context, address: int, body: Callable[[FileDescriptor, Transaction], object],
                     findings: list[Finding]) -> bool:
    """``body(fd, tx)`` on directory ``address`` in one transaction that then writes its FD; the
    caches dropped and the directory's record refreshed after.  False when the repair failed."""
    vol = ctx.volume
    ok = False
    with ctx.repair(*findings):
        with ctx.attachment.transaction() as tx:
            fd = vol.read_fd(address)
            body(fd, tx)
            ctx.attachment.put_fd(tx, fd)
        ok = True
    vol.invalidate_caches()
    if ok:
        refresh(ctx, address)
    return ok


def rewrite_dir5(ctx: Context, address: int, old: list[bytes], new: list[bytes], findings: list[Finding]) -> bool:
    """Make the VMFS5 directory ``address`` hold the entry slots ``new`` (it held ``old``)."""

    def body(fd: FileDescriptor, tx: Transaction) -> None:
        writer = FileWriter(ctx.attachment, fd)
        i = 0
        while i < len(new):
            if i < len(old) and old[i] == new[i]:
                i += 1
                continue
            j = i
            while j < len(new) and not (j < len(old) and old[j] == new[j]):
                j += 1
            writer.write(tx, i * DIRENT5_SIZE, b"".join(new[i:j]))
            i = j
        want = len(new) * DIRENT5_SIZE
        if fd.size > want:
            writer.truncate(tx, want, limit=1 << 30)

    return _dir_transaction(ctx, address, body, findings)


def dirent5(ftype: int, address: int, generation: int, name: str) -> bytes:
    return builders.dirent5_bytes(ftype, address, generation, name)


def rebuild_dir6(ctx: Context, address: int, parent: tuple[int, int], entries: list[Entry],
                 findings: list[Finding]) -> bool:
    """Make the VMFS6 directory ``address`` hold exactly ``entries``, with '..' naming ``parent``
    (address, generation), in one transaction."""
    vol = ctx.volume

    def body(fd: FileDescriptor, tx: Transaction) -> None:
        writer = FileWriter(ctx.attachment, fd)
        fresh = new_directory6_data(vol.geometry.md_size, address, fd.generation, *parent)
        if fd.size > len(fresh):
            writer.truncate(tx, len(fresh), limit=1 << 30)
        writer.write(tx, 0, fresh)
        changes = DirectoryChanges6(ctx.attachment, DirShape6.of(vol, fd))
        for e in entries:
            changes.add(tx, e.name, e.address, e.type, e.generation)

    return _dir_transaction(ctx, address, body, findings)


def edit_dir6(ctx: Context, address: int, change: Callable[[DirectoryChanges6, Transaction], object],
              findings: list[Finding]) -> bool:
    """``change(changes, tx)`` on the VMFS6 directory ``address`` in one transaction."""
    return _dir_transaction(
        ctx, address, lambda fd, tx: change(DirectoryChanges6(ctx.attachment, DirShape6.of(ctx.volume, fd)), tx),
        findings)
