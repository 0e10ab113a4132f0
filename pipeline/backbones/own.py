"""The user's own network as a backbone: a ``.keras`` file or a SavedModel folder.

A ``.keras`` model is cut at a named layer (default: the layer feeding its
final classifier), its input size read from the model. A SavedModel cannot
be cut inside: its serving signature's output named by ``--layer`` is the
feature (default: its only output). The file's hash is its identity in the
feature spec, so a retrained model never shares rows with the old one.
Preprocessing is none by default (the model's own layers), or a registry
backbone's ``preprocess_input`` named by ``--preprocess``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from .._files import hashed_copy
from ..errors import ConfigError, UnknownNameError, WeightsError, first_line
from .registry import BACKBONES, MAP_POOLINGS, BackboneSpec, as_hashed, check_pooling, get_backbone

log = logging.getLogger(__name__)

PREFIX = "file:"
MODEL_SUFFIXES = (".keras",)


def is_model_path(name: str) -> bool:
    """A ``--backbone`` that names a model file or folder rather than a registry entry."""
    return name.endswith(MODEL_SUFFIXES) or "/" in name or "\\" in name or Path(name).is_dir()


@dataclass(frozen=True)
class ModelFile:
    """A ``.keras`` file or a SavedModel folder, the layer (or signature output) cut at,
    and the preprocessing to apply first."""

    path: str
    layer: str
    preprocess_name: str | None = None

    @property
    def name(self) -> str:
        return PREFIX + Path(self.path).name

    @property
    def slug(self) -> str:
        return "file-" + Path(self.path).stem

    @property
    def source(self) -> str:
        return self.path

    def extra_spec(self) -> dict:
        return {"layer": self.layer, "preprocess": self.preprocess_name}

    @property
    def saved_model(self) -> bool:
        return Path(self.path).is_dir()

    def preprocessing_text(self, spec: BackboneSpec) -> str:
        if self.preprocess_name is None:
            return "none (the model's own layers)"
        entry = get_backbone(self.preprocess_name)
        return entry.preprocessing_text(spec)

    def preprocess(self, spec: BackboneSpec):
        import keras

        if self.preprocess_name is None:
            return lambda x: x
        return getattr(keras.applications, get_backbone(self.preprocess_name).module).preprocess_input

    def build_base(self, spec: BackboneSpec, seed: int = 0):
        """Preprocessed pixels in, the chosen layer's output (pooled when a map) out."""
        import keras

        with as_hashed(self.path, spec.weights_hash, "model") as copy:
            model = _load(str(copy), self.path)
        size = spec.image_size
        if self.saved_model:
            pixels = keras.Input((size, size, 3), name="pixels")
            out = model(pixels)
            out = out[self.layer] if isinstance(out, dict) else out
        else:
            pixels = model.inputs[0]
            out = model.get_layer(self.layer).output
        if len(out.shape) == 4 and spec.pooling != "none":
            pool = keras.layers.GlobalAveragePooling2D if spec.pooling == "avg" else \
                keras.layers.GlobalMaxPooling2D
            out = pool(name="feature_pooling")(out)
        return keras.Model(pixels, out, name=self.slug.replace("-", "_").replace(".", "_"))


def _load(path: str, named: str):
    """The model at ``path`` (a private copy of ``named``), loaded afresh: stage 3 trains the one
    it is given."""
    import keras

    try:
        if Path(path).is_dir():
            return keras.layers.TFSMLayer(path, call_endpoint="serving_default")
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # keras, h5py and TensorFlow raise many types here
        raise WeightsError(f"Could not load the model {named}: {first_line(exc)}. Fix: pass a "
                           "`.keras` file saved by model.save() or a SavedModel folder.") from exc


def _default_layer(model) -> str:
    """The layer whose output feeds the model's last layer (its classifier)."""
    last = model.layers[-1]
    history = getattr(last.input, "_keras_history", None)
    if history is None:
        raise ConfigError(f"Cannot tell which layer feeds {last.name}, the last layer of "
                          f"{model.name}. Fix: name one with `--layer`.")
    return history.operation.name


