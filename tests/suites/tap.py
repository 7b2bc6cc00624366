"""Reading ``prove -v --merge`` output (TAP per test file) and the expected-failure list.

prove prints, for each test file, a header line ``path/to/file.t ..... `` followed by that file's
TAP lines (``1..N``, ``ok N``, ``not ok N - why``), then its own verdict.  A file that dies
before its plan is done, or exits non-zero, is reported as missing subtests (``#`` subtest 0).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

HEADER = re.compile(r"^(?P<file>\S+\.t) \.+ ?(?P<rest>.*)$")
PLAN = re.compile(r"^1\.\.(?P<n>\d+)")
RESULT = re.compile(r"^(?P<not>not )?ok (?P<num>\d+)(?P<desc>.*)$")


@dataclass
class FileResult:
    """One test file's TAP: planned count, and every subtest's outcome with its description."""

    planned: int | None = None
    outcomes: dict[int, tuple[bool, str]] = field(default_factory=dict)

    def failed(self) -> dict[int, str]:
        """Failing subtests (number -> description); subtests the plan promised but that never
        ran count as failing (the script died)."""
        out = {n: d for n, (ok, d) in self.outcomes.items() if not ok}
        for n in range(1, (self.planned or 0) + 1):
            if n not in self.outcomes:
                out[n] = "did not run (the script ended early)"
        if self.planned is None:
            out[0] = "no TAP plan (the script did not run)"
        return out

    def passed(self) -> set[int]:
        return {n for n, (ok, _) in self.outcomes.items() if ok}


def parse_prove(text: str, root: str) -> dict[str, FileResult]:
    """``{"chmod/00.t": FileResult}`` from prove's verbose output; names relative to ``root``."""
    results: dict[str, FileResult] = {}
    current: FileResult | None = None
    prefix = root.rstrip("/") + "/"
    for raw in text.splitlines():
        line = raw.rstrip()
        header = HEADER.match(line)
        if header and header["file"].startswith(prefix):
            current = results.setdefault(header["file"][len(prefix):], FileResult())
            line = header["rest"]
        if current is None:
            continue
        if (plan := PLAN.match(line)) and current.planned is None:
            current.planned = int(plan["n"])
        elif result := RESULT.match(line):
            desc = result["desc"].strip(" -")
            # TAP: a "# TODO" (known to the suite itself) or "# SKIP" subtest never fails the file
            ok = result["not"] is None or desc.upper().startswith(("# TODO", "# SKIP"))
            current.outcomes.setdefault(int(result["num"]), (ok, desc))
    return results


def parse_ranges(spec: str) -> set[int] | None:
    """``"1-3,7"`` -> {1, 2, 3, 7}; ``"*"`` (every subtest of the file) -> None."""
    if spec == "*":
        return None
    out: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def format_ranges(nums: set[int] | list[int]) -> str:
    """{1, 2, 3, 7} -> ``"1-3,7"``."""
    out: list[str] = []
    ordered = sorted(nums)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(out)


@dataclass(frozen=True)
class Expected:
    """One line of the expected-failure list: a test file, its subtests (None: all), and why."""

    file: str
    subtests: frozenset[int] | None
    reason: str

    def covers(self, file: str, num: int) -> bool:
        return file == self.file and (self.subtests is None or num in self.subtests)


def load_expected(path: Path) -> list[Expected]:
    """``<file> <subtests|*> <reason...>`` lines; ``#`` lines are comments; a reason is required."""
    entries = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 2)
        if len(parts) < 3:
            raise ValueError(f"{path.name}:{number}: want '<file> <subtests|*> <reason>', got {raw!r}")
        subtests = parse_ranges(parts[1])
        entries.append(Expected(parts[0], None if subtests is None else frozenset(subtests), parts[2]))
    return entries
