"""How sure each number is: intervals, paired tests, calibration error.

Accuracy's interval is Wilson's (``scipy.stats.binomtest``); balanced
accuracy's and macro-F1's are seeded percentile bootstraps over the images
(drawn through the confusion matrix, see :func:`bootstrap_ci`). Two models are compared on the same images with
McNemar's exact test: a binomial test on the images exactly one of them gets
right. The expected calibration error bins the top probability in 15 equal
bins, as Guo et al. (2017) do.
"""

from __future__ import annotations

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 2000
ECE_BINS = 15
TIE_LEVEL = 0.05  # a model the test cannot separate from the best at this level is tied with it


def wilson(correct: int, total: int) -> list[float]:
    """The 95 % Wilson interval of ``correct / total``."""
    from scipy.stats import binomtest

    if total == 0:
        return [0.0, 1.0]
    ci = binomtest(int(correct), int(total)).proportion_ci(CONFIDENCE, method="wilson")
    return [round(float(ci.low), 4), round(float(ci.high), 4)]


def balanced_accuracy(tp: np.ndarray, support: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Mean recall over the classes present (scikit-learn's definition), from per-class counts."""
    present = support > 0
    recall = np.where(present, tp / np.maximum(support, 1), 0.0)
    return recall.sum(-1) / np.maximum(present.sum(-1), 1)


def macro_f1(tp: np.ndarray, support: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Unweighted mean F1 over all classes, 0 where undefined (scikit-learn's), from per-class counts."""
    denominator = support + predicted
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0).mean(-1)


def bootstrap_ci(y: np.ndarray, p: np.ndarray, n_classes: int, metric, seed: int = 0) -> list[float]:
    """The 95 % percentile-bootstrap interval of ``metric`` over resampled images.

    Both metrics depend on the confusion matrix alone, and resampling n
    images with replacement draws its cells' counts from the multinomial of
    their shares; so the cells are drawn directly, at a cost that does not
    grow with the number of images (only the non-empty cells are drawn).
    """
    from scipy import sparse

    y, p = np.asarray(y, dtype=np.int64), np.asarray(p, dtype=np.int64)
    n = len(y)
    if n < 2:
        return [0.0, 1.0]
    cells = np.bincount(y * n_classes + p, minlength=n_classes * n_classes)
    used = np.flatnonzero(cells)
    truth, guess = used // n_classes, used % n_classes

    def one_hot(columns, keep):
        return sparse.csr_matrix((keep.astype(float), (np.arange(len(used)), columns)),
                                 shape=(len(used), n_classes))

    to_truth = one_hot(truth, np.ones(len(used), bool))
    to_guess = one_hot(guess, np.ones(len(used), bool))
    to_hits = one_hot(truth, truth == guess)
    rng = np.random.default_rng(seed)
    batch = max(1, 20_000_000 // (len(used) + n_classes))
    values = []
    for start in range(0, RESAMPLES, batch):
        draws = rng.multinomial(n, cells[used] / n, size=min(batch, RESAMPLES - start)).astype(float)
        values.append(metric((to_hits.T @ draws.T).T, (to_truth.T @ draws.T).T, (to_guess.T @ draws.T).T))
    low, high = np.percentile(np.concatenate(values), [50 * (1 - CONFIDENCE), 50 * (1 + CONFIDENCE)])
    return [round(float(low), 4), round(float(high), 4)]


def reliability(y: np.ndarray, proba: np.ndarray) -> list[dict]:
    """Per non-empty bin of the top probability (15 equal-width bins): mean confidence,
    accuracy and count (the reliability diagram's points)."""
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y
    bins = np.minimum((confidence * ECE_BINS).astype(int), ECE_BINS - 1)
    return [{"confidence": float(confidence[bins == b].mean()), "accuracy": float(correct[bins == b].mean()),
             "count": int((bins == b).sum())} for b in np.unique(bins)]


def calibration_error(points: list[dict]) -> float:
    """The expected calibration error of reliability points: their gaps, weighted by count."""
    total = sum(p["count"] for p in points)
    gap = sum(p["count"] * abs(p["accuracy"] - p["confidence"]) for p in points)
    return round(float(gap / max(total, 1)), 4)


def expected_calibration_error(y: np.ndarray, proba: np.ndarray) -> float:
    """Weighted mean gap between confidence and accuracy over 15 equal-width bins."""
    return calibration_error(reliability(y, proba))


def mcnemar(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Exact McNemar p-value: are predictions ``a`` and ``b`` equally often right on these images?"""
    from scipy.stats import binomtest

    right_a, right_b = a == y, b == y
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def mean_interval(values: np.ndarray) -> np.ndarray:
    """The mean of each column of ``values`` (rows: repeats) and its 95 % t interval, as (3, n)."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    mean = values.mean(axis=0)
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, len(values) - 1) * values.std(axis=0, ddof=1) \
        / np.sqrt(len(values))
    return np.stack([mean, mean - half, mean + half])


def paired_t(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per column, ``a - b`` over paired repeats (rows): its mean, 95 % interval and two-sided
    t-test p-value, as (4, n). A column where every difference is 0 has p 1."""
    from scipy import stats

    differences = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    p = np.ones(differences.shape[1])
    varied = differences.std(axis=0) > 0
    if varied.any():
        p[varied] = stats.ttest_1samp(differences[:, varied], 0.0).pvalue
    return np.vstack([mean_interval(differences), p])
