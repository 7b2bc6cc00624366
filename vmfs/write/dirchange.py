"""Changing a directory's entries by one host (VMFS3/5 entry arrays; section 9.1).

An entry is 140 bytes in the directory file, written through :class:`FileWriter` inside the
caller's transaction (directory contents are metadata: journaled).  Adding appends; removing moves
the last entry into the hole and shrinks the file by one entry, as ESXi keeps the array dense;
renaming rewrites the entry in place.  The directory object's in-memory index is told of each
change (:meth:`Directory5.indexed_add` ...), so lookups on this host stay current without a
re-read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmfs.errors import ExistsError, UnsupportedError
from vmfs.ondisk import dirent5 as D5
from vmfs.volume.directory import Directory, Directory5, DirEntry, check_name
from vmfs.write.filedata import FileWriter

if TYPE_CHECKING:
    from vmfs.cluster.attachment import HostAttachment
    from vmfs.cluster.transaction import Transaction


def entry_bytes(name: bytes, address: int, ftype: int, generation: int) -> bytes:
    """One VMFS3/5 directory entry."""
    return D5.Dirent5.build(
        {"type": ftype, "descAddr": address, "generation": generation, "name": name.ljust(D5.DIRENT5_NAME_SIZE, b"\0")}
    )


def new_directory5_data(self_addr: int, self_gen: int, parent_addr: int, parent_gen: int) -> bytes:
    """The '.' and '..' entries of a new VMFS3/5 directory."""
    return entry_bytes(b".", self_addr, 2, self_gen) + entry_bytes(b"..", parent_addr, 2, parent_gen)


class DirectoryChanges:
    """Entry changes to one directory, made by ``attachment``'s host inside its transactions."""

    def __init__(self, attachment: HostAttachment, directory: Directory) -> None:
        if not isinstance(directory, Directory5):
            raise UnsupportedError("changing this directory format is not supported")
        self.attachment = attachment
        self.dir = directory

    def _writer(self) -> FileWriter:
        return FileWriter(self.attachment, self.dir.fd)

    def add(self, tx: Transaction, name: str, address: int, ftype: int, generation: int) -> DirEntry:
        raw_name = check_name(name)
        d = self.dir
        if d.entry_named(name) is not None:
            raise ExistsError(f"{name!r} exists")
        offset = d.count * D5.DIRENT5_SIZE
        self._writer().write(tx, offset, entry_bytes(raw_name, address, ftype, generation))
        entry = DirEntry(name, address, ftype, generation, offset)
        d.indexed_add(entry)
        return entry

    def remove(self, tx: Transaction, name: str) -> DirEntry:
        """Drop an entry: the last entry moves into its slot and the directory shrinks by one."""
        d = self.dir
        entry = d.lookup(name)
        last = (d.count - 1) * D5.DIRENT5_SIZE
        writer = self._writer()
        if entry.offset != last:
            writer.write(tx, entry.offset, self._read(tx, last, D5.DIRENT5_SIZE))
        writer.truncate(tx, last)
        d.indexed_remove(name)
        return entry

    def rename(self, tx: Transaction, old: str, new: str) -> DirEntry:
        """Change an entry's name in place."""
        raw_name = check_name(new)
        d = self.dir
        entry = d.lookup(old)
        if d.entry_named(new) is not None:
            raise ExistsError(f"{new!r} exists")
        self._writer().write(tx, entry.offset, entry_bytes(raw_name, entry.address, entry.type, entry.generation))
        renamed = DirEntry(new, entry.address, entry.type, entry.generation, entry.offset)
        d.indexed_rename(old, renamed)
        return renamed

    def set_parent(self, tx: Transaction, parent: int, generation: int) -> None:
        """Point '..' (the second entry) at a new parent directory."""
        self._writer().write(tx, D5.DIRENT5_SIZE, entry_bytes(b"..", parent, 2, generation))
        self.dir.indexed_parent(parent)

    def _read(self, tx: Transaction, offset: int, length: int) -> bytes:
        """Directory bytes as the transaction sees them."""
        fd = self.dir.fd
        bs = fd.block_size
        index = offset // bs
        addr = self._writer().get(tx, index)
        if not addr:
            return bytes(length)
        loc = self.dir.volume.data_location(addr, offset - index * bs, length, fd)
        return tx.read(loc, length) if loc is not None else bytes(length)
