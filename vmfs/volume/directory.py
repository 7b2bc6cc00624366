"""Directories: VMFS3/5 linear entry arrays and VMFS6 hashed directories (section 9).

Both kinds answer the same questions (list the entries, find one by name, name the parent); the
per-version subclasses override only how entries are found on disk.  Names are checked on the way
out: an entry whose name is empty, longer than 127 bytes, holds '/' or a NUL followed by garbage,
or is '.'/'..' where no dot entry belongs, and the second and later entries of one name, are
*hidden*: left out of listings and lookups, logged once, and kept in :attr:`Directory.defects`
(fsck reports them).  The rest of the directory stays readable, as a forensic reader expects; no
such name is ever handed to a path walk.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from vmfs.errors import (
    CorruptError,
    InvalidArgumentError,
    NameTooLongError,
    NotADirError,
    NotFoundError,
    VmfsError,
)
from vmfs.format.namehash import hash_index, link_hash, name_hash
from vmfs.ondisk import dirent5 as D5
from vmfs.ondisk import dirent6 as D6
from vmfs.ondisk.common import struct_of
from vmfs.volume.filereader import FileReader

if TYPE_CHECKING:
    from vmfs.volume.filedesc import FileDescriptor
    from vmfs.volume.volume import Volume

log = logging.getLogger("vmfs.volume.directory")

#: Longest entry name ESXi accepts: 127 bytes, so a NUL always fits (vmfs-format.md 9.1).
NAME_MAX = 127


def check_lookup_name(name: str) -> None:
    """ENAMETOOLONG for a name no entry can hold (128 bytes or more), before any search: the
    kernel lets names of up to 255 bytes through, and "no such file" would be the wrong answer."""
    size = len(name.encode("utf-8", "surrogateescape"))
    if size > NAME_MAX:
        raise NameTooLongError(f"name of {size} bytes is longer than {NAME_MAX}")


def check_name(name: str) -> bytes:
    """The on-disk bytes of a new entry name, or the POSIX error for a name that cannot be one."""
    raw = name.encode("utf-8", "surrogateescape")
    if not raw or name in (".", ".."):
        raise InvalidArgumentError(f"invalid name {name!r}")
    if b"/" in raw or b"\x00" in raw:
        raise InvalidArgumentError(f"invalid name {name!r}")
    if len(raw) > NAME_MAX:
        raise NameTooLongError(f"name of {len(raw)} bytes is longer than {NAME_MAX}")
    return raw


class Defect(NamedTuple):
    """A hidden entry: ``kind`` "name" (no path can hold it) or "duplicate" (a second entry of a
    name), the name bytes as stored (up to the first NUL), what is wrong, the FD it names."""

    kind: str
    name: bytes
    detail: str
    address: int


@dataclass(frozen=True)
class DirEntry:
    name: str
    address: int  # FD address
    type: int
    generation: int
    offset: int  # file offset of the entry inside the directory (VMFS5 and VMFS6 alike)
    hash32: int = 0


def decode_entry_name(raw: bytes, where: str, offset: int) -> str:
    end = raw.find(b"\x00")
    name = raw if end < 0 else raw[:end]
    if end >= 0 and any(raw[end:]):
        raise CorruptError(where, offset, "entry name holds a NUL byte followed by more characters")
    if not name:
        raise CorruptError(where, offset, "empty entry name")
    if b"/" in name:
        raise CorruptError(where, offset, f"entry name {name!r} holds '/'")
    if len(name) > NAME_MAX:
        raise CorruptError(where, offset, f"entry name of {len(name)} bytes has no terminating NUL")
    return name.decode("utf-8", "surrogateescape")


class Directory:
    """Entries of one directory FD."""

    def __init__(self, volume: Volume, fd: FileDescriptor) -> None:
        if not fd.is_dir:
            raise NotADirError(f"FD {fd.address:#x} is not a directory")
        self.volume = volume
        self.fd = fd
        self.reader = FileReader(fd)
        self.where = f"directory {fd.address:#x}"
        #: hidden entries: file offset -> what is wrong (module docstring)
        self.defects: dict[int, Defect] = {}

    def _hide(self, offset: int, kind: str, raw_name: bytes, detail: str, address: int) -> None:
        """Leave the entry at ``offset`` out (logged the first time this object meets it)."""
        if offset not in self.defects:
            name = raw_name.split(b"\x00", 1)[0]
            self.defects[offset] = Defect(kind, name, detail, address)
            log.warning("%s: entry %r at offset %#x hidden: %s", self.where, name, offset, detail)

    def entries(self) -> Iterator[DirEntry]:
        """Every entry except '.' and '..'."""
        raise NotImplementedError

    def lookup(self, name: str) -> DirEntry:
        raise NotImplementedError

    def parent_address(self) -> int:
        raise NotImplementedError

    def listing(self) -> list[DirEntry]:
        return list(self.entries())

    def is_empty(self) -> bool:
        """No entry, hidden ones included: a directory holding only damaged entries is not empty
        (removing it would orphan what they name)."""
        return next(iter(self.entries()), None) is None and not self.defects


#: a VMFS5 entry's fields in declaration order (type, descAddr, generation, name), unpacked for a
#: whole directory at once: construct's parse took 18 µs an entry (1.8 s for 100,000)
_DIRENT5 = struct_of(D5.Dirent5)


class Directory5(Directory):
    """A packed array of 140-byte entries; '.' and '..' are the first two."""

    def __init__(self, volume: Volume, fd: FileDescriptor) -> None:
        super().__init__(volume, fd)
        size = fd.size
        if size % D5.DIRENT5_SIZE:
            raise CorruptError(self.where, fd.vol_offset, f"length {size} is not a multiple of 140")
        raw = self.reader.read(0, size)
        self.count = size // D5.DIRENT5_SIZE
        self._parent = fd.address
        self._by_name: dict[str, DirEntry] = {}
        for i, (etype, addr, generation, raw_name) in enumerate(_DIRENT5.iter_unpack(raw)):
            if not addr:
                continue  # unused entry (descAddr 0)
            off = i * D5.DIRENT5_SIZE
            try:
                name = decode_entry_name(raw_name, self.where, off)
            except CorruptError as exc:
                self._hide(off, "name", raw_name, exc.problem, addr)
                continue
            if name in (".", ".."):
                if i > 1:
                    self._hide(off, "name", raw_name, f"'{name}' entry at position {i}", addr)
                elif name == "..":
                    self._parent = addr
                continue
            if name in self._by_name:
                first = self._by_name[name].offset
                self._hide(off, "duplicate", raw_name, f"second entry named {name!r} (the first is at {first:#x})",
                           addr)
                continue
            self._by_name[name] = DirEntry(name, addr, etype, generation, off)

    def entries(self) -> Iterator[DirEntry]:
        return iter(sorted(self._by_name.values(), key=lambda e: e.offset))

    def lookup(self, name: str) -> DirEntry:
        check_lookup_name(name)
        try:
            return self._by_name[name]
        except KeyError:
            raise NotFoundError(f"no entry {name!r}") from None

    def parent_address(self) -> int:
        return self._parent

    # -- the in-memory index, kept in step with changes (vmfs.write.dirchange) ----------------------

    def entry_named(self, name: str) -> DirEntry | None:
        return self._by_name.get(name)

    def entry_at(self, offset: int) -> DirEntry | None:
        """The named entry at byte ``offset`` (None for '.', '..', unused or hidden slots)."""
        return next((e for e in self._by_name.values() if e.offset == offset), None)

    def indexed_add(self, entry: DirEntry) -> None:
        """``entry`` was appended at the end."""
        self.count += 1
        self._by_name[entry.name] = entry

    def indexed_remove(self, name: str) -> None:
        """``name``'s entry was overwritten by the last one, and the array shrank by one."""
        entry = self._by_name.pop(name)
        last = (self.count - 1) * D5.DIRENT5_SIZE
        if entry.offset != last:
            moved = self.entry_at(last)
            if moved is not None:
                self._by_name[moved.name] = DirEntry(
                    moved.name, moved.address, moved.type, moved.generation, entry.offset, moved.hash32
                )
            elif last in self.defects:  # a hidden entry moves with its bytes
                self.defects[entry.offset] = self.defects.pop(last)
        self.count -= 1

    def indexed_rename(self, old: str, renamed: DirEntry) -> None:
        del self._by_name[old]
        self._by_name[renamed.name] = renamed

    def indexed_parent(self, parent: int) -> None:
        self._parent = parent


