"""Metrics and the leaderboard (Markdown, CSV, JSON) of a run.

scikit-learn is imported where it is used: ``import pipeline`` (every stage-1
command) should not wait a second for it.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from .._files import atomic_write
from ..heads.proba import full_proba
from . import stats
from .folder import (LEADERBOARD, LEADERBOARD_CSV, LEADERBOARD_MD, PER_CLASS, SEARCH, RunWriter,
                     read_leaderboard, read_manifest)

METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "log_loss", "roc_auc")
INTERVALS = ("accuracy", "balanced_accuracy", "macro_f1")
EXPLAINED = ("Intervals are 95 %: Wilson for accuracy, a bootstrap over images for the others. "
             "\"p vs best\" is McNemar's exact test on the same validation images; \"tied\" means it "
             "cannot tell the model from the best at 5 %. Among the tied models, the one with the "
             "lowest validation log loss is recommended (`predict --model best` uses it).")


def score(y_true: np.ndarray, proba: np.ndarray, model_classes,
          n_classes: int) -> tuple[dict, np.ndarray]:
    """The leaderboard's metrics for one model on one split, and its predictions.

    ``proba`` has one column per class the model was trained on
    (``model_classes``); they are placed in the dataset's full class order.
    """
    from sklearn import metrics as skm

    full = full_proba(proba, model_classes, n_classes)
    predicted = np.argmax(full, axis=1)
    labels = np.arange(n_classes)
    result = {
        "accuracy": skm.accuracy_score(y_true, predicted),
        "balanced_accuracy": skm.balanced_accuracy_score(y_true, predicted),
        "macro_f1": skm.f1_score(y_true, predicted, labels=labels, average="macro", zero_division=0),
        "log_loss": skm.log_loss(y_true, full, labels=labels),
        "roc_auc": None,
    }
    if n_classes == 2 and len(np.unique(y_true)) == 2:
        result["roc_auc"] = skm.roc_auc_score(y_true, full[:, 1])
    result = {k: (None if v is None else round(float(v), 4)) for k, v in result.items()}
    y = np.asarray(y_true)
    result.update({
        "accuracy_ci": stats.wilson(int((predicted == y).sum()), len(y)),
        "balanced_accuracy_ci": stats.bootstrap_ci(y, predicted, n_classes, stats.balanced_accuracy),
        "macro_f1_ci": stats.bootstrap_ci(y, predicted, n_classes, stats.macro_f1),
        "ece": stats.expected_calibration_error(y, full),
        "n": len(y),
    })
    return result, predicted


def per_class(y_true, y_pred, classes: list[str]) -> list[dict]:
    from sklearn import metrics as skm

    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=np.arange(len(classes)), zero_division=0)
    return [{"class": c, "precision": round(float(p), 4), "recall": round(float(r), 4),
             "f1": round(float(f), 4), "support": int(s)}
            for c, p, r, f, s in zip(classes, precision, recall, f1, support)]


def rank_key(row: dict, scoring: str) -> tuple:
    """Sort key: best validation score first; ties go to the lower log loss."""
    metrics = row["validation"]
    value = -metrics["log_loss"] if scoring == "neg_log_loss" else \
        metrics[{"f1_macro": "macro_f1"}.get(scoring, scoring)]
    return (-value, metrics["log_loss"], row["classifier"])


def leaderboard_row(classifier: str, params: dict, validation: dict, test: dict | None = None, *,
                    fit_seconds: float, search_seconds: float = 0.0, predict_seconds: float = 0.0,
                    path: str | None = None) -> dict:
    """One leaderboard row, before ranking: stage 2's models and stage 3's alike."""
    row = {"classifier": classifier, "params": params, "validation": validation, "test": test,
           "search_seconds": round(search_seconds, 3), "fit_seconds": round(fit_seconds, 3),
           "predict_seconds": round(predict_seconds, 4)}
    return row if path is None else {**row, "path": path}


def rank(rows: list[dict], scoring: str) -> list[dict]:
    ordered = sorted(rows, key=lambda r: rank_key(r, scoring))
    return [{"rank": i + 1, **{k: v for k, v in r.items() if k != "rank"}} for i, r in enumerate(ordered)]


def mark_ties(rows: list[dict], y_validation: np.ndarray, predicted: dict[str, np.ndarray]) -> list[dict]:
    """Each ranked row's exact McNemar p-value against the best on the same validation images,
    whether the test cannot separate them (``tied_with_best``), and the recommended row."""
    best = predicted[rows[0]["classifier"]]
    for row in rows:
        p = stats.mcnemar(y_validation, best, predicted[row["classifier"]])
        row["p_vs_best"], row["tied_with_best"] = round(p, 4), bool(p >= stats.TIE_LEVEL)
    return recommend(rows)


def recommend(rows: list[dict]) -> list[dict]:
    """Among the models tied with the best on validation, recommend the lowest validation log
    loss: the best probabilities among models whose accuracy cannot be told apart."""
    tied = [r for r in rows if r["rank"] == 1 or r.get("tied_with_best")]
    choice = min(tied, key=lambda r: (r["validation"]["log_loss"], r["rank"]))
    for row in rows:
        row["recommended"] = row is choice
    return rows


def recommended(rows: list[dict]) -> dict:
    """The recommended row (the first, in leaderboards written before recommendations)."""
    return next((r for r in rows if r.get("recommended")), rows[0])


def add_leaderboard_row(run, row: dict) -> list[dict]:
    """Add (or replace) one row in a finished run's leaderboard files."""
    run = Path(run)
    scoring = read_manifest(run)["config"]["scoring"]
    rows = [r for r in read_leaderboard(run)
            if r["classifier"] != row["classifier"]]
    rows = recommend(rank(rows + [row], scoring))
    for name, text in leaderboard_files(rows, any(r["test"] for r in rows), scoring).items():
        atomic_write(run / name, text.encode())
    return rows


