"""Counts with their nouns: "1 pair", "2 pairs", one helper for every message."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun``, the noun in the plural unless n is 1 (``plural`` when not noun + "s")."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def agree(n: int, singular: str, plural: str) -> str:
    """The verb or phrase that agrees with a count of ``n``: ``agree(1, "is", "are")``."""
    return singular if n == 1 else plural


def leakage(insights: dict) -> str:
    """The audit's cross-split duplicates, as a phrase: "1 near-duplicate pair crosses splits (leakage)"."""
    n = insights["cross_split_pairs"]
    if n == 0:  # "0 pairs cross splits (leakage)" reads as an error
        return "no near-duplicate pairs across splits"
    return f"{counted(n, 'near-duplicate pair')} {agree(n, 'crosses', 'cross')} splits (leakage)"
