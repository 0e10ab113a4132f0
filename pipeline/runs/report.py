"""``report.html``: one self-contained page per run, readable offline.

Plots are inlined as PNG, images as small JPEG thumbnails (only those the
page shows), so the file stays a few hundred KB to a few MB whatever the
dataset's size. It is rendered with a jinja2 template (``templates/report.html``).
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path

import numpy as np

from . import plots, scores
from .folder import REPORT, plot

THUMB = 120  # pixels, the longer side
GALLERY = 24


def _data_uri(data: bytes, kind: str) -> str:
    return f"data:{kind};base64,{base64.b64encode(data).decode()}"


def thumbnail(path: Path | bytes) -> str:
    """A small upright JPEG of one image (a file, or its bytes already read and checked), as a
    data URI ("" when it cannot be read)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(path) if isinstance(path, bytes) else path) as image:
            small = ImageOps.exif_transpose(image).convert("RGB")
            small.thumbnail((THUMB, THUMB))
            out = io.BytesIO()
            small.save(out, "JPEG", quality=75)
    except Exception:  # noqa: BLE001 - whatever keeps an image from showing, the page goes on
        return ""
    return _data_uri(out.getvalue(), "image/jpeg")


def _png(path: Path) -> str:
    return _data_uri(path.read_bytes(), "image/png") if path.is_file() else ""


def _breakable(path: str):
    """A path that may wrap after each "/", never inside a file or folder name."""
    import markupsafe

    return markupsafe.Markup(str(markupsafe.escape(path)).replace("/", "/<wbr>"))


def _inline_code(text: str):
    """Text whose `backticked` spans (written for Markdown) show as code, not as backticks."""
    import re

    import markupsafe

    return markupsafe.Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(markupsafe.escape(text))))


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def render(context: dict, template: str = "report.html") -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("pipeline.runs", "templates"),
                             autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.StrictUndefined)
    env.filters["breakable"] = _breakable
    env.filters["inline_code"] = _inline_code
    return env.get_template(template).render(**context, fmt=_fmt)


def write(run, *, title: str, classes: list[str], leaderboard: list[dict], data: dict, probas: dict,
          insights: dict, root: Path | None, note: str = "") -> Path:
    """Write ``report.html`` into the run folder being written (a :class:`RunWriter`).

    Args:
        data: split -> :class:`SplitData` (features, labels, paths), every split scored.
        probas: classifier -> split -> probabilities over all classes.
        root: the image folder the paths are relative to (None: no thumbnails).
    """
    shown_split = "test" if "test" in data else "validation"
    best = scores.recommended(leaderboard)["classifier"]
    split = data[shown_split]
    proba = probas[best][shown_split]
    predicted = proba.argmax(axis=1)
    thumb = (lambda p: thumbnail(root / p)) if root is not None else (lambda p: "")

    wrong = np.flatnonzero(predicted != split.labels)
    wrong = wrong[np.argsort(-proba[wrong].max(axis=1))]
    misclassified = [{"path": split.paths[i], "thumb": thumb(split.paths[i]),
                      "given": classes[split.labels[i]], "predicted": classes[predicted[i]],
                      "top": [(classes[k], float(proba[i, k])) for k in np.argsort(-proba[i])[:3]]}
                     for i in wrong[:GALLERY]]
    pairs = [{**p, "thumb_a": thumb(p["a"]), "thumb_b": thumb(p["b"])}
             for p in insights["near_duplicates"][:GALLERY]]
    issues = insights["suspected_label_errors"]
    label_errors = [{**e, "thumb": thumb(e["path"])} for e in issues["issues"][:GALLERY]]
    outliers = [{**o, "thumb": thumb(o["path"])} for o in insights["outliers"][:12]]

    reliability = run.path(plot("reliability"))
    plots.plot_reliability(reliability, {name: (data[shown_split].labels, p[shown_split])
                                         for name, p in probas.items()}, shown_split)
    feature_map = run.path(plot("feature_map"))
    _feature_map(feature_map, data, classes, {shown_split: predicted != split.labels},
                 {e["path"] for e in issues["issues"]})
    splits = [s for s in ("validation", "test") if all(row.get(s) for row in leaderboard)]
    context = {
        "title": title, "summary": note, "classes": classes, "splits": splits,
        "intervals": scores.INTERVALS,
        "leaderboard": [{**row, "params_text": scores.format_params(row["params"])} for row in leaderboard],
        "leaderboard_note": scores.EXPLAINED,
        "comparison": _png(run.path(plot("comparison"))),
        "per_class": scores.per_class(split.labels, predicted, classes), "per_class_split": shown_split,
        "per_class_n": len(split.labels), "shown_model": best,
        "confusions": [(row["classifier"], _png(run.path(plot(f"confusion_{row['classifier']}"))))
                       for row in leaderboard],
        "reliability": _png(reliability), "feature_map": _png(feature_map),
        "misclassified": misclassified, "misclassified_total": len(wrong),
        "insights": insights, "pairs": pairs, "label_issues": issues, "label_errors": label_errors,
        "outliers": outliers,
    }
    path = run.path(REPORT)
    # A file name whose bytes are not UTF-8 is shown with escapes (\xff): the page stays UTF-8.
    path.write_text(render(context), encoding="utf-8", errors="backslashreplace")
    return path


def _feature_map(path: Path, data: dict, classes: list[str], wrong: dict, suspects: set[str]) -> None:
    from sklearn.decomposition import PCA

    from .audit import unit_vectors

    names = list(data)
    x = unit_vectors(np.concatenate([data[s].features for s in names]))
    labels = np.concatenate([data[s].labels for s in names])
    paths = [p for s in names for p in data[s].paths]
    crossed = np.concatenate([wrong.get(s, np.zeros(len(data[s].labels), bool)) for s in names])
    circled = np.asarray([p in suspects for p in paths])
    xy = PCA(n_components=2, random_state=0).fit_transform(x) if len(x) > 2 else np.zeros((len(x), 2))
    plots.plot_feature_map(path, xy, labels, classes, crossed, circled)
