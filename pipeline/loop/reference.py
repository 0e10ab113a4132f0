"""What the loop reads from a run: its labelled images' features, the model that predicts, and a
folder of new images' features, through the feature store."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .._files import key_hash
from ..data import IMAGE_EXTENSIONS
from ..errors import ConfigError, RunError
from ..features import FeatureCache
from ..features.unlabelled import Unlabelled, features_of
from ..predict import expand
from ..runs import load_model, read_leaderboard, read_manifest


@dataclass(frozen=True)
class Reference:
    """A finished run and the feature cache its models were trained on."""

    run: Path
    manifest: dict
    cache: FeatureCache

    @property
    def classes(self) -> list[str]:
        return self.manifest["classes"]

    def labelled(self) -> dict[str, str]:
        """The content digest of every image the run has a label for, in any split: digest -> split."""
        return {fp: split for split in self.cache.splits for fp in self.cache.index(split).fingerprints if fp}

    def model(self):
        """The best stage-2 model of the run (features in): its name and the model."""
        models = self.manifest["models"]
        rows = sorted(read_leaderboard(self.run), key=lambda r: not r.get("recommended"))
        name = next(r["classifier"] for r in rows
                    if models.get(r["classifier"], {}).get("format") != "keras-model")
        return name, load_model(self.run, name)

    def images(self, folder: str | os.PathLike, what: str, **options) -> Unlabelled:
        """The features of every image under ``folder``; the store computes what it lacks.

        Raises:
            ConfigError: ``folder`` is not a folder, or has no image.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise ConfigError(f"`--{what}` must be a folder of images. Got {str(folder)!r}, which is "
                              "not a folder. Fix: pass the folder of the new photos.")
        try:
            paths = expand([str(folder)])
        except ConfigError:
            raise ConfigError(f"`--{what}` {folder} has no images ({', '.join(IMAGE_EXTENSIONS)}). "
                              "Fix: pass the folder that holds the new photos.") from None
        return features_of(paths, self.manifest["cache"]["key"], self.cache.path.parent, **options)


def open_run(run: str | os.PathLike) -> Reference:
    """A run written by ``compare`` (or ``run``), with its feature cache checked.

    Raises:
        RunError: not such a run, or its feature cache is gone or was rebuilt since.
    """
    run = Path(run)
    manifest = read_manifest(run)
    if manifest.get("stage") != "compare":
        raise RunError(f"{run} holds a replay, not a run with models. Fix: pass a run folder "
                       "written by `compare` or `run`.")
    path = Path(manifest["cache"]["path"])
    if not path.is_file():
        raise RunError(
            f"The features of run {run} are gone: {path} does not exist. Fix: run `python "
            "run_pipeline.py extract` again on the run's images with its settings (its manifest.json "
            "holds them under cache.key); the feature store keeps every row, so nothing is computed "
            "again.")
    cache = FeatureCache(path)
    if key_hash(cache.key) != manifest["cache"]["key_hash"]:
        raise RunError(f"{path} was rebuilt with other images or settings after run {run} was made. "
                       "Fix: run compare again on it.")
    return Reference(run, manifest, cache)
