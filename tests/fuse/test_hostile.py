"""Hostile images through a real read-only ``vmfs-mount`` (issue 17, point 4).

Each image of tests/fuse/hostile.py (directory cycles to the root, to an ancestor, to the
directory itself, a '..' naming its own directory, a NUL in a symlink target, '/', NUL, '.' and
'..' in names, two entries of one name, a pointer block that names itself) is mounted in the
foreground with a log file, and walked with ``find``, ``ls -laR`` and ``du -a`` under timeouts:
every walk ends within seconds, with EIO where the image leads back into itself, the rest of
the tree stays readable, nothing but the mount point is touched, neither the log nor stderr
holds a traceback, and ``vmfs-fsck -n`` reports the damage with its problem code (``-y`` then
repairs it: a second ``-n`` finds nothing).
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import Mount, tool
from tests.fsck import volumes
from tests.fsck.cases import codes, run_fsck
from tests.fuse import hostile
from vmfs.volume.namespace import FileSystem
from vmfs.volume.volume import Volume

pytestmark = pytest.mark.fuse

#: a walk of this small tree takes well under a second; an endless one is cut here
WALK_TIMEOUT = 20.0


@pytest.fixture(scope="module")
def hostile_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The populated volume every case damages (read it, never change it: cases copy it)."""
    path = volumes.make_volume(tmp_path_factory.mktemp("hostile-base") / "base.img")
    path.chmod(0o444)
    return path


def _walk(argv: list[str]) -> subprocess.CompletedProcess[str]:
    start = time.monotonic()
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=WALK_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{argv} still running after {WALK_TIMEOUT} s: the mount lets it walk forever")
    assert time.monotonic() - start < WALK_TIMEOUT
    return r


def _errno_of(call) -> int | None:  # type: ignore[no-untyped-def]
    try:
        call()
    except OSError as exc:
        return exc.errno
    return None


def _check_walks(case: hostile.Hostile, root: Path) -> None:
    find = _walk(["find", str(root)])
    listed = find.stdout.splitlines()
    assert listed and all(p == str(root) or p.startswith(str(root) + "/") for p in listed), listed[:20]
    assert len(listed) < 200, f"find listed {len(listed)} paths: a loop"
    lsr = _walk(["ls", "-laR", str(root)])
    du = _walk(["du", "-a", str(root)])
    assert len(du.stdout.splitlines()) < 200
    for p in case.eio:
        assert _errno_of(lambda p=p: os.stat(f"{root}{p}")) == errno.EIO, p
        for r in (find, du):
            assert r.returncode != 0 and f"{root}{p}" in r.stderr and "Input/output error" in r.stderr, r.stderr
        assert "Input/output error" in lsr.stderr, lsr.stderr
    if not case.eio:
        assert (find.returncode, find.stderr, du.returncode, du.stderr) == (0, "", 0, ""), (find.stderr, du.stderr)
        if "readlink_eio" not in case.extra:
            assert (lsr.returncode, lsr.stderr) == (0, ""), lsr.stderr
    for dirpath, name in case.hidden:
        shown = os.listdir(f"{root}{dirpath}")
        assert name not in shown, shown
        assert _errno_of(lambda d=dirpath, n=name: os.lstat(f"{root}{d}/{n}")) == errno.ENOENT
    for dirpath in {d for d, _ in case.hidden} | {"/d1", "/d1/d2"}:
        dots = subprocess.run(["ls", "-a1", f"{root}{dirpath}"], capture_output=True, text=True, check=True)
        names = dots.stdout.splitlines()
        assert names.count(".") == 1 and names.count("..") == 1 and len(names) == len(set(names)), names
    for p in case.visible:
        st = os.stat(f"{root}{p}")
        if os.path.isfile(f"{root}{p}") and st.st_size < (1 << 20):
            assert len(Path(f"{root}{p}").read_bytes()) == st.st_size


def _check_extra(case: hostile.Hostile, root: Path, image: Path) -> None:
    link = case.extra.get("readlink_eio")
    if link:
        assert _errno_of(lambda: os.readlink(f"{root}{link}")) == errno.EIO
        assert os.lstat(f"{root}{link}").st_size == len(b"/etc\x00passwd")
        assert _errno_of(lambda: os.stat(f"{root}{link}")) == errno.EIO  # following it too
    if "small_content" in case.extra:
        assert Path(f"{root}/d1/small").read_bytes() == case.extra["small_content"]
    pb_file = case.extra.get("pb_loop")
    if pb_file:
        offset = hostile.pb_loop_offset(image, pb_file)
        with open(f"{root}{pb_file}", "rb") as f:
            f.seek(offset)
            assert _errno_of(lambda: f.read(4096)) == errno.EIO
            size = os.fstat(f.fileno()).st_size
            f.seek(size - 4096)
            assert len(f.read(4096)) == 4096  # the rest of the file stays readable


