"""vmfs-vmdk: virtual disk operations with vmkfstools' options, on host files or inside a VMFS
volume without mounting it.

    vmfs-vmdk -c 10G [-d thin|zeroedthick|eagerzeroedthick|monolithicSparse|...] [-a lsilogic] disk.vmdk
    vmfs-vmdk -i src.vmdk [-d FORMAT] dst.vmdk         clone (with format conversion)
    vmfs-vmdk -X 20G disk.vmdk                          extend
    vmfs-vmdk -j disk.vmdk | -k disk.vmdk | -K disk.vmdk    inflate / eager-zero / punch zeros
    vmfs-vmdk -U disk.vmdk                              delete
    vmfs-vmdk -E old.vmdk new.vmdk                      rename
    vmfs-vmdk -r /dev/sdX rdm.vmdk | -z /dev/sdX rdmp.vmdk   RDM mapping files
    vmfs-vmdk -D disk.vmdk                              lock / owner information
    vmfs-vmdk --snapshot | --revert | --delete-snapshot | --consolidate | --info disk.vmdk

With ``--volume IMAGE[,IMAGE...]`` every disk path is a path inside that VMFS volume (``-p``
creates missing directories); ``host:PATH`` still names a host file, so ``-i`` clones between the
host and the volume in either direction:

    vmfs-vmdk --volume ds.img -c 4G -d thin /vms/vm1/disk.vmdk
    vmfs-vmdk --volume ds.img -i host:/tmp/src.vmdk -d thin /vms/vm1/disk.vmdk
    vmfs-vmdk --volume ds.img -i /vms/vm1/disk.vmdk -d streamOptimized host:/tmp/out.vmdk

The volume is opened read-write only when the command writes into it (``-D``, ``--info`` and
cloning out of it open it read-only).

Only option parsing and printing live here; every operation is one call into ``vmfs.vmdk.ops``
or ``vmfs.vmdk.chain`` (``vmfs.vmdk.volume_storage`` opens the volume).  Library errors become one
line on stderr and exit status 1.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import sys

import click
from pyvmfs_tools.progress import MODES, Interrupted, Progress, SafeInterrupt, human

from vmfs.cluster.host import HostIdentity
from vmfs.errors import VmfsError
from vmfs.vmdk import chain, ops
from vmfs.vmdk.errors import VmdkError
from vmfs.vmdk.storage import DiskStorage, HostStorage, host_device_sectors
from vmfs.vmdk.volume_storage import VolumeStorage, open_volume_storage

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """vmkfstools sizes: a number with an optional k/m/g/t suffix (bytes without one)."""
    m = re.fullmatch(r"\s*(\d+)\s*([bkmgtBKMGT]?)\s*", text)
    if m is None:
        raise click.BadParameter(f"bad size {text!r} (e.g. 10G, 512M, 4096)")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


HOST_PREFIX = "host:"


class _Places:
    """Where disk paths live: host files, or (with ``--volume``) paths inside one VMFS volume,
    opened once, read-write only if the command writes there."""

    def __init__(self, stack: contextlib.ExitStack, images: list[str], host: HostIdentity | None) -> None:
        self.stack = stack
        self.images = images
        self.host = host
        self.root: VolumeStorage | None = None

    def on_volume(self, path: str) -> bool:
        return bool(self.images) and not path.startswith(HOST_PREFIX)

    def open(self, writable: bool) -> None:
        if self.images and self.root is None:
            opened = open_volume_storage(self.images, "/", writable=writable, host=self.host)
            self.root = self.stack.enter_context(opened)

    def split(self, path: str) -> tuple[str, str]:
        """(directory, base name): a host directory, or a directory of the volume."""
        if not self.on_volume(path):
            return os.path.split(os.path.abspath(path.removeprefix(HOST_PREFIX)))
        return posixpath.split(posixpath.normpath("/" + path.lstrip("/")))

    def where(self, path: str) -> tuple[DiskStorage, str]:
        directory, base = self.split(path)
        if not self.on_volume(path):
            return HostStorage(directory), base
        assert self.root is not None
        return VolumeStorage(self.root.fs, directory), base


#: progress labels, as vmkfstools words them
_LABELS = {"create": "Create", "clone": "Clone", "delete_snapshot": "Consolidate", "consolidate": "Consolidate",
           "inflate": "Inflate", "eagerzero": "Eager zero", "punch": "Punch zero", "extend": "Extend"}
#: what an interrupted action leaves behind
_UNDONE = {
    "clone": "the partial copy was removed, the source is untouched",
    "create": "the partial disk was removed",
}
#: actions that stop between two chunks with the disk consistent and finish when run again:
#: what the disk is like then ({at}: the size done so far)
_RESUMABLE = {
    "inflate": "the disk is consistent, still thin beyond {at}",
    "eagerzero": "the disk is consistent, not yet zeroed beyond {at}",
    "punch": "the disk reads the same, zeroed blocks given back in its first {at} only",
    "extend": "the disk keeps its old size and is consistent ({at} of the new space allocated)",
}
#: actions a Ctrl-C must not stop half-way (the parent of a merge would no longer match its delta)
_UNSTOPPABLE = {"delete_snapshot", "consolidate"}

_ACTIONS = (
    "create",
    "clone",
    "extend",
    "inflate",
    "eagerzero",
    "punch",
    "delete",
    "rename",
    "rdm",
    "rdmp",
    "lock",
    "snapshot",
    "revert",
    "delete_snapshot",
    "consolidate",
    "info",
)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--createvirtualdisk", "create", metavar="SIZE", help="create a disk of SIZE")
@click.option("-d", "--diskformat", "disk_format", default=None, help=f"one of {', '.join(ops.DISK_FORMATS)}")
@click.option("-a", "--adaptertype", "adapter", default=None, help="ide, buslogic, lsilogic or legacyESX")
@click.option("-i", "--clonevirtualdisk", "clone", metavar="SRC", help="clone SRC into TARGET")
@click.option("-X", "--extendvirtualdisk", "extend", metavar="SIZE",
              help="grow TARGET to SIZE (-d thin, zeroedthick or eagerzeroedthick: how the new space is allocated)")
@click.option("-j", "--inflatedisk", "inflate", is_flag=True, help="inflate a thin disk")
@click.option("-k", "--eagerzero", "eagerzero", is_flag=True, help="eager-zero a zeroedthick disk")
@click.option("-K", "--punchzero", "punch", is_flag=True, help="deallocate zeroed blocks")
@click.option("-U", "--deletevirtualdisk", "delete", is_flag=True, help="delete TARGET and its extents")
@click.option("-E", "--renamevirtualdisk", "rename", metavar="OLD", help="rename OLD to TARGET")
@click.option("-r", "--createrdm", "rdm", metavar="DEVICE", help="virtual-compatibility RDM of DEVICE")
@click.option("-z", "--createrdmpassthru", "rdmp", metavar="DEVICE", help="passthrough RDM of DEVICE")
@click.option("-D", "--lock", "lock", is_flag=True, help="print lock and owner information")
@click.option("--snapshot", is_flag=True, help="take a snapshot of TARGET (prints the new leaf)")
@click.option("--delta-format", default=None, help="vmfsSparse, seSparse or monolithicSparse")
@click.option("--revert", is_flag=True, help="discard the changes held by snapshot delta TARGET")
@click.option("--delete-snapshot", "delete_snapshot", is_flag=True, help="merge delta TARGET into its parent")
@click.option("--consolidate", is_flag=True, help="merge every delta under TARGET into the base")
@click.option("--info", is_flag=True, help="print the chain of TARGET")
@click.option(
    "--volume",
    "volume",
    metavar="IMAGE[,IMAGE...]",
    default=None,
    help="work inside this VMFS volume (every extent, comma separated): disk paths are volume paths, "
    "host:PATH names a host file",
)
@click.option("-p", "--parents", is_flag=True, help="create TARGET's missing directories inside the volume")
@click.option("--host-uuid", default=None, help="host UUID for the volume's heartbeat when writing")
@click.option("--progress", "progress_mode", type=click.Choice(MODES), default="auto", show_default=True,
              help="progress of create (thick disks), clone, inflate, eager-zero, punch-zero, extend and snapshot "
              "merges on stderr: a bar with rate and time left (auto: when stderr is a terminal), vmkfstools' "
              "'Clone: 45% done.' lines, or none; Ctrl-C stops at the next chunk (a merge is finished first) "
              "and says what was done")
@click.argument("target")
def main(
    target: str,
    disk_format: str | None,
    adapter: str | None,
    delta_format: str | None,
    volume: str | None,
    parents: bool,
    host_uuid: str | None,
    progress_mode: str,
    **actions: object,
) -> None:
    """Operate on the virtual disk TARGET (a .vmdk descriptor)."""
    chosen = [a for a in _ACTIONS if actions.get(a)]
    if len(chosen) != 1:
        raise click.UsageError(f"give exactly one action ({len(chosen)} given)")
    action = chosen[0]
    value = actions[action]
    images = [p for p in (volume or "").split(",") if p]
    if parents and not images:
        raise click.UsageError("-p applies to --volume paths only")
    progress = Progress(_LABELS.get(action, action), progress_mode, unit=512, interrupt=SafeInterrupt(),
                        stoppable=action not in _UNSTOPPABLE)
    try:
        with contextlib.ExitStack() as stack:
            assert progress.interrupt is not None
            stack.enter_context(progress.interrupt)  # entered first, left last: the volume closes first
            stack.callback(progress.finish)
            places = _Places(stack, images, HostIdentity(uuid=host_uuid) if host_uuid else None)
            if action == "rename" and places.on_volume(str(value)) != places.on_volume(target):
                raise click.UsageError("-E renames inside one place: both on the host or both in the volume")
            writes = action not in ("lock", "info", "clone") or (action == "clone" and places.on_volume(target))
            places.open(writable=writes)
            if parents and places.on_volume(target):
                storage, _ = places.where(target)
                assert isinstance(storage, VolumeStorage)
                storage.makedirs(storage.directory)
            _run(places, action, value, target, disk_format, adapter, delta_format, progress)
        if progress.interrupt is not None and progress.interrupt.requested:
            click.echo(f"vmfs-vmdk: Ctrl-C came while {action.replace('_', ' ')} could not stop half-way: it was "
                       "finished", err=True)
    except Interrupted:
        if action in _RESUMABLE:
            at = human(progress.done * progress.unit)
            click.echo(f"vmfs-vmdk: {_LABELS[action].lower()} interrupted at {progress.percent}% ({at} of "
                       f"{human(progress.total * progress.unit)}): {_RESUMABLE[action].format(at=at)}; "
                       "run again to finish", err=True)
            sys.exit(130)
        click.echo(f"vmfs-vmdk: interrupted {progress.summary()}: {_UNDONE.get(action, 'nothing was changed')}; "
                   "the volume was closed cleanly", err=True)
        sys.exit(130)
    except (VmdkError, VmfsError) as exc:
        click.echo(f"vmfs-vmdk: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:  # the host itself failed (disk full, permissions) during file I/O
        click.echo(f"vmfs-vmdk: {target}: {exc.strerror or exc}", err=True)
        sys.exit(1)


def _growth(disk_format: str | None) -> str | None:
    """``-X``'s ``-d``: how the new space is allocated, as vmkfstools takes it (the disk's own
    provisioning without it)."""
    if disk_format is None:
        return None
    fmt = ops.normalize_format(disk_format)
    if fmt not in ops.VMFS_FORMATS:
        raise click.UsageError(f"-X takes -d thin, zeroedthick or eagerzeroedthick (not {disk_format})")
    return ops.VMFS_FORMATS[fmt][1]


def _run(
    places: _Places,
    action: str,
    value: object,
    target: str,
    disk_format: str | None,
    adapter: str | None,
    delta_format: str | None,
    progress: Progress,
) -> None:
    storage, name = places.where(target)
    if action == "create":
        ops.create_disk(
            storage,
            name,
            parse_size(str(value)),
            disk_format or "zeroedthick",
            **({"adapter": adapter} if adapter else {}),
            progress=progress,
        )
        progress.finish()
    elif action == "clone":
        src_storage, src = places.where(str(value))
        ops.clone_disk(src_storage, src, storage, name, disk_format or "zeroedthick", adapter=adapter,
                       progress=progress)
    elif action == "extend":
        ops.extend_disk(storage, name, parse_size(str(value)), provisioning=_growth(disk_format), progress=progress)
        progress.finish()
    elif action == "inflate":
        ops.inflate_disk(storage, name, progress=progress)
        progress.finish()
    elif action == "eagerzero":
        ops.eager_zero(storage, name, progress=progress)
        progress.finish()
    elif action == "punch":
        punched = ops.punch_zero(storage, name, progress=progress)
        progress.finish()
        click.echo(f"{punched} bytes unallocated")
    elif action == "delete":
        ops.delete_disk(storage, name)
    elif action == "rename":
        old_storage, old = places.where(str(value))
        new_dir, _ = places.split(target)
        new = posixpath.relpath(posixpath.join(new_dir, name), places.split(str(value))[0])
        ops.rename_disk(old_storage, old, new)
    elif action in ("rdm", "rdmp"):
        device = str(value)
        ops.create_rdm(
            storage,
            name,
            device,
            host_device_sectors(device),
            passthrough=action == "rdmp",
            **({"adapter": adapter} if adapter else {}),
        )
    elif action == "lock":
        for info in ops.lock_info(storage, name):
            click.echo(info.get("file", ""))
            for key, val in info.items():
                if "\n" in val:  # a text block in another tool's layout (vmkfstools -D)
                    click.echo(val)
                elif key != "file":
                    click.echo(f"  {key}: {val}")
    elif action == "snapshot":
        click.echo(chain.create_snapshot(storage, name, delta_format=delta_format))
    elif action == "revert":
        chain.revert_snapshot(storage, name)
    elif action == "delete_snapshot":
        done = chain.delete_snapshot(storage, name, progress=progress)
        progress.finish()
        click.echo(done)
    elif action == "consolidate":
        done = chain.consolidate(storage, name, progress=progress)
        progress.finish()
        click.echo(done)
    elif action == "info":
        info = ops.disk_info(storage, name)
        click.echo(f"{info['name']}: {info['capacity']} bytes")
        for layer in info["chain"]:  # type: ignore[attr-defined]
            click.echo(
                f"  {layer['name']}  {layer['createType']}  CID={layer['CID']} parentCID={layer['parentCID']}"
            )
            for ext in layer["extents"]:
                flag = " (unclean shutdown)" if ext["unclean"] else ""
                click.echo(f"    {ext['type']} {ext['file']} {ext['sectors']} sectors{flag}")


if __name__ == "__main__":  # pragma: no cover
    main()
