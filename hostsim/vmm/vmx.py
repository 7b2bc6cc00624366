"""The ``.vmx`` file: a VM's configuration in VMware's own syntax, read and written losslessly.

Why its own module: the ``.vmx`` is what the user edits and what ESX rewrites (snapshots repoint
``scsi0:0.fileName``, power-on records ``sched.swap.derivedName``), so it must be read with
errors that point at a line, and rewritten without losing what we do not understand.

Syntax (as ESX writes it): one ``key = "value"`` per line; blank lines and ``#`` comments; keys
are case-insensitive (``displayName`` and ``displayname`` are one key); inside quotes VMware
escapes ``"``, ``|``, ``#`` and control characters as ``|XX`` (two hex digits); ``.encoding``
names the character set of the file (UTF-8 when absent).  An unquoted one-word value is accepted
as VMware's parser accepts it.  A duplicate key is refused (which one would win is unclear).

:class:`VmxFile` keeps every line as read: rewriting changes only the lines of keys that were
set, appends new keys at the end, and keeps comments, unknown keys and their order.
:class:`VmConfig` is the typed view the rest of hostsim uses; every value it reads is checked,
and a bad one is reported as ``FILE:LINE: key: problem``.

The guest program of a simulated VM is named by ``guestinfo.hostsim.program`` (a file name
relative to the VM's folder).  Why a ``guestinfo.`` key: that is the channel through which ESX
hands values from the host to the guest (``vmware-cmd setguestinfo``, readable in the guest with
``vmware-rpctool "info-get guestinfo.…"``), and choosing what to run is the guest's business;
keys under ``guestinfo.`` are also never interpreted by ESX itself, so a real ESX would keep it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from hostsim.errors import HostsimError

#: the key of the guest program file (see the module docstring for why a guestinfo key)
PROGRAM_KEY = "guestinfo.hostsim.program"
#: virtual SCSI controllers ESX offers (``scsiN.virtualDev``)
SCSI_VIRTUAL_DEVS = ("lsilogic", "buslogic", "lsisas1068", "pvscsi")
#: device types of a SCSI node we simulate (a disk); CD-ROMs and the like are kept, not opened
DISK_DEVICE_TYPES = ("scsi-harddisk", "disk")
#: shares presets per vCPU (CPU) and per MB of memory (memory), esx-design.md 3.1 and 2.2
CPU_SHARES_PER_VCPU = {"low": 500, "normal": 1000, "high": 2000}
MEM_SHARES_PER_MB = {"low": 5, "normal": 10, "high": 20}
MAX_VCPUS = 64
#: ``config.version`` and ``virtualHW.version`` ESX 4.x writes for a new VM
CONFIG_VERSION = "8"
HW_VERSION = "7"

_KEY = re.compile(r"[A-Za-z0-9_.:\-]+\Z")
_NODE = re.compile(r"(?P<ctl>scsi(?P<bus>\d+)):(?P<unit>\d+)\.filename\Z", re.IGNORECASE)
_ESCAPE = re.compile(r"\|([0-9A-Fa-f]{2})")
_BOOLEAN = {"true": True, "false": False}


class VmxError(HostsimError):
    """A ``.vmx`` (or ``.vmsd``) line or value that cannot be used: ``FILE:LINE: message``."""


# -- the file ----------------------------------------------------------------------------------------


@dataclass
class _Line:
    """One line: ``key`` is None for blanks and comments; ``raw`` is None once the entry changed."""

    key: str | None
    value: str = ""
    raw: str | None = None
    number: int = 0


def unescape(text: str) -> str:
    """VMware's ``|XX`` escapes to the characters they stand for."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)


def escape(text: str) -> str:
    """The characters that cannot stand inside quotes, as ``|XX`` (what ESX writes)."""
    out = []
    for ch in text:
        out.append(f"|{ord(ch):02X}" if ch in '"|#' or ord(ch) < 0x20 or ord(ch) == 0x7F else ch)
    return "".join(out)


def render_entry(key: str, value: str) -> str:
    return f'{key} = "{escape(value)}"'


def _parse_value(rest: str, where: str) -> str:
    """The value after ``=``: a quoted string (then only a comment may follow) or one word."""
    rest = rest.strip()
    if rest.startswith('"'):
        end = rest.find('"', 1)
        if end < 0:
            raise VmxError(f"{where}: unterminated quoted value")
        tail = rest[end + 1 :].strip()
        if tail and not tail.startswith("#"):
            raise VmxError(f"{where}: unexpected text after the closing quote: {tail!r}")
        return unescape(rest[1:end])
    word = rest.split("#", 1)[0].strip()
    if not word:
        raise VmxError(f"{where}: missing value after '='")
    if any(c.isspace() or c == '"' for c in word):
        raise VmxError(f"{where}: a value with spaces or quotes must be quoted: {word!r}")
    return unescape(word)


