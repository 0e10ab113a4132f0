"""Stage 2: select every classifier on validation, evaluate the test split once.

Each hyper-parameter candidate is fitted on train and scored on validation
(scikit-learn's ``cross_validate`` over a ``PredefinedSplit`` whose only fold
is exactly that); the best candidate's model is kept, not fitted again.
The test split is read from the cache only after every classifier is chosen
and fitted, and each final model is evaluated on it exactly once.
scikit-learn models fit in the calling thread, or in parallel worker
processes on machines with cores enough for them, while the Keras head trains
alongside in a background thread; their threads are limited so the cores are
not oversubscribed. scikit-learn and joblib are imported on first use, so
importing the package stays cheap for stage 1.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ._files import key_hash, library_versions
from .config import CompareConfig
from .console import quiet
from .errors import ConfigError, RunError, write_problem
from .features.view import FeatureCache, SplitData
from .heads import outofcore
from .heads.proba import full_proba
from .runs import RunWriter, audit, check_writable, default_run_dir, plots, report, scores, stats
from .words import counted, leakage

if TYPE_CHECKING:
    from .heads.registry import Classifier

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompareResult:
    """What a stage-2 run produced.

    Attributes:
        run_dir: the run folder.
        leaderboard: one dict per classifier, best on validation first.
        markdown: the leaderboard as a Markdown table.
        has_test: whether the cache had a test split.
        seconds: wall time of the whole comparison.
        insights: the data audit (``insights.json``); None when features were streamed.
    """

    run_dir: Path
    leaderboard: list[dict]
    markdown: str
    has_test: bool
    seconds: float
    insights: dict | None = None

    @property
    def report(self) -> Path:
        return self.run_dir / "report.html"

    @property
    def leakage(self) -> int:
        """Near-duplicate pairs whose images sit in different splits."""
        return self.insights["cross_split_pairs"] if self.insights else 0

    @property
    def best(self) -> str:
        """The recommended model: among those tied with the top one, the lowest log loss."""
        return scores.recommended(self.leaderboard)["classifier"]

    def to_dict(self) -> dict:
        return {"run": str(self.run_dir), "best": self.best, "has_test": self.has_test,
                "seconds": round(self.seconds, 3), "leaderboard": self.leaderboard,
                "report": str(self.report) if self.insights is not None else None,
                "cross_split_pairs": self.leakage,
                "suspected_label_errors": (self.insights or {}).get("suspected_label_errors", {}).get("found", 0)}


@dataclass
class _Selected:
    name: str
    model: object
    params: dict
    candidates: list[dict]
    search_seconds: float
    fit_seconds: float
    predict_seconds: float = 0.0


def _check_split(cache: FeatureCache, data: SplitData, split: str) -> None:
    bad = ~np.isfinite(data.features.reshape(len(data.features), -1)).all(axis=1)
    if bad.any():
        examples = ", ".join(np.asarray(data.paths)[bad][:3])
        raise ConfigError(
            f"{cache.path}: {int(bad.sum())} of {len(bad)} {split} feature rows contain NaN "
            f"or inf (e.g. {examples}). Classifiers cannot use them. Fix: extract again with "
            "`--dtype float32`, and check that the backbone weights are the intended ones."
        )
    _check_classes(cache, data.labels, split)


def _check_classes(cache: FeatureCache, labels: np.ndarray, split: str) -> None:
    present = np.unique(labels)
    if split != "test" and len(present) < 2:
        only = cache.classes[int(present[0])] if len(present) else "none"
        raise ConfigError(
            f"{cache.path}: the {split} split has a single class ({only}), so classifiers "
            f"cannot be {'trained' if split == 'train' else 'selected'} on it. Fix: add images "
            f"of the other classes ({', '.join(c for c in cache.classes if c != only)}) to "
            f"{split}, or extract with different split fractions."
        )


def _short(params: dict) -> dict:
    return {k.rsplit("__", 1)[-1]: v for k, v in params.items()}


def _select(name: str, estimator, grid: dict, train: SplitData, validation: SplitData,
            scoring: str, fit_params: dict, search_jobs: int = 1) -> _Selected:
    """Fit each candidate of ``grid`` on train, score it on validation, keep the best.

    Each candidate is scikit-learn's ``cross_validate`` over a
    ``PredefinedSplit`` whose only fold is (fit on train, score on
    validation), and the best candidate's fitted model is the selected model,
    so nothing is fitted twice. Ties go to the first candidate, as in
    ``GridSearchCV``.
    """
    from joblib import Parallel, delayed
    from sklearn.base import clone
    from sklearn.model_selection import ParameterGrid, PredefinedSplit, cross_validate

    start = time.perf_counter()
    with _one_blas_thread():
        if not grid:
            model = clone(estimator).fit(train.features, train.labels, **fit_params)
            chosen, candidates, search_seconds = {}, [], 0.0
            fit_seconds = time.perf_counter() - start
        else:
            X = np.concatenate([train.features, validation.features])
            y = np.concatenate([train.labels, validation.labels])
            fold = PredefinedSplit(np.r_[np.full(len(train.labels), -1),
                                         np.zeros(len(validation.labels), int)])
            settings = list(ParameterGrid(grid))
            results = Parallel(n_jobs=search_jobs)(
                delayed(cross_validate)(clone(estimator).set_params(**p), X, y, cv=fold,
                                        scoring=scoring, params=fit_params,
                                        return_estimator=True, error_score="raise")
                for p in settings)
            candidate_scores = [float(r["test_score"][0]) for r in results]
            best = int(np.argmax(candidate_scores))
            model, fit_seconds = results[best]["estimator"][0], float(results[best]["fit_time"][0])
            chosen = _short(settings[best])
            candidates = [{"classifier": name, "params": scores.format_params(_short(p)),
                           f"validation_{scoring}": round(score, 4)}
                          for p, score in zip(settings, candidate_scores)]
            search_seconds = time.perf_counter() - start - fit_seconds
    if hasattr(model, "refit_params"):  # e.g. the epochs early stopping chose
        chosen.update(model.refit_params())
    return _Selected(name, model, chosen, candidates, search_seconds, fit_seconds)


def _one_blas_thread():
    """Limit BLAS to one thread: on the small matrices of a feature cache, a
    multi-threaded BLAS makes lbfgs about ten times slower (see BENCHMARKS.md).
    OpenMP, which the gradient-boosted trees use well, is left alone."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _refit(selected: _Selected, train: SplitData, validation: SplitData) -> _Selected:
    """The chosen settings, fitted on train + validation."""
    from sklearn.base import clone

    model = clone(selected.model)
    if hasattr(selected.model, "refit_params"):
        model.set_params(**selected.model.refit_params())
    start = time.perf_counter()
    with _one_blas_thread():
        model.fit(np.concatenate([train.features, validation.features]),
                  np.concatenate([train.labels, validation.labels]))
    return _Selected(selected.name, model, selected.params, selected.candidates,
                     selected.search_seconds, time.perf_counter() - start)


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


