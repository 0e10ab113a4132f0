"""Command line: ``python run_pipeline.py <command> ...``.

User errors (:class:`PipelineError`) print one message and exit with status 2,
without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import threading
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path

from . import backbones
from .config import (COMPUTE_PRECISIONS, DECODE_MODES, DTYPES, ENGINES, MAX_PIXELS, ORIENTATIONS,
                     REFITS, SCORINGS, CompareConfig, ExtractConfig, FinetuneConfig)
from .data import SplitConfig
from .errors import ConfigError, PipelineError

log = logging.getLogger("pipeline")

# Native libraries (TensorFlow's C++ runtime, absl, CUDA probes) write to file
# descriptor 2 directly, past Python's logging, and TF_CPP_MIN_LOG_LEVEL no
# longer silences them all; so, unless -v, stderr passes through a filter.
# libjpeg's own complaints about a broken file go too: the quarantine line says it.
_NATIVE_NOISE = re.compile(
    rb"^(?:[IWE]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\] |WARNING: All log messages before "
    rb"absl::InitializeLog\(\)|.*(?:cuInit|cudart_stub|TF-TRT|oneDNN custom operations|This TensorFlow "
    rb"binary is optimized|Unable to register cu(?:DNN|FFT|BLAS) factory|computation placer already)"
    rb"|(?:Corrupt JPEG data|Premature end of JPEG file|Improper call to JPEG library|Invalid JPEG "
    rb"file structure|Not a JPEG file|Bogus |Unsupported JPEG))")


_END = b"\x00end of the filtered stderr\n"


@contextmanager
def _native_logs_filtered():
    """Drop the native libraries' log lines from stderr; everything else passes through."""
    sys.stderr.flush()
    saved = os.dup(2)
    read, write = os.pipe()
    os.dup2(write, 2)
    os.close(write)
    drained = threading.Event()

    def pump():
        # Child processes (joblib, Dask) inherit the pipe, so it is read until
        # its last writer is gone; the marker says when this process's lines are out.
        with os.fdopen(read, "rb") as lines, os.fdopen(os.dup(saved), "wb", buffering=0) as out:
            for line in lines:
                if line == _END:
                    drained.set()
                elif not _NATIVE_NOISE.match(line):
                    out.write(line)
        drained.set()

    threading.Thread(target=pump, name="stderr-filter", daemon=True).start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.write(2, _END)
        drained.wait(timeout=5)
        os.dup2(saved, 2)
        os.close(saved)


def _add_extract(sub) -> None:
    p = sub.add_parser("extract", help="stage 1: run the backbone once, cache features in HDF5")
    p.add_argument("--data", required=True, help="dataset folder (class folders, or train/validation[/test])")
    p.add_argument("--backbone", default=backbones.DEFAULT_BACKBONE, help="see the `backbones` command")
    p.add_argument("--alpha", type=float, help="width multiplier (MobileNet family)")
    p.add_argument("--image-size", type=int, help="input side in px (default: the backbone's)")
    p.add_argument("--pooling", default="avg", help="avg, max or none (keep the spatial map)")
    p.add_argument("--weights", default="imagenet", help="imagenet, none (random) or a weights file")
    p.add_argument("--dtype", default="float32", choices=DTYPES)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--chunk-size", type=int, default=512, help="images per resumable chunk")
    p.add_argument("--decode", default="auto", choices=DECODE_MODES,
                   help="auto: decode large JPEGs at reduced scale; full: every pixel")
    p.add_argument("--orientation", default="exif", choices=ORIENTATIONS,
                   help="exif: turn photos upright by their EXIF orientation; ignore: stored pixels")
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                   help="quarantine images whose header claims more pixels, before decoding")
    p.add_argument("--cache-dir", default="cache")
    p.add_argument("--seed", type=int, default=0, help="seed of random weights")
    p.add_argument("--engine", default="auto", choices=ENGINES,
                   help="forward pass: auto (OpenVINO without a GPU, else Keras), keras or openvino")
    p.add_argument("--precision", default="float32", choices=COMPUTE_PRECISIONS,
                   help="bf16: OpenVINO on a CPU with bfloat16 units (other numbers: a spec of its own)")
    p.add_argument("--validation-fraction", type=float, default=0.1,
                   help="share sent to validation when the folder has no split folders")
    p.add_argument("--test-fraction", type=float, default=0.1,
                   help="share sent to test when the folder has no split folders")
    p.add_argument("--test-from-validation", type=float, default=0.0,
                   help="share of validation moved to test when there is no test split (e.g. 0.2)")
    p.add_argument("--shard", metavar="I/N",
                   help="extract only shard I of N into its own file (join them with `merge`)")
    _add_cluster(p, "extract shards as Dask tasks, then merge them")
    p.add_argument("--shards", type=int, help="shards on the cluster (default: one per worker thread)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _add_cluster(p, what: str) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--cluster", metavar="ADDRESS", help=f"a Dask scheduler ({what})")
    group.add_argument("--workers", type=int, help=f"start a local Dask cluster of N processes ({what})")


