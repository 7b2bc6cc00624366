"""docs/guide.md run as written: every ``$ `` command of every section, in order, on the real samples.

The guide is the user's first contact with the tools, so what it shows must be what they print.
Each section runs in one bash (as a reader's terminal would: ``$?``, ``%1`` and ``exec 3>`` carry
over), in a work directory where the section's ``datastore.img`` (and ``vmfs5.img`` ...) are the
samples the section's text names; sections 3-5 share one directory, as the guide says.  Paths
``/mnt/...`` become directories under the test's tmp_path.

What is checked, for each command:
* its output, against the lines the guide shows under it: equal line for line (runs of blanks
  count as one space, blank lines are ignored), except that a line ``...`` stands for any number
  of lines and ``…`` inside a line for any text; a command shown without output must print nothing;
* its exit status: 0, unless the next command is ``echo $?``, whose shown output is the status.

Nothing is mocked: the tools are the installed console scripts, the samples are the real ESX-made
volumes, and the guide's claims ("Images are identical.", the sha256 of the copy, fsck's exit 1 then
0) are the real outputs of qemu-img, sha256sum, vmfs-fuse (vmfs-tools) and our tools.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import BIN, REPO, copy_image, tool

pytestmark = [pytest.mark.fuse, pytest.mark.oracle, pytest.mark.slow, pytest.mark.timeout(400)]

GUIDE = REPO / "docs" / "guide.md"

#: section number -> (work directory, {file name in it: real sample, copied (writable) or linked})
SETUP: dict[int, tuple[str, dict[str, tuple[str, str]]]] = {
    1: ("get-a-vm-off", {"datastore.img": ("vmfs3", "link"), "vmfs5.img": ("vmfs5", "link"),
                         "vmfs6.img": ("vmfs6", "link")}),
    2: ("check-and-repair", {"datastore.img": ("vmfs5", "copy")}),
    3: ("lab", {}),
    4: ("lab", {}),
    5: ("lab", {}),
    6: ("esxi-live", {"datastore.img": ("vmfs5", "link"), "vmfs3.img": ("vmfs3", "link"),
                      "vmfs6.img": ("vmfs6", "link")}),
    7: ("layout", {"datastore.img": ("vmfs5", "link")}),
}

#: mount(8) helpers the guide links into /sbin (section 1)
SBIN_LINKS = {"/sbin/mount.vmfs": "mount.vmfs", "/sbin/umount.fuse.vmfs": "umount.fuse.vmfs"}

COMMAND_TIMEOUT = 120.0


@dataclass
class Step:
    """One ``$ `` line of the guide and the output lines shown under it."""

    command: str
    line: int
    expected: list[str] = field(default_factory=list)


@dataclass
class Section:
    number: int
    title: str
    steps: list[Step] = field(default_factory=list)


def parse_guide(text: str) -> list[Section]:
    """The numbered ``## N. Title`` sections and the console blocks in them (indented blocks too)."""
    sections: list[Section] = []
    fence: str | None = None  # the indentation of the open ```console block
    for number, raw in enumerate(text.splitlines(), start=1):
        heading = re.match(r"## (\d+)\. (.+)", raw)
        if fence is None:
            if heading:
                sections.append(Section(int(heading.group(1)), heading.group(2)))
            opening = re.match(r"( *)```console\s*$", raw)
            if opening:
                assert sections, f"guide line {number}: console block before the first section"
                fence = opening.group(1)
            continue
        body = raw[len(fence):] if raw.startswith(fence) else raw.lstrip()
        if body.rstrip() == "```":
            fence = None
        elif body.startswith("$ "):
            sections[-1].steps.append(Step(body[2:], number))
        else:
            assert sections[-1].steps, f"guide line {number}: output before any command"
            sections[-1].steps[-1].expected.append(body)
    assert fence is None, "guide: a console block is not closed"
    return sections


def _normal(line: str) -> str:
    return " ".join(line.split())


def output_pattern(expected: list[str]) -> re.Pattern[str]:
    """A regular expression for the whole output: ``...`` lines are gaps, ``…`` any text."""
    parts = []
    for line in expected:
        line = _normal(line)
        if not line:
            continue
        if line in ("...", "…"):
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append("[^\n]*".join(re.escape(piece) for piece in line.split("…")) + r"\n")
    return re.compile("".join(parts))


def matches(expected: list[str], actual: str) -> bool:
    text = "".join(f"{_normal(line)}\n" for line in actual.splitlines() if line.strip())
    return output_pattern(expected).fullmatch(text) is not None


