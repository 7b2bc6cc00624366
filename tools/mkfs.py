"""vmfs-mkfs: make a VMFS5 or VMFS6 volume on image files or block devices (one per extent)."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass

import click
from pyvmfs_tools.common import fail, parse_size, report_errors
from pyvmfs_tools.progress import MODES, Interrupted, Progress, SafeInterrupt

from vmfs.device.base import BlockDevice
from vmfs.device.file import FileDevice
from vmfs.device.opener import is_network_spec, open_device
from vmfs.mkfs import ExistingDataError, Layout, MkfsOptions, detect_signature, format_volume, plan
from vmfs.volume.resources import RESOURCE_NAMES


def _size_option(ctx: click.Context, param: click.Parameter, value: object) -> object:
    if value is None:
        return None
    if isinstance(value, tuple):
        return tuple(parse_size(v) for v in value)
    return parse_size(str(value))


@dataclass
class Target:
    path: str
    size: int  # size the device will have
    existed: bool
    old_size: int  # 0 when the file is created


def _targets(paths: tuple[str, ...], size: int | None, extent_sizes: tuple[int, ...], force: bool) -> list[Target]:
    if extent_sizes and len(extent_sizes) != len(paths):
        raise click.UsageError(f"{len(extent_sizes)} --extent-size values for {len(paths)} devices")
    out = []
    for i, path in enumerate(paths):
        want = extent_sizes[i] if extent_sizes else size
        if is_network_spec(path):  # network storage has its size, as a block device has
            if want is not None:
                raise click.UsageError(f"{path} is network storage: --size applies to image files only")
            with open_device(path) as dev:
                out.append(Target(path, dev.size, True, dev.size))
            continue
        try:
            st = os.stat(path)
        except FileNotFoundError:
            if want is None:
                raise click.UsageError(f"{path} does not exist: give --size to create an image") from None
            out.append(Target(path, want, False, 0))
            continue
        if stat.S_ISBLK(st.st_mode):
            if want is not None:
                raise click.UsageError(f"{path} is a block device: --size applies to image files only")
            with FileDevice(path) as dev:
                out.append(Target(path, dev.size, True, dev.size))
            continue
        if want is not None and want < st.st_size and not force:
            fail(f"{path} is {st.st_size} bytes, more than --size {want}; refusing to shrink it without --force")
        out.append(Target(path, want if want is not None else st.st_size, True, st.st_size))
    return out


def _describe(layout: Layout, dry_run: bool) -> str:
    d = layout.to_dict()
    mib = 1 << 20
    lines = [
        f"{'Would make' if dry_run else 'Made'} {d['version']} volume {d['label']!r}: "
        f"{d['volumeSize'] // mib} MiB on {len(d['extents'])} extent(s)",
        f"  FS UUID {d['fsUuid']}, LV UUID {d['lvUuid']}, host {d['hostUuid']}",
        f"  {d['fileBlocks']} file blocks of {d['blockSize'] // mib} MiB, {d['usedFileBlocks']} used by metadata; "
        f"sub-blocks of {d['subBlockSize'] // 1024} KiB",
        "Extents:",
    ]
    for e in d["extents"]:
        lines.append(
            f"  {e['index']}: {e['name']} ({e['deviceUuid']}), {e['deviceSize']} bytes; data at 0x{e['dataOffset']:x} "
            f"-> volume 0x{e['volumeOffset']:x}+0x{e['length']:x} (segments {e['firstSegment']}..{e['lastSegment']}, "
            f"{e['peEntries']} PE entries of {e['peLength'] // mib} MiB), {e['unusedBytes']} bytes unused"
        )
    lines.append("Volume regions:")
    for r in d["regions"]:
        lines.append(f"  0x{r['offset']:012x} +0x{r['length']:x}  {r['name']}")
    lines.append("System files:")
    for f in d["systemFiles"]:
        pbs = f", pointer blocks {f['pointerBlocks']}" if f["pointerBlocks"] else ""
        blocks = ", ".join(f"{first}..{first + count - 1}" for first, count in f["runs"])
        lines.append(
            f"  {f['name']:8} FD 0x{f['fdAddress']:08x} @0x{f['fdVolumeOffset']:x}, blocks {blocks}, "
            f"{f['fileLength']} bytes, ZLA {f['zla']}, mode {f['mode']:o}, {f['links']} link(s){pbs}"
        )
    lines.append("Resources:")
    for r in d["resources"]:
        lines.append(
            f"  {r['file']:8} {RESOURCE_NAMES[r['type']]:17} {r['resources']:>9} total, {r['used']} used; "
            f"rpc {r['resourcesPerCluster']}, cpg {r['clustersPerGroup']}, rsz 0x{r['resourceSize']:x}, "
            f"{r['clusters']} clusters in {r['clusterGroups']} groups of 0x{r['clusterGroupSize']:x}, "
            f"file {r['fileLength']} bytes"
        )
    if not dry_run:
        lines.append(f"Wrote {d['bytesWritten']} bytes.")
    return "\n".join(lines)


def _restore(targets: list[Target]) -> None:
    """Undo what the tool did to image files before a failed format (never the format itself)."""
    for t in targets:
        try:
            if not t.existed:
                os.unlink(t.path)
            elif os.path.isfile(t.path) and os.path.getsize(t.path) != t.old_size:
                os.truncate(t.path, t.old_size)
        except OSError:
            pass


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("devices", nargs=-1, required=True, metavar="DEVICE...")
@click.option("--size", callback=_size_option, metavar="SIZE",
              help="Create or extend each image file (sparse) to SIZE, e.g. 2T, 512G.")
@click.option("--extent-size", multiple=True, callback=_size_option, metavar="SIZE",
              help="Size of each image in order (repeat once per DEVICE); overrides --size.")
@click.option("-t", "--type", "fs_type", type=click.Choice(["vmfs5", "vmfs6"]), default="vmfs6", show_default=True,
              help="File-system version: vmfs6, what ESXi 6.5 and later make, or vmfs5 (spanned volumes, "
              "ESXi 5.x/6.0 hosts).")
@click.option("-L", "--label", default="", help="Volume label (at most 127 bytes).")
@click.option("--uuid", "fs_uuid", default=None, help="File-system UUID, e.g. 61137dd5-df6bc2c8-f0e7-000c29801686.")
@click.option("--block-size", default="1M", show_default=True, callback=_size_option,
              help="File block size; VMFS5 has 1M only.")
@click.option("--sub-block-size", default=None, callback=_size_option,
              help="Sub-block size; VMFS5 has 8K only, VMFS6 64K only (the default).")
@click.option("--files", type=click.IntRange(64, 129024), default=None,
              help="File descriptors to create (default: VMFS5 one per 4 MiB, as ESXi scales them; VMFS6 16384).")
@click.option("--sub-blocks", type=click.IntRange(256, 32000), default=None,
              help="Sub-blocks for small files and directories (default: VMFS5 one per MiB; VMFS6 16384 "
              "or what the space left holds).")
@click.option("--pointer-blocks", type=click.IntRange(1, 64512), default=None,
              help="VMFS5 pointer blocks; each maps 1 GiB of a file above 256 MiB (default: one per GiB).")
@click.option("-f", "--force", is_flag=True, help="Overwrite devices that hold data.")
@click.option("-n", "--dry-run", is_flag=True, help="Print the layout; create and write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the layout as JSON.")
@click.option("--progress", "progress_mode", type=click.Choice(MODES), default="auto", show_default=True,
              help="Progress on stderr: a bar with rate and time left (auto: when stderr is a terminal and "
              "there is no --json), 'Format: 45% done.' lines, or none. Ctrl-C stops before the volume "
              "is made usable.")
@report_errors()
def main(
    devices: tuple[str, ...],
    size: int | None,
    extent_size: tuple[int, ...],
    fs_type: str,
    label: str,
    fs_uuid: str | None,
    block_size: int,
    sub_block_size: int | None,
    files: int | None,
    sub_blocks: int | None,
    pointer_blocks: int | None,
    force: bool,
    dry_run: bool,
    as_json: bool,
    progress_mode: str,
) -> None:
    """Make a VMFS6 (or with -t vmfs5 a VMFS5) volume on DEVICE... (image files or block devices;
    several make a spanned VMFS5 volume, first one first).  Refuses devices that hold data unless
    --force is given."""
    version = 6 if fs_type == "vmfs6" else 5
    if version == 6 and pointer_blocks is not None:
        raise click.UsageError("--pointer-blocks: a VMFS6 volume starts with no pointer blocks (VMFS5: -t vmfs5)")
    options = MkfsOptions(label=label, version=version, fs_uuid=fs_uuid, block_size=block_size,
                          sub_block_size=sub_block_size,
                          num_fds=files, num_sub_blocks=sub_blocks, num_pointer_blocks=pointer_blocks,
                          force=force)
    options.validate(len(devices))
    targets = _targets(devices, size, extent_size, force)
    if dry_run:
        layout = plan([t.size for t in targets], options)
        click.echo(json.dumps(layout.to_dict(), indent=2) if as_json else _describe(layout, dry_run=True))
        for t in targets:
            if t.existed:
                with open_device(t.path) as dev:
                    sig = detect_signature(dev)
                if sig is not None and not as_json:
                    click.echo(f"note: {t.path} contains {sig.what}; formatting it needs --force")
        return
    if as_json and progress_mode == "auto":
        progress_mode = "none"
    progress = Progress("Format", progress_mode, interrupt=SafeInterrupt())
    opened: list[BlockDevice] = []
    try:
        for t in targets:
            if not t.existed or t.size != t.old_size:
                with open(t.path, "ab"):
                    pass
                os.truncate(t.path, t.size)
            opened.append(open_device(t.path, readonly=False))
        assert progress.interrupt is not None
        with progress.interrupt:
            try:
                layout = format_volume(list(opened), options, progress=progress)
            finally:
                progress.finish()
    except Interrupted:
        _restore(targets)
        gone = [t.path for t in targets if not t.existed]
        kept = [t.path for t in targets if t.existed]
        what = "; ".join([*(f"{', '.join(gone)}: removed" for _ in gone[:1]),
                          *(f"{', '.join(kept)}: partly written: format it again before use" for _ in kept[:1])])
        fail(f"interrupted {progress.summary()} before the volume was made usable; {what}", 130)
        return
    except ExistingDataError as exc:
        _restore(targets)
        fail(f"{exc} (use --force)")
        return
    except BaseException:
        _restore(targets)
        raise
    finally:
        for dev in opened:
            dev.close()
    click.echo(json.dumps(layout.to_dict(), indent=2) if as_json else _describe(layout, dry_run=False))


if __name__ == "__main__":
    main()
