"""Replay the labelling loop on images that are already labelled, to choose a strategy.

Each strategy starts from a few labels and adds a batch a round, retraining
the head each time, as a person labelling would; the head is scored on the
validation split at each budget. Every strategy that starts at random starts
from the same draw as ``random`` for a given seed, and every one is scored on
the same validation images, so its difference from random is paired by seed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import ReplayConfig
from ..errors import ConfigError
from ..features import FeatureCache
from ..features.view import SplitData
from ..runs import stats
from ..words import counted
from .strategies import BASELINE, MISSING, STRATEGIES, Strategy, first_labels, head, query, quiet_heads

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplayResult:
    """Validation accuracy of each strategy at each budget, over seeds.

    Attributes:
        accuracy: strategy -> (seeds, budgets), ``random`` first.
        all_labels: the head's accuracy with every training label.
    """

    budgets: list[int]
    classifier: str
    accuracy: dict[str, np.ndarray]
    all_labels: float
    train_images: int
    validation_images: int

    def curve(self, name: str) -> np.ndarray:
        """Mean and 95 % interval over seeds, per budget, as (3, budgets)."""
        return np.clip(stats.mean_interval(self.accuracy[name]), 0.0, 1.0)  # accuracy is in [0, 1]

    def against_random(self, name: str) -> np.ndarray:
        """Paired by seed: mean difference from random, its interval, and p, as (4, budgets)."""
        return stats.paired_t(self.accuracy[name], self.accuracy[BASELINE])

    @property
    def recommended(self) -> str:
        """The best mean over the budgets among strategies never significantly worse than random."""
        safe = [n for n in self.accuracy if n == BASELINE or (self.against_random(n)[2] >= 0).all()]
        return max(safe, key=lambda n: self.accuracy[n].mean())  # random first: it wins a tie

    def labels_saved(self, name: str | None = None) -> list[dict]:
        """Per budget: the labels ``name`` (default: the recommended) needs to reach random's
        mean accuracy there, interpolated between budgets (None when it never does)."""
        name = name or self.recommended
        mean, baseline = self.curve(name)[0], self.curve(BASELINE)[0]
        out = []
        for budget, target in zip(self.budgets, baseline):
            needed = _labels_to_reach(self.budgets, mean, target)
            out.append({"budget": budget, "random_accuracy": round(float(target), 4),
                        "labels": None if needed is None else round(float(needed), 1),
                        "saved": None if needed is None else round(float(budget - needed), 1)})
        return out

    def to_dict(self) -> dict:
        strategies = {}
        for name in self.accuracy:
            mean, low, high = self.curve(name)
            difference, d_low, d_high, p = self.against_random(name)
            strategies[name] = {
                "mean": _rounded(mean), "ci": _rounded(np.stack([low, high], 1)),
                "vs_random": {"difference": _rounded(difference),
                              "ci": _rounded(np.stack([d_low, d_high], 1)), "p": _rounded(p)}}
        return {"budgets": self.budgets, "strategies": strategies, "recommended": self.recommended,
                "seeds": int(len(self.accuracy[BASELINE])), "classifier": self.classifier,
                "all_labels": round(self.all_labels, 4), "labels_saved": self.labels_saved(),
                "train_images": self.train_images, "validation_images": self.validation_images}

    def markdown(self) -> str:
        """The learning curves as a table: mean and interval, and the paired difference from random."""
        best = self.recommended
        lines = ["| strategy | " + " | ".join(f"{b} labels" for b in self.budgets) + " |",
                 "|---|" + "---|" * len(self.budgets)]
        for name in self.accuracy:
            mean, low, high = self.curve(name)
            difference, _, _, p = self.against_random(name)
            cells = [f"{m:.3f} [{lo:.3f}, {hi:.3f}]" + ("" if name == BASELINE else
                                                         f"<br>{d:+.3f} (p {q:.2g})")
                     for m, lo, hi, d, q in zip(mean, low, high, difference, p)]
            star = " (recommended)" if name == best else ""
            lines.append(f"| {name}{star} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"


def _rounded(values: np.ndarray) -> list:
    return np.round(np.asarray(values, dtype=float), 4).tolist()


def _labels_to_reach(budgets: list[int], curve: np.ndarray, target: float) -> float | None:
    """Where ``curve`` (means at ``budgets``) first reaches ``target``, linearly between budgets."""
    for i, (budget, accuracy) in enumerate(zip(budgets, curve)):
        if accuracy >= target:
            if i == 0:
                return float(budget)
            below, before = budgets[i - 1], curve[i - 1]
            return below + (budget - below) * (target - before) / (accuracy - before)
    return None


def _splits(cache: FeatureCache, budgets: tuple[int, ...]) -> tuple[SplitData, SplitData]:
    """The training split (the pool labels are drawn from) and validation (where heads are scored)."""
    if "validation" not in cache.splits or cache.counts["validation"] == 0:
        raise ConfigError(f"replay scores each head on the validation split, and {cache.path} has "
                          "none. Fix: extract with a validation split (a validation/ folder, or "
                          "`--validation-fraction`).")
    train = cache.load("train")
    present = np.unique(train.labels)
    if len(present) < 2:
        raise ConfigError(f"replay needs at least two classes in the training split; {cache.path} "
                          f"has {counted(len(present), 'class', 'classes')}. Fix: extract a folder "
                          "with a subfolder per class.")
    if budgets[-1] > len(train.labels):
        raise ConfigError(f"`--budgets` goes up to {budgets[-1]} labels, but the training split has "
                          f"{counted(len(train.labels), 'image')}. Fix: pass budgets up to "
                          f"{len(train.labels)}.")
    return train, cache.load("validation")


def _curve(strategy: Strategy, train: SplitData, validation: SplitData, classes: np.ndarray,
           config: ReplayConfig, seed: int) -> list[float]:
    """One seed of the loop: validation accuracy at each budget."""
    from .._blas import one_blas_thread

    x, y = train.features, train.labels.astype(np.int64)
    labels = np.full(len(y), MISSING)
    with one_blas_thread(), quiet_heads():
        start = first_labels(strategy, x, config.budgets[0], seed)
        labels[start] = y[start]
        labelled = len(start)
        model = head(config.classifier, classes, seed).fit(x, labels)
        scores = []
        for budget in config.budgets:
            while labelled < budget:
                rows, _ = query(strategy, x, labels, min(config.step, budget - labelled),
                                seed * 100_003 + labelled, model)
                labels[rows] = y[rows]
                labelled += len(rows)
                model = head(config.classifier, classes, seed).fit(x, labels)
            scores.append(float((model.predict(validation.features) == validation.labels).mean()))
    return scores


def replay(features: str | os.PathLike, config: ReplayConfig | None = None,
           workers: int | None = None) -> ReplayResult:
    """Replay the labelling loop with each strategy on a feature cache's training split.

    Args:
        features: a feature cache written by ``extract``, with train and validation splits.
        workers: processes (default: one per core); each runs whole seeds.

    Raises:
        ConfigError: no validation split, a single class, or budgets past the training split.
    """
    from joblib import Parallel, delayed

    config = config or ReplayConfig()
    cache = FeatureCache(features)
    train, validation = _splits(cache, config.budgets)
    classes = np.arange(len(cache.classes))
    names = [BASELINE, *(s for s in config.strategies if s != BASELINE)]
    log.info("replaying %s over %s", ", ".join(names), counted(config.seeds, "seed"))
    jobs = Parallel(n_jobs=workers or os.cpu_count() or 1)(
        delayed(_curve)(STRATEGIES[name], train, validation, classes, config, seed)
        for name in names for seed in range(config.seeds))
    accuracy = {name: np.asarray(jobs[i * config.seeds:(i + 1) * config.seeds])
                for i, name in enumerate(names)}
    with quiet_heads():
        everything = head(config.classifier, classes, 0).fit(train.features, train.labels)
    full = float((everything.predict(validation.features) == validation.labels).mean())
    return ReplayResult(list(config.budgets), config.classifier, accuracy, full,
                        len(train.labels), len(validation.labels))


def check_out(out: str | os.PathLike) -> None:
    """Refuse an ``--out`` the replay could not be written into: a folder of the user's, or a run
    folder that also holds files of the user's."""
    from ..runs import folder

    out = Path(out)
    if folder.is_run(out):
        folder.check_amendable(out, ", or pass another `--out`")
    else:
        folder.check_writable(out, overwrite=False)


def save(result: ReplayResult, out: str | os.PathLike) -> Path:
    """Write the replay into ``out``: a run folder it joins, or a new or empty folder.

    The run's ``suggest --strategy auto`` then uses the recommended strategy.
    """
    from ..runs import folder, plots

    out = Path(out)
    check_out(out)
    writer = folder.RunWriter.amend(out) if folder.is_run(out) else folder.RunWriter(out)
    try:
        writer.write_json(folder.REPLAY, result.to_dict())
        writer.write_text(folder.REPLAY_MD, result.markdown())
        plots.plot_learning_curves(writer.path(folder.plot("replay")), result.budgets,
                                   {n: result.curve(n) for n in result.accuracy}, result.all_labels)
        return writer.commit({"stage": "replay"} if writer.base is None else None)
    except BaseException:
        writer.discard()
        raise