def leaderboard_files(rows: list[dict], has_test: bool, scoring: str,
                      note: str = "") -> dict[str, str]:
    """``leaderboard.md``, ``.csv`` and ``.json``: name -> text."""
    return {LEADERBOARD_MD: markdown(rows, has_test, scoring, note),
            LEADERBOARD_CSV: to_csv(flat_rows(rows)),
            LEADERBOARD: json.dumps(rows, indent=2) + "\n"}


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if not math.isnan(value) else "nan"
    return str(value)


def format_params(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "-"


def flat_rows(rows: list[dict]) -> list[dict]:
    """One flat dict per classifier: the CSV columns."""
    flat = []
    for row in rows:
        item = {"rank": row["rank"], "classifier": row["classifier"]}
        for split in ("validation", "test"):
            metrics = row[split] or {}
            for name in METRICS:
                item[f"{split}_{name}"] = metrics.get(name)
            for name in INTERVALS:
                low, high = metrics.get(f"{name}_ci") or (None, None)
                item[f"{split}_{name}_low"], item[f"{split}_{name}_high"] = low, high
            item[f"{split}_ece"] = metrics.get("ece")
        item.update({"p_vs_best": row.get("p_vs_best"), "tied_with_best": row.get("tied_with_best"),
                     "recommended": row.get("recommended"),"search_seconds": row["search_seconds"], "fit_seconds": row["fit_seconds"],
                     "predict_seconds": row["predict_seconds"], "params": format_params(row["params"]),
                     "path": row.get("path", "in memory")})
        flat.append(item)
    return flat


def _with_interval(metrics: dict, name: str) -> str:
    interval = metrics.get(f"{name}_ci")
    value = _cell(metrics[name])
    return f"{value} [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else value


def markdown(rows: list[dict], has_test: bool, scoring: str, note: str = "") -> str:
    """The leaderboard as a Markdown table, best on validation first, with 95 % intervals."""
    splits = ("validation", "test") if has_test else ("validation",)
    head = ["#", "classifier"]
    for split in splits:
        short = {"validation": "val"}.get(split, split)
        head += [f"{short} acc [95% CI]", f"{short} bal acc [95% CI]", f"{short} macro-F1 [95% CI]",
                 f"{short} log loss", f"{short} ROC-AUC", f"{short} ECE"]
    head += ["p vs best", "fit s", "predict s", "chosen"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        name = row["classifier"] + (" (recommended)" if row.get("recommended") else "")
        tie = row.get("tied_with_best")
        mark = "-" if row.get("p_vs_best") is None else \
            f"{row['p_vs_best']:.3f}{' tied' if tie and row['rank'] > 1 else ''}"
        cells = [str(row["rank"]), name]
        for split in splits:
            m = row[split]
            cells += [_with_interval(m, n) for n in INTERVALS]
            cells += [_cell(m["log_loss"]), _cell(m["roc_auc"]), _cell(m.get("ece"))]
        cells += [mark, f"{row['fit_seconds']:.2f}", f"{row['predict_seconds']:.3f}",
                  format_params(row["params"])]
        lines.append("| " + " | ".join(cells) + " |")
    text = f"Ranked by validation {scoring}. {EXPLAINED}"
    if not has_test:
        text += " The cache has no test split: validation figures only."
    paths = sorted({f"{r['classifier']}: {r['path']}" for r in rows
                    if r.get("path", "in memory") != "in memory"})
    if note or paths:
        text += "\n\n" + " ".join(filter(None, [note, "; ".join(paths) + "." if paths else ""]))
    return "\n".join(lines) + "\n\n" + text + "\n"


def to_csv(records: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(records[0]) if records else [])
    writer.writeheader()
    writer.writerows(records)
    return out.getvalue()


def write_tables(run: RunWriter, rows: list[dict], per_class_rows: list[dict], candidates: list[dict], *,
                 has_test: bool, scoring: str, note: str = "") -> str:
    files = leaderboard_files(rows, has_test, scoring, note)
    for name, text in {**files, PER_CLASS: to_csv(per_class_rows), SEARCH: to_csv(candidates)}.items():
        run.write_text(name, text)
    return files[LEADERBOARD_MD]
