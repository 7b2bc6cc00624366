"""A copy-on-write overlay: reads fall through to a base device, writes stay in memory.

Lets a volume be "changed" without touching the original: a dry run of a repair, a test that
corrupts a real sample, or replaying a dead host's journal to look at the result read-only.
"""

from __future__ import annotations

from vmfs.device.base import BlockDevice, ProcessLocalDevice

_CHUNK = 4096


class OverlayDevice(ProcessLocalDevice):
    def __init__(self, base: BlockDevice, *, name: str | None = None) -> None:
        super().__init__(readonly=False)
        self.base = base
        self.name = name or f"overlay:{base.name}"
        self._chunks: dict[int, bytearray] = {}

    @property
    def size(self) -> int:
        return self.base.size

    def _chunk(self, index: int) -> bytearray:
        chunk = self._chunks.get(index)
        if chunk is None:
            start = index * _CHUNK
            n = min(_CHUNK, self.size - start)
            chunk = self._chunks[index] = bytearray(self.base.read(start, n))
        return chunk

    def _read(self, offset: int, length: int) -> bytes:
        if not self._chunks:
            return self.base.read(offset, length)
        out = bytearray()
        pos = offset
        end = offset + length
        while pos < end:
            index, within = divmod(pos, _CHUNK)
            n = min(_CHUNK - within, end - pos)
            chunk = self._chunks.get(index)
            if chunk is None:
                # read the untouched run up to the next changed chunk in one go
                run_end = pos + n
                while run_end < end and (run_end // _CHUNK) not in self._chunks:
                    run_end = min(end, (run_end // _CHUNK + 1) * _CHUNK)
                out += self.base.read(pos, run_end - pos)
                pos = run_end
                continue
            out += chunk[within : within + n]
            pos += n
        return bytes(out)

    def _write(self, offset: int, data: bytes) -> None:
        pos = offset
        end = offset + len(data)
        while pos < end:
            index, within = divmod(pos, _CHUNK)
            n = min(_CHUNK - within, end - pos)
            self._chunk(index)[within : within + n] = data[pos - offset : pos - offset + n]
            pos += n

    def changed_ranges(self) -> list[tuple[int, int]]:
        """(offset, length) of every chunk that differs from the base."""
        ranges = []
        for index in sorted(self._chunks):
            start = index * _CHUNK
            if bytes(self._chunks[index]) != self.base.read(start, len(self._chunks[index])):
                ranges.append((start, len(self._chunks[index])))
        return ranges

    def close(self) -> None:
        self.base.close()
