"""The C allocator's settings while images are decoded.

Decoding and resizing allocate and free a few megabytes an image (the
decoded pixels, the resized float32 copy, the batch). With glibc's malloc as
TensorFlow leaves it, blocks over its mmap threshold are mapped for each
image and unmapped when freed, and free memory at the top of a heap beyond
128 KiB goes back to the kernel: each image's buffers were zero-filled by
the kernel afresh, about 400 page faults an image and a fifth of the
extraction's CPU time in the kernel (BENCHMARKS.md, "Stage 1: freed memory
kept for the next image"). Here blocks up to :data:`MMAP_THRESHOLD` come
from the heaps, and up to :data:`TOP_PAD` of free memory stays at the top of
each heap, so the next image reuses pages already mapped. The price is
those pages kept: peak memory about 100 MB higher on the shared photos.

The settings are the process's (``mallopt``), made as a decoding pipeline
starts. TensorFlow sets its own mmap threshold (128 KiB) when the first
``from_generator`` dataset's iterator of the process is made, so the
extraction makes them from inside its generator, after TensorFlow's. Other
C libraries have no such knobs, or their own policy: there nothing changes.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 32 * 2**20  # the most glibc takes (half its heap size)
TOP_PAD = 64 * 2**20
_M_TOP_PAD, _M_MMAP_THRESHOLD = -2, -3  # malloc.h


def is_glibc() -> bool:
    """Whether this process runs on the GNU C library (the runtime says so, no file is read)."""
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError, AttributeError):  # the name is unknown off glibc
        return False


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse; whether the settings are in force."""
    return is_glibc() and all([_mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD), _mallopt(_M_TOP_PAD, TOP_PAD)])


def _mallopt(param: int, value: int) -> bool:
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    done = mallopt(param, value) == 1
    if not done:
        log.debug("mallopt(%d, %d) was refused; freed memory goes back to the kernel", param, value)
    return done