def _overlapped(jobs: list, config: CompareConfig, keras_busy: bool,
                alongside, cluster=None) -> dict[str, _Selected]:
    """Run scikit-learn jobs here while ``alongside()`` runs in a background thread.

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

    def pool() -> list[_Selected]:
        if not jobs:
            return []
        if cluster is not None:
            with cluster.as_current(), parallel_config(backend="dask"):
                return [f(*a) for f, a in jobs]
        workers, threads = _workers(config, len(jobs), keras_busy)
        if workers == 1:  # one after another in this thread
            with threadpool_limits(limits=threads, user_api="openmp"):
                return [f(*a) for f, a in jobs]
        with parallel_config(backend="loky", inner_max_num_threads=threads):
            return Parallel(n_jobs=workers)(delayed(f)(*a) for f, a in jobs)

    # The scikit-learn jobs keep this thread: OpenMP (the gradient-boosted trees)
    # runs about twice as slowly from a new thread once this one has used it.
    with ThreadPoolExecutor(max_workers=1) as executor:
        keras_done = executor.submit(alongside)
        done = {s.name: s for s in pool()}
        done.update(keras_done.result())
    return done


@quiet
def compare(features: str | os.PathLike, config: CompareConfig | None = None,
            cluster=None) -> CompareResult:
    """Stage 2: compare classifiers on a feature cache and write a run folder.

    Args:
        features: a finished feature cache file (from ``extract_features``).
        config: stage-2 settings.
        cluster: a ``distributed.Client`` (see :mod:`pipeline.features.cluster`) to
            run the scikit-learn searches on; None runs them on this machine.

    Returns:
        The leaderboard and the run folder it was written to.

    Raises:
        PipelineError: bad settings, or a cache that cannot be used.
    """
    from .heads.registry import configure, get_classifier

    config = config or CompareConfig()
    started = time.perf_counter()
    specs: list[Classifier] = [get_classifier(n) for n in config.classifiers]
    configured = {c.name: configure(c, config.seed, config.params.get(c.name, {}),
                                    config.class_weight, config.spatial) for c in specs}
    cache = FeatureCache(features)
    out = Path(config.out) if config.out else default_run_dir(cache.path)
    check_writable(out, config.overwrite)
    for split in ("train", "validation"):
        if split not in cache.splits:
            raise ConfigError(
                f"{cache.path} has no {split} split (it has {', '.join(cache.splits)}); "
                "classifiers are fitted on train and selected on validation. Fix: extract "
                "with `--validation-fraction` above 0."
            )
        if cache.counts[split] == 0:
            unreadable = sum(q["split"] == split for q in cache.quarantined)
            raise ConfigError(
                f"{cache.path} has no {split} rows: all {unreadable} of its {split} images were "
                "quarantined (`inspect` lists them with the reasons). Fix: replace or repair "
                "those images, then extract again.")
    budget = outofcore.budget_bytes(config.memory_budget_mb)
    need = outofcore.in_memory_bytes(cache.counts, cache.feature_shape)
    if need > budget:
        return _compare_out_of_core(cache, config, specs, configured, out, budget, need, started)
    train, validation = cache.load("train"), cache.load("validation")
    for split, data in (("train", train), ("validation", validation)):
        _check_split(cache, data, split)
    log.info("comparing %s on %d train / %d validation rows of %s",
             ", ".join(config.classifiers), len(train.labels), len(validation.labels), cache.path.name)
    if config.cv:
        return _compare_cv(cache, config, specs, configured, train, validation, out, started)

    # Selection, on train and validation only.
    keras_specs = [c for c in specs if c.keras]
    search_jobs = -1 if cluster is not None else 1
    jobs = [(_select, (c.name, *configured[c.name], train, validation, config.scoring, {},
                       search_jobs))
            for c in specs if not c.keras]
    jobs.sort(key=lambda job: job[1][0] != "hist_gbdt")  # the slowest first

    def select_keras() -> dict[str, _Selected]:
        if keras_specs:
            import keras  # noqa: F401  (up front: a head's fit seconds are its training only)
        return {c.name: _select(c.name, *configured[c.name], train, validation, config.scoring,
                                {"validation_data": (validation.features, validation.labels)})
                for c in keras_specs}

    selected = _overlapped(jobs, config, bool(keras_specs), select_keras, cluster)

    n_classes = len(cache.classes)
    rows, predictions, probas = {}, {}, {}
    for name, s in selected.items():
        start = time.perf_counter()
        proba = s.model.predict_proba(validation.features)
        predict_seconds = time.perf_counter() - start
        rows[name], predicted = scores.score(validation.labels, proba, s.model.classes_, n_classes)
        predictions[name] = {"validation": predicted}
        probas[name] = {"validation": full_proba(proba, s.model.classes_, n_classes)}
        log.info("%-10s validation accuracy %.4f  %s", name, rows[name]["accuracy"],
                 scores.format_params(s.params))
        s.predict_seconds = predict_seconds

    if config.refit == "train+validation":
        jobs = [(_refit, (selected[c.name], train, validation)) for c in specs if not c.keras]
        refitted = _overlapped(jobs, config, bool(keras_specs), lambda: {
            c.name: _refit(selected[c.name], train, validation) for c in keras_specs}, cluster)
        for name, s in refitted.items():
            s.predict_seconds = selected[name].predict_seconds
        final = refitted
    else:
        final = selected
    uncalibrated = {}
    if config.calibrate:
        final, uncalibrated = _calibrated(final, specs, config.calibrate, validation)

    test, test_scores = _score_test(cache, final, predictions, probas)
    has_test = test is not None
    leaderboard = scores.rank([_row(s, rows[name], test_scores.get(name), outofcore.PATH_IN_MEMORY)
                               for name, s in final.items()], config.scoring)
    scores.mark_ties(leaderboard, validation.labels, {n: p["validation"] for n, p in predictions.items()})
    for row in leaderboard:
        if row["classifier"] in uncalibrated:
            # Measured on test (the test columns are the calibrated model's already), else on
            # validation, where the map was fitted.
            name = row["classifier"]
            measured = test if has_test else validation
            row["calibration"] = {
                "method": config.calibrate, "fitted_on": "validation",
                "measured_on": "test" if has_test else "validation",
                "ece_before": _ece(uncalibrated[name], measured, n_classes),
                "ece_after": row["test"]["ece"] if has_test else _ece(final[name].model, validation, n_classes)}
    data = {"train": train, "validation": validation, **({"test": test} if has_test else {})}
    return _finish(cache, config, specs, final, leaderboard, predictions, data, probas, out, started)


def _score_test(cache: FeatureCache, final: dict[str, _Selected], predictions: dict,
                probas: dict) -> tuple[SplitData | None, dict]:
    """The test split, read now for the first time, each final model evaluated on it once."""
    if "test" not in cache.splits or cache.counts["test"] == 0:
        return None, {}
    test = cache.load("test")
    _check_split(cache, test, "test")
    n_classes, test_scores = len(cache.classes), {}
    for name, s in final.items():
        proba = s.model.predict_proba(test.features)
        test_scores[name], predictions[name]["test"] = scores.score(
            test.labels, proba, s.model.classes_, n_classes)
        probas[name]["test"] = full_proba(proba, s.model.classes_, n_classes)
    return test, test_scores


def _compare_cv(cache: FeatureCache, config: CompareConfig, specs, configured, train: SplitData,
                validation: SplitData, out: Path, started: float) -> CompareResult:
    """Selection by stratified K-fold cross-validation over train and validation together.

    Each classifier's grid is searched with scikit-learn's ``GridSearchCV``
    on the same folds, and the chosen settings are fitted on every image.
    The leaderboard's "validation" metrics are those of out-of-fold
    predictions (``cross_val_predict`` with the chosen settings on the same
    folds), so every image counts once and models are compared on the same
    images; ``cv`` in each row holds the folds' mean and sd of the score.
    The Keras head trains a fixed number of epochs in each fold (no
    validation split is left to stop early on).
    """
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_predict

    both = SplitData(np.concatenate([train.features, validation.features]),
                     np.concatenate([train.labels, validation.labels]), [*train.paths, *validation.paths])
    smallest = int(np.bincount(both.labels).min())
    if smallest < config.cv:
        raise ConfigError(f"`--cv {config.cv}` needs at least {config.cv} images of every class in "
                          f"train and validation; the smallest class has {smallest}. Fix: use "
                          f"`--cv {max(2, smallest)}` or fewer folds, or select on validation "
                          "(no `--cv`).")
    folds = StratifiedKFold(config.cv, shuffle=True, random_state=config.seed)
    n_classes = len(cache.classes)
    final, rows, predictions, probas = {}, {}, {}, {}
    for c in specs:
        estimator, grid = configured[c.name]
        start = time.perf_counter()
        with _one_blas_thread():
            search = GridSearchCV(estimator, grid or {}, scoring=config.scoring, cv=folds, refit=True,
                                  error_score="raise").fit(both.features, both.labels)
            out_of_fold = cross_val_predict(clone(search.best_estimator_), both.features, both.labels,
                                            cv=folds, method="predict_proba")
        best = search.best_index_
        chosen = _short(search.best_params_)
        candidates = [{"classifier": c.name, "params": scores.format_params(_short(p)),
                       f"cv_{config.scoring}_mean": round(float(m), 4), f"cv_{config.scoring}_sd": round(float(sd), 4)}
                      for p, m, sd in zip(search.cv_results_["params"], search.cv_results_["mean_test_score"],
                                          search.cv_results_["std_test_score"])]
        final[c.name] = _Selected(c.name, search.best_estimator_, chosen, candidates,
                                  time.perf_counter() - start - search.refit_time_, search.refit_time_)
        rows[c.name], predicted = scores.score(both.labels, out_of_fold, search.best_estimator_.classes_,
                                               n_classes)
        rows[c.name]["cv"] = {"folds": config.cv, "scoring": config.scoring,
                              "mean": round(float(search.cv_results_["mean_test_score"][best]), 4),
                              "sd": round(float(search.cv_results_["std_test_score"][best]), 4)}
        predictions[c.name] = {"validation": predicted}
        probas[c.name] = {"validation": full_proba(out_of_fold, search.best_estimator_.classes_, n_classes)}
        log.info("%-10s %d-fold %s %.4f +- %.4f  %s", c.name, config.cv, config.scoring,
                 rows[c.name]["cv"]["mean"], rows[c.name]["cv"]["sd"], scores.format_params(chosen))

    test, test_scores = _score_test(cache, final, predictions, probas)
    has_test = test is not None
    leaderboard = scores.rank([_row(s, rows[name], test_scores.get(name), outofcore.PATH_IN_MEMORY)
                               for name, s in final.items()], config.scoring)
    scores.mark_ties(leaderboard, both.labels, {n: p["validation"] for n, p in predictions.items()})
    note = (f"Selected by {config.cv}-fold cross-validation over train and validation "
            f"({len(both.labels)} images); the validation columns are out-of-fold predictions of "
            "every one of them, and each model was then fitted on all of them.")
    data = {"validation": both, **({"test": test} if has_test else {})}
    audited = {"train": train, "validation": validation, **({"test": test} if has_test else {})}
    return _finish(cache, config, specs, final, leaderboard, predictions, data, probas, out, started,
                   note, audited)


def _calibrated(final: dict[str, _Selected], specs, method: str,
                validation: SplitData) -> tuple[dict[str, _Selected], dict]:
    """Each scikit-learn model with a calibration map fitted on validation (the model itself
    frozen); the Keras head, saved as ``.keras``, is left as it is. Returns the models and the
    uncalibrated ones by name."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator

    keras_names = {c.name for c in specs if c.keras}
    out, before = dict(final), {}
    for name, s in final.items():
        if name in keras_names:
            continue
        model = CalibratedClassifierCV(FrozenEstimator(s.model), method=method)
        model.fit(validation.features, validation.labels)
        before[name] = s.model
        out[name] = _Selected(name, model, s.params, s.candidates, s.search_seconds, s.fit_seconds,
                              s.predict_seconds)
    return out, before