def _wants_cluster(args) -> bool:
    return bool(args.cluster) or args.workers is not None


@contextmanager
def _cluster(args):
    """The Dask client the flags ask for, or None."""
    if not _wants_cluster(args):
        yield None
        return
    from .features.cluster import close, connect

    client = connect(args.cluster, args.workers)
    try:
        yield client
    finally:
        close(client)


def _run_extract(args) -> int:
    from .features import extract_features
    from .features.shards import parse_shard

    config = ExtractConfig(
        backbone=args.backbone, alpha=args.alpha, image_size=args.image_size,
        pooling=args.pooling, weights=args.weights, dtype=args.dtype,
        batch_size=args.batch_size, chunk_size=args.chunk_size, decode=args.decode,
        orientation=args.orientation, max_pixels=args.max_pixels,
        cache_dir=args.cache_dir, seed=args.seed, engine=args.engine, precision=args.precision,
        split=SplitConfig(args.validation_fraction, args.test_fraction, args.test_from_validation),
    )
    shard = parse_shard(args.shard) if args.shard else None
    if shard and _wants_cluster(args):
        raise ConfigError("`--shard` extracts one shard here; `--cluster`/`--workers` extract "
                          "every shard on Dask. Fix: pass one or the other.")
    if args.shards is not None and not _wants_cluster(args):
        raise ConfigError("`--shards` sets how many shards run on a Dask cluster. Fix: add "
                          "`--cluster ADDRESS` or `--workers N`, or extract one shard with `--shard I/N`.")
    with _cluster(args) as client:
        if client is not None:
            from .features.cluster import extract_on_cluster

            result = extract_on_cluster(args.data, config, client, args.shards)
        else:
            result = extract_features(args.data, config,
                                      progress=False if args.no_progress else None, shard=shard)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    state = "cache hit" if result.hit else f"{result.images_per_second:.0f} images/s"
    print(f"{result.path}  ({state}, {result.seconds:.1f} s)")
    print(f"  computed {result.computed} images, reused {result.reused} rows from the feature store")
    for split, n in result.splits.items():
        print(f"  {split:<10} {n:>7} rows  features {tuple(result.feature_shape)}")
    for split, classes in result.missing.items():
        print(f"  note: {split} has no images of {', '.join(classes)}")
    if result.quarantined:
        print(f"  quarantined {len(result.quarantined)} unreadable images:")
        for q in result.quarantined:
            print(f"    {q['path']} ({q['split']}): {q['reason']}")
    return 0


