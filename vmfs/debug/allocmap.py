"""Who owns each file block of a volume: the data behind ``vmfs-debug map`` (picture and text).

Each file block (the volume's allocation unit, 1 MiB on VMFS5) is free, or belongs to a system
file (the resource files ``.fbb.sf`` ... and the journals of in-use heartbeat slots), or to the
pointer-block resource files (``.pbc.sf``, ``.pb2.sf``: where every file's pointer blocks live), or
to one file, possibly still to-be-zeroed (TBZ).  Small files living in sub-blocks and the pointer
blocks themselves are resources *inside* those system files, so at file-block granularity they
show as their container.  The owners come from walking the tree from the root (as fsck's
reference check does); the free/used split they give must equal the FB bitmap's counts.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

from vmfs.format import address as A
from vmfs.ondisk import resource as R
from vmfs.volume.directory import open_directory
from vmfs.volume.filedesc import BlockMap
from vmfs.volume.slots import read_slots
from vmfs.volume.volume import Volume

FREE, SYSTEM, POINTER, FILE, TBZ = "free", "system", "pointer blocks", "file", "to-be-zeroed"
#: the resource files holding pointer blocks (drawn in their own colour)
POINTER_FILES = {"/.pbc.sf", "/.pb2.sf"}


@dataclass
class FileExtents:
    """One file's file blocks in file order: (file block index, volume block number, TBZ)."""

    path: str
    blocks: list[tuple[int, int, bool]] = field(default_factory=list)
    address: int = 0  #: its file descriptor (0 for a heartbeat slot's journal)

    @property
    def extents(self) -> list[tuple[int, int]]:
        """Runs (first volume block, count) of blocks contiguous both in the file and on the volume."""
        runs: list[tuple[int, int]] = []
        last: tuple[int, int] | None = None
        for index, block, _ in self.blocks:
            if runs and last is not None and index == last[0] + 1 and block == last[1] + 1:
                runs[-1] = (runs[-1][0], runs[-1][1] + 1)
            else:
                runs.append((block, 1))
            last = (index, block)
        return runs


@dataclass
class AllocationMap:
    total: int
    block_size: int
    kinds: list[str]  #: per volume block: FREE, SYSTEM, POINTER, FILE or TBZ
    owner: list[int]  #: per volume block: index into ``files``, -1 when free
    files: list[FileExtents]

    @property
    def used(self) -> int:
        return sum(k != FREE for k in self.kinds)

    def free_runs(self) -> list[tuple[int, int]]:
        """(first block, count) of every run of free blocks."""
        runs: list[tuple[int, int]] = []
        for block, kind in enumerate(self.kinds):
            if kind != FREE:
                continue
            if runs and runs[-1][0] + runs[-1][1] == block:
                runs[-1] = (runs[-1][0], runs[-1][1] + 1)
            else:
                runs.append((block, 1))
        return runs

    def figures(self) -> dict[str, int]:
        """The fragmentation figures: extents of the regular files, how many files have more than
        one, and the free space's runs."""
        regular = [f for f in self.files if not f.path.endswith(".sf") and f.blocks]
        runs = self.free_runs()
        return {
            "blocks_total": self.total,
            "blocks_used": self.used,
            "blocks_free": self.total - self.used,
            "files_with_blocks": len(regular),
            "file_extents": sum(len(f.extents) for f in regular),
            "fragmented_files": sum(len(f.extents) > 1 for f in regular),
            "free_runs": len(runs),
            "largest_free_run": max((n for _, n in runs), default=0),
        }


def build_map(volume: Volume) -> AllocationMap:
    """The owner of every file block of ``volume`` (read only)."""
    codec = volume.geometry.codec
    total, _ = volume.resources[R.RES_FB].usage()
    kinds = [FREE] * total
    owner = [-1] * total
    files: list[FileExtents] = []

    def claim(file_index: int, block: int, kind: str) -> None:
        if 0 <= block < total:
            kinds[block] = kind
            owner[block] = file_index

    seen: set[int] = set()
    pending: list[tuple[str, int]] = [("/", volume.root_address)]
    while pending:
        path, address = pending.pop()
        if address in seen:
            continue
        seen.add(address)
        fd = volume.read_fd(address)
        entry = FileExtents(path, address=address)
        files.append(entry)
        system = path.endswith(".sf") and posixpath.dirname(path) == "/"
        kind = POINTER if path in POINTER_FILES else SYSTEM if system else FILE
        if not fd.is_resident:
            for index, a, is_pointer in BlockMap(fd).references():
                if is_pointer or A.kind(a) != A.ADDR_FB:
                    continue
                block, tbz = codec.fb_block(a), codec.fb_tbz(a)
                entry.blocks.append((index if index is not None else -1, block, tbz))
                claim(len(files) - 1, block, TBZ if tbz and kind == FILE else kind)
        if fd.is_dir:
            for e in open_directory(volume, fd).entries():
                pending.append((posixpath.join(path, e.name), e.address))
    for slot in read_slots(volume):
        journal = slot.hb.journalAddr if slot.in_use else 0
        if journal and A.kind(journal) == A.ADDR_FB:
            files.append(FileExtents(f"journal of heartbeat slot {slot.slot}"))
            block = codec.fb_block(journal)
            files[-1].blocks.append((0, block, False))
            claim(len(files) - 1, block, SYSTEM)
    return AllocationMap(total, volume.geometry.block_size, kinds, owner, files)
