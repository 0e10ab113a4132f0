"""drift: a batch test with an exact permutation p-value, the shift in predicted classes, novelty."""

import json
import shutil

import numpy as np
import pytest
from scipy import stats

from pipeline import DriftConfig, drift
from pipeline.cli import main
from pipeline.errors import ConfigError, RunError
from pipeline.loop.drift import mmd_test, novelty, record

from conftest import COLOURS, write_image

FAST = DriftConfig(permutations=200)


def test_p_values_are_uniform_over_batches_drawn_like_the_reference():
    """100 batches of 40 from the reference's distribution: the p-values must not run low."""
    rng = np.random.default_rng(0)
    p = np.array([mmd_test(rng.normal(size=(300, 32)), rng.normal(size=(40, 32)), 200, seed=i)[1]
                  for i in range(100)])
    assert stats.kstest(p, "uniform").pvalue > 0.01
    assert (p < 0.05).mean() <= 0.12 and (p < 0.01).mean() <= 0.05
    assert p.min() >= 1 / 201  # a permutation p-value is never 0


def test_a_shifted_batch_is_found_and_its_shifted_images_are_the_most_novel():
    # Features near a low-dimensional subspace, as a backbone's are; ten images leave it.
    rng = np.random.default_rng(1)
    basis = rng.normal(size=(4, 32))

    def drawn(n):
        return 5.0 + rng.normal(size=(n, 4)) @ basis + 0.1 * rng.normal(size=(n, 32))

    reference = drawn(300)
    away = rng.normal(size=32)
    away = 12.0 * away / np.linalg.norm(away)
    assert mmd_test(reference, drawn(40) + away, 200)[1] < 0.01
    batch = np.vstack([drawn(30), drawn(10) + away])
    score, nearest, beyond = novelty(reference, batch)
    assert set(np.argsort(-score)[:10].tolist()) == set(range(30, 40))
    assert (score[30:] > beyond).all() and np.median(score[:30]) < beyond
    assert nearest.shape == (40,) and nearest.max() < 300


def _batch(folder, colours, n=10, seed=100):
    for i in range(n):
        colour = colours[i % len(colours)]
        write_image(folder / f"new{i}.jpg", colour, seed=seed + i)
    return folder


def test_a_batch_like_the_training_images_is_not_drifted_and_another_is(run, tmp_path):
    same = _batch(tmp_path / "same", [COLOURS["cats"], COLOURS["dogs"]])
    result = drift(run, same, FAST)
    assert not result.drifted and result.p_value >= 0.01 and result.images == 10
    assert set(result.predicted_share) == {"cats", "dogs"}
    assert sum(result.predicted_share.values()) == pytest.approx(1.0)
    other = _batch(tmp_path / "other", [(0, 255, 0), (0, 0, 255), (255, 0, 255)], n=12)
    shifted = drift(run, other, FAST)
    assert shifted.drifted and shifted.p_value < 0.01
    assert shifted.novel[0]["score"] >= shifted.novel[-1]["score"]
    assert all(n["path"].startswith(str(other)) for n in shifted.novel)


def test_drift_is_recorded_in_the_run_and_its_report_once(run, tmp_path, capsys):
    same = _batch(tmp_path / "same", [COLOURS["cats"], COLOURS["dogs"]])
    assert main(["drift", "--run", str(run), "--batch", str(same), "--permutations", "200",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"p_value", "drifted", "novel", "predicted_share"} <= set(out)
    assert all({"path", "score"} <= set(n) for n in out["novel"])
    recorded = json.loads((run / "drift.json").read_text())
    assert recorded["p_value"] == out["p_value"] and recorded["batch"] == str(same)
    assert "drift.json" in json.loads((run / "manifest.json").read_text())["files"]
    record(drift(run, same, FAST), run, str(same), 200)
    assert (run / "report.html").read_text().count('<section id="drift">') == 1


def test_no_record_leaves_the_run_as_it_was(run, tmp_path, capsys):
    before = sorted(p.name for p in run.rglob("*"))
    same = _batch(tmp_path / "same", [COLOURS["cats"]])
    assert main(["drift", "--run", str(run), "--batch", str(same), "--permutations", "100",
                 "--no-record"]) == 0
    assert "MMD p = " in capsys.readouterr().out
    assert sorted(p.name for p in run.rglob("*")) == before


def test_a_batch_without_images_is_refused_with_the_fix(run, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images")
    with pytest.raises(ConfigError, match=r"`batch` .*empty has no images \(\.jpg, .*Fix: pass "
                                          "the folder that holds the new photos."):
        drift(run, empty, FAST)
    with pytest.raises(ConfigError, match="`batch` must be a folder of images. .*Fix: "):
        drift(run, empty / "notes.txt", FAST)


def test_a_run_whose_features_are_gone_says_how_to_get_them_back(run, tmp_path):
    copy = tmp_path / "moved"
    shutil.copytree(run, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["cache"]["path"] = str(tmp_path / "gone.h5")
    (copy / "manifest.json").write_text(json.dumps(manifest))
    same = _batch(tmp_path / "same", [COLOURS["cats"]], n=3)
    with pytest.raises(RunError, match=r"The features of run .* are gone: .*gone.h5 does not exist. "
                                       r"Fix: run `python run_pipeline.py extract` again"):
        drift(copy, same, FAST)


def test_a_run_holding_a_file_of_the_user_s_is_refused_before_any_work(run, tmp_path, capsys):
    (run / "notes.txt").write_text("mine")
    same = _batch(tmp_path / "same", [COLOURS["cats"]], n=3)
    assert main(["drift", "--run", str(run), "--batch", str(same), "--permutations", "100"]) == 2
    err = capsys.readouterr().err
    assert "also holds files this tool did not write (notes.txt), so nothing is added to it. Fix: " \
           "move them out of it, or pass `--no-record`." in err
    assert (run / "notes.txt").read_text() == "mine" and not (run / "drift.json").exists()
    assert main(["drift", "--run", str(run), "--batch", str(same), "--permutations", "100",
                 "--no-record"]) == 0
