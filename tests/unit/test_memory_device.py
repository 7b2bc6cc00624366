"""The sparse memory device (hostsim's memory LUNs, the crash suites' disks) reads back what was
written, across and inside its 64 KiB chunks, and zeros where nothing was: checked against a
bytearray by hypothesis."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vmfs.device.memory import MemoryDevice

SIZE = 1 << 20
SECTOR = 512

ops = st.lists(st.tuples(st.booleans(), st.integers(0, SIZE // SECTOR - 1), st.integers(1, 300), st.integers(0, 255)),
               max_size=40)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_reads_match_a_bytearray(script: list[tuple[bool, int, int, int]]) -> None:
    dev = MemoryDevice(SIZE, name="model")
    model = bytearray(SIZE)
    for write, sector, count, byte in script:
        offset = sector * SECTOR
        length = min(count * SECTOR, SIZE - offset)
        if write:
            data = bytes([byte]) * length
            dev.write(offset, data)
            model[offset : offset + length] = data
        else:
            assert dev.read(offset, length) == bytes(model[offset : offset + length])
    assert dev.read(0, SIZE) == bytes(model)
