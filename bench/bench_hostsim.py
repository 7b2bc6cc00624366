"""The whole simulated host's speed: simulated seconds per wall second at 1, 8 and 32 VMs.

    .venv/bin/python bench/bench_hostsim.py [--vms 1,8,32] [--luns memory,image]
                                            [--guests server,cpu,memory,disk] [--seconds 10]
                                            [--warmup 2] [--repeat 1] [--seed 1] [--json out.json]
    .venv/bin/python bench/bench_hostsim.py --profile DIR --vms 8 --guests server   # where the time goes
    .venv/bin/python bench/bench_hostsim.py --one memory:8:server:10:2:1            # one case, JSON

A host is booted through :class:`hostsim.console.host.Host` from a generated config (4 pCPUs at
2 GHz, memory for every VM, ESX 4 mode) on one LUN (the default device model, 0.5 ms + 200 MB/s
per command, with 4 channels), in memory (``Lun.memory``) or on a sparse
image file (``Lun.image``), with a VMFS5 datastore that the console makes on it.  N VMs (1 vCPU,
256 MB, one 32 MB eagerzeroedthick disk: its blocks are allocated and zeroed when
the VM is created (that I/O keeps the simulated device busy for its time, about 5 s at 32 VMs, and
the warm-up is lengthened by it), so the timed part measures steady state, not a thin disk's first writes, each of
which zeroes a whole 1 MiB block on the device) are created and powered on, each running the same guest program
with its own seed; the host runs ``--warmup`` simulated seconds (the heap's first touch, the thin
disk's first block allocations), then ``--seconds`` more, which are timed.  Guests:

* ``server`` (the default realistic guest): per simulated second about 10 CPU bursts of 2-8 ms,
  1000 page touches over a 16 MiB heap's working set (80 % reads, 20 % writes of fresh bytes) and
  100 disk commands of 4, 16 or 64 KiB (half reads, half writes of fresh bytes, random over the
  whole 32 MiB disk), each really read from or written to the VMDK on the VMFS volume;
* ``cpu``, ``memory``, ``disk``: the server's CPU bursts only, its page touches only, its disk
  commands only (each with the server's halts), so the cost of each part shows on its own;
* ``server/N``: the server at 1/N of its request rate (each request the same, the halt after it
  N times longer): at 8 VMs, ``server/10`` is 10 commands, 100 touches and one burst per VM and
  simulated second;
* ``light``: what the goal leaves room for today (per simulated second one burst of 10-30 ms,
  100 touches of which 10 writes, one read and one write of 16 KiB);
* ``idle``: one halt a second (the host's own periodic work: memory manager, scheduler periods,
  VMFS heartbeat).

Reported per case: simulated s per wall s (the goal is >= 100 at 8 VMs), CPU seconds of the
process beside the wall seconds (the machine is shared), engine events per simulated second (the
engine's scheduling counter), guest disk commands, the LUN's device commands and guest page touches
per simulated second, and wall microseconds per engine event; ``digest`` (in the JSON of
``--one`` and ``--json``) hashes the scheduler's dump, every disk world's counters and the run's
totals, so two builds can be shown to simulate the same thing for the same seed.  Each case runs in a fresh
interpreter (``--one``), best of ``--repeat`` by wall time.  ``--profile DIR`` runs each case
once more under cProfile (the timed part only), writes ``DIR/<case>.prof`` and prints the wall
time split by area (engine, CPU scheduler, storage stack, memory, guest, VMM, VMFS, hic) and the
top functions by own time with file:line, calls, % and µs per call; cProfile inflates small
functions, so the split is a guide and the speed figure is the unprofiled run's.  ``--pyspy DIR``
runs each case under py-spy (a sampler: it does not inflate small functions) and prints the
same split from its samples.  The baseline is the ``idle`` guest: what the host costs with
nothing to do.  A script, not a test: the figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hostsim.console import config as cfg  # noqa: E402
from hostsim.console.host import Host  # noqa: E402
from hostsim.vmkernel.engine import SECOND  # noqa: E402

VM_MB = 256
DISK_MB = 32
PCPUS = 4
#: the LUN's channels: one (the config default) serves about 1,500 of these commands per second,
#: which 32 server VMs (3,200/s) would saturate; four keep every VM at its own rate
CHANNELS = 4

#: the server's parts; each variant keeps one of them (and the halts that pace it)
CPU_PART = "    compute 2ms..8ms                          # a request's CPU burst\n"
MEM_PART = ("    touch 16MiB working-set 50% random 80 read         # 80 reads of its hot heap pages\n"
            "    touch 16MiB working-set 50% random 20 write random # 20 pages written with fresh bytes\n")
DISK_PART = """    repeat 5
        choose
        weight 2
            read scsi0:0 4KiB random within 32MiB
        weight 2
            read scsi0:0 16KiB random within 32MiB
        weight 1
            read scsi0:0 64KiB random within 32MiB
        end
        choose
        weight 2
            write scsi0:0 4KiB random within 32MiB random
        weight 2
            write scsi0:0 16KiB random within 32MiB random
        weight 1
            write scsi0:0 64KiB random within 32MiB random
        end
    end
