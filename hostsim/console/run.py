"""Run a scenario headless: boot, do every step at its simulated time, sample esxtop, write the
results (``hostsim run SCENARIO --out DIR``).

Outputs in DIR: ``esxtop.csv`` (esxtop batch mode, PDH-CSV), ``esxtop.png`` (the run's counters
over time), ``summary.json`` (per VM: its CPU, memory and disk totals and its last esxtop
figures; per host: the same), ``events.log`` (every console action with its simulated time) and
``vim-cmd.txt`` (``vmsvc/getallvms`` at the end).  Everything is a function of the scenario and
its seed only: two runs give the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hostsim.console import scenario as sc
from hostsim.console.esxtop import Interval, batch_csv
from hostsim.console.host import Host
from hostsim.console.plot import plot_run
from hostsim.console.stats import HostSample
from hostsim.errors import HostsimError
from hostsim.vmkernel.engine import SECOND

DEFAULT_INTERVAL_US = 5 * SECOND


@dataclass
class RunResult:
    host: Host
    samples: list[HostSample] = field(default_factory=list)


class ScenarioFailed(HostsimError):
    """A step of the scenario failed: the message says where; ``result`` holds what ran until
    then (the samples, the host's event log), so the outputs can still be written."""

    def __init__(self, message: str, result: RunResult) -> None:
        super().__init__(message)
        self.result = result


def run_scenario(scenario: sc.Scenario, *, on_step: Callable[[Host, sc.Step], None] | None = None,
                 keep_host: bool = False) -> RunResult:
    """Execute ``scenario``; the host is shut down at the end unless ``keep_host``.

    A step that fails (a user error: a refused power-on, a guest that stopped) ends the run with
    :class:`ScenarioFailed`: the host is shut down cleanly first, as an administrator would,
    and only a host that cannot be shut down is left as a crashed one (replayable)."""
    steps = list(scenario.steps)
    boot = steps.pop(0)
    assert isinstance(boot, sc.Boot)
    host = Host(boot.config)
    result = RunResult(host)
    interval = DEFAULT_INTERVAL_US
    next_sample = 0
    try:
        result.samples.append(host.sample())
        next_sample = interval
        for step in steps:
            next_sample = _advance(host, result, step.at_us, next_sample, interval)
            if isinstance(step, sc.EsxtopInterval):
                interval = step.interval_us
                next_sample = host.engine.now + interval
            else:
                _do(host, step, scenario)
            if on_step is not None:
                on_step(host, step)
        if result.samples[-1].time_us < host.engine.now:  # the end, whatever the interval
            result.samples.append(host.sample())
        if not keep_host:
            host.shutdown()
    except HostsimError as exc:
        _stop(host)
        raise ScenarioFailed(str(exc), result) from None
    except BaseException:
        _stop(host)
        raise
    return result


def _stop(host: Host) -> None:
    if host.closed:
        return
    try:
        host.shutdown()
    except Exception as exc:  # the volume must stay consistent: leave it as a dead host would
        host.event(f"clean shutdown failed ({exc}); leaving the datastores as a crashed host")
        host.crash()


def _advance(host: Host, result: RunResult, until_us: int, next_sample: int, interval: int) -> int:
    while next_sample <= until_us:
        host.run(next_sample)
        result.samples.append(host.sample())
        next_sample += interval
    host.run(until_us)
    return next_sample


def _do(host: Host, step: sc.Step, scenario: sc.Scenario) -> None:
    where = f"{scenario.path}:{step.line}"
    try:
        if isinstance(step, sc.Advance):
            return
        if isinstance(step, sc.SetIdleTax):
            host.set_idle_tax(step.tax)
        elif isinstance(step, sc.CreateVm):
            host.create_vm_step(step)
        elif isinstance(step, sc.PowerOn):
            host.power_on(step.vm)
        elif isinstance(step, sc.PowerOff):
            host.power_off(step.vm)
        elif isinstance(step, sc.SetControls):
            c = step.controls
            host.set_controls(step.vm, cpu_shares=c.cpu_shares, cpu_reservation_mhz=c.cpu_reservation_mhz,
                              cpu_limit_mhz=c.cpu_limit_mhz, cpu_min_pct=c.cpu_min_pct, cpu_max_pct=c.cpu_max_pct,
                              mem_shares=c.mem_shares, mem_reservation_mb=c.mem_reservation_mb,
                              mem_limit_mb=c.mem_limit_mb, disk_shares=c.disk_shares,
                              disk_reservation_iops=c.disk_reservation_iops, disk_limit_iops=c.disk_limit_iops)
        elif isinstance(step, sc.Snapshot):
            _snapshot(host, step)
        else:  # pragma: no cover - the parser makes no other step
            raise sc.ScenarioError(f"{where}: cannot run a {type(step).__name__} step")
    except sc.ScenarioError:
        raise
    except HostsimError as exc:
        raise HostsimError(f"{where}: {exc}") from None


def _snapshot(host: Host, step: sc.Snapshot) -> None:
    rec = host.record(step.vm)
    if step.op == "create":
        host.snapshot_create(rec.vmid, step.snapshot)
    elif step.op == "revert":
        host.snapshot_revert(rec.vmid, step.snapshot)
    elif step.op == "remove":
        host.snapshot_remove(rec.vmid, step.snapshot)
    else:
        host.snapshot_removeall(rec.vmid)


def summary(result: RunResult) -> dict[str, object]:
    """The run in numbers: per VM its esxtop figures over the samples it ran in, and over the
    last interval it ran in."""
    host = result.host
    s = result.samples
    out: dict[str, object] = {"host": host.name, "seed": host.config.seed, "simulated_s": host.engine.now / SECOND,
                              "samples": len(s), "events": len(host.events)}
    if len(s) >= 2:
        vms: dict[str, object] = {}
        names = sorted({g.name for x in s for g in x.groups if g.kind == "vm"})
        for name in names:
            seen = [i for i, x in enumerate(s) if any(g.name == name for g in x.groups)]
            last = seen[-1]
            gid = next(g.gid for g in s[last].groups if g.name == name)
            whole = Interval(s[0], s[last]) if last > 0 else None
            final = Interval(s[last - 1], s[last]) if last > 0 else None
            vms[name] = {"from_s": s[seen[0]].time_us / SECOND, "to_s": s[last].time_us / SECOND,
                         "whole_run": _figures(whole.cpu.get(gid)) if whole else None,
                         "last_interval": _figures(final.cpu.get(gid)) if final else None}
        out["vms"] = vms
        out["pcpu_used_pct"] = [round(v, 3) for v in Interval(s[0], s[-1]).pcpu_used()]
    return out


def _figures(rates: object) -> dict[str, object] | None:
    if rates is None:
        return None
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(rates).items()}  # type: ignore[call-overload]


def write_outputs(result: RunResult, out_dir: Path) -> list[Path]:
    """The run's files in ``out_dir``; the event log always, esxtop's files once there are two
    samples to take a difference of (a run that failed at once has only the first)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    events = out_dir / "events.log"
    events.write_text("\n".join(result.host.events) + "\n")
    written = [events]
    summary_path = out_dir / "summary.json"
    summary_path.write_text(json.dumps(summary(result), indent=2, sort_keys=True) + "\n")
    written.append(summary_path)
    if len(result.samples) >= 2:
        csv_path = out_dir / "esxtop.csv"
        csv_path.write_text(batch_csv(result.samples))
        png = out_dir / "esxtop.png"
        plot_run(result.samples, png, title=f"{result.host.name}: esxtop counters")
        written += [csv_path, png]
    return written
