"""Block addresses: bit-packed integers whose low three bits name their kind (vmfs-format.md 7).

Each codec has ``parse``-style accessors (integer in, fields out, no objects on the hot path) and
``make_*`` constructors that are their exact inverses.  VMFS3/5 pointers are 32-bit; VMFS6 block
pointers are 64-bit while FD addresses stay 32-bit.

VMFS3/5, 32 bits (LSB = bit 0)::

    FB   | block:26 (6-31)                  | TBZ:1 (5) | COW:1 (4) | -:1 | type=1 |
    SB   | res lo:4 (28-31) | cluster:22 (6-27) | COW (5) | res hi:2 (3-4)*  | type=2 |
    PB   | res:4 (28-31)    | cluster:22 (6-27) | COW (5) | -:2               | type=3/5 |
    FD   | res:10 (22-31)   | cluster:16 (6-21) | -:3                        | type=4 |
    (* only on volumes with the DENSE_SBPC config flag)

VMFS6, 64 bits::

    SFB  | res:13 (51-63) | ?:5 | cluster:31 (15-45) | TBZ map:8 (7-14) | - | COW (5) | -:2 | type=1 |
    SB/PB/PB2 | res:8 (56-63) | ?:14 (42-55) | cluster:36 (6-41) | COW (5) | -:2 | type |
    LFB  | -:18 | number:31 (15-45) | TBZ map:8 (7-14) | - | COW (5) | -:2 | type=7 |
    JB   (32-bit) | res:6 (26-31) | ?:10 | cluster:13 (3-15) | type=6 |
"""

from __future__ import annotations

from typing import NamedTuple

ADDR_NULL = 0
ADDR_FB = 1
ADDR_SB = 2
ADDR_PB = 3
ADDR_FD = 4
ADDR_PB2 = 5
ADDR_JB = 6
ADDR_LFB = 7

KIND_NAMES = {
    ADDR_NULL: "NULL",
    ADDR_FB: "FB",
    ADDR_SB: "SB",
    ADDR_PB: "PB",
    ADDR_FD: "FD",
    ADDR_PB2: "PB2",
    ADDR_JB: "JB",
    ADDR_LFB: "LFB",
}


def kind(address: int) -> int:
    return address & 7


class Resource(NamedTuple):
    """A decoded resource address: which resource file, cluster and resource inside it."""

    kind: int
    cluster: int
    resource: int


# --- FD addresses: identical on every version ---------------------------------------------------


def fd_split(address: int) -> tuple[int, int]:
    """(cluster, resource) of an FD address."""
    return (address >> 6) & 0xFFFF, (address >> 22) & 0x3FF


def make_fd(cluster: int, resource: int) -> int:
    return ADDR_FD | ((cluster & 0xFFFF) << 6) | ((resource & 0x3FF) << 22)


# --- JB addresses (VMFS6 journal blocks, 32-bit) --------------------------------------------------


def jb_split(address: int) -> tuple[int, int]:
    return (address >> 3) & 0x1FFF, (address >> 26) & 0x3F


def make_jb(cluster: int, resource: int) -> int:
    return ADDR_JB | ((cluster & 0x1FFF) << 3) | ((resource & 0x3F) << 26)


class AddressCodec5:
    """VMFS3/VMFS5 32-bit block addresses."""

    width = 4
    TBZ = 1 << 5
    COW = 1 << 4

    def __init__(self, dense_sbpc: bool = True) -> None:
        self.dense_sbpc = dense_sbpc

    # file blocks
    def fb_block(self, address: int) -> int:
        return address >> 6

    def fb_tbz(self, address: int) -> bool:
        return bool(address & self.TBZ)

    def make_fb(self, block: int, tbz: bool = False) -> int:
        if block >> 26:
            raise ValueError(f"file block {block} does not fit a VMFS5 address")
        return ADDR_FB | (block << 6) | (self.TBZ if tbz else 0)

    def clear_tbz(self, address: int) -> int:
        return address & ~self.TBZ

    # resources held in resource files
    def split(self, address: int) -> Resource:
        k = address & 7
        if k == ADDR_FD:
            c, r = fd_split(address)
        elif k == ADDR_SB:
            c = (address >> 6) & 0x3FFFFF
            r = (address >> 28) & 0xF
            if self.dense_sbpc:
                r |= ((address >> 3) & 3) << 4
        elif k in (ADDR_PB, ADDR_PB2):
            c = (address >> 6) & 0x3FFFFF
            r = (address >> 28) & 0xF
        elif k == ADDR_JB:
            c, r = jb_split(address)
        else:
            raise ValueError(f"address 0x{address:x} of kind {KIND_NAMES[k]} is not a resource")
        return Resource(k, c, r)

    def make(self, kind_: int, cluster: int, resource: int) -> int:
        if kind_ == ADDR_FD:
            return make_fd(cluster, resource)
        if kind_ == ADDR_JB:
            return make_jb(cluster, resource)
        if kind_ == ADDR_SB:
            limit = 64 if self.dense_sbpc else 16
            if resource >= limit or cluster >> 22:
                raise ValueError(f"SB c{cluster} r{resource} does not fit a VMFS5 address")
            hi = (resource >> 4) & 3
            return kind_ | (cluster << 6) | ((resource & 0xF) << 28) | (hi << 3)
        if kind_ in (ADDR_PB, ADDR_PB2):
            if resource >= 16 or cluster >> 22:
                raise ValueError(f"PB c{cluster} r{resource} does not fit a VMFS5 address")
            return kind_ | (cluster << 6) | (resource << 28)
        raise ValueError(f"cannot make a resource address of kind {kind_}")

    def describe(self, address: int) -> str:
        k = address & 7
        if address == 0:
            return "NULL"
        if k == ADDR_FB:
            flags = "".join(f for f, bit in (("T", self.TBZ), ("C", self.COW)) if address & bit)
            return f"FB {self.fb_block(address)}" + (f" [{flags}]" if flags else "")
        if k == ADDR_LFB:
            return f"LFB? 0x{address:x}"
        res = self.split(address)
        return f"{KIND_NAMES[k]} c{res.cluster} r{res.resource}"


