"""Settings of the labelling loop's commands: ``replay``, ``suggest``, ``label`` and ``drift``."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from ..loop.strategies import STRATEGIES
from .fields import check_choices, documented, setting
from .stages import ENGINES, _positive, _seed

# Heads that fit on a handful of labels in milliseconds, every round of every seed.
LOOP_HEADS = ("logreg", "knn")
DEFAULT_BUDGETS = (10, 20, 40, 80, 160)
# A p-value resolved to 1e-5 decides any level a person would set; more permutations only cost.
MAX_PERMUTATIONS = 100_000


def _budgets(value) -> tuple[int, ...]:
    """Budgets as integers (the CLI gives text), checked positive and increasing."""
    try:
        budgets = tuple(int(b) for b in value)
    except (TypeError, ValueError):
        budgets = ()
    if not budgets or budgets[0] < 1 or any(a >= b for a, b in zip(budgets, budgets[1:])):
        raise ConfigError("`--budgets` must be increasing positive integers, like 10,20,40,80,160. "
                          f"Got {','.join(map(str, value)) if isinstance(value, tuple) else value!r}.")
    return budgets


@documented
@dataclass(frozen=True)
class ReplayConfig:
    """Settings of ``replay``: the labelling loop, replayed on images that are already labelled."""

    strategies: tuple[str, ...] = setting(tuple(STRATEGIES), choices=tuple(STRATEGIES),
                                          help="comma-separated strategies; random, the baseline, "
                                               "is always replayed")
    budgets: tuple[int, ...] = setting(DEFAULT_BUDGETS, help="comma-separated label counts at which "
                                       "the head is scored on validation; the first is the start set")
    step: int = setting(10, help="labels added per round, between budgets")
    seeds: int = setting(10, help="repeats, each with its own start set; the intervals are over them")
    classifier: str = setting("logreg", choices=LOOP_HEADS, help="the head retrained every round")

    def __post_init__(self) -> None:
        check_choices(self)
        object.__setattr__(self, "budgets", _budgets(self.budgets))
        _positive(self, "step", "seeds")
        if self.seeds < 2:
            raise ConfigError(f"`--seeds` must be at least 2: an interval needs repeats. Got {self.seeds}.")


@dataclass(frozen=True)
class _NewPhotos:
    """What a command that reads new photos through the store needs to compute those it lacks."""

    batch_size: int = setting(32, help="images per forward pass, for images the store lacks")
    engine: str = setting("auto", choices=ENGINES, help="what computes features the store lacks")
    weights: str | None = setting(None, help="the weights file stage 1 used, if it used one")


def _strategy():
    return setting("auto", choices=("auto", *STRATEGIES),
                   help="auto (the strategy the run's replay recommended, else margin) or a strategy name")


@documented
@dataclass(frozen=True)
class SuggestConfig(_NewPhotos):
    """Settings of ``suggest``: which unlabelled images to label next."""

    n: int = setting(20, help="how many images to suggest")
    strategy: str = _strategy()
    classifier: str = setting("logreg", choices=LOOP_HEADS, help="the head that ranks the images")

    def __post_init__(self) -> None:
        check_choices(self)
        _positive(self, "n", "batch_size")


@documented
@dataclass(frozen=True)
class DriftConfig(_NewPhotos):
    """Settings of ``drift``: is a new batch drawn like the run's training images?"""

    permutations: int = setting(1000, help="permutations of the MMD test; its p-value is at least "
                                           "1/(permutations+1)")
    level: float = setting(0.01, help="a batch is drifted when the p-value is below this")
    novel: int = setting(10, help="how many of the most novel images to name")
    reference: int = setting(2000, help="training images the batch is compared with (a seeded "
                                        "sample, when there are more)")
    seed: int = setting(0, help="seeds the permutations and the sample")

    def __post_init__(self) -> None:
        check_choices(self)
        _positive(self, "permutations", "novel", "reference", "batch_size")
        _seed(self)
        if self.permutations > MAX_PERMUTATIONS:
            raise ConfigError(f"`--permutations` must be at most {MAX_PERMUTATIONS:,}: that resolves "
                              f"p-values to 1e-5, finer than any `--level`. Got {self.permutations:,}.")
        if not 0 < self.level < 1:
            raise ConfigError(f"`--level` must be between 0 and 1. Got {self.level!r}.")


@documented
@dataclass(frozen=True)
class LabelConfig(_NewPhotos):
    """Settings of ``label``: a local page where a person labels the suggested photos."""

    n: int = setting(12, help="photos a batch; the head is retrained after each batch")
    strategy: str = _strategy()
    classifier: str = setting("logreg", choices=LOOP_HEADS, help="the head retrained after each batch")
    port: int = setting(0, help="the port to serve on (0: a free one)")
    host: str = setting("127.0.0.1", help="the address to serve on; another than 127.0.0.1 lets "
                                         "other machines reach the page (with its token)")
    no_browser: bool = setting(False, help="print the page's address without opening a browser")

    def __post_init__(self) -> None:
        check_choices(self)
        _positive(self, "n", "batch_size")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"`--port` must be between 0 (a free one) and 65535. Got {self.port}.")
