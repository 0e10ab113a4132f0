"""Which unlabelled images to label next: a folder ranked by a strategy, against a run's labels.

The head is retrained on the run's training labels (seconds, on cached
features); the strategy ranks the folder's images with it. ``auto`` takes
the strategy the run's replay recommended on the user's own data, and margin
uncertainty when the run has no replay. An image whose content the run
already has a label for is never suggested, whatever its name.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._blas import one_blas_thread
from .._files import atomic_write, write_new
from ..config import SuggestConfig
from ..errors import ConfigError
from ..heads.proba import full_proba
from ..runs import pages
from ..runs.run import Run
from ..words import counted
from .strategies import MISSING, STRATEGIES, head, query, quiet_heads

log = logging.getLogger(__name__)

DEFAULT = "margin"  # without a replay: the strategy that beat random at every budget on the shared photos


@dataclass(frozen=True)
class SuggestResult:
    """The images to label next, the first first.

    Attributes:
        suggestions: {"path", "score", "predicted", "probability", "reason", "why"} each; "why" is
            the reason and its score in words.
        already_labelled: images of the folder whose content the run has a label for.
        chosen_by: "replay" (the run's recommendation), "default" or "given".
    """

    strategy: str
    chosen_by: str
    suggestions: list[dict]
    already_labelled: int
    pool: int
    unreadable: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"strategy": self.strategy, "chosen_by": self.chosen_by,
                "suggestions": self.suggestions, "already_labelled": self.already_labelled,
                "pool": self.pool, "unreadable": self.unreadable}


def choose_strategy(reference: Run, name: str) -> tuple[str, str]:
    """The strategy asked for; for `auto`, the run's replay recommendation, else the default."""
    if name != "auto":
        return name, "given"
    if reference.replay is not None:
        return reference.replay["recommended"], "replay"
    return DEFAULT, "default"


def new_photos(got, labelled: dict[str, str], pool, run) -> tuple[list[int], int]:
    """The rows of ``got`` (a pool's features) to offer, a copy within the pool once, and how many
    of its photos the run already has labels for.

    Raises:
        ConfigError: no photo of the pool could be read, or every one is labelled in the run.
    """
    seen, fresh = set(), []
    for i, fp in enumerate(got.fingerprints):
        if fp not in labelled and fp not in seen:  # a copy within the pool is offered once
            seen.add(fp)
            fresh.append(i)
    already = sum(fp in labelled for fp in got.fingerprints)
    by_split = Counter(labelled[fp] for fp in got.fingerprints if fp in labelled)
    if not got.paths:
        shown = "; ".join(f"{u['path']}: {u['reason']}" for u in got.unreadable[:3])
        more = f"; and {len(got.unreadable) - 3} more" if len(got.unreadable) > 3 else ""
        raise ConfigError(
            f"None of the {counted(len(got.unreadable), 'image')} under {pool} could be read "
            f"({shown}{more}). Fix: pass a folder of readable photos (JPEG, PNG, BMP, GIF, WebP, "
            "TIFF).")
    if not fresh:
        where = ", ".join(f"{n} {'is' if n == 1 else 'are'} its {split} photos" if i == 0 else f"{n} its {split} photos"
                          for i, (split, n) in enumerate(by_split.most_common()))
        raise ConfigError(
            f"Every readable image under {pool} ({counted(len(got.paths), 'image')}) is already "
            f"labelled in run {run} (every split of a run counts as labelled): {where}. Fix: pass "
            "a folder of new photos.")
    return fresh, already


def suggest(run: str | os.PathLike, pool: str | os.PathLike,
            config: SuggestConfig | None = None) -> SuggestResult:
    """Rank the images under ``pool`` for labelling, against run ``run``'s labelled images.

    Raises:
        RunError: ``run`` is not a run, or its features are gone.
        ConfigError: ``pool`` has no image, or only images the run already has labels for.
    """
    config = config or SuggestConfig()
    reference = Run.open_compared(run)
    name, chosen_by = choose_strategy(reference, config.strategy)
    strategy = STRATEGIES[name]
    model_name = reference.name(features_in=True)
    model = reference.load(model_name)  # a model that fails its checksum stops here, before any work
    cache = reference.cache()
    got = reference.images(pool, "pool", batch_size=config.batch_size, engine=config.engine,
                           weights=config.weights)
    fresh, already = new_photos(got, reference.labelled(), pool, run)
    train = cache.load("train")
    candidates = got.features[fresh].reshape(len(fresh), -1)
    features = np.vstack([train.features.reshape(len(train.labels), -1), candidates])
    labels = np.concatenate([train.labels.astype(np.int64), np.full(len(fresh), MISSING)])
    classes = np.arange(len(reference.classes))
    with one_blas_thread(), quiet_heads():  # small matrices: one BLAS thread is ten times faster
        fitted = head(config.classifier, classes, 0).fit(features, labels) if strategy.uses_head else None
        rows, utilities = query(strategy, features, labels, min(config.n, len(fresh)), 0, fitted)
    chosen = rows - len(train.labels)
    proba = full_proba(model.predict_proba(got.features[[fresh[c] for c in chosen]]), model.classes_,
                       len(classes))
    suggestions = [{"path": got.paths[fresh[c]], "score": round(float(u), 4),
                    "predicted": reference.classes[int(p.argmax())],
                    "probability": round(float(p.max()), 4), "reason": strategy.reason,
                    "why": _why(strategy.reason, float(u))}
                   for c, u, p in zip(chosen, utilities, proba)]
    log.info("suggest: %s by %s (%s); predictions by %s", counted(len(suggestions), "image"), name,
             chosen_by, model_name)
    return SuggestResult(name, chosen_by, suggestions, already, len(got.paths), got.unreadable)


def _why(reason: str, score: float) -> str:
    """The reason and its score in words."""
    if reason == "representative":  # TypiClust's score is a typicality percentile
        return f"representative: more typical than {score:.0%} of the unlabelled images"
    return f"{reason} (score {score:.3g})"


def write_page(result: SuggestResult, path: str | os.PathLike, run: str) -> Path:
    """The suggestions as a page of thumbnails, in a new file (or one this command wrote before).

    Raises:
        ConfigError: ``path`` is a file this tool did not write.
    """
    path = Path(path)
    why = {"replay": "the run's replay recommended it", "default": "the run has no replay",
           "given": "as asked"}[result.chosen_by]
    page = pages.suggestions_page(
        f"Label these next: {counted(len(result.suggestions), 'image')}",
        f"Ranked by {result.strategy} ({why}) against run {run}, from {result.pool} images; "
        f"{result.already_labelled} already labelled there are left out.", result.suggestions)
    if path.exists() or path.is_symlink():
        if not _written_here(path):
            raise ConfigError(f"`--out` {path} is not a page this tool wrote, and the pipeline never "
                              "replaces what it did not write. Fix: pass a new file name.")
        atomic_write(path, page.encode())  # the page an earlier suggest wrote
    else:
        write_new(path, page.encode())
    return path


def _written_here(path: Path) -> bool:
    """A regular file (not a link) that starts like a page of ``suggest``: read 2 KB, no more."""
    if path.is_symlink() or not path.is_file():
        return False
    with open(path, "rb") as f:
        return pages.GENERATOR.encode() in f.read(2048)
