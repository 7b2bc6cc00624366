"""What every tool shares: turning library errors into one line and an exit code, naming mount points."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from vmfs.errors import VmfsError


def report_errors(exit_code: int = 1) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a click command: a :class:`VmfsError` (or an OSError from the system) becomes
    ``prog: message`` on stderr and ``exit_code``; nothing else is caught, so real bugs still show."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except VmfsError as exc:
                fail(str(exc), exit_code)
            except OSError as exc:
                fail(f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}", exit_code)
            except BrokenPipeError:  # pragma: no cover - e.g. piped into head
                sys.exit(0)

        return wrapper

    return decorate


def fail(message: str, exit_code: int = 1) -> None:
    prog = click.get_current_context(silent=True)
    name = prog.find_root().info_name if prog is not None else "vmfs"
    click.echo(f"{name}: {message}", err=True)
    sys.exit(exit_code)


def parse_size(text: str) -> int:
    """'2T', '512M', '4096', '1.5G' -> bytes (binary units)."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1] if t and t[-1] in units else ""
    number = t[:-1] if unit else t
    try:
        value = float(number) if "." in number else int(number)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a size (e.g. 2T, 512M, 4096)") from None
    size = int(value * units[unit])
    if size <= 0:
        raise click.BadParameter(f"{text!r} is not a positive size")
    return size


def mountpoint_key(mountpoint: str) -> str:
    """A mount point as vmfs-mount records it and vmfs-umount looks it up: the real path of its
    parent directory plus its name (the mount point itself is never looked up: it may be a hung
    or dead mount, and a lookup from inside the mount's own process would wait for itself)."""
    absolute = os.path.abspath(mountpoint)
    return os.path.join(os.path.realpath(os.path.dirname(absolute)), os.path.basename(absolute))
