"""Stage 1's commands and the cache's: extract, inspect, merge, cache and backbones."""

from __future__ import annotations

import json

from .. import backbones
from ..backbones import hub
from ..config import ExtractConfig
from ..errors import ConfigError
from .options import add_cluster, add_settings, cluster, settings_from, wants_cluster
from ..words import counted


def add_extract(sub) -> None:
    p = sub.add_parser("extract", help="stage 1: run the backbone once, cache features in HDF5")
    p.add_argument("--data", required=True, help="dataset folder (class folders, or train/validation[/test])")
    add_settings(p, ExtractConfig)
    p.add_argument("--shard", metavar="I/N",
                   help="extract only shard I of N into its own file (join them with `merge`)")
    add_cluster(p, "extract shards as Dask tasks, then merge them")
    p.add_argument("--shards", type=int, help="shards on the cluster (default: one per worker thread)")
    p.add_argument("--compare-precision", action="store_true",
                   help="with --precision int8 or bf16: extract float32 too (or read it from the store) "
                        "and say what the lower precision costs in validation accuracy, with its "
                        "interval and McNemar's test, and how much faster it extracted")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run_extract(args) -> int:
    from ..features import extract_features
    from ..features.shards import parse_shard

    config = settings_from(args, ExtractConfig)
    if args.compare_precision:
        from ..compare.precision import check

        check(config)
    shard = parse_shard(args.shard) if args.shard else None
    if shard and wants_cluster(args):
        raise ConfigError("`--shard` extracts one shard here; `--cluster`/`--workers` extract "
                          "every shard on Dask. Fix: pass one or the other.")
    if args.shards is not None and not wants_cluster(args):
        raise ConfigError("`--shards` sets how many shards run on a Dask cluster. Fix: add "
                          "`--cluster ADDRESS` or `--workers N`, or extract one shard with `--shard I/N`.")
    with cluster(args) as client:
        if client is not None:
            from ..features.cluster import extract_on_cluster

            result = extract_on_cluster(args.data, config, client, args.shards)
        else:
            result = extract_features(args.data, config,
                                      progress=False if args.no_progress else None, shard=shard)
    cost = None
    if args.compare_precision:
        from ..compare.precision import precision_cost

        cost = precision_cost(args.data, config, result)
    if args.json:
        print(json.dumps({**result.to_dict(), **({"precision_cost": cost} if cost else {})}, indent=2))
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
    if cost:
        print(cost["sentence"])
    return 0


