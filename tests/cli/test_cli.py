"""The command line: JSON output, and user errors without tracebacks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main

from conftest import make_dataset

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--weights", "none", "--image-size", "32", "--no-progress"]


def test_extract_then_inspect_json(tmp_path, tiny_data, capsys):
    args = ["extract", "--data", str(tiny_data), "--cache-dir", str(tmp_path / "c"), *TINY, "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["hit"] is False and first["splits"] == {"train": 12, "validation": 12}
    assert first["feature_shape"] == [256] and first["quarantined"] == []
    assert first["images_per_second"] > 0 and first["seconds"] > 0
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["hit"] is True and second["cache"] == first["cache"]
    assert main(["inspect", first["cache"], "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["splits"] == first["splits"] and summary["key"]["image_size"] == 32


HEAVY = """
import sys
from pipeline.cli import main
try:
    status = main(sys.argv[1:])
except SystemExit as exc:  # --help
    status = exc.code
print(status, sorted({m.split(".")[0] for m in sys.modules} & {"tensorflow", "keras", "openvino", "sklearn"}))
"""


def test_help_and_a_cache_hit_import_no_tensorflow_openvino_or_scikit_learn(tmp_path, tiny_data, capsys):
    args = ["extract", "--data", str(tiny_data), "--cache-dir", str(tmp_path / "c"), *TINY]
    assert main(args) == 0  # computed here; found whole below, in a fresh process
    assert "computed 24 images" in capsys.readouterr().out
    said = {}
    for argv in (args, ["--help"], ["compare", "--help"], ["export", "--help"]):
        said[argv[0]] = done = subprocess.run([sys.executable, "-c", HEAVY, *argv], capture_output=True, text=True, timeout=60,
                              cwd=ROOT)
        assert done.stdout.strip().splitlines()[-1] == "0 []", (argv, done.stdout, done.stderr)
    assert "INFO pipeline.features.extract: cache hit: " in said["extract"].stderr


def test_extract_and_inspect_text(tmp_path, tiny_data, capsys):
    assert main(["extract", "--data", str(tiny_data), "--cache-dir", str(tmp_path / "c"), *TINY]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "12 rows" in out
    cache = out.split()[0]
    assert main(["inspect", cache]) == 0
    out = capsys.readouterr().out
    assert "backbone       mobilenet" in out and "feature shape  (256,)" in out


def test_backbones_listing(capsys):
    assert main(["backbones", "--json"]) == 0
    table = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert table["vgg16"]["features_none"] == [7, 7, 512]
    assert table["inception_v3"]["default_size"] == 299
    assert main(["backbones", "vgg*"]) == 0
    rows, hint = capsys.readouterr().out.split("\n\n")
    assert [l.split()[0] for l in rows.splitlines()[1:]] == ["vgg16", "vgg19"]
    assert hint.startswith("KerasHub presets (DINOv2, DINOv3, SigLIP, ViT, ...): `backbones 'hub:*'`")


@pytest.mark.parametrize("args, message", [
    (["extract", "--data", "{data}", "--backbone", "vgg61"], "`--backbone` must be one of mobilenet,"),
    (["extract", "--data", "{tmp}/nothing"], "does not exist or is not a folder"),
    (["inspect", "{tmp}/missing.h5"], "does not exist"),
])
def test_user_errors_exit_2_with_one_message(tmp_path, tiny_data, capsys, args, message):
    args = [a.format(data=tiny_data, tmp=tmp_path) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_no_traceback_from_a_real_process(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "run_pipeline.py"), "extract", "--data", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "error: `--data` must be a folder of class folders" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_compare_and_classifiers_commands(tmp_path, feature_cache, capsys):
    out = tmp_path / "run"
    args = ["compare", "--features", str(feature_cache), "--classifiers", "logreg,knn",
            "--param", "logreg.C=0.1,1", "--param", "knn.n_neighbors=3", "--out", str(out)]
    assert main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["run"] == str(out) and result["has_test"] is True
    rows = {r["classifier"]: r for r in result["leaderboard"]}
    assert rows["logreg"]["params"]["C"] in (0.1, 1) and rows["knn"]["params"] == {}
    assert main([*args, "--overwrite"]) == 0
    text = capsys.readouterr().out
    assert "| 1 | " in text and f"run folder: {out}" in text
    assert main(["classifiers", "--json"]) == 0
    registry = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert registry["logreg"]["searched"] == {"C": [0.001, 0.01, 0.1, 1.0, 10.0]}
    assert registry["dense"]["saved_as"] == ".keras"


def test_compare_user_errors_exit_2_without_traceback(tmp_path, feature_cache):
    run = subprocess.run(
        [sys.executable, str(ROOT / "run_pipeline.py"), "compare", "--features", str(feature_cache),
         "--classifiers", "logreg,forest", "--out", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "error: `--classifiers` must be one of logreg, dense, linear_svm, knn, hist_gbdt. Got 'forest'." in run.stderr
    assert "Got 'forest'" in run.stderr and "Traceback" not in run.stderr


def test_a_command_says_nothing_of_tensorflow_absl_or_cuda_and_draws_no_bar_into_a_pipe(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=2)
    script = ROOT / "run_pipeline.py"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell
    done = subprocess.run([sys.executable, str(script), "extract", "--data", str(data), "--weights", "none",
                           "--image-size", "32", "--cache-dir", str(tmp_path / "cache")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    for noise in ("I0000", "W0000", "E0000", "cuInit", "cudart", "absl::InitializeLog"):
        assert noise not in done.stderr, done.stderr
    assert "INFO pipeline.features.extract: wrote " in done.stderr  # our own lines pass
    assert "computed 8 images" in done.stdout
    assert "img/s" not in done.stderr and "\r" not in done.stderr  # no bar: stderr is not a terminal
