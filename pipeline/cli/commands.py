"""The commands: ``add_<command>`` declares its options, ``run_<command>`` carries it out, and
:data:`COMMANDS` lists each pair once, in the order ``--help`` shows them."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from .._files import write_new
from ..config import CompareConfig, ExportConfig, ExtractConfig, FinetuneConfig, PredictConfig, RunConfig
from ..errors import ConfigError
from . import loop, stage1
from .options import OVERRIDE, add_cluster, add_settings, cluster, overrides_from, settings_from
from ..words import counted, leakage

def add_compare(sub) -> None:
    p = sub.add_parser("compare", help="stage 2: compare classifiers on a feature cache")
    p.add_argument("--features", required=True, help="a cache file written by `extract`")
    add_settings(p, CompareConfig)
    add_cluster(p, "grid searches spread over its workers")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run_compare(args) -> int:
    from ..compare import compare

    config = settings_from(args, CompareConfig)
    with cluster(args) as client:
        result = compare(args.features, config, cluster=client)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(result.markdown)
    print(f"recommended: {result.best}; run folder: {result.run_dir} ({result.seconds:.1f} s)")
    _say_audit(result.insights, result.report)
    return 0


def _say_audit(insights: dict | None, report) -> None:
    if insights is None:
        return
    print(f"data audit: {leakage(insights)}, "
          f"{counted(insights['suspected_label_errors'].get('found', 0), 'suspected label error')}")
    print(f"report: {report}")


def add_classifiers(sub) -> None:
    p = sub.add_parser("classifiers", help="list the classifiers and the parameters each searches")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run_classifiers(args) -> int:
    from ..heads.registry import CLASSIFIERS

    rows = [{"name": c.name, "summary": c.summary, "searched": c.grid,
             "class_weight": c.class_weight is not None, "saved_as": f".{c.saved_as}" if c.saved_as == "keras" else c.saved_as}
            for c in CLASSIFIERS.values()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        searched = "; ".join(f"{k} in {v}" for k, v in row["searched"].items()) or "-"
        print(f"{row['name']:<11} {row['summary']}")
        print(f"{'':<11} searched on validation: {searched}; saved as {row['saved_as']}"
              f"{'' if row['class_weight'] else '; no class weights'}")
    return 0


def add_finetune(sub) -> None:
    p = sub.add_parser("finetune", help="stage 3: fine-tune end to end from a run's dense head")
    p.add_argument("--run", required=True, help="a run folder written by `compare` with a dense head")
    add_settings(p, FinetuneConfig)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run_finetune(args) -> int:
    from ..finetune import finetune

    config = settings_from(args, FinetuneConfig)
    result = finetune(args.run, config)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(f"{result.model_path}: validation accuracy {result.before:.4f} -> {result.after:.4f} "
          f"in {counted(result.epochs, 'epoch')} ({result.seconds_per_epoch:.1f} s each)")
    print(f"hand-off check: max difference {result.handoff['max_abs_difference']:.2g} "
          f"on {result.handoff['images']} images")
    if result.kept_because:
        print(f"note: {result.kept_because}")
    return 0


def add_predict(sub) -> None:
    p = sub.add_parser("predict", help="classify images or folders with a model of a run")
    p.add_argument("--run", required=True, help="a run folder written by `compare` or `run`")
    p.add_argument("paths", nargs="+", metavar="PATH", help="images or folders")
    add_settings(p, PredictConfig)
    p.add_argument("--out", help="write CSV (.csv) or JSON (.json) here instead of printing CSV")
    p.add_argument("--export", metavar="DIR", help="also save the model as .keras and SavedModel")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run_predict(args) -> int:
    from ..deploy.export import keras_files
    from ..predict import predict

    config = settings_from(args, PredictConfig)
    if args.out:
        _refuse_taken(Path(args.out))  # before any work
    result = predict(args.run, args.paths, config)
    text = json.dumps(result.to_dict(), indent=2) if args.json else result.to_csv()
    if args.out:
        as_json = args.out.lower().endswith(".json")
        try:
            write_new(Path(args.out), (json.dumps(result.to_dict(), indent=2) if as_json
                                       else result.to_csv()).encode())
        except FileExistsError:
            _refuse_taken(Path(args.out))
        print(f"{len(result.rows)} predictions ({len(result.unreadable)} unreadable) -> {args.out}")
    else:
        print(text, end="" if text.endswith("\n") else "\n")
    if args.export:
        for kind, path in keras_files(args.run, result.model, args.export, config.weights).items():
            print(f"exported {kind}: {path}", file=sys.stderr)
    return 0


def _refuse_taken(out: Path) -> None:
    """An output file is written new: a file of that name may be the user's, and is never replaced."""
    if out.exists() or out.is_symlink():
        raise ConfigError(f"`--out` {out} already exists, and the pipeline never replaces a file it "
                          "cannot tell it wrote. Fix: pass a new file name, or move that file away.")


