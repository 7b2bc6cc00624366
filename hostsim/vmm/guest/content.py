"""The bytes a guest writes: real page and sector contents, derived from seeds without state.

Why hashing (SHAKE-128) rather than a random generator per page: a page or sector must have the
same bytes whenever and wherever it is written (a shared image in ten VMs, a sector rewritten by
another loop iteration, a test recomputing what should be on the VMDK), and a keyed hash gives
block *n* of seed *s* directly, in one C call per block, with no generator to seed or advance.
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


def seeded_sector(seed: int, lba: int) -> bytes:
    """The 512 bytes ``write ... random seed S`` puts at sector ``lba`` (any I/O size)."""
    return hashlib.shake_128(b"sector:%d:%d" % (seed, lba)).digest(SECTOR)


def seeded_sectors(seed: int, lba: int, count: int) -> bytes:
    """``count`` sectors of ``random seed S`` from ``lba`` on: what a test expects on the disk."""
    return b"".join(seeded_sector(seed, lba + i) for i in range(count))


def seeded_page(seed: int, ppn: int, page_size: int) -> bytes:
    """The bytes ``touch ... write random seed S`` puts in guest page ``ppn``."""
    return hashlib.shake_128(b"page:%d:%d" % (seed, ppn)).digest(page_size)


@lru_cache(maxsize=16384)
def image_page(image: Image, ppn: int, page_size: int) -> bytes:
    """Page ``ppn`` of a shared image: all zero for about ``image.zero`` of the pages, else bytes
    that depend only on the image's name, seed and the page number (so equal across VMs).

    Cached (up to 64 MiB of 4 KiB pages): ten VMs booting one image hash each page once; the
    cache holds pure function values, so it changes no result."""
    key = b"image:%s:%d:%d" % (image.name.encode(), image.seed, ppn)
    digest = hashlib.shake_128(key).digest(8 + page_size)
    if image.zero and int.from_bytes(digest[:8], "big") < image.zero * (1 << 64):
        return bytes(page_size)
    return digest[8:]


def fill(pattern: bytes, length: int) -> bytes:
    """``pattern`` repeated to exactly ``length`` bytes, starting at its first byte."""
    reps = -(-length // len(pattern))
    return (pattern * reps)[:length]


def page_source(content: Content, page_size: int, rng: Random, images: dict[str, Image]) -> PageBytes:
    """How to fill one page with ``content`` (a constant page is built once and shared)."""
    kind = content.kind
    if kind in ("zero", "byte", "pattern"):
        const = _constant(content, page_size)
        return lambda ppn: const
    if kind == "random":
        if content.seed is None:
            return lambda ppn: rng.randbytes(page_size)
        seed = content.seed
        return lambda ppn: seeded_page(seed, ppn, page_size)
    image = images[content.name]
    return lambda ppn: image_page(image, ppn, page_size)


def disk_source(content: Content, page_size: int, rng: Random, images: dict[str, Image]) -> DiskBytes:
    """How to make the data of one write of ``count`` sectors at ``lba``."""
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
            return lambda lba, count: rng.randbytes(count * SECTOR)
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
