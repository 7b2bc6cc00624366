"""The scenario file: a whole experiment, run headless (``*.scenario``).

Why a file of its own: an experiment of esx-design.md section 8 is a sequence of administrator
actions at chosen simulated times (power on a third VM at 60 s, halve a reservation at 120 s);
writing them down makes a run repeatable and reviewable.  This module only reads the file into
a list of timed :class:`Step` values; the console's Host executes them in order, running the
engine up to each step's ``at_us`` first.  The run ends at the time of the last step.

One command per line, ``#`` starts a comment, words are separated by blanks, options are
``key=value``.  Times: ``250us``, ``500ms``, ``30s``, ``2m``, ``1h``; sizes ``512M``, ``8G``;
CPU amounts ``500MHz``, ``1.5GHz``; shares ``low``/``normal``/``high`` or a number; limits a
value or ``unlimited``.

    boot demo.host                      # first command: the host config (relative to this file)
    esxtop every 5s                     # esxtop sampling interval from now on
    idle-tax 0.75                       # the memory idle tax (0 to 0.99, or 75%)
    create vm web1 memory=512M vcpus=1 guest=guests/cpu-hog.guest disk=8G:thin
           cpu.shares=high cpu.reservation=500MHz cpu.limit=unlimited cpu.min=20% cpu.max=50%
           mem.shares=normal mem.reservation=256M mem.limit=unlimited pool=gold balloon=yes
    power on web1        |  power off web1
    set web1 cpu.shares=2000 mem.limit=384M
    snapshot create web1 before  |  snapshot revert web1 before  |  snapshot remove web1 before
    at 30s                              # move to an absolute time (never backwards) ...
    at 30s power on db1                 # ... or do one command there
    run 60s                             # let 60 s pass

(The ``create vm`` example is one line in a file.)  ``disk=SIZE[:TYPE][@DATASTORE]`` may be
repeated; TYPE is thin (default), zeroedthick or eagerzeroedthick; disks get scsi0:0, scsi0:1, …
(scsi0:7 is the controller's); DATASTORE defaults to the first LUN of the config that has one.

Errors are :class:`ScenarioError` with one line ``FILE:LINE: message`` for every malformed case
(unknown command or option, bad value, time going backwards, a VM used before it is created,
powered on twice, a snapshot reverted that was never taken, a guest file or pool or datastore
that does not exist); an error in the boot config is reported at its own file and line.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hostsim.console import config as cfg
from hostsim.errors import HostsimError

DISK_TYPES = ("thin", "zeroedthick", "eagerzeroedthick")
DEFAULT_ESXTOP_US = 5_000_000
MAX_VCPUS = 8


class ScenarioError(HostsimError):
    """A malformed scenario file: ``FILE:LINE: message``."""


# -- steps ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """Something the host does at ``at_us`` (simulated µs since boot); ``line`` is where the file
    asked for it."""

    at_us: int
    line: int


@dataclass(frozen=True)
class Boot(Step):
    """Boot the host described by ``config`` (always the first step, at 0)."""

    config: cfg.HostConfig


@dataclass(frozen=True)
class Advance(Step):
    """Run the simulation up to ``at_us`` (from ``at`` and ``run``)."""


@dataclass(frozen=True)
class EsxtopInterval(Step):
    """Take an esxtop sample every ``interval_us`` from now on."""

    interval_us: int


@dataclass(frozen=True)
class SetIdleTax(Step):
    """Set the memory idle tax τ (0 ≤ τ < 1)."""

    tax: float


@dataclass(frozen=True)
class Controls:
    """Resource controls; None = leave as is (in ``SetControls``) or the default (in ``CreateVm``).

    CPU amounts in MHz, memory in MB, ``cpu_min_pct``/``cpu_max_pct`` the ESX 2.x per-VM min and
    max in percent of one pCPU; limits -1 for unlimited; shares a level or a number."""

    cpu_shares: int | str | None = None
    cpu_reservation_mhz: int | None = None
    cpu_limit_mhz: int | None = None
    cpu_min_pct: float | None = None
    cpu_max_pct: float | None = None
    mem_shares: int | str | None = None
    mem_reservation_mb: int | None = None
    mem_limit_mb: int | None = None
    #: every disk's mClock controls (IOPS; limit -1 for none), ESX's sched.scsiN:M.* keys
    disk_shares: int | str | None = None
    disk_reservation_iops: int | None = None
    disk_limit_iops: int | None = None


@dataclass(frozen=True)
class DiskSpec:
    """One virtual disk of a new VM: SCSI node, size, provisioning type, datastore label."""

    node: str
    size_bytes: int
    kind: str
    datastore: str


@dataclass(frozen=True)
class CreateVm(Step):
    """Create (register) a VM, powered off."""

    name: str
    memory_mb: int
    vcpus: int
    controls: Controls
    disks: tuple[DiskSpec, ...]
    guest: Path | None
    pool: str | None
    balloon: bool


@dataclass(frozen=True)
class PowerOn(Step):
    vm: str


@dataclass(frozen=True)
class PowerOff(Step):
    vm: str


@dataclass(frozen=True)
class SetControls(Step):
    """Change a VM's resource controls (fields that are None stay)."""

    vm: str
    controls: Controls


