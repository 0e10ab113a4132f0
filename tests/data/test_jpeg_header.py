"""The JPEG header reader gives Pillow's answer, or none: on photos, on every orientation, on damage."""

import io
import struct

import numpy as np
import pytest
from PIL import Image

from pipeline.data import jpeg_header
from pipeline.data.decode import Decoding, _pillow_probe, probe

EXIF_MODES = [Decoding(224, orientation="exif"), Decoding(224, orientation="ignore")]


def _jpeg(**save) -> bytes:
    rng = np.random.default_rng(0)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(out, "JPEG", **save)
    return out.getvalue()


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def _tiff(order: str, entries: list[tuple[int, int, int, bytes]]) -> bytes:
    """An EXIF block: one directory of (tag, type, count, value) entries, values over 4 bytes after it."""
    head = (b"II*\0" if order == "<" else b"MM\0*") + struct.pack(order + "L", 8)
    extra_at = 8 + 2 + 12 * len(entries) + 4
    table, extra = b"", b""
    for tag, kind, count, value in entries:
        if len(value) > 4:
            table += struct.pack(order + "HHLL", tag, kind, count, extra_at + len(extra))
            extra += value
        else:
            table += struct.pack(order + "HHL", tag, kind, count) + value.ljust(4, b"\0")
    return head + struct.pack(order + "H", len(entries)) + table + struct.pack(order + "L", 0) + extra


def _camera_exif(order: str, orientation: int | None) -> bytes:
    """What a camera writes: make, orientation, resolution (out of line) and its unit."""
    entries = [(0x010F, 2, 6, b"Maker\0")]
    if orientation is not None:
        entries.append((0x0112, 3, 1, struct.pack(order + "H", orientation)))
    entries += [(0x011A, 5, 1, struct.pack(order + "LL", 72, 1)), (0x0128, 3, 1, struct.pack(order + "H", 2))]
    return b"Exif\0\0" + _tiff(order, entries)


def _with(data: bytes, *segments: bytes) -> bytes:
    """A JPEG with segments put right after its start-of-image marker."""
    return data[:2] + b"".join(segments) + data[2:]


def _xmp(orientation: int) -> bytes:
    return _segment(0xE1, b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta><rdf:Description "
                          b'tiff:Orientation="%d"/></x:xmpmeta>' % orientation)


def _seeds() -> dict[str, bytes]:
    plain, progressive = _jpeg(), _jpeg(progressive=True, icc_profile=b"\0" * 300)
    return {
        "plain": plain,
        "progressive with an ICC profile": progressive,
        "EXIF written by Pillow": _jpeg(exif=_pillow_exif(6)),
        "camera EXIF, little-endian": _with(plain, _segment(0xE1, _camera_exif("<", 8))),
        "camera EXIF, big-endian, and XMP": _with(progressive, _segment(0xE1, _camera_exif(">", 3)), _xmp(5)),
    }


def _pillow_exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def _agree(data: bytes, decoding: Decoding) -> bool:
    """The reader declines, or what probe makes of its answer is what Pillow makes of the file."""
    if jpeg_header.read(data, decoding.orientation == "exif") is None:
        return True
    return probe(data, decoding) == _pillow_probe(data, decoding)


@pytest.mark.parametrize("name", list(_seeds()))
@pytest.mark.parametrize("decoding", EXIF_MODES, ids=lambda d: d.orientation)
def test_plain_jpegs_are_read_without_pillow_and_as_pillow_reads_them(name, decoding):
    data = _seeds()[name]
    header = jpeg_header.read(data, decoding.orientation == "exif")
    assert header is not None and (header.width, header.height) == (64, 48)
    assert probe(data, decoding) == _pillow_probe(data, decoding)


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("orientation", [*range(1, 9), 0, 9])
def test_each_orientation_in_either_byte_order(order, orientation):
    data = _with(_jpeg(), _segment(0xE1, _camera_exif(order, orientation)))
    assert jpeg_header.read(data).orientation == orientation
    assert jpeg_header.read(data, exif=False).orientation == 1
    for decoding in EXIF_MODES:
        assert probe(data, decoding) == _pillow_probe(data, decoding)
    assert probe(data, EXIF_MODES[0]).orientation == (orientation if 1 <= orientation <= 8 else 1)


