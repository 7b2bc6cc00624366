"""Derive the pjdfstest subtests that a filesystem without FIFOs, device nodes, sockets and hard
links must fail, by running pjdfstest on a local filesystem that has them all (ext4, tmpfs) with
the kernel refusing those four kinds (``refuse_special.c``, a seccomp filter returning EPERM as
our mount does).  Not a test: run by hand when the suite or the mount's refusals change, and
paste the lines it prints into ``pjdfstest_expected.txt``::

    python -m tests.suites.pjdfstest_reference --workdir /var/tmp/pjd [--vmfs prove-output.txt]

Each printed line is ``<file> <subtests> <reason>``.  Subtests that fail on the local
filesystem without the filter are left out (they are the local filesystem's, not ours); with
``--vmfs`` (the ``prove -rv --merge`` output of a run on our mount, e.g. the test's prove.txt)
only the subtests that also fail there are kept, so the list holds nothing our mount passes.
Run as root, like pjdfstest itself.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

from tests.suites.conftest import BUILD, PJDFSTEST_BUILD, build_suite
from tests.suites.tap import FileResult, format_ranges, parse_prove

HERE = Path(__file__).resolve().parent

REASONS = {
    "mknod": "no FIFOs or device nodes in VMFS: mkfifo and mknod (b, c, p) return EPERM, and the steps "
             "on the node that could not be made fail after it",
    "bind": "no sockets in VMFS: bind of a Unix socket (mknod S_IFSOCK) returns EPERM, and the steps "
            "on the socket that could not be made fail after it",
    "link": "no hard links in VMFS: link returns EPERM (st_nlink of a file stays 1), and the steps "
            "that need the second name fail after it",
    "mknod,link,bind": "several of: no FIFOs, device nodes, sockets or hard links in VMFS (EPERM)",
}


def refuse_special() -> Path:
    """The seccomp wrapper, compiled into the suites' build folder."""
    exe = BUILD / "refuse_special"
    src = HERE / "refuse_special.c"
    if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
        BUILD.mkdir(parents=True, exist_ok=True)
        subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", str(exe), str(src)], check=True)
    return exe


def run(tests: Path, workdir: Path, classes: str | None, *, reuse: bool = False) -> dict[str, FileResult]:
    """pjdfstest whole from a fresh folder below ``workdir``, refusing ``classes`` (None: nothing);
    with ``reuse``, the output an earlier run left in ``workdir`` is read instead."""
    here = workdir / (classes or "plain").replace(",", "+")
    if reuse and (workdir / f"{here.name}.txt").exists():
        return parse_prove((workdir / f"{here.name}.txt").read_text(), str(tests))
    shutil.rmtree(here, ignore_errors=True)
    here.mkdir(parents=True)
    argv = ["prove", "-rv", "--merge", str(tests)]
    if classes:
        argv = [str(refuse_special()), classes, "--", *argv]
    out = subprocess.run(argv, cwd=here, capture_output=True, text=True).stdout
    (workdir / f"{here.name}.txt").write_text(out)
    return parse_prove(out, str(tests))


def failing(results: dict[str, FileResult]) -> dict[str, set[int]]:
    return {name: set(r.failed()) for name, r in results.items() if r.failed()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, required=True, help="a folder on ext4/tmpfs (not the mount)")
    ap.add_argument("--vmfs", type=Path, help="prove -rv --merge output of a run on our mount")
    ap.add_argument("--reuse", action="store_true", help="read the outputs a previous run left in --workdir")
    args = ap.parse_args()
    tests = build_suite("pjdfstest", PJDFSTEST_BUILD, "pjdfstest") / "tests"
    plain = failing(run(tests, args.workdir, None, reuse=args.reuse))
    runs = {c: failing(run(tests, args.workdir, c, reuse=args.reuse))
            for c in ("mknod,link,bind", "mknod", "bind", "link")}
    ours = failing(parse_prove(args.vmfs.read_text(), str(tests))) if args.vmfs else None
    for name in sorted(runs["mknod,link,bind"]):
        left = runs["mknod,link,bind"][name] - plain.get(name, set())
        if ours is not None:
            left &= ours.get(name, set())
        for cls in ("mknod", "bind", "link", "mknod,link,bind"):
            mine = left & runs[cls].get(name, set()) if cls != "mknod,link,bind" else left
            if mine:
                print(f"{name} {format_ranges(mine)} {REASONS[cls]}")
                left -= mine


if __name__ == "__main__":
    main()
