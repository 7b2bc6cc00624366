"""The bytes a guest writes: real page and sector contents, derived from seeds without state.

Why keyed hashes rather than a random generator per page: a page or sector must have the same
bytes whenever and wherever it is written (a shared image in ten VMs, a sector rewritten by
another loop iteration, a test recomputing what should be on the VMDK), and a keyed hash gives
block *n* of seed *s* directly, with no generator to seed or advance.

Why a page is a stamp plus a window of a pool: hashing 4 KiB per page (SHAKE-128, or
``Random.randbytes``) costs 15-40 µs here, which made page contents the largest cost of a
toucher's run.  A random page is instead 16 bytes unique to it (a 128-bit keyed BLAKE2b digest,
or 128 bits of the vCPU's stream) followed by ``page_size - 16`` bytes of a 1 MiB random pool of
its seed, taken at an offset the stamp picks: 1.5-2 µs a page.  Every byte looks random, two pages
differ unless their stamps collide (probability 2^-128 per pair), and equal keys give equal pages;
what is lost is only independence between pages (their windows overlap the same pool).  Sectors
are small enough to hash whole (SHAKE-128, 512 bytes).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import lru_cache
from random import Random

from hostsim.vmm.guest.tree import SECTOR, Content, Image

#: a page's bytes from its guest page number
PageBytes = Callable[[int], bytes]
#: an I/O's bytes from its first LBA and its sector count
DiskBytes = Callable[[int, int], bytes]

#: bytes at the start of a random page that are unique to it
STAMP = 16
#: random pool a page's other bytes are a window of (at least twice the page size)
POOL_BYTES = 1 << 20


def pool_size(page_size: int) -> int:
    """Bytes of a page pool for this page size."""
    return max(POOL_BYTES, 2 * page_size)


@lru_cache(maxsize=32)
def _pool(key: bytes, size: int) -> bytes:
    """The random pool of a seed (at most 32 cached: 32 MiB)."""
    return hashlib.shake_128(b"pool:" + key).digest(size)


def pooled_page(stamp: bytes, pool: bytes, page_size: int) -> bytes:
    """``stamp`` (16 bytes) then the window of ``pool`` its first 8 bytes select."""
    body = page_size - STAMP
    off = int.from_bytes(stamp[:8], "little") % (len(pool) - body + 1)
    return stamp + pool[off:off + body]


def seeded_sector(seed: int, lba: int) -> bytes:
    """The 512 bytes ``write ... random seed S`` puts at sector ``lba`` (any I/O size)."""
    return hashlib.shake_128(b"sector:%d:%d" % (seed, lba)).digest(SECTOR)


def seeded_sectors(seed: int, lba: int, count: int) -> bytes:
    """``count`` sectors of ``random seed S`` from ``lba`` on: what a test expects on the disk."""
    return b"".join(seeded_sector(seed, lba + i) for i in range(count))


def seeded_page(seed: int, ppn: int, page_size: int) -> bytes:
    """The bytes ``touch ... write random seed S`` puts in guest page ``ppn``."""
    return seeded_pages(seed, page_size)(ppn)


def seeded_pages(seed: int, page_size: int) -> PageBytes:
    """:func:`seeded_page` for one seed and page size, its pool looked up once."""
    pool = _pool(b"page:%d" % seed, pool_size(page_size))
    prefix = b"page:%d:" % seed
    blake2b = hashlib.blake2b
    return lambda ppn: pooled_page(blake2b(prefix + b"%d" % ppn, digest_size=STAMP).digest(), pool, page_size)


def image_page(image: Image, ppn: int, page_size: int) -> bytes:
    """Page ``ppn`` of a shared image: all zero for about ``image.zero`` of the pages, else bytes
    that depend only on the image's name, seed and the page number (so equal across VMs)."""
    return image_pages(image, page_size)(ppn)


