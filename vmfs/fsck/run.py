"""The pass list, the phases of a run, and the exit code (e2fsck's ``e2fsck.c`` and ``unix.c``).

A run is up to three phases over the same images:

1. **check**: the volume opened read-only over an in-memory overlay; every pass runs, every
   problem is reported with the policy's answer, nothing is repaired (a journal replay of a host
   that is gone goes to the overlay, so the passes after it see what the repair will see).  With
   -n, or when nothing is wrong, the run ends here; the images are never opened for writing.
2. **repair**: the volume opened read-write with a heartbeat slot and a journal of this host
   (:class:`vmfs.cluster.attachment.HostAttachment` for a :class:`~vmfs.cluster.host.HostIdentity`); the
   passes run again and repair what the policy says yes to, each repair in library transactions.  The device the
   library sees shows resources the check found in use as allocated, and damaged lock blocks and
   headers as the check rebuilt them (:class:`vmfs.fsck.device.FsckDevice`), so no allocation of
   the repair can take a block a file still uses, even before pass 5 has fixed the bitmaps.
3. **verify**: a quiet read-only check of the result; what it still finds is "left uncorrected".

The repair does not start when no answer is yes (on VMFS6, problems without the table's ``V6``
flag are reported and left alone), in preen mode when a problem is not preen-safe, or beside
another host whose heartbeat is live or was not watched (unless forced).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vmfs.cluster.attachment import HostAttachment
from vmfs.device.base import BlockDevice
from vmfs.device.lvm import open_logical_volume
from vmfs.device.opener import open_device
from vmfs.device.overlay import OverlayDevice
from vmfs.errors import VmfsError
from vmfs.fsck import (
    pass1_volume,
    pass2_descriptors,
    pass3_directories,
    pass4_connectivity,
    pass5_resources,
    pass6_heartbeats,
)
from vmfs.fsck.context import CheckState, Context, Event, Finding, FsckOptions, fsck_identity
from vmfs.fsck.device import FsckDevice
from vmfs.fsck.policy import Mode
from vmfs.fsck.problems import Code, Flag
from vmfs.ondisk import resource as R
from vmfs.volume.volume import Volume


class ExitCode(enum.IntEnum):
    """e2fsck's exit codes (``e2fsck.h``); a run ORs them."""

    OK = 0
    CORRECTED = 1
    REBOOT = 2
    UNCORRECTED = 4
    OPERATIONAL = 8
    USAGE = 16
    CANCELLED = 32
    LIBRARY = 128


@dataclass(frozen=True)
class PassSpec:
    number: str
    label: str
    run: Callable[[Context], None]


#: The passes in the order they run.  Pass 6's journal recovery runs right after pass 1: a
#: journal must be replayed before anything else reads the metadata it rewrites.
PASSES: tuple[PassSpec, ...] = (
    PassSpec("1", pass1_volume.LABEL, pass1_volume.run),
    PassSpec("6r", pass6_heartbeats.RECOVER_LABEL, pass6_heartbeats.recover),
    PassSpec("2", pass2_descriptors.LABEL, pass2_descriptors.run),
    PassSpec("3", pass3_directories.LABEL, pass3_directories.run),
    PassSpec("4", pass4_connectivity.LABEL, pass4_connectivity.run),
    PassSpec("5", pass5_resources.LABEL, pass5_resources.run),
    PassSpec("6", pass6_heartbeats.LABEL, pass6_heartbeats.run),
)


@dataclass
class PhaseResult:
    name: str
    findings: list[Finding]
    notes: list[str]
    state: CheckState | None
    volume: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    error: str | None = None  # an operational error ended the phase


