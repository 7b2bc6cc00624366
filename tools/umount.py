"""vmfs-umount: unmount a vmfs-mount and return only once the volume is closed.

``fusermount -u`` returns as soon as the kernel has detached the mount; the mount process then
still writes back what it holds, empties its journal and releases its heartbeat slot, so a
checker or a copy of the image started right after sees a live host.  This tool unmounts, then
waits for the read-write mount's identity lock (:mod:`vmfs.cluster.identitylock`) to be let go, which the
mount process does last, after everything is on disk; then it reports how the volume was closed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from typing import Any

import click
from pyvmfs_tools.common import fail, mountpoint_key, report_errors

from vmfs.cluster.identitylock import final_record, holders_of, is_held
from vmfs.errors import InvalidArgumentError

#: exit status when the mount process is still busy after --timeout
EXIT_TIMEOUT = 2


def mounted_at(target: str) -> bool:
    """Whether something is mounted at ``target``, from /proc/self/mountinfo (the mount itself
    is never touched: it may be hung or its process dead)."""
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return os.path.ismount(target)
    for line in lines:
        fields = line.split()
        if len(fields) > 4 and re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4]) == target:
            return True
    return False


def unmount_command(target: str, lazy: bool) -> list[str]:
    """fusermount3 or fusermount (any user of their own mount); umount as the last resort."""
    for name in ("fusermount3", "fusermount"):
        path = shutil.which(name)
        if path:
            return [path, "-u", *(["-z"] if lazy else []), target]
    return ["umount", *(["-l"] if lazy else []), target]


def detach(target: str, lazy: bool) -> None:
    argv = unmount_command(target, lazy)
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise InvalidArgumentError(f"{target}: no fusermount3, fusermount or umount to unmount with") from None
    if r.returncode != 0:
        lines = (r.stderr or r.stdout).strip().splitlines()
        why = lines[-1] if lines else f"exit status {r.returncode}"
        raise InvalidArgumentError(f"{target}: not unmounted: {why}")


def process_gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie nobody reaped yet counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def wait_released(holders: list[tuple[int, dict[str, Any]]], deadline: float | None) -> None:
    """Until every holder let go of its lock (or the deadline passed: exit EXIT_TIMEOUT)."""
    for fd, record in holders:
        while is_held(fd):
            if deadline is not None and time.monotonic() > deadline:
                fail(f"process {record.get('pid')} is still writing back after the unmount (timed out; it "
                     f"keeps running and will finish on its own)", EXIT_TIMEOUT)
            time.sleep(0.02)


def report(holders: list[tuple[int, dict[str, Any]]], verbose: bool) -> list[str]:
    """Problems with how each volume was closed (none: everything on disk, slot released)."""
    problems = []
    for fd, record in holders:
        final = final_record(fd) or record
        outcome = final.get("closed")
        pid = final.get("pid")
        if outcome == "clean":
            if verbose:
                click.echo(f"volume {final.get('volume')} closed by process {pid}: written back, heartbeat slot "
                           f"{final.get('slot')} released")
        elif outcome is None:
            problems.append(f"process {pid} ended without closing volume {final.get('volume')} (killed?): its "
                            "journal is replayed at the next read-write open")
        else:
            problems.append(f"process {pid} closed volume {final.get('volume')} uncleanly: {outcome}")
    return problems


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("mountpoint", type=click.Path())
@click.option("-t", "--timeout", type=click.FloatRange(min=0), default=120.0, show_default=True,
              help="Seconds to wait for the mount process to write back and close the volume (0: no limit).")
@click.option("-z", "--lazy", is_flag=True,
              help="Detach now even while files are open; the wait then lasts until the last one is closed.")
@click.option("-v", "--verbose", is_flag=True, help="Say how the volume was closed.")
@report_errors(exit_code=1)
def main(mountpoint: str, timeout: float, lazy: bool, verbose: bool) -> None:
    """Unmount MOUNTPOINT and return only when the mount is finished: for a read-write vmfs-mount,
    once its data and metadata are on disk, its journal is empty and its heartbeat slot released.

    Exit status: 0 done; 1 not mounted, the unmount was refused (files open: see --lazy), or the
    mount process ended without closing the volume cleanly; 2 the timeout passed first.
    """
    target = mountpoint_key(mountpoint)
    holders = holders_of(target)  # before the unmount: a clean close removes the lock file
    try:
        mounted = mounted_at(target)
        if not mounted and not holders:
            raise InvalidArgumentError(f"{mountpoint}: not mounted")
        if mounted:
            detach(target, lazy)
        deadline = time.monotonic() + timeout if timeout else None
        wait_released(holders, deadline)
        problems = report(holders, verbose)
        for pid in {r.get("pid") for _, r in holders if isinstance(r.get("pid"), int)}:
            while not process_gone(pid) and (deadline is None or time.monotonic() < deadline):
                time.sleep(0.02)  # its data is down already; let it finish exiting too
    finally:
        for fd, _ in holders:
            os.close(fd)
    if problems:
        fail("; ".join(problems), 1)


if __name__ == "__main__":
    main()
