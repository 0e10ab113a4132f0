"""The benchmarks that need neither the real weights nor minutes run to their figures on small
generated data (some had called the pipeline's functions with arguments they no longer take,
or written files it no longer accepts, and nothing noticed)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_dataset

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def figures(script: str, *args: str) -> str:
    """What ``script`` prints, run with ``args``; it must exit cleanly and name its CPU."""
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True,
                          text=True, timeout=400, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "CPU: " in done.stdout  # every figure names the CPU it was measured on
    return done.stdout


@pytest.mark.parametrize("script, prints", [
    ("bench_decode.py", ["the header probe alone", "median ratios per round: our reader / plain"]),
    ("bench_decoders.py", ["TensorFlow, one thread (ms per image): decode", "simplejpeg"]),
])
def test_a_decoding_benchmark_runs_to_its_figures(tmp_path, script, prints):
    data = make_dataset(tmp_path / "photos", per_class=4)
    damaged = data / "train" / "cats" / "cats0.jpg"
    damaged.write_bytes(damaged.read_bytes()[:100])  # TensorFlow's decoder fails on it
    out = figures(script, "--data", str(data), "--size", "16", "--rounds", "1")
    for line in prints:
        assert line in out
    assert f"left out {damaged}: " in out  # named, and measured without it


def test_the_stage_2_threads_benchmark_runs_to_its_figures(feature_cache):
    out = figures("bench_threads.py", str(feature_cache))
    for line in ("logreg, 5 C values", "hist_gbdt fit", "four scikit-learn selections"):
        assert line in out


def test_the_out_of_core_benchmark_runs_to_its_figures(tmp_path):
    out = figures("bench_outofcore.py", "--rows", "3000", "--dim", "32", "--budget-mb", "64",
                  "--work", str(tmp_path))
    for path in ("logreg", "dense"):
        assert any(line.startswith(path) and "validation accuracy" in line for line in out.splitlines())


def test_the_defaults_benchmark_runs_to_its_figures(feature_cache):
    out = figures("bench_defaults.py", "--features", str(feature_cache), "--synthetic", "300,24",
                  "--rounds", "1")
    for name in ("logreg", "dense", "linear_svm", "knn", "hist_gbdt"):
        assert sum(f". {name} " in line and "validation accuracy" in line for line in out.splitlines()) == 2
    assert out.count('"label_issue_f1"') == 2


def test_the_int8_benchmark_runs_to_its_figures(tmp_path):
    data = make_dataset(tmp_path / "photos", per_class=20)
    out = figures("bench_int8.py", "--data", str(data), "--weights", "none", "--image-size", "32",
                  "--rounds", "1", "--forward-images", "40")
    assert "amx_int8" in out and "OpenVINO's CPU capabilities:" in out
    assert "int8 / f32 extraction" in out and "logistic regression validation accuracy f32" in out
    out = figures("bench_int8.py", "--data", str(data), "--forward-only", "mobilenet", "--forward-images", "40")
    assert "mobilenet @224: Keras " in out and "int8 / f32" in out


def test_the_compare_growth_benchmark_runs_to_its_figures(tmp_path):
    out = figures("bench_compare_growth.py", "--rows", "300,600", "--dims", "16", "--work", str(tmp_path))
    for rows in (300, 600):
        line = next(l for l in out.splitlines() if l.startswith(f"{rows} rows x 16: "))
        for part in ("logreg", "dense", "linear_svm", "knn", "neighbours", "label issues", "whole command"):
            assert f"{part} " in line
        assert "peak" in line and line.endswith("audit search exact")
    assert "slope 300 -> 600 rows x 16: dense" in out
