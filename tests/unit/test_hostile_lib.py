"""The library on hostile images (issue 17, point 4): what FileSystem and the directory readers do
with the damaged volumes of tests/fuse/hostile.py and with damaged entries of the real VMFS6
sample.

* An entry that leads back to a directory on the path walked (the root, an ancestor, the
  directory itself) is corrupt: the lookup raises CorruptError (EIO), the directory holding it
  stays listable, and ``walk`` stops with CorruptError rather than running forever.
* An entry whose name no path can hold ('/', NUL followed by more bytes, '.', '..', 128 bytes
  without a NUL) and the second entry of a name are hidden: listings and lookups leave them out,
  the rest of the directory stays readable, each is logged once and kept in
  ``Directory.defects``; a directory holding only hidden entries is not empty (rmdir refuses).
* A symbolic link whose target holds a NUL is corrupt (readlink and following it), not cut.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest

from tests.fsck import corrupt, volumes
from tests.fsck.cases import codes, run_fsck
from tests.fuse import hostile
from vmfs.cluster.attachment import HostAttachment
from vmfs.errors import CorruptError, NotEmptyError, NotFoundError
from vmfs.ondisk.dirent6 import DIRENT6_SIZE, Dirent6
from vmfs.volume.directory import open_directory
from vmfs.volume.filereader import FileReader
from vmfs.volume.namespace import FileSystem
from vmfs.volume.volume import Volume
from vmfs.write.posix import WritableFileSystem


@pytest.fixture(scope="module")
def hostile_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = volumes.make_volume(tmp_path_factory.mktemp("hostile-lib") / "base.img")
    path.chmod(0o444)
    return path


def _image(name: str, base: Path, tmp_path: Path) -> Path:
    return hostile.make(hostile.BY_NAME[name], base, tmp_path / f"{name}.img")


@pytest.mark.parametrize("name", ["cycle_root", "cycle_ancestor", "self_entry", "root_self_entry"])
def test_cycles_are_refused_and_the_rest_stays_readable(name: str, hostile_base: Path, tmp_path: Path) -> None:
    case = hostile.BY_NAME[name]
    (path,) = case.eio
    parent, _, last = path.rpartition("/")
    with Volume.open(_image(name, hostile_base, tmp_path)) as vol:
        fs = FileSystem(vol)
        for p in (path, path + "/d1", path + "/top", path + "/.."):
            with pytest.raises(CorruptError, match="cycle"):
                fs.stat(p)
        assert last in {e.name for e in fs.listdir(parent or "/")}
        for p in case.visible:
            fs.stat(p)
        assert fs.reader("/d1/small").read(0, 100) == b"small file\n" * 9
        with pytest.raises(CorruptError):
            list(fs.walk("/"))


def test_self_parent_does_not_mislead_a_walk(hostile_base: Path, tmp_path: Path) -> None:
    """'..' of /d1/d2 names /d1/d2: paths resolve '..' along the walk, never through it."""
    with Volume.open(_image("self_parent", hostile_base, tmp_path)) as vol:
        fs = FileSystem(vol)
        assert fs.resolve("/d1/d2/..").address == fs.resolve("/d1").address
        assert fs.resolve("/d1/d2/../../top").address == fs.resolve("/top").address
        walked = [d for d, _ in fs.walk("/")]
    with Volume.open(hostile_base) as vol:
        assert walked == [d for d, _ in FileSystem(vol).walk("/")]


@pytest.mark.parametrize(
    ("name", "kind"),
    [("slash_name", "name"), ("nul_name", "name"), ("dot_name", "name"), ("dotdot_name", "name"),
     ("dotdot_extra", "name"), ("duplicate", "duplicate")],
)
def test_bad_entries_are_hidden_logged_and_kept_as_defects(name: str, kind: str, hostile_base: Path,
                                                           tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    case = hostile.BY_NAME[name]
    image = _image(name, hostile_base, tmp_path)
    with caplog.at_level(logging.WARNING, logger="vmfs.volume.directory"), Volume.open(image) as vol:
        fs = FileSystem(vol)
        dirpath = "/d1/d2" if name == "dotdot_extra" else "/d1"
        listed = [e.name for e in fs.listdir(dirpath)]
        assert len(listed) == len(set(listed)) and "." not in listed and ".." not in listed
        for d, hidden in case.hidden:
            assert hidden not in listed
            with pytest.raises(NotFoundError):
                fs.stat(f"{d}/{hidden}")
        for p in case.visible:
            fs.stat(p)
        defects = list(open_directory(vol, fs.resolve(dirpath)).defects.values())
        assert [d.kind for d in defects] == [kind], defects
        fs.listdir(dirpath)
        list(fs.walk("/"))  # the whole tree walks
    warnings = [r for r in caplog.records if "hidden" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]


def test_duplicate_keeps_the_first_entry(hostile_base: Path, tmp_path: Path) -> None:
    with Volume.open(_image("duplicate", hostile_base, tmp_path)) as vol:
        fs = FileSystem(vol)
        assert fs.reader("/d1/small").read(0, 1000) == b"small file\n" * 9
        assert [e.name for e in fs.listdir("/d1")].count("small") == 1


def test_directory_of_hidden_entries_only_is_not_empty(hostile_base: Path, tmp_path: Path) -> None:
    only_bad = hostile.Hostile("d2_bad", "", hostile._rename("/d1/d2", "inner", b"in/ner"), "")
    image = hostile.make(only_bad, hostile_base, tmp_path / "v.img")
    with HostAttachment.open(image, host=volumes.host()) as vol:
        fs = WritableFileSystem(vol)
        assert fs.listdir("/d1/d2") == []
        with pytest.raises(NotEmptyError):
            fs.rmdir("/d1/d2")
        fs.write_file("/d1/d2/new", b"x")  # the directory still takes new entries
        assert [e.name for e in fs.listdir("/d1/d2")] == ["new"]
    rc, report = run_fsck(image, "-n")
    assert rc == 4 and "0x030008 DIRENT_BAD_NAME" in codes(report)


def test_nul_in_symlink_target_is_corrupt(hostile_base: Path, tmp_path: Path) -> None:
    with Volume.open(_image("symlink_nul", hostile_base, tmp_path)) as vol:
        fs = FileSystem(vol)
        assert fs.stat("/link").size == len(b"/etc\x00passwd")
        for call in (lambda: fs.readlink("/link"), lambda: fs.stat("/link", follow=True),
                     lambda: fs.stat("/link/x")):
            with pytest.raises(CorruptError, match="NUL"):
                call()


def _edit_dirent6(image: Path, dirpath: str, name: str, new_name: bytes) -> None:
    img = corrupt.Image(image)
    try:
        fd = img.fs.resolve(dirpath)
        entry = open_directory(img.vol, fd).lookup(name)
        where = FileReader(fd).volume_offset(entry.offset)
        ent = Dirent6.parse(img.read(where, DIRENT6_SIZE))
        ent.name = new_name.ljust(len(ent.name), b"\x00")
        img.write(where, Dirent6.build(ent))
    finally:
        img.close()


@pytest.mark.parametrize(("new_name", "code", "hidden"),
                         [(b"fi/e2", "0x030008 DIRENT_BAD_NAME", "fi/e2"),
                          (b"f\x00ile2", "0x030008 DIRENT_BAD_NAME", "f"),
                          (b"..", "0x030008 DIRENT_BAD_NAME", "file2"),
                          (b"file1", "0x030009 DIRENT_DUPLICATE", "file2")])
def test_vmfs6_bad_entries_hidden_and_reported(vmfs6_image: Path, tmp_path: Path, new_name: bytes, code: str,
                                               hidden: str) -> None:
    image = tmp_path / "v6.img"
    subprocess.run(["cp", "--sparse=always", str(vmfs6_image), str(image)], check=True)
    image.chmod(0o644)
    with Volume.open(image) as vol:
        before = {e.name: e.address for e in FileSystem(vol).listdir("/directory")}
    assert "file2" in before and "file1" in before
    _edit_dirent6(image, "/directory", "file2", new_name)
    with Volume.open(image) as vol:
        fs = FileSystem(vol)
        after = {e.name: e.address for e in fs.listdir("/directory")}
        assert hidden not in after
        assert after == {k: v for k, v in before.items() if k != "file2"}  # file1 is the original one
        for n in after:
            fs.stat(f"/directory/{n}")
        assert len(open_directory(vol, fs.resolve("/directory")).defects) == 1
    rc, report = run_fsck(image, "-n")
    assert rc == 4 and code in codes(report), codes(report)


def test_symlink_target_with_nul_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """No POSIX path holds a NUL: the library refuses to write one (EINVAL), never stores what
    its reader would then call corrupt."""
    import errno
    import subprocess

    import pytest

    from tests.conftest import tool
    from vmfs.errors import InvalidArgumentError
    from vmfs.write.posix import WritableFileSystem

    image = tmp_path / "s.img"
    subprocess.run([tool("vmfs-mkfs"), "-t", "vmfs5", "--size", "1G", str(image)], check=True, capture_output=True)
    with HostAttachment.open([image]) as vol:
        fs = WritableFileSystem(vol)
        with pytest.raises(InvalidArgumentError) as info:
            fs.symlink("/etc\x00passwd", "/l")
        assert info.value.errno == errno.EINVAL
        assert "l" not in [e.name for e in fs.listdir("/")]