def add_run(sub) -> None:
    p = sub.add_parser("run", help="every stage in order (the default command): extract, compare, "
                                   "[finetune], report")
    p.add_argument("--config", help="a TOML file (e.g. recipes/tf_tutorial.toml, or a run's run.toml)")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.KEY=VALUE",
                   help="override one setting, repeatable (e.g. extract.image_size=96, "
                        "compare.params.dense.epochs=2, finetune.epochs=1)")
    add_settings(p, RunConfig, only=("data", "stages", "name", "out", "overwrite"), prefix=OVERRIDE)
    add_settings(p, ExtractConfig, only=("backbone", "weights", "cache_dir"), prefix=f"{OVERRIDE}extract.")
    p.add_argument("--batch-size", type=int, metavar="N",
                   help="images per batch in stage 1 and stage 3: trades memory for speed (sets "
                        "extract.batch_size and finetune.batch_size)")
    p.add_argument("--demo", action="store_true",
                   help="generated images, random weights, every stage: works offline in about two "
                        "minutes on a 2-core CPU")
    p.add_argument("--finetune", action="store_true", help="also run stage 3")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run_run(args) -> int:
    from ..config import load_run_config
    from ..data.demo import SETTINGS
    from ..workflow import run_pipeline

    sizes = [f"{stage}.batch_size={args.batch_size}" for stage in ("extract", "finetune")] \
        if args.batch_size is not None else []
    config = load_run_config(args.config, overrides_from(args) + sizes + args.overrides,
                             SETTINGS if args.demo else None)
    if args.finetune and "finetune" not in config.stages:
        config = replace(config, stages=(*config.stages, "finetune"))
    result = run_pipeline(config, progress=False if args.no_progress else None)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    if result.leaderboard:
        print(result.leaderboard)
    done = ", ".join(f"{stage} {how}" for stage, how in result.stages.items())
    print(f"features: {result.cache} ({done}; {result.seconds:.1f} s)")
    outputs = result.outputs()
    for name in ("leaderboard", "report"):
        if name in outputs:
            print(f"{name}: {outputs[name]}")
    if "config" in outputs:
        print(f"reproduce: python run_pipeline.py run --config {outputs['config']}")
    return 0


def add_export(sub) -> None:
    p = sub.add_parser("export", help="write a model of a run as Keras, SavedModel, TFLite or OpenVINO, "
                                      "checked against predict on validation images")
    p.add_argument("--run", required=True, help="a run folder written by `compare` or `run`")
    add_settings(p, ExportConfig)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run_export(args) -> int:
    from ..deploy.export import export

    config = settings_from(args, ExportConfig)
    record = export(args.run, config)
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    check = record["check"]
    change = check["accuracy"]["change"]
    print(f"{Path(config.out) / record['file']}  ({record['bytes'] / 2**20:.1f} MiB, {record['format']}"
          f"{', int8' if record['quantize'] == 'int8' else ''})")
    print(f"checked on {check['images']} validation images: probabilities within "
          f"{check['max_abs_difference']:.2g} of predict; accuracy {check['accuracy']['export']:.3f} "
          f"({change:+.3f} against predict's)")
    default = check.get("runtime_default")
    if default:
        print(f"compiled without settings, OpenVINO runs {default['precision']} on this CPU: probabilities "
              f"within {default['max_abs_difference']:.2g}, accuracy {default['accuracy']['export']:.3f} "
              f"({default['accuracy']['change']:+.3f}); export.json's runtime says how to load it as checked")
    return 0


COMMANDS = {
    "run": (add_run, run_run), **stage1.COMMANDS,
    "compare": (add_compare, run_compare), "finetune": (add_finetune, run_finetune),
    "predict": (add_predict, run_predict), "export": (add_export, run_export),
    "classifiers": (add_classifiers, run_classifiers), **loop.COMMANDS,
}
