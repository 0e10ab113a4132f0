"""Stage 2: fair selection, the run folder, trusted models, and bad input."""

import json

import h5py
import numpy as np
import pytest
from conftest import blobs, write_feature_cache
from sklearn.linear_model import LogisticRegression

from pipeline import CompareConfig, compare
from pipeline.runs import scores
from pipeline.features import SplitData
from pipeline.compare.fitting import _workers, select
from pipeline.heads.registry import CLASSIFIERS
from pipeline.errors import CacheError, ConfigError, RunError
from pipeline.runs import load_model

SKLEARN = ("logreg", "linear_svm", "knn", "hist_gbdt")
DENSE = {"dense": {"epochs": [10], "units": [8, 32]}}


def _config(tmp_path, name="run", **kwargs):
    kwargs.setdefault("classifiers", SKLEARN)
    return CompareConfig(out=str(tmp_path / "runs" / name), n_jobs=2, **kwargs)


def test_compare_writes_a_readable_run_folder(tmp_path, feature_cache):
    config = _config(tmp_path, classifiers=(*SKLEARN, "dense"), params=DENSE)
    result = compare(feature_cache, config)
    run = result.run_dir
    tied = [r for r in result.leaderboard if r["tied_with_best"]]
    assert result.leaderboard[0] in tied and all(r["p_vs_best"] >= 0.05 for r in tied)
    assert result.has_test and result.best == min(tied, key=lambda r: r["validation"]["log_loss"])["classifier"]
    assert [r["classifier"] for r in result.leaderboard] != [] and len(result.leaderboard) == 5
    scores = [r["validation"]["accuracy"] for r in result.leaderboard]
    assert scores == sorted(scores, reverse=True)
    for row in result.leaderboard:
        assert row["validation"]["accuracy"] >= 0.9 and row["test"]["accuracy"] >= 0.9
        assert 0.9 <= row["test"]["roc_auc"] <= 1.0 and row["test"]["log_loss"] >= 0
    by_name = {r["classifier"]: r for r in result.leaderboard}
    assert set(by_name["logreg"]["params"]) == {"C"}
    assert by_name["dense"]["params"]["units"] in (8, 32)
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.json", "per_class.csv",
                 "search.csv", "config.json", "dense_history.json", "manifest.json",
                 "plots/comparison.png", "plots/dense_history.png",
                 *(f"plots/confusion_{n}.png" for n in by_name)):
        assert (run / name).is_file(), name
    assert (run / "plots/comparison.png").read_bytes()[:4] == b"\x89PNG"
    assert f" | {result.best} (recommended) | " in (run / "leaderboard.md").read_text()
    for name in ("report.html", "insights.json", "plots/reliability.png", "plots/feature_map.png"):
        assert (run / name).is_file(), name
    assert all(0 <= r["validation"]["ece"] <= 1 for r in result.leaderboard)
    assert len((run / "search.csv").read_text().splitlines()) == 1 + 5 + 4 + 3 + 2 + 2
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["classes"] == ["cats", "dogs"] and manifest["seed"] == 0
    assert manifest["cache"]["key_hash"] and "scikit-learn" in manifest["library_versions"]
    assert set(manifest["models"]) == set(by_name)
    X, _ = blobs(20, seed=3)
    for name in by_name:
        model = load_model(run, name)
        assert model.predict_proba(X).shape == (40, 2)