def _ece(model, data: SplitData, n_classes: int) -> float:
    return stats.expected_calibration_error(
        data.labels, full_proba(model.predict_proba(data.features), model.classes_, n_classes))


def _row(selected: _Selected, validation: dict, test: dict | None, path: str) -> dict:
    """One leaderboard row (before ranking)."""
    return {"classifier": selected.name, "params": selected.params,
            "validation": validation, "test": test,
            "search_seconds": round(selected.search_seconds, 3),
            "fit_seconds": round(selected.fit_seconds, 3),
            "predict_seconds": round(selected.predict_seconds, 4), "path": path}


def _finish(cache: FeatureCache, config: CompareConfig, specs, final, leaderboard, predictions,
            data: dict[str, SplitData], probas: dict | None, out: Path, started: float,
            note: str = "", audited: dict[str, SplitData] | None = None) -> CompareResult:
    """Write the run folder; nothing of it is left if anything fails.

    ``data`` holds each split's arrays (features None when they were streamed),
    ``probas`` each model's probabilities per split (None when streamed: the
    run then has no data audit and a report without images).
    """
    run = None
    try:
        run = RunWriter(out)  # a folder beside `out`: its parent may be full or read-only
        table, insights = _write_run(run, cache, config, specs, final, leaderboard, predictions,
                                     data, probas, note, audited or data)
        run_dir = run.commit(_manifest(cache, config), config.overwrite)
    except OSError as exc:
        if run is not None:
            run.discard()
        raise RunError(f"Writing the run folder {out} failed: {write_problem(exc)}. Nothing of "
                       "the new run was kept, and an earlier run there is whole. Fix: free space "
                       "(or pass another `--out`), then run the same command again.") from None
    except BaseException:
        if run is not None:
            run.discard()
        raise
    seconds = time.perf_counter() - started
    log.info("wrote %s in %.1f s", run_dir, seconds)
    return CompareResult(run_dir, leaderboard, table, "test" in data, seconds, insights)


