"""k-NN past its bound: fitted on a seeded sample of each class, and the leaderboard says so."""

import numpy as np
from sklearn.neighbors import KNeighborsClassifier

from conftest import blobs, write_feature_cache
from pipeline import CompareConfig, compare
from pipeline.heads.sampled import AtMostRows, note


def test_it_keeps_at_most_rows_in_proportion_to_each_class_and_says_how_many():
    y = np.repeat([0, 1, 2], [600, 300, 100])
    x = np.random.default_rng(0).normal(0, 1, (1000, 4)) + y[:, None]
    model = AtMostRows(KNeighborsClassifier(), rows=100, random_state=3).fit(x, y)
    kept = model.estimator_._fit_X
    assert model.sampled_ == (100, 1000) and len(kept) == 100
    assert np.bincount(model.estimator_._y).tolist() == [60, 30, 10]
    assert model.predict_proba(x).shape == (1000, 3) and list(model.classes_) == [0, 1, 2]
    again = AtMostRows(KNeighborsClassifier(), rows=100, random_state=3).fit(x, y).estimator_._fit_X
    assert np.array_equal(kept, again)  # seeded
    whole = AtMostRows(KNeighborsClassifier(), rows=5000).fit(x, y)
    assert whole.sampled_ == (1000, 1000) and note({"knn": whole}) == ""


def test_the_leaderboard_says_knn_was_fitted_on_a_sample(tmp_path):
    cache = write_feature_cache(tmp_path / "features.h5", {
        "train": blobs(40, seed=1), "validation": blobs(20, seed=2), "test": blobs(20, seed=3)})
    result = compare(cache, CompareConfig(classifiers=("knn",), params={"knn": {"rows": [30]}},
                                          out=str(tmp_path / "run")))
    assert ("knn was fitted on a seeded sample of 30 of its 80 training rows (each class in "
            "proportion)") in (result.run_dir / "leaderboard.md").read_text()
    assert result.leaderboard[0]["validation"]["accuracy"] > 0.9
