"""The host config file: a full file read back, defaults, and every malformed case reported as one
line ``FILE:LINE: message`` naming the line that is wrong."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hostsim.console import config
from hostsim.console.config import ConfigError, load

ROOT = Path(__file__).resolve().parents[2]

GOOD = """\
# a comment
[host]
name = esx01
pcpus = 4
mhz = 2400            ; inline comment
memory_mb = 8192
console_mb = 272
vmkernel_mb = 32
swap_mb = 4096
mode = esx4
seed = 7
epoch = 2026-12-01T08:00:00Z
idle_tax = 0.5
coschedule = strict

[lun ds1]
image = lun0.img
adapter = vmhba2
channel = 1
target = 3
lun = 4
local = yes
datastore = datastore1
format = vmfs5
fixed_us = 250
per_byte_us = 0.01
queue_depth = 64
channels = 2

[lun scratch]
memory = 1G

[pool gold]
cpu_shares = high
cpu_reservation = 1.5GHz
cpu_limit = 3000MHz
cpu_expandable = no
mem_shares = 20000
mem_reservation = 1G
mem_limit = unlimited

[pool silver]
parent = gold
"""


def write(tmp_path: Path, text: str, name: str = "h.host") -> Path:
    path = tmp_path / name
    path.write_text(text)
    (tmp_path / "lun0.img").write_bytes(b"\0" * 4096)
    return path


def test_a_full_file(tmp_path: Path) -> None:
    c = load(write(tmp_path, GOOD))
    assert (c.name, c.pcpus, c.mhz, c.memory_mb, c.console_mb, c.vmkernel_mb, c.swap_mb) == (
        "esx01", 4, 2400, 8192, 272, 32, 4096)
    assert (c.mode, c.seed, c.epoch_s, c.idle_tax, c.coschedule) == ("esx4", 7, 1_796_112_000, 0.5, "strict")
    ds1, scratch = c.luns
    assert ds1.kind == "image" and ds1.path == tmp_path / "lun0.img" and ds1.size_bytes is None
    assert ds1.runtime_name == "vmhba2:C1:T3:L4" and ds1.local and (ds1.datastore, ds1.vmfs) == ("datastore1", "vmfs5")
    assert ds1.model == config.ModelConfig(fixed_us=250.0, per_byte_us=0.01, queue_depth=64, channels=2)
    assert ds1.line == 16
    assert scratch.kind == "memory" and scratch.size_bytes == 1 << 30 and scratch.runtime_name == "vmhba1:C0:T0:L0"
    assert scratch.model == config.ModelConfig() and scratch.datastore is None
    gold, silver = c.pools
    assert gold.cpu == config.Allocation("high", 1500, 3000, False)
    assert gold.mem == config.Allocation(20000, 1024, -1, True)
    assert silver.parent == "gold" and silver.cpu == config.Allocation()
    assert c.lun("scratch") is scratch


def test_a_block_device_lun(tmp_path: Path) -> None:
    node = tmp_path / "sdb"  # a device node of our own (loop0's numbers): nothing opens it
    try:
        os.mknod(node, stat.S_IFBLK | 0o600, os.makedev(7, 0))
    except PermissionError:
        pytest.skip("making a device node needs root")
    c = load(write(tmp_path, GOOD.replace("image = lun0.img", f"block_device = {node}")))
    assert (c.luns[0].kind, c.luns[0].path) == ("block_device", node)


def test_a_lun_on_the_network_and_its_host_must_keep_real_time(tmp_path: Path) -> None:
    """A network LUN keeps its URL (no path, no size: the target has them); a host with one
    refuses to be built for a headless (simulated-time) run, naming the LUN's line, before it
    opens anything."""
    from hostsim.console.host import Host, HostError

    url = "iscsi://192.0.2.9:3260/iqn.2026-12.org.pyvmfs:san/1"
    text = GOOD.replace("[lun scratch]\nmemory = 1G", f"[lun scratch]\nnetwork = {url}\nlun = 1\ndatastore = shared")
    c = load(write(tmp_path, text))
    scratch = c.lun("scratch")
    assert (scratch.kind, scratch.url, scratch.path, scratch.size_bytes, scratch.datastore) == (
        "network", url, None, None, "shared")
    assert c.network_luns == (scratch,)
    with pytest.raises(HostError, match=r":30: LUN scratch is on the network.*hostsim boot"):
        Host(c)


def test_defaults(tmp_path: Path) -> None:
    c = load(write(tmp_path, "[host]\nname = h\npcpus = 1\nmhz = 1000\nmemory_mb = 512\n"))
    assert (c.console_mb, c.vmkernel_mb, c.swap_mb, c.mode, c.seed, c.epoch_s, c.idle_tax, c.coschedule) == (
        192, 24, 512, "esx4", 0, 1_767_225_600, 0.75, "relaxed")  # 2026-01-01T00:00:00Z
    assert c.luns == () and c.pools == ()


def test_the_demo_host_example() -> None:
    c = load(ROOT / "hostsim" / "examples" / "demo.host")
    assert (c.name, c.pcpus, c.mhz, c.memory_mb, c.mode) == ("esx01", 2, 2000, 1024, "esx2")
    assert [lun.datastore for lun in c.luns] == ["datastore1"] and [p.name for p in c.pools] == ["gold"]


def _edit(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new, 1)


BAD = [
    # (the file's text, the line the error names, words of the message)
    (_edit("pcpus = 4", "pcpus = four"), 4, "pcpus: not a whole number: 'four'"),
    (_edit("pcpus = 4", "pcpus = 0"), 4, "pcpus: 0 is out of range (1 to 128)"),
    (_edit("mhz = 2400            ; inline comment", "mhz ="), 5, "'mhz' has no value"),
    (_edit("memory_mb = 8192", "memory_mb = 300"), 6, "leaves nothing beside the console"),
    (_edit("mode = esx4", "mode = esx3"), 10, "mode: 'esx3' is not one of esx2, esx4"),
    (_edit("seed = 7", "seed = 7\ncolour = blue"), 12, "unknown key 'colour' in [host]"),
    (_edit("epoch = 2026-12-01T08:00:00Z", "epoch = yesterday"), 12, "epoch: not a time"),
    (_edit("idle_tax = 0.5", "idle_tax = 1.5"), 13, "idle_tax: 1.5 is out of range"),
    (_edit("coschedule = strict", "coschedule = loose"), 14, "coschedule: 'loose' is not one of relaxed, strict"),
    (_edit("name = esx01", "name = esx 01!"), 3, "name: not a host name"),
    (_edit("name = esx01\n", ""), 2, "[host] needs 'name'"),
    (_edit("mhz = 2400            ; inline comment", "mhz = 2400\nmhz = 2600"), 6, "key 'mhz' given twice in [host]"),
    (_edit("[host]", "[hots]"), 2, "unknown section [hots]"),
    (_edit("[lun scratch]", "[lun]"), 30, "unknown section [lun]"),
    ("[lun a]\nmemory = 1G\n", 1, "no [host] section"),
    ("name = x\n[host]\n", 1, "a key before any section"),
    (_edit("name = esx01", "name esx01"), 3, "not a 'key = value' line: 'name esx01'"),
    (_edit("pcpus = 4", "pcpus = 4\n  8"), 4, "an indented line continues its value"),
    (_edit("image = lun0.img", "image = missing.img"), 17, "image: {dir}/missing.img: No such file or directory"),
    (_edit("image = lun0.img", "image = ."), 17, "image: {dir} is not a regular file"),
    (_edit("image = lun0.img", "block_device = lun0.img"), 17, "block_device: {dir}/lun0.img is not a block device"),
    (_edit("image = lun0.img", "image = lun0.img\nmemory = 1G"), 16, "exactly one of image, block_device, memory, "
                                                                   "network (got image and memory)"),
    (_edit("[lun scratch]\nmemory = 1G", "[lun scratch]\nlocal = no"), 30, "exactly one of image, block_device, "
                                                                           "memory, network (got none)"),
    (_edit("[lun scratch]\nmemory = 1G", "[lun scratch]\nnetwork = nfs://filer/x"), 31,
     "network: not a LUN on the network: 'nfs://filer/x'"),
    (_edit("[lun scratch]\nmemory = 1G", "[lun scratch]\nnetwork = iscsi://filer/no-lun"), 31, "not an iSCSI URL"),
    (_edit("[lun scratch]\nmemory = 1G", "[lun scratch]\nnetwork = rbd:pool/img\nlun = 1\ndatastore = ds9\n"
                                         "format = vmfs5"), 34, "format: a host never formats a LUN on the network"),
    (_edit("[lun scratch]\nmemory = 1G", "[lun scratch]\nnetwork = rbd:pool/img\nlun = 1\nlocal = no"), 33,
     "local: a LUN on the network is not local"),
    (_edit("memory = 1G", "memory = 1000"), 31, "a LUN is a positive multiple of 512 bytes"),
    (_edit("memory = 1G", "memory = lots"), 31, "memory: not a size: 'lots'"),
    (_edit("adapter = vmhba2", "adapter = hba2"), 18, "adapter: not an adapter: 'hba2'"),
    (_edit("target = 3", "target = 300"), 20, "target: 300 is out of range (0 to 255)"),
    (_edit("local = yes", "local = perhaps"), 22, "local: not yes or no: 'perhaps'"),
    (_edit("format = vmfs5", "format = ntfs"), 24, "format: 'ntfs' is not one of vmfs5, vmfs6"),
    (_edit("datastore = datastore1\n", ""), 23, "format needs a datastore label"),
    (_edit("queue_depth = 64", "queue_depth = 0"), 27, "queue_depth: 0 is out of range"),
    (_edit("per_byte_us = 0.01", "per_byte_us = fast"), 26, "per_byte_us: not a number: 'fast'"),
    (_edit("channels = 2", "channels = 2\nspeed = 9"), 29, "unknown key 'speed' in [lun ds1]"),
    (_edit("[lun scratch]\nmemory = 1G", "[lun scratch]\nmemory = 1G\nadapter = vmhba2\nchannel = 1\ntarget = 3\n"
                                         "lun = 4"), 30, "[lun scratch] is at vmhba2:C1:T3:L4, as [lun ds1] is"),
    (_edit("[lun scratch]\nmemory = 1G", "[lun scratch]\nmemory = 1G\nlun = 1\ndatastore = datastore1"), 30,
     "datastore 'datastore1' is already on [lun ds1]"),
    (_edit("cpu_shares = high", "cpu_shares = lots"), 34, "cpu_shares: not shares: 'lots'"),
    (_edit("cpu_reservation = 1.5GHz", "cpu_reservation = 1.5 apples"), 35, "cpu_reservation: not a frequency"),
    (_edit("cpu_limit = 3000MHz", "cpu_limit = 1000MHz"), 33, "limit 1000 MHz is below its reservation 1500 MHz"),
    (_edit("mem_reservation = 1G", "mem_reservation = 1.5K"), 39, "not a whole number of MB: '1.5K'"),
    (_edit("cpu_expandable = no", "cpu_expandable = no\nweight = 3"), 38, "unknown key 'weight' in [pool gold]"),
    (_edit("parent = gold", "parent = bronze"), 43, "parent pool 'bronze' is not defined"),
    (_edit("[pool gold]\n", "[pool gold]\nparent = silver\n"), 33, "[pool gold] is its own ancestor"),
]


@pytest.mark.parametrize(("text", "line", "message"), BAD, ids=[b[2][:40] for b in BAD])
def test_every_malformed_case_is_one_line_naming_its_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path)
    text_of = str(info.value)
    assert "\n" not in text_of
    assert text_of.startswith(f"{path}:{line}: "), text_of
    assert message.format(dir=tmp_path) in text_of, text_of


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nothere.host: cannot read: No such file or directory$"):
        load(tmp_path / "nothere.host")
    (tmp_path / "bin.host").write_bytes(b"\xff\xfe\x00[host]")
    with pytest.raises(ConfigError, match=r"bin.host:1: not a text file$"):
        load(tmp_path / "bin.host")


@pytest.mark.parametrize(("text", "value"), [("8G", 8 << 30), ("512M", 512 << 20), ("4096K", 4 << 20),
                                             ("1T", 1 << 40), ("1.5G", 3 << 29), ("512", 512), ("2 GB", 2 << 30)])
def test_sizes(text: str, value: int) -> None:
    assert config.parse_size(text) == value


@pytest.mark.parametrize(("text", "value"), [("250us", 250), ("500ms", 500_000), ("30s", 30_000_000),
                                             ("2m", 120_000_000), ("1h", 3_600_000_000), ("5", 5_000_000),
                                             ("1.5s", 1_500_000)])
def test_durations(text: str, value: int) -> None:
    assert config.parse_duration(text) == value


@pytest.mark.parametrize("text", ["", "abc", "5 parsecs", "-1s", "0.5us"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        config.parse_duration(text)
