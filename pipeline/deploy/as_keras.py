"""The Keras format: one ``.keras`` file, loaded by Keras."""

from __future__ import annotations

from pathlib import Path

import numpy as np

FILE = "{name}.keras"
LIBRARY = "keras"
LOAD = 'import keras\nmodel = keras.saving.load_model("{file}")\nprobabilities = model.predict(pixels)'


def save(model, target: Path, quantize: str = "none", representative=None) -> None:
    model.save(target)


def run(target: Path, pixels: np.ndarray, batch: int = 32) -> np.ndarray:
    """The written file's probabilities, through Keras."""
    import keras

    loaded = keras.saving.load_model(target)
    return np.asarray(loaded.predict(pixels, batch_size=batch, verbose=0))
