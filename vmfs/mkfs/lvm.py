"""The LVM5 metadata of one extent: device header, volume descriptor, SD table, PE map (section 2).

Everything is built through the declarations of :mod:`vmfs.ondisk.lvm`; offsets come from
:class:`vmfs.device.lvm.LvmLayout`, the reader's own calculation.
"""

from __future__ import annotations

from collections.abc import Iterator

from construct import Container

from vmfs.device.lvm import LvmLayout
from vmfs.format.builders import field_span, repeat_record
from vmfs.mkfs import layout6
from vmfs.mkfs.layout import LVM_MAJOR, LVM_MINOR, ExtentLayout, Layout
from vmfs.ondisk import lvm as L
from vmfs.ondisk.common import NULL_UUID, SECTOR, encode_name

#: Generations ESXi wrote on the fresh sample (2.2: device 3, 2.4: volume 2) [V5].
DEVICE_GENERATION = 3
VOLUME_GENERATION = 2
LV_SNAP_ID = 1
VOLUME_ID = 0
PE_VERSION = 1
DISK_ID_LEN = 44


def device_total_bytes(device_size: int) -> int:
    """``totalBytes`` as both samples have it: device size - 1 MiB + 512 (2.2, [O])."""
    return device_size - L.LVM_HEADER_OFFSET + SECTOR


def lvm_pieces(layout: Layout, extent: ExtentLayout) -> Iterator[tuple[int, bytes]]:
    """(device offset, bytes) of the LVM metadata of ``extent``, in increasing offsets."""
    opts = layout.options
    v6 = layout.version == 6
    major, minor = (layout6.LVM_MAJOR, layout6.LVM_MINOR) if v6 else (LVM_MAJOR, LVM_MINOR)
    md = layout6.MD_ALIGNMENT if v6 else 0
    lay = LvmLayout.for_header(major, md)
    now = opts.creation_time_us
    ident = extent.name.encode()[:DISK_ID_LEN]
    header = L.LvmDeviceHeader.build(
        Container(
            magic=L.LVM_MAGIC,
            majorVersion=major,
            minorVersion=minor,
            diskId=Container(
                type=0, len=len(ident), lun=0, deviceType=0, scsiLevel=0,
                vendor=bytes(8), model=bytes(16), revision=bytes(4),
                id=ident + bytes(DISK_ID_LEN - len(ident)),
            ),
            diskBlockSize=SECTOR,
            totalBytes=device_total_bytes(extent.device_size),
            numVolumes=1,
            numPEs=extent.pe_count,
            lastPEIndex=extent.pe_count - 1,
            generation=DEVICE_GENERATION,
            dataOffset=extent.data_offset,
            devId=extent.device_uuid,
            initTimeUS=now,
            modTimeUS=now,
            lockedBy=NULL_UUID,
            lockedWhenUS=0,
            unknownBA=0,
            numPEMaps=0 if v6 else 1,  # the VMFS6 sample has 0 [V6]
            extDevMetadataOffset=0,
            mdAlignment=md,
            numPEs6=extent.segments if v6 else 0,
            flags=0,
            reserved=bytes(0x200 - 0xD6),
        )
    )
    yield L.LVM_HEADER_OFFSET, header
    volume = L.LvmVolumeDescriptor.build(
        Container(
            logicalSize=layout.volume_size,
            generation=VOLUME_GENERATION,
            state=L.VOLUME_STATE_NORMAL,
            name=encode_name(opts.lv_uuid or "", 64),
            lvId=opts.lv_uuid,
            snapId=LV_SNAP_ID,
            creationTimeUS=now,
            volumeId=VOLUME_ID,
            numPEs=extent.segments,
            firstPE=extent.first_segment,
            lastPE=extent.last_segment,
            modTimeUS=now,
            numDevs=len(layout.extents),
            reserved94=bytes(0x110 - 0x94),
            consumedPEs=1 if v6 else 0,  # [V6]: 1 on the VMFS6 sample, 0 on the VMFS5 one
            reserved114=bytes(0x200 - 0x114),
        )
    )
    yield lay.volume_table, volume
    if extent.index == 0:  # devZero alone names the devices (2.3)
        yield lay.sd_table, b"".join(encode_name(e.name, L.SD_ENTRY_SIZE) for e in layout.extents)
    yield lay.pe_bitmap, used_bitmap(extent.pe_count, lay.pe_bitmap_size)
    yield lay.pe_table, pe_table(layout, extent)


def used_bitmap(count: int, size: int) -> bytes:
    """Bits 0..count-1 set, LSB first (the PE bitmap: set = entry used)."""
    full, rest = divmod(count, 8)
    bits = b"\xff" * full + (bytes([(1 << rest) - 1]) if rest else b"")
    return bits + bytes(size - len(bits))


def pe_table(layout: Layout, extent: ExtentLayout) -> bytes:
    """The used PE table entries: one template built once, the four varying fields stamped in.

    ``peId`` numbers the entries across the whole volume (devZero first) [U: ESXi's rule for
    peId is not in the samples, which have one entry]."""
    first_id = sum(e.pe_count for e in layout.extents[: extent.index])
    template = L.LvmPeEntry.build(
        Container(used=1, peId=0, volumeId=VOLUME_ID, pOffset=0, lOffset=0, length=0, version=PE_VERSION,
                  reserved=bytes(L.PE_ENTRY_SIZE - 0x25))
    )
    entries = extent.pe_entries()
    columns = []
    for name, values in (
        ("peId", [first_id + i for i in range(len(entries))]),
        ("pOffset", [p for p, _, _ in entries]),
        ("lOffset", [lo for _, lo, _ in entries]),
        ("length", [n for _, _, n in entries]),
    ):
        offset, decl = field_span(L.LvmPeEntry, name)
        columns.append((offset, decl, values))
    return bytes(repeat_record(template, len(entries), columns))
