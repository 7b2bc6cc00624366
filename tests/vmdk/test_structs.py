"""Every on-disk structure: size against vmdk-format.md, parse-then-build returns the same bytes
(unknown bytes are named fields, never Padding), and the reference's sample values decode."""

from __future__ import annotations

import pytest
from construct import Struct
from hypothesis import given
from hypothesis import strategies as st

from vmfs.vmdk.cowd import CowdHeader, CowdRootGeometry
from vmfs.vmdk.sesparse import (
    SeSparseConstHeader,
    SeSparseVolatileHeader,
    decode_grain_index,
    encode_grain_index,
)
from vmfs.vmdk.sparse import SparseHeader
from vmfs.vmdk.stream_optimized import GrainRecordHeader, MetadataMarker

SIZES = [
    pytest.param(SparseHeader, 512, id="KDMV header 3.1"),
    pytest.param(MetadataMarker, 512, id="stream marker 3.11"),
    pytest.param(GrainRecordHeader, 12, id="grain record 3.11"),
    pytest.param(CowdHeader, 2048, id="COWD header 4.1"),
    pytest.param(CowdRootGeometry, 1024, id="COWD root geometry union 4.1"),
    pytest.param(SeSparseConstHeader, 512, id="seSparse const header 5.1"),
    pytest.param(SeSparseVolatileHeader, 512, id="seSparse volatile header 5.2"),
]


@pytest.mark.parametrize(("struct", "size"), SIZES)
def test_sizeof(struct: Struct, size: int) -> None:
    assert struct.sizeof() == size


@pytest.mark.parametrize(("struct", "size"), SIZES)
@given(data=st.data())
def test_parse_build_is_identity(struct: Struct, size: int, data: st.DataObject) -> None:
    raw = data.draw(st.binary(min_size=size, max_size=size))
    assert struct.build(struct.parse(raw)) == raw


def test_reference_ms_header_decodes() -> None:
    """The first 80 bytes of qemu's 100 MiB ms.vmdk (section 10.1)."""
    head = bytes.fromhex(
        "4B444D56 01000000 03000000 0020030000000000 8000000000000000 0100000000000000"
        " 1400000000000000 00020000 1500000000000000 2600000000000000 8000000000000000 00 0A200D0A 0000"
    )
    h = SparseHeader.parse(head + bytes(512 - len(head)))
    assert (h.magic, h.version, h.flags, h.capacity, h.grain_size) == (b"KDMV", 1, 3, 204800, 128)
    assert (h.descriptor_offset, h.descriptor_size, h.num_gtes_per_gt) == (1, 20, 512)
    assert (h.rgd_offset, h.gd_offset, h.overhead, h.unclean_shutdown) == (21, 38, 128, 0)
    assert (h.single_end_line_char, h.non_end_line_char) == (0x0A, 0x20)
    assert (h.double_end_line_char1, h.double_end_line_char2, h.compress_algorithm) == (0x0D, 0x0A, 0)


@given(st.integers(min_value=0, max_value=(1 << 60) - 1))
def test_sesparse_grain_index_round_trip(index: int) -> None:
    entry = encode_grain_index(index)
    assert entry >> 60 == 3
    assert decode_grain_index(entry) == index


def test_sesparse_grain_index_split() -> None:
    """Low 12 bits of the index go to bits 48..59, the rest to bits 0..47 (section 5.3)."""
    assert encode_grain_index(0x1234) == 0x3000000000000000 | (0x234 << 48) | 0x1