@dataclass
class Report:
    images: list[str]
    exit_code: int = 0
    volume: dict[str, Any] = field(default_factory=dict)
    check: PhaseResult | None = None
    repair: PhaseResult | None = None
    verify: PhaseResult | None = None
    refused: str | None = None
    error: str | None = None

    @property
    def findings(self) -> list[Finding]:
        return self.check.findings if self.check else []

    @property
    def remaining(self) -> list[Finding]:
        if self.verify is not None:
            return self.verify.findings
        return [f for f in self.findings if not f.fixed]

    def summary(self) -> dict[str, Any]:
        phase = self.verify or self.repair or self.check
        usage = phase.state.usage if phase and phase.state else {}
        out: dict[str, Any] = {}
        for kind, key in ((R.RES_FD, "files"), (R.RES_FB, "blocks"), (R.RES_SB, "subBlocks")):
            if kind in usage:
                total, used = usage[kind]
                out[key] = {"used": used, "total": total}
        return out

    def as_dict(self) -> dict[str, Any]:
        def phase(p: PhaseResult | None) -> dict[str, Any] | None:
            if p is None:
                return None
            return {"findings": [f.as_dict() for f in p.findings], "notes": p.notes, "seconds": p.seconds,
                    "error": p.error}

        return {
            "images": self.images,
            "exitCode": int(self.exit_code),
            "volume": self.volume,
            "check": phase(self.check),
            "repair": phase(self.repair),
            "verify": phase(self.verify),
            "refused": self.refused,
            "error": self.error,
            "summary": self.summary(),
        }


def _emit(options: FsckOptions, kind: str, phase: str, text: str) -> None:
    if options.on_event is not None:
        options.on_event(Event(kind, phase, text))


def run_phase(name: str, paths: list[str], options: FsckOptions, *, carried: CheckState | None = None) -> PhaseResult:
    """One phase over the images (see the module docstring)."""
    writable = name == "repair"
    quiet = name == "verify"
    devices: list[BlockDevice] = []
    result = PhaseResult(name, [], [], None)
    volume: Volume | None = None
    try:
        for p in paths:
            devices.append(open_device(p, readonly=not writable))
        lv = open_logical_volume(list(devices))
    except VmfsError as exc:
        for d in devices:
            d.close()
        result.error = str(exc)
        return result
    raw = lv if writable else OverlayDevice(lv)
    device = FsckDevice(raw, readonly=not writable)
    state = CheckState(name, lv, raw=raw, device=device)
    ctx = Context(state, options, repairing=writable, quiet=quiet)
    result.state = state
    try:
        start = time.monotonic()
        if not quiet:
            _emit(options, "pass", name, PASSES[0].label)
        pass1_volume.prepare(ctx)
        if state.fatal:
            return result
        if state.geometry is not None and state.geometry.vmfs6:
            options.policy.vmfs6 = True  # only the repairs made on VMFS6 (problems' V6 flag)
        for offset, image in state.header_patches.items():
            device.patch(offset, image)
        for offset, image in list(state.lock_patches.items()):
            device.patch(offset, image)
        if carried is not None:
            for offset, image in carried.lock_patches.items():
                state.patch(offset, image)
            for offset, (resources, fields, res) in carried.guards.items():
                device.guard(offset, resources, fields, res)
            state.carried_stale = {(s.slot, s.hb.hbGen, s.hb.stamp): s.reason
                                   for s in carried.slots if s.liveness == "stale"}
        try:
            volume = Volume(device, lvm=lv)
            if writable:
                try:
                    state.attachment = HostAttachment(volume, options.host or fsck_identity())
                except BaseException:
                    volume, opened = None, volume
                    opened.close()
                    raise
        except VmfsError as exc:
            if writable:
                result.error = f"cannot open the volume for writing: {exc}"
                return result
            ctx.problem(Code.RESOURCE_HEADER_LOST, file="the volume", detail=f"it cannot be opened ({exc})")
            return result
        state.volume = volume
        state.geometry = volume.geometry
        result.volume = {
            "version": volume.version_string,
            "label": volume.label,
            "uuid": volume.uuid,
            "size": volume.device.size,
            "blockSize": volume.geometry.block_size,
        }
        result.seconds["1 prepare"] = time.monotonic() - start
        for i, spec in enumerate(PASSES):
            t = time.monotonic()
            if i and not quiet and spec.number != "6r":
                _emit(options, "pass", name, spec.label)
            spec.run(ctx)
            result.seconds[spec.number] = result.seconds.get(spec.number, 0.0) + time.monotonic() - t
            if state.fatal:
                break
    except VmfsError as exc:
        result.error = str(exc)
    finally:
        result.findings = ctx.findings
        result.notes = ctx.notes
        try:
            if volume is not None:
                volume.close()
            else:
                device.close()
        except VmfsError as exc:  # pragma: no cover - closing a volume we wrote failed
            result.error = result.error or f"closing the volume: {exc}"
    return result


