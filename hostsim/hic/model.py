"""The device model of a LUN: service time, queue depth, and the latencies esxtop reports.

Formulas (docs/hostsim.md, "Hardware interface", repeats them):

* Service time of a command of ``n`` bytes: ``S = fixed_us + per_byte_us * n + extra_us``
  (``extra_us`` is the fault layer's added latency), rounded to whole microseconds.
* Each host may have at most ``queue_depth`` commands outstanding on the LUN (its device queue,
  :class:`HostQueue`).  A host's commands are admitted in the order it issues them (the kernel
  queue is FIFO): command *i*, issued at ``t_i``, is admitted at ``A_i = max(t_i, A_{i-1}, C*)``
  where ``A_{i-1}`` is that host's previous admission and ``C*`` the earliest completion time
  that brings the host's outstanding admitted commands below ``queue_depth`` (``t_i`` itself
  when its queue has room).
* The device (shared by all hosts) works on ``channels`` commands at a time (1 = one actuator),
  in the order the commands are issued.  An admitted command starts on the channel free first:
  ``B_i = max(A_i, free_k)``, completes at ``C_i = B_i + S_i``, and that channel is free again
  at ``C_i``.
* Per command: ``KAVG = A_i - t_i`` (time queued in the VMkernel because the host's device
  queue was full), ``DAVG = C_i - A_i`` (time from handing the command to the device until it returns:
  waiting inside the device plus service), ``GAVG = DAVG + KAVG = C_i - t_i``
  (esx-design.md 6.3: GAVG/cmd = DAVG/cmd + KAVG/cmd).  esxtop's ``DAVG/cmd`` over an interval
  is the mean of DAVG over the commands issued in it, in milliseconds; ``CMDS/s`` is their count
  divided by the interval's length.

The model only computes times; the data of a command reaches the backing store when it is
issued (the library above is synchronous), and a caller that simulates time (the VMkernel)
holds the issuing world until ``complete_us``.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import NamedTuple


class IoRecord(NamedTuple):
    """One command's path through the model (times in microseconds).  A named tuple: one is
    made per device command, and a frozen dataclass costs several times more to build."""

    op: str  # "read", "write", "ats" or "flush"
    offset: int
    length: int
    issue_us: int
    admit_us: int
    start_us: int
    complete_us: int
    error: str | None = None

    @property
    def kavg_us(self) -> int:
        return self.admit_us - self.issue_us

    @property
    def davg_us(self) -> int:
        return self.complete_us - self.admit_us

    @property
    def gavg_us(self) -> int:
        return self.complete_us - self.issue_us


class HostQueue:
    """One host's device queue for one LUN (esxtop's DQLEN): its admitted, unfinished commands.

    ESX limits the commands each host has outstanding on a LUN; the array's channels are shared
    by all hosts.  So each host gets its own queue (admission, KAVG) in front of the one device
    (service, DAVG)."""

    def __init__(self) -> None:
        self.outstanding: list[int] = []  # completion times (a heap)
        self.last_admit = 0

    def active(self, now_us: int) -> int:
        """Commands admitted and not yet complete at ``now_us`` (esxtop's ACTV)."""
        return sum(1 for c in self.outstanding if c > now_us)


class DeviceModel:
    """Completion times for the commands of one LUN (see the module docstring for the formulas).

    Defaults are assumptions of ours (no source gives them): 0.5 ms per command plus 5 ns per
    byte (200 MB/s), a queue depth of 32 per host as commonly configured for a LUN, one channel."""

    def __init__(
        self,
        *,
        fixed_us: float = 500.0,
        per_byte_us: float = 0.005,
        queue_depth: int = 32,
        channels: int = 1,
    ) -> None:
        if fixed_us < 0 or per_byte_us < 0:
            raise ValueError("service times cannot be negative")
        if queue_depth < 1 or channels < 1:
            raise ValueError("queue depth and channels must be at least 1")
        self.fixed_us = fixed_us
        self.per_byte_us = per_byte_us
        self.queue_depth = queue_depth
        self.channels = channels
        self.queue = HostQueue()  # the queue of callers that name none (one host)
        self._free = [0] * channels  # when each channel is free again

    def service_us(self, nbytes: int, extra_us: float = 0.0) -> int:
        return round(self.fixed_us + self.per_byte_us * nbytes + extra_us)

    def outstanding(self, now_us: int) -> int:
        """Commands of the default queue admitted and not yet complete at ``now_us``."""
        return self.queue.active(now_us)

    def schedule(
        self, issue_us: int, nbytes: int, extra_us: float = 0.0, queue: HostQueue | None = None
    ) -> tuple[int, int, int]:
        """(admit, start, complete) of a command issued at ``issue_us`` through ``queue`` (a
        host's device queue; default: the model's own); updates the queue and the channels."""
        q = queue if queue is not None else self.queue
        t = max(issue_us, q.last_admit)
        out = q.outstanding
        while out and out[0] <= t:
            heapq.heappop(out)
        while len(out) >= self.queue_depth:
            t = max(t, heapq.heappop(out))
        q.last_admit = t
        free = self._free
        first = min(free)  # the channel free first (the lowest numbered of a tie, as before)
        k = free.index(first)
        start = t if t > first else first
        complete = start + self.service_us(nbytes, extra_us)
        free[k] = complete
        heapq.heappush(out, complete)
        return t, start, complete


@dataclass(frozen=True)
class StatsSample:
    """esxtop-style figures of one interval (latencies in ms per command)."""

    interval_s: float
    commands: int
    reads: int
    writes: int
    errors: int
    bytes_read: int
    bytes_written: int
    davg_ms: float
    kavg_ms: float
    gavg_ms: float

    @property
    def cmds_per_s(self) -> float:
        return self.commands / self.interval_s if self.interval_s > 0 else 0.0

    @property
    def reads_per_s(self) -> float:
        return self.reads / self.interval_s if self.interval_s > 0 else 0.0

    @property
    def writes_per_s(self) -> float:
        return self.writes / self.interval_s if self.interval_s > 0 else 0.0

    @property
    def mb_read_per_s(self) -> float:
        return self.bytes_read / (1 << 20) / self.interval_s if self.interval_s > 0 else 0.0

    @property
    def mb_written_per_s(self) -> float:
        return self.bytes_written / (1 << 20) / self.interval_s if self.interval_s > 0 else 0.0


class LunStats:
    """Counters of the commands issued to a LUN (or by one host to it), sampled per interval."""

    def __init__(self, start_us: int = 0) -> None:
        self._since = start_us
        self._reset()
        self.total_commands = 0
        self.total_errors = 0

    def _reset(self) -> None:
        self._cmds = self._reads = self._writes = self._errors = 0
        self._bread = self._bwritten = 0
        self._davg = self._kavg = 0

    def record(self, rec: IoRecord) -> None:
        self.total_commands += 1
        self._cmds += 1
        if rec.error is not None:
            self._errors += 1
            self.total_errors += 1
        if rec.op == "read":
            self._reads += 1
            self._bread += rec.length if rec.error is None else 0
        elif rec.op in ("write", "ats"):
            self._writes += 1
            self._bwritten += rec.length if rec.error is None else 0
        self._davg += rec.davg_us
        self._kavg += rec.kavg_us

    def sample(self, now_us: int) -> StatsSample:
        """Figures since the previous sample (or the start), then start a new interval."""
        n = self._cmds
        per = (lambda total: total / n / 1000.0) if n else (lambda total: 0.0)
        s = StatsSample(
            interval_s=(now_us - self._since) / 1e6,
            commands=n,
            reads=self._reads,
            writes=self._writes,
            errors=self._errors,
            bytes_read=self._bread,
            bytes_written=self._bwritten,
            davg_ms=per(self._davg),
            kavg_ms=per(self._kavg),
            gavg_ms=per(self._davg + self._kavg),
        )
        self._since = now_us
        self._reset()
        return s
