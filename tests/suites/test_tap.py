"""The pjdfstest verdict logic itself: TAP parsing and the comparison with the expected list, so
that a misread prove output can neither hide a failure nor invent one."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.suites.tap import Expected, format_ranges, load_expected, parse_prove, parse_ranges
from tests.suites.test_pjdfstest import EXPECTED, compare

ROOT = "/x/pjdfstest/tests"
OUTPUT = f"""\
{ROOT}/a/00.t .......
1..5
ok 1
not ok 2 - tried 'mkfifo n 0644', expected 0, got EPERM
not ok 3 # TODO Linux does not do this
ok 4
ok
{ROOT}/a/01.t .......
1..4
ok 1
not ok 2
Failed 1/4 subtests
{ROOT}/b/00.t .......
Dubious, test returned 1
"""


def test_parse_prove_outcomes_plan_todo_and_missing() -> None:
    results = parse_prove(OUTPUT, ROOT)
    assert sorted(results) == ["a/00.t", "a/01.t", "b/00.t"]
    a0 = results["a/00.t"]
    assert a0.planned == 5 and a0.passed() == {1, 3, 4}  # a TODO never fails the file
    assert a0.failed() == {2: "tried 'mkfifo n 0644', expected 0, got EPERM", 5: "did not run (the script ended early)"}
    assert set(results["a/01.t"].failed()) == {2, 3, 4}
    assert results["b/00.t"].failed() == {0: "no TAP plan (the script did not run)"}


def test_compare_unexpected_and_now_passing() -> None:
    results = parse_prove(OUTPUT, ROOT)
    expected = [Expected("a/00.t", frozenset({1, 2}), "why"), Expected("a/01.t", None, "why")]
    unexpected, fixed = compare(results, ["a/00.t", "a/01.t", "b/00.t", "c/00.t"], expected)
    assert {n: sorted(v) for n, v in unexpected.items()} == {"a/00.t": [5], "b/00.t": [0], "c/00.t": [0]}
    assert fixed == {"a/00.t": {1}}  # a listed subtest that passes is reported


def test_ranges_round_trip() -> None:
    assert parse_ranges("1-3,7") == {1, 2, 3, 7} and parse_ranges("*") is None
    assert format_ranges({7, 1, 2, 3, 9, 10}) == "1-3,7,9-10"


def test_expected_list_lines_need_a_reason(tmp_path: Path) -> None:
    bad = tmp_path / "e.txt"
    bad.write_text("# comment\na/00.t 1-2\n")
    with pytest.raises(ValueError, match=r"e\.txt:2"):
        load_expected(bad)


def test_committed_list_is_well_formed() -> None:
    entries = load_expected(EXPECTED)
    assert entries and all(e.reason and e.file.endswith(".t") for e in entries)
    assert not [e for e in entries if e.subtests is None], "a whole file on the list hides too much"
