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

import numpy as np

from .config import PredictConfig
from .console import progress_bar, quiet
from .data import expand
from .deploy.compose import ImageClassifier
from .runs.run import Run

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


@quiet
def predict(run: str | os.PathLike, inputs: list[str], config: PredictConfig | None = None) -> PredictResult:
    """Class probabilities of images (files or folders) from one model of a run.

    Unreadable images are listed in ``unreadable`` with the decoder's reason;
    they never stop the others.
    """
    config = config or PredictConfig()
    batch_size, weights = config.batch_size, config.weights
    classifier = ImageClassifier.of(Run.open(run), config.model, weights)
    paths = expand(inputs)
    classes = classifier.run.classes
    from .data.decode import image_batches, why_unreadable  # TensorFlow, once the run is known

    decoding = classifier.decoding()
    refused: dict[int, str] = {}
    batches = image_batches(paths, range(len(paths)), decoding, batch_size, refused=refused)
    scored = classifier.probabilities(batches, config.engine, batch_size, len(paths))
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
    return PredictResult(classifier.name, classes, rows, unreadable)
