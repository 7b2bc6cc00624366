"""The guest language: parsing, exact timing on the engine, page and disk bytes, determinism,
loops and weighted choice, per-vCPU sections, every kind of mistake, the examples, and the
interpreter's cost per statement.

The platform here is small but real: it runs on the engine, a compute or halt of N µs takes N µs
of simulated time, pages are kept in a dict, each disk is a bytearray written when the write
completes after a fixed latency.  Expected times and bytes are worked out by hand in each test."""

from __future__ import annotations

import bisect
import hashlib
import os
import subprocess
import sys
import time
from array import array
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostsim.errors import HostsimError
from hostsim.vmkernel.engine import MS, SECOND, Engine, Event
from hostsim.vmm.guest import (
    GuestError,
    GuestLog,
    GuestRuntimeError,
    GuestSyntaxError,
    Program,
    dry_run,
    image_page,
    load,
    parse,
    render,
    seeded_page,
    seeded_sectors,
    start,
)
from hostsim.vmm.guest.platform import TouchEach

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "hostsim" / "examples" / "guests"
DISK_LATENCY = 250
FLUSH_LATENCY = 40


class Platform(TouchEach):
    """A GuestPlatform on the engine that records every call as (time, vcpu, op, args...)."""

    def __init__(self, engine: Engine, *, page_size: int = 4096, disks: dict[str, int] | None = None,
                 touch_us: int = 0, fill: int = 0) -> None:
        self.engine = engine
        self.page_size = page_size
        self.touch_us = touch_us
        self.disks = {name: bytearray([fill]) * size for name, size in (disks or {"scsi0:0": 16 << 20}).items()}
        self.pages: dict[tuple[Any, int], bytes] = {}
        self.trace: list[tuple[Any, ...]] = []

    def _rec(self, *entry: Any) -> None:
        self.trace.append((self.engine.now, *entry))

    def compute(self, vcpu: Any, us: int) -> Event:
        self._rec(vcpu, "compute", us)
        return self.engine.timeout(us)

    def halt(self, vcpu: Any, us: int) -> Event:
        self._rec(vcpu, "halt", us)
        return self.engine.timeout(us)

    def idle_loop(self, vcpu: Any, us: int) -> Event:
        self._rec(vcpu, "idle", us)
        return self.engine.timeout(us)

    def touch(self, vcpu: Any, ppn: int, data: bytes | None) -> Event:
        if data is not None:
            assert len(data) == self.page_size
            self.pages[(vcpu, ppn)] = data
        self._rec(vcpu, "touch", ppn, None if data is None else hashlib.sha256(data).hexdigest()[:12])
        return self.engine.timeout(self.touch_us)

    def disk_read(self, vcpu: Any, disk: str, lba: int, count: int) -> Event:
        self._rec(vcpu, "read", disk, lba, count)
        store = self.disks[disk]
        return self.engine.timeout(DISK_LATENCY, bytes(store[lba * 512:(lba + count) * 512]))

    def disk_write(self, vcpu: Any, disk: str, lba: int, data: bytes) -> Event:
        assert len(data) % 512 == 0
        self._rec(vcpu, "write", disk, lba, len(data) // 512)
        store = self.disks[disk]
        assert (lba * 512 + len(data)) <= len(store)
        done = self.engine.timeout(DISK_LATENCY)

        def land(_: Event) -> None:
            store[lba * 512:lba * 512 + len(data)] = data
        done.callbacks.insert(0, land)  # type: ignore[union-attr]
        return done

    def flush(self, vcpu: Any, disk: str) -> Event:
        self._rec(vcpu, "flush", disk)
        return self.engine.timeout(FLUSH_LATENCY)


def run(source: str, *, vcpus: int = 1, seed: int | str = 0, until: int | None = None,
        platform_args: dict[str, Any] | None = None, program: Program | None = None,
        ) -> tuple[Platform, GuestLog, Engine]:
    eng = Engine()
    plat = Platform(eng, **(platform_args or {}))
    prog = program or parse(source, "t.guest")
    log = GuestLog(history=True)
    start(eng, prog, plat, list(range(vcpus)), seed=seed, log=log)
    eng.run(until=until)
    return plat, log, eng


def ops(plat: Platform, *names: str) -> list[tuple[Any, ...]]:
    return [e for e in plat.trace if e[2] in names]


# -- timing -------------------------------------------------------------------------------------


def test_compute_halt_idle_take_their_durations_exactly() -> None:
    """compute 1ms at 0, halt 500us at 1000, idle 2ms at 1500, compute 1.5 ms at 3500; ends 5000."""
    plat, _, eng = run("compute 1ms\nhalt 500us\nidle 2ms\ncompute 1.5ms\n")
    assert plat.trace == [(0, 0, "compute", 1000), (1000, 0, "halt", 500), (1500, 0, "idle", 2000),
                          (3500, 0, "compute", 1500)]
    assert eng.now == 5000


def test_duration_units_and_spellings() -> None:
    plat, _, _ = run("compute 7us\ncompute 3 ms\ncompute 2s\ncompute 1min\ncompute 0.25s\ncompute 2µs\n")
    assert [e[3] for e in plat.trace] == [7, 3000, 2 * SECOND, 60 * SECOND, 250_000, 2]


def test_duration_range_draws_inside_both_ends() -> None:
    """compute 1..3us over 600 runs: only 1, 2 and 3 µs, each seen."""
    plat, _, _ = run("repeat 600\ncompute 1..3us\nend\n")
    assert {e[3] for e in plat.trace} == {1, 2, 3}


def test_nested_repeat_gives_the_hand_computed_schedule() -> None:
    """repeat 2 { compute 1ms; repeat 3 { halt 100us } }: computes at 0 and 1300, halts at 1000,
    1100, 1200, 2300, 2400, 2500; ends at 2600."""
    plat, _, eng = run("repeat 2\n  compute 1ms\n  repeat 3\n    halt 100us\n  end\nend\n")
    assert [(e[0], e[2]) for e in plat.trace] == [
        (0, "compute"), (1000, "halt"), (1100, "halt"), (1200, "halt"),
        (1300, "compute"), (2300, "halt"), (2400, "halt"), (2500, "halt")]
    assert eng.now == 2600


def test_repeat_zero_runs_nothing() -> None:
    plat, _, _ = run("repeat 0\ncompute 1ms\nend\nhalt 1us\n")
    assert plat.trace == [(0, 0, "halt", 1)]


def test_for_loop_starts_iterations_while_time_remains() -> None:
    """for 10ms { compute 3ms }: iterations start at 0, 3, 6, 9 ms (9 < 10), none at 12."""
    plat, _, eng = run("for 10ms\ncompute 3ms\nend\nmark after\n")
    assert [e[0] for e in plat.trace] == [0, 3000, 6000, 9000]
    assert eng.now == 12000


def test_forever_runs_until_the_engine_stops() -> None:
    plat, _, _ = run("forever\ncompute 2ms\nhalt 3ms\nend\n", until=20 * MS)
    assert [e[0] for e in plat.trace] == [0, 2000, 5000, 7000, 10000, 12000, 15000, 17000]


def test_a_loop_that_takes_no_time_is_an_error_with_its_line() -> None:
    with pytest.raises(GuestRuntimeError) as info:
        run("compute 1ms\nforever\n  mark spin\nend\n")
    assert str(info.value).startswith("t.guest:2: 1000 iterations in a row took no simulated time")


def test_marks_and_acknowledged_writes_are_logged_with_times() -> None:
    """write at 0 completes at 250 (the fixed latency): logged then; mark at 250 + 40 (flush)."""
    _, log, _ = run('write scsi0:0 1 sectors at 3 text "x"\nflush scsi0:0\nmark done\n')
    assert [(w.time_us, w.lba, w.data, w.where) for w in log.writes] == [(250, 3, b"x" * 512, "t.guest:1")]
    assert [(m.time_us, m.name, m.where) for m in log.marks] == [(290, "done", "t.guest:3")]


# -- memory -------------------------------------------------------------------------------------


def test_touch_sequential_writes_each_content_kind_as_real_page_bytes() -> None:
    src = """
image base seed 9
touch 2 pages write zero
touch 2 pages at 2 pages write byte 0xab
touch 8KiB at 16KiB write text "ab\\n"
touch 1 pages at 6 pages write hex "de ad"
touch 1 pages at 7 pages write random seed 5
touch 2 pages at 8 pages write image base
touch 2 pages at 10 pages
"""
    plat, _, eng = run(src)
    p = {ppn: data for (_, ppn), data in plat.pages.items()}
    assert p[0] == p[1] == bytes(4096)
    assert p[2] == p[3] == b"\xab" * 4096
    assert p[4] == p[5] == (b"ab\n" * 1366)[:4096]
    assert p[6] == b"\xde\xad" * 2048
    assert p[7] == seeded_page(5, 7, 4096)
    assert p[7][:16] == hashlib.blake2b(b"page:5:7", digest_size=16).digest()  # the page's own stamp
    program = parse(src, "t.guest")
    assert p[8] == image_page(program.images["base"], 8, 4096) and p[8] != p[9]
    assert [e[3] for e in ops(plat, "touch")][-2:] == [10, 11] and 10 not in p and 11 not in p
    assert eng.now == 0  # touches of resident pages take no time on this platform


def test_random_pages_are_distinct_and_their_bytes_look_uniform() -> None:
    """3000 pages of each random kind: no two equal, none equal to another kind's page, and the
    256 byte values each within 10 % of their expected 3000 * 4096 / 256 = 48000.  (Not 1 %: a
    page's body is a window of a 1 MiB pool, so the counts vary as the pool's do, scaled by the
    ~12 times each pool byte is reused: about +-750, +-2300 at the extremes of 256 values.)"""
    src = ("image base\ntouch 3000 pages write random\ntouch 3000 pages at 3000 pages write random seed 2\n"
           "touch 3000 pages at 6000 pages write image base\n")
    plat, _, _ = run(src)
    pages = list(plat.pages.values())
    assert len(pages) == 9000 and len(set(pages)) == 9000
    for kind in range(3):
        blob = b"".join(pages[kind * 3000:(kind + 1) * 3000])
        counts = [blob.count(bytes([v])) for v in range(256)]
        assert all(abs(c - 48000) < 4800 for c in counts), (kind, min(counts), max(counts))


def test_page_contents_follow_the_platform_page_size() -> None:
    plat, _, _ = run("touch 16KiB write random seed 1\ntouch 2 pages at 16KiB write byte 1\n",
                     platform_args={"page_size": 8192})
    assert sorted(ppn for _, ppn in plat.pages) == [0, 1, 2, 3]
    assert all(len(d) == 8192 for d in plat.pages.values())
    assert plat.pages[(0, 0)] == seeded_page(1, 0, 8192)


def test_a_shared_image_gives_identical_pages_in_different_vms_and_zero_pages_at_its_rate() -> None:
    """Two VMs (different seeds) write image base: identical pages; their private random pages
    differ.  zero 30%: of 2000 pages, 600 +- 60 are zero."""
    src = "image base seed 3 zero 30%\ntouch 2000 pages write image base\ntouch 4 pages at 2000 pages write random\n"
    a, _, _ = run(src, seed=1)
    b, _, _ = run(src, seed=2)
    img_a = [a.pages[(0, p)] for p in range(2000)]
    assert img_a == [b.pages[(0, p)] for p in range(2000)]
    assert all(a.pages[(0, p)] != b.pages[(0, p)] for p in range(2000, 2004))
    zeros = sum(page == bytes(4096) for page in img_a)
    assert 540 <= zeros <= 660, zeros
    assert len({page for page in img_a if page != bytes(4096)}) == 2000 - zeros  # no other duplicates


def test_touch_by_page_range() -> None:
    """16KiB..32KiB is pages 4..7; 10..12 pages is pages 10 and 11; 1..3pages is pages 1, 2."""
    plat, _, _ = run("touch 16KiB..32KiB\ntouch 10..12 pages\ntouch 1..3pages write zero\n")
    assert [e[3] for e in ops(plat, "touch")] == [4, 5, 6, 7, 10, 11, 1, 2]


def test_touch_random_draws_uniformly_inside_the_region() -> None:
    plat, _, _ = run("touch 100 pages at 50 pages random 5000\n")
    pages = [e[3] for e in ops(plat, "touch")]
    assert len(pages) == 5000 and min(pages) == 50 and max(pages) == 149
    assert all(30 <= pages.count(p) <= 80 for p in range(50, 150))  # 50 expected per page


def test_working_set_is_a_fixed_fraction_touched_again_each_time() -> None:
    plat, _, _ = run("repeat 3\ntouch 400 pages working-set 25% read\nend\n")
    pages = [e[3] for e in ops(plat, "touch")]
    first = pages[:100]
    assert len(pages) == 300 and len(set(first)) == 100 and first == sorted(first)
    assert pages[100:200] == first and pages[200:] == first


def test_random_draws_from_a_working_set_stay_inside_it() -> None:
    """Same seed, same subset: the 1000 draws of the second statement hit exactly the 40 pages
    the first one touched (25 expected per page, so all of them)."""
    plat, _, _ = run("touch 400 pages working-set 10% seed 3\ntouch 400 pages working-set 10% random 1000 seed 3\n")
    pages = [e[3] for e in ops(plat, "touch")]
    subset, draws = pages[:40], pages[40:]
    assert len(draws) == 1000 and set(draws) == set(subset)  # 25 expected per page: all are hit


def test_a_statement_seed_gives_the_same_draws_in_every_vm() -> None:
    src = "touch 1000 pages random 50 seed 4\ntouch 1000 pages working-set 5% seed 8\n"
    a, _, _ = run(src, seed=1)
    b, _, _ = run(src, seed=99)
    c, _, _ = run(src.replace("seed 4", "seed 5").replace("seed 8", "seed 9"), seed=1)
    assert a.trace == b.trace and a.trace != c.trace


# -- disks --------------------------------------------------------------------------------------


def test_disk_writes_put_the_given_bytes_at_their_lbas() -> None:
    src = """
write scsi0:0 4KiB at 0 text "hello\\n"
write scsi0:0 2 sectors at 100 hex "00ff"
write scsi0:0 1 sectors at 200 byte 7
write scsi0:0 1KiB at 300 zero
write scsi0:0 3 sectors at 400 random seed 42
read scsi0:0 4KiB at 0
flush scsi0:0
"""
    plat, log, eng = run(src, platform_args={"disks": {"scsi0:0": 1 << 20}, "fill": 0x11})
    d = plat.disks["scsi0:0"]
    assert d[:4096] == (b"hello\n" * 683)[:4096]
    assert d[100 * 512:102 * 512] == b"\x00\xff" * 512
    assert d[200 * 512:201 * 512] == b"\x07" * 512
    assert d[300 * 512:302 * 512] == bytes(1024) and d[302 * 512] == 0x11
    assert d[400 * 512:403 * 512] == seeded_sectors(42, 400, 3)
    assert seeded_sectors(42, 401, 1) == d[401 * 512:402 * 512]  # sector-keyed: any I/O size
    assert [(e[0], e[2], e[4], e[5]) for e in plat.trace if e[2] in ("write", "read")] == [
        (0, "write", 0, 8), (250, "write", 100, 2), (500, "write", 200, 1), (750, "write", 300, 2),
        (1000, "write", 400, 3), (1250, "read", 0, 8)]
    assert (1500, 0, "flush", "scsi0:0") in plat.trace and eng.now == 1540
    expected = log.expected_sectors("scsi0:0")
    assert len(expected) == 8 + 2 + 1 + 2 + 3
    assert all(d[lba * 512:(lba + 1) * 512] == data for lba, data in expected.items())


def test_read_expect_checks_the_bytes_read() -> None:
    """The guest writes seeded sectors then reads them back with expect: passes; a read of a
    region it did not write (zero on this disk) fails at its line, naming the first bad sector."""
    ok = 'write scsi0:0 8KiB at 64 random seed 3\nread scsi0:0 4KiB at 68 expect random seed 3\n'
    plat, _, eng = run(ok)
    assert eng.now == 2 * DISK_LATENCY and ops(plat, "read")[0][4] == 68
    bad = ok + 'read scsi0:0 2 sectors at 79 expect random seed 3\n'
    with pytest.raises(GuestRuntimeError, match=r"^t\.guest:3: read scsi0:0 at LBA 79: data differs from what "
                                                r"was expected from byte 512 \(sector 80\) on, at 750 us$"):
        run(bad)


def test_without_history_the_log_keeps_only_the_latest_bytes_per_sector() -> None:
    """Sector 5 written three times (byte 1, 2, 3): the log holds 3 for it, counts 3 writes of
    512 + 512 + 1024 bytes, and keeps no write objects."""
    src = ("write scsi0:0 1 sectors at 5 byte 1\nwrite scsi0:0 1 sectors at 5 byte 2\n"
           "write scsi0:0 2 sectors at 5 byte 3\nmark done\n")
    eng = Engine()
    log = GuestLog()
    start(eng, parse(src, "t.guest"), Platform(eng), [0], log=log)
    eng.run()
    assert log.writes == [] and (log.acked_writes, log.acked_bytes) == (3, 2048)
    assert log.expected_sectors("scsi0:0") == {5: b"\x03" * 512, 6: b"\x03" * 512}
    assert [m.name for m in log.marks] == ["done"] and log.expected_sectors("scsi1:0") == {}


def test_unacknowledged_writes_are_not_logged() -> None:
    """The run stops at 300 µs: the first write (acknowledged at 250) is logged, the second
    (issued at 250, due at 500) is not, and its bytes have not landed."""
    plat, log, _ = run("write scsi0:0 1 sectors at 0 byte 1\nwrite scsi0:0 1 sectors at 1 byte 2\n", until=300)
    assert [w.lba for w in log.writes] == [0]
    assert plat.disks["scsi0:0"][512:1024] == bytes(512)


def test_next_walks_the_region_and_wraps() -> None:
    plat, _, _ = run("repeat 5\nwrite scsi0:0 4KiB next within 12KiB from 64 zero\nend\n")
    assert [e[4] for e in ops(plat, "write")] == [64, 72, 80, 64, 72]


def test_random_placement_is_aligned_to_the_io_size_and_stays_inside() -> None:
    plat, _, _ = run("repeat 400\nread scsi0:0 8KiB random within 1MiB from 1000\nend\n")
    lbas = [e[4] for e in ops(plat, "read")]
    assert all((lba - 1000) % 16 == 0 and 1000 <= lba <= 1000 + 2048 - 16 for lba in lbas)
    assert len(set(lbas)) > 90  # 128 slots, 400 draws


# -- determinism and choice ------------------------------------------------------------------


MIXED = """
seed 3
forever
    choose
    weight 2
        compute 100us..900us
        touch 64 pages random 4 write random
    weight 1
        read scsi0:0 4KiB random within 1MiB
    weight 1
        write scsi0:0 4KiB random within 1MiB random
        halt 1ms..2ms
    end
end
"""


def test_same_seed_gives_an_identical_trace_and_another_seed_differs() -> None:
    a, la, _ = run(MIXED, vcpus=2, seed=17, until=200 * MS)
    b, lb, _ = run(MIXED, vcpus=2, seed=17, until=200 * MS)
    c, _, _ = run(MIXED, vcpus=2, seed=18, until=200 * MS)
    assert len(a.trace) > 500
    assert a.trace == b.trace and a.disks == b.disks and la == lb
    assert a.trace != c.trace
    v0 = [e for e in a.trace if e[1] == 0]
    v1 = [e for e in a.trace if e[1] == 1]
    assert [e[2:] for e in v0[:50]] != [e[2:] for e in v1[:50]]  # each vCPU has its own stream


_FRESH = """
import hashlib, sys
from tests.hostsim.test_guest import MIXED, run
plat, log, _ = run(MIXED, vcpus=2, seed=int(sys.argv[1]), until=100_000)
print(hashlib.sha256(repr((plat.trace, bytes(plat.disks["scsi0:0"]), log)).encode()).hexdigest(), len(plat.trace))
"""


def fresh_trace(seed: int, hashseed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hashseed, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", _FRESH, str(seed)], capture_output=True, text=True, env=env,
                          check=True, timeout=120, cwd=ROOT).stdout


def test_fresh_interpreters_with_different_hash_seeds_give_the_same_trace() -> None:
    """Nothing depends on hashing or process state: two interpreters (hash seeds 1 and 4242)
    give the same digest of trace, disk bytes and log; another VM seed gives another."""
    a = fresh_trace(17, "1")
    assert a == fresh_trace(17, "4242") and int(a.split()[1]) > 100
    assert a.split()[0] != fresh_trace(18, "1").split()[0]


def test_a_3_to_1_choice_over_4000_draws_is_within_3_percent() -> None:
    _, log, _ = run("repeat 4000\nchoose\nweight 3\nmark a\nweight 1\nmark b\nend\nend\n")
    a = sum(m.name == "a" for m in log.marks)
    assert len(log.marks) == 4000
    assert abs(a / 4000 - 0.75) <= 0.03, a
    # different seeds pick differently
    _, other, _ = run("repeat 4000\nchoose\nweight 3\nmark a\nweight 1\nmark b\nend\nend\n", seed=1)
    assert [m.name for m in other.marks] != [m.name for m in log.marks]


def test_choose_with_its_own_seed_repeats_across_vms() -> None:
    src = "repeat 50\nchoose seed 6\nweight 1\nmark a\nweight 1\nmark b\nend\nend\n"
    _, x, _ = run(src, seed=1)
    _, y, _ = run(src, seed=2)
    assert [m.name for m in x.marks] == [m.name for m in y.marks]


# -- sections ------------------------------------------------------------------------------------


def test_one_body_per_vcpu_or_a_default_for_the_rest() -> None:
    src = "vcpu 0\ncompute 1ms\nvcpu 1,3\nidle 2ms\nvcpu all\nhalt 3ms\n"
    plat, _, _ = run(src, vcpus=4)
    assert sorted(plat.trace) == [(0, 0, "compute", 1000), (0, 1, "idle", 2000), (0, 2, "halt", 3000),
                                  (0, 3, "idle", 2000)]


def test_a_section_for_a_vcpu_the_vm_lacks_is_refused() -> None:
    with pytest.raises(GuestRuntimeError, match=r"^t\.guest:3: vcpu 2 has a section but the VM has 2 vCPUs$"):
        run("vcpu all\ncompute 1ms\nvcpu 2\nhalt 1ms\n", vcpus=2)


def test_a_vcpu_without_a_section_is_refused() -> None:
    with pytest.raises(GuestRuntimeError, match=r"^t\.guest: no section for vcpu 1 \(the program has vcpu 0"):
        run("vcpu 0\ncompute 1ms\n", vcpus=2)


# -- mistakes -------------------------------------------------------------------------------------

ERRORS = [
    ("bogus 1ms", 1, "unknown statement 'bogus'"),
    ("compute 5", 1, "compute: DURATION 5 needs a unit (us, ms, s, min)"),
    ("compute 5 sec", 1, "compute: unknown time unit 'sec' (use us, ms, s or min)"),
    ("touch 10 MB", 1, "touch: unknown size unit 'MB' (sizes are binary"),
    ("touch 10 kib", 1, "touch: unknown size unit 'kib'"),
    ("compute 5h", 1, "compute: unknown time unit 'h' (use us, ms, s or min)"),
    ("compute -5ms", 1, "compute: DURATION must not be negative"),
    ("compute 1.5us", 1, "1.5us is not a whole number of microseconds"),
    ("compute 5ms..1ms", 1, "compute: range 5ms..1ms runs backwards"),
    ("compute", 1, "compute: missing DURATION"),
    ("\n\nrepeat -3\nend", 3, "repeat: count must not be negative, got -3"),
    ("repeat 2.5\nend", 1, "repeat: count must be a whole number, got '2.5'"),
    ("compute 1ms\nrepeat 3\n  compute 1ms\n", 2, "repeat block is never closed (missing end)"),
    ("compute 1ms\nend", 2, "end without an open block"),
    ("forever\ncompute 1ms\nend\nend", 4, "end without an open block"),
    ("touch 10MB read", 1, "touch: unknown size unit 'MB' (sizes are binary: KiB, MiB, GiB)"),
    ("touch 10 read", 1, "touch: SIZE 10 needs a unit"),
    ("touch 0 pages", 1, "touch: SIZE must be positive"),
    ("touch 2MiB..1MiB", 1, "touch: range 2MiB..1MiB is empty or runs backwards"),
    ("touch 1MiB..3 pages", 1, "touch: both ends of range 1MiB..3 need the same unit"),
    ("touch 1..3 read", 1, "touch: range end 3 needs a unit"),
    ("touch 1MiB..2MiB at 4KiB", 1, "touch: at given with a range"),
    ("touch 0..2MiB at 4KiB", 1, "touch: at given with a range"),
    ("touch 1MiB at 100B", 1, "offset 100B is not a multiple of the 4096-byte page"),
    ("touch 1MiB random 3 sequential", 1, "touch: sequential and a random order conflict"),
    ("touch 1MiB sequential working-set 5%", 1, "touch: sequential and working-set conflict"),
    ("touch 1MiB at 0B at 4KiB", 1, "touch: at given twice"),
    ("halt 2ms..", 1, "halt: range 2ms.. needs both ends (like 1ms..5ms)"),
    ("touch 1MiB random 3 random 4", 1, "touch: random given twice"),
    ("touch 1MiB working-set 0%", 1, "working-set fraction must be above 0 and at most 1"),
    ("touch 1MiB write", 1, "missing CONTENT"),
    ("touch 1MiB write purple", 1, "unknown content 'purple'"),
    ("touch 1MiB write image nope", 1, "unknown image 'nope' (declare it first"),
    ("touch 1MiB write byte 256", 1, "byte value must be 0..255"),
    ("touch 1MiB write text hello", 1, "text needs a \"quoted string\", got 'hello'"),
    ('touch 1MiB write text "oops', 1, "unterminated string"),
    ('touch 1MiB write hex "abc"', 1, "hex pattern 'abc' must be pairs of hex digits"),
    ("touch 1MiB seed 3", 1, "touch: seed needs a random or working-set order"),
    ("touch 300MiB", 1, "touch: region ends at 300 MiB, past the VM's 256 MiB of memory"),
    ("read scsi0:1 4KiB at 0", 1, "read: unknown disk 'scsi0:1' (the VM has scsi0:0)"),
    ("read disk0 4KiB at 0", 1, "read: bad disk name 'disk0' (expected scsi0:0 style"),
    ("read scsi0:0 100B at 0", 1, "read: SIZE 100B is not a positive whole number of 512-byte sectors"),
    ("read scsi0:0 4KiB at -1", 1, "read: LBA must not be negative"),
    ("read scsi0:0 4KiB somewhere", 1, "read: expected at, random or next, got 'somewhere'"),
    ("read scsi0:0 4KiB random", 1, "read: random needs 'within SIZE'"),
    ("read scsi0:0 4KiB random within 1KiB", 1, "region 1KiB must be whole sectors and at least the I/O size"),
    ("write scsi0:0 4KiB at 0", 1, "write: missing CONTENT"),
    ("read scsi0:0 4KiB at 0 expect", 1, "read: missing CONTENT"),
    ("read scsi0:0 4KiB at 0 zero", 1, "read: unexpected 'zero'"),
    ("flush", 1, "flush: missing DISK"),
    ("weight 3", 1, "weight outside a choose block"),
    ("choose\ncompute 1ms\nend", 2, "choose: a statement before the first weight line"),
    ("choose\nend", 1, "choose has no weight branches"),
    ("choose\nweight 0\nend", 2, "weight must be positive, got 0"),
    ("for 0s\nend", 1, "for: the duration must be positive"),
    ("compute 1ms\nvcpu 0\nhalt 1ms", 2, "statements before the first vcpu section"),
    ("vcpu 0\ncompute 1ms\nvcpu 0\nhalt 1ms", 3, "vcpu 0 already has a section (at t.guest:1)"),
    ("vcpu x", 1, "vcpu: expected all or vCPU numbers like 0 or 0,2, got 'x'"),
    ("vcpu 0\nrepeat 2\nvcpu 1", 3, "vcpu section inside a repeat block (opened at t.guest:2, missing end)"),
    ("compute 1ms\nseed 3", 2, "seed must come before the first statement"),
    ("image a zero 2", 1, "image: zero fraction must be between 0 and 1"),
    ("image a\nimage a", 2, "image 'a' is declared twice (first at t.guest:1)"),
    ("mark", 1, "mark: missing NAME"),
    ('compute 1ms "x"', 1, "compute: unexpected 'x'"),
    ('halt 1ms # fine\nidle 2ms extra', 2, "idle: unexpected 'extra'"),
    ('touch 1MiB write text "\\q"', 1, "unknown escape \\q in a string"),
]


@pytest.mark.parametrize(("source", "line", "message"), ERRORS, ids=[e[2][:40] for e in ERRORS])
def test_every_mistake_is_one_line_with_file_and_line(source: str, line: int, message: str) -> None:
    with pytest.raises(GuestSyntaxError) as info:
        parse(source + "\n", "t.guest", disks=["scsi0:0"], memory_bytes=256 << 20)
    text = str(info.value)
    assert isinstance(info.value, HostsimError) and "\n" not in text
    assert text.startswith(f"t.guest:{line}: "), text
    assert message in text, text


WORDS = ["compute", "halt", "idle", "touch", "read", "write", "flush", "mark", "repeat", "forever", "for",
         "choose", "weight", "end", "vcpu", "all", "guest", "seed", "image", "at", "random", "next",
         "within", "from", "sequential", "working-set", "expect", "zero", "byte", "text", "hex", "scsi0:0",
         "scsi1:0", "1ms", "2", "0", "-1", "3us..9us", "5..1ms", "4KiB", "8", "pages", "sectors", "MB",
         "25%", "0.5", "2,3", '"ab"', '"x', "0xff", "300", "#", "base", "..", "µs", "1.5", "1min"]


class LooseDisks(Platform):
    """Accepts any LBA (a dict of sectors), so random programs only meet the guest's own checks."""

    def disk_write(self, vcpu: Any, disk: str, lba: int, data: bytes) -> Event:
        return self.engine.timeout(DISK_LATENCY)

    def disk_read(self, vcpu: Any, disk: str, lba: int, count: int) -> Event:
        return self.engine.timeout(DISK_LATENCY, bytes(count * 512))


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(st.lists(st.sampled_from(WORDS) | st.text(max_size=4), min_size=1, max_size=6),
                min_size=1, max_size=8))
