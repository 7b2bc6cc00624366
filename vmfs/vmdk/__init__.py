"""VMware virtual disks (VMDK): descriptors, extent formats, snapshot chains and vmkfstools-style
operations, independent of where the files live.

Layout of the package (one module per on-disk format, see vmdk-format.md):

* ``descriptor``: the text descriptor (section 2), ``geometry``: CHS from capacity (2.6);
* ``flat``, ``sparse`` (hosted KDMV, 3), ``stream_optimized`` (3.11), ``cowd`` (ESX vmfsSparse, 4),
  ``sesparse`` (5): one extent format each; ``extent`` and ``tables`` hold what they share;
* ``layer``: one descriptor and its extents; ``disk``: a chain of layers with copy-on-write (6);
* ``chain``: snapshots (take, revert, delete/consolidate); ``ops`` and ``thin``: vmkfstools verbs;
* ``storage``: the :class:`DiskStorage` seam and host files; ``volume_storage``: the same inside a
  VMFS volume, through the volume library (no mount);
* ``errors``: :class:`VmdkError` and its subclasses, each with an errno.

The library never prints or exits; ``tools/vmdk.py`` is the command-line front-end.
"""

from vmfs.vmdk.chain import consolidate, create_snapshot, delete_snapshot, revert_snapshot
from vmfs.vmdk.descriptor import Descriptor, ExtentLine
from vmfs.vmdk.disk import Disk, open_disk
from vmfs.vmdk.errors import (
    ChainError,
    CorruptError,
    InvalidArgumentError,
    MissingExtentError,
    UnsupportedError,
    VmdkError,
)
from vmfs.vmdk.storage import DiskStorage, HostStorage
from vmfs.vmdk.volume_storage import VolumeStorage, open_volume_storage

__all__ = [
    "ChainError",
    "CorruptError",
    "Descriptor",
    "Disk",
    "DiskStorage",
    "ExtentLine",
    "HostStorage",
    "InvalidArgumentError",
    "MissingExtentError",
    "UnsupportedError",
    "VmdkError",
    "VolumeStorage",
    "consolidate",
    "create_snapshot",
    "delete_snapshot",
    "open_disk",
    "open_volume_storage",
    "revert_snapshot",
]
