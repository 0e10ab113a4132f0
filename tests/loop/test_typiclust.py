"""TypiClust: the most typical image of each uncovered cluster, at a bounded cost, with a readable score."""

import numpy as np
import pytest

from pipeline.loop import typiclust as tc


def _blobs(sizes=(40, 40, 40), spread=0.05, seed=0):
    """Tight blobs far apart; the first row of each blob sits exactly at its centre."""
    rng = np.random.default_rng(seed)
    centres = np.eye(len(sizes), 8) * 10
    rows, owner = [], []
    for b, size in enumerate(sizes):
        blob = centres[b] + spread * rng.standard_normal((size, 8))
        blob[0] = centres[b]
        rows.append(blob)
        owner += [b] * size
    return np.vstack(rows).astype(np.float32), np.array(owner)


def test_it_asks_for_the_centre_of_each_blob_no_label_covers_most_typical_first():
    x, owner = _blobs()
    labelled = np.zeros(len(x), bool)
    labelled[5] = True  # blob 0 holds a label
    rows, scores = tc.typiclust(x, labelled, 2, seed=0)
    assert sorted(owner[rows]) == [1, 2]
    assert set(rows) == {40, 80}  # each blob's centre row
    assert (np.diff(scores) <= 0).all() and ((scores > 0.9) & (scores <= 1.0)).all()


def test_when_every_cluster_holds_a_label_it_still_gives_distinct_unlabelled_rows():
    x, _ = _blobs()
    labelled = np.zeros(len(x), bool)
    labelled[[1, 41, 81]] = True
    rows, scores = tc.typiclust(x, labelled, 9, seed=1)
    assert len(set(rows.tolist())) == 9 and not labelled[rows].any()
    assert ((scores > 0) & (scores <= 1)).all()
    assert tc.typiclust(x, labelled, 9, seed=1)[0].tolist() == rows.tolist()  # seeded


def test_the_score_is_a_percentile_among_the_unlabelled_rows():
    x, _ = _blobs(sizes=(60, 6), spread=0.5)
    rows, scores = tc.typiclust(x, np.zeros(len(x), bool), 66, seed=0)
    assert sorted(rows.tolist()) == list(range(66))
    assert scores.max() == 1.0 and scores.min() == pytest.approx(1 / 66)


def test_clusters_kmeans_rows_and_neighbour_rows_are_bounded(monkeypatch):
    import sklearn.cluster
    import sklearn.neighbors

    monkeypatch.setattr(tc, "MAX_CLUSTERS", 12)
    monkeypatch.setattr(tc, "FIT_ROWS", 200)
    monkeypatch.setattr(tc, "NEIGHBOUR_ROWS", 30)
    seen = {"clusters": [], "fit_rows": [], "reference_rows": []}
    real_mb, real_nn = sklearn.cluster.MiniBatchKMeans, sklearn.neighbors.NearestNeighbors

    class SpyKMeans(real_mb):
        def fit(self, x, *args, **kwargs):
            seen["clusters"].append(self.n_clusters)
            seen["fit_rows"].append(len(x))
            return super().fit(x, *args, **kwargs)

    class SpyNeighbours(real_nn):
        def fit(self, x, *args, **kwargs):
            seen["reference_rows"].append(len(x))
            return super().fit(x, *args, **kwargs)

    monkeypatch.setattr(sklearn.cluster, "KMeans", SpyKMeans)
    monkeypatch.setattr(sklearn.cluster, "MiniBatchKMeans", SpyKMeans)
    monkeypatch.setattr(sklearn.neighbors, "NearestNeighbors", SpyNeighbours)
    x = np.random.default_rng(0).standard_normal((1000, 16)).astype(np.float32)
    labelled = np.zeros(1000, bool)
    labelled[:100] = True
    rows, scores = tc.typiclust(x, labelled, 10, seed=0)
    assert seen["clusters"] == [12] and seen["fit_rows"] == [200]
    assert max(seen["reference_rows"]) == 30 == seen["reference_rows"][-1]  # each pick's cluster, then all 1000
    assert len(set(rows.tolist())) == 10 and not labelled[rows].any()
