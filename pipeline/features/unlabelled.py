"""Features of images without labels (a pool to label, a new batch), through the feature store.

The rows come from the store of the run's feature spec, keyed by each
image's content, as extraction's do: an image the store already holds is
not run through the backbone again, and what is computed here is kept, so
extracting these images once they are labelled reuses it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._files import key_hash
from ..config import ExtractConfig
from ..console import progress_bar
from .compute import compute_rows
from .extractor import Extractor
from .hashing import STAT_CACHE, fingerprint_files
from .spec import spec_of, store_folder_name
from .store import FeatureStore, store_root

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Unlabelled:
    """Features of the readable images, in the order given, and why the others are not there."""

    paths: list[str]
    fingerprints: list[str]
    features: np.ndarray
    unreadable: list[dict] = field(default_factory=list)  # {"path", "reason"}
    computed: int = 0


def _settings(key: dict, batch_size: int, engine: str) -> ExtractConfig:
    """The decoding and storage settings stage 1 used, from its key."""
    names = ("decode", "orientation", "max_pixels", "max_file_bytes", "dtype", "precision", "seed")
    return ExtractConfig(batch_size=batch_size, engine=engine,
                         **{n: key[n] for n in names if key.get(n) is not None})


def _missing(readable: list[tuple], index) -> list[tuple[str, str]]:
    """(fingerprint, relative path) of each content the store lacks, once."""
    known = index.locate(np.asarray([fp for _, _, fp in readable], dtype="S32")) >= 0
    todo, claimed = [], set(index.bad)
    for (_, rel, fp), have in zip(readable, known):
        if not have and fp not in claimed:
            claimed.add(fp)
            todo.append((fp, rel))
    return todo


def _compute(todo: list[tuple[str, str]], store: FeatureStore, root: Path, *, key: dict,
             cache_dir: Path, config: ExtractConfig, weights, progress) -> dict[str, str]:
    """Stage 1's network over ``todo``, into the store; fingerprint -> why, for images refused."""
    extractor = Extractor.from_key(key, weights)
    runner = extractor.engine(config.engine, config.batch_size, len(todo), cache_dir)
    size = config.chunk_size
    chunks = [todo[i:i + size] for i in range(0, len(todo), size)]
    with progress_bar(len(todo), progress, unit="img", desc="features") as bar:
        return compute_rows(runner, root, chunks, store, spec=extractor.spec, config=config,
                            tag=key_hash({"unlabelled": sorted(fp for fp, _ in todo)}), bar=bar)


def features_of(paths: list[str], key: dict, cache_dir: Path, *, batch_size: int = 32,
                engine: str = "auto", weights: str | os.PathLike | None = None,
                progress: bool | None = None) -> Unlabelled:
    """The features of ``paths`` under the spec of ``key``, computing only what the store lacks.

    A store segment that fails its checksums is set aside and its images
    computed again, as extraction does; a damaged byte is never served.

    Args:
        key: the view key stage 1 wrote (a run manifest keeps a copy).
        cache_dir: the folder of that view and of its feature store.
    """
    root = Path(os.path.commonpath([os.path.abspath(os.path.dirname(p)) for p in paths]))
    relpaths = [os.path.relpath(os.path.abspath(p), root) for p in paths]
    config = _settings(key, batch_size, engine)
    prints = fingerprint_files(root, relpaths, config.max_file_bytes, cache_dir / STAT_CACHE)
    readable = [(p, rel, fp) for p, rel, fp in zip(paths, relpaths, prints.digests) if fp]
    wanted = np.asarray([fp for _, _, fp in readable], dtype="S32")
    store = FeatureStore.create(store_root(cache_dir) / store_folder_name(spec_of(key)), spec_of(key))
    computed, refused = 0, {}

    def gather():
        nonlocal computed
        index = store.index()
        store.set_aside(index.damaged)
        todo = _missing(readable, index)
        if todo:
            now = _compute(todo, store, root, key=key, cache_dir=cache_dir, config=config,
                           weights=weights, progress=progress)
            refused.update(now)
            computed += len(todo) - len(now)
            index = store.index()
        at = index.locate(wanted)
        features = index.gather(at[at >= 0]) if (at >= 0).any() else \
            np.zeros((0, *(index.feature_shape or ())), np.float32)
        return index, at, features

    with store.locked(exclusive=False, what="unlabelled images"):
        index, at, features = store.until_whole(gather, "run this again")
    unreadable = [{"path": p, "reason": prints.unreadable[rel]} for p, rel in zip(paths, relpaths)
                  if rel in prints.unreadable]
    unreadable += [{"path": p, "reason": index.bad.get(fp) or refused.get(fp, "not computed")}
                   for i, (p, _, fp) in enumerate(readable) if at[i] < 0]
    for bad in unreadable:
        log.warning("unreadable %s: %s", bad["path"], bad["reason"])
    kept = [i for i, a in enumerate(at) if a >= 0]
    return Unlabelled([readable[i][0] for i in kept], [readable[i][2] for i in kept], features,
                      unreadable, computed=computed)
