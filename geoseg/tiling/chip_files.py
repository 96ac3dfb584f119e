"""Write many chips of one layout as GeoTIFFs, with one GDAL dataset for all of them.

Creating a GeoTIFF through GDAL costs about a millisecond of fixed work per file (driver set-up,
CRS encoding, option checks), mostly under Python's GIL: most of a small chip's cost once it is
compressed with a fast codec. Here GDAL writes the chips of a block once, stacked into one
in-memory GeoTIFF whose tiles are each chip's tiles (and whose internal mask, if any, holds each
chip's mask tiles); every chip file is then that file's tags with the chip's own size, tiles and
origin, followed by the chip's compressed tiles. The files read back as if GDAL had written each
one: same tags, codec, predictor, georeferencing and mask (tested).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.io import MemoryFile

IMAGE_LENGTH, SAMPLES_PER_PIXEL, PLANAR_CONFIG = 257, 277, 284
TILE_WIDTH, TILE_LENGTH, TILE_OFFSETS, TILE_BYTE_COUNTS = 322, 323, 324, 325
PIXEL_SCALE, TIEPOINT, TRANSFORMATION = 33550, 33922, 34264
SHORT, LONG, DOUBLE = 3, 4, 12
TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}
HEADER = 8

Entries = dict[int, tuple[int, int, bytes]]
"""An image's TIFF tags: tag -> (field type, count, raw little-endian value bytes)."""


class UnexpectedLayout(ValueError):
    """GDAL wrote something this module does not split (then chips are written one by one)."""


def chip_block_size(size: int) -> int:
    """The tile side of ``size`` px chips: the chip itself up to 512 px, else the largest
    multiple of 16 up to 512 that divides it (so that no tile straddles two stacked chips)."""
    if size <= 512:
        return size
    return max(b for b in range(16, 513, 16) if size % b == 0)


def write_stacked(
    paths: Sequence[Path],
    chips: Sequence[np.ndarray],
    transforms: Sequence[Affine],
    profile: dict,
    descriptions: Sequence[str | None] | None = None,
    valid: Sequence[np.ndarray] | None = None,
) -> None:
    """Write ``chips`` (each bands x size x size) as GeoTIFFs at ``paths`` with ``transforms``.

    ``profile`` is a rasterio creation profile for one chip, tiled with
    :func:`chip_block_size`; ``valid`` (a boolean size x size array per chip) becomes each
    chip's internal mask. Raises :class:`UnexpectedLayout` before writing any file if GDAL's
    file cannot be split.
    """
    data = _gdal_file(chips, transforms[0], profile, descriptions, valid)
    images = read_ifds(data)
    if len(images) != (1 if valid is None else 2):
        raise UnexpectedLayout(f"{len(images)} images in one file")
    layout = _Layout(images, len(chips), chips[0].shape[-1], transforms[0])
    for k, (path, transform) in enumerate(zip(paths, transforms)):
        Path(path).write_bytes(layout.chip_file(data, k, transform))


def _gdal_file(chips, first: Affine, profile: dict, descriptions, valid) -> bytes:
    """The GeoTIFF GDAL writes for the chips stacked from top to bottom."""
    stacked = np.concatenate(chips, axis=1)
    shape = {"height": stacked.shape[1], "transform": first}
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), MemoryFile() as memory:
        with memory.open(**profile | shape) as dst:
            dst.write(stacked)
            if descriptions is not None:
                dst.descriptions = descriptions
            if valid is not None:
                dst.write_mask(np.concatenate(valid).view(np.uint8) * np.uint8(255))
        return memory.read()


