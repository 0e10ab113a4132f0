"""What an extraction reports: the view it wrote, and what it computed, reused and refused."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .view import FeatureCache


@dataclass(frozen=True)
class ExtractResult:
    """What a stage-1 run produced.

    Attributes:
        path: the finished view file.
        hit: True when the view already existed and nothing was computed.
        splits: rows per split.
        feature_shape: shape of one feature row.
        quarantined: unreadable images, ``{"split", "path", "reason"}`` each.
        seconds: wall time of this call.
        images_per_second: images decoded and run through the backbone per
            second (0 when none was).
        resumed_images: rows a killed earlier run of this extraction had computed.
        computed: images the backbone ran on in this call.
        reused: rows of the view taken from the store, computed before this call.
        fingerprinted: files read to fingerprint them (the others matched the
            stat cache).
        ignored: files in the dataset folder that are not images (by extension).
    """

    path: Path
    hit: bool
    splits: dict[str, int]
    classes: list[str]
    feature_shape: tuple[int, ...]
    quarantined: list[dict]
    seconds: float
    images_per_second: float
    resumed_images: int = 0
    missing: dict[str, list[str]] = field(default_factory=dict)
    computed: int = 0
    reused: int = 0
    fingerprinted: int = 0
    ignored: list[str] = field(default_factory=list)

    @property
    def ignored_files(self) -> int:
        return len(self.ignored)

    def open(self) -> FeatureCache:
        """The view file, opened and checked."""
        return FeatureCache(self.path)

    def to_dict(self) -> dict:
        return {
            "cache": str(self.path),
            "hit": self.hit,
            "classes": self.classes,
            "splits": self.splits,
            "feature_shape": list(self.feature_shape),
            "quarantined": self.quarantined,
            "missing_classes": self.missing,
            "ignored_files": self.ignored_files,
            "ignored": self.ignored,
            "resumed_images": self.resumed_images,
            "computed": self.computed,
            "reused": self.reused,
            "fingerprinted": self.fingerprinted,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 1),
        }
