"""A classifier fitted on at most ``rows`` training rows: a seeded sample of each class past that.

For a model whose prediction cost grows with its training rows (k nearest
neighbours compares every scored row with every training row), so that its
cost stops growing with the training split past the bound. The fitted model
says how many rows it kept (``sampled_``), and the leaderboard's note says so.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone

ROWS = 20_000


class AtMostRows(ClassifierMixin, BaseEstimator):
    """``estimator`` fitted on all rows, or on a class-proportional seeded sample of ``rows``."""

    def __init__(self, estimator=None, rows=ROWS, random_state=0):
        self.estimator = estimator
        self.rows = rows
        self.random_state = random_state

    def fit(self, X, y):
        y = np.asarray(y)
        keep = np.arange(len(y))
        rows = max(int(self.rows), getattr(self.estimator, "n_neighbors", 1))  # k neighbours need k rows
        if len(y) > rows:
            rng = np.random.default_rng(self.random_state)
            share = rows / len(y)
            keep = np.sort(np.concatenate([
                rng.choice(members, max(1, round(len(members) * share)), replace=False)
                for members in (np.flatnonzero(y == c) for c in np.unique(y))]))
        self.estimator_ = clone(self.estimator).fit(np.asarray(X)[keep], y[keep])
        self.classes_ = self.estimator_.classes_
        self.sampled_ = (len(keep), len(y))
        return self

    def predict(self, X):
        return self.estimator_.predict(X)

    def predict_proba(self, X):
        return self.estimator_.predict_proba(X)


def note(models: dict[str, object]) -> str:
    """The sentence for the leaderboard about every model fitted on a sample (empty if none)."""
    said = []
    for name, model in models.items():
        found = _sampled(model)
        if found and found[0] < found[1]:
            said.append(f"{name} was fitted on a seeded sample of {found[0]:,} of its {found[1]:,} "
                        "training rows (each class in proportion): its prediction compares every row "
                        "with every training row.")
    return " ".join(said)


def _sampled(model) -> tuple[int, int] | None:
    """``sampled_`` of ``model`` or of a step or wrapped estimator inside it."""
    seen = [model]
    while seen:
        part = seen.pop()
        if hasattr(part, "sampled_"):
            return part.sampled_
        seen += [step for _, step in getattr(part, "steps", [])]
        if hasattr(part, "estimator"):  # a calibration map, a frozen model
            seen.append(part.estimator)
    return None
