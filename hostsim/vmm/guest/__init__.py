"""The guest language: what each simulated vCPU runs (docs/hostsim.md, "Guest programs").

A ``.guest`` file is parsed once (:func:`parse`, :func:`load`: ``FILE:LINE: message`` errors) into
a :class:`Program`; :func:`start` binds it to each vCPU of a VM and runs one engine process per
vCPU, calling only the :class:`GuestPlatform` Protocol (compute, halt, idle loop, page touches,
disk reads/writes/flushes), each call an engine event the guest waits for."""

from hostsim.vmm.guest.content import image_page, seeded_page, seeded_sector, seeded_sectors
from hostsim.vmm.guest.dryrun import IdealPlatform, VcpuDemand, dry_run, render
from hostsim.vmm.guest.errors import GuestError, GuestRuntimeError, GuestSyntaxError
from hostsim.vmm.guest.interpreter import AckedWrite, GuestLog, MarkEntry, VcpuGuest, start
from hostsim.vmm.guest.parser import load, parse
from hostsim.vmm.guest.platform import GuestPlatform
from hostsim.vmm.guest.tree import Program

__all__ = [
    "AckedWrite", "GuestError", "GuestLog", "GuestPlatform", "GuestRuntimeError", "GuestSyntaxError",
    "IdealPlatform", "MarkEntry", "Program", "VcpuDemand", "VcpuGuest", "dry_run", "image_page", "load", "parse",
    "render", "seeded_page", "seeded_sector", "seeded_sectors", "start",
]
