"""The VMkernel's event engine: our heap loop against SimPy and salabim on one workload, in one run.

    .venv/bin/python bench/bench_sim_engine.py [--worlds 1,8,32,256] [--scale 1.0] [--seed 7] [--repeat 3]
                                               [--json out.json]

The workload, written once per engine in that engine's own idiom (all three as generators):

* ``N`` worlds; each loops forever: a compute burst (a timeout of 200..1999 us drawn from the
  world's own seeded generator), then one I/O on a shared LUN (a FIFO resource of queue depth 32):
  request a slot, hold it for a service time of 100..599 us (same generator), release it.
* one sampler with a 2 s period (esxtop's sampling tick) that records the LUN's queue length and the
  I/Os done so far.

Every process step (a world resumed after a burst, after its slot is granted, after its service;
a tick) appends a line ``time world what`` to a trace that is hashed as it grows (SHA-256), so
memory holds no trace.  "steps/s" is steps per wall-clock second, the same count whatever the
engine does inside (its own event objects are not counted); "sim s / wall s" is simulated time
per wall time.  Each (engine, N) runs ``--repeat`` times (default 3, engines interleaved), each
time in a fresh Python process (fresh hash seed) with the same seed: "determinism" says whether
all traces were byte-identical; the wall figure is the best run.  "RSS" is the child's peak
resident set; "+MiB" how much it grew during the run (the model, queues and heap).  "same as
heap" says whether the engine's trace equals the heap loop's: the three implement the same
semantics (FIFO queue, FIFO ties), so a difference points at a tie broken another way.  Ratios
are steps/s of the heap loop / the candidate (above 1: the heap loop is faster).

Simulated seconds per N are chosen so each run has a few hundred thousand steps (``--scale``
multiplies them).  A script, not a test: figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ENGINES = ("heap", "simpy", "salabim")
QUEUE_DEPTH = 32
TICK_US = 2_000_000
#: simulated seconds per number of worlds at --scale 1 (about 130k to 550k steps each)
SIM_SECONDS = {1: 60, 8: 8, 32: 4, 256: 2}


class Trace:
    """Trace lines hashed in batches: byte-identical runs give the same digest, memory stays flat."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.count = 0
        self.digest = hashlib.sha256()

    def add(self, now: float, who: int, what: str) -> None:
        self.lines.append(f"{int(now)} {who} {what}\n")
        if len(self.lines) >= 4096:
            self.flush()

    def flush(self) -> None:
        self.count += len(self.lines)
        self.digest.update("".join(self.lines).encode())
        self.lines.clear()


def _rng(seed: int, world: int) -> random.Random:
    # a str seed goes through SHA-512 in CPython: independent of the hash seed of the process
    return random.Random(f"{seed}:{world}")


def run_heap(worlds: int, until: int, seed: int, trace: Trace) -> None:
    from hostsim.vmkernel.engine import Engine

    eng = Engine(seed)
    lun = eng.resource(QUEUE_DEPTH, "lun")
    done = [0]

    def world(i: int):
        rng = _rng(seed, i)
        while True:
            yield eng.timeout(rng.randrange(200, 2000))
            trace.add(eng.now, i, "c")
            with lun.request() as req:
                yield req
                trace.add(eng.now, i, "g")
                yield eng.timeout(rng.randrange(100, 600))
            done[0] += 1
            trace.add(eng.now, i, "d")

    def sampler():
        while True:
            yield eng.timeout(TICK_US)
            trace.add(eng.now, -1, f"s{len(lun.queue)}:{done[0]}")

    for i in range(worlds):
        eng.process(world(i))
    eng.process(sampler())
    eng.run(until=until)


def run_simpy(worlds: int, until: int, seed: int, trace: Trace) -> None:
    import simpy

    env = simpy.Environment()
    lun = simpy.Resource(env, capacity=QUEUE_DEPTH)
    done = [0]

    def world(i: int):
        rng = _rng(seed, i)
        while True:
            yield env.timeout(rng.randrange(200, 2000))
            trace.add(env.now, i, "c")
            with lun.request() as req:
                yield req
                trace.add(env.now, i, "g")
                yield env.timeout(rng.randrange(100, 600))
            done[0] += 1
            trace.add(env.now, i, "d")

    def sampler():
        while True:
            yield env.timeout(TICK_US)
            trace.add(env.now, -1, f"s{len(lun.queue)}:{done[0]}")

    for i in range(worlds):
        env.process(world(i))
    env.process(sampler())
    env.run(until=until)


def run_salabim(worlds: int, until: int, seed: int, trace: Trace) -> None:
    import salabim as sim

    sim.yieldless(False)  # generator processes, as in the other two (yieldless mode needs greenlet)
    env = sim.Environment(trace=False, random_seed=seed)
    lun = sim.Resource("lun", capacity=QUEUE_DEPTH, monitor=False, env=env)
    done = [0]

    class World(sim.Component):
        def setup(self, index: int) -> None:
            self.index = index
            self.rng = _rng(seed, index)

        def process(self):
            i, rng = self.index, self.rng
            while True:
                yield self.hold(rng.randrange(200, 2000))
                trace.add(env.now(), i, "c")
                yield self.request(lun)
                trace.add(env.now(), i, "g")
                yield self.hold(rng.randrange(100, 600))
                self.release(lun)
                done[0] += 1
                trace.add(env.now(), i, "d")

    class Sampler(sim.Component):
        def process(self):
            while True:
                yield self.hold(TICK_US)
                trace.add(env.now(), -1, f"s{len(lun.requesters())}:{done[0]}")

    for i in range(worlds):
        World(index=i, env=env)
    Sampler(env=env)
    env.run(till=until - 1)  # salabim's till is inclusive; integer times make this the window [0, until)