@dataclass(frozen=True)
class Snapshot(Step):
    """``op`` create, revert or remove the snapshot ``snapshot`` of ``vm``."""

    vm: str
    op: str
    snapshot: str


@dataclass(frozen=True)
class Scenario:
    """A parsed scenario: its file, the host config it boots and its steps in order."""

    path: Path
    config: cfg.HostConfig
    steps: tuple[Step, ...]

    @property
    def end_us(self) -> int:
        return self.steps[-1].at_us


# -- parsing -------------------------------------------------------------------------------------

CONTROL_KEYS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "cpu.shares": ("cpu_shares", cfg.parse_shares),
    "cpu.reservation": ("cpu_reservation_mhz", cfg.parse_mhz),
    "cpu.limit": ("cpu_limit_mhz", lambda t: cfg.parse_limit(t, cfg.parse_mhz)),
    "cpu.min": ("cpu_min_pct", lambda t: _percent(t)),
    "cpu.max": ("cpu_max_pct", lambda t: _percent(t)),
    "mem.shares": ("mem_shares", cfg.parse_shares),
    "mem.reservation": ("mem_reservation_mb", cfg.parse_mb),
    "mem.limit": ("mem_limit_mb", lambda t: cfg.parse_limit(t, cfg.parse_mb)),
    "disk.shares": ("disk_shares", cfg.parse_shares),
    "disk.reservation": ("disk_reservation_iops", lambda t: cfg.parse_int(t.removesuffix("iops"), 0)),
    "disk.limit": ("disk_limit_iops", lambda t: cfg.parse_limit(t, lambda u: cfg.parse_int(u.removesuffix("iops"), 1))),
}
CREATE_KEYS = {"memory", "vcpus", "guest", "disk", "pool", "balloon", *CONTROL_KEYS}


def _percent(text: str) -> float:
    """``20%`` or ``20`` → 20.0 (percent of one pCPU per vCPU: 0 to 100)."""
    return cfg.parse_float(text.removesuffix("%"), 0.0, 100.0 * MAX_VCPUS)


@dataclass
class _VmState:
    vcpus: int
    memory_mb: int
    on: bool = False
    snapshots: set[str] = field(default_factory=set)


