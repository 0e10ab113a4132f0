"""The folder ``label`` writes the labels into (``--into``): nothing lost, nothing of the user's touched.

Layout::

    .label-folder           the marker: this folder is the tool's, written by `label`
    labels.csv              append-only, one line a label or an undo, fsynced before the page hears
                            back; each line ends with a checksum of itself
    <class>/<photo>         a copy of each labelled photo (a hard link where the filesystem allows)

The pool's files are only read. ``--into`` must be new, empty, or a folder
``label`` wrote (its marker), as the run and export folders decide. Started
again with the same ``--into``, a session reads ``labels.csv`` back and
offers no labelled photo again.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import shutil
import time
from pathlib import Path

from ..data.files import fingerprint_file
from ..errors import ConfigError

log = logging.getLogger(__name__)

MARKER = ".label-folder"
LABELS = "labels.csv"
FIELDS = ("time", "action", "fingerprint", "label", "copy", "source", "check")
MAX_LABELS_BYTES = 256 * 2**20  # a million labels is well under this


class Changed(Exception):
    """A pool photo is no longer the one whose features the session holds (the message says how)."""


def _check(values) -> str:
    """The checksum a line of ``labels.csv`` ends with: a flipped byte in it is seen."""
    return hashlib.blake2b("\x1f".join(values).encode("utf-8", errors="surrogateescape"),
                           digest_size=8).hexdigest()


class LabelFolder:
    """``--into``: the labels given so far, and the copies of their photos."""

    def __init__(self, path: Path, classes: list[str]):
        self.path = path
        self.classes = classes
        # fingerprint -> (label, copy's relative path), in the order given: undo takes the last
        self.labels: dict[str, tuple[str, str]] = {}

    @classmethod
    def open(cls, path: str | os.PathLike, classes: list[str]) -> LabelFolder:
        """``path`` made or checked, and its labels read back.

        Raises:
            ConfigError: ``path`` holds files ``label`` did not write, or is not a folder.
        """
        path = Path(path)
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            raise ConfigError(f"`--into` {path} is not a folder (a file or a link). Fix: pass a new "
                              "folder name.")
        marker = path / MARKER
        if marker.is_symlink():
            raise ConfigError(f"{marker} is a link, planted where `label` keeps its marker; it is not "
                              "followed. Fix: remove it, or pass another `--into`.")
        if path.is_dir() and not marker.is_file() and any(path.iterdir()):
            raise ConfigError(f"`--into` {path} holds files `label` did not write, and the pipeline "
                              "never writes into a folder of the user's. Fix: pass a new or empty folder, "
                              "or one `label` wrote.")
        path.mkdir(parents=True, exist_ok=True)
        (path / MARKER).touch()
        folder = cls(path, classes)
        folder._lock()
        folder._read_back()
        return folder

    def _lock(self) -> None:
        """Hold an ``flock`` on the folder while this session lives (the kernel drops it when the
        process ends, even killed): a second session on the same folder is refused.

        Raises:
            ConfigError: another ``label`` is using the folder.
        """
        import fcntl

        self._held = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(self._held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._held)
            raise ConfigError(f"Another `label` is using `--into` {self.path}; two sessions would "
                              "interleave their labels. Fix: finish that one, or pass another folder.") from None

    def close(self) -> None:
        """Let another session use the folder (the process's end does it too)."""
        if getattr(self, "_held", None) is not None:
            os.close(self._held)
            self._held = None

    def _read_back(self) -> None:
        """The labels of an earlier session, from ``labels.csv`` (a torn last line is ignored)."""
        file = self.path / LABELS
        if file.is_symlink() or (file.exists() and not file.is_file()):
            raise ConfigError(f"{file} is not a regular file. Fix: remove it and run again.")
        if not file.is_file():
            return
        if file.stat().st_size > MAX_LABELS_BYTES:
            raise ConfigError(f"{file} is larger than a labels file `label` writes. Fix: pass another "
                              "`--into`.")
        text = file.read_bytes().decode("utf-8", errors="surrogateescape")
        for n, row in enumerate(csv.DictReader(io.StringIO(text)), 2):
            if None in row.values() or row.get("action") not in ("label", "undo"):
                continue  # a line torn by a kill
            if row["check"] != _check(row[f] for f in FIELDS[:-1]):
                log.warning("%s line %d fails its checksum (a byte changed since it was written); it "
                            "is not taken", file, n)
                continue
            if not self._own_copy(row["label"], row["copy"]):
                continue  # not a copy this folder would have made: never followed, never removed
            if row["action"] == "label":
                self.labels.pop(row["fingerprint"], None)  # labelled again: last in the order
                self.labels[row["fingerprint"]] = (row["label"], row["copy"])
            elif row["action"] == "undo" and row["fingerprint"] in self.labels:
                del self.labels[row["fingerprint"]]

    def _own_copy(self, label: str, copy: str) -> bool:
        """Whether ``copy`` names a file this folder makes: ``<class>/<name>``, nothing else."""
        parts = Path(copy).parts
        return label in self.classes and len(parts) == 2 and parts[0] == label and \
            not parts[1].startswith(".") and parts[1] not in ("", "..")

    def add(self, fingerprint: str, source: str, label: str, max_bytes: int) -> str:
        """Label a photo: its copy in ``<label>/`` (a new name, never over a file), then a line in
        ``labels.csv``. Returns the copy's path, relative to the folder.

        Raises:
            Changed: the photo's bytes are no longer those of ``fingerprint`` (nothing is kept).
        """
        if label not in self.classes:
            raise ConfigError(f"{label!r} is not a class of the run ({', '.join(self.classes)}).")
        folder = self.path / label
        if folder.is_symlink():
            raise ConfigError(f"{folder} is a link, planted in a folder `label` wrote; it is not "
                              "followed. Fix: remove the link and label again.")
        folder.mkdir(exist_ok=True)
        staged = folder / f".{fingerprint}.part-{os.getpid()}"
        staged.unlink(missing_ok=True)
        try:
            os.link(source, staged)  # no bytes copied where the filesystem allows
        except OSError:
            shutil.copyfile(source, staged)
        try:
            copied = fingerprint_file(str(staged), max_bytes)
        except (OSError, ValueError):
            copied = None
        if copied != fingerprint:  # the label is for the photo the page showed, or for none
            staged.unlink()
            raise Changed(f"{source} changed since its features were computed; it was not labelled. "
                          "Fix: skip it, or start `label` again to see it as it is now")
        name = Path(source).name
        stem, suffix = Path(name).stem, Path(name).suffix
        try:
            for candidate in [name, *(f"{stem}-{fingerprint[:8]}-{i}{suffix}" for i in range(100))]:
                try:
                    os.link(staged, folder / candidate)  # fails on a name taken: nothing is replaced
                    break
                except FileExistsError:
                    continue
            else:
                raise ConfigError(f"{folder} holds 100 photos named like {name}. Fix: pass a new `--into`.")
        finally:
            staged.unlink()
        copy = f"{label}/{candidate}"
        self._append("label", fingerprint, label, copy, source)
        self.labels[fingerprint] = (label, copy)
        return copy

    def undo(self) -> str | None:
        """Take the last label back: its copy removed, an undo line appended. Returns its
        fingerprint (None: nothing to undo)."""
        if not self.labels:
            return None
        fingerprint = next(reversed(self.labels))
        label, copy = self.labels.pop(fingerprint)
        target = self.path / copy
        if target.is_file() and not target.is_symlink():
            target.unlink()
        self._append("undo", fingerprint, label, copy, "")
        return fingerprint

    def _append(self, action: str, fingerprint: str, label: str, copy: str, source: str) -> None:
        """One line, written and fsynced before the caller answers (a header first, in a new file)."""
        file = self.path / LABELS
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        if not file.exists():
            writer.writerow(FIELDS)
        values = [f"{time.time():.3f}", action, fingerprint, label, copy, source]
        writer.writerow([*values, _check(values)])
        fd = os.open(file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        try:
            os.write(fd, out.getvalue().encode("utf-8", errors="surrogateescape"))
            os.fsync(fd)
        finally:
            os.close(fd)
