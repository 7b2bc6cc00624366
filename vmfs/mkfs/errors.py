"""Errors of the formatter."""

from __future__ import annotations

from vmfs.errors import ExistsError


class ExistingDataError(ExistsError):
    """A device already holds a file system, a volume or a partition table (EEXIST)."""

    def __init__(self, device: str, what: str) -> None:
        super().__init__(f"{device}: contains {what}; refusing to overwrite it")
        self.device = device
        self.what = what
