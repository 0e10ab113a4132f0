"""Streamed selection: stage 2 when the features do not fit in memory.

Features are read from the file in blocks (see :mod:`pipeline.heads.outofcore`):
classifiers that stream with "sgd" train one SGD model per C in the same
passes, those that stream with "batches" read the rows themselves, and the
others are left out, which the leaderboard's note says.
"""

from __future__ import annotations

import logging
import time

from ..config import CompareConfig
from ..features.view import FeatureCache, SplitData
from ..heads import outofcore
from ..errors import ConfigError
from ..heads.registry import CLASSIFIERS, Classifier, chosen_in_fit, public_params
from ..runs import scores
from .selection import Selected, Selection, check_classes

log = logging.getLogger(__name__)


def streamed(cache: FeatureCache, config: CompareConfig, specs: list[Classifier], configured: dict,
             need: int, budget: int) -> Selection:
    """Select each streamable classifier on validation, reading blocks of ``budget``'s size."""
    left_out = _check_streamable(specs, config.refit, need, budget)
    specs = [c for c in specs if c.name not in left_out]
    block = outofcore.block_rows(cache.feature_shape, budget)
    rows = {s: outofcore.FeatureRows(str(cache.path), s, block) for s in cache.splits}
    labels = {s: r.labels for s, r in rows.items()}
    for split in ("train", "validation"):
        check_classes(cache, labels[split], split)
    n_classes = len(cache.classes)
    final = {c.name: _fit(c, *configured[c.name], rows, config, n_classes) for c in specs}
    scored, predictions = {}, {}
    for c in specs:
        s, start = final[c.name], time.perf_counter()
        proba = outofcore.predict_proba(s.model, rows["validation"], c.streams == "batches")
        s.predict_seconds = time.perf_counter() - start
        scored[c.name], predicted = scores.score(labels["validation"], proba, range(n_classes), n_classes)
        predictions[c.name] = {"validation": predicted}
    note = (f"Out of core: {need / 2**20:.3g} MB of train and validation features exceed the "
            f"memory budget of {budget / 2**20:.3g} MB, so features were streamed from the file "
            f"in blocks of {block} rows.")
    if left_out:
        note += f" Left out (they cannot train out of core): {', '.join(left_out)}."
    if config.calibrate or config.cv:
        note += " `--calibrate` and `--cv` are not applied out of core."
    shown = {s: SplitData(None, labels[s], []) for s in ("train", "validation")}
    return Selection(specs, final, scored, predictions, None, shown=shown, audited=shown,
                     note=note, rows=rows)


def _fit(c: Classifier, estimator, grid: dict, rows: dict, config: CompareConfig,
         n_classes: int) -> Selected:
    from sklearn.base import clone

    start = time.perf_counter()
    if c.streams == "batches":
        model = clone(estimator).fit(rows["train"], validation_data=rows["validation"])
        return Selected(c.name, model, chosen_in_fit(c, model), [], 0.0, time.perf_counter() - start)
    labels = rows["validation"].labels

    def choose(proba) -> float:
        metrics, _ = scores.score(labels, proba, range(n_classes), n_classes)
        return -scores.rank_key({"validation": metrics, "classifier": ""}, config.scoring)[0]

    param = public_params(estimator)[c.stream_param]
    values = grid.get(param) or [estimator.get_params()[param]]
    model, params, fit_scores = outofcore.fit_linear(
        values, rows["train"], rows["validation"], choose, n_classes=n_classes, spatial=config.spatial,
        class_weight=config.class_weight, seed=config.seed, name=c.name)
    candidates = [{"classifier": c.name, "params": f"{c.stream_param}={r['C']}",
                   f"validation_{config.scoring}": round(float(r["score"]), 4)} for r in fit_scores]
    return Selected(c.name, model, params, candidates, 0.0, time.perf_counter() - start)


def _check_streamable(specs: list, refit: str, need: int, budget: int) -> list[str]:
    """The names of the classifiers left out of an out-of-core comparison (logged)."""
    sizes = f"{need / 2**20:.3g} MB of features > memory budget {budget / 2**20:.3g} MB"
    if not any(c.streams for c in specs):
        can = " or ".join(c.name for c in CLASSIFIERS.values() if c.streams)
        raise ConfigError(
            f"The features do not fit the memory budget ({sizes}), and none of "
            f"{', '.join(c.name for c in specs)} can train out of core. Fix: add {can} to "
            "`--classifiers`, or raise `--memory-budget`.")
    if refit != "train":
        raise ConfigError(
            f"The features do not fit the memory budget ({sizes}); out of core, models are "
            "fitted on train only. Fix: use `--refit train`, or raise `--memory-budget`.")
    left_out = [c.name for c in specs if not c.streams]
    if left_out:
        log.warning("%s: %s cannot train out of core and are left out", sizes, ", ".join(left_out))
    return left_out
