"""Holdout selection: every candidate fitted on train and scored on validation.

Each hyper-parameter candidate is fitted on train and scored on validation
(scikit-learn's ``cross_validate`` over a ``PredefinedSplit`` whose only fold
is exactly that); the best candidate's model is kept, not fitted again.
With ``--refit train+validation`` the chosen settings are fitted again on
both; with ``--calibrate`` each model that calibrates gets a map of its
probabilities fitted on validation.
"""

from __future__ import annotations

import logging
import time
from functools import partial

from ..config import CompareConfig
from ..features.view import SplitData
from ..heads.proba import full_proba
from ..heads.registry import Classifier
from ..runs import scores
from .fitting import overlapped, refit, select
from .selection import Selected, Selection

log = logging.getLogger(__name__)


def holdout(config: CompareConfig, specs: list[Classifier], configured: dict, train: SplitData,
            validation: SplitData, n_classes: int, *, cluster=None) -> Selection:
    """Select each classifier on the validation split; see the module's docstring."""
    fit = partial(_fit, configured=configured, train=train, validation=validation,
                  scoring=config.scoring, search_jobs=-1 if cluster is not None else 1)
    selected = overlapped(specs, fit, config, cluster)
    scored, predictions, probas = {}, {}, {}
    for name, s in selected.items():
        start = time.perf_counter()
        proba = s.model.predict_proba(validation.features)
        s.predict_seconds = time.perf_counter() - start
        scored[name], predicted = scores.score(validation.labels, proba, s.model.classes_, n_classes)
        predictions[name] = {"validation": predicted}
        probas[name] = {"validation": full_proba(proba, s.model.classes_, n_classes)}
        log.info("%-10s validation accuracy %.4f  %s", name, scored[name]["accuracy"],
                 scores.format_params(s.params))
    final = selected
    if config.refit == "train+validation":
        final = overlapped(specs, partial(_refit, selected=selected, train=train, validation=validation),
                           config, cluster)
    uncalibrated = {}
    if config.calibrate:
        final, uncalibrated = _calibrated(final, specs, config.calibrate, validation)
    splits = {"train": train, "validation": validation}
    return Selection(specs, final, scored, predictions, probas, shown=splits, audited=splits,
                     uncalibrated=uncalibrated)


def _fit(c: Classifier, *, configured: dict, train: SplitData, validation: SplitData, scoring: str,
         search_jobs: int) -> Selected:
    return select(c, *configured[c.name], train, validation, scoring=scoring, search_jobs=search_jobs)


def _refit(c: Classifier, *, selected: dict[str, Selected], train: SplitData,
           validation: SplitData) -> Selected:
    return refit(c, selected[c.name], train, validation)


def _calibrated(final: dict[str, Selected], specs: list[Classifier], method: str,
                validation: SplitData) -> tuple[dict[str, Selected], dict]:
    """Each model that calibrates, with a calibration map fitted on validation (the model
    itself frozen). Returns the models and the uncalibrated ones by name."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator

    out, before = dict(final), {}
    for c in specs:
        s = final[c.name]
        if not c.calibrates:
            continue
        model = CalibratedClassifierCV(FrozenEstimator(s.model), method=method)
        model.fit(validation.features, validation.labels)
        before[c.name] = s.model
        out[c.name] = Selected(c.name, model, s.params, s.candidates, s.search_seconds, s.fit_seconds,
                               s.predict_seconds)
    return out, before