def _run_inspect(args) -> int:
    from .features import FeatureCache

    summary = FeatureCache(args.file, allow_shard=True).summary()
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    key = summary["key"]
    print(summary["cache"])
    for name in ("backbone", "alpha", "weights", "image_size", "pooling", "preprocessing",
                 "decode", "orientation", "dtype"):
        print(f"  {name:<14} {key.get(name, 'ignore' if name == 'orientation' else None)}")
    print(f"  {'classes':<14} {', '.join(summary['classes'])}")
    print(f"  {'feature shape':<14} {tuple(summary['feature_shape'])}")
    for split, n in summary["splits"].items():
        print(f"  {split:<14} {n} rows")
    ext = summary["extraction"]
    if ext:
        print(f"  {'extraction':<14} {ext['images']} images in {ext['seconds']} s "
              f"({ext['images_per_second']} images/s)")
    if summary["shard"]:
        print(f"  {'shard':<14} {summary['shard']['index']} of {summary['shard']['count']}")
    print(f"  {'created':<14} {summary['created']} from {summary['data_root']}")
    if summary["store"]:
        print(f"  {'store':<14} {summary['store']}")
    print(f"  {'versions':<14} " + ", ".join(f"{k} {v}" for k, v in summary["library_versions"].items()))
    print(f"  {'quarantined':<14} {len(summary['quarantined'])}")
    for q in summary["quarantined"]:
        print(f"    {q['path']} ({q['split']}): {q['reason']}")
    return 0


def _run_merge(args) -> int:
    from .features import FeatureCache
    from .features.shards import merge

    cache = FeatureCache(merge(args.shards, args.out))
    if args.json:
        print(json.dumps(cache.summary(), indent=2))
        return 0
    print(f"{cache.path}  (merged {cache.extraction['shards']} shards, features not copied)")
    for split, n in cache.counts.items():
        print(f"  {split:<10} {n:>7} rows  features {tuple(cache.feature_shape)}")
    return 0


def _add_cache(sub) -> None:
    p = sub.add_parser("cache", help="list or clean up the feature store and its views")
    actions = p.add_subparsers(dest="action", required=True)
    ls = actions.add_parser("ls", help="stores (spec, rows, bytes) and the views using each")
    gc = actions.add_parser("gc", help="drop unused views, and store rows no view holds")
    gc.add_argument("--older-than", type=float, metavar="DAYS",
                    help="also drop views not used for DAYS days (default: keep every view)")
    gc.add_argument("--dry-run", action="store_true", help="say what would be dropped; change nothing")
    for q in (ls, gc):
        q.add_argument("--cache-dir", default="cache")
        q.add_argument("--json", action="store_true", help="print one JSON object")


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _run_cache(args) -> int:
    from .features.manage import collect_garbage, list_cache

    if args.action == "gc":
        report = collect_garbage(args.cache_dir, args.older_than, args.dry_run)
        if args.json:
            print(json.dumps(report, indent=2))
            return 0
        verb = "would drop" if args.dry_run else "dropped"
        print(f"{verb} {len(report['views_dropped'])} views and {report['rows_dropped']} store rows"
              + ("" if args.dry_run else f", freed {_megabytes(report['bytes_freed'])}"))
        for view in report["views_dropped"]:
            print(f"  view  {view}")
        for store in report["stores"]:
            print(f"  store {store['store']}: {store['rows_kept']} rows kept for {store['views']} views, "
                  f"{store['rows_dropped']} dropped")
        return 0
    listing = list_cache(args.cache_dir)
    if args.json:
        print(json.dumps(listing, indent=2))
        return 0
    for store in listing["stores"]:
        spec = store["spec"]
        print(f"{store['store']}  ({spec['backbone']}, {spec['image_size']} px, {spec['pooling']} "
              f"pooling, weights {spec['weights']}, {spec['dtype']})")
        print(f"  {store['rows']} rows, {_megabytes(store['bytes'])} in {store['segments']} segments, "
              f"{store['rejected']} unreadable images; last used {store['last_used'] or 'never'}")
        for view in store["views"]:
            print(f"    {view['path']}  {view['rows']} rows, last used {view['last_used']}")
    for view in listing["views_without_store"]:
        print(f"{view['path']}  {view['rows']} rows (format 1, outside the store; `cache gc` leaves it)")
    for bad in listing["unreadable"]:
        print(f"{bad['path']}  not readable: {bad['problem']}")
    if not (listing["stores"] or listing["views_without_store"] or listing["unreadable"]):
        print(f"{listing['cache_dir']} holds no features yet")
    return 0


