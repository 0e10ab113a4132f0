"""Find labelled images on disk and assign them to splits.

Three layouts are understood:

* ``DIR/<split>/<class>/...`` with ``train``, ``validation`` (or ``val`` /
  ``valid``) and optionally ``test``;
* ``DIR/<class>/...``: split deterministically into train/validation/test;
* the first layout without ``test``: a test split can be carved out of
  validation deterministically (the TensorFlow tutorial moves 20 % of it).

Deterministic splitting hashes each image's path *relative to the dataset
root* (as TensorFlow's ``retrain.py`` does), one image at a time: moving the
folder never reshuffles, and adding images never moves existing ones. Every
class is split with the same thresholds, so the split is stratified in
expectation; exact per-class counts would require ranking, which moves images
whenever one is added.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..config import SplitConfig
from ..errors import ConfigError, DataLayoutError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SPLITS = ("train", "validation", "test")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "val": "validation",
    "valid": "validation",
    "test": "test",
}


@dataclass(frozen=True)
class Dataset:
    """Images found under a root, assigned to splits.

    Attributes:
        root: the dataset folder.
        layout: ``"splits"`` (split sub-folders) or ``"classes"``.
        classes: class names, sorted; a label is an index into it.
        splits: split name -> tuple of ``(relative posix path, label)``,
            sorted by path. Only non-empty splits are present.
        ignored: relative paths of files that are not images (or images
            outside a class folder), and of folders that cannot be read.
        missing: split name -> classes that have no image in that split.
    """

    root: Path
    layout: str
    classes: tuple[str, ...]
    splits: dict[str, tuple[tuple[str, int], ...]]
    ignored: tuple[str, ...] = ()
    missing: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {name: len(items) for name, items in self.splits.items()}


def unit_hash(text: str, salt: str = "") -> float:
    """Map a string to a stable number in [0, 1)."""
    digest = hashlib.sha1(f"{salt}{text}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _subfolders(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")
    )


def _walk_class(class_dir: Path, root: Path, ignored: list[str]) -> list[str]:
    """Relative posix paths of the images below one class folder."""
    images = []

    def unreadable(exc: OSError) -> None:  # os.walk skips such a folder without a word
        rel = Path(exc.filename).relative_to(root).as_posix()
        ignored.append(f"{rel}/ (a folder that cannot be read: {exc.strerror})")

    for dirpath, dirnames, filenames in os.walk(class_dir, onerror=unreadable):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            (images if is_image_name(name) else ignored).append(rel)
    return images


def _loose_files(folder: Path, root: Path) -> list[str]:
    return [
        p.relative_to(root).as_posix()
        for p in sorted(folder.iterdir())
        if p.is_file()
    ]


def _layout_error(root: Path, found: str) -> DataLayoutError:
    return DataLayoutError(
        f"`--data` must be a folder of class folders (DIR/<class>/<image>) or of "
        f"split folders (DIR/train/<class>/<image>, DIR/validation/..., optional "
        f"DIR/test/...). In {root} found {found}. Fix: arrange the images in one "
        f"folder per class."
    )


def discover(root: str | os.PathLike, config: SplitConfig = SplitConfig()) -> Dataset:
    """Find the images under ``root`` and assign each to a split.

    Raises:
        DataLayoutError: the folder is missing, empty, has no class folders,
            mixes split and class folders, has fewer than two classes, or a
            training split with fewer than two classes.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DataLayoutError(
            f"`--data` must be an existing folder of images. Got {root}, which "
            "does not exist or is not a folder."
        )
    subdirs = _subfolders(root)
    ignored = _loose_files(root, root)
    if not subdirs:
        found = f"{len(ignored)} files and no sub-folders" if ignored else "nothing"
        raise _layout_error(root, found)

    split_dirs = {d: SPLIT_ALIASES.get(d.name.lower()) for d in subdirs}
    named = [d for d, split in split_dirs.items() if split]
    if named:
        others = [d.name for d, split in split_dirs.items() if not split]
        if others:
            raise _layout_error(
                root,
                f"split folders ({', '.join(d.name for d in named)}) mixed with "
                f"other folders ({', '.join(others)})",
            )
        raw = _read_split_layout(root, split_dirs, ignored)
        layout = "splits"
    else:
        raw = _read_class_layout(root, subdirs, ignored)
        layout = "classes"

    classes = _classes(root, raw, ignored)

    if layout == "classes":
        raw = _split_by_hash(raw["all"], config)
    elif config.test_from_validation and "test" not in raw and "validation" in raw:
        raw = _carve_test(raw, config.test_from_validation)

    splits, missing = _labelled(raw, classes)
    _check_train(root, splits, classes, missing)
    _warn(missing, ignored)
    return Dataset(root, layout, classes, splits, tuple(sorted(ignored)), missing)


