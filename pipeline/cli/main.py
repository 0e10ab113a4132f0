"""Command line: ``python run_pipeline.py <command> ...``.

User errors (:class:`PipelineError`) print one message and exit with status 2,
without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ..console import native_logs_filtered
from ..errors import PipelineError
from . import commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_pipeline.py",
        description="Transfer learning on cached features: extract once, compare classifiers in seconds.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    commands.add_run(sub)
    commands.add_extract(sub)
    p = sub.add_parser("inspect", help="describe a feature cache file")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = sub.add_parser("merge", help="join the shard files of one extraction into one cache file")
    p.add_argument("shards", nargs="+", help="every shard file, e.g. cache/NAME.shard-*.h5")
    p.add_argument("--out", help="merged file (default: the unsharded cache name, next to the shards)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    commands.add_cache(sub)
    p = sub.add_parser("backbones", help="list the backbones, their sizes and feature shapes")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style name filter, e.g. 'efficientnet*'")
    p.add_argument("--json", action="store_true")
    commands.add_compare(sub)
    commands.add_finetune(sub)
    commands.add_predict(sub)
    commands.add_export(sub)
    p = sub.add_parser("classifiers", help="list the classifiers and the parameters each searches")
    p.add_argument("--json", action="store_true")
    return parser


COMMANDS = {name: getattr(commands, f"run_{name}") for name in (
    "run", "extract", "inspect", "merge", "cache", "backbones", "compare", "classifiers", "finetune",
    "predict", "export")}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep TensorFlow's C++ chatter out
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv if argv else ["run"])  # no arguments: the main job
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not args.verbose:  # TensorFlow's own Python-side info lines
        logging.getLogger("tensorflow").setLevel(logging.WARNING)
    with native_logs_filtered():  # off under -v: debug logging keeps every line
        try:
            return COMMANDS[args.command](args)
        except PipelineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
