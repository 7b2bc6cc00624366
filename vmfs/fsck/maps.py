"""Block maps as the checker sees them: which address kinds each level of a map may hold, whether
an address names an existing resource, and the key (resource type, cluster, resource) that pass 2
records ownership under and pass 5 compares with the bitmaps (vmfs-format.md 7, 8.5, 8.6).

VMFS5 file blocks are keyed like the ``.fbb.sf`` bitmap sees them: (FB, block div rpc, block mod
rpc); VMFS6 SFB addresses carry their cluster and resource already.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vmfs.format import address as A
from vmfs.ondisk import filedesc as F
from vmfs.ondisk import resource as R
from vmfs.ondisk.common import unpack_ints

if TYPE_CHECKING:
    from vmfs.device.base import BlockDevice
    from vmfs.fsck.context import ResKey
    from vmfs.volume.filereader import FileReader
    from vmfs.volume.volume import Volume

RES_OF_KIND = {A.ADDR_SB: R.RES_SB, A.ADDR_PB: R.RES_PB, A.ADDR_PB2: R.RES_PB2, A.ADDR_FD: R.RES_FD}
RESOURCE_LABEL = {
    R.RES_FB: "FB",
    R.RES_SB: "SB",
    R.RES_PB: "PB",
    R.RES_FD: "FD",
    R.RES_PB2: "PB2",
    R.RES_JB: "JB",
    R.RES_LFB: "LFB",
}

DATA = "data"
POINTERS = "pointers"


@dataclass(frozen=True)
class Levels:
    """The shape of one FD's map: the kinds allowed at each level, top first."""

    kinds: tuple[frozenset[int], ...]
    roles: tuple[str, ...]
    spans: tuple[int, ...]  # file blocks covered by one entry at each level


class MapRules:
    def __init__(self, volume: Volume) -> None:
        self.volume = volume
        self.geo = geo = volume.geometry
        self.codec = geo.codec
        self.n = geo.ptrs_per_pb
        res = volume.resources
        self.fb = res[R.RES_FB]
        self.lfb = res.get(R.RES_LFB)
        if geo.vmfs6:
            data = frozenset({A.ADDR_FB, A.ADDR_LFB})
            pbs = frozenset({A.ADDR_PB, A.ADDR_PB2, A.ADDR_SB, A.ADDR_FB})
        else:
            data = frozenset({A.ADDR_FB})
            pbs = frozenset({A.ADDR_PB, A.ADDR_PB2})
        sb = frozenset({A.ADDR_SB})
        pb2 = frozenset({A.ADDR_PB2})
        n = self.n
        self.levels = {
            F.ZLA_FILE_BLOCKS: Levels((data,), (DATA,), (1,)),
            F.ZLA_SUB_BLOCKS: Levels((sb,), (DATA,), (1,)),
            F.ZLA_POINTER_BLOCKS: Levels((pbs, data), (POINTERS, DATA), (n, 1)),
            F.ZLA_POINTER2_BLOCKS: Levels((pb2, data), (POINTERS, DATA), (n, 1)),
            F.ZLA_DOUBLE_INDIRECT: Levels((pbs, pbs, data), (POINTERS, POINTERS, DATA), (n * n, n, 1)),
        }

    def key(self, address: int) -> ResKey | None:
        """The resource an address names, or None when no such resource exists."""
        kind = address & 7
        codec = self.codec
        if kind == A.ADDR_FB:
            if self.geo.vmfs6:
                _, c, r = codec.split(address)
                ok = c < self.fb.num_clusters and r < self.fb.rpc and c * self.fb.rpc + r < self.fb.num_resources
                return (R.RES_FB, c, r) if ok else None
            block = codec.fb_block(address)
            if block >= self.fb.num_resources:
                return None
            return (R.RES_FB, *divmod(block, self.fb.rpc))
        if kind == A.ADDR_LFB:
            if self.lfb is None:
                return None
            number = (address >> 15) & 0x7FFFFFFF
            if number >= self.lfb.num_resources:
                return None
            return (R.RES_LFB, *divmod(number, self.lfb.rpc))
        rk = RES_OF_KIND.get(kind)
        if rk is None or rk not in self.volume.resources:
            return None
        res = self.volume.resources[rk]
        _, c, r = codec.split(address)
        if c >= res.num_clusters or r >= res.rpc or c * res.rpc + r >= res.num_resources:
            return None
        return (rk, c, r)

    def is_tbz(self, address: int) -> bool:
        return address & 7 in (A.ADDR_FB, A.ADDR_LFB) and self.codec.fb_tbz(address)

    def describe(self, address: int) -> str:
        try:
            return self.codec.describe(address)
        except ValueError:
            return f"0x{address:x}"

    # -- reading and writing pointer blocks ---------------------------------------------------

    def pb_location(self, address: int) -> int:
        """Volume offset of the pointer block ``address`` (already known to be valid)."""
        kind = address & 7
        if kind == A.ADDR_FB:
            return self.codec.fb_block(address) * self.geo.block_size
        _, c, r = self.codec.split(address)
        return self.volume.resources[RES_OF_KIND[kind]].volume_offset(c, r)

    def read_pb(self, address: int, read=None) -> list[int]:  # type: ignore[no-untyped-def]
        read = read or self.volume.device.read
        return list(unpack_ints(read(self.pb_location(address), self.geo.pb_size), self.geo.addr_width))

    def data_location(self, address: int) -> tuple[int, int]:
        """(volume offset, length) of a data block (FB, SB; LFB on VMFS6)."""
        kind = address & 7
        geo = self.geo
        if kind == A.ADDR_SB:
            _, c, r = self.codec.split(address)
            return self.volume.resources[R.RES_SB].volume_offset(c, r), geo.sub_block_size
        if kind == A.ADDR_LFB:
            return ((address >> 15) & 0x7FFFFFFF) * geo.lfb_size, geo.lfb_size
        return self.codec.fb_block(address) * geo.block_size, geo.block_size


Runs = list[tuple[int, int, "int | None"]]


def read_raw(reader: FileReader, raw: BlockDevice, offset: int, length: int) -> tuple[bytes, Runs]:
    """Bytes [offset, offset+length) of a (system) file as they are on disk, not as the library's
    patched view shows them; with the runs (file offset, length, volume offset or None)."""
    length = max(0, min(length, reader.size - offset))
    runs = list(reader.extents(offset, length)) if length else []
    out = bytearray()
    for _, n, loc in runs:
        out += bytes(n) if loc is None else raw.read(loc, n)
    return bytes(out), runs


def run_offset(runs: Runs, pos: int) -> int | None:
    """Volume offset of file offset ``pos`` within ``runs`` (None: a hole)."""
    for start, n, loc in runs:
        if start <= pos < start + n:
            return None if loc is None else loc + pos - start
    return None


def key_label(key: ResKey, fb_rpc: int) -> str:
    kind, c, r = key
    if kind == R.RES_FB:
        return f"FB {c * fb_rpc + r}"
    return f"{RESOURCE_LABEL[kind]} c{c} r{r}"


def ranges(values: list[int], limit: int = 12) -> str:
    """'3-7, 12, 20-21' (at most ``limit`` runs, then '...')."""
    values = sorted(values)
    runs: list[tuple[int, int]] = []
    for v in values:
        if runs and v == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], v)
        else:
            runs.append((v, v))
    parts = [f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:limit]]
    if len(runs) > limit:
        parts.append("...")
    return ", ".join(parts)
