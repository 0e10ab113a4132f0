"""Keep the native libraries' log lines off stderr (unless ``-v``)."""

from __future__ import annotations

import os
import re
import sys
import threading
from contextlib import contextmanager

# Native libraries (TensorFlow's C++ runtime, absl, CUDA probes) write to file
# descriptor 2 directly, past Python's logging, and TF_CPP_MIN_LOG_LEVEL no
# longer silences them all; so, unless -v, stderr passes through a filter.
# libjpeg's own complaints about a broken file go too: the quarantine line says it.
_NATIVE_NOISE = re.compile(
    rb"^(?:[IWE]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\] |WARNING: All log messages before "
    rb"absl::InitializeLog\(\)|.*(?:cuInit|cudart_stub|TF-TRT|oneDNN custom operations|This TensorFlow "
    rb"binary is optimized|Unable to register cu(?:DNN|FFT|BLAS) factory|computation placer already)"
    rb"|(?:Corrupt JPEG data|Premature end of JPEG file|Improper call to JPEG library|Invalid JPEG "
    rb"file structure|Not a JPEG file|Bogus |Unsupported JPEG))")


_END = b"\x00end of the filtered stderr\n"


@contextmanager
def native_logs_filtered():
    """Drop the native libraries' log lines from stderr; everything else passes through."""
    sys.stderr.flush()
    saved = os.dup(2)
    read, write = os.pipe()
    os.dup2(write, 2)
    os.close(write)
    drained = threading.Event()

    def pump():
        # Child processes (joblib, Dask) inherit the pipe, so it is read until
        # its last writer is gone; the marker says when this process's lines are out.
        with os.fdopen(read, "rb") as lines, os.fdopen(os.dup(saved), "wb", buffering=0) as out:
            for line in lines:
                if line == _END:
                    drained.set()
                elif not _NATIVE_NOISE.match(line):
                    out.write(line)
        drained.set()

    threading.Thread(target=pump, name="stderr-filter", daemon=True).start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.write(2, _END)
        drained.wait(timeout=5)
        os.dup2(saved, 2)
        os.close(saved)
