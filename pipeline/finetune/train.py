"""Stage 3: fine-tune the top of the base, warm-started from the stage-2 head.

The model and its hand-off check are built in :mod:`pipeline.finetune.rebuild`; this
module trains it in the TensorFlow tutorial's two phases (base frozen with
augmentation on, then the top of the base unfrozen at a low learning rate),
with Keras callbacks for early stopping, the best checkpoint, a CSV history,
TensorBoard and resuming, and adds the result to the run.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import backbones
from ..config import FinetuneConfig
from ..console import quiet
from ..errors import ConfigError, RunError
from ..heads.proba import full_proba
from ..runs import FINETUNED, WORK, RunWriter, plots, scores
from ..runs.folder import check_amendable, plot
from .rebuild import Source, handoff_check, open_source, rebuild, unfreeze

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneResult:
    """What a stage-3 run produced.

    Attributes:
        model_path: the fine-tuned ``.keras`` model in the run folder.
        before: validation accuracy of the rebuilt model before training
            (the stage-2 head's, through the images).
        after: validation accuracy of the kept model.
        row: the leaderboard row added as ``finetuned``.
        handoff: the hand-off check's figures.
        epochs: epochs run (both phases); fine_tune_from: the first
            fine-tuning epoch (after the frozen phase).
        seconds_per_epoch: mean wall time of a training epoch.
        improved: an epoch beat the start on validation; when none did, the model kept
            is the start (the head on the unchanged base), and :attr:`kept_because` says why
            it is kept all the same.
    """

    model_path: Path
    before: float
    after: float
    row: dict
    handoff: dict
    epochs: int
    fine_tune_from: int
    first_trainable_layer: int
    seconds_per_epoch: float
    improved: bool = True

    @property
    def kept_because(self) -> str:
        """Why a model that did not beat the head is kept ("" when it beat it)."""
        if self.improved:
            return ""
        return ("no epoch beat the dense head on validation, so the model kept is the start: the head "
                "on the unchanged base, the same answers as `predict --model dense`. It is kept as the "
                "run's pixels-in model, which `export` writes whole; train longer, or at another "
                "learning rate or `--unfreeze-top`, to do better")

    def to_dict(self) -> dict:
        return {"model": str(self.model_path), "validation_accuracy_before": self.before,
                "validation_accuracy_after": self.after, "epochs": self.epochs,
                "fine_tune_from_epoch": self.fine_tune_from,
                "first_trainable_layer": self.first_trainable_layer,
                "seconds_per_epoch": round(self.seconds_per_epoch, 2),
                "handoff": self.handoff, "leaderboard_row": self.row, "improved": self.improved,
                "kept_because": self.kept_because}


def _datasets(source: Source, config: FinetuneConfig) -> dict:
    from ..data.decode import Decoding, labelled_batches

    decoding = Decoding.of_view(source.cache.key, source.spec.image_size)
    out = {}
    for split in source.cache.splits:
        images = source.cache.index(split)
        paths = [str(source.root / p) for p in images.paths]
        out[split] = (labelled_batches(paths, images.labels, decoding, config.batch_size,
                                       shuffle_seed=config.seed if split == "train" else None),
                      np.asarray(images.labels))
    return out


def _probabilities(model, dataset, n_classes: int) -> np.ndarray:
    return full_proba(model.predict(dataset, verbose=0), range(n_classes), n_classes)


def _mixed(precision: str) -> bool:
    """Mixed float16 compute: asked for, or "auto" with a GPU present."""
    import tensorflow as tf

    if precision == "auto":
        return bool(tf.config.list_physical_devices("GPU"))
    return precision == "mixed_float16"


@quiet
def finetune(run: str | os.PathLike, config: FinetuneConfig | None = None,
             callbacks: tuple = (), preprocess=None, strategy=None) -> FinetuneResult:
    """Stage 3: fine-tune the top of the base, starting from the stage-2 head.

    Args:
        run: a run folder written by ``compare`` with a ``dense`` head.
        config: stage-3 settings.
        callbacks: extra Keras callbacks for both phases.
        preprocess: replaces the backbone's preprocessing (only to show the
            hand-off check catching a wrong one).
        strategy: a ``tf.distribute`` strategy (None: MirroredStrategy over
            every GPU when there are several, else the default).

    Raises:
        PipelineError: a run without a dense head, changed images, a wrong
            layer, or a failed hand-off check.
    """
    import tensorflow as tf

    strategy = strategy or backbones.gpu_strategy() or tf.distribute.get_strategy()
    with strategy.scope():  # variables are created, loaded and trained inside it
        return _finetune(run, config or FinetuneConfig(), callbacks, preprocess)


def _finetune(run, config: FinetuneConfig, callbacks: tuple, preprocess) -> FinetuneResult:
    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("`--tensorboard` needs the tensorboard package, which is not installed. "
                          "Fix: pip install -e \".[tensorboard]\", or drop --tensorboard.")
    check_amendable(Path(run))  # before training, not after it
    source = open_source(run, config.data, config.weights)
    n_classes = len(source.cache.classes)
    if [int(c) for c in source.head.classes_] != list(range(n_classes)):
        raise RunError(f"The dense head of {source.run} was trained on classes "
                       f"{list(source.head.classes_)}, not all of {source.cache.classes}.")
    model, core, base, features = rebuild(source, config, preprocess)
    handoff = handoff_check(source, features, base, config.handoff_samples)
    log.info("hand-off check passed on %d images (max difference %.2g)", handoff["images"],
             handoff["max_abs_difference"])
    mixed = _mixed(config.mixed_precision)
    if mixed:
        model, core, base, features = rebuild(source, config, preprocess, like=base)
    data = _datasets(source, config)
    validation = data["validation"]
    start = _probabilities(core, validation[0], n_classes)
    before = float(np.mean(np.argmax(start, 1) == validation[1]))
    training = _Training(source, config, model, base, data, mixed=mixed, callbacks=callbacks)
    done, first = training.fit(before)
    # The start's weights, kept when no epoch beat them, predict what they predicted before.
    kept_start = training.kept_start
    kept = start if kept_start else _probabilities(core, validation[0], n_classes)
    after = float(np.mean(np.argmax(kept, 1) == validation[1]))
    history = _read_history(training.csv)
    params = {"first_trainable_layer": first, "learning_rate": training.rate,
              "epochs": len(history["epoch"]), "augment": config.augment,
              "mixed_precision": "mixed_float16" if mixed else "float32",
              "base_learning_rate": config.base_learning_rate}
    test = None
    if "test" in data:  # looked at once, after training
        test, _ = scores.score(data["test"][1], _probabilities(core, data["test"][0], n_classes),
                               range(n_classes), n_classes)
    row = scores.leaderboard_row("finetuned", params, scores.score(validation[1], kept, range(n_classes),
                                                                   n_classes)[0],
                                 test, fit_seconds=sum(training.seconds))
    training.clean_up()
    _add_to_run(source, model, history, done=done, handoff=handoff,
                params={"first_trainable_layer": first, **asdict(config)}, row=row)
    log.info("fine-tuned: validation accuracy %.4f -> %.4f", before, after)
    seconds = training.seconds
    result = FinetuneResult(source.run / FINETUNED, before, after, row, handoff, len(history["epoch"]), done,
                            first, float(np.mean(seconds)) if seconds else 0.0, improved=not kept_start)
    if not result.improved:
        log.warning("stage 3: %s", result.kept_because)
    return result


class _Training:
    """The two phases of stage 3 over the run's work folder, which makes them resumable: a killed
    run goes on from its last epoch (Keras's BackupAndRestore), and the best epoch on validation
    is kept (ModelCheckpoint), or the start when none beat it."""

    def __init__(self, source: Source, config: FinetuneConfig, model, base, data: dict, *, mixed: bool,
                 callbacks: tuple):
        self.config, self.model, self.base, self.mixed, self.extra = config, model, base, mixed, callbacks
        self.n_classes = len(source.cache.classes)
        self.train, self.validation = data["train"][0], data["validation"][0]
        self.work = source.run / WORK
        self.work.mkdir(exist_ok=True)
        self.csv, self.best = self.work / "history.csv", self.work / "best.weights.h5"
        self.start, self.frozen = self.work / "start.weights.h5", self.work / "frozen.weights.h5"
        self.frozen_marker = self.work / "frozen.done"
        if not (self.frozen_marker.exists() or any(self.work.glob("backup-*"))):
            for stale in (self.csv, self.start, self.best):  # an earlier, finished run's
                stale.unlink(missing_ok=True)
        self.head = source.head
        self.rate = config.learning_rate or self.head.learning_rate / 10
        self.seconds: list[float] = []  # wall time of each training epoch

    def fit(self, before: float) -> tuple[int, int]:
        """Both phases; returns the first fine-tuning epoch and the first trainable layer."""
        if not self.start.exists():
            self.model.save_weights(self.start)
        if self.config.frozen_epochs and not self.frozen_marker.exists():
            self.base.trainable = False  # the tutorial's feature-extraction phase, augmentation on
            self.head.compile(self.model, self.n_classes, steps_per_execution=1, loss_scale=self.mixed)
            self.model.fit(self.train, validation_data=self.validation, epochs=self.config.frozen_epochs,
                           shuffle=False, verbose=0,
                           callbacks=self._callbacks("frozen", max(before, _best(self.csv)),
                                                     self.config.frozen_epochs))
            self.model.save_weights(self.frozen)
            self.frozen_marker.write_text(str(self.config.frozen_epochs))
        elif self.frozen_marker.exists():
            _load_weights(self.model, self.frozen)
        done = int(self.frozen_marker.read_text()) if self.frozen_marker.exists() else 0
        first = unfreeze(self.base, self.config)
        self._fine_tune(before, done)
        _load_weights(self.model, self.start if self.kept_start else self.best)
        return done, first

    @property
    def kept_start(self) -> bool:
        """No epoch beat the start on validation (so none left a checkpoint), until ``clean_up``."""
        return not self.best.exists()

    def _fine_tune(self, before: float, done: int) -> None:
        import keras

        from ..heads.dense import DenseHead

        config = self.config
        changed = {k: v for k, v in (("optimizer", config.optimizer), ("momentum", config.momentum))
                   if v is not None}
        self.trainer = DenseHead(**{**self.head.get_params(), **changed}) if changed else self.head
        # Recompile: what is trainable is fixed when the model is compiled.
        self.slower = None
        if config.base_learning_rate is not None:  # discriminative: the base learns slower
            self.slower = (frozenset(v.path for v in self.base.weights), config.base_learning_rate / self.rate)
        self.trainer.compile(self.model, self.n_classes, learning_rate=self.rate, steps_per_execution=1,
                             loss_scale=self.mixed, slower=self.slower)
        stopper = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=config.patience)
        last = done + config.epochs
        self.model.fit(self.train, validation_data=self.validation, initial_epoch=done, epochs=last,
                       shuffle=False, verbose=0,
                       callbacks=[*self._callbacks("finetune", max(before, _best(self.csv)), last), stopper])

    def _callbacks(self, phase: str, threshold: float, last: int) -> list:
        import keras

        from .progress import EpochProgress

        steps = int(self.train.cardinality()) if int(self.train.cardinality()) > 0 else None
        starts = []
        timer = keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs: starts.append(time.perf_counter()),
            on_epoch_end=lambda epoch, logs: self.seconds.append(time.perf_counter() - starts[-1]))
        cbs = [EpochProgress("frozen base" if phase == "frozen" else "fine-tuning", last, steps),
               keras.callbacks.BackupAndRestore(str(self.work / f"backup-{phase}")),
               keras.callbacks.CSVLogger(str(self.csv), append=True),
               keras.callbacks.ModelCheckpoint(str(self.best), monitor="val_accuracy", mode="max",
                                               save_best_only=True, save_weights_only=True,
                                               initial_value_threshold=threshold),
               timer, *self.extra]
        if self.config.tensorboard:
            cbs.append(keras.callbacks.TensorBoard(str(self.work / "tensorboard" / phase)))
        return cbs

    def clean_up(self) -> None:
        """Leave a model that plain Keras loads, and no work files but the history."""
        if self.slower:  # save with a stock optimizer, so plain keras.models.load_model reads the file
            self.trainer.compile(self.model, self.n_classes, learning_rate=self.rate, steps_per_execution=1,
                                 loss_scale=self.mixed)
        for leftover in (self.start, self.best, self.frozen, self.frozen_marker):
            leftover.unlink(missing_ok=True)


def _add_to_run(source: Source, model, history: dict, *, done: int, handoff: dict, params: dict,
                row: dict) -> None:
    """The finished run amended as a whole: a copy gains the model, then replaces it."""
    with RunWriter.amend(source.run) as amended:
        plots.plot_history(amended.path(plot("finetune_history")), history,
                           fine_tune_start=done, title="fine-tuning")
        amended.write_json(f"{WORK}/handoff.json", handoff)
        model.save(amended.path(FINETUNED))
        amended.add_model("finetuned", FINETUNED, params)
        scores.add_leaderboard_row(amended.tmp, row)


def _load_weights(model, path: Path) -> None:
    """Weights only: the checkpoint's optimizer state belongs to another compile."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model.load_weights(path)


def _read_history(path: Path) -> dict[str, list[float]]:
    """The CSV history, one row per epoch (a resumed epoch logged twice keeps its last row)."""
    import csv

    by_epoch: dict[int, dict] = {}
    if path.exists():
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                by_epoch[int(row["epoch"])] = row
    epochs = sorted(by_epoch)
    columns = [c for c in (by_epoch[epochs[0]] if epochs else {}) if c != "epoch"]
    history = {c: [float(by_epoch[e][c]) for e in epochs] for c in columns}
    history["epoch"] = epochs
    return history


def _best(csv_path: Path) -> float:
    values = _read_history(csv_path).get("val_accuracy", [])
    return max(values) if values else 0.0
