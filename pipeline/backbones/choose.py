"""One entry point for every kind of backbone: a registry name, ``hub:<preset>``, or a model file."""

from __future__ import annotations

from ..errors import ConfigError
from . import hub, own
from .registry import DEFAULT_BACKBONE, BackboneSpec, resolve_application


def kind_of(name: str) -> str:
    """What a backbone name names: "hub" (``hub:<preset or folder>``), "file" (the user's own
    ``.keras`` file or SavedModel folder) or "registry" (a ``keras.applications`` entry)."""
    name = str(name)
    if name.startswith(hub.PREFIX):
        return "hub"
    return "file" if own.is_model_path(name) else "registry"


def resolve(
    name: str = DEFAULT_BACKBONE,
    *,
    image_size: int | None = None,
    pooling: str | None = None,
    alpha: float | None = None,
    weights: str = "imagenet",
    layer: str | None = None,
    preprocess: str | None = None,
) -> BackboneSpec:
    """Validate backbone settings once and fill in the defaults.

    ``layer`` and ``preprocess`` apply to the user's own model alone.

    Raises:
        UnknownNameError: unknown backbone, preset or pooling.
        ConfigError: a setting the backbone does not take, or an image size
            it cannot use.
        WeightsError: weights that do not exist or cannot be loaded.
    """
    name, kind = str(name), kind_of(name)
    if kind == "hub":
        spec = hub.resolve(name, image_size, pooling, alpha, weights)
    elif kind == "file":
        return own.resolve(name, image_size=image_size, pooling=pooling, alpha=alpha, weights=weights,
                           layer=layer, preprocess=preprocess)
    else:
        spec = resolve_application(name, image_size, pooling, alpha, weights)
    for option, value in (("layer", layer), ("preprocess", preprocess)):
        if value is not None:
            raise ConfigError(f"`--{option}` applies only to your own model (a .keras file or a "
                              f"SavedModel folder as `--backbone`); {name} is not one. Fix: drop "
                              f"`--{option}`.")
    return spec
