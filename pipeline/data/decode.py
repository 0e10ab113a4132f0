"""Decode and resize images in a parallel, prefetched ``tf.data`` pipeline.

Pixels come out as float32 in 0-255, resized (bilinear, no crop) to a square,
exactly as ``keras.utils.image_dataset_from_directory`` produces them; each
backbone model applies its own preprocessing on top.

Before anything is decoded, each file's header is read with Pillow
(:func:`probe`): an image that claims more pixels than the budget is
refused there, the EXIF orientation is taken from it, and formats that
TensorFlow cannot decode (WebP, TIFF, ...) are marked for Pillow. JPEG,
PNG, GIF and BMP never leave TensorFlow's own decoders.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from PIL import Image

from ..config import MAX_PIXELS
from . import allocator, jpeg_header
from .files import CHANGED, MAX_FILE_BYTES, Refused, fingerprint_bytes, read_bytes, unreadable_reason

# Reduced-scale JPEG decoding happens in the DCT domain, so a 1/8 decode costs
# a fraction of a full one. Only ratios that keep the short side at or above
# the target size are used: the resize then only ever shrinks.
_JPEG_RATIOS = (8, 4, 2)

# Formats TensorFlow decodes itself; Pillow decodes the rest. MPO is a JPEG.
_NATIVE = frozenset({"JPEG", "MPO", "PNG", "GIF", "BMP"})
# Formats whose EXIF block is in the header, so reading it decodes no pixels.
# (Pillow turns a TIFF upright by its orientation tag itself, as it opens it.)
_EXIF_IN_HEADER = frozenset({"JPEG", "MPO", "WEBP"})
_ORIENTATION_TAG = 0x0112


@dataclass(frozen=True)
class Decoding:
    """How files become pixels: the decode settings of a feature spec.

    Attributes:
        size: output side in pixels.
        mode: "auto" (large JPEGs at reduced scale) or "full".
        orientation: "exif" (turn photos upright, as viewers show them) or
            "ignore" (the stored pixels as they are; Pillow turns TIFFs
            upright whatever this says).
        max_pixels: images whose header claims more pixels are refused
            before they are decoded.
        max_file_bytes: larger files are refused by their ``stat``, unread.
    """

    size: int
    mode: str = "auto"
    orientation: str = "exif"
    max_pixels: int = MAX_PIXELS
    max_file_bytes: int = MAX_FILE_BYTES

    @classmethod
    def of_view(cls, key: dict, size: int) -> "Decoding":
        """The decoding a view was made with (views without an orientation setting ignored it)."""
        return cls(size, key["decode"], key.get("orientation", "ignore"),
                   key.get("max_pixels", MAX_PIXELS), key.get("max_file_bytes", MAX_FILE_BYTES))


# Which decoder an image goes to, chosen from its header in Python so that the
# graph runs one switch per image instead of a chain of conditions: JPEG at
# full scale or at 1/2, 1/4, 1/8 (the ratios of _JPEG_RATIOS, in order), any
# other format TensorFlow decodes, a header Pillow could not read (TensorFlow
# looks at the bytes itself, and its decoder says why when it fails), Pillow.
_JPEG_SCALES = (1, *sorted(_JPEG_RATIOS))  # route i decodes a JPEG at 1/_JPEG_SCALES[i]
OTHER_NATIVE, UNKNOWN, PILLOW = range(len(_JPEG_SCALES), len(_JPEG_SCALES) + 3)


@dataclass(frozen=True)
class Probe:
    """What a file's header says: its EXIF orientation (1-8), which decoder
    takes it (a route, above), and why it is refused (None: it is not)."""

    orientation: int = 1
    route: int = UNKNOWN
    refused: str | None = None

    @property
    def pillow(self) -> bool:
        return self.route == PILLOW


def _jpeg_ratio(width: int, height: int, decoding: Decoding) -> int:
    """The reduced scale a JPEG is decoded at: the largest that keeps its short side >= size."""
    if decoding.mode != "auto":
        return 1
    short = min(width, height)
    return next((r for r in _JPEG_RATIOS if short >= r * decoding.size), 1)


def probe(data: bytes, decoding: Decoding) -> Probe:
    """Read one image's header from its bytes; no pixel is decoded.

    A plain JPEG's header is read by :mod:`.jpeg_header`, in a fraction of
    Pillow's time and with Pillow's answer; any other file by Pillow.
    """
    header = jpeg_header.read(data, exif=decoding.orientation == "exif")
    # A header over the budget, or over what Pillow reads at all, is Pillow's to refuse.
    if header is not None and header.width * header.height <= min(
            decoding.max_pixels, Image.MAX_IMAGE_PIXELS or decoding.max_pixels):
        return Probe(_valid(header.orientation),
                     _JPEG_SCALES.index(_jpeg_ratio(header.width, header.height, decoding)))
    return _pillow_probe(data, decoding)


def _valid(orientation) -> int:
    """An EXIF orientation as given, or 1 for a value that is none of the eight."""
    return orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else 1


def _pillow_probe(data: bytes, decoding: Decoding) -> Probe:
    """:func:`probe` through Pillow, for any format it reads."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                form = image.format
                orientation = 1
                if decoding.orientation == "exif" and form in _EXIF_IN_HEADER:
                    orientation = image.getexif().get(_ORIENTATION_TAG, 1)
    except Image.DecompressionBombError:  # over twice Pillow's limit: it gives no size
        return Probe(refused=_over_budget(f"more than {2 * Image.MAX_IMAGE_PIXELS} pixels",
                                          decoding.max_pixels))
    except Exception:  # noqa: BLE001 - Pillow raises many types; TensorFlow's decoder then says why
        return Probe()
    if width * height > decoding.max_pixels:
        return Probe(refused=_over_budget(f"{width} x {height} = {width * height} pixels",
                                          decoding.max_pixels))
    if form in ("JPEG", "MPO"):
        return Probe(_valid(orientation), _JPEG_SCALES.index(_jpeg_ratio(width, height, decoding)))
    return Probe(_valid(orientation), OTHER_NATIVE if form in _NATIVE else PILLOW)


