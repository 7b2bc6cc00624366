"""Power cut during a repair: whatever write the cut falls on, the next vmfs-fsck -y finishes the
job (replaying the interrupted repair's journal first) and a run after it is clean.

The repair writes through the library's journal, so this holds for every cut point; the test
cuts after each write of a whole repair run in turn.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fsck import corrupt, volumes
from vmfs.device.file import FileDevice
from vmfs.errors import DeviceError
from vmfs.fsck import FsckOptions, Mode, Policy, check
from vmfs.host import HostIdentity

CASES = {
    "shared-block": [{"op": "pointer", "path": "/top", "index": 1, "like": "/d1/big"}],
    "orphan-dir": [{"op": "remove_entry", "dir": "/d1", "name": "d2"}],
    "bitmaps": [{"op": "bitmap", "resource": "FB", "file": "/d1/big", "block": 1, "state": "free"},
                {"op": "cluster", "resource": "SB", "cluster": 0, "field": "freeResources", "value": {"add": 4}}],
}
FSCK_HOST = HostIdentity(uuid="5f000000-00000009-0009-020000000009", ip="192.0.2.9")


class _Cut:
    """Counts device writes; from write ``at`` on, the device is gone (nothing more lands)."""

    def __init__(self, at: int | None) -> None:
        self.at = at
        self.count = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real = FileDevice._write

        def write(dev: FileDevice, offset: int, data: bytes) -> None:
            self.count += 1
            if self.at is not None and self.count >= self.at:
                raise DeviceError(f"{dev.name}: power cut")
            real(dev, offset, data)

        monkeypatch.setattr(FileDevice, "_write", write)


def _run(image: Path, mode: Mode) -> int:
    return check([str(image)], FsckOptions(Policy(mode), host=FSCK_HOST)).exit_code


@pytest.mark.crash
@pytest.mark.parametrize("name", sorted(CASES))
def test_power_cut_at_every_write(name: str, tmp_path: Path, populated: Path, populated_tree: dict,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    pristine = tmp_path / "damaged.img"
    volumes.copy(populated, pristine)
    pristine.chmod(0o644)
    corrupt.apply(pristine, CASES[name])
    probe = _Cut(None)
    with monkeypatch.context() as m:
        probe.install(m)
        image = volumes.copy(pristine, tmp_path / "probe.img")
        assert _run(image, Mode.YES) == 1
    writes = probe.count
    assert writes > 3
    for at in range(1, writes + 1):
        image = volumes.copy(pristine, tmp_path / f"cut{at}.img")
        with monkeypatch.context() as m:
            _Cut(at).install(m)
            _run(image, Mode.YES)  # dies part way
        assert _run(image, Mode.YES) in (0, 1), f"cut at write {at} of {writes}"
        assert _run(image, Mode.NO) == 0, f"cut at write {at} of {writes}"
        after = volumes.capture(image)
        for path in ("/d1/small", "/d1/sub", "/many/f42", "/link"):
            assert after[path] == populated_tree[path], (at, path)
        image.unlink()
