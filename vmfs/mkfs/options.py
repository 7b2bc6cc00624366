"""What the caller may choose when formatting, and how unset choices are filled in.

Everything that differs between two formats of the same devices (UUIDs, time) can be injected,
so a test can make byte-identical images.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace

from vmfs.errors import InvalidArgumentError, UnsupportedError
from vmfs.ondisk.common import format_uuid, new_uuid, parse_uuid

MIB = 1 << 20
#: The only VMFS5 sizes (vmfs-format.md 11.1): unified 1 MiB file blocks, 8 KiB sub-blocks.
VMFS5_BLOCK_SIZE = MIB
VMFS5_SUB_BLOCK_SIZE = 8 << 10
#: VMFS6 as ESXi formats it (vmfs-format.md 12.1): 1 MiB small file blocks, 64 KiB sub-blocks.
VMFS6_SUB_BLOCK_SIZE = 64 << 10
VERSIONS = (5, 6)
#: fsLabel is 128 bytes; keep room for the terminating NUL every reader looks for.
MAX_LABEL_BYTES = 127


@dataclass(frozen=True)
class MkfsOptions:
    """Choices for a new volume.  ``None`` means "pick one" (see :meth:`resolved`)."""

    label: str = ""
    #: 5 or 6; the block and sub-block sizes follow it unless given
    version: int = 5
    fs_uuid: str | None = None
    lv_uuid: str | None = None
    host_uuid: str | None = None
    #: one device UUID (LVM devId) per extent
    device_uuids: tuple[str, ...] | None = None
    #: one SD-table / disk-id name per extent
    extent_names: tuple[str, ...] | None = None
    #: creation time, microseconds since the Unix epoch
    creation_time_us: int | None = None
    block_size: int = VMFS5_BLOCK_SIZE
    sub_block_size: int | None = None
    #: resource counts; None = the sizing policy of the package docstring
    num_fds: int | None = None
    num_sub_blocks: int | None = None
    num_pointer_blocks: int | None = None
    num_pointer2_blocks: int | None = None
    #: overwrite devices that hold a file system, volume or partition table
    force: bool = False

    @property
    def sub_block(self) -> int:
        if self.sub_block_size is not None:
            return self.sub_block_size
        return VMFS6_SUB_BLOCK_SIZE if self.version == 6 else VMFS5_SUB_BLOCK_SIZE

    def validate(self, extents: int) -> None:
        if self.version not in VERSIONS:
            raise UnsupportedError(f"VMFS version {self.version} cannot be made: only 5 and 6")
        if self.block_size != VMFS5_BLOCK_SIZE:
            raise UnsupportedError(
                f"block size {self.block_size} is not supported: VMFS{self.version} uses 1 MiB file blocks only"
            )
        want = VMFS6_SUB_BLOCK_SIZE if self.version == 6 else VMFS5_SUB_BLOCK_SIZE
        if self.sub_block != want:
            raise UnsupportedError(
                f"sub-block size {self.sub_block} is not supported: VMFS{self.version} uses "
                f"{want >> 10} KiB sub-blocks only"
            )
        raw = self.label.encode("utf-8", "surrogateescape")
        if len(raw) > MAX_LABEL_BYTES or "\x00" in self.label:
            raise InvalidArgumentError(f"label must be at most {MAX_LABEL_BYTES} bytes of UTF-8 without NUL")
        for what, value in (("file system", self.fs_uuid), ("logical volume", self.lv_uuid), ("host", self.host_uuid)):
            if value is not None:
                check_uuid(value, f"{what} UUID")
        for what, values in (("device UUIDs", self.device_uuids), ("extent names", self.extent_names)):
            if values is not None and len(values) != extents:
                raise InvalidArgumentError(f"{len(values)} {what} given for {extents} extents")
        for value in self.device_uuids or ():
            check_uuid(value, "device UUID")
        if self.device_uuids is not None and len(set(self.device_uuids)) != extents:
            raise InvalidArgumentError("device UUIDs must differ")
        for name in self.extent_names or ():
            if not name or len(name.encode()) > 255 or "\x00" in name:
                raise InvalidArgumentError(f"extent name {name!r} must be 1..255 bytes without NUL")
        if self.creation_time_us is not None and not 0 < self.creation_time_us < 1 << 63:
            raise InvalidArgumentError("creation time out of range")

    def resolved(self, extents: int) -> MkfsOptions:
        """A copy with every unset UUID, name and time filled in.

        New UUIDs follow ESXi's habit (vmfs-format.md 0): ``timeLo`` = creation time in seconds,
        and one MAC shared by all of them (the host UUID's when one is given, else a random
        locally administered one).
        """
        self.validate(extents)
        now_us = self.creation_time_us if self.creation_time_us is not None else time.time_ns() // 1000
        seconds = now_us // 1_000_000
        if self.host_uuid is not None:
            mac = parse_uuid(self.host_uuid)[10:16]
        else:
            rnd = os.urandom(6)
            mac = bytes([(rnd[0] | 0x02) & 0xFE]) + rnd[1:]
        host = self.host_uuid or new_uuid(seconds, mac)
        return replace(
            self,
            sub_block_size=self.sub_block,
            creation_time_us=now_us,
            host_uuid=host,
            fs_uuid=self.fs_uuid or new_uuid(seconds, mac),
            lv_uuid=self.lv_uuid or new_uuid(seconds, mac),
            device_uuids=self.device_uuids or tuple(new_uuid(seconds, mac) for _ in range(extents)),
            extent_names=self.extent_names or tuple(f"pyvmfs.extent{i}:1" for i in range(extents)),
        )


def check_uuid(text: str, what: str) -> str:
    """``text`` if it is a VMFS UUID in printed form (``8-8-4-12`` hex digits)."""
    parts = text.split("-")
    ok = [len(p) for p in parts] == [8, 8, 4, 12]
    if ok:
        try:
            ok = format_uuid(parse_uuid(text)) == text.lower()
        except ValueError:
            ok = False
    if not ok:
        raise InvalidArgumentError(f"{what} {text!r} is not of the form 61137dd5-df6bc2c8-f0e7-000c29801686")
    return text.lower()
