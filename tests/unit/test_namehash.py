"""The VMFS6 name hash against independent values: dissect.vmfs's own implementation (for any
name) and the hashes ESXi stored on the real VMFS6 sample."""

from __future__ import annotations

import struct
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from vmfs.format.namehash import hash_index, link_hash, name_hash


def test_known_hashes() -> None:
    assert name_hash(b"directory") == 0x5F1265850DBC9F66
    assert name_hash(b"file1") == 0x7B2720D6D2B970EB
    assert name_hash(b"file5") == 0xE43B0C19048D0480
    assert hash_index(b"directory", in_root=True) == 15490
    assert hash_index(b"file1", in_root=False) == 4348
    assert hash_index(b"file5", in_root=False) == 8954
    assert hash_index(b".sdd.sf", in_root=True) == 0x3E6C


def test_long_names() -> None:
    """Lengths around the 8-byte words and the 128-byte salted part, against dissect."""
    for n in (1, 7, 8, 9, 119, 120, 121, 127, 128, 129, 255):
        assert name_hash(b"x" * n) == _dissect_hash(b"x" * n), n


def _dissect_hash(name: bytes) -> int:
    """dissect.vmfs's computation of the same hash (its own lookup8, dissect.util's): the key
    laid out as in its ``_dir_name_hash``, hashed with ``lookup8_quads(key, 42)``."""
    from dissect.util.hash.jenkins import lookup8_quads

    key = bytearray(256)
    key[: len(name)] = name
    for i in range((len(name) + 8) & 0xFFF8, 127, 8):
        key[i : i + 8] = (0x739A75C28E61B017).to_bytes(8, "little")
    return lookup8_quads(bytes(key), 42)


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=1, max_size=255))
def test_equals_dissect_for_any_name(name: bytes) -> None:
    assert name_hash(name) == _dissect_hash(name)


def test_equals_dissect_lookup_indexes() -> None:
    """dissect.vmfs's own lookup function (link hash, table index) for names of every length."""
    from dissect.vmfs.descriptor import _dir_name_hash

    for n in range(1, 256):
        name = "".join(chr(ord("a") + (i * 7 + n) % 26) for i in range(n))
        for in_root in (False, True):
            link, index = _dir_name_hash(name, in_root=in_root)
            assert (link_hash(name_hash(name.encode())), hash_index(name.encode(), in_root)) == (link, index), name


def _stored_hashes(image: Path) -> list[tuple[str, str, int, set[int]]]:
    """Every entry of the VMFS6 sample as dissect.vmfs reads it from disk: (directory, name, the
    32 hash bits stored at +0x0C of the entry, the populated slots of the directory's hash
    table at +0x5F8 of its header)."""
    from dissect.vmfs import lvm, vmfs

    out = []
    with open(image, "rb") as fh:
        fs = vmfs.VMFS(lvm.LVM([fh]).volumes[0].open())
        pending = ["/"]
        while pending:
            d = pending.pop()
            table = fs.get(d).open()
            table.seek(0x5F8)
            words = struct.unpack("<16001I", table.read(16001 * 4))
            used = {i for i, w in enumerate(words) if w}
            for e in fs.get(d).iterdir():
                if e.name in (".", ".."):
                    continue
                stored = e.raw.hashIndex | e.raw.linkHash << 16
                out.append((d, e.name, stored, used))
                if e.fd.is_dir() and not e.name.endswith(".sf"):
                    pending.append(d.rstrip("/") + "/" + e.name)
    return out


def test_equals_every_hash_stored_on_the_vmfs6_sample(vmfs6_image: Path) -> None:
    """Golden values written by ESXi: each entry's stored hash bits are our hash's low 32 bits
    (system files in the root store 0: they sit at fixed slots), and each directory's hash
    table has exactly the slots hash_index gives its entries populated."""
    entries = _stored_hashes(vmfs6_image)
    user = [(d, n, h) for d, n, h, _ in entries if not (d == "/" and n.endswith(".sf"))]
    assert len(user) >= 7  # "directory" and the six entries inside it
    for d, name, stored in user:
        assert stored == name_hash(name.encode()) & 0xFFFFFFFF, f"{d} {name}"
    for d in {d for d, *_ in entries}:
        slots = {hash_index(n.encode(), in_root=d == "/") for dd, n, _, _ in entries if dd == d}
        used = next(u for dd, *_, u in entries if dd == d)
        assert slots == used, d
