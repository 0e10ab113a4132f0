"""Stage 1 with and without glibc keeping freed memory (``pipeline.data.allocator``).

Each round runs the whole extraction of the dataset twice, in fresh
processes and fresh caches, alternating: once as the pipeline runs it, once
with malloc left at its defaults (freed memory at the top of a heap goes
back to the kernel). Prints the extraction's ``images_per_second``, the
process's minor page faults and its kernel CPU time, then the medians.

Usage (the real data and weights are in ../shared; see its README):

    KERAS_HOME=... python benchmarks/bench_allocator.py --data ../shared/data/cats_and_dogs_filtered
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _cpu import cpu_line  # this folder is on sys.path when the script runs

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, os, resource, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
sys.path.insert(0, {root!r})
from pipeline.data import allocator
if {default!r}:
    allocator.keep_freed_memory = lambda: False  # malloc as TensorFlow leaves it
from pipeline import ExtractConfig, extract_features
result = extract_features({data!r}, ExtractConfig(cache_dir={cache!r}), progress=False)
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({{"rate": result.images_per_second, "faults": usage.ru_minflt,
                  "kernel_s": usage.ru_stime, "user_s": usage.ru_utime,
                  "kept": {default!r} is False}}))
"""


def one(data: Path, default: bool, tmp: Path, n: int) -> dict:
    code = CHILD.format(root=str(ROOT), default=default, data=str(data), cache=str(tmp / f"cache{n}"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    shared = os.environ.get("PIPELINE_SHARED_DIR", str(ROOT.parent / "shared"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path(shared) / "data" / "cats_and_dogs_filtered")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"CPU: {cpu_line()}", flush=True)
    runs: dict[str, list[dict]] = {"kept": [], "default": []}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for name in ("default", "kept"):
                r = one(args.data, name == "default", Path(tmp), len(runs["kept"]) + len(runs["default"]))
                runs[name].append(r)
                print(f"round {round_ + 1} {name:>7}: {r['rate']:6.1f} images/s, {r['faults']:>9,} page "
                      f"faults, kernel {r['kernel_s']:5.2f} s, user {r['user_s']:5.2f} s", flush=True)
    print("medians:")
    for name, rs in runs.items():
        print(f"  {name:>7}: {statistics.median(r['rate'] for r in rs):6.1f} images/s, "
              f"{statistics.median(r['faults'] for r in rs):>11,.0f} page faults, "
              f"kernel {statistics.median(r['kernel_s'] for r in rs):5.2f} s")
    ratios = [k["rate"] / d["rate"] for k, d in zip(runs["kept"], runs["default"])]
    print(f"  kept / default, per round: {', '.join(f'{x:.2f}' for x in ratios)}; "
          f"median {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
