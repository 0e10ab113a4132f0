"""A dataset's view of the store: one HDF5 file every later stage reads.

Layout of ``<cache_dir>/<backbone>[_a<alpha>]-<size>-<pooling>-<key hash>.h5``::

    attrs: format_version, key (JSON), key_hash, classes (JSON), store,
           library_versions (JSON), created, data_root, extraction (JSON)
    /<split>/features       (n, *feature_shape) float32 or float16
    /<split>/labels         (n,) int32, index into classes
    /<split>/paths          (n,) utf-8, relative to the dataset root
    /<split>/fingerprints   (n,) utf-8, blake2b of each image's bytes
    /<split>/quarantine/paths, reasons, fingerprints   unreadable images

The features are copied out of the store (materialised), so a view reads as
fast as one array and stays whole whatever happens to the store later. The
file appears (by ``os.replace``) only when complete.
"""

from __future__ import annotations

import errno
import json
from contextlib import contextmanager
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

from .._files import key_hash, library_versions
from ..errors import CacheError, first_line
from . import checked
from .checked import REBUILD, DamagedFile
from .spec import FORMAT_VERSION, READABLE_FORMATS
from .store import Index, write_failed

log = logging.getLogger(__name__)

_STR = h5py.string_dtype("utf-8")


def path_bytes(path: str) -> bytes:
    """A path as stored: its bytes on disk, also where they are not UTF-8 (kept, not mangled)."""
    return path.encode("utf-8", "surrogateescape")


def path_text(raw: bytes) -> str:
    """A stored path back as Python names the file (``os`` opens it as it is)."""
    return raw.decode("utf-8", "surrogateescape")
BLOCK_ROWS = 4096  # rows copied from the store at a time: bounds the memory a view needs


@dataclass(frozen=True)
class SplitManifest:
    """The images of one split: what the key is computed from (None: unreadable file)."""

    paths: tuple[str, ...]
    labels: tuple[int, ...]
    fingerprints: tuple[str | None, ...]


@dataclass(frozen=True)
class SplitData:
    """The arrays of one split."""

    features: np.ndarray
    labels: np.ndarray
    paths: list[str]


def reserve(path: Path, size: int) -> None:
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


def write_view(path: Path, manifests: dict[str, SplitManifest], index: Index,
               unreadable: dict[str, str], attrs: dict, kept: Path) -> None:
    """Write the view of ``manifests`` from the store's ``index``, atomically.

    Args:
        unreadable: relative path -> reason, for files that could not be read.
        kept: where the computed rows are, for the message of a failed write.
    """
    plans = {split: _split_plan(m, index, unreadable) for split, m in manifests.items()}
    row_bytes = int(np.prod(index.feature_shape or (0,))) * np.dtype(index.dtype or "float32").itemsize
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    try:
        reserve(tmp, sum(len(p[0]) * (row_bytes + 128) for p in plans.values()) + 2**20)
        with h5py.File(tmp, "w", libver=checked.LIBVER) as h5:
            for split, manifest in manifests.items():
                _write_split(h5.create_group(split), manifest, index, *plans[split])
            for name, value in attrs.items():
                h5.attrs[name] = value
            checked.seal(h5)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        raise write_failed(exc, path, kept) from None
    finally:
        tmp.unlink(missing_ok=True)


def _split_plan(manifest: SplitManifest, index: Index, unreadable: dict[str, str]):
    """Rows with features (and where the store has them), and rows quarantined with a reason."""
    fps = np.asarray([f or "" for f in manifest.fingerprints], dtype="S32")
    positions = index.locate(fps)
    good, bad = [], []
    for i, (path, fp) in enumerate(zip(manifest.paths, manifest.fingerprints)):
        if path in unreadable:  # by path: not read, or refused by a setting of this view
            bad.append((i, unreadable[path]))
        elif fp in index.bad:
            bad.append((i, index.bad[fp]))
        elif positions[i] < 0:
            raise CacheError(f"The feature store lacks the features of {path}, which this "
                             "extraction computed (was `cache gc` run at the same time?). "
                             "Fix: run the same command again.")
        else:
            good.append(i)
    return np.asarray(good, dtype=np.int64), positions, bad


