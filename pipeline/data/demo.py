"""A small, deterministic, learnable image set for ``run --demo``.

Three classes of striped patterns, horizontal, vertical and checked, each
image with its own two colours, stripe width, phase and pixel noise. The
classes differ in texture orientation, which even a randomly initialised
ResNet50 keeps in its pooled features (about 0.8 validation accuracy against
1/3 by chance), so the demo shows every stage working, offline, with
``weights="none"``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

CLASSES = ("horizontal", "vertical", "checks")
PER_CLASS = {"train": 80, "validation": 30, "test": 30}
SIZE = 64
# What `run --demo` sets (under the user's own overrides).
SETTINGS = {
    "data": "demo",
    "name": "demo",
    "stages": ["extract", "compare", "finetune"],
    "extract": {"backbone": "resnet50", "weights": "none", "image_size": SIZE},
    # A linear softmax head: random features are poorly scaled for a hidden layer.
    "compare": {"params": {"dense": {"units": 0, "dropout": 0.0}}},
    "finetune": {"unfreeze_top": 10, "epochs": 3, "learning_rate": 1e-3, "augment": "flip", "batch_size": 16},
}


def make_demo(folder: str | os.PathLike, seed: int = 0) -> Path:
    """Write the demo images under ``folder`` (train/validation/test/<class>/) once.

    The folder appears only when complete, so an interrupted run writes it
    again and a finished one is reused (and so is its feature cache).
    """
    from PIL import Image

    folder = Path(folder)
    if folder.is_dir():
        return folder
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    for offset, (split, n) in enumerate(PER_CLASS.items()):
        rng = np.random.default_rng([seed, offset])
        for i in range(n * len(CLASSES)):
            label = i % len(CLASSES)
            path = tmp / split / CLASSES[label] / f"{i // len(CLASSES):03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_pattern(label, rng)).save(path)
    os.replace(tmp, folder)
    return folder


def _pattern(label: int, rng: np.random.Generator) -> np.ndarray:
    rows, cols = np.mgrid[0:SIZE, 0:SIZE].astype("float32")
    period = rng.uniform(8, 16)
    phase = rng.uniform(0, 2 * np.pi, 2)
    horizontal = np.sin(2 * np.pi * rows / period + phase[0]) > 0
    vertical = np.sin(2 * np.pi * cols / period + phase[1]) > 0
    mask = (horizontal, vertical, horizontal ^ vertical)[label][..., None]
    ink, paper = rng.integers(0, 256, (2, 3))
    image = np.where(mask, ink, paper) + rng.normal(0, 15, (SIZE, SIZE, 3))
    return np.clip(image, 0, 255).astype("uint8")
