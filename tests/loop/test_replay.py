"""replay: the labelling loop replayed on labelled features, paired with random by seed."""

import json

import numpy as np
import pytest
from scipy import stats

from pipeline import ReplayConfig, replay
from pipeline.cli import main
from pipeline.errors import ConfigError
from pipeline.loop.replay import ReplayResult, save

from conftest import blobs, write_feature_cache

SMALL = ReplayConfig(budgets=(4, 8, 16), step=4, seeds=3)


@pytest.fixture
def pool(tmp_path):
    """Three overlapping classes: a head on a few labels is far from perfect."""
    return write_feature_cache(tmp_path / "pool.h5", {
        "train": blobs(40, n_classes=3, separation=0.8, seed=1),
        "validation": blobs(30, n_classes=3, separation=0.8, seed=2)}, classes=("a", "b", "c"))


def test_every_strategy_is_paired_with_random_on_the_same_start_and_seeds(pool):
    result = replay(pool, SMALL, workers=1)
    assert list(result.accuracy) == ["random", "margin", "typiclust", "typiclust_margin", "coreset"]
    for name, accuracy in result.accuracy.items():
        assert accuracy.shape == (3, 3) and ((0 <= accuracy) & (accuracy <= 1)).all()
    # margin and coreset start from random's draw: the same first-budget score, seed by seed.
    for name in ("margin", "coreset"):
        assert np.array_equal(result.accuracy[name][:, 0], result.accuracy["random"][:, 0])
        assert result.against_random(name)[:, 0].tolist() == [0.0, 0.0, 0.0, 1.0]
    # The paired difference and p-value are the paired t-test's, by seed.
    a, b = result.accuracy["typiclust"], result.accuracy["random"]
    difference, low, high, p = result.against_random("typiclust")
    assert np.allclose(difference, (a - b).mean(axis=0))
    varied = (a - b).std(axis=0) > 0
    assert np.allclose(p[varied], stats.ttest_rel(a[:, varied], b[:, varied]).pvalue)
    assert (low <= difference).all() and (difference <= high).all()
    assert replay(pool, SMALL, workers=2).accuracy["typiclust"].tolist() == a.tolist()  # seeded


