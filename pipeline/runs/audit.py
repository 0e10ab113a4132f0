"""What the cached features say about the data itself: copies across splits, suspected
label errors, outliers and class balance (``insights.json`` in a run folder).

- Exact copies share a content fingerprint; near copies (a resized or
  re-encoded photo) are cosine nearest neighbours in feature space, exact up
  to 20,000 images and approximate past that (:mod:`.neighbours`; the
  record's ``neighbour_search`` says which). A pair whose images sit in
  different splits is leakage: the same photo is scored as unseen.
- Suspected label errors come from cleanlab's ``find_label_issues`` on
  out-of-sample probabilities: a logistic regression cross-validated over
  every labelled image on the cached features.
- Outliers are the images farthest from their nearest neighbours.
"""

from __future__ import annotations

import logging

import numpy as np

from ..console import phase
from . import neighbours as nearest

log = logging.getLogger(__name__)

NEAR_DUPLICATE = 0.95  # cosine similarity of features at or above which two images are near copies
NEIGHBOURS = 5
MAX_PAIRS = 200
MAX_LISTED = 50
FOLDS = 5


def unit_vectors(features: np.ndarray) -> np.ndarray:
    """Feature maps averaged to vectors, as float32 unit vectors."""
    x = np.asarray(features, dtype="float32")
    if x.ndim > 2:
        x = x.mean(axis=tuple(range(1, x.ndim - 1)))
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def audit(splits: dict[str, dict], classes: list[str], seed: int = 0) -> dict:
    """The data audit of one view.

    Args:
        splits: split -> ``{"features", "labels", "paths", "fingerprints"}``
            (fingerprints may be None: exact copies are then found as
            similarity 1).
    """
    names = list(splits)
    split_of = np.concatenate([[s] * len(splits[s]["labels"]) for s in names])
    paths = [p for s in names for p in splits[s]["paths"]]
    labels = np.concatenate([np.asarray(splits[s]["labels"]) for s in names]).astype(int)
    x = unit_vectors(np.concatenate([splits[s]["features"] for s in names]))
    prints = [f for s in names for f in (splits[s].get("fingerprints") or [None] * len(splits[s]["labels"]))]
    with phase("stage 2: data audit, neighbours"):
        neighbours, similarity = nearest.neighbours(x, NEIGHBOURS, seed)
    pairs = _duplicates(neighbours, similarity, prints, paths, split_of)
    cross = [p for p in pairs if p["cross_split"]]
    with phase("stage 2: data audit, label issues"):
        issues = _label_issues(x, labels, paths, split_of, classes, seed)
    return {
        "near_duplicates": pairs,
        "cross_split_pairs": len(cross),
        "near_duplicate_threshold": NEAR_DUPLICATE,
        "neighbour_search": nearest.method(len(x)),
        "suspected_label_errors": issues,
        "outliers": _outliers(similarity, paths, split_of),
        "class_balance": {s: {c: int((np.asarray(splits[s]["labels"]) == k).sum())
                              for k, c in enumerate(classes)} for s in names},
    }


def _duplicates(neighbours, similarity, prints, paths, split_of) -> list[dict]:
    found: dict[tuple[int, int], float] = {}
    by_print: dict[str, int] = {}
    for i, fp in enumerate(prints):
        if fp and fp in by_print:
            found[(by_print[fp], i)] = 1.0
        elif fp:
            by_print[fp] = i
    for i in range(len(neighbours)):
        for j, sim in zip(neighbours[i], similarity[i]):
            if sim >= NEAR_DUPLICATE and i != j:
                found.setdefault((min(i, j), max(i, j)), float(sim))
    pairs = [{"a": paths[i], "b": paths[j], "split_a": str(split_of[i]), "split_b": str(split_of[j]),
              "similarity": round(min(sim, 1.0), 4),
              "exact": bool(prints[i] and prints[i] == prints[j]),
              "cross_split": bool(split_of[i] != split_of[j])}
             for (i, j), sim in found.items()]
    pairs.sort(key=lambda p: (not p["cross_split"], -p["similarity"], p["a"]))
    return pairs[:MAX_PAIRS]


def _label_issues(x, labels, paths, split_of, classes, seed) -> dict:
    """cleanlab on out-of-sample probabilities; the reason when they cannot be had."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    counts = np.bincount(labels, minlength=len(classes))
    folds = min(FOLDS, int(counts[counts > 0].min()))
    if folds < 2 or (counts > 0).sum() < 2:
        return {"issues": [], "skipped": "every class needs at least 2 images for cross-validation"}
    model = LogisticRegression(C=1.0, max_iter=2000)
    proba = cross_val_predict(model, x, labels, cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
                              method="predict_proba")
    full = np.zeros((len(labels), len(classes)))
    present = np.flatnonzero(counts)
    full[:, present] = proba
    dense = np.searchsorted(present, labels)
    issues = find_label_issues(dense, proba, return_indices_ranked_by="self_confidence")
    quality = get_label_quality_scores(dense, proba)
    return {"issues": [{"path": paths[i], "split": str(split_of[i]), "given": classes[labels[i]],
                        "suggested": classes[int(np.argmax(full[i]))],
                        "label_quality": round(float(quality[i]), 4),
                        "p_given": round(float(full[i, labels[i]]), 4)}
                       for i in issues[:MAX_LISTED]],
            "found": int(len(issues)), "folds": folds,
            "method": "cleanlab.filter.find_label_issues on cross-validated logistic regression"}


def _outliers(similarity, paths, split_of) -> list[dict]:
    distance = 1.0 - similarity.mean(axis=1)
    count = min(MAX_LISTED, max(1, len(distance) // 100))
    order = np.argsort(-distance)[:count]
    return [{"path": paths[i], "split": str(split_of[i]), "distance": round(float(distance[i]), 4),
             "median_distance": round(float(np.median(distance)), 4)} for i in order]
