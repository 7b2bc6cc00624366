"""Pass 3: directories.

Checks
    Every directory FD that pass 2 kept (type 2, or a system file with a directory mode such as
    ``.sdd.sf``).  VMFS5 (vmfs-format.md 9.1): the length is a whole number of 140-byte entries;
    the first entry is '.' naming the directory itself, the second is '..'; every other entry
    has a legal name (not empty, no '/', NUL-terminated within 128 bytes with nothing after the
    NUL, not '.' or '..'), unique in the directory, and names an FD address of this volume whose
    slot holds a descriptor in use (pass 2), with that descriptor's type and generation.
    VMFS6 (9.2): the length (the 64 KiB header and whole blocks), '.' and '..' in the header,
    the allocation maps and dirent blocks as the library reads them, the entry count and
    per-block free counts, each entry's own offset and name hash, the hash table finding each
    name; then the same entry checks as VMFS5, and the entries the library hides (illegal
    names, a name's second entry).

Needs
    ``state.fds`` from pass 2 (which FDs exist, their type and generation).

Leaves
    ``state.dirs``: each directory's entries as they are after this pass (with their slot
    offsets), '.' and '..' targets, for pass 4.  Repairs (VMFS5), one transaction per
    directory through :func:`vmfs.fsck.repair.rewrite_dir5`: entries are rewritten in place
    (names, types, generations, '.', '..'), a regular entry found in the '.'/'..' slots moves to
    the end, and removed entries are replaced by the last one, as the library removes entries.
    Repairs (VMFS6), one transaction per directory through :func:`vmfs.fsck.repair.rebuild_dir6`:
    the directory is made anew from the entries that stay (renamed, retyped, with the right
    generation) and the right '..': no damaged hash chain, map or count can survive it.
"""

from __future__ import annotations

from collections import Counter, namedtuple
from dataclasses import dataclass
from typing import Any

from vmfs.errors import VmfsError
from vmfs.format import address as A
from vmfs.format.namehash import name_hash
from vmfs.fsck.context import Context, DirRecord, Entry, FdRecord
from vmfs.fsck.problems import Code
from vmfs.fsck.repair import dirent5, rebuild_dir6, rewrite_dir5
from vmfs.ondisk import dirent6 as D6
from vmfs.ondisk import filedesc as F
from vmfs.ondisk import resource as R
from vmfs.ondisk.common import decode_name, fast, struct_of
from vmfs.ondisk.dirent5 import DIRENT5_SIZE, Dirent5
from vmfs.volume.directory import Directory6, open_directory
from vmfs.volume.filereader import FileReader
from vmfs.volume.volume import ROOT_FD, SYSTEM_FDS

LABEL = "Pass 3: Checking directories"

_DIRENT = fast(Dirent5)
_UNPACK = struct_of(Dirent5)
_DOT = b".".ljust(128, b"\x00")
_DOTDOT = b"..".ljust(128, b"\x00")
NAME_MAX = 127
TYPE_NAMES = {2: "directory", 3: "file", 4: "symlink", 5: "system file", 6: "RDM"}


def run(ctx: Context) -> None:
    if ctx.geometry.vmfs6:
        _run6(ctx)
        return
    st = ctx.state
    vol = ctx.volume
    contents: dict[int, list[_Slot]] = {}
    for rec in sorted((r for r in st.fds.values() if r.is_dir), key=lambda r: r.address):
        try:
            fd = vol.read_fd(rec.address)
            data = FileReader(fd).read(0, fd.size)
        except VmfsError as exc:
            ctx.note(f"directory {rec.address:#x}: not checked ({exc})")
            continue
        contents[rec.address] = _Slot.all_of(data)
    # who names whom, and which FDs have an entry of the right generation (for '..' and generations)
    named_by: dict[int, int] = {}
    good_gen: Counter[int] = Counter()
    for address, slots in contents.items():
        for slot in slots[2:]:
            ent = slot.ent
            if ent is None:
                continue
            target = st.fds.get(ent.descAddr)
            if target is None:
                continue
            if target.is_dir and target.address != address:
                named_by.setdefault(target.address, address)
            if ent.generation == target.generation:
                good_gen[target.address] += 1
    total = len(contents)
    for n, (address, slots) in enumerate(contents.items()):
        _check_dir5(ctx, st.fds[address], slots, named_by, good_gen)
        if n % 1024 == 0:
            ctx.progress(LABEL, n, total)
    ctx.progress(LABEL, total, total)


