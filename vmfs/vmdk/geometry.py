"""Virtual CHS geometry written into the descriptor's DDB (vmdk-format.md section 2.6).

Guests on old BIOSes and IDE controllers still look at ``ddb.geometry.*``, and VMware derives it
from the capacity and the adapter type.  Two writers disagree for small SCSI disks and large IDE
disks, so the rule is chosen explicitly: ``vmware`` (what ESXi's tools write, used for disks we
create) or ``qemu`` (what qemu-img writes, used when a test must reproduce a qemu descriptor).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from vmfs.vmdk.errors import InvalidArgumentError

#: ``ddb.adapterType`` values qemu accepts; VMware tools write the same words.
ADAPTER_TYPES: tuple[str, ...] = ("ide", "buslogic", "lsilogic", "legacyESX")

#: ESXi caps IDE cylinders (an 8 GiB IDE disk shows 16383).
IDE_MAX_CYLINDERS = 16383

GeometryStyle = Literal["vmware", "qemu"]

_ONE_GIB_SECTORS = 2 * 1024 * 1024
_TWO_GIB_SECTORS = 2 * _ONE_GIB_SECTORS


class Geometry(NamedTuple):
    cylinders: int
    heads: int
    sectors: int


def geometry_for(capacity: int, adapter: str, style: GeometryStyle = "vmware") -> Geometry:
    """CHS for ``capacity`` sectors on ``adapter``.

    VMware: IDE is 16 heads x 63 sectors with cylinders capped at 16383; SCSI uses 64x32 under
    1 GiB, 128x32 under 2 GiB and 255x63 above.  qemu: 16x63 uncapped for IDE, 255x63 otherwise.
    ``legacyESX`` has no VMware sample and follows the SCSI rule.
    """
    if capacity < 0:
        raise InvalidArgumentError(f"negative capacity {capacity}")
    if adapter not in ADAPTER_TYPES:
        raise InvalidArgumentError(f"unknown adapter type {adapter!r} (use one of {', '.join(ADAPTER_TYPES)})")
    if style == "qemu":
        heads, sectors = (16, 63) if adapter == "ide" else (255, 63)
        return Geometry(capacity // (heads * sectors), heads, sectors)
    if style != "vmware":
        raise InvalidArgumentError(f"unknown geometry style {style!r}")
    if adapter == "ide":
        return Geometry(min(capacity // (16 * 63), IDE_MAX_CYLINDERS), 16, 63)
    if capacity < _ONE_GIB_SECTORS:
        heads, sectors = 64, 32
    elif capacity < _TWO_GIB_SECTORS:
        heads, sectors = 128, 32
    else:
        heads, sectors = 255, 63
    return Geometry(capacity // (heads * sectors), heads, sectors)
