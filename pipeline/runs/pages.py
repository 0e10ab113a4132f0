"""The labelling loop's pages, in the report's style: the images to label next, and a run
report's drift and labelling sections."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

from .report import render, thumbnail

def _section(name: str) -> re.Pattern:
    return re.compile(rf'<section id="{name}">.*?</section>\n?', re.S)
GENERATOR = '<meta name="generator" content="cached-transfer suggest">'  # marks a page this tool wrote


def suggestions_page(title: str, summary: str, suggestions: list[dict]) -> str:
    """A page of thumbnails, the first to label first; each suggestion has path, reason, score,
    predicted and probability."""
    shown = [{**s, "thumb": thumbnail(Path(s["path"]))} for s in suggestions]
    return render({"title": title, "summary": summary, "suggestions": shown}, "suggest.html")


def with_drift(report: str, drift: dict, batch: str, permutations: int) -> str:
    """``report`` (a run's report.html) with its drift section replaced by, or added as, ``drift``'s."""
    novel = [{**n, "thumb": thumbnail(Path(n["path"]))} for n in drift["novel"]]
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = render({**drift, "novel": novel, "batch": batch, "permutations": permutations,
                      "when": when}, "drift.html")
    return _replaced(report, "drift", section)


def with_labelling(report: str, session: dict) -> str:
    """``report`` with its labelling section replaced by, or added as, ``session``'s summary."""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return _replaced(report, "labelling", render({**session, "when": when}, "labelling.html"))


def _replaced(report: str, name: str, section: str) -> str:
    report = _section(name).sub("", report)
    at = report.rfind("</body>")
    return report[:at] + section + report[at:] if at >= 0 else report + section