def test_any_text_parses_or_fails_in_one_line_and_runs_or_fails_cleanly(lines: list[list[str]]) -> None:
    """Random lines of keywords, numbers and junk: parse either succeeds or raises a
    GuestSyntaxError of one line FILE:LINE:; what parses runs 20 ms on the engine, raising at
    most a GuestError (never another exception)."""
    source = "\n".join(" ".join(words) for words in lines)
    try:
        program = parse(source, "f.guest", disks=["scsi0:0", "scsi1:0"], memory_bytes=64 << 20)
    except GuestSyntaxError as exc:
        text = str(exc)
        assert "\n" not in text and text.startswith("f.guest:"), text
        assert text.split(":")[1].isdigit(), text
        return
    eng = Engine()
    plat = LooseDisks(eng)
    try:
        start(eng, program, plat, [0, 1, 2, 3])
        eng.run(until=20 * MS)
    except GuestError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("f.guest"), str(exc)


DUR = st.sampled_from(["1us", "50us", "1ms", "2ms..3ms", "1..9us", "0us"])
LEAF = st.one_of(
    st.builds("{} {}".format, st.sampled_from(["compute", "halt", "idle"]), DUR),
    st.builds("touch {} pages at {} pages {} {}".format, st.integers(1, 64), st.integers(0, 64),
              st.sampled_from(["", "random 5", "working-set 50%", "working-set 10% random 3", "random 2 seed 4"]),
              st.sampled_from(["", "read", "write zero", "write random", "write image base", 'write text "q"'])),
    st.builds("write scsi0:0 {} sectors {} {}".format, st.integers(1, 16),
              st.sampled_from(["at 7", "random within 1MiB", "next within 64KiB from 9", "random within 1MiB seed 2"]),
              st.sampled_from(["zero", "byte 3", 'hex "0102"', "random", "random seed 1", "image base"])),
    st.builds("read scsi0:0 {} sectors at {}".format, st.integers(1, 16), st.integers(0, 100)),
    st.sampled_from(["flush scsi0:0", "mark m"]),
)