def add_inspect(sub) -> None:
    p = sub.add_parser("inspect", help="describe a feature cache file")
    p.add_argument("file", help="a cache file written by `extract` (its path is printed there)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run_inspect(args) -> int:
    from ..features import FeatureCache

    cache = FeatureCache(args.file, allow_shard=True)
    cache.verify()  # every byte, in bounded blocks: a damaged view is refused, never shown
    summary = cache.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    key = summary["key"]
    print(summary["cache"])
    for name in ("backbone", "alpha", "weights", "image_size", "pooling", "preprocessing",
                 "decode", "orientation", "dtype"):
        print(f"  {name:<14} {key.get(name, 'ignore' if name == 'orientation' else None)}")
    for name in ("source", "layer"):  # an own model's, or a preset folder's
        if key.get(name):
            print(f"  {name:<14} {key[name]}")
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


def add_merge(sub) -> None:
    p = sub.add_parser("merge", help="join the shard files of one extraction into one cache file")
    p.add_argument("shards", nargs="+", help="every shard file, e.g. cache/NAME.shard-*.h5")
    p.add_argument("--out", help="merged file (default: the unsharded cache name, next to the shards)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run_merge(args) -> int:
    from ..features import FeatureCache
    from ..features.shards import merge

    cache = FeatureCache(merge(args.shards, args.out))
    if args.json:
        print(json.dumps(cache.summary(), indent=2))
        return 0
    print(f"{cache.path}  (merged {cache.extraction['shards']} shards, features not copied)")
    for split, n in cache.counts.items():
        print(f"  {split:<10} {n:>7} rows  features {tuple(cache.feature_shape)}")
    return 0


def add_cache(sub) -> None:
    p = sub.add_parser("cache", help="list, check or clean up the feature store and its views")
    actions = p.add_subparsers(dest="action", required=True)
    ls = actions.add_parser("ls", help="stores (spec, rows, bytes) and the views using each")
    verify = actions.add_parser("verify", help="read every stored byte against its checksum and "
                                               "list what is damaged (as git fsck does)")
    verify.add_argument("--repair", action="store_true",
                        help="move damaged files aside (into a damaged/ folder beside them), so "
                             "the next extract computes or rebuilds them")
    gc = actions.add_parser("gc", help="drop unused views, and store rows no view holds")
    gc.add_argument("--older-than", type=float, metavar="DAYS",
                    help="also drop views not used for DAYS days (default: keep every view)")
    gc.add_argument("--dry-run", action="store_true", help="say what would be dropped; change nothing")
    for q in (ls, verify, gc):
        q.add_argument("--cache-dir", default="cache", help="the cache folder (default: cache)")
        q.add_argument("--json", action="store_true", help="print one JSON object")


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def run_cache(args) -> int:
    from ..features.manage import collect_garbage, list_cache, verify_cache

    if args.action == "verify":
        report = verify_cache(args.cache_dir, args.repair)
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            for bad in report["damaged"]:
                print(f"{bad['kind']:<8}{bad['path']}: {bad['problem']}")
            moved = " (moved aside: the next extract computes them again)" if args.repair else \
                ("; `cache verify --repair` moves them aside" if report["damaged"] else "")
            print(f"checked {report['checked']} files: {len(report['damaged'])} damaged{moved}")
        return 1 if report["damaged"] and not args.repair else 0
    if args.action == "gc":
        report = collect_garbage(args.cache_dir, args.older_than, args.dry_run)
        if args.json:
            print(json.dumps(report, indent=2))
            return 0
        verb = "would drop" if args.dry_run else "dropped"
        print(f"{verb} {counted(len(report['views_dropped']), 'view')} and "
              f"{counted(report['rows_dropped'], 'store row')}"
              + ("" if args.dry_run else f", freed {_megabytes(report['bytes_freed'])}"))
        for view in report["views_dropped"]:
            print(f"  view  {view}")
        for store in report["stores"]:
            print(f"  store {store['store']}: {counted(store['rows_kept'], 'row')} kept for "
                  f"{counted(store['views'], 'view')}, "
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


def add_backbones(sub) -> None:
    p = sub.add_parser("backbones", help="list the backbones, their sizes and feature shapes")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style name filter, e.g. 'efficientnet*'")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run_backbones(args) -> int:
    if args.pattern.startswith(hub.PREFIX):
        return _list_hub(args)
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
    print("\nKerasHub presets (DINOv2, DINOv3, SigLIP, ViT, ...): `backbones 'hub:*'`; your own "
          "model: `--backbone path/to/model.keras`.")
    return 0


def _list_hub(args) -> int:
    rows = [{"name": b.name, "family": b.family, "pooling": list(backbones.registry.POOLINGS_OF[b.kind]),
             "feature": hub.FEATURES[b.kind]} for b in hub.list_presets(args.pattern)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    name = max([len("name"), *(len(r["name"]) for r in rows)])  # the longest preset sets the column
    family = max([len("family"), *(len(r["family"]) for r in rows)])
    print(f"{'name':<{name}}  {'family':<{family}}  pooling (first: default)")
    for row in rows:
        print(f"{row['name']:<{name}}  {row['family']:<{family}}  {', '.join(row['pooling'])}")
    print("\nSizes and normalisation come from each preset's image converter; weights download "
          "from Kaggle on first use.")
    return 0


COMMANDS = {
    "extract": (add_extract, run_extract), "inspect": (add_inspect, run_inspect),
    "merge": (add_merge, run_merge), "cache": (add_cache, run_cache),
    "backbones": (add_backbones, run_backbones),
}
