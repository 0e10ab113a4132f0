"""Each row's nearest neighbours by cosine similarity: exact up to a size, approximate past it.

- Up to :data:`EXACT_UP_TO` rows, exact: scikit-learn's ``NearestNeighbors``,
  brute force, whose cost grows with rows squared (30,000 rows of 1280
  features: about 17 s on two cores).
- Past it, an inverted file, as faiss's ``IndexIVFFlat``: mini-batch k-means
  (fitted on at most :data:`FIT_ROWS` rows) cuts the unit vectors into cells
  of about :data:`CELL_ROWS` rows, and each row is compared with the rows of
  the :data:`PROBES` cells whose centres are nearest its own cell's centre.
  The cost grows with rows x PROBES x CELL_ROWS, linearly. Its recall is
  measured in BENCHMARKS.md.
"""

from __future__ import annotations

import numpy as np

EXACT_UP_TO = 20_000
CELL_ROWS = 256
PROBES = 8
FIT_ROWS = 20_000
QUERY_BLOCK = 1024  # rows compared at a time: bounds memory at QUERY_BLOCK x candidates floats


def method(rows: int) -> dict:
    """How the neighbours of ``rows`` rows are searched, for the audit's record."""
    if rows <= EXACT_UP_TO:
        return {"method": "exact", "rows": rows}
    return {"method": "approximate", "rows": rows, "exact_up_to": EXACT_UP_TO,
            "cells": max(1, rows // CELL_ROWS), "probes": PROBES}


def note(rows: int) -> str:
    """The sentence for the leaderboard when the audit of ``rows`` images searches approximately."""
    if method(rows)["method"] == "exact":
        return ""
    return (f"The data audit's neighbour search (near copies, outliers) over {rows:,} images is "
            f"approximate past {EXACT_UP_TO:,}: an inverted file of k-means cells, each image "
            f"compared with its {PROBES} nearest cells.")


def neighbours(x: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest other rows of each row of unit vectors ``x``, nearest first, and their
    cosine similarities, as two (rows, k) arrays (k is cut to rows - 1)."""
    k = min(k, len(x) - 1)
    if k < 1:
        return np.zeros((len(x), 0), np.int64), np.zeros((len(x), 0), np.float32)
    if method(len(x))["method"] == "exact":
        from sklearn.neighbors import NearestNeighbors

        distance, index = NearestNeighbors(n_neighbors=k + 1, metric="cosine",
                                           algorithm="brute").fit(x).kneighbors(x)
        return _without_self(index, 1.0 - distance, k)
    return _inverted_file(x, k, seed)


def _without_self(index: np.ndarray, similarity: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Drop each row from its own list (it is first, unless an exact copy came first)."""
    rows = np.arange(len(index))[:, None]
    keep = index != rows
    keep[keep.sum(axis=1) > k, -1] = False  # itself was not listed: drop the farthest instead
    return index[keep].reshape(len(index), k), similarity[keep].reshape(len(index), k)


def _inverted_file(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(seed)
    cells = max(1, len(x) // CELL_ROWS)
    sample = x if len(x) <= FIT_ROWS else x[np.sort(rng.choice(len(x), FIT_ROWS, replace=False))]
    kmeans = MiniBatchKMeans(cells, n_init=1, random_state=seed).fit(sample)
    cell = kmeans.predict(x)
    probes = NearestNeighbors(n_neighbors=min(PROBES, cells)).fit(kmeans.cluster_centers_).kneighbors(
        kmeans.cluster_centers_, return_distance=False)
    order = np.argsort(cell, kind="stable")
    starts = np.searchsorted(cell[order], np.arange(cells + 1))
    members = [order[starts[c]:starts[c + 1]] for c in range(cells)]
    index = np.zeros((len(x), k), np.int64)
    similarity = np.full((len(x), k), -1.0, np.float32)
    for c in range(cells):
        if not len(members[c]):
            continue
        candidates = np.concatenate([members[c], *(members[j] for j in probes[c] if j != c)])
        for start in range(0, len(members[c]), QUERY_BLOCK):
            query = members[c][start:start + QUERY_BLOCK]
            s = x[query] @ x[candidates].T
            s[np.arange(len(query)), start + np.arange(len(query))] = -np.inf  # itself
            kk = min(k, len(candidates) - 1)
            top = np.argpartition(-s, kk - 1, axis=1)[:, :kk] if kk else np.zeros((len(query), 0), int)
            top_s = np.take_along_axis(s, top, axis=1)
            ranked = np.argsort(-top_s, axis=1, kind="stable")
            index[query, :kk] = candidates[np.take_along_axis(top, ranked, axis=1)]
            similarity[query, :kk] = np.take_along_axis(top_s, ranked, axis=1)
            index[query, kk:] = query[:, None]  # too few candidates: itself, at similarity -1
    return index, similarity
