"""Every oracle runner of tests/oracles.py (and the qemu-img helpers of tests/vmdk) fails the
test when its oracle fails: fake programs put first on PATH (or given by path) crash (SIGSEGV),
exit 139 as a shell does for a crashed child, print nothing, print garbage, or stop half-way
through a report.  Each must raise, never return an answer that reads as "no problems" or
"nothing there"."""

from __future__ import annotations

import importlib.util
import os
import stat
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from tests import oracles
from tests.conftest import REPO, tool
from tests.oracles import OracleError

#: shell bodies of the fake oracles
CRASHES = {
    "sigsegv": "kill -SEGV $$",
    "exit139": "echo 'Segmentation fault' >&2; exit 139",
    "exit2": "echo 'cannot open' >&2; exit 2",
}
SILENT = {"silent": "exit 0"}
GARBAGE = {"garbage": "echo 'Hello: world'; echo 'Total: 3'; echo 'VMFS version: 6'; exit 0"}
ALL = {**CRASHES, **SILENT, **GARBAGE}

Fake = Callable[[str, str], Path]


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fake:
    """Install ``name`` as a shell script with ``body`` first on PATH."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")

    def install(name: str, body: str) -> Path:
        path = bindir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return path

    return install


def test_the_fake_comes_first(fake: Fake) -> None:
    path = fake("fsck.vmfs", "exit 0")
    assert oracles.which("fsck.vmfs") == str(path)


def test_missing_oracle(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(OracleError, match="not installed"):
        oracles.fsck_vmfs(tmp_path / "x.img")


@pytest.mark.parametrize("body", ALL.values(), ids=ALL.keys())
def test_fsck_vmfs(fake: Fake, body: str, vmfs5_image: Path) -> None:
    fake("fsck.vmfs", body)
    with pytest.raises(OracleError):
        oracles.fsck_vmfs(vmfs5_image)


def test_fsck_vmfs_cut_short(fake: Fake, vmfs5_image: Path, tmp_path: Path) -> None:
    """A real report that stops before its summary (a crash after the inode scan, as a
    segfaulting fsck.vmfs whose output was buffered would leave) is no report."""
    real = oracles.fsck_vmfs(vmfs5_image).text
    head = tmp_path / "head.txt"
    head.write_text(real.split("Unallocated blocks")[0])
    fake("fsck.vmfs", f"cat {head}; exit 0")
    with pytest.raises(OracleError, match="summary"):
        oracles.fsck_vmfs(vmfs5_image)


def test_fsck_vmfs_problems_helper(fake: Fake, vmfs5_image: Path) -> None:
    """The interop helper built on it: a crashing fsck.vmfs is no longer 'no problems'."""
    from tests.interop.test_write_interop import fsck_vmfs_problems

    fake("fsck.vmfs", CRASHES["sigsegv"])
    with pytest.raises(OracleError, match="SIGSEGV"):
        fsck_vmfs_problems(vmfs5_image)


@pytest.mark.parametrize("prog", ["debugvmfs", "debugvmfs6"])
@pytest.mark.parametrize("body", ALL.values(), ids=ALL.keys())
def test_debugvmfs_show_ls_df(fake: Fake, body: str, prog: str, vmfs5_image: Path) -> None:
    fake(prog, body)
    with pytest.raises(OracleError):
        oracles.debugvmfs_show([vmfs5_image], prog=prog, require=oracles.SHOW_FS_KEYS)
    with pytest.raises(OracleError):
        oracles.debugvmfs_ls([vmfs5_image], "/", prog=prog)
    with pytest.raises(OracleError):
        oracles.debugvmfs_df([vmfs5_image], prog=prog)
    with pytest.raises(OracleError):
        oracles.debugvmfs_bitmap_errors([vmfs5_image], prog=prog)


@pytest.mark.parametrize("body", {**CRASHES, "exit1": "exit 1"}.values(), ids=[*CRASHES, "exit1"])
def test_debugvmfs_cat(fake: Fake, body: str, vmfs5_image: Path) -> None:
    """cat of an empty file prints nothing: only the exit status tells a failure."""
    fake("debugvmfs", body)
    with pytest.raises(OracleError):
        oracles.debugvmfs_cat([vmfs5_image], "/directory/file1")


@pytest.mark.parametrize("prog", ["debugvmfs", "debugvmfs6"])
@pytest.mark.parametrize(
    "body",
    [*CRASHES.values(), "echo 'Heartbeat ID 0x37b000:'", "echo 'VMFS version: 6'; echo 'Heartbeat ID 0x1000:'"],
    ids=[*CRASHES, "incomplete", "incomplete6"],
)
def test_debugvmfs_heartbeats(fake: Fake, body: str, prog: str, vmfs5_image: Path) -> None:
    fake(prog, body)
    with pytest.raises(OracleError):
        oracles.debugvmfs_heartbeats([vmfs5_image], prog=prog)


@pytest.mark.parametrize("prog", ["debugvmfs", "debugvmfs6"])
def test_heartbeat_comparison_with_a_silent_oracle(fake: Fake, prog: str, vmfs5_image: Path) -> None:
    """Heartbeats may legally be none, so a silent debugvmfs parses as 'none': the comparison of
    test_debug_vs_debugvmfs.py still fails, as it needs at least one heartbeat on both sides."""
    from tests.interop.test_debug_vs_debugvmfs import compare_heartbeats

    fake(prog, "echo 'VMFS version: 6'; exit 0" if prog == "debugvmfs6" else "exit 0")
    with pytest.raises(AssertionError):
        compare_heartbeats(prog, vmfs5_image)


def test_debugvmfs6_without_banner(fake: Fake, vmfs5_image: Path) -> None:
    """debugvmfs6 prints 'VMFS version: 6' once it opened the volume; without it, no answer."""
    fake("debugvmfs6", "echo 'Label: x'; exit 0")
    with pytest.raises(OracleError, match="VMFS version"):
        oracles.debugvmfs_show([vmfs5_image], prog="debugvmfs6")


@pytest.mark.fuse
@pytest.mark.parametrize("body", ALL.values(), ids=ALL.keys())
def test_fuse_oracle_that_never_mounts(fake: Fake, body: str, vmfs5_image: Path, tmp_path: Path) -> None:
    fake("vmfs-fuse", body)
    with pytest.raises(OracleError, match="before mounting"):
        oracles.fuse_tree("vmfs-fuse", [vmfs5_image], tmp_path / "m")


@pytest.mark.fuse
def test_fuse_oracle_that_crashes_at_the_end(fake: Fake, vmfs5_image: Path, tmp_path: Path) -> None:
    """A fake vmfs-fuse that serves the volume (through our read-only mount) and then ends as a
    crashed program does: the tree it showed is not trusted."""
    fake("vmfs-fuse", f'{tool("vmfs-mount")} "$@"; exit 139')
    with pytest.raises(OracleError, match="139"):
        oracles.fuse_tree("vmfs-fuse", [vmfs5_image], tmp_path / "m")


@pytest.mark.fuse
def test_fuse_oracle_killed_during_the_walk(fake: Fake, vmfs5_image: Path, tmp_path: Path) -> None:
    """The oracle dies while the tree is read: the walk fails (ENOTCONN), and so does the test."""
    fake("vmfs-fuse", f'exec {tool("vmfs-mount")} "$@"')
    mount = oracles.OracleMount("vmfs-fuse", [vmfs5_image], tmp_path / "m")
    with pytest.raises(OSError), mount as root:  # the kill and the read go together
        assert mount.proc is not None
        os.listdir(root)
        mount.proc.kill()
        mount.proc.wait()
        os.listdir(root / "directory")


def test_dissect_on_something_else(tmp_path: Path) -> None:
    """dissect.vmfs runs in process: what it cannot read raises by itself."""
    junk = tmp_path / "junk.img"
    junk.write_bytes(bytes(64 << 20))
    with pytest.raises(Exception):  # noqa: B017 (dissect has its own exception types)
        oracles.dissect_tree([junk])


def _vmdk_helpers() -> ModuleType:
    """tests/vmdk/vmdk_helpers.py as a module of its own (it resolves qemu-img when imported,
    so the fake is given by path)."""
    path = REPO / "tests" / "vmdk" / "vmdk_helpers.py"
    spec = importlib.util.spec_from_file_location("_vmdk_helpers_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("body", ALL.values(), ids=ALL.keys())
def test_qemu_img(fake: Fake, body: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    helpers = _vmdk_helpers()
    monkeypatch.setattr(helpers, "QEMU_IMG", str(fake("qemu-img", body)))
    with pytest.raises(AssertionError):
        helpers.qemu_check("d.vmdk", tmp_path)
    with pytest.raises(AssertionError):
        helpers.qemu_img("compare", "a.vmdk", "b.raw", cwd=tmp_path)
    with pytest.raises((AssertionError, FileNotFoundError)):  # convert "succeeded" and wrote nothing
        helpers.qemu_raw("d.vmdk", tmp_path)
