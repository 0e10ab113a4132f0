"""K-fold selection: each classifier's settings chosen by stratified K-fold cross-validation
over train and validation together.

The validation columns are out-of-fold predictions of every one of those
images; ``cv`` in each row's validation metrics holds the folds' mean and sd
of the score, and the chosen model is then fitted on all of them. The Keras
head trains a fixed number of epochs in each fold (no validation split is
left to stop early on).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from ..config import CompareConfig
from ..errors import ConfigError
from ..features.view import SplitData
from ..heads.proba import full_proba
from ..heads.registry import Classifier
from ..runs import scores
from .._blas import one_blas_thread
from .selection import Selected, Selection, short

log = logging.getLogger(__name__)


def kfold(config: CompareConfig, specs: list[Classifier], configured: dict, train: SplitData,
          validation: SplitData, n_classes: int) -> Selection:
    """Select each classifier by ``config.cv``-fold cross-validation; see the module's docstring."""
    from sklearn.model_selection import StratifiedKFold

    both = SplitData(np.concatenate([train.features, validation.features]),
                     np.concatenate([train.labels, validation.labels]), [*train.paths, *validation.paths])
    smallest = int(np.bincount(both.labels).min())
    if smallest < config.cv:
        raise ConfigError(f"`--cv {config.cv}` needs at least {config.cv} images of every class in "
                          f"train and validation; the smallest class has {smallest}. Fix: use "
                          f"`--cv {max(2, smallest)}` or fewer folds, or select on validation "
                          "(no `--cv`).")
    folds = StratifiedKFold(config.cv, shuffle=True, random_state=config.seed)
    final, scored, predictions, probas = {}, {}, {}, {}
    for c in specs:
        final[c.name], out_of_fold, cv = _search(c, *configured[c.name], both, folds, config)
        model = final[c.name].model
        scored[c.name], predicted = scores.score(both.labels, out_of_fold, model.classes_, n_classes)
        scored[c.name]["cv"] = cv
        predictions[c.name] = {"validation": predicted}
        probas[c.name] = {"validation": full_proba(out_of_fold, model.classes_, n_classes)}
        log.info("%-10s %d-fold %s %.4f +- %.4f  %s", c.name, config.cv, config.scoring,
                 cv["mean"], cv["sd"], scores.format_params(final[c.name].params))
    note = (f"Selected by {config.cv}-fold cross-validation over train and validation "
            f"({len(both.labels)} images); the validation columns are out-of-fold predictions of "
            "every one of them, and each model was then fitted on all of them.")
    return Selection(specs, final, scored, predictions, probas, shown={"validation": both},
                     audited={"train": train, "validation": validation}, note=note)


def _search(c: Classifier, estimator, grid: dict, both: SplitData, folds,
            config: CompareConfig) -> tuple[Selected, np.ndarray, dict]:
    """The grid searched over the folds, the best refitted on all; its out-of-fold probabilities
    and the folds' mean and sd of the score."""
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV, cross_val_predict

    start = time.perf_counter()
    with one_blas_thread():
        search = GridSearchCV(estimator, grid or {}, scoring=config.scoring, cv=folds, refit=True,
                              error_score="raise").fit(both.features, both.labels)
        out_of_fold = cross_val_predict(clone(search.best_estimator_), both.features, both.labels,
                                        cv=folds, method="predict_proba")
    results, best = search.cv_results_, search.best_index_
    candidates = [{"classifier": c.name, "params": scores.format_params(short(p)),
                   f"cv_{config.scoring}_mean": round(float(m), 4), f"cv_{config.scoring}_sd": round(float(sd), 4)}
                  for p, m, sd in zip(results["params"], results["mean_test_score"], results["std_test_score"])]
    selected = Selected(c.name, search.best_estimator_, short(search.best_params_), candidates,
                        time.perf_counter() - start - search.refit_time_, search.refit_time_)
    cv = {"folds": config.cv, "scoring": config.scoring,
          "mean": round(float(results["mean_test_score"][best]), 4),
          "sd": round(float(results["std_test_score"][best]), 4)}
    return selected, out_of_fold, cv
