"""Stage 2 when the features do not fit in memory: stream them from the HDF5 file.

When the train and validation features (float32, plus a float64 working copy)
exceed the memory budget (``CompareConfig.memory_budget_mb``; 0 means half of
this machine's memory), :func:`pipeline.compare.compare` trains here instead:

- ``logreg`` becomes ``SGDClassifier(loss="log_loss")`` fitted with
  ``partial_fit`` block by block, after a ``StandardScaler`` is fitted the
  same way. Every C of the grid (``alpha = 1 / (C * n_train)``, the same
  penalty as the in-memory model) trains in the same passes, so each block is
  read once per epoch, and C is chosen on validation.
- ``dense`` trains through ``tf.data`` batches read from the file.
- The others are left out, and the report says so: k-NN and boosted trees
  need every row at once, and the calibrated linear SVM has no streaming
  equivalent as accurate (an SGD modified-Huber model scored about 4 points
  lower on the same features).

Blocks are read in a shuffled order each epoch, and rows are shuffled within
a block. Only labels (4 bytes a row) and predicted probabilities are ever
held for a whole split.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property

import h5py
import numpy as np

from ..features import checked
from ..features.checked import REBUILD, DamagedFile
from .vectorize import Vectorize
from ..words import counted

log = logging.getLogger(__name__)

# How a model was trained, as the leaderboard's `path` says: in memory, or streamed as its
# registry entry's `streams` says.
PATH_IN_MEMORY = "in memory"
PATH_STREAMED = {"sgd": "out of core: SGD partial_fit", "batches": "out of core: tf.data from HDF5"}
MAX_BLOCK_ROWS = 65536
SGD_EPOCHS = 10  # passes of partial_fit over train


def budget_bytes(memory_budget_mb: float) -> int:
    """The budget in bytes; 0 means half of this machine's physical memory."""
    if memory_budget_mb > 0:
        return int(memory_budget_mb * 2**20)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def in_memory_bytes(counts: dict[str, int], feature_shape: tuple[int, ...]) -> int:
    """What loading train and validation costs: float32 features and a float64 working copy."""
    rows = counts.get("train", 0) + counts.get("validation", 0)
    return rows * int(np.prod(feature_shape)) * (4 + 8)


