"""The host config file: what machine the simulated ESX host is (``*.host``).

Format: INI, read with :mod:`configparser`.  Why INI rather than TOML: the file is flat (a
``[host]`` section, one ``[lun NAME]`` and one ``[pool NAME]`` section per LUN and resource
pool, ``key = value`` lines), which is what ESX's own files look like (``/etc/vmware/esx.conf``,
``.vmx``); and every key sits on one line of its own, so an error can name that line — tomllib
reports lines only for syntax errors, not for a value that parses but is wrong.  configparser
gives the line of syntax errors and duplicates; we find the line of each key ourselves.

Every malformed case is a :class:`ConfigError` whose message is one line ``FILE:LINE: message``:
an unknown section or key, a missing required key, a bad number or size, a LUN whose image file
or block device does not exist, two LUNs at one address, a pool whose parent is missing.

Example (``hostsim/examples/demo.host`` is a commented one)::

    [host]
    name = esx01
    pcpus = 2
    mhz = 2000
    memory_mb = 2048
    console_mb = 192
    mode = esx2
    seed = 42

    [lun datastore1]
    memory = 8G          ; or: image = lun0.img   or: block_device = /dev/sdb
                         ; or: network = iscsi://10.0.0.1/iqn.2026-12.org.example:san/1  (or rbd:pool/image)
    adapter = vmhba1
    target = 0
    lun = 0
    datastore = datastore1
    format = vmfs5

    [pool gold]
    cpu_shares = high
    mem_reservation = 512M
"""

from __future__ import annotations

import configparser
import datetime as dt
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hostsim.errors import HostsimError
from vmfs.errors import VmfsError

MB = 1 << 20
SHARE_LEVELS = ("low", "normal", "high")
MODES = ("esx2", "esx4")
#: simulated time 0 when the config gives no epoch: 2026-01-01T00:00:00Z (a fixed date, so runs
#: stay byte-identical; VMFS refuses a creation time of 0)
DEFAULT_EPOCH_S = 1_767_225_600
#: the datastore formats the console can make on a blank LUN
VMFS_VERSIONS = ("vmfs5", "vmfs6")


class ConfigError(HostsimError):
    """A malformed host config file: ``FILE:LINE: message``."""


# -- values shared with the scenario file ------------------------------------------------------

_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": MB, "mb": MB, "g": 1 << 30, "gb": 1 << 30,
               "t": 1 << 40, "tb": 1 << 40}
_TIME_UNITS = {"us": 1, "ms": 1_000, "s": 1_000_000, "m": 60_000_000, "min": 60_000_000, "h": 3_600_000_000}
_NUMBER = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")


def parse_size(text: str, *, default_unit: str = "") -> int:
    """``8G``, ``512M``, ``4096K``, ``1T`` or bytes → bytes (binary units).  ValueError if bad."""
    m = _NUMBER.fullmatch(text.strip().lower())
    if not m or (m.group(2) or default_unit.lower()) not in _SIZE_UNITS:
        raise ValueError(f"not a size: {text!r} (a number with K, M, G or T)")
    size = float(m.group(1)) * _SIZE_UNITS[m.group(2) or default_unit.lower()]
    if not size.is_integer():
        raise ValueError(f"not a whole number of bytes: {text!r}")
    return int(size)


def parse_mb(text: str) -> int:
    """A memory size in MB: ``512``, ``512M`` or ``2G`` → 512, 512, 2048."""
    size = parse_size(text, default_unit="m")
    if size % MB:
        raise ValueError(f"not a whole number of MB: {text!r}")
    return size // MB


def parse_duration(text: str) -> int:
    """``250us``, ``500ms``, ``30s``, ``2m``, ``1h`` → µs (a bare number is seconds)."""
    m = _NUMBER.fullmatch(text.strip().lower())
    if not m or (m.group(2) or "s") not in _TIME_UNITS:
        raise ValueError(f"not a duration: {text!r} (a number with us, ms, s, m or h)")
    us = float(m.group(1)) * _TIME_UNITS[m.group(2) or "s"]
    if not us.is_integer():
        raise ValueError(f"not a whole number of microseconds: {text!r}")
    return int(us)


