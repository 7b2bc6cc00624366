"""Pass 4: connectivity and link counts.

Checks
    Walks the tree from the root over the directories of pass 3: a directory reached a second
    time through an ordinary entry has two parents (the later entry goes); every directory's
    '..' names the directory that holds it (the root's names the root); every system file is
    named in the root; every FD in use that the walk does not reach is an orphan: an empty
    regular file is cleared, anything else is connected to /lost+found (made when needed, as
    e2fsck does) as ``#<FD address>``, directories first so that their contents come along.
    Then the link count of every FD against the entries that name it, counting a directory's
    own '.' and its subdirectories' '..' (vmfs-format.md 11.3: root 2 + subdirectories, a
    directory 2, a file 1 per name).

Needs
    ``state.fds`` (pass 2) and ``state.dirs`` (pass 3).

Leaves
    ``state.reachable``, ``state.parent``, ``state.paths`` (for messages), and with repairs the
    directories rewritten through the library's transactions (VMFS6: entries added and removed,
    '..' set, by :class:`vmfs.write.dirchange6.DirectoryChanges6`), /lost+found created through
    :class:`vmfs.write.posix.WritableFileSystem`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from vmfs.errors import VmfsError
from vmfs.fsck.context import Context, DirRecord, Entry, FdRecord, Finding
from vmfs.fsck.pass3_directories import TYPE_NAMES, record6, record_from_slots
from vmfs.fsck.problems import Code
from vmfs.fsck.repair import FdEdit, apply_fd_edit, dirent5, edit_dir6, refresh, rewrite_dir5
from vmfs.ondisk import filedesc as F
from vmfs.ondisk.dirent5 import DIRENT5_SIZE
from vmfs.volume.directory import NAME_MAX
from vmfs.volume.filereader import FileReader
from vmfs.volume.volume import ROOT_FD, system_fds

if TYPE_CHECKING:
    from vmfs.cluster.transaction import Transaction
    from vmfs.write.dirchange6 import DirectoryChanges6

LABEL = "Pass 4: Checking connectivity and link counts"
LOST_FOUND = "lost+found"


def run(ctx: Context) -> None:
    st = ctx.state
    if ROOT_FD not in st.dirs:
        ctx.note("the root directory could not be read: connectivity not checked")
        return
    st.keepers = _keepers(ctx)
    _walk(ctx, ROOT_FD, "/")
    _system_files(ctx)
    _dotdot(ctx)
    _orphans(ctx)
    _link_counts(ctx)


def _keepers(ctx: Context) -> dict[int, tuple[int, int]]:
    """For every directory named by entries: the (parent, entry offset) that stays its parent.
    The entry in the directory its '..' names wins; else the first (lowest parent, offset)."""
    st = ctx.state
    namers: dict[int, list[tuple[int, int]]] = {}
    for d in sorted(st.dirs):
        for e in st.dirs[d].entries:
            target = st.fds.get(e.address)
            if target is not None and target.is_dir and e.address != ROOT_FD:
                namers.setdefault(e.address, []).append((d, e.offset))
    keep = {}
    for t, options in namers.items():
        dotdot = st.dirs[t].dotdot if t in st.dirs else None
        keep[t] = next((o for o in options if o[0] == dotdot), options[0])
    return keep


def _walk(ctx: Context, start: int, path: str, *, attached: bool = True) -> None:
    """Mark what ``start`` leads to; entries giving a directory a second parent are reported.
    A subtree left unattached (an orphan not connected) is marked but left out of link counts."""
    st = ctx.state
    keep = st.keepers
    before = set(st.reachable)
    entries_before = len(st.tree_entries)
    st.reachable.add(start)
    st.paths.setdefault(start, path)
    if start == ROOT_FD:
        st.parent[ROOT_FD] = ROOT_FD
    pending = [start]
    doomed: dict[int, list[tuple[Entry, Finding]]] = {}
    while pending:
        d = pending.pop()
        rec = st.dirs.get(d)
        if rec is None:
            continue
        for e in rec.entries:
            target = st.fds.get(e.address)
            if target is None:
                continue
            child = st.paths[d].rstrip("/") + "/" + e.name
            if not target.is_dir:
                st.tree_entries.append(e.address)
                if e.address not in st.reachable:
                    st.reachable.add(e.address)
                    st.paths[e.address] = child
                continue
            if keep.get(e.address) != (d, e.offset) or e.address in st.reachable:
                first = keep.get(e.address, (ROOT_FD, 0))[0]
                if ctx.problem(Code.DIR_MULTIPLE_PARENTS, subject=f"{d:#x}/{e.name}", fd=f"{e.address:#x}",
                               path=st.paths.get(e.address, f"an entry of FD {first:#x}"), name=e.name,
                               dir=st.paths[d]):
                    doomed.setdefault(d, []).append((e, ctx.last))
                continue
            st.tree_entries.append(e.address)
            st.reachable.add(e.address)
            st.parent[e.address] = d
            st.paths[e.address] = child
            pending.append(e.address)
    for d, items in doomed.items():
        offsets = sorted((e.offset for e, _ in items), reverse=True)
        names = [e.name for e, _ in items]

        def drop(slots: list[bytes], offsets: list[int] = offsets) -> None:
            for off in offsets:
                last = slots.pop()
                if off // DIRENT5_SIZE < len(slots):
                    slots[off // DIRENT5_SIZE] = last

        def drop6(changes: DirectoryChanges6, tx: Transaction, names: list[str] = names) -> None:
            for name in names:
                changes.remove(tx, name)

        _edit_dir(ctx, d, drop, [f for _, f in items], drop6)
    if not attached:
        st.detached |= st.reachable - before
        del st.tree_entries[entries_before:]


def _slots(ctx: Context, address: int) -> list[bytes]:
    fd = ctx.volume.read_fd(address)
    data = FileReader(fd).read(0, fd.size)
    return [data[i : i + DIRENT5_SIZE] for i in range(0, len(data), DIRENT5_SIZE)]


def _edit_dir(ctx: Context, address: int, change: Callable[[list[bytes]], None], findings: list[Finding],
              change6: Callable[[DirectoryChanges6, Transaction], object]) -> bool:
    """Apply ``change`` to the directory's entry slots (VMFS5), or ``change6`` to it through the
    library's VMFS6 directory changes, in one transaction; refresh its record."""
    if ctx.geometry.vmfs6:
        if not edit_dir6(ctx, address, change6, findings):
            return False
        ctx.state.dirs[address] = record6(ctx, address)
        return True
    try:
        old = _slots(ctx, address)
    except VmfsError as exc:
        for f in findings:
            f.error = str(exc)
        return False
    new = list(old)
    change(new)
    if not rewrite_dir5(ctx, address, old, new, findings):
        return False
    ctx.state.dirs[address] = record_from_slots(address, new)
    return True


