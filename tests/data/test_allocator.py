"""The C allocator keeps decoding's freed buffers for the next images."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.data import allocator

ROOT = Path(__file__).resolve().parents[2]

# A thread holds 96 buffers of 1 MB, every page touched, then frees them, 10 times: more
# than one heap of glibc's holds, as decoding threads with batches in flight do. Prints
# the thread's own minor page faults after its first round, which maps its heaps: which
# arena a new thread gets (a fresh one, or one a thread that just ended left behind) is
# the kernel's timing, and plays no part.
_CHURN = textwrap.dedent("""
    import resource, sys, threading
    import numpy as np
    if sys.argv[1] == "keep":
        from pipeline.data import allocator
        assert allocator.keep_freed_memory()
    if sys.argv[1] == "pipeline":  # the extraction's pipeline is the process's first generator
        from pipeline.data.decode import Decoding, image_batches
        list(image_batches([sys.argv[2]], [0], Decoding(32), 1))
    faults = []
    def work():
        for n in range(10):
            if n == 1:
                before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
            buffers = [np.ones(2**18, np.float32) for _ in range(96)]
            del buffers
        faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    print(faults[0])
""")


def _faults(mode: str, *args: str) -> int:
    out = subprocess.run([sys.executable, "-c", _CHURN, mode, *args], capture_output=True, text=True, check=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not allocator.is_glibc(), reason="the setting is glibc's; other C libraries keep theirs")
def test_freed_buffers_are_reused_not_faulted_in_again_even_after_tensorflow_resets_them(tiny_data):
    default, kept = _faults("default"), _faults("keep")
    # 9 rounds of 96 MB is 221184 pages: by default many come back from the kernel zeroed.
    assert default > 10_000, default
    assert kept < default / 20, (kept, default)
    # TensorFlow sets its own mmap threshold as the process's first generator dataset starts
    # (after a plain one, 222048 faults here: every buffer mapped afresh); the extraction's
    # generator sets these again after.
    image = str(next(tiny_data.rglob("*.jpg")))
    after_pipeline = _faults("pipeline", image)
    assert after_pipeline < default / 20, (after_pipeline, default)


def test_off_glibc_nothing_is_changed(monkeypatch):
    def no_such_name(name):
        raise ValueError("unrecognized configuration name")

    def must_not_load(*args):
        raise AssertionError("the C library was touched off glibc")

    monkeypatch.setattr(allocator.os, "confstr", no_such_name)
    monkeypatch.setattr(allocator.ctypes, "CDLL", must_not_load)
    assert allocator.is_glibc() is False
    assert allocator.keep_freed_memory() is False


def test_a_refused_setting_says_so(monkeypatch):
    calls = []

    monkeypatch.setattr(allocator, "is_glibc", lambda: True)
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: type("C", (), {"mallopt": _Fn(calls)})())
    assert allocator.keep_freed_memory() is False
    assert calls == [(-3, allocator.MMAP_THRESHOLD), (-2, allocator.TOP_PAD)]


class _Fn:
    """A stand-in for a ctypes function: takes argtypes/restype, records its calls."""

    def __init__(self, calls):
        self.calls = calls

    def __call__(self, param, value):
        self.calls.append((param, value))
        return 0  # glibc's answer to a value it will not take


def test_every_decoding_pipeline_sets_it_after_tensorflow_does(monkeypatch, tiny_data):
    """TensorFlow sets its own mmap threshold as a generator dataset's iterator is made."""
    from pipeline.data.decode import Decoding, image_batches, labelled_batches

    asked = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: asked.append(1) or True)
    paths = sorted(str(p) for p in tiny_data.rglob("*.jpg"))[:4]
    batches = image_batches(paths, range(4), Decoding(32), 2)
    assert asked == []  # not yet: the iterator is not made
    assert sum(len(i) for i, _ in batches) == 4
    assert len(asked) == 1
    labelled_batches(paths, [0, 1, 0, 1], Decoding(32), 2)
    assert len(asked) == 2
