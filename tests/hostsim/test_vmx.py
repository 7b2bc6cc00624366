"""The ``.vmx`` and ``.vmsd`` syntax (hostsim.vmm.vmx, hostsim.vmm.vmsd): lossless rewriting,
ESX's ``|XX`` escapes, the typed view with its rules, and ``FILE:LINE: message`` errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostsim.errors import HostsimError
from hostsim.vmm.vmsd import Snapshot, SnapshotTree
from hostsim.vmm.vmx import PROGRAM_KEY, VmConfig, VmxError, VmxFile, escape, new_vmx, unescape

#: a .vmx as ESX 4 writes one, with a comment, odd spacing and keys hostsim does not know
REAL = """\
.encoding = "UTF-8"
config.version = "8"
virtualHW.version = "7"
# a comment the user wrote
displayName = "web 01"
memsize = "512"
numvcpus = "2"
sched.cpu.shares = "high"
sched.cpu.min = "500"
sched.cpu.max = "1500"
sched.mem.min = "128"
sched.mem.shares = "1234"
sched.mem.max = "512"
scsi0.present = "TRUE"
scsi0.virtualDev = "lsilogic"
scsi0:1.present = "TRUE"
scsi0:1.fileName = "web 01_1.vmdk"
scsi0:0.present = "TRUE"
scsi0:0.fileName = "web 01.vmdk"
scsi0:0.deviceType = "scsi-hardDisk"
ide1:0.present = "TRUE"
ide1:0.deviceType = "cdrom-image"

