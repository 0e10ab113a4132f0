"""How an image file is read: regular files only, never more than a set number of bytes.

Everything that reads a user's image goes through :func:`read_bytes`, or
checks :func:`refusal` on a ``stat`` first: a link to ``/dev/zero``, a FIFO
or a 20 GB file is refused before a byte of it is read, by the stat alone.
"""

from __future__ import annotations

import hashlib
import os
import stat

from ..config import MAX_FILE_BYTES
from ..errors import first_line

__all__ = ["CHANGED", "MAX_FILE_BYTES", "Refused", "fingerprint_bytes", "fingerprint_file", "read_bytes",
           "refusal", "unreadable_reason"]


CHANGED = "changed while it was being read (its bytes differ from those fingerprinted); run again"


class Refused(ValueError):
    """A file this pipeline will not read; the message says why and what to change."""


def refusal(st: os.stat_result, max_bytes: int) -> str | None:
    """Why a file of this ``stat`` is not read (None: it is)."""
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file (a device, FIFO, socket or folder), so it is not read"
    if st.st_size > max_bytes:
        return (f"is {st.st_size:,} bytes, more than `max_file_bytes` = {max_bytes:,}. Fix: raise "
                "`max_file_bytes` if it is a real image")
    return None


def _opened(path: str, max_bytes: int):
    """A regular file of at most ``max_bytes``, opened unbuffered, and the size its stat gives.

    The stat is checked before and after opening.
    """
    why = refusal(os.stat(path), max_bytes)  # a device is never even opened
    if why:
        raise Refused(why)
    # O_NONBLOCK: a FIFO put in the file's place after that stat must not block.
    fh = os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)), "rb",
                   buffering=0)
    st = os.fstat(fh.fileno())
    why = refusal(st, max_bytes)  # the file opened is the one checked
    if why:
        fh.close()
        raise Refused(why)
    return fh, st.st_size


# Past the size its stat gave, a file is read on in blocks this large (under glibc's
# smallest threshold for mapping memory, so a block is never mapped afresh).
_READ_ON = 2**16


def _grew(max_bytes: int) -> Refused:
    return Refused(f"grew past `max_file_bytes` = {max_bytes:,} while it was being read")


def read_bytes(path: str, max_bytes: int) -> bytes:
    """The whole of a regular file of at most ``max_bytes`` bytes.

    Raises:
        Refused: not a regular file, too large, or it grew past the limit while read.
        OSError: it cannot be opened or read.
    """
    fh, size = _opened(path, max_bytes)
    parts, total, want = [], 0, size + 1  # a byte more than the stat says: a file that grew shows
    with fh:
        # Asked for exactly what is there: asking for `max_bytes` allocated (and mapped) that much
        # for every image. Read on to the end, so a short read is never taken for the whole file.
        while total <= max_bytes and (part := fh.read(min(want, max_bytes + 1 - total))):
            parts.append(part)
            total += len(part)
            want = _READ_ON
    if total > max_bytes:
        raise _grew(max_bytes)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _fingerprinter():
    return hashlib.blake2b(digest_size=16)


def fingerprint_bytes(data: bytes) -> str:
    """The content fingerprint of some bytes (blake2b, 128 bits, hex)."""
    hasher = _fingerprinter()
    hasher.update(data)
    return hasher.hexdigest()


def fingerprint_file(path: str, max_bytes: int) -> str:
    """:func:`fingerprint_bytes` of a file, read in blocks, under the same bounds as :func:`read_bytes`.

    A file swapped for a link to ``/dev/zero`` after it was listed, or one that
    grows without end, is refused rather than read for ever.
    """
    hasher, total = _fingerprinter(), 0
    fh, _ = _opened(path, max_bytes)
    with fh:
        while block := fh.read(2**20):
            total += len(block)
            if total > max_bytes:
                raise _grew(max_bytes)
            hasher.update(block)
    return hasher.hexdigest()


def unreadable_reason(exc: OSError) -> str:
    """The sentence for a file that cannot be opened or read."""
    return f"cannot be read: {exc.strerror or first_line(exc)}"
