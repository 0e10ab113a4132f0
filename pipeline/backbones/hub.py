"""KerasHub presets as backbones: ``hub:<preset>`` or ``hub:<local preset folder>``.

A preset carries its architecture, its weights and its image converter. The
converter's normalisation (``x * scale + offset``) becomes the model's first
step and its image size the default input side; resizing stays the
pipeline's own (bilinear, no crop), as for every backbone. What one image's
feature is depends on the family:

- convolutional families give a feature map: ``avg`` (default), ``max`` or
  ``none`` pooling, as for ``keras.applications``;
- vision transformers (DINOv2, DINOv3, ViT, DeiT) give tokens: ``cls``, the
  class token (default, the linear-probe standard), or ``avg``, the mean of
  the patch tokens;
- image-text models (SigLIP, SigLIP 2) give their vision tower's ``pooled``
  output.

Named presets download from Kaggle on first use (keras-hub keeps them in its
cache); a folder written by ``save_to_preset`` works offline.
"""

from __future__ import annotations

import contextlib
import functools
import json
from dataclasses import dataclass
from pathlib import Path

from .._files import sha256_tree
from ..errors import ConfigError, UnknownNameError, WeightsError, first_line
from .registry import NAMED_WEIGHTS, POOLINGS_OF, BackboneSpec, as_hashed, check_pooling

PREFIX = "hub:"

# Backbone class -> what its output is: a feature "map", "tokens", or an
# image-text model whose vision "tower" gives a pooled vector.
FAMILIES = {
    "DINOV2Backbone": "tokens",
    "DINOV3Backbone": "tokens",
    "ViTBackbone": "tokens",
    "DeiTBackbone": "tokens",
    "SigLIPBackbone": "tower",
    "ResNetBackbone": "map",
    "EfficientNetBackbone": "map",
    "DenseNetBackbone": "map",
}
FEATURES = {"map": "pooled feature map", "tokens": "class token (cls) or mean of patch tokens (avg)",
            "tower": "vision tower's pooled output"}


def _keras_hub():
    try:
        import keras_hub
    except ImportError:
        raise ConfigError("`hub:` backbones need keras-hub. Fix: pip install -e \".[hub]\" "
                          "(or pip install keras-hub).") from None
    return keras_hub


