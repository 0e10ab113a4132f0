"""Stage 3's epochs as a person sees them: a line per epoch, a bar over its batches on a terminal."""

from __future__ import annotations

import logging
import time

import keras

from ..console import progress_bar

log = logging.getLogger(__name__)


class EpochProgress(keras.callbacks.Callback):
    """Logs each epoch's loss and accuracy; shows its batches as a bar when stderr is a terminal.

    Args:
        phase: what is training, e.g. "frozen base" or "fine-tuning".
        epochs: the last epoch of this phase (epochs count on across phases).
        steps: batches in an epoch (None when unknown).
    """

    def __init__(self, phase: str, epochs: int, steps: int | None):
        super().__init__()
        self.phase, self.epochs, self.steps = phase, epochs, steps
        self.bar, self.started = None, 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()
        self.bar = progress_bar(self.steps, None, unit="batch", leave=False,
                                desc=f"{self.phase} epoch {epoch + 1}/{self.epochs}")

    def on_train_batch_end(self, batch, logs=None):
        self.bar.update(1)
        if logs:
            self.bar.set_postfix({k: f"{float(v):.3f}" for k, v in logs.items()}, refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        self.bar.close()
        figures = ", ".join(f"{k} {float(v):.4f}" for k, v in (logs or {}).items())
        log.info("%s epoch %d/%d: %s (%.0f s)", self.phase, epoch + 1, self.epochs, figures,
                 time.perf_counter() - self.started)
