"""The service console's administration commands, ``vim-cmd`` and ``vmware-cmd``, with the real
commands' names, arguments and output formats (esx-design.md 6.2).

Both are functions from an argument list to (output text, exit code) over a :class:`ConsoleHost`,
so the same code answers a headless scenario, the click front-end and the command server of a
host that runs paced.  The host does the work; this module only parses and prints, so what a
script written against ESX's console expects to read is checked in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from hostsim.errors import HostsimError

POWER_TEXT = {"poweredOn": "Powered on", "poweredOff": "Powered off", "suspended": "Suspended"}
VMWARE_CMD_STATE = {"poweredOn": "on", "poweredOff": "off", "suspended": "suspended"}


@dataclass(frozen=True)
class SnapshotView:
    id: int
    name: str
    description: str
    created: str  # the console's "M/D/YYYY H:M:S" (vim-cmd prints it unpadded)
    state: str  # "powered on" / "powered off"
    children: tuple[SnapshotView, ...] = ()


@dataclass(frozen=True)
class VmView:
    """What the console shows of one registered VM."""

    vmid: int
    name: str
    datastore: str
    vmx_path: str  # relative to the datastore: "vm1/vm1.vmx"
    vmx_full_path: str  # "/vmfs/volumes/<datastore>/vm1/vm1.vmx"
    guest_os: str
    version: str  # "vmx-08"
    annotation: str
    power_state: str  # poweredOn | poweredOff | suspended
    memory_mb: int
    num_cpu: int
    uuid: str
    question: str | None = None
    cpu_usage_mhz: int = 0
    guest_memory_mb: int = 0
    host_memory_mb: int = 0
    ballooned_mb: int = 0
    swapped_mb: int = 0
    shared_mb: int = 0
    uptime_s: int = 0
    snapshots: tuple[SnapshotView, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class HostView:
    name: str
    uuid: str
    pcpus: int
    mhz: int
    memory_mb: int
    cpu_usage_mhz: int
    memory_usage_mb: int
    uptime_s: int
    product: str = "VMware ESX (simulated by pyvmfs hostsim)"
    version: str = "4.1.0"


class ConsoleHost(Protocol):
    """What the console commands need from a host (hostsim.console.host.Host provides it)."""

    def vm_views(self) -> list[VmView]: ...
    def host_view(self) -> HostView: ...
    def power_on(self, vmid: int) -> None: ...
    def power_off(self, vmid: int) -> None: ...
    def reset(self, vmid: int) -> None: ...
    def snapshot_create(self, vmid: int, name: str, description: str) -> None: ...
    def snapshot_revert(self, vmid: int, snapshot_id: int) -> None: ...
    def snapshot_remove(self, vmid: int, snapshot_id: int) -> None: ...
    def snapshot_removeall(self, vmid: int) -> None: ...
    def answer(self, vmid: int, choice: str) -> None: ...
    def createvm(self, args: list[str]) -> int: ...
    def create_dummy_vm(self, name: str, datastore: str | None) -> int: ...
    def register_path(self, path: str) -> int: ...
    def unregister(self, vmid: int) -> None: ...
    def destroy(self, vmid: int) -> None: ...


# -- vim-cmd ------------------------------------------------------------------------------------


def vim_cmd(host: ConsoleHost, argv: Sequence[str]) -> tuple[str, int]:
    """Run ``vim-cmd ARGV``: (what it prints, exit code)."""
    if not argv:
        return "Commands available under /:\n" + "".join(f"{c}\n" for c in sorted(_VIM_COMMANDS)), 0
    command, args = argv[0], list(argv[1:])
    handler = _VIM_COMMANDS.get(command)
    if handler is None:
        return f"(vmodl.fault.SystemError) {{\n   reason = \"Unknown command: '{command}'\"\n}}\n", 1
    try:
        return handler(host, args), 0
    except HostsimError as exc:
        return f"{exc}\n", 1


def _vm(host: ConsoleHost, args: list[str], command: str) -> VmView:
    if not args:
        raise HostsimError(f"Insufficient arguments. Usage: vim-cmd {command} vmid")
    for vm in host.vm_views():
        if str(vm.vmid) == args[0]:
            return vm
    raise HostsimError(f'Unable to find a VM corresponding to "{args[0]}"')


def _getallvms(host: ConsoleHost, args: list[str]) -> str:
    rows = [("Vmid", "Name", "File", "Guest OS", "Version", "Annotation")]
    rows += [(str(v.vmid), v.name, f"[{v.datastore}] {v.vmx_path}", v.guest_os, v.version, v.annotation)
             for v in sorted(host.vm_views(), key=lambda v: v.vmid)]
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    return "".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n" for r in rows)


def _power(action: str, banner: str):  # type: ignore[no-untyped-def]
    def run(host: ConsoleHost, args: list[str]) -> str:
        vm = _vm(host, args, f"vmsvc/power.{action}")
        getattr(host, {"on": "power_on", "off": "power_off", "reset": "reset"}[action])(vm.vmid)
        return f"{banner}\n"
    return run


def _getstate(host: ConsoleHost, args: list[str]) -> str:
    vm = _vm(host, args, "vmsvc/power.getstate")
    return f"Retrieved runtime info\n{POWER_TEXT[vm.power_state]}\n"


def _heartbeat(host: ConsoleHost, args: list[str]) -> str:
    vm = _vm(host, args, "vmsvc/get.guestheartbeatStatus")
    return ("green" if vm.power_state == "poweredOn" and vm.question is None else "gray") + "\n"


def _struct(type_name: str, fields: list[tuple[str, object]], indent: int = 0) -> str:
    """vim-cmd's dump of a data object: ``(vim.Type) {`` then ``name = value,`` lines."""
    pad = " " * indent
    lines = [f"({type_name}) {{"]
    for name, value in fields:
        lines.append(f"{pad}   {name} = {_value(value, indent + 3)},")
    lines.append(f"{pad}}}")
    return "\n".join(lines)


