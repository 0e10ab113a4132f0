"""What shapes a feature row (the spec), and what names a dataset's view (the key).

The *spec* is everything that changes the numbers of one image's features:
backbone and weights identity, input size, pooling, decoding, preprocessing,
compute precision, stored dtype, format (not the engine: float32 engines give
the same numbers). The feature store keeps one folder per spec, with rows
keyed by the image's content. The *view key* is the spec plus the dataset:
its class names and every image's relative path, label and fingerprint. It
names a view file; nothing from stage 2 or 3 is in either.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .. import backbones
from .._files import key_hash
from ..backbones.registry import NAMED_WEIGHTS
from ..config import ExtractConfig
from ..errors import WeightsError

# 2: views over a content-addressed store. Format 1 files (one self-contained
# file per dataset) have the same layout and are still read.
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)

# Exactly the fields of the spec; a view key holds them and `classes`, `images`.
SPEC_FIELDS = ("format_version", "backbone", "alpha", "weights", "seed", "image_size", "pooling",
               "layer", "preprocess", "preprocessing", "decode", "orientation", "resize", "precision",
               "dtype")


def feature_spec(spec: backbones.BackboneSpec, config: ExtractConfig) -> dict:
    """Exactly what shapes one image's features, and nothing else.

    An own model adds the layer it is cut at and the preprocessing it was
    given by name; registry entries have neither, so their specs (and the
    stores already written for them) stay as they were.
    """
    return {
        "format_version": FORMAT_VERSION,
        "backbone": spec.backbone.name,
        "alpha": spec.alpha,
        "weights": spec.weights_identity,
        "seed": config.seed if spec.weights == "none" else None,
        "image_size": spec.image_size,
        "pooling": spec.pooling,
        **spec.backbone.extra_spec(),
        "preprocessing": spec.preprocessing,
        "decode": config.decode,
        "orientation": config.orientation,
        "resize": "bilinear, no crop",
        # float32 engines agree to ~2e-5 and share rows; bfloat16 does not.
        "precision": config.precision,
        "dtype": config.dtype,
    }


def view_key(feature: dict, classes: list[str], images: dict[str, list], config: ExtractConfig,
             source: str | None = None) -> dict:
    """The spec plus the dataset: ``images`` is split -> [[path, label, fingerprint], ...].

    The pixel budget and the file size limit are the view's settings, not the
    spec's: they decide which images are refused, never the numbers of the
    others. ``source``, where an own model or a preset folder was read from,
    lets stage 3 and predict rebuild it; the spec names it by its file name
    and hash, so a copy in another folder shares the store's rows.
    """
    weights_file = (str(Path(config.weights).expanduser().resolve())
                    if config.weights not in NAMED_WEIGHTS and not source else None)
    return {**feature, "max_pixels": config.max_pixels, "max_file_bytes": config.max_file_bytes,
            "classes": list(classes), "images": key_hash(images),
            **({"source": source} if source else {}),
            # Where the weights file was: later commands use it while it still has the sha256
            # recorded in "weights", so a run made with --weights needs no --weights again.
            **({"weights_file": weights_file} if weights_file else {})}


def spec_of(key: dict) -> dict:
    """The feature spec inside a view key (the fields it has: older keys lack some)."""
    return {name: key[name] for name in SPEC_FIELDS if name in key}


def _stem(spec: dict) -> str:
    alpha = f"_a{spec['alpha']:g}" if spec.get("alpha") is not None else ""
    name = re.sub(r"[^A-Za-z0-9_.]+", "-", spec["backbone"])  # hub:x and file:y.keras
    return f"{name}{alpha}-{spec['image_size']}-{spec['pooling']}"


def view_file_name(key: dict) -> str:
    """``<backbone>[_a<alpha>]-<size>-<pooling>-<hash>.h5``."""
    return f"{_stem(key)}-{key_hash(key)[:16]}.h5"


def store_folder_name(spec: dict) -> str:
    """The store folder of one spec: ``<backbone>[_a<alpha>]-<size>-<pooling>-<hash>``."""
    return f"{_stem(spec)}-{key_hash(spec)[:16]}"


def backbone_of(config: ExtractConfig) -> backbones.BackboneSpec:
    """The backbone stage 1's settings name, resolved (see :func:`pipeline.backbones.resolve`)."""
    return backbones.resolve(config.backbone, image_size=config.image_size, pooling=config.pooling,
                             alpha=config.alpha, weights=config.weights, layer=config.layer,
                             preprocess=config.preprocess)


def spec_from_key(key: dict, weights: str | os.PathLike | None = None) -> backbones.BackboneSpec:
    """The backbone a cache was made with, to rebuild it (stage 3, predict).

    Args:
        weights: the weights file, when stage 1 used one (the key holds only
            its sha256).

    Raises:
        WeightsError: a weights file is needed, or is not the one recorded.
    """
    recorded, name = key["weights"], key.get("source") or key["backbone"]
    if backbones.kind_of(name) == "hub" or "source" in key:  # the preset or the model carries its weights
        given = "none" if recorded == "none" else "imagenet"
    else:
        given = recorded if recorded in NAMED_WEIGHTS else weights
    kept = key.get("weights_file")
    if given is None and kept and Path(kept).is_file():
        given = kept  # checked below against the sha256 recorded
    if given is None:
        where = f", at {kept}, which is gone" if kept else ""
        raise WeightsError(f"Stage 1 used a weights file ({recorded}{where}). Fix: pass it again "
                           "with `--weights PATH`.")
    spec = backbones.resolve(name, image_size=key["image_size"], pooling=key["pooling"], alpha=key["alpha"],
                             weights=str(given) if isinstance(given, Path) else given,
                             layer=key.get("layer"), preprocess=key.get("preprocess"))
    if spec.weights_identity != recorded:
        what = f"`--weights` {weights} is not" if weights and given == weights else \
            f"{kept}, the weights file stage 1 used, no longer holds" if given == kept else \
            f"{name} is no longer"
        raise WeightsError(f"{what} what stage 1 used ({recorded}). Fix: pass the weights or "
                           "model stage 1 used, or extract again.")
    return spec
