"""Bit-packed block addresses: examples from the samples and parse/make round trips."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vmfs.format import address as A


def test_vmfs5_examples() -> None:
    c = A.AddressCodec5(dense_sbpc=True)
    assert c.fb_block(0x381) == 14
    assert c.fb_block(0x341) == 13
    assert c.split(0x102) == A.Resource(A.ADDR_SB, 4, 0)
    assert c.split(0x10000102) == A.Resource(A.ADDR_SB, 4, 1)
    assert A.fd_split(0x03400004) == (0, 13)
    assert c.make_fb(14) == 0x381


def test_vmfs6_examples() -> None:
    c = A.AddressCodec6(sfb_rpc=512, lfb_shift=9)
    assert c.split(0x0040000000000001) == A.Resource(A.ADDR_FB, 0, 8)
    assert c.fb_block(0x07F8000000008001) == 767
    assert c.split(0x5) == A.Resource(A.ADDR_PB2, 0, 0)
    assert c.split(0x0200000000000002) == A.Resource(A.ADDR_SB, 0, 2)
    assert c.make_fb(767) == 0x07F8000000008001


@given(st.integers(0, (1 << 26) - 1), st.booleans())
def test_fb5_round_trip(block: int, tbz: bool) -> None:
    c = A.AddressCodec5()
    a = c.make_fb(block, tbz)
    assert A.kind(a) == A.ADDR_FB and c.fb_block(a) == block and c.fb_tbz(a) == tbz
    assert c.fb_block(c.clear_tbz(a)) == block and not c.fb_tbz(c.clear_tbz(a))


@given(st.sampled_from([A.ADDR_SB, A.ADDR_PB, A.ADDR_PB2, A.ADDR_FD, A.ADDR_JB]), st.data())
def test_resource5_round_trip(kind: int, data) -> None:  # type: ignore[no-untyped-def]
    c = A.AddressCodec5(dense_sbpc=True)
    limits = {A.ADDR_SB: (22, 64), A.ADDR_PB: (22, 16), A.ADDR_PB2: (22, 16), A.ADDR_FD: (16, 1024),
              A.ADDR_JB: (13, 64)}
    bits, rmax = limits[kind]
    cluster = data.draw(st.integers(0, (1 << bits) - 1))
    res = data.draw(st.integers(0, rmax - 1))
    assert c.split(c.make(kind, cluster, res)) == A.Resource(kind, cluster, res)


@given(st.sampled_from([A.ADDR_SB, A.ADDR_PB, A.ADDR_PB2]), st.integers(0, (1 << 36) - 1), st.integers(0, 255))
def test_resource6_round_trip(kind: int, cluster: int, res: int) -> None:
    c = A.AddressCodec6(512, 9)
    assert c.split(c.make(kind, cluster, res)) == A.Resource(kind, cluster, res)


@given(st.integers(0, (1 << 31) * 512 - 1), st.booleans())
def test_sfb_round_trip(block: int, tbz: bool) -> None:
    c = A.AddressCodec6(512, 9)
    a = c.make_fb(block, tbz)
    assert c.fb_block(a) == block and c.fb_tbz(a) == tbz


def test_describe() -> None:
    assert A.AddressCodec5().describe(0x381) == "FB 14"
    assert A.AddressCodec6(512, 9).describe(0x5) == "PB2 c0 r0"
    assert A.AddressCodec5().describe(0) == "NULL"