#: a parsed entry as a named tuple (attribute access on a construct Container is slow)
_Ent = namedtuple("_Ent", [c.name for c in Dirent5.subcons])  # type: ignore[misc]


@dataclass(slots=True)
class _Slot:
    """One 140-byte slot of a VMFS5 directory: its bytes, parsed (None when cut short)."""

    raw: bytes
    ent: Any

    @classmethod
    def of(cls, raw: bytes) -> _Slot:
        return cls(raw, _Ent._make(_UNPACK.unpack(raw)) if len(raw) == DIRENT5_SIZE else None)

    @classmethod
    def all_of(cls, data: bytes) -> list[_Slot]:
        """Every slot of a directory's data, the whole ones unpacked in one call."""
        whole = len(data) - len(data) % DIRENT5_SIZE
        make = _Ent._make
        slots = [cls(data[i : i + DIRENT5_SIZE], make(values))
                 for i, values in zip(range(0, whole, DIRENT5_SIZE), _UNPACK.iter_unpack(data[:whole]), strict=True)]
        if whole < len(data):
            slots.append(cls(data[whole:], None))
        return slots

    @classmethod
    def edited(cls, ent: Any) -> _Slot:
        """An entry changed by a repair, with the bytes that go to disk."""
        return cls(_DIRENT.build(ent._asdict()), ent)


def _name_defect(raw: bytes) -> tuple[str | None, str, bool]:
    """(new name or None = remove, what is wrong, is it wrong) for a VMFS5 entry name field."""
    end = raw.find(b"\x00")
    detail = []
    name = raw if end < 0 else raw[:end]
    if end < 0:
        name = name[:NAME_MAX]
        detail.append("no terminating NUL")
    elif raw.count(0, end) != len(raw) - end:
        detail.append("bytes after the terminating NUL")
    if not name:
        return None, "empty name", True
    if name in (b".", b".."):
        return None, f"'{name.decode()}' out of place", True
    if b"/" in name:
        name = name.replace(b"/", b".")
        detail.append("holds '/'")
    text = name.decode("utf-8", "surrogateescape")
    return text, ", ".join(detail), bool(detail)


def _check_dir5(ctx: Context, rec: FdRecord, slots: list[_Slot], named_by: dict[int, int],
                good_gen: Counter[int]) -> None:
    st = ctx.state
    d = f"{rec.address:#x}"
    findings = []
    final = list(slots)
    partial: list[_Slot] = []
    if rec.size % DIRENT5_SIZE:
        whole = rec.size // DIRENT5_SIZE
        if ctx.problem(Code.DIR_BAD_SIZE, subject=d, dir=d, size=rec.size, entry=DIRENT5_SIZE,
                       new_size=whole * DIRENT5_SIZE):
            findings.append(ctx.last)
        else:
            partial = final[whole:]
        final = final[:whole]
    moved: list[_Slot] = []
    dotdot_target: int | None = None
    # '.'
    first = final[0].ent if final else None
    first_name = decode_name(first.name) if first is not None else ""
    if (first is None or first.name != _DOT or first.descAddr != rec.address or first.type != rec.type):
        found = "missing" if first is None or not first.descAddr else f"'{first_name}' -> {first.descAddr:#x}"
        if first is not None and first_name == "." and first.name != _DOT:
            found = "'.' with stray bytes after its name"
        if ctx.problem(Code.DIR_BAD_DOT, subject=d, dir=d, found=found):
            findings.append(ctx.last)
            if first is not None and first.descAddr and first_name not in (".", ".."):
                moved.append(final[0])
            if first is not None and first_name == "..":
                dotdot_target = first.descAddr
            dot = _Slot.of(dirent5(rec.type, rec.address, rec.generation, "."))
            if final:
                final[0] = dot
            else:
                final.append(dot)
    # '..'
    second = final[1].ent if len(final) > 1 else None
    second_name = decode_name(second.name) if second is not None else ""
    if second is None or second.name != _DOTDOT or not second.descAddr:
        found = "missing" if second is None or not second.descAddr else f"'{second_name}'"
        if second is not None and second_name == ".." and second.descAddr:
            found = "'..' with stray bytes after its name"
            dotdot_target = second.descAddr
        if ctx.problem(Code.DIR_NO_DOTDOT, subject=d, dir=d, found=found):
            findings.append(ctx.last)
            if second is not None and second.descAddr and second_name not in (".", ".."):
                moved.append(final[1])
            target = ROOT_FD if rec.address == ROOT_FD else dotdot_target or named_by.get(rec.address, ROOT_FD)
            parent = st.fds.get(target)
            dd = _Slot.of(dirent5(F.TYPE_DIRECTORY, target, parent.generation if parent else 1, ".."))
            if len(final) > 1:
                final[1] = dd
            else:
                if not final:
                    final.append(_Slot.of(dirent5(rec.type, rec.address, rec.generation, ".")))
                final.append(dd)
    final.extend(moved)
    # the other entries
    seen: dict[str, int] = {}
    remove: list[int] = []
    for i in range(2, len(final)):
        slot = final[i]
        if slot.ent is None or not slot.ent.descAddr:
            continue  # an unused slot: readers skip it
        ent = _check_entry(ctx, rec, i, slot.ent, seen, good_gen, findings)
        if ent is None:
            remove.append(i)
        elif ent is not slot.ent:
            final[i] = _Slot.edited(ent)
    for i in sorted(remove, reverse=True):
        last = final.pop()
        if i < len(final):
            final[i] = last
    final.extend(partial)
    answered = [f for f in findings if f.answer]
    if not ctx.repairing:
        final = slots  # nothing was changed: later passes see the directory as it is
    elif answered and not rewrite_dir5(ctx, rec.address, [s.raw for s in slots], [s.raw for s in final],
                                       answered):
        final = slots
    st.dirs[rec.address] = _record(rec.address, final)


