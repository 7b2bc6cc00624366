"""mount.vmfs and umount.fuse.vmfs: the helpers mount(8) and umount(8) run for ``-t vmfs``.

``mount -t vmfs IMAGE DIR -o OPTS`` and an fstab line ``IMAGE DIR vmfs OPTS 0 0`` make mount(8) run
``/sbin/mount.vmfs IMAGE DIR [-sfnv] [-o OPTS]``; this turns that into a vmfs-mount in the background
and returns only once the kernel shows the mount, with mount(8)'s exit codes (1 usage, 32 mount
failure).  mount(8) hands a helper every option of the fstab line, its own ones included (``nofail``,
``_netdev``, ``user`` ...), and ``rw`` when none says otherwise: like any other file system a vmfs
mounted through mount(8) is read-write unless ``ro`` is given (vmfs-mount on its own defaults to
read-only).  The FUSE mount shows as type ``fuse.vmfs``, so umount(8) runs ``umount.fuse.vmfs``, which
is vmfs-umount: it returns once a read-write mount has written everything back.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import click
from pyvmfs_tools.common import mountpoint_key
from pyvmfs_tools.umount import mounted_at

from vmfs.device.opener import is_network_spec

#: mount(8)'s exit codes (mount(8), "RETURN CODES")
EXIT_USAGE = 1
EXIT_FAILURE = 32

#: options only mount(8), systemd or fstab tools look at: never given to FUSE
MOUNT8_ONLY = {"defaults", "auto", "noauto", "nofail", "_netdev", "user", "nouser", "users", "owner", "group",
               "comment", "loop", "sw", "xx"}
#: prefixes of such options (x-systemd.automount, x-initrd.mount, comment=...)
MOUNT8_PREFIXES = ("x-", "comment=")
#: seconds to wait for the kernel to show the mount once vmfs-mount is back
READY_TIMEOUT = 30.0


def split_options(optstr: str) -> tuple[list[str], list[str], bool]:
    """(extra extents, options for vmfs-mount, read-write) from mount(8)'s option string.

    ``extent=PATH`` (repeatable) names a further extent of a spanned volume; the last of ``ro``/``rw``
    wins, as in mount(8); everything mount(8)-only is dropped; the rest goes to FUSE unchanged."""
    extents: list[str] = []
    passed: list[str] = []
    writable = True
    for item in (o.strip() for o in optstr.split(",")):
        key = item.partition("=")[0]
        if not item or key in MOUNT8_ONLY or item.startswith(MOUNT8_PREFIXES):
            continue
        if item in ("rw", "ro"):
            writable = item == "rw"
        elif key == "extent":
            extents.append(item.partition("=")[2])
        else:
            passed.append(item)
    return extents, passed, writable


def vmfs_mount_argv(spec: str, directory: str, optstr: str, verbose: bool) -> list[str]:
    """The vmfs-mount command line for ``mount.vmfs SPEC DIR -o OPTSTR``."""
    extents, passed, writable = split_options(optstr)
    opts = ["rw" if writable else "ro", *passed]
    if not any(o.startswith("fsname=") for o in passed):  # the source mount -a compares with fstab's
        opts.append(f"fsname={spec if is_network_spec(spec) else os.path.abspath(spec)}")
    return [*sibling_tool("vmfs-mount", "pyvmfs_tools.mount"), *(["-v"] if verbose else []), "-o", ",".join(opts),
            spec, *extents, directory]


def sibling_tool(name: str, module: str) -> list[str]:
    """The project's tool installed next to our Python (so its errors are prefixed by its own name:
    mount(8) may run us with a PATH that lacks the venv), or the module run by that Python."""
    script = os.path.join(os.path.dirname(sys.executable), name)
    return [script] if os.access(script, os.X_OK) else [sys.executable, "-m", module]


def one_line(text: str, fallback: str) -> str:
    """The last non-empty line of a tool's stderr without its ``prog:`` prefix (mount(8) adds none)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return fallback
    return lines[-1].removeprefix("vmfs-mount: ")


