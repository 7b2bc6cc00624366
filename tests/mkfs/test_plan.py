"""The layout computation: the sample's geometry, the sizing policy, PE planning, bad input."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.mkfs.conftest import FIXED, GIB, MIB, TIB, image_for_lv
from vmfs.device.memory import MemoryDevice
from vmfs.errors import InvalidArgumentError, UnsupportedError, VmfsError
from vmfs.format import address as A
from vmfs.mkfs import MkfsOptions, format_volume, plan
from vmfs.mkfs.layout import DIRECT_BLOCKS
from vmfs.ondisk import filedesc as F
from vmfs.ondisk import resource as R
from vmfs.ondisk.lvm import PES_PER_MAP, SEGMENT_SIZE

SAMPLE_IMAGE_SIZE = 535822336  # vmfs-format.md 0: the VMFS5 sample's partition image


def geometry(layout, kind):  # type: ignore[no-untyped-def]
    r = layout.resource(kind)
    return r.rpc, r.cpg, r.cgo, r.rsz, r.count, r.cgs


def test_sample_sized_layout_is_the_samples() -> None:
    """vmfs-format.md 6.6, 8.2, 12.2, 12.3: geometry, FD places and block map of the sample."""
    lay = plan([SAMPLE_IMAGE_SIZE], FIXED)
    assert lay.volume_size == 256 * MIB
    assert geometry(lay, R.RES_FB) == (200, 64, 0x10000, 0, 256, 0x10000)
    assert geometry(lay, R.RES_SB) == (32, 64, 0x10000, 0x2000, 256, 0x1010000)
    assert geometry(lay, R.RES_PB) == (16, 64, 0x10000, 0x1000, 1, 0x410000)
    assert geometry(lay, R.RES_FD) == (32, 64, 0x10000, 0x800, 64, 0x410000)
    assert geometry(lay, R.RES_PB2) == (16, 64, 0x10000, 0x1000, 1, 0x410000)
    blocks = {f.name: (f.first_block, f.num_blocks, f.file_length) for f in lay.system_files}
    assert blocks == {
        ".vh.sf": (0, 4, 4194304),
        ".fdc.sf": (4, 1, 1048576),
        "/": (5, 1, 9 * 140),
        ".fbb.sf": (6, 1, 131072),
        ".pbc.sf": (7, 1, 135168),
        ".sbc.sf": (8, 3, 2228224),
        ".pb2.sf": (11, 1, 135168),
        ".sdd.sf": (12, 1, 280),
    }
    for f in lay.system_files:
        assert f.fd_address == A.make_fd(0, f.fd_index)
        assert f.fd_offset == 0x420000 + f.fd_index * 0x800
        assert f.zla == F.ZLA_FILE_BLOCKS
    assert lay.system_file(".pb2.sf").fd_offset == 0x423000  # pb2VolAddr of the sample
    assert lay.system_file(".sdd.sf").fd_offset == 0x423800  # sddVolAddr
    assert lay.geometry.fdc_start == 0x400000
    assert lay.used_blocks == 13


@pytest.mark.parametrize(
    ("lv", "fds", "sbs", "pbs"),
    [
        (256 * MIB, 64, 256, 1),
        (1 * GIB, 256, 1024, 1),
        (10 * GIB, 2560, 10240, 10),
        (2 * TIB, 129024, 32000, 2048),
        (48 * TIB, 129024, 32000, 49152),
        (64 * TIB - 256 * MIB, 129024, 32000, 64512),
    ],
    ids=["256M", "1G", "10G", "2T", "48T", "64T"],
)
def test_sizing_policy(lv: int, fds: int, sbs: int, pbs: int) -> None:
    lay = plan([image_for_lv(lv)], FIXED)
    assert lay.volume_size == lv
    assert lay.resource(R.RES_FB).count == lv // MIB
    assert lay.resource(R.RES_FD).count == fds
    assert lay.resource(R.RES_SB).count == sbs
    assert lay.resource(R.RES_PB).count == pbs
    assert lay.resource(R.RES_PB2).count == 1
    for name in (".fdc.sf", ".pbc.sf", ".sbc.sf", ".pb2.sf"):
        f = lay.system_file(name)
        assert f.num_blocks <= DIRECT_BLOCKS and f.zla == F.ZLA_FILE_BLOCKS, name
    fbb = lay.system_file(".fbb.sf")
    if fbb.num_blocks <= DIRECT_BLOCKS:
        assert fbb.zla == F.ZLA_FILE_BLOCKS and lay.resource(R.RES_PB).used == ()
    else:
        # vmfs-format.md 8.6: single indirect through .pbc.sf; the PBs are allocated
        assert fbb.zla == F.ZLA_POINTER_BLOCKS
        assert fbb.pointer_blocks == lay.resource(R.RES_PB).used == (0,)
    # metadata blocks contiguous, in the sample's order, then allocated in .fbb.sf
    assert lay.resource(R.RES_FB).used == tuple(range(lay.used_blocks))


def test_caps_keep_resource_files_direct() -> None:
    """FD and PB caps are 63 whole cluster groups (the 256-block bound); 64512 is ESXi's published
    PB maximum, 32000 its SB maximum."""
    lay = plan([64 * TIB], FIXED)
    fdc = lay.resource(R.RES_FD)
    assert fdc.count == 63 * 64 * 32 and fdc.num_groups == 63
    assert lay.system_file(".fdc.sf").num_blocks == 256
    assert lay.resource(R.RES_PB).count == 64512 == 63 * 64 * 16
    assert lay.system_file(".fbb.sf").num_blocks == 328  # ~327 MiB, ZLA 3
    with pytest.raises(InvalidArgumentError):
        plan([64 * TIB], MkfsOptions(num_fds=fdc.count + 32))
    with pytest.raises(InvalidArgumentError):
        plan([64 * TIB], MkfsOptions(num_pointer_blocks=0))


def test_overrides() -> None:
    lay = plan([image_for_lv(GIB)], MkfsOptions(num_fds=1000, num_sub_blocks=777, num_pointer_blocks=5,
                                                num_pointer2_blocks=3))
    assert [lay.resource(k).count for k in (R.RES_FD, R.RES_SB, R.RES_PB, R.RES_PB2)] == [1000, 777, 5, 3]
    with pytest.raises(InvalidArgumentError):
        plan([image_for_lv(GIB)], MkfsOptions(num_fds=8))  # no FD left after the system files


def test_pe_entries_small_and_huge_extents() -> None:
    small = plan([image_for_lv(2 * TIB)], FIXED).extents[0]
    assert small.pe_count == 8192 and small.pe_segments == 1  # ESXi's 256 MiB entries up to 2 TiB
    huge = plan([64 * TIB], FIXED).extents[0]
    assert huge.segments == 64 * 4 * 1024 - 1  # 64 TiB - 256 MiB: dissect's LVM5 test volume size
    assert huge.pe_count <= PES_PER_MAP and huge.pe_segments == 32
    entries = huge.pe_entries()
    assert entries[0] == (0x1100000, 0, 32 * SEGMENT_SIZE)
    assert sum(n for _, _, n in entries) == huge.length
    assert all(entries[i][1] + entries[i][2] == entries[i + 1][1] for i in range(len(entries) - 1))


def test_spanned_plan() -> None:
    lay = plan([image_for_lv(512 * MIB), 700 * MIB, image_for_lv(256 * MIB)], FIXED)
    assert [(e.first_segment, e.last_segment) for e in lay.extents] == [(0, 1), (2, 3), (4, 4)]
    assert lay.volume_size == 5 * SEGMENT_SIZE
    assert lay.extents[1].unused_bytes == 700 * MIB - 0x1100000 - 512 * MIB
    assert len(set(lay.options.device_uuids or ())) == 3


def test_volume_capped_at_64_tib() -> None:
    lay = plan([40 * TIB, 40 * TIB], FIXED)
    assert lay.volume_size == 64 * TIB
    assert lay.num_blocks == 1 << 26
    with pytest.raises(InvalidArgumentError, match="64 TiB"):
        plan([64 * TIB + 1 * GIB, 1 * GIB], FIXED)


@pytest.mark.parametrize(
    ("sizes", "options", "error", "match"),
    [
        ([image_for_lv(256 * MIB) - 1], FIXED, InvalidArgumentError, "too small"),
        ([GIB], MkfsOptions(block_size=2 * MIB), UnsupportedError, "1 MiB"),
        ([GIB], MkfsOptions(sub_block_size=64 << 10), UnsupportedError, "8 KiB"),
        ([GIB], MkfsOptions(label="x" * 128), InvalidArgumentError, "label"),
        ([GIB], MkfsOptions(fs_uuid="not-a-uuid"), InvalidArgumentError, "UUID"),
        ([GIB], MkfsOptions(device_uuids=("61137dd5-dc4830ac-56f8-000c29801686",) * 2), InvalidArgumentError, "2"),
        ([GIB] * 33, FIXED, InvalidArgumentError, "extents"),
        ([], FIXED, InvalidArgumentError, "extents"),
    ],
)
def test_bad_input(sizes: list[int], options: MkfsOptions, error: type[VmfsError], match: str) -> None:
    with pytest.raises(error, match=match):
        plan(sizes, options)


def test_same_device_twice_is_refused() -> None:
    dev = MemoryDevice(GIB)
    with pytest.raises(InvalidArgumentError):
        format_volume([dev, dev], FIXED)


def test_reproducible_bytes() -> None:
    """With every UUID and the time injected, two formats are byte-identical."""
    images = []
    for _ in range(2):
        dev = MemoryDevice(image_for_lv(GIB))
        opts = replace(FIXED, device_uuids=("61137dd5-dc4830ac-56f8-000c29801686",))
        format_volume([dev], opts)
        images.append({k: bytes(v) for k, v in dev._chunks.items()})
    assert images[0] == images[1]


def test_unset_choices_are_filled_esxi_style() -> None:
    lay = plan([GIB], MkfsOptions(creation_time_us=1_700_000_000_123_456))
    o = lay.options
    uuids = [o.fs_uuid, o.lv_uuid, o.host_uuid, *(o.device_uuids or ())]
    assert len(set(uuids)) == len(uuids)
    assert {u.split("-")[0] for u in uuids} == {f"{1_700_000_000:08x}"}  # timeLo = creation second
    assert len({u.split("-")[3] for u in uuids}) == 1  # one MAC
