"""Fixtures for the VMDK tests (helpers live in ``vmdk_helpers``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmfs.vmdk.storage import HostStorage


@pytest.fixture
def storage(tmp_path: Path) -> HostStorage:
    return HostStorage(tmp_path)
