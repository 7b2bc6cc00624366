"""Parse guest program text into a :class:`~hostsim.vmm.guest.tree.Program`.

Why a hand-written, line-at-a-time parser: every statement is one line that starts with its
keyword, and blocks are closed by ``end``, so a stack of open blocks is all the structure there
is; in exchange each mistake gets a message that names the line, what was expected there and, for
an unclosed block, the line that opened it.  The grammar is in docs/hostsim.md, "Guest programs".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from hostsim.vmm.guest.errors import GuestError, GuestSyntaxError
from hostsim.vmm.guest.lexer import Line, Word, lines
from hostsim.vmm.guest.tree import (
    DURATION_UNITS,
    SECTOR,
    Choose,
    Content,
    Disk,
    Duration,
    Flush,
    Image,
    Loop,
    Mark,
    Place,
    Program,
    Repeat,
    Size,
    Statement,
    Timed,
    Touch,
)

#: how each statement is written, quoted in messages about it
USAGE: dict[str, str] = {
    "compute": "compute DURATION",
    "halt": "halt DURATION",
    "idle": "idle DURATION",
    "touch": "touch (SIZE [at SIZE] | A..B) [sequential | random COUNT | working-set FRACTION [random COUNT]] [seed N] "
             "[read | write CONTENT]",
    "read": "read DISK SIZE (at LBA | random within SIZE [from LBA] | next within SIZE [from LBA]) [seed N] "
            "[expect CONTENT]",
    "write": "write DISK SIZE (at LBA | random within SIZE [from LBA] | next within SIZE [from LBA]) [seed N] "
             "CONTENT",
    "flush": "flush DISK",
    "mark": "mark NAME",
    "repeat": "repeat COUNT ... end",
    "forever": "forever ... end",
    "for": "for DURATION ... end",
    "choose": "choose [seed N] / weight W ... / end",
    "weight": "weight W (inside choose)",
    "vcpu": "vcpu all | vcpu N[,N...]",
    "guest": "guest NAME",
    "seed": "seed N",
    "image": "image NAME [seed N] [zero FRACTION]",
    "end": "end",
}

_CONTENT_USAGE = 'zero | byte B | text "..." | hex "..." | random [seed N] | image NAME'
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_INT = re.compile(r"-?(?:0x[0-9a-fA-F]+|\d+)")
_QUANTITY = re.compile(r"(-?\d+(?:\.\d+)?)(.*)")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_DISK = re.compile(r"(scsi|ide|sata|nvme)\d+:\d+")
_SIZE_ALIASES = {"b": "B", "kib": "KiB", "mib": "MiB", "gib": "GiB", "page": "pages", "pages": "pages",
                 "sector": "sectors", "sectors": "sectors"}
_DECIMAL_SIZES = {"k", "kb", "m", "mb", "g", "gb", "t", "tb", "tib"}
_BLOCKS = ("repeat", "forever", "for", "choose")
_HEADERS = ("guest", "seed", "image")


class _Words:
    """A cursor over one line's words that raises :class:`GuestSyntaxError` at that line."""

    def __init__(self, words: tuple[Word, ...], where: str, statement: str) -> None:
        self.words = words
        self.i = 1
        self.where = where
        self.statement = statement

    def fail(self, msg: str) -> GuestSyntaxError:
        return GuestSyntaxError(f"{self.where}: {msg}")

    def usage(self) -> str:
        return f"(usage: {USAGE[self.statement]})"

    def peek(self) -> str | None:
        return self.words[self.i].text if self.i < len(self.words) else None

    def at_end(self) -> bool:
        return self.i >= len(self.words)

    def take(self, what: str) -> Word:
        if self.i >= len(self.words):
            raise self.fail(f"{self.statement}: missing {what} {self.usage()}")
        word = self.words[self.i]
        self.i += 1
        return word

    def take_if(self, keyword: str) -> bool:
        if self.peek() == keyword and not self.words[self.i].quoted:
            self.i += 1
            return True
        return False

    def done(self) -> None:
        if self.i < len(self.words):
            raise self.fail(f"{self.statement}: unexpected {self.words[self.i].text!r} {self.usage()}")

    # -- values -------------------------------------------------------------------------------

    def integer(self, what: str, minimum: int = 0) -> int:
        text = self.take(what).text
        if not _INT.fullmatch(text):
            raise self.fail(f"{self.statement}: {what} must be a whole number, got {text!r}")
        value = int(text, 16) if "0x" in text else int(text, 10)
        if value < minimum:
            bound = "negative" if minimum == 0 else f"below {minimum}"
            raise self.fail(f"{self.statement}: {what} must not be {bound}, got {value}")
        return value

    def number(self, what: str) -> Fraction:
        text = self.take(what).text
        if not _NUMBER.fullmatch(text):
            raise self.fail(f"{self.statement}: {what} must be a number, got {text!r}")
        return Fraction(text)

    def fraction(self, what: str) -> Fraction:
        """``25%`` or ``0.25``."""
        text = self.take(what).text
        body = text[:-1] if text.endswith("%") else text
        if not _NUMBER.fullmatch(body):
            raise self.fail(f"{self.statement}: {what} must be a fraction like 0.25 or 25%, got {text!r}")
        value = Fraction(body) / (100 if text.endswith("%") else 1)
        return value

    def name(self, what: str) -> str:
        word = self.take(what)
        if not word.quoted and not _NAME.fullmatch(word.text):
            raise self.fail(f"{self.statement}: {what} must be a name (letters, digits, _ . -), got {word.text!r}")
        if not word.text:
            raise self.fail(f"{self.statement}: {what} must not be empty")
        return word.text

    def _quantity(self, what: str, units: Collection[str]) -> tuple[str, str]:
        """A number and its unit, written ``4KiB`` or ``4 KiB``: (number text, unit text).

        A separate word is taken as the unit when it is one of ``units`` (lower case) or, with
        ``units`` empty, whenever it is a bare word (so ``5 sec`` is reported as a bad unit)."""
        text = self.take(what).text
        m = _QUANTITY.fullmatch(text)
        if not m:
            raise self.fail(f"{self.statement}: {what} must be a number with a unit, got {text!r}")
        number, unit = m.groups()
        nxt = self.peek()
        if not unit and nxt is not None and not self.words[self.i].quoted and (
                nxt.lower() in units if units else nxt.isalpha() or nxt == "µs"):
            unit = self.take(what).text
        return number, unit

    def duration(self, what: str = "DURATION") -> Duration:
        """``5ms``, ``1.5 s`` or a range ``1ms..5ms`` / ``1..5ms`` (both ends included)."""
        word = self.take(what)
        if ".." in word.text:
            left, _, right = word.text.partition("..")
            if not left or not right:
                raise self.fail(f"{self.statement}: range {word.text} needs both ends (like 1ms..5ms)")
            hi, unit = self._one_duration(right, "", what)
            lo, _ = self._one_duration(left, unit, what)
            if lo > hi:
                raise self.fail(f"{self.statement}: range {word.text} runs backwards")
            return Duration(lo, hi)
        self.i -= 1
        number, unit = self._quantity(what, ())
        us, _ = self._one_duration(number + unit, "", what)
        return Duration(us, us)

    def _one_duration(self, text: str, default_unit: str, what: str) -> tuple[int, str]:
        m = _QUANTITY.fullmatch(text)
        if not m:
            raise self.fail(f"{self.statement}: {what} must be a number with a unit (us, ms, s, min), got {text!r}")
        number, unit = m.groups()
        unit = unit or default_unit
        if not unit:
            raise self.fail(f"{self.statement}: {what} {number} needs a unit (us, ms, s, min)")
        if unit not in DURATION_UNITS:
            raise self.fail(f"{self.statement}: unknown time unit {unit!r} (use us, ms, s or min)")
        value = Fraction(number) * DURATION_UNITS[unit]
        if value < 0:
            raise self.fail(f"{self.statement}: {what} must not be negative, got {number}{unit}")
        if value.denominator != 1:
            raise self.fail(f"{self.statement}: {number}{unit} is not a whole number of microseconds")
        return int(value), unit

    def size(self, what: str = "SIZE") -> Size:
        """``4KiB``, ``4 KiB``, ``100 pages``, ``8 sectors``."""
        number, unit = self._quantity(what, (*_SIZE_ALIASES, *_DECIMAL_SIZES))
        return self._size(number, unit, what)

    def region(self) -> tuple[Size, Size]:
        """``SIZE`` (from 0) or a range ``A..B`` (``16MiB..66MiB``, ``0..100 pages``: from A up to,
        not including, B): (size, offset)."""
        nxt = self.peek()
        if nxt is None or ".." not in nxt:
            return self.size(), Size(Fraction(0), "B")
        text = self.take("range").text
        left, _, right = text.partition("..")
        m_left, m_right = _QUANTITY.fullmatch(left), _QUANTITY.fullmatch(right)
        if not m_left or not m_right:
            raise self.fail(f"{self.statement}: range {text} must be A..B with sizes (like 16MiB..66MiB)")
        hi_number, hi_unit = m_right.groups()
        if not hi_unit and self.peek() is not None and self.peek().lower() in (*_SIZE_ALIASES, *_DECIMAL_SIZES):
            hi_unit = self.take("unit").text
        hi = self._size(hi_number, hi_unit, "range end")
        lo_number, lo_unit = m_left.groups()
        lo = self._size(lo_number, lo_unit or hi_unit, "range start")
        if lo.unit != hi.unit:
            raise self.fail(f"{self.statement}: both ends of range {text} need the same unit")
        if hi.value <= lo.value:
            raise self.fail(f"{self.statement}: range {text} is empty or runs backwards")
        return Size(hi.value - lo.value, hi.unit), lo

    def _size(self, number: str, unit: str, what: str) -> Size:
        if not unit:
            raise self.fail(f"{self.statement}: {what} {number} needs a unit (B, KiB, MiB, GiB, pages, sectors)")
        canonical = _SIZE_ALIASES.get(unit.lower()) if unit.lower() not in _DECIMAL_SIZES else None
        if canonical is None or (unit.lower() in ("kib", "mib", "gib") and unit != canonical):
            hint = " (sizes are binary: KiB, MiB, GiB)" if unit.lower() in _DECIMAL_SIZES else ""
            raise self.fail(f"{self.statement}: unknown size unit {unit!r}{hint} "
                            f"(use B, KiB, MiB, GiB, pages or sectors)")
        value = Fraction(number)
        if value < 0:
            raise self.fail(f"{self.statement}: {what} must not be negative, got {number} {unit}")
        return Size(value, canonical)


