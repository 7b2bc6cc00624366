"""A sparse in-memory device: unwritten ranges read as zeros and cost nothing.

Used by tests and by ``vmfs-mkfs --dry-run``; a 64 TiB device costs only the chunks written.
"""

from __future__ import annotations

from vmfs.device.base import ProcessLocalDevice

_CHUNK = 1 << 16


class MemoryDevice(ProcessLocalDevice):
    def __init__(self, size: int, *, readonly: bool = False, name: str = "memory") -> None:
        super().__init__(readonly=readonly)
        self._size = size
        self.name = name
        self._chunks: dict[int, bytearray] = {}

    @property
    def size(self) -> int:
        return self._size

    def _read(self, offset: int, length: int) -> bytes:
        index, within = divmod(offset, _CHUNK)
        if within + length <= _CHUNK:  # inside one chunk (the usual case): one copy
            chunk = self._chunks.get(index)
            return bytes(length) if chunk is None else bytes(chunk[within : within + length])
        out = bytearray(length)
        pos = offset
        end = offset + length
        while pos < end:
            index, within = divmod(pos, _CHUNK)
            n = min(_CHUNK - within, end - pos)
            chunk = self._chunks.get(index)
            if chunk is not None:
                out[pos - offset : pos - offset + n] = chunk[within : within + n]
            pos += n
        return bytes(out)

    def _write(self, offset: int, data: bytes) -> None:
        pos = offset
        end = offset + len(data)
        while pos < end:
            index, within = divmod(pos, _CHUNK)
            n = min(_CHUNK - within, end - pos)
            chunk = self._chunks.get(index)
            if chunk is None:
                chunk = self._chunks[index] = bytearray(_CHUNK)
            chunk[within : within + n] = data[pos - offset : pos - offset + n]
            pos += n

    def bytes_stored(self) -> int:
        """Bytes of backing memory in use (what a sparse image would occupy)."""
        return len(self._chunks) * _CHUNK
