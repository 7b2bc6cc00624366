"""Where a host's journal lives: a file block on VMFS5, a journal block of ``.jbc.sf`` on VMFS6.

The heartbeat slot names it (``journalAddr``, and its volume offset in ``journalVolAddr``,
vmfs-format.md 4.2, 10).  VMFS5 journals take a 1 MiB file block from ``.fbb.sf``; VMFS6 keeps
journal blocks in their own resource file, 2 MiB each, addressed by 32-bit JB addresses (7.2), so
that a journal block can never be taken for file data.  Every caller that allocates, frees,
replays or accounts for a journal goes through these four functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmfs.format import address as A
from vmfs.ondisk import resource as R

if TYPE_CHECKING:
    from vmfs.volume.volume import Volume


def journal_kind(volume: Volume) -> int:
    """The resource type journals are allocated from."""
    return R.RES_JB if volume.geometry.vmfs6 else R.RES_FB


def journal_address(volume: Volume, cluster: int, resource: int) -> int:
    """The address the heartbeat slot records for resource (cluster, resource) of journal_kind."""
    if volume.geometry.vmfs6:
        return A.make_jb(cluster, resource)
    return volume.geometry.codec.make_fb(cluster * volume.resources[R.RES_FB].rpc + resource)


def journal_resource(volume: Volume, address: int) -> tuple[int, int]:
    """(cluster, resource) of the journal at ``address`` in the journal_kind resource."""
    if volume.geometry.vmfs6:
        return A.jb_split(address)
    return divmod(volume.geometry.codec.fb_block(address), volume.resources[R.RES_FB].rpc)


def journal_area(volume: Volume, address: int) -> tuple[int, int]:
    """(volume offset, size) of the journal at ``address``."""
    c, r = journal_resource(volume, address)
    if volume.geometry.vmfs6:
        jbc = volume.resources[R.RES_JB]
        return jbc.volume_offset(c, r), jbc.rsz
    bs = volume.geometry.block_size
    return volume.geometry.codec.fb_block(address) * bs, bs