@pytest.mark.parametrize("why, data", [
    ("an orientation only in XMP", lambda: _with(_jpeg(), _xmp(6))),
    ("an EXIF block without one, and XMP", lambda: _with(_jpeg(), _segment(0xE1, _camera_exif("<", None)),
                                                          _xmp(6))),
    ("two EXIF blocks", lambda: _with(_jpeg(), *[_segment(0xE1, _camera_exif("<", 6))] * 2)),
    ("an MPO index", lambda: _with(_jpeg(), _segment(0xE2, b"MPF\0" + _tiff("<", [])))),
    ("a fill byte before a marker", lambda: _jpeg()[:2] + b"\xff" + _jpeg()[2:]),
    ("an orientation that is a LONG", lambda: _with(_jpeg(), _segment(0xE1, b"Exif\0\0" + _tiff(
        "<", [(0x0112, 4, 1, struct.pack("<L", 6))])))),
    ("a value past the block's end", lambda: _with(_jpeg(), _segment(0xE1, b"Exif\0\0" + _tiff(
        "<", [(0x010F, 2, 6, b"Maker\0"), (0x0112, 3, 1, struct.pack("<H", 6))])[:-3]))),
    ("an orientation given twice", lambda: _with(_jpeg(), _segment(0xE1, b"Exif\0\0" + _tiff(
        "<", [(0x0112, 3, 1, struct.pack("<H", 3)), (0x0112, 3, 1, struct.pack("<H", 6))])))),
    ("a resolution Pillow fails to read", lambda: _with(_jpeg(), _segment(0xE1, b"Exif\0\0" + _tiff(
        "<", [(0x0112, 3, 1, struct.pack("<H", 6)), (0x011A, 2, 1, b"\0"), (0x0128, 3, 1, b"\2\0")])))),
    ("a directory running past its block", lambda: _with(_jpeg(), _segment(0xE1, _camera_exif("<", 6)[:30]))),
    ("a value of a type Pillow does not read", lambda: _with(_jpeg(), _segment(0xE1, b"Exif\0\0" + _tiff(
        "<", [(0x0112, 3, 1, struct.pack("<H", 6)), (0x9999, 99, 1, b"\0")])))),
    ("a frame with a partial component entry", lambda: _frame_grown(_jpeg(), b"\0")),
    ("a frame of no rows", lambda: _frame_rows(_jpeg(), 0)),
    ("a JFIF segment cut short", lambda: _with(_jpeg(), _segment(0xE0, b"JFIF\0"))),
    ("an ICC profile segment cut short", lambda: _with(_jpeg(), _segment(0xE2, b"ICC_PROFILE\0\1"))),
    ("a Photoshop block cut short", lambda: _with(_jpeg(), _segment(0xED, b"Photoshop 3.0\x008BIM\4\4"))),
    ("a PNG", lambda: _png_bytes()),
])
def test_what_is_not_plain_is_left_to_pillow(why, data):
    data = data()
    assert jpeg_header.read(data) is None, why
    assert probe(data, EXIF_MODES[0]) == _pillow_probe(data, EXIF_MODES[0])


def test_an_orientation_only_in_xmp_is_still_applied():
    """Pillow reads it; the reader declines, so the probe does too."""
    assert probe(_with(_jpeg(), _xmp(6)), EXIF_MODES[0]).orientation == 6


def _frame_at(data: bytes) -> int:
    return data.index(b"\xff\xc0")


def _frame_grown(data: bytes, extra: bytes) -> bytes:
    """The frame segment with bytes added at its end (and its length grown to match)."""
    at = _frame_at(data)
    length = int.from_bytes(data[at + 2:at + 4], "big")
    return (data[:at + 2] + (length + len(extra)).to_bytes(2, "big") + data[at + 4:at + 2 + length]
            + extra + data[at + 2 + length:])


def _frame_rows(data: bytes, rows: int) -> bytes:
    at = _frame_at(data) + 5  # marker, length, precision: then the rows
    return data[:at] + rows.to_bytes(2, "big") + data[at + 2:]


def _png_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "PNG")
    return out.getvalue()


def _header_end(data: bytes) -> int:
    """Where the entropy-coded data starts: damage past it changes no header."""
    return data.index(b"\xff\xda") + 2 + int.from_bytes(data[data.index(b"\xff\xda") + 2:][:2], "big")


def test_damaged_headers_get_pillows_answer_or_none():
    """Bytes changed, cut, put in or taken out of a header: the reader never answers otherwise than Pillow."""
    rng = np.random.default_rng(7)
    seeds = list(_seeds().values())
    answered = declined = 0
    for trial in range(2500):
        data = bytearray(seeds[trial % len(seeds)])
        end = _header_end(bytes(data))
        at = int(rng.integers(2, end))
        kind = trial % 5
        if kind <= 1:  # one or two bytes changed
            for _ in range(kind + 1):
                data[int(rng.integers(2, end))] = int(rng.integers(0, 256))
        elif kind == 2:  # a likely length or count byte set to an edge value
            data[at] = int(rng.choice([0, 1, 2, 0x7F, 0x80, 0xFE, 0xFF]))
        elif kind == 3:
            data = data[:at] + bytes([int(rng.integers(0, 256))]) + data[at:]
        else:
            data = data[:at] if trial % 2 else data[:at] + data[at + 1:]
        data = bytes(data)
        for decoding in EXIF_MODES:
            assert _agree(data, decoding), (trial, data[:end + 4].hex())
        if jpeg_header.read(data) is None:
            declined += 1
        else:
            answered += 1
    # The damage both reached the reader's answers and made it decline.
    assert answered > 500 and declined > 500, (answered, declined)