ethernet0.generatedAddress = "00:0c:29:12:34:56"
uuid.bios   =   "56 4d 12 34 56 78 9a bc-de f0 12 34 56 78 9a bc"
annotation = "first line|0Asecond |22quoted|22 |7C pipe"
guestOS = "rhel5"
nvram = "web 01.nvram"
guestinfo.hostsim.program = "web.guest"
"""


def parse(text: str, path: str = "[ds1] web/web.vmx") -> VmxFile:
    return VmxFile.parse(text.encode(), path)


def test_real_file_round_trips_byte_for_byte() -> None:
    vmx = parse(REAL)
    assert vmx.render() == REAL
    assert vmx.get("DISPLAYNAME") == "web 01"  # keys are case-insensitive
    assert vmx["uuid.bios"] == "56 4d 12 34 56 78 9a bc-de f0 12 34 56 78 9a bc"
    assert vmx["annotation"] == 'first line\nsecond "quoted" | pipe'


def test_set_rewrites_only_its_line_and_appends_new_keys() -> None:
    vmx = parse(REAL)
    vmx.set("memsize", "1024")
    vmx.set("scsi0:0.fileName", "web 01-000001.vmdk")
    vmx.set("sched.swap.derivedName", "/vmfs/volumes/x/web/web-0123abcd.vswp")
    out = vmx.render().splitlines()
    old = REAL.splitlines()
    changed = [i for i, (a, b) in enumerate(zip(old, out, strict=False)) if a != b]
    assert [old[i] for i in changed] == ['memsize = "512"', 'scsi0:0.fileName = "web 01.vmdk"']
    assert out[changed[0]] == 'memsize = "1024"'
    assert out[-1] == 'sched.swap.derivedName = "/vmfs/volumes/x/web/web-0123abcd.vswp"'
    assert len(out) == len(old) + 1
    again = parse(vmx.render())
    assert again["memsize"] == "1024" and again.keys() == vmx.keys()


def test_typed_view_of_the_real_file() -> None:
    cfg = VmConfig.from_vmx(parse(REAL))
    assert (cfg.display_name, cfg.memsize_mb, cfg.numvcpus, cfg.guest_os) == ("web 01", 512, 2, "rhel5")
    assert (cfg.cpu_shares_level, cfg.cpu_shares) == ("high", 4000)  # 2000 per vCPU
    assert (cfg.cpu_min_mhz, cfg.cpu_max_mhz) == (500, 1500)
    assert (cfg.mem_min_mb, cfg.mem_max_mb, cfg.mem_shares_level, cfg.mem_shares) == (128, 512, "custom", 1234)
    assert cfg.swap_mb == 512 - 128
    assert cfg.controllers == {"scsi0": "lsilogic"}
    # unit order, whatever the file order; the CD-ROM on ide1 is not a SCSI disk
    assert [(d.node, d.file_name) for d in cfg.disks] == [("scsi0:0", "web 01.vmdk"), ("scsi0:1", "web 01_1.vmdk")]
    assert cfg.program == "web.guest" and cfg.nvram == "web 01.nvram" and cfg.hw_version == 7


@pytest.mark.parametrize(
    ("level", "vcpus", "cpu", "memsize", "mem"),
    [("low", 1, 500, 256, 1280), ("normal", 2, 2000, 512, 5120), ("high", 4, 8000, 1024, 20480)],
)
def test_share_presets_scale_with_vcpus_and_memory(level: str, vcpus: int, cpu: int, memsize: int, mem: int) -> None:
    vmx = new_vmx("x.vmx", "x", memsize_mb=memsize, numvcpus=vcpus)
    vmx.set("sched.cpu.shares", level)
    vmx.set("sched.mem.shares", level)
    cfg = VmConfig.from_vmx(vmx)
    assert (cfg.cpu_shares, cfg.mem_shares) == (cpu, mem)


def test_defaults_of_a_minimal_file() -> None:
    cfg = VmConfig.from_vmx(parse('displayName = "a"\nmemsize = "64"\n'))
    assert (cfg.numvcpus, cfg.cpu_shares, cfg.cpu_min_mhz, cfg.cpu_max_mhz) == (1, 1000, 0, -1)
    assert (cfg.mem_min_mb, cfg.mem_max_mb, cfg.swap_mb, cfg.disks) == (0, 64, 64, ())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('displayName = "a"\nmemsize "64"\n', ':2: expected \'key = "value"\''),
        ('displayName = "a"\n = "64"\n', ":2: missing key"),
        ('displayName = "a"\nmem size = "64"\n', ":2: bad key 'mem size'"),
        ('displayName = "a"\n\nmemsize = "64\n', ":3: unterminated quoted value"),
        ('displayName = "a"\nmemsize = "64" extra\n', ":2: unexpected text after the closing quote"),
        ('displayName = "a"\nmemsize =\n', ":2: missing value"),
        ('displayName = "a"\nmemsize = 6 4\n', ":2: a value with spaces or quotes must be quoted"),
        ('displayName = "a"\nmemsize = "64"\nMEMSIZE = "32"\n', ":3: duplicate key 'MEMSIZE' (first at line 2)"),
    ],
)
def test_malformed_lines_name_file_and_line(text: str, message: str) -> None:
    with pytest.raises(VmxError) as exc:
        parse(text)
    assert str(exc.value).startswith("[ds1] web/web.vmx:")
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)
    assert isinstance(exc.value, HostsimError)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('memsize = "lots"', ":3: memsize: 'lots' is not a whole number"),
        ('memsize = "66"', ":3: memsize: 66 MB is not a multiple of 4 MB"),
        ('numvcpus = "0"', ":3: numvcpus: 0 is below the minimum 1"),
        ('sched.cpu.shares = "medium"', ":3: sched.cpu.shares: 'medium' is not low, normal, high or a number"),
        ('sched.mem.shares = "0"', ":3: sched.mem.shares: 0: shares must be at least 1"),
        ('sched.mem.min = "128"', ":3: sched.mem.min: 128 is above the maximum 64"),
        ('sched.cpu.max = "100"\nsched.cpu.min = "200"', ":3: sched.cpu.max: 100 MHz is below sched.cpu.min"),
        ('scsi0:0.present = "yes"\nscsi0:0.fileName = "a.vmdk"', ":3: scsi0:0.present: 'yes' is not TRUE or FALSE"),
        ('scsi0:0.present = "TRUE"\nscsi0:0.fileName = "a.vmdk"', ":3: scsi0:0.present: scsi0:0 is present but"),
        ('scsi0.present = "TRUE"\nscsi0.virtualDev = "ide"\nscsi0:0.present = "TRUE"\nscsi0:0.fileName = "a"',
         ":4: scsi0.virtualDev: 'ide' is not one of lsilogic"),
        ('scsi0:7.fileName = "a.vmdk"', ":3: scsi0:7.fileName: unit 7 is the SCSI controller itself"),
    ],
)
def test_bad_values_name_file_line_and_key(line: str, message: str) -> None:
    tail = "" if line.startswith("memsize") else 'memsize = "64"\n'
    vmx = parse(f'displayName = "a"\n# line 2\n{line}\n{tail}')
    with pytest.raises(VmxError) as exc:
        VmConfig.from_vmx(vmx)
    assert str(exc.value).startswith("[ds1] web/web.vmx:") and message in str(exc.value), str(exc.value)


def test_missing_required_keys_and_bad_bytes() -> None:
    with pytest.raises(VmxError, match=r"^\[ds1\] web/web.vmx: missing required key 'memsize'$"):
        VmConfig.from_vmx(parse('displayName = "a"\n'))
    with pytest.raises(VmxError, match="missing or empty displayName"):
        VmConfig.from_vmx(parse('memsize = "64"\n'))
    with pytest.raises(VmxError, match=r"web.vmx:2: not valid UTF-8 text"):
        VmxFile.parse(b'displayName = "a"\nannotation = "\xff"\n', "[ds1] web/web.vmx")
    with pytest.raises(VmxError, match=r"unknown \.encoding 'klingon'"):
        VmxFile.parse(b'.encoding = "klingon"\n', "x.vmx")


def test_declared_encoding_is_used() -> None:
    data = '.encoding = "ISO-8859-1"\ndisplayName = "café"\nmemsize = "64"\n'.encode("latin-1")
    vmx = VmxFile.parse(data, "x.vmx")
    assert vmx["displayName"] == "café"
    assert vmx.to_bytes() == data


def test_new_vmx_has_esx_keys_and_the_program_key() -> None:
    vmx = new_vmx("vm.vmx", "vm", memsize_mb=256, numvcpus=2, disks=("vm.vmdk", "vm_1.vmdk"), program="p.guest")
    text = vmx.render()
    for line in (
        '.encoding = "UTF-8"', 'config.version = "8"', 'virtualHW.version = "7"', 'displayName = "vm"',
        'memsize = "256"', 'numvcpus = "2"', 'scsi0.present = "TRUE"', 'scsi0.virtualDev = "lsilogic"',
        'scsi0:0.fileName = "vm.vmdk"', 'scsi0:1.fileName = "vm_1.vmdk"', 'scsi0:0.deviceType = "scsi-hardDisk"',
        'nvram = "vm.nvram"', f'{PROGRAM_KEY} = "p.guest"',
    ):
        assert line in text.splitlines()
    assert VmConfig.from_vmx(VmxFile.parse(vmx.to_bytes(), "vm.vmx")).program == "p.guest"


_keys = st.from_regex(r"[a-z][a-z0-9_.:\-]{0,20}", fullmatch=True)
_values = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=12))
def test_any_values_survive_render_and_parse(entries: dict[str, str]) -> None:
    lowered: dict[str, str] = {}
    for k, v in entries.items():
        lowered.setdefault(k.lower(), v)
    vmx = VmxFile("x.vmx")
    for k, v in lowered.items():
        vmx.set(k, v)
    again = VmxFile.parse(vmx.to_bytes(), "x.vmx")
    assert list(again.items()) == list(vmx.items())
    assert again.render() == vmx.render()


@given(st.text(max_size=30))
def test_escape_inverts(text: str) -> None:
    assert unescape(escape(text)) == text
    assert '"' not in escape(text) and "#" not in escape(text)


def test_vmsd_round_trip_in_esx_syntax() -> None:
    tree = SnapshotTree("vm.vmsd", last_uid=3, current=3)
    tree.snapshots = [
        Snapshot(1, "before patch", "", None, 1_700_000_000_123_456, "vm-Snapshot1.vmsn", [("scsi0:0", "vm.vmdk")]),
        Snapshot(3, "after", 'say "hi"', 1, 1_700_000_100_000_000, "vm-Snapshot3.vmsn",
                 [("scsi0:0", "vm-000001.vmdk")]),
    ]
    text = tree.to_bytes().decode()
    lines = text.splitlines()
    assert lines[:4] == ['.encoding = "UTF-8"', 'snapshot.lastUID = "3"', 'snapshot.numSnapshots = "2"',
                         'snapshot.current = "3"']
    assert 'snapshot1.parent = "1"' in lines and 'snapshot0.disk0.fileName = "vm.vmdk"' in lines
    assert 'snapshot1.description = "say |22hi|22"' in lines
    high, low = 1_700_000_000_123_456 >> 32, (1_700_000_000_123_456 & 0xFFFFFFFF)
    assert f'snapshot0.createTimeHigh = "{high}"' in lines
    assert f'snapshot0.createTimeLow = "{low - (1 << 32) if low >= 1 << 31 else low}"' in lines
    again = SnapshotTree.parse(text.encode(), "vm.vmsd")
    assert again == tree


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('snapshot.numSnapshots = "1"\n', "counts snapshot0, which has no uid"),
        ('snapshot.lastUID = "1"\nsnapshot.numSnapshots = "1"\nsnapshot0.uid = "1"\nsnapshot.current = "2"\n',
         "vm.vmsd:4: snapshot.current: uid 2 is not a snapshot"),
        ('snapshot.numSnapshots = "1"\nsnapshot0.uid = "x"\n', "vm.vmsd:2: snapshot0.uid: 'x' is not a whole number"),
        ('snapshot.lastUID = "1"\nsnapshot.numSnapshots = "1"\nsnapshot0.uid = "1"\nsnapshot0.parent = "9"\n',
         "names parent 9"),
    ],
)
def test_bad_vmsd(text: str, message: str) -> None:
    with pytest.raises(VmxError) as exc:
        SnapshotTree.parse(text.encode(), "vm.vmsd")
    assert message in str(exc.value)


def test_empty_vmsd_is_no_snapshot() -> None:
    tree = SnapshotTree.parse(b"", "vm.vmsd")
    assert tree.snapshots == [] and tree.current is None
