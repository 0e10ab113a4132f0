"""Sharded extraction: which chunks a shard owns, and merging shard files.

Shard ``i`` of ``N`` (1-based) owns a contiguous run of whole chunks of every
split, and all N shards together are the dataset, each image once. A shard
computes what the store lacks of its own images (into the same store as any
extraction) and writes a shard file: an ordinary view (same key) whose
``shard`` attribute says which rows it holds.

:func:`merge` joins shard files into one cache file whose ``features`` and
``labels`` are HDF5 virtual datasets mapping the shards' arrays: no feature is
copied. Readers use it like any cache file; opening it checks that every
shard it maps is still there and has the same key (a virtual dataset would
otherwise read a missing shard as zeros).
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path

import h5py

from ..errors import CacheError, ConfigError
from . import checked
from .view import FeatureCache
from ..words import agree

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_STR = h5py.string_dtype("utf-8")


def parse_shard(text: str) -> tuple[int, int]:
    """``"3/16"`` -> ``(3, 16)``; shards count from 1."""
    match = _SHARD.match(str(text))
    index, count = (int(g) for g in match.groups()) if match else (0, 0)
    if not match or count < 1 or not 1 <= index <= count:
        raise ConfigError(f"`--shard` takes I/N with 1 <= I <= N (e.g. 3/16); got {text!r}. "
                          "Fix: number the shards 1 to N and give each job one of them.")
    return index, count


def owned_chunks(n_chunks: int, shard: tuple[int, int] | None) -> range:
    """The chunks of a split of ``n_chunks`` chunks that a shard extracts."""
    if shard is None:
        return range(n_chunks)
    index, count = shard
    return range(n_chunks * (index - 1) // count, n_chunks * index // count)


def shard_file_name(name: str, shard: tuple[int, int]) -> str:
    """``x.h5`` -> ``x.shard-03-of-16.h5`` (zero-padded, so names sort in order)."""
    index, count = shard
    width = len(str(count))
    return f"{Path(name).stem}.shard-{index:0{width}d}-of-{count}.h5"


def owned_rows(n: int, chunk_size: int, shard: tuple[int, int]) -> range:
    """The rows of a split of ``n`` images that a shard owns: whole chunks of it."""
    chunks = owned_chunks(-(-n // chunk_size), shard)
    return range(min(chunks.start * chunk_size, n), min(chunks.stop * chunk_size, n))


def shard_attr(shard: tuple[int, int], chunk_size: int, rows: dict[str, int]) -> str:
    """The ``shard`` attribute: which rows of each split this shard holds."""
    ranges = {}
    for split, n in rows.items():
        owned = owned_rows(n, chunk_size, shard)
        ranges[split] = [owned.start, owned.stop]
    return json.dumps({"index": shard[0], "count": shard[1], "rows": ranges})


def _in_order(shards: list[FeatureCache]) -> list[FeatureCache]:
    """The shards of one extraction, 1 to N, each once; a sentence for anything else."""
    for cache in shards:
        if cache.shard is None:
            raise CacheError(f"{cache.path} is a whole cache file, not a shard. Fix: pass only "
                             "the `.shard-I-of-N.h5` files that `extract --shard I/N` wrote.")
    first = shards[0]
    for cache in shards[1:]:
        if cache.key != first.key:
            raise CacheError(
                f"{cache.path} is a shard of another extraction than {first.path} (their cache "
                "keys differ: other images or settings). Fix: merge only the shards of one "
                "extraction, made with the same data and settings.")
        if cache.shard["count"] != first.shard["count"]:
            raise CacheError(
                f"{cache.path} is shard {cache.shard['index']} of {cache.shard['count']}, but "
                f"{first.path} is one of {first.shard['count']}. Fix: merge the shards of one "
                "sharding, all made with the same N in `--shard I/N`.")
    count = first.shard["count"]
    by_index: dict[int, FeatureCache] = {}
    for cache in shards:
        i = cache.shard["index"]
        if i in by_index:
            raise CacheError(
                f"Shard {i} of {count} is given twice ({by_index[i].path} and {cache.path}); "
                "their rows overlap. Fix: pass each shard file once.")
        by_index[i] = cache
    missing = sorted(set(range(1, count + 1)) - set(by_index))
    if missing:
        listed = ", ".join(str(i) for i in missing)
        raise CacheError(
            f"{agree(len(missing), 'Shard', 'Shards')} {listed} of {count} "
            f"{agree(len(missing), 'is', 'are')} missing, so the merged cache would lack their "
            f"rows. Fix: run `extract --shard I/{count}` for I = {listed} (with the same data "
            "and settings), then merge again with every shard file.")
    return [by_index[i] for i in range(1, count + 1)]


def merge(paths: list[str | os.PathLike], out: str | os.PathLike | None = None) -> Path:
    """Join the shard files of one extraction into one cache file, without copying features.

    Args:
        paths: every shard file, 1 to N, in any order.
        out: the merged file; by default the unsharded cache name next to
            the shards, which is where ``extract`` finds it.

    Raises:
        CacheError: a shard is missing, given twice, from another
            extraction or another sharding, or not a shard file.
    """
    if not paths:
        raise CacheError("`merge` needs the shard files (e.g. cache/NAME.shard-*.h5); got none.")
    ordered = _in_order([FeatureCache(p, allow_shard=True) for p in paths])
    first = ordered[0]
    out = Path(out) if out else first.path.with_name(
        re.sub(r"\.shard-\d+-of-\d+\.h5$", ".h5", first.path.name))
    if (out.exists() or out.is_symlink()) and not _a_cache_file(out):
        raise CacheError(f"`--out` {out} is not a feature cache this tool wrote, and the pipeline "
                         "never replaces a file it did not write. Fix: pass a new file name with "
                         "`--out`.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w", libver=checked.LIBVER) as h5:
            for split in first.splits:
                _merge_split(h5.create_group(split), split, ordered, out.parent)
            with h5py.File(first.path, "r") as src:
                for name, value in src.attrs.items():
                    if name != "shard":
                        h5.attrs[name] = value
            h5.attrs["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            h5.attrs["extraction"] = json.dumps(_merged_extraction(ordered))
            h5.attrs["shards"] = json.dumps([os.path.relpath(c.path, out.parent) for c in ordered])
            checked.seal(h5)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def _a_cache_file(path: Path) -> bool:
    """A regular file (not a link) holding a feature cache's attributes: a merge may replace it."""
    if path.is_symlink() or not path.is_file() or not h5py.is_hdf5(path):
        return False
    try:
        with h5py.File(path, "r") as h5:
            return "format_version" in h5.attrs and "key" in h5.attrs
    except OSError:
        return False


