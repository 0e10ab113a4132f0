"""The audit's neighbour search: exact up to a size, an inverted file past it, finding the same."""

import numpy as np
import pytest

from pipeline.runs import audit, neighbours
from pipeline.runs.audit import unit_vectors


def _clouds(n=3000, dim=32, copies=30, seed=0):
    """Ten clouds of distinct images, and ``copies`` near copies planted among them."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (10, dim))
    x = centres[rng.integers(0, 10, n)] + rng.normal(0, 1, (n, dim))
    planted = rng.choice(n, 2 * copies, replace=False)
    x[planted[:copies]] = x[planted[copies:]] + rng.normal(0, 0.02, (copies, dim))
    return unit_vectors(x), {tuple(sorted(p)) for p in zip(planted[:copies], planted[copies:])}


def _near_pairs(index, similarity):
    return {tuple(sorted((i, int(j)))) for i in range(len(index))
            for j, s in zip(index[i], similarity[i]) if s >= audit.NEAR_DUPLICATE}


def test_past_the_bound_the_inverted_file_finds_what_the_exact_search_finds(monkeypatch):
    x, planted = _clouds()
    exact_index, exact_similarity = neighbours.neighbours(x, 5)
    assert neighbours.method(len(x)) == {"method": "exact", "rows": 3000}
    monkeypatch.setattr(neighbours, "EXACT_UP_TO", 1000)
    monkeypatch.setattr(neighbours, "CELL_ROWS", 100)
    assert neighbours.method(len(x))["method"] == "approximate"
    index, similarity = neighbours.neighbours(x, 5)
    assert index.shape == similarity.shape == (3000, 5)
    assert (index != np.arange(3000)[:, None]).all()  # never itself
    assert (np.diff(similarity, axis=1) <= 1e-6).all()  # nearest first
    recall = np.mean([len(set(a) & set(e)) / 5 for a, e in zip(index, exact_index)])
    assert recall > 0.9
    assert planted <= _near_pairs(index, similarity) == _near_pairs(exact_index, exact_similarity)
    np.testing.assert_allclose(similarity, np.einsum("id,ikd->ik", x, x[index]), atol=1e-5)


def test_an_exact_copy_listed_before_the_row_itself_is_kept_and_itself_dropped():
    x = unit_vectors(np.random.default_rng(1).normal(0, 1, (20, 8)))
    x[7] = x[3]
    index, similarity = neighbours.neighbours(x, 3)
    assert (index != np.arange(20)[:, None]).all()
    assert index[3, 0] == 7 and index[7, 0] == 3 and similarity[3, 0] == pytest.approx(1.0)


def test_the_leaderboard_says_when_the_audit_searched_approximately(monkeypatch, tmp_path):
    from conftest import blobs, write_feature_cache
    from pipeline import CompareConfig, compare

    monkeypatch.setattr(neighbours, "EXACT_UP_TO", 50)
    cache = write_feature_cache(tmp_path / "features.h5", {
        "train": blobs(40, seed=1), "validation": blobs(20, seed=2), "test": blobs(20, seed=3)})
    result = compare(cache, CompareConfig(classifiers=("logreg",), out=str(tmp_path / "run")))
    text = (result.run_dir / "leaderboard.md").read_text()
    assert ("The data audit's neighbour search (near copies, outliers) over 120 images is "
            "approximate past 50: an inverted file of k-means cells") in text
    assert result.insights["neighbour_search"]["method"] == "approximate"
