"""Settings of each stage, as frozen dataclasses validated once."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .backbones import DEFAULT_BACKBONE
from .data import SplitConfig
from .errors import ConfigError

DTYPES = ("float32", "float16")
DECODE_MODES = ("auto", "full")
SCORINGS = ("accuracy", "balanced_accuracy", "f1_macro", "neg_log_loss")
REFITS = ("train", "train+validation")
SPATIAL = ("flatten", "avg", "max")
OPTIMIZERS = ("adam", "rmsprop", "sgd")
PRECISIONS = ("auto", "float32", "mixed_float16")


def _one_of(flag: str, value, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"`--{flag}` must be one of {', '.join(choices)}. Got {value!r}.")


def _positive(config, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"`--{name.replace('_', '-')}` must be a positive integer. Got {value!r}.")


@dataclass(frozen=True)
class ExtractConfig:
    """Stage 1 settings.

    Args:
        backbone: registry name (see ``pipeline.list_backbones``).
        alpha: width multiplier for the MobileNet family (None: its default).
        image_size: input side in pixels (None: the backbone's default).
        pooling: "avg", "max" or "none" (keep the spatial feature map).
        weights: "imagenet", "none" (random, seeded) or a weights file path.
        dtype: stored feature type, "float32" or "float16".
        batch_size: images per forward pass.
        chunk_size: images per resumable unit of work; a killed run loses at
            most one chunk per split.
        decode: "auto" decodes large JPEGs at a reduced scale (1/2, 1/4 or
            1/8, never below the input size) before resizing, which is much
            faster for phone-sized photos; "full" always decodes every pixel,
            exactly as ``keras.utils.image_dataset_from_directory`` does.
        cache_dir: folder of the HDF5 feature files.
        seed: seeds random weights (``weights="none"``).
        split: how images are assigned to splits.
    """

    backbone: str = DEFAULT_BACKBONE
    alpha: float | None = None
    image_size: int | None = None
    pooling: str = "avg"
    weights: str = "imagenet"
    dtype: str = "float32"
    batch_size: int = 32
    chunk_size: int = 512
    decode: str = "auto"
    cache_dir: str = "cache"
    seed: int = 0
    split: SplitConfig = field(default_factory=SplitConfig)

    def __post_init__(self) -> None:
        _one_of("dtype", self.dtype, DTYPES)
        _one_of("decode", self.decode, DECODE_MODES)
        _positive(self, "batch_size", "chunk_size")
        if self.chunk_size < self.batch_size:
            raise ConfigError(
                f"`--chunk-size` must be at least `--batch-size` ({self.batch_size}). "
                f"Got {self.chunk_size}."
            )

    @property
    def cache_path(self) -> Path:
        return Path(self.cache_dir).expanduser()


@dataclass(frozen=True)
class CompareConfig:
    """Stage 2 settings.

    Args:
        classifiers: registry names (see ``pipeline.CLASSIFIERS``).
        params: classifier -> {parameter short name: values}; one value fixes
            the parameter, several are searched on validation.
        scoring: the validation metric hyper-parameters and the leaderboard
            are ranked by (a scikit-learn scorer name).
        refit: "train" keeps the models selected on train; "train+validation"
            refits each on both with its chosen settings before the test.
        class_weight: None or "balanced".
        spatial: how spatial features (``pooling="none"``) become vectors:
            "flatten", "avg" or "max".
        seed: seeds every model.
        n_jobs: processes for the scikit-learn models (-1: one per core).
        out: the run folder (None: ``runs/<cache name>-<time>``).
        overwrite: replace an existing, non-empty run folder.
    """

    classifiers: tuple[str, ...] = ("logreg", "dense", "linear_svm", "knn", "hist_gbdt")
    params: dict = field(default_factory=dict)
    scoring: str = "accuracy"
    refit: str = "train"
    class_weight: str | None = None
    spatial: str = "flatten"
    seed: int = 0
    n_jobs: int = -1
    out: str | None = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        if not self.classifiers:
            raise ConfigError("`--classifiers` must name at least one classifier. Got none.")
        _one_of("scoring", self.scoring, SCORINGS)
        _one_of("refit", self.refit, REFITS)
        _one_of("spatial", self.spatial, SPATIAL)
        if self.class_weight not in (None, "balanced"):
            raise ConfigError(f"`--class-weight` must be balanced (or absent). Got {self.class_weight!r}.")
        unused = sorted(set(self.params) - set(self.classifiers))
        if unused:
            raise ConfigError(
                f"`--param` sets {', '.join(unused)}, which `--classifiers` does not include "
                f"({', '.join(self.classifiers)}). Fix: add it to --classifiers or drop the --param."
            )



@dataclass(frozen=True)
class FinetuneConfig:
    """Stage 3 settings.

    Args:
        unfreeze_from: the first base layer to train, by index or name (as
            the TensorFlow tutorial's ``fine_tune_at = 100`` or Deep Learning
            with Python's ``block5_conv1``).
        unfreeze_top: train the top N layers of the base instead (default 20
            when neither is given).
        epochs: fine-tuning epochs (the most; early stopping may end sooner).
        frozen_epochs: epochs with the base frozen and augmentation on, before
            fine-tuning (the tutorial's feature-extraction phase).
        learning_rate: fine-tuning rate (None: a tenth of the head's).
        base_learning_rate: a lower rate for the base's unfrozen layers
            (discriminative fine-tuning); None: the same rate everywhere.
        optimizer: "adam", "rmsprop" or "sgd" (None: the head's).
        augment: comma-separated augmentation, e.g. "flip,rotate=0.2,zoom=0.2";
            "none" for no augmentation. Active only in training.
        train_bn: train BatchNormalization layers, in training mode.
        batch_size: images per step.
        patience: early-stopping patience on the validation loss.
        tensorboard: write TensorBoard logs in the run folder.
        data: the image folder, when it moved since extraction.
        weights: the weights file, when stage 1 used one.
        handoff_samples: validation images the hand-off check compares.
        precision: "auto" (mixed float16 when a GPU is present), "float32" or
            "mixed_float16". The hand-off check always runs in float32.
        seed: seeds shuffling, augmentation and dropout.
    """

    unfreeze_from: str | int | None = None
    unfreeze_top: int | None = None
    epochs: int = 10
    frozen_epochs: int = 0
    learning_rate: float | None = None
    base_learning_rate: float | None = None
    optimizer: str | None = None
    augment: str = "flip,rotate=0.2,zoom=0.2"
    train_bn: bool = False
    batch_size: int = 32
    patience: int = 3
    tensorboard: bool = False
    data: str | None = None
    weights: str | None = None
    handoff_samples: int = 32
    precision: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        _one_of("precision", self.precision, PRECISIONS)
        if self.optimizer is not None:
            _one_of("optimizer", self.optimizer, OPTIMIZERS)
        if self.unfreeze_from is not None and self.unfreeze_top is not None:
            raise ConfigError("Give `--unfreeze-from` or `--unfreeze-top`, not both. "
                              f"Got {self.unfreeze_from!r} and {self.unfreeze_top!r}.")
        _positive(self, "epochs", "batch_size", "handoff_samples")
        if self.frozen_epochs < 0 or (self.unfreeze_top is not None and self.unfreeze_top < 0):
            raise ConfigError("`--frozen-epochs` and `--unfreeze-top` must not be negative. "
                              f"Got {self.frozen_epochs!r}, {self.unfreeze_top!r}.")
