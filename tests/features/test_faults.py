"""Stage 1 under faults: a full disk, a read-only cache folder, two extractions at once."""

import json
import os
import pathlib
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pipeline import ExtractConfig, extract_features
from pipeline.errors import CacheError

from conftest import make_dataset

ROOT = Path(__file__).resolve().parents[2]


def config(folder, **kwargs):
    return ExtractConfig(**{"weights": "none", "image_size": 32, "batch_size": 4, "chunk_size": 4,
                            "cache_dir": str(folder), **kwargs})


FULL_DISK = """
import resource, signal, sys
sys.path.insert(0, {root!r})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.RLIM_INFINITY))
from pipeline.cli import main
sys.exit(main(["extract", "--data", {data!r}, "--cache-dir", {cache!r}, "--weights", "none",
               "--image-size", "32", "--batch-size", "4", "--chunk-size", "4", "--no-progress"]))
"""


def extract_with_a_full_disk(data, cache, limit):
    """Extraction in a process whose writes fail past ``limit`` bytes (EFBIG), as on a full disk.

    In its own process: HDF5 keeps a file whose writes failed half-open, and
    a real run that hits a full disk exits anyway.
    """
    code = FULL_DISK.format(root=str(ROOT), limit=limit, data=str(data), cache=str(cache))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def test_a_full_disk_keeps_the_finished_chunks_and_the_next_run_resumes(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=10)
    cache = tmp_path / "cache"
    run = extract_with_a_full_disk(data, cache, 2_000)  # not even one chunk fits
    assert run.returncode == 2, run.stderr[-2000:]
    assert "the disk is full (or a file size limit was reached)" in run.stderr
    assert "Fix: free space (or raise the limit), then run the same command again; it resumes" in run.stderr
    assert "Traceback" not in run.stderr
    store = next((cache / "store").iterdir())
    assert str(store) in run.stderr
    assert not list(store.glob("*.tmp-*")), "the half-written chunk is removed"
    assert not list(store.glob("seg-*.h5"))

    run = extract_with_a_full_disk(data, cache, 16_000)  # the chunks fit, the view does not
    assert run.returncode == 2 and "the disk is full" in run.stderr, run.stderr[-2000:]
    assert len(list(store.glob("seg-*.h5"))) == 10
    assert not list(cache.glob("*.h5")) and not list(cache.rglob("*.tmp-*")), "nothing looks complete"

    resumed = extract_features(data, config(cache))
    assert resumed.resumed_images == 40 and resumed.computed == 0
    assert resumed.splits == {"train": 20, "validation": 20}


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
    real_temporary = tempfile.TemporaryFile
    monkeypatch.setattr(tempfile, "TemporaryFile", lambda *a, **k: (
        read_only(Path(k["dir"]) / "probe") if "dir" in k else None) or real_temporary(*a, **k))
    again = extract_features(data, config(cache))
    assert again.hit and again.path == first.path
    with pytest.raises(CacheError) as err:
        extract_features(data, config(cache, image_size=48))
    assert str(err.value) == (f"`cache_dir` {cache} cannot be written (Read-only file system). "
                              "Fix: pass a folder you can write with `cache_dir`.")


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
    assert [r["computed"] for r in results if not r["hit"]] == [160]
    assert not list((tmp_path / "cache").rglob("*.lock"))
