"""Man pages for every tool, written from the tools' own click definitions (so a page cannot say
something ``--help`` does not): ``python -m pyvmfs_tools.manpages [OUTDIR]`` (``make man``: man/).

Every piece comes from click itself, the way ``--help`` gets it: the usage line from the command's
``format_usage``, the description from its help text (click's ``\\b`` paragraphs kept as they are),
each option's names and help (defaults included) from ``get_help_record``; a group's subcommands
each get a subsection.  Written by hand rather than with click-man: that one writes a page per
subcommand, escapes only hyphens (a help line starting with '.' or a backslash would be read as a
roff request) and needs to run as a setup.py command; this is one small module with no dependency.
"""

from __future__ import annotations

import datetime
import importlib
import inspect
import os
import sys
from importlib import metadata

import click

#: tool name -> "module:attribute" of its click command, as in pyproject's [project.scripts]
TOOLS: dict[str, str] = {
    "vmfs-mkfs": "pyvmfs_tools.mkfs:main",
    "vmfs-mount": "pyvmfs_tools.mount:main",
    "vmfs-umount": "pyvmfs_tools.umount:main",
    "vmfs-fsck": "pyvmfs_tools.fsck:cli",  # main wraps cli for its exit codes
    "vmfs-debug": "pyvmfs_tools.debug:main",
    "vmfs-vmdk": "pyvmfs_tools.vmdk:main",
    "mount.vmfs": "pyvmfs_tools.mount_helper:main",
    "umount.fuse.vmfs": "pyvmfs_tools.mount_helper:umount_main",
    "hostsim": "pyvmfs_tools.hostsim:main",
}


def load(spec: str) -> click.Command:
    module, _, attr = spec.partition(":")
    command = getattr(importlib.import_module(module), attr)
    assert isinstance(command, click.Command), spec
    return command


def escape(text: str) -> str:
    """Roff text: backslashes doubled as \\e, hyphens as \\- (so options copy as ASCII), and a line
    starting with '.' or "'" protected with \\& (it would be a request)."""
    out = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line for line in out.split("\n"))


def help_text(command: click.Command) -> str:
    """The command's description as ``--help`` prints it (cleandoc, up to a \\f)."""
    return inspect.cleandoc(command.help or "").partition("\f")[0]


def paragraphs(text: str) -> list[str]:
    """roff for click help text: blank-line paragraphs, filled, except those click keeps verbatim
    (a paragraph whose first line is \\b)."""
    out = []
    for para in text.split("\n\n"):
        if not para.strip():
            continue
        if para.startswith("\b"):
            body = para.split("\n", 1)[1] if "\n" in para else ""
            out.append(".PP\n.nf\n" + escape(body) + "\n.fi")
        else:
            out.append(".PP\n" + escape(" ".join(para.split())))
    return out


def usage(command: click.Command, ctx: click.Context) -> str:
    """The usage line of ``--help`` without its 'Usage: ' (through the command's own format_usage)."""
    formatter = ctx.make_formatter()
    formatter.width = 10_000  # one line
    command.format_usage(ctx, formatter)
    return " ".join(formatter.getvalue().split()).removeprefix("Usage: ")


def option_records(command: click.Command, ctx: click.Context) -> list[tuple[str, str]]:
    """(names, help) of each option, exactly as ``--help`` lists them (help option included)."""
    records = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is not None and not isinstance(param, click.Argument):  # as format_options does
            records.append(record)
    return records


def options_roff(records: list[tuple[str, str]]) -> list[str]:
    return [f".TP\n.B {escape(names)}\n{escape(' '.join(text.split()))}" for names, text in records]


def subcommands(group: click.Group, ctx: click.Context) -> list[tuple[str, click.Command]]:
    listed = [(name, group.get_command(ctx, name)) for name in group.list_commands(ctx)]
    return [(name, cmd) for name, cmd in listed if cmd is not None and not cmd.hidden]


def context(command: click.Command, name: str, parent: click.Context | None = None) -> click.Context:
    """The context ``--help`` runs in (the command's context_settings applied, e.g. -h), made
    without parsing anything real."""
    return command.make_context(name, [], parent=parent, resilient_parsing=True)


def page(name: str, command: click.Command, version: str, date: str) -> str:
    """The whole man page of one tool (section 1)."""
    ctx = context(command, name)
    summary = (command.get_short_help_str(limit=200) or name).rstrip(".")
    lines = [
        f'.TH "{name.upper()}" 1 "{date}" "pyvmfs {version}" "pyvmfs manual"',
        ".nh", ".ad l",  # no hyphenation, ragged right: text reads (and greps) as --help prints it
        ".SH NAME", f"{escape(name)} \\- {escape(summary)}",
        ".SH SYNOPSIS", f".B {escape(usage(command, ctx))}",
        ".SH DESCRIPTION", *paragraphs(help_text(command)),
        ".SH OPTIONS", *options_roff(option_records(command, ctx)),
    ]
    if isinstance(command, click.Group):
        lines.append(".SH COMMANDS")
        for sub_name, sub in subcommands(command, ctx):
            sub_ctx = context(sub, sub_name, ctx)
            lines += [f".SS {escape(sub_name)}", f".B {escape(usage(sub, sub_ctx))}",
                      *paragraphs(help_text(sub))]
            records = option_records(sub, sub_ctx)
            if records:
                lines += [".PP", "Options:", ".RS", *options_roff(records), ".RE"]
    others = sorted(t for t in TOOLS if t != name)
    lines += [".SH SEE ALSO", ",\n".join(f".BR {escape(t)} (1)" for t in others)]
    return "\n".join(lines) + "\n"


def write_pages(outdir: str) -> list[str]:
    """Write ``outdir/<tool>.1`` for every tool; the paths written."""
    try:
        version = metadata.version("pyvmfs")
    except metadata.PackageNotFoundError:
        version = "unknown"
    # SOURCE_DATE_EPOCH: the same sources give the same pages (reproducible builds)
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (datetime.datetime.fromtimestamp(int(epoch), tz=datetime.UTC) if epoch
            else datetime.datetime.now(tz=datetime.UTC))
    os.makedirs(outdir, exist_ok=True)
    written = []
    for name, spec in TOOLS.items():
        path = os.path.join(outdir, f"{name}.1")
        with open(path, "w") as f:
            f.write(page(name, load(spec), version, when.strftime("%Y-%m-%d")))
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_pages(sys.argv[1] if len(sys.argv) > 1 else os.path.join("build", "man")):
        print(written_path)
