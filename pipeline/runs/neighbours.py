"""Each row's nearest neighbours by cosine similarity: exact up to a size, approximate past it.

- Up to :data:`EXACT_UP_TO` rows, exact: scikit-learn's ``NearestNeighbors``,
  brute force, whose cost grows with rows squared (30,000 rows of 1280
  features: about 17 s on two cores).
- Past it, an inverted file, as faiss's ``IndexIVFFlat``: mini-batch k-means
  (fitted on at most :data:`FIT_ROWS` rows) cuts the unit vectors into cells
  of about :data:`CELL_ROWS` rows (a cell over :data:`MAX_CELL` is cut
  again), and each row is compared with the rows of the :data:`PROBES` cells
  whose centres are nearest its own cell's centre. The cost grows with rows
  x PROBES x MAX_CELL at most, linearly. Its recall is measured in
  BENCHMARKS.md.
"""

from __future__ import annotations

import numpy as np

EXACT_UP_TO = 20_000
CELL_ROWS = 256
PROBES = 8
FIT_ROWS = 20_000
KMEANS_UP_TO = 50  # clusters; past this, mini-batch k-means
MAX_CELL = 4 * CELL_ROWS  # a larger cell is cut again
SPLITS = 3  # times a large cell may be cut
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
    cell, centres = _cells(x, seed)
    cells = len(centres)
    probes = _probes(centres, min(PROBES, cells))
    order = np.argsort(cell, kind="stable")
    starts = np.searchsorted(cell[order], np.arange(cells + 1))
    members = [order[starts[c]:starts[c + 1]] for c in range(cells)]
    index = np.zeros((len(x), k), np.int64)
    similarity = np.full((len(x), k), -1.0, np.float32)
    for c in range(cells):
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


def _cells(x: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's cell (0..cells-1, none empty) and the cells' unit centres.

    k-means leaves some cells far larger than the others (on spread-out
    features, 70 times the mean): a cell of more than :data:`MAX_CELL` rows
    is cut again by k-means of its own rows, so that no cell costs rows
    squared.
    """
    cell = kmeans(x, max(1, len(x) // CELL_ROWS), seed)
    for _ in range(SPLITS):
        sizes = np.bincount(cell)
        big = np.flatnonzero(sizes > MAX_CELL)
        if not len(big):
            break
        fresh = len(sizes)
        for c in big:
            rows = np.flatnonzero(cell == c)
            part = kmeans(x[rows], -(-len(rows) // CELL_ROWS), seed)
            cell[rows] = np.where(part == 0, c, fresh + part - 1)
            fresh += int(part.max(initial=0))
    _, cell = np.unique(cell, return_inverse=True)
    centres = np.zeros((cell.max() + 1, x.shape[1]))
    np.add.at(centres, cell, x)
    return cell, centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)


def kmeans(x: np.ndarray, clusters: int, seed: int, fit_rows: int = FIT_ROWS) -> np.ndarray:
    """Each row's cluster by k-means fitted on at most ``fit_rows`` seeded rows (every row is then
    assigned to its nearest centre): Lloyd's up to :data:`KMEANS_UP_TO` clusters, mini-batch past."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if clusters <= 1:
        return np.zeros(len(x), np.int64)
    rng = np.random.default_rng(seed)
    sample = x if len(x) <= fit_rows else x[np.sort(rng.choice(len(x), fit_rows, replace=False))]
    model = (KMeans(clusters, n_init=1, random_state=seed) if clusters <= KMEANS_UP_TO
             else MiniBatchKMeans(clusters, n_init=1, random_state=seed))
    return model.fit(sample).predict(x).astype(np.int64)


def _probes(centres: np.ndarray, probes: int) -> np.ndarray:
    """For each cell, the ``probes`` cells with the nearest centres (itself first)."""
    from sklearn.neighbors import NearestNeighbors

    return NearestNeighbors(n_neighbors=probes).fit(centres).kneighbors(centres, return_distance=False)