class _Parser:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.now = 0
        self.lineno = 0
        self.config: cfg.HostConfig | None = None
        self.steps: list[Step] = []
        self.vms: dict[str, _VmState] = {}

    def error(self, message: str) -> ScenarioError:
        return ScenarioError(f"{self.path}:{self.lineno}: {message}")

    def value(self, key: str, text: str, parse: Callable[[str], Any]) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise self.error(f"{key}: {exc}") from None

    def options(self, words: list[str], allowed: set[str], repeatable: set[str] = frozenset()) -> dict[str, Any]:
        """``key=value`` words; a repeatable key collects a list."""
        out: dict[str, Any] = {}
        for w in words:
            key, eq, val = w.partition("=")
            if not eq or not key:
                raise self.error(f"expected key=value, got {w!r}")
            if key not in allowed:
                raise self.error(f"unknown option {key!r} (known: {', '.join(sorted(allowed))})")
            if not val:
                raise self.error(f"option {key!r} has no value")
            if key in repeatable:
                out.setdefault(key, []).append(val)
            elif key in out:
                raise self.error(f"option {key!r} given twice")
            else:
                out[key] = val
        return out

    def vm(self, name: str) -> _VmState:
        if name not in self.vms:
            raise self.error(f"no VM named {name!r} (create it first)")
        return self.vms[name]

    # -- one line --------------------------------------------------------------------------------

    def line(self, text: str) -> None:
        try:
            words = shlex.split(text, comments=True)
        except ValueError as exc:
            raise self.error(f"cannot split the line into words: {exc}") from None
        if not words:
            return
        if self.config is None and words[0] != "boot":
            raise self.error("the first command must be 'boot CONFIG'")
        self.command(words)

    def command(self, words: list[str]) -> None:
        verb, args = words[0], words[1:]
        handler = {
            "boot": self.boot, "at": self.at, "run": self.run, "esxtop": self.esxtop, "idle-tax": self.idle_tax,
            "create": self.create, "power": self.power, "set": self.set, "snapshot": self.snapshot,
        }.get(verb)
        if handler is None:
            raise self.error(f"unknown command {verb!r} (boot, at, run, esxtop, idle-tax, create, power, set, "
                             "snapshot)")
        handler(args)

    def add(self, step_type: type[Step], **kw: Any) -> None:
        self.steps.append(step_type(at_us=self.now, line=self.lineno, **kw))

    def boot(self, args: list[str]) -> None:
        if self.config is not None:
            raise self.error("the host is already booted ('boot' comes once, first)")
        if len(args) != 1:
            raise self.error("usage: boot CONFIG")
        conf = Path(args[0])
        self.config = cfg.load(conf if conf.is_absolute() else self.path.parent / conf)
        self.add(Boot, config=self.config)

    def at(self, args: list[str]) -> None:
        if not args:
            raise self.error("usage: at TIME [COMMAND ...]")
        when = self.value("at", args[0], cfg.parse_duration)
        if when < self.now:
            raise self.error(f"at {args[0]} is before the current time ({self.now / 1e6:g} s)")
        if when > self.now or not args[1:]:
            self.now = when
            self.add(Advance)
        if args[1:]:
            self.command(args[1:])

    def run(self, args: list[str]) -> None:
        if len(args) != 1:
            raise self.error("usage: run DURATION")
        span = self.value("run", args[0], cfg.parse_duration)
        if span <= 0:
            raise self.error(f"run {args[0]}: the duration must be positive")
        self.now += span
        self.add(Advance)

    def esxtop(self, args: list[str]) -> None:
        if len(args) != 2 or args[0] not in ("every", "interval"):
            raise self.error("usage: esxtop every DURATION")
        interval = self.value("esxtop", args[1], cfg.parse_duration)
        if interval <= 0:
            raise self.error(f"esxtop every {args[1]}: the interval must be positive")
        self.add(EsxtopInterval, interval_us=interval)

    def idle_tax(self, args: list[str]) -> None:
        if len(args) != 1:
            raise self.error("usage: idle-tax RATE (0 to 0.99, or a percentage like 75%)")
        text = args[0]
        if text.endswith("%"):
            tax = self.value("idle-tax", text[:-1], lambda t: cfg.parse_float(t, 0.0, 99.0)) / 100
        else:
            tax = self.value("idle-tax", text, lambda t: cfg.parse_float(t, 0.0, 0.99))
        self.add(SetIdleTax, tax=tax)

    def controls(self, opts: dict[str, str]) -> Controls:
        values = {CONTROL_KEYS[k][0]: self.value(k, v, CONTROL_KEYS[k][1]) for k, v in opts.items()
                  if k in CONTROL_KEYS}
        c = Controls(**values)
        for res, lim, unit in ((c.cpu_reservation_mhz, c.cpu_limit_mhz, "MHz"),
                               (c.mem_reservation_mb, c.mem_limit_mb, "MB"),
                               (c.disk_reservation_iops, c.disk_limit_iops, "IOPS")):
            if res is not None and lim not in (None, -1) and lim < res:
                raise self.error(f"limit {lim} {unit} is below the reservation {res} {unit}")
        if c.cpu_min_pct is not None and c.cpu_max_pct is not None and c.cpu_max_pct < c.cpu_min_pct:
            raise self.error(f"cpu.max {c.cpu_max_pct:g}% is below cpu.min {c.cpu_min_pct:g}%")
        return c

    def create(self, args: list[str]) -> None:
        if len(args) < 2 or args[0] != "vm":
            raise self.error("usage: create vm NAME memory=SIZE [vcpus=N] [guest=FILE] [disk=SIZE[:TYPE][@DS]] ...")
        name = args[1]
        if not name or "=" in name or "/" in name:
            raise self.error(f"not a VM name: {name!r}")
        if name in self.vms:
            raise self.error(f"a VM named {name!r} already exists")
        opts = self.options(args[2:], CREATE_KEYS, repeatable={"disk"})
        if "memory" not in opts:
            raise self.error(f"create vm {name}: memory=SIZE is required")
        memory = self.value("memory", opts["memory"], cfg.parse_mb)
        if memory < 4:
            raise self.error(f"memory: a VM needs at least 4 MB, got {memory}")
        vcpus = self.value("vcpus", opts.get("vcpus", "1"), lambda t: cfg.parse_int(t, 1, MAX_VCPUS))
        controls = self.controls(opts)
        if controls.mem_reservation_mb is not None and controls.mem_reservation_mb > memory:
            raise self.error(f"mem.reservation {controls.mem_reservation_mb} MB is above the VM's memory {memory} MB")
        for pct, key in ((controls.cpu_min_pct, "cpu.min"), (controls.cpu_max_pct, "cpu.max")):
            if pct is not None and pct > 100 * vcpus:
                raise self.error(f"{key} {pct:g}% is above 100% per vCPU ({100 * vcpus}% for {vcpus} vCPUs)")
        self.add(CreateVm, name=name, memory_mb=memory, vcpus=vcpus, controls=controls,
                 disks=tuple(self.disks(opts.get("disk", []))), guest=self.guest(opts.get("guest")),
                 pool=self.pool(opts.get("pool")),
                 balloon=self.value("balloon", opts.get("balloon", "yes"), cfg.parse_bool))
        self.vms[name] = _VmState(vcpus=vcpus, memory_mb=memory)

    def disks(self, specs: list[str]) -> list[DiskSpec]:
        assert self.config is not None
        labels = [lun.datastore for lun in self.config.luns if lun.datastore]
        nodes = [f"scsi0:{i}" for i in range(16) if i != 7]
        if len(specs) > len(nodes):
            raise self.error(f"at most {len(nodes)} disks on scsi0, got {len(specs)}")
        out = []
        for spec, node in zip(specs, nodes, strict=False):
            body, _, datastore = spec.partition("@")
            size_text, _, kind = body.partition(":")
            size = self.value("disk", size_text, cfg.parse_size)
            if size <= 0 or size % 512:
                raise self.error(f"disk: a size is a positive multiple of 512 bytes, got {size_text!r}")
            kind = kind or "thin"
            if kind not in DISK_TYPES:
                raise self.error(f"disk: type {kind!r} is not one of {', '.join(DISK_TYPES)}")
            if not labels:
                raise self.error(f"disk: the host config {self.config.path} has no LUN with a datastore")
            datastore = datastore or labels[0]
            if datastore not in labels:
                raise self.error(f"disk: no datastore {datastore!r} in {self.config.path} (have: {', '.join(labels)})")
            out.append(DiskSpec(node, size, kind, datastore))
        return out

    def guest(self, text: str | None) -> Path | None:
        if text is None:
            return None
        path = Path(text) if Path(text).is_absolute() else self.path.parent / text
        if not path.is_file():
            raise self.error(f"guest: {path}: no such file")
        return path

    def pool(self, name: str | None) -> str | None:
        assert self.config is not None
        if name is not None and name not in {p.name for p in self.config.pools}:
            have = ", ".join(p.name for p in self.config.pools) or "none"
            raise self.error(f"pool: no pool {name!r} in {self.config.path} (have: {have})")
        return name

    def power(self, args: list[str]) -> None:
        if len(args) != 2 or args[0] not in ("on", "off"):
            raise self.error("usage: power on|off VM")
        vm = self.vm(args[1])
        if args[0] == "on":
            if vm.on:
                raise self.error(f"{args[1]} is already powered on")
            vm.on = True
            self.add(PowerOn, vm=args[1])
        else:
            if not vm.on:
                raise self.error(f"{args[1]} is not powered on")
            vm.on = False
            self.add(PowerOff, vm=args[1])

    def set(self, args: list[str]) -> None:
        if len(args) < 2:
            raise self.error("usage: set VM key=value ... (cpu.shares, cpu.reservation, cpu.limit, cpu.min, "
                             "cpu.max, mem.shares, mem.reservation, mem.limit)")
        vm = self.vm(args[0])
        controls = self.controls(self.options(args[1:], set(CONTROL_KEYS)))
        if controls.mem_reservation_mb is not None and controls.mem_reservation_mb > vm.memory_mb:
            raise self.error(f"mem.reservation {controls.mem_reservation_mb} MB is above the VM's memory "
                             f"{vm.memory_mb} MB")
        self.add(SetControls, vm=args[0], controls=controls)

    def snapshot(self, args: list[str]) -> None:
        if len(args) != 3 or args[0] not in ("create", "revert", "remove"):
            raise self.error("usage: snapshot create|revert|remove VM NAME")
        op, name, snap = args
        vm = self.vm(name)
        if op == "create":
            if snap in vm.snapshots:
                raise self.error(f"{name} already has a snapshot {snap!r}")
            vm.snapshots.add(snap)
        elif snap not in vm.snapshots:
            raise self.error(f"{name} has no snapshot {snap!r}")
        elif op == "remove":
            vm.snapshots.discard(snap)
        self.add(Snapshot, vm=name, op=op, snapshot=snap)


def parse(text: str, path: str | os.PathLike[str]) -> Scenario:
    """Parse a scenario's text (``path`` names it in errors and anchors relative paths)."""
    p = _Parser(Path(path))
    for p.lineno, raw in enumerate(text.splitlines(), 1):
        p.line(raw)
    if p.config is None:
        p.lineno = max(p.lineno, 1)
        raise p.error("empty scenario: the first command must be 'boot CONFIG'")
    return Scenario(path=p.path, config=p.config, steps=tuple(p.steps))


def load(path: str | os.PathLike[str]) -> Scenario:
    """Read and parse a scenario file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ScenarioError(f"{path}:1: not a text file") from None
    return parse(text, path)


def parse_create(args: list[str], config: cfg.HostConfig, where: str = "vim-cmd") -> CreateVm:
    """``NAME key=value ...`` as a scenario's ``create vm`` takes them (``hostsim vim-cmd
    hostsim/createvm`` on a booted host): the same keys, checks and errors, ``where`` naming the
    source in them (relative guest paths are taken from the current directory)."""
    p = _Parser(Path.cwd() / where)
    p.config = config
    p.lineno = 1
    p.create(["vm", *args])
    step = p.steps[-1]
    assert isinstance(step, CreateVm)
    return step
