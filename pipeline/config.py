"""Settings of each stage, as frozen dataclasses validated once."""

from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path

from .backbones import DEFAULT_BACKBONE
from .data import SplitConfig
from .errors import ConfigError

DTYPES = ("float32", "float16")
ENGINES = ("auto", "keras", "openvino")
COMPUTE_PRECISIONS = ("float32", "bf16")
DECODE_MODES = ("auto", "full")
ORIENTATIONS = ("exif", "ignore")
# Pillow's warning threshold (about 89 Mpx, a 9459 x 9459 image).
MAX_PIXELS = 89_478_485
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
        orientation: "exif" turns photos upright by their EXIF orientation,
            as photo viewers show them; "ignore" uses the stored pixels.
        max_pixels: images whose header claims more pixels are quarantined
            before they are decoded, so no file can exhaust memory.
        cache_dir: folder of the HDF5 feature files.
        seed: seeds random weights (``weights="none"``).
        engine: what runs the forward pass: "auto" (OpenVINO on a machine
            without a GPU, else Keras), "keras" or "openvino". Float32 engines
            give the same features and share the store's rows.
        precision: "float32", or "bf16" (OpenVINO on a CPU with bfloat16
            units: faster, but other numbers, so a feature spec of its own).
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
    orientation: str = "exif"
    max_pixels: int = MAX_PIXELS
    cache_dir: str = "cache"
    seed: int = 0
    engine: str = "auto"
    precision: str = "float32"
    split: SplitConfig = field(default_factory=SplitConfig)

    def __post_init__(self) -> None:
        _one_of("dtype", self.dtype, DTYPES)
        _one_of("engine", self.engine, ENGINES)
        _one_of("precision", self.precision, COMPUTE_PRECISIONS)
        _one_of("decode", self.decode, DECODE_MODES)
        _one_of("orientation", self.orientation, ORIENTATIONS)
        _positive(self, "batch_size", "chunk_size", "max_pixels")
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
        n_jobs: worker processes for the scikit-learn models (-1: one per two
            cores, so none on a two-core machine, where they cost more than they save).
        memory_budget_mb: when train and validation features (float32, plus a
            float64 working copy) need more, stage 2 streams them from the file
            (see :mod:`pipeline.outofcore`); 0 means half of this machine's memory.
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
    memory_budget_mb: float = 0
    out: str | None = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.memory_budget_mb < 0:
            raise ConfigError(f"`--memory-budget` must be 0 (half of this machine's memory) or "
                              f"a number of MB. Got {self.memory_budget_mb!r}.")
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
        momentum: momentum of "sgd" (None: the head's).
        augment: comma-separated augmentation, e.g. "flip,rotate=0.2,zoom=0.2"
            (flip, rotate, zoom, translate, shear, contrast, each a fraction as
            in Keras: rotate=0.2 is up to 0.2 of a full turn); "none" for no
            augmentation. Active only in training.
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
    momentum: float | None = None
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
        if self.momentum is not None and not 0 <= self.momentum < 1:
            raise ConfigError(f"`--momentum` must be in [0, 1). Got {self.momentum!r}.")
        if self.frozen_epochs < 0 or (self.unfreeze_top is not None and self.unfreeze_top < 0):
            raise ConfigError("`--frozen-epochs` and `--unfreeze-top` must not be negative. "
                              f"Got {self.frozen_epochs!r}, {self.unfreeze_top!r}.")


STAGES = ("extract", "compare", "finetune")
# Set by the `run` workflow itself (the run folder, the data it resolved), so
# a configuration file does not take them.
_SET_BY_RUN = {"compare": {"out", "overwrite"}, "finetune": {"data", "weights"}}


@dataclass(frozen=True)
class RunConfig:
    """The whole pipeline: what ``run_pipeline.py run`` does, one TOML file.

    Top-level keys, then a table per stage holding the fields of
    :class:`ExtractConfig` (with ``[extract.split]``), :class:`CompareConfig`
    (with ``[compare.params.<classifier>]``) and :class:`FinetuneConfig`::

        data = "keras:cats_and_dogs_filtered"
        stages = ["extract", "compare", "finetune"]

        [extract]
        backbone = "mobilenet_v2"
        image_size = 160

        [compare.params.dense]
        units = 0
        learning_rate = 1e-4

    Args:
        data: an image folder; ``keras:<name>`` for a dataset Keras downloads
            into its cache (cats_and_dogs_filtered, flower_photos);
            ``tfds:<name>`` for a TensorFlow Datasets set (the ``tfds`` extra);
            ``demo`` for generated images.
        stages: which of extract, compare, finetune to run, in that order.
        name: names the run folder ``runs/<name>`` (None: the configuration
            file's name, else the data's).
        out: the run folder, instead of ``runs/<name>``.
        overwrite: replace a run folder made with other settings.
    """

    data: str = "keras:cats_and_dogs_filtered"
    stages: tuple[str, ...] = ("extract", "compare")
    name: str | None = None
    out: str | None = None
    overwrite: bool = False
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def __post_init__(self) -> None:
        for stage in self.stages:
            _one_of("stages", stage, STAGES)
        if list(self.stages) != [s for s in STAGES if s in self.stages] or "extract" not in self.stages:
            raise ConfigError(f"`stages` must start with extract and keep the order {', '.join(STAGES)}. "
                              f"Got {list(self.stages)}.")

    @property
    def run_dir(self) -> Path:
        if self.out:
            return Path(self.out).expanduser()
        name = self.name or Path(self.data.split(":")[-1].rstrip("/\\")).name or "run"
        return Path("runs") / name


def load_run_config(path: str | os.PathLike | None = None, overrides: list[str] = (),
                    base: dict | None = None) -> RunConfig:
    """Read a TOML configuration, apply ``section.key=value`` overrides, validate.

    Args:
        path: a TOML file (None: all defaults).
        overrides: ``"extract.image_size=96"``, ``"compare.params.dense.epochs=2"``;
            the value is read as TOML (``["logreg"]``, ``true``, ``1e-4``), or
            as a plain string when it is not TOML.
        base: settings applied under the file (``--demo``'s).

    Raises:
        ConfigError: an unreadable file, an unknown key, or a wrong type.
    """
    table = _merge({}, base or {})
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"`--config` must be a readable TOML file. Got {str(path)!r}: "
                              f"{exc.strerror or exc}.") from None
        try:
            table = _merge(table, tomllib.loads(text))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}. Fix the file.") from None
        table.setdefault("name", path.stem)
    for text in overrides:
        dotted, sep, raw = text.partition("=")
        if not (sep and dotted.strip()):
            raise ConfigError(f"`--set` must look like SECTION.KEY=VALUE (e.g. extract.image_size=96). "
                              f"Got {text!r}.")
        *parents, key = dotted.strip().split(".")
        node = table
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"`--set {dotted}`: {part!r} is a value, not a table.")
        node[key] = _toml_value(raw.strip())
    return _build(RunConfig, table, where=str(path) if path else "the settings")