class _Layout:
    """Where each chip's tiles lie in the stacked file, and the header all chip files share
    but for their tile offsets and byte counts and their origin."""

    def __init__(self, images: list[Entries], n: int, size: int, first: Affine):
        self.tiles = [_tile_ranges(entries, n, size) for entries in images]
        self.tag, self.georeference = _georeference(images[0], first)
        chip_images = [
            _chip_entries(entries, size, len(ranges[0]))
            for entries, ranges in zip(images, self.tiles)
        ]
        self.head, self.places = _header(chip_images)
        self.georeference_at = self.places[0][self.tag]

    def chip_file(self, data: bytes, k: int, transform: Affine) -> bytes:
        """The bytes of the ``k``-th chip's GeoTIFF, georeferenced by ``transform``."""
        tiles = [[data[a:b] for a, b in ranges[k]] for ranges in self.tiles]
        file = bytearray(self.head)
        _set_tiles(file, self.places, tiles)
        value = self.georeference(transform)
        file[self.georeference_at : self.georeference_at + len(value)] = value
        return b"".join([file, *(tile for image in tiles for tile in image)])


def read_ifds(data) -> list[Entries]:
    """The tags of every image (IFD) of a classic little-endian TIFF, in file order."""
    if bytes(data[:4]) != b"II*\x00":
        raise UnexpectedLayout("not a classic little-endian TIFF")
    (offset,) = struct.unpack_from("<I", data, 4)
    images = []
    while offset:
        (count,) = struct.unpack_from("<H", data, offset)
        entries = {}
        for i in range(count):
            at = offset + 2 + 12 * i
            tag, kind, n, value = struct.unpack_from("<HHII", data, at)
            if kind not in TYPE_SIZES:
                raise UnexpectedLayout(f"tag {tag} has field type {kind}")
            length = TYPE_SIZES[kind] * n
            start = at + 8 if length <= 4 else value
            entries[tag] = (kind, n, bytes(data[start : start + length]))
        images.append(entries)
        (offset,) = struct.unpack_from("<I", data, offset + 2 + 12 * count)
    return images


def _values(entry: tuple[int, int, bytes]) -> tuple:
    """The numbers of a SHORT, LONG or DOUBLE entry."""
    kind, n, raw = entry
    formats = {SHORT: "H", LONG: "I", DOUBLE: "d"}
    if kind not in formats:
        raise UnexpectedLayout(f"unexpected field type {kind}")
    return struct.unpack(f"<{n}{formats[kind]}", raw)


