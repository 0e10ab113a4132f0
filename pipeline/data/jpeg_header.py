"""A plain JPEG's size and EXIF orientation, read from its header without Pillow.

Every image's header is read before it is decoded (:func:`.decode.probe`),
in Python, on the one thread that feeds the decoders: through Pillow that
took 0.09 ms an image, here about 0.015 (BENCHMARKS.md). This reader
answers only for plain JPEGs, where Pillow's answer is sure to be the same,
and says None for anything else, which the caller then gives to Pillow:
fill bytes, frames other than baseline, extended or progressive, a segment
past the file's end, a second frame or EXIF block, an MPO index, a
Photoshop block, segments Pillow's parser fails on; in the EXIF directory,
a type Pillow does not read, a repeated tag, a value past the block's end,
a resolution Pillow may fail to read, or an orientation that is not one
SHORT; and, when the EXIF gives no orientation, any other APP1 segment
(Pillow takes an orientation from XMP). A differential test holds the
reader to Pillow's answer on thousands of damaged headers.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_FRAMES = frozenset({0xC0, 0xC1, 0xC2})  # SOF0-2: what cameras and encoders write
_SKIPPED = frozenset({0xC4, 0xDD, 0xFE})  # DHT, DRI, COM: nothing in them is read
_DQT, _SOS = 0xDB, 0xDA
_EXIF = b"Exif\0\0"
_ORIENTATION, _X_RESOLUTION, _RESOLUTION_UNIT = 0x0112, 0x011A, 0x0128
# Bytes per value of the TIFF types Pillow reads, BYTE to DOUBLE (the rarer IFD and LONG8 are declined).
_UNIT = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}


@dataclass(frozen=True)
class Header:
    """What a JPEG's header says: its size, and its EXIF orientation (1 when it gives none)."""

    width: int
    height: int
    orientation: int = 1


class _NotPlain(Exception):
    """Something here is not plain: Pillow decides."""


def read(data: bytes, exif: bool = True) -> Header | None:
    """The header of a plain JPEG (None: not one; ask Pillow).

    Args:
        exif: read the EXIF orientation; False leaves it 1.
    """
    try:
        width, height, exif_block, other_app1 = _segments(data)
        # Read even when unused: Pillow reads this block as it opens the file, and fails on some.
        orientation = _orientation(exif_block[len(_EXIF):]) if exif_block is not None else None
    except (_NotPlain, struct.error):
        return None
    if not exif:
        return Header(width, height)
    if orientation is None and other_app1:
        return None
    return Header(width, height, 1 if orientation is None else orientation)


def _segments(data: bytes) -> tuple[int, int, bytes | None, bool]:
    """The frame's size, the EXIF segment, and whether another APP1 segment (XMP, perhaps) came."""
    if not data.startswith(b"\xff\xd8\xff"):
        raise _NotPlain
    pos, end = 2, len(data)
    size, exif_block, other_app1 = None, None, False
    while True:
        if pos + 4 > end or data[pos] != 0xFF:
            raise _NotPlain
        marker, length = data[pos + 1], (data[pos + 2] << 8) | data[pos + 3]
        stop = pos + 2 + length
        if length < 2 or stop > end:
            raise _NotPlain
        if marker == _SOS:
            break
        segment = data[pos + 4:stop]
        if marker in _FRAMES and size is None and _frame_ok(segment):
            size = struct.unpack_from(">HH", segment, 1)[::-1]
        elif 0xE0 <= marker <= 0xEF and _app_ok(marker, segment):
            if marker == 0xE1 and segment.startswith(_EXIF):
                if exif_block is not None:
                    raise _NotPlain
                exif_block = segment
            elif marker == 0xE1:
                other_app1 = True
        elif not (marker in _SKIPPED or (marker == _DQT and _tables_ok(segment))):
            raise _NotPlain
        pos = stop
    if size is None or min(size) <= 0:
        raise _NotPlain
    return *size, exif_block, other_app1


def _frame_ok(segment: bytes) -> bool:
    """8-bit samples, 1, 3 or 4 components, and whole 3-byte component entries."""
    return (len(segment) >= 6 and segment[0] == 8 and segment[5] in (1, 3, 4)
            and (len(segment) - 6) % 3 == 0)


def _app_ok(marker: int, segment: bytes) -> bool:
    """Whether Pillow reads this application segment without failing or taking the file for an MPO."""
    if marker in (0xE0, 0xEE) and segment.startswith((b"JFIF", b"Adobe")):
        return len(segment) >= 7  # their version field
    if marker == 0xE2:
        if segment.startswith(b"MPF\0"):
            return False
        return not segment.startswith(b"ICC_PROFILE\0") or len(segment) >= 14
    return not (marker == 0xED and segment.startswith(b"Photoshop 3.0\0"))


def _tables_ok(segment: bytes) -> bool:
    """Quantisation tables that fill the segment exactly (8- or 16-bit, 64 values each)."""
    at = 0
    while at < len(segment):
        at += 1 + (64 if segment[at] < 16 else 128)
    return at == len(segment)


def _orientation(tiff: bytes) -> int | None:
    """The orientation in an EXIF block's first directory (None: it gives none)."""
    order = {b"II*\0": "<", b"MM\0*": ">"}.get(tiff[:4])
    if order is None:
        raise _NotPlain
    # A block cut short anywhere raises struct.error: the caller declines it.
    (first,) = struct.unpack_from(order + "L", tiff, 4)
    (count,) = struct.unpack_from(order + "H", tiff, first)
    seen, found, x_resolution = set(), None, None
    for at in range(first + 2, first + 2 + 12 * count, 12):
        tag, kind, n, value = struct.unpack_from(order + "HHL4s", tiff, at)
        if tag in seen or kind not in _UNIT:  # which value of a repeated tag counts is Pillow's
            raise _NotPlain
        seen.add(tag)
        size = n * _UNIT[kind]
        # A value stored elsewhere in the block must be there: Pillow stops reading at one that is not.
        if size > 4 and struct.unpack(order + "L", value)[0] + size > len(tiff):
            raise _NotPlain
        if tag == _ORIENTATION:
            if (kind, n) != (3, 1):
                raise _NotPlain
            (found,) = struct.unpack_from(order + "H", value)
        elif tag == _X_RESOLUTION:
            x_resolution = (kind, n)
    # Pillow reads the resolution as it opens a JPEG; one RATIONAL is all it is sure to read.
    if _RESOLUTION_UNIT in seen and x_resolution not in (None, (5, 1)):
        raise _NotPlain
    return found
