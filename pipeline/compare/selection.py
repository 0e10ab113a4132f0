"""What every selection strategy returns: the chosen, fitted models and their validation scores.

Holdout (:mod:`.holdout`), K-fold (:mod:`.kfold`) and streamed (:mod:`.streamed`)
selection each return one :class:`Selection`; :mod:`.finish` then scores the
test split, ranks, marks ties and writes the run folder the same way for all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConfigError
from ..features.view import FeatureCache, SplitData

if TYPE_CHECKING:
    from ..heads.outofcore import FeatureRows
    from ..heads.registry import Classifier


@dataclass
class Selected:
    """One classifier's chosen model and what choosing it cost."""

    name: str
    model: object
    params: dict
    candidates: list[dict]
    search_seconds: float
    fit_seconds: float
    predict_seconds: float = 0.0


@dataclass
class Selection:
    """A strategy's result, everything the shared finishing step needs.

    Attributes:
        specs: the registry entries compared, in the order given.
        models: name -> the final fitted model.
        validation: name -> validation metrics (out-of-fold for K-fold).
        predictions: name -> split -> predicted labels.
        probas: name -> split -> probabilities over every class; None when
            streamed (the run then has no data audit and no report).
        shown: the splits as the report shows them (labels, features or None).
        audited: the splits the data audit reads.
        note: what the leaderboard's reader must know about the selection.
        rows: each split's rows in the file, when features were streamed (None: in memory).
        uncalibrated: name -> the model before ``--calibrate`` mapped its probabilities.
    """

    specs: list[Classifier]
    models: dict[str, Selected]
    validation: dict[str, dict]
    predictions: dict[str, dict[str, np.ndarray]]
    probas: dict[str, dict[str, np.ndarray]] | None
    shown: dict[str, SplitData]
    audited: dict[str, SplitData]
    note: str = ""
    rows: dict[str, FeatureRows] | None = None
    uncalibrated: dict[str, object] = field(default_factory=dict)


def short(params: dict) -> dict:
    """``{"clf__C": 1}`` -> ``{"C": 1}``."""
    return {k.rsplit("__", 1)[-1]: v for k, v in params.items()}


def check_split(cache: FeatureCache, data: SplitData, split: str) -> None:
    """Refuse a split with non-finite features, or with one class where two are needed."""
    bad = ~np.isfinite(data.features.reshape(len(data.features), -1)).all(axis=1)
    if bad.any():
        examples = ", ".join(np.asarray(data.paths)[bad][:3])
        raise ConfigError(
            f"{cache.path}: {int(bad.sum())} of {len(bad)} {split} feature rows contain NaN "
            f"or inf (e.g. {examples}). Classifiers cannot use them. Fix: extract again with "
            "`--dtype float32`, and check that the backbone weights are the intended ones."
        )
    check_classes(cache, data.labels, split)


def check_classes(cache: FeatureCache, labels: np.ndarray, split: str) -> None:
    present = np.unique(labels)
    if split != "test" and len(present) < 2:
        only = cache.classes[int(present[0])] if len(present) else "none"
        raise ConfigError(
            f"{cache.path}: the {split} split has a single class ({only}), so classifiers "
            f"cannot be {'trained' if split == 'train' else 'selected'} on it. Fix: add images "
            f"of the other classes ({', '.join(c for c in cache.classes if c != only)}) to "
            f"{split}, or extract with different split fractions."
        )