def _write_split(group, manifest: SplitManifest, index: Index, good: np.ndarray,
                 positions: np.ndarray, bad: list[tuple[int, str]]) -> None:
    features = checked.create(group, "features", shape=(len(good), *(index.feature_shape or (0,))),
                              dtype=index.dtype or "float32")
    for start in range(0, len(good), BLOCK_ROWS):
        rows = good[start:start + BLOCK_ROWS]
        features[start:start + len(rows)] = index.gather(positions[rows])
    checked.create(group, "labels", np.asarray([manifest.labels[i] for i in good], np.int32))
    checked.create(group, "paths", [path_bytes(manifest.paths[i]) for i in good], dtype=_STR)
    checked.create(group, "fingerprints", [manifest.fingerprints[i] for i in good], dtype=_STR)
    checked.create(group, "quarantine/paths", [path_bytes(manifest.paths[i]) for i, _ in bad],
                   dtype=_STR)
    checked.create(group, "quarantine/reasons", [r for _, r in bad], dtype=_STR)
    checked.create(group, "quarantine/fingerprints",
                   [manifest.fingerprints[i] or "" for i, _ in bad], dtype=_STR)


def _interrupted(path: Path) -> bool:
    """Whether the store holds rows an extraction of this (missing) view computed."""
    tag = path.stem.rsplit("-", 1)[-1]
    if len(tag) != 16:
        return False
    for segment in path.parent.glob("store/*/seg-*.h5"):
        try:
            with h5py.File(segment, "r") as h5:
                if str(h5.attrs.get("view", "")).startswith(tag):
                    return True
        except OSError:
            continue
    return False


