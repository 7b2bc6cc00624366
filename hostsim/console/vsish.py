"""``vsish``, the VMkernel's system information shell, with the nodes a simulated host has.

On ESXi, ``vsish -e set /reliability/crashMe/Panic 1`` crashes the host on purpose (a purple
screen): the way an administrator or a test shows what a host failure does to its VMs and its
datastores.  We keep that node and add one of our own under it, ``JournalHalfHome``: set to 1,
the host panics in the middle of its next VMFS journal transaction that has two or more home
writes, right after the first.  That is the moment a journal replay exists for (the record is
committed, the metadata half updated), and a test that kills a host at a random time almost
never lands there.  Like :mod:`hostsim.console.vimcmd`, a function from an argument list to
(output text, exit code); the host does the work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from hostsim.errors import HostPanic, HostsimError

#: node -> the host's panic point it arms
CRASH_NODES = {"/reliability/crashMe/Panic": "now", "/reliability/crashMe/JournalHalfHome": "journal-half-home"}
USAGE = "usage: vsish -e get|set|ls NODE [VALUE]  (nodes: " + ", ".join(CRASH_NODES) + ")\n"


class PanicHost(Protocol):
    armed_panic: str | None

    def arm_panic(self, point: str | None) -> None: ...


def vsish(host: PanicHost, argv: Sequence[str]) -> tuple[str, int]:
    """Run one ``vsish -e`` command; exit 1 with one line for an unknown node or value."""
    args = list(argv)
    if args[:1] == ["-e"]:
        args = args[1:]
    if not args or args[0] not in ("get", "set", "ls") or len(args) < 2:
        return USAGE, 1
    verb, node = args[0], args[1].rstrip("/") or "/"
    if verb == "ls":
        children = sorted({n[len(node) + 1:].split("/")[0] for n in CRASH_NODES if n.startswith(node + "/")})
        if not children:
            return f"vsish: {node}: no such node\n", 1
        return "".join(f"{c}\n" for c in children), 0
    point = CRASH_NODES.get(node)
    if point is None:
        return f"vsish: {node}: no such node\n", 1
    if verb == "get":
        if len(args) != 2:
            return USAGE, 1
        return f"{1 if host.armed_panic == point else 0}\n", 0
    if len(args) != 3 or args[2] not in ("0", "1"):
        return f"vsish: {node}: the value is 1 (crash) or 0\n", 1
    try:
        host.arm_panic(point if args[2] == "1" else None)
    except HostPanic:
        raise  # the host is gone: not an answer to print
    except HostsimError as exc:
        return f"vsish: {exc}\n", 1
    return "", 0
