"""Stage 3: rebuild the end-to-end model from a run's dense head, check the hand-off, train.

Its names are imported on first use: the settings classes read this package's augmentation
vocabulary, and must not import stage 3 (or TensorFlow) to do so.
"""

import importlib

__all__ = ["FinetuneResult", "finetune"]


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(".train", __name__), name)
    globals()[name] = value
    return value