def _append(ctx: Context, directory: int, name: str, target: FdRecord, finding: Finding) -> bool:
    slot = dirent5(target.type, target.address, target.generation, name)
    return _edit_dir(ctx, directory, lambda slots: slots.append(slot), [finding],
                     lambda changes, tx: changes.add(tx, name, target.address, target.type, target.generation))


def _set_parent(ctx: Context, directory: int, parent: int, generation: int, finding: Finding) -> bool:
    """Point '..' of ``directory`` at ``parent``."""
    return _edit_dir(ctx, directory, _set_dotdot(dirent5(F.TYPE_DIRECTORY, parent, generation, "..")), [finding],
                     lambda changes, tx: changes.set_parent(tx, parent, generation))


def _system_files(ctx: Context) -> None:
    st = ctx.state
    root = st.dirs[ROOT_FD]
    named = {e.address for e in root.entries}
    for name, address in system_fds(st.geometry.version).items():
        rec = st.fds.get(address)
        if rec is None or address in named or rec.type != F.TYPE_SYSFILE:
            continue
        if ctx.problem(Code.SYSTEM_FILE_UNLINKED, subject=name, name=name, fd=f"{address:#x}") and _append(
            ctx, ROOT_FD, name, rec, ctx.last
        ):
            st.tree_entries.append(address)
        if address not in st.reachable:
            _walk(ctx, address, "/" + name)
            st.parent[address] = ROOT_FD


def _dotdot(ctx: Context) -> None:
    st = ctx.state
    for d in sorted(st.reachable):
        rec = st.dirs.get(d)
        if rec is None or rec.dotdot is None:
            continue  # missing '..' was pass 3's
        want = ROOT_FD if d == ROOT_FD else st.parent.get(d)
        if want is None or rec.dotdot == want:
            continue
        parent = st.fds.get(want)
        if parent is None:
            continue
        if ctx.problem(Code.DIR_BAD_DOTDOT, subject=f"{d:#x}", path=st.paths.get(d, "?"), fd=f"{d:#x}",
                       found=f"FD {rec.dotdot:#x}", expected=f"FD {want:#x} ({st.paths.get(want, '?')})"):
            _set_parent(ctx, d, want, parent.generation, ctx.last)


