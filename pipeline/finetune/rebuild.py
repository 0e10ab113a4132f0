"""Stage 3's model: the network rebuilt end to end, and the hand-off check.

    pixels -> augmentation (training only) -> the backbone's preprocess_input
           -> backbone (training=False) with stage 1's pooling -> the dense head

The head is the stage-2 ``dense.keras`` model itself, so it starts with its
trained weights. Before any training, the rebuilt model in inference mode must
reproduce the head's predictions on cached validation features (the hand-off
check); it catches a rebuild that differs from extraction in preprocessing,
size, pooling or weights before hours are spent training it.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import backbones
from ..config import MAX_FILE_BYTES, FinetuneConfig
from ..errors import ConfigError, RunError
from ..features.hashing import STAT_CACHE, fingerprint_files
from ..features.extractor import Extractor
from ..features.view import FeatureCache
from ..heads.registry import finetune_head
from .augment import augmentation
from ..deploy.compose import end_to_end
from ..runs.run import Run

# Probabilities from the rebuilt model and from the head on cached features
# differ only by float32 rounding in a different batch/graph (about 1e-6 on
# CPU); float16 caches add the rounding of the stored features (about 1e-3).
HANDOFF_TOLERANCE = {"float32": 1e-4, "float16": 2e-2}


@dataclass(frozen=True)
class Source:
    """What stage 1 and 2 left, re-opened and checked for stage 3."""

    run: Path
    cache: FeatureCache
    extractor: Extractor
    root: Path
    head: object  # the fitted DenseHead

    @property
    def spec(self) -> backbones.BackboneSpec:
        return self.extractor.spec


def open_source(run: str | os.PathLike, data: str | None = None, weights: str | None = None,
                check_images: bool = True) -> Source:
    """The run's cache, backbone spec, image folder and dense head, all checked.

    Raises:
        RunError: no dense head, or the cache changed since the run.
        RunError: the images are not the ones extracted.
    """
    opened = Run.open(run)
    head = finetune_head()
    if head not in opened.models:
        raise RunError(
            f"Run {opened.path} has no {head} head (it has {', '.join(opened.models)}); stage 3 "
            f"starts from it. Fix: run compare with `--classifiers ...,{head}`."
        )
    cache = opened.cache()
    extractor = opened.extractor(weights)
    root = Path(data or cache.data_root)
    if check_images:
        _check_images(cache, root)
    return Source(opened.path, cache, extractor, root, opened.load(head))


def _check_images(cache: FeatureCache, root: Path) -> None:
    """The images on disk must be the ones whose features were cached."""
    changed, missing, total = [], [], 0
    for split in cache.splits:
        images = cache.index(split)
        total += len(images.paths)
        # The stat cache beside the view spares reading images that did not change.
        now = fingerprint_files(root, list(images.paths),
                                cache.key.get("max_file_bytes", MAX_FILE_BYTES),
                                cache.path.parent / STAT_CACHE)
        missing += sorted(now.unreadable)
        changed += [p for p, was, is_ in zip(images.paths, images.fingerprints, now.digests)
                    if is_ is not None and is_ != was]
    if missing or changed:
        raise RunError(
            f"The images under {root} are not the ones the cache was made from: "
            f"{len(missing)} of {total} are missing and {len(changed)} changed "
            f"(e.g. {', '.join((missing + changed)[:3])}). Fix: pass the original folder with "
            "`--data DIR`, or extract and compare again on these images."
        )


def rebuild(source: Source, config: FinetuneConfig, preprocess=None, like=None):
    """``(model, core, base, features)``: the trainable model, its no-augmentation
    core (pixels to probabilities, exactly as stage 1 + the stage-2 head), the
    backbone, and pixels-to-features.

    Args:
        like: a float32 base already built (and hand-off checked); given, the
            base is rebuilt with mixed float16 compute and its weights.
    """
    import keras

    if like is None:
        base = source.extractor.base()
    else:
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy("mixed_float16")  # only the base computes in float16
        try:
            base = source.extractor.base()
        finally:
            keras.config.set_dtype_policy(previous)
        base.set_weights(like.get_weights())
    features = backbones.build(source.spec, base=base, preprocess=preprocess, train_bn=config.train_bn)
    head = source.head.model_  # float32, with the stage-2 weights
    core = end_to_end(features, head, "core")
    augmented = keras.Input(features.input_shape[1:], name="pixels")
    augment = augmentation(config.augment, config.seed)
    model = keras.Model(augmented, core(augment(augmented) if augment.layers else augmented),
                        name="finetuned")
    return model, core, base, features


def handoff_check(source: Source, features, base, n: int) -> dict:
    """The rebuilt model must reproduce the head on cached features; say what differs if not.

    ``features`` is the rebuilt pixels-to-features part, ``base`` the backbone
    inside it; the head on top is the stage-2 head itself.
    """
    from ..data.decode import Decoding, load_image

    import tensorflow as tf

    total = source.cache.counts["validation"]
    rows = np.linspace(0, total - 1, min(n, total)).astype(int)
    validation = source.cache.take("validation", rows)  # not the whole split: it may be huge
    decoding = Decoding.of_view(source.cache.key, source.spec.image_size)
    pixels = tf.stack([load_image(str(source.root / p), decoding) for p in validation.paths])
    cached = validation.features.astype("float32")
    rebuilt = _forward(features, pixels)
    expected = source.head.predict_proba(cached)
    tolerance = HANDOFF_TOLERANCE[source.cache.dtype]
    # Features too: a confident head can hide a wrong rebuild behind saturated
    # probabilities.
    same_features = rebuilt.shape == cached.shape and _close(rebuilt, cached)
    worst = float(np.abs(source.head.predict_proba(rebuilt) - expected).max()) if \
        rebuilt.shape == cached.shape else float("inf")
    if worst <= tolerance and same_features:
        return {"images": len(rows), "max_abs_difference": worst, "tolerance": tolerance,
                "max_feature_difference": float(np.abs(rebuilt - cached).max())}
    part = _diagnose(source, cached, rebuilt, pixels, base)
    raise RunError(
        f"Hand-off check failed: on {len(rows)} validation images the rebuilt model's "
        f"probabilities differ from the stage-2 head's by up to {worst:.3g} (tolerance "
        f"{tolerance:g}){'' if same_features else ' and its features differ from the cache'}. "
        f"What differs: {part} Nothing was trained."
    )


def _forward(model, pixels, batch: int = 32) -> np.ndarray:
    """``model`` on a few images, called eagerly: tracing ``predict``'s graph of a deep base costs
    more than the pass itself."""
    return np.concatenate([np.asarray(model(pixels[i:i + batch], training=False))
                           for i in range(0, len(pixels), batch)])


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to float rounding (float16 caches round at about 1e-3 of the scale)."""
    return bool(np.abs(a - b).max() <= 2e-3 * max(1.0, float(np.abs(b).max())))


