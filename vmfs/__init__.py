"""pyvmfs: read and write VMware VMFS3/5/6 volumes.

The library never prints, reads argv or exits; see ``tools/`` for the command-line front-ends.
"""

from vmfs.errors import VmfsError

__all__ = ["VmfsError"]
