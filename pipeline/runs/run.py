"""A finished run, read: the one reader of a run folder, beside its writer (:class:`.folder.RunWriter`).

:meth:`Run.open` checks ``manifest.json`` once, through the one loader of it
(:func:`.folder.read_manifest`); everything else asks the run: its classes,
its models and their formats, the best model by one rule, its feature cache
and whether that still matches, and the network that computes its features.
"""

from __future__ import annotations

import enum
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .._files import key_hash
from ..errors import ConfigError, RunError
from . import scores
from .folder import MANIFEST, REPLAY, load_model, read_leaderboard, read_manifest


class Format(enum.Enum):
    """How a run saved a model, and so what it takes in."""

    JOBLIB = "joblib"  # a scikit-learn estimator, features in
    KERAS = "keras"  # the dense head, features in
    PIXELS = "keras-model"  # stage 3's whole network, pixels in

    @property
    def takes_pixels(self) -> bool:
        return self is Format.PIXELS


@dataclass(frozen=True)
class Run:
    """A run folder written by ``compare``, ``run`` or ``replay``, its manifest checked."""

    path: Path
    manifest: dict

    @classmethod
    def open(cls, path: str | os.PathLike) -> Run:
        """Raises RunError: not a finished run folder, or its manifest is damaged or not this tool's."""
        path = Path(path)
        manifest = read_manifest(path)
        for name, entry in manifest["models"].items():
            if entry["format"] not in {f.value for f in Format}:
                raise RunError(f"{path / MANIFEST} is damaged or was not written by this tool (model "
                               f"{name!r} has format {entry['format']!r}). Fix: run `python "
                               "run_pipeline.py compare` again for this run (or pass another run folder).")
        return cls(path, manifest)

    @staticmethod
    def exists(path: str | os.PathLike) -> bool:
        """Whether ``path`` holds a finished run (its manifest), damaged or not."""
        return (Path(path) / MANIFEST).is_file()

    @classmethod
    def open_compared(cls, path: str | os.PathLike) -> Run:
        """A run with models (written by ``compare`` or ``run``), its feature cache still the one it
        was trained on.

        Raises:
            RunError: not such a run, or its feature cache is gone or was rebuilt since.
        """
        run = cls.open(path)
        if not run.has_models:
            raise RunError(f"{run.path} holds a replay, not a run with models. Fix: pass a run folder "
                           "written by `compare` or `run`.")
        run.cache()  # the one freshness check, before any work
        return run

    @property
    def has_models(self) -> bool:
        return self.manifest["stage"] == "compare"

    @property
    def classes(self) -> list[str]:
        return self.manifest["classes"]

    @property
    def config(self) -> dict:
        """Stage 2's settings, as the run saved them."""
        return self.manifest["config"]

    @property
    def key(self) -> dict:
        """The feature spec and view of the run's features (stage 1's settings)."""
        return self.manifest["cache"]["key"]

    @property
    def key_hash(self) -> str:
        return self.manifest["cache"]["key_hash"]

    @property
    def precision(self) -> str:
        return self.key.get("precision", "float32")

    @property
    def cache_path(self) -> Path:
        return Path(self.manifest["cache"]["path"])

    @property
    def cache_dir(self) -> Path:
        """The cache folder the run's features came from (the feature store is in it)."""
        return self.cache_path.parent

    @functools.cached_property
    def replay(self) -> dict | None:
        """The loop's replay that ``replay --out`` added to the run (None: it has none), read once."""
        path = self.path / REPLAY
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    @property
    def models(self) -> dict[str, Format]:
        """Every saved model's format, by name."""
        return {name: Format(entry["format"]) for name, entry in self.manifest["models"].items()}

    def params(self, name: str) -> dict:
        """The settings a model was saved with."""
        return self.manifest["models"][name].get("params", {})

    def cache(self):
        """The feature cache the run was trained on, checked to be the same one still (once).

        Raises:
            RunError: it is gone, or it was rebuilt with other images or settings since.
        """
        return self._cache

    @functools.cached_property
    def _cache(self):
        from ..features import FeatureCache

        if not self.cache_path.is_file():
            raise RunError(
                f"The features of run {self.path} are gone: {self.cache_path} does not exist. Fix: run "
                "`python run_pipeline.py extract` again on the run's images with its settings (its "
                "manifest.json holds them under cache.key); the feature store keeps every row, so "
                "nothing is computed again.")
        cache = FeatureCache(self.cache_path)
        if key_hash(cache.key) != self.key_hash:
            raise RunError(f"{self.cache_path} was rebuilt with other images or settings after run "
                           f"{self.path} was made. Fix: run compare again on it.")
        return cache

    def name(self, model: str = "best", features_in: bool = False) -> str:
        """A saved model's name; ``best`` is the recommended row of the leaderboard, or, among
        models that take features when ``features_in``, the first such row after it.

        Raises:
            RunError: ``model`` is neither best nor a saved model.
        """
        models = self.models
        if model != "best":
            if model not in models:
                raise RunError(f"`--model` must be best or one of {', '.join(models)}. Got {model!r}.")
            return model
        rows = read_leaderboard(self.path)
        best = scores.recommended(rows)
        ordered = [best, *(r for r in rows if r is not best)]
        return next(r["classifier"] for r in ordered
                    if not (features_in and models[r["classifier"]].takes_pixels))

    def load(self, name: str):
        """A saved model, after checking its sha256 against the manifest."""
        return load_model(self.path, name)

    def extractor(self, weights: str | None = None):
        """Stage 1's network for this run: the one way to compute its features again."""
        from ..features.extractor import Extractor

        return Extractor.from_key(self.key, weights)

    def store_folder(self) -> Path:
        """The feature store's folder of this run's feature spec (its kept networks are there)."""
        from ..features.spec import spec_of, store_folder_name
        from ..features.store import store_root

        return store_root(self.cache_dir) / store_folder_name(spec_of(self.key))

    def labelled(self) -> dict[str, str]:
        """The content digest of every image the run has a label for, in any split: digest -> split."""
        cache = self.cache()
        return {fp: split for split in cache.splits for fp in cache.index(split).fingerprints if fp}

    def images(self, folder: str | os.PathLike, what: str, **options):
        """The features of every image under ``folder``, as this run's features; the store
        computes what it lacks (see :func:`..features.unlabelled.features_of`).

        Raises:
            ConfigError: ``folder`` is not a folder, or has no image.
        """
        from ..data import IMAGE_EXTENSIONS, expand
        from ..features.unlabelled import features_of

        folder = Path(folder)
        if not folder.is_dir():
            raise ConfigError(f"`--{what}` must be a folder of images. Got {str(folder)!r}, which is "
                              "not a folder. Fix: pass the folder of the new photos.")
        try:
            paths = expand([str(folder)])
        except ConfigError:
            raise ConfigError(f"`--{what}` {folder} has no images ({', '.join(IMAGE_EXTENSIONS)}). "
                              "Fix: pass the folder that holds the new photos.") from None
        return features_of(paths, self.key, self.cache_dir, **options)