def _compare_out_of_core(cache: FeatureCache, config: CompareConfig, specs, configured,
                         out: Path, budget: int, need: int, started: float) -> CompareResult:
    """Stage 2 with features streamed from the file (see :mod:`pipeline.heads.outofcore`)."""
    from sklearn.base import clone

    from .heads.registry import public_params

    left_out = outofcore.check_streamable([c.name for c in specs], config.refit, need, budget)
    specs = [c for c in specs if c.name not in left_out]
    block = outofcore.block_rows(cache.feature_shape, budget)
    rows = {s: outofcore.FeatureRows(str(cache.path), s, block) for s in cache.splits}
    labels = {s: r.labels for s, r in rows.items()}
    for split in ("train", "validation"):
        _check_classes(cache, labels[split], split)
    n_classes = len(cache.classes)

    def choose(proba) -> float:
        metrics, _ = scores.score(labels["validation"], proba, range(n_classes), n_classes)
        return -scores.rank_key({"validation": metrics, "classifier": ""}, config.scoring)[0]

    final: dict[str, _Selected] = {}
    keras_names = {c.name for c in specs if c.keras}
    for c in specs:
        estimator, grid = configured[c.name]
        start = time.perf_counter()
        if c.keras:
            model = clone(estimator).fit(rows["train"], validation_data=rows["validation"])
            params, candidates = model.refit_params(), []
        else:
            c_name = public_params(estimator)["C"]
            Cs = grid.get(c_name) or [estimator.get_params()[c_name]]
            model, params, fit_scores = outofcore.fit_linear(
                c.name, Cs, rows["train"], rows["validation"], n_classes, config.spatial,
                config.class_weight, config.seed, outofcore.SGD_EPOCHS, choose)
            candidates = [{"classifier": c.name, "params": f"C={r['C']}",
                           f"validation_{config.scoring}": round(float(r["score"]), 4)}
                          for r in fit_scores]
        final[c.name] = _Selected(c.name, model, params, candidates, 0.0, time.perf_counter() - start)

    split_scores, predictions = {}, {}
    for split in [s for s in ("validation", "test") if s in rows and cache.counts[s] > 0]:
        for name, s in final.items():
            start = time.perf_counter()
            proba = outofcore.predict_proba(s.model, rows[split])
            if split == "validation":
                s.predict_seconds = time.perf_counter() - start
            split_scores.setdefault(name, {})[split], predicted = scores.score(
                labels[split], proba, range(n_classes), n_classes)
            predictions.setdefault(name, {})[split] = predicted
    leaderboard = scores.rank([
        _row(s, split_scores[name]["validation"], split_scores[name].get("test"),
             outofcore.PATH_TF_DATA if name in keras_names else outofcore.PATH_SGD)
        for name, s in final.items()], config.scoring)
    scores.mark_ties(leaderboard, labels["validation"], {n: p["validation"] for n, p in predictions.items()})
    note = (f"Out of core: {need / 2**20:.3g} MB of train and validation features exceed the "
            f"memory budget of {budget / 2**20:.3g} MB, so features were streamed from the file "
            f"in blocks of {block} rows.")
    if left_out:
        note += f" Left out (they cannot train out of core): {', '.join(left_out)}."
    if config.calibrate or config.cv:
        note += " `--calibrate` and `--cv` are not applied out of core."
    has_test = "test" in split_scores.get(next(iter(final)), {})
    split_data = {s: SplitData(None, labels[s], []) for s in labels if s != "test" or has_test}
    return _finish(cache, config, specs, final, leaderboard, predictions, split_data, None, out,
                   started, note)


