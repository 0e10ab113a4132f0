"""Stage 1's network rebuilt from a cache key: the one way predict, export and stage 3 get it.

The key records the backbone, its settings and its weights' identity; the
network is resolved from it (a weights file is checked against the recorded
hash), seeded as stage 1 seeded random weights, and run by the engine stage 1
would choose, with the converted model stage 1 kept in the store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .. import backbones
from .spec import spec_from_key, spec_of, store_folder_name


@dataclass(frozen=True)
class Extractor:
    """A cache key's backbone, resolved.

    Attributes:
        key: the cache key (``FeatureCache.key``, or a run manifest's copy).
        spec: the backbone it names.
    """

    key: dict
    spec: backbones.BackboneSpec

    @classmethod
    def from_key(cls, key: dict, weights: str | os.PathLike | None = None) -> "Extractor":
        """Raises WeightsError: stage 1 used a weights file that is not given, or not this one."""
        return cls(key, spec_from_key(key, weights))

    @property
    def seed(self) -> int:
        """What seeded random weights (``weights none``) in stage 1."""
        return self.key.get("seed") or 0

    def base(self):
        """The backbone alone: preprocessed pixels in, features out."""
        return backbones.build_base(self.spec, self.seed)

    def model(self):
        """Raw pixels in, features out, preprocessing included."""
        return backbones.build(self.spec, seed=self.seed)

    def engine(self, engine: str, batch_size: int, images: int, cache_dir: Path):
        """The engine stage 1 would choose for ``images`` images, with its converted model if kept."""
        from . import engines
        from .store import STORE

        precision = self.key.get("precision", "float32")
        store = Path(cache_dir) / STORE / store_folder_name(spec_of(self.key))
        store = store if store.is_dir() else None
        return engines.build(engines.choose(engine, precision, images, store), self.spec, self.seed,
                             batch_size, store, precision)
