"""Stage 2 against stage 1: the whole comparison, timed against the extraction.

In one run, each step in its own process (so imports are counted, as a user
sees them):

1. stage 1: ``run_pipeline.py extract`` into a fresh cache folder (wall time);
2. stage 2: ``run_pipeline.py compare`` on that cache with every default
   classifier and its search (wall time), rounds times;
3. the ratio of (2) to (1), and each classifier's search and fit seconds.

Usage (the real data and weights are in ../shared; see its README):

    KERAS_HOME=... python benchmarks/bench_compare.py --data ../shared/data/cats_and_dogs_filtered
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(args: list[str]) -> tuple[float, str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    start = time.perf_counter()
    run = subprocess.run([sys.executable, str(ROOT / "run_pipeline.py"), *args],
                         capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - start
    if run.returncode:
        sys.exit(f"{' '.join(args[:1])} failed:\n{run.stderr}")
    return seconds, run.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--classifiers", action="append",
                        help="classifier lists to time, one per option (default: every default one)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        extract_s, out = timed(["extract", "--data", str(args.data), "--cache-dir", tmp,
                                "--no-progress", "--json"])
        extracted = json.loads(out)
        print(f"stage 1: {sum(extracted['splits'].values())} images, "
              f"{extracted['splits']}, features {extracted['feature_shape']}: {extract_s:.1f} s")
        for classifiers in args.classifiers or ["logreg,dense,linear_svm,knn,hist_gbdt"]:
            walls = []
            for k in range(args.rounds):
                wall, out = timed(["compare", "--features", extracted["cache"], "--json",
                                   "--classifiers", classifiers, "--out", f"{tmp}/run{len(walls)}-{classifiers}"])
                result = json.loads(out)
                walls.append(wall)
                print(f"stage 2 [{classifiers}] round {k + 1}: {wall:.1f} s wall "
                      f"({result['seconds']:.1f} s inside compare), {wall / extract_s:.2f} of stage 1")
                for row in result["leaderboard"]:
                    print(f"    {row['classifier']:<10} val acc {row['validation']['accuracy']:.4f}  "
                          f"search {row['search_seconds']:6.2f} s  fit {row['fit_seconds']:6.2f} s  "
                          f"{row['params']}")
            median = statistics.median(walls)
            print(f"median stage 2 [{classifiers}]: {median:.1f} s; stage 2 / stage 1 = "
                  f"{median / extract_s:.2f} (targets: under 60 s, and under 0.10)")


if __name__ == "__main__":
    main()
