"""Look after a cache folder: list its stores and views (``cache ls``), collect garbage (``cache gc``).

A view's modification time is when it was last used: extraction touches it
on every hit. ``gc`` drops views not used for a given number of days, then,
in each store, every row that no remaining view holds, and writes the rows
it keeps into fresh segments. Views are self-contained copies, so dropping
rows never breaks one; ``gc`` holds each store's exclusive lock while it
works, so it never runs beside an extraction of the same spec.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

from ..errors import CacheError, ConfigError
from . import checked
from .checked import DamagedFile
from .store import DAMAGED, FP, SPEC_FILE, FeatureStore, store_root
from .view import FeatureCache

log = logging.getLogger(__name__)

DAY = 86400.0
SET_ASIDE = "set-aside.txt"  # in <cache_dir>/damaged/: the views `verify --repair` moved there
_PROBE = re.compile(r"\.write-test-[0-9]+")  # what older versions left when killed mid-probe
_VIEW = re.compile(r"[A-Za-z0-9_.-]+-[0-9a-f]{16}\.h5")  # spec.view_file_name's form


@dataclass(frozen=True)
class ViewFile:
    path: Path
    store: Path | None  # None: a format-1 file, outside any store
    rows: int
    last_used: float
    shards: tuple[Path, ...]  # the shard files a merged view maps


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


def _views(cache_dir: Path) -> tuple[list[ViewFile], list[dict]]:
    """Every view file in ``cache_dir``, and the files that could not be read as one."""
    views, problems = [], []
    for path in sorted(cache_dir.glob("*.h5")):
        try:
            cache = FeatureCache(path, allow_shard=True)
        except CacheError as exc:
            problems.append({"path": str(path), "problem": str(exc)})
            continue
        store = (path.parent / cache.store).resolve() if cache.store else None
        shards = tuple((path.parent / s).resolve() for s in cache.shards)
        views.append(ViewFile(path, store, sum(cache.counts.values()), path.stat().st_mtime, shards))
    return views, problems


def _merged_shards(views: list[ViewFile]) -> dict[Path, ViewFile]:
    """Shard file -> the merged view that maps it (it lives as long as that one)."""
    return {shard: view for view in views for shard in view.shards}


def _existing(cache_dir: str | Path) -> Path:
    cache_dir = Path(cache_dir).expanduser()
    if not cache_dir.is_dir():
        raise ConfigError(f"`--cache-dir` {cache_dir} does not exist. Fix: pass the folder "
                          "extract wrote to (default: cache).")
    return cache_dir


def list_cache(cache_dir: str | Path) -> dict:
    """Stores (spec, rows, bytes), the views using each, and files outside any store."""
    cache_dir = _existing(cache_dir)
    views, problems = _views(cache_dir)
    stores = []
    for folder in _store_folders(cache_dir):
        store = FeatureStore(folder)
        using = [v for v in views if v.store == folder.resolve()]
        spec = store.spec()
        stores.append({
            "store": str(folder), "spec": spec, **store.usage(),
            "views": [{"path": str(v.path), "rows": v.rows, "last_used": _when(v.last_used)}
                      for v in using],
            "last_used": _when(max(v.last_used for v in using)) if using else None,
        })
    outside = [{"path": str(v.path), "rows": v.rows, "last_used": _when(v.last_used)}
               for v in views if v.store is None]
    return {"cache_dir": str(cache_dir), "stores": stores, "views_without_store": outside,
            "unreadable": problems}


def collect_garbage(cache_dir: str | Path, older_than_days: float | None = None,
                    dry_run: bool = False, chunk_size: int = 512) -> dict:
    """Drop views unused for ``older_than_days`` and every store row no remaining view holds.

    Args:
        older_than_days: views last used longer ago are dropped (None: keep
            every view; only rows no view holds are dropped).
        dry_run: say what would be dropped, change nothing.

    Returns:
        What was (or would be) dropped: views, rows, and bytes freed.
    """
    if older_than_days is not None and older_than_days < 0:
        raise ConfigError(f"`--older-than` takes a number of days, 0 or more. Got {older_than_days}.")
    cache_dir = _existing(cache_dir)
    views, problems = _views(cache_dir)
    cutoff = time.time() - older_than_days * DAY if older_than_days is not None else None
    old = {v.path.resolve() for v in views if cutoff is not None and v.last_used < cutoff
           and v.store is not None}
    # A shard file lives as long as a merged view that maps it.
    for shard, merged in _merged_shards(views).items():
        if merged.path.resolve() not in old:
            old.discard(shard)
    dropped = [v for v in views if v.path.resolve() in old]
    report = {"dry_run": dry_run, "views_dropped": [str(v.path) for v in dropped], "stores": []}
    if not dry_run:
        for view in dropped:
            view.path.unlink(missing_ok=True)
        _remove_leftovers(cache_dir)
    report["unreadable"] = problems
    if problems:  # their rows cannot be told apart, so none is dropped
        log.warning("%d view files cannot be read, so no store row is dropped (a damaged view is "
                    "rebuilt from them). Fix: `cache verify --repair`, then gc again.", len(problems))
        report.update(bytes_freed=0, rows_dropped=0)
        return report
    for folder in _store_folders(cache_dir):
        store = FeatureStore(folder)
        with store.locked(exclusive=True, what=f"store {folder.name} (gc)"):
            # Read the views again under the lock: one written meanwhile counts.
            live = [v for v in _views(cache_dir)[0]
                    if v.store == folder.resolve() and v.path.resolve() not in (old if dry_run else set())]
            keep: set[str] = set()
            for view in live:
                keep |= FeatureCache(view.path, allow_shard=True).fingerprints_used()
            report["stores"].append(_collect_store(store, keep, live, dry_run, chunk_size))
    report["bytes_freed"] = sum(s["bytes_freed"] for s in report["stores"])
    report["rows_dropped"] = sum(s["rows_dropped"] for s in report["stores"])
    return report


def _collect_store(store: FeatureStore, keep: set[str], live: list, dry_run: bool,
                   chunk_size: int) -> dict:
    if dry_run:
        index = store.index()
        drop = [f for f in index.fingerprints if f.decode() not in keep]
        return {"store": str(store.folder), "views": len(live), "rows_dropped": len(drop),
                "rows_kept": len(index.fingerprints) - len(drop), "bytes_freed": 0}
    store.remove_stale_temporaries()
    store.set_aside(store.index().damaged)
    store.remove_set_aside()  # set aside by extract, verify or here
    if not live:
        usage = store.usage()
        rows, freed = usage["rows"], usage["bytes"]
        store.remove()
        return {"store": str(store.folder), "views": 0, "rows_dropped": rows, "rows_kept": 0,
                "bytes_freed": freed, "removed": True}
    for _ in range(len(store.segments()) + 1):
        try:
            return {"store": str(store.folder), "views": len(live), **compact(store, keep, chunk_size)}
        except DamagedFile as exc:  # a row failed its checksum: its images are computed again
            log.warning("%s Set aside; its images are computed again by the next extract.", exc)
            store.set_aside([exc.path])
    raise CacheError(f"{store.folder} could not be compacted. Fix: `cache verify --repair`.")


def _store_folders(cache_dir: Path) -> list[Path]:
    root = store_root(cache_dir)
    return sorted(p for p in root.glob("*") if (p / SPEC_FILE).is_file()) if root.is_dir() else []


def verify_cache(cache_dir: str | Path, repair: bool = False) -> dict:
    """Read every byte of every store segment and view against its checksums, as ``git fsck`` does.

    Args:
        repair: move what fails (and what was written without checksums) aside,
            into a ``damaged`` folder beside it, so the next extract computes
            or rebuilds it; ``cache gc`` removes them.

    Returns:
        ``{"cache_dir", "checked", "damaged": [{"path", "kind", "problem"}], "repaired"}``.
    """
    cache_dir = _existing(cache_dir)
    damaged, count = [], 0
    for folder in _store_folders(cache_dir):
        store = FeatureStore(folder)
        with store.locked(exclusive=repair, what=f"store {folder.name} (verify)"):
            bad = []
            for segment in store.segments():
                count += 1
                problem = _problem(segment)
                if problem:
                    bad.append(segment)
                    damaged.append({"path": str(segment), "kind": "segment", "problem": problem})
            if repair:
                store.set_aside(bad)
    for view in sorted(cache_dir.glob("*.h5")):
        count += 1
        problem = _problem(view)
        if problem:
            damaged.append({"path": str(view), "kind": "view", "problem": problem})
            if repair:
                _set_view_aside(cache_dir, view)
    return {"cache_dir": str(cache_dir), "checked": count, "damaged": damaged, "repaired": repair}


def _aside_folder(cache_dir: Path) -> Path | None:
    """``<cache_dir>/damaged``, made if absent; None where a link or a file holds its name."""
    aside = cache_dir / DAMAGED
    with contextlib.suppress(FileExistsError):
        aside.mkdir()
    if stat.S_ISDIR(os.lstat(aside).st_mode):
        return aside
    log.warning("%s is a link or not a folder; nothing is moved into it. Fix: remove it", aside)
    return None


def _set_view_aside(cache_dir: Path, view: Path) -> None:
    """Move a damaged view into ``damaged/``, listed there so that gc removes it and nothing else."""
    aside = _aside_folder(cache_dir)
    if aside is None:
        return
    fd = os.open(aside / SET_ASIDE, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    try:
        os.write(fd, f"{view.name}\n".encode())
    finally:
        os.close(fd)
    os.replace(view, aside / view.name)


def _remove_leftovers(cache_dir: Path) -> None:
    """The views ``verify --repair`` set aside (those its list names; before the list, those of a
    view's name), and the write probes of killed older versions; never anything else."""
    for path in cache_dir.iterdir():
        if _PROBE.fullmatch(path.name) and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
    aside = cache_dir / DAMAGED
    if aside.is_symlink() or not aside.is_dir():
        return
    try:
        names = (aside / SET_ASIDE).read_text().split("\n") if not (aside / SET_ASIDE).is_symlink() \
            else []
    except FileNotFoundError:
        names = [p.name for p in aside.iterdir()]
    for name in names:
        if _VIEW.fullmatch(name):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(aside / name)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(aside / SET_ASIDE)
    with contextlib.suppress(OSError):  # a person's file kept in it keeps it
        aside.rmdir()


def _problem(path: Path) -> str | None:
    try:
        checked.verify(path)
    except DamagedFile as exc:
        return exc.what
    return None


def compact(store: FeatureStore, keep: set[str], chunk_size: int) -> dict:
    """Keep only the rows (and rejected images) in ``keep``; hold the exclusive lock.

    Segments whose rows are all kept stay as they are. The kept rows of the
    others are written into new segments first, and only then are the old
    ones removed: a kill at any moment loses no row that is kept.
    """
    index = store.index()
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
        written.add(store.write_segment([f.decode() for f in index.fingerprints[part]],
                                       index.gather(part), moving_bad if start == 0 else {},
                                       view="gc"))
    before = sum(p.stat().st_size for p in index.segments)
    for s in partly:
        if index.segments[s] not in written:
            index.segments[s].unlink()
    store.relist()
    return {"rows_dropped": int((~kept).sum()), "rows_kept": int(kept.sum()),
            "segments_removed": len(partly), "segments_written": len(written),
            "bytes_freed": before - sum(p.stat().st_size for p in store.segments())}


def _segment_size(path: Path) -> tuple[int, list[str]]:
    """Rows and rejected fingerprints of a segment :meth:`FeatureStore.index` read whole."""
    with h5py.File(path, "r") as h5:
        return h5["features"].shape[0], [f.decode() for f in h5["bad/fingerprints"][()]]
