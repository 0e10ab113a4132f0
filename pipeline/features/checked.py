"""HDF5 files whose every stored byte carries a checksum that is verified when read.

Fixed-size arrays (features, labels, fingerprints) are chunked with HDF5's
own Fletcher-32 filter: a chunk whose bytes changed fails to read, so a
damaged row can never reach a classifier. Strings (paths, reasons) and
attributes live in HDF5's global heap, which no filter covers; their sha256
is kept in the file attribute :data:`DIGEST` and checked when the file is
opened (:func:`check_metadata`). Files are written in the HDF5 1.10 format,
whose object headers carry checksums of their own.

A declared shape is a claim: before anything is read, every array's
declared size is held to the bytes the file stores for it
(:func:`check_sizes`), so a file of a few kilobytes that declares 10^9
rows is refused as damaged instead of allocating gigabytes, and strings
are digested in bounded blocks.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np

from ..errors import CacheError, first_line

LIBVER = ("v110", "latest")
DIGEST = "checksum"  # sha256 of every attribute and every string array of the file
CHUNK_ROWS = 1024  # rows per checked chunk, at most: Fletcher-32 costs ~0.4 us a row at this size
CHUNK_BYTES = 4 * 2**20  # and at most about this many bytes: a spatial map's row is ~250 kB
TEXT_BLOCK = 2**16  # strings digested at a time: bounds the memory a check takes
_VLEN_BYTES = 16  # what one variable-length string takes in its array (a global heap id)


# What fixes a view whose bytes fail their check.
REBUILD = ("Fix: run the same `python run_pipeline.py extract` command again; it rebuilds this "
           "file from the feature store, computing only rows the store lacks.")


class DamagedFile(CacheError):
    """A stored file's bytes no longer match its checksums."""

    def __init__(self, path: Path, what: str, fix: str = ""):
        self.path, self.what = Path(path), what
        super().__init__(f"{path} is damaged: {what}." + (f" {fix}" if fix else ""))


def _is_text(dtype: np.dtype) -> bool:
    return h5py.check_string_dtype(dtype) is not None and dtype.kind == "O"


def create(group, name: str, data=None, *, shape=None, dtype=None):
    """A dataset that is checked when read (see the module's docstring).

    Strings are covered by the file's digest (:func:`seal`); any other
    array is chunked along its rows with Fletcher-32.
    """
    if dtype is not None and _is_text(np.dtype(dtype)):
        return group.create_dataset(name, data=list(data), dtype=dtype)
    if data is not None:
        data = np.asarray(data, dtype=dtype)
        shape, dtype = data.shape, data.dtype
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
    rows = max(1, min(shape[0], CHUNK_ROWS, CHUNK_BYTES // max(row_bytes, 1)))
    # A chunk's sides must be positive, also for an array of no rows of unknown width
    # (an empty shard of a store that has no row yet).
    chunks = (rows, *(max(1, side) for side in shape[1:]))
    dataset = group.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks,
                                   maxshape=(None, *(side or None for side in shape[1:])),
                                   fletcher32=True)
    if data is not None and data.size:
        dataset[...] = data
    return dataset


def _digest(h5) -> str:
    """sha256 of the attributes (but :data:`DIGEST`) and of every string array, by name."""
    digest = hashlib.sha256()
    for name in sorted(h5.attrs):
        if name != DIGEST:
            digest.update(json.dumps([name, str(h5.attrs[name])]).encode())
    texts = []
    h5.visititems(lambda name, obj: texts.append(name) if isinstance(obj, h5py.Dataset)
                  and _is_text(obj.dtype) else None)
    for name in sorted(texts):
        dataset = h5[name]
        n = dataset.shape[0] if dataset.shape else 1
        digest.update(f"{name}:{n}:".encode())
        for start in range(0, n, TEXT_BLOCK):
            values = dataset[start:start + TEXT_BLOCK] if dataset.shape else [dataset[()]]
            for value in values:
                raw = value if isinstance(value, bytes) else str(value).encode()
                digest.update(len(raw).to_bytes(8, "little") + raw)
    return digest.hexdigest()


def check_sizes(h5, path: Path) -> None:
    """Raise :class:`DamagedFile` where an array declares more than the file stores for it.

    Reads no array: the shapes, and the bytes HDF5 allocated for each, are
    in the file's headers. Virtual arrays (a merged view's) map other files,
    which are checked when they are opened.
    """
    total = Path(path).stat().st_size
    arrays = []
    h5.visititems(lambda name, obj: arrays.append(obj) if isinstance(obj, h5py.Dataset) else None)
    for dataset in arrays:
        if dataset.is_virtual:
            continue
        per = _VLEN_BYTES if h5py.check_vlen_dtype(dataset.dtype) or _is_text(dataset.dtype) \
            else dataset.dtype.itemsize
        declared = int(np.prod(dataset.shape, dtype=object)) * per if dataset.shape is not None else 0
        stored = min(dataset.id.get_storage_size(), total)
        if declared > stored:
            raise DamagedFile(path, f"{dataset.name} declares shape {tuple(dataset.shape)} "
                                    f"({declared:,} bytes), more than the {stored:,} bytes the "
                                    "file stores for it")


def seal(h5) -> None:
    """Record the digest of the attributes and strings; call last, after every write."""
    h5.attrs[DIGEST] = _digest(h5)


def sealed(h5) -> bool:
    return DIGEST in h5.attrs


def check_metadata(h5, path: Path) -> None:
    """Raise :class:`DamagedFile` unless the shapes fit the file (:func:`check_sizes`) and the
    attributes and strings match their digest."""
    try:
        check_sizes(h5, path)
        same = _digest(h5) == str(h5.attrs[DIGEST])
    except (OSError, KeyError, RuntimeError, ValueError, UnicodeDecodeError) as exc:
        raise DamagedFile(path, f"its metadata cannot be read ({first_line(exc)})") from None
    if not same:
        raise DamagedFile(path, "its metadata (attributes, paths or reasons) does not match "
                                "its checksum")


def read(dataset, rows=None) -> np.ndarray:
    """A dataset's values (all, or ``rows``), each chunk verified by its Fletcher-32 sum."""
    try:
        return dataset[()] if rows is None else dataset[rows]
    except (OSError, RuntimeError) as exc:
        raise DamagedFile(Path(dataset.file.filename),
                          f"{dataset.name} fails its checksum ({first_line(exc)})") from None


def verify(path: Path) -> None:
    """Read every byte of a sealed file; raise :class:`DamagedFile` at the first that is wrong."""
    try:
        with h5py.File(path, "r") as h5:
            if not sealed(h5):
                raise DamagedFile(path, "it carries no checksums (written by an older version)")
            check_metadata(h5, path)
            arrays = []
            h5.visititems(lambda name, obj: arrays.append(obj) if isinstance(obj, h5py.Dataset)
                          and not obj.is_virtual and not _is_text(obj.dtype) else None)
            for dataset in arrays:
                step = dataset.chunks[0] if dataset.chunks else CHUNK_ROWS
                for start in range(0, dataset.shape[0] if dataset.shape else 0, step):
                    read(dataset, np.s_[start:start + step])  # one chunk in memory at a time
    except DamagedFile:
        raise
    except (OSError, KeyError, RuntimeError, ValueError) as exc:
        raise DamagedFile(path, f"it cannot be read as HDF5 ({first_line(exc)})") from None
