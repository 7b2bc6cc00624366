"""hostsim: a simulated ESX host whose VMs' virtual disks live on a VMFS datastore.

    hostsim run SCENARIO --out DIR       run a scenario headless (esxtop CSV, plot, summary, events)
    hostsim boot CONFIG [--state-dir D]  boot a host that runs paced to real time until stopped
    hostsim vim-cmd [--host NAME] ARGS...  the console's vim-cmd against a booted host
    hostsim vmware-cmd [--host NAME] ...   the console's vmware-cmd
    hostsim esxtop [--host NAME] [-b -d S -n N]   esxtop against a booted host

All logic is in :mod:`hostsim.console`; this module parses options and prints.  Every error a
user can cause is one line on stderr and a non-zero exit (1: the host refused or the input is
wrong, 2: usage).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from hostsim.console import config as cfg
from hostsim.console import scenario as sc
from hostsim.console import stats as st
from hostsim.console.esxtop import Interval, cpu_panel, memory_panel
from hostsim.console.esxtop import main as esxtop_main
from hostsim.console.host import Host
from hostsim.console.run import ScenarioFailed, run_scenario, write_outputs
from hostsim.console.server import CommandServer, ConsoleUnreachable, request, socket_path
from hostsim.console.vimcmd import vim_cmd, vmware_cmd
from hostsim.console.vsish import vsish
from hostsim.errors import HostsimError
from hostsim.vmkernel.engine import SECOND
from vmfs.errors import VmfsError

DEFAULT_STATE_DIR = os.environ.get("HOSTSIM_STATE_DIR", "/run/hostsim")


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"hostsim: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """A simulated ESX host (VMkernel, VMMs, service console) on VMFS datastores."""


@main.command("run")
@click.argument("scenario", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for esxtop.csv, esxtop.png, summary.json and events.log.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the list of files written.")
def run_command(scenario: Path, out_dir: Path, quiet: bool) -> None:
    """Run SCENARIO headless and deterministically; write its results into --out."""
    try:
        parsed = sc.load(scenario)
        started = time.monotonic()
        result = run_scenario(parsed)
        wall = time.monotonic() - started
        written = write_outputs(result, out_dir)
    except ScenarioFailed as exc:
        # what ran until the failure is still worth reading (the event log says why); the error
        # stays one line
        try:
            write_outputs(exc.result, out_dir)
            kept = f" (the run up to it is in {out_dir})"
        except (HostsimError, OSError):
            kept = ""
        _fail(f"{exc}{kept}")
    except (HostsimError, VmfsError) as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}")
    host = result.host
    if not quiet and len(result.samples) >= 2:
        whole = [result.samples[0], result.samples[-1]]
        click.echo(f"{host.name}: {host.engine.now / SECOND:g} simulated s in {wall:.1f} s "
                   f"({host.engine.now / SECOND / max(wall, 1e-9):.1f} simulated s per second); whole run:")
        click.echo(cpu_panel(Interval(*whole), whole))
        click.echo(memory_panel(Interval(result.samples[-2], result.samples[-1]), result.samples[-2:]))
    for path in written:
        click.echo(f"wrote {path}")


class _Stop(Exception):
    pass


@main.command("boot")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--state-dir", default=DEFAULT_STATE_DIR, show_default=True, type=click.Path(path_type=Path),
              help="Where the host's console socket is made (NAME.sock).")
@click.option("--speed", default=1.0, show_default=True, type=click.FloatRange(min=0.001),
              help="Simulated seconds per wall-clock second.")
@click.option("--duration", type=click.FloatRange(min=0.0), default=None,
              help="Stop after this many simulated seconds (default: until SIGTERM or Ctrl-C).")
def boot_command(config: Path, state_dir: Path, speed: float, duration: float | None) -> None:
    """Boot the host of CONFIG and keep it running paced to real time; administer it from other
    shells with `hostsim vim-cmd`, `hostsim vmware-cmd`, `hostsim esxtop`.  SIGTERM or Ctrl-C
    powers the VMs off and unmounts the datastores cleanly."""
    try:
        host = Host(cfg.load(config), realtime=speed == 1.0)
    except (HostsimError, VmfsError) as exc:
        _fail(str(exc))
    for line in host.events:  # a VM folder the host could not register: say why (it boots on)
        if ": not registered: " in line:
            click.echo(f"hostsim: {line.split(None, 1)[1]}", err=True)
    try:
        server = CommandServer(socket_path(state_dir, host.name), lambda req: _serve(host, req), host.engine.post)
    except (HostsimError, OSError) as exc:
        host.shutdown()
        _fail(str(exc))

    def stop(signum: int, _frame: Any) -> None:
        def raise_stop() -> None:
            raise _Stop(signal.Signals(signum).name)
        host.engine.post(raise_stop)

    def power_loss(message: str) -> None:  # a PSOD: say why, then stop as a power cut does
        click.echo(message, err=True)
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    host.on_panic = power_loss
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    click.echo(f"{host.name}: booted; console at {server.path}", err=True)
    until = host.engine.now + (int(duration * SECOND) if duration is not None else 1 << 62)
    try:
        host.engine.run_paced(until, speed=speed)
    except _Stop:
        pass
    except (HostsimError, VmfsError) as exc:
        server.close()
        host.crash()
        _fail(f"{host.name}: stopped: {exc}")
    finally:
        server.close()
    try:
        host.shutdown()
    except (HostsimError, VmfsError) as exc:  # e.g. the volume changed under the host: one line
        _fail(f"{host.name}: shutdown failed: {exc}")
    click.echo(f"{host.name}: shut down", err=True)


def _serve(host: Host, req: dict[str, Any]) -> dict[str, Any]:
    op = req["op"]
    argv = [str(a) for a in req.get("argv", [])]
    if op == "vim-cmd":
        out, rc = vim_cmd(host, argv)
    elif op == "vmware-cmd":
        out, rc = vmware_cmd(host, argv)
    elif op == "vsish":
        out, rc = vsish(host, argv)
    elif op == "sample":
        return {"output": "", "rc": 0, "sample": st.sample_to_dict(host.sample())}
    else:
        return {"output": f"hostsim console: unknown request {op!r}\n", "rc": 2}
    return {"output": out, "rc": rc}


def _client(op: str, host_name: str | None, state_dir: Path, argv: tuple[str, ...]) -> None:
    try:
        reply = request(_find(host_name, state_dir), op, argv=list(argv))
    except (HostsimError, OSError) as exc:
        _fail(str(exc))
    click.echo(reply.get("output", ""), nl=False)
    sys.exit(int(reply.get("rc", 1)))


def _find(host_name: str | None, state_dir: Path) -> Path:
    if host_name is not None:
        return socket_path(state_dir, host_name)
    found = sorted(state_dir.glob("*.sock")) if state_dir.is_dir() else []
    if len(found) == 1:
        return found[0]
    if not found:
        raise ConsoleUnreachable(f"no booted host has a console in {state_dir} (hostsim boot CONFIG)")
    names = ", ".join(p.stem for p in found)
    raise ConsoleUnreachable(f"several hosts run ({names}): say which with --host NAME")


_CLIENT_OPTIONS = [
    click.option("--host", "host_name", default=None, help="The booted host's name (needed when several run)."),
    click.option("--state-dir", default=DEFAULT_STATE_DIR, show_default=True, type=click.Path(path_type=Path)),
]


def _with_client_options(func: Any) -> Any:
    for option in reversed(_CLIENT_OPTIONS):
        func = option(func)
    return func


@main.command("vim-cmd", context_settings={"ignore_unknown_options": True})
@_with_client_options
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def vim_cmd_command(host_name: str | None, state_dir: Path, args: tuple[str, ...]) -> None:
    """vim-cmd on a booted host (vmsvc/getallvms, vmsvc/power.on VMID, hostsvc/hostsummary, ...;
    hostsim/createvm NAME memory=SIZE guest=FILE disk=SIZE:TYPE ... makes a VM as a scenario's
    `create vm` line does)."""
    if args and args[0] == "hostsim/createvm":  # the host reads the guest file: say where it is
        args = tuple(f"guest={Path(a[6:]).resolve()}" if a.startswith("guest=") else a for a in args)
    _client("vim-cmd", host_name, state_dir, args)


@main.command("vmware-cmd", context_settings={"ignore_unknown_options": True})
@_with_client_options
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def vmware_cmd_command(host_name: str | None, state_dir: Path, args: tuple[str, ...]) -> None:
    """vmware-cmd on a booted host (-l, CFG getstate|start|stop|reset)."""
    _client("vmware-cmd", host_name, state_dir, args)


@main.command("vsish", context_settings={"ignore_unknown_options": True})
@_with_client_options
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def vsish_command(host_name: str | None, state_dir: Path, args: tuple[str, ...]) -> None:
    """vsish on a booted host: -e get|set|ls NODE [VALUE]; `-e set /reliability/crashMe/Panic 1`
    crashes it now, `-e set /reliability/crashMe/JournalHalfHome 1` in the middle of its next
    VMFS journal transaction (the host's process ends as at a power cut)."""
    _client("vsish", host_name, state_dir, args)


@main.command("esxtop", context_settings={"ignore_unknown_options": True})
@_with_client_options
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def esxtop_command(host_name: str | None, state_dir: Path, args: tuple[str, ...]) -> None:
    """esxtop on a booted host: interactive on a terminal, or -b -d SECONDS -n ITERATIONS (CSV)."""
    try:
        path = _find(host_name, state_dir)
    except HostsimError as exc:
        _fail(str(exc))

    def sampler(delay_us: int) -> st.HostSample:
        if delay_us:
            time.sleep(delay_us / SECOND)
        reply = request(path, "sample")
        if reply.get("rc") != 0 or "sample" not in reply:
            raise ConsoleUnreachable(reply.get("output", "no sample").strip())
        return st.sample_from_dict(reply["sample"])

    try:
        code = esxtop_main(list(args), sampler)
    except HostsimError as exc:
        _fail(str(exc))
    sys.exit(code)


__all__ = ["asdict", "main"]