@dataclass(frozen=True)
class HubBackbone:
    """One KerasHub preset (named, or a local folder)."""

    preset: str
    family: str  # the KerasHub backbone class

    @property
    def name(self) -> str:
        return PREFIX + self.preset

    @property
    def kind(self) -> str:
        return FAMILIES[self.family]

    @property
    def local(self) -> bool:
        return Path(self.preset).is_dir()

    @property
    def source(self) -> str | None:
        """A preset folder's ``hub:PATH``, to rebuild it later; a named preset needs none."""
        return self.name if self.local else None

    def extra_spec(self) -> dict:
        return {}

    @property
    def slug(self) -> str:
        """A file-name-safe name: the preset's, or its folder's."""
        return "hub-" + (Path(self.preset).name if self.local else self.preset)

    def converter(self):
        return _converter(self.preset)

    def weights_identity(self, spec: BackboneSpec) -> str:
        """``none`` or the versioned Kaggle handle (a local preset is named by its files' hash)."""
        if spec.weights == "none":
            return "none"
        return _named_presets()[self.preset][1]

    def preprocessing_text(self, spec: BackboneSpec) -> str:
        c = self.converter()
        return (f"keras_hub {type(c).__name__}: x * {_plain(c.scale, 1)} + {_plain(c.offset, 0)} "
                f"after the pipeline's resize")

    def preprocess(self, spec: BackboneSpec):
        """The converter's normalisation as a Keras layer (raw 0-255 pixels in)."""
        import keras

        c = self.converter()
        return keras.layers.Rescaling(scale=1.0 if c.scale is None else c.scale,
                                      offset=0.0 if c.offset is None else c.offset,
                                      name="hub_normalisation")

    def build_base(self, spec: BackboneSpec, seed: int = 0):
        """Normalised pixels in, the stated feature out."""
        import keras

        from .seeding import seeded

        keras_hub = _keras_hub()
        size = spec.image_size
        # Convolutional families take any size; transformers are built at
        # this one (their position embeddings are interpolated or rotary).
        sized = {"image_shape": (size, size, 3)} if self.kind == "tokens" else {}
        # A local folder's weights are read from a private copy of the files hashed.
        with as_hashed(self.preset, spec.weights_hash, "preset folder") if spec.weights_hash else \
                contextlib.nullcontext(self.preset) as preset:
            try:
                if spec.weights == "none":
                    with seeded(seed):
                        hub = keras_hub.models.Backbone.from_preset(self.preset, load_weights=False, **sized)
                else:
                    hub = keras_hub.models.Backbone.from_preset(str(preset), **sized)
            except Exception as exc:  # kagglehub, h5py and keras raise many types here
                raise WeightsError(
                    f"Could not load the KerasHub preset {self.preset!r} at {size} px: {first_line(exc)}. "
                    "Fix: with network access it downloads once into keras-hub's cache; offline, pass "
                    "a folder written by save_to_preset as hub:PATH"
                    + ("" if size == self.default_size() else
                       f"; or use the preset's own size, {self.default_size()} px") + ".") from exc
        tower = hub.vision_encoder if self.kind == "tower" else hub
        images = keras.Input((size, size, 3), name="images")
        given = {k: images for k in tower.input} if isinstance(tower.input, dict) else images
        out = tower(given)
        if self.kind == "map":
            pool = {"avg": keras.layers.GlobalAveragePooling2D, "max": keras.layers.GlobalMaxPooling2D}
            out = pool[spec.pooling]()(out) if spec.pooling in pool else out
        elif self.kind == "tokens":
            patch = hub.patch_size[0] if isinstance(hub.patch_size, (tuple, list)) else hub.patch_size
            patches = (size // patch) ** 2  # the last tokens; class and register tokens lead
            out = out[:, 0, :] if spec.pooling == "cls" else keras.ops.mean(out[:, -patches:, :], axis=1)
        return keras.Model(images, out, name=self.slug.replace("-", "_"))

    def default_size(self) -> int:
        size = self.converter().image_size
        if not size:
            raise ConfigError(f"The preset {self.preset!r} states no image size. Fix: pass "
                              "`--image-size`.")
        return int(size[0])


@functools.lru_cache(maxsize=None)
def _converter(preset: str):
    try:
        return _keras_hub().layers.ImageConverter.from_preset(preset)
    except ConfigError:
        raise
    except Exception as exc:  # kagglehub, json and keras raise many types here
        raise WeightsError(f"Could not read the image converter of the KerasHub preset {preset!r}: "
                           f"{first_line(exc)}. Fix: with network access it downloads once into "
                           "keras-hub's cache; offline, pass a folder written by save_to_preset "
                           "as hub:PATH.") from exc


@functools.lru_cache(maxsize=None)
def _named_presets() -> dict[str, tuple[str, str]]:
    """Preset name -> (backbone class, versioned Kaggle handle), for the families above."""
    models = _keras_hub().models
    out = {}
    for family in FAMILIES:
        cls = getattr(models, family, None)
        for name, entry in (getattr(cls, "presets", None) or {}).items():
            out[name] = (family, entry.get("kaggle_handle", name))
    return out


def _plain(value, default: float) -> str:
    if value is None:
        return f"{default:g}"
    values = [float(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
    return "[" + ", ".join(f"{v:.6g}" for v in values) + "]" if len(values) > 1 else f"{values[0]:.6g}"


def list_presets(pattern: str = "*") -> list[HubBackbone]:
    """The installed keras-hub's image presets of the supported families."""
    import fnmatch

    return [HubBackbone(name, family) for name, (family, _) in sorted(_named_presets().items())
            if fnmatch.fnmatch(PREFIX + name, pattern)]


def find(name: str) -> HubBackbone:
    """``hub:<preset>``: a named preset of the installed keras-hub, or a preset folder."""
    preset = name[len(PREFIX):]
    folder = Path(preset).expanduser()
    if folder.is_dir():
        config = folder / "config.json"
        if not config.is_file():
            raise ConfigError(f"{folder} is not a KerasHub preset folder: it has no config.json. "
                              "Fix: write it with backbone.save_to_preset(folder) and "
                              "converter.save_to_preset(folder).")
        family = json.loads(config.read_text())["registered_name"].rpartition(">")[2]
        if family not in FAMILIES:
            raise UnknownNameError(f"The preset in {folder} is a {family}; `hub:` backbones are "
                                   f"{', '.join(FAMILIES)}.")
        return HubBackbone(str(folder.resolve()), family)
    named = _named_presets()
    if preset not in named:
        import difflib

        near = difflib.get_close_matches(preset, named, n=5, cutoff=0.5)
        raise UnknownNameError(
            f"`--backbone hub:{preset}` is neither an image preset of keras-hub "
            f"{_keras_hub().__version__} ({', '.join(FAMILIES)}) nor a preset folder."
            + (f" Nearest: {', '.join(PREFIX + n for n in near)}." if near else "")
            + " Fix: list them with `backbones 'hub:*'`.")
    return HubBackbone(preset, named[preset][0])


def resolve(name: str, image_size: int | None, pooling: str | None, alpha: float | None,
            weights: str) -> BackboneSpec:
    """Validate a ``hub:`` backbone's settings and fill in its defaults."""
    backbone = find(name)
    if alpha is not None:
        raise ConfigError(f"`--alpha` does not apply to {name}. Fix: drop `--alpha`.")
    weights = str(weights).lower()
    if weights not in NAMED_WEIGHTS:
        raise WeightsError(f"A KerasHub preset carries its own weights; `--weights` takes only "
                           f"imagenet (the preset's) or none. Got {weights!r}. Fix: pass your "
                           "weights as a preset folder, hub:PATH.")
    pooling = check_pooling(pooling, POOLINGS_OF[backbone.kind], name)
    size = backbone.default_size() if image_size is None else int(image_size)
    local = backbone.local and weights != "none"
    return BackboneSpec(backbone, size, pooling, None, weights, sha256_tree(backbone.preset) if local else None)
