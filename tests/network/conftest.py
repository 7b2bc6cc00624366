from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.network import tgt


@pytest.fixture(scope="session")
def tgt_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tgt.TgtTarget]:
    """One tgtd for the session.  CI installs tgt (make test), so there a missing tgt fails."""
    why = tgt.available()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    target = tgt.TgtTarget(Path(tmp_path_factory.mktemp("tgt"))).start()
    try:
        yield target
    finally:
        target.stop()
