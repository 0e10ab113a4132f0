"""TypiClust at a cost that grows linearly with the pool, and a score a person can read.

TypiClust (Hacohen, Dekel and Weinshall, ICML 2022) clusters the labelled and
unlabelled features into (labels + batch) clusters and asks for the most
typical image of each cluster that no label covers yet. An image's typicality
is the inverse of its mean distance to its 20 nearest neighbours in its
cluster. As in the authors' own code: at most 500 clusters, mini-batch k-means past 50, clusters
of fewer than 5 images come last, and once every cluster holds a label, the
clusters with the fewest labels (then the largest) come first.

Two bounds keep a large pool cheap: k-means is fitted on at most
:data:`FIT_ROWS` rows (every row is then assigned to its nearest centre), and
neighbours are searched among at most :data:`NEIGHBOUR_ROWS` rows, and only
in the clusters a pick comes from.

The score of a picked image is its typicality measured the same way in the
whole set (so that it compares across clusters, and an image alone in its
cluster gets one), as a percentile among the unlabelled images: 0.97 means
97 % of them sit in sparser places. The list is ordered by it.
"""

from __future__ import annotations

import numpy as np

from ..runs.neighbours import kmeans

MAX_CLUSTERS = 500
MIN_CLUSTER = 5
NEIGHBOURS = 20
FIT_ROWS = 20_000
NEIGHBOUR_ROWS = 2_000


def typiclust(features: np.ndarray, labelled: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` unlabelled rows to label next, most typical first, and each one's score.

    Args:
        features: (rows, dimensions).
        labelled: a boolean per row; the others are the candidates.
    """
    x = np.asarray(features, dtype=np.float32).reshape(len(features), -1)
    labelled = np.asarray(labelled, dtype=bool)
    rng = np.random.default_rng(seed)
    clusters = max(1, min(int(labelled.sum()) + n, MAX_CLUSTERS, len(x)))
    assign = kmeans(x, clusters, seed, FIT_ROWS)
    candidates = ~labelled
    taken = np.bincount(assign[labelled], minlength=clusters).astype(np.int64)
    left = np.bincount(assign[candidates], minlength=clusters)
    remaining, picked, within = candidates.copy(), [], {}
    for _ in range(min(n, int(candidates.sum()))):
        open_ = left > 0
        if (open_ & (left >= MIN_CLUSTER)).any():
            open_ &= left >= MIN_CLUSTER
        ids = np.flatnonzero(open_)
        c = ids[np.lexsort((ids, -left[ids], taken[ids]))[0]]  # fewest labels, then largest
        if c not in within:
            members = np.flatnonzero(assign == c)
            within[c] = (members, _typicality(x[members], np.arange(len(members)), rng))
        members, typicality = within[c]
        open_rows = remaining[members]
        row = members[open_rows][np.argmax(typicality[open_rows])]
        picked.append(row)
        remaining[row] = False
        taken[c] += 1
        left[c] -= 1
    rows = np.asarray(picked, dtype=np.int64)
    density = _typicality(x, np.flatnonzero(candidates), rng)
    pool = np.sort(density[candidates])
    scores = np.searchsorted(pool, density[rows], side="right") / max(len(pool), 1)
    order = np.argsort(-scores, kind="stable")
    return rows[order], scores[order]


def _typicality(x: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """1 / mean distance to the nearest neighbours in ``x``, for ``rows`` (0 for the other rows).

    Up to :data:`NEIGHBOURS` neighbours, and at most half of ``x`` (as the authors do in a small
    cluster), searched among at most :data:`NEIGHBOUR_ROWS` rows of ``x``.
    """
    from sklearn.neighbors import NearestNeighbors

    typicality = np.zeros(len(x))
    if len(x) < 2:
        return typicality
    reference = np.arange(len(x)) if len(x) <= NEIGHBOUR_ROWS else np.sort(
        rng.choice(len(x), NEIGHBOUR_ROWS, replace=False))
    k = max(1, min(NEIGHBOURS, len(reference) // 2))
    distance, _ = NearestNeighbors(n_neighbors=k + 1).fit(x[reference]).kneighbors(x[rows])
    itself = np.isin(rows, reference)  # its own row is its nearest: leave it out
    mean = np.where(itself, distance[:, 1:].mean(axis=1), distance[:, :-1].mean(axis=1))
    typicality[rows] = 1.0 / (mean + 1e-5)
    return typicality
