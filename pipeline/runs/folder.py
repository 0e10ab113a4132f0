"""Run folders: written whole or not at all, with models that can be trusted.

A run is written into ``<out>.tmp-<pid>/`` and renamed into place when
complete, so a crash never leaves a half-written run, and an earlier run is
replaced only when the user asked for it. ``manifest.json`` records every
saved model with its sha256; :func:`load_model` refuses a file whose checksum
differs, because a joblib file is a pickle and loading one runs code.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from .._files import atomic_write, sha256_file
from ..errors import ConfigError, RunError
from ..heads import persist

MANIFEST = "manifest.json"


def default_run_dir(cache_path: Path) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cache_path.stem}-{stamp}"


def check_writable(out: Path, overwrite: bool) -> None:
    """Refuse, before any work, to replace an earlier run unless asked."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ConfigError(
            f"Run folder {out} already exists and is not empty. Fix: pass another "
            "`--out`, or `--overwrite` to replace it."
        )


class RunWriter:
    """Collects a run's files in a temporary folder; :meth:`commit` publishes it."""

    def __init__(self, out: Path):
        self.out = out
        self.tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
        shutil.rmtree(self.tmp, ignore_errors=True)
        (self.tmp / "models").mkdir(parents=True)
        self.models: dict[str, dict] = {}

    def path(self, relative: str) -> Path:
        target = self.tmp / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def write_text(self, relative: str, text: str) -> None:
        self.path(relative).write_text(text, encoding="utf-8")

    def write_json(self, relative: str, data) -> None:
        self.write_text(relative, _json(data))

    def save_model(self, name: str, estimator, keras: bool, params: dict | None = None) -> None:
        """Save a fitted model (``.keras`` for the Keras head, joblib otherwise)."""
        relative = f"models/{name}.keras" if keras else f"models/{name}.joblib"
        persist.save(estimator, self.path(relative), keras)
        self.models[name] = {"file": relative, "format": "keras" if keras else "joblib",
                             "sha256": sha256_file(self.path(relative)), "params": params or {},
                             "classes": [int(c) for c in estimator.classes_]}

    def commit(self, manifest: dict, overwrite: bool) -> Path:
        manifest = {**manifest, "models": self.models,
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self.write_json(MANIFEST, manifest)
        if self.out.exists():
            check_writable(self.out, overwrite)
            shutil.rmtree(self.out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.tmp, self.out)
        return self.out

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def _json(data) -> str:
    return json.dumps(data, indent=2, default=str) + "\n"


def read_manifest(run: str | os.PathLike) -> dict:
    path = Path(run) / MANIFEST
    if not path.is_file():
        raise RunError(f"{run} is not a finished run folder: it has no {MANIFEST}. "
                       "Fix: pass a folder written by `run_pipeline.py compare`.")
    return json.loads(path.read_text(encoding="utf-8"))


def add_model(run: str | os.PathLike, name: str, path: Path, params: dict) -> None:
    """Record a whole Keras model (pixels in) saved into a finished run."""
    run = Path(run)
    manifest = read_manifest(run)
    manifest["models"][name] = {"file": str(Path(path).relative_to(run)), "format": "keras-model",
                                "sha256": sha256_file(path), "params": params}
    atomic_write(run / MANIFEST, _json(manifest).encode())


def load_model(run: str | os.PathLike, name: str):
    """A model saved by a run, after checking its sha256 against the manifest."""
    manifest = read_manifest(run)
    entry = manifest["models"].get(name)
    if entry is None:
        raise RunError(f"Run {run} has no model {name!r}; it has "
                       f"{', '.join(manifest['models']) or 'none'}.")
    path = Path(run) / entry["file"]
    if not path.is_file() or sha256_file(path) != entry["sha256"]:
        raise RunError(
            f"{path} does not match the checksum in {Path(run) / MANIFEST}: it was "
            "changed or replaced after the run wrote it, so it will not be loaded "
            "(a joblib file can run code). Fix: run compare again."
        )
    return persist.load(path, entry["format"], entry.get("params", {}), entry.get("classes"))
