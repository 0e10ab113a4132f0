"""Content fingerprints of image files, with a stat cache so unchanged files are not read.

A rerun over unchanged files must not read every byte again. As git's index
does, each fingerprint is remembered with the file's size, mtime, ctime and
inode (in ``<cache_dir>/fingerprints.sqlite``); a file whose stat still
matches is not read. A rewrite changes the ctime, so a file with new bytes is
always hashed again. A file changed within :data:`RACY_SECONDS` of being
hashed could be changed again within the same clock tick, unseen by stat, so
such "racy" entries are not remembered (they are hashed again next time).
A stat cache that cannot be written only costs speed: the run goes on.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from ..data.files import Refused, fingerprint_file, refusal, unreadable_reason
from ..errors import first_line

log = logging.getLogger(__name__)

STAT_CACHE = "fingerprints.sqlite"
RACY_SECONDS = 2.0


@dataclass(frozen=True)
class Fingerprints:
    """The fingerprints of some files.

    Attributes:
        digests: one per file, None where the file could not be read.
        unreadable: relative path -> why it could not be read (a dangling
            link, no permission, a folder named like an image).
        read: how many files were read (the others matched the stat cache).
    """

    digests: list[str | None]
    unreadable: dict[str, str]
    read: int


def _signature(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def _connect(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db, timeout=30)
    conn.execute("CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, "
                 "mtime_ns INTEGER, ctime_ns INTEGER, ino INTEGER, digest TEXT)")
    return conn


def _known(db: Path, root: Path) -> dict[str, tuple]:
    """Remembered entries of the files below ``root``: path -> (signature, digest)."""
    if not db.is_file():
        return {}
    prefix = str(root).rstrip("/") + "/"
    try:
        with closing(_connect(db)) as conn:
            rows = conn.execute("SELECT path, size, mtime_ns, ctime_ns, ino, digest FROM files "
                                "WHERE path >= ? AND path < ?", (prefix, prefix[:-1] + "0"))
            return {path: (tuple(sig), digest) for path, *sig, digest in rows}
    except sqlite3.Error as exc:
        # Only speed is lost: set it aside once, and the next write starts a new one.
        aside = db.with_name(db.name + ".damaged")
        try:
            os.replace(db, aside)
            moved = f"moved it to {aside.name} and hashing"
        except OSError:
            moved = "hashing"
        log.warning("could not read the fingerprint cache %s (%s); %s every image", db,
                    first_line(exc), moved)
        return {}


def _remember(db: Path, entries: list[tuple]) -> None:
    if not entries:
        return
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        with closing(_connect(db)) as conn, conn:
            conn.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)", entries)
    except (OSError, sqlite3.Error) as exc:
        log.warning("could not update the fingerprint cache %s (%s); the next run hashes "
                    "these images again", db, first_line(exc))


def fingerprint_files(root: Path, relpaths: list[str], max_bytes: int,
                      stat_cache: Path | None = None) -> Fingerprints:
    """Fingerprints of ``root/relpath`` for each path, reading only files whose stat changed.

    Args:
        max_bytes: larger files are refused by their stat, unread (as is
            anything but a regular file: a link to a device, a FIFO).
        stat_cache: the SQLite stat cache (None: read every file).
    """
    started_ns = time.time_ns()
    digests: list[str | None] = [None] * len(relpaths)
    unreadable: dict[str, str] = {}
    known = _known(stat_cache, root) if stat_cache is not None else {}
    todo: list[tuple[int, str, tuple]] = []
    for i, rel in enumerate(relpaths):
        path = str(root / rel)
        try:
            st = os.stat(path)
        except OSError as exc:
            unreadable[rel] = unreadable_reason(exc)
            continue
        why = refusal(st, max_bytes)
        if why:
            unreadable[rel] = why
            continue
        signature = _signature(st)
        entry = known.get(path)
        if entry is not None and entry[0] == signature:
            digests[i] = entry[1]
        else:
            todo.append((i, path, signature))

    def read(item):
        try:
            return fingerprint_file(item[1], max_bytes)
        except (OSError, Refused) as exc:
            return exc

    # Hashing releases the GIL, so threads overlap the reads.
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(read, todo, chunksize=64))
    fresh = []
    racy_after = started_ns - int(RACY_SECONDS * 1e9)
    for (i, path, signature), result in zip(todo, results):
        if isinstance(result, Exception):
            unreadable[relpaths[i]] = (str(result) if isinstance(result, Refused)
                                       else unreadable_reason(result))
            continue
        digests[i] = result
        if signature[2] < racy_after:
            fresh.append((path, *signature, result))
    if stat_cache is not None:
        _remember(stat_cache, fresh)
    return Fingerprints(digests, unreadable, len(todo))
