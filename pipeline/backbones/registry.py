"""The backbone registry: one table of ``keras.applications`` feature extractors.

Each entry carries its constructor, its own ``preprocess_input``, its default
and minimum input size and its feature shape, together (as timm and Keras
applications do). Nothing here imports TensorFlow until a model is built, so
listing backbones and answering cache hits stay fast.
"""

from __future__ import annotations

import contextlib
import fnmatch
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .._files import hashed_copy, keras_home, sha256_tree, why_unreachable
from ..errors import ConfigError, UnknownNameError, WeightsError, first_line

# How each family expects its pixels (the `mode` of keras' preprocess_input):
# "tf" scales to [-1, 1], "caffe" is BGR minus the ImageNet mean, "torch"
# scales to [0, 1] and standardises; "in-model" families rescale inside the
# network and take raw 0-255 pixels.
DEFAULT_BACKBONE = "mobilenet"
# Weights named rather than given as a file: the pretrained ones (a preset's own, for KerasHub)
# or random, seeded.
NAMED_WEIGHTS = ("imagenet", "none")
# What a spatial feature map may become, what a transformer's tokens may (class token or mean
# of patch tokens), and what an image-text model's vision tower gives; by the output's kind.
MAP_POOLINGS = ("avg", "max", "none")
POOLINGS_OF = {"map": MAP_POOLINGS, "tokens": ("cls", "avg"), "tower": ("pooled",)}
POOLINGS = tuple(dict.fromkeys(p for kind in POOLINGS_OF.values() for p in kind))

PREPROCESSING = {
    "mobilenet": "tf",
    "mobilenet_v2": "tf",
    "mobilenet_v3": "in-model",
    "vgg16": "caffe",
    "vgg19": "caffe",
    "resnet50": "caffe",
    "resnet_v2": "tf",
    "inception_v3": "tf",
    "xception": "tf",
    "densenet": "torch",
    "efficientnet": "in-model",
    "efficientnet_v2": "in-model",
    "nasnet": "tf",
    "convnext": "in-model",
}


@dataclass(frozen=True)
class Backbone:
    """One feature extractor of ``keras.applications``.

    Attributes:
        name: registry name (``--backbone``).
        constructor: attribute of ``keras.applications`` that builds it.
        module: ``keras.applications`` sub-module holding ``preprocess_input``.
        default_size: input size the ImageNet weights were trained at.
        min_size: smallest input side the architecture accepts.
        channels: width of the pooled features (at ``default_alpha``).
        spatial: side of the feature map at ``default_size`` (pooling "none").
        alphas: width multipliers with ImageNet weights (empty: no alpha).
        default_alpha: the multiplier used when none is given.
        slow: heavy to build; tests mark it slow.
    """

    name: str
    constructor: str
    module: str
    default_size: int
    min_size: int
    channels: int
    spatial: int
    alphas: tuple[float, ...] = ()
    default_alpha: float | None = None
    slow: bool = False

    @property
    def preprocessing(self) -> str:
        return PREPROCESSING[self.module]

    # What every kind of backbone answers (this table's, hub.HubBackbone, own.ModelFile).
    slug = property(lambda self: self.name)  # file and model names
    source = None  # the path a model or preset was read from; registry entries have none

    def extra_spec(self) -> dict:
        """Feature-spec fields beyond the common ones (none: the stores keep their keys)."""
        return {}

    def preprocessing_text(self, spec: "BackboneSpec") -> str:
        """How pixels become the network's input, for the feature spec."""
        return f"keras.applications.{self.module}.preprocess_input ({self.preprocessing})"

    def preprocess(self, spec: "BackboneSpec"):
        """The entry's own ``preprocess_input`` (identity for in-model ones)."""
        import keras

        return getattr(keras.applications, self.module).preprocess_input

    def weights_identity(self, spec: "BackboneSpec") -> str:
        """What named weights are, for the cache key (files are named by ``spec.weights_hash``)."""
        return spec.weights

    def build_base(self, spec: "BackboneSpec", seed: int = 0):
        """The ``keras.applications`` model itself, with its pooling, no top.

        Raises:
            WeightsError: the ImageNet weights cannot be obtained, or a weights
                file does not fit the architecture.
        """
        import keras

        kwargs = dict(
            include_top=False,
            input_shape=(spec.image_size, spec.image_size, 3),
            pooling=None if spec.pooling == "none" else spec.pooling,
            weights=None if spec.weights == "none" else spec.weights,
        )
        if self.alphas:
            kwargs["alpha"] = spec.alpha
        constructor = getattr(keras.applications, self.constructor)
        if spec.weights in NAMED_WEIGHTS:
            return _constructed(constructor, kwargs, spec, seed)
        with as_hashed(spec.weights, spec.weights_hash, "weights file") as copy:
            return _constructed(constructor, {**kwargs, "weights": str(copy)}, spec, seed)

    def feature_shape(self, pooling: str = "avg") -> tuple[int, ...]:
        """Feature shape at the default size and alpha."""
        if pooling == "none":
            return (self.spatial, self.spatial, self.channels)
        return (self.channels,)


