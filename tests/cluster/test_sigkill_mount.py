"""A real read-write mount process (vmfs-mount -f -o rw) SIGKILLed with a transaction half
written at home, then mounted again by the same host: it must replay its own journal.

The kill comes from inside the mount (tests/cluster/killed_mount.py: after the journal write of
the N-th multi-record transaction and one of its home writes), so every round is a kill that
needs the journal, not a kill that happens to land between operations (a SIGKILLed process loses
nothing in the page cache, so those need no journal at all).  The client is this test, working
through the mount: each operation that returned is acknowledged.  After the kill the dead mount
is detached and the image mounted again with the plain vmfs-mount and the same host UUID; then
every acknowledged operation must be there, the one in flight all or nothing, vmfs-fsck -n
clean after a clean unmount, and dissect.vmfs must read the same tree and bytes.
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.conftest import make_volume
from tests.conftest import REPO, Mount, tool, unmount, wait_mounted
from tests.crash.judge import dissect_tree
from tests.crash.workload import content_key
from vmfs.device.file import FileDevice

pytestmark = [pytest.mark.crash, pytest.mark.fuse, pytest.mark.slow]

HOST = "7000000b-00000000-0000-02000000000b"


def digest(data: bytes) -> tuple[str, int, str]:
    return ("file", *content_key(lambda o, n: data[o : o + n], len(data)))


def mount_tree(root: Path) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath, name)
            rel = "/" + str(full.relative_to(root))
            if dirpath == str(root) and name.endswith(".sf"):
                continue  # the system files
            if full.is_symlink():
                out[rel] = ("link", os.readlink(full))
            elif full.is_dir():
                out[rel] = ("dir",)
            else:
                out[rel] = digest(full.read_bytes())
    return out


class Client:
    """Operations through the mount; ``model`` is the tree after the last acknowledged one,
    ``pending`` the tree the one in flight would make, ``partial`` the trees it may leave part
    way: a file write is three system calls (open with O_CREAT, write, fsync), and a kill after
    the first leaves the file created and empty (each call is all or nothing, not the three)."""

    def __init__(self, root: Path, model: dict[str, tuple], rng: random.Random) -> None:
        self.root = root
        self.model = model
        self.pending: dict[str, tuple] | None = None
        self.partial: list[dict[str, tuple]] = []
        self.rng = rng
        #: the trees after each acknowledged operation since the last fsync (its tree first): under
        #: group commit a kill may lose the unsynced ones, whole and in order, never the rest
        self.since_sync: list[dict[str, tuple]] = [model]

    def _do(self, change: dict[str, tuple | None], action, partial: dict[str, tuple] | None = None,
            *, synced: bool = False) -> None:  # type: ignore[no-untyped-def]
        after = {**self.model, **change}
        self.pending = {k: v for k, v in after.items() if v is not None}
        self.partial = [{**self.model, **partial}] if partial else []
        action()
        self.model, self.pending = self.pending, None
        if synced:
            self.since_sync = [self.model]
        else:
            self.since_sync.append(self.model)

    def allowed(self, batched: bool) -> list[dict[str, tuple]]:
        """The trees a remount may show: the last acknowledged one, or the one in flight done
        (or part way); under group commit also any acknowledged since the last fsync."""
        earlier = self.since_sync if batched else [self.model]
        return [*earlier, *([self.pending] if self.pending is not None else []), *self.partial]

    def step(self, i: int) -> None:
        files = sorted(p for p, v in self.model.items() if v[0] == "file")
        kind = self.rng.choice(["write", "write", "rename", "mkdir", "unlink", "symlink"]) if files else "write"
        r = self.root
        if kind == "write":
            p = f"/w/f{i}"
            data = self.rng.randbytes(self.rng.choice([100, 5000, 70000, 1 << 20]))

            def write() -> None:
                with open(r / p[1:], "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())

            self._do({p: digest(data)}, write, partial={p: digest(b"")}, synced=True)
        elif kind == "rename":
            a = self.rng.choice(files)
            b = self.rng.choice([f"/w/r{i}", *files])  # to a new name or over an existing file
            self._do({a: None, b: self.model[a]}, lambda: os.rename(r / a[1:], r / b[1:]))
        elif kind == "mkdir":
            p = f"/w/d{i}"
            self._do({p: ("dir",)}, lambda: os.mkdir(r / p[1:]))
        elif kind == "unlink":
            p = self.rng.choice(files)
            self._do({p: None}, lambda: os.unlink(r / p[1:]))
        else:
            p = f"/w/l{i}"
            self._do({p: ("link", "target" * 3)}, lambda: os.symlink("target" * 3, r / p[1:]))


@pytest.mark.parametrize("commit", ["0", "0.05"], ids=["per-operation", "group-commit"])
def test_sigkill_mount_mid_commit_then_remount(tmp_path: Path, commit: str) -> None:
    """With ``commit=0`` every operation is its own journal commit: each one that returned is
    there after the kill.  With group commit (commit=0.05) the kill lands in the commit
    of a batch (an fsync's, or the interval's); what fsync acknowledged is there, the operations
    after it may be lost, but only whole and from the last one back."""
    image = make_volume(tmp_path / "vol.img", 2 << 30)
    mnt = tmp_path / "mnt"
    log = tmp_path / "mount.log"
    argv = [str(image), str(mnt), "-f", "-o", f"rw,commit={commit}", "--host-uuid", HOST, "--log-file", str(log)]
    batched = commit != "0"
    rng = random.Random(17)
    model: dict[str, tuple] = {"/w": ("dir",)}
    with Mount([tool("vmfs-mount"), *argv], mnt) as root:
        os.mkdir(root / "w")
    replays = 0
    for round_ in range(3):
        kill_at = rng.randrange(3, 15)
        env = {**os.environ, "VMFS_TEST_KILL_COMMIT": str(kill_at)}
        mnt.mkdir(exist_ok=True)
        proc = subprocess.Popen([sys.executable, "-m", "tests.cluster.killed_mount", *argv], cwd=REPO, env=env,
                                stderr=subprocess.PIPE)
        client = Client(mnt, model, rng)
        try:
            wait_mounted(mnt, proc)
            for i in range(400):
                client.step(round_ * 1000 + i)
        except OSError:
            pass  # the mount died under the operation in flight
        proc.wait(timeout=60)
        err = proc.stderr.read().decode() if proc.stderr else ""
        assert proc.returncode == -9, f"round {round_}: the mount was not killed in a commit ({proc.returncode}): {err}"
        assert client.pending is not None, f"round {round_}: no operation was in flight"
        unmount(mnt)  # detach the dead mount
        before = log.read_text() if log.exists() else ""
        with Mount([tool("vmfs-mount"), *argv], mnt) as root:
            seen = mount_tree(root)
        after_log = log.read_text()[len(before):]
        assert seen in client.allowed(batched), (
            f"round {round_} (killed in commit {kill_at}): tree is neither before nor after the operation in flight"
            f"{' nor one since the last fsync' if batched else ''}: "
            f"missing {sorted(set(client.model) - set(seen))}, "
            f"unexpected {sorted(set(seen) - set(client.pending or {}))}"
        )
        r = subprocess.run([tool("vmfs-fsck"), "-n", str(image)], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"round {round_}: vmfs-fsck -n after the remount:\n{r.stdout}{r.stderr}"
        dev = FileDevice(image)
        try:
            theirs = {k: v for k, v in dissect_tree(dev).items()}
        finally:
            dev.close()
        assert theirs == seen, f"round {round_}: dissect.vmfs reads another tree"
        replays += "replayed" in after_log and "own journal" in after_log
        model = seen
    # every round's kill left a transaction for the remount to finish
    assert replays == 3, f"own journal replayed on {replays} of 3 remounts"


def test_sigkill_with_a_file_unlinked_while_open_leaves_no_hidden_name(tmp_path: Path) -> None:
    """A file unlinked while open through the mount waits under libfuse's ``.fuse_hidden*`` name
    until its release, which a SIGKILLed mount never sees; so does one renamed over while open.
    After the kill the same host's next mount removes both: the
    user finds neither deleted file back under a strange name, and vmfs-fsck -n is clean."""
    image = make_volume(tmp_path / "vol.img", 2 << 30)
    mnt = tmp_path / "mnt"
    argv = [str(image), str(mnt), "-f", "-o", "rw", "--host-uuid", HOST]
    mnt.mkdir()
    proc = subprocess.Popen([tool("vmfs-mount"), *argv], stderr=subprocess.PIPE)
    try:
        wait_mounted(mnt, proc)
        os.mkdir(mnt / "w")
        (mnt / "w" / "keep").write_bytes(b"k" * 5000)
        held = []
        for name in ("gone", "over"):
            (mnt / "w" / name).write_bytes(os.urandom(300_000))
            held.append(open(mnt / "w" / name, "rb"))  # noqa: SIM115 (held across the kill)
        os.unlink(mnt / "w" / "gone")
        os.rename(mnt / "w" / "keep", mnt / "w" / "over")
        os.sync()
        names = os.listdir(mnt / "w")
        assert any(n.startswith(".fuse_hidden") for n in names), f"libfuse did not hide the open file: {names}"
        os.kill(proc.pid, 9)
        proc.wait(timeout=30)
        for f in held:
            with contextlib.suppress(OSError):  # ENOTCONN: the mount is dead
                f.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    unmount(mnt)
    with Mount([tool("vmfs-mount"), *argv], mnt) as root:
        assert sorted(os.listdir(root / "w")) == ["over"]
        assert (root / "w" / "over").read_bytes() == b"k" * 5000
    r = subprocess.run([tool("vmfs-fsck"), "-n", str(image)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"vmfs-fsck -n after the remount:\n{r.stdout}{r.stderr}"