class FeatureCache:
    """A finished, checked view file (read-only).

    Opening reads and checks the metadata only; :meth:`load` reads one
    split's arrays.
    """

    def __init__(self, path: str | os.PathLike, expected_key: dict | None = None,
                 allow_shard: bool = False):
        self.path = Path(path)
        if not self.path.is_file() and _interrupted(self.path):
            raise CacheError(
                f"Feature cache {self.path} does not exist, but the feature store holds rows its "
                "extraction computed: it was interrupted (or the file was removed). Fix: run the "
                "same `python run_pipeline.py extract ...` command again; it resumes where it "
                "stopped and computes only what is missing.")
        if not self.path.is_file():
            raise CacheError(
                f"Feature cache {self.path} does not exist. Fix: run "
                "`python run_pipeline.py extract --data DIR` first, and pass the "
                "file it prints."
            )
        if not h5py.is_hdf5(self.path):
            raise CacheError(
                f"{self.path} is not a feature cache: it is not an HDF5 file. A feature cache is "
                "the .h5 file `python run_pipeline.py extract` prints (it lives in the cache "
                "folder). Fix: pass that file.")
        try:
            with h5py.File(self.path, "r") as h5:
                self._read_metadata(h5, expected_key)
                if "shards" in h5.attrs:
                    check_sources(self.path, h5)
        except DamagedFile as exc:
            raise DamagedFile(exc.path, exc.what, REBUILD) from None
        except (OSError, KeyError, RuntimeError, ValueError) as exc:
            raise DamagedFile(self.path, f"it cannot be read as HDF5 ({first_line(exc)})",
                              REBUILD) from None
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
        if version not in READABLE_FORMATS:
            raise CacheError(
                f"{self.path} has cache format {version}; this version reads formats "
                f"{', '.join(map(str, READABLE_FORMATS))}. Fix: run extract again to rebuild it.")
        if not checked.sealed(h5):
            raise CacheError(f"{self.path} was written by an older version, without checksums, "
                             f"so its bytes cannot be checked. {REBUILD}")
        checked.check_metadata(h5, self.path)
        self.format_version = version
        self.key = json.loads(attrs["key"])
        if key_hash(self.key) != attrs.get("key_hash"):
            raise DamagedFile(self.path, "its key does not match its key hash", REBUILD)
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
        self.store = str(attrs.get("store", ""))
        self.shard = json.loads(attrs["shard"]) if "shard" in attrs else None
        self.shards: list[str] = json.loads(attrs["shards"]) if "shards" in attrs else []
        self.splits = [s for s in ("train", "validation", "test") if s in h5]
        self.counts = {s: int(h5[s]["features"].shape[0]) for s in self.splits}
        first = h5[self.splits[0]]["features"] if self.splits else None
        self.feature_shape = tuple(first.shape[1:]) if first is not None else ()
        self.dtype = str(first.dtype) if first is not None else ""
        self.quarantined = [
            {"split": s, "path": path_text(p), "reason": r.decode()}
            for s in self.splits
            for p, r in zip(h5[s]["quarantine/paths"][()], h5[s]["quarantine/reasons"][()])
        ]
        for s in self.splits:
            n = self.counts[s]
            if not (h5[s]["labels"].shape[0] == h5[s]["paths"].shape[0] == n):
                raise DamagedFile(self.path, f"split {s!r} has arrays of different lengths",
                                  REBUILD)

    def load(self, split: str) -> SplitData:
        with self._reading(split) as group:
            return SplitData(
                features=checked.read(group["features"]),
                labels=checked.read(group["labels"]),
                paths=[path_text(p) for p in group["paths"][()]],
            )

    def take(self, split: str, rows) -> SplitData:
        """Some rows of a split (increasing indices), read without the rest."""
        rows = np.asarray(rows, dtype=np.int64)
        with self._reading(split) as group:
            return SplitData(features=checked.read(group["features"], rows),
                             labels=checked.read(group["labels"], rows),
                             paths=[path_text(p) for p in group["paths"][rows]])

    def index(self, split: str) -> SplitManifest:
        """A split's images (paths, labels, fingerprints), without reading its features."""
        with self._reading(split) as group:
            return SplitManifest(tuple(path_text(p) for p in group["paths"][()]),
                                 tuple(int(label) for label in checked.read(group["labels"])),
                                 tuple(f.decode() for f in group["fingerprints"][()]))

    def verify(self) -> None:
        """Read every byte of the file (and of a merged file's shards) against its checksums.

        Raises:
            DamagedFile: a byte differs; the message says how to rebuild the file.
        """
        for path in [self.path, *(self.path.parent / s for s in self.shards)]:
            try:
                checked.verify(path)
            except DamagedFile as exc:
                raise DamagedFile(exc.path, exc.what, REBUILD) from None

    @contextmanager
    def _reading(self, split: str):
        """One split's group; a checksum failure inside says how to rebuild the file."""
        try:
            with h5py.File(self.path, "r") as h5:
                yield self._group(h5, split)
        except DamagedFile as exc:
            raise DamagedFile(exc.path, exc.what, REBUILD) from None
        except (OSError, KeyError, RuntimeError) as exc:
            raise DamagedFile(self.path, f"it cannot be read ({first_line(exc)})", REBUILD) from None

    def fingerprints_used(self) -> set[str]:
        """Every fingerprint the view holds, quarantined ones included (what ``gc`` keeps)."""
        used: set[str] = set()
        with h5py.File(self.path, "r") as h5:
            for split in self.splits:
                used.update(f.decode() for f in h5[split]["fingerprints"][()])
                if "fingerprints" in h5[split]["quarantine"]:
                    used.update(f.decode() for f in h5[split]["quarantine/fingerprints"][()])
        used.discard("")
        return used

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
            "format_version": self.format_version,
            "key": self.key,
            "key_hash": key_hash(self.key),
            "classes": self.classes,
            "splits": self.counts,
            "feature_shape": list(self.feature_shape),
            "dtype": self.dtype,
            "quarantined": self.quarantined,
            "created": self.created,
            "data_root": self.data_root,
            "store": self.store,
            "library_versions": self.library_versions,
            "extraction": self.extraction,
            "shard": self.shard,
        }


def check_sources(path: Path, h5) -> None:
    """A merged cache's shard files must all be there, with its key."""
    folder = path.parent
    for rel in json.loads(h5.attrs["shards"]):
        source = folder / rel
        problem = None
        if not source.is_file():
            problem = "is missing"
        else:
            try:
                with h5py.File(source, "r") as src:
                    if src.attrs.get("key_hash") != h5.attrs["key_hash"]:
                        problem = "belongs to another extraction (its key differs)"
            except OSError:
                problem = "is not a readable HDF5 file"
        if problem:
            raise CacheError(
                f"{path} is a merged cache whose features live in its shard files, and "
                f"{source} {problem}. Fix: put the shard files back next to it, or extract "
                "that shard again and run `merge` again.")
