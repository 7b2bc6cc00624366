"""A disk chain against a bytearray model (hypothesis stateful testing).

Rules: write (data or zeros, any alignment), take a snapshot, revert the leaf, delete the leaf
snapshot (consolidating it into its parent), extend (only without snapshots, as vmkfstools).  After
every step the whole disk, read through the chain, must equal the model.  The oracle variants also
check, at the end of each run, that qemu-img accepts and reads the leaf identically and that
dissect.hypervisor reads the same bytes.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from vmdk_helpers import MIB, QEMU_IMG, dissect_read, qemu_check, qemu_raw

from vmfs.vmdk import chain, ops
from vmfs.vmdk.disk import open_disk
from vmfs.vmdk.errors import UnsupportedError
from vmfs.vmdk.storage import HostStorage

SIZE = 4 * MIB
MAX_SIZE = 6 * MIB
GRAIN = 128  # sectors: 64 KiB


class ChainMachine(RuleBasedStateMachine):
    base_format = "monolithicSparse"
    delta_format: str | None = None
    oracle = False

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="vmdk-chain-"))
        self.storage = HostStorage(self.dir)
        self.model = bytearray()
        self.saved: list[bytes] = []
        self.leaf = "base.vmdk"

    @initialize()
    def create(self) -> None:
        ops.create_disk(self.storage, "base.vmdk", SIZE, self.base_format, grain_size=GRAIN)
        self.model = bytearray(SIZE)

    @rule(
        offset=st.integers(0, MAX_SIZE - 1),
        length=st.integers(1, 200 * 1024),
        fill=st.one_of(st.just(0), st.integers(1, 255)),
        seed=st.integers(0, 2**32 - 1),
    )
    def write(self, offset: int, length: int, fill: int, seed: int) -> None:
        offset %= len(self.model)
        length = min(length, len(self.model) - offset)
        if fill and seed % 2:
            data = seed.to_bytes(4, "little") * (length // 4 + 1)
            data = data[:length]
        else:
            data = bytes([fill]) * length
        disk = open_disk(self.storage, self.leaf, writable=True)
        try:
            assert disk.pwrite(offset, data) == length
        finally:
            disk.close()
        self.model[offset : offset + length] = data

    @rule()
    def snapshot(self) -> None:
        self.leaf = chain.create_snapshot(self.storage, self.leaf, delta_format=self.delta_format, grain_size=GRAIN)
        self.saved.append(bytes(self.model))

    @precondition(lambda self: self.saved)
    @rule()
    def revert(self) -> None:
        assert chain.revert_snapshot(self.storage, self.leaf) == self.leaf
        self.model = bytearray(self.saved[-1])

    @precondition(lambda self: self.saved)
    @rule()
    def delete_snapshot(self) -> None:
        old = self.leaf
        self.leaf = chain.delete_snapshot(self.storage, old)
        self.saved.pop()
        assert not self.storage.exists(old)

    @rule(grow=st.integers(1, 2 * MIB // 512))
    def extend(self, grow: int) -> None:
        new = min(len(self.model) + grow * 512, MAX_SIZE)
        if self.saved:
            with pytest.raises(UnsupportedError):
                ops.extend_disk(self.storage, self.leaf, new)
            return
        ops.extend_disk(self.storage, self.leaf, new)
        self.model += bytes(new - len(self.model))

    @invariant()
    def reads_match_model(self) -> None:
        if not self.model:
            return
        disk = open_disk(self.storage, self.leaf)
        try:
            assert disk.size == len(self.model)
            assert disk.pread(0, disk.size) == self.model
            assert len(disk.layers) == len(self.saved) + 1
        finally:
            disk.close()

    def teardown(self) -> None:
        try:
            if self.oracle and self.model and QEMU_IMG is not None:
                qemu_check(self.leaf, self.dir)
                assert qemu_raw(self.leaf, self.dir) == self.model
                if len(self.model) % (64 * 1024) == 0:
                    assert dissect_read(self.dir / self.leaf) == self.model
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


FAST = settings(max_examples=25, stateful_step_count=12, deadline=None, suppress_health_check=list(HealthCheck))
LONG = settings(max_examples=150, stateful_step_count=25, deadline=None, suppress_health_check=list(HealthCheck))


class HostedChain(ChainMachine):
    base_format = "monolithicSparse"


class CowdChain(ChainMachine):
    base_format = "thin"
    delta_format = "vmfsSparse"


class SeSparseChain(ChainMachine):
    base_format = "thin"
    delta_format = "seSparse"


class HostedChainOracle(HostedChain):
    oracle = True


class CowdChainOracle(CowdChain):
    oracle = True


class SeSparseChainOracle(SeSparseChain):
    oracle = True


TestHostedChain = HostedChain.TestCase
TestHostedChain.settings = FAST
TestCowdChain = CowdChain.TestCase
TestCowdChain.settings = FAST
TestSeSparseChain = SeSparseChain.TestCase
TestSeSparseChain.settings = FAST

TestHostedChainOracle = HostedChainOracle.TestCase
TestHostedChainOracle.settings = LONG
TestHostedChainOracle.pytestmark = [pytest.mark.slow, pytest.mark.oracle]
TestCowdChainOracle = CowdChainOracle.TestCase
TestCowdChainOracle.settings = LONG
TestCowdChainOracle.pytestmark = [pytest.mark.slow, pytest.mark.oracle]
TestSeSparseChainOracle = SeSparseChainOracle.TestCase
TestSeSparseChainOracle.settings = LONG
TestSeSparseChainOracle.pytestmark = [pytest.mark.slow, pytest.mark.oracle]
