"""The problem table (e2fsprogs checks its table the same way in a unit-test build)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.fsck import cases
from vmfs.fsck import BY_CODE, TABLE, Code, ExitCode, Flag
from vmfs.fsck.policy import Mode, Policy
from vmfs.fsck.problems import Problem

PACKAGE = Path(__file__).resolve().parents[2] / "vmfs" / "fsck"


def test_codes_unique_sorted_and_in_their_pass() -> None:
    codes = [int(p.code) for p in TABLE]
    assert codes == sorted(codes)
    assert len(codes) == len(set(codes))
    assert {int(c) for c in Code} == set(codes)  # every code has a row, every row a code
    for p in TABLE:
        assert 1 <= p.pass_number <= 6
        assert p.code & 0xFFFF, p.name  # 0xNN0000 is no problem
        assert p.message and not p.message.endswith(".")
        if not p.flags & (Flag.FATAL | Flag.NO_FIX):
            assert p.fix, f"{p.name} can be answered yes but says nothing about what yes does"


def test_every_code_is_hit_by_a_corruption_case() -> None:
    hit: set[int] = set()
    for case in cases.load():
        hit |= case.codes1
        for line in case.expect1:
            code, name = line.split()
            assert BY_CODE[int(code, 16)].name == name, f"{case.name}: {line}"
    missing = [p.name for p in TABLE if p.code not in hit]
    assert missing == []


def _calls() -> list[tuple[str, set[str], set[str]]]:
    """(file, code names, fact keywords) of every ctx.problem(...) call in the passes; a call whose
    code is a variable may report any code named as ``Code.X`` in its function."""
    out = []
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text())
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef):
                continue
            named = {n.attr for n in ast.walk(func) if isinstance(n, ast.Attribute)
                     and isinstance(n.value, ast.Name) and n.value.id == "Code"}
            for node in ast.walk(func):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr == "problem" and node.args):
                    continue
                first = node.args[0]
                codes = {first.attr} if isinstance(first, ast.Attribute) else named
                out.append((path.name, codes, {k.arg for k in node.keywords if k.arg}))
    return out


def test_every_template_gets_its_facts() -> None:
    """Every code is reported by a call that supplies every fact its message and fix name."""
    satisfied = set()
    for file, codes, facts in _calls():
        for name in codes:
            problem = next((p for p in TABLE if p.name == name), None)
            assert problem is not None, f"{file}: reports unknown code {name}"
            if not (problem.fields() | problem.fix_fields()) - facts - {"path"}:
                satisfied.add(name)
            elif len(codes) == 1:
                raise AssertionError(f"{file}: {name} is reported without "
                                     f"{sorted((problem.fields() | problem.fix_fields()) - facts)}")
    assert sorted({p.name for p in TABLE} - satisfied) == []


def test_policies() -> None:
    preen_ok = next(p for p in TABLE if p.flags & Flag.PREEN_OK)
    other = next(p for p in TABLE if not p.flags & (Flag.PREEN_OK | Flag.FATAL | Flag.NO_FIX))
    fatal = next(p for p in TABLE if p.flags & Flag.FATAL)
    assert not Policy(Mode.NO).answer(preen_ok, "s", "m")
    assert Policy(Mode.YES).answer(other, "s", "m")
    assert not Policy(Mode.YES).answer(fatal, "s", "m")
    assert not Policy(Mode.YES, repairable=False).answer(other, "s", "m")
    preen = Policy(Mode.PREEN)
    assert preen.answer(preen_ok, "s", "m")
    assert not preen.answer(other, "s", "m") and preen.unexpected == [other]
    asked = []
    ask = Policy(Mode.ASK, ask=lambda p, s, m: asked.append(s) or True)
    assert ask.answer(other, "x", "m") and ask.answer(other, "x", "m")
    assert asked == ["x"]  # the repair phase does not ask again
    # on VMFS6 only the problems whose repair is made there (the V6 flag)
    v6 = Policy(Mode.YES)
    v6.vmfs6 = True
    assert v6.answer(other, "s", "m") == bool(other.flags & Flag.V6)
    assert not v6.answer(Problem(other.code, "m", "fix it"), "s", "m")  # the same without V6: no
    assert all(p.flags & (Flag.V6 | Flag.FATAL) for p in TABLE), "a problem not repaired on VMFS6"


def test_exit_codes_are_e2fscks() -> None:
    assert [int(c) for c in ExitCode] == [0, 1, 2, 4, 8, 16, 32, 128]
    assert ExitCode.UNCORRECTED | ExitCode.OPERATIONAL == 12