def _check_entry(ctx: Context, rec: FdRecord, i: int, ent: Any, seen: dict[str, int], good_gen: Counter[int],
                 findings: list[Any]) -> Any:
    """Check one entry (a named tuple of Dirent5's fields): None = remove it; else the entry as it
    must be (the same object when nothing changes or every answer was no)."""
    st = ctx.state
    d = f"{rec.address:#x}"
    name, detail, bad = _name_defect(ent.name)
    if bad:
        shown = decode_name(ent.name)
        action = "Remove the entry" if name is None else f"Rename it to '{name}'"
        if ctx.problem(Code.DIRENT_BAD_NAME, subject=f"{d}/{i}", dir=d, index=i, name=shown, detail=detail,
                       action=action):
            findings.append(ctx.last)
            if name is None:
                return None
            ent = ent._replace(name=name.encode("utf-8", "surrogateescape").ljust(128, b"\x00"))
        elif name is None:
            return ent
        name = name if ctx.last.answer else shown
    assert name is not None
    target = st.fds.get(ent.descAddr)
    # an FD pass 2 found in use has an FD address of this volume: only a miss needs the checks
    if target is None and (ent.descAddr & 7 != A.ADDR_FD or not _fd_exists(ctx, ent.descAddr)):
        if ctx.problem(Code.DIRENT_BAD_ADDRESS, subject=f"{d}/{name}", dir=d, name=name,
                       address=f"{ent.descAddr:#x}", detail="which is no FD address of this volume"):
            findings.append(ctx.last)
            return None
        return ent
    if target is None:
        if ctx.problem(Code.DIRENT_FREE_FD, subject=f"{d}/{name}", dir=d, name=name, fd=f"{ent.descAddr:#x}"):
            findings.append(ctx.last)
            return None
        return ent
    fd = f"{target.address:#x}"
    if ent.type != target.type and ctx.problem(
        Code.DIRENT_BAD_TYPE, subject=f"{d}/{name}", dir=d, name=name, type=ent.type, fd=fd,
        fd_type=TYPE_NAMES.get(target.type, target.type),
    ):
        findings.append(ctx.last)
        ent = ent._replace(type=target.type)
    if ent.generation != target.generation:
        drop = good_gen[target.address] > 0
        action = "Remove the entry" if drop else f"Set it to {target.generation}"
        if ctx.problem(Code.DIRENT_BAD_GENERATION, subject=f"{d}/{name}", dir=d, name=name,
                       generation=ent.generation, fd=fd, fd_generation=target.generation, action=action):
            findings.append(ctx.last)
            if drop:
                return None
            ent = ent._replace(generation=target.generation)
            good_gen[target.address] += 1
    if name in seen:
        same = seen[name] == target.address
        k = 0
        while f"{name}~{k}" in seen:
            k += 1
        newname = f"{name}~{k}"
        action = "Remove the duplicate" if same else f"Rename it to '{newname}'"
        if ctx.problem(Code.DIRENT_DUPLICATE, subject=f"{d}/{name}/{i}", dir=d, name=name, fd=fd, action=action):
            findings.append(ctx.last)
            if same:
                return None
            ent = ent._replace(name=newname.encode("utf-8", "surrogateescape")[:NAME_MAX].ljust(128, b"\x00"))
            name = newname
    seen[name] = target.address
    return ent