def test_the_json_has_the_documented_shape(pool, capsys):
    assert main(["replay", "--features", str(pool), "--budgets", "4,8,16", "--step", "4",
                 "--seeds", "3", "--strategies", "margin", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["budgets"] == [4, 8, 16] and set(out["strategies"]) == {"random", "margin"}
    for curve in out["strategies"].values():
        assert len(curve["mean"]) == 3 and len(curve["ci"]) == 3
        assert all(lo <= m <= hi for m, (lo, hi) in zip(curve["mean"], curve["ci"]))
    assert out["recommended"] in out["strategies"]
    assert out["strategies"]["margin"]["vs_random"]["p"][0] == 1.0


def _result(**curves) -> ReplayResult:
    return ReplayResult([10, 20, 40], "logreg", {k: np.asarray(v, float) for k, v in curves.items()},
                        0.95, 100, 50)


def test_the_recommendation_is_the_best_mean_never_significantly_worse_than_random():
    random = [[0.70, 0.80, 0.90], [0.72, 0.81, 0.91], [0.71, 0.79, 0.89]]
    # "greedy" has the best mean but is worse than random at 40 labels on every seed.
    greedy = [[0.90, 0.95, 0.85], [0.92, 0.96, 0.86], [0.91, 0.94, 0.84]]
    steady = [[0.75, 0.85, 0.92], [0.76, 0.84, 0.93], [0.74, 0.86, 0.91]]
    result = _result(random=random, greedy=greedy, steady=steady)
    assert result.accuracy["greedy"].mean() > result.accuracy["steady"].mean()
    assert result.against_random("greedy")[2, 2] < 0  # its interval is below zero at 40
    assert result.recommended == "steady"
    assert _result(random=random, greedy=greedy).recommended == "random"


def test_labels_saved_are_read_off_the_curves_at_equal_accuracy():
    random = [[0.70, 0.80, 0.90]] * 2
    better = [[0.80, 0.90, 0.95], [0.80, 0.90, 0.95]]
    saved = _result(random=random, better=better).labels_saved("better")
    # random's 0.90 at 40 labels: "better" has it at 20; its 0.80 at 20: at 10.
    assert [s["labels"] for s in saved] == [10.0, 10.0, 20.0]
    assert [s["saved"] for s in saved] == [0.0, 10.0, 20.0]
    worse = _result(random=random, worse=[[0.6, 0.7, 0.8]] * 2).labels_saved("worse")
    assert worse[-1]["labels"] is None and worse[0]["labels"] == pytest.approx(20.0)


@pytest.mark.parametrize("splits, config, message", [
    ({"train": blobs(5, seed=1), "validation": blobs(5, seed=2)}, SMALL,
     "`budgets` goes up to 16 labels, but the training split has 10 images. Fix: pass budgets up to 10."),
    ({"train": (blobs(20)[0], np.zeros(40, np.int32)), "validation": blobs(5, seed=2)}, SMALL,
     "replay needs at least two classes in the training split; "),
    ({"train": blobs(20, seed=1)}, SMALL, "replay scores each head on the validation split, and "),
])
def test_data_replay_cannot_use_is_refused_with_the_fix(tmp_path, splits, config, message):
    path = write_feature_cache(tmp_path / "f.h5", splits)
    with pytest.raises(ConfigError, match="Fix: ") as caught:
        replay(path, config, workers=1)
    assert message in str(caught.value)


@pytest.mark.parametrize("settings, message", [
    ({"budgets": ("20", "10")}, "`budgets` must be increasing positive integers, like "
                                "10,20,40,80,160. Got '20,10'."),
    ({"budgets": ("ten",)}, "`budgets` must be increasing positive integers"),
    ({"seeds": 1}, "`seeds` must be at least 2: an interval needs repeats. Got 1."),
    ({"strategies": ("margn",)}, "Did you mean 'margin'?"),
])
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(ConfigError) as caught:
        ReplayConfig(**settings)
    assert message in str(caught.value)


def test_a_replay_joins_a_run_folder_or_writes_a_new_one_never_a_user_s(pool, tmp_path):
    result = replay(pool, ReplayConfig(budgets=(4, 8), step=4, seeds=2, strategies=("margin",)),
                    workers=1)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="never replaces or deletes files it did not write"):
        save(result, mine)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    fresh = save(result, tmp_path / "fresh")
    written = json.loads((fresh / "replay.json").read_text())
    assert written["recommended"] == result.recommended
    assert (fresh / "plots" / "replay.png").stat().st_size > 0
    manifest = json.loads((fresh / "manifest.json").read_text())
    assert manifest["stage"] == "replay" and "replay.json" in manifest["files"]
    assert save(result, fresh) == fresh  # its own folder: the replay is replaced
    (fresh / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="also holds files this tool did not write"):
        save(result, fresh)
    assert (fresh / "notes.txt").read_text() == "mine" and (fresh / "replay.json").is_file()


def test_a_replay_added_to_a_run_keeps_the_run(run, pool):
    before = json.loads((run / "manifest.json").read_text())
    result = replay(pool, ReplayConfig(budgets=(4, 8), step=4, seeds=2, strategies=("margin",)),
                    workers=1)
    save(result, run)
    after = json.loads((run / "manifest.json").read_text())
    assert after["stage"] == "compare" and after["models"] == before["models"]
    assert {"replay.json", "replay.md", "plots/replay.png"} <= set(after["files"])
    assert (run / "leaderboard.json").is_file()


def test_an_out_that_cannot_take_the_replay_is_refused_before_it_runs(pool, run, tmp_path, capsys,
                                                                      monkeypatch):
    import pipeline.loop.replay as module

    monkeypatch.setattr(module, "replay", lambda *a, **k: pytest.fail("replayed before refusing"))
    (run / "notes.txt").write_text("mine")
    assert main(["replay", "--features", str(pool), "--out", str(run)]) == 2
    assert ("also holds files this tool did not write (notes.txt), so nothing is added to it. "
            "Fix: move them out of it, or pass another `--out`.") in capsys.readouterr().err
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "a.txt").write_text("mine")
    assert main(["replay", "--features", str(pool), "--out", str(mine)]) == 2
    assert "is a folder of other files" in capsys.readouterr().err
