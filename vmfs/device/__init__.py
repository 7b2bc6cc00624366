"""Block devices: the file/blockdev backend, a sparse memory backend, and a fault injector."""

from vmfs.device.base import BlockDevice
from vmfs.device.file import FileDevice
from vmfs.device.memory import MemoryDevice
from vmfs.device.overlay import OverlayDevice

__all__ = ["BlockDevice", "FileDevice", "MemoryDevice", "OverlayDevice"]
