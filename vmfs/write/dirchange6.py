"""Changing a VMFS6 hashed directory by one host (vmfs-format.md 9.2).

A VMFS6 directory is a 64 KiB header ('.', '..', a hash table of 16001 location words, the list
of allocation-map blocks) followed by blocks of one metadata unit: allocation maps (a nibble per
block), dirent blocks (14 slots of 288 bytes) and link blocks (48 link groups of 84 bytes).

* Adding an entry takes the first free slot of a dirent block the map marks as having one (or
  appends a dirent block), and points the name's hash-table word at it.  When the word already
  names another entry (two names, one index), both move into a link group, and the word names the
  group; further names of that index join the group, or a new group chained to it.  Lookups follow
  the chain and compare each link's 16-bit link hash before reading the entry, as readers do.
* Removing clears the slot and its link (a group left empty is unchained and freed).  The file
  never shrinks, as on ESXi: blocks stay for the next entries.
* Every read goes through the caller's transaction, so several changes in one transaction (a
  rename, an exchange) each see the ones before.

Directories of more than one allocation-map block (8064 blocks, about 112,000 entries) are not
grown further: adding to one full at that size answers ENOSPC.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from construct import Container

from vmfs.errors import CorruptError, ExistsError, NoSpaceError, NotFoundError
from vmfs.format.namehash import hash_index, link_hash, name_hash
from vmfs.ondisk import dirent6 as D
from vmfs.ondisk.common import encode_name
from vmfs.volume.directory import Directory6, DirEntry, check_lookup_name, check_name, decode_entry_name
from vmfs.write.filedata import FileWriter

if TYPE_CHECKING:
    from vmfs.cluster.attachment import HostAttachment
    from vmfs.cluster.transaction import Transaction
    from vmfs.volume.filedesc import FileDescriptor
    from vmfs.volume.volume import Volume

HASH_TABLE_AT = 0x5F8
NUM_ENTRIES_AT = 0x4
SELF_AT = 0x3B8
PARENT_AT = 0x4D8
BLOCK_HEADER = D.DIR6_BLOCK_HEADER_SIZE
DIRENT_VERSION = 1  # dirent and link blocks of the sample carry version 1 [V6]


def new_directory6_data(md: int, self_addr: int, self_gen: int, parent_addr: int, parent_gen: int) -> bytes:
    """A new, empty VMFS6 directory: header and allocation-map block (the sample's ``.sdd.sf`` and
    a fresh ``mkdir`` alike: ``0x38 0x88…``)."""
    def dot(name: str, address: int, gen: int, offset: int) -> Container:
        return Container(type=2, address=address, generation=gen, hash32=0, offset=offset,
                         name=encode_name(name, D.DIRENT6_NAME_SIZE), unknown118=0)

    header = D.Dir6Header.build(Container(
        version=D.DIR6_VERSION, numEntries=2, numAllocated=2, numAllocationMapBlocks=1,
        allocationMapBlocks=[0] * D.DIR6_MAX_MAP_BLOCKS, unknown210=bytes(0x3A8 - 0x210), checksum=0,
        checksumGen=0, selfEntry=dot(".", self_addr, self_gen, SELF_AT),
        parentEntry=dot("..", parent_addr, parent_gen, PARENT_AT),
        hashTable=[0] * D.DIR6_HASH_ENTRIES, tail=bytes(D.DIR6_HEADER_SIZE - 0xFFFC),
    ))
    map_header = D.Dir6BlockHeader.build(Container(version=0, type=D.BLOCK_ALLOCMAP, totalSlots=0, freeSlots=0,
                                                   bitmap=bytes(56)))
    body = bytes([(D.BLOCK_ALLOCMAP << 4) | D.MAP_NOT_WRITTEN]) + bytes([0x88]) * (md - BLOCK_HEADER - 1)
    return header + map_header + body


@dataclass
class DirShape6:
    """What :class:`DirectoryChanges6` needs of a directory, from the geometry alone: for one
    whose on-disk header is being rewritten (vmfs-fsck rebuilding it) and so cannot be parsed."""

    volume: Volume
    fd: FileDescriptor
    md: int
    slots_per_block: int
    in_root: bool
    where: str

    @classmethod
    def of(cls, volume: Volume, fd: FileDescriptor) -> DirShape6:
        md = volume.geometry.md_size
        return cls(volume, fd, md, (md - BLOCK_HEADER) // D.DIRENT6_SIZE, fd.address == volume.root_address,
                   f"directory {fd.address:#x}")


class DirectoryChanges6:
    """Entry changes to one VMFS6 directory, made by ``attachment``'s host inside its transactions."""

    def __init__(self, attachment: HostAttachment, directory: Directory6 | DirShape6) -> None:
        self.attachment = attachment
        self.dir = directory
        self.md = directory.md
        self.slots = directory.slots_per_block
        self.groups_per_block = (self.md - BLOCK_HEADER) // D.LINK_GROUP_SIZE
        self.in_root = directory.in_root

    # -- bytes as the transaction sees them ------------------------------------------------------

    def _writer(self) -> FileWriter:
        return FileWriter(self.attachment, self.dir.fd)

    def _read(self, tx: Transaction, offset: int, length: int) -> bytes:
        fd = self.dir.fd
        out = bytearray()
        writer = self._writer()
        bs = fd.block_size
        while length > 0:
            index, within = divmod(offset, bs)
            n = min(length, bs - within)
            if fd.is_resident:
                chunk = fd.resident_data[offset : offset + n].ljust(n, b"\0")
            else:
                addr = writer.get(tx, index)
                loc = self.dir.volume.data_location(addr, within, n, fd) if addr else None
                chunk = tx.read(loc, n) if loc is not None else bytes(n)
            out += chunk
            offset += n
            length -= n
        return bytes(out)

    def _write(self, tx: Transaction, offset: int, data: bytes) -> None:
        self._writer().write(tx, offset, data)

    def _u32(self, tx: Transaction, offset: int) -> int:
        return int.from_bytes(self._read(tx, offset, 4), "little")

    def _put_u32(self, tx: Transaction, offset: int, value: int) -> None:
        self._write(tx, offset, value.to_bytes(4, "little"))

    def _block_at(self, block: int) -> int:
        return D.DIR6_HEADER_SIZE + block * self.md

    def _num_blocks(self) -> int:
        return max(self.dir.fd.size - D.DIR6_HEADER_SIZE, 0) // self.md

    # -- allocation map ------------------------------------------------------------------------------

    def _map_location(self, tx: Transaction, block: int) -> tuple[int, bool]:
        """(file offset of the byte holding ``block``'s nibble, high nibble?)."""
        per = 2 * (self.md - BLOCK_HEADER)
        j, n = divmod(block, per)
        if j >= self._u32(tx, 0xC):
            raise NoSpaceError(f"directory {self.dir.fd.address:#x} holds no more blocks (one allocation map)")
        map_block = self._u32(tx, 0x10 + 4 * j)
        return self._block_at(map_block) + BLOCK_HEADER + n // 2, n % 2 == 0

    def _nibble(self, tx: Transaction, block: int) -> int:
        at, high = self._map_location(tx, block)
        byte = self._read(tx, at, 1)[0]
        return byte >> 4 if high else byte & 0xF

    def _set_nibble(self, tx: Transaction, block: int, value: int) -> None:
        at, high = self._map_location(tx, block)
        byte = self._read(tx, at, 1)[0]
        byte = (byte & 0x0F) | (value << 4) if high else (byte & 0xF0) | value
        self._write(tx, at, bytes([byte]))

    def _candidates(self, tx: Transaction, kind: int, nblocks: int) -> list[int]:
        """Blocks of ``kind`` the allocation maps mark as having a free slot (each map block read
        once)."""
        per = 2 * (self.md - BLOCK_HEADER)
        out = []
        for j in range(self._u32(tx, 0xC)):
            first = j * per
            if first >= nblocks:
                break
            body = self._read(tx, self._block_at(self._u32(tx, 0x10 + 4 * j)) + BLOCK_HEADER, self.md - BLOCK_HEADER)
            for n in range(min(per, nblocks - first)):
                nib = body[n // 2] >> 4 if n % 2 == 0 else body[n // 2] & 0xF
                if nib & 3 == kind and nib & D.MAP_HAS_FREE:
                    out.append(first + n)
        return out

    def _block_header(self, tx: Transaction, block: int) -> Container:
        return D.Dir6BlockHeader.parse(self._read(tx, self._block_at(block), BLOCK_HEADER))

    def _take_slot(self, tx: Transaction, kind: int) -> tuple[int, int]:
        """A free slot of a ``kind`` block (dirent or link), marked used: (block, slot)."""
        total = self.slots if kind == D.BLOCK_DIRENT else self.groups_per_block
        nblocks = self._num_blocks()
        for block in self._candidates(tx, kind, nblocks):
            bh = self._block_header(tx, block)
            for slot in range(min(bh.totalSlots, total)):
                if bh.bitmap[slot >> 3] >> (slot & 7) & 1:
                    self._mark_slot(tx, block, bh, slot, used=True)
                    return block, slot
            self._set_nibble(tx, block, kind)  # the map said free, the block is full: mend it
        block = nblocks
        self._set_nibble(tx, block, kind | D.MAP_HAS_FREE)  # raises ENOSPC past the first map
        bitmap = bytearray(56)
        for s in range(total):
            bitmap[s >> 3] |= 1 << (s & 7)
        bh = Container(version=DIRENT_VERSION, type=kind, totalSlots=total, freeSlots=total, bitmap=bytes(bitmap))
        self._write(tx, self._block_at(block), D.Dir6BlockHeader.build(bh) + bytes(self.md - BLOCK_HEADER))
        self._mark_slot(tx, block, bh, 0, used=True)
        return block, 0

    def _mark_slot(self, tx: Transaction, block: int, bh: Container, slot: int, *, used: bool) -> None:
        bitmap = bytearray(bh.bitmap)
        if used:
            bitmap[slot >> 3] &= ~(1 << (slot & 7))
            bh.freeSlots -= 1
        else:
            bitmap[slot >> 3] |= 1 << (slot & 7)
            bh.freeSlots += 1
        bh.bitmap = bytes(bitmap)
        self._write(tx, self._block_at(block), D.Dir6BlockHeader.build(bh))
        self._set_nibble(tx, block, bh.type | (D.MAP_HAS_FREE if bh.freeSlots else 0))

    def _free_slot(self, tx: Transaction, block: int, slot: int, size: int) -> None:
        bh = self._block_header(tx, block)
        if bh.bitmap[slot >> 3] >> (slot & 7) & 1:
            raise CorruptError(self.dir.where, self.dir.fd.vol_offset, f"slot {block}/{slot} freed twice")
        self._write(tx, self._block_at(block) + BLOCK_HEADER + slot * size, bytes(size))
        self._mark_slot(tx, block, bh, slot, used=False)

    # -- entries ----------------------------------------------------------------------------------------

    def _entry(self, tx: Transaction, location: int) -> tuple[DirEntry, int] | None:
        kind, block, slot = D.split_location(location)
        if kind != D.BLOCK_DIRENT or block >= self._num_blocks() or slot >= self.slots:
            raise CorruptError(self.dir.where, self.dir.fd.vol_offset, f"location 0x{location:08x} names no entry")
        off = self._block_at(block) + BLOCK_HEADER + slot * D.DIRENT6_SIZE
        ent = D.Dirent6.parse(self._read(tx, off, D.DIRENT6_SIZE))
        try:
            name = decode_entry_name(ent.name, self.dir.where, off)
        except CorruptError:
            return None
        return DirEntry(name, ent.address, ent.type, ent.generation, off, ent.hash32), location

    def _groups(self, tx: Transaction, location: int):  # type: ignore[no-untyped-def]
        """(location, group) along a link-group chain."""
        seen = set()
        while location & 3 == D.BLOCK_LINK:
            if location in seen:
                raise CorruptError(self.dir.where, self.dir.fd.vol_offset, "link-group chain loops")
            seen.add(location)
            _, block, slot = D.split_location(location)
            off = self._block_at(block) + BLOCK_HEADER + slot * D.LINK_GROUP_SIZE
            group = D.LinkGroup.parse(self._read(tx, off, D.LINK_GROUP_SIZE))
            yield location, off, group
            location = group.nextGroup

    def find(self, tx: Transaction, name: str) -> DirEntry | None:
        """``name``'s entry as the transaction sees the directory, or None."""
        check_lookup_name(name)
        raw = name.encode("utf-8", "surrogateescape")
        word = self._u32(tx, HASH_TABLE_AT + 4 * hash_index(raw, self.in_root))
        if word & 3 == D.BLOCK_DIRENT:
            got = self._entry(tx, word)
            return got[0] if got is not None and got[0].name == name else None
        lh = link_hash(name_hash(raw))
        for _, _, group in self._groups(tx, word):
            for link in group.links[: group.totalLinks - group.freeLinks]:
                if link.location and link.hash == lh:
                    got = self._entry(tx, link.location)
                    if got is not None and got[0].name == name:
                        return got[0]
        return None

    def _location_of(self, entry: DirEntry) -> int:
        block, rest = divmod(entry.offset - D.DIR6_HEADER_SIZE, self.md)
        return D.location_word(D.BLOCK_DIRENT, block, (rest - BLOCK_HEADER) // D.DIRENT6_SIZE)

    def _count(self, tx: Transaction, delta: int) -> None:
        n = self._u32(tx, NUM_ENTRIES_AT) + delta
        self._write(tx, NUM_ENTRIES_AT, n.to_bytes(4, "little") + n.to_bytes(4, "little"))  # + numAllocated

    # -- hash table and link groups -----------------------------------------------------------------------

    def _hash_add(self, tx: Transaction, index: int, location: int, lhash: int) -> None:
        at = HASH_TABLE_AT + 4 * index
        word = self._u32(tx, at)
        if word == 0:
            self._put_u32(tx, at, location)
            return
        if word & 3 == D.BLOCK_DIRENT:
            other = self._entry(tx, word)
            other_hash = link_hash(name_hash(other[0].name.encode("utf-8", "surrogateescape"))) if other else 0
            group = self._new_group(tx, index, [(word, other_hash), (location, lhash)])
            self._put_u32(tx, at, group)
            return
        last = None
        for loc, off, group in self._groups(tx, word):
            used = group.totalLinks - group.freeLinks
            if used < min(group.totalLinks, D.LINKS_PER_GROUP):
                # links stay dense: readers scan the first totalLinks - freeLinks only
                group.links[used] = Container(location=location, hash=lhash)
                group.freeLinks -= 1
                group.nextFreeIdx = used + 1
                self._write(tx, off, D.LinkGroup.build(group))
                return
            last = (loc, off, group)
        if last is None:
            raise CorruptError(self.dir.where, self.dir.fd.vol_offset, f"hash word 0x{word:08x} names no group")
        new = self._new_group(tx, index, [(location, lhash)])
        _, off, group = last
        group.nextGroup = new
        self._write(tx, off, D.LinkGroup.build(group))

    def _new_group(self, tx: Transaction, index: int, links: list[tuple[int, int]]) -> int:
        block, slot = self._take_slot(tx, D.BLOCK_LINK)
        entries = [Container(location=loc, hash=h) for loc, h in links]
        entries += [Container(location=0, hash=0)] * (D.LINKS_PER_GROUP - len(entries))
        group = Container(hashIndex=index, totalLinks=D.LINKS_PER_GROUP, freeLinks=D.LINKS_PER_GROUP - len(links),
                          nextFreeIdx=len(links), pad05=0, links=entries, nextGroup=0, pad52=0)
        self._write(tx, self._block_at(block) + BLOCK_HEADER + slot * D.LINK_GROUP_SIZE, D.LinkGroup.build(group))
        return D.location_word(D.BLOCK_LINK, block, slot)

    def _hash_remove(self, tx: Transaction, index: int, location: int) -> None:
        at = HASH_TABLE_AT + 4 * index
        word = self._u32(tx, at)
        if word == location:
            self._put_u32(tx, at, 0)
            return
        prev: tuple[int, Container] | None = None
        for loc, off, group in self._groups(tx, word):
            used = group.totalLinks - group.freeLinks
            for i in range(min(used, D.LINKS_PER_GROUP)):
                if group.links[i].location == location:
                    # the last link moves into the hole, so the used links stay the first ones
                    group.links[i] = group.links[used - 1]
                    group.links[used - 1] = Container(location=0, hash=0)
                    group.freeLinks += 1
                    group.nextFreeIdx = used - 1
                    if group.freeLinks < group.totalLinks:
                        self._write(tx, off, D.LinkGroup.build(group))
                        return
                    # the group is empty: unchain it and give its slot back
                    if prev is None:
                        self._put_u32(tx, at, group.nextGroup)
                    else:
                        poff, pgroup = prev
                        pgroup.nextGroup = group.nextGroup
                        self._write(tx, poff, D.LinkGroup.build(pgroup))
                    _, block, slot = D.split_location(loc)
                    self._free_slot(tx, block, slot, D.LINK_GROUP_SIZE)
                    return
            prev = (off, group)
        raise CorruptError(self.dir.where, self.dir.fd.vol_offset, f"hash table does not name entry 0x{location:08x}")

    # -- the operations posix.py uses ---------------------------------------------------------------

    def add(self, tx: Transaction, name: str, address: int, ftype: int, generation: int) -> DirEntry:
        raw = check_name(name)
        if self.find(tx, name) is not None:
            raise ExistsError(f"{name!r} exists")
        h = name_hash(raw)
        block, slot = self._take_slot(tx, D.BLOCK_DIRENT)
        off = self._block_at(block) + BLOCK_HEADER + slot * D.DIRENT6_SIZE
        hash32 = h & 0xFFFFFFFF
        self._write(tx, off, D.Dirent6.build(Container(
            type=ftype, address=address, generation=generation, hash32=hash32, offset=off,
            name=raw.ljust(D.DIRENT6_NAME_SIZE, b"\0"), unknown118=0)))
        self._hash_add(tx, hash_index(raw, self.in_root), D.location_word(D.BLOCK_DIRENT, block, slot), link_hash(h))
        self._count(tx, +1)
        self._refresh(tx)
        return DirEntry(name, address, ftype, generation, off, hash32)

    def remove(self, tx: Transaction, name: str) -> DirEntry:
        entry = self.find(tx, name)
        if entry is None:
            raise NotFoundError(f"no entry {name!r}")
        location = self._location_of(entry)
        raw = name.encode("utf-8", "surrogateescape")
        self._hash_remove(tx, hash_index(raw, self.in_root), location)
        _, block, slot = D.split_location(location)
        self._free_slot(tx, block, slot, D.DIRENT6_SIZE)
        self._count(tx, -1)
        self._refresh(tx)
        return entry

    def rename(self, tx: Transaction, old: str, new: str) -> DirEntry:
        check_name(new)
        if self.find(tx, new) is not None:
            raise ExistsError(f"{new!r} exists")
        entry = self.remove(tx, old)
        return self.add(tx, new, entry.address, entry.type, entry.generation)

    def set_parent(self, tx: Transaction, parent: int, generation: int) -> None:
        """Point '..' (the header's parent entry) at a new parent directory."""
        raw = bytearray(self._read(tx, PARENT_AT, D.DIRENT6_SIZE))
        raw[4:8] = parent.to_bytes(4, "little")
        raw[8:12] = generation.to_bytes(4, "little")
        self._write(tx, PARENT_AT, bytes(raw))
        self._refresh(tx)

    def _refresh(self, tx: Transaction) -> None:
        """The directory object holds the header it read: drop it now and again after the commit,
        so that the next user (another thread's reader included) reads the committed state."""
        volume, address = self.dir.volume, self.dir.fd.address
        volume.forget_directory(address)
        tx.after_commit.append(lambda: volume.forget_directory(address))