_TABLE = (
    Backbone("mobilenet", "MobileNet", "mobilenet", 224, 32, 256, 7,
             alphas=(0.25, 0.5, 0.75, 1.0), default_alpha=0.25),
    Backbone("mobilenet_v2", "MobileNetV2", "mobilenet_v2", 224, 32, 1280, 7,
             alphas=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4), default_alpha=1.0),
    Backbone("mobilenet_v3_small", "MobileNetV3Small", "mobilenet_v3", 224, 32, 576, 7,
             alphas=(0.75, 1.0), default_alpha=1.0),
    Backbone("mobilenet_v3_large", "MobileNetV3Large", "mobilenet_v3", 224, 32, 960, 7,
             alphas=(0.75, 1.0), default_alpha=1.0),
    Backbone("vgg16", "VGG16", "vgg16", 224, 32, 512, 7),
    Backbone("vgg19", "VGG19", "vgg19", 224, 32, 512, 7),
    Backbone("resnet50", "ResNet50", "resnet50", 224, 32, 2048, 7),
    Backbone("resnet50_v2", "ResNet50V2", "resnet_v2", 224, 32, 2048, 7),
    Backbone("inception_v3", "InceptionV3", "inception_v3", 299, 75, 2048, 8),
    Backbone("xception", "Xception", "xception", 299, 71, 2048, 10),
    Backbone("densenet121", "DenseNet121", "densenet", 224, 32, 1024, 7),
    Backbone("efficientnet_b0", "EfficientNetB0", "efficientnet", 224, 32, 1280, 7),
    Backbone("efficientnet_b1", "EfficientNetB1", "efficientnet", 240, 32, 1280, 8),
    Backbone("efficientnet_b2", "EfficientNetB2", "efficientnet", 260, 32, 1408, 9),
    Backbone("efficientnet_b3", "EfficientNetB3", "efficientnet", 300, 32, 1536, 10),
    Backbone("efficientnet_v2_b0", "EfficientNetV2B0", "efficientnet_v2", 224, 32, 1280, 7),
    Backbone("nasnet_mobile", "NASNetMobile", "nasnet", 224, 32, 1056, 7),
    Backbone("nasnet_large", "NASNetLarge", "nasnet", 331, 32, 4032, 11, slow=True),
    Backbone("convnext_tiny", "ConvNeXtTiny", "convnext", 224, 32, 768, 7),
)
BACKBONES: dict[str, Backbone] = {b.name: b for b in _TABLE}


def list_backbones(pattern: str = "*") -> list[Backbone]:
    """Registry entries whose name matches a shell-style pattern."""
    return [b for b in _TABLE if fnmatch.fnmatch(b.name, pattern)]


