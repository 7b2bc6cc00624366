"""How ESX names adapters, paths and devices.

* A storage adapter is ``vmhba<N>``; a path to a LUN is its runtime name
  ``vmhba<N>:C<channel>:T<target>:L<lun>`` (the SD table of the real samples holds
  ``mpx.vmhba0:C0:T4:L0:1``: vmfs-format.md 12.1).
* A device's canonical name: ``mpx.<runtime name>`` for a local device that reports no
  identifier of its own (the samples' disks, ESXi in a VM), ``naa.<32 hex digits>`` for a SAN
  LUN that reports an NAA identifier.  The digits of our ``naa.`` names are derived from the
  LUN's serial (an assumption of ours: what a real array reports is its own business); the
  leading ``6`` is the NAA "IEEE registered extended" format.
* A partition of a device adds ``:<n>``; VMFS extents live on partition 1 (the sample SD names
  end in ``:1``).
"""

from __future__ import annotations

import hashlib
import re

from vmfs.errors import InvalidArgumentError

_RUNTIME = re.compile(r"^vmhba(\d+):C(\d+):T(\d+):L(\d+)$")


def adapter_name(index: int) -> str:
    return f"vmhba{index}"


def runtime_name(adapter: str, channel: int, target: int, lun: int) -> str:
    for what, value in (("channel", channel), ("target", target), ("LUN", lun)):
        if value < 0:
            raise InvalidArgumentError(f"{what} number cannot be negative: {value}")
    return f"{adapter}:C{channel}:T{target}:L{lun}"


def parse_runtime_name(name: str) -> tuple[int, int, int, int]:
    """(adapter, channel, target, lun) numbers of ``vmhbaN:Cc:Tt:Ll``."""
    m = _RUNTIME.match(name)
    if not m:
        raise InvalidArgumentError(f"{name}: not a runtime name of the form vmhbaN:C0:T0:L0")
    a, c, t, lun = (int(g) for g in m.groups())
    return a, c, t, lun


def naa_name(serial: str) -> str:
    """``naa.6`` + 31 hex digits derived from ``serial`` (stable across runs and hosts)."""
    return "naa.6" + hashlib.sha256(serial.encode()).hexdigest()[:31]


def mpx_name(runtime: str) -> str:
    return f"mpx.{runtime}"
