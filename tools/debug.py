"""vmfs-debug: inspect every on-disk structure of a VMFS volume (read-only)."""

from __future__ import annotations

import json
import stat as _stat
import sys
from typing import Any

import click
from pyvmfs_tools.common import fail, report_errors
from pyvmfs_tools.progress import MODES, Interrupted, Progress, SafeInterrupt

from vmfs.debug import views as I
from vmfs.errors import InvalidArgumentError
from vmfs.volume.namespace import FileSystem, stat_fd
from vmfs.volume.volume import Volume


class ImagesThenCommand(click.Group):
    """``vmfs-debug [OPTIONS] IMAGE... COMMAND [ARGS]``: images come before the command name."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        idx = next((i for i, a in enumerate(args) if a in self.commands), None)
        if idx is None:
            if any(a in ("-h", "--help") for a in args) or not args:
                return super().parse_args(ctx, args)
            raise click.UsageError(f"no command given (one of: {', '.join(sorted(self.commands))})", ctx)
        head = args[:idx]
        ctx.meta["images"] = [a for a in head if not a.startswith("-")]
        if not ctx.meta["images"]:
            raise click.UsageError("no IMAGE given", ctx)
        return super().parse_args(ctx, [a for a in head if a.startswith("-")] + args[idx:])

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage(ctx.command_path, "[--json] IMAGE... COMMAND [ARGS]...")


class Session:
    def __init__(self, images: list[str], as_json: bool) -> None:
        self.images = images
        self.as_json = as_json
        self._volume: Volume | None = None

    @property
    def volume(self) -> Volume:
        if self._volume is None:
            self._volume = Volume.open(self.images, readonly=True)
        return self._volume

    @property
    def fs(self) -> FileSystem:
        return FileSystem(self.volume)

    def emit(self, data: Any, text: str) -> None:
        if self.as_json:
            click.echo(json.dumps(data, indent=2, sort_keys=True))
        else:
            click.echo(text)


def _size(n: int) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} bytes"


def _kv(rows: list[tuple[str, Any]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.rjust(width)}: {v}" for k, v in rows)


@click.group(cls=ImagesThenCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
@click.pass_context
def main(ctx: click.Context, as_json: bool) -> None:
    """Inspect a VMFS volume: IMAGE is an image file or block device (give every extent of a
    spanned volume, in any order).  Nothing is ever written."""
    ctx.obj = Session(ctx.meta.get("images", []), as_json)


@main.command("fs")
@click.pass_obj
@report_errors()
def cmd_fs(s: Session) -> None:
    """The FS descriptor (superblock) and derived geometry."""
    d = I.fs_descriptor(s.volume)
    rows = [
        ("Volume Version", d["majorVersion"]),
        ("Version", d["minorVersion"]),
        ("Label", d["fsLabel"]),
        ("Mode", d["mode"]),
        ("UUID", d["uuid"]),
        ("Creation time", d["creation"]),
        ("Block size", _size(d["fileBlockSize"])),
        ("Subblock size", _size(d["subBlockSize"])),
        ("FDC Header size", _size(d["fdcClusterGroupOffset"])),
        ("FDC Bitmap count", d["fdcClustersPerGroup"]),
        ("Format", d["version"]),
        ("Config", f"0x{d['config']:x}"),
        ("Volume size", _size(d["volumeSize"])),
        ("LVM UUID", d["volInfo"]["lvId"]),
        ("Host UUID", d["hostUuid"]),
        ("Metadata alignment", d["mdAlignmentEffective"]),
        ("Heartbeat slots", f"{d['heartbeatSlots']} x {d['heartbeatSlotSize']} bytes"),
        ("FDC start", f"0x{d['fdcStart']:x}"),
    ]
    s.emit(d, _kv(rows))


@main.command("lvm")
@click.pass_obj
@report_errors()
def cmd_lvm(s: Session) -> None:
    """LVM device headers, volume descriptor and extent (PE) map."""
    info = I.lvm_info(s.volume)
    if info.get("bare"):
        s.emit(info, f"bare volume (no LVM header), {info['size']} bytes")
        return
    lines = [_kv([("UUID", info["lvId"]), ("Size", _size(info["size"])), ("Num. Extents", info["extents"])])]
    for d in info["devices"]:
        h = d["header"]
        v = d["volume"]
        lines.append(
            f"\ndevice {d['device']}: LVM {h['majorVersion']}.{h['minorVersion']} id {h['devId']}, "
            f"{d['size']} bytes, data at 0x{h['dataOffset']:x}, PEs {v['firstPE']}..{v['lastPE']}, "
            f"names {', '.join(d['sdNames']) or '-'}"
        )
    for m in info["mapping"]:
        lines.append(
            f"  volume 0x{m['volumeOffset']:x}+0x{m['length']:x} -> {m['device']} @0x{m['deviceOffset']:x} "
            f"(PE {m['peId']})"
        )
    s.emit(info, "\n".join(lines))


@main.command("device")
@click.pass_obj
@report_errors()
def cmd_device(s: Session) -> None:
    """Each extent's transport (image file, block device, iSCSI LUN, RBD image) and the
    test-and-set its on-disk locks use: ATS, or SCSI-2 reservations on a LUN without COMPARE AND
    WRITE."""
    info = I.devices(s.volume)
    blocks = []
    for d in info:
        rows = [("Device", d["device"]), ("Transport", d["transport"]), ("Size", _size(d["size"]))]
        if d["transport"] == "iscsi":
            rows += [("Portal", d["portal"]), ("Target", d["target"]), ("LUN", d["lun"]),
                     ("Initiator", d["initiator"]), ("Block size", d["blockSize"])]
        elif d["transport"] == "rbd":
            rows += [("Pool", d["pool"]), ("Image", d["image"])]
        rows.append(("Test-and-set", I.TEST_AND_SET[d["testAndSet"]]))
        blocks.append(_kv(rows))
    s.emit(info, "\n\n".join(blocks))


@main.command("heartbeats")
@click.option("--all", "all_slots", is_flag=True, help="Show free slots too.")
@click.option("--watch", type=float, default=0.0, metavar="SECONDS",
              help="Look twice, SECONDS apart, to tell renewing hosts from stopped ones (ESXi: 16 s lease).")
@click.pass_obj
@report_errors()
def cmd_heartbeats(s: Session, all_slots: bool, watch: float) -> None:
    """Heartbeat slots in use: owner, generation, stamp, journal, and with --watch their age."""
    slots = I.watch_heartbeats(s.volume, watch) if watch > 0 else I.heartbeats(s.volume, all_slots=all_slots)
    lines = []
    for hb in slots:
        state = "in use" if hb["inUse"] else "free"
        if hb.get("renewing") is True:
            state += ", renewing (alive)"
        elif hb.get("renewing") is False:
            state += f", stamp unchanged for {hb['unchangedFor']} s"
        lines.append(
            f"slot {hb['slot']} @0x{hb['addr']:x}: {state}, gen {hb['hbGen']}, stamp {hb['stamp']}, "
            f"owner {hb['owner']}, ip {hb['ip'] or '-'}, journal 0x{hb['journalAddr']:x} "
            f"(volume 0x{hb['journalVolAddr']:x})"
        )
    s.emit(slots, "\n".join(lines) or "no heartbeat slot in use")


@main.command("locks")
@click.pass_obj
@report_errors()
def cmd_locks(s: Session) -> None:
    """Every lock held on the volume (files and resource clusters), with owner and heartbeat."""
    rows = I.held_locks(s.volume)
    lines = [
        f"{r['object']}: {r['modeName']} (mode {r['mode']}), owner {r['owner']}, "
        f"heartbeat 0x{r['hbAddr']:x} gen {r['hbGen']}, token {r['token']}, holders {r['numHolders']}"
        for r in rows
    ]
    s.emit(rows, "\n".join(lines) or "no lock is held")


@main.command("resources")
@click.pass_obj
@report_errors()
def cmd_resources(s: Session) -> None:
    """Used and free counts and geometry of every resource type."""
    rows = I.resources(s.volume)
    lines = [f"{'file':8} {'resource':18} {'total':>10} {'used':>10} {'free':>10}  rpc/cpg/rsz"]
    for r in rows:
        lines.append(
            f"{r['file']:8} {r['name']:18} {r['total']:>10} {r['used']:>10} {r['free']:>10}  "
            f"{r['resources_per_cluster']}/{r['clusters_per_group']}/0x{r['resource_size']:x}"
        )
    s.emit(rows, "\n".join(lines))


def _target_fd(s: Session, target: str):  # type: ignore[no-untyped-def]
    if target.startswith("/"):
        return s.fs.resolve(target, follow=False)
    try:
        address = int(target, 0)
    except ValueError:
        raise InvalidArgumentError(f"{target!r} is neither an absolute path nor an FD address") from None
    return s.volume.read_fd(address)


@main.command("inode")
@click.argument("target")
@click.pass_obj
@report_errors()
def cmd_inode(s: Session, target: str) -> None:
    """A file descriptor by PATH or by FD address (e.g. 0x4), with its lock."""
    info = I.inode(s.volume, _target_fd(s, target))
    lock = info["lock"]
    rows = [
        ("ID", f"0x{info['descAddr']:x}"),
        ("ID2", f"0x{info['generation']:x}"),
        ("Links", info["linkCount"]),
        ("Type", info["type"]),
        ("Flags", info["flags"]),
        ("Size", info["fileLength"]),
        ("Block size", _size(info["blockSize"])),
        ("Block count", info["numBlocks"]),
        ("UID", info["uid"]),
        ("GID", info["gid"]),
        ("Mode", info["modeOctal"]),
        ("ZLA", f"{info['zla']} ({info['zlaName']})"),
        ("TBZ", info["tbz"]),
        ("COW", info["cow"]),
        ("Access Time", info["atimeText"]),
        ("Modify Time", info["mtimeText"]),
        ("Change Time", info["ctimeText"]),
        ("Volume offset", f"0x{info['volumeOffset']:x}"),
        ("Lock", f"{lock['modeName']} (mode {lock['mode']}), owner {lock['owner']}, "
                 f"hb 0x{lock['hbAddr']:x} gen {lock['hbGen']}, token {lock['token']}"),
    ]
    s.emit(info, _kv(rows))


@main.command("ls")
@click.option("-l", "long", is_flag=True, help="Long listing.")
@click.argument("path", default="/")
@click.pass_obj
@report_errors()
def cmd_ls(s: Session, long: bool, path: str) -> None:
    """List a directory."""
    fs = s.fs
    entries = fs.listdir(path)
    rows = []
    for e in entries:
        fd = s.volume.read_fd(e.address)
        st = stat_fd(fd)
        row = {"name": e.name, "address": e.address, "type": e.type, **st.__dict__}
        if st.type == 4:
            row["target"] = fs.read_link_fd(fd)
        rows.append(row)
    if not long:
        text = "\n".join(r["name"] for r in rows)
    else:
        lines = []
        for r in rows:
            when = I.utc(r["mtime"])
            name = r["name"] + (f" -> {r['target']}" if "target" in r else "")
            lines.append(
                f"{_stat.filemode(r['mode'])} {r['nlink']:>3} {r['uid']:>6} {r['gid']:>6} "
                f"{r['size']:>14} {when} {name}"
            )
        text = "\n".join(lines)
    s.emit(rows, text)


@main.command("cat")
@click.option("--progress", "progress_mode", type=click.Choice(MODES), default="auto", show_default=True,
              help="progress on stderr: a bar with rate and time left (auto: when stderr is a terminal and "
              "standard output is not), 'Copy: 45% done.' lines, or none; Ctrl-C stops and says how far it got")
@click.argument("paths", nargs=-1, required=True)
@click.pass_obj
@report_errors()
def cmd_cat(s: Session, paths: tuple[str, ...], progress_mode: str) -> None:
    """Write file contents to standard output."""
    out = sys.stdout.buffer
    if progress_mode == "auto" and sys.stdout.isatty():
        progress_mode = "none"  # a bar would be drawn into the file's bytes on the screen
    progress = Progress("Copy", progress_mode, interrupt=SafeInterrupt())
    readers = [s.fs.reader(path) for path in paths]
    total, done = sum(r.size for r in readers), 0
    assert progress.interrupt is not None
    try:
        with progress.interrupt:
            progress(0, total)
            for reader in readers:
                pos = 0
                while pos < reader.size:
                    chunk = reader.read(pos, 1 << 20)
                    out.write(chunk)
                    pos += len(chunk)
                    done += len(chunk)
                    progress(done, total)
        out.flush()
    except Interrupted:
        out.flush()
        progress.finish()
        fail(f"cat interrupted {progress.summary()}: the output is incomplete (nothing was written to the volume)",
             130)
    progress.finish()


@main.command("blocks")
@click.argument("target")
@click.option("--limit", type=int, default=None, help="Only the first N file blocks.")
@click.pass_obj
@report_errors()
def cmd_blocks(s: Session, target: str, limit: int | None) -> None:
    """The block map of a file: pointer array and data blocks with volume offsets."""
    info = I.block_map(s.volume, _target_fd(s, target), limit=limit)
    if info.get("resident"):
        s.emit(info, f"resident: {info['size']} bytes inside the file descriptor")
        return
    lines = [f"ZLA {info['zla']}, block size {info['blockSize']}, size {info['size']}"]
    lines += [f"  ptr[{p['slot']}] = 0x{p['address']:x} {p['text']}" for p in info["pointerArray"]]
    for b in info["blocks"]:
        where = "zeros" if b["volumeOffset"] is None else f"volume 0x{b['volumeOffset']:x}"
        lines.append(f"  block {b['index']}: 0x{b['address']:x} {b['text']} -> {where}")
    s.emit(info, "\n".join(lines))


@main.command("map")
@click.argument("path", required=False)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Draw the map into this PNG file instead of printing it.")
@click.option("--width", type=click.IntRange(8, 512), default=64, show_default=True,
              help="Squares (characters) per row; big volumes get several blocks per square.")
@click.pass_obj
@report_errors()
def cmd_map(s: Session, path: str | None, output: str | None, width: int) -> None:
    """Allocation map of the volume (free, system, pointer-block files, to-be-zeroed and per-file
    blocks) with fragmentation figures; with PATH, that file's extents and where they lie."""
    from pyvmfs_tools import volume_map as M

    from vmfs.debug.allocmap import build_map

    amap = build_map(s.volume)
    only = None
    if path is not None:
        fd = _target_fd(s, path)
        only = next((i for i, f in enumerate(amap.files) if f.address == fd.address), None)
        if only is None:
            raise InvalidArgumentError(f"{path}: not found in the tree")
    if output is not None:
        M.draw_png(amap, output, only=only, width=width)
    data = {**amap.figures(), "files": [{"path": f.path, "blocks": len(f.blocks), "extents": f.extents}
                                        for f in amap.files if only is None or f is amap.files[only]]}
    text = M.text_map(amap, width=width, only=only)
    if only is not None:
        text = "\n".join(M.file_lines(amap.files[only], amap.block_size)) + "\n" + text
    if output is not None:
        text = f"{output}: {M.title(amap)}"
    s.emit(data, text)


if __name__ == "__main__":
    main()