def _fd_exists(ctx: Context, address: int) -> bool:
    fdc = ctx.volume.resources[R.RES_FD]
    c, r = A.fd_split(address)
    return c < fdc.num_clusters and r < fdc.rpc and c * fdc.rpc + r < fdc.num_resources


def record_from_slots(address: int, slots: list[bytes]) -> DirRecord:
    """A directory's record from its VMFS5 entry slots."""
    return _record(address, [_Slot.of(s) for s in slots])


def _record(address: int, slots: list[_Slot]) -> DirRecord:
    entries = []
    dot = dotdot = None
    for i, slot in enumerate(slots):
        ent = slot.ent
        if ent is None or not ent.descAddr:
            continue
        name = decode_name(ent.name)
        if i == 0 and name == ".":
            dot = ent.descAddr
        elif i == 1 and name == "..":
            dotdot = ent.descAddr
        else:
            entries.append(Entry(name, ent.descAddr, ent.type, ent.generation, i * DIRENT5_SIZE))
    return DirRecord(address, entries, dot, dotdot)


# -- VMFS6 ----------------------------------------------------------------------------------------


def _run6(ctx: Context) -> None:
    st = ctx.state
    dirs = sorted((r for r in st.fds.values() if r.is_dir), key=lambda r: r.address)
    named_by: dict[int, int] = {}
    good_gen: Counter[int] = Counter()
    opened: dict[int, tuple[Directory6 | None, list[Any], list[str], str]] = {}
    for rec in dirs:
        try:
            directory = open_directory(ctx.volume, ctx.volume.read_fd(rec.address))
            assert isinstance(directory, Directory6)
            entries = list(directory.entries())  # first: it finds the entries to hide
            opened[rec.address] = (directory, entries, list(_dir6_defects(directory)), "")
        except VmfsError as exc:
            opened[rec.address] = (None, [], [], str(exc))
            continue
        for e in entries:
            target = st.fds.get(e.address)
            if target is None:
                continue
            if target.is_dir and target.address != rec.address:
                named_by.setdefault(target.address, rec.address)
            if e.generation == target.generation:
                good_gen[target.address] += 1
    for n, rec in enumerate(dirs):
        _check_dir6(ctx, rec, *opened[rec.address], named_by, good_gen)
        ctx.progress(LABEL, n + 1, len(dirs))


