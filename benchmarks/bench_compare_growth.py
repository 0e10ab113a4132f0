"""How stage 2's cost grows with the rows: every default classifier and the audit, at 3k to 300k.

For each size and width, a synthetic feature cache (10 classes, each a cloud,
80 % train, 10 % validation, 10 % test; written as extraction writes one) and
``compare`` with every default in its own process, so each peak is its own:

- each classifier's search, fit and predict seconds (the leaderboard's);
- the audit's neighbour search and its label issues (``run --json``'s phases);
- the whole command's seconds and the peak resident memory (VmHWM).

Then the slope of each part between sizes, log(seconds) / log(rows): 1 is
linear, 2 quadratic.

Usage:

    python benchmarks/bench_compare_growth.py [--rows 3000,30000,300000] [--dims 256,1280]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _cpu import cpu_line  # this folder is on sys.path when the script runs
from bench_outofcore import write_cache

ROOT = Path(__file__).resolve().parents[1]
HERE = str(Path(__file__).resolve().parent)
RUN = """
import json, os, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
sys.path[:0] = [{root!r}, {here!r}]
from _peak import peak_mb
from pipeline import CompareConfig, compare
from pipeline.console import phases
start = time.perf_counter()
result = compare({path!r}, CompareConfig(out={out!r}, overwrite=True))
seconds = time.perf_counter() - start
parts = {{r["classifier"]: {{k: r.get(k) for k in ("search_seconds", "fit_seconds", "predict_seconds")}}
          for r in result.leaderboard}}
print(json.dumps({{"seconds": seconds, "parts": parts, "phases": phases(), "peak_mb": peak_mb(),
                  "search": result.insights["neighbour_search"]}}))
"""
AUDIT = ("stage 2: data audit, neighbours", "stage 2: data audit, label issues")


def measure(path: Path, out: Path) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", RUN.format(root=str(ROOT), here=HERE, path=str(path),
                                                           out=str(out))],
                          capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.exit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def flat(result: dict) -> dict[str, float]:
    """Part -> seconds: each classifier's search + fit + predict, the audit's two parts, the whole."""
    parts = {name: sum(v or 0.0 for v in p.values()) for name, p in sorted(result["parts"].items())}
    parts.update({name.rsplit(", ", 1)[-1]: result["phases"].get(name, 0.0) for name in AUDIT})
    parts["whole command"] = result["seconds"]
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="3000,30000,300000")
    parser.add_argument("--dims", default="256,1280")
    parser.add_argument("--work", type=Path, help="folder for the caches (kept; reused when present)")
    args = parser.parse_args()
    print(f"CPU: {cpu_line()}", flush=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="growth-"))
    work.mkdir(parents=True, exist_ok=True)
    sizes = [int(r) for r in args.rows.split(",")]
    for dim in (int(d) for d in args.dims.split(",")):
        measured: dict[int, dict[str, float]] = {}
        for rows in sizes:
            path = work / f"synthetic-{rows}x{dim}.h5"
            if not path.exists():
                write_cache(path, rows, dim, "float32")
            result = measure(path, work / f"run-{rows}x{dim}")
            measured[rows] = flat(result)
            shown = ", ".join(f"{k} {v:.2f}" for k, v in measured[rows].items())
            print(f"{rows} rows x {dim}: {shown} s; peak {result['peak_mb']} MB; audit search "
                  f"{result['search']['method']}", flush=True)
        for small, large in zip(sizes, sizes[1:]):
            slopes = {k: math.log(max(measured[large][k], 1e-3) / max(measured[small][k], 1e-3))
                      / math.log(large / small) for k in measured[small]}
            print(f"slope {small} -> {large} rows x {dim}: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in slopes.items()), flush=True)


if __name__ == "__main__":
    main()
