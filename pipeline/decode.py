"""Decode and resize images in a parallel, prefetched ``tf.data`` pipeline.

Pixels come out as float32 in 0-255, resized (bilinear, no crop) to a square,
exactly as ``keras.utils.image_dataset_from_directory`` produces them; each
backbone model applies its own preprocessing on top.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import tensorflow as tf

# Reduced-scale JPEG decoding happens in the DCT domain, so a 1/8 decode costs
# a fraction of a full one. Only ratios that keep the short side at or above
# the target size are used: the resize then only ever shrinks.
_JPEG_RATIOS = (8, 4, 2)


def decode_image(contents: tf.Tensor, size: int, mode: str = "auto") -> tf.Tensor:
    """Decode JPEG/PNG/BMP/GIF (first frame) bytes to a (size, size, 3) float32."""

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

    image = tf.cond(tf.io.is_jpeg(contents), jpeg, other)
    image.set_shape([None, None, 3])
    return tf.image.resize(image, (size, size), method="bilinear")


def load_image(path: tf.Tensor, size: int, mode: str = "auto") -> tf.Tensor:
    return decode_image(tf.io.read_file(path), size, mode)


def image_batches(
    paths: Sequence[str],
    indices: Sequence[int],
    size: int,
    mode: str,
    batch_size: int,
) -> tf.data.Dataset:
    """Batches of ``(indices, images)``; unreadable images are dropped.

    The index travels with each image, so whoever consumes the batches can
    tell which images were dropped and quarantine them (see :func:`why_unreadable`)
    without decoding anything twice on the fast path.

    Decoding runs on one thread per core, two batches ahead, with tf.data's
    autotuning off: beside OpenVINO, which keeps the cores busy, the
    autotuner at times settled on too little parallelism and the whole loop
    ran at about half speed for the rest of the run (see BENCHMARKS.md).
    """
    ds = tf.data.Dataset.from_tensor_slices(
        (tf.constant(list(indices), tf.int64), tf.constant(list(paths)))
    )
    ds = ds.map(
        lambda i, p: (i, load_image(p, size, mode)),
        num_parallel_calls=len(os.sched_getaffinity(0)),
        deterministic=True,
    )
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.ignore_errors().batch(batch_size).prefetch(2).with_options(options)


def labelled_batches(paths: Sequence[str], labels: Sequence[int], size: int, mode: str,
                     batch_size: int, shuffle_seed: int | None = None) -> tf.data.Dataset:
    """Batches of ``(images, labels)`` for training; reshuffled every epoch when seeded.

    Only images that decoded at extraction are given (their bytes are checked
    against the cache first), so none is dropped here and the number of
    batches is known, as Keras wants for its epochs.
    """
    ds = tf.data.Dataset.from_tensor_slices(
        (tf.constant(list(paths)), tf.constant(list(labels), tf.int32)))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(paths), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda p, label: (load_image(p, size, mode), label),
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def why_unreadable(path: str, size: int, mode: str = "auto") -> str:
    """The decoder's reason for rejecting one image (eager, slow path)."""
    try:
        load_image(tf.constant(path), size, mode)
    except (tf.errors.OpError, ValueError) as exc:
        message = getattr(exc, "message", None) or str(exc)
        # Drop TensorFlow's "{{function_node ...}}" prefix and "[Op:...]" suffix.
        message = re.sub(r"\{\{[^}]*\}\}|\[Op:.*", "", message).strip()
        return (message.splitlines() or [type(exc).__name__])[0][:300]
    return "dropped by the decoding pipeline"