def _over_budget(claim: str, budget: int) -> str:
    fix = ("Fix: raise `max_pixels` to decode such images." if budget < 2 * Image.MAX_IMAGE_PIXELS
           else "Pillow reads no larger image.")
    return f"its header claims {claim}, more than the pixel budget `max_pixels` = {budget}. {fix}"


def _native(contents: tf.Tensor, size: int, mode: str) -> tf.Tensor:
    """JPEG/PNG/BMP/GIF (first frame) bytes to uint8 (height, width, 3)."""

    def full_jpeg():
        return tf.io.decode_jpeg(contents, channels=3)

    def jpeg():
        if mode != "auto":
            return full_jpeg()
        shape = tf.image.extract_jpeg_shape(contents)
        short = tf.minimum(shape[0], shape[1])
        cases = [
            (short >= ratio * size, lambda r=ratio: tf.io.decode_jpeg(contents, channels=3, ratio=r))
            for ratio in _JPEG_RATIOS
        ]
        return tf.case(cases, default=full_jpeg, exclusive=False)

    def other():
        return tf.io.decode_image(contents, channels=3, expand_animations=False)

    return tf.cond(tf.io.is_jpeg(contents), jpeg, other)


def _pillow_pixels(data) -> np.ndarray:
    """The first frame of any image Pillow reads, as uint8 RGB."""
    data = data.numpy() if isinstance(data, tf.Tensor) else data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))


# Each EXIF orientation (1-8) as Pillow's ``ImageOps.exif_transpose`` applies it:
# whether to transpose, then flip up-down, then flip left-right.
_ORIENTATIONS = np.array([[0, 0, 0], [0, 0, 0], [0, 0, 1], [0, 1, 1], [0, 1, 0],
                          [1, 0, 0], [1, 0, 1], [1, 1, 1], [1, 1, 0]], bool)


