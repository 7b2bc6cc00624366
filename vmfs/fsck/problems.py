"""The problem table of vmfs-fsck, in the manner of e2fsck's ``problem.c``.

Every inconsistency the checker can report is one row: a code whose high byte is the pass that
finds it (0x02xxxx = pass 2), a message template filled from the facts the pass gives
(``ctx.problem(Code.FD_BAD_ADDRESS, fd="0x2400004", ...)``), the fix that a "yes" answer performs and
flags.  Passes never print and never decide whether to repair: they call ``ctx.problem`` and act
only when it returns True; the -n/-y/-p answers live in :mod:`vmfs.fsck.policy`.

Flags:

* ``PREEN_OK``: safe to fix without asking in preen mode (-p), as e2fsck's PR_PREEN_OK: counts,
  leaked resources, slots left by a host that is gone.  Anything else stops a preen run.
* ``FATAL``: the check cannot go on (the volume cannot be opened or walked); never fixed.
* ``NO_FIX``: reported only, never repaired.
* ``V6``: its repair is also made on VMFS6 (and the corpus proves it there,
  tests/fsck/test_corpus6.py); a problem without it is reported on VMFS6 and left alone.

``tests/fsck/test_problems.py`` checks that codes are unique and sorted, that every template
names only facts the passes supply, and that every code is hit by a corruption case.
"""

from __future__ import annotations

import enum
import string
from dataclasses import dataclass


class Flag(enum.Flag):
    NONE = 0
    PREEN_OK = enum.auto()
    FATAL = enum.auto()
    NO_FIX = enum.auto()
    V6 = enum.auto()


@enum.unique
class Code(enum.IntEnum):
    """Problem codes: pass number in the high byte, as e2fsck's."""

    FS_DESCRIPTOR_BAD = 0x010001
    SYSTEM_FD_BAD = 0x010002
    RESOURCE_HEADER_BAD = 0x010003
    RESOURCE_HEADER_LOST = 0x010004
    HB_SLOT_BAD = 0x010005
    FD_HEADER_DAMAGED = 0x020001
    FD_SLOT_GARBAGE = 0x020002
    FD_BAD_KIND = 0x020003
    FD_BAD_FIELD = 0x020004
    FD_BAD_ADDRESS = 0x020005
    FD_PB_CYCLE = 0x020006
    FD_SHARED_BLOCKS = 0x020007
    FD_SIZE_BEYOND_MAP = 0x020008
    FD_BLOCKS_PAST_EOF = 0x020009
    FD_COUNT_WRONG = 0x02000A
    SYMLINK_BAD_TARGET = 0x02000B
    DIR_BAD_SIZE = 0x030001
    DIR_BAD_DOT = 0x030002
    DIR_NO_DOTDOT = 0x030003
    DIRENT_BAD_ADDRESS = 0x030004
    DIRENT_FREE_FD = 0x030005
    DIRENT_BAD_TYPE = 0x030006
    DIRENT_BAD_GENERATION = 0x030007
    DIRENT_BAD_NAME = 0x030008
    DIRENT_DUPLICATE = 0x030009
    DIR6_DAMAGED = 0x03000A
    DIR_MULTIPLE_PARENTS = 0x040001
    DIR_BAD_DOTDOT = 0x040002
    ORPHAN_DIR = 0x040003
    ORPHAN_FILE = 0x040004
    ORPHAN_EMPTY = 0x040005
    SYSTEM_FILE_UNLINKED = 0x040006
    LINK_COUNT_WRONG = 0x040007
    BITMAP_USED_MARKED_FREE = 0x050001
    BITMAP_FREE_MARKED_USED = 0x050002
    CLUSTER_FREE_COUNT = 0x050003
    CLUSTER_HEADER_BAD = 0x050004
    JOURNAL_REPLAY = 0x060001
    HB_STALE = 0x060002
    LOCK_STALE = 0x060003