@lru_cache(maxsize=256)
def image_pages(image: Image, page_size: int) -> PageBytes:
    """:func:`image_page` for one image and page size, with its key, zero threshold and pool
    worked out once."""
    key = b"image:%s:%d:" % (image.name.encode(), image.seed)
    threshold = int(image.zero * (1 << 64))
    pool = _pool(key, pool_size(page_size))
    zero = bytes(page_size)
    blake2b = hashlib.blake2b

    def page(ppn: int) -> bytes:
        digest = blake2b(key + b"%d" % ppn, digest_size=8 + STAMP).digest()
        if int.from_bytes(digest[:8], "big") < threshold:
            return zero
        return pooled_page(digest[8:], pool, page_size)
    return page


def stream_pages(rng: Random, key: str, page_size: int) -> PageBytes:
    """Unseeded ``random`` pages: a stamp from the vCPU's stream, a pool of the vCPU's own."""
    pool = _pool(key.encode(), pool_size(page_size))
    getrandbits = rng.getrandbits
    return lambda ppn: pooled_page(getrandbits(8 * STAMP).to_bytes(STAMP, "little"), pool, page_size)


def fill(pattern: bytes, length: int) -> bytes:
    """``pattern`` repeated to exactly ``length`` bytes, starting at its first byte."""
    reps = -(-length // len(pattern))
    return (pattern * reps)[:length]


def page_source(content: Content, page_size: int, rng: Random, images: dict[str, Image],
                stream_key: str = "") -> PageBytes:
    """How to fill one page with ``content`` (a constant page is built once and shared);
    ``stream_key`` names the vCPU's own pool for unseeded random pages."""
    kind = content.kind
    if kind in ("zero", "byte", "pattern"):
        const = _constant(content, page_size)
        return lambda ppn: const
    if kind == "random":
        if content.seed is None:
            return stream_pages(rng, stream_key, page_size)
        return seeded_pages(content.seed, page_size)
    return image_pages(images[content.name], page_size)


def stream_sectors(rng: Random, key: str) -> DiskBytes:
    """Unseeded ``random`` disk data: a 16-byte stamp from the vCPU's stream, then a window of the
    vCPU's own pool (tiled for writes longer than the pool), as unseeded pages are.  Nobody can
    recompute unseeded data, so only its randomness matters; ``Random.randbytes`` cost 3 µs per
    KiB, the largest single cost of a disk-writing guest (bench/bench_hostsim.py)."""
    pool = _pool(b"disk:" + key.encode(), POOL_BYTES)
    getrandbits = rng.getrandbits

    def data(lba: int, count: int) -> bytes:
        n = count * SECTOR
        stamp = getrandbits(8 * STAMP).to_bytes(STAMP, "little")
        body = n - STAMP
        off = int.from_bytes(stamp[:8], "little") % (POOL_BYTES - min(body, POOL_BYTES) + 1)
        if body <= POOL_BYTES:
            return stamp + pool[off:off + body]
        return stamp + (pool[off:] + pool * (body // POOL_BYTES + 1))[:body]
    return data


def disk_source(content: Content, page_size: int, rng: Random, images: dict[str, Image],
                stream_key: str = "") -> DiskBytes:
    """How to make the data of one write of ``count`` sectors at ``lba``; ``stream_key`` names the
    vCPU's own pool for unseeded random data."""
    kind = content.kind
    if kind == "zero":
        return lambda lba, count: bytes(count * SECTOR)
    if kind == "byte":
        one = bytes([content.value])
        return lambda lba, count: one * (count * SECTOR)
    if kind == "pattern":
        data = content.data
        return lambda lba, count: fill(data, count * SECTOR)
    if kind == "random":
        if content.seed is None:
            return stream_sectors(rng, stream_key)
        seed = content.seed
        return lambda lba, count: seeded_sectors(seed, lba, count)
    image = images[content.name]

    def from_image(lba: int, count: int) -> bytes:
        start, length = lba * SECTOR, count * SECTOR
        first, last = start // page_size, (start + length - 1) // page_size
        raw = b"".join(image_page(image, p, page_size) for p in range(first, last + 1))
        off = start - first * page_size
        return raw[off:off + length]
    return from_image


def _constant(content: Content, page_size: int) -> bytes:
    if content.kind == "zero":
        return bytes(page_size)
    if content.kind == "byte":
        return bytes([content.value]) * page_size
    return fill(content.data, page_size)