"""
HEAP = "touch 16MiB write random                      # the heap, once: 4096 private pages\n"
PACE = "    halt 85ms..95ms                           # waiting for the next batch of requests\n"

GUESTS = {
    "server": HEAP + "forever\n" + CPU_PART + MEM_PART + DISK_PART + PACE + "end\n",
    "cpu": "forever\n" + CPU_PART + PACE + "end\n",
    "memory": HEAP + "forever\n" + MEM_PART + PACE + "end\n",
    "disk": "forever\n" + DISK_PART + PACE + "end\n",
    "idle": "forever\n    halt 1s\nend\n",
    # what fits the 100x goal at 8 VMs today: per second 1 burst, 100 touches, 2 commands of 16 KiB
    "light": HEAP + """forever
    compute 10ms..30ms
    touch 16MiB working-set 50% random 90 read
    touch 16MiB working-set 50% random 10 write random
    read scsi0:0 16KiB random within 32MiB
    write scsi0:0 16KiB random within 32MiB random
    halt 960ms..990ms
end
""",
}

AREAS = (  # file path fragment -> area, first match wins
    ("hostsim/vmkernel/engine.py", "engine"),
    ("hostsim/vmkernel/cpu.py", "cpu sched"),
    ("hostsim/vmkernel/entitlement.py", "cpu sched"),
    ("hostsim/vmkernel/pools.py", "cpu sched"),
    ("hostsim/vmkernel/storage.py", "storage stack"),
    ("hostsim/vmkernel/mclock.py", "storage stack"),
    ("hostsim/vmkernel/memory/", "memory"),
    ("hostsim/vmkernel/vmfsclock.py", "vmfs heartbeat"),
    ("hostsim/vmm/guest/", "guest"),
    ("hostsim/vmm/", "vmm"),
    ("hostsim/hic/", "hic"),
    ("vmfs/", "vmfs library"),
    ("hostsim/console/", "console"),
)


def guest_text(kind: str, seed: int) -> str:
    """The program of guest ``kind``; ``server/N`` is the server at 1/N of its request rate (the
    same request, paced N times slower: N = 10 is one request a second), so a run over several
    N shows how speed falls with load instead of at one load chosen to fit the goal."""
    if kind.startswith("server/"):
        n = int(kind.split("/", 1)[1])
        if n < 1:
            raise SystemExit(f"{kind}: N must be at least 1")
        pace = f"    halt {100 * n - 15}ms..{100 * n - 5}ms\n"
        body = HEAP + "forever\n" + CPU_PART + MEM_PART + DISK_PART + pace + "end\n"
        return f"guest bench-server-{n}\nseed {seed}\n" + body
    return f"guest bench-{kind}\nseed {seed}\n" + GUESTS[kind]


def host_config(workdir: Path, lun: str, vms: int, seed: int) -> Path:
    """Write the host config (and the image file) for ``vms`` VMs; returns its path."""
    lun_mb = vms * (DISK_MB + VM_MB) + 2048
    if lun == "image":
        image = workdir / "lun0.img"
        with image.open("wb") as f:
            f.truncate(lun_mb << 20)
        backing = f"image = {image.name}"
    else:
        backing = f"memory = {lun_mb}M"
    text = f"""[host]
