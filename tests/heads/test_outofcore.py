"""Stage 2 out of core: features streamed from the HDF5 file when they exceed the memory budget."""

import json

import numpy as np
import pytest

from pipeline import CompareConfig, compare
from pipeline.errors import ConfigError
from pipeline.heads.outofcore import FeatureRows, block_rows, in_memory_bytes

from conftest import blobs, write_feature_cache

TINY_BUDGET = 0.05  # MB: below the 0.88 MB these features need, so they stream


@pytest.fixture(scope="module")
def overlapping(tmp_path_factory):
    """Three classes that overlap a little: accuracy around 0.95, not a ceiling of 1.0."""
    def split(n, seed):
        return blobs(n, n_classes=3, dim=64, seed=seed, separation=0.35)

    path = tmp_path_factory.mktemp("ooc") / "features.h5"
    return write_feature_cache(path, {"train": split(300, 1), "validation": split(100, 2),
                                      "test": split(100, 3)}, classes=("cats", "dogs", "owls"))


def test_out_of_core_accuracy_matches_in_memory(overlapping, tmp_path):
    config = dict(classifiers=("logreg", "linear_svm", "dense", "knn"),
                  params={"dense": {"epochs": [30]}})
    memory = compare(overlapping, CompareConfig(**config, out=str(tmp_path / "memory")))
    streamed = compare(overlapping, CompareConfig(**config, memory_budget_mb=TINY_BUDGET,
                                                  out=str(tmp_path / "streamed")))
    ours = {r["classifier"]: r for r in streamed.leaderboard}
    theirs = {r["classifier"]: r for r in memory.leaderboard}
    assert set(ours) == {"logreg", "dense"}, "k-NN and the calibrated SVM are left out"
    assert {r["path"] for r in theirs.values()} == {"in memory"}
    assert ours["logreg"]["path"] == "out of core: SGD partial_fit"
    assert ours["dense"]["path"] == "out of core: tf.data from HDF5"
    for name in ours:
        for split in ("validation", "test"):
            assert theirs[name][split]["accuracy"] > 0.8
            assert abs(ours[name][split]["accuracy"] - theirs[name][split]["accuracy"]) <= 0.03, name
    table = (streamed.run_dir / "leaderboard.md").read_text()
    assert "Out of core: 0.879 MB of train and validation features exceed the memory budget of " \
           "0.05 MB" in table and "Left out (they cannot train out of core): linear_svm, knn." in table
    searched = (streamed.run_dir / "search.csv").read_text()
    assert searched.count("logreg,C=") == 5  # the same C grid as in memory
    saved = json.loads((streamed.run_dir / "leaderboard.json").read_text())
    assert saved[0]["path"].startswith("out of core")


def test_blocks_and_batches_cover_every_row_once(overlapping):
    rows = FeatureRows(str(overlapping), "train", block_rows=64)
    assert len(rows) == 900 and rows.shape == (900, 64)
    plain = np.concatenate([X for X, _ in rows.blocks()])
    shuffled = [np.concatenate(parts) for parts in zip(*rows.blocks(seed=1))]
    assert not np.array_equal(shuffled[0], plain)
    order = np.lexsort(shuffled[0].T)
    np.testing.assert_array_equal(shuffled[0][order], plain[np.lexsort(plain.T)])
    batches = list(rows.dataset(50, seed=3))
    assert sum(len(y) for _, y in batches) == 900 and max(len(y) for _, y in batches) == 50
    assert in_memory_bytes({"train": 900, "validation": 300}, (64,)) == 1200 * 64 * 12
    assert block_rows((1280,), 2**30) == 5242  # four float32 copies of a block: a tenth of 1 GB


def test_out_of_core_messages(overlapping, tmp_path):
    with pytest.raises(ConfigError) as err:
        compare(overlapping, CompareConfig(classifiers=("knn", "hist_gbdt"),
                                           memory_budget_mb=TINY_BUDGET, out=str(tmp_path / "a")))
    assert "none of knn, hist_gbdt can train out of core. Fix: add logreg or dense" in \
        str(err.value)
    with pytest.raises(ConfigError) as err:
        compare(overlapping, CompareConfig(classifiers=("logreg",), refit="train+validation",
                                           memory_budget_mb=TINY_BUDGET, out=str(tmp_path / "b")))
    assert "out of core, models are fitted on train only. Fix: use `--refit train`" in str(err.value)
    with pytest.raises(ConfigError, match="`memory_budget_mb` must be 0"):
        CompareConfig(memory_budget_mb=-1)
