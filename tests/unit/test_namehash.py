from __future__ import annotations

from vmfs.namehash import hash_index, name_hash


def test_known_hashes() -> None:
    assert name_hash(b"directory") == 0x5F1265850DBC9F66
    assert name_hash(b"file1") == 0x7B2720D6D2B970EB
    assert name_hash(b"file5") == 0xE43B0C19048D0480
    assert hash_index(b"directory", in_root=True) == 15490
    assert hash_index(b"file1", in_root=False) == 4348
    assert hash_index(b"file5", in_root=False) == 8954
    assert hash_index(b".sdd.sf", in_root=True) == 0x3E6C


def test_long_names() -> None:
    for n in (0, 1, 7, 8, 119, 120, 127, 128, 255):
        h = name_hash(b"x" * n)
        assert 0 <= h < 1 << 64
