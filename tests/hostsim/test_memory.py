"""The memory manager's mechanisms one by one: real bytes through sharing and swap, copy on
write, false hash matches, hints, the balloon's pace and ceiling, compact storage, power-off,
admission in both modes, determinism, and bad input (one-line HostsimError subclasses)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from hostsim.errors import HostsimError
from hostsim.vmkernel.engine import MS, SECOND, Engine
from hostsim.vmkernel.memory import (
    MemAdmissionError,
    MemConfigError,
    MemCounters,
    MemoryManager,
    MemorySwap,
    mem_shares,
    min_funding_targets,
    overhead_mb,
)
from hostsim.vmkernel.memory.shares import Client

ROOT = Path(__file__).resolve().parents[2]
PAGE = 4096


def page(tag: int) -> bytes:
    """A page whose contents name ``tag`` (distinct tags, distinct pages)."""
    return tag.to_bytes(8, "little") * (PAGE // 8)


class ListSwap:
    """A test swap backing over a bytearray (the contract's SwapBacking: size, write, read)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.buf = bytearray(size)
        self.writes = 0

    def write(self, offset: int, data: bytes) -> None:
        self.buf[offset:offset + len(data)] = data
        self.writes += 1

    def read(self, offset: int, length: int) -> bytes:
        return bytes(self.buf[offset:offset + length])


# -- contents: swap, sharing, copy on write ------------------------------------------------------


def test_swapped_pages_are_real_bytes_read_back_with_a_wait() -> None:
    """A 4 MB VM held to 2 MB by a limit with no balloon driver: half its pages go to the swap
    backing as their own bytes; touching one reads it back, costs the swap-in wait, and the
    contents are what the guest wrote."""
    engine = Engine(1)
    mem = MemoryManager(engine, 512, seed=1, share_scan_vm=0, swap_in_us=7 * MS)
    backing = ListSwap(4 * 2**20)
    vm = mem.power_on("vm", max_mb=4, swap=backing, balloon=False, limit_mb=2)
    for ppn in range(vm.pages):
        assert vm.touch(ppn, page(ppn + 1)) == 0
    engine.run(until=3 * SECOND)
    c = vm.counters()
    assert c.grant_mb == 2 and c.swcur_mb == 2 and c.sww_pages == 512 == backing.writes
    swapped = sorted(vm.swap.swapped)
    assert len(swapped) == 512 and swapped != list(range(512, 1024))  # random victims, not a range
    for ppn in swapped[:5]:
        slot = vm.swap.swapped[ppn]
        assert backing.buf[slot * PAGE:(slot + 1) * PAGE] == page(ppn + 1)
        assert vm.read_page(ppn) == page(ppn + 1)  # inspection does not swap in
    victim = swapped[0]
    assert vm.touch(victim) == 7 * MS
    assert vm.read_page(victim) == page(victim + 1) and victim not in vm.swap.swapped
    c2 = vm.counters()
    assert c2.swr_pages == 1 and c2.swap_wait_us == 7 * MS and c2.grant_mb == 2 + PAGE / 2**20


def test_sharing_copy_on_write_keeps_each_guests_contents() -> None:
    """Two VMs write the same bytes (different objects) at page 0: the scanner merges them into
    one frame (machine memory falls by a page); a write by one VM gives it a private copy, the
    frame's refcount drops to 1 and the other VM still reads the old bytes."""
    engine = Engine(2)
    mem = MemoryManager(engine, 512, seed=2)
    a = mem.power_on("a", max_mb=1)
    b = mem.power_on("b", max_mb=1)
    a.touch(0, bytearray(page(7)))
    b.touch(0, bytes(bytearray(page(7))))
    used = mem.machine.used
    engine.run(until=30 * SECOND)  # 50 pages/s over one resident page each: scanned at once
    frame = a.pmap[0]
    assert frame is b.pmap[0] and frame.refs == 2 and mem.machine.used == used - 1
    assert a.counters().shared_mb == b.counters().shared_mb == PAGE / 2**20
    assert b.touch(0, page(8)) == 0
    assert frame.refs == 1 and a.pmap[0] is frame and b.pmap[0] == page(8)
    assert a.read_page(0) == page(7) and b.read_page(0) == page(8)
    assert mem.machine.used == used  # the copy took a page back
    a.touch(0, page(9))  # the last mapping breaks too: the frame is freed
    assert mem.counters().pshare_common_mb == 0 and mem.machine.used == used


def test_false_hash_matches_never_merge_different_contents() -> None:
    """With a hash that maps every page to 0, equal pages still merge (confirmed by full
    compare) and different ones never do; the scanner counts the false matches."""
    engine = Engine(3)
    mem = MemoryManager(engine, 512, seed=3, hash_fn=lambda data: 0)
    vms = [mem.power_on(f"vm{i}", max_mb=1) for i in range(3)]
    for i, vm in enumerate(vms):
        vm.touch(0, page(100))          # the same everywhere
        vm.touch(1, page(200 + i))      # different everywhere
    engine.run(until=60 * SECOND)
    assert all(vm.pmap[0] is vms[0].pmap[0] for vm in vms)
    assert all(isinstance(vm.pmap[1], bytes) for vm in vms)
    assert [vm.read_page(1) for vm in vms] == [page(200), page(201), page(202)]
    assert mem.counters().pshare_false_matches > 0 and mem.counters().pshare_common_mb == PAGE / 2**20


def test_a_hint_whose_page_changed_is_not_shared() -> None:
    """A page left as a hint and then rewritten is stale: a later page equal to its old
    contents does not merge with it (the hint is re-hashed first, W02), it becomes the hint."""
    engine = Engine(4)
    mem = MemoryManager(engine, 512, seed=4, start=False)
    a = mem.power_on("a", max_mb=1)
    b = mem.power_on("b", max_mb=1)
    a.touch(0, page(1))
    mem.sharer.scan(a, 1)
    assert 0 in a.hints
    a.touch(0, page(2))              # changed after hinting
    b.touch(0, page(1))
    mem.sharer.scan(b, 1)
    assert isinstance(a.pmap[0], bytes) and isinstance(b.pmap[0], bytes)
    assert 0 not in a.hints and 0 in b.hints


def test_untouched_memory_costs_nothing_and_zero_pages_are_one_object() -> None:
    """A 1 GB VM holds no machine page until touched; 10,000 zero-page writes are the one zero
    object (no 4 KiB each) and still share as zero pages."""
    engine = Engine(5)
    mem = MemoryManager(engine, 4096, seed=5, start=False)
    vm = mem.power_on("big", max_mb=1024)
    assert mem.machine.used == 0 and vm.read_page(12345) == bytes(PAGE)
    for ppn in range(10_000):
        vm.touch(ppn, bytearray(PAGE))
    assert mem.machine.used == 10_000
    assert len({id(vm.pmap[p]) for p in range(10_000)}) == 1
    mem.sharer.scan(vm, 60_000)  # random picks: about e^-6 of the pages are never picked
    assert mem.counters().pshare_common_mb == PAGE / 2**20 and mem.machine.used < 100


def test_power_off_gives_everything_back() -> None:
    """After a VM with shared, swapped and ballooned pages powers off, machine memory, swap and
    reservations are as before it powered on."""
    engine = Engine(6)
    mem = MemoryManager(engine, 1024, seed=6, page_size=65536)
    before = mem.counters()
    a = mem.power_on("a", max_mb=64, limit_mb=16)
    b = mem.power_on("b", max_mb=64)
    for ppn in range(a.pages):
        a.touch(ppn, bytes(65536) if ppn % 2 else page(ppn) * 16)
        b.touch(ppn, bytes(65536))
    engine.run(until=20 * SECOND)
    assert a.counters().mctl_sz_mb > 0 and a.counters().swcur_mb >= 0
    mem.power_off(a)
    mem.power_off(b)
    after = mem.counters()
    assert (after.free_mb, after.reserved_mb, after.swap_reserved_mb, after.pshare_shared_mb) == \
        (before.free_mb, before.reserved_mb, before.swap_reserved_mb, 0)
    assert mem.machine.used == 0 and not mem.sharer.table
    with pytest.raises(MemConfigError, match=r"^a: powered off$"):
        a.touch(0)


def test_memory_exhausted_with_nothing_to_swap_is_one_line() -> None:
    """A VM whose swap backing is full (0 bytes here) cannot be paged out: once machine memory
    is gone, the next new page is refused with a one-line MemExhaustedError."""
    mem = MemoryManager(Engine(10), 24 + 192 + 54 + 8, seed=10, start=False, share_scan_vm=0)
    vm = mem.power_on("vm", max_mb=64, swap=MemorySwap(0))
    with pytest.raises(HostsimError) as info:
        for ppn in range(vm.pages):
            vm.touch(ppn, page(ppn + 1))
    assert str(info.value) == "vm: machine memory exhausted and nothing left to swap"
    assert mem.machine.free == 0 and vm.counters().grant_mb == 8


# -- balloon -------------------------------------------------------------------------------------


def test_balloon_polls_once_a_second_at_its_rate_up_to_its_ceiling() -> None:
    """Limit 16 MB on a 256 MB VM, all touched: the driver pins 16 MB per 1 s poll (its rate)
    and stops at its ceiling, 128 MB in ESX 2.x mode; the rest is swapped."""
    engine = Engine(7)
    mem = MemoryManager(engine, 2048, seed=7, page_size=65536, share_scan_vm=0)
    vm = mem.power_on("vm", max_mb=256, limit_mb=16)
    for ppn in range(vm.pages):
        vm.touch(ppn)
    sizes = []
    for t in range(1, 11):
        engine.run(until=t * SECOND + 1)
        sizes.append(vm.counters().mctl_sz_mb)
    assert sizes[:8] == [16.0 * k for k in range(1, 9)] and sizes[8:] == [128.0, 128.0]
    c = vm.counters()
    assert c.mctl_max_mb == 128 and c.grant_mb == 16 and c.swcur_mb == 256 - 128 - 16
    assert overhead_mb(256) == 54 and mem_shares("normal", 256) == 2560 == c.shares


@pytest.mark.parametrize(("mode", "vms", "per_vm"), [("esx2", 2, 50), ("esx2", 8, 25), ("esx4", 2, 19)])
def test_share_scanner_rate_caps(mode: str, vms: int, per_vm: int) -> None:
    """ESX 2.x: 50 pages/s per VM, 200 pages/s in all (8 VMs get 25 each).  ESX 4: a whole VM
    per 60 min (256 MB = 65536 pages: ceil(65536 / 3600) = 19 pages/s), under the total of
    4 MB/s per GHz (4 GHz: 4096 pages/s)."""
    engine = Engine(11)
    mem = MemoryManager(engine, 8192, mode=mode, seed=11)
    for i in range(vms):
        vm = mem.power_on(f"vm{i}", max_mb=256)
        for ppn in range(100):
            vm.touch(ppn, page(ppn))
    engine.run(until=10 * SECOND + 1)
    assert mem.counters().pshare_scanned_pages == 10 * vms * per_vm


def test_min_holds_under_pressure_and_shares_split_the_rest() -> None:
    """Three fully active 256 MB VMs (65536 pages each) with room for 400 MB (102400 pages): the
    one with min 200 MB and low shares keeps its min; the other two (high and normal shares: 2:1
    per page when both are fully active) split the rest 2:1; 0 shares pins a VM at its min."""
    mb = 256
    clients = [Client("floor", mem_shares("low", 256), 200 * mb, 256 * mb, 256 * mb),
               Client("high", mem_shares("high", 256), 0, 256 * mb, 256 * mb),
               Client("normal", mem_shares("normal", 256), 0, 256 * mb, 256 * mb)]
    t = min_funding_targets(clients, 400 * mb, 0.75)
    assert t["floor"] == 200 * mb and abs(sum(t.values()) - 400 * mb) <= 2
    assert abs(t["high"] / t["normal"] - 2) < 0.001
    pinned = min_funding_targets([Client("zero", 0, 10 * mb, 256 * mb, 0), *clients[1:]], 300 * mb, 0.75)
    assert pinned["zero"] == 10 * mb and abs(pinned["high"] - 2 * pinned["normal"]) <= 2
    idle_host = min_funding_targets([Client("zero", 0, 10 * mb, 256 * mb, 0), *clients[1:]], 9999 * mb, 0.75)
    assert idle_host == {"zero": 10 * mb, "high": 256 * mb, "normal": 256 * mb}  # even when memory is free


def test_zero_shares_pin_a_vm_at_its_min_on_a_free_host() -> None:
    """ESX 2.x: a VM with 0 shares is held at its min even when memory is free."""
    engine = Engine(13)
    mem = MemoryManager(engine, 4096, seed=13, page_size=65536, share_scan_vm=0)
    vm = mem.power_on("pinned", max_mb=256, min_mb=64, shares=0)
    for ppn in range(vm.pages):
        vm.touch(ppn)
    engine.run(until=30 * SECOND)
    c = vm.counters()
    assert mem.counters().state == "high" and c.sztgt_mb == 64 and c.grant_mb == 64
    assert c.mctl_sz_mb == 128 and c.swcur_mb == 64  # balloon to its ceiling, the rest swapped


# -- admission -----------------------------------------------------------------------------------


def test_admission_esx4_checks_the_vms_own_swap_file() -> None:
    """ESX 4 mode: no host swap pool; the VM's swap backing must hold max - min, and the
    overhead comes from the 4.0 table (113.17 MB for 256 MB, 1 vCPU)."""
    mem = MemoryManager(Engine(8), 1024, mode="esx4", seed=8, start=False)
    with pytest.raises(MemAdmissionError) as info:
        mem.power_on("small", max_mb=256, min_mb=64, swap=MemorySwap(100 * 2**20))
    assert info.value.reason == "insufficient swap"
    assert str(info.value) == ("small: insufficient swap: the swap file needs max - min = 192 MB, "
                               "its backing holds 100 MB")
    vm = mem.power_on("ok", max_mb=256, min_mb=64, swap=MemorySwap(192 * 2**20))
    assert vm.counters().ovhd_mb == 113.17 and mem.counters().swap_reserved_mb == 0
    assert overhead_mb(2048, 2, "esx4") == 198.2 and overhead_mb(2048, 1) == 102.0


# -- determinism -----------------------------------------------------------------------------------


SCENARIO = """
import random
from hostsim.vmkernel.engine import SECOND, Engine
from hostsim.vmkernel.memory import MemoryManager

def run(seed):
    engine = Engine(seed)
    mem = MemoryManager(engine, 750, seed=seed, page_size=16384)
    vms = [mem.power_on(f"vm{i}", max_mb=192, min_mb=32, balloon=i != 1) for i in range(3)]
    image = [random.Random(p).randbytes(16) * 1024 for p in range(64)]
    def guest(vm, rng):
        while True:
            delay = 0
            for _ in range(40):
                ppn = rng.randrange(vm.pages)
                if vm.is_ballooned(ppn):
                    continue
                delay += vm.touch(ppn, image[ppn % 64] if rng.random() < 0.5 else None)
            yield engine.timeout(100_000 + delay)
    for i, vm in enumerate(vms):
        engine.process(guest(vm, random.Random(seed * 10 + i)))
    lines = []
    for t in range(10, 181, 10):
        engine.run(until=t * SECOND)
        lines.append(repr(mem.counters()))
        lines += [repr(vm.counters()) for vm in vms]
    return "\\n".join(lines)
"""


def test_same_seed_gives_byte_identical_counters_across_interpreters() -> None:
    """A 3-VM overcommitted run (sharing, ballooning, swapping) dumps the same counters twice in
    one interpreter and in a fresh one with another hash seed; another seed gives other counters."""
    namespace: dict = {}
    exec(SCENARIO, namespace)  # our own scenario text, shared with the subprocess
    first = namespace["run"](42)
    assert first == namespace["run"](42)
    assert first != namespace["run"](43)
    script = SCENARIO + "\nimport sys\nsys.stdout.write(run(42))\n"
    env = dict(os.environ, PYTHONHASHSEED="12345", PYTHONPATH=str(ROOT))
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                           check=True, cwd=ROOT).stdout
    assert other == first
    lines = first.splitlines()
    assert any("mctl_sz_mb=0.0," not in line for line in lines if line.startswith("MemCounters"))  # ballooned
    assert any("swcur_mb=0.0," not in line for line in lines if line.startswith("MemCounters"))  # swapped
    assert any("pshare_shared_mb=0.0," not in line for line in lines if line.startswith("Host"))  # shared


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("call", "message"), [
    (lambda m: m.power_on("x", max_mb=128, min_mb=256), "x: min 256 MB is above max 128 MB"),
    (lambda m: m.power_on("x", max_mb=-1), "x: max: -1 MB must be above 0"),
    (lambda m: m.power_on("x", max_mb=64, min_mb=-5), "x: min: -5 MB must be at least 0"),
    (lambda m: m.power_on("x", max_mb=64, overhead_mb=-2), "overhead: -2 MB must be at least 0"),
    (lambda m: m.power_on("x", max_mb="64"), "x: max: '64' is not a size in MB"),
    (lambda m: m.power_on("x", max_mb=64, shares=-1), "x: shares -1 must be an integer of at least 0"),
    (lambda m: m.power_on("x", max_mb=64, limit_mb=8, min_mb=16), "x: limit 8 MB is below min 16 MB"),
    (lambda m: m.set_idle_tax(1.0), "idle memory tax 1.0: must be in [0, 1)"),
    (lambda m: m.power_on("x", max_mb=64).touch(64 * 256), "x: page 16384 is outside its 16384 pages"),
    (lambda m: m.power_on("x", max_mb=64).touch(0, b"short"), "x: a page write is 4096 bytes, not 5"),
    (lambda m: overhead_mb(256, 3), "vcpus: ESX 2.x runs 1 or 2 vCPUs per VM, not 3"),
    (lambda m: MemoryManager(Engine(), 100), "machine memory 100 MB leaves nothing beyond VMkernel and console"),
    (lambda m: MemoryManager(Engine(), 1024, mode="esx9"), "mode: 'esx9' is neither 'esx2' nor 'esx4'"),
    (lambda m: MemoryManager(Engine(), 1024, page_size=3000), "page_size: 3000 is not a power of two of at least 512"),
])
def test_bad_input_is_a_one_line_hostsim_error(call, message) -> None:  # type: ignore[no-untyped-def]
    mem = MemoryManager(Engine(9), 1024, seed=9, start=False)
    with pytest.raises(HostsimError) as info:
        call(mem)
    assert str(info.value) == message and "\n" not in str(info.value)
    assert isinstance(info.value, MemConfigError)


def test_counters_carry_the_contract_names() -> None:
    names = {f for f in MemCounters.__dataclass_fields__}
    assert {"memsz_mb", "grant_mb", "sztgt_mb", "tchd_mb", "active_pct", "mctl_sz_mb", "mctl_tgt_mb",
            "mctl_max_mb", "swcur_mb", "swtgt_mb", "swr_pages", "sww_pages", "shared_mb", "ovhd_mb"} <= names
    host = MemoryManager(Engine(), 1024, seed=1, start=False).counters()
    assert host.state == "high" and host.balloon_mb == 0 and host.swap_used_mb == 0
    assert random.Random(1).random() == random.Random(1).random()
