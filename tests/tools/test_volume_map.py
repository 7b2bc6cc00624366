"""vmfs-debug map (vmfs/allocmap.py, tools/volume_map.py): the figures agree with the FB bitmap
(``vmfs-debug resources``), a file made of holes' leftovers shows as several extents, to-be-zeroed
blocks of a zeroedthick disk show as such, and the PNG is a picture."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Mount, tool


def debug(image: Path, *args: str) -> str:
    r = subprocess.run([tool("vmfs-debug"), str(image), *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def debug_json(image: Path, *args: str) -> object:
    r = subprocess.run([tool("vmfs-debug"), "--json", str(image), *args], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def fb_row(image: Path) -> dict[str, int]:
    rows = debug_json(image, "resources")
    assert isinstance(rows, list)
    return next(r for r in rows if r["file"] == ".fbb.sf" and r["name"] == "file blocks")


def check_against_resources(image: Path) -> dict[str, object]:
    figures = debug_json(image, "map")
    assert isinstance(figures, dict)
    row = fb_row(image)
    assert (figures["blocks_total"], figures["blocks_used"], figures["blocks_free"]) == (
        row["total"], row["used"], row["free"])
    return figures


@pytest.mark.parametrize("name", ["vmfs5", "vmfs6"])
def test_real_sample_map_matches_resources(samples_dir: Path, vmfs5_image: Path, vmfs6_image: Path,
                                           tmp_path: Path, name: str) -> None:
    image = vmfs5_image if name == "vmfs5" else vmfs6_image
    figures = check_against_resources(image)
    text = debug(image, "map").splitlines()
    cells = "".join(line for line in text[1:] if line and not line.startswith(("one character", "  ")))
    assert len(cells) == figures["blocks_total"]  # one character per block on these small volumes
    assert sum(c != "." for c in cells) == figures["blocks_used"]
    png = tmp_path / "map.png"
    out = debug(image, "map", "-o", str(png))
    assert out.startswith(f"{png}: {figures['blocks_used']}/{figures['blocks_total']} blocks used")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


@pytest.mark.fuse
@pytest.mark.slow  # about 20 s: a rw mount and a dozen vmfs-debug runs
def test_fragmented_volume_and_tbz(tmp_path: Path) -> None:
    image = tmp_path / "frag.img"
    subprocess.run([tool("vmfs-mkfs"), "-t", "vmfs5", "--size", "512M", str(image)], check=True, capture_output=True)
    mnt = tmp_path / "m"
    with Mount([tool("vmfs-mount"), "-o", "rw", str(image), str(mnt)], mnt) as root:
        for n in range(8):  # eight 2 MiB files side by side, then every other one deleted
            (root / f"f{n}").write_bytes(os.urandom(2 << 20))
        for n in range(0, 8, 2):
            (root / f"f{n}").unlink()
        big = os.urandom(12 << 20)
        (root / "big").write_bytes(big)
    subprocess.run([tool("vmfs-vmdk"), "--volume", str(image), "-c", "8M", "-d", "zeroedthick", "/disk.vmdk"],
                   check=True, capture_output=True)
    figures = check_against_resources(image)
    assert figures["fragmented_files"] >= 1
    one = debug_json(image, "map", "/big")
    assert isinstance(one, dict)
    (entry,) = one["files"]
    assert entry["path"] == "/big" and entry["blocks"] == 12 and len(entry["extents"]) >= 2, entry
    text = debug(image, "map", "/big")
    assert text.startswith(f"/big: 12 blocks in {len(entry['extents'])} extents")
    tbz = debug(image, "map", "/disk-flat.vmdk")
    assert "to-be-zeroed" in tbz.splitlines()[1], tbz
    assert "z" in "".join(debug(image, "map").splitlines()[1:9])
    debug(image, "map", "-o", str(tmp_path / "frag.png"))
    assert (tmp_path / "frag.png").stat().st_size > 5000