def blocks(children: st.SearchStrategy[list[str]]) -> st.SearchStrategy[list[str]]:
    body = children.map(lambda lines: ["  " + line for line in lines])
    return st.one_of(
        st.builds(lambda n, b: [f"repeat {n}", *b, "end"], st.integers(0, 3), body),
        st.builds(lambda d, b: [f"for {d}", *b, "compute 1us", "end"], st.sampled_from(["1ms", "3ms"]), body),
        st.builds(lambda ws, bs: ["choose", *[x for w, b in zip(ws, bs, strict=False) for x in (f"weight {w}", *b)],
                                  "end"],
                  st.lists(st.sampled_from(["1", "2", "0.5"]), min_size=1, max_size=3), st.lists(body, min_size=3,
                                                                                               max_size=3)),
    )


def flat(groups: list[list[str]]) -> list[str]:
    return [line for group in groups for line in group]


BODY = st.recursive(st.lists(LEAF.map(lambda x: [x]), min_size=1, max_size=4).map(flat),
                    lambda inner: st.lists(blocks(inner) | LEAF.map(lambda x: [x]), min_size=1, max_size=3)
                    .map(flat), max_leaves=12)


@settings(max_examples=60, deadline=None, database=None)
@given(BODY, st.integers(0, 3))
def test_generated_programs_run_the_same_twice(body: list[str], seed: int) -> None:
    """Programs built from the grammar: they parse, run 30 ms on two vCPUs, and give the same
    trace and disk bytes for the same seed."""
    source = "image base seed 2 zero 50%\n" + "\n".join(body) + "\n"
    program = parse(source, "g.guest", disks=["scsi0:0"])
    a, la, _ = run("", program=program, vcpus=2, seed=seed, until=30 * MS)
    b, lb, _ = run("", program=program, vcpus=2, seed=seed, until=30 * MS)
    assert a.trace == b.trace and a.pages == b.pages and a.disks == b.disks and la == lb


