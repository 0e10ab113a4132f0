"""The HDF5 feature store: key, layout, crash-safe writes, resume, checked reads.

Layout of a finished cache file ``<cache_dir>/<backbone>-<size>-<pooling>-<hash>.h5``::

    attrs: format_version, key (JSON), key_hash, classes (JSON),
           library_versions (JSON), created, data_root, extraction (JSON)
    /<split>/features       (n, *feature_shape) float32 or float16
    /<split>/labels         (n,) int32, index into classes
    /<split>/paths          (n,) utf-8, relative to the dataset root
    /<split>/fingerprints   (n,) utf-8, blake2b of each image's bytes
    /<split>/quarantine/paths, /<split>/quarantine/reasons   unreadable images

While a cache is being written it lives in ``<name>.partial/``: one ``.npz``
file per finished chunk, each written to a temporary name and renamed, so a
run killed at any moment leaves only whole chunks, and the next run resumes
after them. The ``.h5`` file appears (by ``os.replace``) only when complete.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import h5py
import numpy as np

from .errors import CacheError, first_line

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_STR = h5py.string_dtype("utf-8")


def fingerprint(path: str | os.PathLike) -> str:
    """Content fingerprint of one file (blake2b, 128 bits)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


def fingerprint_all(root: Path, relpaths: list[str]) -> list[str]:
    """Fingerprints of many files; hashing releases the GIL, so threads help."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda rel: fingerprint(root / rel), relpaths, chunksize=64))


def key_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def library_versions(names=("tensorflow", "keras", "numpy", "h5py")) -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


@contextmanager
def cache_lock(final: Path):
    """Hold ``<final>.lock`` while one process writes a cache file.

    A second extraction of the same cache waits here, then finds the finished
    file. The lock is an ``flock`` on an open file, so the kernel releases it
    when its holder exits, even when killed: a stale lock file blocks no one.
    """
    lock = final.with_name(final.name + ".lock")
    with open(lock, "a+b") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another extraction of %s to finish (lock %s)", final.name, lock)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_failed(exc: Exception, what: Path, partial: Path) -> CacheError:
    # HDF5 reports a failed write as a RuntimeError that quotes the errno.
    code = getattr(exc, "errno", None)
    quoted = re.search(r"errno = (\d+)", str(exc))
    code = code if code is not None else int(quoted.group(1)) if quoted else None
    full = code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    cause = "the disk is full (or a file size limit was reached)" if full else "it could not be written"
    return CacheError(
        f"Writing {what} failed: {cause} ({first_line(exc)}). Every chunk finished before it "
        f"is kept in {partial}, and no finished cache file was changed. Fix: free space "
        "(or raise the limit), then run the same command again; it resumes where it stopped.")


def _reserve(path: Path, size: int) -> None:
    """Fail now, cleanly, if ``size`` bytes cannot be written at ``path``.

    HDF5 cannot recover from a write that fails for lack of space: the
    library is left with a half-open file and the process crashes. So the
    space is claimed first (``posix_fallocate``, which also respects a file
    size limit) and given back just before HDF5 writes.
    """
    try:
        with open(path, "wb") as fh:
            os.posix_fallocate(fh.fileno(), 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system that cannot tell
            raise
    finally:
        path.unlink(missing_ok=True)


class PartialCache:
    """The resumable, chunked work-in-progress of one cache file."""

    def __init__(self, final: Path, key: dict):
        self.final = final
        self.key = key
        self.folder = final.with_name(final.stem + ".partial")

    def open(self) -> None:
        """Create the folder, or reuse it if it was made for the same key."""
        marker = self.folder / "key.json"
        if marker.exists():
            try:
                same = json.loads(marker.read_text()) == self.key
            except (OSError, ValueError):
                same = False
            if same:
                return
            log.warning("discarding partial cache %s made for another key", self.folder)
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(marker, json.dumps(self.key, sort_keys=True).encode())

    def _chunk_path(self, split: str, index: int) -> Path:
        return self.folder / f"{split}-{index:06d}.npz"

    def done(self, split: str, chunks: range) -> set[int]:
        """Those of ``chunks`` that finished in an earlier run."""
        return {k for k in chunks if self._chunk_path(split, k).exists()}

    def write_chunk(
        self,
        split: str,
        index: int,
        rows: np.ndarray,
        features: np.ndarray,
        bad_rows: list[int],
        bad_reasons: list[str],
    ) -> None:
        path = self._chunk_path(split, index)
        tmp = path.with_suffix(".tmp")
        try:
            with open(tmp, "wb") as fh:
                np.savez(
                    fh,
                    rows=rows.astype(np.int64),
                    features=features,
                    bad_rows=np.asarray(bad_rows, dtype=np.int64),
                    bad_reasons=np.asarray(bad_reasons, dtype=str),
                )
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)  # give back the space the half chunk took
            raise _write_failed(exc, path, self.folder) from None

    def assemble(self, splits: dict[str, "SplitManifest"], chunks: dict[str, range],
                 feature_shape: tuple[int, ...], dtype: str, attrs: dict) -> Path:
        """Join the chunks into the final HDF5 file, atomically; drop the chunks."""
        tmp = self.final.with_name(self.final.name + f".tmp-{os.getpid()}")
        files = {split: [self._chunk_path(split, k) for k in chunks[split]] for split in splits}
        try:
            # The chunks hold the features as stored; the strings and HDF5's own
            # structures come on top.
            _reserve(tmp, sum(f.stat().st_size for fs in files.values() for f in fs)
                     + sum(len(p) + 64 for m in splits.values() for p in m.paths) + 2**20)
            with h5py.File(tmp, "w") as h5:
                for split, manifest in splits.items():
                    _write_split(h5.create_group(split), manifest, files[split], feature_shape, dtype)
                for name, value in attrs.items():
                    h5.attrs[name] = value
            os.replace(tmp, self.final)
        except (OSError, RuntimeError) as exc:
            raise _write_failed(exc, self.final, self.folder) from None
        finally:
            if tmp.exists():
                tmp.unlink()
        self.discard()
        return self.final

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass(frozen=True)
class SplitManifest:
    """The images of one split: what the key is computed from."""

    paths: tuple[str, ...]
    labels: tuple[int, ...]
    fingerprints: tuple[str, ...]


def _write_split(group, manifest: SplitManifest, chunks: list[Path],
                 feature_shape: tuple[int, ...], dtype: str) -> None:
    with_rows = []
    total = 0
    for chunk in chunks:
        with np.load(chunk) as z:
            rows = z["rows"]
        with_rows.append(rows)
        total += len(rows)
    features = group.create_dataset(
        "features", shape=(total, *feature_shape), dtype=dtype,
        chunks=(min(max(total, 1), 256), *feature_shape) if total else None,
    )
    good: list[int] = []
    bad_paths: list[str] = []
    bad_reasons: list[str] = []
    start = 0
    for chunk, rows in zip(chunks, with_rows):
        with np.load(chunk) as z:
            if len(rows):
                features[start:start + len(rows)] = z["features"].astype(dtype)
            bad_paths += [manifest.paths[i] for i in z["bad_rows"]]
            bad_reasons += [str(r) for r in z["bad_reasons"]]
        good.extend(int(i) for i in rows)
        start += len(rows)
    group.create_dataset("labels", data=np.asarray([manifest.labels[i] for i in good], np.int32))
    group.create_dataset("paths", data=[manifest.paths[i] for i in good], dtype=_STR)
    group.create_dataset("fingerprints", data=[manifest.fingerprints[i] for i in good], dtype=_STR)
    quarantine = group.create_group("quarantine")
    quarantine.create_dataset("paths", data=bad_paths, dtype=_STR)
    quarantine.create_dataset("reasons", data=bad_reasons, dtype=_STR)


def atomic_write(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never half of one."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass(frozen=True)
class SplitData:
    """The arrays of one split."""

    features: np.ndarray
    labels: np.ndarray
    paths: list[str]


class FeatureCache:
    """A finished, checked feature cache file (read-only).

    Opening reads and checks the metadata only; :meth:`load` reads one
    split's arrays.
    """

    def __init__(self, path: str | os.PathLike, expected_key: dict | None = None,
                 allow_shard: bool = False):
        self.path = Path(path)
        partial = self.path.with_name(self.path.stem + ".partial")
        if self.path.suffix == ".partial" or (not self.path.exists() and partial.is_dir()):
            raise CacheError(
                f"Feature cache {self.path.with_suffix('.h5')} is partial: its extraction "
                "was interrupted before every chunk was written. Fix: run the same "
                "`python run_pipeline.py extract ...` command again; it resumes where it stopped."
            )
        if not self.path.is_file():
            raise CacheError(
                f"Feature cache {self.path} does not exist. Fix: run "
                "`python run_pipeline.py extract --data DIR` first, and pass the "
                "file it prints."
            )
        try:
            h5 = h5py.File(self.path, "r")
        except OSError as exc:
            raise CacheError(
                f"{self.path} is not a readable HDF5 file (truncated, partial or "
                f"not HDF5: {exc}). Fix: delete it and run extract again."
            ) from None
        with h5:
            self._read_metadata(h5, expected_key)
            if "shards" in h5.attrs:
                from .shards import check_sources

                check_sources(self.path, h5)
        if self.shard is not None and not allow_shard:
            raise CacheError(
                f"{self.path} is shard {self.shard['index']} of {self.shard['count']}: it holds "
                "only part of the images. Fix: extract every shard, then join them with "
                "`python run_pipeline.py merge` and use the merged file.")

    def _read_metadata(self, h5, expected_key: dict | None) -> None:
        attrs = h5.attrs
        if "format_version" not in attrs or "key" not in attrs:
            raise CacheError(
                f"{self.path} is an HDF5 file but not a feature cache written by "
                "this tool (no format_version/key attributes). Fix: pass a file "
                "made by `run_pipeline.py extract`."
            )
        version = int(attrs["format_version"])
        if version != FORMAT_VERSION:
            raise CacheError(
                f"{self.path} has cache format {version}; this version reads "
                f"format {FORMAT_VERSION}. Fix: run extract again to rebuild it."
            )
        self.key = json.loads(attrs["key"])
        if key_hash(self.key) != attrs.get("key_hash"):
            raise CacheError(f"{self.path} is damaged: its key does not match its key hash. "
                             "Fix: delete it and run extract again.")
        if expected_key is not None and expected_key != self.key:
            changed = sorted(k for k in set(expected_key) | set(self.key)
                             if expected_key.get(k) != self.key.get(k))
            raise CacheError(f"{self.path} is stale: it was made with different "
                             f"{', '.join(changed)}. Fix: run extract again.")
        self.classes: list[str] = json.loads(attrs["classes"])
        self.library_versions = json.loads(attrs["library_versions"])
        self.extraction = json.loads(attrs.get("extraction", "{}"))
        self.created = str(attrs.get("created", ""))
        self.data_root = str(attrs.get("data_root", ""))
        self.shard = json.loads(attrs["shard"]) if "shard" in attrs else None
        self.splits = [s for s in ("train", "validation", "test") if s in h5]
        self.counts = {s: int(h5[s]["features"].shape[0]) for s in self.splits}
        first = h5[self.splits[0]]["features"] if self.splits else None
        self.feature_shape = tuple(first.shape[1:]) if first is not None else ()
        self.dtype = str(first.dtype) if first is not None else ""
        self.quarantined = [
            {"split": s, "path": p.decode(), "reason": r.decode()}
            for s in self.splits
            for p, r in zip(h5[s]["quarantine/paths"][()], h5[s]["quarantine/reasons"][()])
        ]
        for s in self.splits:
            n = self.counts[s]
            if not (h5[s]["labels"].shape[0] == h5[s]["paths"].shape[0] == n):
                raise CacheError(f"{self.path} is damaged: split {s!r} has arrays of "
                                 "different lengths. Fix: delete it and run extract again.")

    def load(self, split: str) -> SplitData:
        with h5py.File(self.path, "r") as h5:
            group = self._group(h5, split)
            return SplitData(
                features=group["features"][()],
                labels=group["labels"][()],
                paths=[p.decode() for p in group["paths"][()]],
            )

    def take(self, split: str, rows) -> SplitData:
        """Some rows of a split (increasing indices), read without the rest."""
        rows = np.asarray(rows, dtype=np.int64)
        with h5py.File(self.path, "r") as h5:
            group = self._group(h5, split)
            return SplitData(features=group["features"][rows],
                             labels=group["labels"][rows],
                             paths=[p.decode() for p in group["paths"][rows]])

    def index(self, split: str) -> SplitManifest:
        """A split's images (paths, labels, fingerprints), without reading its features."""
        with h5py.File(self.path, "r") as h5:
            group = self._group(h5, split)
            return SplitManifest(tuple(p.decode() for p in group["paths"][()]),
                                 tuple(int(label) for label in group["labels"][()]),
                                 tuple(f.decode() for f in group["fingerprints"][()]))

    def _group(self, h5, split: str):
        if split not in self.splits:
            raise CacheError(
                f"Split {split!r} is not in {self.path}; it has {', '.join(self.splits)}."
            )
        return h5[split]

    def summary(self) -> dict:
        """Everything ``inspect`` shows, JSON-ready."""
        return {
            "cache": str(self.path),
            "key": self.key,
            "key_hash": key_hash(self.key),
            "classes": self.classes,
            "splits": self.counts,
            "feature_shape": list(self.feature_shape),
            "dtype": self.dtype,
            "quarantined": self.quarantined,
            "created": self.created,
            "data_root": self.data_root,
            "library_versions": self.library_versions,
            "extraction": self.extraction,
            "shard": self.shard,
        }


def base_attrs(key: dict, classes: list[str], data_root: Path, extraction: dict) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "key": json.dumps(key, sort_keys=True),
        "key_hash": key_hash(key),
        "classes": json.dumps(classes),
        "library_versions": json.dumps(library_versions()),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data_root": str(data_root),
        "extraction": json.dumps(extraction),
    }
