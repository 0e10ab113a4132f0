"""Content fingerprints of image files, with a stat cache so unchanged files are not read.

A rerun over unchanged files must not read every byte again. As git's index
does, each fingerprint is remembered with the file's size, mtime, ctime and
inode (in ``<cache_dir>/fingerprints.sqlite``); a file whose stat still
matches is not read. A rewrite changes the ctime, so a file with new bytes is
always hashed again. A file changed within :data:`RACY_SECONDS` of being
hashed could be changed again within the same clock tick, unseen by stat, so
such "racy" entries are not remembered (they are hashed again next time).
A stat cache that cannot be written only costs speed: the run goes on.

The stat cache is a hint, never the truth. Each entry carries a checksum
of its path, stat and digest, so an entry that was edited, swapped with
another or damaged is not served: the file is hashed again. A digest it
served is still checked against the bytes stage 1 decodes (see
:func:`forget`). It is opened only as a regular file of this tool's own
layout: a link planted in its place, or a database of another program, is
never followed or changed; the run hashes every image instead.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import stat
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
        hinted: the relative paths whose digest came from the stat cache,
            unread: a hint that the bytes decoded must confirm.
    """

    digests: list[str | None]
    unreadable: dict[str, str]
    read: int
    hinted: frozenset[str] = frozenset()


def _signature(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


_VERSION = 2  # PRAGMA user_version of this layout: entries with a checksum
_COLUMNS = "path, size, mtime_ns, ctime_ns, ino, digest, seal"


def _key(path: str) -> str:
    """A path as the stat cache keys it: SQLite takes UTF-8 only, so a name whose bytes are
    not UTF-8 is written with escapes (the same file always gets the same key)."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _seal(path: str, size: int, mtime_ns: int, ctime_ns: int, ino: int, digest: str) -> str:
    """The checksum of one entry: edited, swapped or damaged entries fail it."""
    text = "\0".join(map(str, (path, size, mtime_ns, ctime_ns, ino, digest)))
    return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()


class _NotOurs(Exception):
    """The stat cache's name holds something this tool did not write there."""


def _identity(db: Path) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the stat cache, None when absent; a link or anything but a
    regular file is refused, never followed."""
    try:
        st = os.lstat(db)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not stat.S_ISREG(st.st_mode):
        raise _NotOurs(f"{db} is a link or not a regular file")
    return st.st_dev, st.st_ino


def _connect(db: Path, create: bool) -> sqlite3.Connection | None:
    """The stat cache, checked to be this tool's own file (None: absent and not created)."""
    before = _identity(db)
    if before is None:
        if not create:
            return None
        try:  # O_EXCL | O_NOFOLLOW: never a file (or a link) that appeared meanwhile
            os.close(os.open(db, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666))
        except FileExistsError:
            pass
        before = _identity(db)
    conn = sqlite3.connect(f"file:{db}?mode=rw", uri=True, timeout=30)
    try:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables - {"files"}:
            raise _NotOurs(f"{db} holds tables of another program ({', '.join(sorted(tables))})")
        if conn.execute("PRAGMA user_version").fetchone()[0] != _VERSION:
            # An older layout, or an empty file: disposable, so rebuilt.
            with conn:
                conn.execute("DROP TABLE IF EXISTS files")
                conn.execute("CREATE TABLE files (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
                             "ctime_ns INTEGER, ino INTEGER, digest TEXT, seal TEXT)")
                conn.execute(f"PRAGMA user_version = {_VERSION}")
        if _identity(db) != before:  # replaced while it was opened
            raise _NotOurs(f"{db} was replaced while it was opened")
    except BaseException:
        conn.close()
        raise
    return conn


def _not_ours(db: Path, exc: _NotOurs) -> None:
    log.warning("%s, so it is neither read nor changed: every image is hashed. Fix: remove it "
                "(this tool keeps its own stat cache there, a regular file)", exc)


def _known(db: Path, root: Path) -> dict[str, tuple]:
    """Remembered entries of the files below ``root``: path -> (signature, digest).

    Entries that fail their checksum are left out (their files are hashed again).
    """
    prefix = _key(str(root).rstrip("/") + "/")
    try:
        conn = _connect(db, create=False)
        if conn is None:
            return {}
        with closing(conn):
            rows = conn.execute(f"SELECT {_COLUMNS} FROM files WHERE path >= ? AND path < ?",
                                (prefix, prefix[:-1] + "0")).fetchall()
    except _NotOurs as exc:
        _not_ours(db, exc)
        return {}
    except OSError as exc:  # a cache folder that cannot be read: only speed is lost
        log.warning("could not read the fingerprint cache %s (%s); hashing every image", db,
                    first_line(exc))
        return {}
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
    known = {path: (tuple(sig), digest) for path, *sig, digest, seal in rows
             if seal == _seal(path, *sig, digest)}
    if len(known) < len(rows):
        log.warning("%d entries of the fingerprint cache %s fail their checksum (edited or "
                    "damaged); those images are hashed again", len(rows) - len(known), db)
    return known


def _write(db: Path, sql: str, rows: list[tuple]) -> None:
    if not rows:
        return
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        with closing(_connect(db, create=True)) as conn, conn:
            conn.executemany(sql, rows)
    except _NotOurs as exc:
        _not_ours(db, exc)
    except (OSError, sqlite3.Error) as exc:
        log.warning("could not update the fingerprint cache %s (%s); the next run hashes "
                    "these images again", db, first_line(exc))


def _remember(db: Path, entries: list[tuple]) -> None:
    _write(db, f"INSERT OR REPLACE INTO files ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
           [(_key(path), *rest, _seal(_key(path), *rest)) for path, *rest in entries])


def forget(db: Path, paths: list[str]) -> None:
    """Drop the entries of ``paths`` (absolute), hints the bytes decoded did not confirm."""
    _write(db, "DELETE FROM files WHERE path = ?", [(_key(p),) for p in paths])


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
    hinted = set()
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
        entry = known.get(_key(path))
        if entry is not None and entry[0] == signature:
            digests[i] = entry[1]
            hinted.add(rel)
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
    return Fingerprints(digests, unreadable, len(todo), frozenset(hinted))
