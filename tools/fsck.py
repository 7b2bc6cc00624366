"""vmfs-fsck: check and repair a VMFS volume, with e2fsck's options and exit codes.

    vmfs-fsck [-n|-y|-p] [-f] [-v] [-C FD] [--json] [--watch] [--lease S] [--stale-host UUID]
              [--force-live] [--host-uuid UUID] IMAGE...

IMAGE... are the extents of one volume (image files or block devices).  Exit codes are e2fsck's,
OR-ed: 0 clean, 1 errors corrected, 4 errors left uncorrected, 8 operational error, 16 usage
error, 32 cancelled.  All checking and repairing is :func:`vmfs.fsck.check`; this module only
parses options and prints.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from vmfs.cluster.host import HostIdentity
from vmfs.fsck import Event, ExitCode, FsckOptions, Mode, Policy, Problem, Report, check
from vmfs.fsck.problems import Flag
from vmfs.mkfs.options import check_uuid

PROG = "vmfs-fsck"


class _Progress:
    """click progress bars for -C, one per pass, on a terminal only."""

    def __init__(self, fd: int | None) -> None:
        self.stream = None
        if fd is not None:
            stream = sys.stdout if fd in (0, 1) else sys.stderr if fd == 2 else os.fdopen(fd, "w", closefd=False)
            if stream.isatty():
                self.stream = stream
        self.bar: Any = None
        self.label = ""
        self.done = 0

    def __call__(self, label: str, done: int, total: int) -> None:
        if self.stream is None or total <= 0:
            return
        if label != self.label:
            self.close()
            self.bar = click.progressbar(length=total, label=label.split(":")[0], file=self.stream)
            self.bar.__enter__()
            self.label, self.done = label, 0
        self.bar.update(max(done - self.done, 0))
        self.done = done
        if done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
            self.label = ""


class _Printer:
    def __init__(self, image: str, policy: Policy, verbose: bool, progress: _Progress) -> None:
        self.image = image
        self.policy = policy
        self.mode = policy.mode
        self.verbose = verbose
        self.progress = progress

    def __call__(self, event: Event) -> None:
        self.progress.close()
        if event.kind == "pass":
            if event.phase == "check" or self.verbose:
                click.echo(event.text if event.phase == "check" else f"  ({event.phase}) {event.text}")
        elif event.kind == "phase":
            click.echo(f"{self.image}: {event.text}")
        elif event.kind == "note":
            if event.phase == "check" or self.verbose or event.text.startswith("repair failed"):
                click.echo(event.text)
        elif event.kind == "problem" and event.finding is not None:
            f = event.finding
            if f.phase == "repair" and not self.verbose:
                return
            asked = (self.policy.repairable and f.fix and not f.problem.flags & (Flag.FATAL | Flag.NO_FIX)
                     and not (self.policy.vmfs6 and not f.problem.flags & Flag.V6))
            if self.mode is Mode.ASK and f.phase == "check" and asked:
                return  # the question showed it
            click.echo(_problem_line(self.image, f.problem, f.message, f.fix, f.answer, self.mode))


def _problem_line(image: str, problem: Problem, message: str, fix: str, answer: bool, mode: Mode) -> str:
    text = message[0].upper() + message[1:]
    if problem.flags & (Flag.FATAL | Flag.NO_FIX) or not fix:
        return f"{text}."
    if mode is Mode.PREEN:
        return f"{image}: {text}.  {'FIXED' if answer else 'NOT FIXED'}."
    return f"{text}.  {fix}? {'yes' if answer else 'no'}"


def _ask(problem: Problem, subject: str, question: str) -> bool:
    return click.confirm(question[0].upper() + question[1:] + "?", default=True)


def _summary(report: Report) -> list[str]:
    image = report.images[0]
    lines = []
    if report.refused:
        lines.append(f"{image}: {report.refused}")
    remaining = report.verify.findings if report.verify is not None else []
    for f in remaining:
        lines.append(f"{image}: left uncorrected: {f.message}")
    if report.exit_code & ExitCode.CORRECTED:
        lines.append(f"\n{image}: ***** VOLUME WAS MODIFIED *****")
    s = report.summary()
    parts = []
    if "files" in s:
        parts.append(f"{s['files']['used']}/{s['files']['total']} files")
    if "blocks" in s:
        parts.append(f"{s['blocks']['used']}/{s['blocks']['total']} blocks")
    if "subBlocks" in s:
        parts.append(f"{s['subBlocks']['used']}/{s['subBlocks']['total']} sub-blocks")
    v = report.volume
    what = f"{v['version']} \"{v['label']}\"" if v else ""
    if parts:
        lines.append(f"{image}: {what}, {', '.join(parts)}".replace(": , ", ": "))
    return lines


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
@click.option("-n", "no", is_flag=True, help="Open read-only and answer no to every question.")
@click.option("-y", "yes", is_flag=True, help="Answer yes to every question (repair everything).")
@click.option("-p", "-a", "preen", is_flag=True, help="Preen: repair what is safe without questions.")
@click.option("-f", "force", is_flag=True,
              help="Force checking (VMFS keeps no clean flag, so every run is a full check).")
@click.option("-v", "verbose", is_flag=True, help="Verbose: repairs as they happen, timings.")
@click.option("-C", "progress_fd", type=int, default=None, metavar="FD",
              help="Progress bars on file descriptor FD (0: standard output), when it is a terminal.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (needs -n, -y or -p).")
@click.option("--watch", is_flag=True,
              help="Watch heartbeat slots in use by other hosts for the lease: no change = host gone.")
@click.option("--lease", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Lease for --watch (default: the volume's, else 16 s).")
@click.option("--stale-host", multiple=True, metavar="UUID|all",
              help="Treat the in-use heartbeat slots of this host (or of all hosts) as stale.")
@click.option("--force-live", is_flag=True, help="Repair even beside hosts whose heartbeat is live or unknown.")
@click.option("--host-uuid", default=None, metavar="UUID",
              help="The host UUID vmfs-fsck writes with (default: derived from /etc/machine-id, not the "
                   "one vmfs-mount uses).")
def cli(images: tuple[str, ...], no: bool, yes: bool, preen: bool, force: bool, verbose: bool,
        progress_fd: int | None, as_json: bool, watch: bool, lease: float | None, stale_host: tuple[str, ...],
        force_live: bool, host_uuid: str | None) -> int:
    """Check (and repair) the VMFS volume on IMAGE... (the extents of one volume)."""
    del force  # accepted for e2fsck compatibility: there is no clean flag to skip a check on
    if sum((no, yes, preen)) > 1:
        raise click.UsageError("only one of -n, -y and -p may be given")
    stale = set()
    for value in stale_host:
        if value != "all":
            try:
                value = check_uuid(value, "host UUID")
            except ValueError as exc:
                raise click.UsageError(str(exc)) from None
        stale.add(value)
    if host_uuid is not None:
        try:
            host_uuid = check_uuid(host_uuid, "host UUID")
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    mode = Mode.NO if no else Mode.YES if yes else Mode.PREEN if preen else Mode.ASK
    if mode is Mode.ASK:
        if as_json:
            raise click.UsageError("--json needs -n, -y or -p")
        if not sys.stdin.isatty():
            click.echo(f"{PROG}: need a terminal for interactive repairs (give -n, -y or -p)", err=True)
            return ExitCode.OPERATIONAL
    progress = _Progress(None if as_json else progress_fd)
    policy = Policy(mode, ask=_ask)
    printer = None if as_json else _Printer(images[0], policy, verbose, progress)
    options = FsckOptions(
        policy=policy,
        watch=watch,
        lease=lease,
        stale_hosts=frozenset(stale),
        force_live=force_live,
        host=HostIdentity(uuid=host_uuid) if host_uuid else None,
        verbose=verbose,
        on_event=printer,
        on_progress=progress,
    )
    report = check(list(images), options)
    progress.close()
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
        return int(report.exit_code)
    if report.error is not None:
        click.echo(f"{PROG}: {report.error}", err=True)
    for line in _summary(report):
        click.echo(line)
    if verbose:
        for phase in (report.check, report.repair, report.verify):
            if phase is not None and phase.seconds:
                times = ", ".join(f"{k} {v:.2f}s" for k, v in phase.seconds.items())
                click.echo(f"{phase.name} times: {times}")
    return int(report.exit_code)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: usage errors exit 16 with one line, Ctrl-C exits 32."""
    try:
        code = cli.main(args=argv, prog_name=PROG, standalone_mode=False)
    except click.UsageError as exc:
        hint = f" (try '{PROG} --help')" if not isinstance(exc, click.BadParameter) else ""
        click.echo(f"{PROG}: {exc.format_message()}{hint}", err=True)
        sys.exit(ExitCode.USAGE)
    except click.Abort:
        click.echo(f"{PROG}: cancelled", err=True)
        sys.exit(ExitCode.CANCELLED)
    except KeyboardInterrupt:
        click.echo(f"{PROG}: cancelled", err=True)
        sys.exit(ExitCode.CANCELLED)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