@dataclass(frozen=True)
class Problem:
    code: Code
    message: str  # str.format template over the facts
    fix: str  # what "yes" does, as a question: "Clear it", "Free them"...
    flags: Flag = Flag.NONE

    @property
    def name(self) -> str:
        return self.code.name

    @property
    def pass_number(self) -> int:
        return self.code >> 16

    def fields(self) -> set[str]:
        return {f for _, f, _, _ in string.Formatter().parse(self.message) if f}

    def format(self, facts: dict[str, object]) -> str:
        return self.message.format_map(_Facts(facts))

    def format_fix(self, facts: dict[str, object]) -> str:
        return self.fix.format_map(_Facts(facts))

    def fix_fields(self) -> set[str]:
        return {f for _, f, _, _ in string.Formatter().parse(self.fix) if f}


class _Facts(dict):
    """Missing facts print as '?' instead of raising (a message must never crash the checker)."""

    def __missing__(self, key: str) -> str:
        return "?"


_P = Problem
PREEN = Flag.PREEN_OK
V6 = Flag.V6

TABLE: tuple[Problem, ...] = (
    # -- pass 1: LVM, FS descriptor, system files, resource file headers, heartbeat region ------------
    _P(Code.FS_DESCRIPTOR_BAD, "FS descriptor at volume 0x200000: {detail}", "", Flag.FATAL),
    _P(Code.SYSTEM_FD_BAD, "system file {name} (FD {fd}): {detail}", "", Flag.FATAL),
    _P(Code.RESOURCE_HEADER_BAD, "{file} resource header: {detail}",
       "Rebuild it from the cluster headers ({rebuilt})", V6),
    _P(Code.RESOURCE_HEADER_LOST, "{file}: {detail}", "", Flag.FATAL),
    _P(Code.HB_SLOT_BAD, "heartbeat slot {slot} (volume {addr}): {detail}", "Repair the slot ({action})",
       PREEN | V6),
    # -- pass 2: file descriptors and their block maps ------------------------------------------------
    _P(Code.FD_HEADER_DAMAGED, "FD {fd}: {field} is {value}, should be {expected}", "Fix it", V6),
    _P(Code.FD_SLOT_GARBAGE, "FD slot {fd} ({bit}) holds no valid file descriptor but is not empty",
       "Zero the slot", PREEN | V6),
    _P(Code.FD_BAD_KIND, "FD {fd}{path}: unknown {field} {value}", "Clear the descriptor", V6),
    _P(Code.FD_BAD_FIELD, "FD {fd}{path}: {field} is {value}, should be {expected}", "Set it", V6),
    _P(Code.FD_BAD_ADDRESS, "FD {fd}{path}: {where} holds {address} ({detail})", "Clear the address", V6),
    _P(Code.FD_PB_CYCLE, "FD {fd}{path}: pointer block {pb} refers to itself or to a pointer block above "
       "it ({where})", "Clear the entry", V6),
    _P(Code.FD_SHARED_BLOCKS, "FD {fd}{path}: {count} block(s) also used by {others}: {items}",
       "Give it its own copies", V6),
    _P(Code.FD_SIZE_BEYOND_MAP, "FD {fd}{path}: size {size} is more than its address mode ({mode}) maps "
       "({capacity})", "Set the size to {new_size}", V6),
    _P(Code.FD_BLOCKS_PAST_EOF, "FD {fd}{path}: {count} block(s) past the end of file (size {size}, "
       "last block ends at {end})", "{action}", V6),
    _P(Code.FD_COUNT_WRONG, "FD {fd}{path}: {field} is {value}, counted {counted}", "Fix the count", PREEN | V6),
    _P(Code.SYMLINK_BAD_TARGET, "symbolic link FD {fd}{path}: its target {target} holds a NUL byte at "
       "offset {offset} (no path can; a reader would cut it there)", "Clear the link", V6),
    # -- pass 3: directories ----------------------------------------------------------------------------
    _P(Code.DIR_BAD_SIZE, "directory {dir}: length {size} is not a multiple of the entry size {entry}",
       "Truncate it to {new_size}", V6),
    _P(Code.DIR_BAD_DOT, "directory {dir}: first entry is {found}, not '.' naming the directory itself",
       "Fix '.'", V6),
    _P(Code.DIR_NO_DOTDOT, "directory {dir}: second entry is {found}, not '..'", "Insert '..'", V6),
    _P(Code.DIRENT_BAD_ADDRESS, "directory {dir}: entry '{name}' holds {address}, {detail}",
       "Remove the entry", V6),
    _P(Code.DIRENT_FREE_FD, "directory {dir}: entry '{name}' points to FD {fd}, which is free",
       "Remove the entry", V6),
    _P(Code.DIRENT_BAD_TYPE, "directory {dir}: entry '{name}' says type {type}, its FD {fd} is {fd_type}",
       "Set the entry's type", V6),
    _P(Code.DIRENT_BAD_GENERATION, "directory {dir}: entry '{name}' has generation {generation}, its FD {fd} "
       "has {fd_generation}", "{action}", V6),
    _P(Code.DIRENT_BAD_NAME, "directory {dir}: entry {index} has an illegal name {name!r} ({detail})",
       "{action}", V6),
    _P(Code.DIRENT_DUPLICATE, "directory {dir}: name '{name}' appears more than once (FD {fd})",
       "{action}", V6),
    _P(Code.DIR6_DAMAGED, "directory {dir}: {detail}", "Make the directory anew from its entries", V6),
    # -- pass 4: connectivity and link counts -------------------------------------------------------
    _P(Code.DIR_MULTIPLE_PARENTS, "directory FD {fd} ({path}) is also entry '{name}' of {dir}",
       "Remove that entry", V6),
    _P(Code.DIR_BAD_DOTDOT, "'..' of {path} (FD {fd}) is {found}, should be {expected}", "Fix '..'", V6),
    _P(Code.ORPHAN_DIR, "directory FD {fd} is not connected to the tree", "Connect it to /lost+found", V6),
    _P(Code.ORPHAN_FILE, "{type} FD {fd} ({size} bytes) is in use but no directory names it",
       "Connect it to /lost+found", V6),
    _P(Code.ORPHAN_EMPTY, "empty {type} FD {fd} is in use but no directory names it", "Clear it", PREEN | V6),
    _P(Code.SYSTEM_FILE_UNLINKED, "system file {name} (FD {fd}) is missing from the root directory",
       "Link it again", V6),
    _P(Code.LINK_COUNT_WRONG, "{path} (FD {fd}): link count is {value}, counted {counted}", "Fix it", PREEN | V6),
    # -- pass 5: resource bitmaps and counts ---------------------------------------------------------
    _P(Code.BITMAP_USED_MARKED_FREE, "{resource}: {count} in use but marked free: {items}",
       "Mark them used", V6),
    _P(Code.BITMAP_FREE_MARKED_USED, "{resource}: {count} marked used but not in use: {items}",
       "Mark them free", PREEN | V6),
    _P(Code.CLUSTER_FREE_COUNT, "{file} cluster {cluster}: free count is {value}, counted {counted}",
       "Fix the count", PREEN | V6),
    _P(Code.CLUSTER_HEADER_BAD, "{file} cluster {cluster}: {field} is {value}, should be {expected}",
       "Fix the cluster header", V6),
    # -- pass 6: heartbeats, journals, locks ------------------------------------------------------------
    _P(Code.JOURNAL_REPLAY, "heartbeat slot {slot} (host {owner}, gone): its journal at {journal} holds "
       "a committed transaction ({records} records)", "Replay it", PREEN | V6),
    _P(Code.HB_STALE, "heartbeat slot {slot}: in use by host {owner} ({ip}), which is gone ({reason}); "
       "journal at {journal}", "Clear the slot and free its journal block{journal_note}", PREEN | V6),
    _P(Code.LOCK_STALE, "{object} is locked (mode {mode}) by host {owner}, which is gone ({reason})",
       "Release the lock", PREEN | V6),
)

BY_CODE: dict[int, Problem] = {p.code: p for p in TABLE}