def _tile_ranges(entries: Entries, n: int, size: int) -> list[list[tuple[int, int]]]:
    """Per stacked chip, the byte ranges of its tiles in the file, in its own tile order.

    Each band plane (one plane when bands are interleaved by pixel) holds the chips' tiles
    one chip after the other, because the tiles are as wide as a chip or divide it.
    """
    block = _values(entries[TILE_WIDTH])[0]
    if size % block or _values(entries[TILE_LENGTH])[0] != block:
        raise UnexpectedLayout("tiles do not divide the chips")
    bands = _values(entries.get(SAMPLES_PER_PIXEL, (SHORT, 1, b"\1\0")))[0]
    by_band = _values(entries.get(PLANAR_CONFIG, (SHORT, 1, b"\1\0")))[0] == 2
    offsets, counts = _values(entries[TILE_OFFSETS]), _values(entries[TILE_BYTE_COUNTS])
    per_chip, planes = (size // block) ** 2, bands if by_band else 1
    if len(offsets) != planes * n * per_chip or not all(counts):
        raise UnexpectedLayout("missing tiles")
    ranges = [(o, o + c) for o, c in zip(offsets, counts)]
    return [
        [ranges[(p * n + k) * per_chip + j] for p in range(planes) for j in range(per_chip)]
        for k in range(n)
    ]


def _georeference(entries: Entries, first: Affine):
    """The georeferencing tag and a function from a chip's transform to its value bytes,
    after checking that GDAL encoded ``first`` (the first chip's) as expected: a tie point at
    the origin of pixel (0, 0) with a pixel scale, or a full transformation matrix."""
    if TIEPOINT in entries and PIXEL_SCALE in entries and TRANSFORMATION not in entries:
        tie = _values(entries[TIEPOINT])
        if len(tie) != 6 or tie[:3] != (0, 0, 0) or tie[3:5] != (first.c, first.f):
            raise UnexpectedLayout("the tie point is not the chip origin")
        return TIEPOINT, lambda t: struct.pack("<6d", 0, 0, 0, t.c, t.f, tie[5])
    if TRANSFORMATION in entries and TIEPOINT not in entries:
        matrix = list(_values(entries[TRANSFORMATION]))
        if len(matrix) != 16 or (matrix[3], matrix[7]) != (first.c, first.f):
            raise UnexpectedLayout("the transformation does not hold the chip origin")

        def pack(t: Affine) -> bytes:
            matrix[3], matrix[7] = t.c, t.f
            return struct.pack("<16d", *matrix)

        return TRANSFORMATION, pack
    raise UnexpectedLayout("georeferencing of an unexpected kind")


def _chip_entries(entries: Entries, size: int, tiles: int) -> Entries:
    """A stacked image's tags for one chip of ``size`` px in ``tiles`` tiles, with room for
    their offsets and byte counts (set per chip)."""
    room = (LONG, tiles, bytes(4 * tiles))
    height = (LONG, 1, struct.pack("<I", size))
    return entries | {IMAGE_LENGTH: height, TILE_OFFSETS: room, TILE_BYTE_COUNTS: room}


def _header(images: Sequence[Entries]) -> tuple[bytes, list[dict[int, int]]]:
    """A chip file up to its tiles (the TIFF header and an IFD per image, each followed by
    its values too long for an entry), and per image the file position of each tag's value."""
    head = bytearray(b"II*\x00" + struct.pack("<I", HEADER))
    places = []
    for k, entries in enumerate(images):
        at = len(head)
        following = at + _ifd_length(entries) if k + 1 < len(images) else 0
        ifd, where = _ifd_bytes(entries, at, following)
        head += ifd
        places.append(where)
    return bytes(head), places


def _set_tiles(file: bytearray, places: list[dict[int, int]], tiles: list[list]) -> None:
    """Write each image's tile offsets (its tiles follow the header, image after image) and
    byte counts into a chip's header."""
    at = len(file)
    for where, image_tiles in zip(places, tiles):
        counts = [len(t) for t in image_tiles]
        offsets = (at + np.cumsum(counts) - counts).tolist()
        struct.pack_into(f"<{len(counts)}I", file, where[TILE_OFFSETS], *offsets)
        struct.pack_into(f"<{len(counts)}I", file, where[TILE_BYTE_COUNTS], *counts)
        at += sum(counts)


def _ifd_length(entries: Entries) -> int:
    """Bytes of an IFD with the values that do not fit in its entries."""
    outside = sum(_even(len(raw)) for _, _, raw in entries.values() if len(raw) > 4)
    return 2 + 12 * len(entries) + 4 + outside


def _ifd_bytes(entries: Entries, at: int, following: int) -> tuple[bytes, dict[int, int]]:
    """An IFD written at file offset ``at``, its long values right after it, and the file
    position of each tag's value."""
    tags = sorted(entries)
    head = bytearray(struct.pack("<H", len(tags)))
    extra = bytearray()
    values_at = at + 2 + 12 * len(tags) + 4
    where = {}
    for tag in tags:
        kind, count, raw = entries[tag]
        if len(raw) <= 4:
            where[tag] = at + len(head) + 8
            head += struct.pack("<HHI", tag, kind, count) + raw.ljust(4, b"\0")
        else:
            where[tag] = values_at + len(extra)
            head += struct.pack("<HHII", tag, kind, count, where[tag])
            extra += raw.ljust(_even(len(raw)), b"\0")
    return bytes(head + struct.pack("<I", following) + extra), where


def _even(length: int) -> int:
    return length + length % 2
