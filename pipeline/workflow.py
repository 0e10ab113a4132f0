"""``run_pipeline.py run``: every stage in order, each reusing what is already made.

Stage 1 reuses its feature cache (the cache key decides). Stage 2 reuses the
run folder when it was made from the same cache with the same settings, and
stage 3 the fine-tuned model when its settings are unchanged; a run folder
made with other settings is replaced only with ``overwrite``. The resolved
configuration is saved as ``run.toml`` in the run folder, and passing it back
with ``--config`` reproduces the run.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ._files import atomic_write, key_hash
from .backbones.registry import NAMED_WEIGHTS
from .config import RunConfig, run_config_toml
from .console import phase, phases, phases_reset, quiet
from .errors import ConfigError, DataSourceError, RunError, WeightsError
from .runs.folder import LEADERBOARD, LEADERBOARD_MD, REPORT, RESOLVED, check_writable, is_run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    """What ``run`` did and where the report is."""

    run_dir: Path
    cache: Path
    stages: dict[str, str]  # stage -> "ran" or "reused"
    leaderboard: str  # leaderboard.md
    config: RunConfig  # resolved
    seconds: float
    phases: dict[str, float] = field(default_factory=dict)  # where the seconds went (console.phase)

    def outputs(self) -> dict[str, Path]:
        """The run's files a person opens (those that exist: `stages` may stop at extract)."""
        files = {"leaderboard": self.run_dir / LEADERBOARD_MD,
                 "report": self.run_dir / REPORT, "config": self.run_dir / RESOLVED}
        return {name: path for name, path in files.items() if path.is_file()}

    def to_dict(self) -> dict:
        return {"run_dir": str(self.run_dir) if self.run_dir.is_dir() else None,
                "cache": str(self.cache), "stages": self.stages,
                **{name: str(path) for name, path in self.outputs().items()},
                "seconds": round(self.seconds, 2), "phases": self.phases,
                "classifier_seconds": self._classifier_seconds()}

    def _classifier_seconds(self) -> dict[str, float]:
        """Each classifier's search, refit and scoring (the dense head trains beside the others)."""
        board = self.run_dir / LEADERBOARD
        if not board.is_file():
            return {}
        return {row["classifier"]: round(sum(row.get(k) or 0.0 for k in ("search_seconds", "fit_seconds",
                                                                           "predict_seconds")), 3)
                for row in json.loads(board.read_text(encoding="utf-8"))}


@quiet
def preflight(config: RunConfig) -> None:
    """Refuse now, in seconds, what a later stage would refuse after stage 1's hours.

    The settings classes have checked every name against the registries (classifiers,
    augmentations, poolings); here the backbone and its settings are resolved, and each
    classifier is configured with its ``--param`` values, which scikit-learn validates. A
    model file of the user's is resolved by stage 1 itself, which loads it once.
    """
    from .backbones import kind_of
    from .features.spec import backbone_of

    if kind_of(config.extract.backbone) != "file":
        backbone_of(config.extract)
    if "compare" in config.stages:
        from .heads.registry import configure, get_classifier

        c = config.compare
        for name in c.classifiers:
            configure(get_classifier(name), c.seed, c.params.get(name, {}), c.class_weight, c.spatial)


@quiet
def run_pipeline(config: RunConfig, progress: bool | None = None) -> RunResult:
    """Run the configured stages and return where the report is.

    Raises:
        PipelineError: bad settings, data or weights that cannot be obtained,
            or a run folder of other settings without ``overwrite``.
    """
    from .features.extract import carry_out, plan

    started = time.perf_counter()
    phases_reset()
    run_dir = config.run_dir
    if not is_run(run_dir):  # a folder of the user's is refused now, not after stage 1
        check_writable(run_dir, overwrite=False)
    count = len(config.stages)
    try:
        with phase("run: check every setting"):
            preflight(config)
        with phase("run: find the data"):
            root = _data_and_weights(config)
        log.info("stage 1 of %d: extracting features of %s with %s", count, root, config.extract.backbone)
        work = plan(root, config.extract)
        # The view key is known once the files are fingerprinted: a run folder holding another
        # run is refused now, before stage 1 computes anything.
        reuse = _stage2_reusable(config, work.key, run_dir) if "compare" in config.stages else False
        extracted = carry_out(work, progress)
    except WeightsError as exc:
        raise WeightsError(f"{exc} Or see the whole tool work offline with `--demo`.") from None
    stages = {"extract": "reused" if extracted.hit else "ran"}
    key = extracted.open().key
    if "compare" in config.stages and key != work.key:  # planned anew: a stale stat cache entry
        reuse = _stage2_reusable(config, key, run_dir)
    config = replace(config, name=run_dir.name, out=str(run_dir), extract=replace(
        config.extract, alpha=key["alpha"], image_size=key["image_size"]))
    if "compare" in config.stages:
        log.info("stage 2 of %d: comparing %s", count, ", ".join(config.compare.classifiers))
        stages["compare"] = "reused" if reuse else _compare(config, extracted.path, run_dir)
    if "finetune" in config.stages:
        log.info("stage %d of %d: fine-tuning the top of the base from the dense head", count, count)
        with phase("stage 3: fine-tune"):
            stages["finetune"] = _finetune(config, root, run_dir)
    if run_dir.is_dir():
        atomic_write(run_dir / RESOLVED, run_config_toml(config).encode())
    board = run_dir / LEADERBOARD_MD
    return RunResult(run_dir, extracted.path, stages,
                     board.read_text(encoding="utf-8") if board.is_file() else "", config,
                     time.perf_counter() - started, phases())


