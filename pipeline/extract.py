"""Stage 1: run the backbone once over every split and cache the features."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import backbones, shards
from .cache import (FORMAT_VERSION, FeatureCache, PartialCache, SplitManifest,
                    base_attrs, cache_lock, fingerprint_all, key_hash)
from .config import ExtractConfig
from .data import Dataset, discover
from .errors import CacheError, WeightsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractResult:
    """What a stage-1 run produced.

    Attributes:
        path: the finished cache file.
        hit: True when the cache already existed and nothing was computed.
        splits: rows per split.
        feature_shape: shape of one feature row.
        quarantined: unreadable images, ``{"split", "path", "reason"}`` each.
        seconds: wall time of this call.
        images_per_second: images decoded and run through the backbone per
            second (0 on a cache hit).
        resumed_images: images a killed earlier run had already done.
    """

    path: Path
    hit: bool
    splits: dict[str, int]
    classes: list[str]
    feature_shape: tuple[int, ...]
    quarantined: list[dict]
    seconds: float
    images_per_second: float
    resumed_images: int = 0
    missing: dict[str, list[str]] = field(default_factory=dict)
    ignored_files: int = 0

    def open(self) -> FeatureCache:
        """The cache file, opened and checked."""
        return FeatureCache(self.path)

    def to_dict(self) -> dict:
        return {
            "cache": str(self.path),
            "hit": self.hit,
            "classes": self.classes,
            "splits": self.splits,
            "feature_shape": list(self.feature_shape),
            "quarantined": self.quarantined,
            "missing_classes": self.missing,
            "ignored_files": self.ignored_files,
            "resumed_images": self.resumed_images,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 1),
        }


def cache_key(spec: backbones.BackboneSpec, config: ExtractConfig, dataset: Dataset,
              manifests: dict[str, SplitManifest]) -> dict:
    """Exactly what shapes the features, and nothing else."""
    images = {
        split: [list(p) for p in zip(m.paths, m.labels, m.fingerprints)]
        for split, m in manifests.items()
    }
    return {
        "format_version": FORMAT_VERSION,
        "backbone": spec.backbone.name,
        "alpha": spec.alpha,
        "weights": spec.weights_identity,
        "seed": config.seed if spec.weights == "none" else None,
        "image_size": spec.image_size,
        "pooling": spec.pooling,
        "preprocessing": f"keras.applications.{spec.backbone.module}.preprocess_input "
                         f"({spec.backbone.preprocessing})",
        "decode": config.decode,
        "resize": "bilinear, no crop",
        "dtype": config.dtype,
        "classes": list(dataset.classes),
        "images": key_hash(images),
    }


def spec_from_key(key: dict, weights: str | None = None) -> backbones.BackboneSpec:
    """The backbone a cache was made with, to rebuild it (stage 3, predict).

    Args:
        weights: the weights file, when stage 1 used one (the key holds only
            its sha256).

    Raises:
        WeightsError: a weights file is needed, or is not the one recorded.
    """
    recorded = key["weights"]
    given = recorded if recorded in ("imagenet", "none") else weights
    if given is None:
        raise WeightsError(f"Stage 1 used a weights file ({recorded}). Fix: pass it again "
                           "with `--weights PATH`.")
    spec = backbones.resolve(key["backbone"], key["image_size"], key["pooling"], key["alpha"], given)
    if spec.weights_identity != recorded:
        raise WeightsError(f"`--weights` {weights} is not the file stage 1 used ({recorded}).")
    return spec


def cache_file_name(spec: backbones.BackboneSpec, key: dict) -> str:
    alpha = f"_a{spec.alpha:g}" if spec.alpha is not None else ""
    return f"{spec.backbone.name}{alpha}-{spec.image_size}-{spec.pooling}-{key_hash(key)[:16]}.h5"


def _prepare_cache_dir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise CacheError(
            f"`--cache-dir` {folder} cannot be written ({exc.strerror or exc}). "
            "Fix: pass a folder you can write with `--cache-dir`."
        ) from None


def extract_features(data: str | os.PathLike, config: ExtractConfig = ExtractConfig(),
                     progress: bool | None = None,
                     shard: tuple[int, int] | None = None) -> ExtractResult:
    """Stage 1: features of every image of every split, cached in HDF5.

    A second call with the same images and settings is a cache hit: it
    fingerprints the images, finds the file and returns without building the
    backbone. A call after a killed run resumes after its last whole chunk.

    Args:
        data: the dataset folder (see :func:`pipeline.data.discover`).
        config: stage 1 settings.
        progress: show a progress bar (None: only on a terminal).
        shard: ``(i, n)`` to extract only shard i of n (1-based) into its own
            file, to be joined with :func:`pipeline.shards.merge`.

    Raises:
        PipelineError: bad layout, settings, weights or cache folder.
    """
    return carry_out(plan(data, config).for_shard(shard), progress)


def carry_out(work: "Plan", progress: bool | None = None) -> ExtractResult:
    """The planned cache file: found whole, or extracted (resuming what is on disk)."""
    found = work.hit()  # a finished cache needs no write access: a read-only folder is fine
    if found:
        return found
    _prepare_cache_dir(work.config.cache_path)
    with cache_lock(work.path):  # another extraction of the same cache finishes first
        return work.hit() or work.run(progress)


def plan(data: str | os.PathLike, config: ExtractConfig) -> "Plan":
    """What an extraction would write, and where: the key, from every image's bytes."""
    started = time.perf_counter()
    dataset = discover(data, config.split)
    spec = backbones.resolve(config.backbone, config.image_size, config.pooling,
                             config.alpha, config.weights)
    manifests = {}
    for split, items in dataset.splits.items():
        paths = [p for p, _ in items]
        manifests[split] = SplitManifest(tuple(paths), tuple(l for _, l in items),
                                         tuple(fingerprint_all(dataset.root, paths)))
    key = cache_key(spec, config, dataset, manifests)
    return Plan(dataset, spec, config, manifests, key,
                config.cache_path / cache_file_name(spec, key), started=started)