class AddressCodec6:
    """VMFS6 64-bit block addresses (FD and JB addresses stay 32-bit)."""

    width = 8
    COW = 1 << 5
    TBZ_MASK = 0xFF << 7
    #: to be zeroed, the whole block: every bit of the TBZ bitmap, as make_fb(tbz=True) sets them
    TBZ = TBZ_MASK

    def __init__(self, sfb_rpc: int, lfb_shift: int) -> None:
        self.sfb_rpc = sfb_rpc
        self.lfb_shift = lfb_shift  # sfbToLfbShift: SFBs per LFB = 1 << shift

    def fb_block(self, address: int) -> int:
        """Volume block number of an SFB address, or of the first SFB of an LFB."""
        if address & 7 == ADDR_LFB:
            return ((address >> 15) & 0x7FFFFFFF) << self.lfb_shift
        cluster = (address >> 15) & 0x7FFFFFFF
        resource = (address >> 51) & 0x1FFF
        return cluster * self.sfb_rpc + resource

    def fb_tbz(self, address: int) -> bool:
        return bool(address & self.TBZ_MASK)

    def clear_tbz(self, address: int) -> int:
        return address & ~self.TBZ_MASK

    def make_fb(self, block: int, tbz: bool = False) -> int:
        cluster, resource = divmod(block, self.sfb_rpc)
        if cluster >> 31 or resource >> 13:
            raise ValueError(f"block {block} does not fit a VMFS6 SFB address")
        return ADDR_FB | (cluster << 15) | (resource << 51) | (self.TBZ_MASK if tbz else 0)

    def make_lfb(self, number: int, tbz: bool = False) -> int:
        return ADDR_LFB | ((number & 0x7FFFFFFF) << 15) | (self.TBZ_MASK if tbz else 0)

    def split(self, address: int) -> Resource:
        k = address & 7
        if k == ADDR_FD:
            c, r = fd_split(address)
        elif k in (ADDR_SB, ADDR_PB, ADDR_PB2):
            c = (address >> 6) & 0xFFFFFFFFF
            r = (address >> 56) & 0xFF
        elif k == ADDR_JB:
            c, r = jb_split(address)
        elif k == ADDR_FB:
            c = (address >> 15) & 0x7FFFFFFF
            r = (address >> 51) & 0x1FFF
        else:
            raise ValueError(f"address 0x{address:x} of kind {KIND_NAMES[k]} is not a resource")
        return Resource(k, c, r)

    def make(self, kind_: int, cluster: int, resource: int) -> int:
        if kind_ == ADDR_FD:
            return make_fd(cluster, resource)
        if kind_ == ADDR_JB:
            return make_jb(cluster, resource)
        if kind_ == ADDR_FB:
            return self.make_fb(cluster * self.sfb_rpc + resource)
        if kind_ in (ADDR_SB, ADDR_PB, ADDR_PB2):
            if resource >> 8 or cluster >> 36:
                raise ValueError(f"{KIND_NAMES[kind_]} c{cluster} r{resource} does not fit a VMFS6 address")
            return kind_ | (cluster << 6) | (resource << 56)
        raise ValueError(f"cannot make a resource address of kind {kind_}")

    def describe(self, address: int) -> str:
        k = address & 7
        if address == 0:
            return "NULL"
        flags = ("T" if self.fb_tbz(address) else "") + ("C" if address & self.COW else "")
        suffix = f" [{flags}]" if flags else ""
        if k == ADDR_FB:
            res = self.split(address)
            return f"SFB {self.fb_block(address)} (c{res.cluster} r{res.resource}){suffix}"
        if k == ADDR_LFB:
            return f"LFB {(address >> 15) & 0x7FFFFFFF}{suffix}"
        res = self.split(address)
        return f"{KIND_NAMES[k]} c{res.cluster} r{res.resource}"


AddressCodec = AddressCodec5 | AddressCodec6
