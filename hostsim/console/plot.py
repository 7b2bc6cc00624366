"""A PNG of a run's esxtop counters over time, per VM: %USED, %RDY, memory granted / ballooned /
swapped, and GAVG.

Why a picture: the experiments of esx-design.md section 8 are about how shares, reservations and
reclamation move over time; a plot shows a settling or an oscillation that a final table hides.
It is drawn from the same :class:`~hostsim.console.esxtop.Interval` values the panels and the
batch file show, so the three never disagree.

Deterministic: the Agg renderer draws the same pixels for the same data, and the PNG carries no
date and no software version (``metadata={"Software": None}``), so the same samples give the same
file, byte for byte (with one matplotlib version).  matplotlib is imported when a plot is made.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from itertools import pairwise

from hostsim.console.esxtop import Interval
from hostsim.console.stats import HostSample, SampleError

#: the figure: inches and dots per inch (1000 x 1200 pixels)
FIGSIZE = (10.0, 12.0)
DPI = 100


def _series(samples: Sequence[HostSample]) -> tuple[list[float], dict[str, dict[str, list[float | None]]]]:
    """Per VM name: one list per plotted counter, aligned on the intervals' end times (s)."""
    intervals = [Interval(a, b) for a, b in pairwise(samples)]
    names = sorted({g.name for s in samples for g in s.groups if g.kind == "vm"})
    times = [iv.after.time_us / 1_000_000 for iv in intervals]
    data: dict[str, dict[str, list[float | None]]] = {n: {k: [] for k in
                                                          ("used", "rdy", "grant", "mctl", "swap", "gavg")}
                                                      for n in names}
    for iv in intervals:
        cpu = {r.name: r for r in iv.cpu.values()}
        mem = {r.name: r for r in iv.mem.values()}
        disk = {r.name: r for r in iv.vm_disks.values()}
        for n in names:
            d = data[n]
            d["used"].append(cpu[n].used if n in cpu else None)
            d["rdy"].append(cpu[n].rdy if n in cpu else None)
            d["grant"].append(mem[n].grant if n in mem else None)
            d["mctl"].append(mem[n].mctlsz if n in mem else None)
            d["swap"].append(mem[n].swcur if n in mem else None)
            d["gavg"].append(disk[n].total.gavg if n in disk else None)
    return times, data


def plot_run(samples: Sequence[HostSample], path: str | os.PathLike[str], *, title: str | None = None) -> None:
    """Write the PNG of ``samples`` (at least two, oldest first) to ``path``."""
    if len(samples) < 2:
        raise SampleError("a plot needs at least two samples")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    times, data = _series(samples)
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(4, 1, sharex=True)
    panels = (("%USED", [("used", "-")]), ("%RDY", [("rdy", "-")]),
              ("memory MB", [("grant", "-"), ("mctl", "--"), ("swap", ":")]),
              ("GAVG ms/cmd", [("gavg", "-")]))
    for ax, (label, keys) in zip(axes, panels, strict=True):
        for index, (name, series) in enumerate(data.items()):
            color = f"C{index % 10}"
            for key, style in keys:
                values = [float("nan") if v is None else v for v in series[key]]
                ax.plot(times, values, linestyle=style, color=color, label=name if key == keys[0][0] else None)
        ax.set_ylabel(label)
        if len(keys) > 1:
            ax.set_title("granted: solid, ballooned: dashed, swapped: dotted", fontsize="small")
        ax.grid(True, linewidth=0.3)
    if data:
        axes[0].legend(loc="upper right", fontsize="small")
    axes[-1].set_xlabel("simulated time (s)")
    fig.suptitle(title or f"{samples[0].host}: esxtop counters per VM")
    fig.tight_layout()
    fig.savefig(os.fspath(path), format="png", metadata={"Software": None})