def _encoding_of(data: bytes) -> str:
    """The ``.encoding`` the file declares (looked for in its ASCII lines), UTF-8 if none."""
    for raw in data.splitlines():
        line = raw.decode("ascii", "replace").strip()
        m = re.match(r'\.encoding\s*=\s*"?([A-Za-z0-9_\-]+)"?', line, re.IGNORECASE)
        if m:
            return m.group(1)
    return "UTF-8"


class VmxFile:
    """A ``.vmx``-syntax file (also ``.vmsd``): ordered entries plus the lines between them."""

    def __init__(self, path: str, lines: list[_Line] | None = None) -> None:
        self.path = path
        self._lines: list[_Line] = lines or []
        self._index: dict[str, _Line] = {}
        for line in self._lines:
            if line.key is not None:
                self._index[line.key.lower()] = line

    @classmethod
    def parse(cls, data: bytes | str, path: str) -> VmxFile:
        """Read ``data``; every problem is a :class:`VmxError` ``PATH:LINE: message``."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        encoding = _encoding_of(data)
        try:
            "".encode(encoding)
        except LookupError:
            raise VmxError(f"{path}: unknown .encoding {encoding!r}") from None
        lines: list[_Line] = []
        seen: dict[str, int] = {}
        for number, raw_bytes in enumerate(data.splitlines(), 1):
            where = f"{path}:{number}"
            try:
                raw = raw_bytes.decode(encoding)
            except UnicodeDecodeError:
                raise VmxError(f"{where}: not valid {encoding} text") from None
            text = raw.strip()
            if not text or text.startswith("#"):
                lines.append(_Line(None, raw=raw, number=number))
                continue
            key, eq, rest = text.partition("=")
            key = key.strip()
            if not eq:
                raise VmxError(f"{where}: expected 'key = \"value\"', got {text!r}")
            if not key:
                raise VmxError(f"{where}: missing key before '='")
            if not _KEY.match(key):
                raise VmxError(f"{where}: bad key {key!r} (letters, digits and . : _ - only)")
            if key.lower() in seen:
                raise VmxError(f"{where}: duplicate key {key!r} (first at line {seen[key.lower()]})")
            seen[key.lower()] = number
            lines.append(_Line(key, _parse_value(rest, where), raw, number))
        return cls(path, lines)

    # -- access ---------------------------------------------------------------------------------

    def get(self, key: str, default: str | None = None) -> str | None:
        line = self._index.get(key.lower())
        return default if line is None else line.value

    def __contains__(self, key: str) -> bool:
        return key.lower() in self._index

    def __getitem__(self, key: str) -> str:
        line = self._index.get(key.lower())
        if line is None:
            raise KeyError(key)
        return line.value

    def where(self, key: str) -> str:
        """``PATH:LINE`` of ``key`` (just ``PATH`` for a key that is absent or was added)."""
        line = self._index.get(key.lower())
        return f"{self.path}:{line.number}" if line is not None and line.number else self.path

    def error(self, key: str, problem: str) -> VmxError:
        return VmxError(f"{self.where(key)}: {key}: {problem}")

    def items(self) -> Iterator[tuple[str, str]]:
        """(key as written, value) in file order."""
        for line in self._lines:
            if line.key is not None:
                yield line.key, line.value

    def keys(self) -> list[str]:
        return [k for k, _ in self.items()]

    # -- changes --------------------------------------------------------------------------------

    def set(self, key: str, value: str | int | bool) -> None:
        """Set ``key`` (in place when it exists, else appended); booleans as TRUE/FALSE."""
        if not _KEY.match(key):
            raise VmxError(f"{self.path}: bad key {key!r}")
        text = ("TRUE" if value else "FALSE") if isinstance(value, bool) else str(value)
        line = self._index.get(key.lower())
        if line is None:
            line = _Line(key, text)
            self._lines.append(line)
            self._index[key.lower()] = line
        elif line.value != text:
            line.value, line.raw = text, None

    def remove(self, key: str) -> None:
        line = self._index.pop(key.lower(), None)
        if line is not None:
            self._lines.remove(line)

    def remove_prefix(self, prefix: str) -> None:
        """Remove every key starting with ``prefix`` (case-insensitive), e.g. ``snapshot0.``."""
        for key in [k for k in self.keys() if k.lower().startswith(prefix.lower())]:
            self.remove(key)

    # -- output ---------------------------------------------------------------------------------

    def render(self) -> str:
        """The file: unchanged lines exactly as read, changed and new entries as ESX writes them."""
        out = []
        for line in self._lines:
            if line.raw is not None:
                out.append(line.raw)
            else:
                assert line.key is not None
                out.append(render_entry(line.key, line.value))
        return "".join(f"{text}\n" for text in out)

    def to_bytes(self) -> bytes:
        return self.render().encode(self.get(".encoding") or "UTF-8")


# -- typed values ----------------------------------------------------------------------------------------


def _int(vmx: VmxFile, key: str, default: int | None = None, *, low: int | None = None,
         high: int | None = None) -> int:
    text = vmx.get(key)
    if text is None:
        if default is None:
            raise VmxError(f"{vmx.path}: missing required key {key!r}")
        return default
    try:
        value = int(text.strip(), 10)
    except ValueError:
        raise vmx.error(key, f"{text!r} is not a whole number") from None
    if low is not None and value < low:
        raise vmx.error(key, f"{value} is below the minimum {low}")
    if high is not None and value > high:
        raise vmx.error(key, f"{value} is above the maximum {high}")
    return value


def _bool(vmx: VmxFile, key: str, default: bool = False) -> bool:
    text = vmx.get(key)
    if text is None:
        return default
    if text.strip().lower() not in _BOOLEAN:
        raise vmx.error(key, f"{text!r} is not TRUE or FALSE")
    return _BOOLEAN[text.strip().lower()]


def _shares(vmx: VmxFile, key: str, presets: dict[str, int], units: int) -> tuple[str, int]:
    """(level, shares): low/normal/high scaled by ``units`` (vCPUs or MB), or a number (custom)."""
    text = (vmx.get(key) or "normal").strip()
    if text.lower() in presets:
        return text.lower(), presets[text.lower()] * units
    try:
        value = int(text, 10)
    except ValueError:
        raise vmx.error(key, f"{text!r} is not low, normal, high or a number of shares") from None
    if value < 1:
        raise vmx.error(key, f"{value}: shares must be at least 1")
    return "custom", value


@dataclass(frozen=True)
class DiskConfig:
    """One ``scsiN:M`` node that holds a disk."""

    node: str  # "scsi0:0"
    file_name: str  # as written: relative to the VM folder, or a /vmfs/volumes/... path
    device_type: str
    present: bool


@dataclass(frozen=True)
class VmConfig:
    """What hostsim needs of a ``.vmx``, every value checked (errors name the file and line)."""

    path: str
    display_name: str
    memsize_mb: int
    numvcpus: int
    guest_os: str
    config_version: str
    hw_version: int
    cpu_shares_level: str
    cpu_shares: int
    cpu_min_mhz: int
    cpu_max_mhz: int  # -1: unlimited
    mem_min_mb: int
    mem_max_mb: int
    mem_shares_level: str
    mem_shares: int
    swap_derived_name: str | None
    nvram: str
    program: str | None
    controllers: dict[str, str] = field(default_factory=dict)  # "scsi0" -> virtualDev
    disks: tuple[DiskConfig, ...] = ()

    @property
    def swap_mb(self) -> int:
        """Size of the ``.vswp`` ESX creates at power-on: memsize − memory reservation."""
        return self.memsize_mb - self.mem_min_mb

    @classmethod
    def from_vmx(cls, vmx: VmxFile) -> VmConfig:
        memsize = _int(vmx, "memsize", low=4, high=1 << 20)
        if memsize % 4:
            raise vmx.error("memsize", f"{memsize} MB is not a multiple of 4 MB")
        vcpus = _int(vmx, "numvcpus", 1, low=1, high=MAX_VCPUS)
        cpu_level, cpu_shares = _shares(vmx, "sched.cpu.shares", CPU_SHARES_PER_VCPU, vcpus)
        mem_level, mem_shares = _shares(vmx, "sched.mem.shares", MEM_SHARES_PER_MB, memsize)
        cpu_min = _int(vmx, "sched.cpu.min", 0, low=0)
        cpu_max = _int(vmx, "sched.cpu.max", -1, low=-1)
        if cpu_max != -1 and cpu_max < cpu_min:
            raise vmx.error("sched.cpu.max", f"{cpu_max} MHz is below sched.cpu.min ({cpu_min} MHz)")
        mem_min = _int(vmx, "sched.mem.min", 0, low=0, high=memsize)
        mem_max = _int(vmx, "sched.mem.max", -1, low=-1)
        mem_max = memsize if mem_max == -1 else min(mem_max, memsize)
        if mem_max < mem_min:
            raise vmx.error("sched.mem.max", f"{mem_max} MB is below sched.mem.min ({mem_min} MB)")
        name = vmx.get("displayName")
        if not name:
            raise VmxError(f"{vmx.where('displayName')}: missing or empty displayName")
        controllers, disks = _scsi(vmx)
        return cls(
            path=vmx.path,
            display_name=name,
            memsize_mb=memsize,
            numvcpus=vcpus,
            guest_os=vmx.get("guestOS") or "other",
            config_version=vmx.get("config.version") or CONFIG_VERSION,
            hw_version=_int(vmx, "virtualHW.version", int(HW_VERSION), low=3, high=99),
            cpu_shares_level=cpu_level,
            cpu_shares=cpu_shares,
            cpu_min_mhz=cpu_min,
            cpu_max_mhz=cpu_max,
            mem_min_mb=mem_min,
            mem_max_mb=mem_max,
            mem_shares_level=mem_level,
            mem_shares=mem_shares,
            swap_derived_name=vmx.get("sched.swap.derivedName"),
            nvram=vmx.get("nvram") or f"{name}.nvram",
            program=vmx.get(PROGRAM_KEY),
            controllers=controllers,
            disks=tuple(disks),
        )


def _scsi(vmx: VmxFile) -> tuple[dict[str, str], list[DiskConfig]]:
    """The present SCSI controllers and the disks on them, in controller and unit order."""
    controllers: dict[str, str] = {}
    disks: list[tuple[int, int, DiskConfig]] = []
    for key, _ in vmx.items():
        m = _NODE.match(key)
        if not m:
            continue
        ctl, bus, unit = m.group("ctl").lower(), int(m.group("bus")), int(m.group("unit"))
        node = f"{ctl}:{unit}"
        if unit == 7:
            raise vmx.error(key, "unit 7 is the SCSI controller itself")
        if unit > 15:
            raise vmx.error(key, f"unit {unit} is beyond 15")
        present = _bool(vmx, f"{node}.present", False)
        device_type = (vmx.get(f"{node}.deviceType") or "scsi-hardDisk").strip()
        if not present or device_type.lower() not in DISK_DEVICE_TYPES:
            continue
        if not _bool(vmx, f"{ctl}.present", False):
            raise vmx.error(f"{node}.present", f"{node} is present but controller {ctl} is not")
        dev = (vmx.get(f"{ctl}.virtualDev") or "buslogic").strip().lower()
        if dev not in SCSI_VIRTUAL_DEVS:
            raise vmx.error(f"{ctl}.virtualDev", f"{dev!r} is not one of {', '.join(SCSI_VIRTUAL_DEVS)}")
        controllers[ctl] = dev
        file_name = vmx[key]
        if not file_name.strip():
            raise vmx.error(key, "empty disk file name")
        disks.append((bus, unit, DiskConfig(node, file_name, device_type, present)))
    disks.sort(key=lambda d: (d[0], d[1]))
    return controllers, [d for _, _, d in disks]


def new_vmx(
    path: str,
    name: str,
    *,
    memsize_mb: int,
    numvcpus: int = 1,
    guest_os: str = "otherlinux",
    disks: tuple[str, ...] = (),
    program: str | None = None,
    extra: dict[str, str] | None = None,
) -> VmxFile:
    """A ``.vmx`` as ESX writes one for a new VM (the keys in ESX's order), checked."""
    vmx = VmxFile(path)
    for key, value in (
        (".encoding", "UTF-8"),
        ("config.version", CONFIG_VERSION),
        ("virtualHW.version", HW_VERSION),
        ("displayName", name),
        ("memsize", str(memsize_mb)),
        ("numvcpus", str(numvcpus)),
        ("guestOS", guest_os),
        ("nvram", f"{name}.nvram"),
        ("sched.cpu.shares", "normal"),
        ("sched.mem.shares", "normal"),
        ("sched.cpu.min", "0"),
        ("sched.mem.min", "0"),
    ):
        vmx.set(key, value)
    if disks:
        vmx.set("scsi0.present", True)
        vmx.set("scsi0.virtualDev", "lsilogic")
    units = [u for u in range(16) if u != 7]
    if len(disks) > len(units):
        raise VmxError(f"{path}: at most {len(units)} disks fit on one SCSI controller")
    for unit, disk in zip(units, disks, strict=False):
        vmx.set(f"scsi0:{unit}.present", True)
        vmx.set(f"scsi0:{unit}.fileName", disk)
        vmx.set(f"scsi0:{unit}.deviceType", "scsi-hardDisk")
    if program is not None:
        vmx.set(PROGRAM_KEY, program)
    for key, value in (extra or {}).items():
        vmx.set(key, value)
    VmConfig.from_vmx(vmx)
    return vmx


__all__ = [
    "PROGRAM_KEY",
    "DiskConfig",
    "VmConfig",
    "VmxError",
    "VmxFile",
    "escape",
    "new_vmx",
    "unescape",
]
