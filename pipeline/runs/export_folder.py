"""The export folder: the one module that writes into the ``--out`` of ``export`` and ``predict --export``.

An export goes into a new or empty folder, or over an earlier export of
this tool in it (its ``export.json`` lists every file each export wrote).
Files are written into a staging folder inside it first and moved into
place only when whole; a name that an earlier export did not write is never
overwritten, and nothing else in the folder is touched.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .._files import atomic_write
from ..errors import ConfigError, RunError, write_problem

LISTING = "export.json"
_STAGING = ".export-"


def _listing(out: Path) -> dict:
    path = out / LISTING
    if not path.is_file():
        return {}
    try:
        listing = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        listing = None
    if not isinstance(listing, dict) or not all(isinstance(r, dict) and "file" in r
                                                for r in listing.values()):
        raise ConfigError(f"`--out` {out} holds an {LISTING} this tool cannot read, so it cannot "
                          "tell which files there are its own. Fix: pass a new or empty folder "
                          "with `--out`.")
    return listing


def _ours(listing: dict) -> set[str]:
    return {name for record in listing.values() for name in record.get("files", [record["file"]])}


def check(out: Path) -> dict:
    """Refuse an ``--out`` that is neither new, empty nor an export of ours; its listing."""
    if not out.exists():
        return {}
    if not out.is_dir():
        raise ConfigError(f"`--out` {out} is a file, not a folder. Fix: pass a new or empty folder "
                          "with `--out`.")
    listing = _listing(out)
    others = [p.name for p in out.iterdir() if not p.name.startswith(_STAGING)]
    if others and not listing:
        raise ConfigError(
            f"`--out` {out} already holds files this tool did not write ({', '.join(sorted(others)[:3])}"
            f"{' ...' if len(others) > 3 else ''}), and an export never overwrites or deletes them. "
            "Fix: pass a new or empty folder with `--out`.")
    return listing


@contextmanager
def staged(out: Path):
    """A staging folder inside ``out``: yield it, fill it, then :func:`publish` from it.

    The caller has :func:`check`-ed ``out`` before its work; :func:`publish` checks again.
    """
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out, prefix=_STAGING) as staging:
            yield Path(staging)
    except OSError as exc:
        raise RunError(f"Writing the export into {out} failed: {write_problem(exc)}. Nothing was "
                       "written there. Fix: free space (or pass another `--out`), then run the "
                       "same command again.") from None
    finally:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # made for an export that was refused: leave no trace


def publish(out: Path, staging: Path, key: str, record: dict) -> dict:
    """Move what ``staging`` holds into ``out`` and list it in ``export.json`` under ``key``.

    Returns:
        The record as listed (``files`` added).

    Raises:
        ConfigError: a name to write is taken by a file no earlier export wrote.
    """
    listing = check(out)
    names = sorted(p.name for p in staging.iterdir())
    taken = [n for n in names if (out / n).exists() and n not in _ours(listing)]
    if taken:
        raise ConfigError(f"`--out` {out} already holds {', '.join(taken)}, which no earlier export "
                          "wrote, so it is not overwritten. Fix: pass a new or empty folder with "
                          "`--out`.")
    for name in names:
        final = out / name
        if final.is_symlink():  # a link planted under a name of ours: the link goes, never its target
            final.unlink()
        elif final.is_dir():  # an earlier export of ours, by the check above
            shutil.rmtree(final)
        (staging / name).replace(final)
    listing[key] = {**record, "files": names}
    atomic_write(out / LISTING, json.dumps(listing, indent=2).encode())
    return listing[key]