def _diagnose(source: Source, cached: np.ndarray, rebuilt: np.ndarray, pixels, base) -> str:
    key = source.cache.key
    if rebuilt.shape[1:] != cached.shape[1:]:
        return (f"pooling or size: the rebuilt base gives features of shape {rebuilt.shape[1:]}, "
                f"the cache has {cached.shape[1:]} ({key['pooling']} pooling at {key['image_size']} px).")
    if _close(rebuilt, cached):
        return ("nothing beyond rounding: the features match the cache, but the head turns their "
                "rounding into larger changes of probability than the tolerance.")
    canonical = backbones.build(source.spec, base=base)  # the same base, its own preprocessing
    if _close(_forward(canonical, pixels), cached):
        return (f"preprocessing: stage 1 used {key['preprocessing']}, and the backbone "
                "reproduces the cached features with it, but not with the rebuilt model's.")
    return (f"weights or decoding: the backbone ({key['backbone']}, weights {key['weights']}) "
            "does not reproduce the cached features from these images. Fix: pass the "
            "weights stage 1 used (`--weights`), or extract again.")


def unfreeze(base, config: FinetuneConfig) -> int:
    """Make the chosen top of the base trainable (BatchNorm stays frozen); returns the first index."""
    import keras

    layers = base.layers
    if config.unfreeze_from is not None:
        start = _layer_index(base, config.unfreeze_from)
    else:
        top = 20 if config.unfreeze_top is None else config.unfreeze_top
        start = max(0, len(layers) - top)
    base.trainable = True
    for i, layer in enumerate(layers):
        frozen_bn = isinstance(layer, keras.layers.BatchNormalization) and not config.train_bn
        layer.trainable = i >= start and not frozen_bn
    return start


def _layer_index(base, where: str | int) -> int:
    names = [layer.name for layer in base.layers]
    text = str(where)
    if text.lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < len(names):
            raise ConfigError(f"`--unfreeze-from` {index} is beyond the base: {base.name} has "
                              f"{len(names)} layers (0-{len(names) - 1}).")
        return index
    if text not in names:
        near = difflib.get_close_matches(text, names, n=5, cutoff=0.5)
        raise ConfigError(
            f"`--unfreeze-from` {text!r} is not a layer of {base.name}. "
            + (f"Nearest names: {', '.join(near)}. " if near else "")
            + "Fix: use a layer name or index from `model.summary()`."
        )
    return names.index(text)
