"""Saving and loading a fitted head: ``.keras`` for Keras models, joblib for the rest."""

from __future__ import annotations

from pathlib import Path


def save(estimator, path: Path, form: str) -> None:
    """Write a fitted model to ``path``: "keras" (its own ``save``) or "joblib"."""
    if form == "keras":
        estimator.save(path)
        return
    import joblib

    joblib.dump(estimator, path)


def load(path: Path, form: str, params: dict, classes: list[int] | None):
    """A model written by :func:`save` (``form`` "keras" or "joblib"), or a whole Keras
    model, pixels in ("keras-model").

    Only load files you trust (a run's manifest checks their sha256 first):
    a joblib file can run code.
    """
    if form == "keras":
        from .dense import DenseHead

        return DenseHead.load(path, params, classes)
    if form == "keras-model":
        import keras

        return keras.models.load_model(path)
    import joblib

    return joblib.load(path)