@dataclass(frozen=True)
class FeatureRows:
    """One split of a cache file, read in blocks; never all of it at once."""

    path: str
    split: str
    block_rows: int

    @cached_property
    def labels(self) -> np.ndarray:
        """Every label of the split (4 bytes a row), read once."""
        with self._opened() as h5:
            return checked.read(h5[self.split]["labels"])

    @cached_property
    def _features(self) -> tuple[tuple[int, ...], str]:
        with h5py.File(self.path, "r") as h5:
            features = h5[self.split]["features"]
            return tuple(features.shape), str(features.dtype)

    @contextmanager
    def _opened(self):
        """The file; a block that fails its checksum says how to rebuild it."""
        try:
            with h5py.File(self.path, "r") as h5:
                yield h5
        except DamagedFile as exc:
            raise DamagedFile(exc.path, exc.what, REBUILD) from None

    @property
    def shape(self) -> tuple[int, ...]:
        return self._features[0]

    def __len__(self) -> int:
        return self.shape[0]

    def blocks(self, seed: int | None = None):
        """``(features, labels)`` blocks, features as stored (float16 stays float16).

        Seeded, the blocks come in a shuffled order and so do the rows in each.
        """
        n = len(self)
        starts = list(range(0, n, self.block_rows))
        rng = np.random.default_rng(seed) if seed is not None else None
        if rng is not None:
            rng.shuffle(starts)
        with self._opened() as h5:
            features, labels = h5[self.split]["features"], h5[self.split]["labels"]
            for start in starts:
                stop = min(start + self.block_rows, n)
                X, y = checked.read(features, np.s_[start:stop]), checked.read(labels, np.s_[start:stop])
                if rng is not None:
                    order = rng.permutation(len(y))
                    X, y = X[order], y[order]
                yield X, y

    def dataset(self, batch_size: int, encode=None, seed: int | None = None, labels: bool = True):
        """A ``tf.data.Dataset`` of float32 batches read from the file.

        Reshuffled every epoch when seeded; rows become float32 one batch at a time.
        """
        import tensorflow as tf

        epoch = [0]

        def batches():
            epoch[0] += 1
            for X, y in self.blocks(None if seed is None else seed + epoch[0]):
                y = encode(y) if encode is not None else y
                for i in range(0, len(X), batch_size):
                    yield (X[i:i + batch_size], y[i:i + batch_size]) if labels else X[i:i + batch_size]

        x_spec = tf.TensorSpec((None, *self.shape[1:]), tf.as_dtype(self._features[1]))
        spec = (x_spec, tf.TensorSpec((None,), tf.int64)) if labels else x_spec
        n = len(self)
        steps = sum(-(-min(self.block_rows, n - start) // batch_size)
                    for start in range(0, n, self.block_rows))
        as_float = ((lambda x, y: (tf.cast(x, tf.float32), y)) if labels
                    else (lambda x: tf.cast(x, tf.float32)))
        return (tf.data.Dataset.from_generator(batches, output_signature=spec)
                .apply(tf.data.experimental.assert_cardinality(steps))
                .map(as_float).prefetch(2))


def block_rows(feature_shape: tuple[int, ...], budget: int) -> int:
    """Rows per block: a block in the copies a step makes of it (as stored, shuffled,
    float32, scaled float32, the next block being read) takes at most a tenth of the budget."""
    row = int(np.prod(feature_shape)) * 4 * 4
    return int(max(256, min(MAX_BLOCK_ROWS, budget // 10 // max(row, 1))))


def predict_proba(model, rows: FeatureRows, reads_rows: bool = False) -> np.ndarray:
    """A model's probabilities for every row of a split, block by block; a model that
    ``reads_rows`` (the Keras head, reading tf.data batches) is given them whole."""
    if reads_rows:
        return model.predict_proba(rows)
    return np.concatenate([model.predict_proba(X.astype("float32")) for X, _ in rows.blocks()])


def fit_linear(Cs: list[float], train: FeatureRows, validation: FeatureRows, choose, *,
               n_classes: int, spatial: str, class_weight: str | None, seed: int,
               epochs: int = SGD_EPOCHS, name: str = "logreg") -> tuple[object, dict, list[dict]]:
    """A logistic-loss SGD model per C, trained in the same passes; the best on validation.

    Args:
        choose: ``proba -> score`` on validation (higher is better).

    Returns:
        The chosen pipeline (vectorize, scale, SGD), its parameters, and one
        ``{"C", "score"}`` per candidate.
    """
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    vectorize, scaler = Vectorize(spatial), StandardScaler()
    for X, _ in train.blocks():
        scaler.partial_fit(vectorize.transform(X.astype("float32")))
    labels, classes = train.labels, np.arange(n_classes)
    weights = _balanced(labels) if class_weight == "balanced" else None
    models = {C: SGDClassifier(loss="log_loss", alpha=1.0 / (C * len(labels)),
                               class_weight=weights, random_state=seed) for C in Cs}
    for epoch in range(epochs):
        for X, y in train.blocks(seed=seed + epoch):
            X = scaler.transform(vectorize.transform(X.astype("float32")))
            for model in models.values():
                model.partial_fit(X, y, classes=classes)
    pipelines = {C: Pipeline([("vectorize", vectorize), ("scale", scaler), ("clf", m)])
                 for C, m in models.items()}
    scores = {C: choose(predict_proba(p, validation)) for C, p in pipelines.items()}
    best = max(Cs, key=lambda C: (scores[C], -C))
    log.info("%s out of core: C=%s chosen on validation (%s of partial_fit)",
             name, best, counted(epochs, "epoch"))
    return pipelines[best], {"C": best, "epochs": epochs}, [{"C": C, "score": s} for C, s in scores.items()]


def _balanced(labels: np.ndarray) -> dict:
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    return dict(zip(present.tolist(), compute_class_weight("balanced", classes=present, y=labels).tolist()))
