"""The step every selection ends with: the test split read once, the leaderboard ranked with
its ties, and the run folder written whole through its owner (:class:`~pipeline.runs.RunWriter`)."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .._files import key_hash, library_versions
from ..config import CompareConfig
from ..console import phase
from ..errors import RunError, write_problem
from ..features.quantize import calibration_of
from ..features.view import FeatureCache, SplitData
from ..heads import outofcore
from ..heads.proba import full_proba
from ..runs import RunWriter, audit, plots, report, scores, stats
from ..runs.folder import CONFIG, INSIGHTS, REPORT, history, plot
from ..words import counted, leakage
from .precision import kept_cost
from .selection import Selection, check_split

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
        return self.run_dir / REPORT

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


def finish(cache: FeatureCache, config: CompareConfig, selection: Selection, out: Path,
           started: float) -> CompareResult:
    """Score the test split, rank, mark ties and write the run folder; nothing of it is left
    if anything fails."""
    with phase("stage 2: score the test split"):
        test_scores = _score_test(cache, selection)
    rows = []
    for c in selection.specs:
        s = selection.models[c.name]
        path = outofcore.PATH_IN_MEMORY if selection.rows is None else outofcore.PATH_STREAMED[c.streams]
        rows.append(scores.leaderboard_row(c.name, s.params, selection.validation[c.name],
                                           test_scores.get(c.name), search_seconds=s.search_seconds,
                                           fit_seconds=s.fit_seconds, predict_seconds=s.predict_seconds,
                                           path=path))
    leaderboard = scores.rank(rows, config.scoring)
    scores.mark_ties(leaderboard, selection.shown["validation"].labels,
                     {n: p["validation"] for n, p in selection.predictions.items()})
    if selection.uncalibrated:
        _calibration_columns(leaderboard, selection, config.calibrate, len(cache.classes))
    run = None
    try:
        run = RunWriter(out)  # a folder beside `out`: its parent may be full or read-only
        stage1 = _stage1(cache)
        table, insights = _write_run(run, cache, config, selection, leaderboard, stage1)
        run_dir = run.commit({**_manifest(cache, config), **stage1}, config.overwrite)
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
    return CompareResult(run_dir, leaderboard, table, "test" in selection.shown, seconds, insights)


def _score_test(cache: FeatureCache, selection: Selection) -> dict[str, dict]:
    """The test split, read now for the first time, each final model evaluated on it once."""
    if "test" not in cache.splits or cache.counts["test"] == 0:
        return {}
    n_classes, test_scores = len(cache.classes), {}
    streamed = selection.rows["test"] if selection.rows is not None else None
    if streamed is not None:
        test = SplitData(None, streamed.labels, [])
    else:
        test = cache.load("test")
        check_split(cache, test, "test")
    for c in selection.specs:
        model = selection.models[c.name].model
        if streamed is not None:  # streamed models know every class
            proba, classes = outofcore.predict_proba(model, streamed, c.streams == "batches"), range(n_classes)
        else:
            proba, classes = model.predict_proba(test.features), model.classes_
        test_scores[c.name], selection.predictions[c.name]["test"] = scores.score(
            test.labels, proba, classes, n_classes)
        if selection.probas is not None:
            selection.probas[c.name]["test"] = full_proba(proba, classes, n_classes)
    selection.shown["test"] = selection.audited["test"] = test
    return test_scores


def _calibration_columns(leaderboard: list[dict], selection: Selection, method: str,
                         n_classes: int) -> None:
    """Each calibrated model's calibration error before and after its map: measured on test
    (whose columns are the calibrated model's already), else on validation, where the map was
    fitted."""
    split = "test" if "test" in selection.shown else "validation"
    for row in leaderboard:
        name = row["classifier"]
        if name not in selection.uncalibrated:
            continue
        after = row["test"]["ece"] if split == "test" else \
            _ece(selection.models[name].model, selection.shown[split], n_classes)
        row["calibration"] = {"method": method, "fitted_on": "validation", "measured_on": split,
                              "ece_before": _ece(selection.uncalibrated[name], selection.shown[split], n_classes),
                              "ece_after": after}


def _ece(model, data: SplitData, n_classes: int) -> float:
    return stats.expected_calibration_error(
        data.labels, full_proba(model.predict_proba(data.features), model.classes_, n_classes))


def _write_run(run: RunWriter, cache: FeatureCache, config: CompareConfig, selection: Selection,
               leaderboard: list[dict], stage1: dict) -> tuple[str, dict | None]:
    shown = selection.shown
    has_test = "test" in shown
    with phase("stage 2: tables, plots and models"):
        table = scores.write_tables(run, leaderboard, _per_class(run, cache, selection, leaderboard),
                                    [c for s in selection.models.values() for c in s.candidates],
                                    has_test=has_test, scoring=config.scoring,
                                    note=" ".join(filter(None, [selection.note, _precision_sentence(stage1)])))
        plots.plot_comparison(run.path(plot("comparison")), leaderboard, has_test)
        for c in selection.specs:
            model = selection.models[c.name].model
            if c.stops_early:
                run.write_json(history(c.name), model.history_)
                plots.plot_history(run.path(plot(f"{c.name}_history")), model.history_, model.best_epoch_)
            run.save_model(c.name, model, c.saved_as,
                           model.get_params() if c.saved_as == "keras" else selection.models[c.name].params)
        run.write_json(CONFIG, asdict(config))
    if selection.probas is None:
        return table, None
    with phase("stage 2: data audit"):
        insights = _audit(cache, selection.audited, config.seed)
        run.write_json(INSIGHTS, insights)
    root = Path(cache.data_root)
    with phase("stage 2: report"):
        report.write(run, title=f"{cache.path.name}: {', '.join(cache.classes)}", classes=cache.classes,
                     leaderboard=leaderboard, data=shown, probas=selection.probas, insights=insights,
                     root=root if root.is_dir() else None,
                     note=_summary(leaderboard, insights, f"{selection.note} {_stage1_note(cache, stage1)}".strip()))
    return table, insights


def _per_class(run: RunWriter, cache: FeatureCache, selection: Selection,
               leaderboard: list[dict]) -> list[dict]:
    """Per-class rows of every model on validation and test, and each model's confusion plot
    on test (else validation)."""
    split = "test" if "test" in selection.shown else "validation"
    rows = []
    for row in leaderboard:
        name, predicted = row["classifier"], selection.predictions[row["classifier"]]
        for s in ("validation", "test"):
            if s in selection.shown:
                rows += [{"classifier": name, "split": s, **r}
                         for r in scores.per_class(selection.shown[s].labels, predicted[s], cache.classes)]
        plots.plot_confusion(run.path(plot(f"confusion_{name}")), selection.shown[split].labels,
                             predicted[split], cache.classes, f"{name} on {split}")
    return rows


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


def _stage1(cache: FeatureCache) -> dict:
    """What the store keeps about how a view of lowered precision was computed, read once: the
    int8 model's calibration, and the cost ``--compare-precision`` measured (each when there is one)."""
    return {**({"calibration": record} if (record := calibration_of(cache)) else {}),
            **({"precision_cost": cost} if (cost := kept_cost(cache)) else {})}


def _stage1_note(cache: FeatureCache, stage1: dict) -> str:
    """The report's word on a view of lowered precision: what computed its rows, and what it
    costs beside float32 when ``--compare-precision`` measured it."""
    record = stage1.get("calibration")
    if record is None:
        said = "" if cache.key.get("precision", "float32") == "float32" else \
            f"Stage 1 ran in {cache.key['precision']}."
    else:
        said = (f"Stage 1 ran the network quantized to int8 by NNCF {record['nncf']} "
                f"({'fast' if record['fast_bias_correction'] else 'full'} bias correction), calibrated "
                f"on {counted(len(record['images']), 'image')} of the first dataset of this feature spec.")
    return " ".join(filter(None, [said, _precision_sentence(stage1)]))


def _precision_sentence(stage1: dict) -> str:
    cost = stage1.get("precision_cost")
    return f"Measured by `extract --compare-precision`: {cost['sentence']}" if cost else ""


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
