"""What reaches the person at the terminal: native log lines filtered out, progress bars in.

TensorFlow's C++ runtime, absl, the CUDA probes and TFLite's quantizer write to
file descriptor 2 directly, past Python's logging, and ``TF_CPP_MIN_LOG_LEVEL``
no longer silences them all. While a command or a public function of this
package runs, fd 2 therefore passes through a filter that drops those lines
and nothing else: our own log lines, Python warnings and whatever the caller
writes go through. Debug logging (``-v``) turns the filter off.

Progress bars are written past the filter to the terminal itself, the saved
original stderr, and only when that is a terminal.

Where a command's seconds go is recorded by phase (:func:`phase`), for
``run --json`` and the benchmarks.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import re
import sys
import threading
import time
from contextlib import contextmanager

# absl/glog lines, whatever their time: "I1130 12:20:10.123456" or, before absl's
# logging starts, "E0000 00:00:1796026566.517998" (seconds since the epoch).
_NATIVE_NOISE = re.compile(
    rb"^(?:[IWEF]\d{4} +[\d:.]+ +\d+ \S+:\d+\] "
    rb"|WARNING: All log messages before absl::InitializeLog\(\)"
    rb"|To enable the following instructions: .*rebuild TensorFlow"
    rb"|fully_quantize: \d+, inference_type: "  # TFLite's quantizer, printed by its C++
    rb"|.*(?:cuInit|cudart_stub|TF-TRT|oneDNN custom operations|This TensorFlow "
    rb"binary is optimized|Unable to register cu(?:DNN|FFT|BLAS) factory|computation placer already)"
    # libjpeg's own complaints about a broken file: the quarantine line says it
    rb"|(?:Corrupt JPEG data|Premature end of JPEG file|Improper call to JPEG library|Invalid JPEG "
    rb"file structure|Not a JPEG file|Bogus |Unsupported JPEG))")

_phases: dict[str, float] = {}  # phase -> seconds, since the last phases_reset()
_open = threading.local()  # this thread's open phases: [seconds of the phases inside each]


@contextmanager
def phase(name: str):
    """Add the seconds of the block to phase ``name`` (blocks of one phase add up), less those of
    the phases inside it, which count as their own: the phases add up to the whole."""
    inside = _open.__dict__.setdefault("stack", [])
    inside.append(0.0)
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds = time.perf_counter() - start
        nested = inside.pop()
        if inside:
            inside[-1] += seconds
        _phases[name] = _phases.get(name, 0.0) + seconds - nested


def phases_reset() -> None:
    _phases.clear()


def phases() -> dict[str, float]:
    """Seconds by phase, in the order the phases first ran."""
    return {name: round(seconds, 3) for name, seconds in _phases.items()}


_END = b"\x00end of the filtered stderr\n"
_lock = threading.Lock()
_depth = 0  # callers inside the filter, across threads
_undo = None
_terminal: io.TextIOBase | None = None  # the original stderr while the filter runs


def is_native_noise(line: bytes) -> bool:
    return _NATIVE_NOISE.match(line) is not None


def terminal() -> io.TextIOBase | None:
    """Where progress goes: the original stderr, past the filter when it runs (None: there is none)."""
    return _terminal or sys.stderr


def progress_bar(total: int, enabled: bool | None, **kwargs):
    """A tqdm bar on the terminal: ``enabled=None`` shows it only when stderr is one."""
    from tqdm.auto import tqdm

    out = terminal()
    if enabled is None or out is None:
        enabled = out is not None and out.isatty()
    # A pseudo-terminal may report 0 columns (`script` without a parent terminal, some CI
    # consoles): then 80, as shutil.get_terminal_size falls back, instead of an empty bar.
    sized = {"dynamic_ncols": True} if _columns(out) else {"ncols": 80}
    return tqdm(total=total, file=out, disable=not enabled, **sized, **kwargs)


def _columns(out) -> int:
    """The columns the terminal behind ``out`` reports (0: none, or it says 0)."""
    try:
        return os.get_terminal_size(out.fileno()).columns
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return 0


@contextmanager
def native_logs_filtered():
    """Drop the native libraries' log lines from fd 2 for the duration; re-entrant."""
    global _depth, _undo
    if logging.getLogger("pipeline").isEnabledFor(logging.DEBUG):
        yield
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            _undo = _install()
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:  # the last one out, whichever thread it is, restores fd 2
                _undo()
                _undo = None


def quiet(function):
    """Run ``function`` with the native log filter on (public entry points)."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with native_logs_filtered():
            return function(*args, **kwargs)
    return wrapper


def _install():
    global _terminal
    if sys.stderr is not None:
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all (closed by a daemon): nothing to filter
        return lambda: None
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
                elif not is_native_noise(line):
                    out.write(line)
        drained.set()

    threading.Thread(target=pump, name="stderr-filter", daemon=True).start()
    _terminal = os.fdopen(os.dup(saved), "w", buffering=1, errors="replace",
                          encoding=getattr(sys.stderr, "encoding", None) or "utf-8")

    def undo():
        global _terminal
        _terminal.close()
        _terminal = None
        if sys.stderr is not None:
            sys.stderr.flush()
        os.write(2, _END)
        drained.wait(timeout=5)
        os.dup2(saved, 2)
        os.close(saved)
    return undo