def wait_ready(directory: str, timeout: float) -> bool:
    """Whether the kernel shows a mount at ``directory`` within ``timeout`` seconds."""
    target = mountpoint_key(directory)
    deadline = time.monotonic() + timeout
    while not mounted_at(target):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class Mount8Command(click.Command):
    """A click command whose usage errors exit 1, as mount(8) documents (click's own status is 2)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            exc.exit_code = EXIT_USAGE
            raise


def die(message: str, code: int) -> None:
    click.echo(f"mount.vmfs: {message}", err=True)
    sys.exit(code)


@click.command(cls=Mount8Command, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("spec", metavar="IMAGE")
@click.argument("directory", metavar="DIR")
@click.option("-o", "options", multiple=True, metavar="OPT[,OPT...]",
              help="Mount options as mount(8) gives them: 'ro' or 'rw' (the default, as for any file system "
              "mounted with mount(8)), extent=PATH for each further extent of a spanned volume, FUSE options "
              "(allow_other, default_permissions, fsname=..., readahead_kb=N ...) passed to vmfs-mount; "
              "mount(8)-only options (defaults, auto, noauto, nofail, _netdev, user, users, x-*) are dropped.")
@click.option("-s", "sloppy", is_flag=True, help="Sloppy: accepted for mount(8), no effect.")
@click.option("-f", "fake", is_flag=True, help="Fake: check the arguments but do not mount.")
@click.option("-n", "nomtab", is_flag=True, help="Do not write /etc/mtab: accepted for mount(8), no effect.")
@click.option("-v", "verbose", is_flag=True, help="Say what is run; the mount logs library errors to its stderr.")
def main(spec: str, directory: str, options: tuple[str, ...], sloppy: bool, fake: bool, nomtab: bool,
         verbose: bool) -> None:
    """Mount the VMFS volume in IMAGE at DIR for mount(8): mount -t vmfs IMAGE DIR [-o ro], or an
    /etc/fstab line 'IMAGE DIR vmfs ro,nofail 0 0'.  Returns once the mount is ready.

    Exit status (as mount(8)): 0 mounted; 1 bad usage; 32 the mount failed.
    """
    if not os.path.isdir(directory):
        die(f"{directory}: mount point is not a directory", EXIT_FAILURE)
    if not is_network_spec(spec) and not os.path.exists(spec):
        die(f"{spec}: no such image or device", EXIT_FAILURE)
    argv = vmfs_mount_argv(spec, directory, ",".join(options), verbose)
    if verbose:
        click.echo("mount.vmfs: running " + " ".join(argv), err=True)
    if fake:
        return
    try:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True, timeout=300)
    except subprocess.TimeoutExpired:
        die(f"{directory}: vmfs-mount did not return within 300 s", EXIT_FAILURE)
    if r.returncode != 0:
        die(one_line(r.stderr, f"{directory}: vmfs-mount failed with status {r.returncode}"), EXIT_FAILURE)
    if not wait_ready(directory, READY_TIMEOUT):
        die(f"{directory}: vmfs-mount returned but no mount appeared within {READY_TIMEOUT:g} s", EXIT_FAILURE)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("target", metavar="DIR")
@click.option("-n", "nomtab", is_flag=True, help="Do not write /etc/mtab: accepted for umount(8), no effect.")
@click.option("-l", "lazy", is_flag=True, help="Lazy: detach now, wait until the last open file is closed.")
@click.option("-f", "force", is_flag=True, help="Force: accepted for umount(8), no effect.")
@click.option("-r", "remount_ro", is_flag=True, help="Accepted for umount(8), no effect.")
@click.option("-v", "verbose", is_flag=True, help="Say how the volume was closed.")
@click.option("-t", "fstype", default=None, metavar="TYPE", help="The mount's type (fuse.vmfs), as umount(8) gives it.")
def umount_main(target: str, nomtab: bool, lazy: bool, force: bool, remount_ro: bool, verbose: bool,
                fstype: str | None) -> None:
    """Unmount the vmfs mounted at DIR for umount(8) (umount DIR runs this for a mount of type
    fuse.vmfs): vmfs-umount, which returns only once a read-write mount has written everything back
    and released its heartbeat slot.  Exit status: that of vmfs-umount (0 done, 1 failed, 2 timed out).
    """
    flags = [*(["-z"] if lazy else []), *(["-v"] if verbose else [])]
    argv = [*sibling_tool("vmfs-umount", "pyvmfs_tools.umount"), *flags, target]
    sys.exit(subprocess.run(argv, stdin=subprocess.DEVNULL).returncode)


if __name__ == "__main__":
    main()