def _write_run(run: RunWriter, cache: FeatureCache, config: CompareConfig, specs, final,
               leaderboard, predictions, data: dict[str, SplitData], probas: dict | None,
               note: str = "", audited: dict[str, SplitData] | None = None) -> tuple[str, dict | None]:
    validation, test = data["validation"], data.get("test")
    split, shown = ("test", test) if test is not None else ("validation", validation)
    per_class_rows = []
    for row in leaderboard:
        name = row["classifier"]
        for s, d in (("validation", validation), ("test", test)):
            if d is None:
                continue
            per_class_rows += [{"classifier": name, "split": s, **r}
                               for r in scores.per_class(d.labels, predictions[name][s], cache.classes)]
        plots.plot_confusion(run.path(f"plots/confusion_{name}.png"), shown.labels,
                              predictions[name][split], cache.classes, f"{name} on {split}")
    candidates = [c for s in final.values() for c in s.candidates]
    table = scores.write_tables(run, leaderboard, per_class_rows, candidates, test is not None,
                                config.scoring, note)
    plots.plot_comparison(run.path("plots/comparison.png"), leaderboard, test is not None)
    for c in specs:
        model = final[c.name].model
        if c.keras:
            run.write_json("dense_history.json", model.history_)
            plots.plot_history(run.path("plots/dense_history.png"), model.history_, model.best_epoch_)
        run.save_model(c.name, model, c.keras,
                       model.get_params() if c.keras else final[c.name].params)
    run.write_json("config.json", asdict(config))
    insights = None
    if probas is not None:
        insights = _audit(cache, audited, config.seed)
        run.write_json("insights.json", insights)
        root = Path(cache.data_root)
        report.write(run, title=f"{cache.path.name}: {', '.join(cache.classes)}", classes=cache.classes,
                     leaderboard=leaderboard, data=data, probas=probas, insights=insights,
                     root=root if root.is_dir() else None, note=_summary(leaderboard, insights, note))
    return table, insights