def test_runtime_checks_against_the_platform_page_size_name_the_line() -> None:
    """Parsed for 4 KiB pages, run on 8 KiB pages: the 4 KiB offset is no longer page-aligned."""
    program = parse("compute 1ms\ntouch 1 pages at 4KiB\n", "t.guest")
    with pytest.raises(GuestRuntimeError, match=r"^t\.guest:2: offset 4KiB is not a multiple of the platform's 8192"):
        run("", program=program, platform_args={"page_size": 8192})


def test_files_that_cannot_be_read_or_decoded(tmp_path: Path) -> None:
    with pytest.raises(GuestError, match=r"missing\.guest: cannot read: No such file or directory$"):
        load(tmp_path / "missing.guest")
    bad = tmp_path / "bad.guest"
    bad.write_bytes(b"compute 1ms\nhalt 1ms \xff\n")
    with pytest.raises(GuestSyntaxError, match=r"bad\.guest:2: not UTF-8 text$"):
        load(bad)


def test_comments_blank_lines_and_strings_with_hash() -> None:
    src = '# header\n\n   # indented comment\nwrite scsi0:0 1 sectors at 0 text "a#b"  # trailing\n'
    plat, _, _ = run(src)
    assert plat.disks["scsi0:0"][:6] == b"a#ba#b"