RUNNERS = {"heap": run_heap, "simpy": run_simpy, "salabim": run_salabim}


def child(engine: str, worlds: int, sim_seconds: float, seed: int) -> dict[str, Any]:
    """One measured run in this process; returns the figures as a dict."""
    t0 = time.perf_counter()
    if engine == "simpy":
        import simpy  # noqa: F401
    elif engine == "salabim":
        import salabim  # noqa: F401
    else:
        import hostsim.vmkernel.engine  # noqa: F401
    imported = time.perf_counter() - t0
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    trace = Trace()
    until = int(sim_seconds * 1_000_000)
    start = time.perf_counter()
    RUNNERS[engine](worlds, until, seed, trace)
    wall = time.perf_counter() - start
    trace.flush()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    gui = sorted(m for m in sys.modules if m.split(".")[0] in ("tkinter", "_tkinter", "PIL", "cv2"))
    return {
        "engine": engine, "worlds": worlds, "sim_seconds": sim_seconds, "wall": wall,
        "steps": trace.count, "digest": trace.digest.hexdigest(), "import_s": imported,
        "rss_mib": rss_after / 1024, "grew_mib": (rss_after - rss_before) / 1024, "gui_modules": gui,
    }


def _spawn(engine: str, worlds: int, sim_seconds: float, seed: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", engine, str(worlds), str(sim_seconds), str(seed)],
        capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        return {"engine": engine, "worlds": worlds, "error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout)


def _version(engine: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    if engine == "heap":
        return "hostsim.vmkernel.engine"
    try:
        return f"{engine} {version(engine)}"
    except PackageNotFoundError:
        return f"{engine} (not installed)"


def measure(worlds_list: list[int], scale: float, seed: int, repeat: int) -> list[dict[str, Any]]:
    """Run every engine ``repeat`` times per N, interleaved (a load burst from elsewhere on the
    machine then hits all engines alike); keep the fastest run, compare all runs' traces."""
    rows = []
    for worlds in worlds_list:
        sim_seconds = SIM_SECONDS.get(worlds, max(1, 512 // worlds)) * scale
        runs: dict[str, list[dict[str, Any]]] = {engine: [] for engine in ENGINES}
        for _ in range(repeat):
            for engine in ENGINES:
                runs[engine].append(_spawn(engine, worlds, sim_seconds, seed))
        for engine, done in runs.items():
            failed = [r for r in done if "error" in r]
            if failed:
                rows.append(failed[0])
                continue
            best = dict(min(done, key=lambda r: r["wall"]))
            best["deterministic"] = len({(r["digest"], r["steps"]) for r in done}) == 1
            best["walls"] = [r["wall"] for r in done]
            rows.append(best)
            print(f"  ran {engine:<8} N={worlds:<4} best {best['wall']:.2f} s of {len(done)}", file=sys.stderr)
    return rows


def report(rows: list[dict[str, Any]]) -> None:
    print(f"python {sys.version.split()[0]}; " + "; ".join(_version(e) for e in ENGINES))
    print("ratio = heap-loop steps/s / candidate steps/s (above 1: the heap loop is faster)")
    head = (f"  {'engine':<8} {'N':>4} {'sim s':>6} {'steps':>8} {'wall s':>7} {'steps/s':>9} "
            f"{'sim s/wall s':>12} {'RSS MiB':>8} {'+MiB':>6} {'determinism':>12} {'same as heap':>12}  ratio")
    print(head)
    heap = {r["worlds"]: r for r in rows if r["engine"] == "heap" and "error" not in r}
    for r in rows:
        if "error" in r:
            print(f"  {r['engine']:<8} {r['worlds']:>4} failed: {' '.join(r['error'])}")
            continue
        rate = r["steps"] / r["wall"]
        base = heap.get(r["worlds"])
        ratio = f"{(base['steps'] / base['wall']) / rate:.2f}" if base else "-"
        same = "-" if base is None else ("yes" if base["digest"] == r["digest"] else "no")
        det = "identical" if r["deterministic"] else "DIFFERENT"
        print(f"  {r['engine']:<8} {r['worlds']:>4} {r['sim_seconds']:>6g} {r['steps']:>8} {r['wall']:>7.2f} "
              f"{rate:>9.0f} {r['sim_seconds'] / r['wall']:>12.1f} {r['rss_mib']:>8.1f} {r['grew_mib']:>6.1f} "
              f"{det:>12} {same:>12}  {ratio}")
    imports = {r["engine"]: r["import_s"] for r in rows if "import_s" in r}
    print("import time: " + ", ".join(f"{e} {s * 1000:.0f} ms" for e, s in imports.items()))
    gui = {r["engine"]: r["gui_modules"] for r in rows if r.get("gui_modules")}
    print("GUI modules loaded: " + (json.dumps(gui) if gui else "none (all three ran headless)"))


def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        _, _, engine, worlds, sim_seconds, seed = sys.argv
        print(json.dumps(child(engine, int(worlds), float(sim_seconds), int(seed))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worlds", default="1,8,32,256", help="comma-separated numbers of worlds")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the simulated durations")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3, help="runs per engine and N (at least 2)")
    parser.add_argument("--json", default=None, help="also write the rows as JSON to this file")
    args = parser.parse_args()
    worlds_list = [int(w) for w in args.worlds.split(",")]
    if args.repeat < 2:
        parser.error("--repeat must be at least 2 (determinism compares runs)")
    rows = measure(worlds_list, args.scale, args.seed, args.repeat)
    report(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
