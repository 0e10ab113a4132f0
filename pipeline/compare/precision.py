"""What a lower precision costs on the user's own data: int8 or bf16 features beside float32's.

``extract --precision int8 --compare-precision`` extracts float32 too (or reads
it from the store), selects stage 2's logistic regression on validation under
each precision (the registry's entry and grid, fitted as ``compare`` fits it),
and says on the validation images: the accuracy under each, their paired
difference with a bootstrap interval and McNemar's exact test, how far apart
the features are, and how much faster the lower precision extracted. The
result is kept beside the lowered view (``<view>.precision.json``, tied to the
view's key), so that every run compared on that view says it in its
leaderboard and report.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import replace
from pathlib import Path

import numpy as np

from .._files import atomic_write, key_hash
from ..config import ExtractConfig
from ..errors import ConfigError
from ..features import ExtractResult, FeatureCache, extract_features
from ..heads.registry import configure, get_classifier
from ..runs import stats
from .fitting import select

RESAMPLES = 2000
KEPT = ".precision.json"  # beside the view: <view stem>.precision.json
KEPT_BYTES = 65_536  # a kept cost is a few hundred bytes; anything larger is not one


def check(config: ExtractConfig) -> None:
    """Refuse, before any work, a comparison of float32 with itself."""
    if config.precision == "float32":
        raise ConfigError("`--compare-precision` compares bf16 or int8 features with float32's. Fix: "
                          "add `--precision int8` (or bf16), or drop `--compare-precision`.")


def precision_cost(data: str | os.PathLike, config: ExtractConfig, lowered: ExtractResult) -> dict:
    """The cost of ``config.precision`` against float32, on the validation split of ``data``.

    Args:
        lowered: the extraction under ``config.precision``, done.

    Raises:
        ConfigError: the precision is float32 already, or the data has no validation split.
    """
    check(config)
    # On OpenVINO as the lower precision runs, however few the photos: the speeds compare the precisions.
    engine = "openvino" if config.engine == "auto" else config.engine
    full = extract_features(data, replace(config, precision="float32", engine=engine), progress=False)
    rows = {}
    for name, result in (("float32", full), (config.precision, lowered)):
        cache = FeatureCache(result.path)
        if "validation" not in cache.splits or not cache.counts["validation"]:
            raise ConfigError(f"`--compare-precision` scores on the validation split, and {result.path} "
                              "has none. Fix: give the data a validation split.")
        train, validation = cache.load("train"), cache.load("validation")
        order = np.argsort(validation.paths)
        estimator, grid = configure(get_classifier("logreg"), 0, {}, None, "flatten")
        model = select(get_classifier("logreg"), estimator, grid, train, validation, scoring="accuracy").model
        rows[name] = (validation.features[order], validation.labels[order],
                      model.predict(validation.features)[order], np.asarray(validation.paths)[order])
    (fa, y, pa, paths_a), (fb, yb, pb, paths_b) = rows["float32"], rows[config.precision]
    if not (np.array_equal(paths_a, paths_b) and np.array_equal(y, yb)):
        raise ConfigError("The float32 and the lowered view hold other validation images (a photo "
                          "changed in between). Fix: run the same command again.")
    right_a, right_b = (pa == y).astype(float), (pb == y).astype(float)
    resampled = np.random.default_rng(0).integers(0, len(y), (RESAMPLES, len(y)))
    differences = (right_b[resampled] - right_a[resampled]).mean(axis=1) * 100
    distance = np.linalg.norm((fb - fa).reshape(len(y), -1), axis=1) / \
        np.maximum(np.linalg.norm(fa.reshape(len(y), -1), axis=1), 1e-12)
    speed = (lowered.images_per_second / full.images_per_second
             if lowered.computed and full.computed and full.images_per_second else None)
    cost = {"precision": config.precision, "validation_images": int(len(y)),
            "accuracy": {"float32": round(float(right_a.mean()), 4),
                         config.precision: round(float(right_b.mean()), 4)},
            "difference_points": round(float((right_b.mean() - right_a.mean()) * 100), 2),
            "difference_interval": [round(float(v), 2) for v in np.percentile(differences, [2.5, 97.5])],
            "mcnemar_p": round(stats.mcnemar(y, pb, pa), 4),
            "feature_distance_median": round(float(np.median(distance)), 4),
            "speedup": round(speed, 2) if speed is not None else None}
    cost["sentence"] = _sentence(cost)
    view = Path(lowered.path)
    atomic_write(view.with_name(view.stem + KEPT),
                 json.dumps({"view_key_hash": key_hash(FeatureCache(view).key), "cost": cost,
                             "sha256": _digest(cost)}).encode())
    return cost


def kept_cost(cache: FeatureCache) -> dict | None:
    """The cost ``--compare-precision`` kept beside this view (None: none, not for this view's key,
    or failing its checksum: a regular file of at most :data:`KEPT_BYTES`, never a link)."""
    path = cache.path.with_name(cache.path.stem + KEPT)
    try:
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode) or info.st_size > KEPT_BYTES:
            return None
        record = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("view_key_hash") != key_hash(cache.key):
        return None
    cost = record.get("cost")
    if not (isinstance(cost, dict) and isinstance(cost.get("sentence"), str)
            and record.get("sha256") == _digest(cost)):
        return None  # a byte changed since it was kept: its figures are not said
    return cost


def _digest(cost: dict) -> str:
    return hashlib.sha256(json.dumps(cost, sort_keys=True).encode()).hexdigest()


def _sentence(cost: dict) -> str:
    lo, hi = cost["difference_interval"]
    speed = (f", and extracted {cost['speedup']:.1f}x as fast as float32" if cost["speedup"] is not None
             else " (float32's rows came from the store, so no speed is compared)")
    return (f"{cost['precision']} changes validation accuracy by {cost['difference_points']:+.1f} points "
            f"[{lo:+.1f}, {hi:+.1f}], McNemar p = {cost['mcnemar_p']:.2g}, on "
            f"{cost['validation_images']} images (logistic regression; float32 "
            f"{cost['accuracy']['float32']:.4f}); its features are {cost['feature_distance_median']:.1%} "
            f"from float32's (median relative L2){speed}.")
