"""What a compare run on the shared photos must keep: its leaderboard, its data audit and
what its saved models predict, without the timings and checksums that change run to run.

``python -m tests.golden.digest RUN_DIR`` prints a run's digest, so the recorded one
(``shared_run.json``) can be compared with, or made from, a run folder.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

TIMINGS = ("search_seconds", "fit_seconds", "predict_seconds")


def features_digest(cache_path: str | Path) -> str:
    """The sha256 of the train and validation features the run was fitted on."""
    from pipeline.features.view import FeatureCache

    cache, digest = FeatureCache(cache_path), hashlib.sha256()
    for split in ("train", "validation"):
        digest.update(np.ascontiguousarray(cache.load(split).features, "float32").tobytes())
    return digest.hexdigest()


def digest(run: str | Path) -> dict:
    """A run folder's leaderboard, insights and each model's validation predictions."""
    from pipeline.features.view import FeatureCache
    from pipeline.runs import load_model

    run = Path(run)
    manifest = json.loads((run / "manifest.json").read_text())
    board = [{k: v for k, v in row.items() if k not in TIMINGS}
             for row in json.loads((run / "leaderboard.json").read_text())]
    validation = FeatureCache(manifest["cache"]["path"]).load("validation")
    predicted = {name: "".join(str(int(c)) for c in load_model(run, name).predict(validation.features))
                 for name in sorted(manifest["models"])}
    models = {name: {k: v for k, v in entry.items() if k != "sha256"}
              for name, entry in sorted(manifest["models"].items())}
    return {"features_sha256": features_digest(manifest["cache"]["path"]),
            "leaderboard": board, "insights": json.loads((run / "insights.json").read_text()),
            "models": models, "validation_predictions": predicted}


if __name__ == "__main__":
    print(json.dumps(digest(sys.argv[1]), indent=1))
