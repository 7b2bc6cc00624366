"""Issue 5, item 6: the real VMFS5 sample was imaged while an ESXi host had it mounted (slot 984
in use, its journal in FB 13).  Opened read-write, we must wait out that host's lease, find
nothing committed in its journal, clear its slot and free its journal block, then write."""

from __future__ import annotations

from pathlib import Path

from tests import oracles
from tests.cluster.conftest import host
from tests.conftest import copy_image
from vmfs.cluster.attachment import HostAttachment
from vmfs.cluster.host import ManualClock
from vmfs.volume.slots import read_slots
from vmfs.volume.usage import marked_used, referenced_resources
from vmfs.write.posix import WritableFileSystem


def test_esxi_host_of_the_sample_is_taken_over(vmfs5_image: Path, tmp_path: Path) -> None:
    image = copy_image(vmfs5_image, tmp_path / "sample.img")
    before = oracles.fsck_vmfs(image)
    assert "File Block 0x00000341 is lost." in before.lines  # the live host's journal block
    assert before.counts["Lost blocks"] == 1
    clock = ManualClock()
    vol = HostAttachment.open(image, host=host(5, clock))
    esxi = [s for s in read_slots(vol.volume) if s.in_use and s.slot == 984]
    assert esxi and esxi[0].hb.owner == "61137d5a-a2df8778-7ed5-000c29801686"
    clock.advance(10)  # within the lease: the ESXi host still counts as alive
    assert any(s.slot == 984 for s in read_slots(vol.volume) if s.in_use)
    clock.advance(15)  # its stamp never moved for more than 16 s: recovered
    slot = next(s for s in read_slots(vol.volume) if s.slot == 984)
    assert not slot.in_use and slot.hb.hbGen == 10 and slot.hb.journalAddr == 0
    fs = WritableFileSystem(vol)
    fs.write_file("/directory/after-takeover", b"written after ESXi's slot was cleared")
    refs, used = referenced_resources(vol.volume), marked_used(vol.volume)
    assert all(refs[k] == used[k] for k in used)  # FB 13 went back to the free pool
    vol.close()
    after = oracles.fsck_vmfs(image)
    assert after.counts["Lost blocks"] == 0 and not [line for line in after.lines if "is lost" in line]
    assert after.counts["File Blocks"] == before.counts["File Blocks"]  # a new resident file: no block
    written = oracles.debugvmfs_cat([image], "/directory/after-takeover")
    assert written == b"written after ESXi's slot was cleared"
