"""Descriptors (section 2): every createType parses and is rewritten byte for byte; edits touch only
their own lines; geometry follows section 2.6."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmfs.vmdk.descriptor import (
    CREATE_TYPES,
    NO_PARENT,
    Descriptor,
    ExtentLine,
    canonical_create_type,
    is_descriptor_text,
)
from vmfs.vmdk.errors import CorruptError, InvalidArgumentError, NotVmdkError
from vmfs.vmdk.geometry import Geometry, geometry_for

QEMU_MS = """# Disk DescriptorFile
version=1
CID=bf863c5f
parentCID=ffffffff
createType="monolithicSparse"

# Extent description
RW 204800 SPARSE "ms.vmdk"

# The Disk Data Base
#DDB

ddb.virtualHWVersion = "4"
ddb.geometry.cylinders = "203"
ddb.geometry.heads = "16"
ddb.geometry.sectors = "63"
ddb.adapterType = "ide"
ddb.toolsVersion = "2147483647"
"""

QEMU_CHILD = """# Disk DescriptorFile
version=1
CID=5c1b3f9a
parentCID=2b42da00
createType="monolithicSparse"
parentFileNameHint="base.vmdk"
# Extent description
RW 20480 SPARSE "child.vmdk"

# The Disk Data Base
#DDB

ddb.virtualHWVersion = "4"
ddb.geometry.cylinders = "20"
ddb.geometry.heads = "16"
ddb.geometry.sectors = "63"
ddb.adapterType = "ide"
ddb.toolsVersion = "2147483647"
"""

ESX_THIN = """# Disk DescriptorFile
version=1
encoding="UTF-8"
CID=fffffffe
parentCID=ffffffff
isNativeSnapshot="no"
createType="vmfs"

# Extent description
RW 83886080 VMFS "vm_1-flat.vmdk"

# The Disk Data Base
#DDB

ddb.adapterType = "lsilogic"
ddb.deletable = "true"
ddb.geometry.cylinders = "5221"
ddb.geometry.heads = "255"
ddb.geometry.sectors = "63"
ddb.longContentID = "8a3f1e2c9d7b6a5f4e3d2c1bfffffffe"
ddb.thinProvisioned = "1"
ddb.toolsInstallType = "4"
ddb.toolsVersion = "10346"
ddb.uuid = "60 00 C2 97 ee 00 4e ed-cb 09 ab 10 91 3f 7f 99"
ddb.virtualHWVersion = "13"
"""

ESX_COWD_CHILD = """# Disk DescriptorFile
version=1
encoding="UTF-8"
CID=aa12bb34
parentCID=fffffffe
isNativeSnapshot="no"
createType="vmfsSparse"
parentFileNameHint="vm_1.vmdk"
# Extent description
RW 83886080 VMFSSPARSE "vm_1-000001-delta.vmdk"

# The Disk Data Base
#DDB

ddb.longContentID = "0123456789abcdef01234567aa12bb34"
"""

ESX_SESPARSE_CHILD = (
    ESX_COWD_CHILD.replace("vmfsSparse", "seSparse")
    .replace('RW 83886080 VMFSSPARSE "vm_1-000001-delta.vmdk"', 'RW 83886080 SESPARSE "vm_1-000001-sesparse.vmdk"')
    .replace("#DDB\n\n", '#DDB\n\nddb.encoding = "UTF-8"\nddb.grain = "8"\n')
)

ESX_RDM = """# Disk DescriptorFile
version=3
encoding="UTF-8"
CID=12345678
parentCID=ffffffff
createType="vmfsRawDeviceMap"

# Extent description
RW 41943040 VMFSRDM "rdm1-rdm.vmdk"

# Change Tracking File
changeTrackPath="rdm1-ctk.vmdk"

# The Disk Data Base
#DDB

