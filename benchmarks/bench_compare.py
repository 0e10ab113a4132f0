"""Stage 2 against stage 1: the whole comparison, timed against the extraction.

In one run:

1. stage 1: ``run_pipeline.py extract`` into a fresh cache folder (wall time,
   in its own process, so imports are counted, as a user sees them);
2. stage 2: ``run_pipeline.py compare`` on that cache with every default
   classifier and its search (wall time, in its own process), rounds times;
3. the ratio of (2) to (1), and each classifier's search and fit seconds;
4. the same two stages as Python calls in one process whose imports are
   done (``extract_features`` into another fresh folder, then ``compare``
   rounds times), as in a notebook, and their ratio;
5. what no command can avoid: a fresh process importing TensorFlow, which
   every comparison with the Keras head pays.

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

from _cpu import cpu_line  # this folder is on sys.path when the script runs

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


def in_process(data: Path, cache_dir: str, lists: list[str], rounds: int) -> None:
    """Steps 4: both stages as Python calls after the imports; prints one JSON line."""
    import keras  # noqa: F401  (imported before timing, as in a notebook)

    from pipeline import CompareConfig, ExtractConfig, compare, extract_features

    start = time.perf_counter()
    cache = extract_features(data, ExtractConfig(cache_dir=cache_dir), progress=False).path
    extract_s = time.perf_counter() - start
    walls = {}
    for classifiers in lists:
        for k in range(rounds):
            start = time.perf_counter()
            compare(cache, CompareConfig(classifiers=tuple(classifiers.split(",")),
                                         out=f"{cache_dir}/warm{k}-{classifiers}"))
            walls.setdefault(classifiers, []).append(time.perf_counter() - start)
    print(json.dumps({"extract_s": extract_s, "compare_s": walls}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--classifiers", action="append",
                        help="classifier lists to time, one per option (default: every default one)")
    parser.add_argument("--in-process", metavar="CACHE_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from pipeline.heads.registry import DEFAULTS

    lists = args.classifiers or [",".join(DEFAULTS)]
    if args.in_process:
        return in_process(args.data, args.in_process, lists, args.rounds)
    print(f"CPU: {cpu_line()}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        extract_s, out = timed(["extract", "--data", str(args.data), "--cache-dir", tmp,
                                "--no-progress", "--json"])
        extracted = json.loads(out)
        print(f"stage 1: {sum(extracted['splits'].values())} images, "
              f"{extracted['splits']}, features {extracted['feature_shape']}: {extract_s:.1f} s")
        for classifiers in lists:
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

        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        warm = subprocess.run([sys.executable, __file__, "--data", str(args.data),
                               "--rounds", str(args.rounds), "--in-process", f"{tmp}/warm",
                               *(f"--classifiers={c}" for c in lists)],
                              capture_output=True, text=True, env=env, check=True)
        warm = json.loads(warm.stdout.splitlines()[-1])
        print(f"in one process, imports done: stage 1 {warm['extract_s']:.1f} s")
        for classifiers, walls in warm["compare_s"].items():
            median = statistics.median(walls)
            print(f"    stage 2 [{classifiers}]: {' / '.join(f'{w:.1f}' for w in walls)} s, "
                  f"median {median:.1f} s = {median / warm['extract_s']:.2f} of stage 1")

        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import keras"], env=env, check=True,
                       capture_output=True)
        tf_s = time.perf_counter() - start
        print(f"a fresh process importing keras (TensorFlow): {tf_s:.1f} s = "
              f"{tf_s / extract_s:.2f} of the stage-1 command")


if __name__ == "__main__":
    main()
