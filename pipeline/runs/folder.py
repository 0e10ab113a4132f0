"""Run folders: written whole or not at all, with models that can be trusted.

A run is written into a fresh folder beside ``<out>`` and swapped into
place when complete, so a crash never leaves a half-written run. An earlier
run is replaced only when the user asked for it, and only when it is a run
this tool wrote: ``manifest.json`` lists every file the run holds, and a
folder with any other file is never replaced. ``manifest.json`` records every
saved model with its sha256; :func:`load_model` refuses a file whose checksum
differs, because a joblib file is a pickle and loading one runs code.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from .._files import made_by_umask, sha256_file
from ..errors import ConfigError, RunError, first_line
from ..heads import persist

# The run folder's layout: every module reads and writes a run's files by these names.
MANIFEST = "manifest.json"
WORK = "finetune"  # stage 3's resumable work files, written while it trains
FINETUNED = "models/finetuned.keras"  # stage 3's model, pixels in
RESOLVED = "run.toml"  # `run`'s resolved configuration, written after the run folder
LEADERBOARD, LEADERBOARD_MD, LEADERBOARD_CSV = "leaderboard.json", "leaderboard.md", "leaderboard.csv"
PER_CLASS, SEARCH = "per_class.csv", "search.csv"  # per-class metrics; every candidate searched
INSIGHTS = "insights.json"  # the data audit
REPORT = "report.html"
CONFIG = "config.json"  # stage 2's settings
REPLAY, REPLAY_MD = "replay.json", "replay.md"  # the labelling loop replayed (`replay --out`)
DRIFT = "drift.json"  # the last batch `drift` tested against the run
LABELLING = "labelling.json"  # the last `label` session against the run


def plot(name: str) -> str:
    """Where the plot ``name`` goes in a run folder."""
    return f"plots/{name}.png"


def history(name: str) -> str:
    """Where a model that trains by epochs keeps its history."""
    return f"{name}_history.json"


def read_leaderboard(run: str | os.PathLike) -> list[dict]:
    return json.loads((Path(run) / LEADERBOARD).read_text(encoding="utf-8"))


def default_run_dir(cache_path: Path) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cache_path.stem}-{stamp}"


def is_run(folder: Path) -> bool:
    """Whether ``folder`` holds a run this tool wrote: a manifest that reads as one."""
    try:
        return read_manifest(folder).get("stage") in ("compare", "replay")
    except RunError:
        return False


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir())


def _foreign(run: Path) -> list[str]:
    """Files in a run folder that its manifest does not list (runs that list none: none)."""
    listed = read_manifest(run).get("files")
    if listed is None:
        return []
    return [f for f in _files(run) if f not in set(listed) | {MANIFEST, RESOLVED}
            and not f.startswith(f"{WORK}/")]


def _listed(files: list[str]) -> str:
    return ", ".join(files[:3]) + (" ..." if len(files) > 3 else "")


def check_amendable(run: Path, fix: str = "") -> None:
    """Refuse, before any work, to add files to a run folder that also holds files of the user's.

    :meth:`RunWriter.commit` would refuse it too, after the work (stage 3's
    training, a replay, a drift test) was done.

    Args:
        fix: what else the user may do, after "move them out of it".
    """
    read_manifest(run)
    others = _foreign(Path(run))
    if others:
        raise ConfigError(f"Run folder {run} also holds files this tool did not write "
                          f"({_listed(others)}), so nothing is added to it. Fix: move them out of "
                          f"it{fix}.")


def check_writable(out: Path, overwrite: bool) -> None:
    """Refuse, before any work, to write where a run of this tool cannot be replaced.

    A folder is replaced only when it holds a run this tool wrote (a valid
    manifest, and no file the manifest does not list) and ``overwrite`` is set.
    """
    if out.is_symlink():
        raise ConfigError(f"`--out` {out} is a link, and the pipeline replaces only folders it "
                          "wrote, never through a link. Fix: pass the folder it points to, or a new "
                          "folder, with `--out`.")
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not out.is_dir():
        raise ConfigError(f"`--out` {out} is a file, not a folder. Fix: pass a new folder with "
                          "`--out`.")
    if not is_run(out):
        raise ConfigError(
            f"`--out` {out} is a folder of other files, not a run this tool wrote (it has no "
            f"valid {MANIFEST}), and the pipeline never replaces or deletes files it did not "
            "write. Fix: pass a new or empty folder with `--out`.")
    others = _foreign(out)
    if others:
        raise ConfigError(f"Run folder {out} also holds files this tool did not write "
                          f"({_listed(others)}), so it is not replaced. Fix: move them out of it, "
                          "or pass another `--out`.")
    if not overwrite:
        raise ConfigError(f"Run folder {out} already holds a run. Fix: pass another `--out`, or "
                          "`--overwrite` to replace it.")


class RunWriter:
    """Collects a run's files in a folder beside ``out``; :meth:`commit` swaps it in.

    A failure at any point leaves the earlier run (if any) whole: the new one
    is complete before the old one is moved away.
    """

    def __init__(self, out: Path, base: Path | None = None):
        self.out = out
        out.parent.mkdir(parents=True, exist_ok=True)
        # Readable as the umask allows, as any folder a tool makes: a team's shared folder.
        self.tmp = made_by_umask(Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent)))
        self.base: dict | None = None
        if base is not None:  # amending a finished run: start from a copy of it
            shutil.copytree(base, self.tmp, dirs_exist_ok=True)
            self.base = read_manifest(self.tmp)
        (self.tmp / "models").mkdir(exist_ok=True)
        self.models: dict[str, dict] = {}

    @classmethod
    def amend(cls, run: Path) -> "RunWriter":
        """A writer over a copy of the finished ``run``; :meth:`commit` replaces it."""
        read_manifest(run)
        return cls(run, base=run)

    def path(self, relative: str) -> Path:
        target = self.tmp / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def write_text(self, relative: str, text: str) -> None:
        # A file name whose bytes are not UTF-8 is written as those bytes, as the disk names it.
        self.path(relative).write_text(text, encoding="utf-8", errors="surrogateescape")

    def write_json(self, relative: str, data) -> None:
        self.write_text(relative, _json(data))

    def save_model(self, name: str, estimator, form: str, params: dict | None = None) -> None:
        """Save a fitted model as ``form`` says: "keras" (the Keras head's own file) or "joblib"."""
        relative = f"models/{name}.{form}"
        persist.save(estimator, self.path(relative), form)
        self.models[name] = {"file": relative, "format": form,
                             "sha256": sha256_file(self.path(relative)), "params": params or {},
                             "classes": [int(c) for c in estimator.classes_]}

    def add_model(self, name: str, relative: str, params: dict) -> None:
        """Record a whole Keras model (pixels in) saved at ``relative``."""
        self.models[name] = {"file": relative, "format": "keras-model",
                             "sha256": sha256_file(self.path(relative)), "params": params}

    def commit(self, manifest: dict | None = None, overwrite: bool = False) -> Path:
        """Publish the run: swapped in for an earlier one only where :func:`check_writable` allows."""
        if self.base is not None:
            manifest, overwrite = {**self.base, **(manifest or {})}, True
            manifest["models"] = {**self.base["models"], **self.models}
        else:
            manifest = {**manifest, "models": self.models,
                        "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        manifest["files"] = [f for f in _files(self.tmp) if f != MANIFEST]
        self.write_json(MANIFEST, manifest)
        check_writable(self.out, overwrite)
        if self.out.is_dir() and any(self.out.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.old-", dir=self.out.parent))
            os.replace(self.out, old)  # over the empty folder just made
            os.replace(self.tmp, self.out)
            shutil.rmtree(old)
        else:
            os.replace(self.tmp, self.out)
        return self.out

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()


def _json(data) -> str:
    return json.dumps(data, indent=2, default=str) + "\n"


MAX_MANIFEST_BYTES = 64 * 2**20  # a run of thousands of models lists well under 1 MB


def read_manifest(run: str | os.PathLike) -> dict:
    """A run's ``manifest.json``, checked to be one this tool wrote: the one loader of it.

    Raises:
        RunError: no manifest, or one that is damaged or not this tool's (a
            sentence naming the file and what is wrong with it).
    """
    path = Path(run) / MANIFEST
    if not path.is_file():
        raise RunError(f"{run} is not a finished run folder: it has no {MANIFEST}. "
                       "Fix: pass a folder written by `run_pipeline.py compare`.")
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ValueError(f"it is {path.stat().st_size:,} bytes, more than a manifest holds")
        manifest = json.loads(path.read_bytes().decode("utf-8"))
        _check_manifest(manifest)
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RunError(f"{path} is damaged or was not written by this tool ({first_line(exc)}). "
                       "Fix: run `python run_pipeline.py compare` again for this run (or pass "
                       "another run folder).") from None
    return manifest


def _check_manifest(manifest) -> None:
    """Raise ValueError unless ``manifest`` has the fields, of the types, readers rely on."""
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise ValueError(what)

    need(isinstance(manifest, dict), f"it holds {type(manifest).__name__}, not an object")
    need(isinstance(manifest.get("stage"), str), "it has no stage")
    need(isinstance(manifest.get("models"), dict), "it has no models")
    for name, entry in manifest["models"].items():
        need(isinstance(entry, dict) and all(isinstance(entry.get(k), str)
                                             for k in ("file", "format", "sha256")),
             f"model {name!r} lacks its file, format or sha256")
        file = Path(entry["file"])
        need(not file.is_absolute() and ".." not in file.parts,
             f"model {name!r} is filed outside the run ({entry['file']})")
    for name, kind in (("classes", list), ("config", dict), ("cache", dict), ("files", list)):
        need(name not in manifest or isinstance(manifest[name], kind),
             f"its {name} is not a {kind.__name__}")
    if "cache" in manifest:
        cache = manifest["cache"]
        need(isinstance(cache.get("key"), dict) and isinstance(cache.get("path"), str)
             and isinstance(cache.get("key_hash"), str), "its cache lacks its key, path or key hash")


def load_model(run: str | os.PathLike, name: str):
    """A model saved by a run, after checking its sha256 against the manifest."""
    manifest = read_manifest(run)
    entry = manifest["models"].get(name)
    if entry is None:
        raise RunError(f"Run {run} has no model {name!r}; it has "
                       f"{', '.join(manifest['models']) or 'none'}.")
    path = Path(run) / entry["file"]
    if not path.is_file() or sha256_file(path) != entry["sha256"]:
        why = ("a joblib file is a pickle, and loading one runs code" if entry["format"] == "joblib"
               else "it would not be the model the run measured")
        raise RunError(
            f"{path} does not match the checksum in {Path(run) / MANIFEST}: it was "
            f"changed or replaced after the run wrote it, so it will not be loaded ({why}). "
            "Fix: run compare again."
        )
    return persist.load(path, entry["format"], entry.get("params", {}), entry.get("classes"))