# -- examples --------------------------------------------------------------------------------------


def example(name: str, **kw: Any) -> Program:
    return load(EXAMPLES / name, disks=["scsi0:0"], **kw)


def test_the_examples_folder_has_the_promised_workloads() -> None:
    names = {p.name for p in EXAMPLES.glob("*.guest")}
    assert {"cpu-hog.guest", "idle.guest", "toucher.guest", "shared-image.guest", "disk-writer.guest",
            "mixed.guest", "smp-idle-loop.guest"} <= names


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.guest")))
def test_every_example_parses_and_runs(name: str) -> None:
    program = example(name, memory_bytes=384 << 20)
    _, _, eng = run("", program=program, vcpus=2, until=2 * SECOND,
                    platform_args={"disks": {"scsi0:0": 64 << 20}})
    assert eng.now == 2 * SECOND


class PageTimes(Platform):
    """Records only (time, ppn) of each touch, in two arrays, and waits for nothing: cheap enough
    for the millions of touches of a 20-minute toucher run."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.times = array("q")
        self.ppns = array("q")
        self.done = engine.event()
        self.done.succeed()

    def touch(self, vcpu: Any, ppn: int, data: bytes | None) -> Event:
        self.times.append(self.engine.now)
        self.ppns.append(ppn)
        return self.done

    def between(self, lo: int, hi: int) -> set[int]:
        """Pages touched in [lo, hi) (the times are recorded in order, so bisect finds the slice)."""
        return set(self.ppns[bisect.bisect_left(self.times, lo):bisect.bisect_left(self.times, hi)])


def test_toucher_example_steps_50_250_50_mib() -> None:
    """Pages touched between the marks, above the 16 MiB (4096 pages) of background: 50 MiB,
    250 MiB, 50 MiB (12800, 64000, 12800 pages), each phase about 5, 5 and 10 minutes (a pass is
    one 20 s halt plus a compute); every page of a set is touched at least once per 30 s."""
    eng = Engine()
    plat = PageTimes(eng)
    log = GuestLog(history=True)
    start(eng, example("toucher.guest"), plat, [0], log=log)
    eng.run(until=21 * 60 * SECOND)
    marks = {m.name: m.time_us for m in log.marks}
    assert 300 * SECOND <= marks["step-up"] < 321 * SECOND
    assert marks["step-up"] + 300 * SECOND <= marks["step-down"] < marks["step-up"] + 321 * SECOND
    assert marks["step-down"] + 600 * SECOND <= marks["done"] < marks["step-down"] + 621 * SECOND
    bg = set(range(4096))
    assert plat.between(0, marks["step-up"]) == bg | set(range(4096, 4096 + 12800))
    assert plat.between(marks["step-up"], marks["step-down"]) == bg | set(range(4096, 4096 + 64000))
    assert plat.between(marks["step-down"], marks["done"]) == bg | set(range(4096, 4096 + 12800))
    for t in range(0, 20 * 60 * SECOND, 30 * SECOND):  # every 30 s window sees the whole background
        assert plat.between(t, t + 30 * SECOND) >= bg


def test_shared_image_example_makes_65_percent_of_40_mib_identical_across_vms() -> None:
    """26 MiB of 40 are the image's pages in both VMs, byte for byte; the other 14 MiB differ;
    about 12 % of the image (799 of 6656 pages expected) is zero."""
    a, _, _ = run("", program=example("shared-image.guest"), seed="vm1", until=SECOND)
    b, _, _ = run("", program=example("shared-image.guest"), seed="vm2", until=SECOND)
    same = [k for k in a.pages if a.pages[k] == b.pages[k]]
    assert len(a.pages) == 10240 and sorted(p for _, p in same) == list(range(26 * 256))
    zeros = sum(a.pages[(0, p)] == bytes(4096) for p in range(26 * 256))
    assert 700 <= zeros <= 900, zeros


def test_disk_writer_example_bytes_match_the_acknowledged_log() -> None:
    plat, log, _ = run("", program=example("disk-writer.guest"), until=SECOND)
    d = plat.disks["scsi0:0"]
    assert d[:25] == b"pyvmfs guest disk writer\n"
    assert d[2048 * 512:2048 * 512 + 8] == b"\xde\xad\xbe\xef" * 2
    marks = [m.name for m in log.marks]
    assert marks == ["header-written", "log-written"]
    expected = log.expected_sectors("scsi0:0")
    assert all(d[lba * 512:(lba + 1) * 512] == data for lba, data in expected.items())
    assert len(log.writes) > 256 + 3


def test_dry_run_reports_each_vcpus_demand() -> None:
    """smp-idle-loop for 10 s: vCPU 0 computes 1000 bursts of 10 ms (100 %), vCPU 1 spins in
    its idle loop as long; disk-writer: 3 + 256 writes and 2 flushes before the loop, then
    (write, flush, 10 ms halt) rounds, about 98 of them in the remaining second."""
    demand = dry_run(example("smp-idle-loop.guest"), vcpus=2, seconds=10)
    assert [(d.vcpu, d.compute_us, d.idle_us, d.halt_us, d.statements) for d in demand] == [
        (0, 10 * SECOND, 0, 0, 1001), (1, 0, 10 * SECOND, 0, 1001)]
    table = render(demand, 10).splitlines()
    assert table[0].split()[:5] == ["vcpu", "stmts", "%compute", "%halt", "%idle"]
    assert table[1].split()[:5] == ["0", "1001", "100.0", "0.0", "0.0"]
    w = dry_run(example("disk-writer.guest"), seconds=1, latency_us=500)[0]
    # header 3 writes + flush, 256 x (write 500 us + compute 50 us), flush: ~143 ms; then rounds of
    # write 500 + flush 500 + halt 10000 = 11 ms
    assert 3 + 256 + 70 <= w.disk_writes <= 3 + 256 + 80 and w.bytes_written >= (1 << 20) + 4096 + 65536 + 4096
    assert w.marks == 2 and w.flushes == 2 + (w.disk_writes - 259)


# -- cost ------------------------------------------------------------------------------------------


class InstantPlatform(Platform):
    """Every call returns one event the engine has already processed: what remains is the
    interpreter's own cost (the platform records nothing)."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.done = engine.event()
        self.done.succeed()
        engine.run()

    def compute(self, vcpu: Any, us: int) -> Event:
        return self.done

    halt = idle_loop = compute

    def touch(self, vcpu: Any, ppn: int, data: bytes | None) -> Event:
        return self.done

    def disk_read(self, vcpu: Any, disk: str, lba: int, count: int) -> Event:
        return self.done

    def disk_write(self, vcpu: Any, disk: str, lba: int, data: bytes) -> Event:
        return self.done