def _merged_extraction(shards) -> dict:
    images = sum(s.extraction.get("images", 0) for s in shards)
    seconds = sum(s.extraction.get("seconds", 0.0) for s in shards)
    return {"shards": len(shards), "images": images, "seconds": round(seconds, 3),
            "images_per_second": round(images / seconds, 1) if seconds else 0.0,
            "resumed_images": sum(s.extraction.get("resumed_images", 0) for s in shards)}


def _merge_split(group, split: str, shards, folder: Path) -> None:
    """Virtual ``features`` and ``labels``; the small string arrays are copied."""
    sizes = [s.counts.get(split, 0) for s in shards]
    strings = {name: [] for name in ("paths", "fingerprints", "quarantine/paths",
                                     "quarantine/reasons", "quarantine/fingerprints")}
    for cache in shards:
        with h5py.File(cache.path, "r") as h5:
            for name, values in strings.items():
                values += list(h5[split][name][()])
            # The layout of a shard with rows: an empty shard of a store that had no
            # row yet could not know the features' width.
            if cache is next((c for c, n in zip(shards, sizes) if n), shards[0]):
                layouts = {name: (h5[split][name].shape[1:], h5[split][name].dtype)
                           for name in ("features", "labels")}
    total = sum(sizes)
    for name, (shape, dtype) in layouts.items():
        if total == 0:
            checked.create(group, name, shape=(0, *shape), dtype=dtype)
            continue
        layout = h5py.VirtualLayout(shape=(total, *shape), dtype=dtype)
        start = 0
        for cache, n in zip(shards, sizes):
            if n:
                layout[start:start + n] = h5py.VirtualSource(
                    os.path.relpath(cache.path, folder), f"{split}/{name}",
                    shape=(n, *shape), dtype=dtype)
            start += n
        group.create_virtual_dataset(name, layout)
    for name, values in strings.items():
        checked.create(group, name, values, dtype=_STR)