def _value(value: object, indent: int) -> str:
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], list):
        return _struct(value[0], value[1], indent)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "<unset>"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.startswith("'"):
        return value  # a managed object reference, printed in single quotes
    return f'"{value}"'


def _summary(host: ConsoleHost, args: list[str]) -> str:
    vm = _vm(host, args, "vmsvc/get.summary")
    on = vm.power_state == "poweredOn"
    runtime = ("vim.vm.RuntimeInfo", [
        ("host", "'vim.HostSystem:ha-host'"), ("connectionState", "connected"), ("powerState", vm.power_state),
        ("question", None if vm.question is None else ("vim.vm.QuestionInfo", [("text", vm.question)])),
        ("maxCpuUsage", host.host_view().mhz * vm.num_cpu if on else None),
        ("maxMemoryUsage", vm.memory_mb if on else None),
    ])
    config = ("vim.vm.Summary.ConfigSummary", [
        ("name", vm.name), ("template", False), ("vmPathName", f"[{vm.datastore}] {vm.vmx_path}"),
        ("memorySizeMB", vm.memory_mb), ("numCpu", vm.num_cpu), ("uuid", vm.uuid),
        ("annotation", vm.annotation), ("guestId", vm.guest_os),
    ])
    quick = ("vim.vm.Summary.QuickStats", [
        ("overallCpuUsage", vm.cpu_usage_mhz), ("guestMemoryUsage", vm.guest_memory_mb),
        ("hostMemoryUsage", vm.host_memory_mb), ("balloonedMemory", vm.ballooned_mb),
        ("swappedMemory", vm.swapped_mb), ("sharedMemory", vm.shared_mb), ("uptimeSeconds", vm.uptime_s),
        ("guestHeartbeatStatus", "green" if on and vm.question is None else "gray"),
    ])
    fields: list[tuple[str, object]] = [
        ("vm", f"'vim.VirtualMachine:{vm.vmid}'"), ("runtime", runtime), ("config", config),
        ("quickStats", quick), ("overallStatus", "green" if vm.question is None else "yellow"),
    ]
    return "Listsummary:\n" + _struct("vim.vm.Summary", fields) + "\n"


