"""The feature store: one folder per feature spec, rows keyed by image content.

Layout of ``<cache_dir>/store/<backbone>-<size>-<pooling>-<spec hash>/``::

    spec.json                    the feature spec (see :mod:`.spec`)
    segments.txt                 the store's own list of the segments it wrote, one name a line
    seg-<hash>.h5                immutable segments, one per chunk of computed images:
        fingerprints (n,) S32    blake2b-128 hex of each image's bytes
        features (n, *shape)     the backbone's output, as stored (float32/float16)
        bad/fingerprints, bad/reasons   images the decoder rejected, and why
        attrs: view              the key hash of the extraction that computed it

A segment is written whole in memory, then to a temporary name, flushed and
renamed: a row is either whole or absent, and a run killed at any moment
loses at most the chunk in flight. Segments are never changed; ``gc`` writes
the rows still needed into new segments before it removes old ones.

A store reads, sets aside and removes only the segments its list names
(a segment is listed before it is renamed into place), never a glob: a
store folder moved to another disk and linked back may share that folder
with a person's files, and they are never read, moved or deleted. A name
of the store's that is a link (planted where a segment should be) is not
followed.

Concurrency: extractions hold an ``flock`` on the store folder itself (no
lock file): exclusive for a whole extraction, so a second one of the same
spec waits and then reuses every row the first computed; shared for shards,
which compute disjoint rows side by side; exclusive for ``gc``. The kernel
releases the lock when its holder exits, even when killed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .._files import atomic_write
from ..errors import CacheError, first_line, write_problem
from . import checked, kept as kept_model
from .checked import DamagedFile

log = logging.getLogger(__name__)

STORE = "store"
SPEC_FILE = "spec.json"
DAMAGED = "damaged"
SEGMENTS = "segments.txt"
_SEGMENT = re.compile(r"seg-[0-9a-f]{20}\.h5")  # what write_segment names a segment
_TEMPORARY = re.compile(r"seg-[0-9a-f]{20}\.h5\.tmp-[0-9]+|\.openvino-[0-9]+")
FP = "S32"  # a fingerprint as 32 ASCII hex characters
_STR = h5py.string_dtype("utf-8")


def write_failed(exc: Exception, what: Path, kept: Path) -> CacheError:
    """The message of a write that failed, a full disk above all."""
    return CacheError(
        f"Writing {what} failed: {write_problem(exc)}. Every image finished before it "
        f"is kept in {kept}, and no finished cache file was changed. Fix: free space "
        "(or raise the limit), then run the same command again; it resumes where it stopped.")


def durable_write(path: Path, data: bytes, kept: Path) -> None:
    """Write ``data`` to a temporary name, flush it to disk, rename: whole or absent."""
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise write_failed(exc, path, kept) from None
    finally:
        tmp.unlink(missing_ok=True)  # gives back the space a half write took


@dataclass
class Index:
    """Where every row of a store is: sorted fingerprints and their segment and row."""

    segments: list[Path]
    fingerprints: np.ndarray  # (n,) S32, sorted, unique
    segment: np.ndarray  # (n,) int32, index into segments
    row: np.ndarray  # (n,) int32, row within the segment
    bad: dict[str, str]  # fingerprint -> why the decoder rejected it
    views: list[str]  # per segment: the key hash of the extraction that wrote it
    feature_shape: tuple[int, ...] | None
    dtype: str | None
    damaged: list[Path] = field(default_factory=list)  # segments that failed their checksums

    def locate(self, fingerprints: np.ndarray) -> np.ndarray:
        """Position in this index of each fingerprint, -1 where the store lacks it."""
        fingerprints = np.asarray(fingerprints, dtype=FP)
        pos = np.searchsorted(self.fingerprints, fingerprints)
        pos = np.minimum(pos, max(len(self.fingerprints) - 1, 0))
        found = (self.fingerprints[pos] == fingerprints) if len(self.fingerprints) else \
            np.zeros(len(fingerprints), bool)
        return np.where(found, pos, -1)

    def gather(self, positions: np.ndarray) -> np.ndarray:
        """The features at ``positions`` (from :meth:`locate`, none -1), in that order."""
        out = np.empty((len(positions), *self.feature_shape), dtype=self.dtype)
        segment, row = self.segment[positions], self.row[positions]
        for s in np.unique(segment):
            where = np.flatnonzero(segment == s)
            wanted, inverse = np.unique(row[where], return_inverse=True)
            try:
                with h5py.File(self.segments[s], "r") as h5:
                    features = h5["features"]
                    # h5py reads increasing indices; past a quarter of the rows, one read is faster.
                    data = (checked.read(features)[wanted] if len(wanted) * 4 > features.shape[0]
                            else checked.read(features, wanted))
            except OSError as exc:
                raise DamagedFile(self.segments[s], first_line(exc)) from None
            out[where] = data[inverse]
        return out


class FeatureStore:
    """The rows of one feature spec, in ``folder``."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.excluded: set[str] = set()  # damaged segments that could not be set aside

    @classmethod
    def create(cls, folder: Path, spec: dict) -> "FeatureStore":
        """The store of ``spec``, made if absent (the caller checked the folder is writable)."""
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / SPEC_FILE).is_file():
            atomic_write(folder / SPEC_FILE, json.dumps(spec, sort_keys=True, indent=1).encode())
        store = cls(folder)
        store._start_list()
        return store

    def spec(self) -> dict:
        return json.loads((self.folder / SPEC_FILE).read_text())

    def _found(self) -> list[str]:
        """Names of a segment's form in the folder: a store older than its list wrote them."""
        if not self.folder.is_dir():
            return []
        return sorted(p.name for p in self.folder.iterdir() if _SEGMENT.fullmatch(p.name))

    def listed(self) -> list[str]:
        """The segment names the store's list holds."""
        ledger = self.folder / SEGMENTS
        try:
            fd = os.open(ledger, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return self._found()
        except OSError as exc:  # ELOOP: a link planted in its place
            raise CacheError(f"{ledger} cannot be opened as the store's own list of segments "
                             f"({exc.strerror or exc}; a link is never followed). Fix: remove "
                             "it, then run the same command again") from None
        with open(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise CacheError(f"{ledger} is not a regular file. Fix: remove it, then run the "
                                 "same command again")
            text = fh.read().decode(errors="replace")
        return sorted({line for line in text.split("\n") if _SEGMENT.fullmatch(line)})

    def _start_list(self) -> None:
        """Make the store's list where it has none, holding the segments an older store has."""
        try:
            fd = os.open(self.folder / SEGMENTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL
                         | os.O_NOFOLLOW, 0o666)
        except FileExistsError:
            return
        try:
            os.write(fd, "".join(f"{name}\n" for name in self._found()).encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def segments(self) -> list[Path]:
        """The listed segments that are there, as regular files (a link is not followed)."""
        found = []
        for name in self.listed():
            if name in self.excluded:
                continue
            path = self.folder / name
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:  # listed, then killed before it was renamed into place
                continue
            if stat.S_ISREG(mode):
                found.append(path)
            else:
                log.warning("%s is a link or not a regular file where the store keeps a segment; "
                            "it is not read. Fix: remove it", path)
        return found

    def _list(self, name: str) -> None:
        """Add a segment's name to the store's list, before the segment is renamed into place."""
        self._start_list()
        fd = os.open(self.folder / SEGMENTS, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
        try:
            os.write(fd, f"{name}\n".encode())  # one small append: whole, beside other writers
            os.fsync(fd)
        finally:
            os.close(fd)

    def relist(self) -> None:
        """Rewrite the list as the segments there and set aside; hold the exclusive lock."""
        names = [n for n in self.listed() if os.path.lexists(self.folder / n)
                 or os.path.lexists(self.folder / DAMAGED / n)]
        atomic_write(self.folder / SEGMENTS, "".join(f"{n}\n" for n in names).encode())

    @contextlib.contextmanager
    def locked(self, exclusive: bool, what: str):
        """Hold the store's lock (see the module's docstring) while writing or collecting."""
        fd = os.open(self.folder, os.O_RDONLY)
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("waiting for another extraction of %s to finish (store %s)", what,
                         self.folder.name)
                fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)  # releases the lock

    def index(self) -> Index:
        """Every row and rejected image of the store, from its segments' fingerprints.

        A segment that fails its checksums is left out (listed in
        ``Index.damaged``), so its images count as missing and are computed again.
        """
        fps, seg, row, views, good, damaged = [], [], [], [], [], []
        bad: dict[str, str] = {}
        shape = dtype = None
        for path in self.segments():
            try:
                got, rejected, view, layout = _read_segment(path)
            except DamagedFile as exc:
                log.warning("ignoring a damaged store segment: %s Its images are computed "
                            "again.", exc)
                damaged.append(path)
                continue
            bad.update(rejected)
            shape, dtype = layout
            fps.append(got.astype(FP))
            seg.append(np.full(len(got), len(good), np.int32))
            row.append(np.arange(len(got), dtype=np.int32))
            views.append(view)
            good.append(path)
        fps_all = np.concatenate(fps) if fps else np.zeros(0, FP)
        # A fingerprint may sit in two segments (two writers, or gc killed midway):
        # the rows are the same image's, so the first one serves.
        fps_all, first = np.unique(fps_all, return_index=True)
        seg_all = np.concatenate(seg)[first] if seg else np.zeros(0, np.int32)
        row_all = np.concatenate(row)[first] if row else np.zeros(0, np.int32)
        return Index(good, fps_all, seg_all, row_all, bad, views,
                     tuple(shape) if shape is not None else None, dtype, damaged)

    def set_aside(self, segments: list[Path]) -> None:
        """Move damaged segments into ``damaged/`` (kept for a person to look at; gc removes them)."""
        if not segments:
            return
        aside = self.folder / DAMAGED
        with contextlib.suppress(FileExistsError):
            aside.mkdir()
        if not stat.S_ISDIR(os.lstat(aside).st_mode):
            log.warning("%s is a link or not a folder, so damaged segments are left where they are "
                        "(this run reads them no more). Fix: remove it", aside)
            self.excluded.update(path.name for path in segments)
            return
        for path in segments:
            with contextlib.suppress(FileNotFoundError):  # another writer moved it first
                os.replace(path, aside / path.name)
                log.warning("moved damaged segment %s to %s", path.name, aside)

    def until_whole(self, attempt, again: str):
        """``attempt()``'s value, once no stored row it reads fails its checksum.

        A segment that fails is set aside and ``attempt`` runs again, computing
        its images anew; each round sets one segment aside, so this ends.

        Args:
            again: what to do after repairing, in the message when it does not end well.
        """
        for _ in range(len(self.segments()) + 1):
            try:
                return attempt()
            except DamagedFile as exc:
                log.warning("%s Its images are computed again.", exc)
                self.set_aside([exc.path])
        raise CacheError(f"{self.folder} keeps failing its checksums. Fix: `python "
                         f"run_pipeline.py cache verify --repair`, then {again}.")

    def write_segment(self, fingerprints: list[str], features: np.ndarray, bad: dict[str, str],
                      view: str) -> Path:
        """Add one chunk of rows (and rejected images) to the store, atomically."""
        name = hashlib.blake2b("".join([view, "|", *fingerprints, "|", *sorted(bad)]).encode(),
                               digest_size=10).hexdigest()
        path = self.folder / f"seg-{name}.h5"
        self._list(path.name)
        buffer = io.BytesIO()
        with h5py.File(buffer, "w", libver=checked.LIBVER) as h5:
            checked.create(h5, "fingerprints", np.asarray(fingerprints, dtype=FP))
            checked.create(h5, "features", features)
            checked.create(h5, "bad/fingerprints", np.asarray(sorted(bad), dtype=FP))
            checked.create(h5, "bad/reasons", [bad[f] for f in sorted(bad)], dtype=_STR)
            h5.attrs["view"] = view
            checked.seal(h5)
        durable_write(path, buffer.getvalue(), self.folder)
        return path

    def remove_stale_temporaries(self) -> None:
        """Remove what killed writers left; call with the exclusive lock (no writer runs).

        Only names of the form the store writes (``seg-<hash>.h5.tmp-<pid>``, a
        converted model's ``.openvino-<pid>`` staging folder), never a link.
        """
        for path in self.folder.iterdir():
            if not _TEMPORARY.fullmatch(path.name) or path.is_symlink():
                continue
            if path.is_dir():  # a converted model being saved
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def remove_set_aside(self) -> None:
        """Remove the listed segments set aside in ``damaged/``, and the folder once empty."""
        aside = self.folder / DAMAGED
        if not os.path.isdir(aside) or os.path.islink(aside):
            return
        for name in self.listed():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(aside / name)
        with contextlib.suppress(OSError):  # a person's file kept in it keeps it
            os.rmdir(aside)
        self.relist()

    def remove(self) -> None:
        """Remove everything the store wrote; the folder too, unless it holds other files
        or is a link (then the folder it points to stays, emptied of the store's files)."""
        self.remove_stale_temporaries()
        self.remove_set_aside()
        for path in self.segments():
            path.unlink(missing_ok=True)
        for xml in self.folder.glob("openvino-*/model.xml"):  # kept models (engines, quantize)
            if not xml.parent.is_symlink():
                for name in kept_model.NAMES:
                    (xml.parent / name).unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    xml.parent.rmdir()
        for name in (SEGMENTS, SPEC_FILE):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.folder / name)
        if not self.folder.is_symlink():
            with contextlib.suppress(OSError):
                self.folder.rmdir()

    def usage(self) -> dict:
        """Rows, rejected images and bytes on disk."""
        index = self.index()
        return {"rows": len(index.fingerprints), "rejected": len(index.bad),
                "segments": len(index.segments),
                "bytes": sum(p.stat().st_size for p in index.segments)}


def _read_segment(path: Path) -> tuple[np.ndarray, dict[str, str], str, tuple]:
    """A segment's fingerprints, rejected images, writer and row layout, checked."""
    try:
        with h5py.File(path, "r") as h5:
            if checked.sealed(h5):  # segments written before checksums are read unchecked
                checked.check_metadata(h5, path)
            else:
                checked.check_sizes(h5, path)
            got = checked.read(h5["fingerprints"])
            bad = dict(zip((f.decode() for f in checked.read(h5["bad/fingerprints"])),
                           (r.decode() for r in h5["bad/reasons"][()])))
            layout = h5["features"].shape[1:], str(h5["features"].dtype)
            return got, bad, str(h5.attrs.get("view", "")), layout
    except DamagedFile:
        raise
    except (OSError, KeyError, RuntimeError, ValueError) as exc:
        # Segments are renamed into place whole, so this is outside damage.
        raise DamagedFile(path, f"it cannot be read ({first_line(exc)})") from None


def store_root(cache_dir: Path) -> Path:
    return cache_dir / STORE
