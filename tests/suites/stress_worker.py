"""One process of the stress test (tests/suites/test_stress.py): several threads hammering one
directory of a read-write mount, each keeping a record of what the filesystem acknowledged.

Every thread does two kinds of work, interleaved at random:

* **ledger** work on two names of its own (``L-<proc>-<thread>-a``/``-b``, at most one of them
  exists): create, append, overwrite, truncate, rename between the two, unlink, fsync.  Only this
  thread touches them, so the thread knows exactly what each must hold; every one of these
  operations must succeed, and what succeeded is what the file must hold after the unmount.
* **shared** work on a few names every thread of every process uses (``S0``..): create with
  O_TRUNC and write a record, unlink, rename one onto another, truncate, hold one open while
  others unlink it, and operations that fail on purpose (rmdir of a non-empty directory, a
  200-byte name, a truncate past the largest file), as races and failed metadata operations are
  where data went missing before.
  A shared record is made of 16-byte cells (record id, cell index, CRC), so whatever is left at
  the end can be checked cell by cell: each cell is zero (a hole from a truncate) or a cell of a
  record some thread wrote.

Output (JSON on the file named by ``--out``): per thread the expected ledger files and the ids
of the shared records written, and every unexpected error.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field

SHARED = [f"S{i}" for i in range(4)]
FULL_DIR = "full"  # a directory that always holds a file: rmdir of it fails with ENOTEMPTY
CELL = 16
#: errors a shared operation may meet because another thread got there first.  ESTALE: libfuse's
#: high-level API names a node by its path; when another thread removes or replaces the name
#: between the kernel's lookup and the call, libfuse (or our OPEN, so that O_CREAT is looked up
#: again) answers ESTALE and the kernel retries once with a fresh lookup; only a second race in a
#: row reaches the program (3 times in 90 rounds of 1,350 operations).  A known limit of a path-
#: based FUSE filesystem, counted in the round's figures; never allowed on a thread's own names.
RACE_ERRORS = {errno.ENOENT, errno.EEXIST, errno.ESTALE}
#: operations that must fail, and how: ENOTEMPTY, a name longer than VMFS's 127 bytes, a size past
#: the format's largest file (ENOENT when another thread removed the name first)
#: truncate(2) by path of a shared name another thread unlinks may also see ESTALE: the kernel's one
#: retry after the mount's ESTALE lost the race again (docs/guide.md, "A name unlinked ...")
FAILING = {"rmdir": {errno.ENOTEMPTY}, "longname": {errno.ENAMETOOLONG},
           "efbig": {errno.EFBIG, errno.ENOENT, errno.ESTALE}}


def cell(record: int, index: int) -> bytes:
    head = struct.pack("<QI", record, index)
    return head + struct.pack("<I", zlib.crc32(head))


def record_bytes(record: int, cells: int) -> bytes:
    return b"".join(cell(record, i) for i in range(cells))


def parse_cell(raw: bytes) -> tuple[int, int] | None:
    """(record id, cell index) of a valid cell, None for anything else."""
    record, index, crc = struct.unpack("<QII", raw)
    return (record, index) if zlib.crc32(raw[:12]) == crc else None


@dataclass
class Thread:
    """One thread's work and record."""

    root: str
    proc: int
    tid: int
    rng: random.Random
    ledger: dict[str, bytes] = field(default_factory=dict)  # name -> bytes it must hold
    records: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    ops: dict[str, int] = field(default_factory=dict)
    seq: int = 0

    def path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def count(self, op: str) -> None:
        self.ops[op] = self.ops.get(op, 0) + 1

    # -- ledger -------------------------------------------------------------------------------

    def names(self) -> tuple[str, str]:
        return f"L-{self.proc}-{self.tid}-a", f"L-{self.proc}-{self.tid}-b"

    def ledger_op(self) -> None:
        a, b = self.names()
        cur = a if a in self.ledger else b if b in self.ledger else None
        try:
            if cur is None:
                self._write(a, os.O_CREAT | os.O_EXCL | os.O_WRONLY, None, "create")
                return
            choice = self.rng.choice(["append", "append", "overwrite", "truncate", "rename", "unlink"])
            if choice == "append":
                self._write(cur, os.O_WRONLY | os.O_APPEND, None, "append")
            elif choice == "overwrite":
                self._write(cur, os.O_WRONLY, self.rng.randrange(len(self.ledger[cur]) + 1), "overwrite")
            elif choice == "truncate":
                size = self.rng.randrange(len(self.ledger[cur]) + 65536)
                os.truncate(self.path(cur), size)
                self.ledger[cur] = self.ledger[cur][:size].ljust(size, b"\0")
                self.count("truncate")
            elif choice == "rename":
                other = b if cur == a else a
                os.rename(self.path(cur), self.path(other))
                self.ledger[other] = self.ledger.pop(cur)
                self.count("rename")
            else:
                os.unlink(self.path(cur))
                del self.ledger[cur]
                self.count("unlink")
        except OSError as e:
            self.errors.append(f"ledger {cur}: {e!r}")

    def _write(self, name: str, flags: int, offset: int | None, op: str) -> None:
        data = self.rng.randbytes(self.rng.randrange(1, 48 * 1024))
        fd = os.open(self.path(name), flags, 0o644)
        try:
            if offset is None:
                os.write(fd, data)
            else:
                os.pwrite(fd, data, offset)
            if self.rng.random() < 0.5:
                os.fsync(fd)
        finally:
            os.close(fd)
        old = self.ledger.get(name, b"") if op != "create" else b""
        if offset is None:
            self.ledger[name] = old + data
        else:
            new = bytearray(old.ljust(offset + len(data), b"\0"))
            new[offset:offset + len(data)] = data
            self.ledger[name] = bytes(new)
        self.count(op)

    # -- shared -------------------------------------------------------------------------------

    def shared_op(self) -> None:
        name = self.rng.choice(SHARED)
        choice = self.rng.choice(["write", "write", "unlink", "rename", "truncate", "hold", "fail"])
        try:
            if choice == "write":
                self.seq += 1
                record = (self.proc << 40) | (self.tid << 24) | self.seq
                self.records.append(record)
                fd = os.open(self.path(name), os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
                try:
                    os.write(fd, record_bytes(record, self.rng.randrange(1, 2048)))
                    os.fsync(fd)
                finally:
                    os.close(fd)
            elif choice == "unlink":
                os.unlink(self.path(name))
            elif choice == "rename":
                os.rename(self.path(name), self.path(self.rng.choice(SHARED)))
            elif choice == "truncate":
                os.truncate(self.path(name), CELL * self.rng.randrange(4096))
            elif choice == "hold":
                fd = os.open(self.path(name), os.O_RDWR)
                try:
                    time.sleep(self.rng.random() / 50)
                    os.read(fd, 4096)
                finally:
                    os.close(fd)
            else:
                self.failing_op(name)
                return
            self.count("shared-" + choice)
        except OSError as e:
            if e.errno in RACE_ERRORS:
                self.count(f"shared-{choice}-{errno.errorcode[e.errno]}")
            else:
                self.errors.append(f"shared {choice} {name}: {e!r}")

    def failing_op(self, name: str) -> None:
        """A metadata operation that the library must refuse, with the one right errno."""
        kind = self.rng.choice(["rmdir", "longname", "efbig"])
        try:
            if kind == "rmdir":
                os.rmdir(self.path(FULL_DIR))
            elif kind == "longname":
                os.close(os.open(self.path("x" * 200), os.O_CREAT | os.O_WRONLY, 0o644))
            else:
                os.truncate(self.path(name), 1 << 62)
        except OSError as e:
            if e.errno in FAILING[kind]:
                self.count(f"fail-{kind}-{errno.errorcode[e.errno]}")
                return
            self.errors.append(f"failing op {kind} {name}: {e!r}, wanted {sorted(FAILING[kind])}")
            return
        self.errors.append(f"failing op {kind} {name} succeeded")

    def run(self, ops: int) -> None:
        for _ in range(ops):
            if self.rng.random() < 0.5:
                self.ledger_op()
            else:
                self.shared_op()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--proc", type=int, required=True)
    ap.add_argument("--threads", type=int, default=3)
    ap.add_argument("--ops", type=int, default=200)
    args = ap.parse_args()
    threads = [Thread(args.root, args.proc, t, random.Random(f"{args.seed}-{args.proc}-{t}"))
               for t in range(args.threads)]
    runners = [threading.Thread(target=t.run, args=(args.ops,)) for t in threads]
    for r in runners:
        r.start()
    for r in runners:
        r.join()
    out = [{"ledger": {n: d.hex() for n, d in t.ledger.items()}, "records": t.records, "errors": t.errors,
            "ops": t.ops} for t in threads]
    with open(args.out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