def _hostsummary(host: ConsoleHost, args: list[str]) -> str:
    h = host.host_view()
    hardware = ("vim.host.Summary.HardwareSummary", [
        ("vendor", "pyvmfs"), ("model", "hostsim"), ("uuid", h.uuid), ("memorySize", h.memory_mb * 1024 * 1024),
        ("cpuModel", "simulated CPU"), ("cpuMhz", h.mhz), ("numCpuPkgs", 1), ("numCpuCores", h.pcpus),
        ("numCpuThreads", h.pcpus),
    ])
    config = ("vim.host.Summary.ConfigSummary", [("name", h.name), ("port", 443),
                                                 ("product", ("vim.AboutInfo", [("fullName", h.product),
                                                                                ("version", h.version)]))])
    quick = ("vim.host.Summary.QuickStats", [("overallCpuUsage", h.cpu_usage_mhz),
                                             ("overallMemoryUsage", h.memory_usage_mb), ("uptime", h.uptime_s)])
    fields: list[tuple[str, object]] = [("host", "'vim.HostSystem:ha-host'"), ("hardware", hardware),
                                        ("config", config), ("quickStats", quick), ("overallStatus", "green")]
    return _struct("vim.host.Summary", fields) + "\n"


def _snapshot_create(host: ConsoleHost, args: list[str]) -> str:
    vm = _vm(host, args, "vmsvc/snapshot.create")
    name = args[1] if len(args) > 1 else "snapshot"
    description = args[2] if len(args) > 2 else ""
    host.snapshot_create(vm.vmid, name, description)
    return "Create Snapshot:\n"


def _snapshot_get(host: ConsoleHost, args: list[str]) -> str:
    vm = _vm(host, args, "vmsvc/snapshot.get")
    out = ["Get Snapshot:"]
    if vm.snapshots:
        out.append("|-ROOT")

    def walk(snaps: tuple[SnapshotView, ...], depth: int) -> None:
        for s in snaps:
            lead = "-" * (depth * 2 + 2)
            out.extend([f"{lead}Snapshot Name        : {s.name}", f"{lead}Snapshot Id        : {s.id}",
                        f"{lead}Snapshot Desciption  : {s.description}",
                        f"{lead}Snapshot Created On  : {s.created}", f"{lead}Snapshot State       : {s.state}"])
            if s.children:
                out.append(f"{lead}|-CHILD")
                walk(s.children, depth + 1)

    walk(vm.snapshots, 0)
    return "\n".join(out) + "\n"


def _snapshot_id(args: list[str], command: str) -> int:
    if len(args) < 2 or not args[1].isdigit():
        raise HostsimError(f"Insufficient arguments. Usage: vim-cmd {command} vmid snapshotId")
    return int(args[1])


def _snapshot_revert(host: ConsoleHost, args: list[str]) -> str:
    vm = _vm(host, args, "vmsvc/snapshot.revert")
    host.snapshot_revert(vm.vmid, _snapshot_id(args, "vmsvc/snapshot.revert"))
    return "Revert Snapshot:\n"


def _snapshot_remove(host: ConsoleHost, args: list[str]) -> str:
    vm = _vm(host, args, "vmsvc/snapshot.remove")
    host.snapshot_remove(vm.vmid, _snapshot_id(args, "vmsvc/snapshot.remove"))
    return "Remove Snapshot:\n"


def _snapshot_removeall(host: ConsoleHost, args: list[str]) -> str:
    vm = _vm(host, args, "vmsvc/snapshot.removeall")
    host.snapshot_removeall(vm.vmid)
    return "Remove All Snapshots:\n"


def _message(host: ConsoleHost, args: list[str]) -> str:
    """``vmsvc/message VMID [ID CHOICE]``: show or answer the VM's pending question."""
    vm = _vm(host, args, "vmsvc/message")
    if len(args) < 3:
        if vm.question is None:
            return "No message.\n"
        return f"Virtual machine message _vmx1:\n{vm.question}\n   0. OK\n   1. Cancel\n"
    choice = {"0": "retry", "1": "cancel"}.get(args[2])
    if choice is None:
        raise HostsimError(f"Invalid choice {args[2]!r}: 0 (Retry) or 1 (Cancel)")
    host.answer(vm.vmid, choice)
    return ""