@dataclass
class _Block:
    """A block being parsed: its kind, the line that opened it, and the statements so far."""

    kind: str
    where: str
    words: _Words | None
    body: list[Statement] = field(default_factory=list)
    branches: list[tuple[Fraction, list[Statement]]] = field(default_factory=list)
    header: object = None

    def target(self) -> list[Statement]:
        return self.branches[-1][1] if self.kind == "choose" else self.body


class _Parser:
    def __init__(self, filename: str, disks: Collection[str] | None, memory_bytes: int | None,
                 page_size: int) -> None:
        self.filename = filename
        self.disks = None if disks is None else frozenset(disks)
        self.memory_bytes = memory_bytes
        self.page_size = page_size
        self.name = Path(filename).stem
        self.seed = 0
        self.images: dict[str, Image] = {}
        self.bodies: dict[int, tuple[Statement, ...]] = {}
        self.section_lines: dict[object, str] = {}
        self.default: tuple[Statement, ...] | None = None
        self.stack: list[_Block] = []
        self.section: object = None  # None: no vcpu header yet; "all" or a tuple of indexes
        self.started = False  # a statement or section has been seen
        self.used_disks: set[str] = set()

    # -- driving ------------------------------------------------------------------------------

    def parse(self, source: str) -> Program:
        self.stack = [_Block("section", f"{self.filename}:1", None)]
        for item in lines(source):
            if isinstance(item, tuple):
                number, exc = item
                raise GuestSyntaxError(f"{self.filename}:{number}: {exc}")
            self.line(item)
        if len(self.stack) > 1:
            open_block = self.stack[-1]
            raise GuestSyntaxError(f"{open_block.where}: {open_block.kind} block is never closed (missing end)")
        self.close_section()
        return Program(self.filename, self.name, self.seed, dict(self.images), dict(self.bodies),
                       self.default, frozenset(self.used_disks),
                       {k: w for k, w in self.section_lines.items() if isinstance(k, int)})

    def line(self, line: Line) -> None:
        where = f"{self.filename}:{line.number}"
        first = line.words[0]
        keyword = first.text
        if first.quoted or keyword not in USAGE:
            known = ", ".join(sorted(k for k in USAGE if k != "end"))
            raise GuestSyntaxError(f"{where}: unknown statement {keyword!r} (known: {known}, end)")
        words = _Words(line.words, where, keyword)
        if keyword in _HEADERS:
            self.header(words)
        elif keyword == "vcpu":
            self.vcpu(words)
        elif keyword == "end":
            words.done()
            self.end(words)
        elif keyword == "weight":
            self.weight(words)
        elif keyword in _BLOCKS:
            self.open(words)
        else:
            self.add(self.statement(words), words)

    # -- structure ----------------------------------------------------------------------------

    def header(self, words: _Words) -> None:
        if self.started:
            raise words.fail(f"{words.statement} must come before the first statement and vcpu section")
        if words.statement == "guest":
            self.name = words.name("NAME")
        elif words.statement == "seed":
            self.seed = words.integer("seed")
        else:
            self.image(words)
        words.done()

    def image(self, words: _Words) -> None:
        name = words.name("NAME")
        if name in self.images:
            raise words.fail(f"image {name!r} is declared twice (first at {self.images[name].where})")
        seed, zero = 0, Fraction(0)
        while not words.at_end():
            if words.take_if("seed"):
                seed = words.integer("seed")
            elif words.take_if("zero"):
                zero = words.fraction("zero fraction")
                if not 0 <= zero <= 1:
                    raise words.fail(f"image: zero fraction must be between 0 and 1, got {float(zero):g}")
            else:
                words.done()
        self.images[name] = Image(name, seed, zero, words.where)

    def vcpu(self, words: _Words) -> None:
        if len(self.stack) > 1:
            block = self.stack[-1]
            raise words.fail(f"vcpu section inside a {block.kind} block (opened at {block.where}, missing end)")
        if self.section is None and self.stack[0].body:
            raise words.fail("statements before the first vcpu section (put them in a section: vcpu all)")
        if self.section is not None:
            self.close_section()
        key: object
        if words.take_if("all"):
            key = "all"
        else:
            text = words.take("vCPU list").text
            try:
                key = tuple(int(part) for part in text.split(","))
            except ValueError:
                raise words.fail(f"vcpu: expected all or vCPU numbers like 0 or 0,2, got {text!r}") from None
            if any(k < 0 for k in key):
                raise words.fail(f"vcpu: vCPU numbers must not be negative, got {text!r}")
        words.done()
        for k in (key,) if key == "all" else key:  # type: ignore[union-attr]
            if k in self.section_lines:
                label = "vcpu all" if k == "all" else f"vcpu {k}"
                raise words.fail(f"{label} already has a section (at {self.section_lines[k]})")
            self.section_lines[k] = words.where
        self.section = key
        self.started = True
        self.stack = [_Block("section", words.where, words)]

    def close_section(self) -> None:
        body = tuple(self.stack[0].body)
        if self.section is None or self.section == "all":
            self.default = body
        else:
            for k in self.section:  # type: ignore[attr-defined]
                self.bodies[k] = body

    def open(self, words: _Words) -> None:
        kind = words.statement
        block = _Block(kind, words.where, words)
        if kind == "repeat":
            block.header = words.integer("count")
        elif kind == "for":
            duration = words.duration()
            if duration.lo == 0:
                raise words.fail("for: the duration must be positive")
            block.header = duration
        elif kind == "choose":
            block.header = words.integer("seed") if words.take_if("seed") else None
        words.done()
        self.started = True
        self.stack.append(block)

    def weight(self, words: _Words) -> None:
        block = self.stack[-1]
        if block.kind != "choose":
            raise words.fail("weight outside a choose block")
        weight = words.number("weight")
        if weight <= 0:
            raise words.fail(f"weight must be positive, got {words.words[1].text}")
        words.done()
        block.branches.append((weight, []))

    def end(self, words: _Words) -> None:
        if len(self.stack) == 1:
            raise words.fail("end without an open block (repeat, forever, for or choose)")
        block = self.stack.pop()
        node: Statement
        if block.kind == "repeat":
            node = Repeat(block.where, block.header, tuple(block.body))  # type: ignore[arg-type]
        elif block.kind == "forever":
            node = Loop(block.where, None, tuple(block.body))
        elif block.kind == "for":
            node = Loop(block.where, block.header, tuple(block.body))  # type: ignore[arg-type]
        else:
            if not block.branches:
                raise GuestSyntaxError(f"{block.where}: choose has no weight branches")
            node = Choose(block.where, tuple(w for w, _ in block.branches),
                          tuple(tuple(b) for _, b in block.branches), block.header)  # type: ignore[arg-type]
        self.stack[-1].target().append(node)

    def add(self, node: Statement, words: _Words) -> None:
        block = self.stack[-1]
        if block.kind == "choose" and not block.branches:
            raise words.fail("choose: a statement before the first weight line")
        self.started = True
        block.target().append(node)

    # -- statements ---------------------------------------------------------------------------

    def statement(self, words: _Words) -> Statement:
        make: Callable[[_Words], Statement] = {
            "compute": self.timed, "halt": self.timed, "idle": self.timed, "touch": self.touch,
            "read": self.disk, "write": self.disk, "flush": self.flush, "mark": self.mark,
        }[words.statement]
        node = make(words)
        words.done()
        return node

    def timed(self, words: _Words) -> Timed:
        return Timed(words.where, words.statement, words.duration())

    def mark(self, words: _Words) -> Mark:
        return Mark(words.where, words.name("NAME"))

    def flush(self, words: _Words) -> Flush:
        return Flush(words.where, self.disk_name(words))

    def touch(self, words: _Words) -> Touch:
        ranged = ".." in (words.peek() or "")
        size, at = words.region()
        if size.value == 0:
            raise words.fail("touch: SIZE must be positive")
        order, count, fraction = "sequential", 0, Fraction(1)
        seed: int | None = None
        content: Content | None = None
        seen: set[str] = set()
        while not words.at_end():
            key = words.take("option").text
            if key in seen:
                raise words.fail(f"touch: {key} given twice {words.usage()}")
            if (key == "sequential" and seen & {"random", "working-set"}) or (
                    key in ("random", "working-set") and "sequential" in seen):
                raise words.fail(f"touch: sequential and {key if key != 'sequential' else 'a random order'} "
                                 f"conflict (one order per touch) {words.usage()}")
            seen.add(key)
            if key == "at":
                if ranged:
                    raise words.fail("touch: at given with a range (the range already says where)")
                at = words.size("offset")
            elif key == "sequential":
                order = key
            elif key == "random":
                count = words.integer("count")
                order = "working-set" if order == "working-set" else key
            elif key == "working-set":
                order, fraction = key, words.fraction("working-set fraction")
                if not 0 < fraction <= 1:
                    raise words.fail(f"touch: working-set fraction must be above 0 and at most 1, "
                                     f"got {float(fraction):g}")
            elif key == "seed":
                seed = words.integer("seed")
            elif key in ("read", "write"):
                if "read" in seen and "write" in seen:
                    raise words.fail("touch: read and write both given (a touch does one of them)")
                content = self.content(words) if key == "write" else None
            else:
                raise words.fail(f"touch: unexpected {key!r} {words.usage()}")
        if seed is not None and order == "sequential":
            raise words.fail("touch: seed needs a random or working-set order (sequential draws nothing)")
        self.check_region(words, size, at)
        return Touch(words.where, size, at, order, count, fraction, seed, content)

    def check_region(self, words: _Words, size: Size, at: Size) -> None:
        ps = self.page_size
        for label, s in (("offset", at), ("SIZE", size)):
            if s.bytes(ps).denominator != 1:
                raise words.fail(f"touch: {label} {s} is not a whole number of bytes")
        if at.bytes(ps) % ps:
            raise words.fail(f"touch: offset {at} is not a multiple of the {ps}-byte page")
        end = at.bytes(ps) + size.bytes(ps)
        if self.memory_bytes is not None and end > self.memory_bytes:
            raise words.fail(f"touch: region ends at {_mib(end)}, past the VM's {_mib(self.memory_bytes)} of memory")

    def disk(self, words: _Words) -> Disk:
        disk = self.disk_name(words)
        size = words.size()
        length = size.bytes(self.page_size)
        if length <= 0 or length % SECTOR:
            raise words.fail(f"{words.statement}: SIZE {size} is not a positive whole number of 512-byte sectors")
        place = self.place(words, length)
        if words.statement == "write":
            content: Content | None = self.content(words)
        else:
            content = self.content(words) if words.take_if("expect") else None
        return Disk(words.where, words.statement, disk, size, place, content)

    def place(self, words: _Words, length: Fraction) -> Place:
        mode = words.take("place (at, random or next)").text
        if mode == "at":
            return Place("at", words.integer("LBA"))
        if mode not in ("random", "next"):
            raise words.fail(f"{words.statement}: expected at, random or next, got {mode!r} {words.usage()}")
        if not words.take_if("within"):
            raise words.fail(f"{words.statement}: {mode} needs 'within SIZE' {words.usage()}")
        within = words.size("region size")
        region = within.bytes(self.page_size)
        if region.denominator != 1 or region % SECTOR or region < length:
            raise words.fail(f"{words.statement}: region {within} must be whole sectors and at least "
                             f"the I/O size")
        lba = words.integer("LBA") if words.take_if("from") else 0
        seed = None
        if words.take_if("seed"):
            if mode == "next":
                raise words.fail(f"{words.statement}: next draws nothing, it takes no seed")
            seed = words.integer("seed")
        return Place(mode, lba, within, seed)

    def disk_name(self, words: _Words) -> str:
        name = words.take("DISK").text
        if not _DISK.fullmatch(name):
            raise words.fail(f"{words.statement}: bad disk name {name!r} (expected scsi0:0 style: "
                             f"scsiN:M, ideN:M, sataN:M or nvmeN:M)")
        if self.disks is not None and name not in self.disks:
            have = ", ".join(sorted(self.disks)) or "no disks"
            raise words.fail(f"{words.statement}: unknown disk {name!r} (the VM has {have})")
        self.used_disks.add(name)
        return name

    def content(self, words: _Words) -> Content:
        kind = words.take(f"CONTENT ({_CONTENT_USAGE})").text
        if kind == "zero":
            return Content("zero")
        if kind == "byte":
            value = words.integer("byte value")
            if value > 255:
                raise words.fail(f"byte value must be 0..255 (or 0x00..0xff), got {value}")
            return Content("byte", value=value)
        if kind == "text":
            word = words.take('a "quoted string"')
            if not word.quoted:
                raise words.fail(f'text needs a "quoted string", got {word.text!r}')
            data = word.text.encode("utf-8")
            if not data:
                raise words.fail("text pattern is empty")
            return Content("pattern", data=data)
        if kind == "hex":
            text = words.take("hex digits").text
            digits = "".join(text.split())
            if not digits or len(digits) % 2 or any(c not in "0123456789abcdefABCDEF" for c in digits):
                raise words.fail(f"hex pattern {text!r} must be pairs of hex digits (spaces allowed)")
            return Content("pattern", data=bytes.fromhex(digits))
        if kind == "random":
            return Content("random", seed=words.integer("seed") if words.take_if("seed") else None)
        if kind == "image":
            name = words.name("image NAME")
            if name not in self.images:
                raise words.fail(f"unknown image {name!r} (declare it first: image {name} [seed N] [zero F])")
            return Content("image", name=name)
        raise words.fail(f"unknown content {kind!r} (use {_CONTENT_USAGE})")


def _mib(n: Fraction | int) -> str:
    return f"{float(n) / (1 << 20):g} MiB"


def parse(source: str, filename: str = "<guest>", *, disks: Collection[str] | None = None,
          memory_bytes: int | None = None, page_size: int = 4096) -> Program:
    """Parse a guest program; ``disks`` (the VM's disk names) and ``memory_bytes`` (its memory),
    when given, are checked against what the program uses.  Raises :class:`GuestSyntaxError`."""
    return _Parser(filename, disks, memory_bytes, page_size).parse(source)


def load(path: str | Path, *, disks: Collection[str] | None = None, memory_bytes: int | None = None,
         page_size: int = 4096) -> Program:
    """Read and parse a ``.guest`` file (errors name the file as given)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise GuestError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        source = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise GuestSyntaxError(f"{path}:{line}: not UTF-8 text") from None
    return parse(source, str(path), disks=disks, memory_bytes=memory_bytes, page_size=page_size)
