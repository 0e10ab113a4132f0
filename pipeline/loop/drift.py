"""Is a new batch drawn like the run's training images? A two-sample test on the features.

The test is the maximum mean discrepancy (MMD) with a Gaussian kernel, its
bandwidth the median distance of the pooled images, and its p-value from
permutations of the pooled images: under the null (batch and training drawn
alike) every split of the pool is equally likely, so the p-value is exact,
whatever the features look like. A classifier two-sample test scored on
fixed cross-validated predictions is not: its p-values run low on batches
that are drawn alike. Each image also gets a novelty score: the cosine
distance to its nearest training image, over the median of the same distance
among training images (leave one out), so 1 is typical and the training
images' own 99th percentile marks the novel ones.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import DriftConfig
from ..errors import ConfigError
from ..heads.proba import full_proba
from ..runs.run import Run

log = logging.getLogger(__name__)

PERMUTATION_BLOCK = 250  # permutations scored at a time: bounds memory at N x 250 floats


def mmd_test(reference: np.ndarray, batch: np.ndarray, permutations: int,
             seed: int = 0) -> tuple[float, float]:
    """The squared MMD of two samples and its permutation p-value, (1 + #{perm >= observed}) / (B + 1)."""
    from sklearn.metrics.pairwise import euclidean_distances

    pooled = np.vstack([reference, batch]).astype(np.float64)
    squared = euclidean_distances(pooled, squared=True)
    positive = squared[np.triu_indices(len(pooled), 1)]
    positive = positive[positive > 0]
    bandwidth = np.median(positive) if len(positive) else 1.0
    kernel = np.exp(-squared / bandwidth)
    m, n = len(reference), len(batch)
    signs = np.concatenate([np.full(m, 1.0 / m), np.full(n, -1.0 / n)])
    observed = float(signs @ kernel @ signs)
    rng = np.random.default_rng(seed)
    at_least = 0
    for start in range(0, permutations, PERMUTATION_BLOCK):
        count = min(PERMUTATION_BLOCK, permutations - start)
        shuffled = np.stack([rng.permutation(signs) for _ in range(count)], axis=1)
        scores = np.einsum("ij,ij->j", shuffled, kernel @ shuffled)
        at_least += int((scores >= observed - 1e-12).sum())
    return observed, (1 + at_least) / (1 + permutations)


def novelty(reference: np.ndarray, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Each batch image's distance to its nearest training image, over the training images' own
    median (leave one out); the index of that neighbour; and the training images' 99th percentile."""
    from sklearn.neighbors import NearestNeighbors

    index = NearestNeighbors(n_neighbors=2, metric="cosine").fit(reference)
    own = index.kneighbors(reference, 2, return_distance=True)[0][:, 1]
    scale = float(np.median(own)) or 1.0
    distance, nearest = index.kneighbors(batch, 1, return_distance=True)
    return distance[:, 0] / scale, nearest[:, 0], float(np.quantile(own / scale, 0.99))


@dataclass(frozen=True)
class DriftResult:
    """The batch test, the shift in predicted classes, and the most novel images."""

    p_value: float
    level: float
    statistic: float
    novel: list[dict]  # {"path", "score", "nearest", "beyond_training"}, most novel first
    predicted_share: dict[str, float]
    reference_share: dict[str, float]  # the same model's predictions on the run's held-out images
    share_p_value: float | None  # chi-square: are the batch's predictions spread like those?
    images: int
    reference_images: int
    model: str
    unreadable: list[dict] = field(default_factory=list)

    @property
    def drifted(self) -> bool:
        return self.p_value < self.level

    def to_dict(self) -> dict:
        return {"p_value": self.p_value, "drifted": self.drifted, "level": self.level,
                "mmd2": self.statistic, "novel": self.novel, "predicted_share": self.predicted_share,
                "reference_share": self.reference_share, "share_p_value": self.share_p_value,
                "images": self.images, "reference_images": self.reference_images,
                "model": self.model, "unreadable": self.unreadable}


def _shares(predicted: np.ndarray, classes: list[str]) -> dict[str, float]:
    counts = np.bincount(predicted, minlength=len(classes))
    return {c: round(float(k) / max(len(predicted), 1), 4) for c, k in zip(classes, counts)}


def _share_test(batch: np.ndarray, held_out: np.ndarray, n_classes: int) -> float | None:
    """Chi-square p-value of the batch's predicted classes against the held-out images' spread."""
    from scipy.stats import chisquare

    expected = np.bincount(held_out, minlength=n_classes) / len(held_out) * len(batch)
    if (expected == 0).any():
        return None
    return float(chisquare(np.bincount(batch, minlength=n_classes), expected).pvalue)


def drift(run: str | os.PathLike, batch: str | os.PathLike,
          config: DriftConfig | None = None) -> DriftResult:
    """Test whether the images under ``batch`` are drawn like run ``run``'s training images.

    Raises:
        RunError: ``run`` is not a run, or its features are gone.
        ConfigError: ``batch`` has no readable image.
    """
    config = config or DriftConfig()
    reference = Run.open_compared(run)
    name = reference.name(features_in=True)
    model = reference.load(name)  # a model that fails its checksum stops here, before any work
    cache = reference.cache()
    got = reference.images(batch, "batch", batch_size=config.batch_size, engine=config.engine,
                           weights=config.weights)
    if len(got.paths) < 2:
        raise ConfigError(f"`--batch` {batch} has {len(got.paths)} readable images; a test of a "
                          "batch needs at least 2. Fix: pass a folder with more photos.")
    total = cache.counts["train"]
    rng = np.random.default_rng(config.seed)
    rows = np.sort(rng.choice(total, min(config.reference, total), replace=False))
    train = cache.take("train", rows)  # the sample's rows alone
    sample = train.features.reshape(len(rows), -1)
    features = got.features.reshape(len(got.paths), -1)
    statistic, p = mmd_test(sample, features, config.permutations, config.seed)
    score, nearest, beyond = novelty(sample, features)
    order = np.argsort(-score, kind="stable")[:config.novel]
    novel = [{"path": got.paths[i], "score": round(float(score[i]), 3),
              "nearest": train.paths[nearest[i]], "beyond_training": bool(score[i] > beyond)}
             for i in order]
    held = "validation" if "validation" in cache.splits else "train"
    held_out = cache.load(held)
    n = len(reference.classes)
    predicted = full_proba(model.predict_proba(got.features), model.classes_, n).argmax(1)
    expected = full_proba(model.predict_proba(held_out.features), model.classes_, n).argmax(1)
    log.info("drift: MMD p = %.4g over %d permutations", p, config.permutations)
    return DriftResult(p, config.level, statistic, novel, _shares(predicted, reference.classes),
                       _shares(expected, reference.classes), _share_test(predicted, expected, n),
                       len(got.paths), len(rows), name, got.unreadable)


def record(result: DriftResult, run: str | os.PathLike, batch: str, permutations: int):
    """Add the result to the run: ``drift.json``, and a drift section of its report (replacing
    an earlier batch's)."""
    from ..runs import folder, pages

    writer = folder.RunWriter.amend(Path(run))
    try:
        writer.write_json(folder.DRIFT, {**result.to_dict(), "batch": batch})
        report = writer.path(folder.REPORT)
        if report.is_file():
            report.write_text(pages.with_drift(report.read_text(encoding="utf-8"), result.to_dict(),
                                               batch, permutations), encoding="utf-8")
        return writer.commit()
    except BaseException:
        writer.discard()
        raise
