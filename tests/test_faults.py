"""Stage 1 under faults: a full disk, a read-only cache folder, two extractions at once."""

import json
import pathlib
import resource
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from pipeline import ExtractConfig, extract_features
from pipeline.errors import CacheError

from conftest import make_dataset

ROOT = Path(__file__).resolve().parents[1]


def config(folder, **kwargs):
    return ExtractConfig(**{"weights": "none", "image_size": 32, "batch_size": 4, "chunk_size": 4,
                            "cache_dir": str(folder), **kwargs})


@contextmanager
def file_size_limit(n_bytes):
    """A full disk, as the writer sees it: writes past ``n_bytes`` fail (EFBIG)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write, not the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # HDF5's own cleanup
def test_a_full_disk_keeps_the_finished_chunks_and_the_next_run_resumes(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=10)
    cache = tmp_path / "cache"
    with file_size_limit(2_000), pytest.raises(CacheError) as err:  # not even one chunk fits
        extract_features(data, config(cache))
    message = str(err.value)
    assert "the disk is full (or a file size limit was reached)" in message
    assert "Fix: free space (or raise the limit), then run the same command again; it resumes" in message
    partial = next(cache.glob("*.partial"))
    assert not list(partial.glob("*.tmp")), "the half-written chunk is removed"
    assert not list(partial.glob("*.npz"))

    with file_size_limit(12_000), pytest.raises(CacheError) as err:  # chunks fit, the file does not
        extract_features(data, config(cache))
    assert "the disk is full" in str(err.value) and str(partial) in str(err.value)
    assert len(list(partial.glob("train-*.npz"))) == 5 and len(list(partial.glob("validation-*.npz"))) == 5
    assert not list(cache.glob("*.h5")) and not list(cache.glob("*.tmp-*")), "nothing looks complete"

    resumed = extract_features(data, config(cache))
    assert resumed.resumed_images == 40 and resumed.splits == {"train": 20, "validation": 20}
    assert not partial.exists()


def test_a_read_only_cache_folder_serves_hits_and_refuses_misses_clearly(tmp_path, monkeypatch):
    data = make_dataset(tmp_path / "data", per_class=3)
    cache = tmp_path / "shared cache"
    first = extract_features(data, config(cache))
    real_write = pathlib.Path.write_bytes
    real_open = open

    def read_only(path):
        if Path(path).parent == cache:
            raise OSError(30, "Read-only file system", str(path))

    monkeypatch.setattr(pathlib.Path, "write_bytes",
                        lambda self, b: read_only(self) or real_write(self, b))
    monkeypatch.setattr("builtins.open", lambda f, *a, **k: (
        read_only(f) if any(m in (a[0] if a else k.get("mode", "r")) for m in "wa+") else None)
        or real_open(f, *a, **k))
    again = extract_features(data, config(cache))
    assert again.hit and again.path == first.path
    with pytest.raises(CacheError) as err:
        extract_features(data, config(cache, image_size=48))
    assert str(err.value) == (f"`--cache-dir` {cache} cannot be written (Read-only file system). "
                              "Fix: pass a folder you can write with `--cache-dir`.")


def test_two_extractions_of_one_cache_at_once_one_waits_for_the_other(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=40)
    command = [sys.executable, str(ROOT / "run_pipeline.py"), "extract", "--data", str(data),
               "--weights", "none", "--image-size", "32", "--batch-size", "4", "--chunk-size", "4",
               "--cache-dir", str(tmp_path / "cache"), "--json", "--no-progress"]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    results = [json.loads(out) for out, _ in outs]
    assert sorted(r["hit"] for r in results) == [False, True]
    waited = next(err for (_, err), r in zip(outs, results) if r["hit"])
    assert "waiting for another extraction of" in waited
    assert results[0]["cache"] == results[1]["cache"]
    assert results[0]["splits"] == results[1]["splits"] == {"train": 80, "validation": 80}
    assert not list((tmp_path / "cache").glob("*.partial"))
