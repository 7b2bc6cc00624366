"""Fixtures for the vmfs-fsck tests: one populated volume per session, copied per case."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fsck import volumes
from tests.mkfs.conftest import huge_dir  # noqa: F401 - a folder that holds a 64 TiB sparse file


@pytest.fixture(scope="session")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A freshly formatted and populated VMFS5 volume (read it, never change it: copy it)."""
    path = volumes.make_volume(tmp_path_factory.mktemp("fsck-base") / "populated.img")
    path.chmod(0o444)
    return path


@pytest.fixture(scope="session")
def populated_tree(populated: Path) -> dict[str, dict[str, object]]:
    return volumes.capture(populated)


@pytest.fixture(scope="session")
def populated6(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same volume as ``populated``, formatted as VMFS6 (read it, never change it: copy it)."""
    path = volumes.make_volume(tmp_path_factory.mktemp("fsck-base6") / "populated6.img", version=6)
    path.chmod(0o444)
    return path


@pytest.fixture(scope="session")
def populated6_tree(populated6: Path) -> dict[str, dict[str, object]]:
    return volumes.capture(populated6)
