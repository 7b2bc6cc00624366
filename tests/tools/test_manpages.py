"""Man pages (tools/manpages.py): each renders with man(1) and groff without a warning, and says what
``--help`` of the installed tool says: the same options, with the same help strings."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import click
import pytest
from pyvmfs_tools.manpages import TOOLS, context, help_text, load, option_records, subcommands, write_pages

from tests.conftest import tool

RENDER_ENV = {**os.environ, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "MANWIDTH": "80"}


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    outdir = tmp_path_factory.mktemp("man")
    written = write_pages(str(outdir))
    return {Path(p).name.removesuffix(".1"): Path(p) for p in written}


def render(page: Path) -> str:
    r = subprocess.run(["man", "-l", str(page)], capture_output=True, text=True, env=RENDER_ENV, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    return r.stdout


def flat(text: str) -> str:
    return " ".join(text.split())


def squeezed(text: str) -> str:
    """Text without any whitespace: click's wrapper also breaks lines after a hyphen ('read-' /
    'only'), which no other normalisation undoes."""
    return "".join(text.split())


def commands_of(name: str) -> list[tuple[list[str], click.Command, click.Context]]:
    """(argv prefix for --help, command, context) of a tool and of each of its subcommands."""
    command = load(TOOLS[name])
    ctx = context(command, name)
    found = [([tool(name)], command, ctx)]
    if isinstance(command, click.Group):
        # vmfs-debug takes its IMAGE before the command name; --help needs none to exist
        prefix = [tool(name), "IMAGE"] if name == "vmfs-debug" else [tool(name)]
        for sub_name, sub in subcommands(command, ctx):
            found.append(([*prefix, sub_name], sub, context(sub, sub_name, ctx)))
    return found


def help_output(argv: list[str]) -> str:
    r = subprocess.run([*argv, "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def help_option_names(text: str) -> set[str]:
    """The option names column of a --help 'Options:' section."""
    section = text.split("\nOptions:\n", 1)[1].split("\nCommands:\n", 1)[0]
    names = set()
    for line in section.splitlines():
        m = re.match(r"  (-\S.*?)(?:  |$)", line)
        if m:
            names.update(n.split()[0].rstrip(",") for n in m.group(1).split(", "))
    return names


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_page_renders_without_warnings(pages: dict[str, Path], name: str) -> None:
    page = pages[name]
    g = subprocess.run(["groff", "-ww", "-z", "-man", str(page)], capture_output=True, text=True, timeout=60)
    assert g.returncode == 0 and g.stderr == "", g.stderr
    text = render(page)
    for heading in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "SEE ALSO"):
        assert re.search(rf"^{heading}$", text, re.M), heading
    assert text.isascii(), "options must copy as ASCII hyphens"
    assert flat(text).startswith(f"{name.upper()}(1)")


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_page_and_help_list_the_same_options(pages: dict[str, Path], name: str) -> None:
    """Every option of the tool (and of each subcommand) by click introspection is in the page with
    its help string, and ``--help`` of the installed tool lists exactly those names and strings."""
    page_text = flat(render(pages[name]))
    for argv, command, ctx in commands_of(name):
        helped = help_output(argv)
        records = option_records(command, ctx)
        declared = {n for p in command.get_params(ctx) if isinstance(p, click.Option) and not p.hidden
                    for n in (*p.opts, *p.secondary_opts)}
        assert help_option_names(helped) == declared, argv
        for names, text in records:
            assert flat(names) in page_text, (argv, names)
            assert flat(text) in page_text, (argv, names, text)
            assert squeezed(text) in squeezed(helped), (argv, names, text)
        assert flat(command.get_short_help_str(limit=10_000)).rstrip(".") in page_text, argv
        description = squeezed(help_text(command).replace("\b", ""))
        assert description in squeezed(page_text) and description in squeezed(helped), argv


def test_pages_cover_every_installed_tool() -> None:
    """No console script of pyproject without a page (a new tool must be added to TOOLS)."""
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    scripts = pyproject.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    names = {line.split("=", 1)[0].strip().strip('"') for line in scripts.splitlines() if "=" in line}
    assert names == set(TOOLS)
