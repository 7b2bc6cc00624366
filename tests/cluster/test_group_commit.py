"""Group commit (vmfs.cluster.batch) between hosts and against the allocator.

- What a host's open batch changed is visible to that host at once and to other hosts only once
  the batch commits; a commit is one journal record for the whole batch.
- A lock the batch holds reaches a waiting host within the batch interval plus the lock-keeping
  bound of vmfs/cluster/locks.py (idle holder: ``keep_idle`` + a sweep; busy holder: ``keep_max``
  + one transaction + the waiter's pause), since the batch gives its locks back when it commits.
- Resources the batch freed are not handed out again before it commits, and an allocation that
  finds only those commits the batch and gets them (no ENOSPC while space is merely waiting).
- A file created in a batch has its lock born held: opening it takes no test-and-set.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tests.cluster.conftest import host, mount
from tests.cluster.test_lock_keeping import _CountingAts, _lock, _names
from vmfs.cluster.host import Clock, ManualClock
from vmfs.cluster.locks import KEEP_IDLE, KEEP_MAX, POLL_BUSY, lock_sites
from vmfs.ondisk import resource as R
from vmfs.ondisk.lock import LOCK_FREE, parse_lock
from vmfs.volume.usage import marked_used, referenced_resources
from vmfs.volume.volume import Volume
from vmfs.write.posix import WritableFileSystem

MIB = 1 << 20


def test_a_batch_is_seen_by_its_host_at_once_and_by_others_when_it_commits(image: Path) -> None:
    clock = ManualClock()
    with mount(image, host(1, clock, keep_locks=KEEP_IDLE)) as a:
        a.group_commit(10.0)
        fs = WritableFileSystem(a)
        fs.mkdir("/g")
        journal = a.journal
        assert journal is not None
        before = journal.sequence
        for i in range(40):
            fs.write_file(f"/g/f{i}", b"%d" % i * 50)
        assert {e.name for e in fs.listdir("/g")} - {".", ".."} == {f"f{i}" for i in range(40)}
        assert a.volume.reader(fs.resolve("/g/f7")).read(0, 100) == b"7" * 50
        assert journal.sequence == before, "nothing committed before the interval or a sync"
        assert "g" not in _names(image, "/"), "another reader sees the batch before it commits"
        fs.sync()
        assert journal.sequence == before + 1, "the whole batch is one journal commit"
        assert a.batched_transactions >= 80
        assert _names(image, "/g") == {f"f{i}" for i in range(40)}
        clock.advance(0.1)  # the kept locks go back
    with Volume.open(image) as vol:
        held = [hex(o) for o in lock_sites(vol) if parse_lock(vol.device.read(o, 512)).mode != LOCK_FREE]
        assert not held, f"locks still held after a clean close: {held}"
        refs, used = referenced_resources(vol), marked_used(vol)
        assert all(refs[k] == used[k] for k in used)


def test_the_interval_commits_a_batch_on_its_own(image: Path) -> None:
    clock = ManualClock()
    with mount(image, host(1, clock, keep_locks=KEEP_IDLE)) as a:
        a.group_commit(0.2)
        fs = WritableFileSystem(a)
        fs.create("/timed")
        assert a.batch_open and "timed" not in _names(image, "/")
        clock.advance(0.25)
        assert not a.batch_open and "timed" in _names(image, "/")


def test_a_new_files_lock_is_born_held(image: Path) -> None:
    clock = ManualClock()
    with mount(image, host(1, clock, keep_locks=KEEP_IDLE)) as a:
        a.group_commit(10.0)
        fs = WritableFileSystem(a)
        fs.mkdir("/n")
        fs.sync()
        ats = _CountingAts(fs)
        fd = fs.create("/n/new")
        fs.open_file(fd.address, write=True)
        fs.write(fd.address, 0, b"hello")
        fs.close_file(fd.address, write=True)
        assert ats.n == 0, f"{ats.n} test-and-sets for a file created and opened in the batch"
        fs.sync()
        assert _lock(fs, "/n/new").owner == a.host.uuid  # on disk, held by us as it was born
        clock.advance(0.1)  # idle: the sweep gives it back
        assert _lock(fs, "/n/new").mode == LOCK_FREE
        # idle while its block is still only in the batch: the sweep leaves it (giving it back
        # would commit the batch from the keeper, under the lock manager's mutex) until the commit
        fs.create("/n/late")
        clock.advance(0.1)
        assert a.batch_open, "the sweep committed the batch"
        fs.sync()
        assert _lock(fs, "/n/late").owner == a.host.uuid
        clock.advance(0.1)
        assert _lock(fs, "/n/late").mode == LOCK_FREE
    assert _names(image, "/n") == {"new", "late"}


def _blocks(fs: WritableFileSystem, path: str) -> set[int]:
    """The volume's 1 MiB units a file's data lies in."""
    out: set[int] = set()
    for _, length, where in fs.volume.reader(fs.resolve(path)).extents(0, 4 * MIB):
        if where is not None:
            out.update(range(where // MIB, (where + length - 1) // MIB + 1))
    return out


def test_blocks_freed_in_the_batch_wait_for_its_commit(image: Path) -> None:
    clock = ManualClock()
    with mount(image, host(1, clock, keep_locks=KEEP_IDLE)) as a:
        a.group_commit(10.0)
        fs = WritableFileSystem(a)
        fs.write_file("/old", b"o" * (4 * MIB))
        fs.sync()
        old_blocks = _blocks(fs, "/old")
        fs.unlink("/old")
        fs.write_file("/new", b"n" * (4 * MIB))
        assert not old_blocks & _blocks(fs, "/new"), "a freed block was reused in its batch"
        assert a.batch_open
    with Volume.open(image) as vol:
        refs, used = referenced_resources(vol), marked_used(vol)
        assert all(refs[k] == used[k] for k in used)


def test_space_held_back_by_the_batch_is_no_enospc(image: Path) -> None:
    """The volume's file descriptors nearly all in use; ten files are removed and twelve made in
    the same batch: the last ones can only have FDs the batch freed, so it commits for them."""
    clock = ManualClock()
    with mount(image, host(1, clock, keep_locks=KEEP_IDLE)) as a:
        a.group_commit(10.0)
        fs = WritableFileSystem(a)
        fs.mkdir("/full")
        spare = 3
        n = a.allocators[R.RES_FD].free_count - spare
        for i in range(n):
            fs.create(f"/full/f{i}")
        fs.sync()
        for i in range(10):
            fs.unlink(f"/full/f{i}")
        before = a.batches_committed
        for i in range(12):
            fs.create(f"/full/g{i}")
        assert a.batches_committed == before + 1, "the creates committed the batch to get the freed FDs"
        fs.sync()
    assert _names(image, "/full") == {f"f{i}" for i in range(10, n)} | {f"g{i}" for i in range(12)}


def test_an_idle_holders_batch_gives_its_lock_to_a_waiter_in_time(image: Path) -> None:
    """Simulated time: host 1's batch holds /shared's lock; host 2's create waits for the batch
    to commit (its interval) and for the kept lock to go back (keep_idle + a sweep)."""
    clock = ManualClock()
    interval = 0.2
    first, second = (host(n, clock, keep_locks=KEEP_IDLE) for n in (1, 2))
    with mount(image, first) as a, mount(image, second) as b:
        a.group_commit(interval)
        fa, fb = WritableFileSystem(a), WritableFileSystem(b)
        fa.mkdir("/shared")
        fa.sync()  # host 2 finds the directory only once it is on disk
        fa.create("/shared/from-a")
        start = clock.monotonic_us()
        fb.create("/shared/from-b")
        waited = (clock.monotonic_us() - start) / 1e6
        bound = interval + KEEP_IDLE + 3 * (2 * POLL_BUSY)
        print(f"host 2 waited {waited * 1000:.0f} ms of simulated time (bound {bound * 1000:.0f} ms)")
        assert 0 < waited <= bound
    assert _names(image, "/shared") == {"from-a", "from-b"}


def test_a_busy_holders_batch_gives_its_lock_to_a_waiter_in_time(image: Path) -> None:
    """Real time: host 1 creates and removes files in /busy without a pause, batching them;
    host 2's create there gets the directory within keep_max + the interval + a transaction +
    its poll pause (allowance: 1.5 s above keep_max + interval, for a loaded machine)."""
    interval = 0.05
    with mount(image, host(1, Clock())) as a, mount(image, host(2, Clock())) as b:
        a.group_commit(interval)
        fa, fb = WritableFileSystem(a), WritableFileSystem(b)
        fa.mkdir("/busy")
        fa.sync()
        stop = threading.Event()
        made = [0]

        def busy() -> None:
            while not stop.is_set():
                fa.create(f"/busy/a{made[0]}")
                if made[0] >= 50:
                    fa.unlink(f"/busy/a{made[0] - 50}")
                made[0] += 1

        worker = threading.Thread(target=busy)
        worker.start()
        try:
            time.sleep(0.3)
            start = time.monotonic()
            fb.create("/busy/from-b")
            waited = time.monotonic() - start
            time.sleep(0.2)
        finally:
            stop.set()
            worker.join()
        print(f"host 2 waited {waited:.2f} s while host 1 made {made[0]} files in "
              f"{a.batches_committed} batches (keep_max {KEEP_MAX} s, interval {interval} s)")
        assert waited <= KEEP_MAX + interval + 1.5
        assert a.batched_transactions > 2 * a.batches_committed
    assert _names(image, "/busy") == {f"a{i}" for i in range(max(0, made[0] - 50), made[0])} | {"from-b"}


def test_hosts_waiting_for_each_others_batched_locks_do_not_wait_out_the_timeout(image: Path) -> None:
    """Real time: host 1's batch holds /one's lock and host 2's holds /two's; then, at once, host 1
    creates in /two and host 2 in /one.  Each waits inside a transaction, so neither keeper can
    commit its batch (interval 2 s anyway): without committing its own batch before it waits
    (LockManager.before_wait), each would wait out the lock timeout (5 s) and retry."""
    with mount(image, host(1, Clock())) as a, mount(image, host(2, Clock())) as b:
        fa, fb = WritableFileSystem(a), WritableFileSystem(b)
        fa.mkdir("/one")
        fa.mkdir("/two")
        fa.sync()
        a.group_commit(2.0)
        b.group_commit(2.0)
        fa.create("/one/a-first")
        fb.create("/two/b-first")
        assert a.batch_open and b.batch_open
        took: dict[str, float] = {}
        errors: list[BaseException] = []
        go = threading.Barrier(2)

        def cross(name: str, fs: WritableFileSystem, path: str) -> None:
            go.wait()
            start = time.monotonic()
            try:
                fs.create(path)
            except BaseException as exc:  # reported below
                errors.append(exc)
            took[name] = time.monotonic() - start

        workers = [threading.Thread(target=cross, args=("1", fa, "/two/a-second")),
                   threading.Thread(target=cross, args=("2", fb, "/one/b-second"))]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        print(f"crossed creates took {took['1']:.2f} s (host 1) and {took['2']:.2f} s (host 2)")
        assert not errors, errors
        assert max(took.values()) < 1.5, took
        fa.sync()
        fb.sync()
    assert _names(image, "/one") == {"a-first", "b-second"}
    assert _names(image, "/two") == {"b-first", "a-second"}
