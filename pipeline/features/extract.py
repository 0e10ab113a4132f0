"""Stage 1: the backbone runs once per image content; a dataset becomes a view of the store.

An extraction fingerprints every image (reading only files whose stat
changed), finds which fingerprints the store of its feature spec lacks,
runs the backbone on those alone, in chunks that each become one store
segment, and then writes the dataset's view. Relabelling, re-splitting,
adding or removing images, or a second folder of the same photos computes
nothing for the images the store already holds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .. import backbones
from .._files import key_hash
from ..config import ExtractConfig
from ..console import phase, progress_bar, quiet
from ..data import Dataset, discover
from ..data.files import CHANGED
from ..errors import CacheError
from . import engines, shards
from .compute import compute_rows
from .hashing import STAT_CACHE, fingerprint_files, forget
from .spec import backbone_of, feature_spec, store_folder_name, view_file_name, view_key
from .store import FeatureStore, Index, store_root
from .result import ExtractResult
from .view import FeatureCache, SplitManifest, base_attrs, write_view

log = logging.getLogger(__name__)


def _prepare_cache_dir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # A file without a name (O_TMPFILE where the system has it): nothing is left behind.
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        raise CacheError(
            f"`--cache-dir` {folder} cannot be written ({exc.strerror or exc}). "
            "Fix: pass a folder you can write with `--cache-dir`."
        ) from None


@quiet
def extract_features(data: str | os.PathLike, config: ExtractConfig = ExtractConfig(),
                     progress: bool | None = None,
                     shard: tuple[int, int] | None = None) -> ExtractResult:
    """Stage 1: features of every image of every split, as a view of the feature store.

    A second call with the same images and settings is a cache hit: it
    finds the view without building the backbone. Any other call runs the
    backbone only on images whose content the store lacks; a call after a
    killed run resumes after its last whole chunk.

    Args:
        data: the dataset folder (see :func:`pipeline.data.discover`).
        config: stage 1 settings.
        progress: show a progress bar (None: only on a terminal).
        shard: ``(i, n)`` to extract only shard i of n (1-based) into its own
            file, to be joined with :func:`pipeline.features.shards.merge`.

    Raises:
        PipelineError: bad layout, settings, weights or cache folder.
    """
    return carry_out(plan(data, config).for_shard(shard), progress)


def carry_out(work: "Plan", progress: bool | None = None) -> ExtractResult:
    """The planned view: found whole, or written (computing only what the store lacks)."""
    with phase("stage 1: find a finished view"):
        found = work.hit()  # a finished view needs no write access: a read-only folder is fine
    if found:
        return found
    _prepare_cache_dir(work.config.cache_path)
    store = FeatureStore.create(work.store_folder, work.feature)
    # A whole extraction holds the store alone, so a second one of the same
    # spec waits and then reuses what this one computes; shards share it.
    with store.locked(exclusive=work.shard is None, what=work.path.name):
        try:
            return work.hit() or work.run(store, progress)
        except _StaleHints as stale:
            paths = stale.paths
    # The stat cache is a hint: the bytes decoded did not confirm these digests,
    # so they are hashed again and the extraction planned anew (each round has
    # fewer hints than the one before, so this ends).
    log.warning("%d images' remembered fingerprints did not match their bytes (e.g. %s); "
                "hashing them again", len(paths), paths[0])
    forget(work.config.cache_path / STAT_CACHE, [str(work.dataset.root / p) for p in paths])
    return carry_out(_planned(work.dataset, work.config, work.started).for_shard(work.shard), progress)


class _StaleHints(Exception):
    """Digests from the stat cache that the bytes decoded did not confirm."""

    def __init__(self, paths: list[str]):
        super().__init__(paths)
        self.paths = paths


def plan(data: str | os.PathLike, config: ExtractConfig) -> "Plan":
    """What an extraction would write, and where: the view key, from every image's bytes."""
    started = time.perf_counter()
    with phase("stage 1: list and fingerprint the files"):
        return _planned(discover(data, config.split), config, started)