class Shell:
    """One bash for a section: commands are written to it one by one through a pipe of their own
    (so a command that reads standard input gets /dev/null, not the next commands)."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.script_r, self.script_w = os.pipe()
        self.proc = subprocess.Popen(
            ["bash", "--norc", "--noprofile", f"/dev/fd/{self.script_r}"], cwd=cwd, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            pass_fds=(self.script_r,), start_new_session=True,
        )
        os.close(self.script_r)
        assert self.proc.stdout is not None
        self.out = self.proc.stdout.fileno()
        self.buffer = b""

    def run(self, command: str, timeout: float = COMMAND_TIMEOUT) -> tuple[str, int]:
        """Run ``command``; return what it printed (stdout and stderr as on a terminal) and ``$?``."""
        marker = f"__guide_{uuid.uuid4().hex}__"
        # the status is printed, then given back to $? for a following `echo $?`
        end = f"__guide_rc=$?; printf '\\n{marker} %s\\n' \"$__guide_rc\"; (exit $__guide_rc)"
        os.write(self.script_w, f"{command}\n{end}\n".encode())
        done = re.compile(rb"\n" + marker.encode() + rb" (\d+)\n")
        deadline = time.monotonic() + timeout
        while not (found := done.search(self.buffer)):
            left = deadline - time.monotonic()
            if left <= 0 or (self.proc.poll() is not None and not select.select([self.out], [], [], 0)[0]):
                raise AssertionError(f"{command!r}: no end after {timeout:.0f} s; output so far:\n"
                                     f"{self.buffer.decode(errors='replace')}")
            if select.select([self.out], [], [], min(left, 1.0))[0]:
                chunk = os.read(self.out, 65536)
                if chunk:
                    self.buffer += chunk
        output, self.buffer = self.buffer[: found.start()], self.buffer[found.end():]
        return output.decode(errors="replace"), int(found.group(1))

    def kill(self) -> None:
        """End the shell and every process it started in its session (background jobs too)."""
        os.close(self.script_w)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def mounts_under(root: Path) -> list[str]:
    """Mount points below ``root``, deepest first, from /proc/self/mountinfo."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            target = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if target.startswith(f"{root}/"):
                found.append(target)
    return sorted(found, key=len, reverse=True)


def unmount_all(root: Path) -> None:
    """Leave no mount behind, even after a failure: vmfs-umount, then a lazy detach."""
    for target in mounts_under(root):
        subprocess.run([tool("vmfs-umount"), "-t", "30", target], capture_output=True, timeout=60)
        if target in mounts_under(root):
            subprocess.run(["umount", "-l", target], capture_output=True, timeout=60)


@pytest.fixture
def sbin_links() -> Iterator[None]:
    """The guide links mount(8)'s helpers into /sbin; remove the links it made (never one that was
    there before; a helper that is not ours makes the test skip rather than replace it)."""
    existing = set()
    for link, name in SBIN_LINKS.items():
        if os.path.lexists(link):
            if os.path.realpath(link) != os.path.realpath(tool(name)):
                pytest.skip(f"{link} exists and is not ours")
            existing.add(link)
    yield
    for link in SBIN_LINKS:
        if link not in existing and os.path.islink(link):
            os.unlink(link)


def substitute(command: str, work: Path) -> str:
    """``/mnt/...`` of the guide -> a directory under the section's work directory."""
    return re.sub(r"(?<![\w.~-])/mnt/", f"{work}/mnt/", command)


def prepare(root: Path, number: int, samples: dict[str, Path]) -> Path:
    name, files = SETUP[number]
    work = root / name
    work.mkdir(exist_ok=True)
    for filename, (sample, how) in files.items():
        target = work / filename
        if how == "copy":
            copy_image(samples[sample], target)
        else:
            target.symlink_to(samples[sample])
    return work


def run_section(section: Section, work: Path, env: dict[str, str]) -> None:
    shell = Shell(work, env)
    try:
        for i, step in enumerate(section.steps):
            output, rc = shell.run(substitute(step.command, work))
            output = output.replace(f"{work}/mnt/", "/mnt/")
            where = f"guide line {step.line} (section {section.number}): $ {step.command}"
            assert matches(step.expected, output), (
                f"{where}\n--- the guide shows:\n" + "\n".join(step.expected) + f"\n--- it printed:\n{output}"
            )
            checked_by_next = i + 1 < len(section.steps) and section.steps[i + 1].command.strip() == "echo $?"
            assert checked_by_next or rc == 0, f"{where}\nexit status {rc}; it printed:\n{output}"
    finally:
        shell.kill()


def test_guide_has_every_job() -> None:
    """The seven jobs of the guide, each with commands to run (the test below runs them)."""
    sections = parse_guide(GUIDE.read_text())
    assert [s.number for s in sections] == [1, 2, 3, 4, 5, 6, 7]
    assert set(SETUP) == {s.number for s in sections}
    for s in sections:
        assert len(s.steps) >= 5, f"section {s.number} shows only {len(s.steps)} commands"
    assert output_pattern(["a  b", "...", "c…d"]).fullmatch("x\na b\ny\ncXYd\n") is None
    assert matches(["...", "a  b", "...", "c…d"], "x\na b\n\ny\ncXYd\n")
    assert not matches([], "unexpected output\n")


def test_guide_as_written(tmp_path: Path, vmfs3_image: Path, vmfs5_image: Path, vmfs6_image: Path,
                          sbin_links: None) -> None:
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        pytest.skip("the guide's commands need root and /dev/fuse")
    for program in ("qemu-img", "vmfs-fuse", "mkfs.ext4", "findmnt", "mountpoint"):
        if shutil.which(program) is None and not os.path.exists(f"/usr/sbin/{program}"):
            pytest.skip(f"{program} is not installed (make deps installs it)")
    samples = {"vmfs3": vmfs3_image, "vmfs5": vmfs5_image, "vmfs6": vmfs6_image}
    env = {
        **os.environ,
        "PATH": f"{BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LC_ALL": "C",
        "TZ": "UTC",
    }
    try:
        for section in parse_guide(GUIDE.read_text()):
            run_section(section, prepare(tmp_path, section.number, samples), env)
        left = mounts_under(tmp_path)
        assert not left, f"the guide leaves mounted: {left}"
    finally:
        unmount_all(tmp_path)
