"""The corruption corpus: ``fixtures/fsck/<case>/`` folders, as e2fsprogs keeps its ``tests/f_*``.

Each folder holds ``name`` (one line), ``recipe.json`` (base volume, corruption steps, extra
vmfs-fsck arguments, paths the repair may change), ``expect.1`` (problem codes of the first,
read-only run) and ``expect.2`` (codes after the repair: none).  Prefixes: ``f_`` repaired
cases, ``x_`` fatal damage (the check cannot go on), ``v6_`` cases of the real VMFS6 sample.

Every case on the populated volume also runs in its VMFS6 form (tests/fsck/test_corpus6.py): the
same recipe on the populated volume formatted as VMFS6, where ``recipe.json``'s ``vmfs6`` object
may replace ``steps``, ``kind`` or ``why`` (what differs on VMFS6, and why), and ``expect6.1``
the codes of the first run when VMFS6 reports the damage differently.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import REPO, tool

FIXTURES = REPO / "fixtures" / "fsck"


@dataclass(frozen=True)
class Case:
    name: str
    title: str
    base: str
    kind: str  # "repair", "fatal", "check-only"
    steps: list[dict[str, Any]]
    args: list[str]
    involved: list[str]
    expect1: list[str]
    expect2: list[str]
    #: the VMFS6 form: recipe overrides and expect6.1 (None: as on VMFS5)
    vmfs6: dict[str, Any] | None = None
    expect6: list[str] | None = None

    def as_vmfs6(self) -> Case:
        """The case in its VMFS6 form."""
        over = self.vmfs6 or {}
        return Case(self.name, self.title, self.base, over.get("kind", self.kind), over.get("steps", self.steps),
                    over.get("args", self.args), over.get("involved", self.involved),
                    self.expect6 if self.expect6 is not None else self.expect1, self.expect2)

    @property
    def codes1(self) -> set[int]:
        return {int(line.split()[0], 16) for line in self.expect1}


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def load() -> list[Case]:
    cases = []
    for d in sorted(p for p in FIXTURES.iterdir() if (p / "recipe.json").exists()):
        recipe = json.loads((d / "recipe.json").read_text())
        expect6 = _lines(d / "expect6.1") if (d / "expect6.1").exists() else None
        cases.append(Case(d.name, (d / "name").read_text().strip(), recipe["base"], recipe["kind"], recipe["steps"],
                          recipe.get("args", []), recipe.get("involved", []), _lines(d / "expect.1"),
                          _lines(d / "expect.2"), recipe.get("vmfs6"), expect6))
    return cases


def run_fsck(image: Path, *args: str) -> tuple[int, dict[str, Any]]:
    """vmfs-fsck as a user runs it, with --json; (exit code, report)."""
    r = subprocess.run([tool("vmfs-fsck"), "--json", *args, str(image)], capture_output=True, text=True,
                       timeout=600)
    assert r.stderr == "" or "Traceback" not in r.stderr, r.stderr
    report = json.loads(r.stdout) if r.stdout.strip().startswith("{") else {}
    return r.returncode, report


def codes(report: dict[str, Any], phase: str = "check") -> list[str]:
    found = report.get(phase) or {}
    return sorted({f"{f['code']} {f['name']}" for f in found.get("findings", [])})
