"""Stage 3 on real photos: does fine-tuning keep (or improve) the head's accuracy?

In one run: stage 1 (MobileNet 0.25 @224 by default) into a temporary cache,
stage 2 with the dense head only, then stage 3 from that head. Prints the
hand-off check, validation accuracy before (the rebuilt stage-2 head, through
the images) and after, the epochs run and the seconds per epoch.

Usage (the real data and weights are in ../shared; see its README):

    KERAS_HOME=... python benchmarks/bench_finetune.py --data ../shared/data/cats_and_dogs_filtered
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from _cpu import cpu_line  # this folder is on sys.path when the script runs

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import CompareConfig, ExtractConfig, compare, extract_features  # noqa: E402
from pipeline.config import FinetuneConfig  # noqa: E402
from pipeline.finetune import finetune  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--frozen-epochs", type=int, default=1)
    parser.add_argument("--unfreeze-top", type=int, default=20)
    parser.add_argument("--cache-dir", help="reuse a cache folder (default: a temporary one)")
    parser.add_argument("--plot", type=Path, help="copy the learning curves here")
    args = parser.parse_args()
    print(f"CPU: {cpu_line()}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        cache = extract_features(args.data, ExtractConfig(cache_dir=args.cache_dir or tmp), progress=False)
        print(f"stage 1: {cache.splits} in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        run = compare(cache.path, CompareConfig(classifiers=("dense",), out=f"{tmp}/run"))
        head = run.leaderboard[0]
        print(f"stage 2: dense head validation accuracy {head['validation']['accuracy']:.4f} "
              f"({head['params']}) in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        result = finetune(run.run_dir, FinetuneConfig(
            epochs=args.epochs, frozen_epochs=args.frozen_epochs, unfreeze_top=args.unfreeze_top))
        print(f"stage 3: hand-off max difference {result.handoff['max_abs_difference']:.2g} "
              f"(tolerance {result.handoff['tolerance']:g}) on {result.handoff['images']} images")
        print(f"stage 3: validation accuracy {result.before:.4f} before -> {result.after:.4f} after; "
              f"{result.epochs} epochs ({args.frozen_epochs} frozen, fine-tuning the top "
              f"{args.unfreeze_top} layers from layer {result.first_trainable_layer}), "
              f"{result.seconds_per_epoch:.1f} s per epoch, {time.perf_counter() - start:.1f} s in all")
        print("after >= before:", result.after >= result.before)
        history = (run.run_dir / "finetune" / "history.csv").read_text()
        print(history)
        if args.plot:
            args.plot.write_bytes((run.run_dir / "plots" / "finetune_history.png").read_bytes())
            print(f"learning curves: {args.plot}")


if __name__ == "__main__":
    main()
