"""Stage 2: select every classifier on validation, evaluate the test split once.

One run flows through three steps::

    compare()  settings, the cache and its splits checked; the classifiers configured
      ├─ holdout()   candidates fitted on train, chosen on validation   (.holdout)
      ├─ kfold()     chosen by K-fold over train + validation (--cv)    (.kfold)
      └─ streamed()  features read in blocks when they exceed memory    (.streamed)
    finish()   the test split read once, ranked, ties marked, the run folder written (.finish)

Each strategy returns one :class:`~.selection.Selection`. The test split is
read from the cache only after every classifier is chosen and fitted, and each
final model is evaluated on it exactly once. scikit-learn and joblib are
imported on first use, so importing the package stays cheap for stage 1.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from ..config import CompareConfig
from ..console import phase, quiet
from ..errors import ConfigError
from ..features.view import FeatureCache
from ..heads import outofcore
from ..heads.registry import configure, get_classifier
from ..runs import check_writable, default_run_dir
from .finish import CompareResult, finish
from .selection import check_split

log = logging.getLogger(__name__)

__all__ = ["CompareResult", "compare"]


@quiet
def compare(features: str | os.PathLike, config: CompareConfig | None = None,
            cluster: object | None = None) -> CompareResult:
    """Stage 2: compare classifiers on a feature cache and write a run folder.

    Args:
        features: a finished feature cache file (from ``extract_features``).
        config: stage-2 settings.
        cluster: a ``distributed.Client`` (see :mod:`pipeline.features.cluster`) to
            run the scikit-learn searches on; None runs them on this machine.

    Returns:
        The leaderboard and the run folder it was written to.

    Raises:
        PipelineError: bad settings, or a cache that cannot be used.
    """
    config = config or CompareConfig()
    started = time.perf_counter()
    specs = [get_classifier(n) for n in config.classifiers]
    configured = {c.name: configure(c, config.seed, config.params.get(c.name, {}),
                                    config.class_weight, config.spatial) for c in specs}
    cache = FeatureCache(features)
    out = Path(config.out) if config.out else default_run_dir(cache.path)
    check_writable(out, config.overwrite)
    _check_splits(cache)
    budget = outofcore.budget_bytes(config.memory_budget_mb)
    need = outofcore.in_memory_bytes(cache.counts, cache.feature_shape)
    if need > budget:
        from .streamed import streamed

        return finish(cache, config, streamed(cache, config, specs, configured, need, budget), out, started)
    with phase("stage 2: read the features"):
        train, validation = cache.load("train"), cache.load("validation")
    for split, data in (("train", train), ("validation", validation)):
        check_split(cache, data, split)
    log.info("comparing %s on %d train / %d validation rows of %s",
             ", ".join(config.classifiers), len(train.labels), len(validation.labels), cache.path.name)
    with phase("stage 2: fit and select every classifier"):
        if config.cv:
            from .kfold import kfold

            selection = kfold(config, specs, configured, train, validation, len(cache.classes))
        else:
            from .holdout import holdout

            selection = holdout(config, specs, configured, train, validation, len(cache.classes),
                                cluster=cluster)
    from ..heads import sampled
    from ..runs import neighbours

    audited = sum(len(d.labels) for d in selection.audited.values())
    selection.note = " ".join(filter(None, [selection.note, sampled.note(
        {name: s.model for name, s in selection.models.items()}), neighbours.note(audited)]))
    return finish(cache, config, selection, out, started)


def _check_splits(cache: FeatureCache) -> None:
    """Refuse a cache without train and validation rows to fit and select on."""
    for split in ("train", "validation"):
        if split not in cache.splits:
            raise ConfigError(
                f"{cache.path} has no {split} split (it has {', '.join(cache.splits)}); "
                "classifiers are fitted on train and selected on validation. Fix: extract "
                "with `--validation-fraction` above 0."
            )
        if cache.counts[split] == 0:
            unreadable = sum(q["split"] == split for q in cache.quarantined)
            raise ConfigError(
                f"{cache.path} has no {split} rows: all {unreadable} of its {split} images were "
                "quarantined (`inspect` lists them with the reasons). Fix: replace or repair "
                "those images, then extract again.")
