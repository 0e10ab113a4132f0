"""The feature store: one folder per feature spec, rows keyed by image content.

Layout of ``<cache_dir>/store/<backbone>-<size>-<pooling>-<spec hash>/``::

    spec.json                    the feature spec (see :mod:`.spec`)
    seg-<hash>.h5                immutable segments, one per chunk of computed images:
        fingerprints (n,) S32    blake2b-128 hex of each image's bytes
        features (n, *shape)     the backbone's output, as stored (float32/float16)
        bad/fingerprints, bad/reasons   images the decoder rejected, and why
        attrs: view              the key hash of the extraction that computed it

A segment is written whole in memory, then to a temporary name, flushed and
renamed: a row is either whole or absent, and a run killed at any moment
loses at most the chunk in flight. Segments are never changed; ``gc`` writes
the rows still needed into new segments before it removes old ones.

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
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .._files import atomic_write
from ..errors import CacheError, first_line, write_problem
from . import checked
from .checked import DamagedFile

log = logging.getLogger(__name__)

STORE = "store"
SPEC_FILE = "spec.json"
DAMAGED = "damaged"
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

    @classmethod
    def create(cls, folder: Path, spec: dict) -> "FeatureStore":
        """The store of ``spec``, made if absent (the caller checked the folder is writable)."""
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / SPEC_FILE).is_file():
            atomic_write(folder / SPEC_FILE, json.dumps(spec, sort_keys=True, indent=1).encode())
        return cls(folder)

    def spec(self) -> dict:
        return json.loads((self.folder / SPEC_FILE).read_text())

    def segments(self) -> list[Path]:
        return sorted(self.folder.glob("seg-*.h5"))

    @contextmanager
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
        aside.mkdir(exist_ok=True)
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
        """Remove what killed writers left; call with the exclusive lock (no writer runs)."""
        for tmp in self.folder.glob("seg-*.tmp-*"):
            tmp.unlink(missing_ok=True)
        for staging in self.folder.glob(".openvino-*"):  # a converted model being saved
            shutil.rmtree(staging, ignore_errors=True)

    def usage(self) -> dict:
        """Rows, rejected images and bytes on disk."""
        index = self.index()
        return {"rows": len(index.fingerprints), "rejected": len(index.bad),
                "segments": len(index.segments),
                "bytes": sum(p.stat().st_size for p in index.segments)}

    def compact(self, keep: set[str], chunk_size: int) -> dict:
        """Keep only the rows (and rejected images) in ``keep``; hold the exclusive lock.

        Segments whose rows are all kept stay as they are. The kept rows of the
        others are written into new segments first, and only then are the old
        ones removed: a kill at any moment loses no row that is kept.
        """
        index = self.index()
        keep_arr = np.asarray(sorted(keep), dtype=FP)
        kept = np.isin(index.fingerprints, keep_arr)
        bad_kept = {f: r for f, r in index.bad.items() if f in keep}
        whole, partly = [], []
        bad_in_whole: set[str] = set()
        for s, path in enumerate(index.segments):
            rows = np.flatnonzero(index.segment == s)
            n_rows, bad_fps = _segment_size(path)
            if len(rows) == n_rows and kept[rows].all() and all(f in keep for f in bad_fps):
                whole.append(s)
                bad_in_whole.update(bad_fps)
            else:
                partly.append(s)
        moving = np.flatnonzero(kept & np.isin(index.segment, partly))
        moving_bad = {f: r for f, r in bad_kept.items() if f not in bad_in_whole}
        written: set[Path] = set()
        for start in range(0, max(len(moving), 1 if moving_bad else 0), chunk_size):
            part = moving[start:start + chunk_size]
            written.add(self.write_segment([f.decode() for f in index.fingerprints[part]],
                                           index.gather(part), moving_bad if start == 0 else {},
                                           view="gc"))
        before = sum(p.stat().st_size for p in index.segments)
        for s in partly:
            if index.segments[s] not in written:
                index.segments[s].unlink()
        return {"rows_dropped": int((~kept).sum()), "rows_kept": int(kept.sum()),
                "segments_removed": len(partly), "segments_written": len(written),
                "bytes_freed": before - sum(p.stat().st_size for p in self.segments())}


def _read_segment(path: Path) -> tuple[np.ndarray, dict[str, str], str, tuple]:
    """A segment's fingerprints, rejected images, writer and row layout, checked."""
    try:
        with h5py.File(path, "r") as h5:
            if checked.sealed(h5):  # segments written before checksums are read unchecked
                checked.check_metadata(h5, path)
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


def _segment_size(path: Path) -> tuple[int, list[str]]:
    """Rows and rejected fingerprints of a segment :meth:`FeatureStore.index` read whole."""
    with h5py.File(path, "r") as h5:
        return h5["features"].shape[0], [f.decode() for f in h5["bad/fingerprints"][()]]


def store_root(cache_dir: Path) -> Path:
    return cache_dir / STORE