COST = """
repeat 40000
    compute 1ms..2ms
    choose
    weight 1
        halt 100us
    weight 1
        idle 100us
    end
    read scsi0:0 4KiB random within 1MiB
    write scsi0:0 4KiB next within 1MiB zero
end
"""


def test_interpreter_cost_per_statement() -> None:
    """Statements per wall second with a platform that costs nothing (printed; the bound is loose
    because the machine is shared), and on the engine with real timeouts."""
    eng = Engine()
    plat = InstantPlatform(eng)
    runs = start(eng, parse(COST, "cost.guest"), plat, [0])
    t0 = time.perf_counter()
    eng.run()
    wall = time.perf_counter() - t0
    n = runs[0].statements
    assert n == 40000 * 5 + 1
    per = wall / n * 1e6
    eng2 = Engine()
    plat2 = Platform(eng2)
    plat2.trace = _NoTrace()
    runs2 = start(eng2, parse(COST.replace("40000", "10000"), "cost.guest"), plat2, [0])
    t1 = time.perf_counter()
    eng2.run()
    wall2 = time.perf_counter() - t1
    n2 = runs2[0].statements
    print(f"\ninterpreter alone: {n / wall:,.0f} statements/s ({per:.2f} us/statement); "
          f"with engine timeouts: {n2 / wall2:,.0f} statements/s ({wall2 / n2 * 1e6:.2f} us/statement)")
    assert per < 20


@pytest.mark.parametrize("content", ["read", "write zero", "write random", "write random seed 1",
                                     "write image base"])
def test_touch_cost_per_page(content: str) -> None:
    """Pages touched per wall second for each kind of content (printed), with a platform that
    waits for nothing: the part of a toucher's cost the interpreter adds."""
    eng = Engine()
    plat = InstantPlatform(eng)
    program = parse(f"image base\nrepeat 4\ntouch 40MiB {content}\nend\n", "cost.guest")
    runs = start(eng, program, plat, [0])
    t0 = time.perf_counter()
    eng.run()
    wall = time.perf_counter() - t0
    assert runs[0].touches == 4 * 10240
    print(f"\ntouch {content}: {runs[0].touches / wall:,.0f} pages/s ({wall / runs[0].touches * 1e6:.2f} us/page)")
    assert wall / runs[0].touches < 200e-6


class _NoTrace(list):  # type: ignore[type-arg]
    def append(self, _: object) -> None:
        pass
