"""Stage 2's defaults by measured value: each classifier's time and rank, and the audit's parts.

In one process (imports done first, as every classifier pays them alike), for
each feature set given:

1. each registered classifier compared alone, rounds times, alternated: the
   seconds of its search, refit and scoring (the leaderboard's own timings)
   and its validation accuracy;
2. the data audit, and within it the neighbour search and each way of getting
   out-of-sample probabilities for label issues (a 5-fold logistic regression,
   the audit's former method, against the neighbours the audit already has).

Feature sets: a view file (``--features``), and ``--synthetic N,D`` features
with a known structure (class centres in a 32-d latent space, mapped to D
dimensions by a random matrix and a ReLU, as a CNN embedding looks).

Usage:

    python benchmarks/bench_defaults.py --features cache/NAME.h5 --synthetic 3000,1280 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _cpu import cpu_line  # this folder is on sys.path when the script runs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def synthetic(path: Path, n: int, dim: int, classes: int = 5, seed: int = 0) -> Path:
    """A view of ``n`` rows (60/20/20) of ReLU embeddings of Gaussian classes in a 32-d latent."""
    from conftest import write_feature_cache

    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 0.3, (classes, 32))  # classes that overlap: accuracy near 0.9
    lift = rng.normal(0, 1 / np.sqrt(32), (32, dim))
    labels = rng.integers(0, classes, n)
    latent = centres[labels] + rng.normal(0, 1, (n, 32))
    features = np.maximum(latent @ lift + rng.normal(0, 0.3, (n, dim)), 0).astype("float32")
    cut = [int(n * 0.6), int(n * 0.8)]
    parts = np.split(np.arange(n), cut)
    return write_feature_cache(path, {s: (features[p], labels[p].astype("int32")) for s, p in
                                      zip(("train", "validation", "test"), parts)},
                               classes=tuple(f"c{k}" for k in range(classes)))


def classifiers_alone(cache: Path, rounds: int) -> dict:
    from pipeline import CompareConfig, compare
    from pipeline.heads.registry import CLASSIFIERS

    seconds = {name: [] for name in CLASSIFIERS}
    accuracy = {}
    with tempfile.TemporaryDirectory() as folder:
        for k in range(rounds):
            for name in CLASSIFIERS:  # alternated: each round times every classifier once
                result = compare(cache, CompareConfig(classifiers=(name,), out=f"{folder}/{name}-{k}"))
                row = result.leaderboard[0]
                seconds[name].append(row["search_seconds"] + row["fit_seconds"] + row["predict_seconds"])
                accuracy[name] = row["validation"]["accuracy"]
    return {name: {"seconds": [round(s, 2) for s in seconds[name]],
                   "median_s": round(statistics.median(seconds[name]), 2),
                   "validation_accuracy": accuracy[name]} for name in CLASSIFIERS}


def _f1(found: np.ndarray, truth: set) -> float:
    hits = len(set(found.tolist()) & truth)
    precision, recall = hits / max(len(found), 1), hits / len(truth)
    return 2 * precision * recall / max(precision + recall, 1e-9)


def audit_parts(cache: Path, rounds: int, k: int = 15) -> dict:
    """The audit's time, and its label-issue method against the neighbours it already has:
    seconds, and the F1 of the issues found against 5 % of labels flipped, over ``rounds`` draws."""
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neighbors import NearestNeighbors

    from pipeline.features.view import FeatureCache
    from pipeline.runs import audit

    view = FeatureCache(cache)
    splits = {}
    for s in view.splits:
        d = view.load(s)
        splits[s] = {"features": d.features, "labels": d.labels, "paths": d.paths, "fingerprints": None}
    x = audit.unit_vectors(np.concatenate([splits[s]["features"] for s in view.splits]))
    labels = np.concatenate([splits[s]["labels"] for s in view.splits]).astype(int)
    n_classes = len(view.classes)
    times = {"whole audit": [], "5-fold logreg": [], f"{k} neighbours": []}
    f1 = {"5-fold logreg": [], f"{k} neighbours": []}
    for draw in range(rounds):
        rng = np.random.default_rng(draw)
        flipped = rng.choice(len(labels), len(labels) // 20, replace=False)
        noisy = labels.copy()
        noisy[flipped] = (noisy[flipped] + rng.integers(1, n_classes, len(flipped))) % n_classes
        start = time.perf_counter()
        audit.audit(splits, view.classes)
        times["whole audit"].append(time.perf_counter() - start)
        start = time.perf_counter()
        proba = cross_val_predict(LogisticRegression(C=1.0, max_iter=2000), x, noisy, method="predict_proba",
                                  cv=StratifiedKFold(5, shuffle=True, random_state=0))
        times["5-fold logreg"].append(time.perf_counter() - start)
        f1["5-fold logreg"].append(_f1(np.flatnonzero(find_label_issues(noisy, proba)), set(flipped.tolist())))
        start = time.perf_counter()
        distance, index = NearestNeighbors(n_neighbors=k + 1, metric="cosine",
                                           algorithm="brute").fit(x).kneighbors(x)
        weight = 1 - distance[:, 1:]  # similarity-weighted votes of the neighbours, self left out
        votes = np.stack([((noisy[index[:, 1:]] == c) * weight).sum(1) for c in range(n_classes)], 1)
        proba = (votes + 0.5) / (votes.sum(1, keepdims=True) + 0.5 * n_classes)
        times[f"{k} neighbours"].append(time.perf_counter() - start)
        f1[f"{k} neighbours"].append(_f1(np.flatnonzero(find_label_issues(noisy, proba)), set(flipped.tolist())))
    return {"seconds": {k_: round(statistics.median(v), 3) for k_, v in times.items()},
            "label_issue_f1": {k_: round(float(np.mean(v)), 3) for k_, v in f1.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", action="append", default=[], help="a view file (repeatable)")
    parser.add_argument("--synthetic", action="append", default=[], metavar="N,D")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"CPU: {cpu_line()}")
    import keras  # noqa: F401  (every classifier is timed after the imports)

    with tempfile.TemporaryDirectory() as folder:
        sets = [Path(f) for f in args.features]
        for spec in args.synthetic:
            n, dim = (int(v) for v in spec.split(","))
            sets.append(synthetic(Path(folder) / f"synthetic-{n}x{dim}.h5", n, dim))
        for cache in sets:
            print(f"\n{cache.name}")
            alone = classifiers_alone(cache, args.rounds)
            for rank, (name, row) in enumerate(sorted(alone.items(),
                                                      key=lambda kv: -kv[1]["validation_accuracy"]), 1):
                print(f"  {rank}. {name:<11} validation accuracy {row['validation_accuracy']:.4f}  "
                      f"{row['median_s']:6.2f} s (rounds: {row['seconds']})")
            print("  audit: " + json.dumps(audit_parts(cache, args.rounds)))


if __name__ == "__main__":
    main()