def parse_mhz(text: str) -> int:
    """``500MHz``, ``1.5GHz``, ``500`` → MHz."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(mhz|ghz|)", text.strip().lower())
    if not m:
        raise ValueError(f"not a frequency: {text!r} (a number with MHz or GHz)")
    mhz = float(m.group(1)) * (1000 if m.group(2) == "ghz" else 1)
    if not mhz.is_integer():
        raise ValueError(f"not a whole number of MHz: {text!r}")
    return int(mhz)


def parse_shares(text: str) -> int | str:
    """``low``/``normal``/``high`` (kept as the level: its value depends on the VM's size) or a
    number of shares."""
    t = text.strip().lower()
    if t in SHARE_LEVELS:
        return t
    if t.isdigit():
        return int(t)
    raise ValueError(f"not shares: {text!r} (low, normal, high or a number)")


def parse_limit(text: str, parse: Callable[[str], int]) -> int:
    """``unlimited`` → -1, else the value through ``parse`` (parse_mhz or parse_mb)."""
    if text.strip().lower() in ("unlimited", "-1"):
        return -1
    return parse(text)


def parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("yes", "true", "on", "1"):
        return True
    if t in ("no", "false", "off", "0"):
        return False
    raise ValueError(f"not yes or no: {text!r}")


def parse_int(text: str, low: int | None = None, high: int | None = None) -> int:
    t = text.strip()
    if not re.fullmatch(r"-?\d+", t):
        raise ValueError(f"not a whole number: {text!r}")
    v = int(t)
    if (low is not None and v < low) or (high is not None and v > high):
        bounds = f"{low} to {high}" if high is not None else f"at least {low}"
        raise ValueError(f"{v} is out of range ({bounds})")
    return v


def parse_float(text: str, low: float, high: float) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"not a number: {text!r}") from None
    if not low <= v <= high:
        raise ValueError(f"{v} is out of range ({low} to {high})")
    return v


def parse_epoch(text: str) -> int:
    """Seconds since 1970 or an ISO 8601 UTC time (``2026-12-01T08:00:00Z``)."""
    t = text.strip()
    if re.fullmatch(r"\d+", t):
        return int(t)
    try:
        moment = dt.datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a time: {text!r} (seconds since 1970 or 2026-12-01T08:00:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp())


# -- the configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    """The LUN's device model parameters (hostsim.hic DeviceModel; its defaults)."""

    fixed_us: float = 500.0
    per_byte_us: float = 0.005
    queue_depth: int = 32
    channels: int = 1


@dataclass(frozen=True)
class LunConfig:
    """One LUN: its backing (``kind`` image / block_device / memory / network), its address on
    the host (``vmhbaN:C<channel>:T<target>:L<lun_id>``), its device model, and optionally the
    VMFS datastore to make on it when it is blank (``datastore`` label, ``vmfs`` version).  A LUN
    on the network (``url``: an iSCSI URL or an RBD image) is never made blank-to-VMFS by a host:
    hosts of other machines may boot on it at the same moment."""

    name: str
    kind: str
    path: Path | None
    size_bytes: int | None
    adapter: str
    channel: int
    target: int
    lun_id: int
    local: bool
    model: ModelConfig
    datastore: str | None
    vmfs: str | None
    line: int
    url: str | None = None

    @property
    def runtime_name(self) -> str:
        return f"{self.adapter}:C{self.channel}:T{self.target}:L{self.lun_id}"


@dataclass(frozen=True)
class Allocation:
    """A pool's CPU (MHz) or memory (MB) allocation: shares (a level or a number), reservation,
    limit (-1 = unlimited), expandable reservation."""

    shares: int | str = "normal"
    reservation: int = 0
    limit: int = -1
    expandable: bool = True


@dataclass(frozen=True)
class PoolConfig:
    """A resource pool; ``parent`` None means the host's root pool."""

    name: str
    parent: str | None
    cpu: Allocation
    mem: Allocation
    line: int


@dataclass(frozen=True)
class HostConfig:
    """The whole host config file."""

    path: Path
    name: str
    pcpus: int
    mhz: int
    memory_mb: int
    console_mb: int
    vmkernel_mb: int
    swap_mb: int
    mode: str
    seed: int
    epoch_s: int
    idle_tax: float
    coschedule: str
    luns: tuple[LunConfig, ...]
    pools: tuple[PoolConfig, ...]

    def lun(self, name: str) -> LunConfig:
        return next(lun for lun in self.luns if lun.name == name)

    @property
    def network_luns(self) -> tuple[LunConfig, ...]:
        """The LUNs shared with other machines: such a host must keep real time."""
        return tuple(lun for lun in self.luns if lun.kind == "network")


# -- reading -----------------------------------------------------------------------------------

HOST_KEYS = {"name", "pcpus", "mhz", "memory_mb", "console_mb", "vmkernel_mb", "swap_mb", "mode", "seed", "epoch",
             "idle_tax", "coschedule"}
HOST_REQUIRED = ("name", "pcpus", "mhz", "memory_mb")
LUN_KEYS = {"image", "block_device", "memory", "network", "adapter", "channel", "target", "lun", "local", "datastore",
            "format", "fixed_us", "per_byte_us", "queue_depth", "channels"}
POOL_KEYS = {"parent", "cpu_shares", "cpu_reservation", "cpu_limit", "cpu_expandable", "mem_shares",
             "mem_reservation", "mem_limit", "mem_expandable"}
_SECTION = re.compile(r"\s*\[([^\]]*)\]")
_KEY = re.compile(r"\s*([^=:\s#;][^=:]*?)\s*[=:]")


class _Located:
    """Where each section and key of the file is, so a value's error can name its line."""

    def __init__(self, text: str) -> None:
        self.sections: dict[str, int] = {}
        self.keys: dict[tuple[str, str], int] = {}
        section = None
        for n, raw in enumerate(text.splitlines(), 1):
            if not raw.strip() or raw.lstrip()[:1] in "#;":
                continue
            m = _SECTION.match(raw)
            if m and not raw[:1].isspace():
                section = m.group(1)
                self.sections.setdefault(section, n)
                continue
            k = _KEY.match(raw)
            if section is not None and k and not raw[:1].isspace():
                self.keys.setdefault((section, k.group(1).lower()), n)


class _Reader:
    """One pass over a parsed file, raising ConfigError with the line of whatever is wrong."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.where = _Located(text)
        self.parser = configparser.ConfigParser(
            interpolation=None, inline_comment_prefixes=("#", ";"), strict=True, default_section="\x00",
            empty_lines_in_values=False,
        )
        try:
            self.parser.read_string(text, source=str(path))
        except configparser.MissingSectionHeaderError as exc:
            raise self.error(exc.lineno, f"a key before any section: {exc.line.strip()!r}") from None
        except (configparser.DuplicateSectionError, configparser.DuplicateOptionError) as exc:
            what = f"key {exc.option!r}" if isinstance(exc, configparser.DuplicateOptionError) else "section"
            raise self.error(exc.lineno or 1, f"{what} given twice in [{exc.section}]") from None
        except configparser.ParsingError as exc:
            lineno = exc.errors[0][0]
            line = text.splitlines()[lineno - 1] if 0 < lineno <= len(text.splitlines()) else ""
            raise self.error(lineno, f"not a 'key = value' line: {line.strip()!r}") from None

    def error(self, line: int, message: str) -> ConfigError:
        return ConfigError(f"{self.path}:{line}: {message}")

    def line(self, section: str, key: str | None = None) -> int:
        if key is not None and (section, key) in self.where.keys:
            return self.where.keys[(section, key)]
        return self.where.sections.get(section, 1)

    def get(self, section: str, key: str, parse: Callable[[str], Any], default: Any = None, *,
            required: bool = False) -> Any:
        """The value of ``key`` through ``parse``, or ``default`` when absent."""
        values = self.parser[section]
        if key not in values:
            if required:
                raise self.error(self.line(section), f"[{section}] needs '{key}'")
            return default
        raw = values[key]
        if "\n" in raw.strip():
            raise self.error(self.line(section, key), f"'{key}': an indented line continues its value "
                                                      "(a value is one line)")
        if raw.strip() == "":
            raise self.error(self.line(section, key), f"'{key}' has no value")
        try:
            return parse(raw.strip())
        except ValueError as exc:
            raise self.error(self.line(section, key), f"{key}: {exc}") from None

    def check_keys(self, section: str, allowed: set[str]) -> None:
        for key in self.parser[section]:
            if key not in allowed:
                raise self.error(self.line(section, key), f"unknown key '{key}' in [{section}] "
                                                          f"(known: {', '.join(sorted(allowed))})")


def load(path: str | os.PathLike[str]) -> HostConfig:
    """Read and check a host config file; relative LUN paths are relative to the file's folder."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}:1: not a text file") from None
    return parse(text, path)


def parse(text: str, path: Path) -> HostConfig:
    """Check a config file's text (``path`` names it in errors and anchors relative paths)."""
    r = _Reader(path, text)
    sections = r.parser.sections()
    for s in sections:
        kind, _, name = s.partition(" ")
        if not (s == "host" or (kind in ("lun", "pool") and name.strip())):
            raise r.error(r.line(s), f"unknown section [{s}] (expected [host], [lun NAME] or [pool NAME])")
    if "host" not in sections:
        raise r.error(1, "no [host] section")
    host = _host(r)
    luns = tuple(_lun(r, s, path.parent) for s in sections if s.startswith("lun "))
    _check_lun_addresses(r, luns)
    pools = tuple(_pool(r, s) for s in sections if s.startswith("pool "))
    _check_pools(r, pools)
    return HostConfig(path=path, luns=luns, pools=pools, **host)


def _host(r: _Reader) -> dict:
    r.check_keys("host", HOST_KEYS)
    for key in HOST_REQUIRED:
        r.get("host", key, str, required=True)
    name = r.get("host", "name", _hostname)
    memory_mb = r.get("host", "memory_mb", lambda t: parse_int(t, 64, 1 << 24))
    console_mb = r.get("host", "console_mb", lambda t: parse_int(t, 0, 1 << 20), 192)
    vmkernel_mb = r.get("host", "vmkernel_mb", lambda t: parse_int(t, 0, 1 << 20), 24)
    if console_mb + vmkernel_mb >= memory_mb:
        raise r.error(r.line("host", "memory_mb"),
                      f"memory_mb {memory_mb} leaves nothing beside the console ({console_mb} MB) "
                      f"and the VMkernel ({vmkernel_mb} MB)")
    return dict(
        name=name,
        pcpus=r.get("host", "pcpus", lambda t: parse_int(t, 1, 128)),
        mhz=r.get("host", "mhz", lambda t: parse_int(t, 1, 100_000)),
        memory_mb=memory_mb,
        console_mb=console_mb,
        vmkernel_mb=vmkernel_mb,
        swap_mb=r.get("host", "swap_mb", lambda t: parse_int(t, 0, 1 << 24), memory_mb),
        mode=r.get("host", "mode", lambda t: _choice(t, MODES), "esx4"),
        seed=r.get("host", "seed", lambda t: parse_int(t, 0), 0),
        epoch_s=r.get("host", "epoch", parse_epoch, DEFAULT_EPOCH_S),
        idle_tax=r.get("host", "idle_tax", lambda t: parse_float(t, 0.0, 0.99), 0.75),
        coschedule=r.get("host", "coschedule", lambda t: _choice(t, ("relaxed", "strict")), "relaxed"),
    )


def _hostname(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]{0,62}", text):
        raise ValueError(f"not a host name: {text!r} (letters, digits, '.' and '-')")
    return text


def _choice(text: str, allowed: tuple[str, ...]) -> str:
    if text.lower() not in allowed:
        raise ValueError(f"{text!r} is not one of {', '.join(allowed)}")
    return text.lower()


def _label(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", text):
        raise ValueError(f"not a datastore label: {text!r} (letters, digits, '_', '.', '-')")
    return text


def _lun(r: _Reader, section: str, base: Path) -> LunConfig:
    r.check_keys(section, LUN_KEYS)
    name = section.partition(" ")[2].strip()
    given = [k for k in ("image", "block_device", "memory", "network") if k in r.parser[section]]
    if len(given) != 1:
        what = "none" if not given else " and ".join(given)
        raise r.error(r.line(section),
                      f"[{section}] needs exactly one of image, block_device, memory, network (got {what})")
    kind = given[0]
    path = size = url = None
    if kind == "network":
        url = r.get(section, "network", _network_url)
        for key, why in (("format", "a host never formats a LUN on the network (make it with vmfs-mkfs)"),
                         ("local", "a LUN on the network is not local")):
            if key in r.parser[section]:
                raise r.error(r.line(section, key), f"{key}: {why}")
    elif kind == "memory":
        size = r.get(section, "memory", parse_size)
        if size <= 0 or size % 512:
            raise r.error(r.line(section, "memory"), f"memory: a LUN is a positive multiple of 512 bytes, got {size}")
    else:
        path = Path(r.get(section, kind, str))
        path = path if path.is_absolute() else base / path
        _check_backing(r, section, kind, path)
    vmfs = r.get(section, "format", lambda t: _choice(t, VMFS_VERSIONS))
    datastore = r.get(section, "datastore", _label)
    if vmfs and not datastore:
        raise r.error(r.line(section, "format"), "format needs a datastore label ('datastore = NAME')")
    model = ModelConfig(
        fixed_us=r.get(section, "fixed_us", lambda t: parse_float(t, 0.0, 1e9), 500.0),
        per_byte_us=r.get(section, "per_byte_us", lambda t: parse_float(t, 0.0, 1e6), 0.005),
        queue_depth=r.get(section, "queue_depth", lambda t: parse_int(t, 1, 4096), 32),
        channels=r.get(section, "channels", lambda t: parse_int(t, 1, 1024), 1),
    )
    return LunConfig(
        name=name, kind=kind, path=path, size_bytes=size,
        adapter=r.get(section, "adapter", _adapter, "vmhba1"),
        channel=r.get(section, "channel", lambda t: parse_int(t, 0, 15), 0),
        target=r.get(section, "target", lambda t: parse_int(t, 0, 255), 0),
        lun_id=r.get(section, "lun", lambda t: parse_int(t, 0, 255), 0),
        local=r.get(section, "local", parse_bool, False),
        model=model, datastore=datastore, vmfs=vmfs, line=r.line(section), url=url,
    )


def _network_url(text: str) -> str:
    """An iSCSI URL or an RBD image spec, checked for its form (reaching it is the boot's job)."""
    from vmfs.device.iscsi import IscsiUrl  # the parsers only: no library is loaded here
    from vmfs.device.rbd import RbdSpec

    text = text.strip()
    parse = IscsiUrl.parse if text.startswith("iscsi://") else RbdSpec.parse if text.startswith("rbd:") else None
    if parse is None:
        raise ValueError(f"not a LUN on the network: {text!r} (iscsi://HOST[:PORT]/IQN/LUN or rbd:POOL/IMAGE)")
    try:
        parse(text)
    except VmfsError as exc:
        raise ValueError(str(exc)) from None
    return text


def _adapter(text: str) -> str:
    if not re.fullmatch(r"vmhba\d{1,3}", text):
        raise ValueError(f"not an adapter: {text!r} (vmhba1, vmhba2, ...)")
    return text


def _check_backing(r: _Reader, section: str, kind: str, path: Path) -> None:
    """The image file or block device must exist and be of its kind."""
    line = r.line(section, kind)
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise r.error(line, f"{kind}: {path}: {exc.strerror}") from None
    if kind == "image" and not stat.S_ISREG(mode):
        raise r.error(line, f"image: {path} is not a regular file")
    if kind == "block_device" and not stat.S_ISBLK(mode):
        raise r.error(line, f"block_device: {path} is not a block device")


def _check_lun_addresses(r: _Reader, luns: tuple[LunConfig, ...]) -> None:
    seen: dict[str, LunConfig] = {}
    labels: dict[str, LunConfig] = {}
    for lun in luns:
        if lun.runtime_name in seen:
            other = seen[lun.runtime_name].name
            raise r.error(lun.line, f"[lun {lun.name}] is at {lun.runtime_name}, as [lun {other}] is")
        seen[lun.runtime_name] = lun
        if lun.datastore:
            if lun.datastore in labels:
                raise r.error(lun.line, f"datastore {lun.datastore!r} is already on [lun {labels[lun.datastore].name}]")
            labels[lun.datastore] = lun


def _allocation(r: _Reader, section: str, prefix: str, parse_amount: Callable[[str], int]) -> Allocation:
    return Allocation(
        shares=r.get(section, f"{prefix}_shares", parse_shares, "normal"),
        reservation=r.get(section, f"{prefix}_reservation", parse_amount, 0),
        limit=r.get(section, f"{prefix}_limit", lambda t: parse_limit(t, parse_amount), -1),
        expandable=r.get(section, f"{prefix}_expandable", parse_bool, True),
    )


def _pool(r: _Reader, section: str) -> PoolConfig:
    r.check_keys(section, POOL_KEYS)
    return PoolConfig(
        name=section.partition(" ")[2].strip(),
        parent=r.get(section, "parent", str),
        cpu=_allocation(r, section, "cpu", parse_mhz),
        mem=_allocation(r, section, "mem", parse_mb),
        line=r.line(section),
    )


def _check_pools(r: _Reader, pools: tuple[PoolConfig, ...]) -> None:
    by_name = {p.name: p for p in pools}
    for p in pools:
        if p.parent is not None and p.parent not in by_name:
            raise r.error(r.line(f"pool {p.name}", "parent"), f"parent pool {p.parent!r} is not defined")
        for alloc, unit in ((p.cpu, "MHz"), (p.mem, "MB")):
            if alloc.limit != -1 and alloc.limit < alloc.reservation:
                raise r.error(p.line, f"[pool {p.name}] limit {alloc.limit} {unit} is below its reservation "
                                      f"{alloc.reservation} {unit}")
        seen, cur = {p.name}, p
        while cur.parent is not None:
            cur = by_name[cur.parent]
            if cur.name in seen:
                raise r.error(p.line, f"[pool {p.name}] is its own ancestor")
            seen.add(cur.name)