def _createdummyvm(host: ConsoleHost, args: list[str]) -> str:
    if not args:
        raise HostsimError("Insufficient arguments. Usage: vim-cmd vmsvc/createdummyvm vmname [datastore path]")
    return f"{host.create_dummy_vm(args[0], args[1] if len(args) > 1 else None)}\n"


def _registervm(host: ConsoleHost, args: list[str]) -> str:
    if not args:
        raise HostsimError("Insufficient arguments. Usage: vim-cmd solo/registervm vmx path")
    return f"{host.register_path(args[0])}\n"


def _unregister(host: ConsoleHost, args: list[str]) -> str:
    host.unregister(_vm(host, args, "vmsvc/unregister").vmid)
    return ""


def _destroy(host: ConsoleHost, args: list[str]) -> str:
    host.destroy(_vm(host, args, "vmsvc/destroy").vmid)
    return ""


def _createvm(host: ConsoleHost, args: list[str]) -> str:
    """hostsim's own: a VM with everything a scenario's ``create vm`` line says."""
    if not args:
        raise HostsimError("Insufficient arguments. Usage: vim-cmd hostsim/createvm NAME memory=SIZE [vcpus=N] "
                           "[guest=FILE] [disk=SIZE[:TYPE][@DS]] [cpu.shares=...] ...")
    return f"{host.createvm(args)}\n"


_VIM_COMMANDS = {
    "vmsvc/getallvms": _getallvms,
    "vmsvc/power.on": _power("on", "Powering on VM:"),
    "vmsvc/power.off": _power("off", "Powering off VM:"),
    "vmsvc/power.reset": _power("reset", "Reset VM:"),
    "vmsvc/power.getstate": _getstate,
    "vmsvc/get.summary": _summary,
    "vmsvc/get.guestheartbeatStatus": _heartbeat,
    "vmsvc/snapshot.create": _snapshot_create,
    "vmsvc/snapshot.get": _snapshot_get,
    "vmsvc/snapshot.revert": _snapshot_revert,
    "vmsvc/snapshot.remove": _snapshot_remove,
    "vmsvc/snapshot.removeall": _snapshot_removeall,
    "vmsvc/message": _message,
    "hostsvc/hostsummary": _hostsummary,
    "vmsvc/createdummyvm": _createdummyvm,
    "vmsvc/unregister": _unregister,
    "vmsvc/destroy": _destroy,
    "solo/registervm": _registervm,
    "hostsim/createvm": _createvm,
}


# -- vmware-cmd ---------------------------------------------------------------------------------


def vmware_cmd(host: ConsoleHost, argv: Sequence[str]) -> tuple[str, int]:
    """Run ``vmware-cmd ARGV`` (``-l``, or ``CFG getstate|start|stop|reset [mode]``)."""
    args = [a for a in argv if a != "-q"]
    terse = len(args) != len(argv)
    if not args:
        return "Usage: vmware-cmd -l | <cfg> getstate|start|stop|reset [soft|hard|trysoft]\n", 1
    if args[0] == "-l":
        return "".join(f"{v.vmx_full_path}\n" for v in sorted(host.vm_views(), key=lambda v: v.vmid)), 0
    if len(args) < 2:
        return f"vmware-cmd: no operation given for {args[0]}\n", 1
    cfg, op = args[0], args[1]
    vm = next((v for v in host.vm_views() if cfg in (v.vmx_full_path, f"[{v.datastore}] {v.vmx_path}")), None)
    if vm is None:
        return (f"/usr/bin/vmware-cmd: Could not connect to VM {cfg}\n"
                "  (VMControl error -11: No such virtual machine)\n"), 1
    try:
        if op == "getstate":
            value = VMWARE_CMD_STATE[vm.power_state]
        elif op in ("start", "stop", "reset"):
            {"start": host.power_on, "stop": host.power_off, "reset": host.reset}[op](vm.vmid)
            value = "1"
        else:
            return f"vmware-cmd: unknown operation {op!r} (getstate, start, stop, reset)\n", 1
    except HostsimError as exc:
        return f"VMControl error: {exc}\n", 1
    return (f"{value}\n" if terse else f"{op}() = {value}\n"), 0
