"""The VMFS logical volume manager: devices (extents) to one logical volume (vmfs-format.md 2).

A device starts with the LVM header at 1 MiB; its PE table maps ranges of the logical volume to
ranges of the device.  A spanned volume is assembled from several devices, given in any order,
by matching the LV UUID and ordering the PE ranges.  The result is itself a :class:`BlockDevice`
whose offsets are volume offsets, so everything above never sees devices again.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from construct import ConstructError

from vmfs.device.base import BlockDevice
from vmfs.errors import CorruptError, DeviceError, NotVmfsError, VmfsError
from vmfs.ondisk import lvm as L
from vmfs.ondisk.common import decode_name
from vmfs.ondisk.fsdesc import FS_DESCRIPTOR_OFFSET, FS_MAGIC, FSL_MAGIC


@dataclass
class PeMapping:
    l_offset: int
    length: int
    device: LvmDevice
    p_offset: int
    pe_id: int


@dataclass
class LvmLayout:
    """Device offsets of the LVM tables for one header (section 2.3)."""

    dm_size: int
    max_volumes: int
    volume_table: int
    sd_table: int
    pe_bitmap: int
    pe_bitmap_size: int
    pe_table: int

    @property
    def pe_map_stride(self) -> int:
        return self.pe_bitmap_size + L.PES_PER_MAP * L.PE_ENTRY_SIZE

    @classmethod
    def for_header(cls, major: int, md_alignment: int) -> LvmLayout:
        base = L.LVM_HEADER_OFFSET
        if major >= 6:
            dm = md_alignment or 0x1000
            mv = 1
            bitmap_size = max(dm, 1024)
        else:
            dm = 512
            mv = 512
            bitmap_size = 1024
        volume_table = base + dm
        reserved = (1024 - mv) * 512 - L.SD_ENTRIES * L.SD_ENTRY_SIZE
        sd_table = volume_table + mv * L.VOLUME_DESCRIPTOR_SIZE + reserved
        pe_bitmap = sd_table + L.SD_ENTRIES * L.SD_ENTRY_SIZE
        return cls(dm, mv, volume_table, sd_table, pe_bitmap, bitmap_size, pe_bitmap + bitmap_size)


@dataclass
class LvmDevice:
    """One device (extent) with its parsed LVM metadata."""

    device: BlockDevice
    header: object
    volume: object  # the volume descriptor of the (single) VMFS logical volume
    layout: LvmLayout
    pe_entries: list[tuple[int, object]] = field(default_factory=list)  # (device offset, entry)
    sd_names: list[str] = field(default_factory=list)

    @property
    def major(self) -> int:
        return self.header.majorVersion  # type: ignore[attr-defined]

    @property
    def lv_key(self) -> tuple[str, int]:
        return (self.volume.lvId, self.volume.snapId)  # type: ignore[attr-defined]

    @classmethod
    def probe(cls, device: BlockDevice) -> LvmDevice:
        if device.size < L.LVM_HEADER_OFFSET + 512:
            raise NotVmfsError(f"{device.name}: too small to hold a VMFS LVM header ({device.size} bytes)")
        raw = device.read(L.LVM_HEADER_OFFSET, 512)
        header = L.LvmDeviceHeader.parse(raw)
        if header.magic != L.LVM_MAGIC:
            raise NotVmfsError(
                f"{device.name}: no VMFS LVM header (magic 0x{header.magic:08x} at 0x{L.LVM_HEADER_OFFSET:x})"
            )
        if header.majorVersion not in (3, 5, 6):
            raise NotVmfsError(f"{device.name}: unsupported LVM version {header.majorVersion}")
        layout = LvmLayout.for_header(header.majorVersion, header.mdAlignment)
        where = "LVM volume table"
        try:
            volumes = []
            count = min(max(header.numVolumes, 1), layout.max_volumes)
            for i in range(count):
                off = layout.volume_table + i * L.VOLUME_DESCRIPTOR_SIZE
                vol = L.LvmVolumeDescriptor.parse(device.read(off, L.VOLUME_DESCRIPTOR_SIZE))
                if vol.state != L.VOLUME_STATE_INVALID and vol.logicalSize:
                    volumes.append(vol)
            if not volumes:
                raise CorruptError(where, layout.volume_table, "no valid logical volume on the device")
            this = cls(device, header, volumes[0], layout)
            where = "LVM SD table"
            sd = device.read(layout.sd_table, L.SD_ENTRIES * L.SD_ENTRY_SIZE)
            this.sd_names = [
                decode_name(sd[i : i + L.SD_ENTRY_SIZE])
                for i in range(0, len(sd), L.SD_ENTRY_SIZE)
                if sd[i]
            ]
            where = "LVM PE table"
            this._read_pe_maps(L.LVM_HEADER_OFFSET, max(header.numPEMaps, 1))
            ext = header.extDevMetadataOffset
            seen = set()
            while ext:
                if ext in seen or ext + 512 > device.size:
                    raise CorruptError("LVM extended metadata", ext, "bad or looping region offset")
                seen.add(ext)
                em = L.LvmExtDevMetadata.parse(device.read(ext, 512))
                if em.magic != L.LVM_MAGIC:
                    raise CorruptError("LVM extended metadata", ext, f"bad magic 0x{em.magic:08x}")
                this._read_pe_maps(ext, max(em.numPEMaps, 1))
                ext = em.nextOffset
        except DeviceError as exc:
            raise CorruptError(where, None, f"{device.name} is truncated ({exc})") from None
        except ConstructError as exc:  # pragma: no cover - fixed-size parses of full buffers
            raise CorruptError(where, None, str(exc)) from None
        return this

    def _read_pe_maps(self, region: int, count: int) -> None:
        if count > 64:
            raise CorruptError("LVM header", region, f"implausible PE map count {count}")
        lay = self.layout
        for m in range(count):
            bitmap_at = region + (lay.pe_bitmap - L.LVM_HEADER_OFFSET) + m * lay.pe_map_stride
            table_at = bitmap_at + lay.pe_bitmap_size
            bitmap = self.device.read(bitmap_at, 1024)
            for byte_index, byte in enumerate(bitmap):
                if not byte:
                    continue
                for bit in range(8):
                    if byte >> bit & 1:
                        i = byte_index * 8 + bit
                        off = table_at + i * L.PE_ENTRY_SIZE
                        entry = L.LvmPeEntry.parse(self.device.read(off, L.PE_ENTRY_SIZE))
                        if entry.used:
                            self.pe_entries.append((off, entry))


class LogicalVolume(BlockDevice):
    """The byte space of one VMFS logical volume, spread over one or more devices."""

    def __init__(self, devices: list[LvmDevice] | None, *, bare: BlockDevice | None = None) -> None:
        self.devices = devices or []
        self.bare = bare
        first = bare if bare is not None else self.devices[0].device
        super().__init__(readonly=first.readonly)
        self.name = first.name
        self._maps: list[PeMapping] = []
        self._starts: list[int] = []
        if bare is not None:
            self._size = bare.size
            self._maps = [PeMapping(0, bare.size, None, 0, 0)]  # type: ignore[arg-type]
        else:
            self._assemble()
        self._starts = [m.l_offset for m in self._maps]

    # -- assembly -------------------------------------------------------------------------------

    def _assemble(self) -> None:
        dev0 = self.devices[0]
        key = dev0.lv_key
        vol0 = dev0.volume
        for d in self.devices:
            if d.lv_key != key:
                raise NotVmfsError(
                    f"{d.device.name} belongs to logical volume {d.lv_key[0]}, not {key[0]}"
                )
        num_devs = max(getattr(vol0, "numDevs", 1), 1)
        if len(self.devices) != num_devs:
            names = ", ".join(d.device.name for d in self.devices)
            raise NotVmfsError(
                f"logical volume {key[0]} has {num_devs} extents but {len(self.devices)} were given ({names})"
            )
        if not any(d.volume.firstPE == 0 for d in self.devices):  # type: ignore[attr-defined]
            raise NotVmfsError(f"logical volume {key[0]}: the first extent (devZero) is missing")
        self._size = vol0.logicalSize  # type: ignore[attr-defined]
        volume_id = vol0.volumeId  # type: ignore[attr-defined]
        maps = []
        for d in self.devices:
            for off, e in d.pe_entries:
                if e.volumeId != volume_id:
                    continue
                if e.pOffset + e.length > d.device.size:
                    raise CorruptError(
                        "LVM PE table",
                        off,
                        f"{d.device.name} is truncated: PE {e.peId} needs {e.pOffset + e.length} bytes, "
                        f"the device has {d.device.size}",
                    )
                maps.append(PeMapping(e.lOffset, e.length, d, e.pOffset, e.peId))
        maps.sort(key=lambda m: m.l_offset)
        pos = 0
        for m in maps:
            if m.l_offset != pos or m.length <= 0:
                raise CorruptError(
                    "LVM PE table", None, f"logical volume {key[0]}: hole or overlap at volume offset 0x{pos:x}"
                )
            pos += m.length
        if pos < self._size:
            raise CorruptError(
                "LVM PE table", None, f"logical volume {key[0]}: PEs cover 0x{pos:x} of 0x{self._size:x} bytes"
            )
        self._maps = maps

    # -- BlockDevice ------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._size

    def _segments(self, offset: int, length: int):  # type: ignore[no-untyped-def]
        i = bisect.bisect_right(self._starts, offset) - 1
        while length > 0:
            m = self._maps[i]
            within = offset - m.l_offset
            n = min(length, m.length - within)
            dev = self.bare if self.bare is not None else m.device.device
            yield dev, m.p_offset + within, n
            offset += n
            length -= n
            i += 1

    def _read(self, offset: int, length: int) -> bytes:
        parts = [dev.read(p, n) for dev, p, n in self._segments(offset, length)]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _write(self, offset: int, data: bytes) -> None:
        pos = 0
        for dev, p, n in self._segments(offset, len(data)):
            dev.write(p, data[pos : pos + n])
            pos += n

    def _compare_and_write(self, offset: int, expected: bytes, new: bytes) -> bool:
        segs = list(self._segments(offset, len(new)))
        if len(segs) != 1:
            raise VmfsError("atomic test-and-set may not cross an extent boundary")
        dev, p, _ = segs[0]
        return dev.compare_and_write(p, expected, new)

    def flush(self) -> None:
        for dev in self.underlying:
            dev.flush()

    def close(self) -> None:
        for dev in self.underlying:
            dev.close()

    def leaves(self) -> list[BlockDevice]:
        return [leaf for dev in self.underlying for leaf in dev.leaves()]

    @property
    def underlying(self) -> list[BlockDevice]:
        return [self.bare] if self.bare is not None else [d.device for d in self.devices]

    def device_offset(self, offset: int) -> tuple[str, int]:
        """(device name, device offset) of a volume offset, for debugging output."""
        dev, p, _ = next(self._segments(offset, 1))
        return dev.name, p

    @property
    def pe_maps(self) -> list[PeMapping]:
        return list(self._maps)


def open_logical_volume(devices: list[BlockDevice]) -> LogicalVolume:
    """Assemble a logical volume from its devices, given in any order.

    A single device without an LVM header but with an FS descriptor at 2 MiB is taken as a bare
    volume (an image of ``/dev/lvm`` or of a volume already assembled by ESXi).
    """
    if not devices:
        raise NotVmfsError("no device given")
    probed = []
    for dev in devices:
        try:
            probed.append(LvmDevice.probe(dev))
        except NotVmfsError:
            if len(devices) == 1 and _looks_bare(dev):
                return LogicalVolume(None, bare=dev)
            raise
    return LogicalVolume(probed)


def _looks_bare(dev: BlockDevice) -> bool:
    if dev.size < FS_DESCRIPTOR_OFFSET + 512:
        return False
    magic = int.from_bytes(dev.read(FS_DESCRIPTOR_OFFSET, 4), "little")
    return magic in (FS_MAGIC, FSL_MAGIC)
