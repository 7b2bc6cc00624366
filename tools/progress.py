"""Progress of long operations for the tools, and Ctrl-C that stops them only where it is safe.

The library reports progress through a callback ``progress(done, total)`` (``vmfs.vmdk.ops``: in
sectors, between chunks) and prints nothing; this turns the calls into

* ``bar``: one line redrawn on a terminal (``Clone  [#####.....]  45%  120.3 MiB/s  0:00:12 left``);
* ``lines``: vmkfstools' ``Clone: 45% done.`` lines, one per percent, for logs and scripts;
* ``none``.

``auto`` (the default) is ``bar`` when stderr is a terminal and ``none`` otherwise.  Hand-written
rather than ``click.progressbar``: that one counts steps of an iterable and shows no rate, while
the library gives absolute positions in sectors and the rate is what a user wants to see.

:class:`SafeInterrupt` turns SIGINT into a flag that the progress callback raises as
:class:`Interrupted` between two chunks: a Ctrl-C then never cuts a metadata update in half (the
library undoes a half-made disk on the way out), and the tool can say what was done.
"""

from __future__ import annotations

import signal
import sys
import time
from types import FrameType
from typing import TextIO

import click

MODES = ("auto", "bar", "lines", "none")
#: seconds between two redraws of the bar
REDRAW = 0.1
BAR_WIDTH = 30


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, raised at a safe point of an operation (a KeyboardInterrupt, so every
    ``except BaseException`` cleanup of the library runs)."""


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _rate(per_second: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if per_second < 1024 or unit == "GiB":
            return f"{per_second:.1f} {unit}/s"
        per_second /= 1024
    return ""  # pragma: no cover


def human(nbytes: int) -> str:
    """A byte count as people read it: ``3.7 GiB``, ``512.0 MiB``."""
    if nbytes < 1024:
        return f"{nbytes} B"
    size = nbytes / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


class Progress:
    """A ``progress(done, total)`` callback that draws ``label``'s progress on ``stream``.

    ``unit`` is the size of one step in bytes (512 for sectors), for the rate."""

    def __init__(self, label: str, mode: str = "auto", *, unit: int = 1, stream: TextIO | None = None,
                 interrupt: SafeInterrupt | None = None, stoppable: bool = True) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "none"
        self.mode = mode
        self.unit = unit
        self.interrupt = interrupt
        #: False for steps that must not stop half-way (a snapshot merge): Ctrl-C waits for the end
        self.stoppable = stoppable
        self.started = time.monotonic()
        self.done = 0
        self.total = 0
        self._percent = -1
        self._drawn = 0.0
        self._bar_shown = False

    @property
    def percent(self) -> int:
        return self.done * 100 // self.total if self.total else 0

    def __call__(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        if self.stoppable and self.interrupt is not None and self.interrupt.requested:
            raise Interrupted()
        if self.mode == "lines" and self.percent != self._percent:
            self._percent = self.percent
            self.stream.write(f"{self.label}: {self.percent}% done.\n")
            self.stream.flush()
        elif self.mode == "bar":
            now = time.monotonic()
            if now - self._drawn >= REDRAW or done >= total:
                self._drawn = now
                self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.started, 1e-6)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        filled = BAR_WIDTH * self.done // self.total if self.total else 0
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        self.stream.write(f"\r{self.label}  [{bar}] {self.percent:3d}%  {_rate(rate * self.unit)}  "
                          f"{_duration(left)} left \x1b[K")
        self.stream.flush()
        self._bar_shown = True

    def finish(self) -> None:
        """End the bar's line (so what follows starts on a fresh one)."""
        if self._bar_shown:
            self.stream.write("\n")
            self.stream.flush()
            self._bar_shown = False

    def summary(self) -> str:
        """What was done so far, for the interrupted message."""
        if not self.total:
            return "before it started"
        return f"at {self.percent}% ({self.done * self.unit >> 20} of {self.total * self.unit >> 20} MiB)"


class SafeInterrupt:
    """While active, SIGINT only sets :attr:`requested` (a Progress raises it at its next call);
    a second Ctrl-C says the operation is finishing its current step."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: object = None

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            click.echo("\nstopping at the next safe point; please wait", err=True)
        self.requested = True

    def __enter__(self) -> SafeInterrupt:
        self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous)  # type: ignore[arg-type]
