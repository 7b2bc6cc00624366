"""A host's read-write attachment is one object, made by one call and ended by one; a Volume is
read side only and nothing is attached to it from outside."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.cluster.conftest import host, make_volume
from vmfs.cluster.attachment import HostAttachment
from vmfs.cluster.host import ManualClock
from vmfs.device.file import FileDevice
from vmfs.device.shared import SharedDevice
from vmfs.errors import BusyError, ReadOnlyError
from vmfs.volume.slots import read_slots
from vmfs.volume.volume import Volume
from vmfs.write.posix import WritableFileSystem

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return make_volume(tmp_path / "att.img", 1 << 30)


def in_use(volume: Volume) -> list[str]:
    return [s.owner for s in read_slots(volume, in_use_only=True)]


def test_one_call_opens_and_one_closes(image: Path) -> None:
    att = HostAttachment.open(image, host=host(1, ManualClock()))
    vol = att.volume
    assert vol.writer is att and not vol.readonly
    assert in_use(vol) == [att.host.uuid]
    assert att.journal is not None and att.locks is not None and att.journal_addr
    WritableFileSystem(att).write_file("/f", b"data")
    att.close()
    assert vol.closed and vol.writer is None
    with Volume.open(image) as ro:
        assert in_use(ro) == []
        assert ro.writer is None


def test_closing_the_volume_of_an_attachment_detaches_it(image: Path) -> None:
    """A caller holding only the volume still ends the host's session cleanly."""
    att = HostAttachment.open(image, host=host(1, ManualClock()))
    att.volume.close()
    assert att.closed
    with Volume.open(image) as ro:
        assert in_use(ro) == []


def test_read_only_volume_cannot_be_attached(image: Path) -> None:
    with Volume.open(image) as vol:
        with pytest.raises(ReadOnlyError):
            HostAttachment(vol, host(1, ManualClock()))
        assert vol.writer is None


def test_a_failed_attach_leaves_nothing_bound(image: Path) -> None:
    """The second attachment of one identity is refused (BusyError) and leaves its volume as it was."""
    first = HostAttachment.open(image, host=host(1, ManualClock()))
    try:
        vol = Volume.open(image, readonly=False)
        try:
            with pytest.raises(BusyError):
                HostAttachment(vol, host(1, ManualClock()))
            assert vol.writer is None
        finally:
            vol.close()
    finally:
        first.close()


def test_two_hosts_on_one_device_object(image: Path) -> None:
    """Two identities through their own handles on one device object: two slots, and the
    on-disk locks keep them apart as they keep two processes apart."""
    clock = ManualClock()
    device = FileDevice(image, readonly=False)
    try:
        a = HostAttachment.from_devices([SharedDevice(device)], host=host(1, clock))
        b = HostAttachment.from_devices([SharedDevice(device)], host=host(2, clock))
        assert sorted(in_use(a.volume)) == sorted([a.host.uuid, b.host.uuid])
        fa, fb = WritableFileSystem(a), WritableFileSystem(b)
        fd = fa.write_file("/shared", b"A")
        fa.open_file(fd.address, write=True)
        with pytest.raises(BusyError):
            fb.open_file(fd.address, write=True)
        fa.close_file(fd.address, write=True)
        a.close()
        fb.write(fb.resolve("/shared").address, 1, b"B")
        assert fb.reader("/shared").read(0, 2) == b"AB"
        b.close()
    finally:
        device.close()


def test_volume_attributes_are_set_by_volume_only(image: Path) -> None:
    with Volume.open(image) as vol:
        with pytest.raises(AttributeError, match="set by Volume's own methods only"):
            vol.revalidate_interval = 0  # type: ignore[misc]
        with pytest.raises(AttributeError):
            vol.locks = object()  # type: ignore[attr-defined]
        vol.trust_cache_for(0)
        assert vol.revalidate_interval == 0


def _volume_only_attributes() -> set[str]:
    """Attributes ``Volume`` sets on itself that no other class of the tree sets on itself."""
    tree = ast.parse((ROOT / "vmfs/volume/volume.py").read_text())
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Volume"]
    own = {t.attr for n in ast.walk(cls) for t in _targets(n) if _is_self(t)}
    others: set[str] = set()
    for path in (ROOT / "vmfs").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name != "Volume":
                others |= {t.attr for n in ast.walk(node) for t in _targets(n) if _is_self(t)}
                others |= {  # fields declared in the class body (dataclasses)
                    n.target.id for n in node.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
                }
    return own - others


def _targets(node: ast.AST) -> list[ast.Attribute]:
    if isinstance(node, ast.Assign):
        found = list(node.targets)
    elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
        found = [node.target]
    else:
        return []
    flat: list[ast.expr] = []
    for t in found:
        flat += list(t.elts) if isinstance(t, ast.Tuple) else [t]
    return [t for t in flat if isinstance(t, ast.Attribute)]


def _is_self(target: ast.Attribute) -> bool:
    return isinstance(target.value, ast.Name) and target.value.id == "self"


def test_no_code_assigns_a_volume_attribute_from_outside() -> None:
    """Static half of the rule (the run-time half is Volume.__setattr__): no statement anywhere in
    the tree assigns an attribute only a Volume has to anything but ``self``, nor through setattr."""
    names = _volume_only_attributes()
    assert {"writer", "revalidate_interval", "reload_hooks"} <= names
    bad = []
    for top in ("vmfs", "tools", "hostsim", "tests", "bench"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if path == Path(__file__).resolve():
                continue  # the run-time test above breaks the rule on purpose
            for node in ast.walk(ast.parse(path.read_text())):
                for t in _targets(node):
                    if t.attr in names and not _is_self(t):
                        bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: .{t.attr} = ...")
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr"
                        and len(node.args) > 1 and isinstance(node.args[1], ast.Constant)
                        and node.args[1].value in names):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: setattr(..., {node.args[1].value!r})")
    assert not bad, "\n".join(bad)


def test_the_readme_example_runs(image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The library example in README.md, run as written on a fresh volume called datastore.img."""
    text = (ROOT / "README.md").read_text()
    after = text.split("A program writes a volume as one host:\n\n", 1)[1]
    lines = []
    for line in after.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line[4:])
    image.rename(tmp_path / "datastore.img")
    monkeypatch.chdir(tmp_path)
    exec(compile("\n".join(lines), "README.md", "exec"), {})
    with Volume.open(tmp_path / "datastore.img") as vol:
        from vmfs.volume.namespace import FileSystem

        assert FileSystem(vol).reader("/notes.txt").read(0, 5) == b"hello"