ddb.adapterType = "lsilogic"
ddb.geometry.cylinders = "2610"
ddb.geometry.heads = "255"
ddb.geometry.sectors = "63"
ddb.virtualHWVersion = "13"
"""

ESX_RDMP = (
    ESX_RDM.replace("version=3", "version=1")
    .replace("vmfsRawDeviceMap", "vmfsPassthroughRawDeviceMap")
    .replace("rdm1-rdm.vmdk", "rdm1-rdmp.vmdk")
    .replace('# Change Tracking File\nchangeTrackPath="rdm1-ctk.vmdk"\n\n', "")
)

TWO_GB_SPARSE = QEMU_MS.replace("monolithicSparse", "twoGbMaxExtentSparse").replace(
    'RW 204800 SPARSE "ms.vmdk"\n',
    'RW 4194304 SPARSE "tgs-s001.vmdk"\nRW 4194304 SPARSE "tgs-s002.vmdk"\nRW 2097152 SPARSE "tgs-s003.vmdk"\n',
)
TWO_GB_FLAT = QEMU_MS.replace("monolithicSparse", "twoGbMaxExtentFlat").replace(
    'RW 204800 SPARSE "ms.vmdk"\n',
    'RW 4194304 FLAT "tgf-f001.vmdk" 0\nRW 4194304 FLAT "tgf-f002.vmdk" 0\nRW 2097152 FLAT "tgf-f003.vmdk" 0\n',
)
MONO_FLAT = QEMU_MS.replace("monolithicSparse", "monolithicFlat").replace(
    'RW 204800 SPARSE "ms.vmdk"', 'RW 204800 FLAT "mf-flat.vmdk" 0'
)
STREAM = QEMU_MS.replace("monolithicSparse", "streamOptimized").replace('"ms.vmdk"', '"so.vmdk"')
VMFS_THIN_TYPE = ESX_THIN.replace('createType="vmfs"', 'createType="vmfsThin"')
VMFS_EZT = ESX_THIN.replace('createType="vmfs"', 'createType="vmfsEagerZeroedThick"').replace(
    'ddb.thinProvisioned = "1"\n', ""
)
DEVICE = """# Disk DescriptorFile
version=1
CID=fffffffe
parentCID=ffffffff
createType="partitionedDevice"

# Extent description
RW 63 FLAT "\\\\.\\PhysicalDrive3" 0
RW 2048 ZERO
RDONLY 1024 FLAT "\\\\.\\PhysicalDrive3" 63 {7c8d-0001} 3

