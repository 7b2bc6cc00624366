"""The heartbeat region as it lies on disk: one slot per host (vmfs-format.md 4).

Reading only: who holds a slot, its generation, stamp and journal.  Claiming, renewing and
releasing a slot is the cluster layer's job (:mod:`vmfs.cluster.heartbeat`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from construct import Container, Int32ul

from vmfs.ondisk.common import SECTOR, decode_name, fast
from vmfs.ondisk.heartbeat import HB_IN_USE, HEARTBEAT_REGION_OFFSET, Heartbeat

if TYPE_CHECKING:
    from vmfs.volume.volume import Volume


_IN_USE = Int32ul.build(HB_IN_USE)


@dataclass
class SlotView:
    """One slot as read.  ``hb`` is parsed on first use: a claim looks at 2,048 slots and needs
    the fields of a handful (in use is the first word), and parsing them all cost ~55 ms per mount."""

    slot: int
    addr: int
    raw: bytes

    @cached_property
    def hb(self) -> Container:
        return fast(Heartbeat).parse(self.raw)

    @property
    def in_use(self) -> bool:
        return self.raw[:4] == _IN_USE

    @property
    def owner(self) -> str:
        return self.hb.owner

    @property
    def journal_vol_addr(self) -> int:
        return self.hb.journalVolAddr

    @property
    def ip(self) -> str:
        return decode_name(self.hb.ip)


def read_slot(volume: Volume, slot: int) -> SlotView:
    addr = volume.geometry.hb_slot_addr(slot)
    raw = volume.device.read(addr, SECTOR)
    return SlotView(slot, addr, raw)


def read_slots(volume: Volume, *, in_use_only: bool = False) -> list[SlotView]:
    """Every heartbeat slot (or only those in use: the state word is checked before parsing, as
    a renewal thread looks at the whole region every period)."""
    geo = volume.geometry
    raw = volume.device.read(HEARTBEAT_REGION_OFFSET, geo.heartbeat_region_size)
    views = []
    for i in range(geo.hb_slots):
        start = i * geo.hb_slot_size
        if in_use_only and raw[start : start + 4] != _IN_USE:
            continue
        views.append(SlotView(i, geo.hb_slot_addr(i), raw[start : start + SECTOR]))
    return views