def _model_path(name: str) -> Path:
    """The own model's file or SavedModel folder, refused with the fix when it is neither."""
    path = Path(name).expanduser()
    if not path.exists():
        raise ConfigError(f"`--backbone` {name} is neither a registry name nor an existing model file "
                          "or folder. Fix: check the path, or list registry names with `backbones`.")
    if not (path.is_dir() or path.is_file()):  # reading a FIFO or a device would never end
        raise ConfigError(f"`--backbone` {name} is not a regular file (a device, FIFO or socket), so "
                          "it is not read. Fix: pass a `.keras` file or a SavedModel folder.")
    if path.is_dir() and not (path / "saved_model.pb").is_file():
        raise ConfigError(f"{path} is a folder without saved_model.pb, so not a SavedModel. Fix: "
                          "pass the SavedModel folder itself, or a `.keras` file.")
    return path


def resolve(name: str, *, image_size: int | None, pooling: str | None, alpha: float | None,
            weights: str, layer: str | None, preprocess: str | None) -> BackboneSpec:
    """Validate an own model's settings and fill in its defaults (size, layer, pooling)."""
    path = _model_path(name)
    if alpha is not None:
        raise ConfigError(f"`--alpha` does not apply to your own model {path.name}. Fix: drop `--alpha`.")
    if str(weights).lower() != "imagenet":
        raise WeightsError(f"Your own model {path.name} carries its weights; `--weights` does not "
                           f"apply to it. Got {weights!r}. Fix: drop `--weights`.")
    if preprocess is not None and preprocess not in BACKBONES:
        raise UnknownNameError(f"`--preprocess` names the registry backbone whose preprocess_input "
                               f"to apply: one of {', '.join(BACKBONES)}. Got {preprocess!r}.")
    resolved = str(path.resolve())
    with hashed_copy(resolved) as (copy, identity):  # inspected as hashed
        model = _load(str(copy), resolved)
    if path.is_dir():
        outputs = {name: tuple(spec.shape) for name, spec in
                   sorted(model.call_endpoint_fn.structured_outputs.items())}
        if layer is None and len(outputs) > 1:
            raise ConfigError(f"The SavedModel {path.name} has several outputs ({', '.join(outputs)}). "
                              "Fix: name the feature with `--layer`.")
        layer = next(iter(outputs)) if layer is None else layer
        if layer not in outputs:
            raise ConfigError(f"`--layer` of a SavedModel names an output of its serving signature: "
                              f"{', '.join(outputs)}. Got {layer!r}.")
        inputs = model.call_endpoint_fn.structured_input_signature[1]
        side = next(iter(inputs.values())).shape[1] if inputs else None
        out_rank = len(outputs[layer])
    else:
        names = [item.name for item in model.layers]
        if layer is None:
            layer = _default_layer(model)
            log.info("features of %s: the output of layer %s, which feeds its last layer %s "
                     "(`--layer` picks another)", path.name, layer, model.layers[-1].name)
        if layer not in names:
            import difflib

            near = difflib.get_close_matches(layer, names, n=5, cutoff=0.5)
            raise ConfigError(f"`--layer` {layer!r} is not a layer of {path.name}."
                              + (f" Nearest names: {', '.join(near)}." if near else "")
                              + " Fix: use a name from model.summary().")
        side = model.input_shape[1]
        out_rank = len(model.get_layer(layer).output.shape)
    if side is not None and image_size is not None and int(image_size) != side:
        raise ConfigError(f"{path.name} takes {side} px images. Got `--image-size` {image_size}. "
                          "Fix: leave `--image-size` out.")
    size = side if side is not None else image_size
    if size is None:
        raise ConfigError(f"{path.name} accepts any input size. Fix: pass `--image-size`.")
    allowed = MAP_POOLINGS if out_rank == 4 else ("none",)
    pooling = check_pooling(pooling, allowed, f"layer {layer} of {path.name}")
    return BackboneSpec(ModelFile(resolved, layer, preprocess), int(size), pooling, None, "imagenet", identity)
