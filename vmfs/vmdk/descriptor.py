"""The text descriptor of a virtual disk (vmdk-format.md section 2).

A descriptor is kept as its list of lines, each remembering its exact text, so that a descriptor we
only read is written back byte for byte and a changed one differs only in the changed lines: VMware
and qemu add keys we do not know, and tools that diff descriptors (or checksum them) must not see
churn.  Keys are matched case-insensitively (libvmdk does; VMware writes one case) but written in
the case found.  Standalone files may be NUL-padded (qemu pads to 512 bytes after a CID update) and
embedded descriptors always are: the text ends at the first NUL and the padding is kept.
"""

from __future__ import annotations

import codecs
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from vmfs.vmdk.errors import CorruptError, InvalidArgumentError, NotVmdkError
from vmfs.vmdk.geometry import Geometry

#: parentCID of a disk without a parent.
NO_PARENT = 0xFFFFFFFF

#: createType -> extent types it may contain.  Aliases map to the canonical spelling.
CREATE_TYPES: dict[str, tuple[str, ...]] = {
    "vmfs": ("VMFS",),
    "vmfsThin": ("VMFS",),
    "vmfsPreallocated": ("VMFS",),
    "vmfsEagerZeroedThick": ("VMFS",),
    "vmfsSparse": ("VMFSSPARSE",),
    "seSparse": ("SESPARSE",),
    "vmfsRawDeviceMap": ("VMFSRDM",),
    "vmfsPassthroughRawDeviceMap": ("VMFSRDM",),
    "vmfsRaw": ("VMFSRAW",),
    "monolithicSparse": ("SPARSE",),
    "monolithicFlat": ("FLAT",),
    "twoGbMaxExtentSparse": ("SPARSE",),
    "twoGbMaxExtentFlat": ("FLAT",),
    "streamOptimized": ("SPARSE",),
    "fullDevice": ("FLAT",),
    "partitionedDevice": ("FLAT", "ZERO"),
    "custom": ("FLAT", "SPARSE", "ZERO", "VMFS", "VMFSSPARSE", "SESPARSE", "VMFSRDM", "VMFSRAW"),
}
CREATE_TYPE_ALIASES: dict[str, str] = {
    "vmfsRDM": "vmfsRawDeviceMap",
    "vmfsRDMP": "vmfsPassthroughRawDeviceMap",
    "2GbMaxExtentSparse": "twoGbMaxExtentSparse",
    "2GbMaxExtentFlat": "twoGbMaxExtentFlat",
}
EXTENT_TYPES: tuple[str, ...] = (
    "FLAT",
    "SPARSE",
    "ZERO",
    "VMFS",
    "VMFSSPARSE",
    "VMFSRDM",
    "VMFSRAW",
    "SESPARSE",
)
ACCESS_MODES: tuple[str, ...] = ("RW", "RDONLY", "NOACCESS")


def canonical_create_type(value: str) -> str:
    """The canonical createType for ``value`` (case-insensitive, aliases resolved); unknown values
    are returned unchanged so that a descriptor with a new type still parses."""
    lowered = {k.lower(): k for k in CREATE_TYPES}
    lowered.update({k.lower(): v for k, v in CREATE_TYPE_ALIASES.items()})
    return lowered.get(value.lower(), value)


def new_cid() -> int:
    """A random content ID, avoiding the two values with a meaning (ffffffff, fffffffe)."""
    while True:
        cid = secrets.randbits(32)
        if cid not in (0xFFFFFFFF, 0xFFFFFFFE):
            return cid


def new_uuid_text() -> str:
    """A ``ddb.uuid`` value: 16 bytes as hex pairs, a dash after the 8th, ESXi's ``60 00 C2`` start."""
    pairs = ["60", "00", "C2"] + [f"{b:02x}" for b in secrets.token_bytes(13)]
    return " ".join(pairs[:8]) + "-" + " ".join(pairs[8:])