class Directory6(Directory):
    """Header block with '.', '..' and a hash table, then metadata-unit blocks of entries."""

    def __init__(self, volume: Volume, fd: FileDescriptor) -> None:
        super().__init__(volume, fd)
        self.md = volume.geometry.md_size
        raw = self.reader.read(0, D6.DIR6_HEADER_SIZE)
        if len(raw) < D6.DIR6_HEADER_SIZE:
            raise CorruptError(self.where, fd.vol_offset, "shorter than its header")
        self.header = D6.Dir6Header.parse(raw)
        if self.header.version not in (D6.DIR6_VERSION, D6.DIR6_VERSION_DEBUG):
            raise CorruptError(self.where, fd.vol_offset, f"bad version 0x{self.header.version:08x}")
        self.num_blocks = max(fd.size - D6.DIR6_HEADER_SIZE, 0) // self.md
        self.slots_per_block = (self.md - D6.DIR6_BLOCK_HEADER_SIZE) // D6.DIRENT6_SIZE
        self.map_entries_per_block = 2 * (self.md - D6.DIR6_BLOCK_HEADER_SIZE)
        self.in_root = fd.address == volume.root_address

    def block_offset(self, block: int) -> int:
        return D6.DIR6_HEADER_SIZE + block * self.md

    def read_block(self, block: int) -> tuple[object, bytes]:
        if block >= self.num_blocks:
            raise CorruptError(self.where, self.fd.vol_offset, f"block {block} beyond the directory's end")
        raw = self.reader.read(self.block_offset(block), self.md)
        return D6.Dir6BlockHeader.parse(raw[: D6.DIR6_BLOCK_HEADER_SIZE]), raw

    def block_types(self) -> Iterator[tuple[int, int]]:
        """(block number, map nibble) of every block listed in the allocation maps."""
        h = self.header
        count = h.numAllocationMapBlocks
        if count > D6.DIR6_MAX_MAP_BLOCKS:
            raise CorruptError(self.where, self.fd.vol_offset, f"{count} allocation-map blocks")
        for j in range(count):
            map_block = h.allocationMapBlocks[j]
            bh, raw = self.read_block(map_block)
            if bh.type != D6.BLOCK_ALLOCMAP:
                raise CorruptError(self.where, self.fd.vol_offset, f"block {map_block} is not an allocation map")
            first = j * self.map_entries_per_block
            for n in range(min(self.map_entries_per_block, self.num_blocks - first)):
                byte = raw[D6.DIR6_BLOCK_HEADER_SIZE + n // 2]
                nibble = (byte >> 4) if n % 2 == 0 else (byte & 0xF)
                yield first + n, nibble

    def _slot_entry(self, raw: bytes, block: int, slot: int) -> DirEntry | None:
        """The entry in ``slot`` of ``block``; None (hidden) when its name is one no path holds."""
        off = D6.DIR6_BLOCK_HEADER_SIZE + slot * D6.DIRENT6_SIZE
        ent = D6.Dirent6.parse(raw[off : off + D6.DIRENT6_SIZE])
        file_off = self.block_offset(block) + off
        try:
            name = decode_entry_name(ent.name, self.where, file_off)
        except CorruptError as exc:
            self._hide(file_off, "name", ent.name, exc.problem, ent.address)
            return None
        if name in (".", ".."):
            self._hide(file_off, "name", ent.name, f"'{name}' entry in a directory block", ent.address)
            return None
        return DirEntry(name, ent.address, ent.type, ent.generation, file_off, ent.hash32)

    def entries(self) -> Iterator[DirEntry]:
        """Every visible entry; of two entries of one name, the one the hash table finds."""
        by_name: dict[str, DirEntry] = {}
        for e in self._slot_entries():
            first = by_name.get(e.name)
            if first is None:
                by_name[e.name] = e
                continue
            try:
                found = self.lookup(e.name).offset
            except VmfsError:
                found = first.offset
            keep, hide = (e, first) if found == e.offset else (first, e)
            by_name[e.name] = keep
            raw = e.name.encode("utf-8", "surrogateescape")
            detail = f"second entry named {e.name!r} (the other is at {keep.offset:#x})"
            self._hide(hide.offset, "duplicate", raw, detail, hide.address)
        return iter(sorted(by_name.values(), key=lambda e: e.offset))

    def _slot_entries(self) -> Iterator[DirEntry]:
        remaining = self.header.numEntries - 2
        for block, nibble in self.block_types():
            if remaining <= 0:
                return
            if nibble & 3 != D6.BLOCK_DIRENT:
                continue
            bh, raw = self.read_block(block)
            slots = min(bh.totalSlots, self.slots_per_block)
            for slot in range(slots):
                if remaining <= 0:
                    return
                if bh.bitmap[slot >> 3] >> (slot & 7) & 1:
                    continue  # free slot
                remaining -= 1
                entry = self._slot_entry(raw, block, slot)
                if entry is not None:
                    yield entry

    def lookup(self, name: str) -> DirEntry:
        check_lookup_name(name)
        raw_name = name.encode("utf-8", "surrogateescape")
        index = hash_index(raw_name, self.in_root)
        word = self.header.hashTable[index]
        kind, block, slot = D6.split_location(word)
        if kind == D6.BLOCK_DIRENT:
            ent = self._entry_at(block, slot)
            if ent is not None and ent.name == name:
                return ent
            raise NotFoundError(f"no entry {name!r}")
        if kind == D6.BLOCK_LINK:
            return self._lookup_links(block, slot, name, link_hash(name_hash(raw_name)))
        raise NotFoundError(f"no entry {name!r}")

    def _entry_at(self, block: int, slot: int) -> DirEntry | None:
        bh, raw = self.read_block(block)
        if bh.type != D6.BLOCK_DIRENT or slot >= min(bh.totalSlots, self.slots_per_block):
            raise CorruptError(self.where, self.fd.vol_offset, f"hash table points to a bad slot {block}/{slot}")
        return self._slot_entry(raw, block, slot)

    def _lookup_links(self, block: int, slot: int, name: str, lhash: int) -> DirEntry:
        seen: set[tuple[int, int]] = set()
        while True:
            if (block, slot) in seen:
                raise CorruptError(self.where, self.fd.vol_offset, "link-group chain loops")
            seen.add((block, slot))
            bh, raw = self.read_block(block)
            off = D6.DIR6_BLOCK_HEADER_SIZE + slot * D6.LINK_GROUP_SIZE
            if bh.type != D6.BLOCK_LINK or off + D6.LINK_GROUP_SIZE > len(raw):
                raise CorruptError(self.where, self.fd.vol_offset, f"bad link group {block}/{slot}")
            group = D6.LinkGroup.parse(raw[off : off + D6.LINK_GROUP_SIZE])
            for link in group.links:
                if link.location and link.hash == lhash:
                    k, b, s = D6.split_location(link.location)
                    if k == D6.BLOCK_DIRENT:
                        ent = self._entry_at(b, s)
                        if ent is not None and ent.name == name:
                            return ent
            k, block, slot = D6.split_location(group.nextGroup)
            if k != D6.BLOCK_LINK:
                raise NotFoundError(f"no entry {name!r}")

    def parent_address(self) -> int:
        return self.header.parentEntry.address


def open_directory(volume: Volume, fd: FileDescriptor) -> Directory:
    """The directory object of ``fd``, cached while the FD object stays the same."""
    cached = volume._dir_cache.get(fd.address)
    if cached is not None and cached.fd is fd:
        return cached
    cls = Directory6 if volume.geometry.vmfs6 else Directory5
    directory = cls(volume, fd)
    volume._dir_cache.put(fd.address, directory)
    return directory