def get_backbone(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise UnknownNameError(
            f"`--backbone` must be one of {', '.join(BACKBONES)}; or hub:<KerasHub preset>, or a "
            f".keras file or SavedModel folder of your own. Got {name!r}."
        ) from None


@dataclass(frozen=True)
class BackboneSpec:
    """A fully resolved backbone: what to build and how to feed it."""

    backbone: Backbone
    image_size: int
    pooling: str
    alpha: float | None
    weights: str  # "imagenet", "none" or a path to a weights file
    # The "sha256:..." of the files the weights are read from (a weights file, an own model, a
    # local preset), taken once as the spec is resolved; building loads exactly those bytes.
    weights_hash: str | None = None

    @property
    def weights_identity(self) -> str:
        """What the weights are, for the cache key: files by their hash, else as the kind names them."""
        return self.weights_hash or self.backbone.weights_identity(self)

    @property
    def preprocessing(self) -> str:
        return self.backbone.preprocessing_text(self)


def resolve_application(
    name: str = DEFAULT_BACKBONE,
    image_size: int | None = None,
    pooling: str | None = None,
    alpha: float | None = None,
    weights: str = "imagenet",
) -> BackboneSpec:
    """Validate backbone settings once and fill in the defaults.

    Raises:
        UnknownNameError: unknown backbone or pooling.
        ConfigError: an alpha the backbone does not take, or an image size
            below the architecture's minimum.
        WeightsError: a weights path that does not exist.
    """
    backbone = get_backbone(name)
    pooling = check_pooling(pooling, MAP_POOLINGS, name)
    if alpha is None:
        alpha = backbone.default_alpha
    elif not backbone.alphas:
        takers = ", ".join(b.name for b in _TABLE if b.alphas)
        raise ConfigError(
            f"`--alpha` applies only to {takers}; {name} has no width "
            f"multiplier. Got alpha={alpha}. Fix: drop `--alpha`."
        )
    elif weights == "imagenet" and alpha not in backbone.alphas:
        raise ConfigError(
            f"`--alpha` for {name} with ImageNet weights must be one of "
            f"{', '.join(f'{a:g}' for a in backbone.alphas)}. Got {alpha:g}."
        )
    size = backbone.default_size if image_size is None else int(image_size)
    if size < backbone.min_size:
        raise ConfigError(
            f"`--image-size` for {name} must be at least {backbone.min_size} px. "
            f"Got {size}. Fix: use {backbone.default_size} (its default) or "
            f"another size >= {backbone.min_size}."
        )
    weights = str(weights)
    if weights.lower() in NAMED_WEIGHTS:
        return BackboneSpec(backbone, size, pooling, alpha, weights.lower())
    if not Path(weights).is_file():
        raise WeightsError(
            f"`--weights` must be 'imagenet', 'none' or a weights file. Got "
            f"{weights!r}, which is not a file."
        )
    return BackboneSpec(backbone, size, pooling, alpha, weights, sha256_tree(weights))




def check_pooling(pooling: str | None, allowed: tuple[str, ...], name: str) -> str:
    """``pooling`` if ``name`` takes it; None is the first of ``allowed``, its default."""
    if pooling is None:
        return allowed[0]
    if pooling not in POOLINGS:
        raise UnknownNameError(f"`--pooling` must be one of {', '.join(POOLINGS)}. Got {pooling!r}.")
    if pooling not in allowed:
        raise ConfigError(f"`--pooling {pooling}` does not apply to {name}, which takes "
                          f"{', '.join(allowed)} (default {allowed[0]}). Fix: use one of those or "
                          "leave `--pooling` out.")
    return pooling


def keras_models_dir() -> Path:
    """Where Keras keeps downloaded weights (``$KERAS_HOME/models``)."""
    return keras_home() / "models"


@contextlib.contextmanager
def as_hashed(path: str, identity: str, what: str):
    """A private copy of ``path`` whose bytes have ``identity``, the hash the spec (and so the
    cache key) was resolved with: what is loaded from it is what the key names.

    Raises:
        WeightsError: ``path`` changed since it was hashed, or could not be copied.
    """
    with contextlib.ExitStack() as stack:
        try:
            copy, now = stack.enter_context(hashed_copy(path))
        except OSError as exc:  # the temporary folder is full, or the file went away
            raise WeightsError(
                f"Could not copy the {what} {path} into a private temporary folder to load it "
                f"({first_line(exc)}). Fix: free space in {tempfile.gettempdir()}, or set TMPDIR to "
                "a folder with room for it.") from exc
        if now != identity:
            raise WeightsError(
                f"The {what} {path} changed after it was read for the cache key ({identity}; "
                f"now {now}), so nothing is computed with it. Fix: run again once it is no "
                "longer being written.")
        yield copy


def _constructed(constructor, kwargs: dict, spec: BackboneSpec, seed: int):
    from .seeding import seeded

    try:
        if spec.weights == "none":
            with seeded(seed):
                return constructor(**kwargs)
        with _downloads_checked():
            return constructor(**kwargs)
    except Exception as exc:  # urllib, h5py and keras raise many types here
        raise _weights_error(spec, exc) from exc


@contextlib.contextmanager
def _downloads_checked():
    """Keras's weights downloads, asked first whether their host answers (offline: a sentence at
    once), and printing on stderr: stdout carries only a command's own output (``--json``)."""
    import sys

    from keras.src.utils import file_utils

    real = file_utils.get_file

    def get_file(fname=None, origin=None, *args, cache_subdir="datasets", cache_dir=None, **kwargs):
        cached = Path(cache_dir or keras_home()) / cache_subdir / (fname or "")
        if origin and fname and not cached.is_file():
            why = why_unreachable(origin)
            if why:
                raise OSError(why)
        return real(fname, origin, *args, cache_subdir=cache_subdir, cache_dir=cache_dir, **kwargs)

    file_utils.get_file = get_file
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        file_utils.get_file = real


def _weights_error(spec: BackboneSpec, exc: Exception) -> WeightsError:
    b = spec.backbone
    what = f"{b.name}" + (f" (alpha {spec.alpha}, {spec.image_size} px)" if b.alphas else "")
    if spec.weights == "imagenet":
        models = keras_models_dir()
        return WeightsError(
            f"Could not obtain the ImageNet weights of {what}: they are not in "
            f"the Keras cache {models} and downloading failed ({first_line(exc)}). "
            "Fix: put the Keras weights file in that folder (or set KERAS_HOME), "
            "pass `--weights PATH`, or `--weights none` for random weights."
        )
    return WeightsError(
        f"The weights file {spec.weights} does not fit {what} with include_top="
        f"False: {first_line(exc)}. Fix: pass the no-top weights file of this "
        "exact architecture and width."
    )
