"""From what a user typed as IMAGE to an open block device.

Every tool and library entry that takes IMAGE takes a path (an image file or a block device), an
iSCSI LUN by URL (``iscsi://host[:port]/target-iqn/lun``) or a Ceph RBD image as QEMU names it
(``rbd:pool/image[:conf=...:id=...]``).  This is the one place that tells them
apart, so a new transport is one more branch here and nothing in the tools.
"""

from __future__ import annotations

import os

from vmfs.device.base import BlockDevice
from vmfs.device.file import FileDevice


def is_network_spec(spec: str | os.PathLike[str]) -> bool:
    """Whether IMAGE names network storage (no file on this machine to stat or create)."""
    return isinstance(spec, str) and (spec.startswith("iscsi://") or spec.startswith("rbd:"))


def open_device(spec: str | os.PathLike[str], *, readonly: bool = True) -> BlockDevice:
    """Open IMAGE: an iSCSI URL through libiscsi, an RBD image through librbd, anything else as a
    file or block device."""
    if isinstance(spec, str) and spec.startswith("iscsi://"):
        from vmfs.device.iscsi import IscsiDevice  # ctypes and libiscsi only when asked for

        return IscsiDevice(spec, readonly=readonly)
    if isinstance(spec, str) and spec.startswith("rbd:"):
        from vmfs.device.rbd import RbdDevice

        return RbdDevice(spec, readonly=readonly)
    return FileDevice(spec, readonly=readonly)
