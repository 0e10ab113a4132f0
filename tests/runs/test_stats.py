"""Intervals and paired tests: they contain what they bound, shrink with data, and separate
models only when the images say so."""

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score

from pipeline.runs import scores, stats


def _predictions(n: int, accuracy: float, n_classes: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    wrong = rng.random(n) > accuracy
    return y, np.where(wrong, (y + 1 + rng.integers(0, n_classes - 1, n)) % n_classes, y)


@pytest.mark.parametrize("n_classes", [2, 5])
def test_intervals_contain_the_estimate_and_shrink_with_more_data(n_classes):
    widths = []
    for n in (150, 1500, 15000):
        y, p = _predictions(n, 0.85, n_classes, seed=n)
        proba = np.eye(n_classes)[p] * 0.9 + 0.1 / n_classes
        metrics, _ = scores.score(y, proba, range(n_classes), n_classes)
        for name in scores.INTERVALS:
            low, high = metrics[f"{name}_ci"]
            assert low <= metrics[name] <= high, (name, n)
        widths.append([metrics[f"{name}_ci"][1] - metrics[f"{name}_ci"][0] for name in scores.INTERVALS])
    widths = np.asarray(widths)
    assert (widths[1] < widths[0]).all() and (widths[2] < widths[1]).all()
    assert (widths[2] < 0.35 * widths[0]).all()  # about 1/sqrt(100) of the width at 100x the images


def test_the_bootstrap_matches_resampling_the_images_themselves():
    y, p = _predictions(200, 0.8, 3, seed=1)
    rng = np.random.default_rng(0)
    draws = rng.integers(0, len(y), (1500, len(y)))
    for ours, theirs in ((stats.balanced_accuracy, balanced_accuracy_score),
                         (stats.macro_f1, lambda a, b: f1_score(a, b, labels=[0, 1, 2], average="macro",
                                                                zero_division=0))):
        direct = np.percentile([theirs(y[d], p[d]) for d in draws], [2.5, 97.5])
        np.testing.assert_allclose(stats.bootstrap_ci(y, p, 3, ours), direct, atol=0.025)


def test_metric_formulas_equal_scikit_learns():
    y, p = _predictions(300, 0.7, 4, seed=2)
    k = np.arange(4)
    tp = np.array([((y == c) & (p == c)).sum() for c in k])
    support, predicted = np.bincount(y, minlength=4), np.bincount(p, minlength=4)
    assert stats.balanced_accuracy(tp, support, predicted) == pytest.approx(balanced_accuracy_score(y, p))
    assert stats.macro_f1(tp, support, predicted) == pytest.approx(f1_score(y, p, average="macro"))


def test_a_handful_of_images_is_a_tie_and_hundreds_are_not():
    y = np.zeros(2000, int)
    a = y.copy()
    a[:200] = 1                       # wrong on 200 images
    few = a.copy()
    few[:13] = 0                      # right on 13 images where `a` is wrong,
    few[1000:1007] = 1                # wrong on 7 where it is right: six images apart
    many = a.copy()
    many[:150] = 0                    # right on 150 more
    assert stats.mcnemar(y, few, a) > 0.05
    assert stats.mcnemar(y, many, a) < 1e-6
    rows = [{"classifier": n, "rank": i + 1, "validation": {"log_loss": loss}}
            for i, (n, loss) in enumerate([("many", 0.5), ("few", 0.3), ("a", 0.4)])]
    scores.mark_ties(rows, y, {"many": many, "few": few, "a": a})
    assert [r["tied_with_best"] for r in rows] == [True, False, False]
    assert scores.recommended(rows)["classifier"] == "many"
    rows = [{"classifier": n, "rank": i + 1, "validation": {"log_loss": loss}}
            for i, (n, loss) in enumerate([("few", 0.5), ("a", 0.3)])]
    scores.mark_ties(rows, y, {"few": few, "a": a})
    assert rows[1]["tied_with_best"] and rows[1]["p_vs_best"] > 0.05
    assert scores.recommended(rows)["classifier"] == "a", "among ties, the lowest log loss"


def test_expected_calibration_error_is_zero_when_confidence_is_accuracy():
    rng = np.random.default_rng(3)
    confidence = np.full(10000, 0.8)
    y = (rng.random(10000) > 0.8).astype(int)  # class 0 right 80 % of the time
    proba = np.stack([confidence, 1 - confidence], 1)
    assert stats.expected_calibration_error(y, proba) < 0.01
    assert stats.expected_calibration_error(np.ones(10000, int), proba) == pytest.approx(0.8)