def new_long_content_id(cid: int) -> str:
    """A ``ddb.longContentID`` whose last 8 digits are the CID, as in most ESXi samples."""
    return secrets.token_hex(12) + f"{cid:08x}"


# --- extent lines ----------------------------------------------------------------------------------

_EXTENT_RE = re.compile(
    r"^\s*(RW|RDONLY|NOACCESS)\s+(\d+)\s+([A-Za-z]+)"
    r'(?:\s+"([^"]*)"(?:\s+(\d+))?(?:\s+(\S.*?))?)?\s*$',
    re.IGNORECASE,
)


@dataclass
class ExtentLine:
    """``ACCESS SIZE TYPE ["FILENAME" [OFFSET [PARTITION_UUID DEVICE_ID]]]`` (section 2.3)."""

    access: str
    sectors: int
    type: str
    filename: str | None = None
    offset: int | None = None
    extra: str | None = None

    @classmethod
    def parse(cls, text: str) -> ExtentLine | None:
        m = _EXTENT_RE.match(text)
        if m is None:
            return None
        access, sectors, etype, filename, offset, extra = m.groups()
        return cls(
            access=access.upper(),
            sectors=int(sectors),
            type=etype.upper(),
            filename=filename,
            offset=int(offset) if offset is not None else None,
            extra=extra,
        )

    def render(self) -> str:
        if self.access not in ACCESS_MODES:
            raise InvalidArgumentError(f"bad extent access {self.access!r}")
        out = f"{self.access} {self.sectors} {self.type}"
        if self.filename is not None:
            out += f' "{self.filename}"'
            if self.offset is not None:
                out += f" {self.offset}"
                if self.extra:
                    out += f" {self.extra}"
        return out


# --- lines -----------------------------------------------------------------------------------------

_KEY_RE = re.compile(r"^(\s*([A-Za-z_.][\w.:\-]*)\s*=\s*)(.*?)(\s*)$")


@dataclass
class _Line:
    raw: str
    kind: str  # blank | comment | key | extent | other
    key: str | None = None
    prefix: str = ""
    value: str = ""
    quoted: bool = False
    suffix: str = ""
    extent: ExtentLine | None = None
    eol: str = ""

    @property
    def is_ddb(self) -> bool:
        return self.kind == "key" and self.key is not None and self.key.lower().startswith("ddb.")


def _split_lines(text: str) -> Iterator[str]:
    # str.splitlines() also splits on \x0b, \x1c, \u2028 ...: only LF (and CRLF) end a line here.
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        if end < 0:
            yield text[start:]
            return
        yield text[start : end + 1]
        start = end + 1


def _parse_line(raw: str) -> _Line:
    body = raw.rstrip("\r\n")
    eol = raw[len(body) :]
    stripped = body.strip()
    if not stripped:
        return _Line(raw, "blank", eol=eol)
    if stripped.startswith("#"):
        return _Line(raw, "comment", eol=eol)
    extent = ExtentLine.parse(body)
    if extent is not None:
        return _Line(raw, "extent", extent=extent, eol=eol)
    m = _KEY_RE.match(body)
    if m is None:
        return _Line(raw, "other", eol=eol)
    prefix, key, value, trailing = m.groups()
    quoted = len(value) >= 2 and value.startswith('"') and value.endswith('"')
    if quoted:
        return _Line(raw, "key", key, prefix + '"', value[1:-1], True, '"' + trailing, eol=eol)
    return _Line(raw, "key", key, prefix, value, False, trailing, eol=eol)


# --- the descriptor --------------------------------------------------------------------------------


