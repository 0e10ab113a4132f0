"""A classifier's probabilities over all of a run's classes (numpy only, so reading a run stays light)."""

from __future__ import annotations

import numpy as np


def full_proba(proba: np.ndarray, model_classes, n_classes: int) -> np.ndarray:
    """Probabilities over all classes, from the columns of the classes a model knows."""
    proba = np.asarray(proba, dtype="float64")
    if proba.shape[1] == 1:  # a single sigmoid unit
        proba = np.hstack([1 - proba, proba])
    full = np.zeros((len(proba), n_classes))
    full[:, np.asarray(model_classes, dtype=int)] = proba
    return full / full.sum(axis=1, keepdims=True)  # float32 heads sum to 1 only within 1e-7