def _run_backbones(args) -> int:
    rows = backbones.list_backbones(args.pattern)
    if args.json:
        print(json.dumps([
            {"name": b.name, "keras": f"keras.applications.{b.constructor}",
             "default_size": b.default_size, "min_size": b.min_size,
             "preprocessing": b.preprocessing, "alphas": list(b.alphas),
             "default_alpha": b.default_alpha, "features_avg": list(b.feature_shape("avg")),
             "features_none": list(b.feature_shape("none"))}
            for b in rows], indent=2))
        return 0
    print(f"{'name':<20} {'keras.applications':<18} {'size':>4} {'min':>4} {'pooled':>7} "
          f"{'spatial (none)':>15}  preprocessing  alpha")
    for b in rows:
        alpha = f"{b.default_alpha:g} of {'/'.join(f'{a:g}' for a in b.alphas)}" if b.alphas else "-"
        print(f"{b.name:<20} {b.constructor:<18} {b.default_size:>4} {b.min_size:>4} "
              f"{b.channels:>7} {str(b.feature_shape('none')):>15}  {b.preprocessing:<13}  {alpha}")
    return 0


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="stage 2: compare classifiers on a feature cache")
    p.add_argument("--features", required=True, help="a cache file written by `extract`")
    p.add_argument("--classifiers", default=",".join(CompareConfig.classifiers),
                   help="comma-separated registry names (see the `classifiers` command)")
    p.add_argument("--param", action="append", default=[], metavar="CLF.NAME=V[,V...]",
                   help="one value fixes a parameter, several are searched; repeatable "
                        "(e.g. logreg.C=0.01,0.1 dense.epochs=30)")
    p.add_argument("--scoring", default="accuracy", choices=SCORINGS,
                   help="validation metric that selects and ranks")
    p.add_argument("--refit", default="train", choices=REFITS,
                   help="fit the final models on train, or on train+validation before the test")
    p.add_argument("--class-weight", choices=("balanced",), help="weight classes by inverse frequency")
    p.add_argument("--spatial", default="flatten", choices=("flatten", "avg", "max"),
                   help="how spatial features (pooling none) become vectors")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=-1, help="worker processes for the scikit-learn models (-1: one per two cores)")
    p.add_argument("--memory-budget", type=float, default=0, metavar="MB",
                   help="stream features from the file when they need more (0: half of the RAM)")
    _add_cluster(p, "grid searches spread over its workers")
    p.add_argument("--out", help="run folder (default: runs/<cache name>-<time>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _run_compare(args) -> int:
    from .classifiers import parse_param
    from .compare import compare

    params: dict[str, dict[str, list]] = {}
    for text in args.param:
        name, param, values = parse_param(text)
        params.setdefault(name, {})[param] = values
    config = CompareConfig(
        classifiers=tuple(n.strip() for n in args.classifiers.split(",") if n.strip()),
        params=params, scoring=args.scoring, refit=args.refit, class_weight=args.class_weight,
        spatial=args.spatial, seed=args.seed, n_jobs=args.jobs,
        memory_budget_mb=args.memory_budget, out=args.out,
        overwrite=args.overwrite,
    )
    with _cluster(args) as client:
        result = compare(args.features, config, cluster=client)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(result.markdown)
    print(f"best: {result.best}; run folder: {result.run_dir} ({result.seconds:.1f} s)")
    return 0


def _run_classifiers(args) -> int:
    from .classifiers import CLASSIFIERS

    rows = [{"name": c.name, "summary": c.summary, "searched": c.grid,
             "class_weight": c.class_weight is not None, "saved_as": ".keras" if c.keras else "joblib"}
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


def _add_finetune(sub) -> None:
    p = sub.add_parser("finetune", help="stage 3: fine-tune end to end from a run's dense head")
    p.add_argument("--run", required=True, help="a run folder written by `compare` with a dense head")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--unfreeze-from", help="first base layer to train: an index or a name")
    where.add_argument("--unfreeze-top", type=int, help="train the top N base layers (default 20)")
    p.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs (early stopping may end sooner)")
    p.add_argument("--frozen-epochs", type=int, default=0,
                   help="epochs with the base frozen and augmentation on, first")
    p.add_argument("--learning-rate", type=float, help="default: a tenth of the head's")
    p.add_argument("--base-learning-rate", type=float,
                   help="a lower rate for the unfrozen base layers (discriminative fine-tuning)")
    p.add_argument("--optimizer", choices=("adam", "rmsprop", "sgd"), help="default: the head's")
    p.add_argument("--momentum", type=float, help="momentum of sgd (default: the head's)")
    p.add_argument("--augment", default="flip,rotate=0.2,zoom=0.2",
                   help="flip[=horizontal|vertical|horizontal_and_vertical],rotate=F,zoom=F,translate=F,"
                        "shear=F,contrast=F or none")
    p.add_argument("--train-bn", action="store_true", help="train BatchNormalization layers too")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--patience", type=int, default=3, help="early stopping on validation accuracy")
    p.add_argument("--tensorboard", action="store_true", help="TensorBoard logs in <run>/finetune/tensorboard")
    p.add_argument("--data", help="the image folder, if it moved since extraction")
    p.add_argument("--weights", help="the weights file stage 1 used, if it used one")
    p.add_argument("--precision", default="auto", choices=("auto", "float32", "mixed_float16"),
                   help="auto: mixed float16 when a GPU is present")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _run_finetune(args) -> int:
    from .finetune import finetune

    config = FinetuneConfig(
        unfreeze_from=args.unfreeze_from, unfreeze_top=args.unfreeze_top, epochs=args.epochs,
        frozen_epochs=args.frozen_epochs, learning_rate=args.learning_rate,
        base_learning_rate=args.base_learning_rate,
        optimizer=args.optimizer, momentum=args.momentum, augment=args.augment, train_bn=args.train_bn,
        batch_size=args.batch_size, patience=args.patience, tensorboard=args.tensorboard,
        data=args.data, weights=args.weights, precision=args.precision, seed=args.seed,
    )
    result = finetune(args.run, config)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(f"{result.model_path}: validation accuracy {result.before:.4f} -> {result.after:.4f} "
          f"in {result.epochs} epochs ({result.seconds_per_epoch:.1f} s each)")
    print(f"hand-off check: max difference {result.handoff['max_abs_difference']:.2g} "
          f"on {result.handoff['images']} images")
    return 0


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="classify images or folders with a model of a run")
    p.add_argument("--run", required=True)
    p.add_argument("--model", default="best", help="best, finetuned, dense, logreg, ...")
    p.add_argument("paths", nargs="+", metavar="PATH", help="images or folders")
    p.add_argument("--out", help="write CSV (.csv) or JSON (.json) here instead of printing CSV")
    p.add_argument("--export", metavar="DIR", help="also save the model as .keras and SavedModel")
    p.add_argument("--weights", help="the weights file stage 1 used, if it used one")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--engine", default="auto", choices=ENGINES,
                   help="what computes a stage-2 model's features (as extract's --engine)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _run_predict(args) -> int:
    from .predict import export, predict

    result = predict(args.run, args.paths, args.model, args.batch_size, args.weights, args.engine)
    text = json.dumps(result.to_dict(), indent=2) if args.json else result.to_csv()
    if args.out:
        as_json = args.out.lower().endswith(".json")
        Path(args.out).write_text(json.dumps(result.to_dict(), indent=2) if as_json else result.to_csv())
        print(f"{len(result.rows)} predictions ({len(result.unreadable)} unreadable) -> {args.out}")
    else:
        print(text, end="" if text.endswith("\n") else "\n")
    if args.export:
        for kind, path in export(args.run, result.model, args.export, args.weights).items():
            print(f"exported {kind}: {path}", file=sys.stderr)
    return 0


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="every stage in order (the default command): extract, compare, "
                                   "[finetune], report")
    p.add_argument("--config", help="a TOML file (e.g. recipes/tf_tutorial.toml, or a run's run.toml)")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.KEY=VALUE",
                   help="override one setting, repeatable (e.g. extract.image_size=96, "
                        "compare.params.dense.epochs=2, finetune.epochs=1)")
    p.add_argument("--data", help="an image folder, keras:cats_and_dogs_filtered, tfds:NAME or demo "
                                   "(default: keras:cats_and_dogs_filtered)")
    p.add_argument("--demo", action="store_true",
                   help="generated images, random weights, every stage: works offline in about a minute")
    p.add_argument("--finetune", action="store_true", help="also run stage 3")
    p.add_argument("--backbone", help="see the `backbones` command")
    p.add_argument("--weights", help="imagenet, none (random) or a weights file")
    p.add_argument("--cache-dir", help="folder of the feature caches (default: cache)")
    p.add_argument("--name", help="run folder runs/<name>")
    p.add_argument("--out", help="run folder, instead of runs/<name>")
    p.add_argument("--overwrite", action="store_true", help="replace a run folder made with other settings")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _run_run(args) -> int:
    from .config import load_run_config
    from .demo import SETTINGS
    from .workflow import run_pipeline

    flags = {"data": args.data, "extract.backbone": args.backbone, "extract.weights": args.weights,
             "extract.cache_dir": args.cache_dir, "name": args.name, "out": args.out}
    overrides = [f"{k}={json.dumps(v)}" for k, v in flags.items() if v is not None]
    if args.overwrite:
        overrides.append("overwrite=true")
    config = load_run_config(args.config, overrides + args.overrides, SETTINGS if args.demo else None)
    if args.finetune and "finetune" not in config.stages:
        config = replace(config, stages=(*config.stages, "finetune"))
    result = run_pipeline(config, progress=False if args.no_progress else None)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(result.leaderboard)
    done = ", ".join(f"{stage} {how}" for stage, how in result.stages.items())
    print(f"report: {result.run_dir / 'leaderboard.md'} ({done}; {result.seconds:.1f} s)")
    print(f"reproduce: python run_pipeline.py run --config {result.run_dir / 'run.toml'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_pipeline.py",
        description="Transfer learning on cached features: extract once, compare classifiers in seconds.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_extract(sub)
    p = sub.add_parser("inspect", help="describe a feature cache file")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = sub.add_parser("merge", help="join the shard files of one extraction into one cache file")
    p.add_argument("shards", nargs="+", help="every shard file, e.g. cache/NAME.shard-*.h5")
    p.add_argument("--out", help="merged file (default: the unsharded cache name, next to the shards)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_cache(sub)
    p = sub.add_parser("backbones", help="list the backbones, their sizes and feature shapes")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style name filter, e.g. 'efficientnet*'")
    p.add_argument("--json", action="store_true")
    _add_compare(sub)
    _add_finetune(sub)
    _add_predict(sub)
    p = sub.add_parser("classifiers", help="list the classifiers and the parameters each searches")
    p.add_argument("--json", action="store_true")
    return parser


COMMANDS = {"run": _run_run, "extract": _run_extract, "inspect": _run_inspect,
            "merge": _run_merge, "cache": _run_cache, "backbones": _run_backbones,
            "compare": _run_compare, "classifiers": _run_classifiers, "finetune": _run_finetune,
            "predict": _run_predict}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep TensorFlow's C++ chatter out
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv if argv else ["run"])  # no arguments: the main job
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not args.verbose:  # TensorFlow's own Python-side info lines
        logging.getLogger("tensorflow").setLevel(logging.WARNING)
    with nullcontext() if args.verbose else _native_logs_filtered():
        try:
            return COMMANDS[args.command](args)
        except PipelineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
