"""The perfmon PDH-CSV 4.0 layout that esxtop's batch mode writes (``esxtop -b``).

Why this layout: the tools people feed esxtop batch files to (Windows perfmon, visualEsxtop,
esxplot, pandas scripts) expect it exactly.  What a real file looks like (seen in public
parsers of such files):

- a header row whose first field is ``(PDH-CSV 4.0) (UTC)(0)`` and whose other fields are
  counter paths ``\\\\HOST\\Object(Instance)\\Counter`` (no instance: ``\\\\HOST\\Memory\\Free MBytes``);
- one row per refresh: the UTC time as ``MM/DD/YYYY HH:MM:SS``, then one value per counter;
- every field in double quotes, comma separated.

This module only writes that layout; which counters there are is esxtop's business.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: the first field of the header row: format name, time zone name and its offset in minutes
PDH_HEADER = "(PDH-CSV 4.0) (UTC)(0)"
#: rows end like a Unix tool's output (esxtop runs in the console or the ESXi shell)
NEWLINE = "\n"
#: a counter absent from a row (the entity did not exist at that refresh): perfmon writes a blank
MISSING = " "


@dataclass(frozen=True, order=True)
class CounterPath:
    """``\\\\host\\object(instance)\\counter``; ``instance`` is None for objects that have none."""

    host: str
    obj: str
    instance: str | None
    counter: str

    def __str__(self) -> str:
        inst = f"({self.instance})" if self.instance is not None else ""
        return f"\\\\{self.host}\\{self.obj}{inst}\\{self.counter}"


def timestamp(epoch_s: int, time_us: int) -> str:
    """The row time: simulated µs since boot plus the boot's UTC epoch, to the second."""
    moment = dt.datetime.fromtimestamp(epoch_s + time_us // 1_000_000, tz=dt.UTC)
    return moment.strftime("%m/%d/%Y %H:%M:%S")


def value(v: float | int | str | None) -> str:
    """One value as the batch file prints it: integers as such, other numbers to 2 decimals."""
    if v is None:
        return MISSING
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    return f"{v:.2f}"


def quote(field: str) -> str:
    """A field in double quotes, inner quotes doubled (RFC 4180, as perfmon does)."""
    return '"' + field.replace('"', '""') + '"'


def line(fields: Iterable[str]) -> str:
    return ",".join(quote(f) for f in fields) + NEWLINE


def render(columns: Sequence[CounterPath], rows: Iterable[tuple[str, Sequence[str]]]) -> str:
    """The whole file: header, then ``(timestamp, values)`` rows already formatted.

    A row shorter or longer than the header is a programming error, so it raises ValueError."""
    out = [line([PDH_HEADER, *(str(c) for c in columns)])]
    for stamp, values in rows:
        if len(values) != len(columns):
            raise ValueError(f"row {stamp}: {len(values)} values for {len(columns)} counters")
        out.append(line([stamp, *values]))
    return "".join(out)