def run_config_toml(config: RunConfig) -> str:
    """The configuration as TOML that :func:`load_run_config` reads back."""
    import tomli_w

    table = _table(config)
    for section, names in _SET_BY_RUN.items():
        for name in names:
            table.get(section, {}).pop(name, None)
    table.pop("overwrite", None)
    params = table.get("compare", {}).get("params", {})
    for values in params.values():  # one value reads better as a scalar
        for name, v in values.items():
            values[name] = v[0] if len(v) == 1 else v
    return tomli_w.dumps(table)


def _table(obj) -> dict:
    """A dataclass as a TOML table: None left out (it is every such field's default)."""
    out = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if is_dataclass(value):
            value = _table(value)
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, dict):
            value = {k: dict(v) if isinstance(v, dict) else v for k, v in value.items()}
        if value is not None:
            out[f.name] = value
    return out


def _merge(into: dict, new: dict) -> dict:
    out = dict(into)
    for key, value in new.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def _toml_value(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _params(table: dict, where: str) -> dict:
    """``[compare.params.<classifier>]`` tables; one value fixes, a list is searched."""
    for clf, params in table.items():
        if not isinstance(params, dict):
            raise ConfigError(f"`compare.params.{clf}` must be a table of parameters in {where} "
                              f"(e.g. [compare.params.{clf}] then C = [0.01, 0.1]). Got {params!r}.")
    return {clf: {k: v if isinstance(v, list) else [v] for k, v in params.items()}
            for clf, params in table.items()}


_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "dict": (dict,)}


def _build(cls, table: dict, where: str, prefix: str = ""):
    """``cls`` from a TOML table, every key and type checked."""
    known = {f.name: f for f in fields(cls)}
    taken = _SET_BY_RUN.get(prefix.rstrip("."), set())
    for key in table:
        if key not in known or key in taken:
            choices = sorted(set(known) - taken)
            near = difflib.get_close_matches(key, choices, n=1)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            raise ConfigError(f"Unknown setting `{prefix}{key}` in {where}.{hint} "
                              f"[{prefix.rstrip('.') or 'top level'}] takes: {', '.join(choices)}.")
    kwargs = {}
    for key, value in table.items():
        kind = str(known[key].type)
        name = f"{prefix}{key}"
        nested = {"ExtractConfig": ExtractConfig, "CompareConfig": CompareConfig,
                  "FinetuneConfig": FinetuneConfig, "SplitConfig": SplitConfig}.get(kind)
        if nested is not None:
            if not isinstance(value, dict):
                raise ConfigError(f"`{name}` must be a table ([{name}]) in {where}. Got {value!r}.")
            kwargs[key] = _build(nested, value, where, f"{name}.")
            continue
        if kind.startswith("tuple"):
            value = [value] if isinstance(value, str) else value
            if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise ConfigError(f"`{name}` must be a list of names in {where}. Got {value!r}.")
            value = tuple(value)
        else:
            parts = [p.strip() for p in kind.split("|")]
            allowed = tuple(t for part in parts for t in _TYPES.get(part, ()))
            if not isinstance(value, allowed) or (isinstance(value, bool) and "bool" not in parts):
                raise ConfigError(f"`{name}` must be {' or '.join(p for p in parts if p != 'None')} "
                                  f"in {where}. Got {value!r}.")
            if "float" in parts and "int" not in parts:
                value = float(value)
        if name == "compare.params":
            value = _params(value, where)
        kwargs[key] = value
    return cls(**kwargs)
