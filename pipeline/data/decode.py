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

import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from PIL import Image

from ..config import MAX_PIXELS

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
    """

    size: int
    mode: str = "auto"
    orientation: str = "exif"
    max_pixels: int = MAX_PIXELS

    @classmethod
    def of_view(cls, key: dict, size: int) -> "Decoding":
        """The decoding a view was made with (views without an orientation setting ignored it)."""
        return cls(size, key["decode"], key.get("orientation", "ignore"),
                   key.get("max_pixels", MAX_PIXELS))


@dataclass(frozen=True)
class Probe:
    """What a file's header says: its EXIF orientation (1-8), whether Pillow
    decodes it, and why it is refused (None: it is not)."""

    orientation: int = 1
    pillow: bool = False
    refused: str | None = None


def probe(path: str, decoding: Decoding) -> Probe:
    """Read one file's header; no pixel is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
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
    upright = orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else 1
    return Probe(upright, form not in _NATIVE)


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


def _pillow_pixels(path) -> np.ndarray:
    """The first frame of any image Pillow reads, as uint8 RGB."""
    path = path.numpy().decode() if isinstance(path, tf.Tensor) else path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))


def _upright(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """Apply an EXIF orientation (1-8) as Pillow's ``ImageOps.exif_transpose`` does."""
    turns = [
        lambda: image,
        lambda: tf.image.flip_left_right(image),
        lambda: tf.image.rot90(image, 2),
        lambda: tf.image.flip_up_down(image),
        lambda: tf.image.transpose(image),
        lambda: tf.image.rot90(image, 3),
        lambda: tf.image.rot90(tf.image.transpose(image), 2),
        lambda: tf.image.rot90(image, 1),
    ]
    return tf.switch_case(tf.clip_by_value(orientation - 1, 0, 7), turns)


def _load(path: tf.Tensor, orientation: tf.Tensor, pillow: tf.Tensor, decoding: Decoding) -> tf.Tensor:
    def with_pillow():
        return tf.py_function(_pillow_pixels, [path], tf.uint8)

    def with_tensorflow():
        return _native(tf.io.read_file(path), decoding.size, decoding.mode)

    image = tf.cond(pillow, with_pillow, with_tensorflow)
    image.set_shape([None, None, 3])
    image = _upright(image, orientation)
    return tf.image.resize(image, (decoding.size, decoding.size), method="bilinear")


def load_image(path: str, decoding: Decoding) -> tf.Tensor:
    """One image, eagerly, exactly as the pipelines decode it: (size, size, 3) float32.

    Raises:
        ValueError: the image is over the pixel budget.
        tf.errors.OpError: the decoder rejects it.
    """
    found = probe(path, decoding)
    if found.refused:
        raise ValueError(found.refused)
    return _load(tf.constant(path), tf.constant(found.orientation), tf.constant(found.pillow), decoding)


_PROBED = (tf.TensorSpec((None,), tf.int64), tf.TensorSpec((None,), tf.string),
           tf.TensorSpec((None,), tf.int32), tf.TensorSpec((None,), tf.bool))
_PROBE_BLOCK = 64


def image_batches(paths: Sequence[str], indices: Sequence[int], decoding: Decoding,
                  batch_size: int) -> tf.data.Dataset:
    """Batches of ``(indices, images)``; unreadable and refused images are dropped.

    The index travels with each image, so whoever consumes the batches can
    tell which images were dropped and quarantine them (see :func:`why_unreadable`)
    without decoding anything twice on the fast path.

    Headers are probed in tf.data's own thread, a few images ahead of the
    decoders, so probing overlaps the forward pass rather than delaying it.
    Decoding runs on one thread per core, two batches ahead, with tf.data's
    autotuning off: beside OpenVINO, which keeps the cores busy, the
    autotuner at times settled on too little parallelism and the whole loop
    ran at about half speed for the rest of the run (see BENCHMARKS.md).
    """
    pairs = list(zip(indices, paths))

    def probed():  # in blocks: one Python call into tf.data per block, not per image
        for start in range(0, len(pairs), _PROBE_BLOCK):
            block = [(i, p, probe(p, decoding)) for i, p in pairs[start:start + _PROBE_BLOCK]]
            kept = [(i, p, f.orientation, f.pillow) for i, p, f in block if f.refused is None]
            if kept:
                yield tuple(np.asarray(column) for column in zip(*kept))

    ds = tf.data.Dataset.from_generator(probed, output_signature=_PROBED).unbatch()
    ds = ds.map(
        lambda i, p, o, pil: (i, _load(p, o, pil, decoding)),
        num_parallel_calls=len(os.sched_getaffinity(0)),
        deterministic=True,
    )
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.ignore_errors().batch(batch_size).prefetch(2).with_options(options)


def labelled_batches(paths: Sequence[str], labels: Sequence[int], decoding: Decoding,
                     batch_size: int, shuffle_seed: int | None = None) -> tf.data.Dataset:
    """Batches of ``(images, labels)`` for training; reshuffled every epoch when seeded.

    Only images that decoded at extraction are given (their bytes are checked
    against the cache first), so none is dropped here and the number of
    batches is known, as Keras wants for its epochs.
    """
    found = [probe(p, decoding) for p in paths]
    ds = tf.data.Dataset.from_tensor_slices((
        tf.constant(list(paths)), tf.constant([f.orientation for f in found], tf.int32),
        tf.constant([f.pillow for f in found], tf.bool), tf.constant(list(labels), tf.int32)))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(paths), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda p, o, pil, label: (_load(p, o, pil, decoding), label),
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def why_unreadable(path: str, decoding: Decoding, found: Probe | None = None) -> str:
    """The reason one image is refused or rejected by its decoder (eager, slow path).

    Args:
        found: its header's :func:`probe`, when the caller has it already.
    """
    found = probe(path, decoding) if found is None else found
    if found.refused:
        return found.refused
    try:
        if found.pillow:
            _pillow_pixels(path)
        else:
            _load(tf.constant(path), tf.constant(found.orientation), tf.constant(False), decoding)
    except (tf.errors.OpError, ValueError) as exc:
        message = getattr(exc, "message", None) or str(exc)
        # Drop TensorFlow's "{{function_node ...}}" prefix and "[Op:...]" suffix.
        message = re.sub(r"\{\{[^}]*\}\}|\[Op:.*", "", message).strip()
        return (message.splitlines() or [type(exc).__name__])[0][:300]
    except Exception as exc:  # noqa: BLE001 - whatever Pillow raises is the reason
        return f"{type(exc).__name__}: {exc}"[:300]
    return "dropped by the decoding pipeline"
