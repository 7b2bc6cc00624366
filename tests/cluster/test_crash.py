"""Crash safety: a writer host loses power at 200 points of a metadata-heavy workload (torn
writes included); another host breaks its locks, replays its journal and takes over.  Afterwards
the tree is what the acknowledged operations made it (the operation in flight either fully done
or not at all), every fsync'ed byte is there, and no resource is leaked or doubly allocated."""

from __future__ import annotations

import random

import pytest

from tests.cluster.conftest import host
from tests.helpers import user_tree
from vmfs.cluster.attachment import HostAttachment
from vmfs.cluster.host import ManualClock
from vmfs.device import MemoryDevice, OverlayDevice
from vmfs.device.fault import FaultDevice, PowerCut
from vmfs.errors import DeviceError, VolumeLostError
from vmfs.mkfs import MkfsOptions, format_volume
from vmfs.volume.slots import read_slots
from vmfs.volume.usage import marked_used, referenced_resources
from vmfs.write.posix import WritableFileSystem

pytestmark = pytest.mark.crash


def fresh_base() -> MemoryDevice:
    dev = MemoryDevice(1 << 30)
    format_volume([dev], MkfsOptions(label="crash", creation_time_us=1_700_000_000_000_000))
    return dev


def workload(fs: WritableFileSystem, model: dict, done: list) -> None:
    """Metadata-heavy operations; ``model`` always holds the state after the last finished one
    and ``done`` the list of finished steps (the next one is the one in flight)."""
    rng = random.Random(7)

    def step(name, apply):  # type: ignore[no-untyped-def]
        model["next"] = apply(dict(model["tree"]))
        name()
        model["tree"] = model["next"]
        done.append(name.__name__ if hasattr(name, "__name__") else "op")

    for d in ("/a", "/b", "/a/c"):
        step(lambda d=d: fs.mkdir(d), lambda t, d=d: {**t, d: None})
    for i in range(12):
        path = f"/{'ab'[i % 2]}/f{i}"
        data = bytes([65 + i]) * rng.choice([10, 900, 5000, 9000, 1 << 20])

        def fill(path=path, data=data):  # type: ignore[no-untyped-def]
            address = fs.resolve(path).address
            fs.write(address, 0, data)
            fs.fsync(address)

        step(lambda path=path: fs.create(path), lambda t, path=path: {**t, path: b""})
        step(fill, lambda t, path=path, data=data: {**t, path: data})
    for i in range(0, 12, 3):
        src = f"/{'ab'[i % 2]}/f{i}"
        dst = f"/a/c/moved{i}"
        step(
            lambda s=src, d=dst: fs.rename(s, d),
            lambda t, s=src, d=dst: {**{k: v for k, v in t.items() if k != s}, d: t[s]},
        )
    for i in (1, 4, 7):
        p = f"/{'ab'[i % 2]}/f{i}"
        step(lambda p=p: fs.unlink(p), lambda t, p=p: {k: v for k, v in t.items() if k != p})
    for i in (2, 5, 8):
        p = f"/{'ab'[i % 2]}/f{i}"

        def trunc(p=p):  # type: ignore[no-untyped-def]
            fs.truncate(fs.resolve(p).address, 3)

        step(trunc, lambda t, p=p: {**t, p: t[p][:3]})
    step(lambda: fs.mkdir("/b/d"), lambda t: {**t, "/b/d": None})


def run_until_cut(
    base: MemoryDevice, cut: int | None, *, volatile: bool = False
) -> tuple[OverlayDevice, dict, list, int]:
    disk = OverlayDevice(base)
    fault = FaultDevice(disk, cut_after=cut, tear=True, seed=cut or 0, volatile=volatile)
    clock = ManualClock()
    model = {"tree": {}, "next": {}}
    done: list = []
    vol = None
    try:
        vol = HostAttachment.from_devices([fault], host=host(1, clock))
        workload(WritableFileSystem(vol), model, done)
        vol.close()
    except (PowerCut, VolumeLostError, DeviceError):
        if vol is not None and vol.heartbeat is not None:
            vol.heartbeat.stop()
    return disk, model, done, fault.writes


@pytest.fixture(scope="module")
def base() -> MemoryDevice:
    return fresh_base()


@pytest.mark.parametrize("volatile", [False, True], ids=["in-order", "volatile-cache"])
def test_crash_at_200_points(base: MemoryDevice, volatile: bool) -> None:
    """``volatile-cache``: what was written since the last flush may also be lost or reverted
    sector by sector, as with a disk's write cache; operations that returned must still hold."""
    _, model, done, total = run_until_cut(base, None)
    assert total > 300 and len(done) > 20
    rng = random.Random(2026 + volatile)
    cuts = sorted(rng.sample(range(total), 200))
    for cut in cuts:
        disk, model, done, _ = run_until_cut(base, cut, volatile=volatile)
        clock = ManualClock()
        survivor = HostAttachment.from_devices([disk], host=host(2, clock))
        clock.advance(25)  # the dead host's lease runs out; the survivor's heartbeat reaper recovers it
        assert [s.slot for s in read_slots(survivor.volume) if s.in_use] == [survivor.heartbeat.slot], cut
        fs = WritableFileSystem(survivor)
        got = user_tree(fs)
        assert got in (model["tree"], model["next"]), f"cut after write {cut}: tree is neither before nor after"
        refs, used = referenced_resources(survivor.volume), marked_used(survivor.volume)
        for kind in used:
            assert refs[kind] == used[kind], f"cut {cut}: resource type {kind} leaked/unaccounted"
        # the survivor can keep working on the recovered volume
        fs.write_file("/after-crash", b"survivor")
        survivor.close()
