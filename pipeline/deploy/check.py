"""An export checked against ``predict``: on the run's own images, before anything is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import RunError
from ..runs.run import Run


def images(run: Run, split: str, n: int, data: str | None) -> tuple[list[str], np.ndarray]:
    """Up to ``n`` images of a split of the run's features, evenly spread: (absolute paths, labels).

    Raises:
        RunError: the split is empty, or its images are not where stage 1 read them.
    """
    cache = run.cache()
    total = cache.counts.get(split, 0)
    if total == 0:
        raise RunError(f"The run's cache has no {split} images to check the export on. Fix: "
                       "extract with a validation split.")
    rows = np.unique(np.linspace(0, total - 1, min(n, total)).astype(int))
    taken = cache.take(split, rows)
    root = Path(data or cache.data_root)
    paths = [str(root / p) for p in taken.paths]
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise RunError(f"{len(missing)} of the {split} images are not where stage 1 read them "
                       f"(first: {missing[0]}). Fix: pass the data folder with `--data`.")
    return paths, np.asarray(taken.labels)


def pixels(paths: list[str], key: dict, size: int) -> np.ndarray:
    """The images decoded as stage 1 decoded them, float32 0-255, NHWC."""
    import tensorflow as tf

    from ..data.decode import Decoding, load_image

    decoding = Decoding.of_view(key, size)
    return tf.stack([load_image(p, decoding) for p in paths]).numpy()


def compared(got: np.ndarray, expected: np.ndarray, labels: np.ndarray) -> dict:
    """The check's figures: the largest probability difference to predict, and both accuracies."""
    accuracy = {"predict": float((expected.argmax(1) == labels).mean()),
                "export": float((got.argmax(1) == labels).mean())}
    accuracy["change"] = accuracy["export"] - accuracy["predict"]
    return {"max_abs_difference": float(np.abs(got - expected).max()), "accuracy": accuracy}
