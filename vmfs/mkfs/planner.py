"""Pick the planner of the version asked for: :func:`vmfs.mkfs.layout.plan` (VMFS5) or
:func:`vmfs.mkfs.layout6.plan6` (VMFS6)."""

from __future__ import annotations

from collections.abc import Sequence

from vmfs.mkfs.layout import Layout
from vmfs.mkfs.layout import plan as plan5
from vmfs.mkfs.layout6 import plan6
from vmfs.mkfs.options import MkfsOptions


def plan(device_sizes: Sequence[int], options: MkfsOptions | None = None) -> Layout:
    """The layout of a new volume of ``options.version`` over devices of ``device_sizes`` bytes."""
    options = options or MkfsOptions()
    if options.version == 6:
        return plan6(device_sizes, options)
    return plan5(device_sizes, options)
