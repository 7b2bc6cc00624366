"""vmfs-mount: serve a VMFS volume through FUSE (read-only unless ``-o rw``)."""

from __future__ import annotations

import logging
import os
import sys

import click
from pyvmfs_tools.common import mountpoint_key, report_errors

from vmfs.cluster.attachment import HostAttachment
from vmfs.cluster.host import HostIdentity
from vmfs.device.opener import is_network_spec
from vmfs.errors import InvalidArgumentError
from vmfs.volume.namespace import FileSystem
from vmfs.volume.volume import Volume

# Options we handle ourselves and never pass to libfuse.
OWN_OPTIONS = {"rw", "ro", "commit"}
#: seconds a read-write mount lets completed operations wait for one journal commit (group commit,
#: vmfs.cluster.batch; fsync and unmount commit at once).  Off by default: other hosts read a
#: volume without locks, so they see what this host did only once it is on disk, and ESXi's
#: users expect a change made on one host to show on another at once (docs/guide.md section 4).
DEFAULT_COMMIT = 0.0
MAX_COMMIT = 10.0


def commit_interval(opts: dict[str, object]) -> float:
    """The ``commit=SECONDS`` option (0: every operation commits on its own)."""
    value = opts.get("commit", DEFAULT_COMMIT)
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"commit={value}: not a number of seconds") from None
    if not 0 <= seconds <= MAX_COMMIT:
        raise InvalidArgumentError(f"commit={value}: seconds between 0 and {MAX_COMMIT:g}")
    return seconds


def parse_options(values: tuple[str, ...]) -> dict[str, object]:
    options: dict[str, object] = {}
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            key, sep, val = item.partition("=")
            options[key] = val if sep else True
    return options


def enforce_permissions(opts: dict[str, object]) -> None:
    """Other users reach the mount only with the kernel checking owners and modes for us: FUSE
    without ``default_permissions`` checks nothing, and the library does not check either (it acts
    for whoever calls), so ``allow_other`` alone would give every local user every file."""
    if opts.get("allow_other") or opts.get("allow_root"):
        opts["default_permissions"] = True


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1, required=True, metavar="IMAGE... MOUNTPOINT")
@click.option(
    "-o",
    "options",
    multiple=True,
    metavar="OPT[,OPT...]",
    help="Mount options. 'rw' mounts read-write; the default is read-only ('ro'). "
    "readahead_kb=N sets the kernel read-ahead of the mount (default 1024, 0 leaves FUSE's 128; "
    "needs root). commit=SECONDS (read-write; default 0: every operation is its own journal commit, on disk when it "
    "returns, so other hosts see it at once): operations nobody fsyncs wait up to SECONDS (at most 10; 0.05 is "
    "a good choice for one host writing alone) to be committed together in one journal transaction, several times "
    "faster for small files; fsync, fsync of a directory and unmount commit at once, a crash loses at most what "
    "waited (whole operations only), and other hosts see a change once it is committed. "
    "allow_other (and allow_root) let other users in, and always come with "
    "default_permissions: the kernel then checks every access against the files' owners and modes "
    "(a mount that lets other users in without any permission check is not offered). Anything else "
    "(default_permissions, fsname=...) is passed to FUSE.",
)
@click.option("-f", "--foreground", is_flag=True, help="Stay in the foreground (default: run in the background).")
@click.option("-d", "--debug", is_flag=True, help="FUSE debug output (implies --foreground).")
@click.option("-v", "--verbose", is_flag=True, help="Log library errors to stderr.")
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Append the mount's log (library errors, lost volume, recoveries) to this file: in the "
    "background the mount has no terminal to tell why an operation failed.",
)
@click.option(
    "--host-uuid",
    default=None,
    help="Host UUID for heartbeats and locks when writing (default: derived from /etc/machine-id).",
)
@report_errors(exit_code=1)
def main(
    paths: tuple[str, ...], options: tuple[str, ...], foreground: bool, debug: bool, verbose: bool,
    log_file: str | None, host_uuid: str | None,
) -> None:
    """Mount the VMFS volume held by IMAGE (image files or block devices; every extent of a
    spanned volume, in any order) at MOUNTPOINT.

    The volume is mounted READ-ONLY by default; pass -o rw to write.  vmfs-umount MOUNTPOINT
    unmounts and returns once everything is on disk and the heartbeat slot is free (SIGINT,
    SIGTERM or fusermount -u unmount cleanly too, but return before the mount has finished).
    One process at a time writes a volume as one host (--host-uuid): a second read-write mount
    under the same identity is refused.
    """
    if len(paths) < 2:
        raise click.UsageError("need at least one IMAGE and a MOUNTPOINT")
    *images, mountpoint = paths
    if not os.path.isdir(mountpoint):
        raise InvalidArgumentError(f"{mountpoint}: mount point is not a directory")
    opts = parse_options(options)
    writable = bool(opts.get("rw")) and not opts.get("ro")
    commit = commit_interval(opts)
    for key in OWN_OPTIONS:
        opts.pop(key, None)
    enforce_permissions(opts)
    level = logging.INFO if verbose else logging.WARNING
    if log_file:
        logging.basicConfig(level=level, filename=os.path.abspath(log_file),
                            format="%(asctime)s %(name)s %(levelname)s %(message)s")
    else:
        logging.basicConfig(level=level, stream=sys.stderr)

    host = HostIdentity(uuid=host_uuid) if host_uuid else None
    attachment = HostAttachment.open(list(images), host=host) if writable else None
    if attachment is not None and commit:
        attachment.group_commit(commit)
    volume = attachment.volume if attachment is not None else Volume.open(list(images))
    try:
        serve(volume, attachment, images[0], mountpoint, opts, foreground=foreground or debug, debug=debug)
    except BaseException:
        volume.close()  # never mounted, or the mount ended badly: slot and identity are given back now
        raise


def serve(volume: Volume, attachment: HostAttachment | None, image: str, mountpoint: str, opts: dict[str, object],
          *, foreground: bool, debug: bool) -> None:
    """Serve ``volume`` at ``mountpoint`` (read-write through ``attachment`` when given) until it is
    unmounted (the volume is closed then)."""
    from vmfs.fuse import readonly as vfuse

    if attachment is not None and attachment.identity_lock is not None:
        # for a refused second mount, and for vmfs-umount to find us
        attachment.identity_lock.update(mountpoint=mountpoint_key(mountpoint))
    if attachment is not None:
        from vmfs.fuse.readwrite import ReadWriteOperations
        from vmfs.write.posix import WritableFileSystem

        wfs = WritableFileSystem(attachment)
        fs: FileSystem = wfs
        ops: vfuse.VmfsOperations = ReadWriteOperations(wfs)
        import mfusepy

        if mfusepy.fuse_version_major == 2:
            opts.setdefault("big_writes", True)  # libfuse 2: writes of up to 128 KiB per call
    else:
        opts["ro"] = True
        fs = FileSystem(volume)
        ops = vfuse.VmfsOperations(fs)
    opts.setdefault("fsname", f"vmfs:{image if is_network_spec(image) else os.path.abspath(image)}")
    opts.setdefault("subtype", "vmfs")
    try:
        vfuse.mount(fs, mountpoint, foreground=foreground, options=opts, operations=ops, debug=debug)
    except RuntimeError as exc:
        if ops.destroyed:
            return  # a signal ended the loop after a clean unmount
        raise InvalidArgumentError(f"{mountpoint}: mount failed ({exc})") from None


if __name__ == "__main__":
    main()
