"""Stage 1 at this checkout against another revision: whole extractions, alternated.

Each round extracts the dataset once with the code of ``--base`` (checked
out with ``git worktree`` into a temporary folder) and once with this
checkout's, each in a fresh process and a fresh cache, in alternating order.
For each it prints the loop's ``images_per_second``, the CPU time the loop
used per image (all threads: ``getrusage`` around the extraction's compute
step) and how busy it kept the cores (that CPU time over the loop's wall
time and the core count), then the medians and the per-round ratios. A
change that makes less work shows in the CPU time even when this machine's
noise hides it in the rate.

Usage (the real data and weights are in ../shared; see its README):

    KERAS_HOME=... python benchmarks/bench_revisions.py --base ddcf724 --data ../shared/data/cats_and_dogs_filtered
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

from _cpu import cpu_line  # this folder is on sys.path when the script runs
from bench_extract import child_output

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, os, resource, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
sys.path.insert(0, {root!r})
from pipeline import ExtractConfig, extract_features
from pipeline.features import extract

compute, loop = extract.compute_rows, {{}}

def timed(*args, **kwargs):
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    try:
        return compute(*args, **kwargs)
    finally:
        after = resource.getrusage(resource.RUSAGE_SELF)
        loop["cpu"] = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        loop["wall"] = time.perf_counter() - started

extract.compute_rows = timed
result = extract_features({data!r}, ExtractConfig(cache_dir={cache!r}), progress=False)
print(json.dumps({{"rate": result.images_per_second, "cpu_ms": loop["cpu"] / result.computed * 1e3,
                  "busy": loop["cpu"] / loop["wall"] / len(os.sched_getaffinity(0))}}))
"""


def one(root: Path, data: Path, cache: Path) -> dict:
    code = CHILD.format(root=str(root), data=str(data), cache=str(cache))
    return json.loads(child_output(code, f"the extraction with the code in {root}"))


def main() -> None:
    shared = os.environ.get("PIPELINE_SHARED_DIR", str(ROOT.parent / "shared"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True, help="the revision to compare against (a commit, a branch)")
    parser.add_argument("--data", type=Path, default=Path(shared) / "data" / "cats_and_dogs_filtered")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    print(f"CPU: {cpu_line()}", flush=True)
    runs: dict[str, list[dict]] = {"base": [], "this": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tmp / "base"),
                        args.base], check=True)
        try:
            roots = {"base": tmp / "base", "this": ROOT}
            for round_ in range(args.rounds):
                for name in ("base", "this") if round_ % 2 == 0 else ("this", "base"):
                    r = one(roots[name], args.data, tmp / f"cache-{name}-{round_}")
                    runs[name].append(r)
                    print(f"round {round_ + 1} {name:>4}: {r['rate']:6.1f} images/s, loop CPU "
                          f"{r['cpu_ms']:5.2f} ms an image, cores {r['busy']:.0%} busy", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp / "base")],
                           check=False)
    print(f"medians ({args.base} against this checkout):")
    for key, label in (("rate", "images/s"), ("cpu_ms", "loop CPU ms an image"), ("busy", "cores busy")):
        base, this = (statistics.median(r[key] for r in runs[n]) for n in ("base", "this"))
        ratios = ", ".join(f"{t[key] / b[key]:.2f}" for b, t in zip(runs["base"], runs["this"]))
        print(f"  {label:<22} base {base:7.2f}, this {this:7.2f}; this / base per round: {ratios}")


if __name__ == "__main__":
    main()