#DDB
ddb.adapterType = "ide"
"""

SAMPLES = [
    pytest.param(QEMU_MS, "monolithicSparse", 1, id="monolithicSparse"),
    pytest.param(QEMU_CHILD, "monolithicSparse", 1, id="qemu-child"),
    pytest.param(MONO_FLAT, "monolithicFlat", 1, id="monolithicFlat"),
    pytest.param(TWO_GB_SPARSE, "twoGbMaxExtentSparse", 3, id="twoGbMaxExtentSparse"),
    pytest.param(TWO_GB_FLAT, "twoGbMaxExtentFlat", 3, id="twoGbMaxExtentFlat"),
    pytest.param(STREAM, "streamOptimized", 1, id="streamOptimized"),
    pytest.param(ESX_THIN, "vmfs", 1, id="vmfs"),
    pytest.param(VMFS_THIN_TYPE, "vmfsThin", 1, id="vmfsThin"),
    pytest.param(VMFS_EZT, "vmfsEagerZeroedThick", 1, id="vmfsEagerZeroedThick"),
    pytest.param(ESX_COWD_CHILD, "vmfsSparse", 1, id="vmfsSparse"),
    pytest.param(ESX_SESPARSE_CHILD, "seSparse", 1, id="seSparse"),
    pytest.param(ESX_RDM, "vmfsRawDeviceMap", 1, id="vmfsRawDeviceMap"),
    pytest.param(ESX_RDMP, "vmfsPassthroughRawDeviceMap", 1, id="vmfsPassthroughRawDeviceMap"),
    pytest.param(DEVICE, "partitionedDevice", 3, id="partitionedDevice"),
]


@pytest.mark.parametrize(("text", "create_type", "extents"), SAMPLES)
def test_sample_round_trip(text: str, create_type: str, extents: int) -> None:
    raw = text.encode()
    desc = Descriptor.parse(raw)
    assert desc.create_type == create_type
    assert len(desc.extents) == extents
    assert desc.to_bytes() == raw
    for line in desc.extents:  # rendering a parsed line gives the line back
        assert ExtentLine.parse(line.render()) == line


@pytest.mark.parametrize(("text", "create_type", "extents"), SAMPLES)
@pytest.mark.parametrize("variant", ["crlf", "nul-padded", "bom"])
def test_sample_variants_round_trip(text: str, create_type: str, extents: int, variant: str) -> None:
    raw = text.encode()
    if variant == "crlf":
        raw = raw.replace(b"\n", b"\r\n")
    elif variant == "nul-padded":
        raw = raw + bytes(-len(raw) % 512 or 512)
    else:
        raw = b"\xef\xbb\xbf" + raw
    desc = Descriptor.parse(raw)
    assert desc.create_type == create_type
    assert desc.to_bytes() == raw


def test_edit_changes_only_that_line() -> None:
    desc = Descriptor.parse(QEMU_CHILD.encode())
    desc.cid = 0x01020304
    out = desc.to_bytes().decode().splitlines()
    before = QEMU_CHILD.splitlines()
    assert [i for i, (a, b) in enumerate(zip(before, out, strict=True)) if a != b] == [2]
    assert out[2] == "CID=01020304"


def test_edit_keeps_crlf_and_quoting() -> None:
    desc = Descriptor.parse(ESX_THIN.replace("\n", "\r\n").encode())
    desc.set("ddb.geometry.cylinders", "9")
    desc.set("ddb.newKey", "x")
    text = desc.to_bytes().decode()
    assert 'ddb.geometry.cylinders = "9"\r\n' in text
    assert text.endswith('ddb.virtualHWVersion = "13"\r\nddb.newKey = "x"\r\n')
    assert "\n" not in text.replace("\r\n", "")


def test_cid_change_follows_long_content_id() -> None:
    desc = Descriptor.parse(ESX_COWD_CHILD.encode())
    desc.cid = 0xDEADBEEF
    assert desc.get("ddb.longContentID") == "0123456789abcdef01234567deadbeef"


def test_nul_padding_after_edit_is_whole_sectors() -> None:
    raw = MONO_FLAT.encode()
    raw += bytes(512 - len(raw) % 512)
    desc = Descriptor.parse(raw)
    desc.cid = 0x11111111
    out = desc.to_bytes()
    assert len(out) % 512 == 0 and out.rstrip(b"\x00").endswith(b'"2147483647"\n')


def test_parent_hint_inserted_after_header() -> None:
    desc = Descriptor.parse(QEMU_MS.encode())
    desc.parent_hint = "base.vmdk"
    desc.parent_cid = 0x2B42DA00
    lines = desc.to_bytes().decode().splitlines()
    assert lines[4:6] == ['createType="monolithicSparse"', 'parentFileNameHint="base.vmdk"']
    assert lines[3] == "parentCID=2b42da00"
    assert desc.has_parent


def test_set_extents_replaces_lines_in_place() -> None:
    desc = Descriptor.parse(TWO_GB_FLAT.encode())
    lines = desc.extents
    lines[-1].sectors = 4194304
    lines.append(ExtentLine("RW", 1024, "FLAT", "tgf-f004.vmdk", 0))
    desc.set_extents(lines)
    text = desc.to_bytes().decode()
    assert 'RW 4194304 FLAT "tgf-f003.vmdk" 0\nRW 1024 FLAT "tgf-f004.vmdk" 0\n\n# The Disk Data Base' in text
    assert desc.capacity == 3 * 4194304 + 1024


def test_change_track_path_section_added() -> None:
    desc = Descriptor.parse(ESX_THIN.encode())
    desc.set("changeTrackPath", "vm_1-ctk.vmdk")
    text = desc.to_bytes().decode()
    assert '"vm_1-flat.vmdk"\n\n# Change Tracking File\nchangeTrackPath="vm_1-ctk.vmdk"\n' in text
    assert desc.change_track_path == "vm_1-ctk.vmdk"


def test_lenient_forms() -> None:
    """Unquoted createType, spaces around '=' and lower-case keys (libvmdk/dissect tolerance)."""
    text = 'version=1\ncreatetype = vmfs\ncid=0000abcd\nRW 8 VMFS "x-flat.vmdk"\n'
    desc = Descriptor.parse(text.encode())
    assert desc.create_type == "vmfs"
    assert desc.cid == 0xABCD
    assert desc.parent_cid == NO_PARENT
    assert desc.to_bytes() == text.encode()


def test_windows_1252_round_trip() -> None:
    text = 'version=1\nencoding="windows-1252"\nCID=00000001\nparentCID=ffffffff\ncreateType="vmfs"\n'
    raw = text.encode() + 'RW 8 VMFS "d\xe9j\xe0-flat.vmdk"\n'.encode("cp1252")
    desc = Descriptor.parse(raw)
    assert desc.extents[0].filename == "d\xe9j\xe0-flat.vmdk"
    desc.cid = 2
    assert desc.to_bytes() == raw.replace(b"CID=00000001", b"CID=00000002")


def test_not_a_descriptor() -> None:
    with pytest.raises(NotVmdkError):
        Descriptor.parse(b"hello world\n")
    with pytest.raises(CorruptError):
        Descriptor.parse(b"version=1\nCID=xyz\n")
    assert is_descriptor_text(QEMU_MS.encode())
    assert not is_descriptor_text(b"\x00" * 512)
    assert not is_descriptor_text(b"KDMV\x01\x00")


@pytest.mark.parametrize("create_type", sorted(CREATE_TYPES))
def test_new_descriptor_for_every_create_type(create_type: str) -> None:
    etype = CREATE_TYPES[create_type][0]
    line = ExtentLine("RW", 2048, etype) if etype == "ZERO" else ExtentLine("RW", 2048, etype, "x.vmdk")
    desc = Descriptor.new(
        create_type=create_type,
        extents=[line],
        cid=0x1234,
        parent_cid=0x5678,
        parent_hint="p.vmdk",
        ddb=[("ddb.adapterType", "lsilogic")],
    )
    again = Descriptor.parse(desc.to_bytes())
    assert again.to_bytes() == desc.to_bytes()
    assert again.create_type == create_type
    assert (again.cid, again.parent_cid, again.parent_hint) == (0x1234, 0x5678, "p.vmdk")
    assert again.extents == [line]
    assert again.to_bytes().startswith(b"# Disk DescriptorFile\n")  # dissect needs this first line


def test_aliases() -> None:
    assert canonical_create_type("vmfsRDM") == "vmfsRawDeviceMap"
    assert canonical_create_type("vmfsrdmp") == "vmfsPassthroughRawDeviceMap"
    assert canonical_create_type("2GbMaxExtentSparse") == "twoGbMaxExtentSparse"
    assert canonical_create_type("somethingNew") == "somethingNew"


_values = st.text(alphabet=st.characters(blacklist_characters='"\r\n\x00', blacklist_categories=("Cs",)), max_size=20)


@given(
    ddb=st.lists(st.tuples(st.from_regex(r"ddb\.[a-z][a-zA-Z.]{0,10}", fullmatch=True), _values), max_size=8),
    cid=st.integers(0, 0xFFFFFFFF),
    sectors=st.integers(1, 1 << 40),
    crlf=st.booleans(),
)
def test_round_trip_property(ddb: list[tuple[str, str]], cid: int, sectors: int, crlf: bool) -> None:
    desc = Descriptor.new(
        create_type="vmfs", extents=[ExtentLine("RW", sectors, "VMFS", "a b-flat.vmdk")], cid=cid, ddb=ddb
    )
    raw = desc.to_bytes()
    if crlf:
        raw = raw.replace(b"\n", b"\r\n")
    again = Descriptor.parse(raw)
    assert again.to_bytes() == raw
    assert again.cid == cid and again.capacity == sectors
    assert again.extents[0].filename == "a b-flat.vmdk"


# --- geometry (section 2.6 and 10.4) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("capacity", "adapter", "style", "expected"),
    [
        pytest.param(204800, "ide", "qemu", (203, 16, 63), id="qemu-100M-ide"),
        pytest.param(10485760, "ide", "qemu", (10402, 16, 63), id="qemu-5G-ide"),
        pytest.param(83886080, "ide", "qemu", (83220, 16, 63), id="qemu-40G-ide-uncapped"),
        pytest.param(83886080, "lsilogic", "qemu", (5221, 255, 63), id="qemu-40G-lsilogic"),
        pytest.param(1024000, "buslogic", "qemu", (63, 255, 63), id="qemu-500M-buslogic"),
        pytest.param(2097152, "legacyESX", "qemu", (130, 255, 63), id="qemu-1G-legacyESX"),
        pytest.param(192780, "lsilogic", "qemu", (12, 255, 63), id="qemu-small-lsilogic"),
        pytest.param(192780, "lsilogic", "vmware", (94, 64, 32), id="esx-small-lsilogic"),
        pytest.param(16777216, "ide", "vmware", (16383, 16, 63), id="esx-8G-ide-capped"),
        pytest.param(10485760, "ide", "vmware", (10402, 16, 63), id="esx-spec-example"),
        pytest.param(83886080, "lsilogic", "vmware", (5221, 255, 63), id="esx-40G"),
        pytest.param(268435456, "lsilogic", "vmware", (16709, 255, 63), id="esx-128G"),
        pytest.param(1048576000, "lsilogic", "vmware", (65270, 255, 63), id="esx-500G"),
        pytest.param(3565176930, "lsilogic", "vmware", (221922, 255, 63), id="esx-1.7T"),
        pytest.param(3 * 1024 * 1024, "lsilogic", "vmware", (768, 128, 32), id="esx-1.5G-128x32"),
    ],
)
def test_geometry(capacity: int, adapter: str, style: str, expected: tuple[int, int, int]) -> None:
    assert geometry_for(capacity, adapter, style) == Geometry(*expected)  # type: ignore[arg-type]


def test_geometry_bad_adapter() -> None:
    with pytest.raises(InvalidArgumentError):
        geometry_for(100, "pvscsi")