def _upright(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """Apply an EXIF orientation by moving pixels, with no branch in the graph."""
    turn = tf.gather(tf.constant(_ORIENTATIONS), tf.clip_by_value(orientation, 1, 8))
    transpose, up_down, left_right = tf.unstack(turn)
    image = tf.transpose(image, tf.where(transpose, [1, 0, 2], [0, 1, 2]))
    return tf.reverse(image, tf.boolean_mask([0, 1], tf.stack([up_down, left_right])))


def _load(contents: tf.Tensor, orientation: tf.Tensor, route: tf.Tensor,
          decoding: Decoding) -> tf.Tensor:
    """An image's bytes to (size, size, 3) float32 pixels, through the decoder of its route."""
    def jpeg(ratio: int):
        return lambda: tf.io.decode_jpeg(contents, channels=3, ratio=ratio)

    decoders = [*(jpeg(r) for r in _JPEG_SCALES),  # in route order: OTHER_NATIVE, UNKNOWN, PILLOW follow
                lambda: tf.io.decode_image(contents, channels=3, expand_animations=False),
                lambda: _native(contents, decoding.size, decoding.mode),
                lambda: tf.py_function(_pillow_pixels, [contents], tf.uint8)]
    image = tf.switch_case(route, decoders)
    # Most photos are stored upright: moving their pixels anyway cost about a seventh of the
    # decoding rate (see BENCHMARKS.md). Orientations 0 and 1 leave an image as it is.
    image = tf.cond(orientation > 1, lambda: _upright(image, orientation), lambda: image)
    image.set_shape([None, None, 3])
    return tf.image.resize(image, (decoding.size, decoding.size), method="bilinear")


def load_image(path: str, decoding: Decoding) -> tf.Tensor:
    """One image, eagerly, exactly as the pipelines decode it: (size, size, 3) float32.

    Raises:
        ValueError: the file is refused (see :mod:`.files`) or over the pixel budget.
        OSError: it cannot be read.
        tf.errors.OpError: the decoder rejects it.
    """
    data = read_bytes(path, decoding.max_file_bytes)
    found = probe(data, decoding)
    if found.refused:
        raise ValueError(found.refused)
    return _load(tf.constant(data), tf.constant(found.orientation), tf.constant(found.route), decoding)


_BATCHED = (tf.TensorSpec((None,), tf.int64), tf.TensorSpec((None,), tf.string),
            tf.TensorSpec((None,), tf.int32), tf.TensorSpec((None,), tf.int32))
_BLOCK = 64  # images per Python call into tf.data (one call per image cost a quarter of the rate)
_BLOCK_BYTES = 64 * 2**20  # and at most about this many bytes held in one block


def image_batches(paths: Sequence[str], indices: Sequence[int], decoding: Decoding,
                  batch_size: int, expected: Sequence[str] | None = None,
                  refused: dict[int, str] | None = None) -> tf.data.Dataset:
    """Batches of ``(indices, images)``; unreadable and refused images are dropped.

    Each file is read once, in tf.data's own thread a few images ahead of the
    decoders: its bytes are fingerprinted, their header probed and those very
    bytes decoded, so what a row is stored under is what the backbone saw.

    Args:
        expected: each file's fingerprint when it was planned; a file whose
            bytes now differ is refused (:data:`CHANGED`), never decoded.
        refused: filled with index -> why, for files refused before decoding
            (not a regular file, too large, changed, over the pixel budget).
            Images the decoder rejects are dropped without a reason here;
            :func:`why_unreadable` gives it.

    The index travels with each image, so the consumer can tell which were
    dropped. Decoding runs on one thread per core, two batches ahead, with
    tf.data's autotuning off: beside OpenVINO, the autotuner at times settled
    on too little parallelism, and the loop ran at half speed (BENCHMARKS.md).
    """
    refused = {} if refused is None else refused
    jobs = list(zip(indices, paths, expected if expected is not None else [None] * len(paths)))

    def read():
        allocator.keep_freed_memory()  # freed buffers reused: here, after TensorFlow's own setting
        block, held = [], 0
        for i, path, fp in jobs:
            try:
                data = read_bytes(path, decoding.max_file_bytes)
            except Refused as exc:
                refused[i] = str(exc)
                continue
            except OSError as exc:
                refused[i] = unreadable_reason(exc)
                continue
            found = Probe(refused=CHANGED) if fp is not None and fingerprint_bytes(data) != fp else \
                probe(data, decoding)
            if found.refused:
                refused[i] = found.refused
                continue
            block.append((i, data, found.orientation, found.route))
            held += len(data)
            if len(block) == _BLOCK or held >= _BLOCK_BYTES:
                yield _columns(block)
                block, held = [], 0
        if block:
            yield _columns(block)

    # A block is read ahead while the one before it is decoded.
    ds = tf.data.Dataset.from_generator(read, output_signature=_BATCHED).prefetch(1).unbatch()
    ds = ds.map(
        lambda i, data, o, route: (i, _load(data, o, route, decoding)),
        num_parallel_calls=len(os.sched_getaffinity(0)),
        deterministic=True,
    )
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.ignore_errors().batch(batch_size).prefetch(2).with_options(options)


def _columns(block: list[tuple]) -> tuple[np.ndarray, ...]:
    i, data, orientation, route = zip(*block)
    return (np.asarray(i, np.int64), np.asarray(data, dtype=object),
            np.asarray(orientation, np.int32), np.asarray(route, np.int32))


def labelled_batches(paths: Sequence[str], labels: Sequence[int], decoding: Decoding,
                     batch_size: int, shuffle_seed: int | None = None) -> tf.data.Dataset:
    """Batches of ``(images, labels)`` for training; reshuffled every epoch when seeded.

    Only images that decoded at extraction are given (their bytes are checked
    against the cache first), so none is dropped here and the number of
    batches is known, as Keras wants for its epochs.
    """
    allocator.keep_freed_memory()
    found = [probe(read_bytes(p, decoding.max_file_bytes), decoding) for p in paths]
    ds = tf.data.Dataset.from_tensor_slices((
        tf.constant(list(paths)), tf.constant([f.orientation for f in found], tf.int32),
        tf.constant([f.route for f in found], tf.int32), tf.constant(list(labels), tf.int32)))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(paths), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda p, o, route, label: (_load(tf.io.read_file(p), o, route, decoding), label),
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


@dataclass(frozen=True)
class Unreadable:
    """Why an image gives no features.

    Attributes:
        reason: one sentence.
        by_content: the decoder rejected these very bytes, so the reason holds
            for this content wherever it is found; False when a setting (size,
            pixel budget) or the file (changed, unreadable) is the cause.
    """

    reason: str
    by_content: bool


def why_unreadable(path: str, decoding: Decoding, expected: str | None = None) -> Unreadable:
    """The reason one image is refused or rejected by its decoder (eager, slow path).

    Args:
        expected: the fingerprint the image was planned under; bytes that
            differ now are "changed", not a property of that content.
    """
    try:
        data = read_bytes(path, decoding.max_file_bytes)
    except Refused as exc:
        return Unreadable(str(exc), False)
    except OSError as exc:
        return Unreadable(unreadable_reason(exc), False)
    if expected is not None and fingerprint_bytes(data) != expected:
        return Unreadable(CHANGED, False)
    found = probe(data, decoding)
    if found.refused:
        return Unreadable(found.refused, False)
    try:
        if found.pillow:
            _pillow_pixels(data)
        else:
            _load(tf.constant(data), tf.constant(found.orientation), tf.constant(found.route), decoding)
    except (tf.errors.OpError, ValueError) as exc:
        message = getattr(exc, "message", None) or str(exc)
        # Drop TensorFlow's "{{function_node ...}}" prefix and "[Op:...]" suffix.
        message = re.sub(r"\{\{[^}]*\}\}|\[Op:.*", "", message).strip()
        return Unreadable((message.splitlines() or [type(exc).__name__])[0][:300], True)
    except Exception as exc:  # noqa: BLE001 - whatever Pillow raises is the reason
        return Unreadable(f"{type(exc).__name__}: {exc}"[:300], True)
    # Decoded now, not then: nothing to say about this content for good.
    return Unreadable("dropped by the decoding pipeline", False)
