"""Kill/resume soak: SIGKILL stage 1 at random moments, resume, compare row for row.

1. Extract the dataset once, uninterrupted, into cache A (the reference).
2. Into cache B, start the same ``run_pipeline.py extract`` command again and
   again, each time sending SIGKILL at a random moment (during start-up, after
   1-3 new store segments plus a random fraction of the next, or, once no
   chunk is left, while the view file is written), until ``--kills``
   runs were killed or a run finished; then let one run finish.
3. Check that B and A hold the same rows: features (bit for bit), labels,
   paths, fingerprints and quarantine lists of every split.

It prints the number of kills, how many runs resumed earlier work, and the
result of the comparison; it exits 1 when anything differs.

Usage (the real data and weights are in ../shared; see its README):

    KERAS_HOME=... python benchmarks/soak_kill.py --data ../shared/data/cats_and_dogs_filtered
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
from _cpu import cpu_line  # this folder is on sys.path when the script runs

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("features", "labels", "paths", "fingerprints", "quarantine/paths", "quarantine/reasons")


def extract(data: str, cache: Path, chunk_size: int) -> list[str]:
    return [sys.executable, str(ROOT / "run_pipeline.py"), "extract", "--data", data,
            "--cache-dir", str(cache), "--chunk-size", str(chunk_size), "--json", "--no-progress"]


def arrays(path: Path) -> dict:
    with h5py.File(path, "r") as h5:
        return {f"{s}/{d}": h5[s][d][()] for s in h5 for d in DATASETS}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--kills", type=int, default=40)
    parser.add_argument("--chunk-size", type=int, default=32)
    parser.add_argument("--max-delay", type=float, default=5.0,
                        help="seconds before a kill during start-up, at most")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"CPU: {cpu_line()}", flush=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="soak-"))

    started = time.perf_counter()
    reference = json.loads(subprocess.run(extract(args.data, work / "a", args.chunk_size), env=env,
                                          check=True, capture_output=True, text=True).stdout)
    print(f"reference: {sum(reference['splits'].values())} rows in {reference['seconds']} s")

    def chunks_on_disk() -> int:
        return sum(1 for _ in (work / "b").glob("store/*/seg-*.h5"))

    def assembling() -> bool:  # the view file is being written under a temporary name
        return any((work / "b").glob("*.h5.tmp-*"))

    total_chunks = sum(-(-n // args.chunk_size) for n in reference["splits"].values())
    kills, resumes, phases = 0, 0, {"starting": 0, "extracting": 0, "assembling": 0}
    while True:
        before = chunks_on_disk()
        resumes += before > 0
        proc = subprocess.Popen(extract(args.data, work / "b", args.chunk_size), env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if kills < args.kills:
            # A random moment: during start-up, or after 1-3 new chunks (plus a random
            # fraction of one), or, once no chunk is left, while they are assembled.
            started_at = time.monotonic()
            startup = rng.random() < 0.25
            delay, wanted = rng.uniform(0.2, args.max_delay), rng.randint(1, 3)
            while proc.poll() is None:
                now = chunks_on_disk()
                if startup and time.monotonic() - started_at > delay:
                    break
                if not startup and before + wanted < total_chunks and now >= before + wanted:
                    time.sleep(rng.uniform(0, 0.4))
                    break
                if not startup and before + wanted >= total_chunks and assembling():
                    break
                time.sleep(0.01)
            if proc.poll() is None:
                phase = ("assembling" if assembling() else
                         "extracting" if chunks_on_disk() > before else "starting")
                proc.send_signal(signal.SIGKILL)
                proc.communicate()
                kills += 1
                phases[phase] += 1
                print(f"kill {kills:>2} while {phase}: {chunks_on_disk()} of {total_chunks} chunks on disk")
                continue
        out, err = proc.communicate()
        if proc.returncode != 0:
            print(err)
            return 1
        result = json.loads(out)
        break
    if result["hit"]:  # killed after the view was complete, before the process ended
        print("final run: a cache hit on the view the last killed run completed")
    else:
        print(f"final run: resumed {result['resumed_images']} images, extracted "
              f"{result['computed']}")
    strays = [str(p) for p in (work / "b").rglob("*") if p.name.endswith(".lock")]
    print(f"lock files left: {len(strays)}")

    a, b = arrays(Path(reference["cache"])), arrays(Path(result["cache"]))
    same = a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    rows = sum(len(a[f"{s}/labels"]) for s in reference["splits"])
    print(f"kills: {kills} ({', '.join(f'{n} while {p}' for p, n in phases.items())}); "
          f"runs that resumed earlier chunks: {resumes}")
    print(f"rows compared: {rows} ({', '.join(f'{s} {n}' for s, n in reference['splits'].items())}), "
          f"arrays compared: {len(a)}; identical: {same}")
    print(f"file names equal: {Path(reference['cache']).name == Path(result['cache']).name}; "
          f"soak wall time {time.perf_counter() - started:.0f} s")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
