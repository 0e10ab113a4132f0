"""The SavedModel format: a folder TensorFlow Serving and ``tf.saved_model.load`` read."""

from __future__ import annotations

from pathlib import Path

import numpy as np

FILE = "{name}_savedmodel"
LIBRARY = "tensorflow"
LOAD = ('import tensorflow as tf\nloaded = tf.saved_model.load("{file}")\n'
        "probabilities = loaded.serve(tf.constant(pixels)).numpy()")


def save(model, target: Path, quantize: str = "none", representative=None) -> None:
    model.export(str(target), verbose=False)


def run(target: Path, pixels: np.ndarray, batch: int = 32) -> np.ndarray:
    """The written folder's probabilities, through TensorFlow's loader."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(target))  # held: its functions need its variables alive
    return np.concatenate([loaded.serve(tf.constant(pixels[i:i + batch])).numpy()
                           for i in range(0, len(pixels), batch)])
