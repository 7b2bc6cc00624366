"""Block devices: the file/blockdev backend, a sparse memory backend, and a fault injector."""

from vmfs.device.base import BlockDevice
from vmfs.device.file import FileDevice
from vmfs.device.memory import MemoryDevice

__all__ = ["BlockDevice", "FileDevice", "MemoryDevice"]