@dataclass
class Descriptor:
    """A parsed descriptor.  Build new ones with :meth:`new`, read with :meth:`parse`, write with
    :meth:`to_bytes`; everything in between edits lines in place."""

    lines: list[_Line]
    encoding: str = "utf-8"
    bom: bytes = b""
    trailer: bytes = b""
    source: str = "descriptor"
    _original: bytes | None = field(default=None, repr=False)

    # -- reading and writing -----------------------------------------------------------------------

    @classmethod
    def parse(cls, data: bytes, *, source: str = "descriptor") -> Descriptor:
        """Parse descriptor bytes.  Text stops at the first NUL; the NULs after it are kept."""
        nul = data.find(b"\x00")
        text_bytes, trailer = (data, b"") if nul < 0 else (data[:nul], data[nul:])
        bom = b""
        if text_bytes.startswith(codecs.BOM_UTF8):
            bom, text_bytes = codecs.BOM_UTF8, text_bytes[len(codecs.BOM_UTF8) :]
        encoding = _detect_encoding(text_bytes)
        text = text_bytes.decode(encoding, "surrogateescape")
        desc = cls([_parse_line(raw) for raw in _split_lines(text)], encoding, bom, trailer, source, data)
        desc._validate()
        return desc

    def to_bytes(self) -> bytes:
        """The descriptor as bytes: the original bytes if nothing changed."""
        if self._original is not None:
            return self._original
        body = self.bom + "".join(line.raw for line in self.lines).encode(self.encoding, "surrogateescape")
        if self.trailer and not self.trailer.strip(b"\x00"):
            # A NUL-padded file stays padded to a whole number of 512-byte sectors (qemu's habit).
            return body + b"\x00" * (-len(body) % 512)
        return body + self.trailer

    @property
    def text(self) -> str:
        return "".join(line.raw for line in self.lines)

    @classmethod
    def new(
        cls,
        *,
        create_type: str,
        extents: Iterable[ExtentLine],
        cid: int | None = None,
        parent_cid: int = NO_PARENT,
        parent_hint: str | None = None,
        ddb: Iterable[tuple[str, str]] = (),
        encoding: str | None = "UTF-8",
        snapshot: bool = False,
        version: int = 1,
    ) -> Descriptor:
        """A descriptor in VMware's layout (section 2): header, extents, DDB.  ``encoding=None``
        omits the header key, as qemu does; ``snapshot`` adds ``isNativeSnapshot="no"`` as ESXi
        writes in child descriptors."""
        cid = new_cid() if cid is None else cid
        out = ["# Disk DescriptorFile", f"version={version}"]
        if encoding is not None:
            out.append(f'encoding="{encoding}"')
        out += [f"CID={cid:08x}", f"parentCID={parent_cid:08x}"]
        if snapshot:
            out.append('isNativeSnapshot="no"')
        out.append(f'createType="{create_type}"')
        if parent_hint is not None:
            out.append(f'parentFileNameHint="{parent_hint}"')
        out += ["", "# Extent description"]
        out += [e.render() for e in extents]
        out += ["", "# The Disk Data Base", "#DDB", ""]
        out += [f'{key} = "{value}"' for key, value in ddb]
        text = "".join(line + "\n" for line in out)
        return cls.parse(text.encode(encoding or "utf-8"), source="new descriptor")

    def _validate(self) -> None:
        if self.get("version") is None:
            raise NotVmdkError(f"{self.source}: no 'version=' line: not a VMDK descriptor")
        for key in ("CID", "parentCID"):
            value = self.get(key)
            if value is not None and not re.fullmatch(r"[0-9A-Fa-f]{1,8}", value):
                raise CorruptError(self.source, "descriptor", f"{key}={value!r} is not 8 hex digits")

    def _touch(self) -> None:
        self._original = None

    @property
    def changed(self) -> bool:
        return self._original is None

    # -- key lines ---------------------------------------------------------------------------------

    def _find(self, key: str) -> _Line | None:
        lowered = key.lower()
        for line in self.lines:
            if line.kind == "key" and line.key is not None and line.key.lower() == lowered:
                return line
        return None

    def get(self, key: str) -> str | None:
        """Value of a header or DDB key (quotes removed), or None."""
        line = self._find(key)
        return None if line is None else line.value

    def keys(self) -> list[str]:
        return [line.key for line in self.lines if line.kind == "key" and line.key is not None]

    def set(self, key: str, value: str, *, quoted: bool | None = None) -> None:
        """Set a key, keeping the existing line's spelling, spacing and quoting; a new key goes
        where VMware puts it (header keys after the header, ``ddb.*`` at the end of the DDB)."""
        line = self._find(key)
        if line is not None:
            if line.value == value and (quoted is None or quoted == line.quoted):
                return
            if quoted is not None and quoted != line.quoted:
                line.prefix = line.prefix.rstrip('"') + ('"' if quoted else "")
                line.suffix = ('"' if quoted else "") + line.suffix.lstrip('"')
                line.quoted = quoted
            line.value = value
            line.raw = line.prefix + value + line.suffix + line.eol
            self._touch()
            return
        is_ddb = key.lower().startswith("ddb.")
        if quoted is None:
            quoted = is_ddb or key.lower() not in ("version", "cid", "parentcid")
        text = f'{key} = "{value}"' if is_ddb else (f'{key}="{value}"' if quoted else f"{key}={value}")
        self._insert(self._insert_position(key), [text])

    def remove(self, key: str) -> None:
        line = self._find(key)
        if line is not None:
            self.lines.remove(line)
            self._touch()

    def _eol(self) -> str:
        for line in self.lines:
            if line.eol:
                return line.eol
        return "\n"

    def _insert(self, index: int, texts: list[str]) -> None:
        eol = self._eol()
        if index > 0 and not self.lines[index - 1].eol:
            prev = self.lines[index - 1]
            prev.eol = eol
            prev.raw += eol
        self.lines[index:index] = [_parse_line(t + eol) for t in texts]
        self._touch()

    def _insert_position(self, key: str) -> int:
        lowered = key.lower()
        if lowered.startswith("ddb."):
            ddb = [i for i, line in enumerate(self.lines) if line.is_ddb]
            if ddb:
                return ddb[-1] + 1
            self._insert(len(self.lines), ["", "# The Disk Data Base", "#DDB", ""])
            return len(self.lines)
        if lowered == "changetrackpath":
            extents = [i for i, line in enumerate(self.lines) if line.kind == "extent"]
            pos = extents[-1] + 1 if extents else len(self.lines)
            self._insert(pos, ["", "# Change Tracking File"])
            return pos + 2
        first_extent = next((i for i, line in enumerate(self.lines) if line.kind == "extent"), len(self.lines))
        header = [i for i, line in enumerate(self.lines[:first_extent]) if line.kind == "key" and not line.is_ddb]
        return header[-1] + 1 if header else 0

    # -- header values -----------------------------------------------------------------------------

    @property
    def version(self) -> int:
        value = self.get("version") or "1"
        m = re.match(r"\d+", value)
        if m is None:
            raise CorruptError(self.source, "descriptor", f"version={value!r} is not a number")
        return int(m.group())

    @property
    def cid(self) -> int:
        value = self.get("CID")
        return 0xFFFFFFFE if value is None else int(value, 16)

    @cid.setter
    def cid(self, value: int) -> None:
        old = self.cid
        self.set("CID", f"{value:08x}")
        # Keep ddb.longContentID's CID suffix in step when it had one (most ESXi samples do).
        long_id = self.get("ddb.longContentID")
        if long_id is not None and len(long_id) == 32 and long_id[-8:].lower() == f"{old:08x}":
            self.set("ddb.longContentID", long_id[:24] + f"{value:08x}")

    @property
    def parent_cid(self) -> int:
        value = self.get("parentCID")
        return NO_PARENT if value is None else int(value, 16)

    @parent_cid.setter
    def parent_cid(self, value: int) -> None:
        self.set("parentCID", f"{value:08x}")

    @property
    def create_type(self) -> str:
        """Canonical createType ('' if the key is missing)."""
        return canonical_create_type(self.get("createType") or "")

    @property
    def parent_hint(self) -> str | None:
        return self.get("parentFileNameHint")

    @parent_hint.setter
    def parent_hint(self, value: str | None) -> None:
        if value is None:
            self.remove("parentFileNameHint")
        else:
            self.set("parentFileNameHint", value, quoted=True)

    @property
    def has_parent(self) -> bool:
        return self.parent_cid != NO_PARENT or self.parent_hint is not None

    @property
    def change_track_path(self) -> str | None:
        return self.get("changeTrackPath")

    # -- extents -----------------------------------------------------------------------------------

    @property
    def extents(self) -> list[ExtentLine]:
        """Extent lines in disk order (copies: change them through :meth:`set_extents`)."""
        return [ExtentLine(**vars(line.extent)) for line in self.lines if line.kind == "extent" and line.extent]

    @property
    def capacity(self) -> int:
        """Sum of the extent lines' sizes in sectors (sparse extents' headers may disagree)."""
        return sum(e.sectors for e in self.extents)

    def set_extents(self, extents: Iterable[ExtentLine]) -> None:
        """Replace the extent lines; unchanged lines keep their exact text."""
        new = list(extents)
        old_lines = [line for line in self.lines if line.kind == "extent"]
        if len(old_lines) == len(new) and all(o.extent == n for o, n in zip(old_lines, new, strict=True)):
            return
        positions = [i for i, line in enumerate(self.lines) if line.kind == "extent"]
        if positions:
            pos = positions[0]
        else:
            comment = next(
                (i for i, line in enumerate(self.lines) if line.raw.strip().lower() == "# extent description"),
                None,
            )
            pos = comment + 1 if comment is not None else self._insert_position("createType")
        kept = {id(line): line for line in old_lines}
        self.lines = [line for line in self.lines if id(line) not in kept]
        pos -= sum(1 for i in positions if i < pos)
        eol = self._eol()
        rendered = []
        for i, extent in enumerate(new):
            if i < len(old_lines) and old_lines[i].extent == extent:
                rendered.append(old_lines[i])
            else:
                rendered.append(_parse_line(extent.render() + eol))
        self.lines[pos:pos] = rendered
        self._touch()

    # -- disk database -----------------------------------------------------------------------------

    def ddb_items(self) -> list[tuple[str, str]]:
        return [(line.key, line.value) for line in self.lines if line.is_ddb and line.key is not None]

    @property
    def adapter_type(self) -> str | None:
        return self.get("ddb.adapterType")

    @property
    def thin_provisioned(self) -> bool:
        return self.get("ddb.thinProvisioned") == "1"

    @property
    def geometry(self) -> Geometry | None:
        values = [self.get(f"ddb.geometry.{k}") for k in ("cylinders", "heads", "sectors")]
        if any(v is None or not v.isdigit() for v in values):
            return None
        return Geometry(*(int(v) for v in values))  # type: ignore[arg-type]

    @geometry.setter
    def geometry(self, geo: Geometry) -> None:
        self.set("ddb.geometry.cylinders", str(geo.cylinders))
        self.set("ddb.geometry.heads", str(geo.heads))
        self.set("ddb.geometry.sectors", str(geo.sectors))


def _detect_encoding(text: bytes) -> str:
    """The Python codec for the descriptor's ``encoding`` key (UTF-8 if absent or unknown).  The
    key is ASCII, so it can be found before the text is decoded."""
    m = re.search(rb'^\s*encoding\s*=\s*"?([A-Za-z0-9_\-]+)"?\s*$', text, re.MULTILINE | re.IGNORECASE)
    if m is None:
        return "utf-8"
    name = m.group(1).decode("ascii")
    try:
        return codecs.lookup(name).name
    except LookupError:
        return "utf-8"


def is_descriptor_text(head: bytes) -> bool:
    """Whether the first bytes of a file look like a text descriptor: the first line that is not a
    comment or blank sets ``version`` (qemu's probe, made tolerant of spaces and case)."""
    if head.startswith(codecs.BOM_UTF8):
        head = head[len(codecs.BOM_UTF8) :]
    head = head.split(b"\x00", 1)[0]
    for raw in head.split(b"\n"):
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        return re.match(rb"version\s*=", line, re.IGNORECASE) is not None
    return False