def _check_dir6(ctx: Context, rec: FdRecord, directory: Directory6 | None, entries: list[Any], defects: list[str],
                error: str, named_by: dict[int, int], good_gen: Counter[int]) -> None:
    """One VMFS6 directory: what is wrong with it, and (repairing) the directory made anew from
    the entries that stay (:func:`vmfs.fsck.repair.rebuild_dir6`)."""
    st = ctx.state
    d = f"{rec.address:#x}"
    findings: list[Any] = []
    if directory is None:
        # the library cannot read it: the entries are salvaged from the dirent blocks themselves
        # (what no block keeps, pass 4 takes to /lost+found), and the directory made anew
        salvaged = _salvage6(ctx, rec)
        if ctx.problem(Code.DIR6_DAMAGED, subject=d, dir=d,
                       detail=f"{error}; {len(salvaged)} entries can be read from its blocks"):
            findings.append(ctx.last)
        seen: dict[str, int] = {}
        kept = [Entry(decode_name(ent.name), ent.descAddr, ent.type, ent.generation, offset)
                for offset, raw in salvaged
                if (ent := _check_entry(ctx, rec, offset, raw, seen, good_gen, findings)) is not None]
        parent = named_by.get(rec.address, ROOT_FD)
        as_is = [Entry(decode_name(raw.name), raw.descAddr, raw.type, raw.generation, offset)
                 for offset, raw in salvaged]
        _rebuild6(ctx, rec, kept, parent, findings, DirRecord(rec.address, as_is, None, None))
        return
    h = directory.header
    md = directory.md
    if rec.size < D6.DIR6_HEADER_SIZE or (rec.size - D6.DIR6_HEADER_SIZE) % md:
        whole = max(rec.size - D6.DIR6_HEADER_SIZE, 0) // md * md + D6.DIR6_HEADER_SIZE
        if ctx.problem(Code.DIR_BAD_SIZE, subject=d, dir=d, size=rec.size, entry=f"{md} (a block after the "
                       f"{D6.DIR6_HEADER_SIZE}-byte header)", new_size=whole):
            findings.append(ctx.last)
    self_name, parent_name = decode_name(h.selfEntry.name), decode_name(h.parentEntry.name)
    if h.selfEntry.address != rec.address or self_name != ".":
        found = "missing" if not h.selfEntry.address else f"'{self_name}' -> {h.selfEntry.address:#x}"
        if ctx.problem(Code.DIR_BAD_DOT, subject=d, dir=d, found=found):
            findings.append(ctx.last)
    dotdot: int | None = h.parentEntry.address
    if not dotdot or parent_name != ".." or dotdot not in st.fds:
        found = "missing" if not dotdot else f"'{parent_name}' -> {dotdot:#x}"
        if ctx.problem(Code.DIR_NO_DOTDOT, subject=d, dir=d, found=found):
            findings.append(ctx.last)
            dotdot = ROOT_FD if rec.address == ROOT_FD else named_by.get(rec.address, ROOT_FD)
        elif not dotdot:
            dotdot = None
    for detail in defects:
        if ctx.problem(Code.DIR6_DAMAGED, subject=f"{d} {detail}", dir=d, detail=detail):
            findings.append(ctx.last)
    seen: dict[str, int] = {}
    kept: list[Entry] = []
    for e in entries:
        ent = _Ent(type=e.type, descAddr=e.address, generation=e.generation,
                   name=e.name.encode("utf-8", "surrogateescape") + b"\x00")
        ent = _check_entry(ctx, rec, e.offset, ent, seen, good_gen, findings)
        if ent is not None:
            kept.append(Entry(decode_name(ent.name), ent.descAddr, ent.type, ent.generation, e.offset))
    kept += _hidden6(ctx, d, directory, seen, findings)
    _rebuild6(ctx, rec, kept, dotdot if dotdot else ROOT_FD, findings,
              DirRecord(rec.address, entries_of(entries), h.selfEntry.address, h.parentEntry.address or None))


def _salvage6(ctx: Context, rec: FdRecord) -> list[tuple[int, Any]]:
    """(file offset, entry as pass 3 checks it) of every used slot of every block that calls
    itself a dirent block, read straight from the directory's data: for a directory whose
    header, hash table or allocation maps the library cannot read."""
    md = ctx.geometry.md_size
    per_block = (md - D6.DIR6_BLOCK_HEADER_SIZE) // D6.DIRENT6_SIZE
    try:
        fd = ctx.volume.read_fd(rec.address)
        data = FileReader(fd).read(0, fd.size)
    except VmfsError:
        return []
    out = []
    for at in range(D6.DIR6_HEADER_SIZE, len(data) - md + 1, md):
        bh = D6.Dir6BlockHeader.parse(data[at : at + D6.DIR6_BLOCK_HEADER_SIZE])
        if bh.type != D6.BLOCK_DIRENT:
            continue
        for slot in range(min(bh.totalSlots, per_block)):
            if bh.bitmap[slot >> 3] >> (slot & 7) & 1:
                continue  # a free slot
            off = at + D6.DIR6_BLOCK_HEADER_SIZE + slot * D6.DIRENT6_SIZE
            ent = D6.Dirent6.parse(data[off : off + D6.DIRENT6_SIZE])
            if ent.address and ent.name.strip(b"\x00"):
                out.append((off, _Ent(type=ent.type, descAddr=ent.address, generation=ent.generation,
                                      name=bytes(ent.name) + b"\x00")))
    return out


def entries_of(entries: list[Any]) -> list[Entry]:
    """Pass 3's records of the library's VMFS6 directory entries."""
    return [Entry(e.name, e.address, e.type, e.generation, e.offset) for e in entries]


def _rebuild6(ctx: Context, rec: FdRecord, kept: list[Entry], parent: int, findings: list[Any],
              as_is: DirRecord) -> None:
    st = ctx.state
    answered = [f for f in findings if f.answer]
    if not ctx.repairing or not answered:
        st.dirs[rec.address] = as_is  # nothing was changed: later passes see the directory as it is
        return
    if parent == rec.address and rec.address != ROOT_FD:
        parent = ROOT_FD
    p = st.fds.get(parent)
    if rebuild_dir6(ctx, rec.address, (parent, p.generation if p is not None else 1), kept, answered):
        st.dirs[rec.address] = record6(ctx, rec.address)
    else:
        st.dirs[rec.address] = as_is


