"""Leaf helpers every module may import: atomic writes, hashing, versions, Keras's folder.

Nothing here imports another module of the package.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sys
import tempfile
import urllib.parse
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path


def atomic_write(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never half of one."""
    tmp = path.with_suffix(path.suffix + f".tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def key_hash(key: dict) -> str:
    """sha256 of a JSON-able dict, independent of key order."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def library_versions(names=("tensorflow", "keras", "numpy", "h5py")) -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, hex."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


@contextlib.contextmanager
def hashed_copy(path: str | os.PathLike) -> Iterator[tuple[Path, str]]:
    """A private copy of a file or folder, under its own name, and its identity as
    :func:`sha256_tree` gives it, taken from the bytes copied.

    Each file is read once: a loader given the copy reads exactly the bytes
    hashed, whatever is written to ``path`` meanwhile. The copy is removed
    on leaving.
    """
    with tempfile.TemporaryDirectory(prefix="pipeline-copy-") as folder:
        copy = Path(folder) / Path(path).name
        yield copy, _tree_identity(path, lambda source, relative: _copied(source, copy / relative))


def _copied(source: Path, target: Path) -> str:
    """Copy ``source`` to ``target`` in one read; the sha256 of the bytes copied, hex."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open(source, "rb") as read, open(target, "wb") as write:
        while block := read.read(2**20):
            digest.update(block)
            write.write(block)
    return digest.hexdigest()


def sha256_tree(path: str | os.PathLike) -> str:
    """``sha256:`` and the sha256 of a file, or of every file under a folder (sorted by path,
    at any depth, 16 hex digits each): what identifies a model or preset stage 1 read."""
    return _tree_identity(path, lambda source, relative: sha256_file(source))


def _tree_identity(path: str | os.PathLike, digest) -> str:
    """``sha256:`` and ``digest(file, its path relative to path)`` of a file, or of every file
    under a folder (sorted by path, at any depth, 16 hex digits each)."""
    path = Path(path)
    if not path.is_dir():
        return "sha256:" + digest(path, Path())
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return "sha256:" + "+".join(digest(p, p.relative_to(path))[:16] for p in files)


def keras_home() -> Path:
    """Keras's cache folder (``$KERAS_HOME``, else ``~/.keras``)."""
    return Path(os.environ.get("KERAS_HOME", "~/.keras")).expanduser()


def write_new(path: Path, data: bytes) -> None:
    """Write a file that does not exist yet, whole, making its folder; never replace one
    (FileExistsError)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.link(tmp, path)  # fails, atomically, when the name is taken meanwhile
    finally:
        tmp.unlink(missing_ok=True)


def umask() -> int:
    """The process's umask, read without changing it where the system says (Linux's status)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)  # elsewhere: set and put back at once
    os.umask(old)
    return old


def made_by_umask(folder: Path) -> Path:
    """Give a folder made private (``mkdtemp``'s 0700) the mode ``mkdir`` would have given it."""
    folder.chmod(0o777 & ~umask())
    return folder


def why_unreachable(origin: str, timeout: float = 5.0) -> str | None:
    """Why ``origin``'s host cannot be reached (None: it answers): asked before a download, so
    that an offline machine gets a sentence at once instead of a downloader's retries."""
    host = urllib.parse.urlsplit(origin).hostname
    try:
        socket.create_connection((host, 443), timeout=min(timeout, 5.0)).close()
    except OSError as exc:
        return f"{host} cannot be reached: {exc.strerror or exc}"
    return None