def test_a_changed_model_file_is_refused(tmp_path, feature_cache):
    run = compare(feature_cache, _config(tmp_path, classifiers=("logreg",))).run_dir
    with open(run / "models" / "logreg.joblib", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(RunError, match=r"does not match the checksum in .*manifest\.json.*will not be loaded"):
        load_model(run, "logreg")
    with pytest.raises(RunError, match=r"has no model 'knn'; it has logreg"):
        load_model(run, "knn")


def test_the_test_split_never_influences_selection(tmp_path, feature_cache):
    """Flipping every test label changes test figures only, never a choice."""
    classifiers = (*SKLEARN, "dense")
    honest = compare(feature_cache, _config(tmp_path, "a", classifiers=classifiers, params=DENSE))
    with h5py.File(feature_cache, "r+") as h5:
        h5["test/labels"][...] = 1 - h5["test/labels"][()]
    flipped = compare(feature_cache, _config(tmp_path, "b", classifiers=classifiers, params=DENSE))
    a = {r["classifier"]: r for r in honest.leaderboard}
    b = {r["classifier"]: r for r in flipped.leaderboard}
    for name in classifiers:
        assert a[name]["params"] == b[name]["params"], name
        assert a[name]["validation"] == b[name]["validation"], name
        assert b[name]["test"]["accuracy"] == pytest.approx(1 - a[name]["test"]["accuracy"])


def test_without_a_test_split_the_report_shows_validation_only(tmp_path):
    cache = write_feature_cache(tmp_path / "f.h5", {"train": blobs(30), "validation": blobs(15, seed=2)})
    result = compare(cache, _config(tmp_path, classifiers=("logreg", "knn")))
    assert not result.has_test and all(r["test"] is None for r in result.leaderboard)
    table = (result.run_dir / "leaderboard.md").read_text()
    assert "The cache has no test split: validation figures only." in table
    assert "test acc" not in table


def test_refit_on_train_and_validation_keeps_the_chosen_settings(tmp_path, feature_cache):
    result = compare(feature_cache, _config(tmp_path, classifiers=("logreg", "dense"),
                                            params={"dense": {"epochs": [40]}},
                                            refit="train+validation", class_weight="balanced"))
    dense = load_model(result.run_dir, "dense")
    history = json.loads((result.run_dir / "dense_history.json").read_text())
    assert "val_loss" not in history  # refitted without validation data ...
    assert 1 <= len(history["loss"]) <= 40  # ... for the epochs chosen on it
    logreg = load_model(result.run_dir, "logreg")
    assert logreg.get_params()["clf__class_weight"] == "balanced"
    assert dense.classes_.tolist() == [0, 1]


def test_an_earlier_run_is_kept_unless_overwrite_is_asked(tmp_path, feature_cache):
    config = _config(tmp_path, classifiers=("knn",))
    run = compare(feature_cache, config).run_dir
    before = (run / "manifest.json").read_text()
    with pytest.raises(ConfigError, match=r"already holds a run\. Fix: pass another `out`, "
                                          r"or `overwrite` to replace it"):
        compare(feature_cache, config)
    assert (run / "manifest.json").read_text() == before
    again = compare(feature_cache, _config(tmp_path, classifiers=("logreg",), overwrite=True))
    assert json.loads((again.run_dir / "manifest.json").read_text())["models"].keys() == {"logreg"}
    assert [p.name for p in run.parent.iterdir()] == ["run"]  # no staging folder left


def test_a_partial_cache_says_how_to_resume(tmp_path):
    from pipeline.features.store import FeatureStore

    store = FeatureStore.create(tmp_path / "store" / "m-224-avg-abc", {"spec": 1})
    store.write_segment(["0" * 32], np.zeros((1, 4), "float32"), {}, view="0123456789abcdef" + "0" * 48)
    with pytest.raises(CacheError, match=r"m-224-avg-0123456789abcdef\.h5 does not exist, but the feature "
                                         r"store holds rows its extraction computed: it was interrupted.*"
                                         r"run the same `python run_pipeline\.py extract \.\.\.` command again"):
        compare(tmp_path / "m-224-avg-0123456789abcdef.h5", _config(tmp_path))


def test_a_file_that_is_not_a_feature_cache_is_refused(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5["x"] = np.zeros(3)
    with pytest.raises(CacheError, match=r"not a feature cache written by this tool"):
        compare(tmp_path / "other.h5", _config(tmp_path))


def test_nan_features_are_refused_with_the_rows_named(tmp_path):
    X, y = blobs(10)
    X[3, 0] = np.nan
    cache = write_feature_cache(tmp_path / "f.h5", {"train": (X, y), "validation": blobs(5, seed=2)})
    with pytest.raises(ConfigError, match=r"1 of 20 train feature rows contain NaN or inf \(e\.g\. train/cats/3\.jpg\)"
                                          r".*Fix: extract again with `--dtype float32`"):
        compare(cache, _config(tmp_path))


@pytest.mark.parametrize("split", ["train", "validation"])
def test_a_split_with_a_single_class_is_refused(tmp_path, split):
    one = (blobs(10)[0][:10], np.zeros(10, np.int32))
    splits = {"train": blobs(10), "validation": blobs(5, seed=2), split: one}
    cache = write_feature_cache(tmp_path / "f.h5", splits)
    with pytest.raises(ConfigError, match=rf"the {split} split has a single class \(cats\).*"
                                          r"Fix: add images of the other classes \(dogs\)"):
        compare(cache, _config(tmp_path))


def test_settings_are_checked_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match=r"`params` sets dense, which `classifiers` does not include"):
        CompareConfig(classifiers=("logreg",), params={"dense": {"units": [8]}})
    with pytest.raises(ConfigError, match=r"`scoring` must be one of accuracy, .*Got 'auc'"):
        CompareConfig(scoring="auc")
    with pytest.raises(ConfigError, match=r"Classifier 'knn' has no parameter 'C'"):
        compare(tmp_path / "missing.h5", _config(tmp_path, classifiers=("knn",), params={"knn": {"C": [1]}}))


class _CountingLogReg(LogisticRegression):
    fits = 0

    def fit(self, X, y, **kwargs):
        type(self).fits += 1
        return super().fit(X, y, **kwargs)


def test_each_candidate_is_fitted_once_and_the_best_is_kept():
    train, validation = (SplitData(*blobs(30, seed=s), []) for s in (1, 2))
    _CountingLogReg.fits = 0
    selected = select(CLASSIFIERS["logreg"], _CountingLogReg(), {"C": [1e-4, 1.0, 10.0]}, train,
                      validation, scoring="accuracy")
    assert _CountingLogReg.fits == 3  # the chosen one is not fitted again
    assert [c["params"] for c in selected.candidates] == ["C=0.0001", "C=1.0", "C=10.0"]
    best = max(selected.candidates, key=lambda c: c["validation_accuracy"])
    assert scores.format_params(selected.params) == best["params"]
    refit = LogisticRegression(C=selected.params["C"]).fit(train.features, train.labels)
    np.testing.assert_allclose(selected.model.coef_, refit.coef_, rtol=1e-6)


@pytest.mark.parametrize("cores, n_jobs, keras, expected", [
    (2, -1, False, (1, None)),   # two cores: no worker process is started
    (2, -1, True, (1, 1)),       # ... and one core is left to the Keras head
    (8, -1, False, (4, 2)),      # two cores per worker
    (8, -1, True, (3, 2)),
    (2, 2, False, (2, 1)),       # asked for: two workers of one thread
])
def test_worker_processes_get_two_cores_each(monkeypatch, cores, n_jobs, keras, expected):
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    assert _workers(CompareConfig(n_jobs=n_jobs), 5, keras) == expected
    assert _workers(CompareConfig(n_jobs=n_jobs), 1, keras)[0] == 1


def test_cross_validation_selects_on_folds_and_reports_mean_and_sd(tmp_path, feature_cache):
    result = compare(feature_cache, _config(tmp_path, classifiers=("logreg", "knn"), cv=3))
    assert {r["classifier"] for r in result.leaderboard} == {"logreg", "knn"}
    for row in result.leaderboard:
        cv = row["validation"]["cv"]
        assert cv["folds"] == 3 and 0.9 <= cv["mean"] <= 1 and 0 <= cv["sd"] < 0.1
        assert row["validation"]["n"] == 80 + 40, "out of fold: every train and validation image once"
        assert row["test"]["n"] == 40 and row["test"]["accuracy"] >= 0.9
    search = (result.run_dir / "search.csv").read_text()
    assert "cv_accuracy_mean" in search and "cv_accuracy_sd" in search
    assert "Selected by 3-fold cross-validation" in result.markdown
    with pytest.raises(ConfigError, match=r"`cv` must be 0 \(select on validation\) or at least 2"):
        CompareConfig(cv=1)
    with pytest.raises(ConfigError, match=r"`--cv 61` needs at least 61 images of every class in "
                                          r"train and validation; the smallest class has 60"):
        compare(feature_cache, _config(tmp_path, name="too-many", classifiers=("logreg",), cv=61))


def test_calibration_is_fitted_on_validation_and_its_effect_reported(tmp_path, feature_cache):
    result = compare(feature_cache, _config(tmp_path, classifiers=("logreg", "linear_svm"),
                                            calibrate="isotonic"))
    for row in result.leaderboard:
        effect = row["calibration"]
        assert effect["method"] == "isotonic" and effect["measured_on"] == "test"
        assert 0 <= effect["ece_after"] <= 1 and 0 <= effect["ece_before"] <= 1
        assert row["test"]["ece"] == effect["ece_after"], "the test columns are the calibrated model's"
    model = load_model(result.run_dir, "linear_svm")
    assert type(model).__name__ == "CalibratedClassifierCV"
    with pytest.raises(ConfigError, match=r"`calibrate` fits its map on the validation split"):
        CompareConfig(calibrate="sigmoid", refit="train+validation")


def test_knn_on_fewer_rows_than_its_grid_s_neighbours_keeps_the_values_that_fit(tmp_path):
    from conftest import blobs, write_feature_cache

    cache = write_feature_cache(tmp_path / "small.h5", {"train": blobs(6, seed=1),
                                                        "validation": blobs(4, seed=2)})
    result = compare(cache, CompareConfig(classifiers=("knn",), out=str(tmp_path / "run")))
    assert result.leaderboard[0]["params"] == {"n_neighbors": 5}  # 15 and 31 exceed 12 rows
    tiny = write_feature_cache(tmp_path / "tiny.h5", {"train": blobs(2, seed=1), "validation": blobs(2, seed=2)})
    result = compare(tiny, CompareConfig(classifiers=("knn",), out=str(tmp_path / "run2")))
    assert result.leaderboard[0]["params"] == {"n_neighbors": 4}