def record6(ctx: Context, address: int) -> DirRecord:
    """A VMFS6 directory's record as the library reads it now."""
    directory = open_directory(ctx.volume, ctx.volume.read_fd(address))
    assert isinstance(directory, Directory6)
    h = directory.header
    return DirRecord(address, entries_of(list(directory.entries())), h.selfEntry.address or None,
                     h.parentEntry.address or None)


def _hidden6(ctx: Context, d: str, directory: Directory6, seen: dict[str, int], findings: list[Any]) -> list[Entry]:
    """The entries the library hides (illegal names, second entries of a name): reported, and
    the ones a repair keeps (renamed) returned."""
    st = ctx.state
    kept = []
    for offset, defect in sorted(directory.defects.items()):
        shown = defect.name.decode("utf-8", "surrogateescape")
        target = st.fds.get(defect.address)
        if defect.kind == "duplicate":
            same = seen.get(shown) == defect.address
            k = 0
            while f"{shown}~{k}" in seen:
                k += 1
            newname = f"{shown}~{k}"
            keep = target is not None and not same
            action = f"Rename it to '{newname}'" if keep else "Remove the duplicate"
            if ctx.problem(Code.DIRENT_DUPLICATE, subject=f"{d}/{shown}/{offset}", dir=d, name=shown,
                           fd=f"{defect.address:#x}", action=action):
                findings.append(ctx.last)
                if keep:
                    assert target is not None
                    seen[newname] = defect.address
                    kept.append(Entry(newname, target.address, target.type, target.generation, offset))
            continue
        fixed, _, _ = _name_defect(defect.name + b"\x00")
        keep = target is not None and fixed is not None and fixed not in seen and bool(fixed.strip("."))
        action = f"Rename it to '{fixed}'" if keep else "Remove the entry"
        if ctx.problem(Code.DIRENT_BAD_NAME, subject=f"{d}/{offset}", dir=d, index=f"at {offset:#x}", name=shown,
                       detail=defect.detail, action=action):
            findings.append(ctx.last)
            if keep:
                assert target is not None and fixed is not None
                seen[fixed] = defect.address
                kept.append(Entry(fixed, target.address, target.type, target.generation, offset))
    return kept


def _dir6_defects(directory: Directory6):  # type: ignore[no-untyped-def]
    """What the library's reader tolerates but a consistent VMFS6 directory must not hold ('.'
    and '..' are checked by :func:`_check_dir6`)."""
    h = directory.header
    used = 0
    for block, nibble in directory.block_types():
        if nibble & 3 != D6.BLOCK_DIRENT:
            continue
        bh, raw = directory.read_block(block)
        slots = min(bh.totalSlots, directory.slots_per_block)
        free = sum(1 for s in range(slots) if bh.bitmap[s >> 3] >> (s & 7) & 1)
        if free != bh.freeSlots:
            yield f"block {block} counts {bh.freeSlots} free slots, its bitmap {free}"
        for s in range(slots):
            if bh.bitmap[s >> 3] >> (s & 7) & 1:
                continue
            used += 1
            off = D6.DIR6_BLOCK_HEADER_SIZE + s * D6.DIRENT6_SIZE
            ent = D6.Dirent6.parse(raw[off : off + D6.DIRENT6_SIZE])
            where = directory.block_offset(block) + off
            name = decode_name(ent.name)
            hidden = directory.defects.get(where)
            if hidden is not None and hidden.kind == "name":
                continue  # reported as a bad name
            if ent.offset != where:
                yield f"entry '{name}' records offset {ent.offset:#x}, it is at {where:#x}"
            system = directory.in_root and name in SYSTEM_FDS
            if not system and ent.hash32 != name_hash(name.encode("utf-8", "surrogateescape")) & 0xFFFFFFFF:
                yield f"entry '{name}' has hash 0x{ent.hash32:08x}, its name hashes to another value"
            try:
                found = directory.lookup(name)
                if found.offset != where:
                    yield f"the hash table leads '{name}' to offset {found.offset:#x}, not {where:#x}"
            except VmfsError as exc:
                yield f"the hash table does not find '{name}' ({exc})"
    if h.numEntries != used + 2:
        yield f"header counts {h.numEntries} entries, the blocks hold {used} + '.' and '..'"
