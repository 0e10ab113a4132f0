"""The decoding benchmarks run on small generated photos (one of them once called the
pipeline's functions with arguments they no longer take, and nothing noticed)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_dataset

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("script, prints", [
    ("bench_decode.py", ["the header probe alone", "median ratios per round: our reader / plain"]),
    ("bench_decoders.py", ["TensorFlow, one thread (ms per image): decode", "simplejpeg"]),
])
def test_a_decoding_benchmark_runs_to_its_figures(tmp_path, script, prints):
    data = make_dataset(tmp_path / "photos", per_class=4)
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--data", str(data), "--size", "16",
                           "--rounds", "1"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-2000:]
    for line in prints:
        assert line in done.stdout
    assert "CPU: " in done.stdout  # every figure names the CPU it was measured on


def test_the_stage_2_threads_benchmark_runs_to_its_figures(feature_cache):
    done = subprocess.run([sys.executable, str(BENCHMARKS / "bench_threads.py"), str(feature_cache)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-2000:]
    for line in ("CPU: ", "logreg, 5 C values", "hist_gbdt fit", "four scikit-learn selections"):
        assert line in done.stdout


def test_the_out_of_core_benchmark_runs_to_its_figures(tmp_path):
    done = subprocess.run([sys.executable, str(BENCHMARKS / "bench_outofcore.py"), "--rows", "3000", "--dim",
                           "32", "--budget-mb", "64", "--work", str(tmp_path)],
                          capture_output=True, text=True, timeout=400,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-2000:]
    for path in ("logreg", "dense"):
        assert any(line.startswith(path) and "validation accuracy" in line for line in done.stdout.splitlines())
