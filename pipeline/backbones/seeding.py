"""Random weights that depend on the seed alone, whatever else the process does."""

from __future__ import annotations

import random
import threading
from contextlib import contextmanager

_SEEDING = threading.Lock()


@contextmanager
def seeded(seed: int):
    """Random weights that depend on ``seed`` alone.

    Keras draws each initializer's seed from Python's global ``random``,
    which other threads of the process (a Dask worker's own) draw from too;
    while the model is built, Keras draws from a private generator instead.
    """
    import keras
    from keras.src.random import seed_generator

    with _SEEDING:
        keras.utils.set_random_seed(seed)
        shared = seed_generator.python_random
        seed_generator.python_random = random.Random(seed)
        try:
            yield
        finally:
            seed_generator.python_random = shared