def _audit(cache: FeatureCache, data: dict[str, SplitData], seed: int) -> dict:
    """The data audit of every split, fingerprints from the view (exact copies share one)."""
    splits = {}
    for name, d in data.items():
        try:
            prints = list(cache.index(name).fingerprints)
        except KeyError:  # a file without fingerprints: copies are found by their features
            prints = None
        splits[name] = {"features": d.features, "labels": d.labels, "paths": d.paths, "fingerprints": prints}
    return audit.audit(splits, cache.classes, seed)


def _summary(leaderboard: list[dict], insights: dict, note: str) -> str:
    best = scores.recommended(leaderboard)
    tied = [r["classifier"] for r in leaderboard if r.get("tied_with_best") and r["rank"] > 1]
    text = (f"Recommended: {best['classifier']}. " +
            (f"Tied with the best on validation: {', '.join(tied)}. " if tied else "") +
            f"{leakage(insights)}; {counted(insights['suspected_label_errors'].get('found', 0), 'suspected label error')}.")
    return f"{text} {note}".strip()


def _manifest(cache: FeatureCache, config: CompareConfig) -> dict:
    return {
        "stage": "compare",
        "cache": {"path": str(cache.path.resolve()), "key_hash": key_hash(cache.key),
                  "key": {k: v for k, v in cache.key.items() if k != "images"}},
        "classes": cache.classes,
        "splits": cache.counts,
        "config": asdict(config),
        "seed": config.seed,
        "library_versions": library_versions(
            ("tensorflow", "keras", "numpy", "h5py", "scikit-learn", "joblib", "matplotlib")),
    }
