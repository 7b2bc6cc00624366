"""A corpus of hostile VMFS5 images: a fresh populated volume (tests/fsck/volumes.py: vmfs.mkfs,
the code behind vmfs-mkfs, then files written through the library) damaged through the
corruption operations of tests/fsck/corrupt.py, one defect per image.

Each case says what a reader must show: the paths whose lookup is refused with EIO (a directory
entry that leads back to the directory it is in or to one above it), the names that must stay
hidden from a listing (an entry whose name no path can hold, or a second entry of one name), the
names that must stay visible next to them, and the fsck problem code that must be reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fsck import corrupt, volumes
from vmfs.ondisk.dirent5 import DIRENT5_SIZE, Dirent5


@dataclass(frozen=True)
class Hostile:
    name: str
    title: str
    damage: Callable[[corrupt.Image], None]
    fsck_code: str  # "0x040001 DIR_MULTIPLE_PARENTS"
    eio: tuple[str, ...] = ()  # paths whose lookup must fail with EIO
    hidden: tuple[tuple[str, str], ...] = ()  # (directory, name) kept out of its listing
    visible: tuple[str, ...] = ()  # paths that must still be listed and readable
    extra: dict[str, Any] = field(default_factory=dict)


def _alias(dirpath: str, name: str, target: str) -> Callable[[corrupt.Image], None]:
    return lambda img: corrupt.op_add_entry(img, dir=dirpath, name=name, target=target)


def _rename(dirpath: str, name: str, raw: bytes) -> Callable[[corrupt.Image], None]:
    """Give an entry a raw 128-byte name field (bytes a path can never hold, as they are)."""

    def damage(img: corrupt.Image) -> None:
        img.edit_entry(dirpath, name, lambda ent: setattr(ent, "name", raw.ljust(128, b"\x00")))

    return damage


def _dotdot_to_itself(dirpath: str) -> Callable[[corrupt.Image], None]:
    def damage(img: corrupt.Image) -> None:
        own = img.fd(dirpath).address
        img.edit_entry(dirpath, "..", lambda ent: setattr(ent, "descAddr", own))

    return damage


def _symlink_target(path: str, target: bytes) -> Callable[[corrupt.Image], None]:
    """Put ``target`` in a symbolic link's data block (in place) and its length in the FD."""

    def damage(img: corrupt.Image) -> None:
        corrupt.op_symlink_target(img, path=path, target=target)

    return damage


def _two_dots_entry(dirpath: str, name: str) -> Callable[[corrupt.Image], None]:
    """Append a third entry named '..' (pointing at the directory's real parent)."""

    def damage(img: corrupt.Image) -> None:
        slots = img.dir_slots(dirpath)
        dotdot = Dirent5.parse(slots[1])
        dotdot.name = name.encode().ljust(128, b"\x00")
        slots.append(Dirent5.build(dotdot))
        img.write_dir(dirpath, slots)

    return damage


CASES: tuple[Hostile, ...] = (
    Hostile("cycle_root", "an entry of /d1 names the root", _alias("/d1", "loop", "/"),
            "0x040001 DIR_MULTIPLE_PARENTS", eio=("/d1/loop",), visible=("/d1/small", "/d1/d2/inner")),
    Hostile("cycle_ancestor", "an entry of /d1/d2 names /d1", _alias("/d1/d2", "up", "/d1"),
            "0x040001 DIR_MULTIPLE_PARENTS", eio=("/d1/d2/up",), visible=("/d1/d2/inner",)),
    Hostile("self_entry", "an entry of /d1 names /d1", _alias("/d1", "me", "/d1"),
            "0x040001 DIR_MULTIPLE_PARENTS", eio=("/d1/me",), visible=("/d1/small",)),
    Hostile("root_self_entry", "an entry of / names /", _alias("/", "again", "/"),
            "0x040001 DIR_MULTIPLE_PARENTS", eio=("/again",), visible=("/top", "/d1/small")),
    Hostile("self_parent", "'..' of /d1/d2 names /d1/d2 itself", _dotdot_to_itself("/d1/d2"),
            "0x040002 DIR_BAD_DOTDOT", visible=("/d1/d2/inner",)),
    Hostile("symlink_nul", "the target of /link is '/etc\\0passwd'", _symlink_target("/link", b"/etc\x00passwd"),
            "0x02000b SYMLINK_BAD_TARGET", eio=(), visible=("/d1/small",), extra={"readlink_eio": "/link"}),
    Hostile("slash_name", "an entry of /d1 is named 'b/g'", _rename("/d1", "big", b"b/g"),
            "0x030008 DIRENT_BAD_NAME", hidden=(("/d1", "b/g"),), visible=("/d1/small", "/d1/sub")),
    Hostile("nul_name", "an entry of /d1 is named 'sm\\0ll'", _rename("/d1", "small", b"sm\x00ll"),
            "0x030008 DIRENT_BAD_NAME", hidden=(("/d1", "sm"), ("/d1", "small")), visible=("/d1/big",)),
    Hostile("dot_name", "an entry of /d1 is named '.'", _rename("/d1", "small", b"."),
            "0x030008 DIRENT_BAD_NAME", hidden=(("/d1", "small"),), visible=("/d1/big", "/d1/d2/inner")),
    Hostile("dotdot_name", "an entry of /d1 is named '..'", _rename("/d1", "sub", b".."),
            "0x030008 DIRENT_BAD_NAME", hidden=(("/d1", "sub"),), visible=("/d1/big", "/d1/small")),
    Hostile("dotdot_extra", "a third entry of /d1/d2 is '..' naming /d1", _two_dots_entry("/d1/d2", ".."),
            "0x030008 DIRENT_BAD_NAME", visible=("/d1/d2/inner",)),
    Hostile("duplicate", "two entries of /d1 are named 'small'", _rename("/d1", "sub", b"small"),
            "0x030009 DIRENT_DUPLICATE", hidden=(("/d1", "sub"),), visible=("/d1/small", "/d1/big"),
            extra={"small_content": b"small file\n" * 9}),
    Hostile("pb_loop", "a pointer block of /huge names itself", lambda img: corrupt.op_pb_cycle(img, path="/huge"),
            "0x020006 FD_PB_CYCLE", visible=("/huge", "/d1/small"), extra={"pb_loop": "/huge"}),
)

BY_NAME = {c.name: c for c in CASES}


def make(case: Hostile, base: Path, image: Path) -> Path:
    """``image``: a sparse copy of the populated ``base`` volume with ``case``'s damage."""
    volumes.copy(base, image)
    image.chmod(0o644)
    img = corrupt.Image(image)
    try:
        case.damage(img)
    finally:
        img.close()
    return image


def pb_loop_offset(image: Path, path: str) -> int:
    """A file offset of ``path`` (double indirect) mapped through the pointer-block entry that
    op_pb_cycle made point at its own pointer block (the first entry that was free)."""
    from vmfs.ondisk import resource as R
    from vmfs.ondisk.common import unpack_ints
    from vmfs.volume.namespace import FileSystem
    from vmfs.volume.volume import Volume

    with Volume.open(image) as vol:
        fd = FileSystem(vol).resolve(path)
        pb1 = fd.pointers[0]
        res = vol.resources[R.RES_PB]
        _, c, r = vol.geometry.codec.split(pb1)
        entries = list(unpack_ints(vol.device.read(res.volume_offset(c, r), vol.geometry.pb_size), 4))
        index = entries.index(pb1)
        return index * vol.geometry.ptrs_per_pb * fd.block_size


__all__ = ["BY_NAME", "CASES", "DIRENT5_SIZE", "Hostile", "make", "pb_loop_offset"]
