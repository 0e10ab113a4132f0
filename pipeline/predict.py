"""Classify new images with any model of a run.

A stage-2 classifier is composed with the stage-1 backbone recorded in the
run's cache key (size, preprocessing, pooling, decoding), so the user never
re-states them, and its features come from the same engine as extraction's
(OpenVINO on a CPU, with the model stage 1 converted); the fine-tuned model
takes pixels directly.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import PredictConfig
from .console import progress_bar, quiet
from .data import is_image_name
from .errors import ConfigError, RunError
from .features.extractor import Extractor
from .heads.proba import full_proba
from .runs import load_model, read_leaderboard, read_manifest, scores

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictResult:
    """Predictions, one row per readable image, and the images that were not."""

    model: str
    classes: list[str]
    rows: list[dict]
    unreadable: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"model": self.model, "classes": self.classes, "predictions": self.rows,
                "unreadable": self.unreadable}

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["path", "class", *(f"p_{c}" for c in self.classes), "error"])
        for row in self.rows:
            writer.writerow([row["path"], row["class"],
                             *(f"{row['probabilities'][c]:.6f}" for c in self.classes), ""])
        for bad in self.unreadable:
            writer.writerow([bad["path"], "", *([""] * len(self.classes)), bad["reason"]])
        return out.getvalue()


def expand(inputs: list[str]) -> list[str]:
    """Image files as given, and every image below each folder, in sorted order."""
    paths = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            # Anything but a folder is listed: a dangling link, a device or a FIFO is refused
            # with its reason, unread.
            paths += sorted(str(p) for p in path.rglob("*")
                           if not p.is_dir() and is_image_name(p.name))
        elif path.exists() or path.is_symlink():
            paths.append(str(path))
        else:
            raise ConfigError(f"{item} is neither an image file nor a folder. Fix: check the path.")
    if not paths:
        raise ConfigError(f"No images found in {', '.join(inputs)}.")
    return paths


def model_name(run: Path, manifest: dict, model: str) -> str:
    """``best`` is the top of the leaderboard; any other name must be a saved model."""
    if model == "best":
        return scores.recommended(read_leaderboard(run))["classifier"]
    if model not in manifest["models"]:
        raise RunError(f"`--model` must be best or one of {', '.join(manifest['models'])}. "
                       f"Got {model!r}.")
    return model


@quiet
def predict(run: str | os.PathLike, inputs: list[str], config: PredictConfig | None = None) -> PredictResult:
    """Class probabilities of images (files or folders) from one model of a run.

    Unreadable images are listed in ``unreadable`` with the decoder's reason;
    they never stop the others.
    """
    config = config or PredictConfig()
    batch_size, weights = config.batch_size, config.weights
    run = Path(run)
    manifest = read_manifest(run)
    name = model_name(run, manifest, config.model)
    entry = manifest["models"][name]
    key = manifest["cache"]["key"]
    extractor = Extractor.from_key(key, weights)
    paths = expand(inputs)
    classes = manifest["classes"]
    loaded = load_model(run, name)
    from .data.decode import Decoding, image_batches, why_unreadable  # TensorFlow, once the run is known

    decoding = Decoding.of_view(key, extractor.spec.image_size)
    refused: dict[int, str] = {}
    batches = image_batches(paths, range(len(paths)), decoding, batch_size, refused=refused)
    n = len(classes)
    if entry["format"] == "keras-model":  # pixels in already
        scored = ((idx, full_proba(np.asarray(loaded(images, training=False)), range(n), n))
                  for idx, images in batches)
    else:
        scored = ((idx, full_proba(loaded.predict_proba(features), loaded.classes_, n))
                  for idx, features in extractor.engine(config.engine, batch_size, len(paths),
                                                        Path(manifest["cache"]["path"]).parent).map(batches))
    seen, probabilities = [], []
    with progress_bar(len(paths), None, unit="img", desc="predict") as bar:
        for idx, batch in scored:
            probabilities.append(batch)
            seen += idx.numpy().tolist()
            bar.update(len(idx))
    rows = []
    for i, p in zip(seen, np.concatenate(probabilities) if probabilities else []):
        rows.append({"path": paths[i], "class": classes[int(np.argmax(p))],
                     "probabilities": {c: float(v) for c, v in zip(classes, p)}})
    unreadable = [{"path": paths[i],
                   "reason": refused.get(i) or why_unreadable(paths[i], decoding).reason}
                  for i in sorted(set(range(len(paths))) - set(seen))]
    for bad in unreadable:
        log.warning("unreadable %s: %s", bad["path"], bad["reason"])
    return PredictResult(name, classes, rows, unreadable)
