"""Fitting stage 2's models: each hyper-parameter candidate on train, scored on validation,
and the scikit-learn fits overlapped with the Keras head's training.

scikit-learn models fit in the calling thread, or in parallel worker
processes on machines with cores enough for them, while the Keras head trains
alongside in a background thread; their threads are limited so the cores are
not oversubscribed.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable

import numpy as np

from .._blas import one_blas_thread
from ..features.view import SplitData
from ..heads.registry import chosen_in_fit
from ..runs import scores
from .selection import Selected, short

if TYPE_CHECKING:
    from ..config import CompareConfig
    from ..heads.registry import Classifier


def select(c: Classifier, estimator, grid: dict, train: SplitData, validation: SplitData, *,
           scoring: str, search_jobs: int = 1) -> Selected:
    """Fit each candidate of ``grid`` on train, score it on validation, keep the best.

    Each candidate is scikit-learn's ``cross_validate`` over a
    ``PredefinedSplit`` whose only fold is (fit on train, score on
    validation), and the best candidate's fitted model is the selected model,
    so nothing is fitted twice. Ties go to the first candidate, as in
    ``GridSearchCV``. A model that stops early is given the validation split to stop on.
    """
    from joblib import Parallel, delayed
    from sklearn.base import clone
    from sklearn.model_selection import ParameterGrid, PredefinedSplit, cross_validate

    fit_params = {"validation_data": (validation.features, validation.labels)} if c.stops_early else {}
    start = time.perf_counter()
    with one_blas_thread():
        if not grid:
            model = clone(estimator).fit(train.features, train.labels, **fit_params)
            return Selected(c.name, model, chosen_in_fit(c, model), [], 0.0, time.perf_counter() - start)
        X = np.concatenate([train.features, validation.features])
        y = np.concatenate([train.labels, validation.labels])
        fold = PredefinedSplit(np.r_[np.full(len(train.labels), -1), np.zeros(len(validation.labels), int)])
        settings = _within(c, list(ParameterGrid(grid)), len(train.labels))
        results = Parallel(n_jobs=search_jobs)(
            delayed(cross_validate)(clone(estimator).set_params(**p), X, y, cv=fold, scoring=scoring,
                                    params=fit_params, return_estimator=True, error_score="raise")
            for p in settings)
    candidate_scores = [float(r["test_score"][0]) for r in results]
    best = int(np.argmax(candidate_scores))
    model, fit_seconds = results[best]["estimator"][0], float(results[best]["fit_time"][0])
    candidates = [{"classifier": c.name, "params": scores.format_params(short(p)),
                   f"validation_{scoring}": round(score, 4)}
                  for p, score in zip(settings, candidate_scores)]
    return Selected(c.name, model, {**short(settings[best]), **chosen_in_fit(c, model)}, candidates,
                    time.perf_counter() - start - fit_seconds, fit_seconds)


def _within(c: Classifier, settings: list[dict], rows: int) -> list[dict]:
    """The candidates whose ``at_most_rows`` parameters fit ``rows`` training rows (none fits:
    the first, with those parameters set to ``rows``)."""
    bounded = [k for k in settings[0] if k.rsplit("__", 1)[-1] in c.at_most_rows]
    kept = [p for p in settings if all(p[k] <= rows for k in bounded)]
    return kept or [{**settings[0], **{k: rows for k in bounded}}]


def refit(c: Classifier, selected: Selected, train: SplitData, validation: SplitData) -> Selected:
    """The chosen settings (with those the first fit chose itself), fitted on train + validation."""
    from sklearn.base import clone

    model = clone(selected.model).set_params(**chosen_in_fit(c, selected.model))
    start = time.perf_counter()
    with one_blas_thread():
        model.fit(np.concatenate([train.features, validation.features]),
                  np.concatenate([train.labels, validation.labels]))
    return Selected(selected.name, model, selected.params, selected.candidates,
                    selected.search_seconds, time.perf_counter() - start, selected.predict_seconds)


def _workers(config: CompareConfig, tasks: int, keras_busy: bool) -> tuple[int, int | None]:
    """Worker processes for the scikit-learn jobs, and threads each may use.

    By default every worker gets at least two cores (the gradient-boosted
    trees use them all through OpenMP), and a core is left to the Keras head
    when it trains alongside. One worker means none is started: on two cores,
    starting workers costs more than it saves (see BENCHMARKS.md).
    """
    cores = os.cpu_count() or 1
    spare = max(1, cores - 1) if keras_busy else cores
    if config.n_jobs > 0:
        workers = min(config.n_jobs, tasks)
    else:
        workers = max(1, min(spare // 2, tasks))
    threads = max(1, spare // workers)
    return workers, (threads if keras_busy or workers > 1 else None)


def overlapped(specs: list[Classifier], job: Callable[[Classifier], Selected], config: CompareConfig,
               cluster=None) -> dict[str, Selected]:
    """``job(c)`` for every classifier: those that train ``alongside`` in a background thread,
    the others here meanwhile, the costliest first.

    The Keras head spends seconds importing TensorFlow and training; the
    scikit-learn models fit meanwhile, in loky worker processes when the
    machine has cores enough (see :func:`_workers`), each limited in threads
    so workers plus TensorFlow do not oversubscribe the cores.
    With a Dask ``cluster``, the jobs run one after another here instead and
    each grid search spreads its candidates over the cluster's workers
    (joblib's Dask backend).
    """
    from joblib import Parallel, delayed, parallel_config
    from threadpoolctl import threadpool_limits

    background = [c for c in specs if c.alongside]
    here = sorted((c for c in specs if not c.alongside), key=lambda c: -c.cost)

    def pool() -> list[Selected]:
        if not here:
            return []
        if cluster is not None:
            with cluster.as_current(), parallel_config(backend="dask"):
                return [job(c) for c in here]
        workers, threads = _workers(config, len(here), bool(background))
        if workers == 1:  # one after another in this thread
            with threadpool_limits(limits=threads, user_api="openmp"):
                return [job(c) for c in here]
        with parallel_config(backend="loky", inner_max_num_threads=threads):
            return Parallel(n_jobs=workers)(delayed(job)(c) for c in here)

    def alongside() -> list[Selected]:
        if background:
            import keras  # noqa: F401  (up front: a head's fit seconds are its training only)
        return [job(c) for c in background]

    # The scikit-learn jobs keep this thread: OpenMP (the gradient-boosted trees)
    # runs about twice as slowly from a new thread once this one has used it.
    with ThreadPoolExecutor(max_workers=1) as executor:
        done = executor.submit(alongside)
        selected = {s.name: s for s in pool()}
        selected.update({s.name: s for s in done.result()})
    return selected

