"""``-o allow_other`` lets other users into the mount; the kernel must then check their access
(issue 10, fault 3).  Without default_permissions FUSE checks nothing and the library acts for
whoever calls, so any local user could read, write, chmod and unlink root's 0600 files.

An unprivileged process (uid/gid 65534, no groups) gets a descriptor of the mount's root from us
(the pytest temporary folders above the mount are 0700) and tries every access.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import tool

pytestmark = pytest.mark.fuse

NOBODY = 65534
#: an interpreter nobody may run (the test's own may live under a private home); stdlib only
PYTHON = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or sys.executable

#: run as nobody with the mount's root open as descriptor argv[1]: errno name (or "ok") per try
PROBE = r"""
import errno, json, os, sys
root = int(sys.argv[1])
def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as exc:
        return errno.errorcode[exc.errno]
def read(p): os.close(os.open(p, os.O_RDONLY, dir_fd=root))
def write(p): os.close(os.open(p, os.O_WRONLY, dir_fd=root))
def create(p): os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=root))
results = {
    "read secret": attempt(lambda: read("secret")),
    "write secret": attempt(lambda: write("secret")),
    "truncate secret": attempt(lambda: os.close(os.open("secret", os.O_WRONLY | os.O_TRUNC, dir_fd=root))),
    "chmod secret": attempt(lambda: os.chmod("secret", 0o666, dir_fd=root)),
    "chown secret": attempt(lambda: os.chown("secret", os.getuid(), os.getgid(), dir_fd=root)),
    "utime secret": attempt(lambda: os.utime("secret", (1, 1), dir_fd=root)),
    "unlink secret": attempt(lambda: os.unlink("secret", dir_fd=root)),
    "rename secret": attempt(lambda: os.rename("secret", "mine", src_dir_fd=root, dst_dir_fd=root)),
    "write d/f": attempt(lambda: write("d/f")),
    "unlink d/f": attempt(lambda: os.unlink("d/f", dir_fd=root)),
    "create d/new": attempt(lambda: create("d/new")),
    "mkdir d/sub": attempt(lambda: os.mkdir("d/sub", dir_fd=root)),
    "rename d/f": attempt(lambda: os.rename("d/f", "pub/f", src_dir_fd=root, dst_dir_fd=root)),
    "list d": attempt(lambda: os.close(os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=root))),
    "read d/f": attempt(lambda: read("d/f")),
    "create pub/mine": attempt(lambda: create("pub/mine")),
    "chmod pub/mine": attempt(lambda: os.chmod("pub/mine", 0o600, dir_fd=root)),
}
print(json.dumps(results))
"""

DENIED = {
    "read secret": "EACCES",
    "write secret": "EACCES",
    "truncate secret": "EACCES",
    "chmod secret": "EPERM",
    "chown secret": "EPERM",
    "utime secret": "EPERM",
    "unlink secret": "EACCES",  # the volume root is 1755: only its owner writes it
    "rename secret": "EACCES",
    "write d/f": "EACCES",
    "unlink d/f": "EACCES",
    "create d/new": "EACCES",
    "mkdir d/sub": "EACCES",
    "rename d/f": "EACCES",
}
#: what nobody may do, so the denials above are the kernel's checks, not an unreachable mount
ALLOWED = {"list d": "ok", "read d/f": "ok", "create pub/mine": "ok", "chmod pub/mine": "ok"}


@pytest.mark.parametrize("options", ["rw,allow_other", "rw,allow_other,default_permissions"])
def test_other_users_get_only_what_modes_allow(tmp_path: Path, options: str) -> None:
    image = tmp_path / "p.img"
    subprocess.run([tool("vmfs-mkfs"), "-t", "vmfs5", "--size", "1G", str(image)], check=True, capture_output=True)
    mnt = tmp_path / "m"
    mnt.mkdir()
    subprocess.run([tool("vmfs-mount"), "-o", options, str(image), str(mnt)], check=True, timeout=30)
    try:
        with open("/proc/mounts") as f:
            (line,) = [ln for ln in f if ln.split()[1] == str(mnt)]
        assert "default_permissions" in line.split()[3].split(",")
        (mnt / "secret").write_bytes(b"root only")
        os.chmod(mnt / "secret", 0o600)
        (mnt / "d").mkdir(mode=0o755)
        (mnt / "d" / "f").write_bytes(b"readable")
        os.chmod(mnt / "d" / "f", 0o644)
        (mnt / "pub").mkdir()
        os.chmod(mnt / "pub", 0o777)
        root = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
        try:
            r = subprocess.run([PYTHON, "-I", "-c", PROBE, str(root)], pass_fds=(root,), user=NOBODY, cwd="/",
                               group=NOBODY, extra_groups=[], capture_output=True, text=True, timeout=60)
        finally:
            os.close(root)
        assert r.returncode == 0, r.stderr
        results = json.loads(r.stdout)
        assert {k: results[k] for k in DENIED} == DENIED
        assert {k: results[k] for k in ALLOWED} == ALLOWED
        st = os.stat(mnt / "secret")
        assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o600, 0, 0)
        assert (mnt / "secret").read_bytes() == b"root only" and (mnt / "d" / "f").exists()
        assert os.stat(mnt / "pub" / "mine").st_uid == NOBODY
    finally:
        assert subprocess.run([tool("vmfs-umount"), str(mnt)], timeout=150).returncode == 0


def test_help_says_allow_other_always_checks_permissions() -> None:
    r = subprocess.run([tool("vmfs-mount"), "--help"], capture_output=True, text=True, check=True)
    text = " ".join(r.stdout.split())
    assert "always come with default_permissions" in text and "is not offered" in text