def check(paths: list[str], options: FsckOptions) -> Report:
    """Check (and with a repairing policy, repair) the volume on ``paths`` (its extents)."""
    try:
        return _check(paths, options)
    finally:
        options.policy.vmfs6 = False  # a VMFS6 volume set it for this run only


def _check(paths: list[str], options: FsckOptions) -> Report:
    report = Report([str(p) for p in paths])
    policy = options.policy
    check_phase = run_phase("check", report.images, options)
    report.check = check_phase
    report.volume = check_phase.volume
    if check_phase.error is not None:
        report.error = check_phase.error
        report.exit_code = ExitCode.OPERATIONAL | (ExitCode.UNCORRECTED if check_phase.findings else 0)
        return report
    state = check_phase.state
    assert state is not None
    if state.fatal:
        report.exit_code = ExitCode.UNCORRECTED | ExitCode.OPERATIONAL
        return report
    findings = check_phase.findings
    if not findings:
        report.exit_code = ExitCode.OK
        return report
    if policy.mode is Mode.NO or not any(f.answer for f in findings):
        report.exit_code = ExitCode.UNCORRECTED
        left = sorted({f.problem.name for f in findings if not f.problem.flags & (Flag.V6 | Flag.FATAL)})
        if state.geometry is not None and state.geometry.vmfs6 and policy.mode is not Mode.NO and left:
            report.refused = f"not repaired on VMFS6 by this version: {', '.join(left)}"
        elif policy.mode is Mode.PREEN and policy.unexpected:
            report.refused = "UNEXPECTED INCONSISTENCY; RUN vmfs-fsck MANUALLY (without -p)"
        return report
    if policy.mode is Mode.PREEN and policy.unexpected:
        report.refused = "UNEXPECTED INCONSISTENCY; RUN vmfs-fsck MANUALLY (without -p)"
        report.exit_code = ExitCode.UNCORRECTED
        return report
    others = [s for s in state.slots if s.in_use and s.liveness in ("in use", "live")]
    if others and not options.force_live:
        who = ", ".join(f"{s.hb.owner} (slot {s.slot}, {'live' if s.liveness == 'live' else 'not watched'})"
                        for s in others)
        report.refused = (f"the volume is in use by {who}: not repairing (use --watch to test the heartbeats, "
                          "--stale-host to declare a host gone, or --force-live)")
        report.exit_code = ExitCode.UNCORRECTED | ExitCode.OPERATIONAL
        return report
    _emit(options, "phase", "repair", "Repairing")
    report.repair = run_phase("repair", report.images, options, carried=state)
    if report.repair.error is not None:
        report.error = report.repair.error
    report.verify = run_phase("verify", report.images, options)
    code = 0
    if report.repair.findings and any(f.fixed for f in report.repair.findings):
        code |= ExitCode.CORRECTED
    if report.verify.findings or report.verify.error or (report.verify.state and report.verify.state.fatal):
        code |= ExitCode.UNCORRECTED
    else:
        code |= ExitCode.CORRECTED
    if report.error is not None:
        code |= ExitCode.OPERATIONAL
    report.exit_code = code
    return report
