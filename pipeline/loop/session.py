"""A labelling session: batches of suggested photos, the labels a person gives, and the head
retrained on stored features after each batch, with its validation accuracy and interval.

Every photo's features come through the store once, when the session starts
(the pool's photos the store lacks are computed then); after that a batch
costs a head's fit on stored rows and a strategy's ranking, no forward pass.
"""

from __future__ import annotations

import base64
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._blas import one_blas_thread
from ..config import MAX_FILE_BYTES, LabelConfig
from ..data.files import fingerprint_bytes, read_bytes
from ..errors import ConfigError, first_line
from ..runs import stats
from ..runs.report import thumbnail
from ..runs.run import Run
from .labels import Changed, LabelFolder
from .strategies import MISSING, STRATEGIES, head, query, quiet_heads
from .suggest import choose_strategy, new_photos


@dataclass(frozen=True)
class Photo:
    """A pool photo the session may offer: its id on the page, where it is, and its content."""

    id: int
    path: str
    fingerprint: str


class Session:
    """State of one ``label`` session; its methods answer the page's requests."""

    def __init__(self, run: str | os.PathLike, pool: str | os.PathLike, into: str | os.PathLike,
                 config: LabelConfig):
        self.run = Run.open_compared(run)
        self.config = config
        inside = Path(into).resolve()
        if inside == self.run.path.resolve() or self.run.path.resolve() in inside.parents:
            raise ConfigError(f"`--into` {into} is inside run {self.run.path}, which the session adds its "
                              "record to (a run folder is rewritten whole). Fix: pass a folder outside it.")
        self.strategy_name, self.chosen_by = choose_strategy(self.run, config.strategy)
        self.strategy = STRATEGIES[self.strategy_name]
        self.classes = self.run.classes
        cache = self.run.cache()
        if "validation" not in cache.splits or not cache.counts["validation"]:
            raise ConfigError(f"Run {self.run.path} has no validation images to score the retrained "
                              "head on. Fix: label against a run whose features have a validation split.")
        self.folder = LabelFolder.open(into, self.classes)  # refused before the pool costs anything
        train, self.validation = cache.load("train"), cache.load("validation")
        self.train_x = train.features.reshape(len(train.labels), -1)
        self.train_y = train.labels.astype(np.int64)
        got = self.run.images(pool, "pool", batch_size=config.batch_size, engine=config.engine,
                              weights=config.weights)
        keep, _ = new_photos(got, self.run.labelled(), pool, self.run.path)
        self.photos = [Photo(n, got.paths[i], got.fingerprints[i]) for n, i in enumerate(keep)]
        self.pool_x = got.features[keep].reshape(len(keep), -1)
        self.thumbnails: dict[int, bytes] = {}  # each photo's, made once: the page asks on every render
        self.skipped: set[int] = set()
        self.started = time.time()
        self.history: list[dict] = []
        self.seconds = 0.0  # the last retrain and next batch
        self.history.append({"labels": 0, **self._retrain()})  # the run's labels alone
        self.batch = self._next_batch()

    def _data(self, pool_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The run's training rows, the labelled pool rows, then ``pool_rows`` unlabelled."""
        given = [p.id for p in self.photos if p.fingerprint in self.folder.labels]
        y_given = [self.classes.index(self.folder.labels[self.photos[i].fingerprint][0]) for i in given]
        x = np.vstack([self.train_x, self.pool_x[given], self.pool_x[pool_rows]])
        y = np.concatenate([self.train_y, np.asarray(y_given, np.int64),
                            np.full(len(pool_rows), MISSING, np.int64)])
        return x, y

    def _retrain(self) -> dict:
        """The head fitted on every label so far; its validation accuracy and 95 % interval."""
        x, y = self._data(np.zeros(0, np.int64))
        with one_blas_thread(), quiet_heads():  # small matrices: one BLAS thread is ten times faster
            self.head = head(self.config.classifier, np.arange(len(self.classes)), 0).fit(x, y)
        features = self.validation.features.reshape(len(self.validation.labels), -1)
        correct = int((self.head.predict(features) == self.validation.labels).sum())
        total = len(self.validation.labels)
        return {"accuracy": round(correct / total, 4), "interval": stats.wilson(correct, total)}

    def _open_rows(self) -> np.ndarray:
        return np.asarray([p.id for p in self.photos if p.fingerprint not in self.folder.labels
                           and p.id not in self.skipped], np.int64)

    def _next_batch(self) -> list[dict]:
        """The next ``n`` photos the strategy picks among those not labelled or skipped."""
        rows = self._open_rows()
        if not len(rows):
            return []
        x, y = self._data(rows)
        offset = len(y) - len(rows)
        with one_blas_thread(), quiet_heads():
            picked, scores = query(self.strategy, x, y, min(self.config.n, len(rows)), len(self.folder.labels),
                                   self.head)
            proba = self.head.predict_proba(self.pool_x[rows[picked - offset]])
        chosen = [self.photos[rows[r - offset]] for r in picked]
        # Its content in a photo's address: a copy the browser keeps can only be of this photo.
        return [{"id": photo.id, "name": Path(photo.path).name, "src": f"/photo/{photo.id}?content={photo.fingerprint}",
                 "predicted": self.classes[int(p.argmax())], "probability": round(float(p.max()), 3),
                 "why": f"{self.strategy.reason} (score {s:.3g})", "label": None}
                for photo, s, p in zip(chosen, scores, proba)]

    def _after_batch(self) -> None:
        """Once every photo of the batch has its answer: retrain, then the next batch."""
        if any(item["label"] is None for item in self.batch):
            return
        start = time.perf_counter()
        scored = self._retrain()
        self.history.append({"labels": len(self.folder.labels), **scored})
        self.batch = self._next_batch()
        self.seconds = time.perf_counter() - start

    def _item(self, photo_id: int) -> dict:
        item = next((i for i in self.batch if i["id"] == photo_id), None)
        if item is None:
            raise KeyError(photo_id)
        return item

    def label(self, photo_id: int, label: str) -> None:
        """Raises KeyError: not a photo of the batch; ConfigError: not a class."""
        item = self._item(photo_id)
        if item["label"] is not None:
            return  # answered already (a double click)
        photo = self.photos[photo_id]
        self.folder.add(photo.fingerprint, photo.path, label, self.run.key.get("max_file_bytes", MAX_FILE_BYTES))
        item["label"] = label
        self._after_batch()

    def skip(self, photo_id: int) -> None:
        item = self._item(photo_id)
        if item["label"] is None:
            self.skipped.add(photo_id)
            item["label"] = "skip"
            self._after_batch()

    def undo(self) -> None:
        """The last label taken back (its copy removed); in this batch, its photo waits again."""
        fingerprint = self.folder.undo()
        for item in self.batch:
            if fingerprint is not None and self.photos[item["id"]].fingerprint == fingerprint:
                item["label"] = None

    def thumbnail(self, photo_id: int) -> bytes:
        """A small JPEG of a photo the session may offer, made once (KeyError: not one)."""
        if not 0 <= photo_id < len(self.photos):
            raise KeyError(photo_id)
        if photo_id not in self.thumbnails:
            photo = self.photos[photo_id]
            try:  # a regular file within the size limit, whose bytes are still those labelled
                data = read_bytes(photo.path, self.run.key.get("max_file_bytes", MAX_FILE_BYTES))
            except (OSError, ValueError) as exc:
                raise Changed(f"{photo.path} cannot be read now ({first_line(exc)})") from None
            if fingerprint_bytes(data) != photo.fingerprint:
                raise Changed(f"{photo.path} changed since its features were computed")
            uri = thumbnail(data)
            self.thumbnails[photo_id] = base64.b64decode(uri.split(",", 1)[1]) if uri else b""
        return self.thumbnails[photo_id]

    def state(self) -> dict:
        """What the page shows."""
        now, before = self.history[-1], self.history[0]
        return {"classes": self.classes, "batch": self.batch, "strategy": self.strategy_name,
                "chosen_by": self.chosen_by, "given": len(self.folder.labels),
                "pool": len(self.photos), "left": int(len(self._open_rows())),
                "accuracy": {**now, "run": before["accuracy"],
                             "change": round(now["accuracy"] - before["accuracy"], 4)},
                "replay": self._replay(len(self.train_y) + len(self.folder.labels)),
                "seconds": round(self.seconds, 3), "history": self.history}

    def _replay(self, labels: int) -> dict | None:
        """The run's replay at this many labels: the recommended strategy's mean accuracy there
        (linear between its budgets), or where its budgets end."""
        replay = self.run.replay
        if replay is None:
            return None
        budgets, name = replay["budgets"], replay["recommended"]
        mean = replay["strategies"][name]["mean"]
        said = {"strategy": name, "all_labels": replay["all_labels"], "budgets": budgets, "mean": mean}
        if budgets[0] <= labels <= budgets[-1]:
            said["expected"] = round(float(np.interp(labels, budgets, mean)), 4)
        return said

    def summary(self) -> dict:
        """The session for the run's record: labels given, time spent, accuracy before and after."""
        return {"labels": len(self.folder.labels), "into": str(self.folder.path),
                "seconds": round(time.time() - self.started, 1), "strategy": self.strategy_name,
                "before": self.history[0], "after": self.history[-1], "history": self.history}