def _data_and_weights(config: RunConfig) -> Path:
    """The image folder; where it cannot be had, one refusal that also says whether the backbone's
    weights can be (a new user offline misses both, and should hear it once)."""
    from .data.sources import resolve

    try:
        return resolve(config.data, config.extract.cache_path)
    except DataSourceError as missing:
        if config.extract.weights != "imagenet":
            raise
        from .backbones import build
        from .features.spec import backbone_of

        try:
            build(backbone_of(config.extract), seed=config.extract.seed)
        except WeightsError as weights:
            raise DataSourceError(f"{missing} Also: {weights}") from None
        raise


def _stage2_reusable(config: RunConfig, key: dict, run_dir: Path) -> bool:
    """Whether ``run_dir`` holds this very comparison already (True: reused).

    Raises:
        ConfigError: it holds a run of other settings, and ``overwrite`` is not set.
    """
    from .runs.run import Run

    wanted = _comparable(asdict(config.compare))
    if Run.exists(run_dir):
        earlier = Run.open(run_dir)
        same_cache = earlier.key_hash == key_hash(key)
        if same_cache and _comparable(earlier.config) == wanted:
            log.info("stage 2: reusing %s (same features and settings)", run_dir)
            return True
        if not config.overwrite:
            differs = [] if same_cache else ["the features (stage 1 settings or images)"]
            differs += [f"compare.{k}" for k in wanted if earlier.config.get(k) != wanted[k]]
            raise ConfigError(
                f"Run folder {run_dir} holds a run made with other settings (differs in "
                f"{', '.join(differs)}). Fix: `--overwrite` to replace it, or `--out` (or a "
                "`name`) for a new folder."
            )
    return False


def _compare(config: RunConfig, features: Path, run_dir: Path) -> str:
    with phase("stage 2: import scikit-learn and the heads"):
        from .compare import compare
    compare(features, replace(config.compare, out=str(run_dir), overwrite=config.overwrite))
    return "ran"


def _comparable(settings: dict) -> dict:
    """Stage-2 settings that shape its results (not where they go, or the resources used)."""
    return {k: v for k, v in _as_saved(settings).items()
            if k not in ("out", "overwrite", "n_jobs", "memory_budget_mb")}


def _as_saved(value):
    """``value`` as the run's JSON manifest holds it (tuples become lists)."""
    return json.loads(json.dumps(value, default=str))


def _finetune(config: RunConfig, root: Path, run_dir: Path) -> str:
    from .finetune import finetune
    from .runs import FINETUNED
    from .runs.run import Run

    if not run_dir.is_dir():
        raise RunError("`stages` has finetune without compare, and there is no run folder "
                       f"{run_dir} to start from. Fix: add compare to `stages`.")
    weights = config.extract.weights
    settings = replace(config.finetune, data=str(root),
                       weights=weights if weights not in NAMED_WEIGHTS else None)
    earlier = Run.open(run_dir)
    if "finetuned" in earlier.models and {k: v for k, v in earlier.params("finetuned").items()
                                          if k != "first_trainable_layer"} == _as_saved(asdict(settings)):
        log.info("stage 3: reusing %s/%s (same settings)", run_dir, FINETUNED)
        return "reused"
    finetune(run_dir, settings)
    return "ran"
