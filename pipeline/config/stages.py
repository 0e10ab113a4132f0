"""Settings of each stage, as frozen dataclasses validated once.

Every field is a :func:`~pipeline.config.fields.setting`: its help text is
the flag's help, the docstring's entry and the TOML key's meaning at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..backbones.registry import DEFAULT_BACKBONE, POOLINGS
from ..errors import ConfigError
from ..finetune.augment import parse_augment
from ..heads.registry import CLASSIFIERS, DEFAULTS
from ..heads.vocabulary import OPTIMIZERS, SPATIAL
from .fields import check_choices, collect_params, documented, parse_param, setting

DTYPES = ("float32", "float16")
ENGINES = ("auto", "keras", "openvino")
COMPUTE_PRECISIONS = ("float32", "bf16", "int8")
DECODE_MODES = ("auto", "full")
ORIENTATIONS = ("exif", "ignore")
# Pillow's warning threshold (about 89 Mpx, a 9459 x 9459 image).
MAX_PIXELS = 89_478_485
# The largest image file read, by default: a JPEG, PNG or WebP of any camera
# is under 100 MB, and an uncompressed 8-bit RGB TIFF at the pixel budget
# takes 256 MiB. Twice that also admits 16-bit scans of about 45 Mpx, and
# bounds what one file can cost in memory.
MAX_FILE_BYTES = 512 * 2**20
# The largest input side: no backbone in the registry or KerasHub is trained
# above 1024 px, and one 4096 px image is a 200 MB float tensor per batch slot.
MAX_IMAGE_SIZE = 4096
SCORINGS = ("accuracy", "balanced_accuracy", "f1_macro", "neg_log_loss")
REFITS = ("train", "train+validation")
CALIBRATIONS = ("sigmoid", "isotonic")
PRECISIONS = ("auto", "float32", "mixed_float16")
DEFAULT_CLASSIFIERS = DEFAULTS
EXPORT_FORMATS = ("keras", "savedmodel", "tflite", "openvino")
QUANTIZE = ("none", "int8")


SEED_RANGE = (0, 2**32 - 1)  # what numpy, scikit-learn and Keras take as a seed


def _seed(config) -> None:
    if not isinstance(config.seed, int) or not SEED_RANGE[0] <= config.seed <= SEED_RANGE[1]:
        raise ConfigError(f"`--seed` must be an integer from {SEED_RANGE[0]} to {SEED_RANGE[1]}. "
                          f"Got {config.seed!r}.")


def _rate(config, name: str, zero: bool = False) -> None:
    """A rate, when set, is a positive number (or 0, where ``zero``: that part does not train)."""
    value = getattr(config, name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or not (0 <= value if zero else 0 < value) or value == float("inf")):
        what = "0 or a positive number" if zero else "a positive number"
        raise ConfigError(f"`--{name.replace('_', '-')}` must be {what}. Got {value!r}.")


def _positive(config, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"`--{name.replace('_', '-')}` must be a positive integer. Got {value!r}.")


@documented
@dataclass(frozen=True)
class SplitConfig:
    """How images are assigned to splits."""

    validation_fraction: float = setting(
        0.1, help="share of each class sent to validation when the folder has no split folders")
    test_fraction: float = setting(
        0.1, help="share of each class sent to test when the folder has no split folders")
    test_from_validation: float = setting(
        0.0, help="share of an existing validation split moved to test when there is no test "
                  "split (e.g. 0.2, as the TensorFlow tutorial does)")

    def __post_init__(self) -> None:
        for name in ("validation_fraction", "test_fraction", "test_from_validation"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(
                    f"`{name}` must be in [0, 1). Got {value!r}."
                )
        if self.validation_fraction + self.test_fraction >= 1.0:
            raise ConfigError(
                "`validation_fraction` + `test_fraction` must leave images for "
                f"training (sum < 1). Got {self.validation_fraction} + "
                f"{self.test_fraction}."
            )


@documented
@dataclass(frozen=True)
class ExtractConfig:
    """Stage 1 settings."""

    backbone: str = setting(DEFAULT_BACKBONE, help="a registry name (the `backbones` command lists "
                                                   "them), hub:<KerasHub preset or preset folder>, "
                                                   "or your own .keras file or SavedModel folder")
    alpha: float | None = setting(None, help="width multiplier of the MobileNet family (default: "
                                             "the backbone's)")
    image_size: int | None = setting(None, help="input side in pixels (default: the backbone's)")
    pooling: str | None = setting(None, choices=POOLINGS,
                                  help="how the output becomes one vector: avg or max over a "
                                       "feature map, none to keep the map; cls (class token) or "
                                       "avg (mean of patch tokens) for transformers; pooled for "
                                       "an image-text model's vision tower (default: the "
                                       "backbone's, listed by the `backbones` command)")
    layer: str | None = setting(None, help="own model: the layer whose output is the feature "
                                           "(default: the one feeding its final classifier)")
    preprocess: str | None = setting(None, help="own model: a registry backbone whose "
                                                "preprocess_input to apply first, e.g. mobilenet "
                                                "(default: none, the model's own layers)")
    weights: str = setting("imagenet", help="imagenet (for hub: the preset's own), none (random, "
                                            "seeded) or a weights file")
    dtype: str = setting("float32", choices=DTYPES, help="stored feature type")
    # 16: OpenVINO's throughput on MobileNet was higher at 16 than at 32 or 64 on both an
    # AVX2 and an AVX-512 CPU (BENCHMARKS.md), and a batch's activations stay in cache.
    batch_size: int = setting(16, help="images per forward pass")
    chunk_size: int = setting(512, help="images per resumable chunk; a killed run loses at most "
                                        "one chunk per split")
    decode: str = setting("auto", choices=DECODE_MODES,
                          help="auto decodes large JPEGs at a reduced scale (1/2, 1/4 or 1/8, never "
                               "below the input size), much faster for phone photos; full decodes "
                               "every pixel, as keras.utils.image_dataset_from_directory does")
    orientation: str = setting("exif", choices=ORIENTATIONS,
                               help="exif turns photos upright by their EXIF orientation, as photo "
                                    "viewers show them; ignore uses the stored pixels")
    max_pixels: int = setting(MAX_PIXELS, help="images whose header claims more pixels are "
                                               "quarantined before they are decoded")
    max_file_bytes: int = setting(MAX_FILE_BYTES, help="larger files (in bytes) are quarantined "
                                                       "by their size alone, without being read")
    cache_dir: str = setting("cache", help="folder of the feature store and the views")
    seed: int = setting(0, help="seeds random weights (weights none)")
    engine: str = setting("auto", choices=ENGINES,
                          help="what runs the forward pass: auto (OpenVINO on a machine without a "
                               "GPU, else Keras), keras or openvino; float32 engines give the same "
                               "features and share the store's rows")
    precision: str = setting("float32", choices=COMPUTE_PRECISIONS,
                             help="float32; bf16 (OpenVINO on a CPU with bfloat16 units); or int8 "
                                  "(OpenVINO, the network quantized by NNCF on up to 300 of the "
                                  "dataset's images, once per spec). bf16 and int8 are faster but "
                                  "give other numbers, so each is a feature spec of its own")
    split: SplitConfig = setting(factory=SplitConfig, help="how images are assigned to splits")

    def __post_init__(self) -> None:
        check_choices(self)
        _seed(self)
        _positive(self, "batch_size", "chunk_size", "max_pixels", "max_file_bytes")
        if self.image_size is not None:
            _positive(self, "image_size")
            if self.image_size > MAX_IMAGE_SIZE:
                raise ConfigError(
                    f"`--image-size` must be at most {MAX_IMAGE_SIZE}: no pretrained backbone "
                    "takes larger inputs, and one such image is a float tensor of "
                    f"{self.image_size ** 2 * 12 // 2**20} MB per batch slot. Got {self.image_size}. "
                    "Fix: leave it unset for the backbone's own size.")
        if self.chunk_size < self.batch_size:
            raise ConfigError(
                f"`--chunk-size` must be at least `--batch-size` ({self.batch_size}). "
                f"Got {self.chunk_size}."
            )

    @property
    def cache_path(self) -> Path:
        return Path(self.cache_dir).expanduser()


@documented
@dataclass(frozen=True)
class CompareConfig:
    """Stage 2 settings."""

    classifiers: tuple[str, ...] = setting(
        DEFAULT_CLASSIFIERS, choices=tuple(CLASSIFIERS),
        help="comma-separated registry names (see the `classifiers` command); default: "
             + ",".join(DEFAULT_CLASSIFIERS))
    params: dict = setting(
        factory=dict, flag="param", metavar="CLF.NAME=V[,V...]", parse=parse_param,
        collect=collect_params,
        help="a classifier's parameter: one value fixes it, several are searched on validation; "
             "repeatable (e.g. logreg.C=0.01,0.1 dense.epochs=30)")
    scoring: str = setting("accuracy", choices=SCORINGS,
                           help="the validation metric that selects hyper-parameters and ranks "
                                "the leaderboard (a scikit-learn scorer name)")
    refit: str = setting("train", choices=REFITS,
                         help="train keeps the models selected on train; train+validation refits "
                              "each on both with its chosen settings before the test")
    class_weight: str | None = setting(None, choices=("balanced",),
                                       help="balanced weights classes by inverse frequency")
    spatial: str = setting("flatten", choices=tuple(SPATIAL),
                           help="how spatial features (pooling none) become vectors")
    seed: int = setting(0, help="seeds every model")
    n_jobs: int = setting(-1, flag="jobs",
                          help="worker processes for the scikit-learn models (-1: one per two "
                               "cores, so none on a two-core machine, where they cost more than "
                               "they save)")
    memory_budget_mb: float = setting(
        0, flag="memory-budget", metavar="MB",
        help="when train and validation features (float32, plus a float64 working copy) need "
             "more, stream them from the file; 0: half of this machine's memory")
    cv: int = setting(0, help="K of 2 or more: choose each classifier's settings by stratified K-fold "
                              "cross-validation over train and validation together, report the "
                              "folds' mean and sd and out-of-fold metrics, and fit the chosen "
                              "model on both; the test split is still read once, at the end")
    calibrate: str | None = setting(None, choices=CALIBRATIONS,
                                    help="fit a calibration map of each scikit-learn model's "
                                         "probabilities on validation (CalibratedClassifierCV); "
                                         "the leaderboard reports the calibration error before "
                                         "and after")
    out: str | None = setting(None, help="the run folder (default: runs/<cache name>-<time>)")
    overwrite: bool = setting(False, help="replace a run folder this tool wrote (a folder holding any "
                                           "other file is never replaced)")

    def __post_init__(self) -> None:
        _seed(self)
        if self.memory_budget_mb < 0:
            raise ConfigError(f"`--memory-budget` must be 0 (half of this machine's memory) or "
                              f"a number of MB. Got {self.memory_budget_mb!r}.")
        if not self.classifiers:
            raise ConfigError("`--classifiers` must name at least one classifier. Got none.")
        check_choices(self)
        if self.calibrate is not None:
            if self.refit != "train" or self.cv:
                raise ConfigError("`--calibrate` fits its map on the validation split, which "
                                  f"`--refit train+validation` and `--cv` train on. Got refit "
                                  f"{self.refit!r}, cv {self.cv}. Fix: drop one of them.")
        if self.cv == 1 or self.cv < 0:
            raise ConfigError(f"`--cv` must be 0 (select on validation) or at least 2 folds. "
                              f"Got {self.cv!r}.")
        unused = sorted(set(self.params) - set(self.classifiers))
        if unused:
            raise ConfigError(
                f"`--param` sets {', '.join(unused)}, which `--classifiers` does not include "
                f"({', '.join(self.classifiers)}). Fix: add it to --classifiers or drop the --param."
            )


@documented
@dataclass(frozen=True)
class FinetuneConfig:
    """Stage 3 settings."""

    unfreeze_from: str | int | None = setting(
        None, help="the first base layer to train, by index or name (as the TensorFlow "
                   "tutorial's fine_tune_at = 100, or block5_conv1)")
    unfreeze_top: int | None = setting(
        None, help="train the top N layers of the base instead (default 20 when neither is given)")
    epochs: int = setting(10, help="fine-tuning epochs (the most: early stopping may end sooner)")
    frozen_epochs: int = setting(0, help="epochs with the base frozen and augmentation on, before "
                                         "fine-tuning (the tutorial's feature-extraction phase)")
    learning_rate: float | None = setting(None, help="fine-tuning rate (default: a tenth of the head's)")
    base_learning_rate: float | None = setting(
        None, help="a lower rate for the base's unfrozen layers (discriminative fine-tuning); "
                   "default: the same rate everywhere")
    optimizer: str | None = setting(None, choices=OPTIMIZERS, help="default: the head's")
    momentum: float | None = setting(None, help="momentum of sgd (default: the head's)")
    augment: str = setting(
        "flip,rotate=0.2,zoom=0.2",
        help="comma-separated augmentation: flip[=horizontal|vertical|horizontal_and_vertical], "
             "rotate, zoom, translate, shear, contrast, each a fraction as in Keras (rotate=0.2 "
             "is up to 0.2 of a full turn), or none; active only in training")
    train_bn: bool = setting(False, help="train BatchNormalization layers too, in training mode")
    batch_size: int = setting(32, help="images per step")
    patience: int = setting(3, help="early-stopping patience, in epochs, on validation accuracy")
    tensorboard: bool = setting(False, help="write TensorBoard logs in <run>/finetune/tensorboard")
    data: str | None = setting(None, help="the image folder, when it moved since extraction")
    weights: str | None = setting(None, help="the weights file stage 1 used, if it used one")
    handoff_samples: int = setting(32, help="validation images the hand-off check compares")
    mixed_precision: str = setting("auto", choices=PRECISIONS,
                                   help="training's compute: auto (mixed float16 when a GPU is "
                                        "present), float32 or mixed_float16; the hand-off check "
                                        "always runs in float32 (not extract's --precision, which "
                                        "is stage 1's)")
    seed: int = setting(0, help="seeds shuffling, augmentation and dropout")

    def __post_init__(self) -> None:
        check_choices(self)
        parse_augment(self.augment)
        if self.unfreeze_from is not None and self.unfreeze_top is not None:
            raise ConfigError("Give `--unfreeze-from` or `--unfreeze-top`, not both. "
                              f"Got {self.unfreeze_from!r} and {self.unfreeze_top!r}.")
        _positive(self, "epochs", "batch_size", "handoff_samples")
        _rate(self, "learning_rate")
        _rate(self, "base_learning_rate", zero=True)
        _seed(self)
        if self.momentum is not None and not 0 <= self.momentum < 1:
            raise ConfigError(f"`--momentum` must be in [0, 1). Got {self.momentum!r}.")
        if self.frozen_epochs < 0 or (self.unfreeze_top is not None and self.unfreeze_top < 0):
            raise ConfigError("`--frozen-epochs` and `--unfreeze-top` must not be negative. "
                              f"Got {self.frozen_epochs!r}, {self.unfreeze_top!r}.")


@documented
@dataclass(frozen=True)
class PredictConfig:
    """Settings of ``predict``: which model of a run, and how its features are computed."""

    model: str = setting("best", help="best (the run's recommended model), finetuned, or any "
                                      "other model the run saved (dense, logreg, ...)")
    batch_size: int = setting(32, help="images per forward pass")
    engine: str = setting("auto", choices=ENGINES,
                          help="what computes a stage-2 model's features (as extract's --engine); "
                               "the fine-tuned model runs on Keras")
    weights: str | None = setting(None, help="the weights file stage 1 used, if it used one")

    def __post_init__(self) -> None:
        check_choices(self)
        _positive(self, "batch_size")


@documented
@dataclass(frozen=True)
class ExportConfig:
    """Settings of ``export``: which model of a run, in which format, checked on how many images."""

    model: str = setting("best", help="best (the run's recommended model), dense, finetuned, logreg "
                                      "or linear_svm")
    format: str = setting("keras", choices=EXPORT_FORMATS,
                          help="keras (.keras), savedmodel, tflite (LiteRT) or openvino (IR)")
    quantize: str = setting("none", choices=QUANTIZE,
                            help="int8 (tflite): weights and activations, calibrated on training images")
    out: str = setting("export", help="folder of the exported files and export.json")
    images: int = setting(200, help="validation images the export is checked on")
    representative: int = setting(200, help="training images that calibrate int8 quantization")
    data: str | None = setting(None, help="the data folder, if it moved since stage 1")
    weights: str | None = setting(None, help="the weights file stage 1 used, if it used one")

    def __post_init__(self) -> None:
        check_choices(self)
        if self.quantize == "int8" and self.format != "tflite":
            raise ConfigError(f"`--quantize int8` applies to `--format tflite`. Got `--format "
                              f"{self.format}`. Fix: export tflite, or drop `--quantize`.")
        _positive(self, "images", "representative")