def _planned(dataset: Dataset, config: ExtractConfig, started: float) -> "Plan":
    spec = backbone_of(config)
    feature = feature_spec(spec, config)
    cache_dir = config.cache_path
    paths = [p for items in dataset.splits.values() for p, _ in items]
    prints = fingerprint_files(dataset.root, paths, config.max_file_bytes, cache_dir / STAT_CACHE)
    for rel, reason in prints.unreadable.items():
        log.warning("quarantined %s: %s", rel, reason)
    manifests, start = {}, 0
    for split, items in dataset.splits.items():
        digests = prints.digests[start:start + len(items)]
        start += len(items)
        manifests[split] = SplitManifest(tuple(p for p, _ in items), tuple(l for _, l in items),
                                         tuple(digests))
    images = {split: [list(row) for row in zip(m.paths, m.labels, m.fingerprints)]
              for split, m in manifests.items()}
    key = view_key(feature, list(dataset.classes), images, config, spec.backbone.source)
    return Plan(dataset, spec, config, feature, manifests, prints.unreadable, key,
                cache_dir / view_file_name(key),
                store_root(cache_dir) / store_folder_name(feature),
                fingerprinted=prints.read, started=started, hinted=prints.hinted)


@dataclass
class Plan:
    """One extraction, planned: :meth:`hit` finds it done, :meth:`run` does it."""

    dataset: Dataset
    spec: backbones.BackboneSpec
    config: ExtractConfig
    feature: dict  # the feature spec
    manifests: dict[str, SplitManifest]
    unreadable: dict[str, str]  # relative path -> why it could not be read
    key: dict
    path: Path
    store_folder: Path
    shard: tuple[int, int] | None = None
    fingerprinted: int = 0
    started: float = 0.0
    hinted: frozenset[str] = frozenset()  # paths whose digest the stat cache gave, unread

    def for_shard(self, shard: tuple[int, int] | None) -> "Plan":
        """The same extraction, limited to shard ``(i, n)`` and its own file (None: all of it)."""
        if shard is None:
            return self
        return replace(self, path=self.path.with_name(shards.shard_file_name(self.path.name, shard)),
                       shard=shard, started=time.perf_counter())

    def _owned(self) -> dict[str, SplitManifest]:
        """The rows this extraction's view holds: all, or a shard's whole chunks of each split."""
        if self.shard is None:
            return self.manifests
        owned = {}
        for split, m in self.manifests.items():
            rows = shards.owned_rows(len(m.paths), self.config.chunk_size, self.shard)
            owned[split] = SplitManifest(m.paths[rows.start:rows.stop], m.labels[rows.start:rows.stop],
                                         m.fingerprints[rows.start:rows.stop])
        return owned

    def _result(self, cache: FeatureCache, hit: bool, rate: float = 0.0, resumed: int = 0,
                computed: int = 0, reused: int | None = None) -> ExtractResult:
        if reused is None:  # a hit: every row with content came from the store
            reused = sum(cache.counts.values()) + len(cache.quarantined) - len(self.unreadable)
        return ExtractResult(
            path=self.path, hit=hit, splits=cache.counts, classes=list(self.dataset.classes),
            feature_shape=cache.feature_shape, quarantined=cache.quarantined,
            seconds=time.perf_counter() - self.started, images_per_second=rate,
            resumed_images=resumed, missing={k: list(v) for k, v in self.dataset.missing.items()},
            ignored=list(self.dataset.ignored),
            computed=computed, reused=reused,
            fingerprinted=self.fingerprinted)

    def hit(self) -> ExtractResult | None:
        """The finished view, when it exists and is whole; else None."""
        if not self.path.exists():
            return None
        try:
            cache = FeatureCache(self.path, expected_key=self.key, allow_shard=True)
            cache.verify()  # a view with a damaged byte is rebuilt, never served
        except CacheError as exc:
            log.warning("rebuilding the cache: %s", exc)
            return None
        if any(q["reason"] == CHANGED for q in cache.quarantined):
            log.info("reading again the images that changed while %s was made", self.path.name)
            return None
        with contextlib.suppress(OSError):
            os.utime(self.path)  # when it was last used, for `cache gc --older-than`
        log.info("cache hit: %s", self.path)
        return self._result(cache, hit=True)

    def _todo(self, owned: dict[str, SplitManifest], index: Index) -> list[list[tuple[str, str]]]:
        """The images the store lacks, each content once, in chunks of ``chunk_size``.

        Chunks are cut in each split's order, so a run resumed after a kill
        (which finished whole chunks) cuts the rest exactly as before.
        """
        size = self.config.chunk_size
        claimed = set(index.bad)
        chunks = []
        for m in owned.values():
            fps = [f or "" for f in m.fingerprints]
            known = index.locate(np.asarray(fps, dtype="S32")) >= 0
            todo = []
            for rel, fp, have in zip(m.paths, m.fingerprints, known):
                if fp is None or have or fp in claimed:
                    continue
                claimed.add(fp)
                todo.append((fp, rel))
            chunks += [todo[i:i + size] for i in range(0, len(todo), size)]
        return chunks

    def run(self, store: FeatureStore, progress: bool | None = None) -> ExtractResult:
        """Compute what the store lacks, then write the view.

        A stored row that fails its checksum while the view is copied sends
        its segment aside, and the images it held are computed again; each
        round sets one segment aside, so the loop ends.
        """
        if self.shard is None:  # the exclusive lock: whatever a killed writer left is stale
            store.remove_stale_temporaries()
            for tmp in self.path.parent.glob(f"{self.path.name}.tmp-*"):
                tmp.unlink(missing_ok=True)
        owned = self._owned()
        tag = key_hash(self.key)
        work = _Work()

        def fill_and_write():
            index = self._fill(store, owned, tag, work, progress)
            stale = [rel for m in owned.values() for rel, fp in zip(m.paths, m.fingerprints)
                     if rel in self.hinted and work.refused.get(fp) == CHANGED]
            if stale:
                raise _StaleHints(stale)
            # Refused by a setting of this view (pixel budget) or changed while read: not stored.
            unreadable = {**self.unreadable, **{rel: work.refused[fp] for m in owned.values()
                                                 for rel, fp in zip(m.paths, m.fingerprints)
                                                 if fp in work.refused}}
            with phase("stage 1: write the view"):
                write_view(self.path, owned, index, unreadable, self._attrs(store, work), store.folder)

        store.until_whole(fill_and_write, "extract again")
        cache = FeatureCache(self.path, expected_key=self.key, allow_shard=True)
        log.info("wrote %s (computed %d images, reused %d rows)", self.path, work.computed,
                 len(work.reused))
        return self._result(cache, hit=False, rate=work.rate, resumed=work.resumed,
                            computed=work.computed, reused=len(work.reused))

    def _fill(self, store: FeatureStore, owned: dict[str, SplitManifest], tag: str, work: "_Work",
              progress: bool | None) -> Index:
        """Run the backbone on the images of ``owned`` the store lacks; the store's index after."""
        index = store.index()
        store.set_aside(index.damaged)
        chunks = self._todo(owned, index)
        if work.reused is None:  # the first round: what earlier runs left
            wanted = [f for m in owned.values() for f in m.fingerprints if f]
            at = index.locate(np.asarray(wanted, dtype="S32"))
            work.reused = [f for f, p in zip(wanted, at) if p >= 0 or f in index.bad]
            work.resumed = int(sum(index.views[index.segment[p]] == tag for p in at[at >= 0]))
            if work.resumed:
                log.info("resuming: %d images already extracted by an earlier run", work.resumed)
        else:  # a later round: rows found then, in a segment set aside since, are not reused
            again = {fp for chunk in chunks for fp, _ in chunk}
            work.reused = [f for f in work.reused if f not in again]
        todo = sum(len(c) for c in chunks)
        if not todo:
            return index
        config = self.config
        if work.engine is None:
            # The store's rows count too: a store that grew this large a few photos at a time
            # grows on, and the conversion, kept, serves each of its later runs.
            with phase("stage 1: import TensorFlow, build (and convert) the network"):
                name = engines.choose(config.engine, config.precision, todo + len(index.fingerprints),
                                      store.folder)
                work.engine = engines.build(name, self.spec, config.seed, config.batch_size,
                                            store.folder, config.precision,
                                            calibration=self._calibration(owned, store))
        started = time.perf_counter()  # the loop alone: decode, forward, write
        with progress_bar(todo, progress, unit="img", desc="extract", smoothing=0.1) as bar, \
                phase("stage 1: decode the images and run the network"):
            refused = compute_rows(work.engine, self.dataset.root, chunks, store,
                               spec=self.spec, config=config, tag=tag, bar=bar)
        work.seconds += time.perf_counter() - started
        work.computed += todo - len(refused)
        work.refused.update(refused)
        return store.index()

    def _calibration(self, owned: dict[str, SplitManifest], store: FeatureStore):
        """For int8: a seeded sample of this dataset's images, checked to be enough now, and a
        callable decoding them exactly as extraction does (pixels, and the content digests of
        those that decoded), which the engine calls only when it has no kept int8 model."""
        if self.config.precision != "int8":
            return None
        from ..data.decode import Decoding, image_batches
        from .quantize import check_enough, sample

        chosen = sample([(fp, rel) for m in owned.values() for rel, fp in zip(m.paths, m.fingerprints)
                         if fp], self.config.seed)
        check_enough(len(chosen), store.folder)
        config = self.config
        decoding = Decoding(self.spec.image_size, config.decode, config.orientation, config.max_pixels,
                            config.max_file_bytes)

        def decoded() -> tuple[np.ndarray, list[str]]:
            pixels, digests = [], []
            for idx, images in image_batches([str(self.dataset.root / rel) for _, rel in chosen],
                                             range(len(chosen)), decoding, config.batch_size,
                                             expected=[fp for fp, _ in chosen]):
                pixels.append(images.numpy())
                digests += [chosen[i][0] for i in idx.numpy()]
            return (np.concatenate(pixels) if pixels else np.zeros((0,)), digests)

        return decoded

    def _attrs(self, store: FeatureStore, work: "_Work") -> dict:
        engine = work.engine
        extraction = {"seconds": round(work.seconds, 3), "images": work.computed,
                      "images_per_second": round(work.rate, 1), "resumed_images": work.resumed,
                      "batch_size": self.config.batch_size,
                      "engine": engine.name if engine else None,
                      "conversion_seconds": round(engine.conversion_seconds, 2) if engine else 0.0}
        attrs = base_attrs(self.key, list(self.dataset.classes), self.dataset.root, extraction)
        attrs["store"] = os.path.relpath(store.folder, self.path.parent)
        if self.shard is not None:
            attrs["shard"] = shards.shard_attr(self.shard, self.config.chunk_size,
                                               {s: len(m.paths) for s, m in self.manifests.items()})
        return attrs


@dataclass
class _Work:
    """What an extraction computed, over its rounds (see :meth:`Plan.run`)."""

    engine: object = None
    seconds: float = 0.0
    computed: int = 0
    reused: list[str] | None = None  # the fingerprints of the rows taken from the store
    resumed: int = 0
    refused: dict[str, str] = field(default_factory=dict)  # fingerprint -> why, not stored

    @property
    def rate(self) -> float:
        return self.computed / self.seconds if self.seconds > 0 else 0.0
