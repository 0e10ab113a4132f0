"""The labelling loop's commands: ``replay``, ``suggest`` and ``drift`` (see :mod:`pipeline.loop`)."""

from __future__ import annotations

import json

from ..config import ReplayConfig
from .options import add_settings, settings_from


def add_replay(sub) -> None:
    p = sub.add_parser("replay", help="replay the labelling loop on labelled images: which strategy "
                                      "saves labels on this data")
    p.add_argument("--features", required=True, help="a cache file written by `extract`, with "
                                                     "train and validation splits")
    add_settings(p, ReplayConfig)
    p.add_argument("--out", help="a run folder to add the replay to (then `suggest --strategy auto` "
                                 "uses its recommendation), or a new folder")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run_replay(args) -> int:
    from ..loop.replay import replay, save

    result = replay(args.features, settings_from(args, ReplayConfig))
    saved = save(result, args.out) if args.out else None
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(f"validation accuracy over {result.accuracy['random'].shape[0]} seeds, mean [95 % "
          f"interval]; below it, the paired difference from random (p):\n")
    print(result.markdown())
    print(f"all {result.train_images} training labels: {result.all_labels:.3f}")
    best = result.recommended
    last = result.labels_saved()[-1]
    print(f"recommended: {best}", end="")
    if best != "random" and last["labels"] is not None:
        print(f"; it reaches random's accuracy at {last['budget']} labels ({last['random_accuracy']:.3f}) "
              f"with {last['labels']:.0f}: {last['saved']:.0f} fewer labels", end="")
    print()
    if saved:
        print(f"written to {saved}")
    return 0


COMMANDS = {"replay": (add_replay, run_replay)}
