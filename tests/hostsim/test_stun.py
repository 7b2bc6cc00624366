"""ESX's out-of-space stun on a whole simulated host: a thin disk that cannot grow stops its VM
with a pending question instead of crashing it; freeing space and answering Retry lets the VM go
on, and no byte it was told is on disk is lost (issue 12, item 4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hostsim.console import config as cfg
from hostsim.console.host import Host
from hostsim.console.vimcmd import vim_cmd
from hostsim.vmkernel.engine import SECOND
from hostsim.vmm.guest.content import seeded_sectors
from vmfs.vmdk.disk import open_disk
from vmfs.volume.usage import volume_usage

MIB = 1 << 20

HOST = """\
[host]
name = esx-stun
pcpus = 1
mhz = 2000
memory_mb = 1024
seed = 3
epoch = 2026-12-01T08:00:00Z

[lun small]
memory = 1G
datastore = small
format = vmfs5
"""

GUEST = """\
guest filler
repeat 48
    write scsi0:0 1MiB next within 48MiB random seed 3
end
mark done
forever
    halt 1s
end
"""


@pytest.fixture
def host(tmp_path: Path):  # type: ignore[no-untyped-def]
    (tmp_path / "stun.host").write_text(HOST)
    h = Host(cfg.load(tmp_path / "stun.host"), track_guest_writes=True)
    yield h
    if not h.closed:
        h.shutdown()


def test_out_of_space_stuns_the_vm_and_retry_after_freeing_space_loses_nothing(host: Host, tmp_path: Path) -> None:
    program = tmp_path / "filler.guest"
    program.write_text(GUEST)
    vmid = host.create_vm("vm1", memory_mb=64, disks=((256, "thin"),), program=program)
    fs = host.filesystem("small")
    free_blocks = volume_usage(fs.volume)["blocks_free"]
    # leave the datastore 16 MiB (a 64 MiB .vswp and the VM's files come first): the guest's
    # 48 MiB cannot all fit
    host.power_on(vmid)
    free_blocks = volume_usage(fs.volume)["blocks_free"]
    ballast = fs.create("/ballast")
    fs.fallocate(ballast.address, 0, (free_blocks - 16) * MIB)
    vm = host.record(vmid).running
    assert vm is not None
    host.run(20 * SECOND)
    question = vm.vmm.question
    assert question is not None and "There is no more space for virtual disk vm1.vmdk" in question.text
    acked_before = len(vm.vmm.log.expected_sectors("scsi0:0"))
    assert 0 < acked_before < 48 * MIB // 512
    out, rc = vim_cmd(host, ["vmsvc/message", str(vmid)])
    assert rc == 0 and "There is no more space" in out and "0. OK" in out
    summary = vim_cmd(host, ["vmsvc/get.summary", str(vmid)])[0]
    assert "question = (vim.vm.QuestionInfo)" in summary
    host.run(30 * SECOND)  # stunned: nothing moves while the question is pending
    assert len(vm.vmm.log.expected_sectors("scsi0:0")) == acked_before
    assert not [m for m in vm.vmm.log.marks if m.name == "done"]
    fs.unlink("/ballast")
    assert vim_cmd(host, ["vmsvc/message", str(vmid), "_vmx1", "0"]) == ("", 0)
    host.run(60 * SECOND)
    assert vm.vmm.question is None
    assert [m for m in vm.vmm.log.marks if m.name == "done"], "the guest never got past its writes"
    expected = vm.vmm.log.expected_sectors("scsi0:0")
    assert len(expected) == 48 * MIB // 512
    host.power_off(vmid)
    folder = host.record(vmid).folder
    disk = open_disk(folder.storage, "vm1.vmdk")
    try:
        got = disk.pread(0, 48 * MIB)
    finally:
        disk.close()
    assert got == seeded_sectors(3, 0, 48 * MIB // 512)


def test_cancel_powers_the_stunned_vm_off(host: Host, tmp_path: Path) -> None:
    program = tmp_path / "filler.guest"
    program.write_text(GUEST)
    vmid = host.create_vm("vm1", memory_mb=64, disks=((256, "thin"),), program=program)
    host.power_on(vmid)
    fs = host.filesystem("small")
    ballast = fs.create("/ballast")
    fs.fallocate(ballast.address, 0, (volume_usage(fs.volume)["blocks_free"] - 8) * MIB)
    host.run(20 * SECOND)
    assert host.record(vmid).running is not None and host.record(vmid).running.vmm.question is not None
    assert vim_cmd(host, ["vmsvc/message", str(vmid), "_vmx1", "1"]) == ("", 0)
    host.run(21 * SECOND)
    assert host.record(vmid).running is None
    assert vim_cmd(host, ["vmsvc/power.getstate", str(vmid)])[0].endswith("Powered off\n")
    assert not [e.name for e in fs.listdir("/vm1") if e.name.endswith(".vswp")]
