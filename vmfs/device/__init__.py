"""Block devices: image files and block devices, sparse memory, copy-on-write overlay, fault injection.

The seam for other transports is :class:`BlockDevice`: a backend implements ``_read``, ``_write``
and ``_compare_and_write``.  A SCSI LUN (e.g. an iSCSI target) would implement the last one with
COMPARE AND WRITE (opcode 0x89) through SG_IO; everything above relies only on that method.
"""

from vmfs.device.base import BlockDevice
from vmfs.device.file import FileDevice
from vmfs.device.memory import MemoryDevice
from vmfs.device.overlay import OverlayDevice

__all__ = ["BlockDevice", "FileDevice", "MemoryDevice", "OverlayDevice"]