name = bench
pcpus = {PCPUS}
mhz = 2000
memory_mb = {1024 + vms * 400}
mode = esx4
seed = {seed}
epoch = 2026-12-01T08:00:00Z

[lun lun0]
{backing}
datastore = ds1
format = vmfs5
channels = {CHANNELS}
"""
    path = workdir / "bench.host"
    path.write_text(text)
    return path


def _seq(engine: Any) -> int:
    """The engine's scheduling counter (events scheduled so far), read without advancing it."""
    return int(engine._seq.__reduce__()[1][0])


def run_case(lun: str, vms: int, guest: str, seconds: int, warmup: int, seed: int,
             profile: Path | None = None) -> dict[str, Any]:
    """One measurement in this interpreter: boot, power on, warm up, time ``seconds``."""
    with tempfile.TemporaryDirectory(prefix="bench-hostsim-") as tmp:
        work = Path(tmp)
        program = work / f"{guest.replace('/', '-')}.guest"
        program.write_text(guest_text(guest, seed))
        t0 = time.perf_counter()
        host = Host(cfg.load(host_config(work, lun, vms, seed)))
        for i in range(vms):
            host.create_vm(f"vm{i:02d}", memory_mb=VM_MB, disks=((DISK_MB, "eagerzeroedthick"),), program=program)
            host.power_on(f"vm{i:02d}")
        boot_s = time.perf_counter() - t0
        # creating the disks (zeroing them) and the .vswp files queued that I/O on the simulated
        # device at time 0: the warm-up starts once the device has worked through it
        backlog_s = -(-max(host.luns["lun0"].model._free) // SECOND)
        warmup += backlog_s
        host.run(warmup * SECOND)
        runs = [r for rec in host.inventory.values() if rec.running for r in rec.running.vmm.runs]
        worlds = [w for rec in host.inventory.values() if rec.running for w in rec.running.worlds.values()]
        dev = host.stack.devices["lun0"]
        before = (_seq(host.engine), sum(r.touches for r in runs), sum(w.counters().cmds for w in worlds),
                  dev.device_commands, sum(r.statements for r in runs))
        prof = cProfile.Profile() if profile else None
        c0, t0 = time.process_time(), time.perf_counter()
        if prof:
            prof.enable()
        host.run((warmup + seconds) * SECOND)
        if prof:
            prof.disable()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        after = (_seq(host.engine), sum(r.touches for r in runs), sum(w.counters().cmds for w in worlds),
                 dev.device_commands, sum(r.statements for r in runs))
        events, touches, cmds, devcmds, stmts = (a - b for a, b in zip(after, before, strict=True))
        used = sum(rec.running.cpu.counters().used_us for rec in host.inventory.values() if rec.running)
        digest = hashlib.sha256("\n".join([host.cpu.dump(), *(repr(w.counters()) for w in worlds),
                                            repr(after)]).encode()).hexdigest()[:16]
        host.shutdown()
    out = {"lun": lun, "vms": vms, "guest": guest, "seconds": seconds, "warmup": warmup, "backlog_s": backlog_s,
           "seed": seed,
           "boot_s": boot_s, "wall_s": wall, "cpu_s": cpu, "sim_per_wall": seconds / wall,
           "sim_per_cpu": seconds / cpu if cpu else 0.0,
           "events_per_sim_s": events / seconds, "cmds_per_sim_s": cmds / seconds,
           "devcmds_per_sim_s": devcmds / seconds, "touches_per_sim_s": touches / seconds,
           "statements_per_sim_s": stmts / seconds, "vm_cpu_pct": 100 * used / (warmup + seconds) / SECOND / vms,
           "us_per_event": 1e6 * wall / events if events else 0.0,
           "digest": digest}  # the run's scheduler dump, disk counters and totals: same seed, same digest
    if prof:
        profile.mkdir(parents=True, exist_ok=True)
        path = profile / f"{lun}-{vms}-{guest.replace('/', '-')}.prof"
        prof.dump_stats(str(path))
        out["profile"] = str(path)
    return out


def area_of(filename: str) -> str:
    for fragment, area in AREAS:
        if fragment in filename:
            return area
    return "python/other"


def profile_report(path: str, top: int = 25) -> str:
    """The wall split by area and the top functions by own time of one cProfile dump."""
    st = pstats.Stats(path)
    total = st.total_tt  # type: ignore[attr-defined]
    by_area: dict[str, float] = {}
    rows = []
    for (filename, line, func), (_cc, nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        by_area[area_of(filename)] = by_area.get(area_of(filename), 0.0) + tt
        rows.append((tt, ct, nc, f"{_short(filename)}:{line}", func))
    lines = [f"profile {path}: {total:.2f} s of own time (cProfile)", "  split by area (own time):"]
    for area, tt in sorted(by_area.items(), key=lambda kv: -kv[1]):
        lines.append(f"    {area:<16} {100 * tt / total:5.1f} %")
    lines.append(f"  top {top} functions by own time:")
    lines.append(f"    {'own %':>6} {'cum %':>6} {'calls':>9} {'us/call':>8}  function")
    for tt, ct, nc, where, func in sorted(rows, reverse=True)[:top]:
        lines.append(f"    {100 * tt / total:6.1f} {100 * ct / total:6.1f} {nc:>9} {1e6 * tt / max(nc, 1):8.2f}  "
                     f"{func} ({where})")
    return "\n".join(lines)


def pyspy_report(path: Path, top: int = 25) -> str:
    """The wall split of a ``py-spy record -f raw`` file, timed part only (stacks under
    ``Host.run``): by area of the innermost frame (own time, builtins included in their caller),
    then the top functions by own and by inclusive samples.  A sampler does not slow small
    functions down as cProfile does, so these shares are the ones to quote."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    areas: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not any(f.startswith("Host.run (hostsim/console/host.py") for f in frames):
            continue
        n = int(count)
        total += n
        leaf = _func(frames[-1])
        own[leaf] = own.get(leaf, 0) + n
        area = area_of(frames[-1][frames[-1].rfind("(") + 1:])
        areas[area] = areas.get(area, 0) + n
        for f in {_func(f) for f in frames}:
            incl[f] = incl.get(f, 0) + n
    if not total:
        return f"{path}: no sample inside Host.run"
    lines = [f"py-spy {path}: {total} samples in the timed part", "  split by area (own samples):"]
    lines += [f"    {a:<16} {100 * n / total:5.1f} %" for a, n in sorted(areas.items(), key=lambda kv: -kv[1])]
    lines.append(f"  top {top} functions by own samples (own %, inclusive %):")
    lines += [f"    {100 * n / total:5.1f} {100 * incl[f] / total:6.1f}  {f}"
              for f, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]]
    lines.append(f"  top {top} functions by inclusive samples:")
    lines += [f"    {100 * n / total:6.1f}  {f}" for f, n in sorted(incl.items(), key=lambda kv: -kv[1])[:top]]
    return "\n".join(lines)


def _func(frame: str) -> str:
    """``name (file:line)`` -> ``name (file)``: one entry per function, whatever the line."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def _short(filename: str) -> str:
    for marker in ("/hostsim/", "/vmfs/"):
        if marker in filename:
            return filename[filename.index(marker) + 1:]
    return filename.rsplit("/", 2)[-1] if "/" in filename else filename


HEADS = ("lun", "VMs", "guest", "sim s/wall s", "sim s/CPU s", "events/sim s", "cmds/sim s", "dev cmds/sim s",
         "touches/sim s", "us/event", "VM %CPU", "boot s")


def row(r: dict[str, Any]) -> str:
    cells = (r["lun"], r["vms"], r["guest"], f"{r['sim_per_wall']:.1f}", f"{r['sim_per_cpu']:.1f}",
             f"{r['events_per_sim_s']:.0f}", f"{r['cmds_per_sim_s']:.0f}", f"{r['devcmds_per_sim_s']:.0f}",
             f"{r['touches_per_sim_s']:.0f}", f"{r['us_per_event']:.1f}", f"{r['vm_cpu_pct']:.1f}",
             f"{r['boot_s']:.1f}")
    return " ".join(f"{c:>{max(len(h), 6)}}" for c, h in zip(cells, HEADS, strict=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vms", default="1,8,32")
    ap.add_argument("--luns", default="memory,image")
    ap.add_argument("--guests", default="server,light,cpu,memory,disk,idle")
    ap.add_argument("--seconds", type=int, default=10, help="timed simulated seconds")
    ap.add_argument("--warmup", type=int, default=2, help="simulated seconds run before the timing")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", help="also write every run's figures to this file")
    ap.add_argument("--profile", help="also run each case under cProfile and write DIR/<case>.prof")
    ap.add_argument("--pyspy", help="also run each case under py-spy (on PATH or beside python) into DIR")
    ap.add_argument("--one", help="run one case here and print its figures as JSON: LUN:VMS:GUEST:SECONDS:WARMUP:SEED")
    args = ap.parse_args()
    if args.one:
        lun, vms, guest, seconds, warmup, seed, prof = [*args.one.split(":", 6), ""][:7]
        print(json.dumps(run_case(lun, int(vms), guest, int(seconds), int(warmup), int(seed),
                                  Path(prof) if prof else None)))
        return
    print(f"host: {PCPUS} pCPUs, VMs of {VM_MB} MB with a {DISK_MB} MB eagerzeroedthick disk; "
          f"{args.seconds} simulated s timed after {args.warmup} s of warm-up (+ the creation backlog); "
          f"best of {args.repeat}; python {sys.version.split()[0]}")
    print(" ".join(f"{h:>{max(len(h), 6)}}" for h in HEADS))
    results = []
    for lun in args.luns.split(","):
        for vms in (int(v) for v in args.vms.split(",")):
            for guest in args.guests.split(","):
                best = None
                for _ in range(args.repeat):
                    r = _child([lun, vms, guest, args.seconds, args.warmup, args.seed, None])
                    results.append(r)
                    if best is None or r["wall_s"] < best["wall_s"]:
                        best = r
                assert best is not None
                print(row(best), flush=True)
                if args.profile:
                    p = _child([lun, vms, guest, args.seconds, args.warmup, args.seed, args.profile])
                    print(profile_report(p["profile"]), flush=True)
                if args.pyspy:
                    raw = Path(args.pyspy) / f"{lun}-{vms}-{guest.replace('/', '-')}.txt"
                    raw.parent.mkdir(parents=True, exist_ok=True)
                    _child([lun, vms, guest, args.seconds, args.warmup, args.seed, None], pyspy=raw)
                    print(pyspy_report(raw), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


def _child(spec: list[Any], pyspy: Path | None = None) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--one", ":".join(str(x) for x in spec if x is not None)]
    if pyspy is not None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        cmd = [exe, "record", "-r", "500", "-f", "raw", "-o", str(pyspy), "--", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        sys.exit(f"case {spec[:3]} failed:\n{out.stderr[-3000:]}")
    return json.loads(next(x for x in reversed(out.stdout.splitlines()) if x.startswith("{")))


if __name__ == "__main__":
    main()