@dataclass
class Plan:
    """One extraction, planned: :meth:`hit` finds it done, :meth:`run` does it."""

    dataset: Dataset
    spec: backbones.BackboneSpec
    config: ExtractConfig
    manifests: dict[str, SplitManifest]
    key: dict
    path: Path
    shard: tuple[int, int] | None = None
    started: float = 0.0

    def for_shard(self, shard: tuple[int, int] | None) -> "Plan":
        """The same extraction, limited to shard ``(i, n)`` and its own file (None: all of it)."""
        if shard is None:
            return self
        return replace(self, path=self.path.with_name(shards.shard_file_name(self.path.name, shard)),
                       shard=shard, started=time.perf_counter())

    def _result(self, cache: FeatureCache, hit: bool, rate: float = 0.0,
                resumed: int = 0) -> ExtractResult:
        return ExtractResult(
            path=self.path, hit=hit, splits=cache.counts, classes=list(self.dataset.classes),
            feature_shape=cache.feature_shape, quarantined=cache.quarantined,
            seconds=time.perf_counter() - self.started, images_per_second=rate,
            resumed_images=resumed, missing={k: list(v) for k, v in self.dataset.missing.items()},
            ignored_files=len(self.dataset.ignored))

    def hit(self) -> ExtractResult | None:
        """The finished cache file, when it exists and is whole; else None."""
        if not self.path.exists():
            return None
        try:
            cache = FeatureCache(self.path, expected_key=self.key, allow_shard=True)
        except CacheError as exc:
            log.warning("rebuilding the cache: %s", exc)
            return None
        PartialCache(self.path, self.key).discard()  # left over if killed after the rename
        log.info("cache hit: %s", self.path)
        return self._result(cache, hit=True)

    def run(self, progress: bool | None = None) -> ExtractResult:
        """Extract what no earlier run finished, then assemble the file."""
        config, manifests = self.config, self.manifests
        partial = PartialCache(self.path, self.key)
        partial.open()
        strategy = backbones.gpu_strategy()
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            model = backbones.build(self.spec, seed=config.seed)
        forward = backbones.compiled_forward(model, strategy)
        feature_shape = tuple(int(d) for d in model.output_shape[1:])
        owned = {s: shards.owned_chunks(-(-len(m.paths) // config.chunk_size), self.shard)
                 for s, m in manifests.items()}
        done = {s: partial.done(s, owned[s]) for s in manifests}

        def images(split: str, chunks) -> int:
            return sum(min(config.chunk_size, len(manifests[split].paths) - k * config.chunk_size)
                       for k in chunks)

        resumed = sum(images(s, done[s]) for s in manifests)
        if resumed:
            log.info("resuming: %d images already extracted by an earlier run", resumed)
        todo_total = sum(images(s, owned[s]) for s in manifests) - resumed
        compute_started = time.perf_counter()
        with _progress_bar(todo_total, progress) as bar:
            for split, manifest in manifests.items():
                todo = sorted(set(owned[split]) - done[split])
                _extract_split(forward, self.dataset.root, split, manifest, partial, self.spec,
                               config, todo, bar)
        compute_seconds = time.perf_counter() - compute_started
        rate = todo_total / compute_seconds if compute_seconds > 0 else 0.0
        extraction = {"seconds": round(compute_seconds, 3), "images": todo_total,
                      "images_per_second": round(rate, 1), "resumed_images": resumed,
                      "batch_size": config.batch_size}
        attrs = base_attrs(self.key, list(self.dataset.classes), self.dataset.root, extraction)
        if self.shard is not None:
            attrs["shard"] = shards.shard_attr(self.shard, config.chunk_size,
                                               {s: len(m.paths) for s, m in manifests.items()})
        partial.assemble(manifests, owned, feature_shape, config.dtype, attrs)
        cache = FeatureCache(self.path, expected_key=self.key, allow_shard=True)
        log.info("wrote %s", self.path)
        return self._result(cache, hit=False, rate=rate, resumed=resumed)


def _extract_split(forward, root: Path, split: str, manifest: SplitManifest, partial: PartialCache,
                   spec: backbones.BackboneSpec, config: ExtractConfig, chunks: list[int], bar) -> None:
    from .decode import image_batches, why_unreadable

    size = config.chunk_size
    todo = deque(chunks)
    if not todo:
        return
    n = len(manifest.paths)
    indices = [i for k in todo for i in range(k * size, min((k + 1) * size, n))]
    abs_paths = [str(root / manifest.paths[i]) for i in indices]
    batches = image_batches(abs_paths, indices, spec.image_size, config.decode, config.batch_size)

    rows: dict[int, list[np.ndarray]] = {}
    feats: dict[int, list[np.ndarray]] = {}

    def flush(k: int) -> None:
        got = np.concatenate(rows.pop(k)) if k in rows else np.zeros(0, np.int64)
        out = np.concatenate(feats.pop(k)) if k in feats else np.zeros((0,), np.float32)
        expected = range(k * size, min((k + 1) * size, n))
        bad = sorted(set(expected) - set(got.tolist()))
        reasons = [why_unreadable(str(root / manifest.paths[i]), spec.image_size, config.decode)
                   for i in bad]
        for i, reason in zip(bad, reasons):
            log.warning("quarantined %s: %s", manifest.paths[i], reason)
        partial.write_chunk(split, k, got, out.astype(config.dtype), bad, reasons)
        bar.update(len(bad))

    for idx, images in _chunk_aligned(batches, size, config.batch_size):
        k = int(idx[0]) // size  # a batch never crosses a chunk (see _chunk_aligned)
        rows.setdefault(k, []).append(idx)
        feats.setdefault(k, []).append(forward(images).numpy())
        bar.update(len(idx))
        last = int(idx[-1])
        while todo and min((todo[0] + 1) * size, n) - 1 <= last:
            flush(todo.popleft())
    while todo:
        flush(todo.popleft())


def _chunk_aligned(batches, chunk_size: int, batch_size: int):
    """Batches that never cross a chunk boundary: ``(indices, images)``.

    The decoding pipeline drops unreadable images, which would shift every
    later batch. Here each chunk is cut into batches of its own readable
    images, so an image meets the same batch-mates whether the split is
    extracted whole, in shards, or resumed: the features are bit-identical
    (a backbone's arithmetic can depend on the batch size). Batches that need
    no regrouping (the usual case) pass through uncopied.
    """
    import tensorflow as tf

    pending: list[tuple[np.ndarray, object]] = []
    held = 0

    def emit(n: int):
        nonlocal pending, held
        idx = np.concatenate([i for i, _ in pending])
        images = pending[0][1] if len(pending) == 1 else tf.concat([x for _, x in pending], 0)
        pending = [(idx[n:], images[n:])] if n < len(idx) else []
        held = len(idx) - n
        return idx[:n], images[:n]

    for idx, images in batches:
        idx = idx.numpy()
        chunk_of = idx // chunk_size
        cuts = np.flatnonzero(np.diff(chunk_of)) + 1
        for start, stop in zip([0, *cuts], [*cuts, len(idx)]):
            part = (idx, images) if stop - start == len(idx) else (idx[start:stop], images[start:stop])
            if pending and pending[0][0][0] // chunk_size != chunk_of[start]:
                yield emit(held)  # the tail of the previous chunk
            if not pending and stop - start == batch_size:
                yield part  # the usual case: a whole batch of one chunk, not copied
                continue
            pending.append(part)
            held += stop - start
            while held >= batch_size:
                yield emit(batch_size)
    if pending:
        yield emit(held)


def _progress_bar(total: int, enabled: bool | None):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="img", desc="extract", disable=None if enabled is None else not enabled,
                smoothing=0.1, dynamic_ncols=True)