def _orphans(ctx: Context) -> None:
    st = ctx.state
    orphans = {a for a in st.fds if a not in st.reachable}
    lost_found: int | None = None
    while orphans:
        named = {e.address for d in orphans if d in st.dirs for e in st.dirs[d].entries if e.address in orphans}
        tops = sorted(a for a in orphans if a not in named)
        if not tops:  # directories naming each other in a ring: start with the first
            tops = [min(a for a in orphans if a in st.dirs)]
        # directories first, so that the files inside them come along
        tops.sort(key=lambda a: (not st.fds[a].is_dir, a))
        for a in tops:
            if a not in orphans:
                continue
            rec = st.fds[a]
            fd = f"{a:#x}"
            kind = TYPE_NAMES.get(rec.type, str(rec.type))
            if not rec.is_dir and rec.type == F.TYPE_REGFILE and rec.size == 0:
                if ctx.problem(Code.ORPHAN_EMPTY, subject=fd, type=kind, fd=fd) and apply_fd_edit(
                    ctx, FdEdit(a, rec.vol_offset, zero=True, findings=[ctx.last])
                ):
                    del st.fds[a]
                orphans.discard(a)
                continue
            code = Code.ORPHAN_DIR if rec.is_dir else Code.ORPHAN_FILE
            connect = ctx.problem(code, subject=fd, type=kind, fd=fd, size=rec.size)
            finding = ctx.last
            orphans.discard(a)
            if connect and lost_found is None:
                lost_found = _lost_found(ctx)
                if lost_found is None:
                    finding.error = "no /lost+found directory could be made"
            name = _free_name(st.dirs[lost_found], f"#{a:x}") if connect and lost_found is not None else ""
            if not name or not _append(ctx, lost_found, name, rec, finding):
                before = set(st.reachable)
                _walk(ctx, a, f"(FD {a:#x})", attached=False)
                orphans -= st.reachable - before
                continue
            st.tree_entries.append(a)
            entry = next(e for e in st.dirs[lost_found].entries if e.name == name)
            st.keepers[a] = (lost_found, entry.offset)
            path = f"/{LOST_FOUND}/{name}"
            if rec.is_dir:
                st.parent[a] = lost_found
                lf = st.fds[lost_found]
                if a in st.dirs:
                    _set_parent(ctx, a, lost_found, lf.generation, finding)
            before = set(st.reachable)
            _walk(ctx, a, path)
            st.parent[a] = lost_found
            orphans -= st.reachable - before


def _set_dotdot(slot: bytes) -> Callable[[list[bytes]], None]:
    def change(slots: list[bytes]) -> None:
        slots[1] = slot

    return change


def _free_name(rec: DirRecord, base: str) -> str:
    names = {e.name for e in rec.entries}
    name, k = base, 0
    while name in names:
        name = f"{base}~{k}"
        k += 1
    return name[:NAME_MAX]


def _lost_found(ctx: Context) -> int | None:
    """/lost+found, made through the library when it does not exist (repair only)."""
    st = ctx.state
    root = st.dirs[ROOT_FD]
    for e in root.entries:
        if e.name == LOST_FOUND:
            target = st.fds.get(e.address)
            return e.address if target is not None and target.is_dir else None
    if not ctx.repairing:
        return None
    from vmfs.write.posix import WritableFileSystem

    vol = ctx.volume
    try:
        fd = WritableFileSystem(ctx.attachment).mkdir("/" + LOST_FOUND, 0o700)
    except VmfsError as exc:
        ctx.note(f"cannot make /{LOST_FOUND}: {exc}")
        return None
    vol.invalidate_caches()
    fd = vol.read_fd(fd.address)
    m = fd.meta
    st.fds[fd.address] = FdRecord(fd.address, fd.vol_offset, m.type, m.zla, m.fileLength, m.blockSize, m.generation,
                                  m.linkCount, m.mode, True, True)
    refresh(ctx, fd.address)
    refresh(ctx, ROOT_FD)
    st.dirs[fd.address] = _record(ctx, fd.address)
    st.dirs[ROOT_FD] = _record(ctx, ROOT_FD)
    st.reachable.add(fd.address)
    st.tree_entries.append(fd.address)
    st.parent[fd.address] = ROOT_FD
    st.paths[fd.address] = "/" + LOST_FOUND
    ctx.note(f"made /{LOST_FOUND} (FD {fd.address:#x})")
    return fd.address


def _record(ctx: Context, address: int) -> DirRecord:
    if ctx.geometry.vmfs6:
        return record6(ctx, address)
    return record_from_slots(address, _slots(ctx, address))


def _link_counts(ctx: Context) -> None:
    """Links as the tree has them: a directory's '.', its '..' in each subdirectory (whatever the
    '..' entry says: pass 3 and ``DIR_BAD_DOTDOT`` deal with those), and every entry that names
    the FD along the tree (an entry that gives a directory a second parent does not count)."""
    st = ctx.state
    counted: Counter[int] = Counter(st.tree_entries)
    for d in st.reachable - st.detached:
        if d in st.dirs:
            counted[d] += 1
            counted[st.parent.get(d, ROOT_FD)] += 1
    for a in sorted(st.reachable - st.detached):
        rec = st.fds.get(a)
        if rec is None or rec.links == counted[a]:
            continue
        if ctx.problem(Code.LINK_COUNT_WRONG, subject=f"{a:#x}", path=st.paths.get(a, "?"), fd=f"{a:#x}",
                       value=rec.links, counted=counted[a]) and apply_fd_edit(
            ctx, FdEdit(a, rec.vol_offset, meta={"linkCount": counted[a]}, findings=[ctx.last])
        ):
            rec.links = counted[a]
