"""The wheel holds the project's own packages and nothing else at the top level.

Built for real (``pip wheel --no-deps``) from a copy of the source tree, so the checkout is left
as it was; then its top-level names, the packages in it and the console scripts are compared with
the tree.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: source folder -> the package name it installs as
HOMES = {"vmfs": "vmfs", "hostsim": "hostsim", "tools": "pyvmfs_tools"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    keep = ["pyproject.toml", "README.md", *HOMES]
    src.mkdir()
    for name in keep:
        item = ROOT / name
        if item.is_dir():
            shutil.copytree(item, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(item, src / name)
    # the man pages, as `make man` writes them before a package is built
    made = subprocess.run([sys.executable, "-m", "pyvmfs_tools.manpages", str(src / "man")], capture_output=True,
                          text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "out"),
         str(src)], capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (built,) = (work / "out").glob("pyvmfs-*.whl")
    return zipfile.ZipFile(built)


def test_wheel_top_level_names_are_only_ours(wheel: zipfile.ZipFile) -> None:
    tops = {name.split("/")[0] for name in wheel.namelist()}
    meta = {t for t in tops if t.startswith("pyvmfs-") and t.endswith((".dist-info", ".data"))}
    assert tops - meta == set(HOMES.values())
    assert "tools" not in tops


def test_wheel_holds_every_package_of_the_tree(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    for home, package in HOMES.items():
        for path in sorted((ROOT / home).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            inside = path.relative_to(ROOT / home).as_posix()
            assert f"{package}/{inside}" in names, f"{home}/{inside} is not in the wheel"


def test_console_scripts_point_into_the_installed_packages(wheel: zipfile.ZipFile) -> None:
    (entry,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.read_string(wheel.read(entry).decode())
    targets = dict(parser["console_scripts"])
    assert {"vmfs-mount", "vmfs-fsck", "vmfs-mkfs", "vmfs-vmdk", "vmfs-debug", "vmfs-umount"} <= set(targets)
    for name, target in targets.items():
        module = target.split(":")[0]
        assert module.split(".")[0] in HOMES.values(), f"{name} -> {target}"
        assert f"{module.replace('.', '/')}.py" in wheel.namelist(), f"{name} -> {target}: no such module"


def test_wheel_carries_a_man_page_per_tool(wheel: zipfile.ZipFile) -> None:
    """Installed with the package: PREFIX/share/man/man1/<tool>.1 for every console script."""
    (entry,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.read_string(wheel.read(entry).decode())
    pages = {n.rsplit("/", 1)[1] for n in wheel.namelist() if "/data/share/man/man1/" in n}
    assert pages == {f"{name}.1" for name in parser["console_scripts"]}