def _classes(root: Path, raw: dict, ignored: list) -> tuple[str, ...]:
    """The classes that have images; refused when there are no images or one class."""
    classes = tuple(sorted({cls for split in raw.values() for cls in split if split[cls]}))
    total = sum(len(paths) for split in raw.values() for paths in split.values())
    if total == 0:
        raise DataLayoutError(
            f"No images found in {root} (looked for "
            f"{', '.join(IMAGE_EXTENSIONS)} in any case); found {len(ignored)} "
            "other files. Fix: point `--data` at the folder that holds the class "
            "folders."
        )
    if len(classes) < 2:
        raise DataLayoutError(
            f"A classifier needs at least two classes; {root} has "
            f"{len(classes)} ({', '.join(classes)}). Fix: add a folder of images "
            "for each class."
        )
    return classes


def _labelled(raw: dict, classes: tuple[str, ...]) -> tuple[dict, dict]:
    """Each split's sorted (path, class index) pairs, and the classes each split lacks."""
    splits, missing = {}, {}
    for name in SPLITS:
        per_class = raw.get(name, {})
        items = sorted(
            (path, classes.index(cls)) for cls, paths in per_class.items() for path in paths
        )
        if not items:
            continue
        splits[name] = tuple(items)
        absent = tuple(c for c in classes if not per_class.get(c))
        if absent:
            missing[name] = absent
    return splits, missing


def _warn(missing: dict, ignored: list) -> None:
    for name, absent in missing.items():
        log.warning("split %r has no images of class(es) %s", name, ", ".join(absent))
    if ignored:
        shown = sorted(ignored)[:5]
        more = f" and {len(ignored) - len(shown)} more" if len(ignored) > len(shown) else ""
        log.warning("ignored %d files that are not images (by their extension, one of %s) or "
                    "folders that cannot be read: %s%s",
                    len(ignored), ", ".join(IMAGE_EXTENSIONS), ", ".join(shown), more)


def _read_split_layout(
    root: Path, split_dirs: dict[Path, str | None], ignored: list[str]
) -> dict[str, dict[str, list[str]]]:
    raw: dict[str, dict[str, list[str]]] = {}
    for folder, split in split_dirs.items():
        if split in raw:
            raise _layout_error(root, f"two folders for the {split} split")
        ignored.extend(_loose_files(folder, root))
        raw[split] = {
            cls.name: _walk_class(cls, root, ignored) for cls in _subfolders(folder)
        }
    if "train" not in raw:
        raise _layout_error(
            root, f"split folders ({', '.join(d.name for d in split_dirs)}) but no train"
        )
    return raw


def _read_class_layout(
    root: Path, subdirs: list[Path], ignored: list[str]
) -> dict[str, dict[str, list[str]]]:
    return {"all": {cls.name: _walk_class(cls, root, ignored) for cls in subdirs}}


def _split_by_hash(
    per_class: dict[str, list[str]], config: SplitConfig
) -> dict[str, dict[str, list[str]]]:
    val_end = config.validation_fraction
    test_end = val_end + config.test_fraction
    raw: dict[str, dict[str, list[str]]] = {name: {} for name in SPLITS}
    for cls, paths in per_class.items():
        for path in paths:
            u = unit_hash(path)
            split = "validation" if u < val_end else "test" if u < test_end else "train"
            raw[split].setdefault(cls, []).append(path)
    return raw


def _carve_test(
    raw: dict[str, dict[str, list[str]]], fraction: float
) -> dict[str, dict[str, list[str]]]:
    validation: dict[str, list[str]] = {}
    test: dict[str, list[str]] = {}
    for cls, paths in raw["validation"].items():
        for path in paths:
            target = test if unit_hash(path, salt="test:") < fraction else validation
            target.setdefault(cls, []).append(path)
    return {**raw, "validation": validation, "test": test}


def _check_train(root, splits, classes, missing) -> None:
    train = splits.get("train", ())
    present = len(classes) - len(missing.get("train", ())) if train else 0
    if present < 2:
        raise DataLayoutError(
            f"The train split of {root} has images of {present} class(es); a "
            f"classifier needs at least two (classes found: {', '.join(classes)}). "
            "Fix: put images of every class in the train split, or lower "
            "`--validation-fraction` / `--test-fraction` for a small dataset."
        )


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
