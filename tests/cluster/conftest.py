from __future__ import annotations

from pathlib import Path

import pytest

from vmfs.cluster.attachment import HostAttachment
from vmfs.cluster.host import HostIdentity, ManualClock
from vmfs.device import FileDevice
from vmfs.mkfs import MkfsOptions, format_volume
from vmfs.volume.volume import Volume


def make_volume(path: Path, size: int = 2 << 30, **options: object) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    dev = FileDevice(path, readonly=False)
    try:
        format_volume([dev], MkfsOptions(label="cluster", creation_time_us=1_700_000_000_000_000, **options))
    finally:
        dev.close()
    return path


def host(n: int, clock: ManualClock, **kwargs: object) -> HostIdentity:
    """A simulated host with its own UUID on a shared simulated clock: it renews its heartbeat
    whenever the clock moves, until its heartbeat is stopped (the host "dies")."""
    return HostIdentity(
        uuid=f"6000000{n}-00000000-0000-02000000000{n}",
        ip=f"192.0.2.{n}",
        clock=clock,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return make_volume(tmp_path / "shared.img")


def mount(image: Path, h: HostIdentity) -> Volume:
    return HostAttachment.open(image, host=h)
