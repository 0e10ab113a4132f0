"""The strategies that choose which images to label next, in one table: scikit-activeml's,
and TypiClust at a bounded cost (:mod:`.typiclust`).

Each entry says why it picks an image (the reason a person reads beside a
suggestion), whether it ranks by the head's probabilities, and which
strategy picks the first labels, when there are none yet: a random draw, or
TypiClust, which needs no labels. This module imports scikit-activeml only
when a strategy picks, so the settings classes check names against it
without the cost.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import numpy as np

MISSING = -1  # the label of an image nobody has labelled yet


def _skactiveml(name: str, **settings):
    """A pick function that runs scikit-activeml's query strategy ``name``."""
    def pick(features, labels, n, seed, head=None):
        import skactiveml.pool

        chooser = getattr(skactiveml.pool, name)(missing_label=MISSING, random_state=seed, **settings)
        given = {"clf": head, "fit_clf": False} if head is not None else {}
        rows, utilities = chooser.query(features, labels, batch_size=n, return_utilities=True, **given)
        rows = np.asarray(rows, dtype=np.int64)
        return rows, utilities[np.arange(len(rows)), rows]
    return pick


def _typiclust(features, labels, n, seed, head=None):
    from .typiclust import typiclust

    return typiclust(features, labels != MISSING, n, seed)


_MARGIN = _skactiveml("UncertaintySampling", method="margin_sampling")


@dataclass(frozen=True)
class Strategy:
    """One entry.

    Attributes:
        name: what users type.
        summary: one line for ``--help`` and the README.
        reason: why it picks an image: uncertain, representative, novel or random.
        pick: (features, labels, n, seed, head) -> the rows to label, in order, and each
            one's score.
        uses_head: ranks by the head's probabilities (``pick`` takes the fitted head).
        starts_with: the strategy that picks the first labels when there are none.
    """

    name: str
    summary: str
    reason: str
    pick: Callable[..., tuple[np.ndarray, np.ndarray]]
    uses_head: bool = False
    starts_with: str = "random"


_TABLE = (
    Strategy("random", "a uniform draw: the baseline every other strategy is compared with",
             "random", _skactiveml("RandomSampling")),
    Strategy("margin", "the images whose two likeliest classes are closest (margin uncertainty)",
             "uncertain", _MARGIN, uses_head=True),
    Strategy("typiclust", "the most typical image of each k-means cluster no label covers yet "
             "(TypiClust; its score is a typicality percentile)",
             "representative", _typiclust, starts_with="typiclust"),
    Strategy("typiclust_margin", "TypiClust picks the first labels, then margin uncertainty",
             "uncertain", _MARGIN, uses_head=True, starts_with="typiclust"),
    Strategy("coreset", "the images farthest from every labelled one (greedy core-set)",
             "novel", _skactiveml("CoreSet")),
)
STRATEGIES: dict[str, Strategy] = {s.name: s for s in _TABLE}
BASELINE = "random"


def query(strategy: Strategy, features: np.ndarray, labels: np.ndarray, n: int, seed: int,
          head=None) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` unlabelled rows ``strategy`` picks, in its order, and the utility of each.

    Args:
        labels: one per row, :data:`MISSING` where unlabelled (the candidates).
        head: a fitted scikit-activeml classifier, for a strategy that ``uses_head``.
    """
    return strategy.pick(features, labels, n, seed, head if strategy.uses_head else None)


def first_labels(strategy: Strategy, features: np.ndarray, n: int, seed: int) -> np.ndarray:
    """The first ``n`` rows to label, before any label exists.

    A random start is drawn the same way for every strategy that starts at
    random, so the replay's comparisons with random are paired on it.
    """
    if strategy.starts_with == BASELINE:
        return np.random.default_rng(seed).choice(len(features), n, replace=False)
    unlabelled = np.full(len(features), MISSING)
    return query(STRATEGIES[strategy.starts_with], features, unlabelled, n, seed)[0]


def head(classifier: str, classes: np.ndarray, seed: int):
    """The registry's ``classifier``, unfitted, taking :data:`MISSING` labels as unlabelled.

    scikit-activeml's wrapper fits on the labelled rows alone and answers for
    every class, even one no label has reached yet.
    """
    from skactiveml.classifier import SklearnClassifier

    from ..heads.registry import get_classifier

    return SklearnClassifier(get_classifier(classifier).build(seed), classes=classes,
                             missing_label=MISSING, random_state=seed)


@contextmanager
def quiet_heads():
    """Silence scikit-activeml's warnings that a class has no label yet: the head answers for it."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="skactiveml")
        yield
