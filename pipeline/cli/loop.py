"""The labelling loop's commands: ``replay``, ``suggest``, ``label`` and ``drift`` (see :mod:`pipeline.loop`)."""

from __future__ import annotations

import json
from pathlib import Path

from ..config import DriftConfig, LabelConfig, ReplayConfig, SuggestConfig
from ..words import counted
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
    from ..loop.replay import check_out, replay, save

    config = settings_from(args, ReplayConfig)
    if args.out:
        check_out(args.out)  # before the replay's seconds, not after
    result = replay(args.features, config)
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


def _against_a_run(sub, name: str, what: str, folder: str, holds: str, config):
    """A command that reads a run and a folder of new images."""
    p = sub.add_parser(name, help=what)
    p.add_argument("--run", required=True, help="a run folder written by `compare` or `run`")
    p.add_argument(f"--{folder}", required=True, help=holds)
    add_settings(p, config)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def add_drift(sub) -> None:
    p = _against_a_run(sub, "drift", "is a new batch of images drawn like a run's training images?",
                       "batch", "a folder of new images", DriftConfig)
    p.add_argument("--no-record", action="store_true",
                   help="leave the run as it is (by default drift.json and a section of the "
                        "report record this batch)")


def run_drift(args) -> int:
    from ..loop.drift import drift, record
    from ..runs.folder import check_amendable

    config = settings_from(args, DriftConfig)
    if not args.no_record:
        check_amendable(Path(args.run), ", or pass `--no-record`")
    result = drift(args.run, args.batch, config)
    if not args.no_record:
        record(result, args.run, args.batch, config.permutations)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    verdict = "DRIFTED" if result.drifted else "not drifted"
    print(f"{args.batch}: {counted(result.images, 'image')} against "
          f"{counted(result.reference_images, 'training image')}: MMD p = {result.p_value:.4g} "
          f"({verdict} at {config.level})")
    print(f"predicted classes ({result.model}), batch against held-out images:")
    for name, share in result.predicted_share.items():
        print(f"  {name:<20} {share:6.1%}  {result.reference_share[name]:6.1%}")
    if result.share_p_value is not None:
        print(f"  chi-square p = {result.share_p_value:.4g}")
    print("most novel (1 is typical of the training images):")
    for item in result.novel:
        print(f"  {item['score']:7.2f}{' novel' if item['beyond_training'] else '      '}  {item['path']}")
    for bad in result.unreadable:
        print(f"  unreadable: {bad['path']}: {bad['reason']}")
    return 0


def add_suggest(sub) -> None:
    p = _against_a_run(sub, "suggest", "which unlabelled images to label next, ranked against a run",
                       "pool", "a folder of unlabelled images", SuggestConfig)
    p.add_argument("--out", metavar="FILE", help="also write a page of thumbnails to label from (.html)")


def run_suggest(args) -> int:
    from ..loop.suggest import suggest, write_page

    result = suggest(args.run, args.pool, settings_from(args, SuggestConfig))
    page = write_page(result, args.out, args.run) if args.out else None
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(f"label these first ({result.strategy}, {result.chosen_by}); "
          f"{result.already_labelled} of {counted(result.pool, 'image')} already labelled are left out:")
    for i, item in enumerate(result.suggestions, 1):
        print(f"  {i:>3}. {item['path']}  {item['why']}, predicted "
              f"{item['predicted']} {item['probability']:.2f}")
    for bad in result.unreadable:
        print(f"  unreadable: {bad['path']}: {bad['reason']}")
    if page:
        print(f"page: {page}")
    return 0


def add_label(sub) -> None:
    p = _against_a_run(sub, "label", "label the suggested photos in a local page; the head retrains "
                                     "on stored features after each batch", "pool",
                       "a folder of unlabelled photos (only read)", LabelConfig)
    p.add_argument("--into", required=True, help="where the labels go: labels.csv and a copy of each "
                                                 "labelled photo in a folder per class (a new or empty "
                                                 "folder, or one `label` wrote: it resumes)")


def run_label(args) -> int:
    from ..loop.label import label

    result = label(args.run, args.pool, args.into, settings_from(args, LabelConfig),
                   say=lambda url: print(url, flush=True))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    before, after = result["before"], result["after"]
    print(f"{counted(result['labels'], 'label')} in {result['into']}; validation accuracy "
          f"{before['accuracy']:.3f} -> {after['accuracy']:.3f} [{after['interval'][0]:.3f}, "
          f"{after['interval'][1]:.3f}]")
    print(f"the run's photos and the new labels, as one dataset: {result['dataset']}")
    print("train on them (every photo's features are stored: no forward pass):")
    print(f"  {result['next']}")
    return 0


COMMANDS = {"replay": (add_replay, run_replay), "suggest": (add_suggest, run_suggest),
            "label": (add_label, run_label), "drift": (add_drift, run_drift)}