@pytest.mark.parametrize("case", hostile.CASES, ids=[c.name for c in hostile.CASES])
def test_hostile_image_through_read_only_mount(case: hostile.Hostile, hostile_base: Path, tmp_path: Path) -> None:
    image = hostile.make(case, hostile_base, tmp_path / "volume.img")
    before = volumes.sparse_digest(image)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"not to be touched\n")
    log = tmp_path / "mount.log"
    mnt = tmp_path / "m"
    mount = Mount([tool("vmfs-mount"), "-f", "--log-file", str(log), str(image), str(mnt)], mnt)
    with mount as root:
        _check_walks(case, root)
        _check_extra(case, root, image)
    assert mount.proc is not None and mount.proc.stderr is not None
    stderr = mount.proc.stderr.read().decode()
    assert mount.proc.returncode == 0, stderr
    text = log.read_text() if log.exists() else ""
    assert "Traceback" not in text and "Traceback" not in stderr, text + stderr
    if case.hidden or case.eio or "readlink_eio" in case.extra:
        assert "WARNING" in text, text  # the damage met is in the log
    assert volumes.sparse_digest(image) == before, "a read-only mount wrote to the image"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "mount.log", "outside", "volume.img"]
    assert [p.name for p in outside.iterdir()] == ["keep"]
    assert (outside / "keep").read_bytes() == b"not to be touched\n"
    assert list(mnt.iterdir()) == []
    rc, report = run_fsck(image, "-n")
    assert rc == 4, report
    assert case.fsck_code in codes(report), codes(report)
    rc, report = run_fsck(image, "-y")  # and each is repaired
    assert rc == 1, report
    assert run_fsck(image, "-n")[0] == 0


def test_inode_numbers_are_fd_addresses_on_every_path_and_mount(hostile_base: Path, tmp_path: Path) -> None:
    """st_ino and readdir's d_ino are the FD address: one file reached twice is seen as one."""
    with Volume.open(hostile_base) as vol:
        fs = FileSystem(vol)
        want = {p: fs.resolve(p, follow=False).address for p in ("/", "/d1", "/d1/small", "/d1/d2/inner", "/link")}
    seen = []
    for n in range(2):
        mnt = tmp_path / f"m{n}"
        with Mount([tool("vmfs-mount"), str(hostile_base), str(mnt)], mnt) as root:
            got = {p: os.lstat(f"{root}{p}").st_ino for p in want}
            assert got == want
            with os.scandir(root / "d1") as it:
                assert {e.name: e.inode() for e in it}["small"] == want["/d1/small"]
            seen.append(got)
    assert seen[0] == seen[1]


def test_alias_directory_has_one_inode_number(hostile_base: Path, tmp_path: Path) -> None:
    """A directory named twice (not a cycle: /alias and /d1/d2) stays readable by both names,
    with one inode number for it and for what it holds."""
    alias = hostile.Hostile("alias", "", hostile._alias("/", "alias", "/d1/d2"), "")
    image = hostile.make(alias, hostile_base, tmp_path / "volume.img")
    mnt = tmp_path / "m"
    with Mount([tool("vmfs-mount"), str(image), str(mnt)], mnt) as root:
        assert os.stat(root / "alias").st_ino == os.stat(root / "d1" / "d2").st_ino
        assert os.stat(root / "alias" / "inner").st_ino == os.stat(root / "d1" / "d2" / "inner").st_ino
        assert (root / "alias" / "inner").read_bytes() == b"deep inside\n"
        assert _walk(["find", str(root)]).returncode == 0


def test_cycle_through_read_write_mount(hostile_base: Path, tmp_path: Path) -> None:
    """The read-write mount (a subclass of the read-only one) refuses the cycle the same way,
    stays writable elsewhere, and adds no damage of its own: fsck finds only the cycle after."""
    image = hostile.make(hostile.BY_NAME["cycle_root"], hostile_base, tmp_path / "volume.img")
    log = tmp_path / "mount.log"
    mnt = tmp_path / "m"
    mount = Mount([tool("vmfs-mount"), "-f", "-o", "rw", "--log-file", str(log), str(image), str(mnt)], mnt)
    with mount as root:
        find = _walk(["find", str(root)])
        assert find.returncode != 0 and f"{root}/d1/loop" in find.stderr and len(find.stdout.splitlines()) < 200
        assert _errno_of(lambda: os.stat(root / "d1" / "loop")) == errno.EIO
        assert _errno_of(lambda: os.rename(root / "d1" / "loop", root / "moved")) == errno.EIO
        assert _errno_of(lambda: os.rmdir(root / "d1" / "loop")) == errno.EIO
        (root / "d1" / "new").write_bytes(b"written next to a cycle\n")
        with os.scandir(root / "d1") as it:
            inodes = {e.name: e.inode() for e in it}
        assert inodes["new"] == os.stat(root / "d1" / "new").st_ino
        assert inodes["loop"] == os.stat(root).st_ino  # the entry names the root
    assert mount.proc is not None and mount.proc.stderr is not None
    stderr = mount.proc.stderr.read().decode()
    assert "Traceback" not in stderr and "Traceback" not in log.read_text()
    rc, report = run_fsck(image, "-n")
    assert (rc, codes(report)) == (4, ["0x040001 DIR_MULTIPLE_PARENTS"]), report
